//! Static shapes of a graph's values, where the graph itself fixes them:
//! from graph inputs declared with fixed dims (a run refuses inputs that
//! differ) and constants, through the operators torch exports around shape
//! arithmetic. Declared `value_info` is not trusted. A value whose shape is
//! not certain is simply absent.

use std::collections::HashMap;

use onyx_tensor::{broadcast_shapes, Tensor};

use super::constants;
use crate::ir::{Dim, Graph, Node, TypeInfo};
use crate::plan::topo_order;

/// Value name -> its static shape.
pub(crate) fn infer_shapes(g: &Graph) -> HashMap<String, Vec<usize>> {
    let consts = constants(g);
    let mut shapes: HashMap<String, Vec<usize>> = consts
        .iter()
        .map(|(n, t)| (n.to_string(), t.shape().to_vec()))
        .collect();
    for i in &g.inputs {
        if let Some(TypeInfo::Tensor {
            shape: Some(dims), ..
        }) = &i.ty
        {
            let fixed: Option<Vec<usize>> = dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(v) => Some(*v),
                    _ => None,
                })
                .collect();
            if let Some(s) = fixed {
                shapes.insert(i.name.clone(), s);
            }
        }
    }
    let Ok(order) = topo_order(g) else {
        return shapes;
    };
    for i in order {
        let n = &g.nodes[i];
        let ins = Inputs {
            node: n,
            shapes: &shapes,
            consts: &consts,
        };
        if let Some(s) = infer(&ins) {
            if let Some(o) = n.outputs.first().filter(|o| !o.is_empty()) {
                shapes.insert(o.clone(), s);
            }
        }
    }
    shapes
}

/// What one node's inference sees of its inputs.
struct Inputs<'a> {
    node: &'a Node,
    shapes: &'a HashMap<String, Vec<usize>>,
    consts: &'a HashMap<&'a str, &'a Tensor>,
}

impl Inputs<'_> {
    fn name(&self, i: usize) -> Option<&str> {
        self.node
            .inputs
            .get(i)
            .map(String::as_str)
            .filter(|s| !s.is_empty())
    }

    fn shape(&self, i: usize) -> Option<&[usize]> {
        self.shapes.get(self.name(i)?).map(Vec::as_slice)
    }

    fn ints(&self, i: usize) -> Option<Vec<i64>> {
        self.consts.get(self.name(i)?)?.to_i64_vec().ok()
    }

    fn all_shapes(&self) -> Option<Vec<&[usize]>> {
        (0..self.node.inputs.len()).map(|i| self.shape(i)).collect()
    }

    fn int_attr(&self, name: &str, default: i64) -> Option<i64> {
        self.node.attr_int(name).ok().map(|v| v.unwrap_or(default))
    }

    /// An ints attribute, or (newer opsets) the constant input `i`.
    fn ints_attr_or_input(&self, name: &str, i: usize) -> Option<Option<Vec<i64>>> {
        match self.node.attr_ints(name).ok()? {
            Some(v) => Some(Some(v)),
            None if self.name(i).is_some() => Some(Some(self.ints(i)?)),
            None => Some(None),
        }
    }
}

const SAME_SHAPE: &[&str] = &[
    "Relu",
    "Sigmoid",
    "Tanh",
    "Erf",
    "Sqrt",
    "Exp",
    "Log",
    "Neg",
    "Abs",
    "Cast",
    "CastLike",
    "Gelu",
    "Identity",
    "Softmax",
    "LogSoftmax",
    "Clip",
    "LeakyRelu",
    "HardSigmoid",
    "HardSwish",
    "BatchNormalization",
    "LayerNormalization",
    "InstanceNormalization",
    "Reciprocal",
    "Floor",
    "Ceil",
    "Round",
    "Sign",
    "Sin",
    "Cos",
    "Not",
    "Dropout",
    "Softplus",
    "Elu",
    "Selu",
    "IsNaN",
];

const BROADCAST: &[&str] = &[
    "Add",
    "Sub",
    "Mul",
    "Div",
    "Pow",
    "Equal",
    "Less",
    "Greater",
    "LessOrEqual",
    "GreaterOrEqual",
    "And",
    "Or",
    "Xor",
    "Where",
    "Max",
    "Min",
    "Sum",
    "Mean",
    "PRelu",
    "Mod",
];

const REDUCE: &[&str] = &[
    "ReduceMean",
    "ReduceSum",
    "ReduceMax",
    "ReduceMin",
    "ReduceProd",
    "ReduceL1",
    "ReduceL2",
    "ReduceSumSquare",
    "ReduceLogSum",
    "ReduceLogSumExp",
];

