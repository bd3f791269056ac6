//! Shape folding: `Shape` and `Size` of a value whose shape the graph fixes
//! become constants, so constant folding can then fold the Gather,
//! Unsqueeze and Concat chains torch builds from them.

use onyx_tensor::Tensor;

use super::shape_infer::infer_shapes;
use super::{is_op, Edits};
use crate::ir::Graph;

/// Returns the number of nodes replaced by constants.
pub(crate) fn run(g: &mut Graph) -> usize {
    let shapes = infer_shapes(g);
    let mut edits = Edits::default();
    let mut count = 0;
    for (i, n) in g.nodes.iter().enumerate() {
        let (Some(input), Some(out)) = (n.inputs.first(), n.outputs.first()) else {
            continue;
        };
        let Some(s) = shapes.get(input) else { continue };
        let value = if is_op(n, "Shape") {
            // the output's length was inferred from start and end
            let Some(len) = shapes.get(out).and_then(|o| o.first()) else {
                continue;
            };
            let r = s.len() as i64;
            let start = n.attr_int("start").ok().flatten().unwrap_or(0);
            let start = (if start < 0 { start + r } else { start }).clamp(0, r) as usize;
            let dims: Vec<i64> = s[start..start + len].iter().map(|&d| d as i64).collect();
            Tensor::from_vec(vec![*len], dims)
        } else if is_op(n, "Size") {
            Tensor::from_vec(vec![], vec![s.iter().product::<usize>() as i64])
        } else {
            continue;
        };
        let Ok(value) = value else { continue };
        edits.remove(&[i]);
        edits.add_initializer(out.clone(), value);
        count += 1;
    }
    edits.apply(g);
    count
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::passes::testing::*;

    #[test]
    fn shape_of_a_fixed_input_becomes_a_constant() {
        let mut g = graph_fixed(
            &[("x", &[2, 3, 4])],
            &["y", "n"],
            vec![
                with_attr(node("Shape", &["x"], &["s"]), "start", Attr::Int(-2)),
                node("Size", &["x"], &["n"]),
                node("Reshape", &["x", "s2"], &["y"]),
                node("Concat", &["one", "s"], &["s2"]),
            ],
        );
        g.nodes[3] = with_attr(g.nodes[3].clone(), "axis", Attr::Int(0));
        g.initializers
            .push(("one".into(), Tensor::from_vec(vec![1], vec![2i64]).unwrap()));
        let x = f32s(&[2, 3, 4], &vals(24, 1));
        let want = run_graph(&g, &[("x", x.clone())]);
        assert_eq!(run(&mut g), 2);
        assert_eq!(ops(&g), ["Reshape", "Concat"]);
        let s = g.initializers.iter().find(|(n, _)| n == "s").unwrap();
        assert_eq!(s.1, Tensor::from_vec(vec![2], vec![3i64, 4]).unwrap());
        assert_eq!(run_graph(&g, &[("x", x)]), want);
    }

    #[test]
    fn symbolic_dims_are_left_alone() {
        let mut g = graph(&["x"], &["s"], vec![node("Shape", &["x"], &["s"])]);
        assert_eq!(run(&mut g), 0);
    }
}
