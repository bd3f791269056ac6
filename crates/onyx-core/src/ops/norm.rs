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

/// Batch statistics per channel: (mean, population variance).
fn batch_stats(xv: &[f64], (n, c, inner): (usize, usize, usize)) -> (Vec<f64>, Vec<f64>) {
    let count = (n * inner) as f64;
    let mut mean = vec![0.0; c];
    let mut var = vec![0.0; c];
    for ch in 0..c {
        let blocks = || (0..n).map(move |b| (b * c + ch) * inner);
        let s: f64 = blocks()
            .map(|st| xv[st..st + inner].iter().sum::<f64>())
            .sum();
        let m = s / count;
        let q: f64 = blocks()
            .map(|st| {
                xv[st..st + inner]
                    .iter()
                    .map(|v| (v - m) * (v - m))
                    .sum::<f64>()
            })
            .sum();
        mean[ch] = m;
        var[ch] = q / count;
    }
    (mean, var)
}

/// `scale * (x - mean) / sqrt(var + eps) + bias`; the parameters hold one
/// value per channel, or (before opset 9 with `spatial=0`) one per channel
/// and spatial position.
fn batch_norm_apply(
    xv: &[f64],
    (n, c, inner): (usize, usize, usize),
    [scale, bias, mean, var]: [&[f64]; 4],
    eps: f64,
) -> Vec<f64> {
    let per_elem = scale.len() == c * inner && scale.len() != c;
    let mut y = vec![0.0; xv.len()];
    for b in 0..n {
        for ch in 0..c {
            let start = (b * c + ch) * inner;
            for i in 0..inner {
                let p = if per_elem { ch * inner + i } else { ch };
                let k = scale[p] / (var[p] + eps).sqrt();
                y[start + i] = (xv[start + i] - mean[p]) * k + bias[p];
            }
        }
    }
    y
}

fn build_batch_norm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    let momentum = f64::from(ctx.node.attr_float("momentum")?.unwrap_or(0.9));
    let training = ctx.opset >= 14 && ctx.node.attr_int("training_mode")?.unwrap_or(0) != 0;
    let per_elem = ctx.opset < 9 && ctx.node.attr_int("spatial")?.unwrap_or(1) == 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let dims = nc_spatial(x, "BatchNormalization")?;
        let (_, c, inner) = dims;
        let plen = if per_elem { c * inner } else { c };
        let xv = float_in(x, "X")?;
        let scale = per_channel(tensor_in(inputs, 1)?, plen, "scale")?;
        let bias = per_channel(tensor_in(inputs, 2)?, plen, "B")?;
        let mean = per_channel(tensor_in(inputs, 3)?, plen, "input_mean")?;
        let var = per_channel(tensor_in(inputs, 4)?, plen, "input_var")?;
        let dt = x.dtype();
        if !training {
            let y = batch_norm_apply(&xv, dims, [&scale, &bias, &mean, &var], eps);
            return one(f64_to_tensor(x.shape().to_vec(), y, dt)?);
        }
        let (bm, bv) = batch_stats(&xv, dims);
        let y = batch_norm_apply(&xv, dims, [&scale, &bias, &bm, &bv], eps);
        let running = |old: &[f64], cur: &[f64]| -> Vec<f64> {
            old.iter()
                .zip(cur)
                .map(|(o, c)| o * momentum + c * (1.0 - momentum))
                .collect()
        };
        Ok(vec![
            Value::Tensor(f64_to_tensor(x.shape().to_vec(), y, dt)?),
            Value::Tensor(f64_to_tensor(vec![c], running(&mean, &bm), dt)?),
            Value::Tensor(f64_to_tensor(vec![c], running(&var, &bv), dt)?),
        ])
    }))
}

// ---------- Layer / RMS normalization ----------

