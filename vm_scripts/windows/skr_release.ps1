<#
.SYNOPSIS
    Secure Key Release from inside an Azure Confidential VM (Windows run-command script).

.DESCRIPTION
    Port of vm_scripts/linux/skr_release.py; the contract (parameters, result line, exit codes,
    files) is vm_scripts/README.md. Attest -> managed-identity token -> release -> verify the JWS
    -> keep it readable by SYSTEM/Administrators only, then print exactly one line
    "SKR-RESULT {json}" and exit 0 (released), 2 (retryable) or 3 (terminal).

    Run-command named parameters arrive as script parameters; each falls back to the environment
    variable of the same name. Secrets (MAA token, access token, JWS, key bytes) are kept in
    variables only and never written to the output streams or to any file but the JWS file.
    Requires Windows PowerShell 5.1 (.NET Framework 4.7.1+) or PowerShell 7.
#>
[CmdletBinding()]
param(
    [string]$SKR_VAULT_URL = $env:SKR_VAULT_URL,
    [string]$SKR_KEY_NAME = $env:SKR_KEY_NAME,
    [string]$SKR_KEY_VERSION = $env:SKR_KEY_VERSION,
    [string]$SKR_MAA_ENDPOINT = $env:SKR_MAA_ENDPOINT,
    [string]$SKR_MODE = $env:SKR_MODE,
    [string]$SKR_RETRY_WINDOW_SECONDS = $env:SKR_RETRY_WINDOW_SECONDS,
    [string]$SKR_OUTPUT_PATH = $env:SKR_OUTPUT_PATH,
    [string]$SKR_ENC = $env:SKR_ENC,
    [string]$SKR_KEYVAULT_API_VERSION = $env:SKR_KEYVAULT_API_VERSION,
    [string]$SKR_IMDS_URL = $env:SKR_IMDS_URL,
    [string]$SKR_IMDS_RESOURCE = $env:SKR_IMDS_RESOURCE,
    [string]$SKR_IMDS_CLIENT_ID = $env:SKR_IMDS_CLIENT_ID,
    [string]$SKR_CA_BUNDLE = $env:SKR_CA_BUNDLE,
    [string]$SKR_ATTESTATION_COMMAND = $env:SKR_ATTESTATION_COMMAND,
    [string]$SKR_AZUREATTESTSKR_COMMAND = $env:SKR_AZUREATTESTSKR_COMMAND,
    [string]$SKR_TOOL_TIMEOUT_SECONDS = $env:SKR_TOOL_TIMEOUT_SECONDS
)

Set-StrictMode -Version 2.0
$ErrorActionPreference = 'Stop'

$SCRIPT_VERSION = '1.0'
$RESULT_PREFIX = 'SKR-RESULT '
$MAX_RESULT_BYTES = 1024
$EXIT_RELEASED = 0
$EXIT_RETRYABLE = 2
$EXIT_TERMINAL = 3
$ENC_VALUES = @('CKM_RSA_AES_KEY_WRAP', 'RSA_AES_KEY_WRAP_256', 'RSA_AES_KEY_WRAP_384')
$MODES = @('rest', 'azureattestskr')
$KEK_KID = 'TpmEphemeralEncryptionKey'
$DEFAULT_OUTPUT_DIR = Join-Path $env:ProgramData 'skr-orchestrator\keys'
$DEFAULT_ATTESTATION_COMMAND = 'AttestationClientApp.exe -a {maa} -o token'
$DEFAULT_AZUREATTESTSKR_COMMAND = 'AzureAttestSKR.exe'
$IMDS_API_VERSION = '2018-02-01'
$USER_AGENT = 'skr-orchestrator-vm/' + $SCRIPT_VERSION
$RETRY_FIRST_DELAY = 2.0
$RETRY_MAX_DELAY = 10.0
$IMDS_DELAYS = @(1.0, 2.0, 4.0, 8.0)
$IMDS_RETRY_STATUSES = @(404, 410, 429)
$TOKEN_MIN_REMAINING = 60.0
$HTTP_TIMEOUT = 30.0
$RETRYABLE_OUTCOMES = @('forbidden_by_rbac', 'imds_failed')
$JWS_HASHES = @{ 'RS256' = 'SHA256'; 'RS384' = 'SHA384'; 'RS512' = 'SHA512' }

$Invariant = [System.Globalization.CultureInfo]::InvariantCulture
$Clock = [System.Diagnostics.Stopwatch]::StartNew()   # monotonic, like time.monotonic()

# TLS 1.2 is not enabled by default for .NET Framework clients on older Windows builds.
[System.Net.ServicePointManager]::SecurityProtocol = [System.Net.ServicePointManager]::SecurityProtocol -bor [System.Net.SecurityProtocolType]::Tls12
Add-Type -AssemblyName System.Net.Http

# Certificate helpers that must run on .NET threads without a PowerShell runspace (the TLS
# callback) or that need byte-level DER access (subjectAltName). C# 5 syntax for Add-Type on 5.1.
Add-Type -ReferencedAssemblies 'System.Net.Http' -TypeDefinition @'
using System;
using System.Net;
using System.Net.Http;
using System.Net.Security;
using System.Security.Cryptography.X509Certificates;
using System.Text;

public static class SkrNative
{
    // Trust anchors from SKR_CA_BUNDLE; null means the Windows certificate store.
    public static X509Certificate2Collection Roots;

    // Build a chain for leaf with the given extra certificates; "" when it ends at a trusted root.
    public static string BuildChain(X509Certificate2 leaf, X509Certificate2Collection extra, DateTime whenUtc, out X509Chain chain)
    {
        chain = new X509Chain();
        chain.ChainPolicy.RevocationMode = X509RevocationMode.NoCheck;
        chain.ChainPolicy.VerificationTime = whenUtc.ToLocalTime();
        if (extra != null) { chain.ChainPolicy.ExtraStore.AddRange(extra); }
        if (Roots != null)
        {
            chain.ChainPolicy.ExtraStore.AddRange(Roots);
            chain.ChainPolicy.VerificationFlags = X509VerificationFlags.AllowUnknownCertificateAuthority;
        }
        if (!chain.Build(leaf))
        {
            foreach (X509ChainStatus status in chain.ChainStatus)
            {
                if (status.Status == X509ChainStatusFlags.NotTimeValid) { return "jws_cert_expired"; }
            }
            return "jws_untrusted_chain";
        }
        if (Roots != null)
        {
            X509Certificate2 root = chain.ChainElements[chain.ChainElements.Count - 1].Certificate;
            foreach (X509Certificate2 anchor in Roots)
            {
                if (anchor.Thumbprint == root.Thumbprint) { return ""; }
            }
            return "jws_untrusted_chain";
        }
        return "";
    }

    // x5c[i] must be issued by x5c[i+1] and the chain must end at a trusted root.
    public static string VerifyX5c(X509Certificate2[] x5c, DateTime whenUtc)
    {
        X509Certificate2Collection extra = new X509Certificate2Collection();
        for (int i = 1; i < x5c.Length; i++) { extra.Add(x5c[i]); }
        X509Chain chain;
        string error = BuildChain(x5c[0], extra, whenUtc, out chain);
        if (error != "") { return error; }
        if (chain.ChainElements.Count < x5c.Length) { return "jws_untrusted_chain"; }
        for (int i = 0; i < x5c.Length; i++)
        {
            if (chain.ChainElements[i].Certificate.Thumbprint != x5c[i].Thumbprint) { return "jws_untrusted_chain"; }
        }
        return "";
    }

