"""Per-VM IMDS of the twin: managed-identity tokens, metadata, IMDS error shapes and faults."""

from __future__ import annotations

import httpx
import pytest

from localdev.twin.core import Twin
from localdev.twin.imds import imds_url
from localdev.twin.model import TeeProfile
from tests.contract._twin_skr_support import jwt_parts, new_vm

TOKEN = "/metadata/identity/oauth2/token"
VAULT = "https://vault.azure.net"


def _get(url: str, path: str, *, metadata: bool = True, **params: str) -> httpx.Response:
    headers = {"Metadata": "true"} if metadata else {}
    return httpx.get(url + path, params=params, headers=headers, trust_env=False)


def test_token_names_the_vm_identity_and_is_accepted_by_key_vault(twin: Twin) -> None:
    vm = new_vm(twin)
    base = imds_url(twin, vm)
    assert base.startswith("http://127.0.0.1:") and base.count("/") == 2  # an origin, like 169.254.169.254
    response = _get(base, TOKEN, **{"api-version": "2018-02-01", "resource": VAULT})
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer" and body["resource"] == VAULT and body["refresh_token"] == ""
    for field in ("expires_in", "expires_on", "not_before"):
        assert isinstance(body[field], str) and body[field].isdigit()
    _, claims = jwt_parts(body["access_token"])
    assert claims["oid"] == vm.principal_id and claims["aud"] == VAULT
    assert claims["xms_mirid"] == vm.resource_id
    assert twin.identity.verify(body["access_token"], VAULT).object_id == vm.principal_id
    assert twin.counters.get(caller=vm.principal_id, service="imds", operation="identity/oauth2/token") == 1


def test_each_vm_has_its_own_origin_and_the_shared_listener_serves_by_vm_id(twin: Twin) -> None:
    first, second = new_vm(twin), new_vm(twin)
    assert imds_url(twin, first) != imds_url(twin, second)
    assert imds_url(twin, first) == imds_url(twin, first)
    text = _get(imds_url(twin, second), "/metadata/instance/compute/vmId",
                **{"api-version": "2019-03-11", "format": "text"})
    assert text.status_code == 200 and text.text == second.vm_id
    shared = _get(f"{twin.urls.imds}/vms/{first.vm_id}", TOKEN, **{"api-version": "2018-02-01", "resource": VAULT})
    assert jwt_parts(shared.json()["access_token"])[1]["oid"] == first.principal_id
    instance = _get(imds_url(twin, first), "/metadata/instance", **{"api-version": "2021-02-01"}).json()
    assert instance["compute"]["vmId"] == first.vm_id
    assert instance["compute"]["securityProfile"]["securityType"] == "ConfidentialVM"


@pytest.mark.parametrize(
    ("arrange", "params", "metadata", "error", "description"),
    [
        ("cvm", {"api-version": "2018-02-01", "resource": VAULT}, False, "bad_request_102",
         "Required metadata header not specified"),
        ("no-identity", {"api-version": "2018-02-01", "resource": VAULT}, True, "invalid_request",
         "Identity not found"),
        ("cvm", {"api-version": "2018-02-01", "resource": "https://nothing.example"}, True, "invalid_resource",
         "AADSTS500011"),
        ("cvm", {"api-version": "2018-02-01"}, True, "invalid_request", "'resource' is missing"),
        ("cvm", {"resource": VAULT}, True, "invalid_request", "'api-version' is missing"),
        ("cvm", {"api-version": "2018-02-01", "resource": VAULT, "object_id": "someone-else"}, True,
         "invalid_request", "Identity not found"),
    ],
)
def test_token_errors_have_the_imds_shape(twin: Twin, arrange: str, params: dict[str, str], metadata: bool,
                                          error: str, description: str) -> None:
    vm = new_vm(twin, identity=arrange != "no-identity")
    response = _get(imds_url(twin, vm), TOKEN, metadata=metadata, **params)
    assert response.status_code == 400
    assert response.json()["error"] == error and description in response.json()["error_description"]


def test_selectors_naming_the_identity_are_accepted(twin: Twin) -> None:
    vm = new_vm(twin, TeeProfile.TRUSTED_LAUNCH)
    assert vm.principal_id is not None
    principal = twin.principal(vm.principal_id)
    assert principal is not None
    for selector in ({"client_id": principal.app_id}, {"object_id": vm.principal_id},
                     {"msi_res_id": vm.resource_id}):
        response = _get(imds_url(twin, vm), TOKEN, **{"api-version": "2018-02-01", "resource": VAULT}, **selector)
        assert response.status_code == 200, selector


@pytest.mark.parametrize("status", [404, 410, 429, 500, 503])
def test_injected_transient_errors(twin: Twin, status: int) -> None:
    vm, other = new_vm(twin), new_vm(twin)
    twin.faults.add("imds_error", status=status, retry_after=2, count=1, vm=vm.resource_id)
    params = {"api-version": "2018-02-01", "resource": VAULT}
    assert _get(imds_url(twin, other), TOKEN, **params).status_code == 200  # another VM is unaffected
    failed = _get(imds_url(twin, vm), TOKEN, **params)
    assert failed.status_code == status and failed.headers["retry-after"] == "2"
    assert set(failed.json()) == {"error", "error_description"}
    assert _get(imds_url(twin, vm), TOKEN, **params).status_code == 200


def test_a_deleted_vm_has_no_imds(twin: Twin) -> None:
    vm = new_vm(twin)
    base = imds_url(twin, vm)
    twin.delete_vm(vm.resource_id, emit_event=False)
    response = _get(base, TOKEN, **{"api-version": "2018-02-01", "resource": VAULT})
    assert response.status_code == 404 and response.json()["error"] == "not_found"
