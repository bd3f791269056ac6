"""Onyx, an ONNX runtime written in Rust, with onnxruntime's Python API.

Code written for onnxruntime runs on Onyx by changing its import::

    import onyx as ort

    sess = ort.InferenceSession("model.onnx", providers=["CPUExecutionProvider"])
    outputs = sess.run(None, {"input": x})
"""

from __future__ import annotations

import enum
import json
import os
import threading
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import _onyx
from ._onyx import (
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    NotImplemented,
    OnyxError,
)

__version__: str = _onyx.__version__

__all__ = [
    "Fail",
    "GraphOptimizationLevel",
    "InferenceSession",
    "InvalidArgument",
    "InvalidGraph",
    "InvalidProtobuf",
    "ModelMetadata",
    "NoSuchFile",
    "NodeArg",
    # NotImplemented is left out: `from onyx import *` would hide the builtin.
    "OnyxError",
    "OrtValue",
    "RunOptions",
    "SessionOptions",
    "__version__",
    "get_all_providers",
    "get_available_providers",
    "get_device",
]

_CPU = "CPUExecutionProvider"


def get_available_providers() -> List[str]:
    """The execution providers this build can run: the CPU."""
    return [_CPU]


def get_all_providers() -> List[str]:
    """Every execution provider Onyx knows of."""
    return [_CPU]


def get_device() -> str:
    """The device sessions run on."""
    return "CPU"


class GraphOptimizationLevel(enum.IntEnum):
    """How much a session may rewrite the graph before running it."""

    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_LAYOUT = 3
    ORT_ENABLE_ALL = 99


def _opt_level_name(level: Any) -> str:
    """The native level for an onnxruntime GraphOptimizationLevel (layout
    optimisations have no separate level in Onyx: they count as all)."""
    try:
        level = GraphOptimizationLevel(int(level))
    except (TypeError, ValueError):
        raise InvalidArgument(f"unknown graph_optimization_level {level!r}") from None
    return {
        GraphOptimizationLevel.ORT_DISABLE_ALL: "disabled",
        GraphOptimizationLevel.ORT_ENABLE_BASIC: "basic",
        GraphOptimizationLevel.ORT_ENABLE_EXTENDED: "extended",
    }.get(level, "all")


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class SessionOptions:
    """Options for building a session, with onnxruntime's names and defaults."""

    def __init__(self) -> None:
        self.intra_op_num_threads: int = 0
        self.inter_op_num_threads: int = 0
        self.graph_optimization_level: GraphOptimizationLevel = (
            GraphOptimizationLevel.ORT_ENABLE_ALL
        )
        self.execution_mode: ExecutionMode = ExecutionMode.ORT_SEQUENTIAL
        # where the session saves the model as its optimisations rewrote it
        self.optimized_model_filepath: str = ""
        self.log_severity_level: int = 2
        self.log_verbosity_level: int = 0
        self.logid: str = ""
        self.enable_profiling: bool = False
        self.profile_file_prefix: str = "onyx_profile"
        self.enable_cpu_mem_arena: bool = True
        self.enable_mem_pattern: bool = True
        self.enable_mem_reuse: bool = True
        self.use_deterministic_compute: bool = False
        self._config: Dict[str, str] = {}

    def add_session_config_entry(self, key: str, value: str) -> None:
        self._config[str(key)] = str(value)

    def get_session_config_entry(self, key: str) -> str:
        if key not in self._config:
            raise InvalidArgument(f"session config entry '{key}' is not set")
        return self._config[key]


class RunOptions:
    """Options for one run."""

    def __init__(self) -> None:
        self.log_severity_level: int = 2
        self.log_verbosity_level: int = 0
        self.logid: str = ""
        self.run_tag: str = ""
        self.terminate: bool = False
        self._config: Dict[str, str] = {}

    def add_run_config_entry(self, key: str, value: str) -> None:
        self._config[str(key)] = str(value)

    def get_run_config_entry(self, key: str) -> str:
        if key not in self._config:
            raise InvalidArgument(f"run config entry '{key}' is not set")
        return self._config[key]