/// The product of `dims`, None when it overflows (shapes come from the file).
fn product(dims: &[usize]) -> Option<usize> {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d))
}

fn axis(a: i64, rank: usize) -> Option<usize> {
    let r = rank as i64;
    let a = if a < 0 { a + r } else { a };
    (0..r).contains(&a).then_some(a as usize)
}

fn infer(x: &Inputs) -> Option<Vec<usize>> {
    let n = x.node;
    if !n.domain.is_empty() {
        return None;
    }
    let op = n.op_type.as_str();
    if SAME_SHAPE.contains(&op) {
        return x.shape(0).map(<[usize]>::to_vec);
    }
    if BROADCAST.contains(&op) {
        return broadcast_shapes(&x.all_shapes()?).ok();
    }
    if REDUCE.contains(&op) {
        return reduce(x);
    }
    match op {
        "MatMul" => matmul(x.shape(0)?, x.shape(1)?),
        "Gemm" => {
            let (a, b) = (x.shape(0)?, x.shape(1)?);
            let m = if x.int_attr("transA", 0)? != 0 {
                a.get(1)
            } else {
                a.first()
            };
            let nn = if x.int_attr("transB", 0)? != 0 {
                b.first()
            } else {
                b.get(1)
            };
            (a.len() == 2 && b.len() == 2).then_some(vec![*m?, *nn?])
        }
        "Conv" | "MaxPool" | "AveragePool" | "LpPool" => window(x),
        "GlobalAveragePool" | "GlobalMaxPool" => {
            let s = x.shape(0)?;
            (s.len() >= 2).then(|| {
                s.iter()
                    .enumerate()
                    .map(|(i, &d)| if i < 2 { d } else { 1 })
                    .collect()
            })
        }
        "Flatten" => {
            let s = x.shape(0)?;
            let a = x.int_attr("axis", 1)?;
            let a = if a < 0 { a + s.len() as i64 } else { a };
            let a = usize::try_from(a).ok().filter(|&a| a <= s.len())?;
            Some(vec![product(&s[..a])?, product(&s[a..])?])
        }
        "Reshape" => reshape(x.shape(0)?, &x.ints(1)?, x.int_attr("allowzero", 0)? != 0),
        "Transpose" => {
            let s = x.shape(0)?;
            let perm = match n.attr_ints("perm").ok()? {
                Some(p) => p,
                None => (0..s.len() as i64).rev().collect(),
            };
            perm.iter()
                .map(|&p| s.get(usize::try_from(p).ok()?).copied())
                .collect()
        }
        "Unsqueeze" => {
            let s = x.shape(0)?;
            let axes = x.ints_attr_or_input("axes", 1)??;
            let rank = s.len() + axes.len();
            let mut axes: Vec<usize> =
                axes.iter().map(|&a| axis(a, rank)).collect::<Option<_>>()?;
            axes.sort_unstable();
            let mut out = s.to_vec();
            for a in axes {
                (a <= out.len()).then(|| out.insert(a, 1))?;
            }
            Some(out)
        }
        "Squeeze" => {
            let s = x.shape(0)?;
            match x.ints_attr_or_input("axes", 1)? {
                Some(axes) => {
                    let axes: Vec<usize> = axes
                        .iter()
                        .map(|&a| axis(a, s.len()))
                        .collect::<Option<_>>()?;
                    Some(
                        s.iter()
                            .enumerate()
                            .filter(|(i, _)| !axes.contains(i))
                            .map(|(_, &d)| d)
                            .collect(),
                    )
                }
                None => Some(s.iter().copied().filter(|&d| d != 1).collect()),
            }
        }
        "Concat" => {
            let all = x.all_shapes()?;
            let first = *all.first()?;
            let a = axis(x.int_attr("axis", 0)?, first.len())?;
            let mut out = first.to_vec();
            out[a] = all
                .iter()
                .try_fold(0usize, |acc, s| acc.checked_add(*s.get(a)?))?;
            Some(out)
        }
        "Gather" => {
            let (d, idx) = (x.shape(0)?, x.shape(1)?);
            let a = axis(x.int_attr("axis", 0)?, d.len())?;
            Some([&d[..a], idx, &d[a + 1..]].concat())
        }
        "Shape" => {
            let r = x.shape(0)?.len() as i64;
            let clamp = |v: i64| (if v < 0 { v + r } else { v }).clamp(0, r);
            let start = clamp(x.int_attr("start", 0)?);
            let end = clamp(n.attr_int("end").ok()?.unwrap_or(r));
            Some(vec![(end - start).max(0) as usize])
        }
        "Size" => Some(vec![]),
        "Expand" => {
            let to: Vec<usize> = x
                .ints(1)?
                .iter()
                .map(|&d| usize::try_from(d).ok())
                .collect::<Option<_>>()?;
            broadcast_shapes(&[x.shape(0)?, &to]).ok()
        }
        "Slice" => slice(x),
        _ => None,
    }
}

