"""ACK messages: MSA-1 AA/AE/AR, MSA-2 the control id acknowledged, ERR with the reason, in the
sender's version and character set (or ASCII when the message could not be read)."""

from __future__ import annotations

import time

from .message import Message

ACCEPT, ERROR, REJECT = "AA", "AE", "AR"
_ERROR_TEXT = {"100": "Segment sequence error", "101": "Required field missing", "102": "Data type error",
               "200": "Unsupported message type", "201": "Unsupported event code",
               "203": "Unsupported version id", "204": "Unknown key identifier",
               "206": "Application record locked", "207": "Application internal error"}


def _escape(text: str) -> str:
    for ch, seq in (("\\", "\\E\\"), ("|", "\\F\\"), ("^", "\\S\\"), ("&", "\\T\\"), ("~", "\\R\\")):
        text = text.replace(ch, seq)
    return text.replace("\r", " ").replace("\n", " ")


def build_ack(msg: Message | None, code: str, text: str = "", error: str = "") -> bytes:
    """The ACK for `msg` (None: unreadable, answered with MSA-2 empty and version 2.5.1)."""
    version = msg.version if msg else "2.5.1"
    control = msg.control_id if msg else ""
    trigger = msg.type[1] if msg else ""
    sender = (msg.get("MSH", 3), msg.get("MSH", 4)) if msg else ("", "")
    receiver = (msg.get("MSH", 5) or "DICOMVAULT", msg.get("MSH", 6)) if msg else ("DICOMVAULT", "")
    charset = msg.get("MSH", 18) if msg else ""
    encoding = msg.encoding if msg else "ascii"
    stamp = time.strftime("%Y%m%d%H%M%S")
    ack_type = f"ACK^{trigger}^ACK" if version >= "2.3.1" else f"ACK^{trigger}"
    msh = (f"MSH|^~\\&|{_escape(receiver[0])}|{_escape(receiver[1])}|{_escape(sender[0])}|"
           f"{_escape(sender[1])}|{stamp}||{ack_type}|ACK{stamp}{control[:8]}|P|{version}")
    if charset:
        msh += "|" * 6 + _escape(charset)
    segments = [msh, f"MSA|{code}|{_escape(control)}|{_escape(text)[:80]}"]
    if code != ACCEPT:
        err = error or "207"
        meaning = _ERROR_TEXT.get(err, "Application error")
        if version >= "2.5":
            # ERR-3 HL7 error code (CWE, table 0357), ERR-4 severity, ERR-8 user message
            segments.append(f"ERR|||{err}^{meaning}^HL70357|E||||{_escape(text)}")
        else:
            # v2.3/2.4: ERR-1 error code and location (CM), the code in its 4th component
            segments.append(f"ERR|^^^{err}&{_escape(meaning)}&HL70357&&{_escape(text)}")
    return ("\r".join(segments) + "\r").encode(encoding, errors="replace")