    public static bool Tls(HttpRequestMessage request, X509Certificate2 cert, X509Chain presented, SslPolicyErrors errors)
    {
        if (Roots == null) { return errors == SslPolicyErrors.None; }
        if ((errors & ~SslPolicyErrors.RemoteCertificateChainErrors) != SslPolicyErrors.None) { return false; }
        X509Certificate2Collection extra = new X509Certificate2Collection();
        foreach (X509ChainElement element in presented.ChainElements) { extra.Add(element.Certificate); }
        X509Chain chain;
        return BuildChain(cert, extra, DateTime.UtcNow, out chain) == "";
    }

    public static Func<HttpRequestMessage, X509Certificate2, X509Chain, SslPolicyErrors, bool> TlsCallback
    {
        get { return Tls; }
    }

    static bool ReadTlv(byte[] data, ref int pos, int limit, out int tag, out int start, out int end)
    {
        tag = 0; start = 0; end = 0;
        if (limit - pos < 2) { return false; }
        tag = data[pos];
        int length = data[pos + 1];
        int head = pos + 2;
        if ((length & 0x80) != 0)
        {
            int count = length & 0x7F;
            if (count == 0 || count > 3 || head + count > limit) { return false; }
            length = 0;
            for (int i = 0; i < count; i++) { length = (length << 8) | data[head + i]; }
            head += count;
        }
        if (head + length > limit) { return false; }
        start = head; end = head + length; pos = end;
        return true;
    }

    // subjectAltName covers host: exact DNS name, one-label "*." wildcard, or IP address.
    public static bool CoversHost(X509Certificate2 cert, string host)
    {
        host = host.Trim('[', ']').ToLowerInvariant();
        IPAddress ip;
        bool isIp = IPAddress.TryParse(host, out ip);
        foreach (X509Extension ext in cert.Extensions)
        {
            if (ext.Oid.Value != "2.5.29.17") { continue; }
            byte[] d = ext.RawData;
            int pos = 0, tag, start, end;
            if (!ReadTlv(d, ref pos, d.Length, out tag, out start, out end) || tag != 0x30) { return false; }
            pos = start;
            int seqEnd = end;
            while (pos < seqEnd)
            {
                if (!ReadTlv(d, ref pos, seqEnd, out tag, out start, out end)) { return false; }
                if (tag == 0x82 && !isIp)
                {
                    string name = Encoding.ASCII.GetString(d, start, end - start).ToLowerInvariant();
                    if (name == host) { return true; }
                    int dot = host.IndexOf('.');
                    if (name.StartsWith("*.") && dot > 0 && host.Substring(dot + 1) == name.Substring(2)) { return true; }
                }
                else if (tag == 0x87 && isIp)
                {
                    byte[] want = ip.GetAddressBytes();
                    if (want.Length != end - start) { continue; }
                    bool same = true;
                    for (int i = 0; i < want.Length; i++) { if (want[i] != d[start + i]) { same = false; } }
                    if (same) { return true; }
                }
            }
        }
        return false;
    }
}
'@

# ------------------------------------------------------------------------------------------
# Outcomes  (<-> SkrError / sanitize)
# ------------------------------------------------------------------------------------------

function New-SkrError {
    param([string]$Outcome, [string]$ErrorCode, [string]$Message = '', $HttpStatus = $null,
          [bool]$Retryable = $false, [bool]$RetryInWindow = $false, $RetryAfter = $null)
    $exception = New-Object System.Exception($ErrorCode)
    $exception.Data['skr'] = @{
        Outcome = $Outcome; ErrorCode = $ErrorCode; Message = $Message; HttpStatus = $HttpStatus
        Retryable = ($Retryable -or $RetryInWindow); RetryInWindow = $RetryInWindow; RetryAfter = $RetryAfter
    }
    return $exception
}

function Get-SkrError($ErrorRecord) {
    $exception = $ErrorRecord.Exception
    while ($null -ne $exception) {
        if ($exception.Data.Contains('skr')) { return $exception.Data['skr'] }
        $exception = $exception.InnerException
    }
    return $null
}

$SECRETISH = 'eyJ[A-Za-z0-9_\-]*(?:\.[A-Za-z0-9_\-]*)*|[A-Za-z0-9+/_\-=]{32,}'

function Format-Sanitized([string]$Text, [int]$Limit = 300) {
    # One short printable line with anything token-like redacted (defence in depth).
    if ($null -eq $Text) { return '' }
    $flat = (($Text -replace '\\r\\n', ' ' -replace '\\n', ' ') -split '\s+' | Where-Object { $_ -ne '' }) -join ' '
    $flat = -join ($flat.ToCharArray() | Where-Object { [int]$_ -ge 32 -and [int]$_ -lt 127 })
    $flat = [regex]::Replace($flat, $SECRETISH, [System.Text.RegularExpressions.MatchEvaluator]{
        param($match)
        $run = $match.Value
        if ($run.StartsWith('eyJ', [StringComparison]::Ordinal)) { return '[redacted]' }
        if ($run -cmatch '[A-Z]' -and $run -cmatch '[a-z]' -and $run -cmatch '[0-9]') { return '[redacted]' }
        return $run
    })
    if ($flat.Length -le $Limit) { return $flat }
    return $flat.Substring(0, $Limit - 3) + '...'
}

function Get-ErrorCode([string]$Text) {
    # A service's error code as a short identifier: [A-Za-z0-9_.:-], at most 64 characters.
    $code = $Text -replace '[^A-Za-z0-9_.:\-]', '_'
    if ($code.Length -gt 64) { $code = $code.Substring(0, 64) }
    if (-not $code) { return 'unknown' }
    return $code
}

# ------------------------------------------------------------------------------------------
# Parameters  (<-> load_params)
# ------------------------------------------------------------------------------------------

function New-ParamError([string]$Code, [string]$Name, [string]$Why) {
    return New-SkrError -Outcome 'invalid_parameters' -ErrorCode $Code -Message ($Name + ': ' + $Why)
}

function Get-Origin([string]$Name, [string]$Value, [string[]]$Schemes = @('https')) {
    if ($Value.Length -gt 256) { throw (New-ParamError 'invalid_parameter' $Name 'longer than 256 characters') }
    $uri = $null
    if (-not [System.Uri]::TryCreate($Value, [System.UriKind]::Absolute, [ref]$uri)) {
        throw (New-ParamError 'invalid_parameter' $Name 'not a valid URL')
    }
    if ($Schemes -notcontains $uri.Scheme.ToLowerInvariant()) {
        throw (New-ParamError 'invalid_parameter' $Name ('must be an ' + ($Schemes -join '/') + ' URL'))
    }
    if (-not $uri.Host -or $uri.UserInfo) {
        throw (New-ParamError 'invalid_parameter' $Name 'must name a host (and no credentials)')
    }
    if (($uri.AbsolutePath -ne '/' -and $uri.AbsolutePath -ne '') -or $uri.Query -or $uri.Fragment) {
        throw (New-ParamError 'invalid_parameter' $Name 'must be a base URL without path or query')
    }
    $origin = $uri.Scheme.ToLowerInvariant() + '://' + $uri.Host.ToLowerInvariant()
    if ($Value -match '^[a-z]+://(\[[^\]]*\]|[^/:]*):[0-9]+') { $origin += ':' + $uri.Port }
    return $origin
}

