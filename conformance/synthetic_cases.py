"""Single-node cases for operator versions that no backend case fits, mostly
the older forms where an input was an attribute or a default differed.

Each case is one node at one opset with fixed-seed inputs. Its expected
outputs come from onnx.reference at that opset, or, where a case gives
`expected`, from numpy lines here written from the version's schema doc (for
versions onnx.reference does not implement).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import onnx
import onnx.helper as oh
import onnx.reference

F, I64 = onnx.TensorProto.FLOAT, onnx.TensorProto.INT64


@dataclass
class Synthetic:
    name: str
    op: str
    model: onnx.ModelProto
    inputs: list
    expected: list


def _rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _elem(a: np.ndarray) -> int:
    return oh.np_dtype_to_tensor_dtype(a.dtype)


def reference(op: str, opset: int, inputs: list, attrs: dict | None, n_out: int) -> list:
    """One node's outputs from onnx.reference at the given opset."""
    in_names = [f"x{k}" for k in range(len(inputs))]
    out_names = [f"y{k}" for k in range(n_out)]
    node = oh.make_node(op, in_names, out_names, **(attrs or {}))
    in_infos = [oh.make_tensor_value_info(n, _elem(a), a.shape) for n, a in zip(in_names, inputs)]
    untyped = [oh.make_empty_tensor_value_info(n) for n in out_names]
    model = oh.make_model(
        oh.make_graph([node], "probe", in_infos, untyped),
        opset_imports=[oh.make_opsetid("", opset)],
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return list(onnx.reference.ReferenceEvaluator(model).run(None, dict(zip(in_names, inputs))))


def single_node(
    op: str,
    opset: int,
    inputs: list[np.ndarray],
    attrs: dict | None = None,
    out_types: list[int] | None = None,
    tag: str = "",
    expected: list | None = None,
) -> Synthetic:
    """A one-node model; outputs declared with the expected outputs' shapes."""
    in_names = [f"x{k}" for k in range(len(inputs))]
    out_types = out_types or [_elem(inputs[0])]
    out_names = [f"y{k}" for k in range(len(out_types))]
    node = oh.make_node(op, in_names, out_names, **(attrs or {}))
    in_infos = [oh.make_tensor_value_info(n, _elem(a), a.shape) for n, a in zip(in_names, inputs)]
    if expected is None:
        expected = reference(op, opset, inputs, attrs, len(out_names))
    outs = [
        oh.make_tensor_value_info(n, t, np.shape(e))
        for n, t, e in zip(out_names, out_types, expected)
    ]
    graph = oh.make_graph([node], f"{op}_v{opset}", in_infos, outs)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])
    name = f"synthetic_{op.lower()}_v{opset}{'_' + tag if tag else ''}"
    return Synthetic(name, op, model, list(inputs), expected)


def _legacy_broadcast(a: np.ndarray, b: np.ndarray, axis: int) -> np.ndarray:
    """Opset 1-6 binary ops with broadcast=1: B's dims line up with A's from `axis`."""
    shape = [1] * axis + list(b.shape) + [1] * (a.ndim - axis - b.ndim)
    return b.reshape(shape)


def _linear_asymmetric(x: np.ndarray, sh: float, sw: float) -> np.ndarray:
    """Bilinear upsampling of the last two dims as Upsample and Resize-10 define it:
    output index o reads input o / scale, clamped to the last element."""

    def along(a: np.ndarray, axis: int, scale: float) -> np.ndarray:
        n = a.shape[axis]
        pos = np.arange(int(np.floor(n * scale))) / scale
        lo = np.minimum(np.floor(pos).astype(int), n - 1)
        hi = np.minimum(lo + 1, n - 1)
        w = (pos - lo).reshape([-1 if d == axis else 1 for d in range(a.ndim)])
        return np.take(a, lo, axis) * (1 - w) + np.take(a, hi, axis) * w

    return along(along(x.astype(np.float64), 2, sh), 3, sw).astype(x.dtype)


def _global_lp(x: np.ndarray, p: int) -> np.ndarray:
    s = (np.abs(x.astype(np.float64)) ** p).sum(axis=(2, 3), keepdims=True)
    return (s ** (1.0 / p)).astype(x.dtype)


