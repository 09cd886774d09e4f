"""Fixtures of the server tests: a seeded random tiny model exported once (cached across runs in pytest's
cache folder, keyed by the model fingerprint: the export takes ~50 s on the shared 2-core CPU), a portrait, an
avatar file, and servers -- in process (session scope) or as a subprocess (`otavatar serve`) where a test
needs kill -9 or SIGTERM. Everything runs single-threaded (ORT intra-op 1, torch 1) on loopback.
"""
from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("grpc")
pytest.importorskip("grpc_health")
pytest.importorskip("onnxruntime")

REPO = Path(__file__).resolve().parents[2]
TOKENS = {"a" * 32: "alice", "b" * 32: "bob"}
TOKEN_A, TOKEN_B = "a" * 32, "b" * 32


@dataclass(frozen=True)
class TinyModel:
    weights: Path          # otavatar .safetensors (generator + controller), for inversion
    onnx: Path             # the export folder, for rendering
    fingerprint: str


@pytest.fixture(scope="session")
def tiny_model(request, tmp_path_factory) -> TinyModel:
    torch = pytest.importorskip("torch")
    pytest.importorskip("onnxscript")
    torch.set_num_threads(1)
    from otavatar.export import export_models, models_for_export
    from otavatar.model import fingerprint
    from otavatar.weights import save_models

    generator, controller, source = models_for_export(preset="tiny", seed=0)
    fp = fingerprint(generator, controller)
    try:
        root = Path(request.config.cache.mkdir("otavatar-server-tiny")) / fp[:16]
    except Exception:  # cache disabled (-p no:cacheprovider)
        root = tmp_path_factory.mktemp("tiny")
    onnx, weights = root / "onnx", root / "tiny.safetensors"
    manifest = onnx / "manifest.json"
    # both xdist workers ask for this at once: the first builds under the lock, the other waits and reuses it
    # (without the lock one worker's rmtree removed the folder the other was exporting into)
    with open(root.parent / f"{root.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (manifest.is_file() and weights.is_file()
                and json.loads(manifest.read_text()).get("model_fingerprint") == fp):
            shutil.rmtree(root, ignore_errors=True)
            root.mkdir(parents=True)
            save_models(weights, generator=generator, controller=controller)
            export_models(onnx, generator, controller, verify=False, source=source)
    return TinyModel(weights=weights, onnx=onnx, fingerprint=fp)


@pytest.fixture(scope="session")
def portrait():
    """(PNG bytes of a 128 px SynthHeads portrait, its 25-d camera)."""
    from PIL import Image

    from otavatar.demo import held_out_portrait

    clip = held_out_portrait(0, 128)
    buf = io.BytesIO()
    Image.fromarray(clip.images[0]).save(buf, format="PNG")
    return buf.getvalue(), np.asarray(clip.cameras[0], np.float32)


@pytest.fixture(scope="session")
def avatar_file(tiny_model, tmp_path_factory) -> Path:
    """An avatar of the tiny model (w_avg identity, no inversion: the tests check plumbing, not likeness)."""
    import torch

    from otavatar.avatar import Avatar
    from otavatar.camera import look_at_camera
    from otavatar.model import Model

    model = Model.resolve(str(tiny_model.weights))
    ws = model.generator.w_avg.detach()[None].repeat(model.num_ws, 1)
    avatar = Avatar(model, ws, torch.zeros(18), look_at_camera(0.0, 0.0), np.zeros(70, np.float32))
    return avatar.save(tmp_path_factory.mktemp("avatar") / "tiny.avatar")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def token_file(folder: Path) -> Path:
    path = folder / "tokens.txt"
    path.write_text("# token tenant\n" + "".join(f"{t} {n}\n" for t, n in TOKENS.items()))
    return path


@pytest.fixture(scope="session")
def server(tiny_model, tmp_path_factory):
    """An in-process server with auth (tenants alice and bob), 2 streams, 2 jobs, (1, 1) inversion steps."""
    from otavatar.server import Server, ServerConfig

    folder = tmp_path_factory.mktemp("server")
    config = ServerConfig(models=tiny_model.onnx, data=folder / "data", port=0, tokens=token_file(folder),
                          weights=tiny_model.weights, max_streams=2, max_jobs=2, steps=(1, 1), threads=1,
                          max_batch=4, idle_timeout_s=3.0, grace_s=2.0, drain_delay_s=0.0)
    srv = Server(config, log=lambda m: None).start()
    yield srv
    srv.stop(grace=1.0)


@pytest.fixture
def client(server):
    from otavatar.client import AvatarClient

    with AvatarClient(f"127.0.0.1:{server.port}", token=TOKEN_A) as c:
        yield c


@pytest.fixture(scope="session")
def ready_avatar(server, avatar_file) -> str:
    """A READY avatar of tenant alice (imported)."""
    from otavatar.client import AvatarClient

    with AvatarClient(f"127.0.0.1:{server.port}", token=TOKEN_A) as c:
        return c.import_avatar(avatar_file)


def coeff_rows(n: int, seed: int = 0) -> np.ndarray:
    """n plausible controller rows [n,70] (small expression values, frontal pose)."""
    rng = np.random.default_rng(seed)
    rows = np.zeros((n, 70), np.float32)
    rows[:, :64] = 0.3 * rng.standard_normal((n, 64))
    return rows


def wait_idle(server, timeout: float = 10.0) -> None:
    """Until the cleanup invariant holds: no active stream, opened == closed, nothing in flight."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with server.scheduler.cond:
            s = server.stats
            if s.streams_active == 0 and s.streams_opened == s.streams_closed and s.frames_inflight == 0:
                return
        time.sleep(0.02)
    raise AssertionError(f"server not idle after {timeout} s: {server.stats}")


# -- subprocess servers ----------------------------------------------------------------------------------------

class ServerProcess:
    """`python -m otavatar.cli serve ...` in a subprocess (for kill -9 and SIGTERM)."""

    def __init__(self, tiny_model: TinyModel, data: Path, *, env: dict | None = None, extra: tuple = ()) -> None:
        self.port = free_port()
        self.data = data
        args = [sys.executable, "-m", "otavatar.cli", "serve", "--models", str(tiny_model.onnx), "--data", str(data),
                "--port", str(self.port), "--weights", str(tiny_model.weights), "--steps", "1", "1",
                "--threads", "1", *extra]
        self.log = data.parent / f"server-{self.port}.log"
        self.proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=open(self.log, "w"),
                                     env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}, cwd=REPO)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def wait_serving(self, timeout: float = 60.0) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise AssertionError(f"server exited with {self.proc.returncode}: {self.log.read_text()}")
                try:
                    if stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status == 1:
                        return
                except grpc.RpcError:
                    time.sleep(0.1)
        raise AssertionError(f"server not serving after {timeout} s: {self.log.read_text()}")

    def kill9(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)

    def terminate(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout=timeout)
