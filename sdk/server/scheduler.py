"""The render loop: one thread owns the ONNX Runtime engine and renders the frames of every stream, several
streams' frames in one run (Engine.render_many) when more than one is waiting.

Per stream there are two bounded queues of `depth` frames (reliability.md "slow consumer"):

* pending: windows ready to render. Delivery ALL: the stream's reader waits for room (so a client sending
  faster than real time is paced by gRPC flow control, nothing is lost). Delivery LATEST: the oldest pending
  window is dropped and counted.
* out: rendered frames waiting to be sent. ALL: never overflows (pending + rendering + out <= depth).
  LATEST: the oldest undelivered frame is dropped and counted, so a slow reader gets the newest frames and never
  blocks the render loop.

All state is guarded by one Condition (a handful of streams at tens of frames per second: contention is
negligible next to a 10-150 ms render), so the invariants are easy to check: when a stream closes, its pending
frames are discarded and `frames_inflight` (frames taken by a render not yet finished) returns to 0.

Render failures (reliability.md F7): a failing run is retried stream by stream, so only the stream whose frames
fail ends (INTERNAL) and the others go on. When `max_failures` render steps in a row fail for every stream in
them (a lost device fails them all), the engine is given up: `unusable` says why, every open stream and every
stream opened later ends UNAVAILABLE with it, and `on_unusable` tells the server (not ready). One step that
renders anything resets the count. There is no reload here: see Server.
"""
from __future__ import annotations

import collections
import itertools
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
from numpy.typing import NDArray

__all__ = ["RenderScheduler", "StreamState", "FrameJob", "RenderedFrame", "Stats", "StreamClosed"]


class StreamClosed(Exception):
    """The stream ended (client gone, error, drain) while a reader waited for room."""


@dataclass
class Stats:
    """Server counters (reliability.md cleanup invariant: opened == closed and inflight == 0 when idle)."""

    streams_active: int = 0
    streams_opened: int = 0
    streams_closed: int = 0
    streams_rejected: int = 0
    frames_rendered: int = 0
    frames_dropped: int = 0
    frames_inflight: int = 0
    jobs_active: int = 0
    render_errors: int = 0
    max_queue_depth: int = 0            # the deepest any stream's out queue got (bounded memory, F3)


@dataclass
class FrameJob:
    index: int                          # the client's frame index
    window: NDArray[np.float32]         # [70,27]
    camera: NDArray[np.float32]         # [25] before the avatar's intrinsics correction
    ready: float                        # time.perf_counter() when the window became ready


@dataclass
class RenderedFrame:
    index: int
    frame: NDArray[np.uint8]            # [H,W,3]
    ready: float
    queue_ms: float
    render_ms: float
    batch_size: int


@dataclass(eq=False)
class StreamState:
    avatar: Any                         # otavatar.runtime.AvatarLatent
    latest: bool                        # Delivery LATEST (drop stale) vs ALL (pace the input)
    depth: int
    id: int = field(default_factory=itertools.count().__next__)
    pending: collections.deque = field(default_factory=collections.deque)   # FrameJob
    out: collections.deque = field(default_factory=collections.deque)       # RenderedFrame
    rendering: int = 0                  # frames of this stream inside the current engine run
    dropped: int = 0
    closed: bool = False
    error: tuple[Any, str] | None = None   # (grpc.StatusCode, message): end the stream with it
    max_out: int = 0                    # the deepest the out queue got (tests: bounded memory)