class NodeArg:
    """A model input or output: its name, type string and shape."""

    __slots__ = ("name", "type", "shape")

    def __init__(self, name: str, type: str, shape: List[Any]) -> None:
        self.name = name
        self.type = type
        self.shape = shape

    def __repr__(self) -> str:
        return f"NodeArg(name={self.name!r}, type={self.type!r}, shape={self.shape!r})"


class ModelMetadata:
    """What the model says about itself."""

    def __init__(self, meta: Dict[str, Any]) -> None:
        self.producer_name: str = meta["producer_name"]
        self.graph_name: str = meta["graph_name"]
        self.domain: str = meta["domain"]
        self.description: str = meta["description"]
        self.graph_description: str = ""
        self.version: int = meta["version"]
        self.custom_metadata_map: Dict[str, str] = dict(meta["custom_metadata_map"])


# numpy (kind, itemsize) -> ONNX element type code
_NUMPY_CODES = {
    ("f", 4): 1,
    ("u", 1): 2,
    ("i", 1): 3,
    ("u", 2): 4,
    ("i", 2): 5,
    ("i", 4): 6,
    ("i", 8): 7,
    ("b", 1): 9,
    ("f", 2): 10,
    ("f", 8): 11,
    ("u", 4): 12,
    ("u", 8): 13,
}
# ml_dtypes' names -> ONNX element type code
_ML_DTYPES_CODES = {
    "bfloat16": 16,
    "float8_e4m3fn": 17,
    "float8_e4m3fnuz": 18,
    "float8_e5m2": 19,
    "float8_e5m2fnuz": 20,
    "uint4": 21,
    "int4": 22,
    "float4_e2m1fn": 23,
    "float8_e8m0fnu": 24,
    "uint2": 25,
    "int2": 26,
}
_STRING = 8
_TYPE_NAMES = {
    "float": 1,
    "uint8": 2,
    "int8": 3,
    "uint16": 4,
    "int16": 5,
    "int32": 6,
    "int64": 7,
    "string": 8,
    "bool": 9,
    "float16": 10,
    "double": 11,
    "uint32": 12,
    "uint64": 13,
    "bfloat16": 16,
    "float8e4m3fn": 17,
    "float8e4m3fnuz": 18,
    "float8e5m2": 19,
    "float8e5m2fnuz": 20,
    "uint4": 21,
    "int4": 22,
    "float4e2m1": 23,
    "float8e8m0": 24,
    "uint2": 25,
    "int2": 26,
}
_CODE_DTYPES: Dict[int, Any] = {code: np.dtype(f"{k}{n}") for (k, n), code in _NUMPY_CODES.items()}
_CODE_DTYPES[9] = np.dtype(bool)
_CODE_ML_NAMES = {code: name for name, code in _ML_DTYPES_CODES.items()}


def _numpy_dtype(code: int, name: str) -> Any:
    dt = _CODE_DTYPES.get(code)
    if dt is not None:
        return dt
    ml = _CODE_ML_NAMES.get(code)
    if ml is None:
        raise NotImplemented(f"output '{name}' has ONNX element type {code}, which numpy cannot hold")
    try:
        import ml_dtypes
    except ImportError:
        raise NotImplemented(
            f"output '{name}' has element type {ml}; install ml_dtypes to receive it as a numpy array"
        ) from None
    if not hasattr(ml_dtypes, ml):
        raise NotImplemented(f"output '{name}' has element type {ml}, which this ml_dtypes lacks")
    return np.dtype(getattr(ml_dtypes, ml))


def _element_code(name: str, dtype: np.dtype) -> int:
    if dtype.kind in "OUS":
        return _STRING
    code = _ML_DTYPES_CODES.get(dtype.name)
    if code is not None:
        return code
    code = _NUMPY_CODES.get((dtype.kind, dtype.itemsize))
    if code is None:
        raise NotImplemented(f"input '{name}' has numpy dtype {dtype}, which Onyx does not support")
    return code


def _inner(ty: str, prefix: str) -> str:
    return ty[len(prefix) : -1] if ty.startswith(prefix) and ty.endswith(")") else "undefined"


