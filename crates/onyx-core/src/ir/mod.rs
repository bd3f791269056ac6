//! The graph Onyx works on: nodes, values with their declared types, and
//! attributes, decoded from protobuf once so later stages never see it.

mod attr;
mod export;
mod gradient;
mod import;
mod validate;

pub use attr::{Attr, AttrError};
pub use export::export_model;
pub use import::{import_model, import_model_with};
pub use validate::validate;

use std::collections::BTreeMap;

use onyx_tensor::{DType, Tensor};

/// One dimension of a declared shape.
#[derive(Clone, Debug, PartialEq)]
pub enum Dim {
    Fixed(usize),
    Symbolic(String),
    Unknown,
}

/// A declared type of a graph input, output or intermediate value.
#[derive(Clone, Debug, PartialEq)]
pub enum TypeInfo {
    /// `shape` is None when the rank is unknown.
    Tensor {
        dtype: Option<DType>,
        shape: Option<Vec<Dim>>,
    },
    SparseTensor {
        dtype: Option<DType>,
    },
    Sequence(Option<Box<TypeInfo>>),
    Optional(Option<Box<TypeInfo>>),
    Map {
        key: Option<DType>,
        value: Option<Box<TypeInfo>>,
    },
    Opaque,
}

impl TypeInfo {
    /// The ONNX type string, e.g. `tensor(float)` or `seq(tensor(int64))`.
    pub fn type_string(&self) -> String {
        let dt = |d: &Option<DType>| d.map(|d| d.name()).unwrap_or("undefined").to_string();
        let inner = |t: &Option<Box<TypeInfo>>| {
            t.as_ref()
                .map(|t| t.type_string())
                .unwrap_or_else(|| "undefined".into())
        };
        match self {
            TypeInfo::Tensor { dtype, .. } => format!("tensor({})", dt(dtype)),
            TypeInfo::SparseTensor { dtype } => format!("sparse_tensor({})", dt(dtype)),
            TypeInfo::Sequence(e) => format!("seq({})", inner(e)),
            TypeInfo::Optional(e) => format!("optional({})", inner(e)),
            TypeInfo::Map { key, value } => format!("map({},{})", dt(key), inner(value)),
            TypeInfo::Opaque => "opaque".into(),
        }
    }
}

/// A named value with its declared type, if any.
#[derive(Clone, Debug, PartialEq)]
pub struct ValueInfo {
    pub name: String,
    pub ty: Option<TypeInfo>,
}

/// One operator application. An empty input name is an omitted optional input.
#[derive(Clone, Debug, PartialEq)]
pub struct Node {
    pub name: String,
    pub op_type: String,
    /// "" for the default ai.onnx domain.
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    pub attrs: BTreeMap<String, Attr>,
}

impl Node {
    /// How the node is named in messages: `node 'name' (Op)`.
    pub fn describe(&self) -> String {
        if self.name.is_empty() {
            let first = self.outputs.first().map(String::as_str).unwrap_or("");
            format!("node producing '{first}' ({})", self.op_type)
        } else {
            format!("node '{}' ({})", self.name, self.op_type)
        }
    }
}

/// A graph: the main one, or a subgraph held by an attribute (If, Loop, Scan).
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Graph {
    pub name: String,
    pub nodes: Vec<Node>,
    pub inputs: Vec<ValueInfo>,
    pub outputs: Vec<ValueInfo>,
    pub initializers: Vec<(String, Tensor)>,
    pub value_info: Vec<ValueInfo>,
}

/// A model: the main graph plus what the file says about it.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Model {
    pub ir_version: i64,
    /// Opset version per domain ("" is ai.onnx).
    pub opsets: BTreeMap<String, i64>,
    pub producer_name: String,
    pub producer_version: String,
    pub domain: String,
    pub model_version: i64,
    pub doc_string: String,
    pub metadata: Vec<(String, String)>,
    pub graph: Graph,
}

/// The canonical spelling of a domain: "" and "ai.onnx" are the same.
pub fn normalize_domain(domain: &str) -> &str {
    if domain == "ai.onnx" {
        ""
    } else {
        domain
    }
}

impl Graph {
    /// Every (domain, op_type) used here and in subgraphs, with use counts.
    pub fn operator_histogram(&self) -> BTreeMap<(String, String), usize> {
        let mut h = BTreeMap::new();
        self.count_ops(&mut h);
        h
    }

    fn count_ops(&self, h: &mut BTreeMap<(String, String), usize>) {
        for n in &self.nodes {
            *h.entry((n.domain.clone(), n.op_type.clone())).or_insert(0) += 1;
            for g in n.subgraphs() {
                g.count_ops(h);
            }
        }
    }
}
