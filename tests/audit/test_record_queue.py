"""The sink's record queue: bounded, oldest first, one reader woken by a record or by the stop."""

from __future__ import annotations

import asyncio

from citadel_proxy.audit.record_queue import RecordQueue


def test_a_full_queue_refuses_and_keeps_what_it_holds() -> None:
    queue = RecordQueue(2)
    assert queue.offer(b"a") and queue.offer(b"b")
    assert not queue.offer(b"c")
    assert len(queue) == 2
    assert queue.take(None) == [b"a", b"b"]
    assert queue.offer(b"c") and queue.take(5) == [b"c"]


def test_take_is_oldest_first_and_bounded() -> None:
    queue = RecordQueue(10)
    for item in (b"1", b"2", b"3"):
        queue.offer(item)
    assert queue.take(2) == [b"1", b"2"]
    assert queue.take(0) == []
    assert queue.take(None) == [b"3"] and not queue


async def test_the_reader_waits_for_a_record_or_the_stop() -> None:
    queue = RecordQueue(10)
    reader = asyncio.ensure_future(queue.wait())
    await asyncio.sleep(0)
    assert not reader.done()
    queue.offer(b"x")
    await asyncio.wait_for(reader, 1)
    await asyncio.wait_for(queue.wait(), 1)  # at once: it holds one
    assert queue.take(None) == [b"x"]

    reader = asyncio.ensure_future(queue.wait())
    await asyncio.sleep(0)
    queue.stop()
    await asyncio.wait_for(reader, 1)
    assert queue.stopped and not queue


async def test_the_stop_is_given_even_when_full_and_records_before_it_are_kept() -> None:
    queue = RecordQueue(1)
    assert queue.offer(b"last")
    queue.stop()
    await asyncio.wait_for(queue.wait(), 1)
    assert queue.take(None) == [b"last"]


async def test_a_cancelled_reader_leaves_no_waiter_behind() -> None:
    queue = RecordQueue(10)
    reader = asyncio.ensure_future(queue.wait())
    await asyncio.sleep(0)
    reader.cancel()
    await asyncio.gather(reader, return_exceptions=True)
    assert queue.offer(b"x")  # no waiter to wake, nothing raised
    await asyncio.wait_for(queue.wait(), 1)


def test_finished_once_stopped_and_drained() -> None:
    queue = RecordQueue(10)
    queue.offer(b"x")
    queue.stop()
    assert not queue.finished
    queue.take(None)
    assert queue.finished