def _encode_tensor(name: str, value: Any, ty: str) -> tuple:
    if isinstance(value, np.generic):
        value = np.asarray(value)
    if not isinstance(value, np.ndarray):
        raise InvalidArgument(
            f"input '{name}' expects a numpy array ({ty}) but was given {type(value).__name__}"
        )
    code = _element_code(name, value.dtype)
    shape = [int(d) for d in value.shape]
    if code == _STRING:
        items = []
        for s in value.ravel(order="C").tolist():
            if isinstance(s, bytes):
                s = s.decode("utf-8", errors="replace")
            elif not isinstance(s, str):
                raise InvalidArgument(
                    f"input '{name}' is a string tensor but holds a {type(s).__name__} element"
                )
            items.append(s)
        return ("tensor", code, shape, items)
    arr = value
    if not arr.dtype.isnative:
        arr = arr.astype(arr.dtype.newbyteorder("="))
    # A byte view of the array's memory: Onyx reads a contiguous array in
    # place during the run (only bool and the 2/4-bit types are converted).
    arr = np.ascontiguousarray(arr).reshape(-1).view(np.uint8)
    return ("tensor", code, shape, arr)


def _encode(name: str, value: Any, ty: str) -> tuple:
    if ty.startswith("optional("):
        if value is None:
            return ("opt", None)
        return ("opt", _encode(name, value, _inner(ty, "optional(")))
    if ty.startswith("seq(") or (ty == "undefined" and isinstance(value, (list, tuple))):
        if not isinstance(value, (list, tuple)):
            raise InvalidArgument(
                f"input '{name}' expects a list ({ty}) but was given {type(value).__name__}"
            )
        elem = _inner(ty, "seq(")
        items = [_encode(name, v, elem) for v in value]
        code = _TYPE_NAMES.get(_inner(elem, "tensor("), 0)
        return ("seq", code, items)
    if ty.startswith("map(") or (ty == "undefined" and isinstance(value, dict)):
        if not isinstance(value, dict):
            raise InvalidArgument(
                f"input '{name}' expects a dict ({ty}) but was given {type(value).__name__}"
            )
        key_name, _, value_ty = _inner(ty, "map(").partition(",")
        key_code = _TYPE_NAMES.get(key_name)
        keys = list(value.keys())
        if key_code == _STRING or (key_code is None and keys and isinstance(keys[0], str)):
            key_arr = np.array(keys, dtype=object)
        else:
            key_arr = np.array(keys, dtype=_CODE_DTYPES.get(key_code or 7, np.int64))
        value_code = _TYPE_NAMES.get(_inner(value_ty, "tensor("))
        vals = list(value.values())
        if value_code == _STRING:
            val_arr = np.array(vals, dtype=object)
        else:
            val_arr = np.array(vals, dtype=_CODE_DTYPES.get(value_code or 1, np.float32))
        return ("map", _encode_tensor(name, key_arr, key_name), _encode_tensor(name, val_arr, value_ty))
    return _encode_tensor(name, value, ty)


def _decode(name: str, v: tuple) -> Any:
    kind = v[0]
    if kind == "tensor":
        _, code, shape, data = v
        if code == _STRING:
            arr = np.empty(len(data), dtype=object)
            arr[:] = data
            return arr.reshape(shape)
        # a flat array that owns Onyx's output vector: viewed, not copied
        return data.view(_numpy_dtype(code, name)).reshape(shape)
    if kind == "seq":
        return [_decode(name, item) for item in v[2]]
    if kind == "map":
        keys = _decode(name, v[1])
        values = _decode(name, v[2])
        if isinstance(values, np.ndarray) and values.ndim == 1:
            values = values.tolist()
        else:
            values = list(values)
        return dict(zip(keys.tolist(), values))
    if kind == "opt":
        return None if v[1] is None else _decode(name, v[1])
    raise Fail(f"output '{name}': unknown value kind '{kind}'")


