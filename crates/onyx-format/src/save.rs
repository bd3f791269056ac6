//! Writing models: inline when the model fits in one protobuf message, else
//! with the large initializers moved to an external data file next to it.

use std::io::Write;
use std::path::Path;

use prost::bytes::Bytes;
use prost::Message;

use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::{ModelProto, StringStringEntryProto, TensorProto};
use crate::FormatError;

/// The largest message protobuf can encode (2 GiB - 1).
const MAX_MESSAGE_BYTES: usize = i32::MAX as usize;

/// Initializers of at least this many bytes leave a model too large to be
/// inline (onnx's own external-data writer uses the same threshold).
const EXTERNAL_MIN_BYTES: usize = 1024;

/// Serialises a model to bytes.
pub fn encode_model(model: &ModelProto) -> Vec<u8> {
    model.encode_to_vec()
}

/// Writes a model to an .onnx file. A model over protobuf's 2 GiB limit
/// keeps its structure in the file and moves the raw data of its main
/// graph's initializers of 1 KiB or more into `<file name>.data` in the same
/// folder, as ONNX external data (which `load_model` reads back).
pub fn save_model(model: ModelProto, path: &Path) -> Result<(), FormatError> {
    save_model_within(model, path, MAX_MESSAGE_BYTES)
}

fn save_model_within(
    mut model: ModelProto,
    path: &Path,
    max_bytes: usize,
) -> Result<(), FormatError> {
    let cannot_write =
        |e: std::io::Error| FormatError(format!("cannot write model '{}': {e}", path.display()));
    if model.encoded_len() > max_bytes {
        let file_name = path.file_name().ok_or_else(|| {
            FormatError(format!(
                "cannot write model '{}': not a file path",
                path.display()
            ))
        })?;
        let data_name = format!("{}.data", file_name.to_string_lossy());
        let moved = take_large_initializers(&mut model);
        // the structure alone must fit before anything is written
        let rest = model.encoded_len() + moved.len() * (data_name.len() + 64);
        if rest > max_bytes {
            return Err(FormatError(format!(
                "cannot write model '{}': it is about {rest} bytes even with its initializers \
                 in external data, over protobuf's limit of {max_bytes} bytes",
                path.display()
            )));
        }
        let data_path = path.with_file_name(&data_name);
        let mut data =
            std::io::BufWriter::new(std::fs::File::create(&data_path).map_err(|e| {
                FormatError(format!("cannot write '{}': {e}", data_path.display()))
            })?);
        let graph = model
            .graph
            .as_mut()
            .expect("a model with initializers has a graph");
        let mut offset = 0u64;
        for (index, bytes) in moved {
            data.write_all(&bytes)
                .map_err(|e| FormatError(format!("cannot write '{}': {e}", data_path.display())))?;
            point_to_external(
                &mut graph.initializer[index],
                &data_name,
                offset,
                bytes.len(),
            );
            offset += bytes.len() as u64;
        }
        data.flush()
            .map_err(|e| FormatError(format!("cannot write '{}': {e}", data_path.display())))?;
    }
    std::fs::write(path, encode_model(&model)).map_err(cannot_write)
}

/// Takes the raw data out of the main graph's large initializers; returns
/// each one's index with its bytes.
fn take_large_initializers(model: &mut ModelProto) -> Vec<(usize, Bytes)> {
    let Some(graph) = model.graph.as_mut() else {
        return Vec::new();
    };
    graph
        .initializer
        .iter_mut()
        .enumerate()
        .filter(|(_, t)| {
            t.raw_data
                .as_ref()
                .is_some_and(|r| r.len() >= EXTERNAL_MIN_BYTES)
        })
        .filter_map(|(i, t)| t.raw_data.take().map(|r| (i, r)))
        .collect()
}

fn point_to_external(t: &mut TensorProto, location: &str, offset: u64, length: usize) {
    let entry = |key: &str, value: String| StringStringEntryProto {
        key: Some(key.to_string()),
        value: Some(value),
    };
    t.data_location = Some(DataLocation::External as i32);
    t.external_data = vec![
        entry("location", location.to_string()),
        entry("offset", offset.to_string()),
        entry("length", length.to_string()),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::onnx::GraphProto;
    use crate::{load_model, tensor_from_proto, tensor_to_proto, LoadLimits};
    use onyx_tensor::Tensor;

    fn model_with(tensors: &[(&str, &Tensor)]) -> ModelProto {
        ModelProto {
            ir_version: Some(8),
            graph: Some(GraphProto {
                name: Some("g".into()),
                initializer: tensors.iter().map(|(n, t)| tensor_to_proto(t, n)).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("onyx-save-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_model_over_the_limit_moves_large_initializers_out() {
        let big = Tensor::from_vec(vec![512], (0..512).map(|i| i as f32 * 0.5).collect()).unwrap();
        let small = Tensor::from_vec(vec![2], vec![1i64, -3]).unwrap();
        let dir = scratch("split");
        let path = dir.join("m.onnx");
        let model = model_with(&[("small", &small), ("big", &big)]);
        save_model_within(model.clone(), &path, 1000).unwrap();
        assert_eq!(
            std::fs::metadata(dir.join("m.onnx.data")).unwrap().len(),
            2048
        );
        let (loaded, external) = load_model(&path, &LoadLimits::default()).unwrap();
        let inits = &loaded.graph.as_ref().unwrap().initializer;
        assert_eq!(inits[0].data_location(), DataLocation::Default);
        assert_eq!(inits[1].data_location(), DataLocation::External);
        assert_eq!(
            tensor_from_proto(&inits[0], Some(&external)).unwrap(),
            small
        );
        assert_eq!(tensor_from_proto(&inits[1], Some(&external)).unwrap(), big);

        // under the real limit the same model stays in one file
        let inline = dir.join("inline.onnx");
        save_model(model.clone(), &inline).unwrap();
        assert!(!dir.join("inline.onnx.data").exists());
        assert_eq!(
            load_model(&inline, &LoadLimits::default()).unwrap().0,
            model
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_structure_over_the_limit_is_refused_before_writing() {
        let dir = scratch("refuse");
        let path = dir.join("m.onnx");
        let small = Tensor::from_vec(vec![2], vec![1i64, -3]).unwrap();
        let err = save_model_within(model_with(&[("small", &small)]), &path, 10).unwrap_err();
        assert!(
            err.0
                .contains("even with its initializers in external data"),
            "{}",
            err.0
        );
        assert!(!path.exists() && !dir.join("m.onnx.data").exists());
        let err = save_model(model_with(&[]), &dir.join("no-such-folder").join("m.onnx"));
        assert!(err.unwrap_err().0.starts_with("cannot write model"));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
