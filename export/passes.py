"""ONNX graph rewrites applied after simplification: the same function, in ops ONNX Runtime runs faster.

Each pass rewrites a `onnx.ModelProto` in place and returns how many sites it changed; `optimize` runs them all
and returns {pass name: count} (recorded in the manifest). Every rewrite is exact up to float32 rounding, and
`export_models(verify=True)` still compares the rewritten graph with torch.

fold_positive_scale
    Every StyleGAN2 layer ends in `leaky_relu(x * demod + bias) * sqrt(2)`: a whole pass over the activations
    (128 x 512^2 floats = 134 MB in the official SR block) only to multiply by a constant. Leaky ReLU commutes
    with a positive scale, so the scale moves up the chain -- through LeakyRelu/Relu and constant-bias Adds
    (the bias scaled) -- into the per-channel demodulation Mul ([B,C,1,1]) or a constant Conv's weights.

stable_softplus
    The tri-plane decoder's hidden layer is softplus of [rays*samples, 64] (12.6M values per pass, two passes
    per frame). ONNX Runtime's CPU Softplus is a scalar exp + log per element (84 ms on this CPU) and torch's
    threshold (x > 20 -> x) adds Greater + Where (116 ms in all); relu(x) + log(1 + exp(-|x|)) runs as seven
    vectorised element-wise ops in 44 ms, never overflows (exp of a non-positive number), and matches torch
    to 1e-6.

Tried and not kept (A/B over 7 alternating runs of the official generator on this CPU, within noise): the
stride-2 up-sampling ConvTranspose as four phase Convs interleaved by a grouped one-hot ConvTranspose (the
phase Convs take 460 ms against ConvTranspose's 590, the Concat and layout reorders the rest), and the
zero-stuffing FIR up-sampling (Reshape, Pad, Reshape, Conv) as one depthwise stride-2 ConvTranspose.
"""
from __future__ import annotations

from typing import Any, Callable

import numpy as np

PassFn = Callable[[Any], int]
# in the names of the nodes stable_softplus writes: fp16 export keeps them in float32, as it kept Softplus
STABLE_SOFTPLUS_TAG = "/stable_softplus/"


def optimize(model: Any) -> dict[str, int]:
    """Run every pass on `model` (in place); {pass name: sites rewritten}."""
    return {name: fn(model) for name, fn in PASSES.items()}


def fold_positive_scale(model: Any) -> int:
    """Remove `Mul(x, g)` for a positive scalar constant g by scaling upstream; see the module docstring.

    The walk from x upwards passes LeakyRelu/Relu (positively homogeneous) and Add(., constant) (the constant
    is scaled), each of whose outputs must feed only the next node of the walk; it ends at a Mul (a constant
    operand is scaled in place, else the operand with fewer elements through a new Mul) or at a Conv with
    constant weight (and bias), which are scaled. Anything else leaves that Mul as it is.
    """
    from onnx import helper, numpy_helper, shape_inference

    graph = model.graph
    inits = {t.name: t for t in graph.initializer}
    numel = _static_numel(shape_inference.infer_shapes(model))
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    removed: set[str] = set()                                              # by first output name
    inserted: dict[str, list[Any]] = {}                                    # new nodes, before this node
    appended: list[Any] = []
    folded = 0

    def scaled_constant(name: str, gain: float) -> str:
        array = numpy_helper.to_array(inits[name])
        tensor = numpy_helper.from_array((array * np.asarray(gain, array.dtype)).astype(array.dtype),
                                         f"{name}_scaled{folded}")
        graph.initializer.append(tensor)
        inits[tensor.name] = tensor
        return tensor.name

    for node in list(graph.node):
        if node.op_type != "Mul":
            continue
        gain_index = next((i for i, name in enumerate(node.input) if name in inits
                           and numpy_helper.to_array(inits[name]).size == 1), None)
        if gain_index is None:
            continue
        gain = float(numpy_helper.to_array(inits[node.input[gain_index]]).reshape(()))
        if not gain > 0:
            continue
        source = node.input[1 - gain_index]
        chain, value = [], source
        while True:
            producer = producers.get(value)
            if producer is None or producer.output[0] in removed or len(consumers.get(value, [])) != 1:
                break
            if producer.op_type in ("LeakyRelu", "Relu"):
                chain.append(producer)
                value = producer.input[0]
            elif producer.op_type == "Add" and sum(name in inits for name in producer.input) == 1:
                chain.append(producer)
                value = next(name for name in producer.input if name not in inits)
            else:
                if producer.op_type == "Mul" or (producer.op_type == "Conv" and all(
                        name in inits for name in producer.input[1:])):
                    chain.append(producer)
                break
        if not chain or chain[-1].op_type not in ("Mul", "Conv"):
            continue
        end = chain[-1]
        for link in chain[:-1]:
            if link.op_type == "Add":
                k = next(i for i, name in enumerate(link.input) if name in inits)
                link.input[k] = scaled_constant(link.input[k], gain)
        if end.op_type == "Conv":
            for k in range(1, len(end.input)):
                end.input[k] = scaled_constant(end.input[k], gain)
        elif any(name in inits for name in end.input):
            k = next(i for i, name in enumerate(end.input) if name in inits)
            end.input[k] = scaled_constant(end.input[k], gain)
        else:
            k = min((0, 1), key=lambda i: numel.get(end.input[i], float("inf")))
            gain_name = f"{end.output[0]}_gain{folded}"
            graph.initializer.append(numpy_helper.from_array(np.asarray(gain, np.float32), gain_name))
            inserted.setdefault(end.output[0], []).append(
                helper.make_node("Mul", [end.input[k], gain_name], [gain_name + "_out"], name=gain_name))
            end.input[k] = gain_name + "_out"
        for user in consumers.get(node.output[0], []):                   # bypass the removed Mul
            if hasattr(user, "op_type"):
                for k, name in enumerate(user.input):
                    if name == node.output[0]:
                        user.input[k] = source
            else:                                                          # a graph output keeps its name
                appended.append(helper.make_node("Identity", [source], [node.output[0]], name=node.output[0] + "_id"))
        removed.add(node.output[0])
        folded += 1
    nodes = []
    for node in graph.node:
        nodes.extend(inserted.get(node.output[0], []))
        if node.output[0] not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes + appended)
    _drop_unused_initializers(graph)
    return folded