class OrtValue:
    """A value held by Onyx between runs, as onnxruntime's OrtValue: feed it
    to `InferenceSession.run_with_ort_values` to skip the numpy conversion
    on every run."""

    def __init__(self, native: Any) -> None:
        self._native = native

    @staticmethod
    def ortvalue_from_numpy(numpy_obj: Any, device_type: str = "cpu", device_id: int = 0) -> "OrtValue":
        if device_type.lower() != "cpu":
            raise InvalidArgument(f"device '{device_type}' is not available; Onyx runs on the CPU")
        return OrtValue(_onyx.NativeValue(_encode("value", numpy_obj, "undefined")))

    def numpy(self) -> Any:
        return _decode("value", self._native.encoded())

    def is_tensor(self) -> bool:
        return self._native.shape() is not None

    def shape(self) -> List[int]:
        shape = self._native.shape()
        if shape is None:
            raise InvalidArgument(f"the value is a {self._native.kind()}, not a tensor")
        return list(shape)

    def data_type(self) -> str:
        return self._native.kind()

    def device_name(self) -> str:
        return "cpu"

    def __repr__(self) -> str:
        return f"OrtValue({self._native.kind()}, shape={self._native.shape()})"


class InferenceSession:
    """A loaded model, ready to run, with onnxruntime's InferenceSession API.

    One session can be run from several threads at once; the GIL is released
    while the model runs.
    """

    def __init__(
        self,
        path_or_bytes: Any,
        sess_options: Optional[SessionOptions] = None,
        providers: Optional[Sequence[Any]] = None,
        provider_options: Optional[Sequence[Dict[Any, Any]]] = None,
        **kwargs: Any,
    ) -> None:
        if isinstance(path_or_bytes, (bytearray, memoryview)):
            path_or_bytes = bytes(path_or_bytes)
        if isinstance(path_or_bytes, bytes):
            self._model_path: Optional[str] = None
            self._model_bytes: Optional[bytes] = path_or_bytes
        elif isinstance(path_or_bytes, (str, os.PathLike)):
            self._model_path = os.fspath(path_or_bytes)
            self._model_bytes = None
        else:
            raise InvalidArgument(
                f"a model is given as a path or bytes, not {type(path_or_bytes).__name__}"
            )
        self._sess_options = sess_options if sess_options is not None else SessionOptions()
        self._providers = self._pick_providers(providers)
        self._provider_options = [{} for _ in self._providers]
        threads = self._sess_options.intra_op_num_threads
        if not isinstance(threads, int) or threads < 0:
            raise InvalidArgument(
                f"intra_op_num_threads must be a whole number of 0 or more, not {threads!r}"
            )
        optimized_path = self._sess_options.optimized_model_filepath
        self._native = _onyx.NativeSession(
            self._model_bytes if self._model_bytes is not None else self._model_path,
            threads,
            _opt_level_name(self._sess_options.graph_optimization_level),
            os.fspath(optimized_path) if optimized_path else None,
        )
        self._inputs = [NodeArg(*t) for t in self._native.inputs()]
        self._outputs = [NodeArg(*t) for t in self._native.outputs()]
        overridable = [NodeArg(*t) for t in self._native.overridable_initializers()]
        self._types = {a.name: a.type for a in self._inputs + overridable}
        # Before IR version 4 every initializer had to be listed as a graph
        # input too, so there those are not offered as overridable
        # (onnxruntime does the same).
        if self._native.metadata()["ir_version"] < 4:
            overridable = []
        self._overridable = overridable
        self._output_index = {a.name: i for i, a in enumerate(self._outputs)}
        self._profile: Optional[List[Dict[str, Any]]] = None
        self._profile_start = time.perf_counter()
        self._profile_lock = threading.Lock()
        if self._sess_options.enable_profiling:
            self._profile = []

    @staticmethod
    def _pick_providers(providers: Optional[Sequence[Any]]) -> List[str]:
        if not providers:
            return [_CPU]
        names = [p[0] if isinstance(p, tuple) else p for p in providers]
        for n in names:
            if n not in get_available_providers():
                warnings.warn(
                    f"Specified provider '{n}' is not in available provider names. "
                    f"Available providers: '{', '.join(get_available_providers())}'",
                    stacklevel=3,
                )
        return [_CPU]

    def get_inputs(self) -> List[NodeArg]:
        return list(self._inputs)

    def get_outputs(self) -> List[NodeArg]:
        return list(self._outputs)

    def get_overridable_initializers(self) -> List[NodeArg]:
        return list(self._overridable)

    def get_modelmeta(self) -> ModelMetadata:
        return ModelMetadata(self._native.metadata())

    def get_providers(self) -> List[str]:
        return list(self._providers)

    def get_provider_options(self) -> Dict[str, Dict[str, str]]:
        return {p: {} for p in self._providers}

    def get_session_options(self) -> SessionOptions:
        return self._sess_options

    def set_providers(
        self, providers: Optional[Sequence[Any]] = None, provider_options: Any = None
    ) -> None:
        self._providers = self._pick_providers(providers)

    def disable_fallback(self) -> None:
        pass

    def enable_fallback(self) -> None:
        pass

    def run(
        self,
        output_names: Optional[Sequence[str]],
        input_feed: Dict[str, Any],
        run_options: Optional[RunOptions] = None,
    ) -> List[Any]:
        """Runs the model; returns the outputs named (all when None or empty)."""
        if not isinstance(input_feed, dict):
            raise InvalidArgument(
                f"input_feed must be a dict of input name to value, not {type(input_feed).__name__}"
            )
        if run_options is not None and run_options.terminate:
            raise Fail("the run was terminated (RunOptions.terminate is set)")
        wanted = self._wanted(output_names)
        feeds = []
        for name, value in input_feed.items():
            if not isinstance(name, str):
                raise InvalidArgument(f"input names must be str, not {type(name).__name__}")
            feeds.append((name, _encode(name, value, self._types.get(name, "undefined"))))
        start = time.perf_counter()
        results = self._native.run(feeds, wanted)
        if self._profile is not None:
            end = time.perf_counter()
            with self._profile_lock:
                self._profile.append(
                    {
                        "cat": "Session",
                        "name": "model_run",
                        "ph": "X",
                        "pid": os.getpid(),
                        "tid": threading.get_ident(),
                        "ts": int((start - self._profile_start) * 1e6),
                        "dur": int((end - start) * 1e6),
                        "args": {},
                    }
                )
        names = output_names if output_names else [a.name for a in self._outputs]
        return [_decode(n, r) for n, r in zip(names, results)]

    def _wanted(self, output_names: Optional[Sequence[str]]) -> Optional[List[int]]:
        if not output_names:
            return None
        if isinstance(output_names, str):
            raise InvalidArgument(f"output_names must be a list of names, not the string '{output_names}'")
        wanted = []
        for n in output_names:
            idx = self._output_index.get(n)
            if idx is None:
                known = [a.name for a in self._outputs]
                raise InvalidArgument(f"unknown output name '{n}'; the model's outputs are {known}")
            wanted.append(idx)
        return wanted

    def run_with_ort_values(
        self,
        output_names: Optional[Sequence[str]],
        input_dict_ort_values: Dict[str, OrtValue],
        run_options: Optional[RunOptions] = None,
    ) -> List[OrtValue]:
        """Runs on OrtValues and returns OrtValues: values stay in Onyx, so
        repeated runs on the same inputs skip the numpy conversions."""
        if not isinstance(input_dict_ort_values, dict):
            raise InvalidArgument(
                f"input_dict_ort_values must be a dict of input name to OrtValue, "
                f"not {type(input_dict_ort_values).__name__}"
            )
        if run_options is not None and run_options.terminate:
            raise Fail("the run was terminated (RunOptions.terminate is set)")
        feeds = []
        for name, value in input_dict_ort_values.items():
            if not isinstance(value, OrtValue):
                raise InvalidArgument(f"input '{name}' expects an OrtValue but was given {type(value).__name__}")
            feeds.append((name, value._native))
        return [OrtValue(v) for v in self._native.run_values(feeds, self._wanted(output_names))]

    def end_profiling(self) -> str:
        """Writes the runs timed so far as a Chrome trace; returns its path."""
        if self._profile is None:
            return ""
        stamp = time.strftime("%Y-%m-%d_%H-%M-%S")
        path = f"{self._sess_options.profile_file_prefix}_{stamp}.json"
        with self._profile_lock:
            events, self._profile = self._profile, []
        with open(path, "w") as f:
            json.dump(events, f)
        return path
