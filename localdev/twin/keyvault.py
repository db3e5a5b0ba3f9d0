"""Key Vault keys data plane (api-versions 7.0-7.6 and 2025-07-01) for one vault listener.

Create (RSA/EC, HSM or software, exportable + release policy with the AKV.SKR rules), get latest
(``/keys/{n}/``) or a version, update (PATCH), list keys and versions (paged), delete with soft
delete, deleted keys (get, list, purge, recover). Every call is authenticated (401 challenge) and
authorised against the key's RBAC data action. ``release`` lives in :mod:`localdev.twin.release`.
"""

from __future__ import annotations

import asyncio
import base64
import json
import re
import uuid
from typing import TYPE_CHECKING, Any

from cryptography.hazmat.primitives.asymmetric import ec, rsa
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute

from localdev.twin.http import ci_route, kv_fail, query_param, read_json
from localdev.twin.model import KeyVersion, StoredKey, Vault

if TYPE_CHECKING:
    from localdev.twin.core import Twin

API_VERSIONS = ("7.0", "7.1", "7.2", "7.3", "7.4", "7.5", "7.6", "2025-07-01")
_NAME = re.compile(r"^[0-9a-zA-Z-]{1,127}$")
_CURVES: dict[str, type[ec.EllipticCurve]] = {"P-256": ec.SECP256R1, "P-384": ec.SECP384R1, "P-521": ec.SECP521R1,
                                              "P-256K": ec.SECP256K1}
_RSA_OPS = ["encrypt", "decrypt", "sign", "verify", "wrapKey", "unwrapKey"]
_EC_OPS = ["sign", "verify"]
_ALL_OPS = frozenset([*_RSA_OPS, "import", "export"])
_KEYS = "Microsoft.KeyVault/vaults/keys"
ACTIONS = {
    "read": f"{_KEYS}/read", "create": f"{_KEYS}/create/action", "update": f"{_KEYS}/update/action",
    "delete": f"{_KEYS}/delete", "recover": f"{_KEYS}/recover/action", "purge": f"{_KEYS}/purge/action",
    "release": f"{_KEYS}/release/action",
}


def _bad(message: str) -> Exception:
    return kv_fail(400, "BadParameter", message)


def check_api_version(request: Request) -> str:
    """The request's api-version, or the 400 Key Vault answers for a missing/unknown one."""
    version = query_param(request, "api-version")
    if not version:
        raise _bad("The 'api-version' query parameter is missing.")
    if version not in API_VERSIONS:
        raise _bad(f"The specified version ({version}) is not recognized. Consider using the latest supported "
                   "version (2025-07-01).")
    return version


