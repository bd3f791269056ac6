//! Reductions (ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd,
//! ReduceL1, ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare),
//! ArgMax/ArgMin, CumSum/CumProd and the softmax family (Softmax,
//! LogSoftmax, Hardmax).
//!
//! Opset notes: the Reduce ops take `axes` as an attribute before opset 18
//! (ReduceSum before 13) and as an optional second input from then on, where
//! `noop_with_empty_axes=1` turns an empty/missing `axes` into a reduction
//! over no axes (each element reduced on its own). Softmax, LogSoftmax and
//! Hardmax before opset 13 flatten the input to 2-D around `axis` (default
//! 1); from 13 they work along one axis (default -1).
//!
//! Float reductions are computed in f64 and rounded back to the input type;
//! integer reductions stay in the input type (wrapping on overflow).

use onyx_tensor::{numel, DType, Data, Elem, Tensor, Value};

use super::elementwise::Arith;
use super::{
    norm_axes, norm_axis, one, opt_ints_in, scalar_i64_in, tensor_in, BuildCtx, Kernel, OpResult,
    Registry, RunCtx,
};
use crate::op_err;

/// Builds a tensor of `dtype` from f64 values, rounding to the element type.
pub(crate) fn f64_to_tensor(shape: Vec<usize>, v: Vec<f64>, dtype: DType) -> OpResult<Tensor> {
    match dtype {
        DType::Double => Ok(Tensor::from_vec(shape, v)?),
        DType::Float => Ok(Tensor::from_vec(
            shape,
            v.into_iter().map(|x| x as f32).collect::<Vec<f32>>(),
        )?),
        _ => super::cast::cast_tensor(&Tensor::from_vec(shape, v)?, dtype, true),
    }
}

/// Splits `shape` around `axis` into (outer, axis length, inner) counts.
pub(crate) fn split_at_axis(shape: &[usize], axis: usize) -> (usize, usize, usize) {
    let outer = shape[..axis].iter().product();
    let n = shape.get(axis).copied().unwrap_or(1);
    let inner = shape.get(axis + 1..).map_or(1, |s| s.iter().product());
    (outer, n, inner)
}

