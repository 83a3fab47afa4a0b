"""The ``streamrec`` command: parses options, builds settings, calls into the packages."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from streamrec.config import Settings, load_settings, with_section
from streamrec.errors import StreamrecError

app = typer.Typer(help="streamrec: real-time recommendations from Kafka events.",
                  no_args_is_help=True, pretty_exceptions_enable=False)
topics_app = typer.Typer(help="Manage streamrec's Kafka topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")
err = Console(stderr=True)

ConfigOption = Annotated[Path | None, typer.Option(
    "--config", "-c", help="TOML settings file (default: $STREAMREC_CONFIG or config/streamrec.toml).")]
BrokerOption = Annotated[str | None, typer.Option(
    "--broker", "-b", help="Kafka bootstrap servers host:port[,host:port] (default: kafka.broker).")]
PrefixOption = Annotated[str | None, typer.Option(
    "--prefix", help="Topic name prefix (default: topics.prefix, 'streamrec.').")]


def _settings(config: Path | None, broker: str | None = None, prefix: str | None = None) -> Settings:
    """Load settings, then apply the command-line overrides (they win over everything)."""
    try:
        settings = load_settings(config)
        if broker is not None:
            settings = with_section(settings, "kafka", broker=broker)
        if prefix is not None:
            settings = with_section(settings, "topics", prefix=prefix)
    except StreamrecError as exc:
        _fail(str(exc))
    return settings


def _fail(message: str) -> Any:
    err.print("[bold red]error:[/]", end=" ")
    err.print(message, markup=False, highlight=False)
    raise typer.Exit(code=1)


def _interrupt_on_termination() -> None:
    """Make SIGTERM and SIGHUP behave like Ctrl-C, so child processes are stopped on the way out."""
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, interrupt)


def _progress() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), console=err)


@app.command()
def broker(
    port: Annotated[int | None, typer.Option(help="Port to listen on (default: embedded.port, 9092).")] = None,
    host: Annotated[str | None, typer.Option(help="Address to listen on (default: embedded.host).")] = None,
    config: ConfigOption = None,
) -> None:
    """Run the embedded Kafka-compatible broker (Tansu, memory-only) in the foreground.

    For laptops, the demo and tests: it keeps every record in memory until it
    stops. Use a real Kafka cluster in production. Stop it with Ctrl-C.
    """
    from streamrec.broker import EmbeddedBroker

    settings = _settings(config)
    _interrupt_on_termination()
    embedded = EmbeddedBroker(host or settings.embedded.host,
                              settings.embedded.port if port is None else port)
    try:
        embedded.start()
    except StreamrecError as exc:
        _fail(str(exc))
    err.print(f"embedded broker listening on [bold]{embedded.url}[/] (Ctrl-C to stop)")
    try:
        embedded.wait()
    except KeyboardInterrupt:
        pass
    finally:
        embedded.stop()


@app.command()
def worker(
    broker: BrokerOption = None,
    web_port: Annotated[int | None, typer.Option(help="HTTP port (default: worker.web_port).")] = None,
    data_dir: Annotated[Path | None, typer.Option(help="RocksDB state directory (default: worker.data_dir).")] = None,
    prefix: PrefixOption = None,
    relay: Annotated[bool, typer.Option("--relay", help="Run the model-free relay (the latency floor "
                                        "that `bench e2e` measures) instead of streamrec.")] = False,
    config: ConfigOption = None,
) -> None:
    """Run a Faust worker: consume events and requests, emit recommendations.

    Start one per core or machine with the same worker.app_id: they split the
    partitions. Each needs its own --web-port and --data-dir on a shared host.
    With --relay it only forwards every event to the recommendations topic.
    """
    # A worker's matrix products are small: OpenBLAS threads would only contend with the broker
    # and the other processes (a 50-item sequence query took 5 ms instead of 0.8 under load).
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    from streamrec.streams.worker import run_worker

    settings = _settings(config, broker, prefix)
    changes = {k: v for k, v in {"web_port": web_port, "data_dir": data_dir}.items() if v is not None}
    try:
        settings = with_section(settings, "worker", **changes)
    except StreamrecError as exc:
        _fail(str(exc))
    run_worker(settings, relay)


@app.command()
def produce(
    file: Annotated[Path | None, typer.Option(exists=True, dir_okay=False,
                                              help="Events from a .jsonl or .csv file.")] = None,
    rate: Annotated[float, typer.Option(min=0.001, help="Target events per second.")] = 100.0,
    count: Annotated[int | None, typer.Option(help="Stop after this many events.")] = None,
    duration: Annotated[float | None, typer.Option(help="Stop after this many seconds.")] = None,
    users: Annotated[int, typer.Option(help="Synthetic: number of distinct users.")] = 1000,
    items: Annotated[int, typer.Option(help="Synthetic: number of distinct items.")] = 500,
    seed: Annotated[int, typer.Option(help="Synthetic: random seed.")] = 0,
    topic: Annotated[str, typer.Option(help="Topic suffix to publish to.")] = "events",
    broker: BrokerOption = None,
    prefix: PrefixOption = None,
    config: ConfigOption = None,
) -> None:
    """Publish events at a target rate: from --file, else a synthetic Zipf-skewed stream.

    Each event is keyed by its user_id and stamped with ts (now, in epoch ms)
    unless it has one. Prints the achieved rate and send errors as JSON on stdout.
    """
    from streamrec.eval.synthetic import SyntheticConfig, SyntheticEvents
    from streamrec.load.producer import produce as run_producer
    from streamrec.load.producer import read_event_file, stamp_event

    settings = _settings(config, broker, prefix)
    if file is None and count is None and duration is None:
        _fail("a synthetic stream never ends: pass --count N or --duration SECONDS")
    source = read_event_file(file) if file else SyntheticEvents(SyntheticConfig(users, items, seed=seed))
    messages = ((lambda event=event: stamp_event(event)) for event in source)
    with _progress() as progress:
        task = progress.add_task(f"producing to {settings.topics.prefix}{topic}", total=count, rate="")
        report = run_producer(settings, settings.topics.prefix + topic, messages, rate, count,
                              duration, on_progress=lambda n: progress.advance(task, n))
    err.print(f"sent {report.sent} events in {report.elapsed_s:.1f}s ({report.rate:.0f}/s), "
              f"{report.errors} send errors")
    typer.echo(json.dumps({"sent": report.sent, "errors": report.errors,
                           "elapsed_s": round(report.elapsed_s, 3), "rate": round(report.rate, 1),
                           "error_samples": report.error_samples}))
    if report.errors:
        raise typer.Exit(code=1)


@app.command()
def consume(
    topic: Annotated[str, typer.Option(help="Topic suffix: recommendations, dead-letter, events, ...")] = "recommendations",
    from_beginning: Annotated[bool, typer.Option(help="Start at the oldest record, not the newest.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines on stdout.")] = False,
    count: Annotated[int | None, typer.Option(help="Stop after this many records.")] = None,
    timeout: Annotated[float | None, typer.Option(help="Stop after this many idle seconds.")] = None,
    broker: BrokerOption = None,
    prefix: PrefixOption = None,
    config: ConfigOption = None,
) -> None:
    """Print records of a streamrec topic as they arrive (Ctrl-C to stop)."""
    from streamrec.streams.clients import open_consumer, read

    settings = _settings(config, broker, prefix)
    try:
        consumer = open_consumer(settings, [settings.topics.prefix + topic], from_beginning)
    except ValueError as exc:
        _fail(str(exc))
    out = Console()
    try:
        for seen, record in enumerate(read(consumer, idle_timeout_s=timeout), start=1):
            if as_json:
                typer.echo(json.dumps({"key": record.key, "value": record.value}))
            else:
                out.print(f"[dim]{record.topic}[{record.partition}]@{record.offset}[/] "
                          f"[bold]{record.key}[/]", record.value)
            if count is not None and seen >= count:
                break
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@app.command()
def recommend(
    user: Annotated[str, typer.Argument(help="The user_id to recommend for.")],
    k: Annotated[int | None, typer.Option(min=1, help="Number of items (default: model.k).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 10.0,
    broker: BrokerOption = None,
    prefix: PrefixOption = None,
    config: ConfigOption = None,
) -> None:
    """Ask for USER's recommendations through the requests topic and print the answer (JSON)."""
    from streamrec.load.request import request_recommendations

    settings = _settings(config, broker, prefix)
    try:
        answer = request_recommendations(settings, user, k, timeout)
    except StreamrecError as exc:
        _fail(str(exc))
    typer.echo(json.dumps(answer, indent=2))


