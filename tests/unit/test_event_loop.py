"""``worker.event_loop``: the loop every thread of a worker process runs on."""

from __future__ import annotations

import asyncio

import pytest
import uvloop

from streamrec.config import load_settings
from streamrec.errors import ConfigError
from streamrec.streams.worker import use_event_loop


@pytest.fixture(autouse=True)
def restore_policy():
    policy = asyncio.get_event_loop_policy()
    yield
    asyncio.set_event_loop_policy(policy)


@pytest.mark.parametrize(("name", "loop_type"), [("uvloop", uvloop.Loop), ("asyncio", asyncio.BaseEventLoop)])
def test_every_new_loop_is_of_the_chosen_kind(name: str, loop_type: type) -> None:
    use_event_loop(name)
    loop = asyncio.new_event_loop()
    try:
        assert isinstance(loop, loop_type)
        assert isinstance(loop, uvloop.Loop) == (name == "uvloop")
    finally:
        loop.close()


def test_uvloop_is_the_default_and_anything_else_is_refused() -> None:
    assert load_settings().worker.event_loop == "uvloop"
    with pytest.raises(ConfigError):
        load_settings(worker={"event_loop": "trio"})
