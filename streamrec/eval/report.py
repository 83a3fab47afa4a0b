"""Evaluation output: a terminal table, a JSON document and a PNG of rolling hit rate."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from streamrec.eval.prequential import ModelReport, rolling_hit_rate


def summarise(reports: Mapping[str, ModelReport], k: int, **parameters: Any) -> dict[str, Any]:
    """The JSON document of one evaluation: parameters plus every model's figures."""
    return {"k": k, **parameters,
            "models": {name: report.as_dict(k) for name, report in reports.items()}}


def print_table(console: Console, summary: Mapping[str, Any]) -> None:
    """One row per model: overall, new and returning users, coverage, speed."""
    k = summary["k"]
    table = Table(title=f"prequential evaluation @ {k} ({summary.get('dataset', 'stream')})")
    for column in ("model", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "HR new", "HR returning",
                   "coverage", "events/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, figures in summary["models"].items():
        table.add_row(
            name, f"{figures[f'hr@{k}']:.4f}", f"{figures[f'ndcg@{k}']:.4f}",
            f"{figures[f'mrr@{k}']:.4f}", f"{figures['new_users']['hr']:.4f}",
            f"{figures['returning_users']['hr']:.4f}", f"{figures['coverage']:.3f}",
            f"{figures['events_per_s']:,.0f}")
    console.print(table)


def write_json(path: Path, summary: Mapping[str, Any]) -> None:
    """Write the summary as indented JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")


def write_plot(path: Path, reports: Mapping[str, ModelReport], k: int, window: int = 2000) -> None:
    """PNG of each model's hit rate over a sliding window of evaluated events."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(9, 4.5))
    for name, report in reports.items():
        axes.plot(rolling_hit_rate(report.rolling_hits, window), label=name, linewidth=1.2)
    axes.set_xlabel("evaluated event")
    axes.set_ylabel(f"HR@{k} (rolling, {window} events)")
    axes.legend()
    axes.grid(alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
