//! Turns a graph into a `Plan`: nodes in dependency order, each with a built
//! kernel, its inputs resolved to where they live at run time, and the
//! values each step may free because nothing later reads them.

use std::collections::{BTreeMap, HashMap, HashSet};

use onyx_tensor::{Tensor, Value};

use crate::ir::{Graph, Node, ValueInfo};
use crate::ops::{BuildCtx, Kernel, Registry};
use crate::{Error, ErrorKind, Result};

/// Where a value comes from at run time.
#[derive(Clone, Debug, PartialEq)]
pub enum Source {
    /// A value computed during the run (or fed as an input).
    Slot(usize),
    /// An initializer or constant, owned by the plan.
    Const(usize),
    /// A name from an enclosing graph (subgraphs only).
    Outer(String),
}

pub(crate) struct Step {
    pub(crate) node: Node,
    pub(crate) kernel: Box<dyn Kernel>,
    pub(crate) inputs: Vec<Option<Source>>,
    /// Slot per output; None for an unused output name ("").
    pub(crate) outputs: Vec<Option<usize>>,
    /// Slots whose last reader is this step.
    pub(crate) frees: Vec<usize>,
}

/// A graph input: the slot it fills, and the initializer that stands in
/// when the caller does not feed it.
pub(crate) struct PlanInput {
    pub(crate) info: ValueInfo,
    pub(crate) slot: usize,
    pub(crate) default: Option<usize>,
}

/// A compiled graph, immutable and shareable between threads.
pub struct Plan {
    pub(crate) inputs: Vec<PlanInput>,
    pub(crate) outputs: Vec<(ValueInfo, Source)>,
    pub(crate) consts: Vec<Value>,
    pub(crate) steps: Vec<Step>,
    pub(crate) slot_count: usize,
    /// Name -> where it lives, for lookups from subgraphs.
    pub(crate) names: HashMap<String, Source>,
}

impl Plan {
    /// The graph inputs, in order (including those with an initializer).
    pub fn input_infos(&self) -> impl Iterator<Item = (&ValueInfo, bool)> {
        self.inputs.iter().map(|i| (&i.info, i.default.is_some()))
    }

    pub fn output_infos(&self) -> impl Iterator<Item = &ValueInfo> {
        self.outputs.iter().map(|(i, _)| i)
    }

    pub fn node_count(&self) -> usize {
        self.steps.len()
    }
}

/// Builds plans for a model's graph and its subgraphs.
pub(crate) struct Planner<'a> {
    pub(crate) opsets: &'a BTreeMap<String, i64>,
    pub(crate) registry: &'a Registry,
}

fn graph_err(msg: String) -> Error {
    Error::new(ErrorKind::InvalidGraph, msg)
}

/// Names a graph reads from enclosing scopes: read by its nodes (or their
/// subgraphs) but defined nowhere inside it.
pub fn free_names(g: &Graph) -> Vec<String> {
    let mut defined: HashSet<&str> = HashSet::new();
    defined.extend(g.inputs.iter().map(|i| i.name.as_str()));
    defined.extend(g.initializers.iter().map(|(n, _)| n.as_str()));
    for n in &g.nodes {
        defined.extend(n.outputs.iter().map(String::as_str));
    }
    let mut free = Vec::new();
    let mut seen = HashSet::new();
    let mut note = |name: &str, free: &mut Vec<String>| {
        if !name.is_empty() && !defined.contains(name) && seen.insert(name.to_string()) {
            free.push(name.to_string());
        }
    };
    for n in &g.nodes {
        for i in &n.inputs {
            note(i, &mut free);
        }
        for sub in n.subgraphs() {
            for name in free_names(sub) {
                note(&name, &mut free);
            }
        }
    }
    for o in &g.outputs {
        note(&o.name, &mut free);
    }
    free
}

/// Everything a node reads: its inputs and its subgraphs' free names.
fn node_reads(n: &Node) -> Vec<String> {
    let mut reads: Vec<String> = n.inputs.iter().filter(|i| !i.is_empty()).cloned().collect();
    for sub in n.subgraphs() {
        reads.extend(free_names(sub));
    }
    reads
}

