//! Normalizations (BatchNormalization, LayerNormalization, RMSNormalization,
//! InstanceNormalization, GroupNormalization, LpNormalization,
//! MeanVarianceNormalization, LRN) and the losses NegativeLogLikelihoodLoss
//! and SoftmaxCrossEntropyLoss.
//!
//! Everything is computed in f64 and rounded back to the input's type.
//!
//! Opset notes: BatchNormalization has training outputs from opset 14
//! (`training_mode=1`: Y uses the batch statistics, and the running mean and
//! variance are updated with `momentum`); earlier versions are run in
//! inference mode. GroupNormalization's scale and bias are per group in
//! opset 18 and per channel from 21; both shapes are accepted.

use onyx_tensor::{DType, Tensor, Value};

use super::reduce::{f64_to_tensor, for_each_reduced, split_at_axis};
use super::{
    broadcast_binary, norm_axes, norm_axis, one, opt_tensor_in, tensor_in, BuildCtx, Kernel,
    OpResult, Registry, RunCtx,
};
use crate::op_err;

fn float_in(t: &Tensor, what: &str) -> OpResult<Vec<f64>> {
    if !t.dtype().is_float() {
        return Err(op_err!("{what} must be a float tensor, not {}", t.dtype()));
    }
    Ok(t.to_f64_vec()?)
}

/// A per-channel parameter as f64, checking that it has `len` elements.
fn per_channel(t: &Tensor, len: usize, what: &str) -> OpResult<Vec<f64>> {
    let v = float_in(t, what)?;
    if v.len() != len {
        return Err(op_err!(
            "{what} has {} elements (shape {:?}) but {len} are needed",
            v.len(),
            t.shape()
        ));
    }
    Ok(v)
}

/// (N, C, spatial size) of an input laid out as N x C x D1 x ... x Dk.
fn nc_spatial(x: &Tensor, op: &str) -> OpResult<(usize, usize, usize)> {
    if x.rank() < 2 {
        return Err(op_err!(
            "{op} needs an input of rank 2 or more, got shape {:?}",
            x.shape()
        ));
    }
    Ok(split_at_axis(x.shape(), 1))
}

/// `y * scale (+ bias)` with `scale` and `bias` broadcast to `y`'s shape.
fn scale_bias(
    y: Vec<f64>,
    shape: &[usize],
    scale: Option<&Tensor>,
    bias: Option<&Tensor>,
) -> OpResult<Vec<f64>> {
    let mut y = y;
    for (t, is_scale) in [(scale, true), (bias, false)] {
        let Some(t) = t else { continue };
        let p = float_in(t, if is_scale { "scale" } else { "bias" })?;
        let (v, s) = broadcast_binary(&y, shape, &p, t.shape(), |a, b| {
            if is_scale {
                a * b
            } else {
                a + b
            }
        })?;
        if s != shape {
            return Err(op_err!(
                "parameter of shape {:?} does not broadcast to the input shape {shape:?}",
                t.shape()
            ));
        }
        y = v;
    }
    Ok(y)
}

// ---------- BatchNormalization ----------

fn build_batch_norm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    let momentum = f64::from(ctx.node.attr_float("momentum")?.unwrap_or(0.9));
    let training = ctx.opset >= 14 && ctx.node.attr_int("training_mode")?.unwrap_or(0) != 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, inner) = nc_spatial(x, "BatchNormalization")?;
        let xv = float_in(x, "X")?;
        let scale = per_channel(tensor_in(inputs, 1)?, c, "scale")?;
        let bias = per_channel(tensor_in(inputs, 2)?, c, "B")?;
        let mut mean = per_channel(tensor_in(inputs, 3)?, c, "input_mean")?;
        let mut var = per_channel(tensor_in(inputs, 4)?, c, "input_var")?;
        let mut running = None;
        if training {
            let count = (n * inner) as f64;
            let mut bm = vec![0.0; c];
            let mut bv = vec![0.0; c];
            for ch in 0..c {
                let mut s = 0.0;
                for b in 0..n {
                    s += xv[(b * c + ch) * inner..][..inner].iter().sum::<f64>();
                }
                let m = s / count;
                let mut q = 0.0;
                for b in 0..n {
                    q += xv[(b * c + ch) * inner..][..inner]
                        .iter()
                        .map(|v| (v - m) * (v - m))
                        .sum::<f64>();
                }
                bm[ch] = m;
                bv[ch] = q / count;
            }
            let rm: Vec<f64> = (0..c)
                .map(|i| mean[i] * momentum + bm[i] * (1.0 - momentum))
                .collect();
            let rv: Vec<f64> = (0..c)
                .map(|i| var[i] * momentum + bv[i] * (1.0 - momentum))
                .collect();
            running = Some((rm, rv));
            mean = bm;
            var = bv;
        }
        let mut y = vec![0.0; xv.len()];
        for b in 0..n {
            for ch in 0..c {
                let k = scale[ch] / (var[ch] + eps).sqrt();
                let start = (b * c + ch) * inner;
                for i in start..start + inner {
                    y[i] = (xv[i] - mean[ch]) * k + bias[ch];
                }
            }
        }
        let dt = x.dtype();
        let mut out = vec![Value::Tensor(f64_to_tensor(x.shape().to_vec(), y, dt)?)];
        if let Some((rm, rv)) = running {
            out.push(Value::Tensor(f64_to_tensor(vec![c], rm, dt)?));
            out.push(Value::Tensor(f64_to_tensor(vec![c], rv, dt)?));
        }
        Ok(out)
    }))
}