/// Calls `f(input_index, output_index)` for every element of a tensor of
/// `shape`, where the output is the tensor with the `reduced` axes collapsed.
pub(crate) fn for_each_reduced(shape: &[usize], reduced: &[bool], mut f: impl FnMut(usize, usize)) {
    let rank = shape.len();
    let n: usize = shape.iter().product();
    if n == 0 {
        return;
    }
    let mut ostride = vec![0usize; rank];
    let mut acc = 1usize;
    for d in (0..rank).rev() {
        if !reduced[d] {
            ostride[d] = acc;
            acc *= shape[d];
        }
    }
    let mut idx = vec![0usize; rank];
    let mut o = 0usize;
    for i in 0..n {
        f(i, o);
        let mut d = rank;
        while d > 0 {
            d -= 1;
            idx[d] += 1;
            o += ostride[d];
            if idx[d] < shape[d] {
                break;
            }
            o -= ostride[d] * shape[d];
            idx[d] = 0;
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Red {
    Sum,
    Mean,
    Max,
    Min,
    Prod,
    L1,
    L2,
    LogSum,
    LogSumExp,
    SumSquare,
}

/// The axes to reduce (as flags) and the output shape with and without kept dims.
struct Geometry {
    reduced: Vec<bool>,
    out_shape: Vec<usize>,
    out_len: usize,
    count: usize,
}

fn geometry(shape: &[usize], axes: &[usize], keepdims: bool) -> Geometry {
    let mut reduced = vec![false; shape.len()];
    for &a in axes {
        reduced[a] = true;
    }
    let mut out_shape = Vec::with_capacity(shape.len());
    let mut out_len = 1usize;
    let mut count = 1usize;
    for (d, &s) in shape.iter().enumerate() {
        if reduced[d] {
            count *= s;
            if keepdims {
                out_shape.push(1);
            }
        } else {
            out_len *= s;
            out_shape.push(s);
        }
    }
    Geometry {
        reduced,
        out_shape,
        out_len,
        count,
    }
}

fn reduce_f64(x: &[f64], shape: &[usize], g: &Geometry, op: Red) -> Vec<f64> {
    let init = match op {
        Red::Prod => 1.0,
        Red::Max => f64::NEG_INFINITY,
        Red::Min => f64::INFINITY,
        _ => 0.0,
    };
    let mut acc = vec![init; g.out_len];
    let mut shift = Vec::new();
    if op == Red::LogSumExp {
        let mut m = vec![f64::NEG_INFINITY; g.out_len];
        for_each_reduced(shape, &g.reduced, |i, o| {
            if x[i] > m[o] {
                m[o] = x[i];
            }
        });
        shift = m
            .into_iter()
            .map(|v| if v.is_finite() { v } else { 0.0 })
            .collect();
    }
    for_each_reduced(shape, &g.reduced, |i, o| {
        let v = x[i];
        let a = &mut acc[o];
        match op {
            Red::Sum | Red::Mean | Red::LogSum => *a += v,
            Red::Prod => *a *= v,
            Red::Max => {
                if v.is_nan() || v > *a {
                    *a = v
                }
            }
            Red::Min => {
                if v.is_nan() || v < *a {
                    *a = v
                }
            }
            Red::L1 => *a += v.abs(),
            Red::L2 | Red::SumSquare => *a += v * v,
            Red::LogSumExp => *a += (v - shift[o]).exp(),
        }
    });
    match op {
        Red::Mean => acc.iter_mut().for_each(|a| *a /= g.count as f64),
        Red::L2 => acc.iter_mut().for_each(|a| *a = a.sqrt()),
        Red::LogSum => acc.iter_mut().for_each(|a| *a = a.ln()),
        Red::LogSumExp => acc
            .iter_mut()
            .zip(&shift)
            .for_each(|(a, s)| *a = a.ln() + s),
        _ => {}
    }
    acc
}

fn reduce_int<T: Arith + Elem>(x: &[T], shape: &[usize], g: &Geometry, op: Red) -> Vec<T> {
    let zero = T::from_f64(0.0);
    let init = match op {
        Red::Prod => T::from_f64(1.0),
        Red::Max => T::from_f64(f64::NEG_INFINITY),
        Red::Min => T::from_f64(f64::INFINITY),
        _ => zero,
    };
    let mut acc = vec![init; g.out_len];
    for_each_reduced(shape, &g.reduced, |i, o| {
        let v = x[i];
        let a = &mut acc[o];
        match op {
            Red::Prod => *a = a.mul(v),
            Red::Max => {
                if v > *a {
                    *a = v
                }
            }
            Red::Min => {
                if v < *a {
                    *a = v
                }
            }
            Red::L1 => *a = a.add(if v < zero { zero.sub(v) } else { v }),
            Red::SumSquare => *a = a.add(v.mul(v)),
            _ => *a = a.add(v),
        }
    });
    if op == Red::Mean {
        let c = T::from_f64(g.count as f64);
        acc.iter_mut().for_each(|a| *a = a.div(c));
    }
    acc
}

/// Reduces `x` over `axes` (already normalized; empty means no axis).
fn reduce(x: &Tensor, axes: &[usize], keepdims: bool, op: Red) -> OpResult<Tensor> {
    let g = geometry(x.shape(), axes, keepdims);
    let shape = x.shape();
    let dtype = x.dtype();
    if let Data::Bool(v) = x.data() {
        let out: Vec<bool> = match op {
            Red::Max => {
                let mut acc = vec![false; g.out_len];
                for_each_reduced(shape, &g.reduced, |i, o| acc[o] |= v[i]);
                acc
            }
            Red::Min => {
                let mut acc = vec![true; g.out_len];
                for_each_reduced(shape, &g.reduced, |i, o| acc[o] &= v[i]);
                acc
            }
            _ => return Err(op_err!("{op:?} does not support bool tensors")),
        };
        return Ok(Tensor::from_vec(g.out_shape, out)?);
    }
    let exact_int = !dtype.is_float()
        && matches!(
            op,
            Red::Sum | Red::Mean | Red::Max | Red::Min | Red::Prod | Red::L1 | Red::SumSquare
        );
    if exact_int {
        let data: Data =
            crate::dispatch_int!(x, v => Elem::into_data(reduce_int(v, shape, &g, op)))?;
        return Ok(Tensor::new(dtype, g.out_shape, data)?);
    }
    if matches!(x.data(), Data::Str(_)) {
        return Err(op_err!("{op:?} does not support string tensors"));
    }
    let v = x.to_f64_vec()?;
    f64_to_tensor(g.out_shape.clone(), reduce_f64(&v, shape, &g, op), dtype)
}

fn build_reduce(ctx: &BuildCtx, op: Red) -> OpResult<Box<dyn Kernel>> {
    let keepdims = ctx.node.attr_int("keepdims")?.unwrap_or(1) != 0;
    let noop = ctx.node.attr_int("noop_with_empty_axes")?.unwrap_or(0) != 0;
    // `axes` is an attribute before opset 18 (13 for ReduceSum) and an input
    // after; both are read, so a model mixing the two forms still runs
    let attr_axes = ctx.node.attr_ints("axes")?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let axes = match opt_ints_in(inputs, 1)? {
            Some(a) => Some(a),
            None => attr_axes.clone(),
        };
        let axes = match axes {
            Some(a) if !a.is_empty() => norm_axes(&a, x.rank())?,
            _ if noop => Vec::new(),
            _ => (0..x.rank()).collect(),
        };
        one(reduce(x, &axes, keepdims, op)?)
    }))
}

