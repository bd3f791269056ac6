//! The LayerNorm torch spells out, one op at a time, fused into one
//! LayerNormalization over the last axis:
//! `m = ReduceMean(x); d = x - m; v = ReduceMean(d ^ 2);`
//! `y = d / Sqrt(v + eps) * gamma + beta`.

use std::collections::HashMap;

use onyx_tensor::Tensor;

use super::{close, const_scalar, constants, is_op, other_operand, Edits, Uses};
use crate::ir::{Attr, Graph, Node};

/// Whether a ReduceMean keeps dims and averages over the last axis only
/// (axes as attribute up to opset 17, as input from 18).
fn mean_over_last(n: &Node, consts: &HashMap<&str, &Tensor>) -> bool {
    let axes = match n.attr_ints("axes").ok().flatten() {
        Some(a) => Some(a),
        None => n
            .inputs
            .get(1)
            .and_then(|a| consts.get(a.as_str()))
            .and_then(|t| t.to_i64_vec().ok()),
    };
    is_op(n, "ReduceMean")
        && axes.as_deref() == Some(&[-1])
        && n.attr_int("keepdims").ok().flatten().unwrap_or(1) == 1
}

/// Returns the number of LayerNormalizations made.
pub(crate) fn run(g: &mut Graph) -> usize {
    let uses = Uses::of(g);
    let consts = constants(g);
    let mut edits = Edits::default();
    let nodes = &g.nodes;
    // follows the value's only reader, if it is a node of type `op`
    let next = |value: &str, op: &str| -> Option<usize> {
        uses.sole_reader(value).filter(|&i| is_op(&nodes[i], op))
    };
    for (mi, mean) in nodes.iter().enumerate() {
        if !mean_over_last(mean, &consts) {
            continue;
        }
        let x = &mean.inputs[0];
        let matched = (|| {
            let si = next(&mean.outputs[0], "Sub")?;
            let d = &nodes[si].outputs[0];
            (nodes[si].inputs == [x.clone(), mean.outputs[0].clone()]).then_some(())?;
            // d feeds the square and the division, nothing else
            let (pi, di) = match uses.readers(d) {
                [a, b] if is_op(&nodes[*a], "Pow") => (*a, *b),
                [a, b] => (*b, *a),
                _ => return None,
            };
            (!uses.is_graph_output(d) && is_op(&nodes[pi], "Pow") && is_op(&nodes[di], "Div"))
                .then_some(())?;
            (nodes[pi].inputs[0] == *d && close(const_scalar(&consts, &nodes[pi].inputs[1])?, 2.0))
                .then_some(())?;
            let vi = uses.sole_reader(&nodes[pi].outputs[0])?;
            mean_over_last(&nodes[vi], &consts).then_some(())?;
            let ai = next(&nodes[vi].outputs[0], "Add")?;
            let eps = const_scalar(&consts, other_operand(&nodes[ai], &nodes[vi].outputs[0])?)?;
            let qi = next(&nodes[ai].outputs[0], "Sqrt")?;
            (next(&nodes[qi].outputs[0], "Div")? == di).then_some(())?;
            (nodes[di].inputs == [d.clone(), nodes[qi].outputs[0].clone()]).then_some(())?;
            let ui = next(&nodes[di].outputs[0], "Mul")?;
            let gamma = other_operand(&nodes[ui], &nodes[di].outputs[0])?;
            let bi = next(&nodes[ui].outputs[0], "Add")?;
            let beta = other_operand(&nodes[bi], &nodes[ui].outputs[0])?;
            let one_d = |n: &str| consts.get(n).is_some_and(|t| t.rank() == 1);
            (one_d(gamma) && one_d(beta)).then_some(())?;
            let all = [mi, si, pi, vi, ai, qi, di, ui, bi];
            Some((all, eps, gamma.to_string(), beta.to_string()))
        })();
        let Some((all, eps, gamma, beta)) = matched else {
            continue;
        };
        if !edits.claim(&all) {
            continue;
        }
        let last = all[8];
        let mut ln = Node {
            name: nodes[last].name.clone(),
            op_type: "LayerNormalization".into(),
            domain: String::new(),
            inputs: vec![x.clone(), gamma, beta],
            outputs: nodes[last].outputs.clone(),
            attrs: Default::default(),
        };
        ln.attrs.insert("axis".into(), Attr::Int(-1));
        ln.attrs.insert("epsilon".into(), Attr::Float(eps as f32));
        edits.replace(last, ln);
        edits.remove(&all[..8]);
    }
    edits.apply(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    fn torch_layer_norm(swap: bool) -> Graph {
        let mean = |i: &str, o: &str| {
            with_attr(node("ReduceMean", &[i], &[o]), "axes", Attr::Ints(vec![-1]))
        };
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                mean("x", "m"),
                node("Sub", &["x", "m"], &["d"]),
                node("Pow", &["d", "two"], &["p"]),
                mean("p", "v"),
                node("Add", &["v", "eps"], &["ve"]),
                node("Sqrt", &["ve"], &["sd"]),
                node("Div", &["d", "sd"], &["n"]),
                node(
                    "Mul",
                    if swap {
                        &["gamma", "n"]
                    } else {
                        &["n", "gamma"]
                    },
                    &["y1"],
                ),
                node("Add", &["y1", "beta"], &["y"]),
            ],
        );
        g.initializers = vec![
            ("two".into(), f32s(&[], &[2.0])),
            ("eps".into(), f32s(&[], &[1e-5])),
            ("gamma".into(), f32s(&[4], &[1.0, 0.5, -2.0, 3.0])),
            ("beta".into(), f32s(&[4], &[0.0, 0.1, 0.2, -0.3])),
        ];
        g
    }

    #[test]
    fn fuses_the_torch_pattern() {
        for swap in [false, true] {
            let mut g = torch_layer_norm(swap);
            let x = f32s(&[2, 3, 4], &vals(24, 3));
            let want = run_graph(&g, &[("x", x.clone())]);
            assert_eq!(run(&mut g), 1);
            assert_eq!(ops(&g), ["LayerNormalization"]);
            assert_close(&run_graph(&g, &[("x", x)]), &want);
        }
    }

    #[test]
    fn a_reused_intermediate_blocks_the_fusion() {
        let mut g = torch_layer_norm(false);
        g.outputs.push(g.outputs[0].clone());
        g.outputs[1].name = "v".into();
        assert_eq!(run(&mut g), 0);
        assert_eq!(g.nodes.len(), 9);
    }
}
