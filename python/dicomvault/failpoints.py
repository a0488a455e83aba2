"""Crash points for the fault-injection tests: `DICOMVAULT_FAILPOINT=<name>` makes the process
kill itself (SIGKILL, as a power cut or the OOM killer would) when it reaches that point.

Why in the product and not in a test double: the durability contract is about this exact code
between its exact steps (e.g. a tier move after the copy and before the index switch); a
simulation would prove nothing about it. Unset, a failpoint costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

_ARMED = os.environ.get("DICOMVAULT_FAILPOINT", "")


def hit(name: str) -> None:
    if _ARMED and _ARMED == name:
        os.kill(os.getpid(), signal.SIGKILL)
