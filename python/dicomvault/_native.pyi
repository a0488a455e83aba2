"""Typed stubs of the native extension (rust/src): the names, parameters and types Python code sees."""

import builtins
from collections.abc import Callable
from os import PathLike
from types import ModuleType
from typing import Any, Literal

__all__ = [
    "__version__",
    "DicomVaultError",
    "NotDicomError",
    "MalformedError",
    "MissingAttributeError",
    "UnsupportedError",
    "CodecError",
    "IntegrityError",
    "NotFoundError",
    "StorageFullError",
    "CorruptError",
    "LockedError",
    "StoreIOError",
    "Vault",
    "PduReader",
    "ReceivedDataSet",
    "DecodedObject",
    "IdentifierPlan",
    "InstanceColumns",
    "StudyColumns",
    "sending_fields",
    "PendingFrames",
    "encode_response",
    "frame_message",
    "send_message",
    "parse",
    "parse_dataset",
    "blake3",
    "encode",
    "decode",
    "recode",
    "CODEC_RAW",
    "CODEC_HOT",
    "CODEC_COLD",
    "_kernels",
]

__version__: str
CODEC_RAW: int
CODEC_HOT: int
CODEC_COLD: int
# The Cython pixel kernels, also importable as `dicomvault._kernels` (untyped here).
_kernels: ModuleType

# errors.rs: core errors as Python exceptions.

class DicomVaultError(Exception):
    """Base of every dicomvault error."""

class NotDicomError(DicomVaultError):
    """The input is not DICOM."""

class MalformedError(DicomVaultError):
    """Broken DICOM framing."""

class MissingAttributeError(MalformedError):
    """A required attribute (Study/Series/SOP Instance UID) is missing."""

class UnsupportedError(DicomVaultError):
    """Valid DICOM this build cannot keep."""

class CodecError(DicomVaultError):
    """A stored payload failed to decode."""

class IntegrityError(DicomVaultError):
    """Bytes do not hash to their address."""

class NotFoundError(DicomVaultError):
    """No blob with that hash."""

class StorageFullError(DicomVaultError):
    """The device is full."""

class CorruptError(DicomVaultError):
    """On-disk structure is damaged."""

class LockedError(DicomVaultError):
    """Held by another writer, or read-only."""

class StoreIOError(DicomVaultError):
    """An I/O error, with the path."""

# vault.rs. Per-item results hold the exception instead of raising it. The dict of a stored
# object (convert.rs landed_to_py): hash, transfer_syntax, ts_inferred, prefix,
# index_attrs ({keyword: str} decoded natively, core/src/attrtext.rs, or None when the character
# set is left to Python), attrs [(tag, VR, value bytes)] (only when index_attrs is None),
# logical_len, stored_len, codec, existed. attributes.index_attrs reads either.

