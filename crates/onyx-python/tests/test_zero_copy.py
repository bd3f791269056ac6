"""numpy arrays cross into and out of Onyx without copies: a contiguous
input is read in place, an output array takes over Onyx's buffer."""

import subprocess
import sys
import textwrap

import numpy as np
from onnx import TensorProto, helper

import onyx


def add_one_model() -> bytes:
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Add", ["x", "one"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])],
        [one],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def test_a_run_adds_only_its_output_to_peak_memory(tmp_path):
    # Peak RSS can't be reset inside a process, so the run happens in a
    # fresh one. A 256 MiB input read in place and a 256 MiB output handed
    # over raise the peak by one output; a copy either way would add at
    # least another 256 MiB.
    path = tmp_path / "add_one.onnx"
    path.write_bytes(add_one_model())
    script = textwrap.dedent(
        f"""
        import resource
        import numpy as np
        import onyx
        sess = onyx.InferenceSession({str(path)!r})
        x = np.arange(64 << 20, dtype=np.float32)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        (y,) = sess.run(None, {{"x": x}})
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        assert y[0] == 1.0 and y[-1] == float(x[-1]) + 1.0
        print((after - before) / 1024)
        """
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    grown_mib = float(out.stdout.strip())
    assert 200 < grown_mib < 384, f"peak memory grew by {grown_mib:.0f} MiB for a 256 MiB output"


def test_outputs_own_their_memory_and_inputs_are_left_alone():
    sess = onyx.InferenceSession(add_one_model())
    x = np.zeros(1000, dtype=np.float32)
    (y,) = sess.run(None, {"x": x})
    # the output is writable and independent of the input and of later runs
    y[:] = 7.0
    (y2,) = sess.run(None, {"x": x})
    assert np.all(x == 0.0) and np.all(y2 == 1.0) and np.all(y == 7.0)
    assert y.flags.writeable and y.flags.c_contiguous


def test_views_that_are_not_contiguous_or_aligned_are_still_read_right():
    sess = onyx.InferenceSession(add_one_model())
    base = np.arange(20, dtype=np.float32)
    (strided,) = sess.run(None, {"x": base[::2]})
    np.testing.assert_array_equal(strided, base[::2] + 1)
    raw = np.zeros(4 * 10 + 1, dtype=np.uint8)
    misaligned = raw[1:].view(np.float32)
    misaligned[:] = np.arange(10, dtype=np.float32)
    (y,) = sess.run(None, {"x": misaligned})
    np.testing.assert_array_equal(y, np.arange(10, dtype=np.float32) + 1)


def test_an_output_that_is_an_input_is_a_copy():
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [3])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    sess = onyx.InferenceSession(model.SerializeToString())
    x = np.array([1, 2, 3], dtype=np.int64)
    (y,) = sess.run(None, {"x": x})
    y[0] = 100
    assert x.tolist() == [1, 2, 3] and y.tolist() == [100, 2, 3]
