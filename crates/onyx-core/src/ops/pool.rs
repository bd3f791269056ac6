//! Pooling: MaxPool (with Indices), AveragePool, LpPool, their Global forms,
//! and MaxUnpool. Also the sliding-window geometry (kernel, strides,
//! dilations, pads, auto_pad, ceil_mode) that the convolutions share.
//!
//! Opset notes: MaxPool gained Indices/storage_order at 8, ceil_mode and
//! dilations at 10, int8/uint8 at 12; AveragePool gained count_include_pad at
//! 7, ceil_mode at 10, dilations at 19; LpPool's `p` was a float before 2 and
//! it gained ceil_mode/dilations at 18.

use onyx_tensor::{bf16, f16, numel, DType, Data, Tensor, Value};

use super::{one, opt_ints_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum AutoPad {
    NotSet,
    Valid,
    SameUpper,
    SameLower,
}

impl AutoPad {
    pub(crate) fn read(ctx: &BuildCtx) -> OpResult<AutoPad> {
        match ctx.node.attr_string("auto_pad")?.as_deref() {
            None | Some("NOTSET") | Some("") => Ok(AutoPad::NotSet),
            Some("VALID") => Ok(AutoPad::Valid),
            Some("SAME_UPPER") => Ok(AutoPad::SameUpper),
            Some("SAME_LOWER") => Ok(AutoPad::SameLower),
            Some(other) => Err(op_err!("unknown auto_pad '{other}'")),
        }
    }
}

/// The window attributes as written on the node.
#[derive(Clone, Debug)]
pub(crate) struct WindowAttrs {
    pub kernel: Option<Vec<i64>>,
    pub strides: Option<Vec<i64>>,
    pub dilations: Option<Vec<i64>>,
    pub pads: Option<Vec<i64>>,
    pub auto_pad: AutoPad,
    pub ceil_mode: bool,
}

impl WindowAttrs {
    pub(crate) fn read(ctx: &BuildCtx) -> OpResult<WindowAttrs> {
        Ok(WindowAttrs {
            kernel: ctx.node.attr_ints("kernel_shape")?,
            strides: ctx.node.attr_ints("strides")?,
            dilations: ctx.node.attr_ints("dilations")?,
            pads: ctx.node.attr_ints("pads")?,
            auto_pad: AutoPad::read(ctx)?,
            ceil_mode: ctx.node.attr_int("ceil_mode")?.unwrap_or(0) != 0,
        })
    }

    /// The geometry for spatial `input` dims; `kernel` overrides the attribute
    /// (convolutions take it from the weights).
    pub(crate) fn geometry(&self, input: &[usize], kernel: Option<&[usize]>) -> OpResult<Geometry> {
        let nd = input.len();
        let kernel: Vec<usize> = match (kernel, &self.kernel) {
            (Some(k), _) => k.to_vec(),
            (None, Some(k)) => positive_list("kernel_shape", k, nd)?,
            (None, None) => return Err(op_err!("missing attribute 'kernel_shape'")),
        };
        if kernel.len() != nd {
            return Err(op_err!(
                "kernel has {} dims but the input has {nd} spatial dims",
                kernel.len()
            ));
        }
        let strides = match &self.strides {
            Some(s) => positive_list("strides", s, nd)?,
            None => vec![1; nd],
        };
        let dilations = match &self.dilations {
            Some(d) => positive_list("dilations", d, nd)?,
            None => vec![1; nd],
        };
        let (mut pad_begin, mut pad_end) = (vec![0usize; nd], vec![0usize; nd]);
        if self.auto_pad == AutoPad::NotSet {
            if let Some(p) = &self.pads {
                if p.len() != 2 * nd {
                    return Err(op_err!(
                        "pads has {} values but {} are needed for {nd} spatial dims",
                        p.len(),
                        2 * nd
                    ));
                }
                for i in 0..nd {
                    pad_begin[i] = nonneg("pads", p[i])?;
                    pad_end[i] = nonneg("pads", p[i + nd])?;
                }
            }
        }
        let mut output = vec![0usize; nd];
        for i in 0..nd {
            let ek = (kernel[i] - 1)
                .checked_mul(dilations[i])
                .and_then(|v| v.checked_add(1))
                .ok_or_else(|| op_err!("kernel size overflows"))?;
            let s = strides[i];
            match self.auto_pad {
                AutoPad::SameUpper | AutoPad::SameLower => {
                    let out = input[i].div_ceil(s);
                    let total = ((out.saturating_sub(1)) * s + ek).saturating_sub(input[i]);
                    let small = total / 2;
                    if self.auto_pad == AutoPad::SameUpper {
                        pad_begin[i] = small;
                        pad_end[i] = total - small;
                    } else {
                        pad_begin[i] = total - small;
                        pad_end[i] = small;
                    }
                    output[i] = out;
                }
                _ => {
                    let padded = input[i]
                        .checked_add(pad_begin[i])
                        .and_then(|v| v.checked_add(pad_end[i]))
                        .ok_or_else(|| op_err!("pads overflow"))?;
                    if padded < ek {
                        return Err(op_err!(
                            "window of size {ek} is larger than the padded input size {padded} on spatial axis {i}"
                        ));
                    }
                    let span = padded - ek;
                    let mut out = if self.ceil_mode {
                        span.div_ceil(s) + 1
                    } else {
                        span / s + 1
                    };
                    // the last window must start inside the input or its begin pad
                    if self.ceil_mode && (out - 1) * s >= input[i] + pad_begin[i] {
                        out -= 1;
                    }
                    output[i] = out;
                }
            }
        }
        Ok(Geometry {
            input: input.to_vec(),
            kernel,
            strides,
            dilations,
            pad_begin,
            pad_end,
            output,
        })
    }
}

fn positive_list(name: &str, v: &[i64], nd: usize) -> OpResult<Vec<usize>> {
    if v.len() != nd {
        return Err(op_err!(
            "{name} has {} values but the input has {nd} spatial dims",
            v.len()
        ));
    }
    v.iter()
        .map(|&x| {
            if x >= 1 {
                usize::try_from(x).map_err(|_| op_err!("{name} value {x} is too large"))
            } else {
                Err(op_err!("{name} value {x} should be at least 1"))
            }
        })
        .collect()
}

fn nonneg(name: &str, x: i64) -> OpResult<usize> {
    usize::try_from(x).map_err(|_| op_err!("{name} value {x} should be non-negative"))
}

/// A resolved sliding window over the spatial dims.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Geometry {
    pub input: Vec<usize>,
    pub kernel: Vec<usize>,
    pub strides: Vec<usize>,
    pub dilations: Vec<usize>,
    pub pad_begin: Vec<usize>,
    pub pad_end: Vec<usize>,
    pub output: Vec<usize>,
}

