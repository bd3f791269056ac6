"""onnx's backend interface over Onyx, so onnx's own test suite runs on it::

    import onnx.backend.test
    import onyx.backend

    globals().update(onnx.backend.test.BackendTest(onyx.backend, __name__).test_cases)
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
import onnx
from onnx import helper
from onnx.backend.base import Backend, BackendRep

from . import InferenceSession, get_device


class OnyxBackendRep(BackendRep):
    """A prepared model: runs inputs given as a list (graph order) or a dict."""

    def __init__(self, session: InferenceSession) -> None:
        self._session = session

    def run(self, inputs: Any, **kwargs: Any) -> Tuple[Any, ...]:
        if isinstance(inputs, dict):
            feed = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            names = [a.name for a in self._session.get_inputs()]
            if len(inputs) > len(names):
                from . import InvalidArgument

                raise InvalidArgument(
                    f"{len(inputs)} inputs were given but the model takes {len(names)}: {names}"
                )
            feed = dict(zip(names, inputs))
        return tuple(self._session.run(None, feed))


class OnyxBackend(Backend):
    """Runs ONNX models and single nodes on Onyx's CPU engine."""

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return cls.supports_device(device)

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device.upper() == get_device()

    @classmethod
    def prepare(cls, model: Any, device: str = "CPU", **kwargs: Any) -> OnyxBackendRep:
        if isinstance(model, onnx.ModelProto):
            model = model.SerializeToString()
        return OnyxBackendRep(InferenceSession(model))

    @classmethod
    def run_model(
        cls, model: Any, inputs: Any, device: str = "CPU", **kwargs: Any
    ) -> Tuple[Any, ...]:
        return cls.prepare(model, device, **kwargs).run(inputs)

    @classmethod
    def run_node(
        cls,
        node: onnx.NodeProto,
        inputs: Any,
        device: str = "CPU",
        outputs_info: Optional[Sequence[Tuple[np.dtype, Tuple[int, ...]]]] = None,
        **kwargs: Any,
    ) -> Tuple[Any, ...]:
        """Runs one node on `inputs` (a list in the node's input order, or a
        dict by name), in a model built around it."""
        names = [n for n in node.input if n]
        if isinstance(inputs, dict):
            values = [inputs[n] for n in names]
        else:
            values = list(inputs)
        graph_inputs = [
            helper.make_tensor_value_info(
                n, helper.np_dtype_to_tensor_dtype(np.asarray(v).dtype), np.asarray(v).shape
            )
            for n, v in zip(names, values)
        ]
        graph_outputs: List[onnx.ValueInfoProto] = []
        for i, n in enumerate(o for o in node.output if o):
            if outputs_info is not None and i < len(outputs_info):
                dt, shape = outputs_info[i]
                graph_outputs.append(
                    helper.make_tensor_value_info(
                        n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape
                    )
                )
            else:
                graph_outputs.append(helper.make_empty_tensor_value_info(n))
        graph = helper.make_graph([node], f"run_node_{node.op_type}", graph_inputs, graph_outputs)
        opset = kwargs.pop("opset_version", None) or onnx.defs.onnx_opset_version()
        domain = node.domain or ""
        opsets = [helper.make_opsetid("", opset)]
        if domain not in ("", "ai.onnx"):
            opsets.append(helper.make_opsetid(domain, 1))
        model = helper.make_model(graph, opset_imports=opsets)
        feed: Dict[str, Any] = dict(zip(names, values))
        return tuple(InferenceSession(model.SerializeToString()).run(None, feed))


prepare = OnyxBackend.prepare
run_model = OnyxBackend.run_model
run_node = OnyxBackend.run_node
supports_device = OnyxBackend.supports_device
is_compatible = OnyxBackend.is_compatible
