"""Writes the ONNX backend conformance data into one folder per suite.

Run by conformance/make-data.sh inside a virtualenv with the pinned onnx.
Layout, as onnx's own backend test data: SUITE/CASE/model.onnx and
SUITE/CASE/test_data_set_N/{input,output}_K.pb.

Suites: node (from onnx.backend.test.case.node.collect_testcases);
simple, pytorch-converted and pytorch-operator copied from the wheel; light
laid out from the wheel's light models with inputs made as onnx's backend
runner makes them.
"""

import os
import shutil
import sys

import numpy as np
import onnx
from onnx import numpy_helper
from onnx.backend.test.case import node as node_cases


def value_to_proto(value, type_proto, name):
    """Serialises one input or output the way onnx's own generator does."""
    kind = type_proto.WhichOneof("value")
    if isinstance(value, onnx.TensorProto):
        return value
    if kind == "tensor_type" or kind is None:
        return numpy_helper.from_array(np.asarray(value), name)
    if kind == "sequence_type":
        return numpy_helper.from_list(list(value), name)
    if kind == "optional_type":
        return numpy_helper.from_optional(value, name)
    if kind == "map_type":
        return numpy_helper.from_dict(value, name)
    raise ValueError(f"unsupported value kind {kind}")


def write_node_cases(out_dir):
    count = 0
    for case in node_cases.collect_testcases():
        case_dir = os.path.join(out_dir, case.name)
        os.makedirs(case_dir, exist_ok=True)
        onnx.save(case.model, os.path.join(case_dir, "model.onnx"))
        graph = case.model.graph
        for i, (inputs, outputs) in enumerate(case.data_sets):
            set_dir = os.path.join(case_dir, f"test_data_set_{i}")
            os.makedirs(set_dir, exist_ok=True)
            for j, value in enumerate(inputs):
                info = graph.input[j]
                proto = value_to_proto(value, info.type, info.name)
                with open(os.path.join(set_dir, f"input_{j}.pb"), "wb") as f:
                    f.write(proto.SerializeToString())
            for j, value in enumerate(outputs):
                info = graph.output[j]
                proto = value_to_proto(value, info.type, info.name)
                with open(os.path.join(set_dir, f"output_{j}.pb"), "wb") as f:
                    f.write(proto.SerializeToString())
        count += 1
    return count


def light_input(value_info):
    """The input onnx's backend runner makes for a light model: arange(n) / n
    in the declared shape (dims without a value count as 1), as float32."""
    dims = value_info.type.tensor_type.shape.dim
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in dims)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


def write_light_cases(out_dir):
    """Lays the light models out as cases: model.onnx, the made inputs and the
    expected output shipped beside each model."""
    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    count = 0
    for file in sorted(os.listdir(src)):
        if not file.endswith(".onnx"):
            continue
        name = file[: -len(".onnx")]
        model = onnx.load(os.path.join(src, file))
        set_dir = os.path.join(out_dir, name, "test_data_set_0")
        os.makedirs(set_dir, exist_ok=True)
        shutil.copy(os.path.join(src, file), os.path.join(out_dir, name, "model.onnx"))
        inits = {i.name for i in model.graph.initializer}
        inputs = [i for i in model.graph.input if i.name not in inits]
        for k, info in enumerate(inputs):
            proto = numpy_helper.from_array(light_input(info), info.name)
            with open(os.path.join(set_dir, f"input_{k}.pb"), "wb") as f:
                f.write(proto.SerializeToString())
        for k in range(len(model.graph.output)):
            shutil.copy(
                os.path.join(src, f"{name}_output_{k}.pb"),
                os.path.join(set_dir, f"output_{k}.pb"),
            )
        count += 1
    return count


def copy_wheel_suite(out_dir, suite):
    src = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", suite)
    if os.path.isdir(src):
        shutil.copytree(src, out_dir, dirs_exist_ok=True)
    return len(os.listdir(out_dir)) if os.path.isdir(out_dir) else 0


def main():
    root = sys.argv[1]
    os.makedirs(root, exist_ok=True)
    n = write_node_cases(os.path.join(root, "node"))
    print(f"node: {n} cases")
    n = write_light_cases(os.path.join(root, "light"))
    print(f"light: {n} cases")
    for suite in ["simple", "pytorch-converted", "pytorch-operator"]:
        n = copy_wheel_suite(os.path.join(root, suite), suite)
        print(f"{suite}: {n} cases")


if __name__ == "__main__":
    main()