/// Normalizes `rows` rows of `cols` values: to zero mean and unit variance,
/// or (`rms`) by the root mean square. Returns (y, means, 1/std) per row;
/// the means are empty for `rms`.
fn layer_norm_rows(
    xv: &[f64],
    rows: usize,
    cols: usize,
    eps: f64,
    rms: bool,
) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let mut y = vec![0.0; xv.len()];
    let mut means = Vec::with_capacity(rows);
    let mut inv_stds = Vec::with_capacity(rows);
    let cn = cols as f64;
    for r in 0..rows {
        let row = &xv[r * cols..(r + 1) * cols];
        let out = &mut y[r * cols..(r + 1) * cols];
        let m = if rms {
            0.0
        } else {
            row.iter().sum::<f64>() / cn
        };
        let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / cn;
        let inv = 1.0 / (var + eps).sqrt();
        for (o, v) in out.iter_mut().zip(row) {
            *o = (v - m) * inv;
        }
        if !rms {
            means.push(m);
        }
        inv_stds.push(inv);
    }
    (y, means, inv_stds)
}

fn build_layer_norm(ctx: &BuildCtx, rms: bool) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(-1);
    let eps = f64::from(ctx.node.attr_float("epsilon")?.unwrap_or(1e-5));
    let stash = ctx.node.attr_int("stash_type")?.unwrap_or(1);
    let stash_dtype = i32::try_from(stash)
        .ok()
        .and_then(DType::from_onnx)
        .filter(|d| d.is_float())
        .ok_or_else(|| op_err!("stash_type {stash} is not a float type"))?;
    // only Y wanted: the f32 fast path may serve
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let a = norm_axis(axis, x.rank())?;
        let rows: usize = x.shape()[..a].iter().product();
        let cols: usize = x.shape()[a..].iter().product();
        if !rms {
            if let Some(out) = layer_norm_f32(inputs, x, a, cols, eps, stash_dtype)? {
                return Ok(out);
            }
        }
        let (y, means, inv_stds) = layer_norm_rows(&float_in(x, "X")?, rows, cols, eps, rms);
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

