"""The figure lines that bench/run_all.py collects from every benchmark's output."""

from __future__ import annotations

import pytest

from bench.common import Figure, figure, parse_figures, percentile, slug


def test_a_printed_figure_is_parsed_back(capsys: pytest.CaptureFixture[str]) -> None:
    figure("write.ratio.per_s", 0.58664, "x")
    figure("count", 3)
    out = capsys.readouterr().out
    assert parse_figures("noise\n" + out + "FIGURE not a figure\n") == [
        Figure("write.ratio.per_s", 0.58664, "x"),
        Figure("count", 3.0, ""),
    ]


def test_a_figure_name_is_one_word() -> None:
    with pytest.raises(ValueError, match="one word"):
        figure("two words", 1.0)


def test_slug_makes_a_name_of_a_label() -> None:
    assert slug("generated at 1,000,000") == "generated_at_1_000_000"
    assert slug("  Batch-signed, batches of 1,000 ") == "batch_signed_batches_of_1_000"


def test_percentile() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 50) == pytest.approx(50.5)
    assert percentile([7.0], 99) == 7.0