function Split-CommandLine([string]$Name, [string]$Value) {
    # Whitespace-separated words; double quotes group (Windows counterpart of shlex.split).
    $words = New-Object System.Collections.Generic.List[string]
    $current = New-Object System.Text.StringBuilder
    $inQuotes = $false
    $hasWord = $false
    foreach ($ch in $Value.ToCharArray()) {
        if ($ch -eq '"') { $inQuotes = -not $inQuotes; $hasWord = $true }
        elseif ([char]::IsWhiteSpace($ch) -and -not $inQuotes) {
            if ($hasWord) { $words.Add($current.ToString()); [void]$current.Clear(); $hasWord = $false }
        }
        else { [void]$current.Append($ch); $hasWord = $true }
    }
    if ($inQuotes) { throw (New-ParamError 'invalid_parameter' $Name 'cannot be split into arguments') }
    if ($hasWord) { $words.Add($current.ToString()) }
    if ($words.Count -eq 0) { throw (New-ParamError 'invalid_parameter' $Name 'is empty') }
    return ,$words.ToArray()
}

function Get-Number([string]$Name, [string]$Text, [double]$Low, [double]$High) {
    $value = 0.0
    if (-not [double]::TryParse($Text, [System.Globalization.NumberStyles]::Float, $Invariant, [ref]$value)) {
        throw (New-ParamError 'invalid_parameter' $Name 'must be a number')
    }
    if ([double]::IsNaN($value) -or $value -lt $Low -or $value -gt $High) {
        throw (New-ParamError 'invalid_parameter' $Name ('must be between {0} and {1}' -f $Low, $High))
    }
    return $value
}

function Test-Certificate([string]$Path) {
    try { return ([System.IO.File]::ReadAllText($Path)).Contains('-----BEGIN CERTIFICATE-----') }
    catch { return $false }
}

function Get-Value([string]$Value, [string]$Default = '') {
    if ($null -eq $Value -or $Value.Trim() -eq '') { return $Default }
    return $Value.Trim()
}

function Get-Required([string]$Name, [string]$Value) {
    $v = Get-Value $Value
    if (-not $v) { throw (New-ParamError 'missing_parameter' $Name 'is required') }
    return $v
}

function Read-Params {
    $p = @{}
    $p.VaultUrl = Get-Origin 'SKR_VAULT_URL' (Get-Required 'SKR_VAULT_URL' $SKR_VAULT_URL)
    $p.KeyName = Get-Required 'SKR_KEY_NAME' $SKR_KEY_NAME
    if ($p.KeyName -cnotmatch '^[0-9A-Za-z-]{1,127}$') {
        throw (New-ParamError 'invalid_parameter' 'SKR_KEY_NAME' "must be 1-127 letters, digits or '-'")
    }
    $p.KeyVersion = Get-Value $SKR_KEY_VERSION
    if ($p.KeyVersion -and $p.KeyVersion -cnotmatch '^[0-9A-Za-z]{1,64}$') {
        throw (New-ParamError 'invalid_parameter' 'SKR_KEY_VERSION' 'must be letters and digits only')
    }
    $p.MaaEndpoint = Get-Origin 'SKR_MAA_ENDPOINT' (Get-Required 'SKR_MAA_ENDPOINT' $SKR_MAA_ENDPOINT)
    $p.Mode = (Get-Value $SKR_MODE 'rest').ToLowerInvariant()
    if ($MODES -notcontains $p.Mode) {
        throw (New-ParamError 'invalid_parameter' 'SKR_MODE' ('must be one of ' + ($MODES -join ', ')))
    }
    $p.RetryWindow = Get-Number 'SKR_RETRY_WINDOW_SECONDS' (Get-Value $SKR_RETRY_WINDOW_SECONDS '90') 0 3600
    $p.OutputPath = Get-Value $SKR_OUTPUT_PATH (Join-Path $DEFAULT_OUTPUT_DIR ($p.KeyName + '.jws'))
    if (-not [System.IO.Path]::IsPathRooted($p.OutputPath) -or $p.OutputPath -match '[\\/]$' -or
            $p.OutputPath.IndexOfAny([System.IO.Path]::GetInvalidPathChars()) -ge 0) {
        throw (New-ParamError 'invalid_parameter' 'SKR_OUTPUT_PATH' 'must be an absolute file path')
    }
    $p.Enc = Get-Value $SKR_ENC $ENC_VALUES[0]
    if ($ENC_VALUES -cnotcontains $p.Enc) {
        throw (New-ParamError 'invalid_parameter' 'SKR_ENC' ('must be one of ' + ($ENC_VALUES -join ', ')))
    }
    $p.ImdsUrl = Get-Origin 'SKR_IMDS_URL' (Get-Value $SKR_IMDS_URL 'http://169.254.169.254') @('http', 'https')
    $p.CaBundle = Get-Value $SKR_CA_BUNDLE
    if ($p.CaBundle -and -not (Test-Certificate $p.CaBundle)) {
        throw (New-ParamError 'invalid_parameter' 'SKR_CA_BUNDLE' 'is not a readable PEM file with a certificate')
    }
    $p.ApiVersion = Get-Value $SKR_KEYVAULT_API_VERSION '7.4'
    if ($p.ApiVersion -cnotmatch '^(7\.([3-9]|[1-9][0-9])|([89]|[1-9][0-9]+)\.[0-9]+|20[0-9]{2}-[0-9]{2}-[0-9]{2})(-preview)?$') {
        throw (New-ParamError 'invalid_parameter' 'SKR_KEYVAULT_API_VERSION' 'must be 7.3 or later')
    }
    $resource = Get-Value $SKR_IMDS_RESOURCE
    if ($resource) { $p.ImdsResource = Get-Origin 'SKR_IMDS_RESOURCE' $resource }
    elseif ($p.VaultUrl -like '*managedhsm*') { $p.ImdsResource = 'https://managedhsm.azure.net' }
    else { $p.ImdsResource = 'https://vault.azure.net' }
    $p.ImdsClientId = Get-Value $SKR_IMDS_CLIENT_ID
    if ($p.ImdsClientId -and $p.ImdsClientId -notmatch '^[0-9A-Fa-f-]{36}$') {
        throw (New-ParamError 'invalid_parameter' 'SKR_IMDS_CLIENT_ID' 'must be a GUID')
    }
    $p.AttestationCommand = Split-CommandLine 'SKR_ATTESTATION_COMMAND' (Get-Value $SKR_ATTESTATION_COMMAND $DEFAULT_ATTESTATION_COMMAND)
    $p.AzureAttestSkrCommand = Split-CommandLine 'SKR_AZUREATTESTSKR_COMMAND' (Get-Value $SKR_AZUREATTESTSKR_COMMAND $DEFAULT_AZUREATTESTSKR_COMMAND)
    $p.ToolTimeout = Get-Number 'SKR_TOOL_TIMEOUT_SECONDS' (Get-Value $SKR_TOOL_TIMEOUT_SECONDS '300') 1 5400
    return $p
}

function Get-RequestedKeyId($p) {
    $id = $p.VaultUrl + '/keys/' + $p.KeyName
    if ($p.KeyVersion) { $id += '/' + $p.KeyVersion }
    return $id
}

# ------------------------------------------------------------------------------------------
# JWT / base64url helpers  (<-> b64url_decode, decode_compact, check_attestation_output)
# ------------------------------------------------------------------------------------------

function ConvertFrom-B64Url([string]$Text) {
    if ($Text -cnotmatch '^[A-Za-z0-9_\-]*$') { throw (New-Object System.FormatException('not base64url')) }
    $s = $Text.Replace('-', '+').Replace('_', '/')
    switch ($s.Length % 4) { 2 { $s += '==' } 3 { $s += '=' } 1 { throw (New-Object System.FormatException('bad length')) } }
    return ,[Convert]::FromBase64String($s)
}

function ConvertTo-B64Url([byte[]]$Data) {
    return [Convert]::ToBase64String($Data).TrimEnd('=').Replace('+', '-').Replace('/', '_')
}