def _reduce_cases() -> list[Synthetic]:
    x = _rand(3, 4, 5, seed=1)
    out = []
    for op in [
        "ReduceL1",
        "ReduceL2",
        "ReduceLogSum",
        "ReduceLogSumExp",
        "ReduceMean",
        "ReduceSumSquare",
        "ReduceSum",
        "ReduceMax",
        "ReduceMin",
        "ReduceProd",
    ]:
        data = np.abs(x) + 0.5 if op == "ReduceLogSum" else x
        opsets = (1, 11) if op == "ReduceSum" else (1, 11, 13)
        for opset in opsets:
            out.append(single_node(op, opset, [data], {"axes": [0, 2]}, tag="axes"))
            axes = [-1] if opset >= 11 else [2]
            out.append(single_node(op, opset, [data], {"axes": axes, "keepdims": 0}, tag="flat"))
    return out


def _legacy_binary_cases() -> list[Synthetic]:
    a, b = _rand(2, 3, 4, 5, seed=2), _rand(3, 4, seed=3) + 2.0
    funcs = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": np.divide}
    out = []
    for op, fn in funcs.items():
        for opset in (1, 6):
            expected = [fn(a, _legacy_broadcast(a, b, 1)).astype(np.float32)]
            attrs = {"broadcast": 1, "axis": 1}
            out.append(single_node(op, opset, [a, b], attrs, tag="axis", expected=expected))
        tail = _rand(5, seed=10) + 2.0  # a suffix of A's shape, no axis given
        out.append(
            single_node(op, 6, [a, tail], {"broadcast": 1}, tag="suffix", expected=[fn(a, tail)])
        )
    return out


def _roi_align_v10() -> Synthetic:
    """RoiAlign before 16 has no coordinate_transformation_mode and behaves as
    output_half_pixel (v16's doc); onnx.reference applies v16's default
    half_pixel at every version, so the oracle is v16 with output_half_pixel."""
    inputs = [
        _rand(1, 1, 6, 6, seed=8),
        np.array([[0.5, 0.5, 4.0, 3.5]], np.float32),
        np.array([0], np.int64),
    ]
    attrs = {"output_height": 2, "output_width": 2, "sampling_ratio": 2}
    legacy = dict(attrs, coordinate_transformation_mode="output_half_pixel")
    return single_node("RoiAlign", 10, inputs, attrs, expected=reference("RoiAlign", 16, inputs, legacy, 1))


