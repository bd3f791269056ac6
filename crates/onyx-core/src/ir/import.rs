//! protobuf (`onyx_format::onnx`) -> ir, including the expansion of
//! model-local functions into the graphs that call them.

use std::collections::{BTreeMap, HashMap};

use onyx_format::onnx::attribute_proto::AttributeType;
use onyx_format::onnx::{
    self, type_proto, AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use onyx_format::{tensor_from_proto, ExternalDataDir};
use onyx_tensor::{DType, Tensor};

use super::{normalize_domain, Attr, Dim, Graph, Model, Node, TypeInfo, ValueInfo};
use crate::limits::over_limit;
use crate::{Error, ErrorKind, Limits, Result};

fn invalid(msg: String) -> Error {
    Error::new(ErrorKind::InvalidGraph, msg)
}

struct Importer<'a> {
    functions: HashMap<(String, String), &'a FunctionProto>,
    external: Option<&'a ExternalDataDir>,
    /// Counter that makes the value names of each inlined call unique.
    calls: usize,
    /// Nesting depth, graph size and sparse tensor size bounds.
    limits: &'a Limits,
}

/// Converts a decoded model; `external` is the folder external data may be
/// read from. Uses the default limits.
pub fn import_model(model: &ModelProto, external: Option<&ExternalDataDir>) -> Result<Model> {
    import_model_with(model, external, &Limits::default())
}

/// Converts a decoded model within `limits`: `max_nesting_depth` bounds
/// subgraph nesting and function calls, `max_graph_nodes` the nodes of a
/// graph after inlining, `max_tensor_*` the dense size of sparse tensors.
pub fn import_model_with(
    model: &ModelProto,
    external: Option<&ExternalDataDir>,
    limits: &Limits,
) -> Result<Model> {
    let mut opsets = BTreeMap::new();
    for op in &model.opset_import {
        opsets.insert(normalize_domain(op.domain()).to_string(), op.version());
    }
    if model.opset_import.is_empty() {
        // IR version 1-2 models carry no opset_import; they mean ai.onnx 1.
        opsets.insert(String::new(), 1);
    }
    let functions = model
        .functions
        .iter()
        .map(|f| {
            (
                (
                    normalize_domain(f.domain()).to_string(),
                    f.name().to_string(),
                ),
                f,
            )
        })
        .collect();
    let mut importer = Importer {
        functions,
        external,
        calls: 0,
        limits,
    };
    let graph = model
        .graph
        .as_ref()
        .ok_or_else(|| invalid("the model has no graph".into()))?;
    let mut graph = importer.graph(graph, 0)?;
    if super::gradient::expand_gradients(&mut graph)? {
        opsets.entry("com.onyx".to_string()).or_insert(1);
    }
    Ok(Model {
        ir_version: model.ir_version(),
        opsets,
        producer_name: model.producer_name().to_string(),
        producer_version: model.producer_version().to_string(),
        domain: model.domain().to_string(),
        model_version: model.model_version(),
        doc_string: model.doc_string().to_string(),
        metadata: model
            .metadata_props
            .iter()
            .map(|p| (p.key().to_string(), p.value().to_string()))
            .collect(),
        graph,
    })
}

