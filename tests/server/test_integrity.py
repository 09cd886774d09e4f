"""Model integrity at start (reliability.md F8, S5): a model folder that does not load leaves the server live but
not ready -- gRPC listens, health NOT_SERVING, every AvatarService call UNAVAILABLE naming the load error, a log
line saying why -- and the avatar store as it was. Each test corrupts its own copy of the tiny export."""
from __future__ import annotations

import dataclasses
import json
import shutil
import time
from pathlib import Path

import grpc
import pytest

from conftest import TOKEN_A, ServerProcess, token_file
from otavatar.client import AvatarClient
from otavatar.server._proto import avatar_pb2_grpc as pb_grpc
from otavatar.server.service import SERVICE_NAME
from otavatar.server.store import READY, AvatarStore
from test_auth import _calls

ESCAPE = "../../etc/passwd"


def _copy(tiny_model, tmp_path: Path) -> Path:
    models = tmp_path / "models"
    shutil.copytree(tiny_model.onnx, models)
    return models


def _flip_byte(models: Path) -> str:
    path = models / "generator.onnx"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    return "generator.onnx: sha256"


def _remove_file(models: Path) -> str:
    (models / "generator.onnx").unlink()
    return "generator.onnx is listed in the manifest but missing"


def _escaping_onnx() -> bytes:
    """A valid ONNX graph whose one initializer lives in external data at ../../etc/passwd (S5)."""
    pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    tensor = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[4], data_location=TensorProto.EXTERNAL)
    for key, value in (("location", ESCAPE), ("offset", "0"), ("length", "16")):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value
    graph = helper.make_graph([helper.make_node("Identity", ["w"], ["y"])], "escape", [],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])], initializer=[tensor])
    # serialised directly: onnx.save would try to resolve the external data itself
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def _escape_and_resign(models: Path) -> str:
    """The escaping graph with the manifest's sha256 updated too: the checksum passes, ONNX Runtime must refuse."""
    from otavatar.runtime import sha256_file

    (models / "controller.onnx").write_bytes(_escaping_onnx())
    manifest = json.loads((models / "manifest.json").read_text())
    manifest["files"]["controller.onnx"] = sha256_file(models / "controller.onnx")
    (models / "manifest.json").write_text(json.dumps(manifest))
    return "escapes model directory"


def _seed_store(data: Path, avatar_file: Path) -> str:
    """A READY avatar of tenant alice, written before the server starts."""
    store = AvatarStore(data)
    try:
        return store.import_ready("alice", avatar_file.read_bytes(), "fp", name="kept").id
    finally:
        store.close()


def _start(models: Path, data: Path, logs: list[str]):
    from otavatar.server import Server, ServerConfig

    config = ServerConfig(models=models, data=data, port=0, tokens=token_file(data.parent), threads=1,
                          grace_s=1.0, drain_delay_s=0.0)
    return Server(config, log=logs.append).start()


def _assert_not_ready(port: int, avatar_id: str, expected: str) -> None:
    """Health NOT_SERVING for "" and the service; every RPC (unary, server- and bidi-streaming) UNAVAILABLE."""
    target = f"127.0.0.1:{port}"
    with AvatarClient(target) as anonymous:
        assert anonymous.health() == "NOT_SERVING"
        assert anonymous.health(SERVICE_NAME) == "NOT_SERVING"
    with grpc.insecure_channel(target) as channel:
        calls = _calls(pb_grpc.AvatarServiceStub(channel), avatar_id)
        answers = {}
        for rpc, call in calls.items():
            with pytest.raises(grpc.RpcError) as err:
                call((("authorization", f"Bearer {TOKEN_A}"),))
            answers[rpc] = (err.value.code(), err.value.details())
        wrong = {rpc: a for rpc, a in answers.items()
                 if a[0] != grpc.StatusCode.UNAVAILABLE or not a[1].startswith("model not loaded: ")
                 or expected not in a[1]}
        assert not wrong, wrong
        with pytest.raises(grpc.RpcError) as err:       # no token: the reason (server paths) is not shown
            calls["ListAvatars"](())
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