fn matmul(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let (ar, br) = (a.len(), b.len());
    if ar == 0 || br == 0 {
        return None;
    }
    let k_a = a[ar - 1];
    let k_b = if br == 1 { b[0] } else { b[br - 2] };
    if k_a != k_b {
        return None;
    }
    let batch_a = if ar > 2 { &a[..ar - 2] } else { &[][..] };
    let batch_b = if br > 2 { &b[..br - 2] } else { &[][..] };
    let mut out = broadcast_shapes(&[batch_a, batch_b]).ok()?;
    if ar > 1 {
        out.push(a[ar - 2]);
    }
    if br > 1 {
        out.push(b[br - 1]);
    }
    Some(out)
}

fn reduce(x: &Inputs) -> Option<Vec<usize>> {
    let s = x.shape(0)?;
    let keep = x.int_attr("keepdims", 1)? != 0;
    let axes = match x.ints_attr_or_input("axes", 1)? {
        Some(a) if !a.is_empty() => a,
        _ if x.int_attr("noop_with_empty_axes", 0)? != 0 => return Some(s.to_vec()),
        _ => (0..s.len() as i64).collect(),
    };
    let axes: Vec<usize> = axes
        .iter()
        .map(|&a| axis(a, s.len()))
        .collect::<Option<_>>()?;
    Some(
        s.iter()
            .enumerate()
            .filter_map(|(i, &d)| match (axes.contains(&i), keep) {
                (false, _) => Some(d),
                (true, true) => Some(1),
                (true, false) => None,
            })
            .collect(),
    )
}

fn reshape(s: &[usize], to: &[i64], allow_zero: bool) -> Option<Vec<usize>> {
    let total = product(s)?;
    let mut out = Vec::with_capacity(to.len());
    let mut infer_at = None;
    for (i, &d) in to.iter().enumerate() {
        match d {
            0 if !allow_zero => out.push(*s.get(i)?),
            -1 if infer_at.is_none() => {
                infer_at = Some(i);
                out.push(1);
            }
            d => out.push(usize::try_from(d).ok()?),
        }
    }
    let known = product(&out)?;
    if let Some(i) = infer_at {
        if known == 0 || !total.is_multiple_of(known) {
            return None;
        }
        out[i] = total / known;
    }
    (product(&out)? == total).then_some(out)
}

/// Conv and pooling: spatial dims from kernel, strides, dilations and pads.
fn window(x: &Inputs) -> Option<Vec<usize>> {
    let n = x.node;
    let s = x.shape(0)?;
    if s.len() < 3 {
        return None;
    }
    let sp = s.len() - 2;
    let (channels, kernel) = if n.op_type == "Conv" {
        let w = x.shape(1)?;
        (w[0], w.get(2..)?.to_vec())
    } else {
        let k = n.attr_ints("kernel_shape").ok()??;
        (
            s[1],
            k.iter()
                .map(|&v| usize::try_from(v).ok())
                .collect::<Option<_>>()?,
        )
    };
    let list = |name: &str, default: i64, len: usize| -> Option<Vec<i64>> {
        let v = n
            .attr_ints(name)
            .ok()?
            .unwrap_or_else(|| vec![default; len]);
        (v.len() == len && v.iter().all(|&d| d >= 0)).then_some(v)
    };
    let strides = list("strides", 1, sp)?;
    let dil = list("dilations", 1, sp)?;
    let pads = list("pads", 0, 2 * sp)?;
    let ceil = x.int_attr("ceil_mode", 0)? != 0;
    let auto = n
        .attr_string("auto_pad")
        .ok()?
        .unwrap_or_else(|| "NOTSET".into());
    if kernel.len() != sp || strides.contains(&0) || dil.contains(&0) {
        return None;
    }
    let mut out = vec![s[0], channels];
    // in i128: the attributes are any i64 the file holds, and must not overflow
    let pads: Vec<i128> = pads.iter().map(|&p| i128::from(p)).collect();
    for i in 0..sp {
        let (d, st) = (s[i + 2] as i128, i128::from(strides[i]));
        let k = (kernel[i] as i128 - 1) * i128::from(dil[i]) + 1;
        let o = match auto.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => (d + st - 1) / st,
            "VALID" => (d - k) / st + 1,
            "NOTSET" => {
                let span = d + pads[i] + pads[i + sp] - k;
                if span < 0 {
                    return None;
                }
                let o = if ceil {
                    (span + st - 1) / st
                } else {
                    span / st
                } + 1;
                // a last window starting in the end padding is dropped
                if ceil && (o - 1) * st >= d + pads[i] {
                    o - 1
                } else {
                    o
                }
            }
            _ => return None,
        };
        out.push(usize::try_from(o).ok()?);
    }
    Some(out)
}

