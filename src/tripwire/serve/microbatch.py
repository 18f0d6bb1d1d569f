"""Dynamic micro-batching: images of concurrent requests scored in one model pass.

A request's images wait in a queue; one worker takes the first waiting request, lets others join
it for at most `max_wait_ms` or until `max_batch` images are gathered, runs the guard once on
the concatenation (in a thread, so that the event loop keeps accepting requests) and hands each
request its rows back. A request larger than `max_batch` is scored alone, in chunks. Requests
are never split across batches, so each answer comes from one guard call.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from tripwire.guard import Guard, GuardResult


@dataclass
class _Pending:
    images: torch.Tensor
    answer: asyncio.Future[GuardResult] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )


class MicroBatcher:
    """Score the images of concurrent `submit` calls together (see the module docstring).

    `on_batch`, when set, is called with the number of images of every guard call (metrics).
    """

    def __init__(self, guard: Guard, max_batch: int, max_wait_ms: float) -> None:
        self.guard = guard
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self.on_batch: Callable[[int], None] | None = None

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._worker = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Score every request already queued, then stop the worker."""
        await self._queue.join()
        if self._worker is not None:
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker

    @property
    def running(self) -> bool:
        return self._worker is not None and not self._worker.done()

    async def submit(self, images: torch.Tensor) -> GuardResult:
        """The guard's answer for `images` (N×C×H×W), scored with whatever else is waiting."""
        pending = _Pending(images)
        await self._queue.put(pending)
        return await pending.answer

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        carry: _Pending | None = None  # a request too large to join the last batch: next
        while True:
            first = carry if carry is not None else await self._queue.get()
            carry = None
            batch, size = [first], len(first.images)
            deadline = loop.time() + self.max_wait
            while size < self.max_batch:
                timeout = deadline - loop.time()
                try:
                    if timeout <= 0:
                        nxt = self._queue.get_nowait()
                    else:
                        nxt = await asyncio.wait_for(self._queue.get(), timeout)
                except (TimeoutError, asyncio.QueueEmpty):
                    break
                if size + len(nxt.images) > self.max_batch:
                    carry = nxt
                    break
                batch.append(nxt)
                size += len(nxt.images)
            await self._score(batch)

    async def _score(self, batch: list[_Pending]) -> None:
        try:
            images = torch.cat([p.images for p in batch])
            parts = [
                await asyncio.to_thread(self._guard_call, chunk)
                for chunk in images.split(self.max_batch)
            ]
            result = GuardResult(*(torch.cat(t) for t in zip(*parts, strict=True)))
            start = 0
            for p in batch:
                end = start + len(p.images)
                if not p.answer.done():  # its request may have timed out meanwhile
                    p.answer.set_result(GuardResult(*(t[start:end] for t in result)))
                start = end
        except Exception as e:  # the requests get the error; the worker goes on
            for p in batch:
                if not p.answer.done():
                    p.answer.set_exception(e)
        finally:
            for _ in batch:
                self._queue.task_done()

    def _guard_call(self, images: torch.Tensor) -> GuardResult:
        if self.on_batch is not None:
            self.on_batch(len(images))
        with torch.no_grad():
            return GuardResult(*(t.detach().cpu() for t in self.guard(images)))
