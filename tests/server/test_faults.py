"""Faults of the render path. Render failures (reliability.md F7): (a) an ONNX Runtime run that fails ends only
the stream whose frames it held, with INTERNAL, and the others keep their frames in order; (b) an engine that
fails on every run (a lost device) turns the server not ready -- health NOT_SERVING, open and new streams
UNAVAILABLE naming the last error -- until it is restarted. A frozen client (F2, slow): SIGSTOP blocks no other
stream and keepalive frees its slot.

The test hook: `otavatar.runtime.Engine` is replaced, for one in-process server, by a subclass whose controller
session fails when a `Faults` plan says so (the controller runs first in every render, and its input holds the
coefficients, so a fault can target one stream's frame by a value no other frame has).
"""
from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import grpc
import numpy as np
import pytest

from conftest import REPO, TOKEN_A, coeff_rows, token_file, wait_idle
from otavatar.server._proto import avatar_pb2 as pb
from otavatar.server._proto import avatar_pb2_grpc as pb_grpc
from otavatar.server.scheduler import FrameJob, RenderScheduler, StreamClosed, StreamState

META = (("authorization", f"Bearer {TOKEN_A}"),)
POISON = 123.25          # a coefficient value no test row holds (they are 0.3 * N(0, 1)), exact in float32
INJECTED = "injected: CUDA failure 700: an illegal memory access was encountered"


@dataclass
class Faults:
    """What the controller session does. poison: fail runs whose input holds this value, `times` times (None:
    every such run); every_run: fail them all (device lost). gate: runs wait while it is clear."""

    poison: float | None = None
    times: int | None = None
    every_run: bool = False
    failed: int = 0
    gate: threading.Event = field(default_factory=threading.Event)
    held: threading.Event = field(default_factory=threading.Event)     # a run is waiting at the gate

    def __post_init__(self) -> None:
        self.gate.set()

    def check(self, x: np.ndarray) -> None:
        if not self.gate.is_set():
            self.held.set()
            self.gate.wait(30)
        hit = self.every_run or (self.poison is not None and bool((x == self.poison).any()))
        if hit and (self.times is None or self.failed < self.times):
            self.failed += 1
            raise RuntimeError(f"{INJECTED} ({self.failed})")


class FaultySession:
    def __init__(self, session, faults: Faults) -> None:
        self._session, self._faults = session, faults

    def run(self, output_names, feeds, *args, **kwargs):
        self._faults.check(feeds["x"])
        return self._session.run(output_names, feeds, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._session, name)


@pytest.fixture
def faults(monkeypatch) -> Faults:
    """The plan of the engines servers build during this test."""
    import otavatar.runtime

    plan = Faults()

    class FaultyEngine(otavatar.runtime.Engine):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            self._sessions["controller"] = FaultySession(self._sessions["controller"], plan)

    monkeypatch.setattr(otavatar.runtime, "Engine", FaultyEngine)
    return plan


@pytest.fixture
def servers(tiny_model, tmp_path):
    """start(**settings) -> an in-process server on this test's store (a second start is a restart); logs: the
    log lines of all of them. Servers started after `faults` get the faulty engine."""
    from otavatar.server import Server, ServerConfig

    logs: list[str] = []
    started = []

    def start(**settings):
        settings = {"max_batch": 1, "idle_timeout_s": 30.0, **settings}
        config = ServerConfig(models=tiny_model.onnx, data=tmp_path / "data", port=0, tokens=token_file(tmp_path),
                              weights=tiny_model.weights, max_streams=4, steps=(1, 1), threads=1, grace_s=1.0,
                              drain_delay_s=0.0, **settings)
        started.append(Server(config, log=logs.append).start())
        return started[-1]

    yield SimpleNamespace(start=start, logs=logs)
    for server in started:
        server.stop(grace=1.0)


