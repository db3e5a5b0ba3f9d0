"""`GET /api/onboardings`: filters and keyset paging over instance snapshots.

The 1.x Durable client returns every match at once; paging is ours. The continuation token is
the sort key (created time, instance id) of the last item served, so new instances never shift
a page and a token stays valid while instances are added.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from datetime import UTC, datetime

from pydantic import Field, field_validator

from skr.models import FailureCode, Outcome, Stage, VmResourceId
from skr.naming import onboarding_instance_id
from skr.workflow._base import Frozen
from skr.workflow.instances import InstanceSnapshot

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MAX_PAGE_SIZE = 200


class ContinuationError(ValueError):
    """A continuation token we did not issue (or that was altered)."""


def as_utc(moment: datetime) -> datetime:
    """Naive times in queries mean UTC; aware ones are converted."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


class ListQuery(Frozen):
    outcome: Outcome | None = None
    stage: Stage | None = None
    failure_code: FailureCode | None = None
    vm_id: VmResourceId | None = None
    created_from: datetime | None = None
    created_to: datetime | None = None
    page_size: int = Field(default=50, ge=1, le=MAX_PAGE_SIZE)
    continuation: str | None = Field(default=None, max_length=1024)

    @field_validator("created_from", "created_to")
    @classmethod
    def _utc(cls, value: datetime | None) -> datetime | None:
        return None if value is None else as_utc(value)

    @field_validator("continuation")
    @classmethod
    def _readable_token(cls, value: str | None) -> str | None:
        if value is not None:
            decode_token(value)
        return value


def sort_key(snapshot: InstanceSnapshot) -> tuple[datetime, str]:
    created = as_utc(snapshot.created_time) if snapshot.created_time else _EPOCH
    return created, snapshot.instance_id


def encode_token(key: tuple[datetime, str]) -> str:
    raw = json.dumps({"c": key[0].isoformat(), "i": key[1]}, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_token(token: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data = json.loads(raw)
        created, instance = data["c"], data["i"]
        if not isinstance(created, str) or not isinstance(instance, str):
            raise TypeError("token fields must be strings")
        return as_utc(datetime.fromisoformat(created)), instance
    except (binascii.Error, ValueError, KeyError, TypeError) as exc:
        raise ContinuationError("continuation token is not one this API issued") from exc


def matches(snapshot: InstanceSnapshot, query: ListQuery) -> bool:
    if query.outcome is not None and snapshot.outcome is not query.outcome:
        return False
    if query.stage is not None and snapshot.stage is not query.stage:
        return False
    if query.failure_code is not None:
        result = snapshot.result
        if result is None or result.failure_code is not query.failure_code:
            return False
    if query.vm_id is not None and snapshot.instance_id != onboarding_instance_id(query.vm_id):
        return False
    created = as_utc(snapshot.created_time) if snapshot.created_time else None
    if query.created_from is not None and (created is None or created < query.created_from):
        return False
    return not (query.created_to is not None and (created is None or created > query.created_to))


def paginate(snapshots: Iterable[InstanceSnapshot], query: ListQuery) -> tuple[list[InstanceSnapshot], str | None]:
    """One page of matches in (created, id) order, and the token for the next page (None: last page)."""
    after = decode_token(query.continuation) if query.continuation else None
    ordered = sorted((s for s in snapshots if matches(s, query)), key=sort_key)
    if after is not None:
        ordered = [s for s in ordered if sort_key(s) > after]
    page = ordered[: query.page_size]
    more = len(ordered) > query.page_size
    return page, encode_token(sort_key(page[-1])) if more and page else None
