//! Graph rewrites between import and planning. Each pass is a file; `optimize`
//! runs them in order for a level. Passes work on the main graph only (a
//! subgraph's reads of outer names count as reads by the node holding it),
//! and every rewrite keeps the graph's outputs the same values, up to float
//! rounding where a fusion reorders arithmetic.

mod const_fold;
mod conv_act;
mod conv_bn;
mod cse;
mod dead_nodes;
mod gelu;
mod layer_norm;
mod matmul_bias;
mod shape_fold;
mod shape_infer;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::str::FromStr;

use onyx_tensor::Tensor;

use crate::ir::{Graph, Model, Node};
use crate::plan::free_names;
use crate::Limits;

/// The domain of the operators only passes create.
pub const ONYX_DOMAIN: &str = "com.onyx";

/// How much a session rewrites the graph before planning, as ONNX Runtime's
/// levels: Basic folds and cleans, Extended and All also fuse.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord)]
pub enum OptLevel {
    Disabled,
    Basic,
    Extended,
    #[default]
    All,
}

impl FromStr for OptLevel {
    type Err = String;
    fn from_str(s: &str) -> Result<OptLevel, String> {
        match s.to_ascii_lowercase().as_str() {
            "disabled" | "disable" | "none" => Ok(OptLevel::Disabled),
            "basic" => Ok(OptLevel::Basic),
            "extended" => Ok(OptLevel::Extended),
            "all" => Ok(OptLevel::All),
            _ => Err(format!(
                "unknown optimisation level '{s}'; expected disabled, basic, extended or all"
            )),
        }
    }
}

/// Times each pass rewrote something, by pass name.
pub type PassCounts = BTreeMap<&'static str, usize>;

/// Rewrites `model` for `level`; returns how often each pass fired.
pub fn optimize(model: &mut Model, level: OptLevel, limits: &Limits) -> PassCounts {
    let mut counts = PassCounts::new();
    if level == OptLevel::Disabled {
        return counts;
    }
    let mut note = |name: &'static str, n: usize| {
        if n > 0 {
            *counts.entry(name).or_insert(0) += n;
        }
    };
    // folding exposes static shapes and static shapes expose more folding
    for _ in 0..8 {
        let folded = const_fold::run(model, limits);
        let shapes = shape_fold::run(&mut model.graph);
        note("constant folding", folded);
        note("shape folding", shapes);
        if folded + shapes == 0 {
            break;
        }
    }
    note("common subexpressions", cse::run(&mut model.graph));
    if level >= OptLevel::Extended {
        note("Conv+BatchNormalization", conv_bn::run(&mut model.graph));
        let convs = conv_act::run(&mut model.graph);
        note("FusedConv", convs);
        note("LayerNormalization", layer_norm::run(&mut model.graph));
        let gelus = gelu::run(&mut model.graph);
        note("Gelu", gelus);
        let matmuls = matmul_bias::run(&mut model.graph);
        note("FusedMatMul", matmuls);
        if gelus + matmuls + convs > 0 {
            model.opsets.entry(ONYX_DOMAIN.to_string()).or_insert(1);
        }
    }
    note("dead nodes", dead_nodes::run(&mut model.graph));
    counts
}

/// Who reads each value of a graph.
pub(crate) struct Uses {
    /// Value name -> indices of the nodes that read it (once per node).
    readers: HashMap<String, Vec<usize>>,
    graph_outputs: HashSet<String>,
}

impl Uses {
    pub(crate) fn of(g: &Graph) -> Uses {
        let mut readers: HashMap<String, Vec<usize>> = HashMap::new();
        for (i, n) in g.nodes.iter().enumerate() {
            let mut reads: Vec<String> =
                n.inputs.iter().filter(|s| !s.is_empty()).cloned().collect();
            for sub in n.subgraphs() {
                reads.extend(free_names(sub));
            }
            reads.sort();
            reads.dedup();
            for r in reads {
                readers.entry(r).or_default().push(i);
            }
        }
        let graph_outputs = g.outputs.iter().map(|o| o.name.clone()).collect();
        Uses {
            readers,
            graph_outputs,
        }
    }

    pub(crate) fn readers(&self, name: &str) -> &[usize] {
        self.readers.get(name).map_or(&[], Vec::as_slice)
    }

    pub(crate) fn is_read(&self, name: &str) -> bool {
        self.graph_outputs.contains(name) || self.readers.contains_key(name)
    }

    pub(crate) fn is_graph_output(&self, name: &str) -> bool {
        self.graph_outputs.contains(name)
    }

    /// The one node reading `name`, when nothing else (no graph output) does.
    pub(crate) fn sole_reader(&self, name: &str) -> Option<usize> {
        match self.readers(name) {
            [one] if !self.graph_outputs.contains(name) => Some(*one),
            _ => None,
        }
    }
}

/// Value name -> index of the node producing it.
pub(crate) fn producers(g: &Graph) -> HashMap<&str, usize> {
    let mut p = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            p.insert(o.as_str(), i);
        }
    }
    p
}

/// The initializers no caller can override (not also graph inputs).
pub(crate) fn constants(g: &Graph) -> HashMap<&str, &Tensor> {
    let inputs: HashSet<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    g.initializers
        .iter()
        .filter(|(n, _)| !inputs.contains(n.as_str()))
        .map(|(n, t)| (n.as_str(), t))
        .collect()
}

/// A constant's elements as f64 when it is a float tensor.
pub(crate) fn const_floats(consts: &HashMap<&str, &Tensor>, name: &str) -> Option<Vec<f64>> {
    let t = consts.get(name)?;
    if !t.dtype().is_float() {
        return None;
    }
    t.to_f64_vec().ok()
}

