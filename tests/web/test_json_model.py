"""DICOM JSON model of stored datasets, checked against pydicom's own reading of the files.

The reference side is `pydicom.dcmread` of the whole Part-10 file (values, VRs, sequences,
character sets); the side under test only sees the dataset bytes after the file meta, as the
engine stores them. Hand-built datasets (explicit VR little endian, written with struct here, not
by the code under test) cover what the corpus does not: NaN/inf, invalid numbers, empty values,
long text, nested bulk data.
"""

from __future__ import annotations

import base64
import functools
import math
import struct
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pydicom
import pydicom.data
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset

from dicomvault import _native
from dicomvault.errors import NotFoundError, RequestError
from dicomvault.web.dicomweb.json_model import bulk_value, dataset_json
from dv_corpus import corpus_files, pydicom_reads

PREFIX = "https://pacs.example/dicom-web/studies/1/series/2/instances/3"
THRESHOLD = 1024
BINARY = {"OB", "OD", "OF", "OL", "OV", "OW", "UN"}
BULKABLE = BINARY | {"DS", "FD", "FL", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "US", "UT", "UV"}
WIDTH = {"OW": 2, "US": 2, "SS": 2, "OL": 4, "OF": 4, "UL": 4, "SL": 4, "FL": 4, "OD": 8, "FD": 8,
         "OV": 8, "SV": 8, "UV": 8}
PIXEL_TAGS = {0x7FE00010, 0x7FE00008, 0x7FE00009}
BIG_ENDIAN = "1.2.840.10008.1.2.2"
EXPLICIT_LE = "1.2.840.10008.1.2.1"


def charset_files() -> list[Path]:
    return sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("*.dcm"))


