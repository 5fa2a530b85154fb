"""Generating replies off the event loop: in one shared batch, or in worker threads.

BatchedReplies (the server's default with a real ChatEngine) submits every request to a
bytechat.serve.batch_engine.BatchEngine: one thread decodes all running replies together, one
forward pass per byte for all of them; a request waits in line until the batch has a
free slot (--max-batch-size). ReplyWorkers (--max-batch-size 0, or an engine that cannot
batch) runs each reply alone on a small thread pool. Both admit the same way and hand
out ReplyJobs with the same events, so the request handlers do not know which runs.

ReplyWorkers: ChatEngine.stream_reply is a plain, blocking generator. Each request
becomes a ReplyJob run on a small thread pool of its own (so generation never starves the threads that
starlette uses for static files). The worker hands every event to the event loop with
call_soon_threadsafe into an asyncio.Queue; the request handler awaits that queue.

Stopping is cooperative: the engine calls job.should_stop() between bytes, which turns
true when the client went away (job.cancel()) or the per-request time budget is spent.
A job cancelled while still waiting for a worker is dropped at once: its place in the
waiting line is free again and it ends as "cancelled" without ever reaching a worker.

Overload: beyond max_waiting in line, or when the line is not likely to reach a new
request within max_wait_s, start() raises ServerBusy at once, with Retry-After seconds
estimated from how long replies have lately held their slots (see _Admission).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import math
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import AsyncIterator, Callable, Union

from bytechat.model.checkpoint import error_line
from bytechat.serve.generate import ReplyDone, ReplyEvent
from bytechat.serve.web.chat_request import ChatJob

log = logging.getLogger("bytechat.serve.web")


class ServerBusy(Exception):
    """Every worker is busy and the waiting line is full (or the wait was too long)."""

    def __init__(self, message: str, retry_after_s: int = 1) -> None:
        # Seconds until a slot is likely (the Retry-After header; at least 1).
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class GenerationFailed:
    """The engine raised: the last event of a job, in place of a ReplyDone."""

    message: str


JobEvent = Union[ReplyEvent, ReplyDone, GenerationFailed]


class ReplyJob:
    def __init__(
        self,
        work: ChatJob,
        timeout_s: float,
        loop: asyncio.AbstractEventLoop,
        on_cancel: Callable[[ReplyJob], None] | None = None,
    ) -> None:
        self.work = work
        self.timeout_s = timeout_s
        self._loop = loop
        self._queue: asyncio.Queue[JobEvent] = asyncio.Queue()
        self._cancelled = threading.Event()
        self._started = asyncio.Event()  # set (on the loop) when a worker picks the job up
        self._on_cancel = on_cancel
        self._deadline = math.inf  # set when a worker picks the job up
        self.started_at: float | None = None  # time.monotonic() when it got its slot
        self.timed_out = False
        # Guarded by ReplyWorkers._lock:
        self.running = False
        self.dropped = False
        self.future: Future | None = None  # ReplyWorkers: the pool's future
        self.batch_request = None  # BatchedReplies: the job's BatchRequest

    # ---- worker thread side

    def start_clock(self) -> None:
        self.started_at = time.monotonic()
        self._deadline = self.started_at + self.timeout_s
        try:
            self._loop.call_soon_threadsafe(self._started.set)
        except RuntimeError:  # the loop is closed
            pass

    def should_stop(self) -> bool:
        if self._cancelled.is_set():
            return True
        if time.monotonic() >= self._deadline:
            self.timed_out = True
            return True
        return False

    def emit(self, event: JobEvent) -> None:
        try:
            self._loop.call_soon_threadsafe(self._queue.put_nowait, event)
        except RuntimeError:  # the loop is closed: the server is gone, nobody listens
            pass

    @staticmethod
    def emit_all(events: list[tuple[ReplyJob, JobEvent]]) -> None:
        """emit() for many jobs' events at once: one wake-up of each event loop, not one per event."""
        by_loop: dict[asyncio.AbstractEventLoop, list] = {}
        for job, event in events:
            by_loop.setdefault(job._loop, []).append((job._queue, event))
        for loop, items in by_loop.items():
            try:
                loop.call_soon_threadsafe(_put_all, items)
            except RuntimeError:  # the loop is closed
                pass

    # ---- event loop side

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop generating, or leave the waiting line (idempotent; harmless once done)."""
        self._cancelled.set()
        if self._on_cancel is not None:
            self._on_cancel(self)

    async def wait_started(self) -> None:
        """Until a worker has picked the job up."""
        await self._started.wait()

    async def events(self) -> AsyncIterator[JobEvent]:
        """Pieces of the reply, then exactly one ReplyDone or GenerationFailed."""
        while True:
            event = await self._queue.get()
            yield event
            if not isinstance(event, ReplyEvent):
                return

    async def result(self) -> ReplyDone | GenerationFailed:
        async for event in self.events():
            if not isinstance(event, ReplyEvent):
                return event
        raise AssertionError("unreachable: events() always ends with a final event")


MAX_RETRY_AFTER_S = 120  # Retry-After never says more than this
REPLY_S_WEIGHT = 0.2  # weight of the newest reply in the moving average of slot times


class _Admission:
    """What both servers' reply runners share: `slots` replies run at once, at most
    `capacity` jobs are admitted (running or waiting), ServerBusy beyond; shutdown
    cancels every admitted job. A subclass defines _drop_if_waiting (a cancelled job
    that has not started leaves the line) and calls _finished when a started job ends.

    The wait for a slot is estimated from a moving average of how long replies held
    their slots: slots free at about slots / reply_s per second, so a request with n
    jobs ahead of it beyond the slots waits about reply_s * (n + 1) / slots. Once a
    reply has finished (so the average means something), a request whose estimate is
    over max_wait_s is refused at once instead of waiting max_wait_s for a 503."""

    def __init__(self, capacity: int, slots: int, timeout_s: float, max_wait_s: float = math.inf) -> None:
        self.capacity = capacity
        self.slots = slots
        self.timeout_s = timeout_s
        self.max_wait_s = max_wait_s
        self._lock = threading.Lock()
        self._jobs: set[ReplyJob] = set()  # admitted and not yet finished
        self._reply_s: float | None = None  # moving average of a reply's time in its slot

    def _admit(self, work: ChatJob) -> ReplyJob:
        """A new job for work, admitted (or ServerBusy); call from the event loop."""
        job = ReplyJob(work, self.timeout_s, asyncio.get_running_loop(), on_cancel=self._drop_if_waiting)
        with self._lock:
            wait_s = self._wait_estimate()
            retry = _retry_after(wait_s)
            if len(self._jobs) >= self.capacity:
                raise ServerBusy(
                    f"server busy: {len(self._jobs)} replies in progress or waiting; try again in {retry} s", retry
                )
            if self._reply_s is not None and wait_s > self.max_wait_s:
                raise ServerBusy(
                    f"server busy: a free slot is likely in {wait_s:.0f} s, over the {self.max_wait_s:g} s"
                    f" wait cap; try again in {retry} s",
                    retry,
                )
            self._jobs.add(job)
            self._admitted(job)
        return job

    def _wait_estimate(self) -> float:
        """Seconds a request arriving now would likely wait for a slot (under the lock)."""
        beyond = len(self._jobs) - self.slots  # jobs that must leave a slot first, less one
        if beyond < 0:
            return 0.0
        reply_s = self._reply_s
        if reply_s is None:  # nothing finished yet: at least as long as the oldest has run
            now = time.monotonic()
            reply_s = max([1.0] + [now - job.started_at for job in self._jobs if job.started_at is not None])
        return reply_s * (beyond + 1) / self.slots

    def retry_after_s(self) -> int:
        """Seconds until a slot is likely for a request arriving now (Retry-After, >= 1)."""
        with self._lock:
            return _retry_after(self._wait_estimate())

    def _finished(self, job: ReplyJob) -> None:
        """A job that had a slot left it (call under the lock)."""
        if job.started_at is None:
            return
        took = time.monotonic() - job.started_at
        old = self._reply_s
        self._reply_s = took if old is None else old + REPLY_S_WEIGHT * (took - old)

    def _admitted(self, job: ReplyJob) -> None:
        """Called under the lock once job is admitted."""

    def _cancel_all(self) -> None:
        with self._lock:
            jobs = list(self._jobs)
        for job in jobs:
            job.cancel()


class ReplyWorkers(_Admission):
    """A bounded pool generating replies; admission beyond its capacity raises ServerBusy."""

    def __init__(
        self, engine, max_concurrency: int, max_waiting: int, timeout_s: float, max_wait_s: float = math.inf
    ) -> None:
        super().__init__(max_concurrency + max_waiting, max_concurrency, timeout_s, max_wait_s)
        self.engine = engine
        self.max_concurrency = max_concurrency
        self._pool = ThreadPoolExecutor(max_workers=max_concurrency, thread_name_prefix="bytechat-reply")
        self._running = 0

    def warm_up(self) -> str:
        """Compile the engine's decode step now; the start-up line."""
        return self.engine.warm_up() if hasattr(self.engine, "warm_up") else "decoding eager (not compiled)"

    def start(self, work: ChatJob) -> ReplyJob:
        """Admit a job (or raise ServerBusy); call from the event loop."""
        return self._admit(work)

    def _admitted(self, job: ReplyJob) -> None:
        job.future = self._pool.submit(self._run, job)

    def _drop_if_waiting(self, job: ReplyJob) -> None:
        """A cancelled job that no worker has picked up leaves the line now."""
        with self._lock:
            if job.running or job.dropped or job not in self._jobs:
                return
            job.dropped = True
            self._jobs.discard(job)
            if job.future is not None:
                job.future.cancel()  # never reaches a worker (else _run returns at once)
        job.emit(ReplyDone(reply="", finish_reason="cancelled", n_bytes=0, seconds=0.0))

    def load(self) -> dict[str, int]:
        with self._lock:
            return {"running": self._running, "waiting": len(self._jobs) - self._running}

    def shutdown(self) -> None:
        """Stop every job (server shutdown); waiting ones end at once as "cancelled"."""
        self._cancel_all()
        self._pool.shutdown(wait=False)

    def _run(self, job: ReplyJob) -> None:
        with self._lock:
            if job.dropped:
                return
            job.running = True
            self._running += 1
        try:
            job.emit(self._generate(job))
        finally:
            with self._lock:
                self._running -= 1
                self._jobs.discard(job)
                self._finished(job)

    def _generate(self, job: ReplyJob) -> ReplyDone | GenerationFailed:
        """Stream the pieces out through job.emit; return the final event."""
        if job.cancelled:  # the client left while the job was waiting for a worker
            return ReplyDone(reply="", finish_reason="cancelled", n_bytes=0, seconds=0.0)
        job.start_clock()
        try:
            events = self.engine.stream_reply(
                job.work.messages, job.work.sampling, seed=job.work.seed, should_stop=job.should_stop
            )
            for event in events:
                if isinstance(event, ReplyDone):
                    return _with_timeout_reason(event, job)
                job.emit(event)
        except Exception as exc:  # reported to the client as an error, logged in full here
            log.exception("reply generation failed")
            return GenerationFailed(f"generation failed: {error_line(exc)}")
        return GenerationFailed("generation failed: the engine ended without a final event")


