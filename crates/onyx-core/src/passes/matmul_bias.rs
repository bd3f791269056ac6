//! MatMul by a constant f32 matrix, plus a constant bias row, and optionally
//! a following Relu or Gelu, fused into one `com.onyx::FusedMatMul` whose
//! GEMM adds the bias (and applies ReLU) while the product is in cache.

use super::{constants, is_op, other_operand, producers, Edits, Uses, ONYX_DOMAIN};
use crate::ir::{Attr, Graph, Node};

/// Returns the number of FusedMatMuls made.
pub(crate) fn run(g: &mut Graph) -> usize {
    let uses = Uses::of(g);
    let producer = producers(g);
    let consts = constants(g);
    let nodes = &g.nodes;
    let mut edits = Edits::default();
    for (ai, add) in nodes.iter().enumerate() {
        if !is_op(add, "Add") {
            continue;
        }
        let matched = add.inputs.iter().find_map(|mm_out| {
            let mi = *producer.get(mm_out.as_str())?;
            let mm = &nodes[mi];
            let w = consts.get(mm.inputs.get(1)?.as_str())?;
            let bias = other_operand(add, mm_out)?;
            let b = consts.get(bias)?;
            let ok = is_op(mm, "MatMul")
                && uses.sole_reader(mm_out) == Some(ai)
                && w.as_slice::<f32>().is_ok()
                && w.rank() == 2
                && b.as_slice::<f32>().is_ok()
                && b.shape() == [w.shape()[1]];
            ok.then(|| (mi, bias.to_string()))
        });
        let Some((mi, bias)) = matched else { continue };
        // a following activation the kernel can apply
        let act = uses.sole_reader(&add.outputs[0]).and_then(|i| {
            let n = &nodes[i];
            let gelu = n.op_type == "Gelu"
                && (n.domain == ONYX_DOMAIN || n.domain.is_empty())
                && n.attrs.is_empty();
            (is_op(n, "Relu") || gelu).then(|| (i, n.op_type.clone()))
        });
        let mut all = vec![mi, ai];
        all.extend(act.as_ref().map(|(i, _)| *i));
        if !edits.claim(&all) {
            continue;
        }
        let last = *all.last().unwrap_or(&ai);
        let mut attrs = std::collections::BTreeMap::new();
        if let Some((_, op)) = &act {
            attrs.insert("activation".to_string(), Attr::String(op.clone()));
        }
        let fused = Node {
            name: nodes[last].name.clone(),
            op_type: "FusedMatMul".into(),
            domain: ONYX_DOMAIN.into(),
            inputs: vec![
                nodes[mi].inputs[0].clone(),
                nodes[mi].inputs[1].clone(),
                bias,
            ],
            outputs: nodes[last].outputs.clone(),
            attrs,
        };
        edits.replace(last, fused);
        edits.remove(&all[..all.len() - 1]);
    }
    edits.apply(g)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::passes::testing::*;

    fn linear(act: Option<(&str, &str)>) -> Graph {
        let mut nodes = vec![
            node("MatMul", &["x", "w"], &["m"]),
            node("Add", &["b", "m"], &["a"]),
        ];
        match act {
            Some((op, domain)) => {
                let mut n = node(op, &["a"], &["y"]);
                n.domain = domain.into();
                nodes.push(n);
            }
            None => nodes[1].outputs = vec!["y".into()],
        }
        let mut g = graph(&["x"], &["y"], nodes);
        g.initializers = vec![
            ("w".into(), f32s(&[5, 3], &vals(15, 4))),
            ("b".into(), f32s(&[3], &[0.5, -1.0, 0.25])),
        ];
        g
    }

    #[test]
    fn fuses_bias_and_activations() {
        for act in [None, Some(("Relu", "")), Some(("Gelu", ONYX_DOMAIN))] {
            let mut g = linear(act);
            let x = f32s(&[2, 4, 5], &vals(40, 5));
            let want = run_graph(&g, &[("x", x.clone())]);
            assert_eq!(run(&mut g), 1);
            assert_eq!(ops(&g), ["FusedMatMul"]);
            let fused = &g.nodes[0];
            assert_eq!(
                fused.attr_string("activation").unwrap().as_deref(),
                act.map(|a| a.0)
            );
            assert_close(&run_graph(&g, &[("x", x)]), &want);
        }
    }

    #[test]
    fn a_bias_that_broadcasts_otherwise_is_kept() {
        let mut g = linear(None);
        g.initializers[1].1 = f32s(&[2, 1, 3], &vals(6, 1));
        assert_eq!(run(&mut g), 0);
        assert_eq!(ops(&g), ["MatMul", "Add"]);
    }
}