def split(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, dataset bytes after the file meta), as the engine stores them."""
    data = path.read_bytes()
    parsed = _native.parse(data)
    return parsed["transfer_syntax"], data[parsed["dataset_offset"]:]


@functools.cache
def readable_files() -> tuple[Path, ...]:
    out = []
    for path in corpus_files() + charset_files():
        if pydicom_reads(path) is not None:
            continue
        try:
            split(path)
        except Exception:  # noqa: BLE001 — files the archive refuses are not stored, so not served
            continue
        out.append(path)
    return tuple(out)


def little(value: bytes, vr: str, big_endian: bool) -> bytes:
    width = WIDTH.get(vr, 1)
    if not big_endian or width == 1 or len(value) % width:
        return value
    return np.frombuffer(value, dtype=f">u{width}").byteswap().tobytes()


def norm_text(v: Any) -> Any:
    if isinstance(v, str):
        return v.strip("\0 ") or None
    return v


def expected_values(elem: Any, vr: str) -> list[Any]:
    value = elem.value
    values = list(value) if isinstance(value, list | tuple | pydicom.multival.MultiValue) else [value]
    out: list[Any] = []
    for v in values:
        if v is None or v == "":
            out.append(None)
        elif vr == "PN":
            comps = dict(zip(("Alphabetic", "Ideographic", "Phonetic"), v.components, strict=False))
            out.append({k: c for k, c in comps.items() if c} or None)
        elif vr == "AT":
            out.append(f"{int(v):08X}")
        elif vr in ("IS", "SL", "SS", "UL", "US", "SV", "UV"):
            # an IS that is not a number is kept as the string it is (F.2.3.1 allows strings)
            out.append(int(v) if str(v).strip().lstrip("+-").isdigit() else str(v).strip())
        elif vr in ("DS", "FL", "FD"):
            f = float(v)
            out.append("NaN" if math.isnan(f) else ("Infinity" if f == math.inf else
                       ("-Infinity" if f == -math.inf else f)))
        else:
            out.append(norm_text(v))
    return out


class Checker:
    def __init__(self, ts: str, dataset: bytes) -> None:
        self.ts = ts
        self.dataset = dataset
        self.big_endian = ts == BIG_ENDIAN

    def check(self, mine: dict[str, Any], ref: Dataset, path: str = "") -> None:
        # no file meta, no Group Length elements (PS3.18 F.2.2)
        tags = [t for t in ref.keys() if (path or t >> 16 != 0x0002) and t & 0xFFFF]
        assert sorted(mine) == sorted(f"{t:08X}" for t in tags), f"element set differs at {path!r}"
        for tag in tags:
            self.check_element(mine[f"{tag:08X}"], ref, tag, path + f"{tag:08X}")

    def check_element(self, got: dict[str, Any], ref: Dataset, tag: int, path: str) -> None:
        raw = ref.get_item(tag)
        raw_vr = raw.VR if isinstance(raw, RawDataElement) and not raw.is_implicit_VR else None
        raw_bytes = raw.value if isinstance(raw, RawDataElement) and isinstance(raw.value, bytes) else None
        if raw_vr == "UN" and got["vr"] == "UN":
            # stored as UN: shown as UN whatever pydicom re-types it to
            self.check_binary(got, raw_bytes or b"", tag, path, "UN")
            return
        elem = ref[tag]
        vr = elem.VR
        if " or " in vr:
            assert got["vr"] in vr, path
            vr = got["vr"]
        assert got["vr"] == vr, f"{path}: VR {got['vr']} != {vr}"
        if vr == "SQ":
            items = list(elem.value or [])
            if not items:
                assert "Value" not in got, path
                return
            assert len(got["Value"]) == len(items), path
            for i, item in enumerate(items):
                self.check(got["Value"][i], item, f"{path}/{i}/")
            return
        if vr in BINARY:
            self.check_binary(got, elem.value or b"", tag, path, vr)
            return
        if "BulkDataURI" in got:
            assert vr in BULKABLE, f"{path}: {vr} value sent as bulk data"
            assert got["BulkDataURI"] == f"{PREFIX}/bulkdata/{path}"
            served = bulk_value(self.ts, self.dataset, path)
            assert len(served) > THRESHOLD
            if raw_bytes is not None:
                assert served == little(raw_bytes, vr, self.big_endian), path
            return
        if elem.is_empty:
            assert "Value" not in got, f"{path}: empty element has a Value"
            return
        expected = expected_values(elem, vr)
        got_values = [norm_text(v) for v in got["Value"]]
        assert len(got_values) == len(expected), path
        for g, e in zip(got_values, expected, strict=True):
            if isinstance(e, float):
                assert isinstance(g, int | float) and math.isclose(g, e, rel_tol=1e-12), f"{path}: {g} != {e}"
            else:
                assert g == e, f"{path}: {g!r} != {e!r}"

    def check_binary(self, got: dict[str, Any], value: bytes, tag: int, path: str, vr: str) -> None:
        expected = little(bytes(value), vr, self.big_endian)
        if not expected:
            assert set(got) == {"vr"}, path
            return
        if "BulkDataURI" in got:
            assert got["BulkDataURI"] == f"{PREFIX}/bulkdata/{path}"
            assert tag in PIXEL_TAGS or len(expected) > THRESHOLD, f"{path}: short value sent as bulk"
            assert bulk_value(self.ts, self.dataset, path) == expected, f"{path}: bulk bytes differ"
        else:
            assert tag not in PIXEL_TAGS and len(expected) <= THRESHOLD, path
            assert base64.b64decode(got["InlineBinary"]) == expected, f"{path}: inline bytes differ"


@pytest.mark.parametrize("path", readable_files(), ids=lambda p: p.name)
def test_every_readable_file_matches_pydicom(path: Path) -> None:
    ts, dataset = split(path)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = pydicom.dcmread(path)
        mine = dataset_json(ts, dataset, PREFIX, threshold=THRESHOLD)
        Checker(ts, dataset).check(mine, ref)


def test_corpus_covers_the_hard_cases() -> None:
    """The parametrised comparison above only means something if these are in it."""
    syntaxes = {split(p)[0] for p in readable_files()}
    assert {"1.2.840.10008.1.2", EXPLICIT_LE, BIG_ENDIAN, "1.2.840.10008.1.2.1.99",
            "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"} <= syntaxes


def charset_json(name: str) -> dict[str, Any]:
    ts, dataset = split(Path(pydicom.data.__file__).parent / "charset_files" / name)
    return dataset_json(ts, dataset, PREFIX)


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("chrH31.dcm",
         {"Alphabetic": "Yamada^Tarou", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
        ("chrH32.dcm", {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}),
        ("chrI2.dcm", {"Alphabetic": "Hong^Gildong", "Ideographic": "洪^吉洞", "Phonetic": "홍^길동"}),
        ("chrX1.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小東"}),
        ("chrX2.dcm", {"Alphabetic": "Wang^XiaoDong", "Ideographic": "王^小东"}),
        ("chrFren.dcm", {"Alphabetic": "Buc^Jérôme"}),
        ("chrGerm.dcm", {"Alphabetic": "Äneas^Rüdiger"}),
        ("chrGreek.dcm", {"Alphabetic": "Διονυσιος"}),
        ("chrArab.dcm", {"Alphabetic": "قباني^لنزار"}),
        ("chrHbrw.dcm", {"Alphabetic": "שרון^דבורה"}),
        ("chrKoreanMulti.dcm", {"Alphabetic": "김희중"}),
    ],
)
def test_person_names_in_every_character_set(name: str, expected: dict[str, str]) -> None:
    element = charset_json(name)["00100010"]
    assert element == {"vr": "PN", "Value": [expected]}


def test_iso2022_multi_valued_and_text() -> None:
    doc = charset_json("chrJapMulti.dcm")
    assert "00080000" not in doc and "00100000" not in doc  # Group Lengths are left out
    assert list(doc) == sorted(doc)
    assert doc["00080005"]["Value"] == [None, "ISO 2022 IR 87"]  # empty first value is null
    assert doc["00101001"]["Value"] == [{"Alphabetic": "やまだ^たろう"}] * 2
    assert doc["001021B0"] == {"vr": "LT", "Value": ["たろう"]}
    assert "Value" not in doc["00104000"]  # empty LT


def test_character_set_of_a_sequence_item() -> None:
    # The item declares its own Specific Character Set (ISO 2022 JIS), the dataset UTF-8.
    item = charset_json("chrSQEncoding.dcm")["00321064"]["Value"][0]
    assert item["00100010"]["Value"] == [
        {"Alphabetic": "ﾔﾏﾀﾞ^ﾀﾛｳ", "Ideographic": "山田^太郎", "Phonetic": "やまだ^たろう"}
    ]
    # Inherited from the dataset (no charset in the item).
    item1 = charset_json("chrSQEncoding1.dcm")["00321064"]["Value"][0]
    assert item1["00100010"]["Value"][0]["Ideographic"] == "山田^太郎"


# -- hand-built datasets ---------------------------------------------------------------------------
LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}


def el(tag: int, vr: str, value: bytes) -> bytes:
    """One explicit VR little endian element."""
    if len(value) % 2:
        value += b"\0" if vr in ("UI", "OB", "UN") else b" "
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr.encode()
    if vr in LONG_VRS:
        return head + struct.pack("<HI", 0, len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def seq(tag: int, items: list[bytes], undefined: bool = False) -> bytes:
    body = b""
    for item in items:
        body += struct.pack("<HHI", 0xFFFE, 0xE000, len(item)) + item
    if undefined:
        body += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
        return struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF) + body
    return el(tag, "SQ", body)


def test_numbers_nan_infinity_and_invalid_values() -> None:
    ds = b"".join([
        el(0x00081160, "IS", b"1.0\\7\\\\abc"),  # Referenced Frame Number: IS, one empty, one invalid
        el(0x00101020, "DS", b" 1.5\\-0\\1e3\\nan"),
        el(0x00189089, "FD", struct.pack("<4d", 1.25, math.nan, math.inf, -math.inf)),
        el(0x00189219, "SS", struct.pack("<2h", -5, 7)),
        el(0x00209156, "US", struct.pack("<H", 65535)),
        el(0x00209157, "UL", struct.pack("<2I", 1, 4000000000)),
        el(0x00209158, "FL", struct.pack("<f", 0.5)),
        el(0x00209165, "AT", struct.pack("<4H", 0x0010, 0x0010, 0x7FE0, 0x0010)),
        el(0x00720082, "SV", struct.pack("<q", -(2**62))),
        el(0x00720083, "UV", struct.pack("<Q", 2**63 + 1)),
        el(0x00100010, "PN", b""),
    ])
    doc = dataset_json(EXPLICIT_LE, ds, PREFIX)
    assert doc["00081160"]["Value"] == [1, 7, None, "abc"]
    assert doc["00101020"]["Value"][:3] == [1.5, -0.0, 1000.0] and doc["00101020"]["Value"][3] == "NaN"
    assert doc["00189089"]["Value"] == [1.25, "NaN", "Infinity", "-Infinity"]
    assert doc["00189219"]["Value"] == [-5, 7]
    assert doc["00209156"]["Value"] == [65535]
    assert doc["00209157"]["Value"] == [1, 4000000000]
    assert doc["00209158"]["Value"] == [0.5]
    assert doc["00209165"]["Value"] == ["00100010", "7FE00010"]
    assert doc["00720082"]["Value"] == [-(2**62)]
    assert doc["00720083"]["Value"] == [2**63 + 1]
    assert doc["00100010"] == {"vr": "PN"}


def test_person_name_groups_and_empty_values() -> None:
    ds = el(0x00101001, "PN", "Doe^John=ドウ^ジョン\\\\=^Ideo=Phon\\Smith".encode())
    doc = dataset_json(EXPLICIT_LE, el(0x00080005, "CS", b"ISO_IR 192") + ds, PREFIX)
    assert doc["00101001"]["Value"] == [
        {"Alphabetic": "Doe^John", "Ideographic": "ドウ^ジョン"},
        None,
        {"Ideographic": "^Ideo", "Phonetic": "Phon"},
        {"Alphabetic": "Smith"},
    ]


def test_bulk_data_paths_and_values() -> None:
    long_text = ("x" * 1500).encode()
    waveform = bytes(range(256)) * 10
    small_ob = b"\x01\x02\x03\x04"
    item0 = el(0x00081150, "UI", b"1.2.3") + el(0x00181074, "DS", b"\\".join([b"1.5"] * 400))
    item1 = el(0x00081150, "UI", b"1.2.4") + el(0x54001010, "OW", waveform)
    ds = b"".join([
        el(0x00080018, "UI", b"1.2.3.4"),
        el(0x00181030, "LO", b"\\".join([b"ProtocolName"] * 150)),  # long, but LO is never bulk
        el(0x00204000, "LT", long_text),
        seq(0x00540016, [item0, item1], undefined=True),
        el(0x00291010, "OB", small_ob),
        el(0x7FE00010, "OW", b"\0\1" * 8),  # tiny pixel data: bulk all the same
    ])
    doc = dataset_json(EXPLICIT_LE, ds, PREFIX)
    bulk = f"{PREFIX}/bulkdata/"
    assert len(doc["00181030"]["Value"]) == 150
    assert doc["00204000"] == {"vr": "LT", "BulkDataURI": bulk + "00204000"}
    items = doc["00540016"]["Value"]
    assert items[0]["00181074"] == {"vr": "DS", "BulkDataURI": bulk + "00540016/0/00181074"}
    assert items[1]["54001010"] == {"vr": "OW", "BulkDataURI": bulk + "00540016/1/54001010"}
    assert items[1]["00081150"]["Value"] == ["1.2.4"]
    assert doc["00291010"] == {"vr": "OB", "InlineBinary": base64.b64encode(small_ob).decode()}
    assert doc["7FE00010"] == {"vr": "OW", "BulkDataURI": bulk + "7FE00010"}
    assert bulk_value(EXPLICIT_LE, ds, "00204000") == long_text
    # 1,599 bytes, padded to even length with a space, as stored
    assert bulk_value(EXPLICIT_LE, ds, "00540016/0/00181074") == b"\\".join([b"1.5"] * 400) + b" "
    assert bulk_value(EXPLICIT_LE, ds, "00540016/1/54001010") == waveform
    assert bulk_value(EXPLICIT_LE, ds, "7FE00010") == b"\0\1" * 8


def test_threshold_is_a_parameter() -> None:
    ds = el(0x00291010, "OB", b"\xab" * 100) + el(0x00204000, "LT", b"y" * 100)
    assert "InlineBinary" in dataset_json(EXPLICIT_LE, ds, PREFIX)["00291010"]
    small = dataset_json(EXPLICIT_LE, ds, PREFIX, threshold=64)
    assert small["00291010"]["BulkDataURI"].endswith("/bulkdata/00291010")
    assert small["00204000"]["BulkDataURI"].endswith("/bulkdata/00204000")


def test_group_0002_and_explicit_un() -> None:
    # A standard tag stored as UN is read with its dictionary VR; a private one stays UN.
    ds = (el(0x00020010, "UI", EXPLICIT_LE.encode()) + el(0x00100020, "UN", b"ID42")
          + el(0x00290010, "LO", b"ACME") + el(0x00291001, "UN", b"\x01\x02"))
    doc = dataset_json(EXPLICIT_LE, ds, PREFIX)
    assert doc == {
        "00100020": {"vr": "LO", "Value": ["ID42"]},
        "00290010": {"vr": "LO", "Value": ["ACME"]},
        "00291001": {"vr": "UN", "InlineBinary": base64.b64encode(b"\x01\x02").decode()},
    }


def test_waveform_sequence_bulk_resolves_to_pydicom_bytes() -> None:
    path = Path(pydicom.data.get_testdata_file("waveform_ecg.dcm"))
    ts, dataset = split(path)
    doc = dataset_json(ts, dataset, PREFIX)
    uri = doc["54000100"]["Value"][1]["54001010"]["BulkDataURI"]
    assert uri == f"{PREFIX}/bulkdata/54000100/1/54001010"
    ref = pydicom.dcmread(path)
    assert bulk_value(ts, dataset, "54000100/1/54001010") == ref.WaveformSequence[1].WaveformData


def test_encapsulated_and_deflated_pixel_data() -> None:
    for name in ("JPEG2000.dcm", "image_dfl.dcm", "MR_small_bigendian.dcm"):
        path = Path(pydicom.data.get_testdata_file(name))
        ts, dataset = split(path)
        ref = pydicom.dcmread(path)
        expected = ref.PixelData
        if ts == BIG_ENDIAN and ref["PixelData"].VR == "OW":
            expected = np.frombuffer(expected, ">u2").astype("<u2").tobytes()
        assert bulk_value(ts, dataset, "7FE00010") == expected, name
        assert dataset_json(ts, dataset, PREFIX)["7FE00010"]["BulkDataURI"] == f"{PREFIX}/bulkdata/7FE00010"


@pytest.mark.parametrize("path", ["", "7FE0001", "7FE00010/0", "00540016/x/00181074", "0054001G",
                                  "00540016/-1/00181074", "00540016//00181074"])
def test_malformed_bulk_paths(path: str) -> None:
    with pytest.raises(RequestError, match="bulk data path"):
        bulk_value(EXPLICIT_LE, el(0x00080018, "UI", b"1.2"), path)


@pytest.mark.parametrize("path", ["00291010", "00540016/0/00181074", "00080018/0/00100010",
                                  "00540016/5/00181074", "00020010"])
def test_absent_bulk_paths(path: str) -> None:
    ds = (el(0x00020010, "UI", b"1.2") + el(0x00080018, "UI", b"1.2")
          + seq(0x00540016, [el(0x00100020, "LO", b"x")]))
    with pytest.raises(NotFoundError) as info:
        bulk_value(EXPLICIT_LE, ds, path)
    assert path in str(info.value)


def test_fast_reader_and_pydicom_walk_agree() -> None:
    """Little endian datasets are read straight from their bytes, the rest through pydicom's
    Dataset: both must give the same JSON wherever the fast reader takes a dataset."""
    from dicomvault.web.dicomweb import json_model

    fast = 0
    for path in readable_files():
        ts, dataset = split(path)
        syntax = json_model._Syntax(ts)
        if not syntax.little:
            continue
        data = json_model._inflated(syntax, dataset)
        try:
            got = json_model._FastReader(PREFIX + "/bulkdata/", THRESHOLD, data, syntax.implicit).top()
        except json_model._Fallback:
            continue
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            walker = json_model._Walker(PREFIX + "/bulkdata/", THRESHOLD, False)
            walked = walker.dataset(json_model._pydicom_dataset(syntax, data), "", top_level=True)
            assert orjson.dumps(got) == orjson.dumps(walked), path
        fast += 1
    assert fast > 100


def implicit_el(tag: int, value: bytes) -> bytes:
    if len(value) % 2:
        value += b" "
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value)) + value


def test_implicit_vr_private_and_ambiguous_elements() -> None:
    ds = b"".join([
        implicit_el(0x00080005, b"ISO_IR 100"),
        implicit_el(0x00100010, "Müller^Jürgen".encode("latin-1")),
        implicit_el(0x00190010, b"GEMS_ACQU_01"),
        implicit_el(0x00191002, struct.pack("<i", -3)),  # SL in pydicom's private dictionary
        implicit_el(0x001910FE, b"\x01\x02"),  # creator known, element not: UN
        implicit_el(0x00211000, b"\x03\x04"),  # no creator: UN
        implicit_el(0x00290010, b"GEMS_ACQU_01"),  # a creator of group 0029 says nothing of 0039
        implicit_el(0x00391002, b"\x05\x06\x07\x08"),
        implicit_el(0x00280103, struct.pack("<H", 1)),  # signed pixels
        implicit_el(0x00280106, struct.pack("<h", -1024)),  # Smallest Image Pixel Value: SS
        implicit_el(0x7FE00010, b"\0\0" * 4),
    ])
    doc = dataset_json("1.2.840.10008.1.2", ds, PREFIX)
    # the same through pydicom's reading (the path big endian and unusual datasets take)
    from dicomvault.web.dicomweb import json_model

    syntax = json_model._Syntax("1.2.840.10008.1.2")
    walked = json_model._Walker(PREFIX + "/bulkdata/", THRESHOLD, False).dataset(
        json_model._pydicom_dataset(syntax, ds), "", top_level=True
    )
    assert orjson.dumps(walked) == orjson.dumps(doc)
    assert doc["00100010"]["Value"] == [{"Alphabetic": "Müller^Jürgen"}]
    assert doc["00190010"] == {"vr": "LO", "Value": ["GEMS_ACQU_01"]}
    assert doc["00191002"] == {"vr": "SL", "Value": [-3]}
    assert doc["001910FE"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"\x01\x02").decode()}
    assert doc["00211000"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"\x03\x04").decode()}
    assert doc["00391002"] == {"vr": "UN", "InlineBinary": base64.b64encode(b"\x05\x06\x07\x08").decode()}
    assert doc["00280106"] == {"vr": "SS", "Value": [-1024]}
    assert doc["7FE00010"] == {"vr": "OW", "BulkDataURI": f"{PREFIX}/bulkdata/7FE00010"}


def undefined_items_seq(tag: int, items: list[bytes], implicit: bool) -> bytes:
    """A sequence and its items all of undefined length."""
    body = b"".join(struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF) + item
                    + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) for item in items)
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    head += struct.pack("<I", 0xFFFFFFFF) if implicit else b"SQ" + struct.pack("<HI", 0, 0xFFFFFFFF)
    return head + body + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)


@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_bulk_values_behind_undefined_length_items(implicit: bool) -> None:
    enc = implicit_el if implicit else (lambda tag, value: el(tag, {0x00081150: "UI", 0x54001010: "OW",
                                                                    0x00204000: "LT"}[tag], value))
    wave0, wave1, text = bytes(range(200)) * 8, bytes(reversed(range(200))) * 8, b"z" * 2000
    inner = undefined_items_seq(0x00081199, [enc(0x00081150, b"1.2.9")], implicit)
    ds = b"".join([
        undefined_items_seq(0x54000100, [inner + enc(0x54001010, wave0), enc(0x54001010, wave1)], implicit),
        enc(0x00204000, text),
    ])
    ts = "1.2.840.10008.1.2" if implicit else EXPLICIT_LE
    doc = dataset_json(ts, ds, PREFIX)
    items = doc["54000100"]["Value"]
    assert items[0]["00081199"]["Value"][0]["00081150"]["Value"] == ["1.2.9"]
    assert items[0]["54001010"]["BulkDataURI"].endswith("/bulkdata/54000100/0/54001010")
    assert items[1]["54001010"]["BulkDataURI"].endswith("/bulkdata/54000100/1/54001010")
    assert bulk_value(ts, ds, "54000100/0/54001010") == wave0
    assert bulk_value(ts, ds, "54000100/1/54001010") == wave1
    assert bulk_value(ts, ds, "00204000") == text
    with pytest.raises(NotFoundError):
        bulk_value(ts, ds, "54000100/2/54001010")
    # and the framing walk found them itself (bulk_value falls back to pydicom when it cannot)
    from dicomvault.web.dicomweb import json_model

    assert json_model._locate(ds, implicit, [0x54000100, "1", 0x54001010], "p") == wave1
    assert json_model._locate(ds, implicit, [0x00204000], "p") == text


def test_non_ascii_bulk_text_is_utf8() -> None:
    text = "Bemerkung: Größe gemessen. " * 60
    ds = el(0x00080005, "CS", b"ISO_IR 100") + el(0x00204000, "LT", text.encode("latin-1"))
    doc = dataset_json(EXPLICIT_LE, ds, PREFIX)
    assert doc["00204000"] == {"vr": "LT", "BulkDataURI": f"{PREFIX}/bulkdata/00204000"}
    assert bulk_value(EXPLICIT_LE, ds, "00204000") == text.rstrip().encode("utf-8")