class Stream:
    """One RenderStream driven message by message; a thread collects the frame indices and the final status."""

    def __init__(self, channel: grpc.Channel, avatar_id: str) -> None:
        self.requests: queue.Queue = queue.Queue()
        self.requests.put(pb.RenderRequest(header=pb.StreamHeader(avatar_id=avatar_id, window_mode=pb.CAUSAL)))
        self.indices: list[int] = []
        self.error: grpc.RpcError | None = None
        self.got = threading.Condition()
        self._call = pb_grpc.AvatarServiceStub(channel).RenderStream(iter(self.requests.get, None), metadata=META)
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        try:
            for response in self._call:
                with self.got:
                    self.indices.append(response.index)
                    self.got.notify_all()
        except grpc.RpcError as e:
            self.error = e

    def send(self, index: int, coeffs: np.ndarray) -> None:
        self.requests.put(pb.RenderRequest(frame=pb.CoefficientFrame(index=index, coeffs=list(coeffs))))

    def wait_frames(self, n: int, timeout: float = 30.0) -> None:
        with self.got:
            assert self.got.wait_for(lambda: len(self.indices) >= n or not self._thread.is_alive(), timeout), \
                f"{len(self.indices)} of {n} frames after {timeout} s"

    def finish(self, end: bool = True, timeout: float = 30.0) -> "Stream":
        """Send the end marker (or not), release the request iterator, wait for the final status."""
        if end:
            self.requests.put(pb.RenderRequest(end=pb.EndOfStream()))
        self.requests.put(None)
        self._thread.join(timeout)
        assert not self._thread.is_alive(), f"the stream did not end within {timeout} s"
        return self


def poisoned() -> np.ndarray:
    row = np.zeros(70, np.float32)
    row[0] = POISON
    return row


def health(port: int) -> str:
    from otavatar.client import AvatarClient

    with AvatarClient(f"127.0.0.1:{port}") as anonymous:
        return anonymous.health()


def import_avatar(server, avatar_file) -> str:
    from otavatar.client import AvatarClient

    with AvatarClient(f"127.0.0.1:{server.port}", token=TOKEN_A) as client:
        return client.import_avatar(avatar_file)


