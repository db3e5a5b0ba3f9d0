"""Every app setting, validated once at start-up (DESIGN §7: bad input gets a clear, specific error).

``load_settings`` reads an environment mapping and either returns a frozen ``Settings`` or raises
``SettingsError`` naming the variable and what is wrong with it. ``Settings`` is JSON-serialisable
(orchestrators get it, or a slice of it, as input because they must not read the environment);
the Event Grid topic key is the one secret and is never serialised - activities that publish
events load settings from their own environment.
"""

from __future__ import annotations

import difflib
import json
import os
import re
from collections.abc import Callable, Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from skr.models import ResourceIdError, ScopeId, VaultResourceId, VmResourceId
from skr.naming import NamingError, render_key_name, validate_key_name, validate_key_name_template
from skr.policy import (
    PolicyError,
    ReleasePolicy,
    build_policy,
    lint_policy,
    normalise_authority,
    parse_conditions,
)


class SettingsError(ValueError):
    """A setting that is missing or invalid; ``variable`` names the app setting."""

    def __init__(self, variable: str, problem: str) -> None:
        self.variable = variable
        self.problem = problem
        super().__init__(f"{variable}: {problem}")


class KeyType(StrEnum):
    RSA_HSM = "RSA-HSM"
    EC_HSM = "EC-HSM"


class KeyCurve(StrEnum):
    P_256 = "P-256"
    P_384 = "P-384"
    P_521 = "P-521"


class KeyPolicyMismatch(StrEnum):
    """What to do when an existing key's release policy differs from the configured one."""

    FAIL = "fail"
    NEW_VERSION = "new_version"


class RoleMode(StrEnum):
    BUILTIN = "builtin"
    CUSTOM = "custom"


class RunCommandMode(StrEnum):
    MANAGED = "managed"
    ACTION = "action"


class ReleaseMode(StrEnum):
    REST = "rest"
    AZUREATTESTSKR = "azureattestskr"


class ReleaseEncryption(StrEnum):
    CKM_RSA_AES_KEY_WRAP = "CKM_RSA_AES_KEY_WRAP"
    RSA_AES_KEY_WRAP_256 = "RSA_AES_KEY_WRAP_256"
    RSA_AES_KEY_WRAP_384 = "RSA_AES_KEY_WRAP_384"


RSA_KEY_SIZES = (2048, 3072, 4096)
BUILTIN_RELEASE_ROLE_ID = "08bbd89e-9f13-488c-ac41-acfcb10c90ab"
RELEASE_DATA_ACTION = "Microsoft.KeyVault/vaults/keys/release/action"


class TagFilter(BaseModel):
    """``name=value``: only VMs carrying this tag are onboarded (tag names compare case-insensitively)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    name: str
    value: str

    def matches(self, tags: Mapping[str, str]) -> bool:
        wanted = self.name.lower()
        return any(key.lower() == wanted and value == self.value for key, value in tags.items())


class OrchestrationSettings(BaseModel):
    """The timing knobs orchestrators need, passed as input (never read from env in an orchestrator)."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    propagation_deadline_seconds: int
    poll_initial_seconds: int
    poll_max_seconds: int
    in_vm_retry_seconds: int
    run_command_timeout_seconds: int
    disable_key_on_offboard: bool


