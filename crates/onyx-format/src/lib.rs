//! The ONNX file format: protobuf types, model loading and saving, external
//! data, and conversion between `TensorProto` (and the sequence, optional and
//! map protos) and Onyx's in-memory values.
#![forbid(unsafe_code)]

mod external;
mod load;
mod save;
mod tensor_proto;
mod value_proto;

/// Types generated from onnx-ml.proto and onnx-data.proto (onnx 1.23.2) by
/// `tools/regen-proto.sh`. Do not edit by hand.
#[allow(clippy::all, missing_docs)]
pub mod onnx {
    include!("generated/onnx.rs");
}

pub use external::ExternalDataDir;
pub use load::{decode_model, load_model, LoadLimits};
pub use save::{encode_model, save_model};
pub use tensor_proto::{tensor_from_proto, tensor_to_proto};
pub use value_proto::{decode_value_file, value_to_proto_bytes, ValueKind};

use std::fmt;

/// A problem with a model file or a serialized value, as one line of text.
#[derive(Clone, Debug, PartialEq)]
pub struct FormatError(pub String);

impl fmt::Display for FormatError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FormatError {}

impl From<onyx_tensor::TensorError> for FormatError {
    fn from(e: onyx_tensor::TensorError) -> FormatError {
        FormatError(e.0)
    }
}