def wait_until(condition, server, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.scheduler.cond:
            if condition():
                return
        time.sleep(0.01)
    raise AssertionError(f"not reached in {timeout} s: {server.stats}")


def assert_one_good_stream(channel, avatar_id: str) -> None:
    """reliability.md 3.2: every fault test ends with one successful RenderStream."""
    stream = Stream(channel, avatar_id)
    for i, row in enumerate(coeff_rows(2)):
        stream.send(i, row)
    assert stream.finish().error is None and stream.indices == [0, 1]


@pytest.mark.parametrize("max_batch, times", [(1, 1), (4, None)], ids=["run-fails-once", "batch-retried-per-stream"])
def test_f7a_a_failing_run_ends_only_its_stream(faults, servers, avatar_file, max_batch, times):
    """Stream A's frame 0 is held in a run at the gate while A's frame 1 and B's poisoned frame 0 queue, so the
    next step holds both streams (with max_batch 4 in one run, whose failure is retried stream by stream)."""
    server = servers.start(max_batch=max_batch)
    avatar_id = import_avatar(server, avatar_file)
    faults.poison, faults.times = POISON, times
    rows = coeff_rows(8)
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        faults.gate.clear()
        a = Stream(channel, avatar_id)
        a.send(0, rows[0])
        assert faults.held.wait(30), "the render loop never ran A's frame 0"
        a.send(1, rows[1])
        b = Stream(channel, avatar_id)
        b.send(0, poisoned())
        wait_until(lambda: sum(len(s.pending) for s in server.scheduler._streams) == 2, server)
        faults.gate.set()
        b.finish(end=False)
        assert b.error is not None and b.error.code() == grpc.StatusCode.INTERNAL, b.error
        assert "rendering failed: RuntimeError: " + INJECTED in b.error.details(), b.error.details()
        assert b.indices == []
        for i in range(2, len(rows)):        # A goes on after B ended
            a.send(i, rows[i])
        a.finish()
        assert a.error is None and a.indices == list(range(len(rows)))
        assert server.stats.render_errors == 1 and faults.failed == (1 if times else 2)
        assert health(server.port) == "SERVING" and server.unavailable_reason is None
        wait_idle(server)
        assert_one_good_stream(channel, avatar_id)
    assert not any(m.startswith("NOT READY") for m in servers.logs), servers.logs


def test_f7b_an_engine_failing_every_run_turns_the_server_not_ready(faults, servers, avatar_file):
    """Every run fails: each of 3 streams (the default max_render_failures) ends INTERNAL with its frame; after
    the third, health is NOT_SERVING, the stream left open ends UNAVAILABLE, new calls are UNAVAILABLE naming the
    last error. A restart (same store, a working engine) serves again."""
    server = servers.start()
    avatar_id = import_avatar(server, avatar_file)
    limit = server.config.max_render_failures
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        idle = Stream(channel, avatar_id)          # open through the failure, with no frame in flight
        idle.send(0, coeff_rows(1)[0])
        idle.wait_frames(1)
        faults.every_run = True
        for k in range(limit):
            assert server.unavailable_reason is None, f"not ready after {k} failed steps"
            failing = Stream(channel, avatar_id)
            failing.send(0, coeff_rows(1)[0])
            failing.finish(end=False)
            assert failing.error.code() == grpc.StatusCode.INTERNAL, failing.error
        # on_unusable runs before the last failing stream can see its status: no waiting needed
        assert health(server.port) == "NOT_SERVING"
        last = f"the last with RuntimeError: {INJECTED} ({limit})"
        idle.finish(end=False)
        assert idle.error.code() == grpc.StatusCode.UNAVAILABLE and last in idle.error.details(), idle.error
        assert idle.indices == [0]
        new = Stream(channel, avatar_id)
        new.finish()
        assert new.error.code() == grpc.StatusCode.UNAVAILABLE and last in new.error.details(), new.error
        with pytest.raises(grpc.RpcError) as err:
            pb_grpc.AvatarServiceStub(channel).ListAvatars(pb.ListAvatarsRequest(), metadata=META)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE and last in err.value.details()
    assert server.stats.render_errors == limit
    line = next(m for m in servers.logs if m.startswith("NOT READY"))
    assert last in line and "restart the server" in line, line
    wait_idle(server)
    server.stop(grace=1.0)
    faults.every_run = False                         # the supervisor's restart: a fresh process, a working device
    restarted = servers.start()
    with grpc.insecure_channel(f"127.0.0.1:{restarted.port}") as channel:
        assert health(restarted.port) == "SERVING"
        assert_one_good_stream(channel, avatar_id)    # the avatar survived in the store


class _ScriptedEngine:
    """render_many fails while `fail` is set, else returns black frames."""

    fail = False

    def render_many(self, requests):
        if self.fail:
            raise RuntimeError("scripted failure")
        return [SimpleNamespace(frames=np.zeros((len(r.windows), 2, 2, 3), np.uint8)) for r in requests]


def _step(scheduler: RenderScheduler, engine: _ScriptedEngine, fail: bool) -> StreamState:
    """One stream, one frame, rendered or failed; the stream is closed again."""
    engine.fail = fail
    stream = StreamState(avatar=None, latest=True, depth=2)
    scheduler.open(stream)
    scheduler.put(stream, FrameJob(0, np.zeros((70, 27), np.float32), np.zeros(25, np.float32), time.perf_counter()))
    with scheduler.cond:
        assert scheduler.cond.wait_for(lambda: stream.error is not None or stream.out, 10)
    scheduler.close(stream)
    return stream


def test_f7b_a_step_that_renders_resets_the_failure_count():
    engine, reasons = _ScriptedEngine(), []
    scheduler = RenderScheduler(engine, max_batch=1, max_failures=3, on_unusable=reasons.append)
    try:
        for fail in (True, True, False, True, True):
            assert (_step(scheduler, engine, fail).error is not None) == fail
        assert scheduler.unusable is None and reasons == []
        assert _step(scheduler, engine, True).error[0] == "INTERNAL"      # the third in a row
        assert reasons == [scheduler.unusable] and "RuntimeError: scripted failure" in reasons[0]
        engine.fail = False                                                 # too late: no reload
        stream = StreamState(avatar=None, latest=True, depth=2)
        scheduler.open(stream)
        assert stream.error == ("UNAVAILABLE", reasons[0])
        with pytest.raises(StreamClosed):
            scheduler.put(stream, FrameJob(0, np.zeros((70, 27), np.float32), np.zeros(25, np.float32), 0.0))
    finally:
        scheduler.stop()
    assert scheduler.stats.render_errors == 5                              # every failed step, counted


# -- F2: a frozen client -------------------------------------------------------------------------------------

# A client process streaming at 30 fps, Delivery LATEST, 1024 px RAW frames (3 MB each: far beyond an HTTP/2
# flow-control window, so once it stops reading the server's write of its frame stalls at once). It prints one
# line when its first frame arrives.
FROZEN_CLIENT = r"""
import sys, time
import grpc
from otavatar.server._proto import avatar_pb2 as pb, avatar_pb2_grpc as pb_grpc

target, token, avatar_id = sys.argv[1:4]

def requests():
    yield pb.RenderRequest(header=pb.StreamHeader(avatar_id=avatar_id, window_mode=pb.CAUSAL, delivery=pb.LATEST,
                                                  queue_depth=2, output_size=1024))
    for index in range(10**6):
        yield pb.RenderRequest(frame=pb.CoefficientFrame(index=index, coeffs=[0.0] * 70))
        time.sleep(1 / 30)

stub = pb_grpc.AvatarServiceStub(grpc.insecure_channel(target))
for response in stub.RenderStream(requests(), metadata=(("authorization", "Bearer " + token),)):
    if response.index == 0:
        print("streaming", flush=True)
"""


@pytest.mark.slow
def test_f2_a_frozen_client_blocks_no_other_stream_and_its_slot_is_freed(servers, avatar_file, tmp_path):
    """SIGSTOP a client process mid-stream: stream A (another connection) keeps getting every frame in order
    while the frozen stream holds its slot, the frozen stream's queue stays within its depth (what it could not
    take is dropped and counted), and keepalive (2 s + 3 s here; 30 s + 10 s by default) closes its transport
    and frees the slot -- the idle timeout (60 s) is far too late to be what freed it."""
    import os
    import signal
    import subprocess
    import sys

    server = servers.start(keepalive_time_s=2.0, keepalive_timeout_s=3.0, idle_timeout_s=60.0)
    avatar_id = import_avatar(server, avatar_file)
    target = f"127.0.0.1:{server.port}"
    frozen = subprocess.Popen([sys.executable, "-c", FROZEN_CLIENT, target, TOKEN_A, avatar_id],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=REPO,
                              env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        assert frozen.stdout.readline().strip() == "streaming"
        with grpc.insecure_channel(target) as channel:
            a = Stream(channel, avatar_id)
            rows = iter(coeff_rows(10**4))
            sent = 0

            def feed(until: int) -> None:           # keep A 2 frames ahead of what it received
                nonlocal sent
                while sent < until:
                    a.send(sent, next(rows))
                    sent += 1

            feed(2)
            a.wait_frames(1)
            frozen.send_signal(signal.SIGSTOP)
            frozen_at = time.monotonic()
            with server.scheduler.cond:
                state = next(s for s in server.scheduler._streams if s.latest)
            before = len(a.indices)
            while True:                              # A streams on until the frozen stream's slot is freed
                with server.scheduler.cond:
                    freed = server.stats.streams_active == 1
                    received = len(a.indices)
                if freed:
                    break
                assert time.monotonic() - frozen_at < 30, "the frozen client still holds its slot after 30 s"
                feed(received + 2)
                a.wait_frames(received + 1)
            detected_s = time.monotonic() - frozen_at
            during = received - before
            feed(sent + 3)
            a.finish()
        assert a.error is None and a.indices == list(range(sent))
        assert during >= 3, f"A got {during} frames while the frozen stream held its slot ({detected_s:.1f} s)"
        assert state.closed and state.max_out <= state.depth == 2
        assert server.stats.frames_dropped == state.dropped        # A (Delivery ALL) drops nothing
        print(f"\nF2: frozen stream freed {detected_s:.1f} s after SIGSTOP (keepalive 2 s + 3 s); A got {during} "
              f"frames meanwhile; the frozen stream dropped {state.dropped} frames, max queue {state.max_out}")
    finally:
        frozen.kill()                                # SIGKILL ends a stopped process too
        frozen.wait(10)
    wait_idle(server)
    with grpc.insecure_channel(target) as channel:
        assert_one_good_stream(channel, avatar_id)
