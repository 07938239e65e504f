"""The checked-in generated code under protos/ matches what the protos generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_generated_code_is_fresh() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "devstack.protogen", "--check"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, (
        "generated protobuf code is stale; run `python -m devstack.protogen` and check in the "
        f"result:\n{result.stderr}{result.stdout}"
    )
