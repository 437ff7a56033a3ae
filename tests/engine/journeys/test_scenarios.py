"""Every scenario file in `scenarios/` played through the engine: the commands it produced
must be exactly the ones the file expects, in order."""

from __future__ import annotations

from pathlib import Path

import pytest
from runner import SCENARIOS, render, run_scenario

FILES = sorted(SCENARIOS.glob("*.yaml"))


@pytest.mark.parametrize("path", FILES, ids=[path.stem for path in FILES])
def test_scenario(path: Path) -> None:
    actual, expected = run_scenario(path)
    assert actual == expected, f"\nexpected:\n{render(expected)}\ngot:\n{render(actual)}"