@topics_app.command("create")
def topics_create(broker: BrokerOption = None, prefix: PrefixOption = None,
                  config: ConfigOption = None) -> None:
    """Create every streamrec topic (and table changelog) with topics.partitions partitions."""
    from streamrec.streams.topics import create_topics, topic_specs

    settings = _settings(config, broker, prefix)
    try:
        created = create_topics(settings)
    except Exception as exc:  # noqa: BLE001 - any client error becomes a message
        _fail(f"could not create topics on {settings.kafka.broker}: {exc!r}. Is the broker running?")
    for spec in topic_specs(settings):
        state = "created" if spec.name in created else "exists"
        err.print(f"{state:>8}  {spec.name}  ({spec.partitions} partitions"
                  f"{', compacted' if spec.compacted else ''})")


@app.command()
def demo(
    rate: Annotated[float, typer.Option(help="Synthetic events per second.")] = 200.0,
    duration: Annotated[float, typer.Option(help="Seconds of synthetic load.")] = 20.0,
    invalid_every: Annotated[int, typer.Option(help="Send one invalid event per this many.")] = 50,
    config: ConfigOption = None,
) -> None:
    """Run everything on this machine: embedded broker, a worker, synthetic load, live view.

    Prints a summary (events sent, recommendations received, dead-lettered,
    event->recommendation latency) as JSON on stdout and stops everything.
    """
    from streamrec.load.demo import run_demo

    settings = _settings(config)
    _interrupt_on_termination()
    try:
        summary = run_demo(settings, rate, duration, invalid_every, err, config)
    except StreamrecError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        err.print("demo interrupted; the broker and the worker were stopped")
        raise typer.Exit(code=130) from None
    typer.echo(json.dumps(summary))
    if not summary["ok"]:
        raise typer.Exit(code=1)


