"""The onnxruntime-style API of the onyx package, against numbers computed
with numpy."""

import json
import os
import threading
import time

import ml_dtypes
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import onyx
import onyx.backend

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", ".."))
MLP = os.path.join(ROOT, "examples", "mlp.onnx")


def make_model(nodes, inputs, outputs, initializers=(), opset=17, **kwargs):
    graph = helper.make_graph(nodes, "g", inputs, outputs, list(initializers))
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], **kwargs
    )
    model.ir_version = 8
    return model.SerializeToString()


def mlp_reference(x):
    m = onnx.load(MLP)
    w = {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}
    h = np.maximum(x @ w["w1"] + w["b1"], 0)
    logits = h @ w["w2"] + w["b2"]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def test_module_surface():
    assert onyx.get_available_providers() == ["CPUExecutionProvider"]
    assert onyx.get_device() == "CPU"
    assert onyx.__version__.count(".") == 2
    assert onyx.GraphOptimizationLevel.ORT_ENABLE_ALL > onyx.GraphOptimizationLevel.ORT_DISABLE_ALL
    for cls in (onyx.InvalidArgument, onyx.Fail, onyx.NoSuchFile, onyx.InvalidGraph, onyx.NotImplemented):
        assert issubclass(cls, onyx.OnyxError)


def test_mlp_matches_numpy_and_describes_io():
    sess = onyx.InferenceSession(MLP, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert (inp.name, inp.type, inp.shape) == ("features", "tensor(float)", ["batch", 4])
    assert (out.name, out.type, out.shape) == ("probabilities", "tensor(float)", ["batch", 3])
    assert sess.get_overridable_initializers() == []
    assert sess.get_providers() == ["CPUExecutionProvider"]
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    (y,) = sess.run(None, {"features": x})
    assert y.dtype == np.float32 and y.shape == (5, 3)
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5, atol=1e-6)
    # by name, and from a non-contiguous view
    xt = np.asfortranarray(x)
    (y2,) = sess.run(["probabilities"], {"features": xt})
    np.testing.assert_allclose(y2, y, rtol=1e-6)
    y2[0, 0] = 42.0  # outputs are writable arrays


def test_load_from_bytes_and_pathlike():
    import pathlib

    with open(MLP, "rb") as f:
        data = f.read()
    x = np.ones((1, 4), np.float32)
    a = onyx.InferenceSession(data).run(None, {"features": x})[0]
    b = onyx.InferenceSession(pathlib.Path(MLP)).run(None, {"features": x})[0]
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(a, mlp_reference(x), rtol=1e-5)


def test_shapes_with_ints_names_and_unknowns():
    dims = [3, "n", None]
    inp = helper.make_tensor_value_info("x", TensorProto.INT64, dims)
    out = helper.make_tensor_value_info("y", TensorProto.INT64, dims)
    sess = onyx.InferenceSession(make_model([helper.make_node("Neg", ["x"], ["y"])], [inp], [out]))
    assert sess.get_inputs()[0].shape == [3, "n", None]
    x = np.arange(3 * 2 * 5, dtype=np.int64).reshape(3, 2, 5)
    np.testing.assert_array_equal(sess.run(None, {"x": x})[0], -x)


ALL_DTYPES = [
    (TensorProto.FLOAT, np.float32),
    (TensorProto.DOUBLE, np.float64),
    (TensorProto.FLOAT16, np.float16),
    (TensorProto.INT8, np.int8),
    (TensorProto.INT16, np.int16),
    (TensorProto.INT32, np.int32),
    (TensorProto.INT64, np.int64),
    (TensorProto.UINT8, np.uint8),
    (TensorProto.UINT16, np.uint16),
    (TensorProto.UINT32, np.uint32),
    (TensorProto.UINT64, np.uint64),
    (TensorProto.BOOL, np.bool_),
    (TensorProto.BFLOAT16, ml_dtypes.bfloat16),
    (TensorProto.FLOAT8E4M3FN, ml_dtypes.float8_e4m3fn),
    (TensorProto.FLOAT8E5M2, ml_dtypes.float8_e5m2),
    (TensorProto.INT4, ml_dtypes.int4),
    (TensorProto.UINT4, ml_dtypes.uint4),
]


