"""Every benchmark under bench/ runs small (``--quick``) and prints its figures: what
``make bench QUICK=1`` runs. No timing is asserted (the machine is shared); each script must
exit 0 and print the figure lines bench/run_all.py collects, the peers' ratios included."""

from __future__ import annotations

import math

import pytest

from bench.run_all import BENCHMARKS, run

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
        "memory.node_rss_per_million",
    },
}


def test_every_benchmark_is_checked() -> None:
    assert set(EXPECTED) == set(BENCHMARKS)


@pytest.mark.e2e
@pytest.mark.timeout(900)
@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_quick_and_prints_its_figures(name: str) -> None:
    outcome = run(name, quick=True)
    assert outcome.returncode == 0, f"bench/{name}.py --quick exited {outcome.returncode}"
    printed = {figure.name: figure.value for figure in outcome.figures}
    missing = EXPECTED[name] - set(printed)
    assert not missing, f"bench/{name}.py --quick printed no {sorted(missing)}"
    assert all(math.isfinite(value) for value in printed.values()), printed