class RenderScheduler:
    """on_unusable(reason) is called once, with `cond` held, when the engine is given up (module docstring):
    holding it, the server turns not ready before any stream can see the status of the step that tripped it."""

    def __init__(self, engine: Any, *, max_batch: int = 4, stats: Stats | None = None, max_failures: int = 3,
                 on_unusable: Callable[[str], None] | None = None) -> None:
        self.engine = engine
        self.max_batch = max_batch
        self.stats = stats if stats is not None else Stats()
        self.max_failures = max_failures
        self.on_unusable = on_unusable
        self.unusable: str | None = None       # why the engine was given up; then every stream ends UNAVAILABLE
        self.cond = threading.Condition()
        self._streams: list[StreamState] = []
        self._rr = 0                           # round-robin start, so no stream starves in a full batch
        self._failed_steps = 0                 # consecutive render steps in which every stream's run failed
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="otavatar-render", daemon=True)
        self._thread.start()

    # -- streams ---------------------------------------------------------------------------------------------
    def open(self, stream: StreamState) -> None:
        with self.cond:
            if self.unusable is not None:
                stream.error = ("UNAVAILABLE", self.unusable)
            self._streams.append(stream)

    def close(self, stream: StreamState) -> None:
        """Discard the stream's queued frames; a render in progress finishes and its frames are dropped."""
        with self.cond:
            stream.closed = True
            stream.pending.clear()
            stream.out.clear()
            if stream in self._streams:
                self._streams.remove(stream)
            self.cond.notify_all()

    def put(self, stream: StreamState, job: FrameJob, timeout: float | None = None) -> None:
        """Queue a window. ALL: wait for room (raises StreamClosed if the stream ends meanwhile).
        LATEST: drop the oldest pending window when the queue is full."""
        with self.cond:
            if stream.latest:
                while len(stream.pending) >= stream.depth:
                    stream.pending.popleft()
                    stream.dropped += 1
                    self.stats.frames_dropped += 1
            else:
                while not stream.closed and stream.error is None and \
                        len(stream.pending) + stream.rendering + len(stream.out) >= stream.depth:
                    self.cond.wait(timeout=0.5)
            if stream.closed or stream.error is not None:
                raise StreamClosed
            stream.pending.append(job)
            self.cond.notify_all()

    def idle(self, stream: StreamState) -> bool:
        """Nothing of this stream queued, rendering or waiting to be sent (call with self.cond held)."""
        return not stream.pending and not stream.rendering and not stream.out

    def stop(self) -> None:
        with self.cond:
            self._stopping = True
            self.cond.notify_all()
        self._thread.join(timeout=10)

    # -- the loop --------------------------------------------------------------------------------------------
    def _take(self) -> list[tuple[StreamState, list[FrameJob]]]:
        """Up to max_batch frames, round-robin over the streams with pending windows (cond held)."""
        # a stream with an error is ending: rendering its frames would only be thrown away
        streams = [s for s in self._streams if s.pending and not s.closed and s.error is None]
        if not streams:
            return []
        start = self._rr % len(streams)
        self._rr += 1
        order = streams[start:] + streams[:start]
        taken: dict[int, list[FrameJob]] = {}
        budget = self.max_batch
        while budget:
            progressed = False
            for s in order:
                if budget and s.pending:
                    taken.setdefault(s.id, []).append(s.pending.popleft())
                    budget -= 1
                    progressed = True
            if not progressed:
                break
        batch = [(s, taken[s.id]) for s in order if s.id in taken]
        for s, jobs in batch:
            s.rendering += len(jobs)
            self.stats.frames_inflight += len(jobs)
        return batch

    def _loop(self) -> None:
        while True:
            with self.cond:
                while not self._stopping and not (batch := self._take()):
                    self.cond.wait()
                if self._stopping:
                    return
            results = self._render(batch)
            with self.cond:
                for (stream, jobs), frames in zip(batch, results):
                    stream.rendering -= len(jobs)
                    self.stats.frames_inflight -= len(jobs)
                    if stream.closed:
                        continue
                    if isinstance(frames, BaseException):
                        stream.error = ("INTERNAL", f"rendering failed: {type(frames).__name__}: {frames}")
                        continue
                    for rendered in frames:
                        self.stats.frames_rendered += 1
                        if stream.latest and len(stream.out) >= stream.depth:
                            stream.out.popleft()
                            stream.dropped += 1
                            self.stats.frames_dropped += 1
                        stream.out.append(rendered)
                        stream.max_out = max(stream.max_out, len(stream.out))
                        self.stats.max_queue_depth = max(self.stats.max_queue_depth, len(stream.out))
                self._count_failures(results)
                self.cond.notify_all()

    def _count_failures(self, results: list[Any]) -> None:
        """After a step (cond held): reset the count when anything rendered, else count the step and give the
        engine up at `max_failures` in a row (module docstring)."""
        errors = [r for r in results if isinstance(r, BaseException)]
        if len(errors) < len(results):
            self._failed_steps = 0
            return
        self._failed_steps += 1
        if self._failed_steps < self.max_failures or self.unusable is not None:
            return
        last = errors[-1]
        self.unusable = (f"the render engine is unusable: {self._failed_steps} render steps in a row failed, the "
                         f"last with {type(last).__name__}: {last}; the server must be restarted")
        for stream in self._streams:
            stream.pending.clear()
            if stream.error is None:
                stream.error = ("UNAVAILABLE", self.unusable)
        if self.on_unusable is not None:
            self.on_unusable(self.unusable)

    def _render(self, batch: list[tuple[StreamState, list[FrameJob]]]) -> list[Any]:
        """Frames per stream of the batch; a failing run is retried stream by stream, so only the stream whose
        frames fail gets the error (reliability.md F7)."""
        from otavatar.runtime import FrameRequest

        requests = [FrameRequest(s.avatar, np.stack([j.window for j in jobs]), np.stack([j.camera for j in jobs]))
                    for s, jobs in batch]
        n = sum(len(jobs) for _, jobs in batch)
        start = time.perf_counter()
        try:
            outputs = self.engine.render_many(requests)
        except Exception as e:   # an ORT run failure: INTERNAL for the stream(s) concerned, the loop goes on
            if len(requests) == 1:
                with self.cond:
                    self.stats.render_errors += 1
                return [e]
            return [self._render([item])[0] for item in batch]
        render_ms = 1000.0 * (time.perf_counter() - start)
        return [[RenderedFrame(j.index, out.frames[k], j.ready, 1000.0 * (start - j.ready), render_ms, n)
                 for k, j in enumerate(jobs)] for (_, jobs), out in zip(batch, outputs)]