function ConvertFrom-JsonBytes([byte[]]$Data) {
    $text = (New-Object System.Text.UTF8Encoding($false, $true)).GetString($Data)
    return ConvertFrom-Json -InputObject $text
}

function Read-Compact([string]$Token) {
    # Split a compact JWS/JWT into header, payload and parts; throws if it is not one.
    $parts = $Token.Split('.')
    if ($parts.Length -ne 3 -or @($parts | Where-Object { $_ -eq '' }).Count -gt 0) { throw (New-Object System.FormatException('three parts')) }
    $header = ConvertFrom-JsonBytes (ConvertFrom-B64Url $parts[0])
    $payload = ConvertFrom-JsonBytes (ConvertFrom-B64Url $parts[1])
    if ($header -isnot [System.Management.Automation.PSCustomObject] -or $payload -isnot [System.Management.Automation.PSCustomObject]) {
        throw (New-Object System.FormatException('objects'))
    }
    [void](ConvertFrom-B64Url $parts[2])
    return @{ Header = $header; Payload = $payload; Parts = $parts }
}

function Get-Member2($Object, [string]$Name) {
    # Property value or $null (StrictMode-safe).
    if ($null -eq $Object -or $Object -isnot [System.Management.Automation.PSCustomObject]) { return $null }
    $property = $Object.PSObject.Properties[$Name]
    if ($null -eq $property) { return $null }
    return $property.Value
}

function Test-Numeric($Value) {
    return ($Value -is [int] -or $Value -is [long] -or $Value -is [double] -or $Value -is [decimal])
}

function Get-UnixNow { return [DateTimeOffset]::UtcNow.ToUnixTimeMilliseconds() / 1000.0 }

function Test-AttestationOutput([string]$Output, [double]$Now) {
    # The real AttestationClient prints its error on stdout and exits 0: the output is the signal.
    $token = $Output.Trim()
    if (-not $token) { throw (New-SkrError 'attestation_failed' 'empty_output' 'attestation command printed nothing') }
    if (-not $token.StartsWith('eyJ', [StringComparison]::Ordinal) -or $token -match '\s') {
        $first = ($token -split "`r?`n")[0]
        throw (New-SkrError 'attestation_failed' 'not_a_token' ('attestation command output is not a token: ' + (Format-Sanitized $first 160)))
    }
    try { $jwt = Read-Compact $token }
    catch { throw (New-SkrError 'attestation_failed' 'malformed_token' 'attestation output is not a well-formed JWT') }
    if ((Get-Member2 $jwt.Header 'alg') -isnot [string]) {
        throw (New-SkrError 'attestation_failed' 'malformed_token' 'JWT header has no alg')
    }
    $exp = Get-Member2 $jwt.Payload 'exp'
    if (-not (Test-Numeric $exp)) { throw (New-SkrError 'attestation_failed' 'malformed_token' 'JWT has no numeric exp claim') }
    if ([double]$exp -le $Now) { throw (New-SkrError 'attestation_failed' 'token_expired' 'attestation token has expired') }
    return @{ Token = $token; Exp = [double]$exp }
}

# ------------------------------------------------------------------------------------------
# JWS verification  (<-> verify_release_jws, check_release_payload, jwk_thumbprint)
# ------------------------------------------------------------------------------------------

function New-VerifyError([string]$Code, [string]$Why) {
    return New-SkrError -Outcome 'jws_invalid' -ErrorCode $Code -Message $Why -HttpStatus 200
}

function Read-TrustAnchors([string]$CaBundle) {
    if (-not $CaBundle) { return $null }   # Windows certificate store
    $collection = New-Object System.Security.Cryptography.X509Certificates.X509Certificate2Collection
    $text = [System.IO.File]::ReadAllText($CaBundle)
    foreach ($m in [regex]::Matches($text, '-----BEGIN CERTIFICATE-----(.*?)-----END CERTIFICATE-----', 'Singleline')) {
        try {
            $der = [Convert]::FromBase64String(($m.Groups[1].Value -replace '\s', ''))
            [void]$collection.Add((New-Object System.Security.Cryptography.X509Certificates.X509Certificate2(,$der)))
        } catch { continue }
    }
    return ,$collection
}

function Confirm-ReleaseJws([string]$Jws, [string]$VaultHost) {
    try { $jwt = Read-Compact $Jws } catch { throw (New-VerifyError 'jws_malformed' 'release value is not a compact JWS') }
    $alg = [string](Get-Member2 $jwt.Header 'alg')
    if (@($JWS_HASHES.Keys) -cnotcontains $alg) { throw (New-VerifyError 'jws_malformed' 'unsupported JWS alg') }
    $hashName = $JWS_HASHES[$alg]
    $x5cProperty = $jwt.Header.PSObject.Properties['x5c']
    if ($null -eq $x5cProperty -or $x5cProperty.Value -isnot [System.Array]) {
        throw (New-VerifyError 'jws_malformed' 'JWS header has no usable x5c')
    }
    $x5c = @($x5cProperty.Value)
    if ($x5c.Count -lt 1 -or $x5c.Count -gt 6 -or @($x5c | Where-Object { $_ -isnot [string] }).Count -gt 0) {
        throw (New-VerifyError 'jws_malformed' 'JWS header has no usable x5c')
    }
    try {
        $chain = [System.Security.Cryptography.X509Certificates.X509Certificate2[]]@(
            $x5c | ForEach-Object { New-Object System.Security.Cryptography.X509Certificates.X509Certificate2(,[Convert]::FromBase64String($_)) })
    } catch { throw (New-VerifyError 'jws_malformed' 'x5c entry is not base64 DER') }
    $leaf = $chain[0]
    $rsa = [System.Security.Cryptography.X509Certificates.RSACertificateExtensions]::GetRSAPublicKey($leaf)
    if ($null -eq $rsa -or $rsa.KeySize -lt 2048) {
        throw (New-VerifyError 'jws_malformed' 'x5c[0] must hold an RSA key of at least 2048 bits')
    }
    $thumb = Get-Member2 $jwt.Header 'x5t#S256'
    $sha256 = [System.Security.Cryptography.SHA256]::Create()
    if ($null -ne $thumb -and $thumb -cne (ConvertTo-B64Url $sha256.ComputeHash($leaf.RawData))) {
        throw (New-VerifyError 'jws_malformed' 'x5t#S256 does not match x5c[0]')
    }
    $signingInput = [System.Text.Encoding]::ASCII.GetBytes($jwt.Parts[0] + '.' + $jwt.Parts[1])
    $ok = $rsa.VerifyData($signingInput, (ConvertFrom-B64Url $jwt.Parts[2]),
        (New-Object System.Security.Cryptography.HashAlgorithmName($hashName)),
        [System.Security.Cryptography.RSASignaturePadding]::Pkcs1)
    if (-not $ok) { throw (New-VerifyError 'jws_bad_signature' 'JWS signature does not verify with x5c[0]') }
    foreach ($ext in $leaf.Extensions) {
        if ($ext -is [System.Security.Cryptography.X509Certificates.X509KeyUsageExtension] -and
                -not ($ext.KeyUsages -band [System.Security.Cryptography.X509Certificates.X509KeyUsageFlags]::DigitalSignature)) {
            throw (New-VerifyError 'jws_untrusted_chain' 'x5c[0] may not sign')
        }
    }
    $chainError = [SkrNative]::VerifyX5c($chain, [DateTime]::UtcNow)
    if ($chainError) { throw (New-VerifyError $chainError 'x5c does not chain to a trusted CA') }
    if (-not [SkrNative]::CoversHost($leaf, $VaultHost)) {
        throw (New-VerifyError 'jws_wrong_signer' 'x5c[0] is not a certificate for the vault host')
    }
    return $jwt.Payload
}