class Vault:
    def __init__(
        self,
        root: str | PathLike[str],
        *,
        read_only: bool = False,
        sync: bool = True,
        level: int = 1,
        volume_size: int = 1073741824,
        min_free_bytes: int = 0,
        tiers: list[tuple[str, str | PathLike[str]]] | None = None,
        ingest_codec: int = 1,
        reserve_fraction: float = 0.0,
        reserve_max_bytes: int | None = None,
        verify_reads: str = "checksum",
    ) -> None:
        """Every write leaves `reserve_fraction` of the filesystem free, at least
        `min_free_bytes`, at most `reserve_max_bytes` (default: `min_free_bytes`).
        `verify_reads`: "checksum" or "hash", how reads check what they decode
        (storage/read_check.py)."""
    def ingest_files(self, paths: list[str | PathLike[str]]) -> list[dict[str, Any] | DicomVaultError]: ...
    def ingest_buffers(self, buffers: list[bytes]) -> list[dict[str, Any] | DicomVaultError]:
        """Like ingest_files for Part-10 files (or bare datasets) already in memory."""
    def ingest_dataset(self, dataset: bytes, transfer_syntax: str) -> dict[str, Any]:
        """One dataset received with a known transfer syntax (DIMSE, STOW). Raises on rejection."""
    def ingest_received(self, received: ReceivedDataSet, transfer_syntax: str) -> dict[str, Any]: ...
    def read(self, hash: bytes) -> tuple[str, bytes]:
        """(transfer syntax UID, dataset bytes) of a blob, decoded and checked (`verify_reads`)."""
    def read_decoded(self, hash: bytes) -> tuple[str, DecodedObject]:
        """read(), the data set left in the native buffer it was decoded into (send_message
        sends it without a copy)."""
    def export_files(
        self, items: list[tuple[bytes, bytes, str | PathLike[str]]]
    ) -> list[DicomVaultError | None]: ...
    def prefetch(self, hashes: list[bytes]) -> None:
        """Starts the disk reads of these blobs in the background; returns at once."""
    def read_stored(self, hash: bytes) -> tuple[int, int, bytes]: ...
    def put_stored(
        self, items: list[tuple[bytes, int, int, bytes]], tier: int | None = None
    ) -> list[bool | DicomVaultError]: ...
    def delete(self, hashes: list[bytes]) -> int:
        """Deletes blobs from every tier (durably, one sync per volume touched); how many copies."""
    def tier_names(self) -> list[str]:
        """The local tiers' names, fastest first."""
    def copy_between(
        self, hashes: list[bytes], source: int, dest: int, codec: int, level: int | None = None
    ) -> list[tuple[int, int] | DicomVaultError]: ...
    def delete_in(self, tier: int, hashes: list[bytes]) -> int:
        """Frees the copies local tier `tier` holds of `hashes` (one sync per volume); how many."""
    def tier_hashes(self, tier: int) -> list[bytes]:
        """Live hashes of one local tier, in on-disk order."""
    def tier_stats(self) -> list[tuple[str, dict[str, int]]]:
        """Per local tier, in order: (name, statistics dict)."""
    def holders(self, hash: bytes) -> list[int]:
        """Indices of the local tiers holding a copy of `hash`."""
    def contains(self, hash: bytes) -> bool: ...
    def hashes(self) -> list[bytes]:
        """Every live blob hash, in on-disk order."""
    # {checked, ok, bytes, damaged: [(hash, reason)]}
    def verify(self) -> dict[str, Any]: ...
    # {volumes_compacted, records_moved, bytes_reclaimed, errors: [str]}
    def compact(self, threshold: float) -> dict[str, Any]: ...
    def stats(self) -> dict[str, int]: ...
    def refresh(self) -> None:
        """Read-only vaults: pick up what the writer appended since open."""
    def close(self) -> None:
        """Releases the store (and the writer lock). Idempotent."""

# net.rs: the association byte path for dimse/fastpath.py.

class PduReader:
    def __init__(
        self, fd: int, max_pdu: int, fast: dict[int, list[int]], any_status: list[int] = ...,
        max_data_set: int = ...,
    ) -> None: ...
    # Outputs: ("pdu", bytes) | ("msg", context_id, command_field, message_id, sop_class_uid,
    # sop_instance_uid, ReceivedDataSet | bytes | None, message_id_being_responded_to,
    # status | None, move_destination) | ("oversize", context_id, command_field, message_id,
    # sop_class_uid, sop_instance_uid, bytes received) | ("error", why).
    def next(
        self, wake_fd: int | None, timeout: float
    ) -> tuple[list[tuple[Any, ...]], Literal["ready", "timeout", "woken", "closed"], str | None]: ...
    def set_quickack(self, on: bool) -> None:
        """Acknowledge every read at once (TCP_QUICKACK), for associations on which we send data."""
    def buffered(self) -> int:
        """Bytes received that do not make a whole PDU yet."""

class ReceivedDataSet:
    def __init__(self, data: builtins.bytes) -> None:
        """A copy of `data` (tests, and callers with bytes in hand)."""
    def __len__(self) -> int: ...
    def bytes(self) -> builtins.bytes:
        """The data set bytes (a copy); b"" once ingested."""

class DecodedObject:
    def __len__(self) -> int: ...
    def bytes(self) -> builtins.bytes:
        """The data set bytes (a copy)."""

class IdentifierPlan:
    def __init__(self, keys: list[tuple[bytes, bool, int]]) -> None: ...
    def encode(self, prefix: bytes, values: list[str | bytes]) -> bytes:
        """`prefix` then one element per key, from `values` (one per key, in order)."""

class PendingFrames:
    def __init__(
        self,
        elements: list[tuple[bytes, bool, int, int | None, str, bool]],
        columns: int,
        ascii_prefix: bytes | None,
        utf8_prefix: bytes,
        context_id: int,
        command: bytes,
        max_pdu: int,
    ) -> None:
        """`elements`: per identifier element in tag order (tag/VR bytes, 4-byte length, padding
        byte, index column or None, text when the column's is empty or the constant, written
        empty); the Specific Character Set elements of all-ASCII and of other identifiers; the
        framing of each pending response (dimse/find.py IdentifierEncoder.pending_frames)."""
    def frame(self, rows: list[list[str]]) -> bytes:
        """The P-DATA-TF PDUs of one pending response per row (its column texts), in order."""

