"""The worker consumer's record delivery: inline until a delivery suspends, then Faust's ``wait_first``."""

from __future__ import annotations

import asyncio

import pytest

from streamrec.config import Settings
from streamrec.streams.app import TunedApp, tuned_app
from streamrec.streams.transport import Consumer, Resumed


def consumer() -> Consumer:
    app = tuned_app(Settings(), TunedApp, "memory://")
    assert isinstance(app.consumer, Consumer)
    return app.consumer


def test_a_delivery_that_never_suspends_completes_inline_without_tasks() -> None:
    async def main() -> None:
        tasks_before = len(asyncio.all_tasks())
        seen_tasks = []

        async def deliver() -> str:
            seen_tasks.append(len(asyncio.all_tasks()))
            return "delivered"

        cons = consumer()
        result = await cons.wait_first(deliver(), cons.suspend_flow.wait())
        assert (len(result.done), result.results, result.stopped) == (1, ["delivered"], False)
        assert seen_tasks == [tasks_before]  # it ran in the caller's task: none was made for it

    asyncio.run(main())


def test_a_delivery_that_suspends_continues_as_faust_would_run_it() -> None:
    async def main() -> None:
        gate = asyncio.Event()
        steps = []

        async def deliver() -> int:
            steps.append("started")
            await gate.wait()  # e.g. flow control holding it
            steps.append("resumed")
            return 7

        cons = consumer()
        waiting = asyncio.ensure_future(cons.wait_first(deliver(), cons.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        assert steps == ["started"] and not waiting.done()
        gate.set()
        result = await waiting
        assert steps == ["started", "resumed"]
        assert result.results == [7] and not result.stopped

    asyncio.run(main())


def test_a_suspended_delivery_stops_waiting_when_the_flow_is_suspended() -> None:
    async def main() -> None:
        cancelled = []

        async def deliver() -> None:
            try:
                await asyncio.Event().wait()  # never set
            except asyncio.CancelledError:
                cancelled.append(True)
                raise

        cons = consumer()
        waiting = asyncio.ensure_future(cons.wait_first(deliver(), cons.suspend_flow.wait()))
        await asyncio.sleep(0.01)
        cons.suspend_flow.set()  # a rebalance: Faust gives up on the delivery
        result = await asyncio.wait_for(waiting, 5)
        assert len(result.done) == 1 and result.done[0] is not None
        await asyncio.sleep(0.01)
        assert cancelled == [True]  # the delivery was cancelled, as Faust's wait_first does

    asyncio.run(main())


def test_resumed_passes_results_exceptions_and_cancellation_to_the_coroutine() -> None:
    async def main() -> None:
        first, second = asyncio.get_running_loop().create_future(), asyncio.get_running_loop().create_future()
        log = []

        async def body() -> int:
            a = await first
            try:
                await second
            except KeyError as exc:
                log.append(f"caught {exc.args[0]}")
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                log.append("cancelled")
                raise
            return a

        coro = body()
        waiting_on = coro.send(None)
        assert waiting_on is first
        task = asyncio.ensure_future(Resumed(coro, waiting_on))
        first.set_result(3)
        await asyncio.sleep(0)
        second.set_exception(KeyError("boom"))
        await asyncio.sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert log == ["caught boom", "cancelled"]

    asyncio.run(main())


def test_resumed_returns_the_coroutines_value() -> None:
    async def main() -> None:
        future = asyncio.get_running_loop().create_future()

        async def body() -> str:
            return f"got {await future}"

        coro = body()
        task = asyncio.ensure_future(Resumed(coro, coro.send(None)))
        future.set_result("x")
        assert await task == "got x"

    asyncio.run(main())
