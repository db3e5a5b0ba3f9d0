"""The VM's release key: an exportable HSM key whose release policy is the configured one.

Idempotent by name: an existing key with the same policy (canonical comparison, so ordering and
trailing slashes don't count) is reused; a different policy is an explicit choice - a new key
version or ``key_policy_mismatch`` - never a silent overwrite.
"""

from __future__ import annotations

from azure.core.exceptions import ResourceNotFoundError
from azure.keyvault.keys import KeyClient, KeyReleasePolicy, KeyVaultKey

from skr.clients import ClientFactory
from skr.errors import Operation, SkrError
from skr.models import FailureCode, KeyRef, VmFacts
from skr.naming import NamingError, validate_key_name
from skr.policy import PolicyError, decode_policy, policy_fingerprint, policy_json_bytes, same_policy
from skr.settings import KeyPolicyMismatch, KeyType, Settings

MANAGED_BY_TAG = "managed-by"
MANAGED_BY_VALUE = "skr-orchestrator"
POLICY_TAG = "skr-release-policy"


class KeyService:
    def __init__(self, factory: ClientFactory, settings: Settings) -> None:
        self._factory = factory
        self._settings = settings

    @property
    def _client(self) -> KeyClient:
        return self._factory.keys(self._settings.vault_url)

    def choose_name(self, vm: VmFacts, override: str | None = None) -> tuple[str, bool]:
        """(key name, shared): an explicit override, else the VM's key tag (shared), else the template."""
        try:
            if override:
                return validate_key_name(override), False
            return self._settings.key_name_for(vm.vm_id, vm.tags)
        except NamingError as exc:
            raise SkrError.of(FailureCode.INVALID_REQUEST, str(exc), operation=Operation.KEY_WRITE) from exc

    def ensure(self, name: str, *, shared: bool = False) -> KeyRef:
        """Reuse the key when its policy matches, else create it (or a new version, per settings)."""
        if self._settings.vault_resource_id is None:
            raise SkrError.of(
                FailureCode.INVALID_REQUEST,
                "SKR_VAULT_RESOURCE_ID is not set: the release role is assigned at the key's ARM scope, "
                "which needs the vault's resource id",
                operation=Operation.KEY_WRITE,
            )
        try:
            existing = self._client.get_key(name)
        except ResourceNotFoundError:
            return self._ref(self._create(name), created=True, shared=shared)
        self._check_exportable(existing)
        if not existing.properties.enabled:
            # The latest version was disabled (e.g. by an earlier offboarding): it can never be
            # released again, so a fresh version under the same name is the only usable key.
            return self._ref(self._create(name), created=True, shared=shared)
        if self._policy_matches(existing):
            return self._ref(existing, created=False, shared=shared)
        if self._settings.key_policy_mismatch is KeyPolicyMismatch.NEW_VERSION:
            return self._ref(self._create(name), created=True, shared=shared)
        raise SkrError.of(
            FailureCode.KEY_POLICY_MISMATCH,
            f"key {name!r} exists with a release policy different from the configured one "
            f"(configured {policy_fingerprint(self._settings.release_policy)}, existing "
            f"{self._existing_fingerprint(existing)}); set SKR_KEY_POLICY_MISMATCH=new_version to add a "
            "version with the configured policy, or choose another key name",
            operation=Operation.KEY_WRITE,
        )

    def disable(self, key: KeyRef) -> bool:
        """Disable every version of a per-VM key; a shared key is left alone (other VMs use it).

        True when the key is now disabled, False when it was shared or does not exist.
        """
        if key.shared:
            return False
        client = self._factory.keys(key.vault_url)
        try:
            versions = list(client.list_properties_of_key_versions(key.name))
        except ResourceNotFoundError:
            return False
        if not versions:
            return False
        for version in versions:
            if version.enabled:
                try:
                    client.update_key_properties(key.name, version.version, enabled=False)
                except ResourceNotFoundError:
                    continue  # deleted meanwhile: disabled enough
        return True

    # ------------------------------------------------------------------------------ helpers
    def _create(self, name: str) -> KeyVaultKey:
        settings = self._settings
        policy = KeyReleasePolicy(policy_json_bytes(settings.release_policy))
        tags = {MANAGED_BY_TAG: MANAGED_BY_VALUE, POLICY_TAG: policy_fingerprint(settings.release_policy)}
        if settings.key_type is KeyType.EC_HSM:
            curve = settings.key_curve.value if settings.key_curve else None
            return self._client.create_ec_key(
                name, curve=curve, hardware_protected=True, exportable=True, release_policy=policy, tags=tags
            )
        return self._client.create_rsa_key(
            name, size=settings.key_size, hardware_protected=True, exportable=True, release_policy=policy, tags=tags
        )

    def _check_exportable(self, key: KeyVaultKey) -> None:
        key_type = str(getattr(key.key_type, "value", key.key_type) or "")
        if not key.properties.exportable or not key_type.upper().endswith("-HSM"):
            raise SkrError.of(
                FailureCode.NOT_EXPORTABLE,
                f"key {key.name!r} exists but is not an exportable HSM key (type {key_type or 'unknown'}, "
                f"exportable={bool(key.properties.exportable)}); Secure Key Release needs one - choose another name",
                operation=Operation.KEY_WRITE,
            )

    def _policy_matches(self, key: KeyVaultKey) -> bool:
        existing = key.properties.release_policy
        if existing is None or not existing.encoded_policy:
            return False
        try:
            return same_policy(decode_policy(existing.encoded_policy), self._settings.release_policy)
        except PolicyError:
            return False

    @staticmethod
    def _existing_fingerprint(key: KeyVaultKey) -> str:
        existing = key.properties.release_policy
        if existing is None or not existing.encoded_policy:
            return "none"
        try:
            return policy_fingerprint(decode_policy(existing.encoded_policy))
        except PolicyError:
            return "unparseable"

    def _ref(self, key: KeyVaultKey, *, created: bool, shared: bool) -> KeyRef:
        vault = self._settings.vault_resource_id
        assert vault is not None  # checked in ensure()
        key_type = key.key_type
        return KeyRef(
            vault_url=self._settings.vault_url,
            name=key.name,
            version=key.properties.version,
            key_type=str(getattr(key_type, "value", key_type)) if key_type else None,
            resource_id=vault.key(key.name),
            created=created,
            shared=shared,
        )