function Split-KeyId([string]$Kid) {
    $uri = $null
    if (-not [System.Uri]::TryCreate($Kid, [System.UriKind]::Absolute, [ref]$uri) -or $uri.Scheme -ne 'https') {
        throw (New-Object System.FormatException('not a key identifier'))
    }
    $segments = @($uri.AbsolutePath.Split('/') | Where-Object { $_ -ne '' })
    if (($segments.Count -ne 2 -and $segments.Count -ne 3) -or $segments[0] -cne 'keys') {
        throw (New-Object System.FormatException('not a key identifier'))
    }
    $origin = 'https://' + $uri.Host.ToLowerInvariant()
    if (-not $uri.IsDefaultPort) { $origin += ':' + $uri.Port }
    $version = ''
    if ($segments.Count -eq 3) { $version = $segments[2] }
    return @{ Origin = $origin; Name = $segments[1].ToLowerInvariant(); Version = $version }
}

function Confirm-ReleasePayload($Payload, $p) {
    # The released key must be the one we asked for, wrapped to the vTPM key with our enc.
    try {
        $key = Get-Member2 (Get-Member2 (Get-Member2 $Payload 'response') 'key') 'key'
        if ($key -isnot [System.Management.Automation.PSCustomObject]) { throw 'no key' }
        $kid = [string](Get-Member2 $key 'kid')
        $got = Split-KeyId $kid
        $want = Split-KeyId (Get-RequestedKeyId $p)
    } catch { throw (New-VerifyError 'jws_malformed' 'payload has no response.key.key.kid') }
    if ($got.Origin -ne $want.Origin -or $got.Name -ne $want.Name -or -not $got.Version -or
            ($want.Version -and $got.Version -cne $want.Version)) {
        throw (New-VerifyError 'kid_mismatch' 'released key id does not match the requested key')
    }
    $requestEnc = Get-Member2 (Get-Member2 $Payload 'request') 'enc'
    if ($null -ne $requestEnc -and $requestEnc -cne $p.Enc) {
        throw (New-VerifyError 'enc_mismatch' 'release was made with a different enc')
    }
    try {
        $keyHsm = ConvertFrom-JsonBytes (ConvertFrom-B64Url ([string](Get-Member2 $key 'key_hsm')))
        $hsmHeader = Get-Member2 $keyHsm 'header'
        $ciphertext = Get-Member2 $keyHsm 'ciphertext'
    } catch { throw (New-VerifyError 'jws_malformed' 'payload has no usable key_hsm') }
    if ((Get-Member2 $hsmHeader 'kid') -cne $KEK_KID) {
        throw (New-VerifyError 'kek_mismatch' ('key_hsm is not wrapped to ' + $KEK_KID))
    }
    $hsmEnc = Get-Member2 $hsmHeader 'enc'
    if ($null -ne $hsmEnc -and $hsmEnc -cne $p.Enc) {
        throw (New-VerifyError 'enc_mismatch' 'key_hsm was wrapped with a different enc')
    }
    if ($ciphertext -isnot [string] -or -not $ciphertext) { throw (New-VerifyError 'jws_malformed' 'key_hsm has no ciphertext') }
    return $key
}

function Get-JwkThumbprint($Key) {
    # RFC 7638 SHA-256 thumbprint (base64url) of the released key's public part; $null for oct.
    $kty = ([string](Get-Member2 $Key 'kty')).ToUpperInvariant()
    try {
        if ($kty.StartsWith('RSA')) {
            $e = ConvertTo-B64Url (Get-TrimmedBytes (ConvertFrom-B64Url ([string](Get-Member2 $Key 'e'))))
            $n = ConvertTo-B64Url (Get-TrimmedBytes (ConvertFrom-B64Url ([string](Get-Member2 $Key 'n'))))
            $canonical = '{"e":"' + $e + '","kty":"RSA","n":"' + $n + '"}'
        } elseif ($kty.StartsWith('EC')) {
            $crv = Get-Member2 $Key 'crv'
            $x = Get-Member2 $Key 'x'
            $y = Get-Member2 $Key 'y'
            if ($crv -isnot [string] -or $x -isnot [string] -or $y -isnot [string]) { return $null }
            $canonical = '{"crv":"' + $crv + '","kty":"EC","x":"' + $x + '","y":"' + $y + '"}'
        } else { return $null }
    } catch { return $null }
    $sha256 = [System.Security.Cryptography.SHA256]::Create()
    return ConvertTo-B64Url $sha256.ComputeHash([System.Text.Encoding]::UTF8.GetBytes($canonical))
}

function Get-TrimmedBytes([byte[]]$Data) {
    $i = 0
    while ($i -lt $Data.Length -and $Data[$i] -eq 0) { $i++ }
    if ($i -eq 0) { return ,$Data }
    return ,([byte[]]$Data[$i..($Data.Length - 1)])
}

# ------------------------------------------------------------------------------------------
# HTTP  (<-> http_call): no redirects, optional proxy, classified transport errors
# ------------------------------------------------------------------------------------------

function Invoke-Http([string]$Method, [string]$Url, [hashtable]$Headers, [byte[]]$Body, [bool]$UseProxy) {
    $handler = New-Object System.Net.Http.HttpClientHandler
    $handler.AllowAutoRedirect = $false
    $handler.UseProxy = $UseProxy
    if ($null -ne [SkrNative]::Roots) { $handler.ServerCertificateCustomValidationCallback = [SkrNative]::TlsCallback }
    $client = New-Object System.Net.Http.HttpClient($handler)
    $client.Timeout = [TimeSpan]::FromSeconds($HTTP_TIMEOUT)
    $request = New-Object System.Net.Http.HttpRequestMessage((New-Object System.Net.Http.HttpMethod($Method)), $Url)
    foreach ($name in $Headers.Keys) {
        if ($name -ne 'Content-Type') { [void]$request.Headers.TryAddWithoutValidation($name, [string]$Headers[$name]) }
    }
    if ($null -ne $Body) {
        $request.Content = New-Object System.Net.Http.ByteArrayContent(,$Body)
        $request.Content.Headers.ContentType = New-Object System.Net.Http.Headers.MediaTypeHeaderValue('application/json')
    }
    $netloc = ([System.Uri]$Url).Authority
    try {
        $response = $client.SendAsync($request).GetAwaiter().GetResult()
        $bytes = $response.Content.ReadAsByteArrayAsync().GetAwaiter().GetResult()
    } catch {
        $inner = $_.Exception
        while ($null -ne $inner) {
            if ($inner -is [System.Security.Authentication.AuthenticationException]) {
                throw (New-SkrError 'http_error' 'tls_verify_failed' ('TLS certificate of ' + $netloc + ' is not trusted'))
            }
            $inner = $inner.InnerException
        }
        throw (New-SkrError 'http_error' 'connection_error' ('cannot reach ' + $netloc + ': ' + $_.Exception.GetType().Name) -RetryInWindow $true)
    } finally {
        $client.Dispose()
    }
    $retryAfter = $null
    if ($null -ne $response.Headers.RetryAfter -and $null -ne $response.Headers.RetryAfter.Delta) {
        $retryAfter = $response.Headers.RetryAfter.Delta.TotalSeconds   # Nullable[TimeSpan] is unwrapped
    }
    return @{ Status = [int]$response.StatusCode; Body = $bytes; RetryAfter = $retryAfter }
}

# ------------------------------------------------------------------------------------------
# Steps  (<-> log, run_tool, attest, imds_token, classify_release_error, retry_in_window)
# ------------------------------------------------------------------------------------------

