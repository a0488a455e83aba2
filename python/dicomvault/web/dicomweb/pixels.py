"""Frames out of a stored object (WADO-RS /frames, rendering) without decoding more than needed.

The engine keeps the dataset bytes as received (no file meta). Finding frame n needs the header up to
Pixel Data and, for encapsulated syntaxes, the item boundaries; `FrameLayout` is that knowledge, kept
in an LRU keyed by blob hash so frame 300 of a 500-frame object is a read and a slice afterwards.
"""

from __future__ import annotations

import io
import struct
import threading
from collections import OrderedDict
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.pixels import get_decoder

from ...errors import MalformedError, NotAcceptableError, NotFoundError, RequestError
from ...transfer import syntaxes
from ...transfer.syntaxes import inflate

PIXEL_TAGS = (0x7FE00008, 0x7FE00009, 0x7FE00010)  # Float, Double Float, Pixel Data
_ITEM = 0xFFFEE000
_SEQ_DELIM = 0xFFFEE0DD
_LONG_VRS = {b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"}
# Start-of-codestream markers, used to group fragments into frames when no offset table says how.
_FRAME_STARTS = (b"\xff\xd8", b"\xff\x4f\xff\x51", b"\x00\x00\x00\x0cjP  ")


@dataclass(frozen=True)
class FrameLayout:
    """What is needed to slice any frame again: header attributes and byte ranges."""

    transfer_syntax: str
    dataset_len: int
    header: Dataset  # the elements before Pixel Data; treat as read-only (shared through the cache)
    pixel_tag: int
    number_of_frames: int
    rows: int
    columns: int
    samples_per_pixel: int
    bits_allocated: int
    bits_stored: int
    pixel_representation: int
    planar_configuration: int
    photometric_interpretation: str
    # Native: (offset, length) of the Pixel Data value. Encapsulated: per frame, its fragments.
    pixel_vr: str
    value_offset: int
    value_length: int
    frame_fragments: tuple[tuple[tuple[int, int], ...], ...] = ()

    @property
    def encapsulated(self) -> bool:
        return bool(self.frame_fragments)

    @property
    def subsampled(self) -> bool:
        """Native YBR_FULL_422: two samples per pixel on the wire (Y Y Cb Cr per pixel pair)."""
        return self.photometric_interpretation == "YBR_FULL_422" and not self.encapsulated

    @property
    def frame_bits(self) -> int:
        samples = 2 if self.subsampled else self.samples_per_pixel
        return self.rows * self.columns * samples * self.bits_allocated


class FrameIndexCache:
    """LRU of FrameLayout by blob hash (any bytes key); thread-safe, routes run in a thread pool."""

    def __init__(self, capacity: int = 512) -> None:
        self.capacity = capacity
        self._items: OrderedDict[bytes, FrameLayout] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: bytes) -> FrameLayout | None:
        with self._lock:
            layout = self._items.get(key)
            if layout is None:
                self.misses += 1
                return None
            self._items.move_to_end(key)
            self.hits += 1
            return layout

    def put(self, key: bytes, layout: FrameLayout) -> None:
        with self._lock:
            self._items[key] = layout
            self._items.move_to_end(key)
            while len(self._items) > self.capacity:
                self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()


DEFAULT_CACHE = FrameIndexCache()


def read_header(transfer_syntax: str, dataset: bytes) -> tuple[Dataset, int]:
    """(elements before the pixel data, offset of the pixel data element or len(dataset)).

    `dataset` must already be inflated for the Deflated syntax."""
    ts = syntaxes.lookup(transfer_syntax)
    fp = io.BytesIO(dataset)
    try:
        header = read_dataset(
            fp,
            ts.implicit_vr,
            ts.little_endian,
            stop_when=lambda tag, vr, length: int(tag) in PIXEL_TAGS,
        )
    except (ValueError, EOFError, struct.error, NotImplementedError) as exc:
        raise MalformedError(f"dataset header does not parse ({transfer_syntax}): {exc}") from exc
    return header, fp.tell()