/// Counts, per constant, the places that read its value as stored: node
/// inputs, subgraphs' outer reads, graph outputs and the defaults of graph
/// inputs. A kernel that stands in for a constant input gives its count
/// back; at zero the constant is freed, at once, so that a model's weights
/// and their packed forms are not all held at the same time while planning.
struct ConstReaders {
    /// Per constant; zero means freed.
    pending: Vec<usize>,
}

impl ConstReaders {
    fn count(g: &Graph, names: &HashMap<String, Source>, inputs: &[PlanInput], n: usize) -> Self {
        let mut pending = vec![0; n];
        let mut note = |name: &str| {
            if let Some(Source::Const(c)) = names.get(name) {
                pending[*c] += 1;
            }
        };
        for node in &g.nodes {
            node_reads(node).iter().for_each(|n| note(n));
        }
        g.outputs.iter().for_each(|o| note(&o.name));
        for c in inputs.iter().filter_map(|i| i.default) {
            pending[c] += 1;
        }
        ConstReaders { pending }
    }

    /// Frees the constants nothing reads (initializers no node uses).
    fn free_unread(&self, consts: &mut [Value]) {
        for (value, &n) in consts.iter_mut().zip(&self.pending) {
            if n == 0 {
                *value = Value::Optional(None);
            }
        }
    }

    /// One reader of constant `c` no longer needs it as stored.
    fn release(&mut self, c: usize, consts: &mut [Value]) {
        self.pending[c] = self.pending[c].saturating_sub(1);
        if self.pending[c] == 0 {
            consts[c] = Value::Optional(None);
        }
    }

    /// Forgets the names of freed constants, so nothing can look them up.
    fn forget_names(&self, names: &mut HashMap<String, Source>) {
        names.retain(|_, s| !matches!(s, Source::Const(c) if self.pending[*c] == 0));
    }
}

/// Orders nodes so that each comes after the producers of what it reads.
pub(crate) fn topo_order(g: &Graph) -> Result<Vec<usize>> {
    let mut producer: HashMap<&str, usize> = HashMap::new();
    for (i, n) in g.nodes.iter().enumerate() {
        for o in n.outputs.iter().filter(|o| !o.is_empty()) {
            if producer.insert(o, i).is_some() {
                return Err(graph_err(format!(
                    "{}: output '{o}' is also produced by another node",
                    n.describe()
                )));
            }
        }
    }
    let mut indegree = vec![0usize; g.nodes.len()];
    let mut users: Vec<Vec<usize>> = vec![Vec::new(); g.nodes.len()];
    for (i, n) in g.nodes.iter().enumerate() {
        let mut deps: Vec<usize> = node_reads(n)
            .iter()
            .filter_map(|r| producer.get(r.as_str()).copied())
            .collect();
        deps.sort_unstable();
        deps.dedup();
        for d in deps {
            indegree[i] += 1;
            users[d].push(i);
        }
    }
    // Kahn's algorithm, taking ready nodes in file order for stable plans.
    let mut ready: std::collections::BTreeSet<usize> =
        (0..g.nodes.len()).filter(|&i| indegree[i] == 0).collect();
    let mut order = Vec::with_capacity(g.nodes.len());
    while let Some(i) = ready.pop_first() {
        order.push(i);
        for &u in &users[i] {
            indegree[u] -= 1;
            if indegree[u] == 0 {
                ready.insert(u);
            }
        }
    }
    if order.len() != g.nodes.len() {
        let stuck = (0..g.nodes.len()).find(|&i| indegree[i] > 0).unwrap_or(0);
        return Err(graph_err(format!(
            "the graph has a cycle through {}",
            g.nodes[stuck].describe()
        )));
    }
    Ok(order)
}