/// ArgMax (`max = true`) or ArgMin along `axis`, as int64 indices.
fn arg_extreme(x: &Tensor, axis: i64, keepdims: bool, last: bool, max: bool) -> OpResult<Tensor> {
    let axis = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    if n == 0 {
        return Err(op_err!(
            "cannot take ArgMax/ArgMin along axis {axis} of length 0"
        ));
    }
    fn go<T: PartialOrd + Copy>(
        v: &[T],
        outer: usize,
        n: usize,
        inner: usize,
        last: bool,
        max: bool,
    ) -> Vec<i64> {
        let mut out = Vec::with_capacity(outer * inner);
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                let mut best = v[base];
                let mut bi = 0usize;
                // a NaN wins and the first one is kept, as numpy does
                if best.partial_cmp(&best).is_some() {
                    for j in 1..n {
                        let c = v[base + j * inner];
                        if c.partial_cmp(&c).is_none() {
                            bi = j;
                            break;
                        }
                        let better = if max { c > best } else { c < best };
                        if better || (last && c == best) {
                            best = c;
                            bi = j;
                        }
                    }
                }
                out.push(bi as i64);
            }
        }
        out
    }
    let out = crate::dispatch_numeric!(x, v => go(v, outer, n, inner, last, max))?;
    let mut shape = x.shape().to_vec();
    if keepdims {
        shape[axis] = 1;
    } else {
        shape.remove(axis);
    }
    Ok(Tensor::from_vec(shape, out)?)
}

fn build_arg(ctx: &BuildCtx, max: bool) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(0);
    let keepdims = ctx.node.attr_int("keepdims")?.unwrap_or(1) != 0;
    let last = ctx.node.attr_int("select_last_index")?.unwrap_or(0) != 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(arg_extreme(
            tensor_in(inputs, 0)?,
            axis,
            keepdims,
            last,
            max,
        )?)
    }))
}

