"""CLI: `dicomvault worklist add|list|show|remove` — the modality worklist.

Reads (list, show) open the index read-only, so they work beside a running server. Writes (add,
remove) open the data directory when nothing holds it; when `serve` holds it they go through its
HTTP API (`/api/worklist`) with the admin token the server left in `<data>/http.json`, so the
one process that writes the index stays the one that writes the worklist.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from ..engine import Engine
from ..errors import LockedError
from ..http_info import call_local_server
from ..textout import print_table
from .worklist_entry import WorklistEntry, entry_from_fields
from .worklist_store import WorklistStore

_COLUMNS = ["key", "status", "start", "station_ae", "modality", "patient_id", "patient_name", "procedure",
            "study_uid", "priors"]


def _key_path(key: str) -> str:
    return "/api/worklist/" + urllib.parse.quote(key, safe="")


def cmd_add(args: argparse.Namespace) -> int:
    fields = {k: getattr(args, k) for k in (
        "patient_id", "patient_name", "patient_birth_date", "patient_sex", "accession",
        "requested_procedure_id", "sps_id", "study_uid", "procedure", "procedure_code", "station_ae",
        "modality", "start",
        "performing_physician", "step_description", "referring_physician") if getattr(args, k) is not None}
    entry = entry_from_fields(fields)
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()  # a replica's index follows its upstream only
            WorklistStore(engine.index).add(entry, replace_existing=args.replace)
            out = entry.as_dict()
    except LockedError:
        out = call_local_server(args.data, "POST", "/api/worklist", {**fields, "study_uid": entry.study_uid,
                                                                 "replace": args.replace})
    if args.json:
        print(json.dumps(out, indent=1))
    else:
        print(f"scheduled {out['key']}: study {out['study_uid']}")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            store = WorklistStore(engine.index)
            out = (store.cancel(args.key) if args.cancel else store.remove(args.key)).as_dict()
    except LockedError:
        path = _key_path(args.key) + ("?cancel=1" if args.cancel else "")
        out = call_local_server(args.data, "DELETE", path)
    print(f"{'canceled' if args.cancel else 'removed'} {out['key']}")
    return 0


def _start(e: dict[str, Any]) -> str:
    d, t = e.get("start_date", ""), e.get("start_time", "")
    day = f"{d[:4]}-{d[4:6]}-{d[6:]}" if len(d) == 8 else d
    return f"{day} {t[:2]}:{t[2:4]}".strip() if len(t) >= 4 else day


def _priors(p: dict[str, Any]) -> str:
    """The priors of an entry in a few words: '2 pushed', '1 promoted, 1 local', 'failed: 2 ...'."""
    if not p:
        return ""
    if p.get("state") == "failed":
        return f"failed: {p.get('error', '')}"[:60]
    counts: dict[str, int] = {}
    for s in p.get("studies", []):
        counts[s["state"]] = counts.get(s["state"], 0) + 1
    return ", ".join(f"{n} {state}" for state, n in counts.items()) or "none"


def cmd_list(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        rows = WorklistStore(engine.index).entries(active_only=not args.all, date=args.date,
                                                   modality=args.modality, station_ae=args.station_ae)
    out = [e.as_dict() for e in rows]
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    print_table(_COLUMNS, [{**e, "start": _start(e), "priors": _priors(e.get("priors") or {})} for e in out])
    print(f"({len(out)} entries)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        store = WorklistStore(engine.index)
        entry: WorklistEntry = store.require(args.key)
        steps = [s for s in (store.get_mpps(uid) for uid in entry.mpps) if s is not None]
    out = {**entry.as_dict(), "mpps_steps": [
        {"uid": s["uid"], "status": s["status"], "caller": s.get("caller"),
         "performed_series": s.get("performed_series", [])} for s in steps]}
    if args.json:
        print(json.dumps(out, indent=1))
        return 0
    for k in ("key", "status", "patient_id", "patient_name", "patient_birth_date", "patient_sex", "study_uid",
              "procedure", "station_ae", "modality", "performing_physician", "step_description"):
        print(f"{k:22} {out[k]}")
    print(f"{'start':22} {_start(out)}")
    if out.get("priors"):
        print(f"{'priors':22} {_priors(out['priors'])}")
        for s in out["priors"].get("studies", []):
            print(f"  prior {s['study_uid']} {s['study_date']} {','.join(s['modalities'])}: {s['state']}"
                  + (f" ({s['reason']})" if s.get("reason") else ""))
    for s in out["mpps_steps"]:
        print(f"MPPS {s['uid']}: {s['status']} (from {s['caller']})")
    for series in out["performed_series"]:
        print(f"  performed series {series['series_uid']}: {series['images']} images"
              + (f", {series['description']}" if series["description"] else ""))
    return 0


def add_worklist_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    wl = sub.add_parser("worklist", help="the modality worklist (scheduled procedure steps)")
    wsub = wl.add_subparsers(dest="worklist_command", required=True)
    p = wsub.add_parser("add", parents=[common], help="schedule a procedure step")
    p.add_argument("--patient-id", required=True)
    p.add_argument("--patient-name", help="DICOM PN, e.g. Doe^John")
    p.add_argument("--birth-date", dest="patient_birth_date", metavar="YYYYMMDD")
    p.add_argument("--sex", dest="patient_sex", choices=["M", "F", "O"])
    p.add_argument("--accession", required=True)
    p.add_argument("--requested-procedure-id", help="default: the accession number")
    p.add_argument("--step-id", dest="sps_id", help="Scheduled Procedure Step ID (default: the accession)")
    p.add_argument("--study-uid", help="default: a new UID")
    p.add_argument("--procedure", help="Requested Procedure Description")
    p.add_argument("--procedure-code", help="value[^scheme[^meaning]]")
    p.add_argument("--modality")
    p.add_argument("--station-ae", help="Scheduled Station AE Title (the modality that performs it)")
    p.add_argument("--start", help="'YYYY-MM-DD HH:MM'")
    p.add_argument("--physician", dest="performing_physician", help="Scheduled Performing Physician's Name")
    p.add_argument("--step-description")
    p.add_argument("--referring-physician")
    p.add_argument("--replace", action="store_true", help="replace an entry with the same key")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_add)

    p = wsub.add_parser("list", parents=[common], help="entries still on the worklist (--all: every entry)")
    p.add_argument("--date", help="YYYYMMDD or a range lo-hi")
    p.add_argument("--modality")
    p.add_argument("--station-ae")
    p.add_argument("--all", action="store_true", help="also completed, discontinued and canceled entries")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = wsub.add_parser("show", parents=[common], help="one entry, its MPPS steps and performed series")
    p.add_argument("key", help="ACCESSION^REQUESTED_PROCEDURE_ID^STEP_ID")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = wsub.add_parser("remove", parents=[common], help="remove an entry (--cancel: keep it, canceled)")
    p.add_argument("key", help="ACCESSION^REQUESTED_PROCEDURE_ID^STEP_ID")
    p.add_argument("--cancel", action="store_true")
    p.set_defaults(func=cmd_remove)