SIGNED = (np.float32, np.float64, np.float16, np.int8, np.int16, np.int32, np.int64, ml_dtypes.bfloat16)
SIGNED += (ml_dtypes.float8_e4m3fn, ml_dtypes.float8_e5m2, ml_dtypes.int4)


@pytest.mark.parametrize("onnx_type,np_type", ALL_DTYPES, ids=lambda v: getattr(v, "__name__", str(v)))
def test_every_numpy_dtype_round_trips(onnx_type, np_type):
    inp = helper.make_tensor_value_info("x", onnx_type, [2, 3])
    out = helper.make_tensor_value_info("y", onnx_type, [2, 3])
    sess = onyx.InferenceSession(make_model([helper.make_node("Identity", ["x"], ["y"])], [inp], [out], opset=21))
    x = (np.arange(6).reshape(2, 3) % 5).astype(np.float32)
    if np_type in SIGNED:
        x = x - 2  # negative values too
    x = x.astype(np_type)
    (y,) = sess.run(None, {"x": x})
    assert y.dtype == np.dtype(np_type) and y.shape == (2, 3)
    np.testing.assert_array_equal(y.astype(np.float32), x.astype(np.float32))


def test_float16_and_bool_compute():
    a = helper.make_tensor_value_info("a", TensorProto.FLOAT16, [4])
    b = helper.make_tensor_value_info("b", TensorProto.FLOAT16, [4])
    s = helper.make_tensor_value_info("s", TensorProto.FLOAT16, [4])
    g = helper.make_tensor_value_info("g", TensorProto.BOOL, [4])
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Greater", ["a", "b"], ["g"])]
    sess = onyx.InferenceSession(make_model(nodes, [a, b], [s, g]))
    x = np.array([0.5, -1.0, 2.25, 100.0], np.float16)
    y = np.array([0.25, 1.0, -2.0, 0.5], np.float16)
    s_out, g_out = sess.run(None, {"a": x, "b": y})
    np.testing.assert_array_equal(s_out, x + y)
    np.testing.assert_array_equal(g_out, x > y)
    assert s_out.dtype == np.float16 and g_out.dtype == np.bool_


def test_string_tensors_as_object_arrays():
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [None])
    y = helper.make_tensor_value_info("y", TensorProto.STRING, [None])
    node = helper.make_node("StringNormalizer", ["x"], ["y"], case_change_action="UPPER")
    sess = onyx.InferenceSession(make_model([node], [x], [y]))
    (out,) = sess.run(None, {"x": np.array(["abc", "Déjà", "x y"], dtype=object)})
    assert out.dtype == object
    assert out.tolist() == ["ABC", "DÉJÀ", "X Y"]
    # numpy's fixed-width unicode arrays are accepted as strings too
    (out,) = sess.run(None, {"x": np.array(["q"])})
    assert out.tolist() == ["Q"]


def test_sequence_and_map_values():
    # a sequence in and out (Identity passes any value through)
    sin = helper.make_tensor_sequence_value_info("a", TensorProto.INT64, None)
    sout = helper.make_tensor_sequence_value_info("s", TensorProto.INT64, None)
    sess = onyx.InferenceSession(make_model([helper.make_node("Identity", ["a"], ["s"])], [sin], [sout]))
    assert sess.get_inputs()[0].type == "seq(tensor(int64))"
    assert sess.get_outputs()[0].type == "seq(tensor(int64))"
    (s_out,) = sess.run(None, {"a": [np.array([1, 2]), np.array([3, 4, 5])]})
    assert isinstance(s_out, list) and [v.tolist() for v in s_out] == [[1, 2], [3, 4, 5]]
    assert all(v.dtype == np.int64 for v in s_out)
    with pytest.raises(onyx.InvalidArgument, match="input 'a' expects a list"):
        sess.run(None, {"a": np.array([1, 2])})

    # a map input: ai.onnx.ml DictVectorizer
    m = helper.make_value_info(
        "m", helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    )
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    node = helper.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", int64_vocabulary=[1, 2, 3])
    graph = helper.make_graph([node], "dv", [m], [y])
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)]
    )
    model.ir_version = 8
    sess = onyx.InferenceSession(model.SerializeToString())
    assert sess.get_inputs()[0].type == "map(int64,tensor(float))"
    (out,) = sess.run(None, {"m": {1: 2.5, 3: -4.0}})
    np.testing.assert_array_equal(out.ravel(), np.array([2.5, 0.0, -4.0], np.float32))


