"""The ``bench e2e`` report: results.json, PNG plots and a markdown page that embeds them."""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

# Each target's colour in the plots, and how a legend names it.
_TARGETS = {"relay": ("tab:gray", "grey: model-free relay"), "streamrec": ("tab:blue", "blue: streamrec"),
            "streamrec+snapshot": ("tab:green", "green: serving a sequence snapshot"),
            "streamrec+trainer": ("tab:orange", "orange: with the trainer running")}
_COLOURS = {target: colour for target, (colour, _) in _TARGETS.items()}
_LINE_STYLES = ["-", "--", ":", "-.", (0, (5, 1)), (0, (1, 1))]  # told apart in one colour


def _pairs(steps: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(relay, streamrec) per rate, in the order run."""
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for step in steps:
        if step.get("phase", "fixed") != "fixed":
            continue
        by_rate.setdefault(step["rate"], {})[step["target"]] = step
    return [(pair["relay"], pair["streamrec"]) for pair in by_rate.values() if {"relay", "streamrec"} <= pair.keys()]


def _save(fig: plt.Figure, axes: list[plt.Axes], path: Path, legend_outside: plt.Axes | None = None) -> None:
    """Grid and legend on each of ``axes`` (``legend_outside``'s right of it, off a filled plot), then save."""
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if ax is legend_outside else {}))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot_cdf(steps: list[dict[str, Any]], path: Path) -> None:
    # The fixed rates only: each gets its own line style (the rate search's steps are in vs_rate.png).
    steps = [step for step in steps if step.get("phase", "fixed") != "search"]
    fig, ax = plt.subplots(figsize=(8, 4.5))
    rates = sorted({step["rate"] for step in steps})
    styles = dict(zip(rates, _LINE_STYLES, strict=False))
    for step in steps:
        latencies = np.sort(np.array(step["latencies_ms"]))
        if latencies.size:
            ax.plot(latencies, np.arange(1, latencies.size + 1) / latencies.size, color=_COLOURS[step["target"]],
                    linestyle=styles.get(step["rate"], "-"), label=f"{step['target']} {step['rate']:,.0f}/s")
    ax.set_xscale("log")
    ax.set_xlabel("event → recommendation latency (ms, log scale)")
    ax.set_ylabel("share of events")
    keys = [key for target, (_, key) in _TARGETS.items() if any(step["target"] == target for step in steps)]
    ax.set_title(f"Latency CDF per fixed rate ({', '.join(keys[:2])}" + (f",\n{', '.join(keys[2:])})" if keys[2:] else ")"))
    _save(fig, [ax], path)


def _plot_vs_rate(steps: list[dict[str, Any]], path: Path) -> None:
    # Lines through each rate's median: a rate run more than once (--repeat, the searches)
    # draws one point, and its runs show as faint markers around it.
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    repeated = any(len(runs) > 1 for runs in _runs_by_rate(steps).values())
    for target in _COLOURS:
        mine = [step for step in steps if step["target"] == target]
        if not mine:  # not run (the trainer without --trainer): no empty legend entry
            continue
        colour, median = _COLOURS[target], " (median per rate)" if repeated else ""
        for ax, key, style, label in ((left, "latency_p50_ms", "o-", f"{target} p50{median}"),
                                      (left, "latency_p99_ms", "s--", f"{target} p99{median}"),
                                      (right, "achieved_output_rate", "o-", f"{target}{median}")):
            rates, values = _medians_by_rate(mine, key)
            ax.plot(rates, values, style, color=colour, label=label)
            if repeated:
                ax.plot([step["rate"] for step in mine], [step[key] for step in mine], style[0], color=colour,
                        alpha=0.3, markersize=4)
    top = max((step["rate"] for step in steps), default=1)
    right.plot([0, top], [0, top], ":", color="black", label="offered rate")
    runs = "; faint: each run" if repeated else ""
    left.set(xlabel="offered events/s", ylabel="latency (ms)", title=f"Latency vs rate{runs}", yscale="log")
    right.set(xlabel="offered events/s", ylabel="recommendations/s", title=f"Throughput vs rate{runs}")
    _save(fig, [left, right], path)


def _runs_by_rate(steps: list[dict[str, Any]]) -> dict[tuple[str, float], list[dict[str, Any]]]:
    """The steps of each (target, rate), in the order run."""
    runs: dict[tuple[str, float], list[dict[str, Any]]] = {}
    for step in steps:
        runs.setdefault((step["target"], step["rate"]), []).append(step)
    return runs


