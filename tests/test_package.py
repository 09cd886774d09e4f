"""Import cost: heavy dependencies are optional and load only when a feature needs them (DESIGN.md 9.7)."""
from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

HEAVY = ("torch", "triton", "onnxruntime", "grpc", "onnx", "cupy")


def heavy_modules_after(statement: str) -> list[str]:
    """Run `statement` in a fresh interpreter and list the heavy top-level modules it left imported."""
    code = f"import sys\n{statement}\nprint(sorted({{m.split('.')[0] for m in sys.modules}} & {set(HEAVY)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    return ast.literal_eval(out.strip())


@pytest.mark.parametrize("statement", [
    "import otavatar",
    "import otavatar.config, otavatar.camera, otavatar.coeffs",
    "import otavatar.weights",
])
def test_light_imports_pull_no_heavy_dependency(statement):
    assert heavy_modules_after(statement) == []


def test_kernels_import_torch_but_never_triton():
    assert heavy_modules_after("import otavatar.kernels, otavatar.models") == ["torch"]


def test_version_and_lazy_submodules():
    import otavatar

    assert otavatar.__version__ == "0.1.0"
    assert otavatar.camera.look_at_camera(0.0, 0.0).shape == (25,)
    with pytest.raises(AttributeError, match="no attribute 'nonexistent'"):
        otavatar.nonexistent  # noqa: B018


def test_grpc_fork_handlers_are_off_unless_the_user_chose():
    """otavatar.client / otavatar.server switch grpcio's fork handlers off before grpc loads (grpc/grpc#43055:
    a subprocess started after gRPC use died with EBADF, e.g. the ffmpeg of a video writer), but keep a user's
    explicit setting."""
    code = "import os, otavatar.client, otavatar.server; print(os.environ['GRPC_ENABLE_FORK_SUPPORT'])"
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "false"
    env["GRPC_ENABLE_FORK_SUPPORT"] = "true"
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "true"