// ---------- Layer / RMS normalization ----------

fn build_layer_norm(ctx: &BuildCtx, rms: bool) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(-1);
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    let stash = ctx.node.attr_int("stash_type")?.unwrap_or(1);
    let stash_dtype = i32::try_from(stash)
        .ok()
        .and_then(DType::from_onnx)
        .filter(|d| d.is_float())
        .ok_or_else(|| op_err!("stash_type {stash} is not a float type"))?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let a = norm_axis(axis, x.rank())?;
        let rows: usize = x.shape()[..a].iter().product();
        let cols: usize = x.shape()[a..].iter().product();
        let xv = float_in(x, "X")?;
        let mut y = vec![0.0; xv.len()];
        let mut means = Vec::with_capacity(rows);
        let mut inv_stds = Vec::with_capacity(rows);
        for r in 0..rows {
            let row = &xv[r * cols..(r + 1) * cols];
            let out = &mut y[r * cols..(r + 1) * cols];
            let cn = cols as f64;
            if rms {
                let ms = row.iter().map(|v| v * v).sum::<f64>() / cn;
                let inv = 1.0 / (ms + eps).sqrt();
                for (o, v) in out.iter_mut().zip(row) {
                    *o = v * inv;
                }
                inv_stds.push(inv);
            } else {
                let m = row.iter().sum::<f64>() / cn;
                let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / cn;
                let inv = 1.0 / (var + eps).sqrt();
                for (o, v) in out.iter_mut().zip(row) {
                    *o = (v - m) * inv;
                }
                means.push(m);
                inv_stds.push(inv);
            }
        }
        let scale = tensor_in(inputs, 1)?;
        let bias = if rms { None } else { opt_tensor_in(inputs, 2)? };
        let y = scale_bias(y, x.shape(), Some(scale), bias)?;
        let mut out = vec![Value::Tensor(f64_to_tensor(
            x.shape().to_vec(),
            y,
            x.dtype(),
        )?)];
        if !rms {
            let mut stat_shape = x.shape()[..a].to_vec();
            stat_shape.resize(x.rank(), 1);
            out.push(Value::Tensor(f64_to_tensor(
                stat_shape.clone(),
                means,
                stash_dtype,
            )?));
            out.push(Value::Tensor(f64_to_tensor(
                stat_shape,
                inv_stds,
                stash_dtype,
            )?));
        }
        Ok(out)
    }))
}

// ---------- Instance / Group normalization ----------

/// Normalizes each of `groups` consecutive blocks of `len` values to zero mean
/// and unit variance (with `eps`), returning the normalized values.
fn normalize_blocks(xv: &[f64], len: usize, eps: f64) -> Vec<f64> {
    let mut y = vec![0.0; xv.len()];
    if len == 0 {
        return y;
    }
    for (blk, out) in xv.chunks(len).zip(y.chunks_mut(len)) {
        let n = blk.len() as f64;
        let m = blk.iter().sum::<f64>() / n;
        let var = blk.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n;
        let inv = 1.0 / (var + eps).sqrt();
        for (o, v) in out.iter_mut().zip(blk) {
            *o = (v - m) * inv;
        }
    }
    y
}