def _medians_by_rate(steps: list[dict[str, Any]], key: str) -> tuple[list[float], list[float]]:
    """The rates of one target's ``steps``, ascending, and the median of ``key`` over each rate's runs."""
    runs = {rate: group for (_, rate), group in _runs_by_rate(steps).items()}
    rates = sorted(runs)
    return rates, [float(np.median([step[key] for step in runs[rate]])) for rate in rates]


def _plot_timeline(steps: list[dict[str, Any]], path: Path) -> None:
    fig, (lag, rss) = plt.subplots(1, 2, figsize=(10, 4))
    for step in steps:
        timeline = step["timeline"]
        t = [s["t_s"] for s in timeline]
        style = dict(color=_COLOURS[step["target"]], alpha=0.5 + 0.5 * (step["rate"] == max(s["rate"] for s in steps)))
        lag.plot(t, [s["lag"] for s in timeline], label=f"{step['target']} {step['rate']:,.0f}/s", **style)
        rss.plot(t, [s["rss_mb"] for s in timeline], label=f"{step['target']} {step['rate']:,.0f}/s", **style)
    lag.set(xlabel="seconds into the step", ylabel="events sent, not yet answered", title="Lag over time")
    rss.set(xlabel="seconds into the step", ylabel="RSS of the worker processes (MB)", title="Memory over time")
    _save(fig, [lag, rss], path)


_TOTAL = "worker CPU"


def _per_second(step: dict[str, Any]) -> list[dict[str, Any]]:
    """The step's samples that say where the worker's time per event went in that second."""
    return [sample for sample in step["timeline"] if "stage_us" in sample]


def _plot_stages(steps: list[dict[str, Any]], path: Path) -> bool:
    """Worker CPU per event over each streamrec step, and by stage over the highest fixed rate's
    streamrec step; False (no file) when no step has per-second stages (the relay has none)."""
    timed = [step for step in steps if _per_second(step)]
    if not timed:
        return False
    fixed = [step for step in timed if step.get("phase", "fixed") != "search"] or timed
    widest = max(fixed, key=lambda step: step["rate"])
    fig, (total, stages) = plt.subplots(1, 2, figsize=(13, 4.5))
    for step, style in zip(timed, itertools.cycle(_LINE_STYLES)):
        seconds = _per_second(step)
        total.plot([s["t_s"] for s in seconds], [s["stage_us"][_TOTAL] for s in seconds], linestyle=style,
                   color=_COLOURS[step["target"]], alpha=0.5 + 0.5 * (step is widest),
                   label=f"{step['target']} {step['rate']:,.0f}/s" + (f" ({step['phase']})" if step.get("phase") == "search" else ""))
    seconds = _per_second(widest)
    names = [name for name in seconds[0]["stage_us"] if name != _TOTAL]
    stages.stackplot([s["t_s"] for s in seconds], *[[max(s["stage_us"].get(name, 0.0), 0.0) for s in seconds]
                                                   for name in names], labels=names, alpha=0.85)
    total.set(xlabel="seconds into the step", ylabel="worker CPU per applied event (µs)", ylim=(0, None),
              title="Worker CPU per event, second by second")
    stages.set(xlabel="seconds into the step", ylabel="µs per applied event",
               title=f"By stage: {widest['target']} at {widest['rate']:,.0f}/s")
    _save(fig, [total, stages], path, legend_outside=stages)
    return True


def _freshness(step: dict[str, Any]) -> str:
    if "freshness_p50_ms_at_most" not in step:
        return "n/a"
    return f"≤ {step['freshness_p50_ms_at_most']:g} / ≤ {step['freshness_p99_ms_at_most']:g}"


