//! Expands `ai.onnx.preview.training::Gradient` nodes into plain nodes by
//! reverse-mode differentiation, at import, so that the planner and the
//! executor never see them.
//!
//! A Gradient node names a value `y` and values `xs` (and `zs`, inputs that
//! are not differentiated) of its graph, and takes as inputs the values to
//! use for `xs` and `zs`. The expansion clones the nodes between those
//! values and `y` (reading the Gradient node's inputs in place of `xs` and
//! `zs`), seeds dy with ones, and walks the clones backwards, emitting for
//! each the nodes of its local derivative. Gradients of inputs that were
//! broadcast are summed back to the input's shape by `com.onyx::SumToShape`.
//! Differentiable here: Add, Sub, Mul, Div, Neg, Identity and MatMul of
//! 2-D matrices; anything else on the path is refused by name.

use std::collections::{BTreeMap, HashMap, HashSet};

use onyx_tensor::Tensor;

use super::{Attr, Graph, Node};
use crate::{Error, ErrorKind, Result};

const DOMAIN: &str = "ai.onnx.preview.training";

/// Replaces every Gradient node of `graph` (not of its subgraphs, where ONNX
/// does not define it) by its expansion; true if there was one. The
/// expansion uses `com.onyx` operators, so the caller declares that domain.
pub(crate) fn expand_gradients(graph: &mut Graph) -> Result<bool> {
    let mut expanded = false;
    let mut k = 0;
    while k < graph.nodes.len() {
        let n = &graph.nodes[k];
        if n.op_type == "Gradient" && n.domain == DOMAIN {
            let node = graph.nodes.remove(k);
            let mut builder = Builder::new(&node, k);
            let nodes = builder.expand(graph, &node)?;
            graph.nodes.extend(nodes);
            expanded = true;
        } else {
            k += 1;
        }
    }
    Ok(expanded)
}

fn not_supported(node: &Node, msg: String) -> Error {
    Error::new(
        ErrorKind::NotImplemented,
        format!("{}: {msg}", node.describe()),
    )
}

fn invalid(node: &Node, msg: String) -> Error {
    Error::new(
        ErrorKind::InvalidGraph,
        format!("{}: {msg}", node.describe()),
    )
}

/// Emits the nodes of one expansion, naming every value it makes with a
/// prefix unique to the Gradient node.
struct Builder {
    prefix: String,
    count: usize,
    nodes: Vec<Node>,
}

impl Builder {
    fn new(node: &Node, index: usize) -> Builder {
        let base = if node.name.is_empty() {
            format!("gradient{index}")
        } else {
            node.name.clone()
        };
        Builder {
            prefix: format!("{base}/grad"),
            count: 0,
            nodes: Vec::new(),
        }
    }

    fn fresh(&mut self, what: &str) -> String {
        self.count += 1;
        format!("{}/{what}{}", self.prefix, self.count)
    }

    /// Adds a node and returns its (single) output.
    fn op(&mut self, op_type: &str, inputs: &[&str], attrs: Vec<(&str, Attr)>) -> String {
        let out = self.fresh(&op_type.to_ascii_lowercase());
        self.push(op_type, "", inputs, &[out.as_str()], attrs);
        out
    }

