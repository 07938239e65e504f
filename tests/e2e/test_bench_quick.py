"""Every benchmark under bench/ runs small and prints its figures: ``make bench QUICK=1``
(``bench/run_all.py --quick``) runs once, as a user would run it, and each benchmark's outcome
is checked. No timing is asserted (the machine is shared); each benchmark must exit 0 and print
the figure lines run_all.py collects, the peers' ratios included."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bench.run_all import BENCHMARKS, ROOT

#: Figures each benchmark must print (each prints more).
EXPECTED = {
    "chain_bench": {"inclusion.generated_at_100_000", "memory.per_million_leaves"},
    "scale_bench": {"1e3.inclusion_gen", "1e4.inclusion_verify", "1e4.memory_per_million"},
    "pymerkle_bench": {
        "build.ratio",
        "inclusion_gen.ratio",
        "inclusion_verify.ratio",
        "consistency_gen.ratio",
        "consistency_verify.ratio",
    },
    "sequencer_bench": {"single_signed.per_s"},
    "auth_bench": {"mtls_authz_per_s"},
    "grpc_floor_bench": {"threads.p99_ms", "asyncio.p99_ms", "threads.server_cpu_per_call_ms"},
    "stream_bench": {"streams_held", "server_kib_per_stream", "unary_p99_ratio"},
    "mirror_bench": {
        "mirror.tiles.ratio",
        "mirror.bundles.ratio",
        "mirror.verified_reads.per_s",
    },
    "chain_e2e_bench": {"sealed_per_s", "seal_p99_ms"},
    "anchor_bench": {"sealed_per_s", "seal_p99_ms"},
    "consent_bench": {"answers_per_s", "p99_ms"},
    "audit_bench": {"read_model_per_s"},
    "immudb_bench": {
        "write.ours.per_s",
        "write.immudb.per_s",
        "write.ratio.per_s",
        "write.ratio.p50_ms",
        "write.ratio.p99_ms",
        "read.ours.per_s",
        "read.immudb.per_s",
        "read.ratio.per_s",
        "read.ratio.p99_ms",
        "read.mirror.per_s",
        "read.mirror.requests_per_op",
        "read.mirror_ratio.per_s",
        "read.mirror_uncached.per_s",
        "read.mirror_uncached_ratio.per_s",
        "memory.node_rss_per_million",
    },
}


def test_every_benchmark_is_checked() -> None:
    assert set(EXPECTED) == set(BENCHMARKS)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Each benchmark's outcome in one ``run_all.py --quick``, by name."""
    outcomes = tmp_path_factory.mktemp("bench") / "quick.json"
    ran = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run_all.py"), "--quick", "--json", str(outcomes)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    sys.stdout.write(ran.stdout[-20_000:])  # shown with a failing test
    assert Path(outcomes).exists(), f"run_all.py --quick exited {ran.returncode}: {ran.stderr}"
    return {outcome["name"]: outcome for outcome in json.loads(outcomes.read_text())}


@pytest.mark.e2e
@pytest.mark.timeout(1300)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_quick_and_prints_its_figures(
    name: str, quick_run: dict[str, dict[str, Any]]
) -> None:
    outcome = quick_run[name]
    assert outcome["returncode"] == 0, f"bench/{name}.py --quick exited {outcome['returncode']}"
    printed = {figure["name"]: figure["value"] for figure in outcome["figures"]}
    missing = EXPECTED[name] - set(printed)
    assert not missing, f"bench/{name}.py --quick printed no {sorted(missing)}"
    assert all(math.isfinite(value) for value in printed.values()), printed
