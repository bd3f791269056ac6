//! ir -> protobuf (`onyx_format::onnx`): the graph as the passes left it,
//! written back as an ONNX model that Onyx (and onnx's tools) load again.
//!
//! What import changed stays changed: model-local functions are inlined,
//! sparse tensors are dense, and doc strings are gone.

use std::collections::HashSet;

use onyx_format::onnx::attribute_proto::AttributeType;
use onyx_format::onnx::tensor_shape_proto::{dimension, Dimension};
use onyx_format::onnx::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use onyx_format::tensor_to_proto;
use onyx_tensor::DType;

use super::{Attr, Dim, Graph, Model, Node, TypeInfo, ValueInfo};

/// The model as an ONNX `ModelProto`, with every initializer inline.
pub fn export_model(model: &Model) -> ModelProto {
    ModelProto {
        ir_version: Some(model.ir_version),
        opset_import: model
            .opsets
            .iter()
            .map(|(domain, &version)| OperatorSetIdProto {
                domain: Some(domain.clone()),
                version: Some(version),
            })
            .collect(),
        producer_name: Some(model.producer_name.clone()),
        producer_version: Some(model.producer_version.clone()),
        domain: Some(model.domain.clone()),
        model_version: Some(model.model_version),
        doc_string: Some(model.doc_string.clone()),
        graph: Some(export_graph(&model.graph)),
        metadata_props: model
            .metadata
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.clone()),
                value: Some(v.clone()),
            })
            .collect(),
        ..Default::default()
    }
}

fn export_graph(g: &Graph) -> GraphProto {
    // declarations of values a pass removed would describe nothing
    let present: HashSet<&str> = g
        .nodes
        .iter()
        .flat_map(|n| n.outputs.iter())
        .chain(g.initializers.iter().map(|(name, _)| name))
        .map(String::as_str)
        .collect();
    GraphProto {
        name: Some(g.name.clone()),
        node: g.nodes.iter().map(export_node).collect(),
        initializer: g
            .initializers
            .iter()
            .map(|(name, t)| tensor_to_proto(t, name))
            .collect(),
        input: g.inputs.iter().map(export_value_info).collect(),
        output: g.outputs.iter().map(export_value_info).collect(),
        value_info: g
            .value_info
            .iter()
            .filter(|v| present.contains(v.name.as_str()))
            .map(export_value_info)
            .collect(),
        ..Default::default()
    }
}

fn export_node(n: &Node) -> NodeProto {
    NodeProto {
        name: Some(n.name.clone()),
        op_type: Some(n.op_type.clone()),
        domain: Some(n.domain.clone()),
        input: n.inputs.clone(),
        output: n.outputs.clone(),
        attribute: n
            .attrs
            .iter()
            .map(|(name, a)| export_attr(name, a))
            .collect(),
        ..Default::default()
    }
}

fn export_attr(name: &str, a: &Attr) -> AttributeProto {
    let mut p = AttributeProto {
        name: Some(name.to_string()),
        ..Default::default()
    };
    let ty = match a {
        Attr::Float(v) => {
            p.f = Some(*v);
            AttributeType::Float
        }
        Attr::Int(v) => {
            p.i = Some(*v);
            AttributeType::Int
        }
        Attr::String(s) => {
            p.s = Some(s.as_bytes().to_vec());
            AttributeType::String
        }
        Attr::Tensor(t) => {
            p.t = Some(tensor_to_proto(t, ""));
            AttributeType::Tensor
        }
        Attr::Graph(g) => {
            p.g = Some(export_graph(g));
            AttributeType::Graph
        }
        Attr::Type(t) => {
            p.tp = Some(export_type(t));
            AttributeType::TypeProto
        }
        Attr::Floats(v) => {
            p.floats = v.clone();
            AttributeType::Floats
        }
        Attr::Ints(v) => {
            p.ints = v.clone();
            AttributeType::Ints
        }
        Attr::Strings(v) => {
            p.strings = v.iter().map(|s| s.as_bytes().to_vec()).collect();
            AttributeType::Strings
        }
        Attr::Tensors(v) => {
            p.tensors = v.iter().map(|t| tensor_to_proto(t, "")).collect();
            AttributeType::Tensors
        }
        Attr::Graphs(v) => {
            p.graphs = v.iter().map(export_graph).collect();
            AttributeType::Graphs
        }
    };
    p.r#type = Some(ty as i32);
    p
}

fn export_value_info(v: &ValueInfo) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(v.name.clone()),
        r#type: v.ty.as_ref().map(export_type),
        ..Default::default()
    }
}

fn export_type(t: &TypeInfo) -> TypeProto {
    // an unknown element type is written as 0 (UNDEFINED), as onnx does
    let elem = |d: &Option<DType>| Some(d.map_or(0, DType::onnx_code));
    let boxed = |t: &Option<Box<TypeInfo>>| t.as_deref().map(|t| Box::new(export_type(t)));
    let value = match t {
        TypeInfo::Tensor { dtype, shape } => type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: elem(dtype),
            shape: shape.as_deref().map(export_shape),
        }),
        TypeInfo::SparseTensor { dtype } => {
            type_proto::Value::SparseTensorType(type_proto::SparseTensor {
                elem_type: elem(dtype),
                shape: None,
            })
        }
        TypeInfo::Sequence(e) => type_proto::Value::SequenceType(Box::new(type_proto::Sequence {
            elem_type: boxed(e),
        })),
        TypeInfo::Optional(e) => type_proto::Value::OptionalType(Box::new(type_proto::Optional {
            elem_type: boxed(e),
        })),
        TypeInfo::Map { key, value } => type_proto::Value::MapType(Box::new(type_proto::Map {
            key_type: elem(key),
            value_type: boxed(value),
        })),
        TypeInfo::Opaque => type_proto::Value::OpaqueType(type_proto::Opaque::default()),
    };
    TypeProto {
        value: Some(value),
        ..Default::default()
    }
}

