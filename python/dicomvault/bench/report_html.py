"""`--html`: one self-contained file (inline CSS and SVG drawn here; no scripts, no fonts, no
network), so a report opens offline and can be attached to a ticket."""

from __future__ import annotations

import html
import json
from typing import Any

from .report_text import summary

W, H, PAD = 640, 240, 48
COLORS = {
    "ingest": "#1f77b4",
    "dimse_ingest": "#ff7f0e",
    "retrieve": "#2ca02c",
    "query": "#9467bd",
    "scrub": "#d62728",
    "small_files": "#7f7f7f",
    "object_put": "#1f77b4",
    "pack_put": "#ff7f0e",
    "object_get": "#2ca02c",
    "pack_get": "#8c564b",
    "ranged_read": "#9467bd",
    "first_byte": "#17becf",
}
TIMELINE_PHASES = ("ingest", "dimse_ingest", "retrieve", "object_put", "pack_put", "object_get", "pack_get")


def _esc(x: Any) -> str:
    return html.escape(str(x))


def _axes(x_label: str, y_label: str, y_max: float, x_ticks: list[tuple[float, str]]) -> list[str]:
    out = [
        f'<rect x="{PAD}" y="10" width="{W - PAD - 10}" height="{H - PAD - 10}" fill="none" stroke="#999"/>'
    ]
    for k in range(5):
        v = y_max * k / 4
        y = H - PAD - (H - PAD - 10) * k / 4
        out.append(f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="#eee"/>')
        out.append(f'<text x="{PAD - 4}" y="{y + 4:.1f}" text-anchor="end" font-size="10">{v:,.4g}</text>')
    for x, label in x_ticks:
        out.append(
            f'<text x="{x:.1f}" y="{H - PAD + 14}" text-anchor="middle" font-size="10">{_esc(label)}</text>'
        )
    out.append(
        f'<text x="{(W + PAD) / 2}" y="{H - 8}" text-anchor="middle" font-size="11">{_esc(x_label)}</text>'
    )
    out.append(
        f'<text x="12" y="{H / 2}" transform="rotate(-90 12 {H / 2})" text-anchor="middle" '
        f'font-size="11">{_esc(y_label)}</text>'
    )
    return out


def throughput_svg(r: dict[str, Any]) -> str:
    """MB/s over time of the ingest (engine and DIMSE) and retrieve phases, with the device's
    limits as dashed lines."""
    series = {
        k: r["phases"][k]["timeline"] for k in TIMELINE_PHASES if r["phases"].get(k, {}).get("timeline")
    }
    limits = {
        "synced seq write": r["device"].get("seq_write", {}).get("mb_s"),
        "seq read": r["device"].get("seq_read", {}).get("mb_s"),
    }
    limits = {k: v for k, v in limits.items() if v}
    if not series:
        return "<p>No timeline.</p>"
    t_max = max(p[0] for s in series.values() for p in s)
    y_max = max([p[1] for s in series.values() for p in s] + list(limits.values())) * 1.1 or 1.0

    def xy(t: float, v: float) -> tuple[float, float]:
        return PAD + (W - PAD - 10) * t / t_max, H - PAD - (H - PAD - 10) * v / y_max

    ticks = [(xy(t_max * k / 4, 0)[0], f"{t_max * k / 4:.1f}") for k in range(5)]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="throughput over time">',
        *_axes("seconds since the phase started", "MB/s", y_max, ticks),
    ]
    for name, pts in series.items():
        path = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(t, v) for t, v, _ in pts))
        out.append(f'<polyline fill="none" stroke="{COLORS[name]}" stroke-width="2" points="{path}"/>')
    for i, (name, v) in enumerate(limits.items()):
        y = xy(0, v)[1]
        out.append(
            f'<line x1="{PAD}" y1="{y:.1f}" x2="{W - 10}" y2="{y:.1f}" stroke="#555" stroke-dasharray="5,4"/>'
        )
        out.append(
            f'<text x="{W - 14}" y="{y - 4 - 10 * i:.1f}" text-anchor="end" font-size="10">device {name} '
            f"{v:,.0f} MB/s</text>"
        )
    for i, name in enumerate(series):
        out.append(
            f'<rect x="{PAD + 10 + 100 * i}" y="16" width="10" height="10" fill="{COLORS[name]}"/>'
            f'<text x="{PAD + 24 + 100 * i}" y="25" font-size="11">{name}</text>'
        )
    out.append("</svg>")
    return "\n".join(out)