impl Planner<'_> {
    /// Plans the main graph. Its initializers come separately, by value, so
    /// that the plan takes them over instead of holding a second copy.
    pub(crate) fn plan(&self, g: &Graph, initializers: Vec<(String, Tensor)>) -> Result<Plan> {
        self.build(g, initializers, false)
    }

    pub(crate) fn subplan(&self, g: &Graph) -> Result<Plan> {
        self.build(g, g.initializers.clone(), true)
    }

    /// Builds a node's kernel; also returns the inputs (a bit each) whose
    /// constants the kernel keeps in a form of its own and does not read.
    pub(crate) fn build_kernel(
        &self,
        node: &Node,
        const_inputs: &[Option<&Value>],
    ) -> Result<(Box<dyn Kernel>, u64)> {
        let build = self
            .registry
            .get(&node.domain, &node.op_type)
            .ok_or_else(|| {
                let domain = if node.domain.is_empty() {
                    "ai.onnx"
                } else {
                    &node.domain
                };
                Error::new(
                    ErrorKind::NotImplemented,
                    format!(
                        "{}: operator {domain}.{} is not supported",
                        node.describe(),
                        node.op_type
                    ),
                )
            })?;
        let opset = *self.opsets.get(&node.domain).ok_or_else(|| {
            graph_err(format!(
                "{}: the model does not import the domain '{}'",
                node.describe(),
                node.domain
            ))
        })?;
        let ctx = BuildCtx {
            node,
            opset,
            planner: self,
            const_inputs,
            stood_in: Default::default(),
        };
        let kernel = build(&ctx).map_err(|e| {
            // keep the kind of nested failures (an unsupported op inside a subgraph)
            let kind = if e.0.contains("is not supported") {
                ErrorKind::NotImplemented
            } else {
                ErrorKind::InvalidGraph
            };
            Error::new(kind, format!("{}: {}", node.describe(), e.0))
        })?;
        Ok((kernel, ctx.stood_in.get()))
    }

    fn build(
        &self,
        g: &Graph,
        initializers: Vec<(String, Tensor)>,
        is_subgraph: bool,
    ) -> Result<Plan> {
        let mut names: HashMap<String, Source> = HashMap::new();
        let mut consts = Vec::new();
        let mut const_of: HashMap<String, usize> = HashMap::new();
        for (name, t) in initializers {
            const_of.insert(name, consts.len());
            consts.push(Value::Tensor(t));
        }
        let mut slot_count = 0;
        let mut inputs = Vec::new();
        for info in &g.inputs {
            if names.contains_key(&info.name) {
                return Err(graph_err(format!(
                    "graph input '{}' is declared twice",
                    info.name
                )));
            }
            names.insert(info.name.clone(), Source::Slot(slot_count));
            inputs.push(PlanInput {
                info: info.clone(),
                slot: slot_count,
                default: const_of.get(info.name.as_str()).copied(),
            });
            slot_count += 1;
        }
        for (name, &c) in &const_of {
            names.entry(name.to_string()).or_insert(Source::Const(c));
        }
        let order = topo_order(g)?;
        for &i in &order {
            for o in g.nodes[i].outputs.iter().filter(|o| !o.is_empty()) {
                if names.contains_key(o) {
                    return Err(graph_err(format!(
                        "{}: output '{o}' has the name of a graph input or initializer",
                        g.nodes[i].describe()
                    )));
                }
                names.insert(o.clone(), Source::Slot(slot_count));
                slot_count += 1;
            }
        }
        let resolve = |name: &str, who: &str| -> Result<Source> {
            match names.get(name) {
                Some(s) => Ok(s.clone()),
                None if is_subgraph => Ok(Source::Outer(name.to_string())),
                None => Err(graph_err(format!(
                    "{who} reads '{name}', which nothing produces"
                ))),
            }
        };
        let mut readers = ConstReaders::count(g, &names, &inputs, consts.len());
        readers.free_unread(&mut consts);
        let mut steps = Vec::with_capacity(order.len());
        let mut last_use: HashMap<usize, usize> = HashMap::new();
        for &i in &order {
            let node = &g.nodes[i];
            let who = node.describe();
            let mut step_inputs = Vec::with_capacity(node.inputs.len());
            for name in &node.inputs {
                step_inputs.push(if name.is_empty() {
                    None
                } else {
                    Some(resolve(name, &who)?)
                });
            }
            for name in node_reads(node) {
                if let Source::Slot(s) = resolve(&name, &who)? {
                    last_use.insert(s, steps.len());
                }
            }
            let outputs = node
                .outputs
                .iter()
                .map(|o| match names.get(o) {
                    Some(Source::Slot(s)) if !o.is_empty() => Some(*s),
                    _ => None,
                })
                .collect();
            let const_inputs: Vec<Option<&Value>> = step_inputs
                .iter()
                .map(|s| match s {
                    Some(Source::Const(c)) => consts.get(*c),
                    _ => None,
                })
                .collect();
            let (kernel, stood_in) = self.build_kernel(node, &const_inputs)?;
            for (i, input) in step_inputs.iter_mut().enumerate() {
                if i < 64 && stood_in & (1 << i) != 0 {
                    if let Some(Source::Const(c)) = input.take() {
                        readers.release(c, &mut consts);
                    }
                }
            }
            steps.push(Step {
                node: node.clone(),
                kernel,
                inputs: step_inputs,
                outputs,
                frees: vec![],
            });
        }
        let mut outputs = Vec::new();
        for o in &g.outputs {
            let src = resolve(&o.name, &format!("graph output '{}'", o.name))?;
            if let Source::Slot(s) = src {
                last_use.insert(s, usize::MAX);
            }
            outputs.push((o.clone(), src));
        }
        // outputs nobody reads die at once
        for (idx, step) in steps.iter().enumerate() {
            for s in step.outputs.iter().flatten() {
                last_use.entry(*s).or_insert(idx);
            }
        }
        for (slot, step) in last_use {
            if let Some(s) = steps.get_mut(step) {
                s.frees.push(slot);
            }
        }
        readers.forget_names(&mut names);
        Ok(Plan {
            inputs,
            outputs,
            consts,
            steps,
            slot_count,
            names,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    fn plan_of(g: &Graph) -> Plan {
        let opsets = [(String::new(), 17)].into();
        let planner = Planner {
            opsets: &opsets,
            registry: Registry::global(),
        };
        planner.plan(g, g.initializers.clone()).unwrap()
    }

    fn is_freed(plan: &Plan, name: &str) -> bool {
        !plan.names.contains_key(name)
    }

    #[test]
    fn a_weight_only_packed_kernels_read_is_freed() {
        let mut g = graph(
            &["x"],
            &["y", "z"],
            vec![
                node("MatMul", &["x", "w"], &["y"]),
                node("Gemm", &["x", "w"], &["g"]),
                node("Add", &["g", "v"], &["z"]),
            ],
        );
        g.initializers = vec![
            ("w".into(), f32s(&[3, 3], &vals(9, 1))),
            ("v".into(), f32s(&[3], &vals(3, 2))),
            ("unread".into(), f32s(&[2], &vals(2, 3))),
        ];
        let plan = plan_of(&g);
        assert!(is_freed(&plan, "w") && is_freed(&plan, "unread"));
        assert!(!is_freed(&plan, "v"));
        let freed = plan
            .consts
            .iter()
            .filter(|c| matches!(c, Value::Optional(None)))
            .count();
        assert_eq!(freed, 2);
        // the run gives what the weight as stored gives
        let x = f32s(&[2, 3], &vals(6, 4));
        let want = run_graph(&g, &[("x", x.clone())]);
        let session = crate::Session::from_model(model(&g), Default::default()).unwrap();
        let got: Vec<Tensor> = session
            .run(vec![("x".into(), Value::Tensor(x))])
            .unwrap()
            .into_iter()
            .map(|v| v.into_tensor().unwrap())
            .collect();
        assert_close(&got, &want);
    }

    #[test]
    fn a_weight_that_is_also_read_as_stored_is_kept() {
        let subgraph = graph(&[], &["s"], vec![node("Identity", &["w"], &["s"])]);
        let mut cond = node("If", &["c"], &["i"]);
        cond.attrs = [
            (
                "then_branch".to_string(),
                crate::ir::Attr::Graph(subgraph.clone()),
            ),
            ("else_branch".to_string(), crate::ir::Attr::Graph(subgraph)),
        ]
        .into();
        for readers in [
            vec![
                node("MatMul", &["x", "w"], &["y"]),
                node("Relu", &["w"], &["z"]),
            ],
            vec![node("MatMul", &["x", "w"], &["y"]), cond.clone()],
        ] {
            let outputs: Vec<String> = readers.iter().map(|n| n.outputs[0].clone()).collect();
            let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
            let mut g = graph(&["x", "c"], &outputs, readers);
            g.initializers = vec![("w".into(), f32s(&[3, 3], &vals(9, 1)))];
            assert!(!is_freed(&plan_of(&g), "w"));
        }
    }
}