/// Where one kernel tap of one output position reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Tap {
    /// An input element at this index along the axis.
    In(usize),
    /// Inside the declared padding.
    Pad,
    /// Beyond the padding (only with ceil_mode).
    Outside,
}

impl Geometry {
    /// For each spatial axis, `taps[i][o * kernel[i] + j]`.
    pub(crate) fn taps(&self) -> Vec<Vec<Tap>> {
        (0..self.input.len())
            .map(|i| {
                let mut v = Vec::with_capacity(self.output[i] * self.kernel[i]);
                for o in 0..self.output[i] {
                    for j in 0..self.kernel[i] {
                        let p = (o * self.strides[i] + j * self.dilations[i]) as i64
                            - self.pad_begin[i] as i64;
                        let tap = if p >= 0 && (p as usize) < self.input[i] {
                            Tap::In(p as usize)
                        } else if p >= -(self.pad_begin[i] as i64)
                            && p < (self.input[i] + self.pad_end[i]) as i64
                        {
                            Tap::Pad
                        } else {
                            Tap::Outside
                        };
                        v.push(tap);
                    }
                }
                v
            })
            .collect()
    }

    /// How many entries `taps()` holds; callers check it against the limits.
    pub(crate) fn tap_count(&self) -> OpResult<usize> {
        self.output
            .iter()
            .zip(&self.kernel)
            .try_fold(0usize, |acc, (&o, &k)| {
                o.checked_mul(k).and_then(|v| v.checked_add(acc))
            })
            .ok_or_else(|| op_err!("window of {:?} is too large", self.kernel))
    }

    pub(crate) fn out_size(&self) -> OpResult<usize> {
        numel(&self.output).ok_or_else(|| op_err!("output shape {:?} is too large", self.output))
    }
}

