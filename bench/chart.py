"""The benchmark's picture: per call, llmpool against LangChain's ``with_fallbacks`` and LiteLLM's
Router, as ratios to the bare model measured in the same run.

``python -m bench.run`` draws it beside its results after a full run; this module redraws it
from a results file (needs matplotlib: ``pip install -e ".[bench]"``)::

    python -m bench.chart                     # bench/results.md -> bench/results.svg
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.harness import Row

HERE = Path(__file__).resolve().parent

#: The measures drawn (ratios to the bare model), with their labels on the chart.
MEASURES = {
    "invoke, primary answers": "primary answers",
    "invoke, primary raises at once": "primary raises at once",
    "failover, ChatOpenAI at a closed port": "ChatOpenAI at a closed port",
    "concurrent ainvoke": "1,000 concurrent ainvoke",
}

#: The subjects drawn, by the start of their name, with their labels and colours.
SUBJECTS = {
    "llmpool FallbackChatModel, the row's": ("llmpool, a client as a pool builds it", "#1b4f72"),
    "llmpool FallbackChatModel": ("llmpool", "#2a7ab0"),
    "llmpool, breaker open": ("llmpool, breaker open", "#8cc2e6"),
    "LangChain with_fallbacks": ("LangChain with_fallbacks", "#e0a030"),
    "LiteLLM Router": ("LiteLLM Router", "#b04a4a"),
}


def read(markdown: str) -> list[Row]:
    """Return the rows of a results table (``bench/results.md``) that carry a ratio."""
    rows = []
    for line in markdown.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) != 6 or not cells[3].endswith("x"):
            continue
        try:
            ratio = float(cells[3][:-1])
        except ValueError:
            continue
        rows.append(Row(cells[0], cells[1], cells[2], ratio, cells[4], cells[5]))
    return rows


def _label(measure: str) -> str | None:
    return next((label for key, label in MEASURES.items() if key in measure), None)


def _subject(subject: str) -> tuple[str, str] | None:
    return next((drawn for key, drawn in SUBJECTS.items() if subject.startswith(key)), None)


def draw(rows: list[Row], path: Path, note: str = "") -> Path:
    """Draw the ratios of ``rows`` as grouped bars (log scale) into ``path`` (SVG or PNG)."""
    try:
        import matplotlib
    except ImportError as error:
        msg = 'the chart needs matplotlib: pip install -e ".[bench]"'
        raise SystemExit(msg) from error
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.fonttype"] = "none"  # text stays text: smaller, searchable, selectable

    measures = [m for m in dict.fromkeys(_label(r.measure) for r in rows) if m is not None]
    subjects = list(dict.fromkeys(s for r in rows if (s := _subject(r.subject)) is not None))
    ratio = {
        (_label(r.measure), drawn[0]): r.ratio
        for r in rows
        if (drawn := _subject(r.subject)) is not None and r.ratio is not None
    }
    figure, axes = plt.subplots(figsize=(9, 1.1 + 1.1 * len(measures)))
    height = 0.8 / max(1, len(subjects))
    for index, (name, colour) in enumerate(subjects):
        ys, xs = [], []
        for position, measure in enumerate(measures):
            value = ratio.get((measure, name))
            if value is not None:
                ys.append(position + (index - (len(subjects) - 1) / 2) * height)
                xs.append(value)
        bars = axes.barh(ys, xs, height=height * 0.9, color=colour, label=name)
        axes.bar_label(bars, labels=[f"{x:.2f}x" for x in xs], padding=3, fontsize=8)
    axes.set_xscale("log")
    axes.axvline(1.0, color="#555555", linewidth=0.8)
    axes.set_yticks(range(len(measures)), measures)
    axes.invert_yaxis()
    axes.set_xlabel("time per call, as a multiple of the bare model's (log scale; lower is better)")
    axes.set_title(
        "Per-call cost against the bare fake model, one run" + (f" ({note})" if note else "")
    )
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)
    return path


def main(argv: list[str] | None = None) -> int:
    """Redraw the chart from a results file."""
    parser = argparse.ArgumentParser(prog="python -m bench.chart")
    parser.add_argument("--input", default=str(HERE / "results.md"))
    parser.add_argument("--output", default=str(HERE / "results.svg"))
    args = parser.parse_args(argv)
    text = Path(args.input).read_text("utf-8")
    date = next((line[8:] for line in text.splitlines() if line.startswith("- date: ")), "")
    print(draw(read(text), Path(args.output), date))
    return 0


if __name__ == "__main__":
    sys.exit(main())