function Write-Log([string]$Text) {
    # Diagnostics go to stderr; callers only ever pass fixed text, statuses and codes.
    [Console]::Error.WriteLine('skr_release: ' + $Text)
}

function Join-CommandLine([string[]]$Items) {
    # Quote arguments for CreateProcess/CommandLineToArgvW.
    $quoted = foreach ($item in $Items) {
        if ($item -ne '' -and $item -notmatch '[\s"]') { $item }
        else { '"' + (($item -replace '(\\*)"', '$1$1\"') -replace '(\\+)$', '$1$1') + '"' }
    }
    return ($quoted -join ' ')
}

function Invoke-Tool([string[]]$Argv, [double]$Timeout, [hashtable]$ExtraEnv = @{}) {
    # Run a VM tool with its output captured (never passed through) and tracing switched off.
    $toolName = Format-Sanitized ([System.IO.Path]::GetFileName($Argv[0])) 80
    $psi = New-Object System.Diagnostics.ProcessStartInfo
    $psi.FileName = $Argv[0]
    $psi.Arguments = Join-CommandLine @($Argv | Select-Object -Skip 1)
    $psi.UseShellExecute = $false
    $psi.CreateNoWindow = $true
    $psi.RedirectStandardInput = $true
    $psi.RedirectStandardOutput = $true
    $psi.RedirectStandardError = $true
    if ($psi.EnvironmentVariables.ContainsKey('SKR_TRACE_ON')) { $psi.EnvironmentVariables.Remove('SKR_TRACE_ON') }
    foreach ($name in $ExtraEnv.Keys) { $psi.EnvironmentVariables[$name] = [string]$ExtraEnv[$name] }
    $process = New-Object System.Diagnostics.Process
    $process.StartInfo = $psi
    try { [void]$process.Start() }
    catch {
        $win32 = $_.Exception.InnerException
        if ($win32 -is [System.ComponentModel.Win32Exception] -and $win32.NativeErrorCode -eq 2) {
            throw (New-SkrError 'attestation_failed' 'tool_not_found' ('command not found: ' + $toolName))
        }
        throw (New-SkrError 'attestation_failed' 'tool_failed' ('cannot run ' + $toolName + ': ' + $_.Exception.GetType().Name))
    }
    $process.StandardInput.Close()
    $stdout = $process.StandardOutput.ReadToEndAsync()
    $stderr = $process.StandardError.ReadToEndAsync()
    if (-not $process.WaitForExit([int]($Timeout * 1000))) {
        try { $process.Kill() } catch { $null = $_ }
        throw (New-SkrError 'attestation_failed' 'tool_timeout' ('{0} did not finish within {1} s' -f $toolName, $Timeout))
    }
    $process.WaitForExit()
    return @{ Code = $process.ExitCode; Out = $stdout.Result; Err = $stderr.Result }
}

function Invoke-Attestation($p) {
    $argv = @($p.AttestationCommand | ForEach-Object { $_.Replace('{maa}', $p.MaaEndpoint) })
    $run = Invoke-Tool $argv $p.ToolTimeout
    if ($run.Code -ne 0) {
        throw (New-SkrError 'attestation_failed' ('tool_exit_{0}' -f $run.Code) ('attestation command exited with {0}' -f $run.Code))
    }
    $checked = Test-AttestationOutput $run.Out (Get-UnixNow)
    Write-Log ('attestation token ok ({0} chars, valid for {1} s)' -f $checked.Token.Length, [int]($checked.Exp - (Get-UnixNow)))
    return $checked
}

function Get-ImdsError($Response) {
    try {
        $data = ConvertFrom-JsonBytes $Response.Body
        $code = [string](Get-Member2 $data 'error')
        if (-not $code) { $code = 'HTTP' + $Response.Status }
        return @((Get-ErrorCode $code), (Format-Sanitized ([string](Get-Member2 $data 'error_description')) 200))
    } catch { return @(('HTTP' + $Response.Status), '') }
}

function Get-ImdsToken($p) {
    # Managed-identity access token for the vault resource (IMDS, no proxy, bounded retries).
    $query = 'api-version=' + $IMDS_API_VERSION + '&resource=' + [Uri]::EscapeDataString($p.ImdsResource)
    if ($p.ImdsClientId) { $query += '&client_id=' + [Uri]::EscapeDataString($p.ImdsClientId) }
    $url = $p.ImdsUrl + '/metadata/identity/oauth2/token?' + $query
    $failure = New-SkrError 'imds_failed' 'unreachable' 'IMDS did not answer' -Retryable $true
    for ($attempt = 0; $attempt -le $IMDS_DELAYS.Count; $attempt++) {
        if ($attempt -gt 0) { Start-Sleep -Milliseconds ([int]($IMDS_DELAYS[$attempt - 1] * 1000)) }
        try {
            $response = Invoke-Http 'GET' $url @{ 'Metadata' = 'true'; 'User-Agent' = $USER_AGENT } $null $false
        } catch {
            $err = Get-SkrError $_
            if ($null -eq $err) { throw }
            $failure = New-SkrError 'imds_failed' $err.ErrorCode ('IMDS: ' + $err.Message) -Retryable $true
            continue
        }
        if ($response.Status -eq 200) {
            try {
                $data = ConvertFrom-JsonBytes $response.Body
                $token = Get-Member2 $data 'access_token'
                $expiresOn = Get-Member2 $data 'expires_on'
                if ($expiresOn) { $expires = [double]::Parse([string]$expiresOn, $Invariant) }
                else { $expires = (Get-UnixNow) + [double]::Parse([string](Get-Member2 $data 'expires_in'), $Invariant) }
            } catch {
                throw (New-SkrError 'imds_failed' 'malformed_response' 'IMDS token response is malformed' -HttpStatus 200 -Retryable $true)
            }
            if ($token -isnot [string] -or -not $token) {
                throw (New-SkrError 'imds_failed' 'malformed_response' 'IMDS returned no access token' -HttpStatus 200 -Retryable $true)
            }
            Write-Log ('IMDS token ok (attempt {0})' -f ($attempt + 1))
            return @{ Token = $token; Exp = $expires }
        }
        $codeAndMessage = Get-ImdsError $response
        $failure = New-SkrError 'imds_failed' $codeAndMessage[0] $codeAndMessage[1] -HttpStatus $response.Status -Retryable $true
        if ($IMDS_RETRY_STATUSES -notcontains $response.Status -and $response.Status -lt 500) { break }
        if ($attempt -lt $IMDS_DELAYS.Count) { Write-Log ('IMDS HTTP {0}, retrying' -f $response.Status) }
    }
    throw $failure
}

