"""The terminal summary table of a bench result."""

from __future__ import annotations

from typing import Any


def _f(v: Any, nd: int = 0) -> str:
    if v is None:
        return "-"
    if isinstance(v, float | int):
        return f"{v:,.{nd}f}"
    return str(v)


def _x(v: float | None, what: str) -> str:
    return "" if v is None else f"{v:.2f} x {what}"


def summary(r: dict[str, Any]) -> str:
    cfg, wl, gen, dev, ph, ra = (
        r["config"],
        r["workload"],
        r["generator"],
        r["device"],
        r["phases"],
        r["ratios"],
    )
    t = r["target"]
    where = (
        f"{t['url']} at {t['endpoint']}" + (f", sse {t['sse']}" if t.get("sse") else "")
        if t.get("kind") == "s3"
        else f"{t.get('path', t.get('kind'))} ({t.get('filesystem') or '?'})"
    )
    lines = [
        f"dicomvault bench  workload={cfg['workload']} seed={cfg['seed']} threads={cfg['threads']} "
        f"scale={cfg['scale']}  target={where}",
        f"workload: {wl['studies']:,} studies, {wl['objects']:,} objects, {wl['bytes'] / 1e6:,.1f} MB "
        f"(mean object {wl['mean_object_bytes'] / 1e6:,.2f} MB); "
        + ", ".join(
            f"{m} {d['objects']:,} obj {d['bytes'] / 1e6:,.0f} MB"
            for m, d in sorted(wl["by_modality"].items())
        ),
        f"generator: {gen['mb_s']:,.0f} MB/s, {gen['objects_s']:,.0f} objects/s on one thread "
        f"({gen['mode']}; "
        f"consumers waited {gen['consumer_wait_seconds']:.2f} s on it)",
        "",
    ]
    head = (
        f"{'figure':<26}{'count':>10}{'MB':>10}{'s':>8}{'MB/s':>9}{'obj/s':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}  vs device"
    )
    lines += [head, "-" * len(head)]

    def row(
        name: str, count: Any, mb: Any, s: Any, mbs: Any, ops: Any, lat: dict[str, Any] | None, vs: str = ""
    ) -> None:
        lat = lat or {}
        lines.append(
            f"{name:<26}{_f(count):>10}{_f(mb, 1):>10}{_f(s, 2):>8}{_f(mbs):>9}{_f(ops):>9}"
            f"{_f(lat.get('p50'), 2):>9}{_f(lat.get('p95'), 2):>9}{_f(lat.get('p99'), 2):>9}  {vs}"
        )

    if "seq_write" in dev:
        d = dev["seq_write"]
        row(
            "device synced seq write",
            None,
            d["bytes"] / 1e6,
            d["seconds"],
            d["mb_s"],
            None,
            None,
            f"(before {d.get('mb_s_before', d['mb_s']):,.0f}, "
            f"after {d.get('mb_s_after', d['mb_s']):,.0f} MB/s)",
        )
    if "small_files" in dev:
        d = dev["small_files"]
        row(
            "device synced small files",
            d["files"],
            d["bytes"] / 1e6,
            d["seconds"],
            d["mb_s"],
            d["files_s"],
            d["latency_ms"],
            f"(write+fsync per file, mean {d['mean_file_bytes'] / 1e6:,.2f} MB)",
        )
    if "seq_read" in dev:
        d = dev["seq_read"]
        row(
            "device seq read",
            None,
            d["bytes"] / 1e6,
            d["seconds"],
            d["mb_s"],
            None,
            None,
            "(page cache dropped)" if d["cache_dropped"] else "(page cache NOT dropped)",
        )
    if "ingest" in ph:
        p = ph["ingest"]
        row(
            "engine ingest",
            p["objects"],
            p["bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            p["objects_s"],
            p["latency_ms"],
            "; ".join(
                x
                for x in (
                    _x(ra["ingest_vs_seq_write"], "seq write"),
                    _x(ra["ingest_vs_small_files"], "small files"),
                )
                if x
            ),
        )
        row(
            "  stored (compressed)",
            None,
            p["stored_bytes"] / 1e6,
            p["seconds"],
            p["stored_mb_s"],
            None,
            None,
            f"ratio {p['compression_ratio']}; " + _x(ra["ingest_stored_vs_seq_write"], "seq write"),
        )
    if "compact" in ph:
        p = ph["compact"]
        row(
            f"compact to warm ({p['threads']} thr)",
            p["blobs"],
            p["logical_bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            None,
            None,
            f"ratio {p['compression_ratio']}",
        )
    if "dimse_ingest" in ph:
        p = ph["dimse_ingest"]
        row(
            f"dimse ingest ({p['associations']} assoc)",
            p["objects"],
            p["bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            p["objects_s"],
            p["latency_ms"],
            "; ".join(
                x
                for x in (
                    _x(ra["dimse_ingest_vs_seq_write"], "seq write"),
                    _x(ra["dimse_ingest_vs_engine_ingest"], "engine ingest"),
                    f"errors {p['errors']}",
                    f"server exit {p['server_exit_code']}",
                )
                if x
            ),
        )
    if "query" in ph:
        p = ph["query"]
        row(
            "engine query (C-FIND mix)",
            p["queries"],
            None,
            p["seconds"],
            None,
            p["queries_s"],
            p["latency_ms"],
            f"over {p['studies_indexed']:,} studies",
        )
        for k, v in p["by_kind"].items():
            row(
                f"  {k}"[:26],
                v["queries"],
                None,
                None,
                None,
                None,
                v["latency_ms"],
                f"{v['mean_matches']:,} matches",
            )
    if "retrieve" in ph:
        p = ph["retrieve"]
        row(
            "engine retrieve",
            p["objects"],
            p["bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            p["objects_s"],
            p["latency_ms"],
            _x(ra["retrieve_vs_seq_read"], "seq read"),
        )
        row(
            "  first object of study",
            p["studies"],
            None,
            None,
            p["study_mb_s"]["p50"],
            None,
            p["first_object_ms"],
            "(MB/s = median study)",
        )
    if "scrub" in ph:
        p = ph["scrub"]
        row(
            "engine scrub (verify)",
            p["objects"],
            p["bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            p["objects_s"],
            p["latency_ms"],
            _x(ra["scrub_vs_seq_read"], "seq read")
            + f"; stored {p['stored_mb_s']:,.0f} MB/s = "
            + _x(ra["scrub_stored_vs_seq_read"], "seq read")
            + f"; damaged {p['damaged']}",
        )
    _s3_rows(ph, ra, row)
    if r.get("skipped"):
        by_reason: dict[str, list[str]] = {}
        for name, why in r["skipped"].items():
            by_reason.setdefault(why, []).append(name)
        lines += [""] + [f"skipped {', '.join(names)}: {why}" for why, names in by_reason.items()]
    return "\n".join(lines)


def _s3_rows(ph: dict[str, Any], ra: dict[str, Any], row: Any) -> None:
    """The object-store phases of an s3:// target (bench/phase_s3.py)."""
    for key, name in (
        ("object_put", "s3 PUT objects"),
        ("pack_put", "s3 PUT packs"),
        ("object_get", "s3 GET objects"),
        ("pack_get", "s3 GET packs"),
        ("ranged_read", "s3 ranged read in pack"),
    ):
        p = ph.get(key)
        if p is None:
            continue
        note = f"concurrency {p['concurrency']}"
        if key == "object_put":
            note += "; " + _x(ra.get("object_put_vs_pack_put"), "pack PUT MB/s")
        elif key == "pack_put":
            note += f"; packs of {p['pack_bytes'] / 1e6:,.1f} MB"
            if p["part_bytes"]:
                note += f", {p['part_bytes'] / 1e6:,.1f} MB parts x {p['parts_in_flight']} in flight"
        elif key == "ranged_read":
            note += f"; {p['range_bytes'] / 1024:,.0f} KiB ranges"
        row(
            name,
            p["objects"],
            p["bytes"] / 1e6,
            p["seconds"],
            p["mb_s"],
            p["objects_s"],
            p["latency_ms"],
            note,
        )
        if key == "object_get":
            row(
                "  first byte",
                p["objects"],
                None,
                None,
                None,
                None,
                p["first_byte_ms"],
                "(request to first byte)",
            )
