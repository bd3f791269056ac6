//! Files holding one value: TensorProto, SequenceProto, OptionalProto or MapProto.

use onyx_tensor::{DType, MapValue, Tensor, Value};
use prost::Message;

use crate::onnx::{MapProto, OptionalProto, SequenceProto, TensorProto};
use crate::{tensor_from_proto, tensor_to_proto, FormatError};

/// What kind of proto a value file holds: the protobuf bytes alone cannot
/// tell, so the caller says what the graph declares.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueKind {
    Tensor,
    Sequence,
    Optional,
    Map,
}

// elem_type numbers shared by SequenceProto and OptionalProto
const ELEM_TENSOR: i32 = 1;
const ELEM_SEQUENCE: i32 = 3;
const ELEM_MAP: i32 = 4;
const ELEM_OPTIONAL: i32 = 5;

fn decode_err(kind: &str, e: prost::DecodeError) -> FormatError {
    FormatError(format!("not a valid {kind}: {e}"))
}

fn sequence_from_proto(s: &SequenceProto) -> Result<Value, FormatError> {
    let mut items = Vec::new();
    for t in &s.tensor_values {
        items.push(Value::Tensor(tensor_from_proto(t, None)?));
    }
    for s in &s.sequence_values {
        items.push(sequence_from_proto(s)?);
    }
    for m in &s.map_values {
        items.push(map_from_proto(m)?);
    }
    for o in &s.optional_values {
        items.push(optional_from_proto(o)?);
    }
    let elem_dtype = items.iter().find_map(|v| v.as_tensor().map(Tensor::dtype));
    Ok(Value::Sequence { elem_dtype, items })
}

fn map_from_proto(m: &MapProto) -> Result<Value, FormatError> {
    let key_type = m
        .key_type
        .and_then(DType::from_onnx)
        .unwrap_or(DType::Int64);
    let keys = if key_type == DType::String {
        let keys = m
            .string_keys
            .iter()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        Tensor::from_vec(vec![m.string_keys.len()], keys)?
    } else {
        Tensor::from_vec(vec![m.keys.len()], m.keys.clone())?
    };
    let values = match &m.values {
        Some(s) => sequence_from_proto(s)?,
        None => Value::Sequence {
            elem_dtype: None,
            items: vec![],
        },
    };
    Ok(Value::Map(MapValue {
        keys,
        values: Box::new(values),
    }))
}

fn optional_from_proto(o: &OptionalProto) -> Result<Value, FormatError> {
    let inner = match o.elem_type.unwrap_or(0) {
        ELEM_TENSOR => o
            .tensor_value
            .as_ref()
            .map(|t| tensor_from_proto(t, None).map(Value::Tensor)),
        ELEM_SEQUENCE => o.sequence_value.as_ref().map(sequence_from_proto),
        ELEM_MAP => o.map_value.as_ref().map(map_from_proto),
        ELEM_OPTIONAL => o.optional_value.as_deref().map(optional_from_proto),
        _ => None,
    };
    Ok(Value::Optional(inner.transpose()?.map(Box::new)))
}

/// Decodes a value file of the given kind; returns the name stored in it
/// (empty when it has none) and the value.
pub fn decode_value_file(bytes: &[u8], kind: ValueKind) -> Result<(String, Value), FormatError> {
    match kind {
        ValueKind::Tensor => {
            let t = TensorProto::decode(bytes).map_err(|e| decode_err("TensorProto", e))?;
            Ok((
                t.name().to_string(),
                Value::Tensor(tensor_from_proto(&t, None)?),
            ))
        }
        ValueKind::Sequence => {
            let s = SequenceProto::decode(bytes).map_err(|e| decode_err("SequenceProto", e))?;
            Ok((s.name.clone().unwrap_or_default(), sequence_from_proto(&s)?))
        }
        ValueKind::Optional => {
            let o = OptionalProto::decode(bytes).map_err(|e| decode_err("OptionalProto", e))?;
            Ok((o.name.clone().unwrap_or_default(), optional_from_proto(&o)?))
        }
        ValueKind::Map => {
            let m = MapProto::decode(bytes).map_err(|e| decode_err("MapProto", e))?;
            Ok((m.name.clone().unwrap_or_default(), map_from_proto(&m)?))
        }
    }
}