def _element_header(buf: memoryview, pos: int, ts: syntaxes.TransferSyntax) -> tuple[int, int, int, bytes]:
    """(tag, value length, value offset, VR or b"" when implicit) of the element at pos."""
    end = "<" if ts.little_endian else ">"
    if len(buf) < pos + 8:
        raise MalformedError(f"pixel data element header truncated at offset {pos}")
    group, elem = struct.unpack_from(end + "HH", buf, pos)
    tag = group << 16 | elem
    if ts.implicit_vr:
        (length,) = struct.unpack_from(end + "I", buf, pos + 4)
        return tag, length, pos + 8, b""
    vr = bytes(buf[pos + 4 : pos + 6])
    if vr in _LONG_VRS:
        (length,) = struct.unpack_from(end + "I", buf, pos + 8)
        return tag, length, pos + 12, vr
    (length,) = struct.unpack_from(end + "H", buf, pos + 6)
    return tag, length, pos + 8, vr


def _fragments(buf: memoryview, start: int) -> tuple[tuple[int, int], list[tuple[int, int]], int]:
    """Walks an encapsulated value from its first item: ((offset, length) of the Basic Offset
    Table value, every fragment's (value offset, length), offset of the first fragment's item tag).
    A missing Sequence Delimitation Item at the end of the dataset is tolerated, as pydicom does."""
    pos = start
    items: list[tuple[int, int]] = []
    n = len(buf)
    while pos + 8 <= n:
        tag_g, tag_e, length = struct.unpack_from("<HHI", buf, pos)
        tag = tag_g << 16 | tag_e
        if tag == _SEQ_DELIM:
            break
        if tag != _ITEM:
            raise MalformedError(
                f"expected an item tag in encapsulated pixel data at offset {pos}, "
                f"found ({tag_g:04X},{tag_e:04X})"
            )
        if pos + 8 + length > n:
            raise MalformedError(f"encapsulated pixel data item at offset {pos} runs past the end")
        items.append((pos + 8, length))
        pos += 8 + length
    if not items:
        raise MalformedError("encapsulated pixel data has no Basic Offset Table item")
    bot = items[0]
    first_item_tag = bot[0] + bot[1]
    return bot, items[1:], first_item_tag


def _group_fragments(
    buf: memoryview,
    header: Dataset,
    ts: syntaxes.TransferSyntax,
    value_offset: int,
    nframes: int,
) -> tuple[tuple[tuple[int, int], ...], ...]:
    """Per frame, the (offset, length) of its fragments: Extended Offset Table, else Basic Offset
    Table, else fragment boundaries (one per frame, all in one frame, or by codestream start)."""
    bot, frags, base = _fragments(buf, value_offset)
    if not frags:
        raise MalformedError("encapsulated pixel data has no fragments")
    if ts.video:
        return (tuple(frags),)
    by_offset = {off - 8 - base: i for i, (off, _) in enumerate(frags)}
    eot = header.get("ExtendedOffsetTable")
    starts: list[int] | None = None
    if eot:
        offsets = np.frombuffer(bytes(eot), dtype="<u8").tolist()
        starts = [by_offset.get(o, -1) for o in offsets]
    elif bot[1]:
        offsets = np.frombuffer(bytes(buf[bot[0] : bot[0] + bot[1]]), dtype="<u4").tolist()
        starts = [by_offset.get(o, -1) for o in offsets]
    if starts is not None and (len(starts) != nframes or -1 in starts or starts != sorted(starts)):
        # A table that contradicts the fragments (some writers get it wrong): ignore it.
        starts = None
    if starts is None:
        starts = _starts_without_table(buf, frags, nframes)
    bounds = [*starts, len(frags)]
    return tuple(tuple(frags[bounds[i] : bounds[i + 1]]) for i in range(nframes))


def _starts_without_table(buf: memoryview, frags: list[tuple[int, int]], nframes: int) -> list[int]:
    """First fragment of each frame when no usable offset table says: one fragment per frame, all
    fragments in the only frame, else the fragments that begin a JPEG/J2K codestream."""
    if len(frags) == nframes:
        return list(range(nframes))
    if nframes == 1:
        return [0]
    starts = [
        i
        for i, (off, _) in enumerate(frags)
        if any(bytes(buf[off : off + len(m)]) == m for m in _FRAME_STARTS)
    ]
    if len(starts) != nframes or starts[0] != 0:
        raise MalformedError(
            f"{len(frags)} fragments cannot be split into {nframes} frames without an offset table"
        )
    return starts