def test_modelmeta():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    model = onnx.load_from_string(
        make_model(
            [helper.make_node("Identity", ["x"], ["y"])],
            [x],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
            producer_name="tester",
            domain="org.example",
            model_version=7,
            doc_string="a model",
        )
    )
    helper.set_model_props(model, {"author": "me", "licence": "none"})
    meta = onyx.InferenceSession(model.SerializeToString()).get_modelmeta()
    assert meta.producer_name == "tester"
    assert meta.graph_name == "g"
    assert meta.domain == "org.example"
    assert meta.description == "a model"
    assert meta.version == 7
    assert meta.custom_metadata_map == {"author": "me", "licence": "none"}


def test_overridable_initializers():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    w = helper.make_tensor_value_info("w", TensorProto.FLOAT, [3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [3])
    init = numpy_helper.from_array(np.array([1, 2, 3], np.float32), "w")
    sess = onyx.InferenceSession(make_model([helper.make_node("Mul", ["x", "w"], ["y"])], [x, w], [y], [init]))
    assert [a.name for a in sess.get_inputs()] == ["x"]
    (ov,) = sess.get_overridable_initializers()
    assert (ov.name, ov.type, ov.shape) == ("w", "tensor(float)", [3])
    xv = np.array([2, 2, 2], np.float32)
    np.testing.assert_array_equal(sess.run(None, {"x": xv})[0], [2, 4, 6])
    np.testing.assert_array_equal(sess.run(None, {"x": xv, "w": np.array([5, 0, -1], np.float32)})[0], [10, 0, -2])


@pytest.fixture(scope="module")
def mlp():
    return onyx.InferenceSession(MLP)


def test_wrong_dtype(mlp):
    with pytest.raises(onyx.InvalidArgument, match="input 'features'.*float.*double"):
        mlp.run(None, {"features": np.zeros((2, 4))})


def test_wrong_shape(mlp):
    with pytest.raises(onyx.InvalidArgument, match="input 'features' expects dim 1 to be 4"):
        mlp.run(None, {"features": np.zeros((2, 5), np.float32)})
    with pytest.raises(onyx.InvalidArgument, match="input 'features' expects rank 2"):
        mlp.run(None, {"features": np.zeros((4,), np.float32)})


def test_missing_input(mlp):
    with pytest.raises(onyx.InvalidArgument, match="input 'features' is missing"):
        mlp.run(None, {})


def test_unknown_input_and_output(mlp):
    x = np.zeros((1, 4), np.float32)
    with pytest.raises(onyx.InvalidArgument, match="unknown output name 'logits'"):
        mlp.run(["logits"], {"features": x})
    with pytest.raises(onyx.InvalidArgument, match="unknown input 'feature'"):
        mlp.run(None, {"feature": x})


def test_non_array_inputs(mlp):
    for bad in ([[0.0] * 4], 3.5, "text", None, {"a": 1}):
        with pytest.raises(onyx.InvalidArgument, match="input 'features'"):
            mlp.run(None, {"features": bad})
    with pytest.raises(onyx.InvalidArgument, match="input_feed must be a dict"):
        mlp.run(None, [np.zeros((1, 4), np.float32)])
    with pytest.raises(onyx.NotImplemented, match="input 'features'.*complex64"):
        mlp.run(None, {"features": np.zeros((1, 4), np.complex64)})


def test_load_errors(tmp_path):
    with pytest.raises(onyx.NoSuchFile, match="missing.onnx"):
        onyx.InferenceSession(str(tmp_path / "missing.onnx"))
    with pytest.raises(onyx.InvalidProtobuf):
        onyx.InferenceSession(b"\xff\xff\xff not a model")
    with pytest.raises(onyx.InvalidArgument, match="path or bytes"):
        onyx.InferenceSession(12)
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    with pytest.raises(onyx.NotImplemented, match="NoSuchOperator"):
        onyx.InferenceSession(make_model([helper.make_node("NoSuchOperator", ["x"], ["y"])], [x], [y]))
    with pytest.raises(onyx.InvalidGraph, match="'nowhere'"):
        onyx.InferenceSession(make_model([helper.make_node("Relu", ["nowhere"], ["y"])], [x], [y]))


def test_runtime_failure_names_node():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    s = helper.make_tensor_value_info("s", TensorProto.INT64, [1])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    sess = onyx.InferenceSession(make_model([helper.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [x, s], [y]))
    np.testing.assert_array_equal(sess.run(None, {"x": np.ones(6, np.float32), "s": np.array([6])})[0], np.ones(6))
    with pytest.raises(onyx.OnyxError, match="rs"):
        sess.run(None, {"x": np.ones(6, np.float32), "s": np.array([5])})


def test_eight_threads_share_one_session(mlp):
    rng = np.random.default_rng(1)
    inputs = [rng.standard_normal((3, 4)).astype(np.float32) for _ in range(8)]
    expected = [mlp.run(None, {"features": x})[0] for x in inputs]
    runs = 1000
    mismatches = [0] * 8
    errors = []

    def work(t):
        try:
            for _ in range(runs):
                (y,) = mlp.run(None, {"features": inputs[t]})
                if not np.array_equal(y, expected[t]):
                    mismatches[t] += 1
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert errors == []
    assert mismatches == [0] * 8


def test_session_options_profiling_and_optimized_model(tmp_path):
    so = onyx.SessionOptions()
    so.graph_optimization_level = onyx.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.intra_op_num_threads = 2
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    so.add_session_config_entry("session.use_env_allocators", "1")
    assert so.get_session_config_entry("session.use_env_allocators") == "1"
    sess = onyx.InferenceSession(MLP, sess_options=so)
    assert sess.get_session_options() is so
    x = np.ones((1, 4), np.float32)
    for _ in range(3):
        sess.run(None, {"features": x}, onyx.RunOptions())
    path = sess.end_profiling()
    with open(path) as f:
        events = json.load(f)
    assert len(events) == 3 and all(e["name"] == "model_run" and e["dur"] >= 0 for e in events)
    again = onyx.InferenceSession(so.optimized_model_filepath)
    np.testing.assert_allclose(again.run(None, {"features": x})[0], mlp_reference(x), rtol=1e-5)
    ro = onyx.RunOptions()
    ro.terminate = True
    with pytest.raises(onyx.Fail, match="terminated"):
        sess.run(None, {"features": x}, ro)


def fusable_model():
    """y1 = Relu(x W + b) and y2 = Relu(BatchNormalization(Conv(img))): a
    MatMul and a Conv pattern that the extended level fuses."""
    rng = np.random.default_rng(11)
    f32 = lambda *shape: rng.standard_normal(shape).astype(np.float32)  # noqa: E731
    inits = {
        "w": f32(4, 5),
        "b": f32(5),
        "cw": f32(3, 2, 3, 3),
        "scale": f32(3),
        "beta": f32(3),
        "mean": f32(3),
        "var": np.abs(f32(3)) + 0.5,
    }
    nodes = [
        helper.make_node("MatMul", ["x", "w"], ["m"]),
        helper.make_node("Add", ["m", "b"], ["a"]),
        helper.make_node("Relu", ["a"], ["y1"]),
        helper.make_node("Conv", ["img", "cw"], ["c"], pads=[1, 1, 1, 1]),
        helper.make_node("BatchNormalization", ["c", "scale", "beta", "mean", "var"], ["bn"]),
        helper.make_node("Relu", ["bn"], ["y2"]),
    ]
    return make_model(
        nodes,
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4]),
            helper.make_tensor_value_info("img", TensorProto.FLOAT, [1, 2, 6, 6]),
        ],
        [
            helper.make_tensor_value_info("y1", TensorProto.FLOAT, ["n", 5]),
            helper.make_tensor_value_info("y2", TensorProto.FLOAT, [1, 3, 6, 6]),
        ],
        [numpy_helper.from_array(v, k) for k, v in inits.items()],
    )