/// LayerNormalization's common case, computed in f32 by the vectorised
/// kernel: f32 X with an f32 scale (and bias) of the normalized shape.
/// None when the case does not apply.
fn layer_norm_f32(
    inputs: &[Option<&Value>],
    x: &Tensor,
    axis: usize,
    cols: usize,
    eps: f64,
    stash_dtype: DType,
) -> OpResult<Option<Vec<Value>>> {
    let scale = tensor_in(inputs, 1)?;
    let bias = opt_tensor_in(inputs, 2)?;
    let fits = |t: &Tensor| t.dtype() == DType::Float && t.shape() == &x.shape()[axis..];
    if x.dtype() != DType::Float || !fits(scale) || !bias.is_none_or(fits) {
        return Ok(None);
    }
    let mut y = vec![0f32; x.len()];
    let (means, inv_stds) = onyx_kernels::vmath::layer_norm_rows(
        x.as_slice::<f32>()?,
        &mut y,
        cols,
        eps as f32,
        scale.as_slice::<f32>()?,
        bias.map(|b| b.as_slice::<f32>()).transpose()?,
    );
    let mut stat_shape = x.shape()[..axis].to_vec();
    stat_shape.resize(x.rank(), 1);
    let stat = |v: Vec<f32>| -> OpResult<Value> {
        let v = v.into_iter().map(f64::from).collect();
        Ok(Value::Tensor(f64_to_tensor(
            stat_shape.clone(),
            v,
            stash_dtype,
        )?))
    };
    Ok(Some(vec![
        Value::Tensor(Tensor::from_vec(x.shape().to_vec(), y)?),
        stat(means)?,
        stat(inv_stds)?,
    ]))
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

/// `x / (bias + alpha / size * sum of squares over nearby channels) ^ beta`.
fn lrn(
    xv: &[f64],
    (n, c, inner): (usize, usize, usize),
    alpha: f64,
    beta: f64,
    bias: f64,
    size: usize,
) -> Vec<f64> {
    let before = (size - 1) / 2;
    let after = size - 1 - before;
    let mut y = vec![0.0; xv.len()];
    let k = alpha / size as f64;
    for b in 0..n {
        for ch in 0..c {
            let lo = ch.saturating_sub(before);
            let hi = ch.saturating_add(after).min(c - 1);
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
    y
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
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, inner) = nc_spatial(x, "LRN")?;
        let y = lrn(&float_in(x, "X")?, (n, c, inner), alpha, beta, bias, size);
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
    fn f32_layer_norm_matches_the_f64_path() {
        let x = t32(
            &[3, 4],
            &[1.0, -2.0, 0.5, 4.0, 3.0, 3.0, 3.0, 3.5, -1.0, 0.0, 1.0, 2.0],
        );
        let scale = t32(&[4], &[1.0, 0.5, -2.0, 3.0]);
        let bias = t32(&[4], &[0.0, 0.1, 0.2, -0.3]);
        let inputs = [Some(&x), Some(&scale), Some(&bias)].map(|t| t.cloned().map(Value::Tensor));
        let refs: Vec<Option<&Value>> = inputs.iter().map(Option::as_ref).collect();
        let fast = layer_norm_f32(&refs, &x, 1, 4, 1e-5, DType::Float)
            .unwrap()
            .unwrap();
        let fast = fast[0].as_tensor().unwrap();
        let (y, _, _) = layer_norm_rows(&x.to_f64_vec().unwrap(), 3, 4, 1e-5, false);
        let want = scale_bias(y, &[3, 4], Some(&scale), Some(&bias)).unwrap();
        let want: Vec<f32> = want.iter().map(|&v| v as f32).collect();
        close(fast.as_slice::<f32>().unwrap(), &want);
        // a scale that broadcasts otherwise takes the general path
        let wide = t32(&[3, 1], &[1.0, 2.0, 3.0]);
        let inputs = [Some(&x), Some(&wide)].map(|t| t.cloned().map(Value::Tensor));
        let refs: Vec<Option<&Value>> = inputs.iter().map(Option::as_ref).collect();
        assert!(layer_norm_f32(&refs, &x, 1, 4, 1e-5, DType::Float)
            .unwrap()
            .is_none());
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

    #[test]
    fn layer_and_rms_rows() {
        // row [1, 3]: mean 2, variance 1
        let (y, m, inv) = layer_norm_rows(&[1.0, 3.0, 5.0, 7.0], 2, 2, 0.0, false);
        assert_eq!(y, vec![-1.0, 1.0, -1.0, 1.0]);
        assert_eq!(m, vec![2.0, 6.0]);
        assert_eq!(inv[0], 1.0);
        // row [3, 4]: mean square 12.5
        let (y, m, _) = layer_norm_rows(&[3.0, 4.0], 1, 2, 0.0, true);
        let r = 12.5f64.sqrt();
        assert!((y[0] - 3.0 / r).abs() < 1e-12 && (y[1] - 4.0 / r).abs() < 1e-12);
        assert!(m.is_empty());
    }

    #[test]
    fn batch_norm_inference_and_stats() {
        // N=2, C=1, one value each: x = [1, 3]
        let xv = [1.0, 3.0];
        let (m, v) = batch_stats(&xv, (2, 1, 1));
        assert_eq!((m[0], v[0]), (2.0, 1.0));
        let y = batch_norm_apply(&xv, (2, 1, 1), [&[2.0], &[0.5], &m, &v], 0.0);
        assert_eq!(y, vec![-1.5, 2.5]);
    }

    #[test]
    fn lrn_sums_neighbouring_channels() {
        // N=1, C=3, one position; size 3, alpha 3, beta 1, bias 1
        let y = lrn(&[1.0, 2.0, 3.0], (1, 3, 1), 3.0, 1.0, 1.0, 3);
        // channel 0: 1 / (1 + 1 + 4); channel 1: 2 / (1 + 14); channel 2: 3 / (1 + 13)
        let want = [1.0 / 6.0, 2.0 / 15.0, 3.0 / 14.0];
        for (a, b) in y.iter().zip(want) {
            assert!((a - b).abs() < 1e-12);
        }
    }
}
