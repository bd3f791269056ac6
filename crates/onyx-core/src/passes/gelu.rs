//! The GELU torch spells out, `x * 0.5 * (1 + erf(x / sqrt(2)))`, or its
//! tanh approximation, in either order of the two products, fused into one
//! `com.onyx::Gelu` (with `approximate = "tanh"` for the second).

use std::collections::HashMap;
use std::f64::consts::{FRAC_1_SQRT_2, SQRT_2};

use onyx_tensor::Tensor;

use super::{
    close, const_scalar, constants, is_op, other_operand, producers, Edits, Uses, ONYX_DOMAIN,
};
use crate::ir::{Attr, Graph, Node};

/// Whether `n` is `Mul(x, c)` or `Mul(c, x)` with the constant `c` near `want`.
fn mul_by(n: &Node, x: &str, want: f64, consts: &HashMap<&str, &Tensor>) -> bool {
    is_op(n, "Mul")
        && other_operand(n, x)
            .and_then(|c| const_scalar(consts, c))
            .is_some_and(|c| close(c, want))
}

/// The inner part of a GELU ending in node `gi` (an Erf or a Tanh): the
/// input `x`, the nodes from the first after `x` up to `gi`, and whether it
/// is the tanh approximation.
type Inner = (String, Vec<usize>, bool);

/// `Erf(x / sqrt(2))` (or `x * (1 / sqrt(2))`).
fn erf_inner(g: &Graph, ctx: &Ctx, ei: usize) -> Option<Inner> {
    let si = *ctx.producer.get(g.nodes[ei].inputs[0].as_str())?;
    let scaled = &g.nodes[si];
    let x = scaled.inputs.first()?;
    let by_div = is_op(scaled, "Div")
        && scaled.inputs.len() == 2
        && close(const_scalar(&ctx.consts, &scaled.inputs[1])?, SQRT_2);
    (by_div || mul_by(scaled, x, FRAC_1_SQRT_2, &ctx.consts)).then_some(())?;
    (ctx.uses.sole_reader(&scaled.outputs[0]) == Some(ei)).then_some(())?;
    Some((x.clone(), vec![si, ei], false))
}

/// `Tanh(sqrt(2 / pi) * (x + 0.044715 * Pow(x, 3)))`, as torch's
/// tanh-approximated GELU (GPT-2's gelu_new) is exported.
fn tanh_inner(g: &Graph, ctx: &Ctx, ti: usize) -> Option<Inner> {
    let n = &g.nodes;
    let chain_of = |value: &str, i: usize| ctx.uses.sole_reader(value) == Some(i);
    let mi = *ctx.producer.get(n[ti].inputs[0].as_str())?;
    let sum = n[mi]
        .inputs
        .iter()
        .find(|v| ctx.producer.contains_key(v.as_str()))?;
    let k = (2.0 / std::f64::consts::PI).sqrt();
    (mul_by(&n[mi], sum, k, &ctx.consts) && chain_of(&n[mi].outputs[0], ti)).then_some(())?;
    let ai = *ctx.producer.get(sum.as_str())?;
    (is_op(&n[ai], "Add") && chain_of(sum, mi)).then_some(())?;
    // one operand of the sum is 0.044715 * x^3, the other x
    let (qi, x) = n[ai].inputs.iter().find_map(|q| {
        let qi = *ctx.producer.get(q.as_str())?;
        let x = other_operand(&n[ai], q)?;
        let pi = *ctx.producer.get(
            n[qi]
                .inputs
                .iter()
                .find(|v| ctx.producer.contains_key(v.as_str()))?
                .as_str(),
        )?;
        let cube = &n[pi];
        let is_cube = is_op(cube, "Pow")
            && cube.inputs.first().map(String::as_str) == Some(x)
            && close(const_scalar(&ctx.consts, cube.inputs.get(1)?)?, 3.0);
        (is_cube
            && mul_by(&n[qi], &cube.outputs[0], 0.044715, &ctx.consts)
            && chain_of(&cube.outputs[0], qi)
            && chain_of(q, ai))
        .then(|| ((pi, qi), x.to_string()))
    })?;
    Some((x, vec![qi.0, qi.1, ai, mi, ti], true))
}

