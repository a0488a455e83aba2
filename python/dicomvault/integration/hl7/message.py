"""One HL7 v2 message: decoded by its MSH-18 character set, parsed by hl7apy, fields read back
unescaped (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\Xhh..\\) by segment, field, repetition and component."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.exceptions import HL7apyException
from hl7apy.parser import parse_message

# MSH-18 values (HL7 table 0211) we decode; an empty MSH-18 means ASCII, read leniently as 8859-1
# because senders that leave it empty often send Latin-1 names.
CHARSETS = {"": "latin-1", "ASCII": "ascii", "8859/1": "latin-1", "8859/15": "iso8859-15",
            "UNICODE UTF-8": "utf-8", "UTF-8": "utf-8"}
_HEX = re.compile(r"^[0-9A-Fa-f]*$")


class Hl7Error(ValueError):
    """A message we refuse: `code` is the HL7 table 0357 error code for the ERR segment."""

    def __init__(self, reason: str, code: str = "207", *, reject: bool = False) -> None:
        super().__init__(reason)
        self.code = code
        self.reject = reject  # AR (the message itself is refused) rather than AE


@dataclass
class Message:
    text: str
    encoding: str
    separators: str  # field, component, repetition, escape, subcomponent
    segments: list[tuple[str, dict[int, list[str]]]] = field(default_factory=list)

    @property
    def control_id(self) -> str:
        return self.get("MSH", 10)

    @property
    def version(self) -> str:
        return self.get("MSH", 12) or "2.5.1"

    @property
    def type(self) -> tuple[str, str]:
        return self.get("MSH", 9, comp=1), self.get("MSH", 9, comp=2)

    def all(self, name: str) -> list[dict[int, list[str]]]:
        return [f for n, f in self.segments if n == name]

    def get(self, seg: str | dict[int, list[str]], num: int, rep: int = 0, comp: int = 1) -> str:
        fields = seg if isinstance(seg, dict) else next(iter(self.all(seg)), {})
        reps = fields.get(num, [])
        if rep >= len(reps):
            return ""
        return self.component(reps[rep], comp)

    def reps(self, seg: dict[int, list[str]], num: int) -> list[str]:
        return list(seg.get(num, []))

    def component(self, raw: str, comp: int) -> str:
        parts = raw.split(self.separators[1])
        return self.unescape(parts[comp - 1]) if comp <= len(parts) else ""

    def components(self, raw: str) -> list[str]:
        return [self.unescape(p) for p in raw.split(self.separators[1])]

    def unescape(self, text: str) -> str:
        esc = self.separators[3]
        if esc not in text:
            return text
        out, i = [], 0
        mapping = {"F": self.separators[0], "S": self.separators[1], "R": self.separators[2],
                   "E": esc, "T": self.separators[4], ".br": "\n"}
        while i < len(text):
            if text[i] != esc:
                out.append(text[i])
                i += 1
                continue
            end = text.find(esc, i + 1)
            if end < 0:
                raise Hl7Error(f"unterminated escape sequence in {text!r}", "102")
            seq = text[i + 1:end]
            if seq in mapping:
                out.append(mapping[seq])
            elif seq.startswith("X") and _HEX.match(seq[1:]) and len(seq) % 2 == 1:
                out.append(bytes.fromhex(seq[1:]).decode(self.encoding, errors="replace"))
            elif seq.startswith(("H", "N")) or seq.startswith(("C", "M", ".")):
                pass  # highlighting, character-set switches and formatting: no text of their own
            else:
                raise Hl7Error(f"unknown escape sequence {esc}{seq}{esc}", "102")
            i = end + 1
        return "".join(out)


def _charset(raw: bytes) -> str:
    """MSH-18 read from the raw bytes (ASCII by definition) before the text can be decoded."""
    first = raw.split(b"\r", 1)[0]
    if not first.startswith(b"MSH") or len(first) < 8:
        raise Hl7Error("the message does not start with an MSH segment", "100", reject=True)
    parts = first.split(first[3:4])
    name = parts[17].split(first[4:5])[0].decode("ascii", "replace").strip() if len(parts) > 17 else ""
    if name.upper() not in CHARSETS:
        raise Hl7Error(f"character set {name!r} (MSH-18) is not supported; use ASCII, 8859/1 or "
                       f"UNICODE UTF-8", "203", reject=True)
    return CHARSETS[name.upper()]


def parse(raw: bytes) -> Message:
    encoding = _charset(raw)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise Hl7Error(f"bytes not in the declared character set {encoding} (MSH-18): {exc}", "102",
                       reject=True) from exc
    text = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
    seps = text[3:8]
    if len(seps) < 5 or len(set(seps)) != 5:
        raise Hl7Error(f"MSH encoding characters {seps!r} are not five distinct characters", "102",
                       reject=True)
    try:
        parsed = parse_message(text, find_groups=False, validation_level=VALIDATION_LEVEL.TOLERANT)
    except (HL7apyException, ValueError, KeyError, IndexError) as exc:
        raise Hl7Error(f"not a parseable HL7 v2 message: {exc}", "100", reject=True) from exc
    msg = Message(text=text, encoding=encoding, separators=seps[0] + seps[1:5])
    # hl7apy checked the structure; fields are read from the text itself because hl7apy's
    # re-serialisation (to_er7) escapes \\Xhh\\ sequences a second time.
    names = [str(seg.name) for seg in parsed.children]
    lines = [line for line in text.split("\r") if line]
    if [line[:3] for line in lines] != names:
        raise Hl7Error(f"segments {names} do not match the text", "100", reject=True)
    for line in lines:
        parts = line.split(seps[0])
        fields: dict[int, list[str]] = {}
        if parts[0] == "MSH":
            fields[1], fields[2] = [seps[0]], [seps[1:5]]
            numbered = enumerate(parts[2:], 3)
        else:
            numbered = enumerate(parts[1:], 1)
        for num, value in numbered:
            if value:
                fields[num] = value.split(seps[2]) if not (parts[0] == "MSH" and num == 2) else [value]
        msg.segments.append((parts[0], fields))
    if not msg.control_id:
        raise Hl7Error("MSH-10 (message control id) is empty", "101", reject=True)
    if not msg.type[0]:
        raise Hl7Error("MSH-9 (message type) is empty", "101", reject=True)
    return msg