impl Importer<'_> {
    fn graph(&mut self, g: &GraphProto, depth: usize) -> Result<Graph> {
        if depth > self.limits.max_nesting_depth {
            return Err(over_limit(format!(
                "graph '{}': subgraphs nest {depth} deep, over the limit max_nesting_depth={}",
                g.name(),
                self.limits.max_nesting_depth
            )));
        }
        let mut initializers = Vec::with_capacity(g.initializer.len());
        for t in &g.initializer {
            initializers.push((t.name().to_string(), self.tensor(t)?));
        }
        for s in &g.sparse_initializer {
            let name = s
                .values
                .as_ref()
                .map(|v| v.name())
                .unwrap_or("")
                .to_string();
            initializers.push((name, sparse_to_dense(s, self.limits)?));
        }
        let mut protos = Vec::with_capacity(g.node.len());
        self.expand_calls(&g.node, 0, &mut protos)?;
        let mut nodes = Vec::with_capacity(protos.len());
        for n in &protos {
            nodes.push(self.node(n, depth)?);
        }
        Ok(Graph {
            name: g.name().to_string(),
            nodes,
            inputs: g.input.iter().map(value_info).collect(),
            outputs: g.output.iter().map(value_info).collect(),
            initializers,
            value_info: g.value_info.iter().map(value_info).collect(),
        })
    }

    fn tensor(&self, t: &onnx::TensorProto) -> Result<Tensor> {
        Ok(tensor_from_proto(t, self.external)?)
    }

    fn node(&mut self, n: &NodeProto, depth: usize) -> Result<Node> {
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            if a.ref_attr_name.is_some() {
                // a reference that no enclosing function call resolved
                continue;
            }
            attrs.insert(a.name().to_string(), self.attr(a, depth)?);
        }
        Ok(Node {
            name: n.name().to_string(),
            op_type: n.op_type().to_string(),
            domain: normalize_domain(n.domain()).to_string(),
            inputs: n.input.clone(),
            outputs: n.output.clone(),
            attrs,
        })
    }

    fn attr(&mut self, a: &AttributeProto, depth: usize) -> Result<Attr> {
        let bad = |what: &str| invalid(format!("attribute '{}': {what}", a.name()));
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        // Old exporters leave `type` unset; infer it from the field that is filled.
        let ty = match a.r#type() {
            AttributeType::Undefined => infer_attr_type(a),
            t => t,
        };
        Ok(match ty {
            AttributeType::Float => Attr::Float(a.f()),
            AttributeType::Int => Attr::Int(a.i()),
            AttributeType::String => Attr::String(text(a.s())),
            AttributeType::Tensor => {
                Attr::Tensor(self.tensor(a.t.as_ref().ok_or_else(|| bad("tensor missing"))?)?)
            }
            AttributeType::SparseTensor => Attr::Tensor(sparse_to_dense(
                a.sparse_tensor
                    .as_ref()
                    .ok_or_else(|| bad("sparse tensor missing"))?,
                self.limits,
            )?),
            AttributeType::Graph => Attr::Graph(
                self.graph(a.g.as_ref().ok_or_else(|| bad("graph missing"))?, depth + 1)?,
            ),
            AttributeType::TypeProto => Attr::Type(
                a.tp.as_ref()
                    .and_then(type_info)
                    .ok_or_else(|| bad("type missing"))?,
            ),
            AttributeType::Floats => Attr::Floats(a.floats.clone()),
            AttributeType::Ints => Attr::Ints(a.ints.clone()),
            AttributeType::Strings => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
            AttributeType::Tensors => Attr::Tensors(
                a.tensors
                    .iter()
                    .map(|t| self.tensor(t))
                    .collect::<Result<_>>()?,
            ),
            AttributeType::Graphs => Attr::Graphs(
                a.graphs
                    .iter()
                    .map(|g| self.graph(g, depth + 1))
                    .collect::<Result<_>>()?,
            ),
            AttributeType::SparseTensors => Attr::Tensors(
                a.sparse_tensors
                    .iter()
                    .map(|s| sparse_to_dense(s, self.limits))
                    .collect::<Result<_>>()?,
            ),
            AttributeType::TypeProtos | AttributeType::Undefined => {
                return Err(bad("has no value or an unsupported type"))
            }
        })
    }

    /// Copies `nodes` into `out`, replacing each call of a model-local
    /// function by the function's body.
    fn expand_calls(
        &mut self,
        nodes: &[NodeProto],
        depth: usize,
        out: &mut Vec<NodeProto>,
    ) -> Result<()> {
        for n in nodes {
            let key = (
                normalize_domain(n.domain()).to_string(),
                n.op_type().to_string(),
            );
            let Some(&f) = self.functions.get(&key) else {
                if out.len() >= self.limits.max_graph_nodes {
                    return Err(over_limit(format!(
                        "{}: the graph has more than {} nodes once functions are inlined, over the limit max_graph_nodes={}",
                        describe_proto(n),
                        out.len(),
                        self.limits.max_graph_nodes
                    )));
                }
                out.push(n.clone());
                continue;
            };
            if depth >= self.limits.max_nesting_depth {
                return Err(over_limit(format!(
                    "{}: function '{}' calls nest deeper than {depth}, over the limit max_nesting_depth={}",
                    describe_proto(n),
                    f.name(),
                    self.limits.max_nesting_depth
                )));
            }
            let body = self.instantiate(f, n);
            self.expand_calls(&body, depth + 1, out)?;
        }
        Ok(())
    }

    /// The body of function `f` as called by node `call`: formal inputs and
    /// outputs renamed to the actual ones, internal names made unique, and
    /// attribute references resolved against the call (or the defaults).
    fn instantiate(&mut self, f: &FunctionProto, call: &NodeProto) -> Vec<NodeProto> {
        self.calls += 1;
        let prefix = format!("{}__call{}__", f.name(), self.calls);
        let mut names: HashMap<&str, String> = HashMap::new();
        for (i, formal) in f.input.iter().enumerate() {
            names.insert(formal, call.input.get(i).cloned().unwrap_or_default());
        }
        for (i, formal) in f.output.iter().enumerate() {
            names.insert(formal, call.output.get(i).cloned().unwrap_or_default());
        }
        let rename = |n: &String| -> String {
            if n.is_empty() {
                return String::new();
            }
            names
                .get(n.as_str())
                .cloned()
                .unwrap_or_else(|| format!("{prefix}{n}"))
        };
        let mut attr_values: HashMap<&str, &AttributeProto> = HashMap::new();
        for a in &f.attribute_proto {
            attr_values.insert(a.name(), a);
        }
        for a in &call.attribute {
            attr_values.insert(a.name(), a);
        }
        f.node
            .iter()
            .map(|n| {
                let mut n = n.clone();
                n.input = n.input.iter().map(rename).collect();
                n.output = n.output.iter().map(rename).collect();
                n.attribute = n
                    .attribute
                    .iter()
                    .filter_map(|a| match &a.ref_attr_name {
                        None => Some(a.clone()),
                        Some(r) => attr_values.get(r.as_str()).map(|v| {
                            let mut v = (*v).clone();
                            v.name = a.name.clone();
                            v
                        }),
                    })
                    .collect();
                n
            })
            .collect()
    }
}