/// Advances a row-major multi-index; false once it wraps around.
pub(crate) fn next_index(idx: &mut [usize], dims: &[usize]) -> bool {
    for i in (0..idx.len()).rev() {
        idx[i] += 1;
        if idx[i] < dims[i] {
            return true;
        }
        idx[i] = 0;
    }
    false
}

/// A tensor of `dtype` (a float type, or any type via Cast) from f64 values.
pub(crate) fn from_f64(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> OpResult<Tensor> {
    let data = match dtype {
        DType::Double => Data::F64(v.into()),
        DType::Float => Data::F32(v.iter().map(|&x| x as f32).collect()),
        DType::Float16 => Data::F16(v.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BFloat16 => Data::BF16(v.iter().map(|&x| bf16::from_f64(x)).collect()),
        _ => {
            let t = Tensor::from_vec(shape, v)?;
            return super::cast::cast_tensor(&t, dtype, true);
        }
    };
    Ok(Tensor::new(dtype, shape, data)?)
}

/// Checks an input is (N, C, spatial...) and of a numeric type.
pub(crate) fn nc_input(x: &Tensor, what: &str) -> OpResult<(usize, usize, Vec<usize>)> {
    if x.rank() < 3 {
        return Err(op_err!(
            "{what} needs an input of rank 3 or more (N, C, spatial...) but got shape {:?}",
            x.shape()
        ));
    }
    if x.dtype() == DType::String || x.dtype() == DType::Bool {
        return Err(op_err!(
            "{what} does not support element type {}",
            x.dtype()
        ));
    }
    Ok((x.shape()[0], x.shape()[1], x.shape()[2..].to_vec()))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum PoolKind {
    Max,
    Avg { include_pad: bool },
    Lp(f64),
}

/// Pools every (n, c) plane; returns values and, for Max, argmax offsets within the plane.
fn pool(
    x: &[f64],
    planes: usize,
    g: &Geometry,
    kind: PoolKind,
    want_index: bool,
) -> OpResult<(Vec<f64>, Vec<usize>)> {
    let nd = g.input.len();
    let plane_in = numel(&g.input).ok_or_else(|| op_err!("input is too large"))?;
    let plane_out = g.out_size()?;
    let taps = g.taps();
    let in_strides = onyx_tensor::strides_of(&g.input);
    let total = planes
        .checked_mul(plane_out)
        .ok_or_else(|| op_err!("output is too large"))?;
    let mut out = Vec::with_capacity(total);
    let mut arg = Vec::with_capacity(if want_index { total } else { 0 });
    if plane_out == 0 {
        return Ok((out, arg));
    }
    let mut o = vec![0usize; nd];
    let mut k = vec![0usize; nd];
    for p in 0..planes {
        let plane = &x[p * plane_in..(p + 1) * plane_in];
        o.iter_mut().for_each(|v| *v = 0);
        loop {
            k.iter_mut().for_each(|v| *v = 0);
            let mut best = f64::NEG_INFINITY;
            let mut best_at = usize::MAX;
            let mut sum = 0.0;
            let mut valid = 0usize;
            let mut padded = 0usize;
            loop {
                let mut off = 0usize;
                let mut state = Tap::In(0);
                for i in 0..nd {
                    match taps[i][o[i] * g.kernel[i] + k[i]] {
                        Tap::In(q) => off += q * in_strides[i],
                        Tap::Pad => {
                            if state == Tap::In(0) {
                                state = Tap::Pad;
                            }
                        }
                        Tap::Outside => state = Tap::Outside,
                    }
                }
                match state {
                    Tap::In(_) => {
                        let v = plane[off];
                        valid += 1;
                        match kind {
                            PoolKind::Max => {
                                if best_at == usize::MAX || v > best {
                                    best = v;
                                    best_at = off;
                                }
                            }
                            PoolKind::Avg { .. } => sum += v,
                            PoolKind::Lp(pw) => sum += v.abs().powf(pw),
                        }
                    }
                    Tap::Pad => padded += 1,
                    Tap::Outside => {}
                }
                if !next_index(&mut k, &g.kernel) {
                    break;
                }
            }
            let v = match kind {
                PoolKind::Max => best,
                PoolKind::Avg { include_pad } => {
                    let n = if include_pad { valid + padded } else { valid };
                    sum / n as f64
                }
                PoolKind::Lp(pw) => sum.powf(1.0 / pw),
            };
            out.push(v);
            if want_index {
                arg.push(if best_at == usize::MAX { 0 } else { best_at });
            }
            if !next_index(&mut o, &g.output) {
                break;
            }
        }
    }
    Ok((out, arg))
}

/// One window along one axis, as the f32 2-D path reads it: the first input
/// index it covers, how many taps fall inside the input (at the axis's
/// dilation), and how many in the declared padding.
#[derive(Clone, Copy, Debug)]
struct AxisWindow {
    first: usize,
    inside: usize,
    padded: usize,
}

fn axis_windows(taps: &[Tap], kernel: usize) -> Vec<AxisWindow> {
    taps.chunks_exact(kernel)
        .map(|window| {
            let mut w = AxisWindow {
                first: 0,
                inside: 0,
                padded: 0,
            };
            for tap in window {
                match *tap {
                    Tap::In(i) => {
                        if w.inside == 0 {
                            w.first = i;
                        }
                        w.inside += 1;
                    }
                    Tap::Pad => w.padded += 1,
                    Tap::Outside => {}
                }
            }
            w
        })
        .collect()
}

/// Max or average pooling of f32 planes over two spatial dims, without
/// argmax indices: the common case of CNNs, computed in f32 straight from
/// the input (the general `pool` above goes through f64 and any rank).
/// The taps inside the input are contiguous along each axis, so each window
/// is two plain loops.
fn pool_2d_f32(x: &[f32], planes: usize, g: &Geometry, kind: PoolKind) -> Vec<f32> {
    let (h_in, w_in) = (g.input[0], g.input[1]);
    let (dh, dw) = (g.dilations[0], g.dilations[1]);
    let taps = g.taps();
    let rows = axis_windows(&taps[0], g.kernel[0]);
    let cols = axis_windows(&taps[1], g.kernel[1]);
    let mut out = Vec::with_capacity(planes * rows.len() * cols.len());
    for plane in x.chunks_exact(h_in * w_in).take(planes) {
        for r in &rows {
            for c in &cols {
                let (mut best, mut sum) = (f32::NEG_INFINITY, 0f32);
                for a in 0..r.inside {
                    let line = &plane[(r.first + a * dh) * w_in..];
                    for b in 0..c.inside {
                        let v = line[c.first + b * dw];
                        // a NaN first value is kept, as the general path's comparison does
                        if v > best || (v.is_nan() && a == 0 && b == 0) {
                            best = v;
                        }
                        sum += v;
                    }
                }
                let valid = r.inside * c.inside;
                out.push(match kind {
                    PoolKind::Max => best,
                    PoolKind::Avg { include_pad } => {
                        let n = if include_pad {
                            (r.inside + r.padded) * (c.inside + c.padded)
                        } else {
                            valid
                        };
                        sum / n as f32
                    }
                    PoolKind::Lp(_) => unreachable!("Lp pooling is not taken here"),
                });
            }
        }
    }
    out
}

fn build_pool(ctx: &BuildCtx, kind: &'static str) -> OpResult<Box<dyn Kernel>> {
    let mut w = WindowAttrs::read(ctx)?;
    if w.kernel.is_none() {
        return Err(op_err!("missing attribute 'kernel_shape'"));
    }
    // attributes that did not exist in older opsets are ignored there
    let dilations_ok = match kind {
        "MaxPool" => ctx.opset >= 10,
        "AveragePool" => ctx.opset >= 19,
        _ => ctx.opset >= 18,
    };
    if !dilations_ok {
        w.dilations = None;
    }
    let kind = match kind {
        "MaxPool" => PoolKind::Max,
        "AveragePool" => PoolKind::Avg {
            include_pad: ctx.node.attr_int("count_include_pad")?.unwrap_or(0) != 0,
        },
        _ => PoolKind::Lp(lp_p(ctx)?),
    };
    let storage_order = ctx.node.attr_int("storage_order")?.unwrap_or(0);
    let want_index =
        kind == PoolKind::Max && ctx.node.outputs.get(1).is_some_and(|name| !name.is_empty());
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, sp) = nc_input(x, "pooling")?;
        if kind != PoolKind::Max && !x.dtype().is_float() {
            return Err(op_err!(
                "this pooling does not support element type {}",
                x.dtype()
            ));
        }
        let g = w.geometry(&sp, None)?;
        let planes = n * c;
        let plane_out = g.out_size()?;
        let total = planes
            .checked_mul(plane_out)
            .ok_or_else(|| op_err!("output is too large"))?;
        rc.check_alloc(total, 8)?;
        rc.check_alloc(g.tap_count()?, 16)?;
        let mut shape = vec![n, c];
        shape.extend_from_slice(&g.output);
        if let (Data::F32(xv), 2, false, PoolKind::Max | PoolKind::Avg { .. }) =
            (x.data(), sp.len(), want_index, kind)
        {
            return one(Tensor::from_vec(shape, pool_2d_f32(xv, planes, &g, kind))?);
        }
        let xv = x.to_f64_vec()?;
        let (vals, arg) = pool(&xv, planes, &g, kind, want_index)?;
        let y = from_f64(x.dtype(), shape.clone(), vals)?;
        if !want_index {
            return one(y);
        }
        let plane_in = numel(&sp).unwrap_or(0);
        let idx: Vec<i64> = arg
            .iter()
            .enumerate()
            .map(|(i, &off)| {
                let p = i / plane_out.max(1);
                let off = if storage_order == 1 {
                    column_major(off, &sp)
                } else {
                    off
                };
                (p * plane_in + off) as i64
            })
            .collect();
        Ok(vec![
            Value::Tensor(y),
            Value::Tensor(Tensor::from_vec(shape, idx)?),
        ])
    }))
}

