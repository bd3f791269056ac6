use std::path::Path;

use bytes::Bytes;
use prost::Message;

use crate::external::IN_MODEL_FILE;
use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::{ModelProto, StringStringEntryProto, TensorProto};
use crate::{ExternalDataDir, FormatError};

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
    decode(bytes)
}

/// [`decode_model`] from any buffer; a `Bytes` source lends its memory to
/// the tensors' raw data instead of having it copied.
fn decode(bytes: impl bytes::Buf) -> Result<ModelProto, FormatError> {
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

/// Inline tensors at least this large are not kept with the decoded model:
/// import reads them from the file one at a time.
const READ_AT_IMPORT_BYTES: usize = 1 << 16;

/// Reads and decodes an .onnx file; also returns where its external data
/// (and its large inline tensors) are read from.
///
/// The main graph's large inline initializers are turned into references to
/// their bytes in the model file, so that the file's buffer is freed here
/// and import reads each tensor on its own: a model's weights are then never
/// in memory twice over.
pub fn load_model(
    path: &Path,
    limits: &LoadLimits,
) -> Result<(ModelProto, ExternalDataDir), FormatError> {
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
    let file = Bytes::from(
        std::fs::read(path)
            .map_err(|e| FormatError(format!("cannot read model '{}': {e}", path.display())))?,
    );
    // decoding from Bytes makes every raw_data a slice of `file`, not a copy
    let mut model =
        decode(file.clone()).map_err(|e| FormatError(format!("'{}': {}", path.display(), e.0)))?;
    let mut left = false;
    if let Some(graph) = model.graph.as_mut() {
        for t in &mut graph.initializer {
            left |= leave_in_file(t, &file);
        }
    }
    if left {
        // what stays inline still shares the file's buffer: decoding a copy
        // of the slimmed model lets the buffer go now
        model = decode_model(&crate::encode_model(&model))?;
    }
    Ok((model, ExternalDataDir::of_model_file(path)))
}

/// Points a large inline tensor at its bytes' place in `file` instead;
/// says whether it did.
fn leave_in_file(t: &mut TensorProto, file: &Bytes) -> bool {
    let Some(raw) = &t.raw_data else {
        return false;
    };
    if raw.len() < READ_AT_IMPORT_BYTES || t.data_location() == DataLocation::External {
        return false;
    }
    // the decoder slices `file` for raw data; anything else stays inline
    let Some(offset) = (raw.as_ptr() as usize)
        .checked_sub(file.as_ptr() as usize)
        .filter(|o| o + raw.len() <= file.len())
    else {
        return false;
    };
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.into()),
        value: Some(value),
    };
    t.external_data = vec![
        entry("location", IN_MODEL_FILE.into()),
        entry("offset", offset.to_string()),
        entry("length", raw.len().to_string()),
    ];
    t.set_data_location(DataLocation::External);
    t.raw_data = None;
    true
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

#[cfg(test)]
mod read_at_import_tests {
    use super::*;
    use crate::onnx::GraphProto;
    use crate::{encode_model, tensor_from_proto, tensor_to_proto};
    use onyx_tensor::Tensor;

    #[test]
    fn large_inline_tensors_are_read_from_the_file_at_import() {
        let big =
            Tensor::from_vec(vec![40_000], (0..40_000).map(|i| i as f32 * 0.25).collect()).unwrap();
        let small = Tensor::from_vec(vec![3], vec![1i64, -3, 7]).unwrap();
        let model = ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                initializer: vec![
                    tensor_to_proto(&small, "small"),
                    tensor_to_proto(&big, "big"),
                ],
                ..Default::default()
            }),
            ..Default::default()
        };
        let dir = std::env::temp_dir().join(format!("onyx-read-at-import-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.onnx");
        std::fs::write(&path, encode_model(&model)).unwrap();

        let (loaded, external) = load_model(&path, &LoadLimits::default()).unwrap();
        let inits = &loaded.graph.as_ref().unwrap().initializer;
        assert_eq!(inits[0].data_location(), DataLocation::Default);
        assert_eq!(inits[1].data_location(), DataLocation::External);
        assert!(inits[1].raw_data.is_none());
        assert_eq!(
            tensor_from_proto(&inits[0], Some(&external)).unwrap(),
            small
        );
        assert_eq!(tensor_from_proto(&inits[1], Some(&external)).unwrap(), big);
        // the same reference in a model that did not come from a file is refused
        let from_bytes = ExternalDataDir::new(&dir);
        let err = tensor_from_proto(&inits[1], Some(&from_bytes))
            .unwrap_err()
            .0;
        assert!(err.contains("names the model file"), "{err}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
