"""Searchset Bundles: the page's resources with their full URLs, the total when known, and the
self / next / previous links that page through the same search."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlencode


def searchset(base: str, resource_type: str, params: Sequence[tuple[str, str]],
              resources: list[dict[str, Any]], total: int | None, count: int, offset: int,
              more: bool) -> dict[str, Any]:
    """``base``: the FHIR base URL (``.../fhir/r4``); ``params`` the search's own query pairs
    (paging ones are replaced by the links)."""
    kept = [(k, v) for k, v in params if k not in ("_count", "_offset")]

    def url(off: int) -> str:
        return f"{base}/{resource_type}?" + urlencode([*kept, ("_count", str(count)), ("_offset", str(off))])

    links = [{"relation": "self", "url": url(offset)}]
    if more and count > 0:
        links.append({"relation": "next", "url": url(offset + count)})
    if offset > 0 and count > 0:
        links.append({"relation": "previous", "url": url(max(0, offset - count))})
    out: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")},
        "type": "searchset",
    }
    if total is not None:
        out["total"] = total
    out["link"] = links
    entries = []
    for res in resources:
        entry: dict[str, Any] = {}
        if "id" in res:
            entry["fullUrl"] = f"{base}/{res['resourceType']}/{res['id']}"
        entry["resource"] = res
        entry["search"] = {"mode": "match"}
        entries.append(entry)
    if entries:
        out["entry"] = entries
    return out
