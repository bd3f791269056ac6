//! The exact GELU torch spells out, `x * 0.5 * (1 + erf(x / sqrt(2)))`, in
//! either order of its two products, fused into one `com.onyx::Gelu`.

use std::collections::HashMap;

use onyx_tensor::Tensor;

use super::{
    close, const_scalar, constants, is_op, other_operand, producers, Edits, Uses, ONYX_DOMAIN,
};
use crate::ir::{Graph, Node};

/// Whether `n` is `Mul(x, c)` or `Mul(c, x)` with the constant `c` near `want`.
fn mul_by(n: &Node, x: &str, want: f64, consts: &HashMap<&str, &Tensor>) -> bool {
    is_op(n, "Mul")
        && other_operand(n, x)
            .and_then(|c| const_scalar(consts, c))
            .is_some_and(|c| close(c, want))
}

/// Returns the number of Gelus made.
pub(crate) fn run(g: &mut Graph) -> usize {
    let uses = Uses::of(g);
    let producer = producers(g);
    let consts = constants(g);
    let nodes = &g.nodes;
    let mut edits = Edits::default();
    for (ei, erf) in nodes.iter().enumerate() {
        if !is_op(erf, "Erf") {
            continue;
        }
        let matched = (|| {
            let si = *producer.get(erf.inputs[0].as_str())?;
            let scaled = &nodes[si];
            let x = scaled.inputs.first()?.as_str();
            let by_div = is_op(scaled, "Div")
                && scaled.inputs.len() == 2
                && close(
                    const_scalar(&consts, &scaled.inputs[1])?,
                    std::f64::consts::SQRT_2,
                );
            (by_div || mul_by(scaled, x, std::f64::consts::FRAC_1_SQRT_2, &consts)).then_some(())?;
            (uses.sole_reader(&scaled.outputs[0]) == Some(ei)).then_some(())?;
            let ai = uses.sole_reader(&erf.outputs[0])?;
            let add = &nodes[ai];
            let one = other_operand(add, &erf.outputs[0]).and_then(|c| const_scalar(&consts, c));
            (is_op(add, "Add") && close(one?, 1.0)).then_some(())?;
            let mi = uses.sole_reader(&add.outputs[0])?;
            let m = &nodes[mi];
            let other = other_operand(m, &add.outputs[0]).filter(|_| is_op(m, "Mul"))?;
            if other == x {
                // (x * (1 + erf)) * 0.5
                let hi = uses.sole_reader(&m.outputs[0])?;
                mul_by(&nodes[hi], &m.outputs[0], 0.5, &consts)
                    .then(|| (x.to_string(), [si, ei, ai, mi, hi]))
            } else {
                // (x * 0.5) * (1 + erf)
                let hi = *producer.get(other)?;
                (mul_by(&nodes[hi], x, 0.5, &consts) && uses.sole_reader(other) == Some(mi))
                    .then(|| (x.to_string(), [si, ei, ai, hi, mi]))
            }
        })();
        let Some((x, all)) = matched else { continue };
        if !edits.claim(&all) {
            continue;
        }
        let last = all[4];
        let gelu = Node {
            name: nodes[last].name.clone(),
            op_type: "Gelu".into(),
            domain: ONYX_DOMAIN.into(),
            inputs: vec![x],
            outputs: nodes[last].outputs.clone(),
            attrs: Default::default(),
        };
        edits.replace(last, gelu);
        edits.remove(&all[..4]);
    }
    edits.apply(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    #[test]
    fn fuses_both_product_orders() {
        for half_first in [false, true] {
            let tail = if half_first {
                vec![
                    node("Mul", &["half", "x"], &["h"]),
                    node("Mul", &["h", "a"], &["y"]),
                ]
            } else {
                vec![
                    node("Mul", &["x", "a"], &["h"]),
                    node("Mul", &["h", "half"], &["y"]),
                ]
            };
            let mut nodes = vec![
                node("Div", &["x", "sqrt2"], &["s"]),
                node("Erf", &["s"], &["e"]),
                node("Add", &["e", "one"], &["a"]),
            ];
            nodes.extend(tail);
            let mut g = graph(&["x"], &["y"], nodes);
            g.initializers = vec![
                ("sqrt2".into(), f32s(&[], &[std::f32::consts::SQRT_2])),
                ("one".into(), f32s(&[], &[1.0])),
                ("half".into(), f32s(&[], &[0.5])),
            ];
            let x = f32s(&[7], &[-3.0, -1.0, -0.25, 0.0, 0.5, 1.0, 4.0]);
            let want = run_graph(&g, &[("x", x.clone())]);
            assert_eq!(run(&mut g), 1);
            assert_eq!(ops(&g), ["Gelu"]);
            assert_close(&run_graph(&g, &[("x", x)]), &want);
        }
    }

    #[test]
    fn a_different_constant_is_not_gelu() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                node("Div", &["x", "three"], &["s"]),
                node("Erf", &["s"], &["e"]),
                node("Add", &["e", "three"], &["a"]),
                node("Mul", &["x", "a"], &["h"]),
                node("Mul", &["h", "three"], &["y"]),
            ],
        );
        g.initializers = vec![("three".into(), f32s(&[], &[3.0]))];
        assert_eq!(run(&mut g), 0);
    }
}
