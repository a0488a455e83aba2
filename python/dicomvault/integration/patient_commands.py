"""CLI: `dicomvault patients show|update|merge|unmerge|merges` — patient corrections by hand.

Reads open the index read-only (they work beside a running server). Writes open the data
directory when nothing holds it; when `serve` holds it they go through its `/api/patients`
admin API with the token the server left in `<data>/http.json`, like the worklist commands.
Every write is audited as a Patient Record event.
"""

from __future__ import annotations

import argparse
import json
import urllib.parse
from typing import Any

from ..audit.log import cli_user
from ..engine import Engine
from ..errors import LockedError, RequestError
from ..http_info import call_local_server
from .patients import PatientUpdates, merge_view, patient_summary


def _path(patient_id: str) -> str:
    return "/api/patients/" + urllib.parse.quote(patient_id, safe="")


def _values(pairs: list[str] | None) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs or []:
        kw, sep, value = pair.partition("=")
        if not sep or not kw:
            raise RequestError(f"--set {pair!r}: use KEYWORD=VALUE (e.g. PatientName=Doe^Jane; "
                               "KEYWORD= empties it)")
        out[kw.strip()] = value
    return out


def _print(out: Any, as_json: bool, text: str) -> None:
    print(json.dumps(out, indent=1) if as_json else text)


def cmd_show(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        out = patient_summary(engine.index, args.patient_id)
    lines = [f"{k:24} {v}" for k, v in out["values"].items()]
    for st in out["studies"]:
        fixed = ", ".join(sorted(st["coerced"]))
        lines.append(f"study {st['study_uid']}" + (f"  (corrected on the way out: {fixed})" if fixed else ""))
    _print(out, args.json, "\n".join(lines))
    return 0


def cmd_update(args: argparse.Namespace) -> int:
    values = _values(args.set)
    if not values:
        raise RequestError("nothing to update: give --set KEYWORD=VALUE")
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            studies = PatientUpdates(engine.index, str(engine.data_dir)).update(
                args.patient_id, values, source="cli", user=cli_user(), client="local")
    except LockedError:
        studies = call_local_server(args.data, "PUT", _path(args.patient_id), values)["studies"]
    _print({"patient_id": args.patient_id, "studies": studies}, args.json,
           f"patient {args.patient_id} updated: {len(studies)} studies")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    values = _values(args.set)
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            record = PatientUpdates(engine.index, str(engine.data_dir)).merge(
                args.prior_id, args.survivor_id, values, source="cli", user=cli_user(), client="local")
            out = {"merged": record is not None, **(merge_view(record) if record else {})}
    except LockedError:
        out = call_local_server(args.data, "POST", _path(args.prior_id) + "/merge",
                                {"into": args.survivor_id, "values": values})
    text = (f"patient {args.prior_id} merged into {args.survivor_id}: {len(out['studies'])} studies moved"
            if out["merged"] else f"patient {args.prior_id} was already merged into {args.survivor_id}")
    _print(out, args.json, text)
    return 0


def cmd_unmerge(args: argparse.Namespace) -> int:
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            out = merge_view(PatientUpdates(engine.index, str(engine.data_dir)).unmerge(
                args.prior_id, source="cli", user=cli_user(), client="local"))
    except LockedError:
        out = call_local_server(args.data, "DELETE",
                                "/api/patient-merges/" + urllib.parse.quote(args.prior_id, safe=""))
    _print(out, args.json, f"merge of {out['prior_id']} into {out['survivor_id']} undone: "
                           f"{len(out['studies'])} studies back")
    return 0


def cmd_merges(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        out = [merge_view(m) for m in engine.index.merges()]
    _print(out, args.json, "\n".join(f"{m['prior_id']} -> {m['survivor_id']}  ({len(m['studies'])} studies)"
                                     for m in out) or "(no merges)")
    return 0


def add_patient_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    pt = sub.add_parser("patients", help="patient corrections: update demographics, merge, undo a merge")
    psub = pt.add_subparsers(dest="patients_command", required=True)
    p = psub.add_parser("show", parents=[common], help="a patient's current values and studies")
    p.add_argument("patient_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = psub.add_parser("update", parents=[common], help="set Patient Module attributes")
    p.add_argument("patient_id")
    p.add_argument("--set", action="append", metavar="KEYWORD=VALUE", required=True,
                   help="e.g. PatientName=Doe^Jane, PatientBirthDate=19800214 (repeatable)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_update)
    p = psub.add_parser("merge", parents=[common], help="move every study of PRIOR_ID under SURVIVOR_ID")
    p.add_argument("prior_id")
    p.add_argument("survivor_id")
    p.add_argument("--set", action="append", metavar="KEYWORD=VALUE", help="also update the survivor")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_merge)
    p = psub.add_parser("unmerge", parents=[common], help="undo the merge of PRIOR_ID")
    p.add_argument("prior_id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_unmerge)
    p = psub.add_parser("merges", parents=[common], help="every merge in force")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_merges)