def fusable_feeds():
    rng = np.random.default_rng(12)
    return {
        "x": rng.standard_normal((3, 4)).astype(np.float32),
        "img": rng.standard_normal((1, 2, 6, 6)).astype(np.float32),
    }


def saved_session(model, path, level):
    so = onyx.SessionOptions()
    so.graph_optimization_level = level
    so.optimized_model_filepath = str(path)
    return onyx.InferenceSession(model, sess_options=so)


def test_optimized_model_filepath_saves_the_fused_graph(tmp_path):
    from onnx.reference import ReferenceEvaluator

    model = fusable_model()
    path = tmp_path / "opt.onnx"
    sess = saved_session(model, path, onyx.GraphOptimizationLevel.ORT_ENABLE_ALL)
    saved = onnx.load(str(path))
    onnx.checker.check_model(saved)
    assert [(n.domain, n.op_type) for n in saved.graph.node] == [
        ("com.onyx", "FusedMatMul"),
        ("com.onyx", "FusedConv"),
    ]
    assert {(o.domain, o.version) for o in saved.opset_import} == {("", 17), ("com.onyx", 1)}
    feeds = fusable_feeds()
    want = ReferenceEvaluator(onnx.load_from_string(model)).run(None, feeds)
    # loaded as saved, without optimising again
    plain = onyx.SessionOptions()
    plain.graph_optimization_level = onyx.GraphOptimizationLevel.ORT_DISABLE_ALL
    again = onyx.InferenceSession(str(path), sess_options=plain)
    for outputs in (again.run(None, feeds), sess.run(None, feeds)):
        for got, expected in zip(outputs, want):
            np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)


