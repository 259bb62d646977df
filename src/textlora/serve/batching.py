"""Dynamic micro-batching: concurrent requests for the same model share one forward pass.

Each model has an asyncio queue and a worker coroutine. The worker takes the first waiting request,
then keeps collecting requests for up to `max_wait` seconds or until `max_batch` texts, runs one
forward pass on the single inference thread, and hands each request its rows. While a pass runs,
new requests pile up in the queue, so under load batches fill without waiting at all.

One inference thread for all models: torch already uses every core for one pass, and two passes
at once would only fight over them. torch releases the GIL, so the event loop keeps accepting
requests meanwhile.

A failure stays with its own request: when a batched pass raises, each request of the batch is
computed again alone, and only the ones that fail again get the error. The number of texts waiting
or in a pass is bounded (`max_queue`): past it, `submit` raises `ServerBusy` at once.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from textlora.errors import TextloraError

Infer = Callable[[str, list[str]], np.ndarray]
"""(model name, texts) -> scores (n, num_labels); runs on the inference thread."""
OnBatch = Callable[[str, int, int], None]
"""(model name, texts, requests) after every forward pass; runs on the event loop."""


class ServerBusy(TextloraError):
    """More texts are waiting than `max_queue`; the client should retry shortly (HTTP 503)."""


@dataclass
class _Pending:
    texts: list[str]
    future: asyncio.Future = field(repr=False)


class MicroBatcher:
    """Per-model queues feeding one inference thread. Call `start()` inside the event loop, then `submit`.

    Args:
        infer: computes scores for one model and a list of texts.
        models: the model names to serve.
        max_batch: most texts per forward pass (a single larger request still runs whole).
        max_wait: seconds to wait for more requests once one is waiting.
        enabled: False runs every request as its own forward pass (the baseline to compare against).
        on_batch: called after each forward pass, e.g. to record batch sizes.
        max_queue: most texts waiting or in a forward pass, over all models; more raise `ServerBusy`.
    """

    def __init__(self, infer: Infer, models: Sequence[str], max_batch: int = 64, max_wait: float = 0.005,
                 enabled: bool = True, on_batch: OnBatch | None = None, max_queue: int = 4096):
        self.infer, self.models = infer, list(models)
        self.max_batch, self.max_wait, self.enabled, self.max_queue = max_batch, max_wait, enabled, max_queue
        self.queued = 0
        """Texts submitted and not yet answered (waiting or in a forward pass)."""
        self.running = 0
        """Texts in the forward pass running now (one pass at a time: there is one inference thread)."""
        self.on_batch = on_batch or (lambda model, texts, requests: None)
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="textlora-infer")
        self._queues: dict[str, asyncio.Queue[_Pending]] = {}
        self._workers: list[asyncio.Task] = []

    async def start(self) -> None:
        """Create the queues and worker tasks (needs the running event loop)."""
        if not self.enabled:
            return
        for name in self.models:
            self._queues[name] = asyncio.Queue()
            self._workers.append(asyncio.create_task(self._work(name), name=f"batcher-{name}"))

    async def stop(self) -> None:
        """Cancel the workers and shut the inference thread down."""
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers.clear()
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, model: str, texts: list[str]) -> np.ndarray:
        """Scores for `texts` under `model`, computed in a batch with other waiting requests.

        Raises:
            ServerBusy: `max_queue` texts are already waiting (nothing is queued then).
            Exception: whatever `infer` raised for these texts computed alone.
        """
        if self.queued + len(texts) > self.max_queue:
            raise ServerBusy(f"the server is busy: {self.queued} texts are waiting, at most {self.max_queue} "
                             "(--max-queue). Retry in a moment.")
        self.queued += len(texts)
        try:
            return await self._submit(model, texts)
        finally:
            self.queued -= len(texts)

    async def _submit(self, model: str, texts: list[str]) -> np.ndarray:
        loop = asyncio.get_running_loop()
        if not self.enabled:
            scores = await loop.run_in_executor(self._executor, self._infer, model, texts)
            self.on_batch(model, len(texts), 1)
            return scores
        pending = _Pending(texts, loop.create_future())
        self._queues[model].put_nowait(pending)
        return await pending.future

    def _infer(self, model: str, texts: list[str]) -> np.ndarray:
        """`infer` on the inference thread, with `running` set while it runs."""
        self.running = len(texts)
        try:
            return self.infer(model, texts)
        finally:
            self.running = 0

    async def _work(self, model: str) -> None:
        queue = self._queues[model]
        carry: _Pending | None = None
        while True:
            first = carry or await queue.get()
            batch, carry = await self._collect(queue, first)
            try:
                await self._run(model, batch)
            except Exception as e:  # noqa: BLE001 - e.g. a failing on_batch: fail this batch, keep serving
                _fail(batch, e)

    async def _collect(self, queue: asyncio.Queue[_Pending], first: _Pending) -> tuple[list[_Pending], _Pending | None]:
        """`first` plus the requests that arrive within `max_wait`, up to `max_batch` texts.

        Returns the batch and the request that did not fit (it starts the next batch)."""
        loop = asyncio.get_running_loop()
        batch, n = [first], len(first.texts)
        deadline = loop.time() + self.max_wait
        while n < self.max_batch:
            try:
                item = queue.get_nowait()
            except asyncio.QueueEmpty:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), timeout)
                except asyncio.TimeoutError:  # not the builtin before Python 3.11
                    break
            if n + len(item.texts) > self.max_batch:
                return batch, item
            batch.append(item)
            n += len(item.texts)
        return batch, None

    async def _run(self, model: str, batch: list[_Pending]) -> None:
        """One forward pass for every request of `batch`; each future gets its own rows (or the error)."""
        live = [p for p in batch if not p.future.done()]  # a client that went away cancels its future
        if not live:
            return
        texts = [t for p in live for t in p.texts]
        loop = asyncio.get_running_loop()
        try:
            scores = await loop.run_in_executor(self._executor, self._infer, model, texts)
        except Exception as e:  # noqa: BLE001 - handed to the request(s) it belongs to, which report it
            if len(live) == 1:
                _fail(live, e)
            else:  # one bad request must not fail the others: compute each alone
                for p in live:
                    await self._run(model, [p])
            return
        self.on_batch(model, len(texts), len(live))
        start = 0
        for p in live:
            if not p.future.done():
                p.future.set_result(scores[start:start + len(p.texts)])
            start += len(p.texts)


def _fail(batch: list[_Pending], error: Exception) -> None:
    for p in batch:
        if not p.future.done():
            p.future.set_exception(error)