function Get-ReleaseErrorClass([int]$Status, [string]$Body, $RetryAfter = $null) {
    # Map a Key Vault release error response to an outcome (reference: skr_flow.md 9.3).
    $code = ''; $inner = ''; $message = ''
    try {
        $err = Get-Member2 (ConvertFrom-Json -InputObject $Body) 'error'
        $code = [string](Get-Member2 $err 'code')
        $message = [string](Get-Member2 $err 'message')
        $inner = [string](Get-Member2 (Get-Member2 $err 'innererror') 'code')
    } catch { $message = $Body }
    $errorCode = $inner
    if (-not $errorCode) { $errorCode = $code }
    if (-not $errorCode) { $errorCode = 'HTTP' + $Status }
    $errorCode = Get-ErrorCode $errorCode
    $text = Format-Sanitized $message
    $lower = $message.ToLowerInvariant()
    if ($Status -eq 403 -and $inner -ceq 'ForbiddenByRbac') {
        return New-SkrError 'forbidden_by_rbac' $errorCode $text -HttpStatus $Status -RetryInWindow $true
    }
    if ($Status -eq 404 -or $code -ceq 'KeyNotFound') { return New-SkrError 'key_not_found' $errorCode $text -HttpStatus $Status }
    if (@(400, 403, 409) -contains $Status -and ($lower.Contains('exportable') -or $lower.Contains('not allowed to be exported'))) {
        return New-SkrError 'not_exportable' $errorCode $text -HttpStatus $Status
    }
    if (@(400, 403) -contains $Status -and $lower.Contains('cannot be verified')) {   # token rejected, not claims
        return New-SkrError 'attestation_failed' $errorCode $text -HttpStatus $Status
    }
    if ($Status -eq 403 -and $lower.Contains('policy')) { return New-SkrError 'policy_denied' $errorCode $text -HttpStatus $Status }
    if (@(400, 403) -contains $Status -and $lower.Contains('attestation')) {
        return New-SkrError 'attestation_failed' $errorCode $text -HttpStatus $Status
    }
    if ($Status -eq 429 -or $Status -ge 500) {
        return New-SkrError 'http_error' $errorCode $text -HttpStatus $Status -RetryInWindow $true -RetryAfter $RetryAfter
    }
    return New-SkrError 'http_error' $errorCode $text -HttpStatus $Status
}

function Invoke-InWindow($p, [scriptblock]$Attempt) {
    # Retry failures marked RetryInWindow with 2, 4, 8, then 10 s waits (or Retry-After) until
    # the window, counted from the first attempt, ends; the last wait is cut short.
    $deadline = $Clock.Elapsed.TotalSeconds + $p.RetryWindow
    $delay = $RETRY_FIRST_DELAY
    while ($true) {
        try { return ,(& $Attempt) }
        catch {
            $failure = Get-SkrError $_
            if ($null -eq $failure) { throw }
            $remaining = $deadline - $Clock.Elapsed.TotalSeconds
            if (-not $failure.RetryInWindow -or $remaining -le 0) { throw }
            $wait = $delay
            if ($null -ne $failure.RetryAfter) { $wait = [double]$failure.RetryAfter }
            $wait = [Math]::Min($wait, $remaining)
            Write-Log ('{0} ({1}); retrying in {2} s' -f $failure.Outcome, $failure.ErrorCode, $wait.ToString('0.0', $Invariant))
            Start-Sleep -Milliseconds ([int]($wait * 1000))
            $delay = [Math]::Min($delay * 2, $RETRY_MAX_DELAY)
        }
    }
}

# ------------------------------------------------------------------------------------------
# Modes  (<-> release_rest, release_azureattestskr, classify_tool_exit)
# ------------------------------------------------------------------------------------------

function Invoke-ReleaseRest($p) {
    $script:Maa = @{ Token = ''; Exp = 0.0 }
    $script:Access = @{ Token = ''; Exp = 0.0 }
    $script:ReleaseUrl = (Get-RequestedKeyId $p) + '/release?api-version=' + [Uri]::EscapeDataString($p.ApiVersion)
    $body = Invoke-InWindow $p {
        if ($script:Maa.Exp - (Get-UnixNow) -lt $TOKEN_MIN_REMAINING) { $script:Maa = Invoke-Attestation $p }
        if ($script:Access.Exp - (Get-UnixNow) -lt $TOKEN_MIN_REMAINING) { $script:Access = Get-ImdsToken $p }
        $script:Attempts++
        $json = '{"target":"' + $script:Maa.Token + '","enc":"' + $p.Enc + '"}'
        $response = Invoke-Http 'POST' $script:ReleaseUrl @{
            'Authorization' = 'Bearer ' + $script:Access.Token; 'Accept' = 'application/json'; 'User-Agent' = $USER_AGENT
        } ([System.Text.Encoding]::UTF8.GetBytes($json)) $true
        Write-Log ('release attempt {0}: HTTP {1}' -f $script:Attempts, $response.Status)
        if ($response.Status -ne 200) {
            throw (Get-ReleaseErrorClass $response.Status ([System.Text.Encoding]::UTF8.GetString($response.Body)) $response.RetryAfter)
        }
        return ,$response.Body
    }
    $script:Maa = $null
    $script:Access = $null
    try {
        $jws = Get-Member2 (ConvertFrom-JsonBytes $body) 'value'
        if ($jws -isnot [string]) { throw 'no value' }
    } catch { throw (New-SkrError 'jws_invalid' 'jws_malformed' 'release response has no value' -HttpStatus 200) }
    [SkrNative]::Roots = Read-TrustAnchors $p.CaBundle
    $payload = Confirm-ReleaseJws $jws ([System.Uri]$p.VaultUrl).Host
    $key = Confirm-ReleasePayload $payload $p
    Write-Log 'release JWS verified'
    $stored = Save-Jws $p.OutputPath $jws
    return @{ KeyId = [string](Get-Member2 $key 'kid'); Thumbprint = (Get-JwkThumbprint $key); Kty = [string](Get-Member2 $key 'kty')
              StoredPath = $stored[0]; StoredSha256 = $stored[1] }
}

function Get-ToolExitClass([int]$Code, [string]$Output) {
    # AzureAttestSKR exit codes: 2 MAA, 3 IMDS/Entra, 4 Key Vault HTTP error, 5 crypto, 6 transport.
    switch ($Code) {
        2 { return New-SkrError 'attestation_failed' 'maa_failed' 'AzureAttestSKR: attestation failed' }
        3 { return New-SkrError 'imds_failed' 'token_failed' 'AzureAttestSKR: IMDS/Entra token failed' -Retryable $true }
        4 {
            $m = [regex]::Match($Output, 'SKR HTTP request failed: HTTP (\d{3}): ?(.*)', 'Singleline')
            if ($m.Success) { return Get-ReleaseErrorClass ([int]$m.Groups[1].Value) $m.Groups[2].Value.Trim() }
            return New-SkrError 'http_error' 'unparsed_http_error' 'AzureAttestSKR: Key Vault HTTP error'
        }
        6 { return New-SkrError 'http_error' 'transport_error' 'AzureAttestSKR: transport error' -RetryInWindow $true }
        5 { return New-SkrError 'internal_error' 'crypto_error' 'AzureAttestSKR: crypto failure' }
    }
    return New-SkrError 'internal_error' ('tool_exit_{0}' -f $Code) ('AzureAttestSKR exited with {0}' -f $Code)
}

function Invoke-ReleaseAzureAttestSkr($p) {
    $keyUrl = Get-RequestedKeyId $p
    $script:ToolArgv = @($p.AzureAttestSkrCommand) + @('-a', $p.MaaEndpoint, '-k', $keyUrl, '-c', 'imds', '-r')
    $script:ToolEnv = @{}
    if ($p.ImdsClientId) { $script:ToolEnv['IMDS_CLIENT_ID'] = $p.ImdsClientId }   # the tool's selector
    [void](Invoke-InWindow $p {
        $script:Attempts++
        $run = Invoke-Tool $script:ToolArgv $p.ToolTimeout $script:ToolEnv
        Write-Log ('AzureAttestSKR run {0}: exit {1}' -f $script:Attempts, $run.Code)
        if ($run.Code -ne 0) { throw (Get-ToolExitClass $run.Code ($run.Out + "`n" + $run.Err)) }
        return $true
    })
    return @{ KeyId = $keyUrl; Thumbprint = $null; Kty = ''; StoredPath = $null; StoredSha256 = $null }
}

# ------------------------------------------------------------------------------------------
# Storage  (<-> prepare_output_dir, store_jws): SYSTEM + Administrators only, atomic write
# ------------------------------------------------------------------------------------------

