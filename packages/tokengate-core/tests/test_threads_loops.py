"""Loop bridges: an idle loop is woken at once, a busy loop gets one batch, no loop retained."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import threading
import weakref
from collections.abc import Callable
from typing import Any, TypeVarTuple, Unpack

import pytest

from tokengate.core._loops import (
    BridgeRegistry,
    LoopBridge,
    deferred_since,
    deferring,
    flush_deferred,
)

Ts = TypeVarTuple("Ts")


class CountingLoop(asyncio.SelectorEventLoop):
    """A real selector loop that counts cross-thread wake-ups and timers."""

    def __init__(self) -> None:
        super().__init__()
        self.threadsafe_calls = 0
        self.timers = 0

    def call_soon_threadsafe(
        self,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.Handle:
        self.threadsafe_calls += 1
        return super().call_soon_threadsafe(callback, *args, context=context)

    def call_later(
        self,
        delay: float,
        callback: Callable[[Unpack[Ts]], object],
        *args: *Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        self.timers += 1
        return super().call_later(delay, callback, *args, context=context)


def run_in_thread(target: Any) -> None:
    thread = threading.Thread(target=target)
    thread.start()
    thread.join(10)
    assert not thread.is_alive()


def test_a_completion_wakes_an_idle_loop_at_once_without_a_timer() -> None:
    loop = CountingLoop()
    try:
        bridge = LoopBridge(loop)
        delivered: list[object] = []

        async def main() -> None:
            done = asyncio.Event()

            def callback(token: object) -> None:
                delivered.append(token)
                done.set()

            # a thread pushes while the loop sleeps in its selector (no timer: a hang would
            # be caught by the test timeout)
            threading.Thread(target=bridge.push, args=(callback, "t1", None)).start()
            await done.wait()
            done.clear()
            threading.Thread(target=bridge.push, args=(callback, "t2", None)).start()
            await done.wait()

        loop.run_until_complete(main())
        assert delivered == ["t1", "t2"]
        assert loop.threadsafe_calls == 2  # one wake-up per completion to an idle loop
        assert loop.timers == 0  # no completion waited for a timer
        assert bridge.pending == 0
    finally:
        loop.close()


def test_completions_to_a_busy_loop_ride_one_wake_up() -> None:
    loop = CountingLoop()
    try:
        bridge = LoopBridge(loop)
        delivered: list[object] = []
        ready = threading.Event()
        release = threading.Event()

        def busy() -> None:  # the loop is busy in a callback while completions arrive
            ready.set()
            release.wait(10)

        def completions() -> None:
            ready.wait(10)
            for i in range(100):
                bridge.push(delivered.append, i, None)
            release.set()

        async def main() -> None:
            loop.call_soon(busy)
            await asyncio.to_thread(completions)
            for _ in range(10):
                await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert delivered == list(range(100))
        assert loop.threadsafe_calls <= 2  # to_thread's own completion + one for the batch
    finally:
        loop.close()


def test_callbacks_run_in_their_context_and_errors_reach_the_handler() -> None:
    var: contextvars.ContextVar[str] = contextvars.ContextVar("var", default="outside")
    loop = asyncio.new_event_loop()
    errors: list[dict[str, Any]] = []
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    try:
        bridge = LoopBridge(loop)
        seen: list[str] = []
        ctx = contextvars.copy_context()
        ctx.run(var.set, "inside")

        def boom(_token: object) -> None:
            raise ValueError("boom")

        async def main() -> None:
            bridge.push(lambda _t: seen.append(var.get()), "a", ctx)
            bridge.push(boom, "b", None)
            bridge.push(lambda _t: seen.append(var.get()), "c", None)
            for _ in range(5):
                await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert seen == ["inside", "outside"]
        assert len(errors) == 1
        assert isinstance(errors[0]["exception"], ValueError)
    finally:
        loop.close()


def test_a_push_to_a_closed_loop_is_dropped() -> None:
    loop = asyncio.new_event_loop()
    bridge = LoopBridge(loop)
    loop.close()
    bridge.push(lambda _t: None, "x", None)
    assert bridge.pending == 0


def test_the_registry_retains_no_loop() -> None:
    registry = BridgeRegistry()
    refs: list[weakref.ref[asyncio.AbstractEventLoop]] = []

    async def main() -> None:
        loop = asyncio.get_running_loop()
        refs.append(weakref.ref(loop))
        bridge = registry.bridge_for(loop)
        assert registry.bridge_for(loop) is bridge
        done = asyncio.Event()
        threading.Thread(target=bridge.push, args=(lambda _t: done.set(), "t", None)).start()
        await asyncio.wait_for(done.wait(), 10)

    for _ in range(3):
        asyncio.run(main())
    gc.collect()
    assert [ref() for ref in refs] == [None, None, None]
    assert len(registry) == 0


@pytest.mark.parametrize("loops", [4])
def test_each_loop_gets_its_own_bridge_from_many_threads(loops: int) -> None:
    registry = BridgeRegistry()
    found: dict[int, list[LoopBridge]] = {}
    barrier = threading.Barrier(loops)

    def thread_main(index: int) -> None:
        async def main() -> None:
            loop = asyncio.get_running_loop()
            barrier.wait(10)
            found[index] = [registry.bridge_for(loop) for _ in range(200)]
            assert all(bridge.loop is loop for bridge in found[index])

        asyncio.run(main())

    threads = [threading.Thread(target=thread_main, args=(i,)) for i in range(loops)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert sorted(found) == list(range(loops))
    # the bridges are kept alive here, so distinct bridges have distinct ids
    assert all(len({id(bridge) for bridge in bridges}) == 1 for bridges in found.values())
    assert len({id(bridges[0]) for bridges in found.values()}) == loops


def test_a_runner_holding_back_wake_ups_wakes_each_loop_once_at_its_flush() -> None:
    loop = CountingLoop()
    try:
        bridge = LoopBridge(loop)
        delivered: list[object] = []
        pushed = threading.Event()
        flush = threading.Event()

        def runner() -> None:
            deferring(True)
            try:
                for i in range(50):
                    bridge.push(delivered.append, i, None)
                pushed.set()
                flush.wait(10)
            finally:
                deferring(False)  # flushes

        async def main() -> None:
            thread = threading.Thread(target=runner)
            thread.start()
            await asyncio.to_thread(pushed.wait, 10)
            calls = loop.threadsafe_calls
            for _ in range(5):
                await asyncio.sleep(0)
            assert delivered == []  # held back: no wake-up yet
            assert loop.threadsafe_calls == calls
            flush.set()
            await asyncio.to_thread(thread.join, 10)
            for _ in range(5):
                await asyncio.sleep(0)

        loop.run_until_complete(main())
        assert delivered == list(range(50))
    finally:
        loop.close()


def test_a_thread_that_does_not_hold_back_wakes_the_loop_at_once() -> None:
    loop = CountingLoop()
    try:
        bridge = LoopBridge(loop)
        deferring(False)
        bridge.push(lambda _t: None, "x", None)
        assert deferred_since() is None
        assert loop.threadsafe_calls == 1
        flush_deferred()  # nothing held back: no second wake-up
        assert loop.threadsafe_calls == 1
    finally:
        loop.close()