def _int(header: Dataset, keyword: str, default: int) -> int:
    value = header.get(keyword)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise MalformedError(f"{keyword} is not a number: {value!r}") from exc


def build_layout(transfer_syntax: str, dataset: bytes) -> FrameLayout:
    """Parses the header up to Pixel Data and locates every frame (no pixel is decoded)."""
    ts = syntaxes.lookup(transfer_syntax)
    raw = inflate(dataset) if ts.deflated else dataset
    header, pos = read_header(transfer_syntax, raw)
    buf = memoryview(raw)
    if pos >= len(buf):
        sop = header.get("SOPInstanceUID", "?")
        raise NotFoundError(f"instance {sop} has no pixel data")
    tag, length, value_offset, vr = _element_header(buf, pos, ts)
    nframes = max(_int(header, "NumberOfFrames", 1), 1)
    common = dict(
        transfer_syntax=transfer_syntax,
        dataset_len=len(dataset),
        header=header,
        pixel_tag=tag,
        number_of_frames=nframes,
        rows=_int(header, "Rows", 0),
        columns=_int(header, "Columns", 0),
        samples_per_pixel=_int(header, "SamplesPerPixel", 1),
        bits_allocated=_int(
            header, "BitsAllocated", 32 if tag == 0x7FE00008 else 64 if tag == 0x7FE00009 else 8
        ),
        bits_stored=_int(header, "BitsStored", _int(header, "BitsAllocated", 8)),
        pixel_representation=_int(header, "PixelRepresentation", 0),
        planar_configuration=_int(header, "PlanarConfiguration", 0),
        pixel_vr=vr.decode("ascii", "replace"),
        photometric_interpretation=str(header.get("PhotometricInterpretation", "MONOCHROME2")).strip(),
    )
    if length == 0xFFFFFFFF:
        if not ts.encapsulated:
            raise MalformedError(f"undefined-length pixel data in native syntax {transfer_syntax}")
        frames = _group_fragments(buf, header, ts, value_offset, nframes)
        return FrameLayout(value_offset=value_offset, value_length=-1, frame_fragments=frames, **common)  # type: ignore[arg-type]
    if ts.encapsulated:
        raise MalformedError(f"defined-length pixel data in encapsulated syntax {transfer_syntax}")
    if value_offset + length > len(buf):
        raise MalformedError(
            f"pixel data runs past the end of the dataset ({value_offset + length} > {len(buf)})"
        )
    layout = FrameLayout(value_offset=value_offset, value_length=length, **common)  # type: ignore[arg-type]
    if layout.frame_bits == 0:
        raise MalformedError("Rows, Columns or BitsAllocated is zero")
    need = (layout.frame_bits * nframes + 7) // 8
    if need > length:
        raise MalformedError(f"pixel data holds {length} bytes, {nframes} frames need {need}")
    return layout