def stable_softplus(model: Any) -> int:
    """Softplus(x) -- and torch's Where(Greater(x, threshold), x, Softplus(x)) around it -- become
    Relu(x) + Log(1 + Exp(-Abs(x))); see the module docstring. Returns the number of Softplus nodes replaced."""
    from onnx import helper, numpy_helper

    graph = model.graph
    producers = {out: node for node in graph.node for out in node.output}
    consumers = _consumers(graph)
    inits = {t.name for t in graph.initializer}
    removed: set[str] = set()
    replacement: dict[str, list[Any]] = {}                                 # Softplus output -> new nodes
    for node in graph.node:
        if node.op_type != "Softplus":
            continue
        x, out = node.input[0], node.output[0]
        result = out
        users = consumers.get(out, [])
        # torch.nn.functional.softplus(beta=1, threshold=t) exports as Where(x > t, x, softplus(x)): for x > t
        # the composite equals x to float32 precision (t = 20: log1p(exp(-20)) = 2e-9), so the Where goes too
        if len(users) == 1 and getattr(users[0], "op_type", None) == "Where":
            where = users[0]
            condition = producers.get(where.input[0])
            if (list(where.input[1:]) == [x, out] and condition is not None and condition.op_type == "Greater"
                    and condition.input[0] == x and condition.input[1] in inits
                    and len(consumers.get(condition.output[0], [])) == 1):
                result = where.output[0]
                removed.update((where.output[0], condition.output[0]))
        prefix = f"{out}{STABLE_SOFTPLUS_TAG}"
        one = prefix + "one"
        graph.initializer.append(numpy_helper.from_array(np.asarray(1.0, np.float32), one))
        replacement[out] = [
            helper.make_node("Abs", [x], [prefix + "abs"], name=prefix + "abs"),
            helper.make_node("Neg", [prefix + "abs"], [prefix + "neg"], name=prefix + "neg"),
            helper.make_node("Exp", [prefix + "neg"], [prefix + "exp"], name=prefix + "exp"),
            helper.make_node("Add", [prefix + "exp", one], [prefix + "1p"], name=prefix + "1p"),
            helper.make_node("Log", [prefix + "1p"], [prefix + "log"], name=prefix + "log"),
            helper.make_node("Relu", [x], [prefix + "relu"], name=prefix + "relu"),
            helper.make_node("Add", [prefix + "relu", prefix + "log"], [result], name=prefix + "sum"),
        ]
    nodes = []
    for node in graph.node:
        if node.output[0] in replacement:
            nodes.extend(replacement[node.output[0]])
        elif node.output[0] not in removed:
            nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    _drop_unused_initializers(graph)
    return len(replacement)


def _static_numel(model: Any) -> dict[str, int]:
    """Element counts of the values whose shapes shape inference fixed (symbolic dims count as 1 -- the batch)."""
    counts = {}
    for info in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        dims = info.type.tensor_type.shape.dim
        counts[info.name] = int(np.prod([d.dim_value if d.HasField("dim_value") else 1 for d in dims]))
    for tensor in model.graph.initializer:
        counts[tensor.name] = int(np.prod(tensor.dims))
    return counts


def _consumers(graph: Any) -> dict[str, list[Any]]:
    users: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            users.setdefault(name, []).append(node)
    for output in graph.output:                                            # a graph output is a consumer too
        users.setdefault(output.name, []).append(output)
    return users


def _drop_unused_initializers(graph: Any) -> None:
    used = {name for node in graph.node for name in node.input}
    keep = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(keep)


PASSES: dict[str, PassFn] = {"fold_positive_scale": fold_positive_scale, "stable_softplus": stable_softplus}
