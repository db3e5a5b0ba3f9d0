"""Managed identity endpoint (App Service style) with the real ManagedIdentityCredential, and token checks."""

from __future__ import annotations

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError
from azure.identity import ManagedIdentityCredential
from joserfc import jwt

from localdev.clock import VirtualClock
from localdev.twin.core import Twin
from localdev.twin.identity import TokenError
from localdev.twin.testing import authorization_client, managed_identity_env


@pytest.fixture
def mi_env(twin: Twin, monkeypatch: pytest.MonkeyPatch) -> Twin:
    for key, value in managed_identity_env(twin).items():
        monkeypatch.setenv(key, value)
    for key in ("IDENTITY_SERVER_THUMBPRINT", "MSI_ENDPOINT", "IMDS_ENDPOINT", "AZURE_CLIENT_ID"):
        monkeypatch.delenv(key, raising=False)
    return twin


def test_managed_identity_credential_gets_tokens_naming_the_app(mi_env: Twin) -> None:
    twin = mi_env
    credential = ManagedIdentityCredential()
    token = credential.get_token("https://management.azure.com/.default")
    claims = jwt.decode(token.token, twin.identity._key).claims
    assert claims["oid"] == twin.app_principal.object_id
    assert claims["appid"] == twin.app_principal.app_id
    assert claims["tid"] == twin.config.tenant_id
    assert claims["aud"] == "https://management.azure.com"
    assert claims["iss"] == f"https://sts.windows.net/{twin.config.tenant_id}/"
    assert claims["exp"] - claims["iat"] == int(twin.config.token_lifetime_seconds)
    assert token.expires_on == claims["exp"]
    assert twin.identity.verify(token.token, "https://management.azure.com/").object_id == twin.app_principal.object_id
    assert twin.counters.get(caller=twin.app_principal.object_id, service="identity") == 1


def test_the_production_credential_path_drives_arm(mi_env: Twin) -> None:
    from azure.mgmt.authorization import AuthorizationManagementClient

    twin = mi_env
    client = AuthorizationManagementClient(
        ManagedIdentityCredential(), twin.config.subscription_id, base_url=twin.urls.arm,
        credential_scopes=["https://management.azure.com/.default"], connection_verify=twin.ca_bundle_path)
    role = client.role_definitions.get(f"/subscriptions/{twin.config.subscription_id}",
                                       "08bbd89e-9f13-488c-ac41-acfcb10c90ab")
    assert role.role_name == "Key Vault Crypto Service Release User"


def test_user_assigned_identity_is_selected_by_client_id(mi_env: Twin) -> None:
    twin = mi_env
    extra = twin.add_principal("uami", replicated=True)
    twin.identity.app_identities[:] = [twin.app_principal.object_id, extra.object_id]
    token = ManagedIdentityCredential(client_id=extra.app_id).get_token("https://vault.azure.net/.default")
    assert twin.identity.verify(token.token, "https://vault.azure.net").object_id == extra.object_id
    with pytest.raises(ClientAuthenticationError):
        ManagedIdentityCredential(client_id="00000000-0000-0000-0000-000000000000").get_token(
            "https://vault.azure.net/.default")


def test_identity_endpoint_refuses_a_bad_header_or_resource(twin: Twin) -> None:
    url = twin.urls.identity
    query = {"api-version": "2019-08-01", "resource": "https://vault.azure.net"}
    assert httpx.get(url, params=query).status_code == 401
    assert httpx.get(url, params=query, headers={"X-IDENTITY-HEADER": "wrong"}).status_code == 401
    good = {"X-IDENTITY-HEADER": twin.identity_header}
    unknown = httpx.get(url, params={**query, "resource": "https://nope.example"}, headers=good)
    assert unknown.status_code == 400 and "AADSTS500011" in unknown.json()["message"]
    assert httpx.get(url, params={"resource": "https://vault.azure.net"}, headers=good).status_code == 400
    ok = httpx.get(url, params=query, headers=good).json()
    assert ok["token_type"] == "Bearer" and ok["resource"] == "https://vault.azure.net" and int(ok["expires_on"]) > 0


def test_verify_refuses_wrong_audience_foreign_signature_and_expiry(twin_factory) -> None:
    clock = VirtualClock(start=2_000_000.0)
    twin = twin_factory(clock=clock, token_lifetime_seconds=3600)
    token = twin.identity.mint_token(twin.app_principal.object_id, "https://vault.azure.net")
    with pytest.raises(TokenError) as wrong:
        twin.identity.verify(token, "https://management.azure.com")
    assert wrong.value.kind == "audience"
    other = twin_factory(seed=5)
    with pytest.raises(TokenError) as foreign:
        other.identity.verify(token, "https://vault.azure.net")
    assert foreign.value.kind == "signature"
    with pytest.raises(TokenError):
        twin.identity.verify("not-a-jwt", "https://vault.azure.net")
    clock.advance(3601)
    with pytest.raises(TokenError) as expired:
        twin.identity.verify(token, "https://vault.azure.net")
    assert expired.value.kind == "expired"
    with pytest.raises(KeyError):
        twin.identity.mint_token("00000000-0000-0000-0000-000000000000", "https://vault.azure.net")


def test_arm_answers_401_shapes_for_missing_and_expired_tokens(twin_factory) -> None:
    clock = VirtualClock(start=2_000_000.0)
    twin = twin_factory(clock=clock, token_lifetime_seconds=600)
    url = f"{twin.urls.arm}/subscriptions/{twin.config.subscription_id}/providers/Microsoft.Compute/virtualMachines"
    verify = twin.tls.ca_path
    import ssl

    context = ssl.create_default_context(cafile=verify)
    missing = httpx.get(url, params={"api-version": "2024-07-01"}, verify=context)
    assert missing.status_code == 401 and missing.json()["error"]["code"] == "AuthenticationFailed"
    assert missing.headers["WWW-Authenticate"].startswith('Bearer authorization_uri="https://login.windows.net/"')
    client = authorization_client(twin)
    clock.advance(601)  # the credential's tokens are minted on the twin clock, so mint one and let it age
    stale = twin.identity.mint_token(twin.app_principal.object_id, "https://management.azure.com")
    clock.advance(601)
    expired = httpx.get(url, params={"api-version": "2024-07-01"}, headers={"Authorization": f"Bearer {stale}"},
                        verify=context)
    assert expired.status_code == 401 and expired.json()["error"]["code"] == "ExpiredAuthenticationToken"
    vault_token = twin.identity.mint_token(twin.app_principal.object_id, "https://vault.azure.net")
    wrong = httpx.get(url, params={"api-version": "2024-07-01"}, headers={"Authorization": f"Bearer {vault_token}"},
                      verify=context)
    assert wrong.json()["error"]["code"] == "InvalidAuthenticationTokenAudience"
    assert client.role_definitions.get(f"/subscriptions/{twin.config.subscription_id}",
                                       "acdd72a7-3385-48ef-bd42-f606fba81ae7").role_name == "Reader"
    assert twin.counters.get(caller="anonymous", service="arm") == 3