def _soak_steps(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [step for step in steps if step.get("phase") == "soak"]


def _plot_soak(steps: list[dict[str, Any]], path: Path) -> None:
    fig, (latency, rss) = plt.subplots(1, 2, figsize=(10, 4))
    for step in steps:
        windows, timeline = _full_windows(step["windows"]), step["timeline"]
        colour = _COLOURS[step["target"]]
        latency.plot([w["t_s"] / 60 for w in windows], [w["p99_ms"] for w in windows], "-", color=colour,
                     label=f"{step['target']} p99")
        latency.plot([w["t_s"] / 60 for w in windows], [w["p50_ms"] for w in windows], ":", color=colour,
                     label=f"{step['target']} p50")
        rss.plot([s["t_s"] / 60 for s in timeline], [s["rss_mb"] for s in timeline], color=colour,
                 label=f"{step['target']} ({step.get('rss_slope_mb_per_min', float('nan')):+.2f} MB/min after warm-up)")
    latency.set(xlabel="minutes into the soak", ylabel="latency (ms)", yscale="log",
                title="Latency per window (the relay shows the broker's own drift)")
    rss.set(xlabel="minutes into the soak", ylabel="worker RSS (MB)", title="Worker memory over the soak")
    _save(fig, [latency, rss], path)


def _full_windows(windows: list[dict[str, float]]) -> list[dict[str, float]]:
    """The windows with at least half the busiest one's answers: not the step's last, which holds
    only the few answers that arrived after the load stopped."""
    busiest = max((window["answered"] for window in windows), default=0)
    return [window for window in windows if window["answered"] >= busiest / 2]

def _soak_lines(steps: list[dict[str, Any]], window_s: float) -> list[str]:
    if not steps:
        return []
    lines = ["", f"## Soak: {steps[0]['rate']:,.0f} events/s for {steps[0]['elapsed_s'] / 60:.1f} minutes per target",
             "", "Users keep arriving (uniform over the configured population), so per-user state grows the whole "
             "time unless it is bounded. The warm-up viewed every item once first, so the item catalogue (bounded "
             "by the item count) was full before the soak began. The RSS slope is a least-squares fit after the "
             "first third of the soak. "
             f"Latency per {window_s:g} s window in the plot below.", "",
             "| target | distinct users | answered | first / last full window p99 ms | RSS after warm-up → end MB "
             "| RSS slope MB/min |", "|---|---|---|---|---|---|"]
    for step in steps:
        windows = _full_windows(step["windows"]) or [{"p99_ms": float("nan")}]
        lines.append(f"| {step['target']} | {step['distinct_users']:,} | {step['received']:,}/{step['valid_sent']:,} "
                     f"| {windows[0]['p99_ms']} / {windows[-1]['p99_ms']} "
                     f"| {step.get('rss_mb_after_warmup', '')} → {step.get('rss_mb_end', '')} "
                     f"| {step.get('rss_slope_mb_per_min', '')} |")
    return [*lines, *_memory_lines(steps), "", "![soak](soak.png)"]


def _memory_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Where the worker's memory went between the end of warm-up and the end of the soak."""
    lines = []
    for step in steps:
        start, end = step.get("memory_mb_after_warmup", {}), step.get("memory_mb_end", {})
        if end:
            lines += ["", f"Parts of {step['target']}'s memory after warm-up → end (MB; `streamrec_memory_bytes`: "
                      "RocksDB's own figures, and the C heap's bytes in use and held free, which RocksDB, "
                      "FAISS, numpy and Python objects over 512 bytes share; smaller Python objects live outside it; "
                      "and RSS split into anonymous memory and pages of mapped files such as libraries' code):", "",
                      "| " + " | ".join(end) + " |", "|" + "---|" * len(end),
                      "| " + " | ".join(f"{start.get(part, '')} → {value}" for part, value in end.items()) + " |"]
            pairs = step.get("catalog_neighbours_after_warmup", 0), step.get("catalog_neighbours_end", 0)
            if pairs[1]:
                lines += ["", f"Co-visit entries in the item replica (`streamrec_catalog_neighbours`): "
                          f"{pairs[0]:,} → {pairs[1]:,}. Items learn which items are chosen with them the whole "
                          "time; each list is bounded (2 × `model.max_neighbours`), and the replica's memory "
                          "grows with their total until the lists are full."]
    return lines


_LATENCY = "Latency: the event's send time to the moment the benchmark read its recommendation (same clock)."
_LATENCY_PARTS = (
    "Of which to the output record: the event's send time to the timestamp the worker's producer gave its "
    "output record (the relay's copy, streamrec's list); the rest is that record's way through the broker "
    "to the reader. Event age: how long events had waited when the worker started on them "
    "(`streamrec_event_age_seconds`, bucket bounds).")


def _intro(config: dict[str, Any], soak: bool) -> str:
    """What was run: the targets, the workload and, for fixed rates, the latency terms of the table."""
    targets = ("the **relay** (a Faust app that forwards each event, no model: the floor Kafka and Faust "
               f"impose) and **streamrec** ({config['workers']} worker{'s' if config['workers'] > 1 else ''})")
    workload = (f"{config['users']:,} users, {config['items']:,} items (Zipf), one invalid event in "
                f"{config['invalid_every']}")
    fill = config.get("covisit_fill", 0)
    filled = (f" and {fill} random views per item, each user viewing a run of them (every item's co-visit "
              "list filled to its bound and pruned)") if fill else ""
    if soak:
        return (f"One long step per target on fresh topics through one broker: {targets}. Each step: "
                f"{config['warmup_events']:,} warm-up events after one view of every item{filled}, then "
                f"{config['soak_minutes']:g} minutes at the offered rate; {workload}. {_LATENCY}")
    warm = f" after one view of every item{filled}" if fill else ""
    return (f"Every rate ran each target on fresh topics of the same size through one broker: {targets}. "
            f"Each step: {config['warmup_events']:,} warm-up events{warm}, then {config['duration_s']:g} s at the "
            f"offered rate; {workload}. {_LATENCY} {_LATENCY_PARTS}")


def _rate_table(result: dict[str, Any]) -> list[str]:
    """The fixed-rate steps side by side, relay against streamrec, and the highest sustained rates."""
    lines = [
        "",
        "| events/s | relay p50 / p99 ms | streamrec p50 / p99 ms "
        "| of which to the output record p50 / p99 ms (relay; streamrec) | event age p50 / p99 ms "
        "| added p50 / p99 ms | streamrec p95 / max ms "
        "| answered | dead-lettered | output/s (relay, streamrec) | max lag | CPU % workers, broker, bench | RSS MB "
        "| item freshness p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for relay, mine in _pairs(result["steps"]):
        lines.append(
            f"| {mine['rate']:,.0f} | {relay['latency_p50_ms']} / {relay['latency_p99_ms']} "
            f"| {mine['latency_p50_ms']} / {mine['latency_p99_ms']} "
            f"| {relay.get('record_p50_ms', 'n/a')} / {relay.get('record_p99_ms', 'n/a')}; "
            f"{mine.get('record_p50_ms', 'n/a')} / {mine.get('record_p99_ms', 'n/a')} "
            f"| ≤ {mine.get('event_age_p50_ms_at_most', 'n/a')} / ≤ {mine.get('event_age_p99_ms_at_most', 'n/a')} "
            f"| {mine['latency_p50_ms'] - relay['latency_p50_ms']:+.1f} / {mine['latency_p99_ms'] - relay['latency_p99_ms']:+.1f} "
            f"| {mine['latency_p95_ms']} / {mine['latency_max_ms']} "
            f"| {mine['received']:,}/{mine['valid_sent']:,} | {mine['dead_lettered']}/{mine['invalid_sent']} "
            f"| {relay['achieved_output_rate']:,.0f}, {mine['achieved_output_rate']:,.0f} | {mine['lag_max']:,} "
            f"| {mine['cpu_percent_mean']}, {mine['broker_cpu_percent_mean']}, {mine['bench_cpu_percent_mean']} "
            f"| {mine['rss_mb_max']} | {_freshness(mine)} |")
    return lines + _maxima_lines(result)


def _maxima_lines(result: dict[str, Any]) -> list[str]:
    """The highest sustained rates and their ratio; with repeated searches, the median and each search's."""
    lines: list[str] = []
    maxima = result.get("max_sustained") or {}
    if maxima:
        searches = result.get("max_sustained_runs") or {}
        repeated = max((len(found) for found in searches.values()), default=1) > 1
        lines += ["", "Highest sustained rate (every event answered, backlog never above one second of events), "
                  "searched upwards in x1.5 steps" + (
                      f", {len(searches['relay'])} times, the targets' searches taking turns (median, then each "
                      "search's)" if repeated else "") + ": " + ", ".join(
                      (f"{target} {rate:,.0f} events/s" if rate else f"{target}: none")
                      + (f" ({', '.join(_rate(found) for found in searches[target])})" if repeated else "")
                      for target, rate in maxima.items())
                  + (f" (streamrec / relay = {maxima['streamrec'] / maxima['relay']:.2f})"
                     if maxima.get("relay") and maxima.get("streamrec") else "") + "."]
    return lines


def _rate(rate: float | None) -> str:
    """A rate as the report prints it."""
    return "none" if rate is None else f"{rate:,.0f}"


def _markdown(result: dict[str, Any]) -> str:
    config = result["config"]
    soak = bool(_soak_steps(result["steps"]))
    lines = ["# streamrec end-to-end benchmark", "", _intro(config, soak)]
    if not soak:
        lines += _rate_table(result)
    lines += _trainer_lines(result["steps"])
    lines += _runs_lines(result["steps"])
    lines += _soak_lines(_soak_steps(result["steps"]), config.get("window_s", 30.0))
    lines += _stage_table(result["steps"])
    lines += [
        "",
        "CPU %: means over the streamrec step of the worker processes, the broker (when embedded) and "
        "this benchmark's own producer and reader, which all share the machine (100 = one core). "
        "RSS: the worker processes' peak.",
    ]
    if not soak:
        lines += ["Item freshness: from an item owner's write of an item's new state to that state searchable "
                  "in a worker's index, as the bucket bounds of `streamrec_item_freshness_seconds` the "
                  "percentiles fall under.", "", "![latency CDF](latency_cdf.png)", "",
                  "![latency and throughput vs rate](vs_rate.png)"]
    lines += ["", "![lag and memory over time](timeline.png)", ""]
    if result.get("stages_plot"):
        lines += ["Second by second: the workers' CPU per event they applied in that second, and where the time "
                  "went in the streamrec step at the highest fixed rate (the stages are wall time, so a worker "
                  "waiting for a core counts there too). A stage that grows through the step is what a worker "
                  "falling behind mid-step spends more on.", "", "![worker time per event over the step](stages.png)",
                  ""]
    lines += [f"Logs: `{result['logs']}` (on the machine that ran it). Raw figures: `results.json`.", ""]
    return "\n".join(lines)


def _trainer_lines(steps: list[dict[str, Any]]) -> list[str]:
    """streamrec alone against streamrec serving a sequence-model snapshot (trainer stopped), and
    serving it with the trainer running beside it, per rate."""
    by_rate: dict[float, dict[str, dict[str, Any]]] = {}
    for step in steps:
        if step.get("phase", "fixed") == "fixed":
            by_rate.setdefault(step["rate"], {})[step["target"]] = step
    runs = [(pair["streamrec"], pair.get("streamrec+snapshot"), pair["streamrec+trainer"]) for pair in by_rate.values()
            if "streamrec" in pair and "streamrec+trainer" in pair]
    if not runs:
        return []
    lines = ["", "With the sequence model: **streamrec+snapshot** serves the trainer's first snapshot with the "
             "trainer stopped (what the sequence model's queries cost); **streamrec+trainer** serves it while "
             "`streamrec trainer` fine-tunes beside the worker on the same machine and the worker swaps in "
             "each new snapshot. Every list fuses the snapshot's scores.", "",
             "| events/s | streamrec p50 / p99 ms | serving a snapshot p50 / p99 ms | with trainer p50 / p99 ms "
             "| added by the queries p50 / p99 ms | added by the trainer p50 / p99 ms | added in all p50 / p99 ms "
             "| answered | worker CPU % |", "|---|---|---|---|---|---|---|---|---|"]
    for alone, serving, trained in runs:
        cells = [f"{alone['rate']:,.0f}", _p50_p99(alone), _p50_p99(serving) if serving else "",
                 _p50_p99(trained), _added(alone, serving) if serving else "",
                 _added(serving, trained) if serving else "", _added(alone, trained),
                 f"{trained['received']:,}/{trained['valid_sent']:,}",
                 " → ".join(str(step["cpu_percent_mean"]) for step in (alone, serving, trained) if step)]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _p50_p99(step: dict[str, Any]) -> str:
    return f"{step['latency_p50_ms']} / {step['latency_p99_ms']}"


def _added(before: dict[str, Any], after: dict[str, Any]) -> str:
    return (f"{after['latency_p50_ms'] - before['latency_p50_ms']:+.1f} / "
            f"{after['latency_p99_ms'] - before['latency_p99_ms']:+.1f}")


def _stage_table(steps: list[dict[str, Any]]) -> list[str]:
    """Where a worker's CPU goes, in µs per answered event, per step."""
    names: list[str] = []
    for step in steps:
        names += [name for name in step.get("stage_us_per_event", {}) if name not in names]
    if not names:
        return []
    lines = ["", "Worker CPU per answered event (µs), by stage of streamrec's own work and the rest:", "",
             "| step | events per batch | " + " | ".join(names) + " | of which garbage collection | full "
             "collections (mean pause) |", "|---|---|" + "---|" * (len(names) + 2)]
    for step in steps:
        figures = step.get("stage_us_per_event", {})
        phase = step.get("phase", "fixed")
        label = f"{step['target']} {step['rate']:,.0f}/s" + ("" if phase == "fixed" else f" ({phase})")
        collections = (f"{step['gc_full_collections']} ({step['gc_full_pause_ms_mean']:g} ms)"
                       if "gc_full_collections" in step else "")
        lines.append(f"| {label} | {step.get('mean_batch_events', '')} | " + " | ".join(
            str(figures.get(name, "")) for name in names) + f" | {step.get('gc_us_per_event', '')} | {collections} |")
    lines += ["", "Events per batch: the mean micro-batch (`streamrec_batch_events`): the events one fetch "
              "delivered together, more when the worker is behind and takes everything waiting.",
              "Garbage collection: the pauses of Python's collector (`streamrec_gc_pause_seconds`), inside the "
              "figures before it; a full collection stops the worker's event loop for its whole length."]
    return lines


_SUMMED = ("sent", "valid_sent", "invalid_sent", "received", "missing", "duplicates", "dead_lettered", "events_aged",
           "item_updates_indexed")
_HIGHEST = ("lag_max", "latency_max_ms", "rss_mb_max")


def combine_repeats(steps: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Steps with each repeated fixed-rate run of a target merged into one, in the order first run.

    Counts are summed, maxima kept, every other figure is the median over the runs (per
    stage, too); latencies are pooled (the CDF). ``runs`` lists each run's p50 and p99.
    """
    groups: dict[tuple[float, str], list[dict[str, Any]]] = {}
    merged: list[dict[str, Any]] = []
    for step in steps:
        if step.get("phase", "fixed") != "fixed":
            merged.append(step)
            continue
        key = (step["rate"], step["target"])
        if key not in groups:
            groups[key] = []
            merged.append({"_group": key})
        groups[key].append(step)
    return [_combined(groups[step["_group"]]) if "_group" in step else step for step in merged]


def _combined(runs: list[dict[str, Any]]) -> dict[str, Any]:
    if len(runs) == 1:
        return runs[0]
    step = dict(runs[0])
    for name, value in runs[0].items():
        values = [run.get(name) for run in runs]
        if isinstance(value, bool) or not all(isinstance(v, int | float) for v in values):
            continue
        step[name] = sum(values) if name in _SUMMED else max(values) if name in _HIGHEST \
            else round(float(np.median(values)), 1)
    stages = [run.get("stage_us_per_event", {}) for run in runs]
    step["stage_us_per_event"] = {name: round(float(np.median([s[name] for s in stages if name in s])), 1)
                                  for name in stages[0]}
    step["latencies_ms"] = [latency for run in runs for latency in run.get("latencies_ms", [])]
    step["runs"] = [(run["latency_p50_ms"], run["latency_p99_ms"]) for run in runs]
    return step


def _runs_lines(steps: list[dict[str, Any]]) -> list[str]:
    """Each run's p50 / p99 where steps were repeated: how far apart runs of the same step land."""
    repeated = [step for step in steps if "runs" in step]
    if not repeated:
        return []
    return ["", f"Each step ran {len(repeated[0]['runs'])} times, interleaved with the other targets; the tables "
            "give the median of each figure over the runs. Each run's p50 / p99 ms:", ""] + [
        f"- {step['target']} at {step['rate']:,.0f}/s: " + ", ".join(f"{p50} / {p99}" for p50, p99 in step["runs"])
        for step in repeated]


def write_report(result: dict[str, Any], directory: Path) -> Path:
    """Write results.json (every run), the plots and report.md (repeated runs combined, see
    :func:`combine_repeats`) under ``directory``; return the report's path."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    every_run = result["steps"]
    result = {**result, "steps": combine_repeats(every_run)}
    steps = result["steps"]
    _plot_timeline(steps, directory / "timeline.png")
    result["stages_plot"] = _plot_stages(steps, directory / "stages.png")
    if _soak_steps(steps):  # one rate, one long step per target: latency over time instead of per rate
        _plot_soak(_soak_steps(steps), directory / "soak.png")
    else:
        _plot_cdf(steps, directory / "latency_cdf.png")
        _plot_vs_rate(every_run, directory / "vs_rate.png")  # each rate's median, and each run
    report = directory / "report.md"
    report.write_text(_markdown(result))
    return report
