"""Where onnxruntime keeps its exception classes, for code that imports them
from there (`onnxruntime.capi.onnxruntime_pybind11_state`)."""
