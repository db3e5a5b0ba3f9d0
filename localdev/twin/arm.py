"""Shared ARM front-door rules: api-version, subscription existence, paging with nextLink."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from starlette.requests import Request

from localdev.twin.http import arm_fail, query_param

if TYPE_CHECKING:
    from localdev.twin.core import Twin

_API_VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha)?$")
_SKIP_KEYS = ("$skiptoken", "$skipToken", "$SkipToken")


def require_api_version(request: Request) -> str:
    version = query_param(request, "api-version")
    if not version:
        raise arm_fail(400, "MissingApiVersionParameter",
                       "The api-version query parameter (?api-version=) is required for all requests.")
    if not _API_VERSION.match(version):
        raise arm_fail(400, "InvalidApiVersionParameter",
                       f"The api-version '{version}' is invalid. The supported versions are dates such as "
                       "'2022-04-01'.")
    return version


def require_subscription(twin: Twin, subscription_id: str) -> None:
    if subscription_id.lower() != twin.config.subscription_id:
        raise arm_fail(404, "SubscriptionNotFound", f"The subscription '{subscription_id}' could not be found.")


def page(request: Request, items: Sequence[Any], page_size: int) -> dict[str, Any]:
    """One page of ``items`` from ``$skiptoken`` (an offset), with an absolute ``nextLink``."""
    token = query_param(request, "$skiptoken") or "0"
    try:
        offset = int(token)
    except ValueError as exc:
        raise arm_fail(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.") from exc
    if offset < 0:
        raise arm_fail(400, "InvalidSkipToken", f"The skip token '{token}' is not valid.")
    body: dict[str, Any] = {"value": list(items[offset:offset + page_size])}
    if offset + page_size < len(items):
        url = request.url.remove_query_params(list(_SKIP_KEYS))
        body["nextLink"] = str(url.include_query_params(**{"$skiptoken": str(offset + page_size)}))
    return body