@app.command()
def evaluate(
    data: Annotated[str, typer.Argument(help="Dataset: a MovieLens dir/file (u.data, ratings.dat), "
                                        "RetailRocket events.csv, a .csv/.jsonl, or 'synthetic[:users=..,items=..,events=..,seed=..]'.")],
    k: Annotated[int, typer.Option(min=1, help="List length K.")] = 10,
    stride: Annotated[int, typer.Option(min=1, help="Score every n-th event (all are learned).")] = 1,
    models: Annotated[str, typer.Option(help="Comma-separated models: popular, trending, covisit, online, streamrec, "
                                        "streamrec-index, sequence, streamrec+sequence (the last two train the "
                                        "sequence model every sequence.train_every_events events).")] = "popular,trending,covisit,online,streamrec",
    seed: Annotated[int | None, typer.Option(help="Random seed of the learned models (default: model.seed).")] = None,
    half_life_h: Annotated[float, typer.Option(help="Half-life of trending, hours of event time.")] = 24.0,
    publish_every: Annotated[int, typer.Option(min=1, help="Publish item changes to the replica every n events, "
                                               "as the worker does every model.item_publish_interval_ms "
                                               "(10 = 50 ms at 200 events/s, 40 = the default 200 ms; 1 = at once).")] = 10,
    limit: Annotated[int | None, typer.Option(min=1, help="Replay only the first n events.")] = None,
    live: Annotated[bool, typer.Option("--live", help="Also replay through a broker and real workers and "
                                       "score the lists they push (the default model only).")] = False,
    rate: Annotated[float, typer.Option(min=1, help="--live: events per second sent.")] = 250.0,
    workers: Annotated[int, typer.Option(min=1, help="--live: worker processes.")] = 1,
    broker: Annotated[str | None, typer.Option(help="--live: use this Kafka broker instead of an embedded one.")] = None,
    content: Annotated[bool, typer.Option(help="Announce each item's content (MovieLens genres and titles, "
                                         "when the dataset has them) just before its first event "
                                         "(not with --live).")] = True,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    plot: Annotated[Path | None, typer.Option(help="Write a PNG of rolling HR@K here.")] = None,
    config: ConfigOption = None,
) -> None:
    """Replay a dataset test-then-train and compare models beside the baselines.

    Before learning each event, every model recommends K items to the event's
    user (excluding what the user has seen); a hit is the event's item in that
    list. The models run the worker's own code (learning step, item owners,
    replica) in one process. Prints a table (HR@K, NDCG@K, MRR@K, new vs
    returning users, coverage, events/s) and writes JSON and a plot when asked.
    Event weights and model hyper-parameters come from the settings ([events], [model]).

    With --live the events also go through a broker (embedded unless --broker)
    and real workers; the list pushed after a user's previous event is scored
    against their next, and the table compares it with the offline figure.
    """
    from streamrec.eval.datasets import load_dataset, load_movielens_items
    from streamrec.eval.models import ModelSetup, build_models
    from streamrec.eval.prequential import EvaluationSettings
    from streamrec.eval.prequential import evaluate as replay
    from streamrec.eval.report import print_table, summarise, write_json, write_plot

    settings = _settings(config)
    model_settings = settings.model if seed is None else settings.model.model_copy(update={"seed": seed})
    recommender = model_settings.recommender(half_life_s=half_life_h * 3600.0)
    try:
        interactions = load_dataset(data)[:limit]
        setup = ModelSetup(recommender, publish_every, settings.sequence.config(), settings.sequence.schedule(),
                           settings.sequence.weight)
        chosen = build_models([m.strip() for m in models.split(",") if m.strip()], setup)
    except (StreamrecError, ValueError) as exc:
        _fail(str(exc))
    rules = EvaluationSettings(k=k, stride=stride, type_weights=settings.events.types,
                               value_weighted_types=tuple(settings.events.value_weighted_types),
                               history_size=settings.model.history_size)
    with _progress() as progress:
        task = progress.add_task(f"replaying {len(interactions):,} events", total=len(interactions),
                                 rate="")
        reports = replay(interactions, chosen, rules, on_progress=lambda n: progress.advance(task, n),
                         items=load_movielens_items(Path(data)) if content and not live and Path(data).exists()
                         else None)  # --live replays only events: compare like with like
    summary = summarise(reports, k, dataset=data, stride=stride, seed=model_settings.seed,
                        events=len(interactions))
    print_table(err, summary)
    if live:
        summary["live"] = _evaluate_live(settings.model_copy(update={"model": model_settings}), interactions,
                                         reports, k, rate, workers, broker, config)
    if json_out is not None:
        write_json(json_out, summary)
    if plot is not None:
        write_plot(plot, reports, k)
    typer.echo(json.dumps(summary))


