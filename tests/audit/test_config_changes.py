"""`dicomvault users ...` writes a Security Alert (security configuration) per change, through the real CLI;
a secret (token, password) never reaches the log, and a command that changes nothing writes
nothing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def cli(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomvault.cli", *args], capture_output=True, text=True,
                          input=stdin, timeout=60)


def test_user_commands_are_security_alerts(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    assert cli("users", "add", "alice", "--role", "reader", "--password", "--data", data,
               stdin="s3cret-pw\n").returncode == 0
    token = cli("users", "token", "alice", "--data", data)
    assert token.returncode == 0
    assert cli("users", "revoke", "alice", "--data", data).returncode == 0
    assert cli("users", "remove", "alice", "--data", data).returncode == 0
    assert cli("users", "remove", "alice", "--data", data).returncode != 0  # nobody to remove
    text = (tmp_path / "data" / "audit" / "audit.jsonl").read_text()
    recs = [json.loads(line) for line in text.splitlines()]
    assert [(r["event"], r["code"], r["detail"]["what"], r["detail"]["action"], r["detail"]["target"])
            for r in recs] == [("security-alert", "DCM 110113", "users", a, "alice")
                               for a in ("add", "token", "revoke", "remove")]
    first = recs[0]["detail"]
    assert (first["change"], first["alert"]) == ("users-add", "security-configuration")
    assert recs[0]["detail"]["role"] == "reader" and recs[0]["detail"]["password"] is True
    assert recs[2]["detail"]["tokens"] == 1
    assert all(r["user"].startswith("cli:") and r["client"] == "local" for r in recs)
    assert token.stdout.strip() not in text and "s3cret-pw" not in text
    assert cli("audit", "verify", "--data", data).returncode == 0
