use onyx_tensor::Tensor;

use super::{Graph, Node, TypeInfo};

/// An attribute value.
#[derive(Clone, Debug, PartialEq)]
pub enum Attr {
    Float(f32),
    Int(i64),
    String(String),
    Tensor(Tensor),
    Graph(Graph),
    Type(TypeInfo),
    Floats(Vec<f32>),
    Ints(Vec<i64>),
    Strings(Vec<String>),
    Tensors(Vec<Tensor>),
    Graphs(Vec<Graph>),
}

impl Attr {
    fn kind(&self) -> &'static str {
        match self {
            Attr::Float(_) => "float",
            Attr::Int(_) => "int",
            Attr::String(_) => "string",
            Attr::Tensor(_) => "tensor",
            Attr::Graph(_) => "graph",
            Attr::Type(_) => "type",
            Attr::Floats(_) => "floats",
            Attr::Ints(_) => "ints",
            Attr::Strings(_) => "strings",
            Attr::Tensors(_) => "tensors",
            Attr::Graphs(_) => "graphs",
        }
    }
}

/// An attribute of the wrong kind, as one line.
#[derive(Clone, Debug, PartialEq)]
pub struct AttrError(pub String);

macro_rules! getter {
    ($fn:ident, $variant:ident, $t:ty, $kind:literal) => {
        /// The attribute's value, None when absent, an error when of another kind.
        pub fn $fn(&self, name: &str) -> Result<Option<$t>, AttrError> {
            match self.attrs.get(name) {
                None => Ok(None),
                Some(Attr::$variant(v)) => Ok(Some(v.clone())),
                Some(other) => Err(AttrError(format!(
                    "attribute '{name}' should be {} but is {}",
                    $kind,
                    other.kind()
                ))),
            }
        }
    };
}

impl Node {
    getter!(attr_float, Float, f32, "float");
    getter!(attr_string, String, String, "string");
    getter!(attr_tensor, Tensor, Tensor, "tensor");
    getter!(attr_graph, Graph, Graph, "graph");
    getter!(attr_type, Type, TypeInfo, "type");
    getter!(attr_floats, Floats, Vec<f32>, "floats");
    getter!(attr_strings, Strings, Vec<String>, "strings");
    getter!(attr_tensors, Tensors, Vec<Tensor>, "tensors");

    /// An int attribute (also accepted: a float holding an integer value).
    pub fn attr_int(&self, name: &str) -> Result<Option<i64>, AttrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Int(v)) => Ok(Some(*v)),
            Some(other) => Err(AttrError(format!(
                "attribute '{name}' should be int but is {}",
                other.kind()
            ))),
        }
    }

    /// An ints attribute; a single int is accepted as a list of one.
    pub fn attr_ints(&self, name: &str) -> Result<Option<Vec<i64>>, AttrError> {
        match self.attrs.get(name) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(Attr::Int(v)) => Ok(Some(vec![*v])),
            Some(other) => Err(AttrError(format!(
                "attribute '{name}' should be ints but is {}",
                other.kind()
            ))),
        }
    }

    /// Every subgraph held by this node's attributes.
    pub fn subgraphs(&self) -> Vec<&Graph> {
        let mut out = Vec::new();
        for a in self.attrs.values() {
            match a {
                Attr::Graph(g) => out.push(g),
                Attr::Graphs(gs) => out.extend(gs.iter()),
                _ => {}
            }
        }
        out
    }
}
