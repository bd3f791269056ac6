//! Small graphs for the passes' tests, and a way to run them unoptimised.

use std::collections::BTreeMap;

use onyx_tensor::{Tensor, Value};

use super::{OptLevel, ONYX_DOMAIN};
use crate::ir::{Attr, Dim, Graph, Model, Node, TypeInfo, ValueInfo};
use crate::{Session, SessionOptions};

pub(crate) fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
    Node {
        name: outputs[0].to_string(),
        op_type: op.to_string(),
        domain: String::new(),
        inputs: inputs.iter().map(|s| s.to_string()).collect(),
        outputs: outputs.iter().map(|s| s.to_string()).collect(),
        attrs: BTreeMap::new(),
    }
}

pub(crate) fn with_attr(mut n: Node, name: &str, a: Attr) -> Node {
    n.attrs.insert(name.to_string(), a);
    n
}

fn info(name: &str, shape: Option<&[usize]>) -> ValueInfo {
    ValueInfo {
        name: name.to_string(),
        ty: shape.map(|s| TypeInfo::Tensor {
            dtype: None,
            shape: Some(s.iter().map(|&d| Dim::Fixed(d)).collect()),
        }),
    }
}

pub(crate) fn graph(inputs: &[&str], outputs: &[&str], nodes: Vec<Node>) -> Graph {
    Graph {
        name: "g".into(),
        nodes,
        inputs: inputs.iter().map(|n| info(n, None)).collect(),
        outputs: outputs.iter().map(|n| info(n, None)).collect(),
        initializers: vec![],
        value_info: vec![],
    }
}

/// A graph whose inputs are declared with fixed dims.
pub(crate) fn graph_fixed(
    inputs: &[(&str, &[usize])],
    outputs: &[&str],
    nodes: Vec<Node>,
) -> Graph {
    let mut g = graph(&[], outputs, nodes);
    g.inputs = inputs.iter().map(|(n, s)| info(n, Some(s))).collect();
    g
}

pub(crate) fn f32s(shape: &[usize], v: &[f32]) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
}

/// `n` float values spread over [-2, 2], different for each seed.
pub(crate) fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) / 7.0)
        .collect()
}

pub(crate) fn model(g: &Graph) -> Model {
    Model {
        ir_version: 8,
        opsets: [(String::new(), 17), (ONYX_DOMAIN.to_string(), 1)].into(),
        graph: g.clone(),
        ..Model::default()
    }
}

pub(crate) fn ops(g: &Graph) -> Vec<&str> {
    g.nodes.iter().map(|n| n.op_type.as_str()).collect()
}

/// Runs the graph as it is, with no passes.
pub(crate) fn run_graph(g: &Graph, feeds: &[(&str, Tensor)]) -> Vec<Tensor> {
    let options = SessionOptions {
        opt_level: OptLevel::Disabled,
        ..SessionOptions::default()
    };
    let s = Session::from_model(model(g), options).unwrap();
    let feeds = feeds
        .iter()
        .map(|(n, t)| (n.to_string(), Value::Tensor(t.clone())))
        .collect();
    s.run(feeds)
        .unwrap()
        .into_iter()
        .map(|v| v.into_tensor().unwrap())
        .collect()
}

/// Asserts two runs' outputs agree within a float tolerance.
pub(crate) fn assert_close(got: &[Tensor], want: &[Tensor]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.shape(), w.shape());
        let (g, w) = (g.to_f64_vec().unwrap(), w.to_f64_vec().unwrap());
        for (a, b) in g.iter().zip(&w) {
            assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}
