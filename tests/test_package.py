"""Import cost: heavy dependencies are optional and load only when a feature needs them (DESIGN.md 9.7)."""
from __future__ import annotations

import ast
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