fn build_instance_norm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, inner) = nc_spatial(x, "InstanceNormalization")?;
        let scale = per_channel(tensor_in(inputs, 1)?, c, "scale")?;
        let bias = per_channel(tensor_in(inputs, 2)?, c, "B")?;
        let mut y = normalize_blocks(&float_in(x, "input")?, inner, eps);
        for b in 0..n {
            for ch in 0..c {
                let start = (b * c + ch) * inner;
                for v in &mut y[start..start + inner] {
                    *v = *v * scale[ch] + bias[ch];
                }
            }
        }
        one(f64_to_tensor(x.shape().to_vec(), y, x.dtype())?)
    }))
}

fn build_group_norm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    let groups = ctx
        .node
        .attr_int("num_groups")?
        .ok_or_else(|| op_err!("missing attribute 'num_groups'"))?;
    if groups <= 0 {
        return Err(op_err!("num_groups must be positive, got {groups}"));
    }
    let groups = groups as usize;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, inner) = nc_spatial(x, "GroupNormalization")?;
        if c % groups != 0 {
            return Err(op_err!("{c} channels cannot be split into {groups} groups"));
        }
        let per_group = c / groups;
        let st = tensor_in(inputs, 1)?;
        let bt = tensor_in(inputs, 2)?;
        // opset 21: one value per channel; opset 18: one per group
        let plen = if st.len() == c { c } else { groups };
        let scale = per_channel(st, plen, "scale")?;
        let bias = per_channel(bt, plen, "bias")?;
        let mut y = normalize_blocks(&float_in(x, "X")?, per_group * inner, eps);
        for b in 0..n {
            for ch in 0..c {
                let p = if plen == c { ch } else { ch / per_group };
                let start = (b * c + ch) * inner;
                for v in &mut y[start..start + inner] {
                    *v = *v * scale[p] + bias[p];
                }
            }
        }
        one(f64_to_tensor(x.shape().to_vec(), y, x.dtype())?)
    }))
}

// ---------- LpNormalization, MeanVarianceNormalization, LRN ----------

fn build_lp_norm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(-1);
    let p = ctx.node.attr_int("p")?.unwrap_or(2);
    if p != 1 && p != 2 {
        return Err(op_err!("LpNormalization supports p = 1 or 2, not {p}"));
    }
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let a = norm_axis(axis, x.rank())?;
        let (outer, n, inner) = split_at_axis(x.shape(), a);
        let xv = float_in(x, "input")?;
        let mut y = vec![0.0; xv.len()];
        for o in 0..outer {
            for i in 0..inner {
                let base = o * n * inner + i;
                let mut s = 0.0;
                for j in 0..n {
                    let v = xv[base + j * inner];
                    s += if p == 1 { v.abs() } else { v * v };
                }
                let norm = if p == 1 { s } else { s.sqrt() };
                if norm != 0.0 {
                    for j in 0..n {
                        y[base + j * inner] = xv[base + j * inner] / norm;
                    }
                }
            }
        }
        one(f64_to_tensor(x.shape().to_vec(), y, x.dtype())?)
    }))
}

fn build_mvn(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axes = ctx.node.attr_ints("axes")?.unwrap_or_else(|| vec![0, 2, 3]);
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let shape = x.shape();
        let ax = norm_axes(&axes, x.rank())?;
        let mut reduced = vec![false; x.rank()];
        let mut out_len = 1usize;
        let mut count = 1usize;
        for &a in &ax {
            reduced[a] = true;
        }
        for (d, &s) in shape.iter().enumerate() {
            if reduced[d] {
                count *= s;
            } else {
                out_len *= s;
            }
        }
        let xv = float_in(x, "X")?;
        let mut sum = vec![0.0; out_len];
        let mut sq = vec![0.0; out_len];
        for_each_reduced(shape, &reduced, |i, o| {
            sum[o] += xv[i];
            sq[o] += xv[i] * xv[i];
        });
        let cn = count as f64;
        let stats: Vec<(f64, f64)> = sum
            .iter()
            .zip(&sq)
            .map(|(s, q)| {
                let m = s / cn;
                let var = (q / cn - m * m).max(0.0);
                (m, var.sqrt() + 1e-9)
            })
            .collect();
        let mut y = vec![0.0; xv.len()];
        for_each_reduced(shape, &reduced, |i, o| {
            let (m, sd) = stats[o];
            y[i] = (xv[i] - m) / sd;
        });
        one(f64_to_tensor(shape.to_vec(), y, x.dtype())?)
    }))
}