/// Names a node as `Node::describe` does.
fn describe_proto(n: &NodeProto) -> String {
    format!("node '{}' ({})", n.name(), n.op_type())
}

fn infer_attr_type(a: &AttributeProto) -> AttributeType {
    if a.f.is_some() {
        AttributeType::Float
    } else if a.i.is_some() {
        AttributeType::Int
    } else if a.s.is_some() {
        AttributeType::String
    } else if a.t.is_some() {
        AttributeType::Tensor
    } else if a.g.is_some() {
        AttributeType::Graph
    } else if !a.floats.is_empty() {
        AttributeType::Floats
    } else if !a.ints.is_empty() {
        AttributeType::Ints
    } else if !a.strings.is_empty() {
        AttributeType::Strings
    } else if !a.tensors.is_empty() {
        AttributeType::Tensors
    } else if !a.graphs.is_empty() {
        AttributeType::Graphs
    } else {
        AttributeType::Undefined
    }
}

/// A sparse tensor (values at flat or per-axis coordinates) made dense,
/// refusing a dense size over the tensor limits before allocating it.
fn sparse_to_dense(s: &onnx::SparseTensorProto, limits: &Limits) -> Result<Tensor> {
    let bad = |m: &str| invalid(format!("sparse tensor: {m}"));
    let values = tensor_from_proto(s.values.as_ref().ok_or_else(|| bad("no values"))?, None)?;
    let indices = tensor_from_proto(s.indices.as_ref().ok_or_else(|| bad("no indices"))?, None)?;
    let shape: Vec<usize> = s
        .dims
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| bad("negative dim")))
        .collect::<Result<_>>()?;
    let total = onyx_tensor::numel(&shape).ok_or_else(|| bad("too many elements"))?;
    limits
        .check_tensor(total, values.dtype().size_in_memory())
        .map_err(|e| Error::new(e.kind, format!("sparse tensor: {}", e.message)))?;
    let idx = indices.to_i64_vec().map_err(|e| bad(&e.0))?;
    let nnz = values.len();
    let strides = onyx_tensor::strides_of(&shape);
    // a coordinate that is negative or past its dim maps to None
    let coord = |i: i64, dim: usize| usize::try_from(i).ok().filter(|&i| i < dim);
    let flat: Option<Vec<usize>> = if indices.rank() == 1 {
        idx.iter().map(|&i| coord(i, total)).collect()
    } else if shape.is_empty() {
        None
    } else {
        idx.chunks(shape.len())
            .map(|c| {
                if c.len() != shape.len() {
                    return None;
                }
                c.iter()
                    .zip(&shape)
                    .zip(&strides)
                    .try_fold(0usize, |acc, ((&i, &d), &s)| {
                        acc.checked_add(coord(i, d)? * s)
                    })
            })
            .collect()
    };
    let flat = flat
        .filter(|f| f.len() == nnz && f.iter().all(|&i| i < total))
        .ok_or_else(|| bad("indices do not fit the values or the shape"))?;
    let mut dense = onyx_tensor::Data::zeros(values.dtype(), total)?;
    onyx_tensor::with_data!(values.data(), v => scatter_into(&mut dense, v, &flat));
    Ok(Tensor::new(values.dtype(), shape, dense)?)
}

