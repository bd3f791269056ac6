//! Conv + BatchNormalization (inference) folded into the conv's weights and
//! bias: with `s = scale / sqrt(var + eps)`, `W' = W * s` per output channel
//! and `b' = (b - mean) * s + beta`.

use std::collections::HashMap;

use onyx_tensor::Tensor;

use super::{constants, is_op, producers, Edits, FreshNames, Uses};
use crate::ir::Graph;

/// A constant f32 tensor's values.
fn f32_values<'a>(consts: &HashMap<&str, &'a Tensor>, name: &str) -> Option<&'a [f32]> {
    consts.get(name)?.as_slice::<f32>().ok()
}

/// Returns the number of BatchNormalizations folded away.
pub(crate) fn run(g: &mut Graph) -> usize {
    let uses = Uses::of(g);
    let producer = producers(g);
    let consts = constants(g);
    let mut fresh = FreshNames::of(g);
    let mut edits = Edits::default();
    for (bi, bn) in g.nodes.iter().enumerate() {
        if !is_op(bn, "BatchNormalization")
            || bn.outputs.len() != 1
            || bn.attr_int("training_mode").ok().flatten().unwrap_or(0) != 0
            || bn.inputs.len() != 5
        {
            continue;
        }
        let Some(&ci) = producer.get(bn.inputs[0].as_str()) else {
            continue;
        };
        let conv = &g.nodes[ci];
        if !is_op(conv, "Conv") || uses.sole_reader(&conv.outputs[0]) != Some(bi) {
            continue;
        }
        let Some(w) = conv.inputs.get(1).and_then(|w| consts.get(w.as_str())) else {
            continue;
        };
        let Ok(wv) = w.as_slice::<f32>() else {
            continue;
        };
        let m = w.shape().first().copied().unwrap_or(0);
        if w.rank() < 3 || m == 0 {
            continue;
        }
        let params: Option<Vec<&[f32]>> = bn.inputs[1..]
            .iter()
            .map(|p| f32_values(&consts, p).filter(|v| v.len() == m))
            .collect();
        let Some([scale, beta, mean, var]) = params.as_deref() else {
            continue;
        };
        let bias = match conv.inputs.get(2).filter(|b| !b.is_empty()) {
            Some(b) => match f32_values(&consts, b).filter(|v| v.len() == m) {
                Some(v) => v.to_vec(),
                None => continue,
            },
            None => vec![0.0; m],
        };
        let eps = f64::from(bn.attr_float("epsilon").ok().flatten().unwrap_or(1e-5));
        let s: Vec<f64> = (0..m)
            .map(|c| f64::from(scale[c]) / (f64::from(var[c]) + eps).sqrt())
            .collect();
        let per = wv.len() / m;
        let new_w: Vec<f32> = wv
            .iter()
            .enumerate()
            .map(|(i, &x)| (f64::from(x) * s[i / per]) as f32)
            .collect();
        let new_b: Vec<f32> = (0..m)
            .map(|c| ((f64::from(bias[c]) - f64::from(mean[c])) * s[c] + f64::from(beta[c])) as f32)
            .collect();
        let (Ok(new_w), Ok(new_b)) = (
            Tensor::from_vec(w.shape().to_vec(), new_w),
            Tensor::from_vec(vec![m], new_b),
        ) else {
            continue;
        };
        if !edits.claim(&[ci, bi]) {
            continue;
        }
        let (wn, bname) = (
            fresh.make(&conv.inputs[1]),
            fresh.make(&format!("{}_bias", bn.outputs[0])),
        );
        let mut fused = conv.clone();
        fused.inputs = vec![conv.inputs[0].clone(), wn.clone(), bname.clone()];
        fused.outputs = bn.outputs.clone();
        edits.add_initializer(wn, new_w);
        edits.add_initializer(bname, new_b);
        edits.replace(bi, fused);
        edits.remove(&[ci]);
    }
    edits.apply(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::passes::dead_nodes;
    use crate::passes::testing::*;

    #[test]
    fn folds_the_norm_into_weights_and_bias() {
        let mut g = graph(
            &["x"],
            &["y"],
            vec![
                with_attr(
                    node("Conv", &["x", "w", "b"], &["c"]),
                    "pads",
                    Attr::Ints(vec![1; 4]),
                ),
                with_attr(
                    node(
                        "BatchNormalization",
                        &["c", "s", "beta", "mean", "var"],
                        &["y"],
                    ),
                    "epsilon",
                    Attr::Float(1e-3),
                ),
            ],
        );
        g.initializers = vec![
            ("w".into(), f32s(&[3, 2, 3, 3], &vals(54, 1))),
            ("b".into(), f32s(&[3], &[0.5, -1.0, 2.0])),
            ("s".into(), f32s(&[3], &[1.5, 0.5, -2.0])),
            ("beta".into(), f32s(&[3], &[0.1, 0.2, 0.3])),
            ("mean".into(), f32s(&[3], &[-0.5, 1.0, 0.25])),
            ("var".into(), f32s(&[3], &[4.0, 0.25, 1.0])),
        ];
        let x = f32s(&[1, 2, 5, 5], &vals(50, 2));
        let want = run_graph(&g, &[("x", x.clone())]);
        assert_eq!(run(&mut g), 1);
        dead_nodes::run(&mut g);
        assert_eq!(ops(&g), ["Conv"]);
        assert_eq!(g.initializers.len(), 2);
        assert_close(&run_graph(&g, &[("x", x)]), &want);
    }

    #[test]
    fn a_conv_read_elsewhere_is_kept() {
        let mut g = graph(
            &["x"],
            &["y", "c"],
            vec![
                node("Conv", &["x", "w"], &["c"]),
                node("BatchNormalization", &["c", "s", "s", "s", "s"], &["y"]),
            ],
        );
        g.initializers = vec![
            ("w".into(), f32s(&[1, 1, 1, 1], &[2.0])),
            ("s".into(), f32s(&[1], &[1.0])),
        ];
        assert_eq!(run(&mut g), 0);
    }
}