def _api_at_least_73(version: str) -> bool:
    return version == "2025-07-01" or float(version) >= 7.3


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _int_b64(value: int) -> str:
    return b64url(value.to_bytes((value.bit_length() + 7) // 8 or 1, "big"))


def key_scope(vault: Vault, name: str) -> str:
    """The RBAC scope of a key: ``{vault id}/keys/{name}``."""
    return f"{vault.resource_id}/keys/{name}"


def kid(vault: Vault, name: str, version: str | None = None) -> str:
    return f"{vault.url}/keys/{name}" + (f"/{version}" if version else "")


def public_jwk(vault: Vault, key: StoredKey, version: KeyVersion) -> dict[str, Any]:
    """The ``key`` member of a KeyBundle: JWK public part plus kid and key_ops."""
    jwk: dict[str, Any] = {"kid": kid(vault, key.name, version.version), "kty": version.kty,
                           "key_ops": list(version.key_ops)}
    private = version.private_key
    if isinstance(private, rsa.RSAPrivateKey):
        numbers = private.public_key().public_numbers()
        jwk["n"], jwk["e"] = _int_b64(numbers.n), _int_b64(numbers.e)
    elif isinstance(private, ec.EllipticCurvePrivateKey):
        numbers_ec = private.public_key().public_numbers()
        size = (private.curve.key_size + 7) // 8
        jwk["crv"] = version.curve
        jwk["x"] = b64url(numbers_ec.x.to_bytes(size, "big"))
        jwk["y"] = b64url(numbers_ec.y.to_bytes(size, "big"))
    return jwk


class KeyVaultApi:
    """The key routes of one twin; the vault comes from the listener (``twin.vault_of``)."""

    def __init__(self, twin: Twin) -> None:
        self.twin = twin

    # ------------------------------------------------------------------ representations
    def attributes(self, version: KeyVersion) -> dict[str, Any]:
        days = self.twin.config.soft_delete_retention_days
        attrs: dict[str, Any] = {
            "enabled": version.enabled, "created": int(version.created), "updated": int(version.updated),
            "recoveryLevel": "Recoverable+Purgeable" if days >= 90 else "CustomizedRecoverable+Purgeable",
            "recoverableDays": days, "exportable": version.exportable,
        }
        if version.nbf is not None:
            attrs["nbf"] = int(version.nbf)
        if version.exp is not None:
            attrs["exp"] = int(version.exp)
        return attrs

    def bundle(self, vault: Vault, key: StoredKey, version: KeyVersion) -> dict[str, Any]:
        body: dict[str, Any] = {"key": public_jwk(vault, key, version), "attributes": self.attributes(version),
                                "tags": dict(version.tags)}
        if version.release_policy is not None:
            body["release_policy"] = {"contentType": version.release_policy_content_type,
                                      "immutable": version.immutable_policy, "data": b64url(version.release_policy)}
        return body

    def deleted_bundle(self, vault: Vault, key: StoredKey, *, item: bool = False) -> dict[str, Any]:
        latest = key.latest
        body = self.item(vault, key, latest, versioned=False) if item else self.bundle(vault, key, latest)
        deleted_at = key.deleted_at or 0.0
        body.update({"recoveryId": f"{vault.url}/deletedkeys/{key.name}", "deletedDate": int(deleted_at),
                     "scheduledPurgeDate": int(deleted_at + self.twin.config.soft_delete_retention_days * 86400)})
        return body

    def item(self, vault: Vault, key: StoredKey, version: KeyVersion, *, versioned: bool) -> dict[str, Any]:
        return {"kid": kid(vault, key.name, version.version if versioned else None),
                "attributes": self.attributes(version), "tags": dict(version.tags)}

    # ---------------------------------------------------------------------------- lookups
    def _live_key(self, vault: Vault, name: str) -> StoredKey:
        key = vault.keys.get(name.lower())
        if key is None or key.deleted:
            raise kv_fail(404, "KeyNotFound", f"A key with (name/id) {name} was not found in this key vault. If you "
                          "recently deleted this key you may be able to recover it using the correct recovery "
                          "command. For help resolving this issue, please see "
                          "https://go.microsoft.com/fwlink/?linkid=2125182")
        return key

    def _version(self, key: StoredKey, version: str) -> KeyVersion:
        if not version:
            return key.latest
        found = next((v for v in key.versions if v.version == version.lower()), None)
        if found is None:
            raise kv_fail(404, "KeyNotFound", f"A key with (name/id) {key.name}/{version} was not found in this "
                          "key vault.")
        return found

    def _deleted_key(self, vault: Vault, name: str) -> StoredKey:
        key = vault.keys.get(name.lower())
        if key is None or not key.deleted or not self._deletion_done(key):
            raise kv_fail(404, "KeyNotFound", f"Deleted Key not found: {name}")
        return key

    def _deletion_done(self, key: StoredKey) -> bool:
        return key.deleted_at is not None and self.twin.clock.time() >= key.deleted_at + \
            self.twin.config.key_delete_seconds

    def _call(self, request: Request, action: str, name: str | None = None) -> tuple[Vault, str]:
        vault = self.twin.vault_of(request)
        self._purge_expired(vault)
        scope = key_scope(vault, name) if name else vault.resource_id
        self.twin.kv_call(request, ACTIONS[action], scope, vault)
        return vault, check_api_version(request)

    # ------------------------------------------------------------------------ validation
    @staticmethod
    def _policy(raw: Any) -> tuple[bytes, str, bool]:
        """(compact policy JSON, content type, immutable) from a request's ``release_policy``."""
        if not isinstance(raw, dict) or not isinstance(raw.get("data"), str):
            raise _bad("Key Release Policy: 'data' must be the base64url-encoded policy.")
        try:
            policy = json.loads(b64url_decode(raw["data"]))
        except (ValueError, UnicodeDecodeError) as exc:
            raise _bad("Key Release Policy: the policy data is not valid base64url-encoded JSON.") from exc
        if not isinstance(policy, dict):
            raise _bad("Key Release Policy: the policy must be a JSON object.")
        if "version" not in policy:
            raise _bad("Key Release Policy: missing 'version' property")
        rules = policy.get("anyOf")
        if not isinstance(rules, list) or not rules:
            raise _bad("Key Release Policy: 'anyOf' must be a non-empty array of authority rules.")
        for rule in rules:
            if not isinstance(rule, dict) or not isinstance(rule.get("authority"), str) or not rule["authority"]:
                raise _bad("Key Release Policy: every 'anyOf' rule needs an 'authority'.")
            if not isinstance(rule.get("allOf", rule.get("anyOf")), list):
                raise _bad("Key Release Policy: every authority rule needs an 'allOf' or 'anyOf' array of claims.")
        content_type = raw.get("contentType") or "application/json; charset=utf-8"
        return json.dumps(policy, separators=(",", ":")).encode(), str(content_type), bool(raw.get("immutable"))

    @staticmethod
    def _ops(raw: Any, default: list[str]) -> list[str]:
        if raw is None:
            return list(default)
        if not isinstance(raw, list) or not all(isinstance(op, str) and op in _ALL_OPS for op in raw):
            raise _bad(f"Invalid key_ops: allowed values are {', '.join(sorted(_ALL_OPS))}.")
        return list(raw)

    @staticmethod
    def _time_attr(attrs: dict[str, Any], name: str) -> float | None:
        value = attrs.get(name)
        if value is None:
            return None
        if not isinstance(value, int | float) or isinstance(value, bool):
            raise _bad(f"attributes.{name} must be a Unix time in seconds.")
        return float(value)

    # ---------------------------------------------------------------------------- routes
    async def create(self, request: Request) -> Response:
        twin = self.twin
        name = request.path_params["name"]
        vault, api_version = self._call(request, "create", name)
        if not _NAME.match(name):
            raise _bad(f"The request URI contains an invalid name: {name}")
        body = await read_json(request, _bad)
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        kty = body.get("kty")
        if kty not in ("RSA", "RSA-HSM", "EC", "EC-HSM", "oct-HSM"):
            raise _bad(f"The key type '{kty}' is not supported: use RSA, RSA-HSM, EC or EC-HSM.")
        if kty == "oct-HSM":
            raise _bad("Key type oct-HSM is only supported by Managed HSM.")
        if kty.endswith("-HSM") and vault.sku != "premium":
            raise kv_fail(403, "Forbidden", "Hardware key operation not allowed on standard vault")
        attrs = body.get("attributes") or {}
        if not isinstance(attrs, dict):
            raise _bad("attributes must be an object.")
        exportable = bool(attrs.get("exportable", False))
        raw_policy = body.get("release_policy")
        if exportable and (vault.sku != "premium" or not _api_at_least_73(api_version)):
            raise _bad("AKV.SKR.1001: Exportable keys are only supported on Premium vaults with api-version 7.3 or "
                       "later.")
        if exportable and not kty.endswith("-HSM"):
            raise _bad("AKV.SKR.1006: Exportable keys must be HSM-backed (RSA-HSM or EC-HSM).")
        if exportable and raw_policy is None:
            raise _bad("AKV.SKR.1004: Exportable keys must have release policy.")
        if not exportable and raw_policy is not None:
            raise _bad("AKV.SKR.1005: Non-exportable keys must not have release policy.")
        policy = self._policy(raw_policy) if raw_policy is not None else None
        tags = body.get("tags") or {}
        if not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values()):
            raise _bad("tags must be an object of strings.")
        curve: str | None = None
        if kty.startswith("RSA"):
            size = body.get("key_size") or 2048
            if size not in (2048, 3072, 4096):
                raise _bad(f"Invalid key size {size}: RSA keys must be 2048, 3072 or 4096 bits.")
            exponent = body.get("public_exponent") or 65537
            if exponent != 65537:
                raise _bad("Only the public exponent 65537 is supported.")
            ops = self._ops(body.get("key_ops"), _RSA_OPS)
        else:
            curve = body.get("crv") or "P-256"
            if curve not in _CURVES:
                raise _bad(f"Invalid curve '{curve}': use {', '.join(_CURVES)}.")
            ops = self._ops(body.get("key_ops"), _EC_OPS)
        nbf, exp = self._time_attr(attrs, "nbf"), self._time_attr(attrs, "exp")
        with twin.lock:
            existing = vault.keys.get(name.lower())
            if existing is not None and existing.deleted:
                inner = "ObjectIsDeletedButRecoverable" if self._deletion_done(existing) else "ObjectIsBeingDeleted"
                raise kv_fail(409, "Conflict", f"Key {name} is currently in a deleted but recoverable state, and its "
                              "name cannot be reused; in this state, the key can only be recovered or purged."
                              if inner == "ObjectIsDeletedButRecoverable" else
                              f"Key {name} is currently being deleted.", inner)
        if kty.startswith("RSA"):
            private: object = await asyncio.to_thread(rsa.generate_private_key, 65537, int(size))
        else:
            assert curve is not None
            private = ec.generate_private_key(_CURVES[curve]())
        now = twin.clock.time()
        version = KeyVersion(vault_name=vault.name, name=name, version=uuid.uuid4().hex, kty=kty, private_key=private,
                             key_ops=ops, exportable=exportable, enabled=bool(attrs.get("enabled", True)),
                             created=now, updated=now, tags=dict(tags), curve=curve, nbf=nbf, exp=exp)
        if policy is not None:
            version.release_policy, version.release_policy_content_type, version.immutable_policy = policy
        with twin.lock:
            key = vault.keys.get(name.lower())
            if key is None or key.deleted:
                key = StoredKey(name=name)
                vault.keys[name.lower()] = key
            key.versions.append(version)
        return JSONResponse(self.bundle(vault, key, version))

    async def get(self, request: Request) -> Response:
        name = request.path_params["name"]
        vault, _ = self._call(request, "read", name)
        key = self._live_key(vault, name)
        return JSONResponse(self.bundle(vault, key, self._version(key, request.path_params.get("version", ""))))

    async def update(self, request: Request) -> Response:
        twin = self.twin
        name = request.path_params["name"]
        vault, _ = self._call(request, "update", name)
        body = await read_json(request, _bad)
        if not isinstance(body, dict):
            raise _bad("The request body must be a JSON object.")
        with twin.lock:
            key = self._live_key(vault, name)
            version = self._version(key, request.path_params.get("version", ""))
            attrs = body.get("attributes") or {}
            if not isinstance(attrs, dict):
                raise _bad("attributes must be an object.")
            if "exportable" in attrs and bool(attrs["exportable"]) != version.exportable:
                raise _bad("AKV.SKR.1003: The exportable attribute of an existing key cannot be changed.")
            policy = None
            if body.get("release_policy") is not None:
                if version.immutable_policy:
                    raise _bad("AKV.SKR.1020: Immutable Key Release Policy cannot be modified.")
                if not version.exportable:
                    raise _bad("AKV.SKR.1005: Non-exportable keys must not have release policy.")
                policy = self._policy(body["release_policy"])
            ops = self._ops(body["key_ops"], []) if "key_ops" in body else None
            nbf, exp = self._time_attr(attrs, "nbf"), self._time_attr(attrs, "exp")
            tags = body.get("tags")
            if tags is not None and (not isinstance(tags, dict) or not all(isinstance(v, str) for v in tags.values())):
                raise _bad("tags must be an object of strings.")
            if policy is not None:
                version.release_policy, version.release_policy_content_type, version.immutable_policy = policy
            if ops is not None:
                version.key_ops = ops
            if "enabled" in attrs:
                version.enabled = bool(attrs["enabled"])
            if "nbf" in attrs:
                version.nbf = nbf
            if "exp" in attrs:
                version.exp = exp
            if tags is not None:
                version.tags = dict(tags)
            version.updated = twin.clock.time()
            return JSONResponse(self.bundle(vault, key, version))

    def _page(self, request: Request, items: list[dict[str, Any]]) -> dict[str, Any]:
        raw = query_param(request, "maxresults")
        size = self.twin.config.kv_page_size
        if raw is not None:
            if not raw.isdigit() or not 1 <= int(raw) <= 25:
                raise _bad("maxresults must be an integer between 1 and 25.")
            size = int(raw)
        token = query_param(request, "$skiptoken") or "0"
        if not token.isdigit():
            raise _bad(f"The skip token '{token}' is not valid.")
        offset = int(token)
        body: dict[str, Any] = {"value": items[offset:offset + size], "nextLink": None}
        if offset + size < len(items):
            url = request.url.remove_query_params(["$skiptoken", "maxresults"])
            body["nextLink"] = str(url.include_query_params(**{"$skiptoken": str(offset + size),
                                                               "maxresults": str(size)}))
        return body

    async def list_keys(self, request: Request) -> Response:
        vault, _ = self._call(request, "read")
        with self.twin.lock:
            keys = sorted((k for k in vault.keys.values() if not k.deleted and k.versions),
                          key=lambda k: k.name.lower())
            items = [self.item(vault, k, k.latest, versioned=False) for k in keys]
        return JSONResponse(self._page(request, items))

    async def list_versions(self, request: Request) -> Response:
        name = request.path_params["name"]
        vault, _ = self._call(request, "read", name)
        with self.twin.lock:
            key = self._live_key(vault, name)
            items = [self.item(vault, key, v, versioned=True) for v in key.versions]
        return JSONResponse(self._page(request, items))

    async def delete(self, request: Request) -> Response:
        twin = self.twin
        name = request.path_params["name"]
        vault, _ = self._call(request, "delete", name)
        with twin.lock:
            key = self._live_key(vault, name)
            key.deleted, key.deleted_at = True, twin.clock.time()
            body = self.deleted_bundle(vault, key)
        return JSONResponse(body)

    def _purge_expired(self, vault: Vault) -> None:
        """Soft-deleted keys past the retention period are gone (checked lazily: no far-future timers)."""
        cutoff = self.twin.clock.time() - self.twin.config.soft_delete_retention_days * 86400.0
        with self.twin.lock:
            for name in [n for n, k in vault.keys.items() if k.deleted and (k.deleted_at or 0.0) <= cutoff]:
                del vault.keys[name]

    async def get_deleted(self, request: Request) -> Response:
        name = request.path_params["name"]
        vault, _ = self._call(request, "read", name)
        with self.twin.lock:
            return JSONResponse(self.deleted_bundle(vault, self._deleted_key(vault, name)))

    async def list_deleted(self, request: Request) -> Response:
        vault, _ = self._call(request, "read")
        with self.twin.lock:
            keys = sorted((k for k in vault.keys.values() if k.deleted and self._deletion_done(k)),
                          key=lambda k: k.name.lower())
            items = [self.deleted_bundle(vault, k, item=True) for k in keys]
        return JSONResponse(self._page(request, items))

    async def purge(self, request: Request) -> Response:
        name = request.path_params["name"]
        vault, _ = self._call(request, "purge", name)
        with self.twin.lock:
            key = self._deleted_key(vault, name)
            del vault.keys[key.name.lower()]
        return Response(status_code=204)

    async def recover(self, request: Request) -> Response:
        name = request.path_params["name"]
        vault, _ = self._call(request, "recover", name)
        with self.twin.lock:
            key = self._deleted_key(vault, name)
            key.deleted, key.deleted_at = False, None
            return JSONResponse(self.bundle(vault, key, key.latest))

    def routes(self) -> list[BaseRoute]:
        return [
            ci_route("/keys", self.list_keys, ["GET"]),
            ci_route("/keys/{name}/create", self.create, ["POST"]),
            ci_route("/keys/{name}/versions", self.list_versions, ["GET"]),
            ci_route("/keys/{name}", self.get, ["GET"]),
            ci_route("/keys/{name}/", self.get, ["GET"]),
            ci_route("/keys/{name}/{version}", self.get, ["GET"]),
            ci_route("/keys/{name}", self.update, ["PATCH"]),
            ci_route("/keys/{name}/", self.update, ["PATCH"]),
            ci_route("/keys/{name}/{version}", self.update, ["PATCH"]),
            ci_route("/keys/{name}", self.delete, ["DELETE"]),
            ci_route("/deletedkeys", self.list_deleted, ["GET"]),
            ci_route("/deletedkeys/{name}", self.get_deleted, ["GET"]),
            ci_route("/deletedkeys/{name}", self.purge, ["DELETE"]),
            ci_route("/deletedkeys/{name}/recover", self.recover, ["POST"]),
        ]


def routes(twin: Twin) -> list[BaseRoute]:
    return KeyVaultApi(twin).routes()
