"""Snowflake's batch ids: a retried batch is not computed twice, and a long one answers 202 and is
polled with GET, as Snowflake's asynchronous external functions are.

Snowflake sends each batch with ``sf-external-function-query-batch-id`` and retries a batch (after
a timeout, a 5xx or a 429) with the same id. The ingress keeps each batch it is computing, and
each successful answer for ``ttl`` seconds (bounded in bytes), by caller and id: a POST of a batch
already running waits for that run, one already answered gets the stored answer. A batch that is
not answered within ``async_after`` seconds answers 202; Snowflake then sends GET requests with the
same headers and no body, answered 202 while it runs and with the result once it is done. A failed
answer (not 2xx) is not kept, so a retry computes again.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

BATCH_HEADER = "sf-external-function-query-batch-id"


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes


@dataclass
class _Batch:
    task: asyncio.Task[Reply]
    created: float = field(default_factory=time.monotonic)
    reply: Reply | None = None


class Batches:
    def __init__(self, async_after: float = 20.0, ttl: float = 600.0, max_bytes: int = 256 * 2**20) -> None:
        self.async_after = async_after
        self.ttl = ttl
        self.max_bytes = max_bytes
        self._batches: OrderedDict[Any, _Batch] = OrderedDict()
        self._bytes = 0

    def _expire(self) -> None:
        cutoff = time.monotonic() - self.ttl
        for key in list(self._batches):
            batch = self._batches[key]
            if batch.reply is not None and (batch.created < cutoff or self._bytes > self.max_bytes):
                self._forget(key)

    def _forget(self, key: Any) -> None:
        batch = self._batches.pop(key, None)
        if batch is not None and batch.reply is not None:
            self._bytes -= len(batch.reply.body)

    def _done(self, key: Any, batch: _Batch) -> None:
        if batch.task.cancelled() or batch.task.exception() is not None:
            self._batches.pop(key, None)
            return
        reply = batch.task.result()
        if 200 <= reply.status < 300:
            batch.reply = reply
            self._bytes += len(reply.body)
            self._expire()
        else:
            self._batches.pop(key, None)

    def _on_done(self, key: Any, batch: _Batch) -> Callable[[asyncio.Task[Reply]], None]:
        return lambda _: self._done(key, batch)

    async def post(self, key: Any, compute: Callable[[], Awaitable[Reply]]) -> Reply:
        """The answer to a batch: computed once per key; 202 when it takes longer than async_after."""
        batch = self._batches.get(key)
        if batch is None:
            task = asyncio.ensure_future(compute())
            batch = self._batches[key] = _Batch(task)
            task.add_done_callback(self._on_done(key, batch))
        if batch.reply is not None:
            return batch.reply
        try:
            return await asyncio.wait_for(asyncio.shield(batch.task), self.async_after)
        except asyncio.TimeoutError:
            return _accepted()

    def poll(self, key: Any) -> Reply | None:
        """The answer of a batch that was posted: 202 while it runs; None when it is unknown."""
        batch = self._batches.get(key)
        if batch is None:
            return None
        if batch.reply is not None:
            return batch.reply
        if batch.task.done():
            try:
                return batch.task.result()  # a failure: answered once, then forgotten
            except BaseException:  # noqa: BLE001
                return None
        return _accepted()

    def cancel_all(self) -> None:
        for batch in self._batches.values():
            batch.task.cancel()


def _accepted() -> Reply:
    return Reply(202, {"content-type": "application/json"},
                 b'{"status": "processing", "detail": "poll with GET and the same headers"}')