def cases() -> list[Synthetic]:
    x = _rand(2, 3, 4, seed=4)
    img = _rand(1, 2, 4, 4, seed=5)
    out = _reduce_cases() + _legacy_binary_cases()
    out += [
        single_node("Reshape", 1, [x], {"shape": [4, -1]}, expected=[x.reshape(4, -1)]),
        single_node(
            "Reshape", 1, [x], {"shape": [0, 12]}, tag="copy_dim", expected=[x.reshape(2, 12)]
        ),
        single_node("Pad", 1, [x], {"paddings": [0, 1, 2, 0, 2, 1], "value": 1.5}),
        single_node("Pad", 2, [x], {"pads": [0, 1, 2, 0, 2, 1], "mode": "edge"}),
        single_node("Pad", 2, [x], {"pads": [0, 1, 2, 0, 2, 1], "mode": "reflect"}, tag="reflect"),
        single_node("Slice", 1, [x], {"starts": [1, 0], "ends": [3, -1], "axes": [1, 2]}),
        single_node("Slice", 1, [x], {"starts": [0, 1], "ends": [1, 1000]}, tag="no_axes"),
        single_node("Squeeze", 1, [x.reshape(2, 1, 3, 1, 4)], {"axes": [1, 3]}),
        single_node("Squeeze", 1, [x.reshape(2, 1, 3, 1, 4)], tag="all"),
        single_node("Squeeze", 11, [x.reshape(2, 1, 3, 1, 4)], {"axes": [-2, 1]}),
        single_node("Unsqueeze", 1, [x], {"axes": [0, 4]}),
        single_node("Unsqueeze", 11, [x], {"axes": [-1, 0]}),
        single_node(
            "Split", 1, [x], {"axis": 2, "split": [1, 3]}, out_types=[F, F],
            expected=np.split(x, [1], axis=2),
        ),
        single_node("TopK", 1, [x], {"k": 2}, out_types=[F, I64]),
        single_node("TopK", 1, [x], {"k": 2, "axis": 1}, out_types=[F, I64], tag="axis"),
        single_node("Clip", 1, [x], {"min": -0.5, "max": 0.5}, expected=[np.clip(x, -0.5, 0.5)]),
        single_node("Clip", 6, [x], {"min": -0.5, "max": 0.5}),
        single_node("Clip", 6, [x], {"max": 0.25}, tag="max_only"),
        single_node(
            "Concat", 1, [x, x[:, :1]], tag="default_axis",
            expected=[np.concatenate([x, x[:, :1]], axis=1)],
        ),
        single_node(
            "Cast", 1, [x * 3], {"to": "INT32"}, out_types=[onnx.TensorProto.INT32],
            expected=[(x * 3).astype(np.int32)],
        ),
        single_node(
            "Cast", 1, [x], {"to": "DOUBLE"}, out_types=[onnx.TensorProto.DOUBLE], tag="f64",
            expected=[x.astype(np.float64)],
        ),
        single_node(
            "Tile", 1, [x, np.array(3, np.float32), np.array(1, np.float32)],
            expected=[np.tile(x, (1, 3, 1))],
        ),
        single_node("DepthToSpace", 1, [_rand(1, 8, 2, 3, seed=6)], {"blocksize": 2}),
        single_node(
            "Upsample", 7, [img], {"scales": [1.0, 1.0, 2.0, 3.0]},
            expected=[img.repeat(2, axis=2).repeat(3, axis=3)],
        ),
        single_node(
            "Upsample", 7, [img], {"scales": [1.0, 1.0, 2.0, 2.5], "mode": "linear"}, tag="linear",
            expected=[_linear_asymmetric(img, 2.0, 2.5)],
        ),
        single_node(
            "Upsample", 1, [img], {"height_scale": 2.0, "width_scale": 3.0},
            expected=[img.repeat(2, axis=2).repeat(3, axis=3)],
        ),
        single_node(
            "Resize", 10, [img, np.array([1, 1, 2, 3], np.float32)],
            expected=[img.repeat(2, axis=2).repeat(3, axis=3)],
        ),
        single_node(
            "Resize", 10, [img, np.array([1, 1, 2, 1.5], np.float32)], {"mode": "linear"},
            tag="linear", expected=[_linear_asymmetric(img, 2.0, 1.5)],
        ),
        single_node(
            "Resize", 11,
            [img, np.array([], np.float32), np.array([1, 1, 1.5, 2], np.float32)],
            {"mode": "linear", "coordinate_transformation_mode": "align_corners"},
        ),
        single_node(
            "Resize", 11,
            [img, np.array([], np.float32), np.array([1, 1, 2, 0.5], np.float32)],
            {"mode": "nearest", "nearest_mode": "floor",
             "coordinate_transformation_mode": "asymmetric"},
            tag="nearest",
        ),
        single_node("LpPool", 1, [img], {"kernel_shape": [2, 2], "p": 3.0}),
        single_node("GlobalLpPool", 1, [img], {"p": 3.0}, expected=[_global_lp(img, 3)]),
        single_node("GlobalLpPool", 2, [img], {"p": 3}, expected=[_global_lp(img, 3)]),
        single_node("GlobalLpPool", 22, [img], {"p": 1}, expected=[_global_lp(img, 1)]),
        single_node("MeanVarianceNormalization", 13, [img], {"axes": [0, 2, 3]}),
        _roi_align_v10(),
        single_node("Dropout", 1, [x], {"is_test": 1}, expected=[x]),
        single_node("Dropout", 6, [x], {"is_test": 1, "ratio": 0.3}, expected=[x]),
        single_node(
            "BatchNormalization", 6,
            [img, np.array([1.5, 0.5], np.float32), np.array([0.1, 0.2], np.float32),
             np.array([0.3, -0.1], np.float32), np.array([0.9, 1.1], np.float32)],
            {"is_test": 1, "epsilon": 1e-3},
        ),
    ]
    return out
