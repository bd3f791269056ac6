use std::path::{Path, PathBuf};

use prost::Message;

use crate::onnx::ModelProto;
use crate::FormatError;

/// Bounds checked while loading, before anything large is allocated.
#[derive(Clone, Debug)]
pub struct LoadLimits {
    /// The largest model file (the protobuf itself, not external data).
    pub max_model_bytes: u64,
}

impl Default for LoadLimits {
    fn default() -> Self {
        // protobuf itself cannot describe a message over 2 GiB
        LoadLimits {
            max_model_bytes: 2 << 30,
        }
    }
}

/// Decodes a model from the bytes of an .onnx file.
pub fn decode_model(bytes: &[u8]) -> Result<ModelProto, FormatError> {
    let model = ModelProto::decode(bytes).map_err(|e| {
        FormatError(format!(
            "not a valid ONNX model: {}",
            short_decode_error(&e)
        ))
    })?;
    if model.graph.is_none() {
        return Err(FormatError(
            "not a valid ONNX model: it has no graph".into(),
        ));
    }
    Ok(model)
}

/// The decoder's message, with the path through deeply nested messages cut
/// to its ends so that it stays one readable line.
fn short_decode_error(e: &prost::DecodeError) -> String {
    let text = e.to_string();
    let parts: Vec<&str> = text.split(": ").collect();
    if parts.len() <= 6 {
        return text;
    }
    // "failed to decode Protobuf message", the outermost fields, "...", the cause;
    // prost lists the path innermost first
    let n = parts.len();
    let mut path: Vec<&str> = parts[1..n - 1].to_vec();
    path.reverse();
    format!(
        "{}: {}: {}: ...: {}",
        parts[0],
        path[0],
        path[1],
        parts[n - 1]
    )
}

/// Reads and decodes an .onnx file; also returns the folder that external
/// data locations are relative to.
pub fn load_model(path: &Path, limits: &LoadLimits) -> Result<(ModelProto, PathBuf), FormatError> {
    let meta = std::fs::metadata(path)
        .map_err(|e| FormatError(format!("cannot read model '{}': {e}", path.display())))?;
    if meta.is_dir() {
        return Err(FormatError(format!(
            "'{}' is a folder, not a model file",
            path.display()
        )));
    }
    if meta.len() > limits.max_model_bytes {
        return Err(FormatError(format!(
            "model '{}' is {} bytes, over the limit of {} bytes",
            path.display(),
            meta.len(),
            limits.max_model_bytes
        )));
    }
    let bytes = std::fs::read(path)
        .map_err(|e| FormatError(format!("cannot read model '{}': {e}", path.display())))?;
    let model =
        decode_model(&bytes).map_err(|e| FormatError(format!("'{}': {}", path.display(), e.0)))?;
    let dir = path
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."));
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    Ok((model, dir))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::encode_model;
    use crate::onnx::{GraphProto, NodeProto};

    #[test]
    fn round_trips_and_rejects_garbage() {
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                name: Some("g".into()),
                node: vec![NodeProto {
                    op_type: Some("Relu".into()),
                    input: vec!["x".into()],
                    output: vec!["y".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        };
        let bytes = encode_model(&model);
        assert_eq!(decode_model(&bytes).unwrap(), model);
        assert!(decode_model(&bytes[..bytes.len() - 3]).is_err());
        assert!(decode_model(&[0xff, 0xff, 0xff, 0x01]).is_err());
        // messages nested past the decoder's limit: one short line
        let mut g = GraphProto::default();
        for _ in 0..60 {
            g = GraphProto {
                node: vec![NodeProto {
                    attribute: vec![crate::onnx::AttributeProto {
                        g: Some(g),
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            };
        }
        let deep = encode_model(&ModelProto {
            graph: Some(g),
            ..Default::default()
        });
        let err = decode_model(&deep).unwrap_err().0;
        assert_eq!(
            err,
            "not a valid ONNX model: failed to decode Protobuf message: \
             ModelProto.graph: GraphProto.node: ...: recursion limit reached"
        );
        let err = load_model(Path::new("/nonexistent/model.onnx"), &LoadLimits::default());
        assert!(err.unwrap_err().0.contains("cannot read model"));
    }
}