fn sequence_to_proto(items: &[Value], name: Option<String>) -> SequenceProto {
    let mut s = SequenceProto {
        name,
        elem_type: Some(ELEM_TENSOR),
        ..Default::default()
    };
    for item in items {
        match item {
            Value::Tensor(t) => s.tensor_values.push(tensor_to_proto(t, "")),
            Value::Sequence { items, .. } => {
                s.elem_type = Some(ELEM_SEQUENCE);
                s.sequence_values.push(sequence_to_proto(items, None));
            }
            Value::Map(m) => {
                s.elem_type = Some(ELEM_MAP);
                s.map_values.push(map_to_proto(m, None));
            }
            Value::Optional(o) => {
                s.elem_type = Some(ELEM_OPTIONAL);
                s.optional_values
                    .push(optional_to_proto(o.as_deref(), None));
            }
        }
    }
    s
}

fn map_to_proto(m: &MapValue, name: Option<String>) -> MapProto {
    let mut p = MapProto {
        name,
        key_type: Some(m.keys.dtype().onnx_code()),
        ..Default::default()
    };
    match m.keys.as_slice::<String>() {
        Ok(keys) => p.string_keys = keys.iter().map(|k| k.as_bytes().to_vec()).collect(),
        Err(_) => p.keys = m.keys.to_i64_vec().unwrap_or_default(),
    }
    if let Value::Sequence { items, .. } = m.values.as_ref() {
        p.values = Some(sequence_to_proto(items, None));
    }
    p
}

fn optional_to_proto(v: Option<&Value>, name: Option<String>) -> OptionalProto {
    let mut o = OptionalProto {
        name,
        elem_type: Some(0),
        ..Default::default()
    };
    match v {
        None => {}
        Some(Value::Tensor(t)) => {
            o.elem_type = Some(ELEM_TENSOR);
            o.tensor_value = Some(tensor_to_proto(t, ""));
        }
        Some(Value::Sequence { items, .. }) => {
            o.elem_type = Some(ELEM_SEQUENCE);
            o.sequence_value = Some(sequence_to_proto(items, None));
        }
        Some(Value::Map(m)) => {
            o.elem_type = Some(ELEM_MAP);
            o.map_value = Some(map_to_proto(m, None));
        }
        Some(Value::Optional(inner)) => {
            o.elem_type = Some(ELEM_OPTIONAL);
            o.optional_value = Some(Box::new(optional_to_proto(inner.as_deref(), None)));
        }
    }
    o
}

/// Serialises a value as the proto matching its kind.
pub fn value_to_proto_bytes(v: &Value, name: &str) -> Vec<u8> {
    let name_opt = Some(name.to_string());
    match v {
        Value::Tensor(t) => tensor_to_proto(t, name).encode_to_vec(),
        Value::Sequence { items, .. } => sequence_to_proto(items, name_opt).encode_to_vec(),
        Value::Map(m) => map_to_proto(m, name_opt).encode_to_vec(),
        Value::Optional(o) => optional_to_proto(o.as_deref(), name_opt).encode_to_vec(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sequences_and_optionals_round_trip() {
        let t = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
        let seq = Value::Sequence {
            elem_dtype: Some(DType::Float),
            items: vec![t.clone().into()],
        };
        let bytes = value_to_proto_bytes(&seq, "s");
        let (name, back) = decode_value_file(&bytes, ValueKind::Sequence).unwrap();
        assert_eq!(name, "s");
        assert_eq!(back, seq);
        let opt = Value::Optional(Some(Box::new(t.into())));
        let bytes = value_to_proto_bytes(&opt, "o");
        assert_eq!(
            decode_value_file(&bytes, ValueKind::Optional).unwrap().1,
            opt
        );
        let empty = Value::Optional(None);
        let bytes = value_to_proto_bytes(&empty, "e");
        assert_eq!(
            decode_value_file(&bytes, ValueKind::Optional).unwrap().1,
            empty
        );
    }
}