fn export_shape(dims: &[Dim]) -> TensorShapeProto {
    TensorShapeProto {
        dim: dims
            .iter()
            .map(|d| Dimension {
                value: match d {
                    Dim::Fixed(n) => Some(dimension::Value::DimValue(*n as i64)),
                    Dim::Symbolic(s) => Some(dimension::Value::DimParam(s.clone())),
                    Dim::Unknown => None,
                },
                ..Default::default()
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use onyx_tensor::Tensor;

    use super::*;
    use crate::ir::import_model;

    fn tensor_info(name: &str, dtype: Option<DType>, shape: Option<Vec<Dim>>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: Some(TypeInfo::Tensor { dtype, shape }),
        }
    }

    fn node(
        op: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> Node {
        Node {
            name: format!("{op}_node"),
            op_type: op.into(),
            domain: domain.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// A model using every attribute kind, every declared type and a subgraph.
    fn rich_model() -> Model {
        let t = Tensor::from_vec(vec![2], vec![1.5f32, -2.0]).unwrap();
        let branch = Graph {
            name: "then".into(),
            nodes: vec![node("Neg", "", &["x"], &["nx"], vec![])],
            inputs: vec![],
            outputs: vec![tensor_info("nx", Some(DType::Float), None)],
            initializers: vec![],
            value_info: vec![],
        };
        let seq = TypeInfo::Sequence(Some(Box::new(TypeInfo::Tensor {
            dtype: Some(DType::Int64),
            shape: Some(vec![Dim::Unknown]),
        })));
        let attrs = vec![
            ("f", Attr::Float(0.25)),
            ("i", Attr::Int(-7)),
            ("s", Attr::String("héllo".into())),
            ("t", Attr::Tensor(t.clone())),
            ("g", Attr::Graph(branch.clone())),
            ("tp", Attr::Type(seq.clone())),
            ("fs", Attr::Floats(vec![1.0, -0.5])),
            ("is", Attr::Ints(vec![])),
            ("ss", Attr::Strings(vec!["a".into(), "".into()])),
            ("ts", Attr::Tensors(vec![t.clone(), t.clone()])),
            ("gs", Attr::Graphs(vec![branch.clone(), branch])),
        ];
        Model {
            ir_version: 9,
            opsets: [(String::new(), 18), ("com.onyx".to_string(), 1)].into(),
            producer_name: "maker".into(),
            producer_version: "1.2".into(),
            domain: "org.example".into(),
            model_version: 3,
            doc_string: "a model".into(),
            metadata: vec![("author".into(), "me".into())],
            graph: Graph {
                name: "main".into(),
                nodes: vec![
                    node(
                        "Everything",
                        "com.onyx",
                        &["x", "", "w"],
                        &["y", "z"],
                        attrs,
                    ),
                    node("Relu", "", &["y"], &["r"], vec![]),
                ],
                inputs: vec![
                    tensor_info(
                        "x",
                        Some(DType::Float),
                        Some(vec![
                            Dim::Symbolic("batch".into()),
                            Dim::Fixed(2),
                            Dim::Unknown,
                        ]),
                    ),
                    tensor_info("w", None, None),
                ],
                outputs: vec![
                    tensor_info("r", Some(DType::Float), Some(vec![])),
                    ValueInfo {
                        name: "z".into(),
                        ty: Some(TypeInfo::Map {
                            key: Some(DType::String),
                            value: Some(Box::new(TypeInfo::Optional(Some(Box::new(seq))))),
                        }),
                    },
                ],
                initializers: vec![("w".into(), t)],
                value_info: vec![
                    ValueInfo {
                        name: "y".into(),
                        ty: Some(TypeInfo::SparseTensor {
                            dtype: Some(DType::Float16),
                        }),
                    },
                    ValueInfo {
                        name: "z".into(),
                        ty: Some(TypeInfo::Opaque),
                    },
                ],
            },
        }
    }

    #[test]
    fn import_reads_back_what_export_wrote() {
        let model = rich_model();
        let proto = export_model(&model);
        assert_eq!(import_model(&proto, None).unwrap(), model);
        let domains: BTreeMap<_, _> = proto
            .opset_import
            .iter()
            .map(|o| (o.domain().to_string(), o.version()))
            .collect();
        assert_eq!(
            domains,
            [("".to_string(), 18), ("com.onyx".to_string(), 1)].into()
        );
    }

    #[test]
    fn declarations_of_removed_values_are_dropped() {
        let mut model = rich_model();
        model.graph.value_info.push(tensor_info("gone", None, None));
        let proto = export_model(&model);
        let names: Vec<&str> = proto
            .graph
            .as_ref()
            .unwrap()
            .value_info
            .iter()
            .map(|v| v.name())
            .collect();
        assert_eq!(names, ["y", "z"]);
    }
}