def histogram_svg(name: str, hist: dict[str, list[float]], lat: dict[str, Any]) -> str:
    """Latency distribution: bars over log-spaced bins, p50/p95/p99 marked."""
    edges, counts = hist.get("edges_ms", []), hist.get("counts", [])
    if not counts:
        return f"<p>{_esc(name)}: no samples.</p>"
    import math

    lo, hi = math.log10(edges[0]), math.log10(edges[-1])
    span = (hi - lo) or 1.0
    y_max = max(counts) * 1.1

    def x(ms: float) -> float:
        return PAD + (W - PAD - 10) * (math.log10(max(ms, edges[0])) - lo) / span

    ticks = [(x(10.0**d), f"{10.0**d:g} ms") for d in range(math.ceil(lo), math.floor(hi) + 1)]
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" role="img" '
        f'aria-label="{_esc(name)} latency">',
        *_axes("latency (log scale)", "count", y_max, ticks),
    ]
    color = COLORS.get(name.split()[0], "#1f77b4")
    for i, c in enumerate(counts):
        if not c:
            continue
        x0, x1 = x(edges[i]), x(edges[i + 1])
        h = (H - PAD - 10) * c / y_max
        out.append(
            f'<rect x="{x0:.1f}" y="{H - PAD - h:.1f}" width="{max(x1 - x0 - 1, 1):.1f}" height="{h:.1f}" '
            f'fill="{color}"><title>{edges[i]:.3g}-{edges[i + 1]:.3g} ms: {c}</title></rect>'
        )
    for q in ("p50", "p95", "p99"):
        v = lat.get(q)
        if v:
            xv = x(v)
            out.append(
                f'<line x1="{xv:.1f}" y1="10" x2="{xv:.1f}" y2="{H - PAD}" stroke="#000" '
                'stroke-dasharray="3,3"/>'
                f'<text x="{xv + 3:.1f}" y="22" font-size="10">{q} {v:,.3g} ms</text>'
            )
    out.append(f'<text x="{W - 14}" y="40" text-anchor="end" font-size="12">{_esc(name)}</text></svg>')
    return "\n".join(out)


def render(r: dict[str, Any]) -> str:
    hists = []
    for name, p in r["phases"].items():
        if "latency_histogram" not in p:
            continue  # a phase timed as a whole (compact)
        label = f"{name} ({'per query' if name == 'query' else 'per object'})"
        hists.append(histogram_svg(label, p["latency_histogram"], p["latency_ms"]))
        if "first_byte_histogram" in p:
            hists.append(
                histogram_svg(
                    f"first_byte of {name} (request to first byte)",
                    p["first_byte_histogram"],
                    p["first_byte_ms"],
                )
            )
    if "small_files" in r["device"]:
        d = r["device"]["small_files"]
        hists.append(
            histogram_svg(
                "small_files (device, write+fsync per file)", d["latency_histogram"], d["latency_ms"]
            )
        )
    cfg = r["config"]
    title = f"dicomvault bench — {cfg['workload']} on {r['target'].get('path') or r['target'].get('url', '')}"
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_esc(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:1em auto;color:#222}}
pre{{background:#f6f6f6;padding:.8em;overflow-x:auto;font-size:12px}} svg{{margin:.5em 0;display:block}}
h2{{border-bottom:1px solid #ccc}}</style></head><body>
<h1>{_esc(title)}</h1>
<p>Started {_esc(r["started_at"])}, dicomvault {_esc(r["version"])}, {_esc(r["machine"]["platform"])},
{_esc(r["machine"]["cpus"])} CPUs. Field meanings: docs/bench.md.</p>
<h2>Summary</h2><pre>{_esc(summary(r))}</pre>
<h2>Throughput over time</h2>{throughput_svg(r)}
<h2>Latency distributions</h2>{"".join(hists)}
<h2>Raw result</h2><details><summary>JSON</summary><pre>{_esc(json.dumps(r, indent=1))}</pre></details>
</body></html>
"""