fn build_lrn(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let alpha = f64::from(ctx.node.attr_float("alpha")?.unwrap_or(1e-4));
    let beta = f64::from(ctx.node.attr_float("beta")?.unwrap_or(0.75));
    let bias = f64::from(ctx.node.attr_float("bias")?.unwrap_or(1.0));
    let size = ctx
        .node
        .attr_int("size")?
        .ok_or_else(|| op_err!("missing attribute 'size'"))?;
    if size <= 0 {
        return Err(op_err!("size must be positive, got {size}"));
    }
    let size = size as usize;
    let before = (size - 1) / 2;
    let after = size - 1 - before;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, inner) = nc_spatial(x, "LRN")?;
        let xv = float_in(x, "X")?;
        let mut y = vec![0.0; xv.len()];
        let k = alpha / size as f64;
        for b in 0..n {
            for ch in 0..c {
                let lo = ch.saturating_sub(before);
                let hi = (ch + after).min(c - 1);
                for i in 0..inner {
                    let mut s = 0.0;
                    for cc in lo..=hi {
                        let v = xv[(b * c + cc) * inner + i];
                        s += v * v;
                    }
                    let idx = (b * c + ch) * inner + i;
                    y[idx] = xv[idx] / (bias + k * s).powf(beta);
                }
            }
        }
        one(f64_to_tensor(x.shape().to_vec(), y, x.dtype())?)
    }))
}

// ---------- Losses ----------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Sum,
    Mean,
}

fn reduction_attr(ctx: &BuildCtx) -> OpResult<Reduction> {
    match ctx.node.attr_string("reduction")?.as_deref() {
        None | Some("mean") => Ok(Reduction::Mean),
        Some("sum") => Ok(Reduction::Sum),
        Some("none") => Ok(Reduction::None),
        Some(other) => Err(op_err!("unknown reduction '{other}'")),
    }
}

/// The negative log likelihood of `logp` (N x C x D, flattened) at `target`
/// (N x D), weighted and reduced; the result has `x_dtype`.
fn nll(
    logp: &[f64],
    x_shape: &[usize],
    target: &Tensor,
    weight: Option<&Tensor>,
    ignore: Option<i64>,
    reduction: Reduction,
    x_dtype: DType,
) -> OpResult<Tensor> {
    if x_shape.len() < 2 {
        return Err(op_err!(
            "the input must have rank 2 or more, got shape {x_shape:?}"
        ));
    }
    let (n, c, d) = split_at_axis(x_shape, 1);
    let mut want = vec![x_shape[0]];
    want.extend_from_slice(&x_shape[2..]);
    if target.shape() != want.as_slice() {
        return Err(op_err!(
            "target has shape {:?} but {want:?} is needed for input shape {x_shape:?}",
            target.shape()
        ));
    }
    let tv = target.to_i64_vec()?;
    let w = weight.map(|t| per_channel(t, c, "weight")).transpose()?;
    let mut loss = vec![0.0; n * d];
    let mut wsum = 0.0;
    for b in 0..n {
        for i in 0..d {
            let k = b * d + i;
            let t = tv[k];
            if Some(t) == ignore {
                continue;
            }
            if t < 0 || t as usize >= c {
                return Err(op_err!("target value {t} is out of range for {c} classes"));
            }
            let t = t as usize;
            let wt = w.as_ref().map_or(1.0, |w| w[t]);
            loss[k] = -logp[(b * c + t) * d + i] * wt;
            wsum += wt;
        }
    }
    match reduction {
        Reduction::None => f64_to_tensor(want, loss, x_dtype),
        Reduction::Sum => f64_to_tensor(vec![], vec![loss.iter().sum()], x_dtype),
        Reduction::Mean => f64_to_tensor(vec![], vec![loss.iter().sum::<f64>() / wsum], x_dtype),
    }
}

fn build_nll(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let reduction = reduction_attr(ctx)?;
    let ignore = ctx.node.attr_int("ignore_index")?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let xv = float_in(x, "input")?;
        one(nll(
            &xv,
            x.shape(),
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            ignore,
            reduction,
            x.dtype(),
        )?)
    }))
}