class Settings(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    vault_url: str
    vault_resource_id: VaultResourceId | None = None  # the ARM id of vault_url: key-scope role assignments
    key_name_template: str = "cvm-{vm_name}"
    key_tag: str = "skr-key"
    key_type: KeyType = KeyType.RSA_HSM
    key_size: int | None = 3072
    key_curve: KeyCurve | None = None
    maa_endpoint: str
    release_policy: ReleasePolicy
    policy_source: Literal["default", "claims", "file"] = "default"
    key_policy_mismatch: KeyPolicyMismatch = KeyPolicyMismatch.FAIL
    role_mode: RoleMode = RoleMode.BUILTIN
    custom_role_name: str = "SKR Key Release User"
    scopes: tuple[ScopeId, ...] = Field(min_length=1)
    tag_filter: TagFilter | None = None
    propagation_deadline_seconds: int = 900
    poll_initial_seconds: int = 5
    poll_max_seconds: int = 60
    in_vm_retry_seconds: int = 90
    run_command_timeout_seconds: int = 600
    run_command_mode: RunCommandMode = RunCommandMode.MANAGED
    release_mode: ReleaseMode = ReleaseMode.REST
    release_enc: ReleaseEncryption = ReleaseEncryption.CKM_RSA_AES_KEY_WRAP
    events_topic_endpoint: str | None = None
    events_topic_key: SecretStr | None = Field(default=None, exclude=True)
    disable_key_on_offboard: bool = False
    reconcile_schedule: str = "0 */15 * * * *"
    arm_endpoint: str = "https://management.azure.com"
    ca_bundle: str | None = None
    sdk_retry_total: int = 3
    task_hub: str = "SkrOrchestrator"
    azure_client_id: str | None = None
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """JSON dict without the topic key (safe for Durable history)."""
        return self.model_dump(mode="json")

    def in_scope(self, vm_id: VmResourceId, tags: Mapping[str, str] | None = None) -> bool:
        """The scope guard: inside a configured scope and, when a tag filter is set, carrying the tag."""
        if not any(scope.contains(vm_id) for scope in self.scopes):
            return False
        return self.tag_filter is None or self.tag_filter.matches(tags or {})

    def key_name_for(self, vm_id: VmResourceId, tags: Mapping[str, str] | None = None) -> tuple[str, bool]:
        """(key name, shared): the key-tag value when the VM carries it, else the template's per-VM name."""
        wanted = self.key_tag.lower()
        for key, value in (tags or {}).items():
            if key.lower() == wanted and value.strip():
                try:
                    return validate_key_name(value.strip()), True
                except NamingError as exc:
                    raise NamingError(f"tag {key!r} of VM {vm_id}: {exc}") from exc
        return render_key_name(self.key_name_template, vm_id), False

    def orchestration(self) -> OrchestrationSettings:
        return OrchestrationSettings(
            propagation_deadline_seconds=self.propagation_deadline_seconds,
            poll_initial_seconds=self.poll_initial_seconds,
            poll_max_seconds=self.poll_max_seconds,
            in_vm_retry_seconds=self.in_vm_retry_seconds,
            run_command_timeout_seconds=self.run_command_timeout_seconds,
            disable_key_on_offboard=self.disable_key_on_offboard,
        )


# ---------------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------------

KNOWN_VARIABLES = (
    "SKR_VAULT_URL",
    "SKR_VAULT_RESOURCE_ID",
    "SKR_KEY_NAME_TEMPLATE",
    "SKR_KEY_TAG",
    "SKR_KEY_TYPE",
    "SKR_KEY_SIZE",
    "SKR_KEY_CURVE",
    "SKR_MAA_ENDPOINT",
    "SKR_RELEASE_CLAIMS",
    "SKR_RELEASE_POLICY_FILE",
    "SKR_KEY_POLICY_MISMATCH",
    "SKR_ROLE_MODE",
    "SKR_CUSTOM_ROLE_NAME",
    "SKR_SCOPES",
    "SKR_TAG_FILTER",
    "SKR_PROPAGATION_DEADLINE_SECONDS",
    "SKR_POLL_INITIAL_SECONDS",
    "SKR_POLL_MAX_SECONDS",
    "SKR_IN_VM_RETRY_SECONDS",
    "SKR_RUN_COMMAND_TIMEOUT_SECONDS",
    "SKR_RUN_COMMAND_MODE",
    "SKR_RELEASE_MODE",
    "SKR_RELEASE_ENC",
    "SKR_EVENTS_TOPIC_ENDPOINT",
    "SKR_EVENTS_TOPIC_KEY",
    "SKR_DISABLE_KEY_ON_OFFBOARD",
    "SKR_RECONCILE_SCHEDULE",
    "SKR_ARM_ENDPOINT",
    "SKR_CA_BUNDLE",
    "SKR_SDK_RETRY_TOTAL",
    "SKR_TASK_HUB",
    "AZURE_CLIENT_ID",
)

_GUID = re.compile(r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$")
_TASK_HUB = re.compile(r"^[A-Za-z][A-Za-z0-9]{2,44}$")
_TAG_NAME_FORBIDDEN = set("<>%&\\?/")
_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}
E = TypeVar("E", bound=StrEnum)


class _Env:
    """Typed readers over the environment; every error names its variable."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.env = env

    def get(self, name: str) -> str | None:
        value = self.env.get(name)
        if value is None or not value.strip():
            return None
        return value.strip()

    def required(self, name: str, hint: str) -> str:
        value = self.get(name)
        if value is None:
            raise SettingsError(name, f"is required ({hint})")
        return value

    def https_url(self, name: str, value: str, *, allow_path: bool = False) -> str:
        parts = urlsplit(value)
        if parts.scheme.lower() != "https" or not parts.hostname:
            raise SettingsError(name, f"must be an https:// URL, got {value!r}")
        if parts.query or parts.fragment or (not allow_path and parts.path not in ("", "/")):
            raise SettingsError(name, f"must be a bare https://host[:port] URL, got {value!r}")
        try:
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise SettingsError(name, f"has an invalid port: {value!r}") from exc
        return f"https://{parts.netloc}{parts.path.rstrip('/')}"

    def integer(self, name: str, default: int, minimum: int, maximum: int) -> int:
        raw = self.get(name)
        if raw is None:
            return default
        try:
            value = int(raw)
        except ValueError as exc:
            raise SettingsError(name, f"must be a whole number, got {raw!r}") from exc
        if not minimum <= value <= maximum:
            raise SettingsError(name, f"must be between {minimum} and {maximum}, got {value}")
        return value

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.get(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() in _FALSE:
            return False
        raise SettingsError(name, f"must be true or false, got {raw!r}")

    def choice(self, name: str, enum: type[E], default: E) -> E:
        raw = self.get(name)
        if raw is None:
            return default
        for member in enum:
            if member.value.lower() == raw.lower():
                return member
        raise SettingsError(name, f"must be one of {', '.join(m.value for m in enum)}, got {raw!r}")

    def checked(self, name: str, default: str, check: Callable[[str], str | None]) -> str:
        value = self.get(name) or default
        problem = check(value)
        if problem:
            raise SettingsError(name, problem)
        return value


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Validate every setting from ``env`` (default ``os.environ``); raise SettingsError on the first problem."""
    reader = _Env(os.environ if env is None else env)
    warnings: list[str] = list(_unknown_variables(reader.env))

    vault_url = reader.https_url(
        "SKR_VAULT_URL", reader.required("SKR_VAULT_URL", "the Key Vault URL, https://<vault>.vault.azure.net")
    )
    maa_endpoint = reader.https_url(
        "SKR_MAA_ENDPOINT",
        reader.required("SKR_MAA_ENDPOINT", "the attestation authority, https://<name>.<region>.attest.azure.net"),
        allow_path=True,
    )

    template = reader.get("SKR_KEY_NAME_TEMPLATE") or "cvm-{vm_name}"
    try:
        validate_key_name_template(template)
    except NamingError as exc:
        raise SettingsError("SKR_KEY_NAME_TEMPLATE", str(exc)) from exc

    key_type = reader.choice("SKR_KEY_TYPE", KeyType, KeyType.RSA_HSM)
    key_size, key_curve = _key_shape(reader, key_type)
    policy, source, policy_warnings = _release_policy(reader, maa_endpoint)
    warnings.extend(policy_warnings)

    poll_initial = reader.integer("SKR_POLL_INITIAL_SECONDS", 5, 1, 3600)
    poll_max = reader.integer("SKR_POLL_MAX_SECONDS", 60, 1, 3600)
    if poll_max < poll_initial:
        raise SettingsError(
            "SKR_POLL_MAX_SECONDS", f"({poll_max}) must be >= SKR_POLL_INITIAL_SECONDS ({poll_initial})"
        )
    deadline = reader.integer("SKR_PROPAGATION_DEADLINE_SECONDS", 900, 1, 7 * 24 * 3600)
    if deadline < poll_initial:
        raise SettingsError(
            "SKR_PROPAGATION_DEADLINE_SECONDS", f"({deadline}) must be >= SKR_POLL_INITIAL_SECONDS ({poll_initial})"
        )
    run_timeout = reader.integer("SKR_RUN_COMMAND_TIMEOUT_SECONDS", 600, 30, 5400)
    in_vm_retry = reader.integer("SKR_IN_VM_RETRY_SECONDS", 90, 0, 5400)
    if in_vm_retry >= run_timeout:
        raise SettingsError(
            "SKR_IN_VM_RETRY_SECONDS",
            f"({in_vm_retry}) must be shorter than SKR_RUN_COMMAND_TIMEOUT_SECONDS ({run_timeout}): the in-VM retry "
            "window runs inside one run command",
        )

    topic_raw = reader.get("SKR_EVENTS_TOPIC_ENDPOINT")
    topic_endpoint = (
        None if topic_raw is None else reader.https_url("SKR_EVENTS_TOPIC_ENDPOINT", topic_raw, allow_path=True)
    )
    topic_key = reader.get("SKR_EVENTS_TOPIC_KEY")
    if topic_key is not None and topic_endpoint is None:
        raise SettingsError("SKR_EVENTS_TOPIC_KEY", "is set but SKR_EVENTS_TOPIC_ENDPOINT is not")

    return Settings(
        vault_url=vault_url,
        vault_resource_id=_vault_resource_id(reader, vault_url),
        key_name_template=template,
        key_tag=reader.checked("SKR_KEY_TAG", "skr-key", _tag_name_problem),
        key_type=key_type,
        key_size=key_size,
        key_curve=key_curve,
        maa_endpoint=maa_endpoint,
        release_policy=policy,
        policy_source=source,
        key_policy_mismatch=reader.choice("SKR_KEY_POLICY_MISMATCH", KeyPolicyMismatch, KeyPolicyMismatch.FAIL),
        role_mode=reader.choice("SKR_ROLE_MODE", RoleMode, RoleMode.BUILTIN),
        custom_role_name=reader.checked("SKR_CUSTOM_ROLE_NAME", "SKR Key Release User", _role_name_problem),
        scopes=_scopes(reader),
        tag_filter=_tag_filter(reader),
        propagation_deadline_seconds=deadline,
        poll_initial_seconds=poll_initial,
        poll_max_seconds=poll_max,
        in_vm_retry_seconds=in_vm_retry,
        run_command_timeout_seconds=run_timeout,
        run_command_mode=reader.choice("SKR_RUN_COMMAND_MODE", RunCommandMode, RunCommandMode.MANAGED),
        release_mode=reader.choice("SKR_RELEASE_MODE", ReleaseMode, ReleaseMode.REST),
        release_enc=reader.choice("SKR_RELEASE_ENC", ReleaseEncryption, ReleaseEncryption.CKM_RSA_AES_KEY_WRAP),
        events_topic_endpoint=topic_endpoint,
        events_topic_key=SecretStr(topic_key) if topic_key else None,
        disable_key_on_offboard=reader.boolean("SKR_DISABLE_KEY_ON_OFFBOARD", False),
        reconcile_schedule=reader.checked("SKR_RECONCILE_SCHEDULE", "0 */15 * * * *", ncrontab_problem),
        arm_endpoint=reader.https_url(
            "SKR_ARM_ENDPOINT", reader.get("SKR_ARM_ENDPOINT") or "https://management.azure.com"
        ),
        ca_bundle=_ca_bundle(reader),
        sdk_retry_total=reader.integer("SKR_SDK_RETRY_TOTAL", 3, 0, 10),
        task_hub=reader.checked("SKR_TASK_HUB", "SkrOrchestrator", _task_hub_problem),
        azure_client_id=_client_id(reader),
        warnings=tuple(warnings),
    )


def _unknown_variables(env: Mapping[str, str]) -> list[str]:
    """SKR_* names we do not know are almost always typos; say so without failing start-up."""
    found = []
    for name in sorted(env):
        if name.startswith("SKR_") and name not in KNOWN_VARIABLES and not name.startswith("SKR_TWIN_"):
            close = difflib.get_close_matches(name, KNOWN_VARIABLES, n=1)
            hint = f" (did you mean {close[0]}?)" if close else ""
            found.append(f"{name}: unknown setting, ignored{hint}")
    return found


def _key_shape(reader: _Env, key_type: KeyType) -> tuple[int | None, KeyCurve | None]:
    if key_type is KeyType.RSA_HSM:
        if reader.get("SKR_KEY_CURVE") is not None:
            raise SettingsError("SKR_KEY_CURVE", "only applies to SKR_KEY_TYPE=EC-HSM (the key type is RSA-HSM)")
        size = reader.integer("SKR_KEY_SIZE", 3072, 0, 1 << 16)
        if size not in RSA_KEY_SIZES:
            raise SettingsError("SKR_KEY_SIZE", f"must be one of {', '.join(map(str, RSA_KEY_SIZES))}, got {size}")
        return size, None
    if reader.get("SKR_KEY_SIZE") is not None:
        raise SettingsError("SKR_KEY_SIZE", "only applies to SKR_KEY_TYPE=RSA-HSM (the key type is EC-HSM)")
    return None, reader.choice("SKR_KEY_CURVE", KeyCurve, KeyCurve.P_256)


def _release_policy(
    reader: _Env, maa_endpoint: str
) -> tuple[ReleasePolicy, Literal["default", "claims", "file"], list[str]]:
    claims = reader.get("SKR_RELEASE_CLAIMS")
    policy_file = reader.get("SKR_RELEASE_POLICY_FILE")
    if claims is not None and policy_file is not None:
        raise SettingsError("SKR_RELEASE_CLAIMS", "and SKR_RELEASE_POLICY_FILE are mutually exclusive; set one")
    if policy_file is not None:
        return _policy_from_file(policy_file, maa_endpoint)
    if claims is None:
        policy = build_policy(maa_endpoint)
        source: Literal["default", "claims", "file"] = "default"
    else:
        try:
            conditions = parse_conditions(json.loads(claims))
        except json.JSONDecodeError as exc:
            raise SettingsError("SKR_RELEASE_CLAIMS", f"is not valid JSON: {exc}") from exc
        except PolicyError as exc:
            raise SettingsError("SKR_RELEASE_CLAIMS", "; ".join(f"{i.path}: {i.message}" for i in exc.issues)) from exc
        policy = build_policy(maa_endpoint, conditions)
        source = "claims"
    variable = "SKR_RELEASE_CLAIMS" if source == "claims" else "SKR_MAA_ENDPOINT"
    return policy, source, [f"{variable}: {issue}" for issue in lint_policy(policy).warnings]


def _policy_from_file(path: str, maa_endpoint: str) -> tuple[ReleasePolicy, Literal["file"], list[str]]:
    variable = "SKR_RELEASE_POLICY_FILE"
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(variable, f"cannot read {path!r}: {exc.strerror or exc}") from exc
    report = lint_policy(data)
    if report.policy is None or report.errors:
        raise SettingsError(variable, f"{path}: " + "; ".join(f"{i.path}: {i.message}" for i in report.errors))
    authorities = {normalise_authority(rule.authority) for rule in report.policy.authorities}
    if normalise_authority(maa_endpoint) not in authorities:
        raise SettingsError(
            variable,
            f"no authority of {path} is SKR_MAA_ENDPOINT ({maa_endpoint}); the VM attests there, so Key Vault "
            f"would never release (authorities: {', '.join(sorted(authorities))})",
        )
    return report.policy, "file", [f"{variable}: {issue}" for issue in report.warnings]


def _scopes(reader: _Env) -> tuple[ScopeId, ...]:
    raw = reader.required("SKR_SCOPES", "comma-separated /subscriptions/{id}[/resourceGroups/{name}]")
    scopes: list[ScopeId] = []
    for item in (part.strip() for part in raw.split(",")):
        if not item:
            continue
        try:
            scope = ScopeId.parse(item)
        except ResourceIdError as exc:
            raise SettingsError("SKR_SCOPES", str(exc)) from exc
        if scope not in scopes:
            scopes.append(scope)
    if not scopes:
        raise SettingsError("SKR_SCOPES", "lists no scope")
    return tuple(scopes)


_VAULT_DNS_SUFFIXES = (".vault.azure.net", ".vault.azure.cn", ".vault.usgovcloudapi.net", ".vault.microsoftazure.de")


def _vault_resource_id(reader: _Env, vault_url: str) -> VaultResourceId | None:
    """The vault's ARM id; on a public-cloud vault host its name must be the host's first label."""
    raw = reader.get("SKR_VAULT_RESOURCE_ID")
    if raw is None:
        return None
    try:
        vault_id = VaultResourceId.parse(raw)
    except ResourceIdError as exc:
        raise SettingsError("SKR_VAULT_RESOURCE_ID", str(exc)) from exc
    host = (urlsplit(vault_url).hostname or "").lower()
    if host.endswith(_VAULT_DNS_SUFFIXES) and host.split(".", 1)[0] != vault_id.name.lower():
        raise SettingsError(
            "SKR_VAULT_RESOURCE_ID",
            f"names vault {vault_id.name!r} but SKR_VAULT_URL is {vault_url} (vault {host.split('.', 1)[0]!r})",
        )
    return vault_id


def _tag_filter(reader: _Env) -> TagFilter | None:
    raw = reader.get("SKR_TAG_FILTER")
    if raw is None:
        return None
    name, sep, value = raw.partition("=")
    if not sep or not name.strip():
        raise SettingsError("SKR_TAG_FILTER", f"must be name=value, got {raw!r}")
    problem = _tag_name_problem(name.strip())
    if problem:
        raise SettingsError("SKR_TAG_FILTER", problem)
    return TagFilter(name=name.strip(), value=value.strip())


def _tag_name_problem(name: str) -> str | None:
    if len(name) > 512:
        return f"tag name is {len(name)} characters; Azure allows 512"
    bad = sorted(_TAG_NAME_FORBIDDEN & set(name))
    if bad:
        return f"tag name {name!r} contains {' '.join(bad)}, which Azure tag names cannot"
    return None


def _role_name_problem(name: str) -> str | None:
    return None if len(name) <= 512 else f"role name is {len(name)} characters; ARM allows 512"


def _task_hub_problem(name: str) -> str | None:
    if _TASK_HUB.match(name):
        return None
    return f"task hub name {name!r} must be 3-45 letters and digits, starting with a letter"


def _ca_bundle(reader: _Env) -> str | None:
    path = reader.get("SKR_CA_BUNDLE")
    if path is not None and not Path(path).is_file():
        raise SettingsError("SKR_CA_BUNDLE", f"{path!r} is not a readable file")
    return path


def _client_id(reader: _Env) -> str | None:
    client_id = reader.get("AZURE_CLIENT_ID")
    if client_id is not None and not _GUID.match(client_id):
        raise SettingsError(
            "AZURE_CLIENT_ID", f"must be the user-assigned identity's client id (a GUID), got {client_id!r}"
        )
    return client_id.lower() if client_id else None


# ---------------------------------------------------------------------------------------------
# NCRONTAB (Functions timer trigger: second minute hour day month day-of-week)
# ---------------------------------------------------------------------------------------------

_MONTH_NAMES = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTHS = {m: i + 1 for i, m in enumerate(_MONTH_NAMES)}
_WEEKDAYS = {d: i for i, d in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_NO_NAMES: dict[str, int] = {}
_CRON_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("second", 0, 59, _NO_NAMES),
    ("minute", 0, 59, _NO_NAMES),
    ("hour", 0, 23, _NO_NAMES),
    ("day", 1, 31, _NO_NAMES),
    ("month", 1, 12, _MONTHS),
    ("day-of-week", 0, 6, _WEEKDAYS),
)


def ncrontab_problem(expression: str) -> str | None:
    """Why a 6-field NCRONTAB expression is invalid, or None."""
    fields = expression.split()
    if len(fields) != 6:
        return f"NCRONTAB needs 6 fields (second minute hour day month day-of-week), got {len(fields)}: {expression!r}"
    for text, (what, low, high, names) in zip(fields, _CRON_FIELDS, strict=True):
        for item in text.split(","):
            problem = _cron_item_problem(item, low, high, names)
            if problem:
                return f"{what} field {text!r}: {problem}"
    return None


def _cron_item_problem(item: str, low: int, high: int, names: Mapping[str, int]) -> str | None:
    base, slash, step = item.partition("/")
    if slash and (not step.isdigit() or int(step) < 1):
        return f"step {step!r} must be a positive number"
    if base == "*":
        return None
    start, dash, end = base.partition("-")
    bounds = []
    for part in (start, end) if dash else (start,):
        value = names.get(part.lower()) if part.lower() in names else (int(part) if part.isdigit() else None)
        if value is None:
            return f"{part!r} is not a number"
        if not low <= value <= high:
            return f"{value} is outside {low}-{high}"
        bounds.append(value)
    if dash and bounds[0] > bounds[1]:
        return f"range {base!r} runs backwards"
    return None
