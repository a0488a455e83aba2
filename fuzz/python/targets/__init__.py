"""Coverage-guided fuzz targets of the Python-side parsers of outside input (issue 14, item 6).

Each module here is one target with the same three names:
- `one_input(data: bytes) -> None`: feeds `data` to the parser and returns when the outcome is a
  documented one (a result, or one of the archive's typed errors that map to 4xx/ConfigError);
  anything else escapes as an exception, which is a finding;
- `seeds() -> Iterator[bytes]`: the starting corpus, built from real inputs (pydicom's test files,
  the query strings and configuration files the tests and docs use);
- `setup() -> None` (optional): one-time preparation (a data directory, an app) outside the loop.

Inputs are plain text or bytes with a one-line header, so a seed or a finding can be read (and
edited) by hand. The targets import no fuzzing library: `fuzz/python/run.py` drives them with
atheris (libFuzzer); the tests replay seeds and findings in-process.
"""

from __future__ import annotations

import importlib
from types import ModuleType

TARGETS = ("stow_multipart", "stow_store", "qido_params", "media_types", "http_read", "toml_config",
           "fhir_search")


def load(name: str) -> ModuleType:
    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; one of {', '.join(TARGETS)}")
    return importlib.import_module(f"targets.{name}")