fn scatter_into<T: onyx_tensor::Elem>(dense: &mut onyx_tensor::Data, src: &[T], flat: &[usize]) {
    if let Some(dst) = T::slice_mut(dense) {
        for (&i, v) in flat.iter().zip(src) {
            dst[i] = v.clone();
        }
    }
}

fn shape_dims(s: &TensorShapeProto) -> Vec<Dim> {
    use onnx::tensor_shape_proto::dimension::Value as D;
    s.dim
        .iter()
        .map(|d| match &d.value {
            Some(D::DimValue(v)) if *v >= 0 => Dim::Fixed(*v as usize),
            Some(D::DimParam(p)) if !p.is_empty() => Dim::Symbolic(p.clone()),
            _ => Dim::Unknown,
        })
        .collect()
}

/// Converts a declared type; None when the proto declares nothing.
pub(crate) fn type_info(t: &TypeProto) -> Option<TypeInfo> {
    let elem = |code: Option<i32>| code.and_then(DType::from_onnx);
    let boxed = |t: &Option<Box<TypeProto>>| t.as_deref().and_then(type_info).map(Box::new);
    Some(match t.value.as_ref()? {
        type_proto::Value::TensorType(tt) => TypeInfo::Tensor {
            dtype: elem(tt.elem_type),
            shape: tt.shape.as_ref().map(shape_dims),
        },
        type_proto::Value::SparseTensorType(st) => TypeInfo::SparseTensor {
            dtype: elem(st.elem_type),
        },
        type_proto::Value::SequenceType(s) => TypeInfo::Sequence(boxed(&s.elem_type)),
        type_proto::Value::OptionalType(o) => TypeInfo::Optional(boxed(&o.elem_type)),
        type_proto::Value::MapType(m) => TypeInfo::Map {
            key: elem(m.key_type),
            value: boxed(&m.value_type),
        },
        type_proto::Value::OpaqueType(_) => TypeInfo::Opaque,
    })
}

fn value_info(v: &ValueInfoProto) -> ValueInfo {
    ValueInfo {
        name: v.name().to_string(),
        ty: v.r#type.as_ref().and_then(type_info),
    }
}