@app.command()
def train(
    data: Annotated[str, typer.Argument(help="A recorded log, in any format `streamrec evaluate` reads.")],
    out: Annotated[Path, typer.Option(help="Directory for the checkpoint (sequence-<version>.npz).")] = Path("models"),
    steps: Annotated[int, typer.Option(min=1, help="Optimizer steps (batches of sequence.batch_size users).")] = 2_000,
    version: Annotated[str | None, typer.Option(help="Checkpoint version (default: train-<UTC time>).")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="Train on the first n events only.")] = None,
    config: ConfigOption = None,
) -> None:
    """Train the self-attention sequence model on a recorded log and write a versioned checkpoint.

    The model's shape and optimiser come from [sequence]; every user's last
    sequence.max_len distinct items (time order) are the training sequences.
    """
    from streamrec.eval.datasets import load_dataset
    from streamrec.models.sequence_training import Sequences, SequenceTrainer

    settings = _settings(config)
    try:
        interactions = load_dataset(data)[:limit]
    except (StreamrecError, ValueError) as exc:
        _fail(str(exc))
    sequence = settings.sequence
    sequences = Sequences(sequence.history, sequence.max_users)
    for event in interactions:
        sequences.add(event.user_id, event.item_id)
    if not any(len(items) > 1 for items in sequences.users.values()):
        _fail(f"{data}: no user has two events, so there is nothing to learn a sequence from")
    trainer = SequenceTrainer(sequence.config(), sequences)
    started = time.perf_counter()
    chunk = max(1, steps // 20)
    with _progress() as progress:
        task = progress.add_task(f"training on {len(sequences):,} users' sequences", total=steps, rate="")
        done = 0
        while done < steps:
            loss = trainer.train(min(chunk, steps - done))
            done += min(chunk, steps - done)
            progress.update(task, completed=done, rate=f"loss {loss:.3f}")
    seconds = time.perf_counter() - started
    snapshot = trainer.snapshot(version or time.strftime("train-%Y%m%dT%H%M%SZ", time.gmtime()), len(interactions))
    path = snapshot.save(out)
    result = {"checkpoint": str(path), "version": snapshot.version, "events": len(interactions),
              "users": len(sequences), "items": len(sequences.item_ids), "steps": steps, "final_loss": round(loss, 4),
              "seconds": round(seconds, 1), "steps_per_s": round(steps / seconds, 2),
              "bytes": path.stat().st_size}
    err.print(f"wrote {path} ({result['bytes'] / 1e6:.1f} MB, {steps} steps in {seconds:.0f} s, loss {loss:.3f})")
    typer.echo(json.dumps(result))


@app.command()
def trainer(
    broker: BrokerOption = None,
    prefix: PrefixOption = None,
    checkpoint: Annotated[Path | None, typer.Option(help="Start from this `streamrec train` checkpoint "
                                                    "(default: the newest snapshot on the models topic).")] = None,
    config: ConfigOption = None,
) -> None:
    """Fine-tune the sequence model beside the workers and publish snapshots they swap in.

    Reads the events topic, trains every sequence.train_every_events events (or
    sequence.train_every_s seconds), and publishes each snapshot that passes its checks
    (finite weights; held-out HR@10 within sequence.max_quality_drop of the served one)
    to the models topic. Run one per deployment, on a core the workers do not need.
    """
    import logging

    from streamrec.streams.trainer import Trainer, yield_cpu
    from streamrec.streams.topics import create_topics

    settings = _settings(config, broker, prefix)
    # One line per training round is the trainer's progress report: INFO at least.
    level = min(logging.INFO, logging.getLevelName(settings.worker.log_level.upper()))
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    for noisy in ("kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(max(level, logging.WARNING))
    _interrupt_on_termination()
    yield_cpu(settings.sequence.trainer_nice, settings.sequence.trainer_idle)  # workers come first
    try:
        create_topics(settings)
        Trainer(settings, checkpoint).run(stop=lambda: False)
    except KeyboardInterrupt:
        err.print("trainer stopped")
    except (StreamrecError, ValueError) as exc:
        _fail(str(exc))


def _evaluate_live(settings: Settings, interactions: list[Any], offline: dict[str, Any], k: int, rate: float,
                   workers: int, broker: str | None, config: Path | None) -> dict[str, Any]:
    from streamrec.eval.report import live_agreement, print_arms_table, print_live_table
    from streamrec.load.live_evaluation import evaluate_live

    if "streamrec" not in offline:
        _fail("--live compares with the offline figure of the default model: include 'streamrec' in --models")
    with _progress() as progress:
        tasks = {"sent": progress.add_task(f"sending at {rate:g}/s", total=len(interactions), rate=""),
                 "pushed": progress.add_task("lists pushed", total=len(interactions), rate="")}
        reports, facts = evaluate_live(settings, interactions, k, rate, workers, broker, config,
                                       on_progress=lambda stage, n: progress.advance(tasks[stage], n))
    agreement = live_agreement(offline["streamrec"], reports["all"], k)
    print_live_table(err, agreement, f"streamrec offline vs live ({workers} worker(s), {facts['pushed']:,} of "
                                     f"{facts['events']:,} lists received)")
    arms = {name: report.returning_users.as_dict() for name, report in sorted(reports.items()) if name != "all"}
    if arms:
        print_arms_table(err, arms, k)
    return {**facts, "returning_users": agreement, **({"arms": arms} if arms else {})}


def _print_result(result: dict[str, Any], json_out: Path | None) -> None:
    """A benchmark's figures: JSON on stdout, and indented in ``json_out`` when given."""
    if json_out is not None:
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    typer.echo(json.dumps(result))


bench_app = typer.Typer(help="Benchmarks that print figures and write JSON.", no_args_is_help=True)
app.add_typer(bench_app, name="bench")


@bench_app.command("model")
def bench_model(
    events: Annotated[int, typer.Option(min=100, help="Events per timed pass.")] = 20_000,
    repeats: Annotated[int, typer.Option(min=1, help="Timed passes (the median is reported).")] = 5,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    config: ConfigOption = None,
) -> None:
    """Microseconds per event of the online learning step and of a top-10 query, on one core."""
    from streamrec.models.online_recommender import benchmark

    settings = _settings(config)
    err.print(f"timing {repeats} x {events:,} events (after a warm-up pass)...")
    result = benchmark(events, repeats, settings.model.recommender(settings.events.dedup_window))
    for key, value in result.items():
        err.print(f"  {key}: {value}")
    _print_result(result, json_out)


@bench_app.command("index")
def bench_index(
    sizes: Annotated[str, typer.Option(help="Comma-separated catalogue sizes.")] = "10000,100000,1000000",
    dim: Annotated[int, typer.Option(min=2, help="Vector size.")] = 64,
    queries: Annotated[int, typer.Option(min=10, help="Timed single-vector searches per size.")] = 1_000,
    k: Annotated[int, typer.Option(min=1, help="Neighbours per search.")] = 10,
    freshness_s: Annotated[float, typer.Option(min=0, help="Seconds of steady upserts per size (0: skip).")] = 10.0,
    upsert_rate: Annotated[float, typer.Option(min=1, help="Upserts per second during the freshness run.")] = 1_000.0,
    kind: Annotated[str | None, typer.Option(help="Force flat, hnsw or ivf (default: index.kind).")] = None,
    ef_search: Annotated[int | None, typer.Option(min=1, help="HNSW search effort (default: index.hnsw_ef_search).")] = None,
    threads: Annotated[int, typer.Option(min=1, help="FAISS threads for the first build (rebuilds use "
                                         "index.build_threads, searches one).")] = 2,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    config: ConfigOption = None,
) -> None:
    """Build time, memory, search p50/p99, recall@k against exact search, and upsert freshness."""
    import dataclasses

    from streamrec.index.benchmark import benchmark_index

    settings = _settings(config)
    index_config = settings.index.config(dim)
    try:
        if kind is not None:
            index_config = dataclasses.replace(index_config, kind=kind)
        if ef_search is not None:
            index_config = dataclasses.replace(index_config, hnsw_ef_search=ef_search)
        catalogue_sizes = [int(size.replace("_", "")) for size in sizes.split(",") if size.strip()]
    except ValueError as exc:
        _fail(f"{exc} (sizes are integers like 10000,100000)")
    result = benchmark_index(catalogue_sizes, index_config, queries, k, freshness_s, upsert_rate,
                             initial_build_threads=threads, say=lambda text: err.print(text, markup=False, highlight=False))
    _print_result(result, json_out)


@bench_app.command("restart")
def bench_restart(
    items: Annotated[int, typer.Option(min=100, help="Item vectors written to the item-state topic.")] = 100_000,
    rounds: Annotated[int, typer.Option(min=1, help="Restarts per case (with and without the snapshot).")] = 2,
    users: Annotated[int, typer.Option(min=1, help="Users seeded with events; the probes ask for them.")] = 50,
    observe_s: Annotated[float, typer.Option(min=1, help="Seconds of requests timed after the first answer.")] = 10.0,
    json_out: Annotated[Path | None, typer.Option("--json", help="Write the results as JSON here.")] = None,
    config: ConfigOption = None,
) -> None:
    """Time to first recommendation after a worker restart: with its index snapshot vs rebuilding from the topic.

    Runs an embedded broker and restarts one worker; the model's dimension and index settings come from the config.
    """
    from streamrec.load.restart import benchmark_restart

    result = benchmark_restart(_settings(config), items, rounds, users, observe_s,
                               say=lambda text: err.print(text, markup=False, highlight=False))
    for mode, figures in result["median"].items():
        err.print(f"median {mode:8s}: " + ", ".join(f"{key} {value}" for key, value in figures.items()))
    _print_result(result, json_out)


@bench_app.command("e2e")
def bench_e2e(
    rates: Annotated[str, typer.Option(help="Comma-separated events/s, one step each.")] = "500,1000,2000,5000",
    duration: Annotated[float, typer.Option(min=1, help="Seconds of load per step.")] = 20.0,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes per step.")] = 1,
    warmup: Annotated[int, typer.Option(min=0, help="Warm-up events per step (personalises the lists).")] = 20_000,
    users: Annotated[int, typer.Option(min=1, help="Distinct users in the synthetic load.")] = 100_000,
    find_max: Annotated[bool, typer.Option("--find-max", help="Then search each target's highest rate with "
                                           "every event answered and under a second of backlog.")] = False,
    soak: Annotated[float, typer.Option(min=0, metavar="MINUTES", help="Instead of the rate steps: relay, then "
                                        "streamrec, for MINUTES each at the first --rates value (memory trend, "
                                        "latency drift).")] = 0.0,
    fill_covisits: Annotated[int, typer.Option(min=0, metavar="VIEWS", help="Warm each step up with a view of "
                                               "every item and VIEWS more random views per item, so every co-visit "
                                               "list reaches its bound (30 does): lists cost what they do in a "
                                               "catalogue used for hours, and a soak's memory trend shows what "
                                               "still grows. About 30 s per 100k events per step.")] = 0,
    repeat: Annotated[int, typer.Option(min=1, help="Run each rate's targets this many times, interleaved; the "
                                        "report gives medians and each run's p50 / p99. With --find-max, the search runs "
                                        "this many times too (the median of the highest rates).")] = 1,
    trainer: Annotated[bool, typer.Option("--trainer", help="Also run each rate as streamrec+snapshot (the "
                                          "worker serving the trainer's first sequence-model snapshot, the trainer "
                                          "stopped) and streamrec+trainer (`streamrec trainer` running beside it).")] = False,
    broker: BrokerOption = None,
    out: Annotated[Path | None, typer.Option(help="Results directory (default: bench/results/<timestamp>).")] = None,
    config: ConfigOption = None,
) -> None:
    """Event→recommendation latency and throughput per rate, beside a model-free Faust relay on the same broker.

    Without --broker it starts an embedded broker. Writes results.json, report.md and plots.
    """
    from streamrec.load.e2e import E2EConfig, benchmark_e2e
    from streamrec.load.e2e_report import write_report

    try:
        rate_list = [float(rate.replace("_", "")) for rate in rates.split(",") if rate.strip()]
    except ValueError:
        _fail(f"--rates takes numbers like 500,1000, got {rates!r}")
    settings = _settings(config)
    e2e = E2EConfig(rate_list, duration, workers, warmup, users, find_max=find_max, soak_minutes=soak, trainer=trainer,
                    repeat=repeat, covisit_fill=fill_covisits)
    result = benchmark_e2e(settings, e2e, broker, say=lambda text: err.print(text, markup=False, highlight=False))
    directory = out or Path("bench/results") / time.strftime("%Y%m%d-%H%M%S")
    report = write_report(result, directory)
    err.print(f"report: {report}")
    typer.echo(json.dumps({"report": str(report), "max_sustained": result["max_sustained"], "steps": [
        {k: v for k, v in step.items() if k not in ("timeline", "latencies_ms", "windows")} for step in result["steps"]]}))


def main() -> None:
    """Entry point of the ``streamrec`` console script."""
    try:
        app(prog_name="streamrec")
    except StreamrecError as exc:  # expected failures: a message, not a traceback
        err.print("[bold red]error:[/]", end=" ")
        err.print(str(exc), markup=False, highlight=False)
        sys.exit(1)


if __name__ == "__main__":
    sys.exit(main())