/// Re-expresses a row-major offset within `dims` as a column-major one.
fn column_major(off: usize, dims: &[usize]) -> usize {
    let mut rem = off;
    let mut idx = vec![0usize; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = rem % dims[i];
        rem /= dims[i];
    }
    let mut out = 0;
    let mut mult = 1;
    for i in 0..dims.len() {
        out += idx[i] * mult;
        mult *= dims[i];
    }
    out
}

fn lp_p(ctx: &BuildCtx) -> OpResult<f64> {
    let p = if ctx.opset < 2 {
        ctx.node.attr_float("p")?.map(f64::from).unwrap_or(2.0)
    } else {
        ctx.node.attr_int("p")?.unwrap_or(2) as f64
    };
    if p <= 0.0 || !p.is_finite() {
        return Err(op_err!("p must be positive but is {p}"));
    }
    Ok(p)
}

fn build_global(ctx: &BuildCtx, kind: &'static str) -> OpResult<Box<dyn Kernel>> {
    let kind = match kind {
        "GlobalMaxPool" => PoolKind::Max,
        "GlobalAveragePool" => PoolKind::Avg { include_pad: false },
        _ => PoolKind::Lp(lp_p(ctx)?),
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (n, c, sp) = nc_input(x, "global pooling")?;
        if !x.dtype().is_float() {
            return Err(op_err!(
                "global pooling does not support element type {}",
                x.dtype()
            ));
        }
        let plane = numel(&sp).ok_or_else(|| op_err!("input is too large"))?;
        let xv = x.to_f64_vec()?;
        let planes = n * c;
        let mut out = Vec::with_capacity(planes);
        for p in 0..planes {
            let s = &xv[p * plane..(p + 1) * plane];
            let v = match kind {
                PoolKind::Max => s.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                PoolKind::Avg { .. } => s.iter().sum::<f64>() / plane as f64,
                PoolKind::Lp(pw) => s
                    .iter()
                    .map(|v| v.abs().powf(pw))
                    .sum::<f64>()
                    .powf(1.0 / pw),
            };
            out.push(v);
        }
        let mut shape = vec![n, c];
        shape.extend(std::iter::repeat_n(1, sp.len()));
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

fn build_max_unpool(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let w = WindowAttrs::read(ctx)?;
    if w.kernel.is_none() {
        return Err(op_err!("missing attribute 'kernel_shape'"));
    }
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let ind = tensor_in(inputs, 1)?;
        let (n, c, sp) = nc_input(x, "MaxUnpool")?;
        if ind.shape() != x.shape() {
            return Err(op_err!(
                "indices shape {:?} differs from input shape {:?}",
                ind.shape(),
                x.shape()
            ));
        }
        // indices address the inferred unpooled shape; an explicit output_shape
        // (at least as large) holds that block at its origin
        let kernel = positive_list("kernel_shape", w.kernel.as_deref().unwrap_or(&[]), sp.len())?;
        let strides = match &w.strides {
            Some(s) => positive_list("strides", s, sp.len())?,
            None => vec![1; sp.len()],
        };
        let pads = w.pads.clone().unwrap_or_else(|| vec![0; 2 * sp.len()]);
        if pads.len() != 2 * sp.len() {
            return Err(op_err!("pads should have {} values", 2 * sp.len()));
        }
        let mut inferred = vec![n, c];
        for i in 0..sp.len() {
            let full = (sp[i].saturating_sub(1))
                .checked_mul(strides[i])
                .and_then(|v| v.checked_add(kernel[i]))
                .ok_or_else(|| op_err!("unpooled size overflows on spatial axis {i}"))?;
            let pad = nonneg("pads", pads[i])? + nonneg("pads", pads[i + sp.len()])?;
            inferred.push(
                full.checked_sub(pad)
                    .ok_or_else(|| op_err!("pads {pads:?} are larger than the unpooled size"))?,
            );
        }
        let shape: Vec<usize> = match opt_ints_in(inputs, 2)? {
            Some(s) => {
                if s.len() != x.rank() {
                    return Err(op_err!(
                        "output_shape {s:?} should have {} values",
                        x.rank()
                    ));
                }
                let s: Vec<usize> = s
                    .iter()
                    .map(|&d| nonneg("output_shape", d))
                    .collect::<OpResult<_>>()?;
                if s.iter().zip(&inferred).any(|(a, b)| a < b) {
                    return Err(op_err!(
                        "output_shape {s:?} is smaller than the unpooled shape {inferred:?}"
                    ));
                }
                s
            }
            None => inferred.clone(),
        };
        let total = numel(&shape).ok_or_else(|| op_err!("output shape {shape:?} is too large"))?;
        let inner = numel(&inferred).ok_or_else(|| op_err!("shape {inferred:?} is too large"))?;
        rc.check_alloc(total, x.dtype().size_in_memory())?;
        let xv = x.to_f64_vec()?;
        let iv = ind.to_i64_vec()?;
        let mut out = vec![0.0f64; total];
        let in_strides = onyx_tensor::strides_of(&inferred);
        let out_strides = onyx_tensor::strides_of(&shape);
        for (v, &i) in xv.iter().zip(&iv) {
            let flat = usize::try_from(i)
                .ok()
                .filter(|&i| i < inner)
                .ok_or_else(|| {
                    op_err!("index {i} is out of range for unpooled shape {inferred:?}")
                })?;
            let mut rem = flat;
            let mut at = 0;
            for (a, b) in in_strides.iter().zip(&out_strides) {
                at += (rem / a) * b;
                rem %= a;
            }
            out[at] = *v;
        }
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "MaxPool", |c| build_pool(c, "MaxPool"));
    r.add("", "AveragePool", |c| build_pool(c, "AveragePool"));
    r.add("", "LpPool", |c| build_pool(c, "LpPool"));
    r.add("", "GlobalMaxPool", |c| build_global(c, "GlobalMaxPool"));
    r.add("", "GlobalAveragePool", |c| {
        build_global(c, "GlobalAveragePool")
    });
    r.add("", "GlobalLpPool", |c| build_global(c, "GlobalLpPool"));
    r.add("", "MaxUnpool", build_max_unpool);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn geom(input: &[usize], k: &[i64], s: &[i64], pads: Option<Vec<i64>>, ceil: bool) -> Geometry {
        WindowAttrs {
            kernel: Some(k.to_vec()),
            strides: Some(s.to_vec()),
            dilations: None,
            pads,
            auto_pad: AutoPad::NotSet,
            ceil_mode: ceil,
        }
        .geometry(input, None)
        .unwrap()
    }

    #[test]
    fn f32_2d_pooling_matches_the_general_path() {
        let (planes, h, w) = (3, 7, 6);
        let x: Vec<f32> = (0..planes * h * w)
            .map(|i| ((i * 29 % 53) as f32 - 26.0) * 0.37)
            .collect();
        let x64: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let cases = [
            geom(&[h, w], &[3, 3], &[2, 2], Some(vec![1, 1, 1, 1]), false),
            geom(&[h, w], &[3, 2], &[2, 3], Some(vec![0, 1, 2, 0]), true),
            geom(&[h, w], &[2, 2], &[1, 1], None, false),
        ];
        for g in cases {
            for kind in [
                PoolKind::Max,
                PoolKind::Avg { include_pad: false },
                PoolKind::Avg { include_pad: true },
            ] {
                let (want, _) = pool(&x64, planes, &g, kind, false).unwrap();
                let got = pool_2d_f32(&x, planes, &g, kind);
                assert_eq!(got.len(), want.len());
                for (a, b) in got.iter().zip(&want) {
                    assert!(
                        (f64::from(*a) - b).abs() < 1e-5,
                        "{kind:?} {g:?}: {a} vs {b}"
                    );
                }
            }
        }
    }

    #[test]
    fn output_sizes() {
        assert_eq!(geom(&[5], &[2], &[2], None, false).output, vec![2]);
        assert_eq!(geom(&[5], &[2], &[2], None, true).output, vec![3]);
        assert_eq!(
            geom(&[4], &[3], &[1], Some(vec![1, 1]), false).output,
            vec![4]
        );
        let same = WindowAttrs {
            kernel: Some(vec![3]),
            strides: Some(vec![2]),
            dilations: None,
            pads: None,
            auto_pad: AutoPad::SameLower,
            ceil_mode: false,
        }
        .geometry(&[5], None)
        .unwrap();
        assert_eq!(
            (same.output[0], same.pad_begin[0], same.pad_end[0]),
            (3, 1, 1)
        );
    }

    #[test]
    fn max_avg_lp() {
        // 1x1x3x3 = 1..9, 2x2 kernel, stride 1
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        let g = geom(&[3, 3], &[2, 2], &[1, 1], None, false);
        let (m, arg) = pool(&x, 1, &g, PoolKind::Max, true).unwrap();
        assert_eq!(m, vec![5.0, 6.0, 8.0, 9.0]);
        assert_eq!(arg, vec![4, 5, 7, 8]);
        let (a, _) = pool(&x, 1, &g, PoolKind::Avg { include_pad: false }, false).unwrap();
        assert_eq!(a, vec![3.0, 4.0, 6.0, 7.0]);
        // pads 1 around: corner window sees only x[0] (and 3 pads)
        let gp = geom(&[3, 3], &[2, 2], &[2, 2], Some(vec![1, 1, 1, 1]), false);
        let (a, _) = pool(&x, 1, &gp, PoolKind::Avg { include_pad: false }, false).unwrap();
        assert_eq!(a, vec![1.0, 2.5, 5.5, 7.0]);
        let (a, _) = pool(&x, 1, &gp, PoolKind::Avg { include_pad: true }, false).unwrap();
        assert_eq!(a, vec![0.25, 1.25, 2.75, 7.0]);
        let g1 = geom(&[2], &[2], &[1], None, false);
        let (l, _) = pool(&[3.0, -4.0], 1, &g1, PoolKind::Lp(2.0), false).unwrap();
        assert_eq!(l, vec![5.0]);
        assert_eq!(column_major(5, &[3, 3]), 7);
    }

    #[test]
    fn bad_geometry() {
        let w = WindowAttrs {
            kernel: Some(vec![3]),
            strides: Some(vec![0]),
            dilations: None,
            pads: None,
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        assert!(w.geometry(&[5], None).is_err());
        let w = WindowAttrs { strides: None, ..w };
        assert!(w.geometry(&[2], None).is_err());
        assert!(w.geometry(&[2, 2], None).is_err());
        // hostile sizes are errors, not overflows
        let huge = WindowAttrs {
            kernel: Some(vec![i64::MAX]),
            dilations: Some(vec![4]),
            ..w.clone()
        };
        assert!(huge.geometry(&[5], None).is_err());
        let huge = WindowAttrs {
            pads: Some(vec![i64::MAX, i64::MAX]),
            ..w.clone()
        };
        assert!(huge.geometry(&[usize::MAX / 2], None).is_err());
        let neg = WindowAttrs {
            pads: Some(vec![-1, 0]),
            ..w
        };
        assert!(neg.geometry(&[5], None).is_err());
    }
}