def _retry_after(wait_s: float) -> int:
    return max(1, min(MAX_RETRY_AFTER_S, math.ceil(wait_s)))


def _put_all(items: list) -> None:
    for queue, event in items:
        queue.put_nowait(event)


def _with_timeout_reason(done: ReplyDone, job: ReplyJob) -> ReplyDone:
    # The engine only knows "cancelled"; tell a spent time budget apart from a client that left.
    if done.finish_reason == "cancelled" and job.timed_out and not job.cancelled:
        return dataclasses.replace(done, finish_reason="timeout")
    return done


class BatchedReplies(_Admission):
    """Replies decoded together in one BatchEngine; the same admission as ReplyWorkers.

    At most max_batch_size replies run (one slot each), max_waiting more may wait for a
    slot; beyond that, ServerBusy. A job starts (its clock too) when it joins the batch.
    """

    def __init__(
        self, engine, max_batch_size: int, max_waiting: int, timeout_s: float, max_wait_s: float = math.inf
    ) -> None:
        from bytechat.serve.batch_engine import BatchEngine

        super().__init__(max_batch_size + max_waiting, max_batch_size, timeout_s, max_wait_s)
        self.batch = BatchEngine(engine, max_batch_size)
        # Events of the current step, handed to the event loop together after it (a
        # wake-up per event cost the loop more than the step itself at 16 replies).
        self._outbox: list[tuple[ReplyJob, JobEvent]] = []
        self.batch.after_step = self._flush

    def warm_up(self) -> str:
        """Compile the batch's decode step for each of its sizes now; the start-up line."""
        return self.batch.warm_up()

    def start(self, work: ChatJob) -> ReplyJob:
        """Admit a job (or raise ServerBusy); call from the event loop."""
        job = self._admit(work)
        self.batch.start()  # the stepping thread, at the first request
        try:
            job.batch_request = self.batch.submit(
                work.messages,
                work.sampling,
                work.seed,
                lambda event: self._emit(job, event),
                should_stop=job.should_stop,
                on_start=job.start_clock,
            )
        except Exception:
            with self._lock:
                self._jobs.discard(job)
            raise
        return job

    def _emit(self, job: ReplyJob, event) -> None:
        """From the batch thread: queue an event for the loop; the last one also retires the job."""
        if isinstance(event, ReplyEvent):
            self._outbox.append((job, event))
            return
        with self._lock:
            self._jobs.discard(job)
            self._finished(job)
        if isinstance(event, ReplyDone):
            self._outbox.append((job, _with_timeout_reason(event, job)))
        else:
            log.error("reply generation failed", exc_info=event)
            self._outbox.append((job, GenerationFailed(f"generation failed: {error_line(event)}")))

    def _flush(self) -> None:
        """From the batch thread, after each step: hand the step's events on."""
        if self._outbox:
            events, self._outbox = self._outbox, []
            ReplyJob.emit_all(events)

    def _drop_if_waiting(self, job: ReplyJob) -> None:
        """A cancelled job that has not joined the batch leaves the line now."""
        if job.batch_request is None or not self.batch.withdraw(job.batch_request):
            return  # in the batch (its should_stop ends it) or already done
        with self._lock:
            self._jobs.discard(job)
        job.emit(ReplyDone(reply="", finish_reason="cancelled", n_bytes=0, seconds=0.0))

    def load(self) -> dict[str, int]:
        return self.batch.load()

    def shutdown(self) -> None:
        """Stop every job (server shutdown): each ends as "cancelled"."""
        self._cancel_all()
        self.batch.close()
