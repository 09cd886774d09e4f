"""The wire contract: committed Python stubs are what grpcio-tools generates today, and protoc's C# generator
(Unity) accepts the proto."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PROTO = REPO / "proto" / "avatar" / "v1" / "avatar.proto"


def _generator():
    spec = importlib.util.spec_from_file_location("generate_python", REPO / "proto" / "generate_python.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_stubs_are_fresh(tmp_path):
    pytest.importorskip("grpc_tools")
    gen = _generator()
    for path in gen.generate(tmp_path):
        committed = gen.STUB_DIR / path.name
        assert committed.read_text() == path.read_text(), \
            f"{committed} is stale: run `python proto/generate_python.py` and commit the result"


def test_stubs_describe_the_service():
    from otavatar.server._proto import avatar_pb2 as pb

    service = pb.DESCRIPTOR.services_by_name["AvatarService"]
    methods = {m.name: (m.client_streaming, m.server_streaming) for m in service.methods}
    assert methods == {"CreateAvatar": (False, True), "GetAvatar": (False, False), "ListAvatars": (False, False),
                       "DeleteAvatar": (False, False), "ImportAvatar": (False, False), "ExportAvatar": (False, False),
                       "GetServerInfo": (False, False), "RenderStream": (True, True)}
    assert pb.DESCRIPTOR.package == "avatar.v1"
    assert pb.DESCRIPTOR.GetOptions().csharp_namespace == "Otavatar.Avatar.V1"


def test_protoc_csharp_accepts_the_proto(tmp_path):
    # grpcio-tools' bundled protoc has only the Python generators; the C# one is in the protoc binary
    # (Debian: apt-get install protobuf-compiler). The gRPC C# service plugin ships only in the Grpc.Tools NuGet
    # package (no Debian or PyPI package): used when present, otherwise the messages alone are generated.
    protoc = shutil.which("protoc")
    if protoc is None:
        pytest.skip("no protoc binary on PATH (apt-get install protobuf-compiler) -- grpcio-tools' protoc has no "
                    "--csharp_out")
    args = [protoc, f"-I{REPO / 'proto'}", f"--csharp_out={tmp_path}", str(PROTO)]
    plugin = shutil.which("grpc_csharp_plugin")
    if plugin:
        args[-1:-1] = [f"--plugin=protoc-gen-grpc={plugin}", f"--grpc_out={tmp_path}"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    source = (tmp_path / "Avatar.cs").read_text()
    assert "namespace Otavatar.Avatar.V1" in source and "class RenderRequest" in source
    # the names examples/unity/AvatarClient.cs uses exist in the generated code
    for name in ("class StreamHeader", "class CoefficientFrame", "class EndOfStream", "class RenderResponse",
                 "RawRgba8 = 2", "Causal = 2", "Centered = 1", "Portrait = 1", "Latest = 2", "public long Index",
                 "public int QueueDepth", "public pb::ByteString Data"):
        assert name in source, name
    if plugin:
        assert "AvatarServiceClient" in (tmp_path / "AvatarGrpc.cs").read_text()


def test_client_and_server_imports_stay_light():
    """`import otavatar.client, otavatar.server` loads no grpc, torch or onnxruntime until used."""
    code = ("import sys, otavatar.client, otavatar.server\n"
            "print([m for m in ('grpc', 'torch', 'onnxruntime', 'google.protobuf') if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
