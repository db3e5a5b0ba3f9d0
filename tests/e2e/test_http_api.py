"""Every HTTP route through the local host (function auth), including each 4xx."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from localdev.host.harness import HttpResult
from localdev.stack import Stack
from localdev.twin.model import SimVm, TeeProfile
from tests.e2e.helpers import RUN_STAGES

LEAKS = ("code=", "/runtime/webhooks", "statusQueryGetUri", "sendEventPostUri", "purgeHistoryDeleteUri")


def body(result: HttpResult) -> Any:
    for leak in LEAKS:
        assert leak not in result.text, f"response exposes {leak}"
    return result.json()


def quiet_vm(stack: Stack, name: str, **kw: Any) -> SimVm:
    """A VM whose write event is not delivered: only the HTTP API will onboard it."""
    return stack.twin.create_vm(name, emit_event=False, **kw)


def start(stack: Stack, vm: SimVm, **extra: Any) -> HttpResult:
    return stack.api("POST", "/api/onboardings", {"vm_id": vm.resource_id, **extra})


def error_code(result: HttpResult) -> str:
    return str(body(result)["error"]["code"])


def test_every_route_needs_the_function_key(stack: Stack) -> None:
    vm = quiet_vm(stack, "http-nokey")
    iid = stack.onboarding_id(vm)
    for method, path in (
        ("POST", "/api/onboardings"),
        ("GET", "/api/onboardings"),
        ("GET", f"/api/onboardings/{iid}"),
        ("DELETE", f"/api/onboardings/{iid}"),
        ("POST", f"/api/onboardings/{iid}/retry"),
        ("POST", "/api/onboardings/retry-failed"),
    ):
        assert stack.api(method, path, {"vm_id": vm.resource_id}, key="").status == 401, (method, path)
        assert stack.api(method, path, {"vm_id": vm.resource_id}, key="wrong").status == 401, (method, path)
    assert stack.host.get_status(iid) is None


def test_start_validates_the_body_with_field_errors(stack: Stack) -> None:
    before = len(stack.host.instances())
    bad_json = stack.api("POST", "/api/onboardings", b"{not json")
    assert bad_json.status == 400 and error_code(bad_json) == "invalid_json"
    empty = stack.api("POST", "/api/onboardings", b"")
    assert empty.status == 400 and error_code(empty) == "invalid_request"
    invalid = stack.api(
        "POST", "/api/onboardings", {"vm_id": "/subscriptions/nope", "key_name": "has spaces", "colour": "red"}
    )
    assert invalid.status == 400
    fields = {f["field"]: f["message"] for f in body(invalid)["error"]["fields"]}
    assert set(fields) == {"vm_id", "key_name", "colour"}
    missing = stack.api("POST", "/api/onboardings", {})
    assert [f["field"] for f in body(missing)["error"]["fields"]] == ["vm_id"]
    assert len(stack.host.instances()) == before  # bad input changes nothing


def test_start_refuses_a_vm_outside_the_scopes(stack: Stack) -> None:
    other = "/subscriptions/00000000-0000-0000-0000-00000000beef/resourceGroups/rg/providers/Microsoft.Compute/virtualMachines/far"
    result = stack.api("POST", "/api/onboardings", {"vm_id": other})
    assert result.status == 403 and error_code(result) == "out_of_scope"
    assert stack.host.instances(prefix="onboard-far-") == []


def test_start_show_conflict_and_restart(stack: Stack) -> None:
    vm = quiet_vm(stack, "http-start")
    iid = stack.onboarding_id(vm)
    with stack.host.hold_clock():  # time stands still: the run command cannot finish meanwhile
        started = start(stack, vm, key_name="http-start-key")
        assert started.status == 202
        view = body(started)
        assert view["id"] == iid and view["vm_id"].lower() == vm.resource_id.lower()
        assert started.headers["Location"].endswith(f"/api/onboardings/{iid}")
        assert set(view["links"]) == {"self", "retry", "offboard"}
        again = start(stack, vm)
        assert again.status == 409 and error_code(again) == "already_running"
        retry = stack.api("POST", f"/api/onboardings/{iid}/retry")
        assert retry.status == 409 and error_code(retry) == "already_running"
        delete = stack.api("DELETE", f"/api/onboardings/{iid}")
        assert delete.status == 409 and error_code(delete) == "conflict"
        running = body(stack.api("GET", f"/api/onboardings/{iid}"))
        assert running["runtime_status"] in ("Pending", "Running") and running["result"] is None
        assert running["custom_status"] is None or running["custom_status"]["stage"] in RUN_STAGES
    done = stack.wait_for_onboarding(vm)
    assert done.output["outcome"] == "released" and done.output["key"]["name"] == "http-start-key"
    shown = stack.api("GET", f"/api/onboardings/{iid}")
    assert shown.status == 200
    view = body(shown)
    assert view["outcome"] == "released" and view["stage"] == "completed"
    assert view["result"]["assignment"]["assignment_id"] == done.output["assignment"]["assignment_id"]
    # An explicit start of a finished onboarding runs it again (same instance id).
    restarted = start(stack, vm, key_name="http-start-key")
    assert restarted.status == 202
    assert stack.wait_for_onboarding(vm).output["outcome"] == "released"


def test_show_unknown_and_foreign_ids_are_404(stack: Stack) -> None:
    for iid in ("onboard-nothing-0000000000000000", "offboard-x-1", "random"):
        result = stack.api("GET", f"/api/onboardings/{iid}")
        assert result.status == 404 and error_code(result) == "not_found"


def test_listing_filters_and_pages(stack: Stack) -> None:
    released = quiet_vm(stack, "list-ok")
    denied = quiet_vm(stack, "list-denied", tee=TeeProfile.NONCOMPLIANT_CVM)
    skipped = quiet_vm(stack, "list-tl", tee=TeeProfile.TRUSTED_LAUNCH)
    for vm in (released, denied, skipped):
        assert start(stack, vm).status == 202
        stack.wait_for_onboarding(vm)
    ids = {stack.onboarding_id(vm): vm for vm in (released, denied, skipped)}

    def listed(**query: str) -> list[str]:
        result = stack.api("GET", "/api/onboardings", query=query)
        assert result.status == 200
        return [item["id"] for item in body(result)["items"] if item["id"] in ids]

    assert listed(outcome="released") == [stack.onboarding_id(released)]
    assert listed(outcome="failed") == [stack.onboarding_id(denied)]
    assert listed(outcome="skipped") == [stack.onboarding_id(skipped)]
    assert listed(failure_code="policy_denied") == [stack.onboarding_id(denied)]
    assert listed(vm_id=skipped.resource_id) == [stack.onboarding_id(skipped)]
    assert set(listed(stage="completed", page_size="200")) == set(ids)
    assert listed(created_to="2000-01-01T00:00:00Z") == []

    seen: list[str] = []
    query: dict[str, str] = {"page_size": "1"}
    for _ in range(100):
        page = body(stack.api("GET", "/api/onboardings", query=query))
        assert len(page["items"]) <= 1
        seen.extend(item["id"] for item in page["items"])
        if page["continuation"] is None:
            assert page["next"] is None
            break
        next_query = parse_qs(urlsplit(page["next"]).query)
        assert next_query["continuation"] == [page["continuation"]] and "code" not in next_query
        query = {"page_size": "1", "continuation": page["continuation"]}
    assert set(ids) <= set(seen) and len(seen) == len(set(seen))


@pytest.mark.parametrize(
    "query",
    [{"outcome": "great"}, {"stage": "nowhere"}, {"page_size": "0"}, {"continuation": "bm9wZQ"}, {"colour": "red"}],
)
def test_listing_rejects_bad_queries(stack: Stack, query: dict[str, str]) -> None:
    result = stack.api("GET", "/api/onboardings", query=query)
    assert result.status == 400 and error_code(result) == "invalid_request"


def test_retry_and_bulk_retry_of_failed_onboardings(stack: Stack) -> None:
    denied = quiet_vm(stack, "retry-denied", tee=TeeProfile.NONCOMPLIANT_CVM)
    noid = quiet_vm(stack, "retry-noid", identity=False)
    for vm in (denied, noid):
        start(stack, vm)
        stack.wait_for_onboarding(vm)
    assert stack.api("POST", "/api/onboardings/onboard-nothing-0000000000000000/retry").status == 404

    retried = stack.api("POST", f"/api/onboardings/{stack.onboarding_id(denied)}/retry")
    assert retried.status == 202 and body(retried)["id"] == stack.onboarding_id(denied)
    status = stack.wait_for_onboarding(denied)
    assert status.output["failure_code"] == "policy_denied"
    assert json.loads(status.input)["request"]["source"] == "retry"

    bad = stack.api("POST", "/api/onboardings/retry-failed", {"limit": 0, "failure_code": "bogus"})
    assert bad.status == 400 and {f["field"] for f in body(bad)["error"]["fields"]} == {"limit", "failure_code"}
    assert stack.api("POST", "/api/onboardings/retry-failed", b"[").status == 400

    only = stack.api("POST", "/api/onboardings/retry-failed", {"failure_code": "no_managed_identity"})
    assert only.status == 202
    assert stack.onboarding_id(noid) in body(only)["retried"]
    assert stack.onboarding_id(denied) not in body(only)["retried"]
    stack.settle()
    every = stack.api("POST", "/api/onboardings/retry-failed")  # no body: every failed onboarding
    assert every.status == 202
    assert {stack.onboarding_id(denied), stack.onboarding_id(noid)} <= set(body(every)["retried"])
    stack.settle()


def test_delete_offboards_and_reports(stack: Stack) -> None:
    assert stack.api("DELETE", "/api/onboardings/onboard-nothing-0000000000000000").status == 404
    noid = quiet_vm(stack, "del-noid", identity=False)
    start(stack, noid)
    stack.wait_for_onboarding(noid)
    nothing = stack.api("DELETE", f"/api/onboardings/{stack.onboarding_id(noid)}")
    assert nothing.status == 409 and error_code(nothing) == "nothing_to_offboard"

    vm = quiet_vm(stack, "del-ok")
    start(stack, vm)
    result = stack.wait_for_onboarding(vm).output
    deleted = stack.api("DELETE", f"/api/onboardings/{stack.onboarding_id(vm)}")
    assert deleted.status == 202 and deleted.headers["X-Offboarding-Id"] == stack.offboarding_id(vm)
    off = stack.wait_for_offboarding(vm)
    assert off.output["removed_assignments"] == [result["assignment"]["assignment_id"]]
    view = body(stack.api("GET", f"/api/onboardings/{stack.onboarding_id(vm)}"))
    assert view["offboarding"]["runtime_status"] == "Completed"
    assert view["offboarding"]["result"]["removed_assignments"] == off.output["removed_assignments"]
    again = stack.api("DELETE", f"/api/onboardings/{stack.onboarding_id(vm)}")
    assert again.status == 409 and "already offboarded" in body(again)["error"]["message"]