/// A constant that holds one float (of any shape of one element).
pub(crate) fn const_scalar(consts: &HashMap<&str, &Tensor>, name: &str) -> Option<f64> {
    match const_floats(consts, name)?.as_slice() {
        [v] => Some(*v),
        _ => None,
    }
}

/// Whether `a` is within a relative `1e-5` of `b`.
pub(crate) fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-5 * b.abs().max(1.0)
}

/// Makes names no value of the graph (or its subgraphs) has yet.
pub(crate) struct FreshNames {
    taken: HashSet<String>,
}

impl FreshNames {
    pub(crate) fn of(g: &Graph) -> FreshNames {
        let mut taken = HashSet::new();
        collect_names(g, &mut taken);
        FreshNames { taken }
    }

    pub(crate) fn make(&mut self, base: &str) -> String {
        let mut i = 0usize;
        loop {
            let name = format!("{base}__{i}");
            if self.taken.insert(name.clone()) {
                return name;
            }
            i += 1;
        }
    }
}

fn collect_names(g: &Graph, taken: &mut HashSet<String>) {
    taken.extend(g.inputs.iter().map(|i| i.name.clone()));
    taken.extend(g.outputs.iter().map(|i| i.name.clone()));
    taken.extend(g.initializers.iter().map(|(n, _)| n.clone()));
    for n in &g.nodes {
        taken.extend(n.inputs.iter().cloned());
        taken.extend(n.outputs.iter().cloned());
        for sub in n.subgraphs() {
            collect_names(sub, taken);
        }
    }
}

/// A fusion's rewrite: nodes replaced in place, nodes removed, constants added.
#[derive(Default)]
pub(crate) struct Edits {
    replace: BTreeMap<usize, Node>,
    remove: HashSet<usize>,
    initializers: Vec<(String, Tensor)>,
    /// Nodes some match already took, so matches never overlap.
    taken: HashSet<usize>,
}

impl Edits {
    /// Claims `nodes` for one match; false (claiming nothing) if any is taken.
    pub(crate) fn claim(&mut self, nodes: &[usize]) -> bool {
        if nodes.iter().any(|n| self.taken.contains(n)) {
            return false;
        }
        self.taken.extend(nodes.iter().copied());
        true
    }

    pub(crate) fn replace(&mut self, at: usize, node: Node) {
        self.replace.insert(at, node);
    }

    pub(crate) fn remove(&mut self, nodes: &[usize]) {
        self.remove.extend(nodes.iter().copied());
    }

    pub(crate) fn add_initializer(&mut self, name: String, t: Tensor) {
        self.initializers.push((name, t));
    }

    /// Applies the edits; returns the number of matches (replaced nodes).
    pub(crate) fn apply(self, g: &mut Graph) -> usize {
        let count = self.replace.len();
        let mut replace = self.replace;
        let nodes = std::mem::take(&mut g.nodes);
        g.nodes = nodes
            .into_iter()
            .enumerate()
            .filter_map(|(i, n)| match replace.remove(&i) {
                Some(new) => Some(new),
                None if self.remove.contains(&i) => None,
                None => Some(n),
            })
            .collect();
        g.initializers.extend(self.initializers);
        count
    }
}

/// The operand of a binary node that is not `known`, when the other is.
pub(crate) fn other_operand<'a>(n: &'a Node, known: &str) -> Option<&'a str> {
    match n.inputs.as_slice() {
        [a, b] if a == known => Some(b),
        [a, b] if b == known => Some(a),
        _ => None,
    }
}

/// A node of the default domain with the given op type.
pub(crate) fn is_op(n: &Node, op: &str) -> bool {
    n.domain.is_empty() && n.op_type == op
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;
    use crate::{Session, SessionOptions};
    use onyx_tensor::Value;

    #[test]
    fn levels_choose_the_passes_and_keep_the_results() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                node("Neg", &["b0"], &["b"]),
                node("MatMul", &["x", "w"], &["m"]),
                node("Add", &["m", "b"], &["a"]),
                node("Relu", &["a"], &["y"]),
            ],
        );
        g.initializers = vec![
            ("w".into(), f32s(&[3, 2], &vals(6, 9))),
            ("b0".into(), f32s(&[2], &[0.5, -0.25])),
        ];
        let x = f32s(&[4, 3], &vals(12, 10));
        let want = run_graph(&g, &[("x", x.clone())]);
        let cases: [(OptLevel, &[&str]); 4] = [
            (OptLevel::Disabled, &["Neg", "MatMul", "Add", "Relu"]),
            (OptLevel::Basic, &["MatMul", "Add", "Relu"]),
            (OptLevel::Extended, &["FusedMatMul"]),
            (OptLevel::All, &["FusedMatMul"]),
        ];
        for (level, want_ops) in cases {
            let options = SessionOptions {
                opt_level: level,
                ..SessionOptions::default()
            };
            let mut m = model(&g);
            m.opsets.remove(ONYX_DOMAIN);
            let s = Session::from_model(m, options).unwrap();
            assert_eq!(ops(&s.model().graph), want_ops, "{level:?}");
            let got = s.run(vec![("x".into(), Value::Tensor(x.clone()))]).unwrap();
            let got: Vec<Tensor> = got.into_iter().filter_map(Value::into_tensor).collect();
            assert_close(&got, &want);
        }
        assert_eq!("extended".parse::<OptLevel>(), Ok(OptLevel::Extended));
        assert!("fast".parse::<OptLevel>().unwrap_err().contains("'fast'"));
    }
}