def test_optimized_model_filepath_unoptimised_is_the_given_graph(tmp_path):
    model = fusable_model()
    path = tmp_path / "same.onnx"
    saved_session(model, path, onyx.GraphOptimizationLevel.ORT_DISABLE_ALL)
    saved = onnx.load(str(path))
    given = onnx.load_from_string(model)
    assert [n.op_type for n in saved.graph.node] == [n.op_type for n in given.graph.node]
    assert [n.op_type for n in saved.graph.node] == [
        "MatMul", "Add", "Relu", "Conv", "BatchNormalization", "Relu"
    ]
    for a, b in zip(saved.graph.initializer, given.graph.initializer):
        assert a.name == b.name
        np.testing.assert_array_equal(numpy_helper.to_array(a), numpy_helper.to_array(b))


def test_optimized_model_filepath_that_cannot_be_written_fails_the_session(tmp_path):
    with pytest.raises(onyx.Fail, match="^cannot save the optimised model: cannot write model '"):
        saved_session(
            fusable_model(),
            tmp_path / "no-such-folder" / "opt.onnx",
            onyx.GraphOptimizationLevel.ORT_ENABLE_ALL,
        )


def test_intra_op_threads_are_checked():
    so = onyx.SessionOptions()
    so.intra_op_num_threads = -1
    with pytest.raises(onyx.InvalidArgument, match="intra_op_num_threads"):
        onyx.InferenceSession(MLP, sess_options=so)
    so.intra_op_num_threads = 3
    x = np.ones((2, 4), np.float32)
    np.testing.assert_allclose(
        onyx.InferenceSession(MLP, sess_options=so).run(None, {"features": x})[0], mlp_reference(x), rtol=1e-5
    )


