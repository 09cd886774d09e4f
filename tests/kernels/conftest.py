"""Kernel-test plumbing: where the Triton kernels run (CPU interpreter or CUDA) and per-dtype tolerances.

Tests that take the `kcase` fixture run once per case below. `interpreter` cases run only under
TRITON_INTERPRET=1 (it must be set before triton is imported, so the Makefile runs them as their own job);
`cuda` cases only where a GPU is present and the interpreter is off. Nothing here imports triton unless a
case is about to run, so the normal job never does on a CPU machine.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import pytest
import torch


@dataclass(frozen=True)
class KernelCase:
    device: str
    dtype: torch.dtype
    # Error bound: max|actual - expected| <= rel * max(1, max|expected|), expected computed by the torch
    # reference in float32 (float64 where noted) on the same (rounded) inputs.
    rel: float
    why: str

    @property
    def interpreted(self) -> bool:
        return self.device == "cpu"


CASES = [
    pytest.param(KernelCase("cpu", torch.float32, 2e-5,
                            "float32 in numpy with another summation order: ~1e-6 relative seen here"),
                 marks=pytest.mark.interpreter, id="interp-f32"),
    pytest.param(KernelCase("cuda", torch.float32, 1e-4,
                            "FMA contraction of scale*p + 1 moves a 256-wide plane's tap by ~1 ulp (8e-6 texel) x "
                            "texel steps up to ~4: 1.9e-5 measured on H100, 5x margin"),
                 marks=pytest.mark.gpu, id="cuda-f32"),
    pytest.param(KernelCase("cuda", torch.float16, 4e-3,
                            "fp16 outputs of float32 math: half-ulp is 4.9e-4 relative, 8x margin for sums of "
                            "rounded terms"),
                 marks=pytest.mark.gpu, id="cuda-f16"),
]


def pytest_generate_tests(metafunc):
    if "kcase" in metafunc.fixturenames:
        metafunc.parametrize("kcase", CASES)


@pytest.fixture
def tk(kcase: KernelCase):
    """`otavatar.kernels.triton` for this case, or a skip with the reason it cannot run here."""
    interpreting = os.environ.get("TRITON_INTERPRET", "") == "1"
    if kcase.interpreted and not interpreting:
        pytest.skip("interpreter case: run with TRITON_INTERPRET=1 set before import (make test does)")
    if not kcase.interpreted:
        if interpreting:
            pytest.skip("CUDA case: TRITON_INTERPRET=1 is set")
        if not torch.cuda.is_available():
            pytest.skip("CUDA case: no GPU here")
    pytest.importorskip("triton")
    import otavatar.kernels.triton as module

    return module


# Largest error / scale per device and dtype, printed at the end of the run (the numbers behind the table).
WORST: dict[str, tuple[float, str]] = {}


def pytest_terminal_summary(terminalreporter):
    for key, (value, what) in sorted(WORST.items()):
        terminalreporter.write_line(f"kernel max error/scale {key}: {value:.3g} ({what})")


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rel: float, what: str = "") -> float:
    """max|actual - expected| <= rel * max(1, max|expected|), NaNs required in the same places."""
    key = f"{actual.device.type}-{str(actual.dtype).replace('torch.', '')}"
    a = actual.detach().double().cpu()
    e = expected.detach().double().cpu()
    assert a.shape == e.shape, f"{what}: shape {tuple(a.shape)} != {tuple(e.shape)}"
    assert torch.equal(torch.isnan(a), torch.isnan(e)), f"{what}: NaN positions differ"
    finite = ~torch.isnan(e)
    if not finite.any():
        return 0.0
    err = (a[finite] - e[finite]).abs().max().item()
    scale = max(1.0, e[finite].abs().max().item())
    if err / scale > WORST.get(key, (-1.0, ""))[0]:
        WORST[key] = (err / scale, what)
    assert err <= rel * scale, f"{what}: max error {err:.3g} > {rel:g} * {scale:.3g}"
    return err


@pytest.fixture
def close():
    """The `assert_close` helper (fixtures, because test modules cannot import a conftest by name)."""
    return assert_close


def inputs_for(kcase: KernelCase, *tensors: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(kernel inputs on the case's device/dtype, float32 reference inputs holding the same rounded values)."""
    kernel = [t.to(kcase.device, kcase.dtype) for t in tensors]
    ref = [t.to(torch.float32) for t in kernel]
    return kernel, ref


@pytest.fixture
def cast():
    return inputs_for
