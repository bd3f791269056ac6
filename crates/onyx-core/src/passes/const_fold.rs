//! Constant folding: a node whose inputs are all constants is run once, now,
//! with the registry's own kernel, and its outputs become initializers.
//! Random operators, nodes holding subgraphs and nodes that make much more
//! data than they read are left to run.

use std::collections::{HashMap, HashSet};

use onyx_tensor::{Tensor, Value};

use super::constants;
use crate::ir::{Model, Node};
use crate::ops::{Registry, RunCtx};
use crate::plan::{topo_order, Planner};
use crate::Limits;

/// Operators whose result is not a function of their inputs.
const NONDETERMINISTIC: &[&str] = &[
    "RandomNormal",
    "RandomUniform",
    "RandomNormalLike",
    "RandomUniformLike",
    "Multinomial",
    "Bernoulli",
    "Dropout",
];

/// Elements a folded node may make beyond those it reads: folding must not
/// turn a small model into a large one (ConstantOfShape, Expand, Tile...).
const GROWTH_ELEMENTS: usize = 1 << 20;

/// Whether the node's outputs depend on its inputs alone.
pub(crate) fn is_deterministic(n: &Node) -> bool {
    !(n.domain.is_empty() && NONDETERMINISTIC.contains(&n.op_type.as_str()))
}

fn foldable(n: &Node) -> bool {
    is_deterministic(n) && n.subgraphs().is_empty() && !n.outputs.is_empty()
}

/// Returns the number of nodes folded.
pub(crate) fn run(model: &mut Model, limits: &Limits) -> usize {
    let g = &model.graph;
    let Ok(order) = topo_order(g) else {
        return 0; // the planner reports the cycle
    };
    let planner = Planner {
        opsets: &model.opsets,
        registry: Registry::global(),
    };
    let consts = constants(g);
    // folded values in the order made, and where each name sits there
    let mut folded: Vec<(String, Tensor)> = Vec::new();
    let mut folded_at: HashMap<String, usize> = HashMap::new();
    let mut done = HashSet::new();
    for i in order {
        let n = &g.nodes[i];
        if !foldable(n) {
            continue;
        }
        let args: Option<Vec<Option<Value>>> = n
            .inputs
            .iter()
            .map(|name| match name.as_str() {
                "" => Some(None),
                _ => folded_at
                    .get(name)
                    .map(|&k| &folded[k].1)
                    .or_else(|| consts.get(name.as_str()).copied())
                    .map(|t| Some(Value::Tensor(t.clone()))),
            })
            .collect();
        let Some(args) = args else { continue };
        if let Some(outs) = fold_node(&planner, n, &args, limits) {
            for (name, t) in n.outputs.iter().zip(outs) {
                if !name.is_empty() {
                    folded_at.insert(name.clone(), folded.len());
                    folded.push((name.clone(), t));
                }
            }
            done.insert(i);
        }
    }
    let g = &mut model.graph;
    let nodes = std::mem::take(&mut g.nodes);
    g.nodes = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| (!done.contains(&i)).then_some(n))
        .collect();
    g.initializers.extend(folded);
    done.len()
}

/// Runs one node on constant inputs; None when it cannot or should not be folded.
fn fold_node(
    planner: &Planner,
    n: &Node,
    args: &[Option<Value>],
    limits: &Limits,
) -> Option<Vec<Tensor>> {
    let read: usize = args
        .iter()
        .flatten()
        .filter_map(Value::as_tensor)
        .map(Tensor::len)
        .sum();
    let budget = read.saturating_add(GROWTH_ELEMENTS);
    let fold_limits = Limits {
        max_tensor_elements: limits.max_tensor_elements.min(budget),
        max_tensor_bytes: limits.max_tensor_bytes.min(budget.saturating_mul(16)),
        ..limits.clone()
    };
    let no_consts = vec![None; args.len()];
    let (kernel, _) = planner.build_kernel(n, &no_consts).ok()?;
    let refs: Vec<Option<&Value>> = args.iter().map(Option::as_ref).collect();
    let outs = kernel.run(&RunCtx::detached(&fold_limits), &refs).ok()?;
    if outs.len() != n.outputs.len() {
        return None;
    }
    let outs: Option<Vec<Tensor>> = outs.into_iter().map(Value::into_tensor).collect();
    let outs = outs?;
    let made: usize = outs.iter().map(Tensor::len).sum();
    (made <= budget).then_some(outs)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::passes::testing::*;

    #[test]
    fn folds_chains_of_constants_into_one_initializer() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                with_attr(
                    node("Constant", &[], &["k"]),
                    "value",
                    Attr::Tensor(f32s(&[2], &[1.0, 2.0])),
                ),
                node("Mul", &["k", "two"], &["k2"]),
                node("Add", &["x", "k2"], &["y"]),
            ],
        );
        g.initializers.push(("two".into(), f32s(&[], &[2.0])));
        let x = f32s(&[2], &[10.0, 20.0]);
        let want = run_graph(&g, &[("x", x.clone())]);
        let mut m = model(&g);
        assert_eq!(run(&mut m, &Limits::default()), 2);
        assert_eq!(ops(&m.graph), ["Add"]);
        let k2 = m
            .graph
            .initializers
            .iter()
            .find(|(n, _)| n == "k2")
            .unwrap();
        assert_eq!(k2.1, f32s(&[2], &[2.0, 4.0]));
        assert_eq!(run_graph(&m.graph, &[("x", x)]), want);
    }

    #[test]
    fn leaves_random_overridable_and_huge_nodes() {
        let mut g = graph(
            &["x", "w"],
            &["y", "r", "big"],
            vec![
                node("Neg", &["w"], &["y"]),
                with_attr(
                    node("RandomNormal", &[], &["r"]),
                    "shape",
                    Attr::Ints(vec![2]),
                ),
                node("ConstantOfShape", &["shape"], &["big"]),
            ],
        );
        // w is a graph input with an initializer: a caller may override it
        g.initializers.push(("w".into(), f32s(&[1], &[1.0])));
        let shape = Tensor::from_vec(vec![2], vec![4096i64, 4096]).unwrap();
        g.initializers.push(("shape".into(), shape));
        let mut m = model(&g);
        assert_eq!(run(&mut m, &Limits::default()), 0);
        assert_eq!(ops(&m.graph), ["Neg", "RandomNormal", "ConstantOfShape"]);
    }

    #[test]
    fn a_failing_node_is_left_to_fail_at_run_time() {
        let mut g = graph(&[], &["y"], vec![node("Reshape", &["a", "s"], &["y"])]);
        g.initializers
            .push(("a".into(), f32s(&[3], &[1.0, 2.0, 3.0])));
        let shape = Tensor::from_vec(vec![1], vec![2i64]).unwrap();
        g.initializers.push(("s".into(), shape));
        let mut m = model(&g);
        assert_eq!(run(&mut m, &Limits::default()), 0);
        assert_eq!(ops(&m.graph), ["Reshape"]);
    }
}