def test_unavailable_provider_warns_and_falls_back():
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        sess = onyx.InferenceSession(MLP, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert sess.get_providers() == ["CPUExecutionProvider"]


def test_backend_run_node_and_run_model():
    node = helper.make_node("Add", ["a", "b"], ["c"])
    a = np.array([[1, 2], [3, 4]], np.float32)
    b = np.array([10, 20], np.float32)
    (c,) = onyx.backend.run_node(node, [a, b])
    np.testing.assert_array_equal(c, a + b)
    assert onyx.backend.supports_device("CPU") and not onyx.backend.supports_device("CUDA")
    x = np.full((2, 4), 0.5, np.float32)
    (y,) = onyx.backend.run_model(onnx.load(MLP), [x])
    np.testing.assert_allclose(y, mlp_reference(x), rtol=1e-5)


def test_run_with_ort_values(mlp):
    x = np.random.default_rng(3).standard_normal((2, 4)).astype(np.float32)
    xv = onyx.OrtValue.ortvalue_from_numpy(x)
    assert xv.is_tensor() and xv.shape() == [2, 4] and xv.data_type() == "tensor(float)"
    np.testing.assert_array_equal(xv.numpy(), x)
    (yv,) = mlp.run_with_ort_values(["probabilities"], {"features": xv})
    assert isinstance(yv, onyx.OrtValue) and yv.shape() == [2, 3]
    np.testing.assert_allclose(yv.numpy(), mlp_reference(x), rtol=1e-5)
    with pytest.raises(onyx.InvalidArgument, match="input 'features' expects an OrtValue"):
        mlp.run_with_ort_values(None, {"features": x})
    with pytest.raises(onyx.InvalidArgument, match="input 'features' expects element type float"):
        mlp.run_with_ort_values(None, {"features": onyx.OrtValue.ortvalue_from_numpy(x.astype(np.int32))})


def test_gil_is_released_while_running():
    n = 512
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, n])
    # enough work (about 27 GFLOP) that a run lasts well over 50 ms even with the fast GEMM
    steps = 100
    names = ["x"] + [f"h{i}" for i in range(steps - 1)] + ["y"]
    nodes = [helper.make_node("MatMul", [names[i], "x"], [names[i + 1]]) for i in range(steps)]
    sess = onyx.InferenceSession(make_model(nodes, [x], [y]))
    feed = {"x": np.full((n, n), 1.0 / n, np.float32)}
    (out,) = sess.run(None, feed)
    np.testing.assert_allclose(out, np.full((n, n), 1.0 / n), rtol=1e-4)

    done = threading.Event()
    timing = {}

    def work():
        t0 = time.perf_counter()
        sess.run(None, feed)
        timing["run"] = time.perf_counter() - t0
        done.set()

    th = threading.Thread(target=work)
    ticks = []
    th.start()
    while not done.is_set():
        ticks.append(time.perf_counter())
        time.sleep(0.001)
    th.join()
    gaps = np.diff(ticks) if len(ticks) > 1 else np.array([timing["run"]])
    # With the GIL held for the whole run this thread would stall for all of it.
    assert timing["run"] > 0.05, f"run too short to tell ({timing['run']:.3f}s)"
    assert len(ticks) >= 5 and gaps.max() < 0.5 * timing["run"], (len(ticks), gaps.max(), timing["run"])


def test_exceptions_under_onnxruntimes_module_path(mlp):
    from onyx.capi.onnxruntime_pybind11_state import InvalidArgument, NotImplemented

    assert NotImplemented is onyx.NotImplemented
    with pytest.raises(InvalidArgument, match="input 'features' is missing"):
        mlp.run(None, {})
    namespace = {}
    exec("from onyx import *", namespace)
    assert "NotImplemented" not in namespace and "InferenceSession" in namespace


def test_zipmap_gives_a_list_of_dicts():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3])
    map_type = helper.make_map_type_proto(TensorProto.INT64, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    y = helper.make_value_info("y", helper.make_sequence_type_proto(map_type))
    node = helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_int64s=[10, 20, 30])
    model = helper.make_model(
        helper.make_graph([node], "z", [x], [y]),
        opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("ai.onnx.ml", 3)],
    )
    model.ir_version = 8
    sess = onyx.InferenceSession(model.SerializeToString())
    assert sess.get_outputs()[0].type == "seq(map(int64,tensor(float)))"
    probs = np.array([[0.1, 0.2, 0.7], [0.5, 0.25, 0.25]], np.float32)
    (out,) = sess.run(None, {"x": probs})
    assert out == [
        {10: float(probs[0, 0]), 20: float(probs[0, 1]), 30: float(probs[0, 2])},
        {10: float(probs[1, 0]), 20: float(probs[1, 1]), 30: float(probs[1, 2])},
    ]


def test_graph_optimization_levels_give_the_same_results():
    # MatMul + Add + Relu, which the optimised session fuses
    rng = np.random.default_rng(1)
    w = rng.standard_normal((4, 3)).astype(np.float32)
    b = rng.standard_normal(3).astype(np.float32)
    model = make_model(
        [
            helper.make_node("MatMul", ["x", "w"], ["m"]),
            helper.make_node("Add", ["m", "b"], ["a"]),
            helper.make_node("Relu", ["a"], ["y"]),
        ],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 3])],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")],
    )
    x = rng.standard_normal((2, 4)).astype(np.float32)
    want = np.maximum(x @ w + b, 0)
    for level in onyx.GraphOptimizationLevel:
        so = onyx.SessionOptions()
        so.graph_optimization_level = level
        (y,) = onyx.InferenceSession(model, sess_options=so).run(None, {"x": x})
        np.testing.assert_allclose(y, want, rtol=1e-5, atol=1e-6)
    so = onyx.SessionOptions()
    so.graph_optimization_level = 7
    with pytest.raises(onyx.InvalidArgument, match="graph_optimization_level"):
        onyx.InferenceSession(model, sess_options=so)
