"""Run one streamrec worker process (``streamrec worker``)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import faust

from streamrec.config import Settings
from streamrec.streams.app import create_app
from streamrec.streams.collector import set_young_threshold
from streamrec.streams.memory import fix_mmap_threshold, limit_malloc_arenas
from streamrec.streams.relay import create_relay_app
from streamrec.streams.topics import create_topics

log = logging.getLogger(__name__)


class Worker(faust.Worker):
    """Faust's worker, without leaving the root logger at DEBUG.

    ``faust.Worker``'s spinner sets the root logger to DEBUG and never resets it,
    so every debug call in aiokafka and Faust builds a log record (about a tenth
    of the worker's CPU); we put the configured level back.
    """

    def on_setup_root_logger(self, logger: logging.Logger, level: Any) -> None:
        super().on_setup_root_logger(logger, level)
        logger.setLevel(level)


def run_worker(settings: Settings, relay: bool = False) -> None:
    """Create missing topics, then run a Faust worker until SIGTERM/SIGINT.

    Several workers with the same ``worker.app_id`` form one consumer group and
    split the partitions; each needs its own ``worker.data_dir`` and ``web_port``.
    ``relay`` runs the model-free relay instead (see ``relay.py``).
    """
    try:
        created = create_topics(settings)
        if created:
            log.warning("created topics: %s", ", ".join(created))
    except Exception as exc:  # noqa: BLE001 - a cluster may forbid creation; Faust still runs
        log.warning("could not create topics (%r); assuming they exist", exc)
    use_event_loop(settings.worker.event_loop)
    limit_malloc_arenas(settings.worker.malloc_arenas)  # before Faust starts its threads
    fix_mmap_threshold(settings.worker.malloc_mmap_threshold_kb)
    set_young_threshold(settings.worker.gc_young_threshold)
    app = create_relay_app(settings) if relay else create_app(settings)
    worker = Worker(app, loglevel=settings.worker.log_level.upper())
    worker.execute_from_commandline()


def use_event_loop(name: str) -> None:
    """Make ``name`` ("uvloop" or "asyncio") the loop of every thread started from now on.

    A policy, not one loop: Faust runs its Kafka consumer in a thread with a loop of its own.
    """
    if name == "uvloop":
        import uvloop

        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    else:
        asyncio.set_event_loop_policy(asyncio.DefaultEventLoopPolicy())