fn slice(x: &Inputs) -> Option<Vec<usize>> {
    let s = x.shape(0)?;
    let starts = x.ints(1)?;
    let ends = x.ints(2)?;
    let axes = match x.name(3) {
        Some(_) => x.ints(3)?,
        None => (0..starts.len() as i64).collect(),
    };
    let steps = match x.name(4) {
        Some(_) => x.ints(4)?,
        None => vec![1; starts.len()],
    };
    if ends.len() != starts.len() || axes.len() != starts.len() || steps.len() != starts.len() {
        return None;
    }
    let mut out = s.to_vec();
    for k in 0..starts.len() {
        let a = axis(axes[k], s.len())?;
        // in i128: starts, ends and steps are any i64 the file holds
        let d = s[a] as i128;
        let step = i128::from(steps[k]);
        if step == 0 {
            return None;
        }
        let fix = |v: i64, lo: i128, hi: i128| {
            let v = i128::from(v);
            (if v < 0 { v + d } else { v }).clamp(lo, hi)
        };
        let len = if step > 0 {
            let (b, e) = (fix(starts[k], 0, d), fix(ends[k], 0, d));
            (e - b + step - 1).max(0) / step
        } else {
            let (b, e) = (fix(starts[k], -1, d - 1), fix(ends[k], -1, d - 1));
            (b - e - step - 1).max(0) / -step
        };
        out[a] = usize::try_from(len).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::Attr;
    use crate::passes::testing::*;

    #[test]
    fn overflowing_shapes_are_not_inferred() {
        assert_eq!(product(&[usize::MAX, 2]), None);
        assert_eq!(reshape(&[usize::MAX, 2], &[-1], false), None);
        assert_eq!(reshape(&[2, 3], &[i64::MAX, i64::MAX], false), None);
        assert_eq!(reshape(&[2, 3], &[3, -1], false), Some(vec![3, 2]));
    }

    #[test]
    fn shapes_follow_from_fixed_inputs_only() {
        let mut g = graph_fixed(
            &[("x", &[2, 3, 8, 8])],
            &["f"],
            vec![
                with_attr(
                    with_attr(
                        node("Conv", &["x", "w"], &["c"]),
                        "pads",
                        Attr::Ints(vec![1; 4]),
                    ),
                    "strides",
                    Attr::Ints(vec![2, 2]),
                ),
                with_attr(
                    node("MaxPool", &["c"], &["p"]),
                    "kernel_shape",
                    Attr::Ints(vec![2, 2]),
                ),
                with_attr(
                    node("ReduceMean", &["p"], &["r"]),
                    "axes",
                    Attr::Ints(vec![-1]),
                ),
                node("Reshape", &["r", "rs"], &["f"]),
                node("Relu", &["u"], &["v"]),
                node("Slice", &["x", "st", "en"], &["s"]),
            ],
        );
        g.inputs.push(crate::ir::ValueInfo {
            name: "u".into(),
            ty: None,
        });
        g.initializers
            .push(("w".into(), f32s(&[4, 3, 3, 3], &vals(108, 0))));
        g.initializers.push((
            "rs".into(),
            Tensor::from_vec(vec![2], vec![0i64, -1]).unwrap(),
        ));
        g.initializers
            .push(("st".into(), Tensor::from_vec(vec![1], vec![1i64]).unwrap()));
        g.initializers
            .push(("en".into(), Tensor::from_vec(vec![1], vec![5i64]).unwrap()));
        let s = infer_shapes(&g);
        assert_eq!(s["c"], [2, 4, 4, 4]);
        assert_eq!(s["p"], [2, 4, 3, 3]);
        assert_eq!(s["r"], [2, 4, 3, 1]);
        assert_eq!(s["f"], [2, 12]);
        assert_eq!(s["s"], [1, 3, 8, 8]);
        assert!(!s.contains_key("v"));
    }
}
