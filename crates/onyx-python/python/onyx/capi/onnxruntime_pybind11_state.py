"""onnxruntime's exception classes under the module path onnxruntime uses."""

from .._onyx import (  # noqa: F401 - re-exported
    Fail,
    InvalidArgument,
    InvalidGraph,
    InvalidProtobuf,
    NoSuchFile,
    NotImplemented,
    OnyxError,
)