fn build_sce(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let reduction = reduction_attr(ctx)?;
    let ignore = ctx.node.attr_int("ignore_index")?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, d) = nc_spatial(x, "SoftmaxCrossEntropyLoss")?;
        let xv = float_in(x, "scores")?;
        // log-softmax over the class axis
        let mut logp = vec![0.0; xv.len()];
        for b in 0..n {
            for i in 0..d {
                let at = |j: usize| (b * c + j) * d + i;
                let m = (0..c).map(|j| xv[at(j)]).fold(f64::NEG_INFINITY, f64::max);
                let shift = if m.is_finite() { m } else { 0.0 };
                let s: f64 = (0..c).map(|j| (xv[at(j)] - shift).exp()).sum();
                let ls = s.ln();
                for j in 0..c {
                    logp[at(j)] = xv[at(j)] - shift - ls;
                }
            }
        }
        let loss = nll(
            &logp,
            x.shape(),
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            ignore,
            reduction,
            x.dtype(),
        )?;
        Ok(vec![
            Value::Tensor(loss),
            Value::Tensor(f64_to_tensor(x.shape().to_vec(), logp, x.dtype())?),
        ])
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "BatchNormalization", build_batch_norm);
    r.add("", "LayerNormalization", |c| build_layer_norm(c, false));
    r.add("", "RMSNormalization", |c| build_layer_norm(c, true));
    r.add("", "InstanceNormalization", build_instance_norm);
    r.add("", "GroupNormalization", build_group_norm);
    r.add("", "LpNormalization", build_lp_norm);
    r.add("", "MeanVarianceNormalization", build_mvn);
    r.add("", "LRN", build_lrn);
    r.add("", "NegativeLogLikelihoodLoss", build_nll);
    r.add("", "SoftmaxCrossEntropyLoss", build_sce);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn blocks_normalize() {
        // mean 2, variance 2/3 for [1, 2, 3]
        let y = normalize_blocks(&[1.0, 2.0, 3.0, 5.0, 5.0, 5.0], 3, 1e-5);
        let s = (1.5f64).sqrt();
        assert!((y[0] + s).abs() < 1e-4 && y[1].abs() < 1e-12 && (y[2] - s).abs() < 1e-4);
        assert_eq!(&y[3..], &[0.0, 0.0, 0.0]);
    }

    #[test]
    fn scale_bias_broadcasts() {
        let y = scale_bias(
            vec![1.0, 2.0, 3.0, 4.0],
            &[2, 2],
            Some(&t32(&[2], &[2.0, 3.0])),
            Some(&t32(&[1], &[1.0])),
        )
        .unwrap();
        assert_eq!(y, vec![3.0, 7.0, 7.0, 13.0]);
        assert!(scale_bias(vec![1.0; 4], &[2, 2], Some(&t32(&[3], &[1.0; 3])), None).is_err());
    }

    #[test]
    fn nll_reductions() {
        // log-probs for N=2, C=3
        let logp = [-1.0, -2.0, -3.0, -4.0, -5.0, -6.0];
        let target = Tensor::from_vec(vec![2], vec![2i64, 0]).unwrap();
        let none = nll(
            &logp,
            &[2, 3],
            &target,
            None,
            None,
            Reduction::None,
            DType::Float,
        )
        .unwrap();
        close(none.as_slice::<f32>().unwrap(), &[3.0, 4.0]);
        let w = t32(&[3], &[1.0, 0.5, 2.0]);
        let mean = nll(
            &logp,
            &[2, 3],
            &target,
            Some(&w),
            None,
            Reduction::Mean,
            DType::Float,
        )
        .unwrap();
        // (3*2 + 4*1) / (2 + 1)
        close(mean.as_slice::<f32>().unwrap(), &[10.0 / 3.0]);
        let ii = nll(
            &logp,
            &[2, 3],
            &target,
            None,
            Some(0),
            Reduction::Mean,
            DType::Float,
        )
        .unwrap();
        close(ii.as_slice::<f32>().unwrap(), &[3.0]);
        let bad = Tensor::from_vec(vec![2], vec![3i64, 0]).unwrap();
        assert!(nll(
            &logp,
            &[2, 3],
            &bad,
            None,
            None,
            Reduction::Sum,
            DType::Float
        )
        .is_err());
    }
}
