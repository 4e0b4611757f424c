"""The benchmark's chart is drawn from its results: each subject's ratio, per measure."""

from __future__ import annotations

from pathlib import Path

from bench.chart import MEASURES, draw, read

ROOT = Path(__file__).resolve().parents[1]

TABLE = """
| measure | subject | median | ratio | target | |
|---|---|---|---|---|---|
| invoke, primary answers (x bare) | bare fake model | 200.2 µs (p95 349.7) | 1.00x |  |  |
| invoke, primary answers (x bare) | llmpool FallbackChatModel | 207.5 µs | 1.04x | ≤ 1.10x | pass |
| invoke, primary answers (x bare) | LiteLLM Router (mock_response) | 5303.2 µs | 26.49x |  |  |
| import time (net of interpreter start) | import llmpool | 12 ms |  | ≤ 250 ms | pass |
"""


def test_read_keeps_the_rows_with_a_ratio() -> None:
    """Rows without a ratio (import times) and the header are left out."""
    rows = read(TABLE)
    assert [(r.subject, r.ratio) for r in rows] == [
        ("bare fake model", 1.0),
        ("llmpool FallbackChatModel", 1.04),
        ("LiteLLM Router (mock_response)", 26.49),
    ]


def test_the_committed_results_draw_every_subject(tmp_path: Path) -> None:
    """bench/results.md draws llmpool, LangChain and LiteLLM bars with their ratios as text."""
    text = (ROOT / "bench" / "results.md").read_text("utf-8")
    svg = draw(read(text), tmp_path / "results.svg").read_text("utf-8")
    for label in ("llmpool", "LangChain with_fallbacks", "LiteLLM Router", "primary answers"):
        assert label in svg
    drawn = [r for r in read(text) if any(measure in r.measure for measure in MEASURES)]
    ratios = {f"{r.ratio:.2f}x" for r in drawn if "llmpool FallbackChatModel" in r.subject}
    assert ratios and all(ratio in svg for ratio in ratios)