class InstanceColumns:
    def __init__(self, columns: list[tuple[str | None, str | None, bool, bool]]) -> None:
        """`columns`: (record field, attrs keyword, series'/study's value first, integer field as
        text) per column of an IMAGE-level query."""
    def rows(
        self,
        raws: list[bytes | None],
        uppers: dict[tuple[str, str], list[str | None]],
        fill: Callable[[list[tuple[str, str]]], None],
    ) -> list[list[str] | None | bool]:
        """Per record: None (no record), False (read it in Python) or the column texts; `fill`
        adds the (study UID, series UID) pairs `uppers` lacks."""

class StudyColumns:
    def __init__(self, columns: list[tuple[str, str]]) -> None:
        """`columns`: (source, name) per column of a STUDY-level query; source "text" or
        "count" (a study record field), "keys" (a map field of counts), "attr" (an attribute)."""
    def rows(self, raws: list[bytes | None]) -> list[list[str] | None | bool]:
        """Per record: None (no record), False (read it in Python) or the column texts."""

def sending_fields(raws: list[bytes | None]) -> list[tuple[bytes, str, str, str] | None | bool]:
    """Per instance record: None (no record), False (read it in Python) or (blob hash, transfer
    syntax, SOP Class UID, Study Instance UID), an absent field empty."""

def encode_response(
    context_id: int,
    command_field: int,
    message_id: int,
    sop_class_uid: str,
    sop_instance_uid: str,
    status: int,
    error_comment: str | None,
    max_pdu: int,
) -> bytes: ...
def frame_message(context_id: int, command: bytes, data_set: bytes | None, max_pdu: int) -> bytes: ...
def send_message(
    fd: int,
    prefix: bytes,
    context_id: int,
    command: bytes,
    data_set: bytes | DecodedObject,
    max_pdu: int,
    timeout: float | None = None,
) -> None: ...

# retrieve.rs: a batch of C-GET/C-MOVE sub-operations, each item (blob hash, stored transfer
# syntax, context id, SOP Class UID, SOP Instance UID); rsp = (fd, context id, command field, SOP
# Class UID, message id, max PDU) of the pending responses. Returns (items done, stop ("end",
# "load", "send", "await", "respond"), last message id, status, outs, closed, requestor outs,
# requestor closed, error, unsent, remaining, completed).
def retrieve_batch(
    vault: Vault,
    fd: int,
    reader: PduReader,
    items: list[tuple[bytes, str, int, str, str]],
    max_pdu: int,
    send_timeout: float | None,
    originator: tuple[str, int] | None,
    rsp: tuple[int, int, int, str, int, int],
    same_association: bool,
    requestor: PduReader | None,
    message_id: int,
    counts: tuple[int, int, int, int],
    unsent: bytes,
    wait: float,
    pending_interval: float,
    since_pending: float | None,
    stored: list[tuple[int, bytes, int]] | None = None,
    loaders: int = 1,
) -> tuple[int, str, int, int | None, list[tuple[Any, ...]], str | None, list[tuple[Any, ...]], str | None,
           str | None, bytes, tuple[int, int, float | None]]: ...

# primitives.rs. parse dicts (convert.rs parsed_to_py): dataset_offset, transfer_syntax,
# ts_inferred, meta and attrs [(tag, VR, value bytes)], index_attrs ({keyword: str} or None,
# as for Vault's ingest results), pixel (dict or None).

def parse(data: bytes) -> dict[str, Any]:
    """Parses a Part-10 file or bare dataset; returns the index attributes and pixel location."""

def parse_dataset(data: bytes, transfer_syntax: str) -> dict[str, Any]:
    """Parses a dataset with a known transfer syntax."""

def blake3(data: bytes) -> bytes:
    """BLAKE3 digest (32 bytes)."""

def encode(data: bytes, level: int = 1, codec: int = 1) -> tuple[int, bytes, int]: ...
def decode(codec_id: int, stored: bytes, logical_len: int) -> bytes:
    """Inverse of the codec part of `encode`: the canonical bytes (transfer syntax, NUL, dataset)."""

def recode(
    codec_id: int, stored: bytes, logical_len: int, target: int, level: int = 1
) -> tuple[int, bytes]: ...
def cold_encode_version(logical: bytes, version: int) -> bytes:
    """The cold codec's stream of canonical bytes in an older format version (2 to 6), for tests."""

def decode_read(
    codec_id: int, stored: bytes, logical_len: int, hash: bytes, verify_reads: str
) -> tuple[str, DecodedObject]:
    """Stored bytes decoded into a native buffer and checked as `verify_reads` ("checksum" or
    "hash", storage/read_check.py) says, off the GIL: (transfer syntax UID, data set);
    IntegrityError if they decode to other bytes than `hash` addresses, CodecError if they do
    not decode or not to the checksum stored with them."""