/// What the matchers look up.
struct Ctx<'a> {
    uses: Uses,
    producer: HashMap<&'a str, usize>,
    consts: HashMap<&'a str, &'a Tensor>,
}

/// Returns the number of Gelus made.
pub(crate) fn run(g: &mut Graph) -> usize {
    let ctx = Ctx {
        uses: Uses::of(g),
        producer: producers(g),
        consts: constants(g),
    };
    let nodes = &g.nodes;
    let mut edits = Edits::default();
    for (gi, n) in nodes.iter().enumerate() {
        let inner = if is_op(n, "Erf") {
            erf_inner(g, &ctx, gi)
        } else if is_op(n, "Tanh") {
            tanh_inner(g, &ctx, gi)
        } else {
            None
        };
        let Some((x, mut all, tanh)) = inner else {
            continue;
        };
        // then x * 0.5 * (1 + inner), the products in either order
        let matched = (|| {
            let ai = ctx.uses.sole_reader(&n.outputs[0])?;
            let add = &nodes[ai];
            let one = other_operand(add, &n.outputs[0]).and_then(|c| const_scalar(&ctx.consts, c));
            (is_op(add, "Add") && close(one?, 1.0)).then_some(())?;
            let mi = ctx.uses.sole_reader(&add.outputs[0])?;
            let m = &nodes[mi];
            let other = other_operand(m, &add.outputs[0]).filter(|_| is_op(m, "Mul"))?;
            if other == x {
                // (x * (1 + inner)) * 0.5
                let hi = ctx.uses.sole_reader(&m.outputs[0])?;
                mul_by(&nodes[hi], &m.outputs[0], 0.5, &ctx.consts).then_some([ai, mi, hi])
            } else {
                // (x * 0.5) * (1 + inner)
                let hi = *ctx.producer.get(other)?;
                (mul_by(&nodes[hi], &x, 0.5, &ctx.consts)
                    && ctx.uses.sole_reader(other) == Some(mi))
                .then_some([ai, hi, mi])
            }
        })();
        let Some(tail) = matched else { continue };
        all.extend(tail);
        if !edits.claim(&all) {
            continue;
        }
        let last = *all.last().unwrap_or(&gi);
        let mut gelu = Node {
            name: nodes[last].name.clone(),
            op_type: "Gelu".into(),
            domain: ONYX_DOMAIN.into(),
            inputs: vec![x],
            outputs: nodes[last].outputs.clone(),
            attrs: Default::default(),
        };
        if tanh {
            gelu.attrs
                .insert("approximate".into(), Attr::String("tanh".into()));
        }
        edits.replace(last, gelu);
        edits.remove(&all[..all.len() - 1]);
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
    fn fuses_the_tanh_form() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                node("Mul", &["x", "half"], &["h"]),
                node("Pow", &["x", "three"], &["p"]),
                node("Mul", &["p", "c"], &["q"]),
                node("Add", &["x", "q"], &["s"]),
                node("Mul", &["s", "k"], &["t"]),
                node("Tanh", &["t"], &["th"]),
                node("Add", &["th", "one"], &["a"]),
                node("Mul", &["h", "a"], &["y"]),
            ],
        );
        g.initializers = vec![
            ("half".into(), f32s(&[], &[0.5])),
            ("three".into(), f32s(&[], &[3.0])),
            ("c".into(), f32s(&[], &[0.044715])),
            ("k".into(), f32s(&[], &[0.797_884_6])),
            ("one".into(), f32s(&[], &[1.0])),
        ];
        let x = f32s(&[6], &[-3.0, -1.0, -0.25, 0.5, 1.0, 4.0]);
        let want = run_graph(&g, &[("x", x.clone())]);
        assert_eq!(run(&mut g), 1);
        assert_eq!(ops(&g), ["Gelu"]);
        assert_eq!(
            g.nodes[0].attr_string("approximate").unwrap().as_deref(),
            Some("tanh")
        );
        assert_close(&run_graph(&g, &[("x", x)]), &want);
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