/// Running sum (`prod = false`) or product along `axis`.
fn cumulative(
    x: &Tensor,
    axis: i64,
    exclusive: bool,
    reverse: bool,
    prod: bool,
) -> OpResult<Tensor> {
    let axis = norm_axis(axis, x.rank())?;
    let (outer, n, inner) = split_at_axis(x.shape(), axis);
    fn go<T: Arith + Elem>(
        v: &[T],
        (outer, n, inner): (usize, usize, usize),
        exclusive: bool,
        reverse: bool,
        prod: bool,
    ) -> Vec<T> {
        let init = T::from_f64(if prod { 1.0 } else { 0.0 });
        let mut out = vec![init; v.len()];
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                let mut acc = init;
                for k in 0..n {
                    let j = if reverse { n - 1 - k } else { k };
                    let idx = base + j * inner;
                    if exclusive {
                        out[idx] = acc;
                    }
                    acc = if prod {
                        acc.mul(v[idx])
                    } else {
                        acc.add(v[idx])
                    };
                    if !exclusive {
                        out[idx] = acc;
                    }
                }
            }
        }
        out
    }
    let data: Data = crate::dispatch_numeric!(x, v => Elem::into_data(go(v, (outer, n, inner), exclusive, reverse, prod)))?;
    Ok(Tensor::new(x.dtype(), x.shape().to_vec(), data)?)
}

fn build_cumulative(ctx: &BuildCtx, prod: bool) -> OpResult<Box<dyn Kernel>> {
    let exclusive = ctx.node.attr_int("exclusive")?.unwrap_or(0) != 0;
    let reverse = ctx.node.attr_int("reverse")?.unwrap_or(0) != 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let axis = scalar_i64_in(inputs, 1)?;
        one(cumulative(x, axis, exclusive, reverse, prod)?)
    }))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum SoftKind {
    Softmax,
    LogSoftmax,
    Hardmax,
}

/// Softmax, LogSoftmax or Hardmax over groups of `n` values spaced `inner` apart.
fn soft(x: &Tensor, outer: usize, n: usize, inner: usize, kind: SoftKind) -> OpResult<Tensor> {
    if !x.dtype().is_float() {
        return Err(op_err!("{kind:?} needs a float tensor, not {}", x.dtype()));
    }
    // the common case, contiguous f32 rows, runs vectorised in f32
    if let (Data::F32(v), 1, SoftKind::Softmax | SoftKind::LogSoftmax) = (x.data(), inner, kind) {
        let mut out = vec![0f32; v.len()];
        onyx_kernels::vmath::softmax_rows(v, &mut out, n, kind == SoftKind::LogSoftmax);
        return Ok(Tensor::from_vec(x.shape().to_vec(), out)?);
    }
    let v = x.to_f64_vec()?;
    let mut out = vec![0.0f64; v.len()];
    for o in 0..outer {
        for i in 0..inner {
            let base = o * n * inner + i;
            let at = |j: usize| base + j * inner;
            if n == 0 {
                continue;
            }
            let mut m = f64::NEG_INFINITY;
            let mut mi = 0usize;
            for j in 0..n {
                if v[at(j)] > m {
                    m = v[at(j)];
                    mi = j;
                }
            }
            match kind {
                SoftKind::Hardmax => out[at(mi)] = 1.0,
                SoftKind::Softmax | SoftKind::LogSoftmax => {
                    let shift = if m.is_finite() { m } else { 0.0 };
                    let mut s = 0.0;
                    for j in 0..n {
                        let e = (v[at(j)] - shift).exp();
                        s += e;
                        out[at(j)] = e;
                    }
                    if kind == SoftKind::Softmax {
                        for j in 0..n {
                            out[at(j)] /= s;
                        }
                    } else {
                        let ls = s.ln();
                        for j in 0..n {
                            out[at(j)] = v[at(j)] - shift - ls;
                        }
                    }
                }
            }
        }
    }
    f64_to_tensor(x.shape().to_vec(), out, x.dtype())
}