    fn push(
        &mut self,
        op_type: &str,
        domain: &str,
        inputs: &[&str],
        outputs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) {
        self.nodes.push(Node {
            name: outputs[0].to_string(),
            op_type: op_type.into(),
            domain: domain.into(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        });
    }

    /// `g` summed over the dims that `like` was broadcast along.
    fn sum_to_shape_of(&mut self, g: &str, like: &str) -> String {
        let shape = self.op("Shape", &[like], vec![]);
        let out = self.fresh("sumtoshape");
        self.push("SumToShape", "com.onyx", &[g, &shape], &[&out], vec![]);
        out
    }

    fn expand(&mut self, graph: &Graph, node: &Node) -> Result<Vec<Node>> {
        let xs = node
            .attr_strings("xs")
            .map_err(|e| invalid(node, e.0))?
            .ok_or_else(|| invalid(node, "missing attribute 'xs'".into()))?;
        let zs = node
            .attr_strings("zs")
            .map_err(|e| invalid(node, e.0))?
            .unwrap_or_default();
        let y = node
            .attr_string("y")
            .map_err(|e| invalid(node, e.0))?
            .ok_or_else(|| invalid(node, "missing attribute 'y'".into()))?;
        if node.inputs.len() != xs.len() + zs.len() {
            return Err(invalid(
                node,
                format!(
                    "has {} inputs but xs and zs name {}",
                    node.inputs.len(),
                    xs.len() + zs.len()
                ),
            ));
        }
        if node.outputs.len() != xs.len() {
            return Err(invalid(
                node,
                format!(
                    "has {} outputs but xs names {}",
                    node.outputs.len(),
                    xs.len()
                ),
            ));
        }
        // the leaves, mapped to the values the Gradient node feeds for them
        let leaves: HashMap<&str, &str> = xs
            .iter()
            .chain(&zs)
            .map(String::as_str)
            .zip(node.inputs.iter().map(String::as_str))
            .collect();
        let forward = forward_path(graph, &leaves, &y, node)?;
        // clone the path, reading the fed values and the clones' outputs
        let mut renamed: HashMap<String, String> = leaves
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        let mut clones = Vec::with_capacity(forward.len());
        for n in &forward {
            let mut c = (*n).clone();
            c.inputs = c
                .inputs
                .iter()
                .map(|i| renamed.get(i).cloned().unwrap_or_else(|| i.clone()))
                .collect();
            for o in &mut c.outputs {
                let new = self.fresh("fwd");
                renamed.insert(std::mem::replace(o, new.clone()), new);
            }
            c.name = c.outputs[0].clone();
            clones.push(c);
        }
        self.nodes.extend(clones.iter().cloned());
        let y_value = renamed.get(&y).cloned().unwrap_or_else(|| y.clone());
        // dy/dy = 1, of y's shape and type (y^0 is 1 even where y is 0)
        let zero = self.constant_i64(0);
        let seed = self.op("Pow", &[&y_value, &zero], vec![]);
        let mut grads: BTreeMap<String, Vec<String>> = BTreeMap::new();
        grads.insert(y_value, vec![seed]);
        for c in clones.iter().rev() {
            let Some(g) = self.total(&mut grads, &c.outputs[0]) else {
                continue;
            };
            for (input, contribution) in self.local_gradients(c, &g)? {
                grads.entry(input).or_default().push(contribution);
            }
        }
        for (x, out) in xs.iter().zip(&node.outputs) {
            let fed = renamed[x].clone();
            let g = match self.total(&mut grads, &fed) {
                Some(g) => g,
                // y does not depend on x: zeros of x's shape
                None => {
                    let shape = self.op("Shape", &[&fed], vec![]);
                    self.op("ConstantOfShape", &[&shape], vec![])
                }
            };
            if !out.is_empty() {
                self.push("Identity", "", &[&g], &[out], vec![]);
            }
        }
        Ok(std::mem::take(&mut self.nodes))
    }

    fn constant_i64(&mut self, v: i64) -> String {
        let t = Tensor::scalar(v);
        self.op("Constant", &[], vec![("value", Attr::Tensor(t))])
    }

    /// The sum of the contributions gathered for `value`, if any.
    fn total(&mut self, grads: &mut BTreeMap<String, Vec<String>>, value: &str) -> Option<String> {
        let parts = grads.remove(value)?;
        let mut it = parts.into_iter();
        let first = it.next()?;
        Some(it.fold(first, |acc, p| self.op("Add", &[&acc, &p], vec![])))
    }

    /// (input, gradient contribution) for each input of `c` given the
    /// gradient `g` of its output.
    fn local_gradients(&mut self, c: &Node, g: &str) -> Result<Vec<(String, String)>> {
        let input = |i: usize| c.inputs.get(i).cloned().unwrap_or_default();
        let (a, b) = (input(0), input(1));
        let mut out = Vec::new();
        match c.op_type.as_str() {
            "Identity" => out.push((a, g.to_string())),
            "Neg" => {
                let n = self.op("Neg", &[g], vec![]);
                out.push((a, n));
            }
            "Add" | "Sub" => {
                let ga = self.sum_to_shape_of(g, &a);
                let gb = if c.op_type == "Sub" {
                    let n = self.op("Neg", &[g], vec![]);
                    self.sum_to_shape_of(&n, &b)
                } else {
                    self.sum_to_shape_of(g, &b)
                };
                out.push((a, ga));
                out.push((b, gb));
            }
            "Mul" => {
                let ga = self.op("Mul", &[g, &b], vec![]);
                let ga = self.sum_to_shape_of(&ga, &a);
                let gb = self.op("Mul", &[g, &a], vec![]);
                let gb = self.sum_to_shape_of(&gb, &b);
                out.push((a, ga));
                out.push((b, gb));
            }
            "Div" => {
                // d(a/b)/da = 1/b, d(a/b)/db = -a/b^2 = -(a/b)/b
                let ga = self.op("Div", &[g, &b], vec![]);
                let ga = self.sum_to_shape_of(&ga, &a);
                let q = self.op("Div", &[&c.outputs[0], &b], vec![]);
                let gq = self.op("Mul", &[g, &q], vec![]);
                let gb = self.op("Neg", &[&gq], vec![]);
                let gb = self.sum_to_shape_of(&gb, &b);
                out.push((a, ga));
                out.push((b, gb));
            }
            "MatMul" => {
                // for 2-D matrices: dA = G B^T, dB = A^T G
                let perm = || vec![("perm", Attr::Ints(vec![1, 0]))];
                let bt = self.op("Transpose", &[&b], perm());
                let ga = self.op("MatMul", &[g, &bt], vec![]);
                let at = self.op("Transpose", &[&a], perm());
                let gb = self.op("MatMul", &[&at, g], vec![]);
                out.push((a, ga));
                out.push((b, gb));
            }
            other => {
                return Err(not_supported(
                    c,
                    format!("Gradient cannot differentiate through {other}"),
                ))
            }
        }
        Ok(out)
    }
}

/// The nodes of `graph` on a path from a leaf to `y`, in an order where
/// each comes after the nodes it reads.
fn forward_path<'g>(
    graph: &'g Graph,
    leaves: &HashMap<&str, &str>,
    y: &str,
    gradient: &Node,
) -> Result<Vec<&'g Node>> {
    let producer: HashMap<&str, usize> = graph
        .nodes
        .iter()
        .enumerate()
        .flat_map(|(i, n)| n.outputs.iter().map(move |o| (o.as_str(), i)))
        .collect();
    // nodes y depends on, found backwards from y, stopping at the leaves
    let mut needed = HashSet::new();
    let mut stack = vec![y];
    while let Some(v) = stack.pop() {
        if leaves.contains_key(v) {
            continue;
        }
        if let Some(&i) = producer.get(v) {
            if needed.insert(i) {
                stack.extend(graph.nodes[i].inputs.iter().map(String::as_str));
            }
        }
    }
    if needed.is_empty() && !leaves.contains_key(y) {
        return Err(invalid(
            gradient,
            format!("y '{y}' is not computed from xs or zs"),
        ));
    }
    // those nodes in an order where each follows what it reads
    let mut pending: Vec<usize> = needed.iter().copied().collect();
    pending.sort_unstable();
    let mut done: HashSet<usize> = HashSet::new();
    let mut order = Vec::with_capacity(pending.len());
    while !pending.is_empty() {
        let before = pending.len();
        pending.retain(|&i| {
            let ready = graph.nodes[i].inputs.iter().all(|v| {
                producer
                    .get(v.as_str())
                    .is_none_or(|p| !needed.contains(p) || done.contains(p))
            });
            if ready {
                done.insert(i);
                order.push(i);
            }
            !ready
        });
        if pending.len() == before {
            return Err(invalid(
                gradient,
                format!("the nodes computing '{y}' form a cycle"),
            ));
        }
    }
    // of those, the ones that read a leaf, directly or through another
    let mut depends: HashSet<&str> = leaves.keys().copied().collect();
    let mut path = Vec::new();
    for i in order {
        let n = &graph.nodes[i];
        if n.inputs.iter().any(|v| depends.contains(v.as_str())) {
            depends.extend(n.outputs.iter().map(String::as_str));
            path.push(n);
        }
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> Node {
        Node {
            name: outputs[0].into(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: BTreeMap::new(),
        }
    }

    fn gradient(xs: &[&str], y: &str, outputs: &[&str]) -> Node {
        let mut n = node("Gradient", xs, outputs);
        n.domain = DOMAIN.into();
        n.attrs.insert(
            "xs".into(),
            Attr::Strings(xs.iter().map(|s| s.to_string()).collect()),
        );
        n.attrs.insert("y".into(), Attr::String(y.into()));
        n
    }

    #[test]
    fn expands_into_plain_nodes() {
        let mut g = Graph {
            nodes: vec![
                node("Add", &["a", "b"], &["c"]),
                node("Mul", &["c", "a"], &["d"]),
                gradient(&["a", "b"], "d", &["da", "db"]),
            ],
            ..Default::default()
        };
        expand_gradients(&mut g).unwrap();
        assert!(g.nodes.iter().all(|n| n.op_type != "Gradient"));
        let produced: HashSet<&str> = g
            .nodes
            .iter()
            .flat_map(|n| n.outputs.iter().map(String::as_str))
            .collect();
        assert!(produced.contains("da") && produced.contains("db"));
    }

    #[test]
    fn refuses_what_it_cannot_differentiate() {
        let mut g = Graph {
            nodes: vec![node("Sin", &["a"], &["s"]), gradient(&["a"], "s", &["da"])],
            ..Default::default()
        };
        let e = expand_gradients(&mut g).unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotImplemented);
        assert!(e.message.contains("through Sin"), "{}", e.message);
        let mut g = Graph {
            nodes: vec![gradient(&["a"], "nowhere", &["da"])],
            ..Default::default()
        };
        assert_eq!(
            expand_gradients(&mut g).unwrap_err().kind,
            ErrorKind::InvalidGraph
        );
    }
}