class FrameSource:
    """One stored object's frames; cheap to build again from the cache for the same blob."""

    def __init__(self, layout: FrameLayout, dataset: bytes) -> None:
        if layout.dataset_len != len(dataset):
            raise ValueError(f"layout is for {layout.dataset_len} bytes, dataset has {len(dataset)}")
        self.layout = layout
        ts = syntaxes.lookup(layout.transfer_syntax)
        self._ts = ts
        # Deflated is rare; inflating again is cheaper than caching inflated copies.
        self._buf = memoryview(inflate(dataset) if ts.deflated else dataset)

    @classmethod
    def from_dataset(
        cls,
        transfer_syntax: str,
        dataset: bytes,
        *,
        key: bytes | None = None,
        cache: FrameIndexCache | None = DEFAULT_CACHE,
    ) -> FrameSource:
        """key: the blob hash (anything naming these exact bytes); None bypasses the cache."""
        layout = cache.get(key) if (cache is not None and key is not None) else None
        if layout is None or layout.dataset_len != len(dataset) or layout.transfer_syntax != transfer_syntax:
            layout = build_layout(transfer_syntax, dataset)
            if cache is not None and key is not None:
                cache.put(key, layout)
        return cls(layout, dataset)

    # -- attributes ---------------------------------------------------------------------------------
    @property
    def header(self) -> Dataset:
        return self.layout.header

    @property
    def number_of_frames(self) -> int:
        return self.layout.number_of_frames

    @property
    def rows(self) -> int:
        return self.layout.rows

    @property
    def columns(self) -> int:
        return self.layout.columns

    @property
    def bits_allocated(self) -> int:
        return self.layout.bits_allocated

    @property
    def samples_per_pixel(self) -> int:
        return self.layout.samples_per_pixel

    @property
    def transfer_syntax(self) -> str:
        return self.layout.transfer_syntax

    @property
    def frame_transfer_syntax(self) -> str:
        """The syntax frame(n)'s bytes are in: explicit VR little endian for every native one
        (big endian is swapped), the stored syntax for encapsulated ones."""
        if self._ts.encapsulated:
            return self.layout.transfer_syntax
        return syntaxes.EXPLICIT_VR_LITTLE_ENDIAN

    @property
    def frame_media_type(self) -> str:
        return self._ts.media_type

    # -- frames --------------------------------------------------------------------------------------
    def _check(self, n: int) -> None:
        if self._ts.video:
            raise NotAcceptableError(
                f"frames of {self._ts.name} objects are one video stream and "
                f"cannot be retrieved one by one (frame {n})"
            )
        if not 1 <= n <= self.layout.number_of_frames:
            raise RequestError(
                f"frame {n} out of range: the object has {self.layout.number_of_frames} "
                "frame(s), numbered from 1"
            )

    def frame(self, n: int) -> bytes:
        """Frame n (1-based): native little-endian bytes, or the compressed frame as stored."""
        self._check(n)
        lay = self.layout
        if lay.encapsulated:
            return b"".join(self._buf[o : o + ln] for o, ln in lay.frame_fragments[n - 1])
        bits = lay.frame_bits
        if lay.bits_allocated == 1:
            return self._bit_frame(n, bits)
        size = bits // 8
        start = lay.value_offset + (n - 1) * size
        if self._ts.little_endian:
            return bytes(self._buf[start : start + size])
        # Big endian swaps per word: the sample size, or 2 bytes for 8-bit samples in OW, as
        # pydicom does. An 8-bit OW frame may start mid-word, so swap the whole words around it.
        width = lay.bits_allocated // 8 if lay.bits_allocated > 8 else 2 if lay.pixel_vr == "OW" else 1
        if width == 1:
            return bytes(self._buf[start : start + size])
        lo = lay.value_offset + (start - lay.value_offset) // width * width
        hi = min(lo + (start + size - lo + width - 1) // width * width, lay.value_offset + lay.value_length)
        words = np.frombuffer(self._buf[lo:hi], dtype=f">u{width}", count=(hi - lo) // width)
        swapped = words.astype(f"<u{width}").tobytes()
        return swapped[start - lo : start - lo + size]

    def _bit_frame(self, n: int, bits: int) -> bytes:
        # 1-bit frames need not start on a byte boundary (PS3.5 8.1.1): re-pack from bit 0.
        first = (n - 1) * bits
        start = self.layout.value_offset + first // 8
        end = self.layout.value_offset + (first + bits + 7) // 8
        chunk = self._buf[start:end]
        shift = first % 8
        if shift == 0:
            out = bytearray(chunk)
            if bits % 8:
                out[-1] &= (1 << (bits % 8)) - 1
            return bytes(out)
        unpacked = np.unpackbits(np.frombuffer(chunk, dtype=np.uint8), bitorder="little")
        return np.packbits(unpacked[shift : shift + bits], bitorder="little").tobytes()

    def pixel_data(self) -> bytes:
        """The whole pixel data value: native bytes as stored, or the fragments joined (video)."""
        lay = self.layout
        if lay.encapsulated:
            return b"".join(self._buf[o : o + ln] for frame in lay.frame_fragments for o, ln in frame)
        return bytes(self._buf[lay.value_offset : lay.value_offset + lay.value_length])

    # -- decoding ------------------------------------------------------------------------------------
    def decode(self, n: int, *, as_rgb: bool = True) -> tuple[np.ndarray, str]:
        """(frame n as an array (rows, cols[, samples]), its photometric interpretation after
        decoding: a JPEG/J2K decoder may already have converted YBR to RGB)."""
        lay = self.layout
        frame = self.frame(n)
        if not lay.encapsulated:
            return _native_array(lay, frame), lay.photometric_interpretation
        if len(frame) % 2:
            frame += b"\0"
        wrapped = struct.pack("<IIII", _ITEM_LE, 0, _ITEM_LE, len(frame)) + frame
        try:
            arr, meta = get_decoder(lay.transfer_syntax).as_array(
                wrapped,
                rows=lay.rows,
                columns=lay.columns,
                samples_per_pixel=lay.samples_per_pixel,
                bits_allocated=lay.bits_allocated,
                bits_stored=lay.bits_stored,
                pixel_representation=lay.pixel_representation,
                photometric_interpretation=lay.photometric_interpretation,
                planar_configuration=lay.planar_configuration,
                number_of_frames=1,
                as_rgb=as_rgb,
            )
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            raise NotAcceptableError(
                f"frame {n} of {lay.transfer_syntax} cannot be decoded here: {exc}"
            ) from exc
        return arr, str(meta.get("photometric_interpretation", lay.photometric_interpretation))


_ITEM_LE = 0xE000FFFE  # (FFFE,E000) as one little-endian uint32


def _native_array(lay: FrameLayout, frame: bytes) -> np.ndarray:
    rows, cols, spp = lay.rows, lay.columns, lay.samples_per_pixel
    if lay.bits_allocated == 1:
        bits = np.unpackbits(np.frombuffer(frame, dtype=np.uint8), bitorder="little")
        arr = bits[: rows * cols * spp]
    elif lay.pixel_tag == 0x7FE00008:
        arr = np.frombuffer(frame, dtype="<f4")
    elif lay.pixel_tag == 0x7FE00009:
        arr = np.frombuffer(frame, dtype="<f8")
    else:
        kind = "i" if lay.pixel_representation else "u"
        arr = np.frombuffer(frame, dtype=f"<{kind}{lay.bits_allocated // 8}")
        if lay.pixel_representation and lay.bits_stored < lay.bits_allocated:
            # Sign-extend from BitsStored so e.g. 12-bit signed values come out right.
            shift = lay.bits_allocated - lay.bits_stored
            arr = (arr << shift) >> shift
    if lay.subsampled:
        # Y1 Y2 Cb Cr per horizontal pixel pair (PS3.3 C.7.6.3.1.2): repeat chroma to full size.
        pairs = arr.reshape(rows, cols // 2, 4)
        out = np.empty((rows, cols // 2, 2, 3), dtype=arr.dtype)
        out[:, :, 0, 0] = pairs[:, :, 0]
        out[:, :, 1, 0] = pairs[:, :, 1]
        out[:, :, :, 1] = pairs[:, :, 2, None]
        out[:, :, :, 2] = pairs[:, :, 3, None]
        return out.reshape(rows, cols, 3)
    if spp == 1:
        return arr.reshape(rows, cols)
    if lay.planar_configuration == 1:
        return arr.reshape(spp, rows, cols).transpose(1, 2, 0)
    return arr.reshape(rows, cols, spp)


def decoded_frame(
    transfer_syntax: str, dataset: bytes, n: int, *, key: bytes | None = None, as_rgb: bool = True
) -> np.ndarray:
    """Frame n decoded to an array (rows, cols[, samples]); YCbCr JPEG/J2K come out RGB."""
    return FrameSource.from_dataset(transfer_syntax, dataset, key=key).decode(n, as_rgb=as_rgb)[0]


def native_frame_bytes(transfer_syntax: str, dataset: bytes, n: int, *, key: bytes | None = None) -> bytes:
    """Frame n as explicit VR little endian native bytes (decoded if compressed), for a client that
    accepts only application/octet-stream. Decoded colour frames are interleaved and YBR JPEG/J2K
    ones come out RGB, as after transcoding the object to explicit little endian."""
    src = FrameSource.from_dataset(transfer_syntax, dataset, key=key)
    if not src.layout.encapsulated:
        # As stored (big endian swapped): the object's own Planar Configuration still applies.
        return src.frame(n)
    arr = src.decode(n)[0]
    return np.ascontiguousarray(arr, dtype=arr.dtype.newbyteorder("<")).tobytes()
