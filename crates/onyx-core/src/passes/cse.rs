//! Common-subexpression elimination: of two nodes with the same operator,
//! attributes and inputs, the later one is dropped and its readers read the
//! earlier one's outputs. Visiting nodes in dependency order lets whole
//! duplicated chains collapse in one run.

use std::collections::HashMap;

use super::{const_fold::is_deterministic, Uses};
use crate::ir::{Graph, Node};
use crate::plan::topo_order;

/// Whether `a` computes the same values as `b`.
fn same(a: &Node, b: &Node) -> bool {
    a.op_type == b.op_type
        && a.domain == b.domain
        && a.inputs == b.inputs
        && a.outputs.len() == b.outputs.len()
        && a.attrs == b.attrs
}

/// Returns the number of nodes removed.
pub(crate) fn run(g: &mut Graph) -> usize {
    let Ok(order) = topo_order(g) else {
        return 0;
    };
    let uses = Uses::of(g);
    // a renamed value must be read only by plain node inputs of this graph
    let renamable: Vec<bool> = g
        .nodes
        .iter()
        .map(|n| {
            n.outputs.iter().all(|o| {
                !uses.is_graph_output(o)
                    && uses.readers(o).iter().all(|&r| {
                        g.nodes[r].inputs.contains(o) && g.nodes[r].subgraphs().is_empty()
                    })
            })
        })
        .collect();
    let mut rename: HashMap<String, String> = HashMap::new();
    let mut seen: HashMap<(String, Vec<String>), Vec<usize>> = HashMap::new();
    let mut removed = Vec::new();
    for i in order {
        let mut n = g.nodes[i].clone();
        for inp in &mut n.inputs {
            if let Some(to) = rename.get(inp) {
                *inp = to.clone();
            }
        }
        let candidate = is_deterministic(&n) && n.subgraphs().is_empty();
        let key = (n.op_type.clone(), n.inputs.clone());
        let earlier = seen
            .get(&key)
            .and_then(|ks| ks.iter().find(|&&k| same(&g.nodes[k], &n)).copied());
        match earlier {
            Some(k) if candidate && renamable[i] => {
                for (dup, keep) in n.outputs.iter().zip(&g.nodes[k].outputs) {
                    if !dup.is_empty() {
                        rename.insert(dup.clone(), keep.clone());
                    }
                }
                removed.push(i);
            }
            _ => {
                g.nodes[i] = n;
                if candidate {
                    seen.entry(key).or_default().push(i);
                }
            }
        }
    }
    let count = removed.len();
    let nodes = std::mem::take(&mut g.nodes);
    g.nodes = nodes
        .into_iter()
        .enumerate()
        .filter_map(|(i, n)| (!removed.contains(&i)).then_some(n))
        .collect();
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::passes::testing::*;

    #[test]
    fn merges_duplicate_chains() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                node("Exp", &["x"], &["a1"]),
                node("Exp", &["x"], &["a2"]),
                node("Neg", &["a1"], &["b1"]),
                node("Neg", &["a2"], &["b2"]),
                with_attr(
                    node("LeakyRelu", &["b1"], &["c1"]),
                    "alpha",
                    Attr::Float(0.5),
                ),
                with_attr(
                    node("LeakyRelu", &["b2"], &["c2"]),
                    "alpha",
                    Attr::Float(0.1),
                ),
                node("Add", &["c1", "c2"], &["y"]),
            ],
        );
        let x = f32s(&[3], &[-1.0, 0.0, 2.0]);
        let want = run_graph(&g, &[("x", x.clone())]);
        assert_eq!(run(&mut g), 2);
        // the LeakyRelus differ in alpha and both stay
        assert_eq!(ops(&g), ["Exp", "Neg", "LeakyRelu", "LeakyRelu", "Add"]);
        assert_eq!(run_graph(&g, &[("x", x)]), want);
    }

    #[test]
    fn keeps_duplicates_that_are_graph_outputs() {
        let mut g = graph(
            &["x"],
            &["a", "b"],
            vec![node("Exp", &["x"], &["a"]), node("Exp", &["x"], &["b"])],
        );
        assert_eq!(run(&mut g), 0);
        assert_eq!(g.nodes.len(), 2);
    }
}
