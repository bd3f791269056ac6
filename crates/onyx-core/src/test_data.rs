//! Reading inputs and expected outputs laid out as the ONNX test data does:
//! `input_0.pb, input_1.pb, ...` and `output_0.pb, ...` in one folder.

use std::path::{Path, PathBuf};

use onyx_format::{decode_value_file, ValueKind};
use onyx_tensor::Value;

use crate::ir::{TypeInfo, ValueInfo};
use crate::{Error, ErrorKind, Result, Session};

/// The proto kind a declared type is stored as.
pub fn value_kind(ty: &Option<TypeInfo>) -> ValueKind {
    match ty {
        Some(TypeInfo::Sequence(_)) => ValueKind::Sequence,
        Some(TypeInfo::Optional(_)) => ValueKind::Optional,
        Some(TypeInfo::Map { .. }) => ValueKind::Map,
        _ => ValueKind::Tensor,
    }
}

/// Reads one value file as the given kind; returns its stored name and value.
pub fn read_value_file(path: &Path, kind: ValueKind) -> Result<(String, Value)> {
    let bytes = std::fs::read(path).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("cannot read '{}': {e}", path.display()),
        )
    })?;
    decode_value_file(&bytes, kind).map_err(|e| {
        Error::new(
            ErrorKind::InvalidArgument,
            format!("'{}': {}", path.display(), e.0),
        )
    })
}

/// `PREFIX_0.pb, PREFIX_1.pb, ...` in a folder, in index order, stopping at the first gap.
pub fn numbered_files(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    (0..)
        .map(|i| dir.join(format!("{prefix}_{i}.pb")))
        .take_while(|p| p.is_file())
        .collect()
}

/// Reads `input_K.pb` files and binds each to a graph input: by the name
/// stored in the file when it names one, else by position among the inputs
/// that have no initializer.
pub fn read_inputs_dir(session: &Session, dir: &Path) -> Result<Vec<(String, Value)>> {
    let files = numbered_files(dir, "input");
    if files.is_empty() && !dir.is_dir() {
        return Err(Error::new(
            ErrorKind::InvalidArgument,
            format!("inputs folder '{}' does not exist", dir.display()),
        ));
    }
    let inputs: Vec<&ValueInfo> = session.inputs();
    let all: Vec<&ValueInfo> = inputs
        .iter()
        .copied()
        .chain(session.overridable_initializers())
        .collect();
    let mut feeds = Vec::with_capacity(files.len());
    for (k, path) in files.iter().enumerate() {
        let positional = inputs.get(k).copied();
        let kind = value_kind(&positional.and_then(|i| i.ty.clone()));
        let (name, value) = read_value_file(path, kind)?;
        let target = match all.iter().find(|i| !name.is_empty() && i.name == name) {
            Some(info) => info.name.clone(),
            None => positional
                .ok_or_else(|| {
                    Error::new(
                        ErrorKind::InvalidArgument,
                        format!(
                            "'{}' has no matching model input (the model takes {} inputs)",
                            path.display(),
                            inputs.len()
                        ),
                    )
                })?
                .name
                .clone(),
        };
        feeds.push((target, value));
    }
    Ok(feeds)
}

/// Reads `output_K.pb` files as the kinds the graph outputs declare.
pub fn read_expected_outputs(session: &Session, dir: &Path) -> Result<Vec<Value>> {
    let outputs = session.outputs();
    numbered_files(dir, "output")
        .iter()
        .enumerate()
        .map(|(k, path)| {
            let kind = value_kind(&outputs.get(k).and_then(|o| o.ty.clone()));
            read_value_file(path, kind).map(|(_, v)| v)
        })
        .collect()
}
