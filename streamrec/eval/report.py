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
    """One row per model: overall, new and returning users, coverage, diversity, speed."""
    k = summary["k"]
    table = Table(title=f"prequential evaluation @ {k} ({summary.get('dataset', 'stream')})")
    for column in ("model", f"HR@{k}", f"NDCG@{k}", f"MRR@{k}", "HR new", "HR returning",
                   "HR new items", "coverage", "diversity", "events/s"):
        table.add_column(column, justify="left" if column == "model" else "right")
    for name, figures in summary["models"].items():
        table.add_row(
            name, f"{figures[f'hr@{k}']:.4f}", f"{figures[f'ndcg@{k}']:.4f}",
            f"{figures[f'mrr@{k}']:.4f}", f"{figures['new_users']['hr']:.4f}",
            f"{figures['returning_users']['hr']:.4f}", f"{figures['new_items']['hr']:.4f}",
            f"{figures['coverage']:.3f}",
            "-" if figures.get("diversity") is None else f"{figures['diversity']:.3f}",
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


def live_agreement(offline: ModelReport, live: ModelReport, k: int) -> dict[str, Any]:
    """Returning users' figures offline and live, and the live/offline relative difference."""
    rows: dict[str, Any] = {}
    off, on = offline.returning_users.as_dict(), live.returning_users.as_dict()
    for metric in ("hr", "ndcg", "mrr"):
        relative = (on[metric] - off[metric]) / off[metric] if off[metric] else float("nan")
        rows[f"{metric}@{k}"] = {"offline": off[metric], "live": on[metric], "relative_difference": relative}
    rows["events"] = {"offline": off["events"], "live": on["events"]}
    return rows


def print_arms_table(console: Console, arms: Mapping[str, Mapping[str, float]], k: int) -> None:
    """HR@k and NDCG@k of the lists each A/B arm was shown, with the events behind each figure."""
    table = Table(title=f"A/B arms, live (returning users; the list after a user's event against their next)")
    for column in ("arm", "events", f"HR@{k}", f"NDCG@{k}"):
        table.add_column(column, justify="left" if column == "arm" else "right")
    for name, figures in arms.items():
        table.add_row(name, f"{figures['events']:,}", f"{figures['hr']:.4f}", f"{figures['ndcg']:.4f}")
    console.print(table)


def print_live_table(console: Console, agreement: Mapping[str, Any], title: str) -> None:
    """Offline against live, for returning users."""
    table = Table(title=title)
    for column in ("returning users", "offline", "live", "live vs offline"):
        table.add_column(column, justify="left" if column == "returning users" else "right")
    for metric, row in agreement.items():
        if metric == "events":
            table.add_row("events scored", f"{row['offline']:,}", f"{row['live']:,}", "")
        else:
            table.add_row(metric.upper(), f"{row['offline']:.4f}", f"{row['live']:.4f}",
                          f"{row['relative_difference']:+.1%}")
    console.print(table)