def _assert_store_kept(data: Path, avatar_id: str, blob: bytes) -> None:
    store = AvatarStore(data)
    try:
        record = store.get("alice", avatar_id)
        assert record is not None and record.state == READY and record.name == "kept"
        assert store.read_blob(record) == blob
    finally:
        store.close()


@pytest.mark.parametrize("corrupt", [_flip_byte, _remove_file, _escape_and_resign],
                         ids=["flipped-byte", "missing-file", "escaping-graph-resigned"])
def test_f8_a_broken_model_folder_is_live_but_not_ready(tiny_model, avatar_file, tmp_path, corrupt):
    models = _copy(tiny_model, tmp_path)
    expected = corrupt(models)
    data = tmp_path / "data"
    avatar_id = _seed_store(data, avatar_file)
    logs: list[str] = []
    server = _start(models, data, logs)
    try:
        assert server.unavailable_reason is not None and expected in server.unavailable_reason
        _assert_not_ready(server.port, avatar_id, expected)
    finally:
        server.stop(grace=1.0)
    line = next(m for m in logs if m.startswith("NOT READY"))
    assert expected in line and f"re-export {models}, then restart" in line, line
    assert any("0 interrupted, 0 missing and 0 corrupt" in m for m in logs), logs   # recovery ran, found nothing
    _assert_store_kept(data, avatar_id, avatar_file.read_bytes())       # DeleteAvatar above did nothing


def test_s5_escaping_external_data_is_refused_by_checksum_before_onnx_runtime(tiny_model, avatar_file, tmp_path,
                                                                              monkeypatch):
    """A manifest-listed graph replaced by one reading ../../etc/passwd: the sha256 check refuses it, so no
    ONNX Runtime session is ever created and nothing outside the model folder is opened."""
    import onnxruntime

    models = _copy(tiny_model, tmp_path)
    (models / "controller.onnx").write_bytes(_escaping_onnx())
    sessions = []
    real = onnxruntime.InferenceSession

    def spy(path, *args, **kwargs):
        sessions.append(path)
        return real(path, *args, **kwargs)

    monkeypatch.setattr(onnxruntime, "InferenceSession", spy)
    data = tmp_path / "data"
    avatar_id = _seed_store(data, avatar_file)
    server = _start(models, data, [])
    try:
        assert "controller.onnx: sha256" in server.unavailable_reason
        assert "re-export" in server.unavailable_reason
        _assert_not_ready(server.port, avatar_id, "controller.onnx: sha256")
    finally:
        server.stop(grace=1.0)
    assert sessions == []


def test_f8_serve_process_stays_live_and_drains(tiny_model, tmp_path):
    """`otavatar serve` on a corrupt folder: the process keeps running NOT_SERVING, says why on stderr, and
    exits 0 on SIGTERM."""
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    models = _copy(tiny_model, tmp_path)
    _flip_byte(models)
    proc = ServerProcess(dataclasses.replace(tiny_model, onnx=models), tmp_path / "data")
    try:
        deadline = time.monotonic() + 60
        status = None
        with grpc.insecure_channel(proc.target) as channel:
            stub = health_pb2_grpc.HealthStub(channel)
            while status != health_pb2.HealthCheckResponse.NOT_SERVING and time.monotonic() < deadline:
                assert proc.proc.poll() is None, proc.log.read_text()
                try:
                    status = stub.Check(health_pb2.HealthCheckRequest(), timeout=1).status
                except grpc.RpcError:
                    time.sleep(0.1)
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING, proc.log.read_text()
        assert proc.proc.poll() is None                                     # live
        assert proc.terminate() == 0, proc.log.read_text()
    finally:
        proc.kill9()
    log = proc.log.read_text()
    assert "NOT READY: model not loaded: " in log and "generator.onnx: sha256" in log, log