$PRIVATE_SIDS = @('S-1-5-18', 'S-1-5-32-544')   # LocalSystem, BUILTIN\Administrators

function Initialize-OutputDir([string]$Path) {
    $directory = [System.IO.Path]::GetDirectoryName($Path)
    try {
        if (-not (Test-Path -LiteralPath $directory -PathType Container)) {
            [void](New-Item -ItemType Directory -Path $directory -Force)
            $acl = New-Object System.Security.AccessControl.DirectorySecurity
            $acl.SetAccessRuleProtection($true, $false)
            foreach ($sid in $PRIVATE_SIDS) {
                $rule = New-Object System.Security.AccessControl.FileSystemAccessRule(
                    (New-Object System.Security.Principal.SecurityIdentifier($sid)), 'FullControl',
                    'ContainerInherit,ObjectInherit', 'None', 'Allow')
                $acl.AddAccessRule($rule)
            }
            Set-Acl -LiteralPath $directory -AclObject $acl
        }
        $current = Get-Acl -LiteralPath $directory
    } catch {
        throw (New-SkrError 'invalid_parameters' 'output_dir_unusable' ('SKR_OUTPUT_PATH: cannot create its directory ({0})' -f $_.Exception.GetType().Name))
    }
    $foreign = @($current.Access | Where-Object {
        try { $PRIVATE_SIDS -notcontains $_.IdentityReference.Translate([System.Security.Principal.SecurityIdentifier]).Value }
        catch { $true }
    })
    if (-not $current.AreAccessRulesProtected -or $foreign.Count -gt 0) {
        throw (New-SkrError 'invalid_parameters' 'output_dir_not_private' 'SKR_OUTPUT_PATH: directory must be accessible to SYSTEM and Administrators only')
    }
}

function Save-Jws([string]$Path, [string]$Jws) {
    $directory = [System.IO.Path]::GetDirectoryName($Path)
    $temp = Join-Path $directory ('.{0}.{1}.tmp' -f [System.IO.Path]::GetFileName($Path), $PID)
    $data = [System.Text.Encoding]::ASCII.GetBytes($Jws)
    try {
        $stream = New-Object System.IO.FileStream($temp, [System.IO.FileMode]::CreateNew, [System.IO.FileAccess]::Write, [System.IO.FileShare]::None)
        try { $stream.Write($data, 0, $data.Length); $stream.Flush($true) } finally { $stream.Dispose() }
        if (Test-Path -LiteralPath $Path) { [System.IO.File]::Replace($temp, $Path, $null) }
        else { [System.IO.File]::Move($temp, $Path) }
    } catch {
        try { Remove-Item -LiteralPath $temp -Force -ErrorAction SilentlyContinue } catch { $null = $_ }
        throw (New-SkrError 'internal_error' 'store_failed' ('cannot store the released key ({0})' -f $_.Exception.GetType().Name))
    }
    Write-Log 'released key stored for SYSTEM/Administrators only'
    $sha256 = [System.Security.Cryptography.SHA256]::Create()
    return @($Path, (-join ($sha256.ComputeHash($data) | ForEach-Object { $_.ToString('x2') })))
}

# ------------------------------------------------------------------------------------------
# Result line and main  (<-> result_line, main)
# ------------------------------------------------------------------------------------------

function ConvertTo-JsonValue($Value) {
    if ($null -eq $Value) { return 'null' }
    if ($Value -is [bool]) { if ($Value) { return 'true' } else { return 'false' } }
    if ($Value -is [int] -or $Value -is [long]) { return $Value.ToString($Invariant) }
    if ($Value -is [double]) { return $Value.ToString('0.0##', $Invariant) }
    $escaped = New-Object System.Text.StringBuilder
    foreach ($ch in ([string]$Value).ToCharArray()) {
        switch ($ch) {
            '"' { [void]$escaped.Append('\"') }
            '\' { [void]$escaped.Append('\\') }
            default {
                if ([int]$ch -lt 32 -or [int]$ch -gt 126) { [void]$escaped.Append(('\u{0:x4}' -f [int]$ch)) }
                else { [void]$escaped.Append($ch) }
            }
        }
    }
    return '"' + $escaped.ToString() + '"'
}

function Format-ResultLine([System.Collections.Specialized.OrderedDictionary]$Fields) {
    $render = { $RESULT_PREFIX + '{' + ((@($Fields.Keys) | ForEach-Object { '"' + $_ + '":' + (ConvertTo-JsonValue $Fields[$_]) }) -join ',') + '}' }
    $line = & $render
    while ($line.Length -gt $MAX_RESULT_BYTES -and $Fields['message']) {
        $message = [string]$Fields['message']
        $keep = [Math]::Max(0, $message.Length - ($line.Length - $MAX_RESULT_BYTES) - 3)
        $Fields['message'] = $message.Substring(0, $keep) + '...'
        if ($Fields['message'].Length -le 3) { $Fields['message'] = $null }
        $line = & $render
    }
    return $line
}

$script:Attempts = 0
$fields = [ordered]@{
    schema = 1; outcome = 'internal_error'; exit_code = $EXIT_TERMINAL; retryable = $false
    mode = $null; key_id = $null; key_thumbprint = $null; kty = $null; enc = $null
    http_status = $null; error_code = $null; message = $null; attempts = 0
    elapsed_seconds = 0.0; stored_path = $null; stored_sha256 = $null
    script_version = $SCRIPT_VERSION
}
try {
    $params = Read-Params
    $fields['mode'] = $params.Mode
    $fields['key_id'] = Get-RequestedKeyId $params
    $fields['enc'] = $params.Enc
    if ($params.Mode -eq 'rest') {
        if ($params.CaBundle) { [SkrNative]::Roots = Read-TrustAnchors $params.CaBundle }
        Initialize-OutputDir $params.OutputPath
        $released = Invoke-ReleaseRest $params
    } else {
        $released = Invoke-ReleaseAzureAttestSkr $params
    }
    $fields['outcome'] = 'released'
    $fields['exit_code'] = $EXIT_RELEASED
    $fields['key_id'] = $released.KeyId
    $fields['key_thumbprint'] = $released.Thumbprint
    if ($released.Kty) { $fields['kty'] = $released.Kty }
    $fields['http_status'] = 200
    $fields['stored_path'] = $released.StoredPath
    $fields['stored_sha256'] = $released.StoredSha256
} catch {
    $failure = Get-SkrError $_
    if ($null -ne $failure) {
        $retryable = $failure.Retryable -or ($RETRYABLE_OUTCOMES -contains $failure.Outcome)
        $fields['outcome'] = $failure.Outcome
        $fields['error_code'] = $failure.ErrorCode
        $message = Format-Sanitized $failure.Message
        if ($message) { $fields['message'] = $message }
        $fields['http_status'] = $failure.HttpStatus
        $fields['retryable'] = [bool]$retryable
        if ($retryable) { $fields['exit_code'] = $EXIT_RETRYABLE } else { $fields['exit_code'] = $EXIT_TERMINAL }
    } else {
        # Never let an error record (which may quote data) reach the output.
        $fields['outcome'] = 'internal_error'
        $fields['error_code'] = 'unexpected_' + $_.Exception.GetType().Name
        $fields['message'] = 'unexpected error in the release script'
    }
}
$fields['attempts'] = [int]$script:Attempts
$fields['elapsed_seconds'] = [Math]::Round($Clock.Elapsed.TotalSeconds, 3)
[Console]::Out.WriteLine((Format-ResultLine $fields))
[Console]::Out.Flush()
exit [int]$fields['exit_code']
