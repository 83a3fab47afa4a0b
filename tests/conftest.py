"""Fixtures shared by tests/integration and tests/reliability (see tests/harness.py).

They start nothing until a test asks for them, so unit tests stay broker-free.
"""

from tests.harness import broker_url, settings, start_worker

__all__ = ["broker_url", "settings", "start_worker"]
