"""Generate the Python stubs of proto/avatar/v1/avatar.proto into sdk/server/_proto/ (committed files).

    python proto/generate_python.py            # rewrite sdk/server/_proto/avatar_pb2{,_grpc}.py{,i}

Needs grpcio-tools at exactly the version pyproject.toml's dev extra pins: protoc stamps its own version into
the stubs, so another release rewrites them although the proto did not change. The stubs live flat in
otavatar.server._proto, so the one absolute import protoc writes into the gRPC module
(`from avatar.v1 import avatar_pb2`) becomes a relative one.
tests/server/test_proto.py regenerates into a temporary folder and checks the committed files are identical.
"""
from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto"
PROTO = "avatar/v1/avatar.proto"
STUB_DIR = ROOT / "sdk" / "server" / "_proto"
FILES = ("avatar_pb2.py", "avatar_pb2.pyi", "avatar_pb2_grpc.py")
_ABSOLUTE = "from avatar.v1 import avatar_pb2 as"
_RELATIVE = "from . import avatar_pb2 as"
PYPROJECT = ROOT / "pyproject.toml"


def pinned_grpcio_tools() -> str:
    """The grpcio-tools version pyproject.toml pins (`grpcio-tools==X`); the committed stubs require grpcio >= X."""
    found = re.search(r'"grpcio-tools==([^"]+)"', PYPROJECT.read_text())
    if found is None:
        raise RuntimeError(f"{PYPROJECT}: no \"grpcio-tools==<version>\" pin in the dev extra")
    return found.group(1)


def generate(out_dir: str | Path) -> list[Path]:
    """Write the stubs into `out_dir` (flat); returns the files written."""
    from importlib.metadata import version

    from grpc_tools import protoc

    installed, pinned = version("grpcio-tools"), pinned_grpcio_tools()
    if installed != pinned:
        raise RuntimeError(f"grpcio-tools {installed} is installed; the stubs are generated with {pinned}: "
                           f"pip install grpcio-tools=={pinned}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        include = Path(protoc.__file__).parent / "_proto"       # google/protobuf/*.proto shipped with grpcio-tools
        args = ["protoc", f"-I{PROTO_DIR}", f"-I{include}", f"--python_out={tmp}", f"--pyi_out={tmp}",
                f"--grpc_python_out={tmp}", str(PROTO_DIR / PROTO)]
        if protoc.main(args) != 0:
            raise RuntimeError(f"protoc failed on {PROTO_DIR / PROTO}")
        written = []
        for name in FILES:
            text = (Path(tmp) / "avatar" / "v1" / name).read_text()
            if name.endswith("_grpc.py"):
                if _ABSOLUTE not in text:
                    raise RuntimeError(f"{name}: expected the line {_ABSOLUTE!r} from protoc")
                text = text.replace(_ABSOLUTE, _RELATIVE)
            (out_dir / name).write_text(text)
            written.append(out_dir / name)
    return written


if __name__ == "__main__":
    for path in generate(sys.argv[1] if len(sys.argv) > 1 else STUB_DIR):
        print(path)
