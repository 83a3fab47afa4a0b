"""A memory probe for a soak: what a worker's RSS is made of, once a minute.

    PYTHONPATH=docs/bench/probe streamrec bench e2e --soak 7 --rates 500 --users 1000000 --fill-covisits 30

Python imports ``sitecustomize`` from the path at start-up, so every streamrec worker the
benchmark starts (not the relay, not the benchmark) runs this probe in a thread and appends
one JSON line a minute to ``$MEMORY_PROBE_DIR/worker-<pid>.jsonl`` (default ``/tmp``; not a
``STREAMREC_*`` name: the worker refuses those that are no setting):

- ``python_blocks``: blocks Python's small-object allocator has handed out
  (``sys.getallocatedblocks``), and ``gc_objects``: container objects the collector
  tracks, with the types whose count grew by more than 200 since the first reading.
  Flat figures mean Python's own state is not what grows.
- ``malloc_in_use``, ``malloc_free``, ``malloc_mapped``: the C heap (glibc's ``mallinfo2``)
  in bytes: what is handed out from its arenas, held free inside them, and mapped for
  large blocks of their own.
- ``rss``: resident bytes by kind of mapping (``/proc/self/smaps``): ``heap`` (the main C
  heap), ``pymalloc`` (Python's 1 MiB arenas), ``anon_large`` (mapped large blocks, other
  C heaps, RocksDB's and numba's regions), ``anon_small``, ``file`` (libraries), ``stack``.

Diagnostic only: the worker does not import it, and it costs one ``gc.get_objects`` walk a
minute. ``bench e2e`` reports ``streamrec_memory_bytes`` without it.
"""

from __future__ import annotations

import collections
import ctypes
import gc
import json
import os
import sys
import threading
import time
from pathlib import Path

INTERVAL_S = 60.0
PYMALLOC_ARENA = 1 << 20  # Python 3.10+: obmalloc maps its arenas 1 MiB at a time


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _kind(size: int, name: str) -> str:
    if name == "[heap]":
        return "heap"
    if name.startswith("[stack"):
        return "stack"
    if name:
        return "file" if not name.startswith("[") else "other"
    if size == PYMALLOC_ARENA:
        return "pymalloc"
    return "anon_small" if size < PYMALLOC_ARENA else "anon_large"


def resident_by_kind(smaps: Path = Path("/proc/self/smaps")) -> dict[str, int]:
    """Resident bytes of this process by kind of mapping (see the module's docstring)."""
    totals: collections.Counter[str] = collections.Counter()
    kind = "other"
    for line in smaps.read_text().splitlines():
        fields = line.split()
        if fields and "-" in fields[0] and not fields[0].endswith(":"):  # a mapping's header
            low, high = (int(bound, 16) for bound in fields[0].split("-"))
            kind = _kind(high - low, fields[5] if len(fields) > 5 else "")
        elif fields and fields[0] == "Rss:":
            totals[kind] += int(fields[1]) * 1024
    return dict(totals)


def _probe(out: Path) -> None:
    mallinfo2 = ctypes.CDLL("libc.so.6").mallinfo2
    mallinfo2.restype = _Mallinfo2
    first: collections.Counter[str] | None = None
    start = time.monotonic()
    with out.open("a") as log:
        while True:
            time.sleep(INTERVAL_S)
            counts = collections.Counter(type(obj).__name__ for obj in gc.get_objects())
            first = first or counts
            grown = {name: n - first[name] for name, n in counts.most_common() if n - first[name] > 200}
            heap = mallinfo2()
            log.write(json.dumps({
                "t_s": round(time.monotonic() - start), "python_blocks": sys.getallocatedblocks(),
                "gc_objects": sum(counts.values()), "grown_types": grown,
                "malloc_in_use": heap.uordblks, "malloc_free": heap.fordblks, "malloc_mapped": heap.hblkhd,
                "rss": resident_by_kind()}) + "\n")
            log.flush()


def _is_worker(argv: list[str]) -> bool:
    return "worker" in argv and "--relay" not in argv  # ``python -m streamrec worker ...``


if _is_worker(sys.argv) and sys.platform == "linux":
    _out = Path(os.environ.get("MEMORY_PROBE_DIR", "/tmp")) / f"worker-{os.getpid()}.jsonl"
    threading.Thread(target=_probe, args=(_out,), daemon=True, name="memory-probe").start()
