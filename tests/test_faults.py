"""Every injected fault (docs/faults/faults.py) still applies to the code: a change that moves a
fault's code must move the fault with it, or the fault would silently test nothing."""

import importlib.util
import sys
from pathlib import Path

import pytest

FAULTS = Path(__file__).resolve().parents[1] / "docs" / "faults" / "faults.py"


@pytest.mark.skipif(not FAULTS.exists(), reason="needs the source tree")
def test_every_fault_applies_to_the_code():
    spec = importlib.util.spec_from_file_location("faults", FAULTS)
    faults = importlib.util.module_from_spec(spec)
    sys.modules["faults"] = faults  # dataclasses look their module up there
    spec.loader.exec_module(faults)
    assert len(faults.FAULTS) == len(faults.BY_NAME) >= 19
    assert faults.misplaced() == []