fn build_soft(ctx: &BuildCtx, kind: SoftKind) -> OpResult<Box<dyn Kernel>> {
    let legacy = ctx.opset < 13;
    let axis = ctx
        .node
        .attr_int("axis")?
        .unwrap_or(if legacy { 1 } else { -1 });
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let shape = x.shape();
        let (outer, n, inner) = if legacy {
            // flatten to 2-D: [prod(shape[..axis]), prod(shape[axis..])]; axis may equal rank
            let r = x.rank() as i64;
            let a = if axis < 0 { axis + r } else { axis };
            if a < 0 || a > r {
                return Err(op_err!("axis {axis} is out of range for rank {r}"));
            }
            let a = a as usize;
            (shape[..a].iter().product(), shape[a..].iter().product(), 1)
        } else {
            split_at_axis(shape, norm_axis(axis, x.rank())?)
        };
        if numel(shape).is_none() {
            return Err(op_err!("shape {shape:?} is too large"));
        }
        one(soft(x, outer, n, inner, kind)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "ReduceSum", |c| build_reduce(c, Red::Sum));
    r.add("", "ReduceMean", |c| build_reduce(c, Red::Mean));
    r.add("", "ReduceMax", |c| build_reduce(c, Red::Max));
    r.add("", "ReduceMin", |c| build_reduce(c, Red::Min));
    r.add("", "ReduceProd", |c| build_reduce(c, Red::Prod));
    r.add("", "ReduceL1", |c| build_reduce(c, Red::L1));
    r.add("", "ReduceL2", |c| build_reduce(c, Red::L2));
    r.add("", "ReduceLogSum", |c| build_reduce(c, Red::LogSum));
    r.add("", "ReduceLogSumExp", |c| build_reduce(c, Red::LogSumExp));
    r.add("", "ReduceSumSquare", |c| build_reduce(c, Red::SumSquare));
    r.add("", "ArgMax", |c| build_arg(c, true));
    r.add("", "ArgMin", |c| build_arg(c, false));
    r.add("", "CumSum", |c| build_cumulative(c, false));
    r.add("", "CumProd", |c| build_cumulative(c, true));
    r.add("", "Softmax", |c| build_soft(c, SoftKind::Softmax));
    r.add("", "LogSoftmax", |c| build_soft(c, SoftKind::LogSoftmax));
    r.add("", "Hardmax", |c| build_soft(c, SoftKind::Hardmax));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn reduce_sum_mean_max_over_axes() {
        // [[1, 2, 3], [4, 5, 6]]
        let x = t32(&[2, 3], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]);
        let s = reduce(&x, &[1], true, Red::Sum).unwrap();
        assert_eq!(s.shape(), &[2, 1]);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[6.0, 15.0]);
        let m = reduce(&x, &[0], false, Red::Mean).unwrap();
        assert_eq!(m.shape(), &[3]);
        assert_eq!(m.as_slice::<f32>().unwrap(), &[2.5, 3.5, 4.5]);
        let all = reduce(&x, &[0, 1], false, Red::Max).unwrap();
        assert_eq!(all.shape(), &[] as &[usize]);
        assert_eq!(all.as_slice::<f32>().unwrap(), &[6.0]);
        let l2 = reduce(&t32(&[2], &[3.0, 4.0]), &[0], false, Red::L2).unwrap();
        assert_eq!(l2.as_slice::<f32>().unwrap(), &[5.0]);
        // no axes: each element on its own
        let sq = reduce(&x, &[], true, Red::SumSquare).unwrap();
        assert_eq!(
            sq.as_slice::<f32>().unwrap(),
            &[1.0, 4.0, 9.0, 16.0, 25.0, 36.0]
        );
    }

    #[test]
    fn reduce_empty_and_ints() {
        let e = t32(&[2, 0, 4], &[]);
        let s = reduce(&e, &[1], true, Red::Sum).unwrap();
        assert_eq!(s.shape(), &[2, 1, 4]);
        assert_eq!(s.as_slice::<f32>().unwrap(), &[0.0; 8]);
        let mx = reduce(&e, &[1], false, Red::Max).unwrap();
        assert_eq!(mx.as_slice::<f32>().unwrap(), &[f32::NEG_INFINITY; 8]);
        let p = reduce(&e, &[1], false, Red::Prod).unwrap();
        assert_eq!(p.as_slice::<f32>().unwrap(), &[1.0; 8]);
        let i = Tensor::from_vec(vec![2, 2], vec![i64::MAX - 1, 1, -3, 2]).unwrap();
        let s = reduce(&i, &[1], false, Red::Sum).unwrap();
        assert_eq!(s.as_slice::<i64>().unwrap(), &[i64::MAX, -1]);
        let b = Tensor::from_vec(vec![2, 2], vec![true, false, false, false]).unwrap();
        let bm = reduce(&b, &[1], false, Red::Max).unwrap();
        assert_eq!(bm.as_slice::<bool>().unwrap(), &[true, false]);
    }

    #[test]
    fn log_sum_exp_is_stable() {
        let x = t32(&[2], &[1000.0, 1000.0]);
        let r = reduce(&x, &[0], false, Red::LogSumExp).unwrap();
        let v = r.as_slice::<f32>().unwrap()[0];
        assert!((v - (1000.0 + 2f32.ln())).abs() < 1e-3);
    }

    #[test]
    fn argmax_argmin() {
        let x = t32(&[2, 3], &[1.0, 5.0, 5.0, 7.0, 0.0, 7.0]);
        let a = arg_extreme(&x, 1, false, false, true).unwrap();
        assert_eq!(a.as_slice::<i64>().unwrap(), &[1, 0]);
        let a = arg_extreme(&x, -1, true, true, true).unwrap();
        assert_eq!(a.shape(), &[2, 1]);
        assert_eq!(a.as_slice::<i64>().unwrap(), &[2, 2]);
        let a = arg_extreme(&x, 0, false, false, false).unwrap();
        assert_eq!(a.as_slice::<i64>().unwrap(), &[0, 1, 0]);
        assert!(arg_extreme(&x, 2, false, false, false).is_err());
    }

    #[test]
    fn cumsum_cumprod() {
        let x = Tensor::from_vec(vec![4], vec![1i32, 2, 3, 4]).unwrap();
        let c = cumulative(&x, 0, false, false, false).unwrap();
        assert_eq!(c.as_slice::<i32>().unwrap(), &[1, 3, 6, 10]);
        let c = cumulative(&x, 0, true, true, false).unwrap();
        assert_eq!(c.as_slice::<i32>().unwrap(), &[9, 7, 4, 0]);
        let c = cumulative(&x, -1, true, false, true).unwrap();
        assert_eq!(c.as_slice::<i32>().unwrap(), &[1, 1, 2, 6]);
        let m = t32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let c = cumulative(&m, 0, false, false, false).unwrap();
        assert_eq!(c.as_slice::<f32>().unwrap(), &[1.0, 2.0, 4.0, 6.0]);
    }

    #[test]
    fn softmax_family() {
        let x = t32(&[1, 2], &[0.0, 2f32.ln()]);
        let s = soft(&x, 1, 2, 1, SoftKind::Softmax).unwrap();
        let v = s.as_slice::<f32>().unwrap();
        assert!((v[0] - 1.0 / 3.0).abs() < 1e-6 && (v[1] - 2.0 / 3.0).abs() < 1e-6);
        let l = soft(&x, 1, 2, 1, SoftKind::LogSoftmax).unwrap();
        assert!((l.as_slice::<f32>().unwrap()[0] - (1.0f32 / 3.0).ln()).abs() < 1e-6);
        let h = soft(
            &t32(&[2, 2], &[1.0, 3.0, 3.0, 3.0]),
            1,
            2,
            2,
            SoftKind::Hardmax,
        )
        .unwrap();
        assert_eq!(h.as_slice::<f32>().unwrap(), &[0.0, 1.0, 1.0, 0.0]);
    }
}
