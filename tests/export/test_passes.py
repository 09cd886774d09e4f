"""otavatar.export.passes: each rewrite keeps ONNX Runtime's outputs (to float32 rounding) and removes what it
says it removes; patterns it must not touch are left alone."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from otavatar.export.passes import STABLE_SOFTPLUS_TAG, fold_positive_scale, optimize, stable_softplus  # noqa: E402

RNG = np.random.default_rng(0)


def make_model(nodes, inputs: dict[str, list], outputs: list[str], inits: dict[str, np.ndarray]):
    graph = helper.make_graph(
        nodes, "g", [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in inputs.items()],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v, np.float32), k) for k, v in inits.items()])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def run(model, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def ops(model) -> list[str]:
    return [n.op_type for n in model.graph.node]


def stylegan_layer(gain: float = float(np.sqrt(2)), extra_user: bool = False):
    """Conv -> Mul(demod [B,C,1,1]) -> Add(bias) -> LeakyRelu -> Mul(gain) -> Clip, as the exported layers."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
        helper.make_node("Mul", ["y", "d"], ["yd"]),
        helper.make_node("Add", ["yd", "b"], ["yb"]),
        helper.make_node("LeakyRelu", ["yb"], ["act"], alpha=0.2),
        helper.make_node("Mul", ["act", "gain"], ["scaled"]),
        helper.make_node("Clip", ["scaled", "lo", "hi"], ["out"]),
    ]
    outputs = ["out"]
    if extra_user:                                                         # the activation feeds a second node
        nodes.append(helper.make_node("Neg", ["act"], ["other"]))
        outputs.append("other")
    inits = {"w": RNG.normal(size=(8, 4, 3, 3)), "b": RNG.normal(size=(1, 8, 1, 1)), "gain": gain,
             "lo": -1.5, "hi": 1.5}
    return make_model(nodes, {"x": [2, 4, 6, 6], "d": [2, 8, 1, 1]}, outputs, inits)


FEEDS = {"x": RNG.normal(size=(2, 4, 6, 6)).astype(np.float32),
         "d": RNG.uniform(0.2, 2, size=(2, 8, 1, 1)).astype(np.float32)}


def test_fold_positive_scale_moves_the_gain_into_the_demodulation():
    model = stylegan_layer()
    before = run(model, FEEDS)
    assert fold_positive_scale(model) == 1
    assert ops(model).count("Mul") == 2 and ops(model).index("Mul") < ops(model).index("LeakyRelu")
    # the remaining big-tensor Mul reads the scaled demodulation: a new [B,C,1,1] Mul feeds it
    scaled_demod = next(n for n in model.graph.node if n.op_type == "Mul" and "d" in n.input)
    assert any(scaled_demod.output[0] in n.input for n in model.graph.node if n.op_type == "Mul")
    np.testing.assert_allclose(run(model, FEEDS)[0], before[0], rtol=1e-5, atol=1e-6)


def test_fold_positive_scale_into_constant_conv_weights():
    nodes = [helper.make_node("Conv", ["x", "w", "bias"], ["y"]), helper.make_node("Relu", ["y"], ["r"]),
             helper.make_node("Mul", ["r", "gain"], ["out"])]
    model = make_model(nodes, {"x": [1, 4, 5, 5]}, ["out"],
                       {"w": RNG.normal(size=(3, 4, 1, 1)), "bias": RNG.normal(size=3), "gain": 3.0})
    feeds = {"x": RNG.normal(size=(1, 4, 5, 5)).astype(np.float32)}
    before = run(model, feeds)
    assert fold_positive_scale(model) == 1
    assert ops(model) == ["Conv", "Relu", "Identity"]                     # the graph output keeps its name
    np.testing.assert_allclose(run(model, feeds)[0], before[0], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("case", ["negative gain", "zero gain", "shared activation"])
def test_fold_positive_scale_leaves_what_it_cannot_prove(case):
    model = {"negative gain": lambda: stylegan_layer(gain=-1.0), "zero gain": lambda: stylegan_layer(gain=0.0),
             "shared activation": lambda: stylegan_layer(extra_user=True)}[case]()
    before = ops(model)
    assert fold_positive_scale(model) == 0
    assert ops(model) == before


def test_stable_softplus_replaces_torchs_thresholded_softplus_and_never_overflows():
    nodes = [helper.make_node("Softplus", ["x"], ["s"]), helper.make_node("Greater", ["x", "threshold"], ["big"]),
             helper.make_node("Where", ["big", "x", "s"], ["out"])]
    model = make_model(nodes, {"x": [None]}, ["out"], {"threshold": 20.0})
    x = np.concatenate([np.linspace(-120, 120, 4001), [-1e30, -1e4, 88.5, 1e4, 1e30]]).astype(np.float32)
    assert stable_softplus(model) == 1
    assert set(ops(model)) == {"Abs", "Neg", "Exp", "Add", "Log", "Relu"}
    assert all(STABLE_SOFTPLUS_TAG in n.name for n in model.graph.node)
    out = run(model, {"x": x})[0]
    reference = np.where(x > 20, x, np.logaddexp(0.0, x.astype(np.float64)))
    assert np.isfinite(out).all()
    np.testing.assert_allclose(out, reference, rtol=2e-7, atol=2e-7)


def test_stable_softplus_replaces_a_bare_softplus():
    model = make_model([helper.make_node("Softplus", ["x"], ["out"])], {"x": [None]}, ["out"], {})
    x = RNG.normal(0, 10, 1000).astype(np.float32)
    before = run(model, {"x": x})[0]
    assert stable_softplus(model) == 1 and "Softplus" not in ops(model)
    np.testing.assert_allclose(run(model, {"x": x})[0], before, rtol=1e-6, atol=1e-6)


def test_optimize_reports_every_pass():
    model = stylegan_layer()
    assert optimize(model) == {"fold_positive_scale": 1, "stable_softplus": 0}
