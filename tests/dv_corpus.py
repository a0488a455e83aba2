"""The real-image corpus: pydicom-data's clinical images and pydicom's own test files."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pydicom

if TYPE_CHECKING:
    from dicomvault.engine import Engine


def corpus_dirs() -> list[Path]:
    """The real files: pydicom-data's clinical images and pydicom's own test files."""
    import data_store  # the pydicom-data package
    import pydicom.data

    return [
        Path(data_store.__file__).parent / "data",
        Path(pydicom.data.__file__).parent / "test_files",
    ]


def real_file(name: str) -> Path:
    """A real image of the corpus by file name."""
    for d in corpus_dirs():
        if (d / name).is_file():
            return d / name
    raise FileNotFoundError(f"{name} not in the real-image corpus (pydicom-data, pydicom test files)")


def corpus_files() -> list[Path]:
    files: list[Path] = []
    for d in corpus_dirs():
        files.extend(sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".dcm"))
    return files


def charset_files() -> list[Path]:
    """pydicom's character set files (every Specific Character Set it tests)."""
    import pydicom.data

    return sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("*.dcm"))


def archive_corpus(data: Path) -> Iterator[Engine]:
    """An engine at `data` holding every real file it takes: the corpus and the character set
    files (for tests that compare two paths of the same query on real values)."""
    from dicomvault.engine import Engine

    with Engine(data) as eng:
        outcomes = eng.store_files([*corpus_files(), *charset_files()])
        assert sum(not isinstance(o, Exception) for o in outcomes) > 80
        yield eng


def pydicom_reads(path: Path) -> str | None:
    """None if pydicom reads the whole file (every element, nested ones too), else why not."""
    try:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
        return None
    except Exception as exc:  # noqa: BLE001 — any failure means "pydicom cannot read it"
        return f"{type(exc).__name__}: {exc}"


def split_part10(src: Path | str | bytes) -> tuple[str, bytes]:
    """(transfer syntax, dataset bytes without file meta) of a Part-10 file (a path, or its
    bytes): what the engine stores of it and serves back."""
    import io

    from pydicom.filereader import _read_file_meta_info, read_preamble

    data = src if isinstance(src, bytes) else Path(src).read_bytes()
    fp = io.BytesIO(data)
    read_preamble(fp, False)
    meta = _read_file_meta_info(fp)
    return str(meta.TransferSyntaxUID), data[fp.tell():]
