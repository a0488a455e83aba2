"""`dicomvault users ...`: in-process through the argparse wiring, and as real processes.

The process tests run the real CLI (`python -m dicomvault.cli`): errors are a message on stderr
and exit 2.
"""

from __future__ import annotations

import argparse
import base64
import getpass
import io
import json
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from dicomvault.auth.commands import add_users_commands
from dicomvault.auth.roles import Principal
from dicomvault.auth.users import UserStore
from dicomvault.errors import ConflictError, DicomVaultError, NotFoundError, RequestError

TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


COMMAND = [sys.executable, "-m", "dicomvault.cli"]


def run(*argv: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([*COMMAND, *argv], input=stdin, capture_output=True, text=True, timeout=60)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="dicomvault")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", required=True)
    sub = p.add_subparsers(dest="command", required=True)
    add_users_commands(sub, common)
    return p


def call(*argv: str) -> int:
    args = parser().parse_args(list(argv))
    return args.func(args)


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- in process ------------------------------------------------------------------------------


def test_add_list_token_remove(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    assert call("users", "add", "alice", "--role", "writer", "--data", data) == 0
    assert call("users", "add", "bob", "--role", "replicator", "--data", data) == 0
    capsys.readouterr()
    assert call("users", "token", "alice", "--data", data) == 0
    token = capsys.readouterr().out
    assert TOKEN_RE.fullmatch(token.strip()) and token.endswith("\n") and token.count("\n") == 1
    assert UserStore(data).authenticate(f"Bearer {token.strip()}") == Principal("alice", "writer", "token")

    assert call("users", "list", "--json", "--data", data) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(u["name"], u["role"], u["tokens"], u["has_password"]) for u in listed] == [
        ("alice", "writer", 1, False),
        ("bob", "replicator", 0, False),
    ]
    assert call("users", "list", "--data", data) == 0
    table = capsys.readouterr().out
    assert "alice" in table and "replicator" in table and "(2 users)" in table
    assert token.strip() not in table

    assert call("users", "revoke", "alice", "--data", data) == 0
    with pytest.raises(DicomVaultError):
        UserStore(data).authenticate(f"Bearer {token.strip()}")
    assert call("users", "remove", "bob", "--data", data) == 0
    with pytest.raises(NotFoundError, match="bob"):
        call("users", "remove", "bob", "--data", data)
    with pytest.raises(ConflictError, match="alice"):
        call("users", "add", "alice", "--role", "reader", "--data", data)
    with pytest.raises(NotFoundError):
        call("users", "token", "nobody", "--data", data)


def test_bad_role_is_an_argparse_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit) as exc:
        parser().parse_args(["users", "add", "x", "--role", "root", "--data", str(tmp_path)])
    assert exc.value.code == 2


def test_password_from_piped_stdin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = str(tmp_path / "data")
    monkeypatch.setattr(sys, "stdin", io.StringIO(" spaced secret \n"))
    assert call("users", "add", "rad", "--role", "reader", "--password", "--data", data) == 0
    assert " spaced secret " not in capsys.readouterr().out
    basic = "Basic " + base64.b64encode(b"rad: spaced secret ").decode()
    assert UserStore(data).authenticate(basic) == Principal("rad", "reader", "basic")
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    with pytest.raises(RequestError, match="standard input"):
        call("users", "passwd", "rad", "--data", data)


def test_password_typed_twice_on_a_tty(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = str(tmp_path / "data")
    monkeypatch.setattr(sys, "stdin", _Tty())
    typed = iter(["first", "first", "new", "other"])
    prompts: list[str] = []

    def fake_getpass(prompt: str = "") -> str:
        prompts.append(prompt)
        return next(typed)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    assert call("users", "add", "rad", "--role", "admin", "--password", "--data", data) == 0
    assert len(prompts) == 2 and all("rad" in p for p in prompts)
    with pytest.raises(RequestError, match="differ"):
        call("users", "passwd", "rad", "--data", data)
    store = UserStore(data)
    assert store.authenticate("Basic " + base64.b64encode(b"rad:first").decode()).role == "admin"  # type: ignore[union-attr]


def test_passwd_unknown_user_fails_before_prompting(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "stdin", _Tty())

    def no_prompt(prompt: str = "") -> str:
        raise AssertionError("prompted for an unknown user")

    monkeypatch.setattr(getpass, "getpass", no_prompt)
    with pytest.raises(NotFoundError, match="ghost"):
        call("users", "passwd", "ghost", "--data", str(tmp_path / "data"))


# --- as processes ----------------------------------------------------------------------------


def test_processes_token_alone_on_stdout_and_errors_exit_2(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    r = run("users", "add", "viewer", "--role", "reader", "--password", "--data", data, stdin="pw1\n")
    assert r.returncode == 0, r.stderr
    r = run("users", "token", "viewer", "--data", data)
    assert r.returncode == 0, r.stderr
    assert TOKEN_RE.fullmatch(r.stdout.rstrip("\n")) and r.stdout.count("\n") == 1
    # A store opened before the token existed (a running server) accepts it at once.
    store = UserStore(data)
    assert store.authenticate(f"Bearer {r.stdout.strip()}") == Principal("viewer", "reader", "token")
    assert store.authenticate("Basic " + base64.b64encode(b"viewer:pw1").decode()).name == "viewer"  # type: ignore[union-attr]

    r = run("users", "passwd", "viewer", "--data", data, stdin="pw2\n")
    assert r.returncode == 0, r.stderr
    with pytest.raises(DicomVaultError):
        store.authenticate("Basic " + base64.b64encode(b"viewer:pw1").decode())

    r = run("users", "add", "viewer", "--role", "admin", "--data", data)
    assert r.returncode == 2 and "viewer" in r.stderr and "already exists" in r.stderr and r.stdout == ""
    r = run("users", "remove", "ghost", "--data", data)
    assert r.returncode == 2 and "ghost" in r.stderr
    r = run("users", "add", "bad name", "--role", "reader", "--data", data)
    assert r.returncode == 2 and "bad name" in r.stderr

    r = run("users", "list", "--json", "--data", data)
    assert r.returncode == 0 and [u["name"] for u in json.loads(r.stdout)] == ["viewer"]
    assert stat.S_IMODE((Path(data) / "auth" / "users.json").stat().st_mode) == 0o600


def test_cli_py_registers_users() -> None:
    from dicomvault.cli import build_parser

    args = build_parser().parse_args(["users", "list", "--data", "x"])
    assert args.func.__module__ == "dicomvault.auth.commands"
