//! Dead-node elimination: drops nodes none of whose outputs is read (by a
//! node, a subgraph or the graph's outputs), then initializers nothing reads.

use std::collections::HashSet;

use super::Uses;
use crate::ir::Graph;

/// Returns the number of nodes removed.
pub(crate) fn run(g: &mut Graph) -> usize {
    let before = g.nodes.len();
    // removing a node can leave its producers dead: repeat until stable
    loop {
        let uses = Uses::of(g);
        let n = g.nodes.len();
        g.nodes.retain(|node| {
            node.outputs
                .iter()
                .any(|o| !o.is_empty() && uses.is_read(o))
        });
        if g.nodes.len() == n {
            break;
        }
    }
    let uses = Uses::of(g);
    let inputs: HashSet<&str> = g.inputs.iter().map(|i| i.name.as_str()).collect();
    g.initializers
        .retain(|(name, _)| inputs.contains(name.as_str()) || uses.is_read(name));
    before - g.nodes.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    #[test]
    fn drops_unread_chains_and_their_constants() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                node("Relu", &["x"], &["y"]),
                node("Add", &["x", "c"], &["dead1"]),
                node("Neg", &["dead1"], &["dead2"]),
            ],
        );
        g.initializers.push(("c".into(), f32s(&[1], &[1.0])));
        let want = run_graph(&g, &[("x", f32s(&[2], &[-1.0, 2.0]))]);
        assert_eq!(run(&mut g), 2);
        assert_eq!(ops(&g), ["Relu"]);
        assert!(g.initializers.is_empty());
        assert_eq!(run_graph(&g, &[("x", f32s(&[2], &[-1.0, 2.0]))]), want);
    }
}
