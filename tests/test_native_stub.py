"""python/dicomvault/_native.pyi against the built extension: every name both ways, every
class's public methods both ways, and each signature's parameter names and defaults, so the
stub cannot drift from rust/src."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path
from typing import Any

import dicomvault
from dicomvault import _native

STUB = Path(dicomvault.__file__).with_name("_native.pyi")


def _public(names: list[str]) -> set[str]:
    return {n for n in names if not n.startswith("_")}


def _stub() -> ast.Module:
    assert STUB.exists(), f"{STUB} is missing"
    return ast.parse(STUB.read_text())


def _params(fn: ast.FunctionDef) -> list[tuple[str, bool]]:
    """(name, has a default) of a stub def's parameters, without self/cls."""
    args = fn.args
    positional = [*args.posonlyargs, *args.args]
    defaults = [False] * (len(positional) - len(args.defaults)) + [True] * len(args.defaults)
    out = list(zip([a.arg for a in positional], defaults, strict=True))
    out += [(a.arg, d is not None) for a, d in zip(args.kwonlyargs, args.kw_defaults, strict=True)]
    return [p for p in out if p[0] not in ("self", "cls")]


def _runtime_params(obj: Any) -> list[tuple[str, bool]] | None:
    try:
        sig = inspect.signature(obj)
    except (TypeError, ValueError):
        return None  # no text signature: nothing to compare
    return [(p.name, p.default is not inspect.Parameter.empty) for p in sig.parameters.values()
            if p.name not in ("self", "cls") and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def test_every_name_is_in_the_stub_and_only_those() -> None:
    stub = _stub()
    stubbed = {n.name for n in stub.body if isinstance(n, ast.FunctionDef | ast.ClassDef)}
    stubbed |= {t.id for n in stub.body if isinstance(n, ast.AnnAssign | ast.Assign)
                for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)}
    runtime = _public(dir(_native))
    assert runtime - stubbed == set(), "in the extension, not in the stub"
    assert _public(list(stubbed)) - runtime == set(), "in the stub, not in the extension"


def test_classes_and_signatures_match() -> None:
    problems = []
    for node in _stub().body:
        if isinstance(node, ast.FunctionDef):
            want = _runtime_params(getattr(_native, node.name))
            if want is not None and _params(node) != want:
                problems.append(f"{node.name}: stub {_params(node)} != runtime {want}")
        if not isinstance(node, ast.ClassDef):
            continue
        cls = getattr(_native, node.name)
        defs = {f.name: f for f in node.body if isinstance(f, ast.FunctionDef)}
        if isinstance(cls, type) and issubclass(cls, BaseException):
            continue  # exceptions: their methods are Python's
        runtime = {n for n in _public(dir(cls)) if not n.startswith("__")}
        missing, extra = runtime - defs.keys(), _public(list(defs)) - runtime
        if missing or extra:
            problems.append(f"{node.name}: missing {sorted(missing)}, not in the extension {sorted(extra)}")
        for name, fn in defs.items():
            if name.startswith("_") and name != "__init__" and name != "__new__":
                continue
            target = cls if name in ("__init__", "__new__") else getattr(cls, name, None)
            want = _runtime_params(target) if target is not None else None
            if want is not None and not _is_property(fn) and _params(fn) != want:
                problems.append(f"{node.name}.{name}: stub {_params(fn)} != runtime {want}")
    assert problems == [], "\n".join(problems)


def _is_property(fn: ast.FunctionDef) -> bool:
    return any(isinstance(d, ast.Name) and d.id == "property" for d in fn.decorator_list)
