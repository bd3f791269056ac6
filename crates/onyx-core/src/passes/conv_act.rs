//! Conv, plus a residual Add of a value of the conv output's own shape, plus
//! an activation, fused into one `com.onyx::FusedConv` whose GEMM epilogue
//! adds the bias and the addend and applies the activation.

use std::collections::HashMap;

use onyx_tensor::Tensor;

use super::shape_infer::infer_shapes;
use super::{const_scalar, constants, is_op, other_operand, Edits, Uses, ONYX_DOMAIN};
use crate::ir::{Attr, Graph, Node};

/// The FusedConv activation and its parameters for node `n`, if it is one.
fn activation(n: &Node, consts: &HashMap<&str, &Tensor>) -> Option<(&'static str, Vec<f32>)> {
    let float = |name: &str, default: f32| n.attr_float(name).ok().map(|v| v.unwrap_or(default));
    if !n.domain.is_empty() {
        return None;
    }
    Some(match n.op_type.as_str() {
        "Relu" => ("Relu", vec![]),
        "Sigmoid" => ("Sigmoid", vec![]),
        "Tanh" => ("Tanh", vec![]),
        "LeakyRelu" => ("LeakyRelu", vec![float("alpha", 0.01)?]),
        "HardSigmoid" => (
            "HardSigmoid",
            vec![float("alpha", 0.2)?, float("beta", 0.5)?],
        ),
        "Clip" => {
            // bounds are inputs from opset 11, attributes before
            let bound = |i: usize, attr: &str, default: f32| match n.inputs.get(i) {
                Some(name) if !name.is_empty() => const_scalar(consts, name).map(|v| v as f32),
                _ => float(attr, default),
            };
            let lo = bound(1, "min", f32::NEG_INFINITY)?;
            let hi = bound(2, "max", f32::INFINITY)?;
            ("Clip", vec![lo, hi])
        }
        _ => return None,
    })
}

/// Returns the number of FusedConvs made.
pub(crate) fn run(g: &mut Graph) -> usize {
    let uses = Uses::of(g);
    let consts = constants(g);
    let shapes = infer_shapes(g);
    let nodes = &g.nodes;
    let mut edits = Edits::default();
    for (ci, conv) in nodes.iter().enumerate() {
        if !is_op(conv, "Conv") || conv.outputs.len() != 1 || conv.inputs.len() < 2 {
            continue;
        }
        let mut all = vec![ci];
        let mut value = conv.outputs[0].clone();
        let mut z = None;
        // a residual of exactly the output's shape (FusedConv does not broadcast Z)
        if let Some(ai) = uses
            .sole_reader(&value)
            .filter(|&i| is_op(&nodes[i], "Add"))
        {
            let other = other_operand(&nodes[ai], &value).filter(|o| *o != value);
            let out_shape = shapes.get(&value);
            if let Some(o) = other.filter(|o| out_shape.is_some() && shapes.get(*o) == out_shape) {
                z = Some(o.to_string());
                all.push(ai);
                value = nodes[ai].outputs[0].clone();
            }
        }
        let act = uses
            .sole_reader(&value)
            .and_then(|i| activation(&nodes[i], &consts).map(|a| (i, a)));
        if let Some((i, _)) = act {
            all.push(i);
        }
        if all.len() == 1 || !edits.claim(&all) {
            continue;
        }
        let last = *all.last().unwrap_or(&ci);
        let mut fused = conv.clone();
        fused.name = nodes[last].name.clone();
        fused.domain = ONYX_DOMAIN.into();
        fused.op_type = "FusedConv".into();
        fused.outputs = nodes[last].outputs.clone();
        fused.inputs.resize(3, String::new());
        fused.inputs.extend(z);
        if let Some((_, (name, params))) = act {
            fused
                .attrs
                .insert("activation".into(), Attr::String(name.into()));
            fused
                .attrs
                .insert("activation_params".into(), Attr::Floats(params));
        }
        edits.replace(last, fused);
        edits.remove(&all[..all.len() - 1]);
    }
    edits.apply(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    fn conv_graph(tail: Vec<Node>, out: &str) -> Graph {
        let mut nodes = vec![with_attr(
            node("Conv", &["x", "w", "b"], &["c"]),
            "pads",
            Attr::Ints(vec![1; 4]),
        )];
        nodes.extend(tail);
        let mut g = graph_fixed(&[("x", &[1, 2, 4, 4]), ("r", &[1, 3, 4, 4])], &[out], nodes);
        g.initializers = vec![
            ("w".into(), f32s(&[3, 2, 3, 3], &vals(54, 6))),
            ("b".into(), f32s(&[3], &[0.5, -1.0, 0.25])),
            ("lo".into(), f32s(&[], &[0.0])),
            ("hi".into(), f32s(&[], &[2.0])),
        ];
        g
    }

    #[test]
    fn fuses_residual_and_activations() {
        let x = f32s(&[1, 2, 4, 4], &vals(32, 7));
        let r = f32s(&[1, 3, 4, 4], &vals(48, 8));
        let cases = vec![
            (
                vec![
                    node("Add", &["r", "c"], &["a"]),
                    node("Relu", &["a"], &["y"]),
                ],
                "Relu",
            ),
            (vec![node("Clip", &["c", "lo", "hi"], &["y"])], "Clip"),
            (
                vec![with_attr(
                    node("LeakyRelu", &["c"], &["y"]),
                    "alpha",
                    Attr::Float(0.2),
                )],
                "LeakyRelu",
            ),
            (vec![node("Add", &["c", "r"], &["y"])], ""),
        ];
        for (tail, act) in cases {
            let mut g = conv_graph(tail, "y");
            let feeds = [("x", x.clone()), ("r", r.clone())];
            let want = run_graph(&g, &feeds);
            assert_eq!(run(&mut g), 1, "{act}");
            assert_eq!(ops(&g), ["FusedConv"]);
            let got = g.nodes[0]
                .attr_string("activation")
                .unwrap()
                .unwrap_or_default();
            assert_eq!(got, act);
            assert_close(&run_graph(&g, &feeds), &want);
        }
    }

    #[test]
    fn a_broadcast_addend_stays_an_add() {
        let mut g = conv_graph(vec![node("Add", &["c", "b1"], &["y"])], "y");
        g.initializers.push(("b1".into(), f32s(&[1], &[1.0])));
        assert_eq!(run(&mut g), 0);
        assert_eq!(ops(&g), ["Conv", "Add"]);
    }
}
