use crate::{DType, Tensor};

/// A map value (ai.onnx.ml ZipMap, DictVectorizer): keys of one type, values
/// as one tensor whose first dimension runs over the keys.
#[derive(Clone, Debug, PartialEq)]
pub struct MapValue {
    pub keys: Tensor,
    pub values: Box<Value>,
}

/// Anything an ONNX graph passes along an edge.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Tensor(Tensor),
    /// A sequence of tensors; `elem_dtype` is kept so an empty one still has a type.
    Sequence {
        elem_dtype: Option<DType>,
        items: Vec<Value>,
    },
    Map(MapValue),
    /// An optional value; `None` is the empty optional.
    Optional(Option<Box<Value>>),
}

impl Value {
    pub fn as_tensor(&self) -> Option<&Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    pub fn into_tensor(self) -> Option<Tensor> {
        match self {
            Value::Tensor(t) => Some(t),
            _ => None,
        }
    }

    /// A short description of the kind of value, for error messages.
    pub fn kind(&self) -> String {
        match self {
            Value::Tensor(t) => format!("tensor({})", t.dtype()),
            Value::Sequence { elem_dtype, .. } => match elem_dtype {
                Some(d) => format!("seq(tensor({d}))"),
                None => "seq".to_string(),
            },
            Value::Map(m) => format!("map({},...)", m.keys.dtype()),
            Value::Optional(_) => "optional".to_string(),
        }
    }
}

impl From<Tensor> for Value {
    fn from(t: Tensor) -> Value {
        Value::Tensor(t)
    }
}
