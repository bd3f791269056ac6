//! Resampling and box operators: Resize, Upsample, GridSample, AffineGrid,
//! RoiAlign and NonMaxSuppression.
//!
//! Resize is separable: each resized axis is interpolated in turn (in f64),
//! with per-output-position taps computed once per axis.
//!
//! Opset notes: Upsample took `scales` as an attribute before 9; Upsample
//! and Resize-10 use the "asymmetric" transform and truncating nearest
//! rounding; Resize-11 added roi, sizes and the coordinate modes; Resize-18
//! added axes, antialias and keep_aspect_ratio_policy (19 added
//! half_pixel_symmetric).

use onyx_tensor::{numel, DType, Tensor, Value};

use super::pool::from_f64;
use super::{
    norm_axes, one, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx,
};
use crate::op_err;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Mode {
    Nearest,
    Linear,
    Cubic,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Coord {
    HalfPixel,
    HalfPixelSymmetric,
    PytorchHalfPixel,
    AlignCorners,
    Asymmetric,
    TfCropAndResize,
    /// Resize 11-12 only: half_pixel without the trailing -0.5.
    TfHalfPixelForNn,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Nearest {
    RoundPreferFloor,
    RoundPreferCeil,
    Floor,
    Ceil,
    /// Resize-10 / Upsample: truncate when upsampling, ceil when downsampling.
    Legacy,
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Aspect {
    Stretch,
    NotLarger,
    NotSmaller,
}

#[derive(Clone, Debug)]
struct ResizeAttrs {
    mode: Mode,
    coord: Coord,
    nearest: Nearest,
    cubic_a: f64,
    exclude_outside: bool,
    extrapolation: f64,
    antialias: bool,
    axes: Option<Vec<i64>>,
    aspect: Aspect,
}

impl ResizeAttrs {
    fn read(ctx: &BuildCtx, legacy: bool) -> OpResult<ResizeAttrs> {
        let n = ctx.node;
        let mode = match n.attr_string("mode")?.as_deref() {
            None | Some("nearest") => Mode::Nearest,
            Some("linear") | Some("bilinear") | Some("trilinear") => Mode::Linear,
            Some("cubic") | Some("bicubic") => Mode::Cubic,
            Some(other) => return Err(op_err!("unknown resize mode '{other}'")),
        };
        if legacy {
            if mode == Mode::Cubic {
                return Err(op_err!("cubic mode needs Resize opset 11 or later"));
            }
            return Ok(ResizeAttrs {
                mode,
                coord: Coord::Asymmetric,
                nearest: Nearest::Legacy,
                cubic_a: -0.75,
                exclude_outside: false,
                extrapolation: 0.0,
                antialias: false,
                axes: None,
                aspect: Aspect::Stretch,
            });
        }
        let coord = match n.attr_string("coordinate_transformation_mode")?.as_deref() {
            None | Some("half_pixel") => Coord::HalfPixel,
            Some("half_pixel_symmetric") => Coord::HalfPixelSymmetric,
            Some("pytorch_half_pixel") => Coord::PytorchHalfPixel,
            Some("align_corners") => Coord::AlignCorners,
            Some("asymmetric") => Coord::Asymmetric,
            Some("tf_crop_and_resize") => Coord::TfCropAndResize,
            Some("tf_half_pixel_for_nn") => Coord::TfHalfPixelForNn,
            Some(other) => return Err(op_err!("unknown coordinate_transformation_mode '{other}'")),
        };
        let nearest = match n.attr_string("nearest_mode")?.as_deref() {
            None | Some("round_prefer_floor") => Nearest::RoundPreferFloor,
            Some("round_prefer_ceil") => Nearest::RoundPreferCeil,
            Some("floor") => Nearest::Floor,
            Some("ceil") => Nearest::Ceil,
            Some(other) => return Err(op_err!("unknown nearest_mode '{other}'")),
        };
        let aspect = match n.attr_string("keep_aspect_ratio_policy")?.as_deref() {
            None | Some("stretch") => Aspect::Stretch,
            Some("not_larger") => Aspect::NotLarger,
            Some("not_smaller") => Aspect::NotSmaller,
            Some(other) => return Err(op_err!("unknown keep_aspect_ratio_policy '{other}'")),
        };
        Ok(ResizeAttrs {
            mode,
            coord,
            nearest,
            cubic_a: f64::from(n.attr_float("cubic_coeff_a")?.unwrap_or(-0.75)),
            exclude_outside: n.attr_int("exclude_outside")?.unwrap_or(0) != 0,
            extrapolation: f64::from(n.attr_float("extrapolation_value")?.unwrap_or(0.0)),
            antialias: ctx.opset >= 18 && n.attr_int("antialias")?.unwrap_or(0) != 0,
            axes: if ctx.opset >= 18 {
                n.attr_ints("axes")?
            } else {
                None
            },
            aspect,
        })
    }
}

/// The interpolation taps of one axis: `n` (index, weight) pairs per output
/// position, and which positions take the extrapolation value instead.
struct AxisTaps {
    n: usize,
    taps: Vec<(usize, f64)>,
    extrapolate: Vec<bool>,
}

fn cubic_kernel(x: f64, a: f64) -> f64 {
    let x = x.abs();
    if x <= 1.0 {
        ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
    } else {
        0.0
    }
}

/// Coefficients for a fractional position `ratio` in (0, 1]; the taps start
/// `n / 2` (or `n / 2 - 1`) before floor(x).
fn coeffs(attrs: &ResizeAttrs, ratio: f64, scale: f64) -> Vec<f64> {
    match attrs.mode {
        // nearest is resolved directly by axis_taps
        Mode::Nearest => vec![0.0, 1.0],
        Mode::Linear if attrs.antialias => {
            let s = scale.min(1.0);
            let start = (-1.0 / s).floor() as i64 + 1;
            let foot = 2 - 2 * start;
            let c: Vec<f64> = (start..start + foot)
                .map(|i| (1.0 - ((i as f64 - ratio) * s).abs()).clamp(0.0, 1.0))
                .collect();
            normalize(c)
        }
        Mode::Linear => vec![1.0 - ratio, ratio],
        Mode::Cubic if attrs.antialias => {
            let s = scale.min(1.0);
            let start = (-2.0 / s).floor() as i64 + 1;
            let end = 2 - start;
            let c: Vec<f64> = (start..end)
                .map(|i| cubic_kernel(s * (i as f64 - ratio), attrs.cubic_a))
                .collect();
            normalize(c)
        }
        Mode::Cubic => {
            let a = attrs.cubic_a;
            vec![
                cubic_kernel(ratio + 1.0, a),
                cubic_kernel(ratio, a),
                cubic_kernel(1.0 - ratio, a),
                cubic_kernel(2.0 - ratio, a),
            ]
        }
    }
}

fn normalize(c: Vec<f64>) -> Vec<f64> {
    let s: f64 = c.iter().sum();
    if s == 0.0 {
        c
    } else {
        c.into_iter().map(|v| v / s).collect()
    }
}

/// Maps output position `y` to a source coordinate.
fn source_coord(
    coord: Coord,
    y: f64,
    scale: f64,
    in_w: usize,
    out_w: usize,
    roi: (f64, f64),
) -> f64 {
    let out_f = scale * in_w as f64;
    match coord {
        Coord::AlignCorners => {
            if out_f == 1.0 || out_w <= 1 {
                0.0
            } else {
                y * (in_w as f64 - 1.0) / (out_f - 1.0)
            }
        }
        Coord::Asymmetric => y / scale,
        Coord::TfCropAndResize => {
            let span = (roi.1 - roi.0) * (in_w as f64 - 1.0);
            let x = if out_f == 1.0 || out_w <= 1 {
                span / 2.0
            } else {
                y * span / (out_f - 1.0)
            };
            x + roi.0 * (in_w as f64 - 1.0)
        }
        Coord::PytorchHalfPixel => {
            if out_f == 1.0 || out_w <= 1 {
                -0.5
            } else {
                (y + 0.5) / scale - 0.5
            }
        }
        Coord::HalfPixel => (y + 0.5) / scale - 0.5,
        Coord::TfHalfPixelForNn => (y + 0.5) / scale,
        Coord::HalfPixelSymmetric => {
            let adjustment = out_w as f64 / out_f;
            let center = in_w as f64 / 2.0;
            center * (1.0 - adjustment) + (y + 0.5) / scale - 0.5
        }
    }
}

fn axis_taps(
    attrs: &ResizeAttrs,
    in_w: usize,
    out_w: usize,
    scale: f64,
    roi: (f64, f64),
) -> AxisTaps {
    let last = in_w.saturating_sub(1) as i64;
    let clamp = |i: i64| i.clamp(0, last) as usize;
    let mut taps = Vec::new();
    let mut extrapolate = Vec::with_capacity(out_w);
    let mut n = 1;
    for o in 0..out_w {
        let x = source_coord(attrs.coord, o as f64, scale, in_w, out_w, roi);
        extrapolate
            .push(attrs.coord == Coord::TfCropAndResize && (x < 0.0 || x > in_w as f64 - 1.0));
        let fl = x.floor();
        let frac = x - fl;
        let p = fl as i64;
        if attrs.mode == Mode::Nearest {
            let i = match attrs.nearest {
                Nearest::RoundPreferFloor => {
                    if frac <= 0.5 {
                        p
                    } else {
                        p + 1
                    }
                }
                Nearest::RoundPreferCeil => {
                    if frac < 0.5 {
                        p
                    } else {
                        p + 1
                    }
                }
                Nearest::Floor => p,
                Nearest::Ceil => x.ceil() as i64,
                Nearest::Legacy => {
                    if scale < 1.0 {
                        x.ceil() as i64
                    } else {
                        x.trunc() as i64
                    }
                }
            };
            taps.push((clamp(i), 1.0));
            continue;
        }
        let ratio = if frac == 0.0 { 1.0 } else { frac };
        let mut c = coeffs(attrs, ratio, scale);
        n = c.len();
        let half = (n / 2) as i64;
        let start = if frac == 0.0 { p - half } else { p - half + 1 };
        if attrs.exclude_outside {
            for (k, cv) in c.iter_mut().enumerate() {
                let i = start + k as i64;
                if i < 0 || i > last {
                    *cv = 0.0;
                }
            }
            c = normalize(c);
        }
        for (k, cv) in c.into_iter().enumerate() {
            taps.push((clamp(start + k as i64), cv));
        }
    }
    AxisTaps {
        n,
        taps,
        extrapolate,
    }
}

/// Interpolates `data` (of `shape`) along `axis` to `out_w` positions.
fn resize_axis(
    data: &[f64],
    shape: &[usize],
    axis: usize,
    out_w: usize,
    t: &AxisTaps,
    extrapolation: f64,
) -> Vec<f64> {
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let in_w = shape[axis];
    let mut out = vec![0.0; outer * out_w * inner];
    for b in 0..outer {
        let src = &data[b * in_w * inner..(b + 1) * in_w * inner];
        for o in 0..out_w {
            let dst = &mut out[(b * out_w + o) * inner..(b * out_w + o + 1) * inner];
            if t.extrapolate[o] {
                dst.fill(extrapolation);
                continue;
            }
            for &(i, w) in &t.taps[o * t.n..(o + 1) * t.n] {
                if w == 0.0 {
                    continue;
                }
                let s = &src[i * inner..(i + 1) * inner];
                for (d, &v) in dst.iter_mut().zip(s) {
                    *d += w * v;
                }
            }
        }
    }
    out
}

/// Converts resampled values to `dtype`, rounding (half to even) and
/// saturating for integer types.
fn to_dtype(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> OpResult<Tensor> {
    let range = match dtype {
        DType::Int8 => Some((i8::MIN as f64, i8::MAX as f64)),
        DType::Uint8 => Some((0.0, u8::MAX as f64)),
        DType::Int16 => Some((i16::MIN as f64, i16::MAX as f64)),
        DType::Uint16 => Some((0.0, u16::MAX as f64)),
        DType::Int32 => Some((i32::MIN as f64, i32::MAX as f64)),
        DType::Uint32 => Some((0.0, u32::MAX as f64)),
        DType::Int64 => Some((i64::MIN as f64, i64::MAX as f64)),
        DType::Uint64 => Some((0.0, u64::MAX as f64)),
        _ => None,
    };
    match range {
        Some((lo, hi)) => {
            let v = v
                .into_iter()
                .map(|x| x.round_ties_even().clamp(lo, hi))
                .collect();
            from_f64(dtype, shape, v)
        }
        None => from_f64(dtype, shape, v),
    }
}

/// Resizes `x` to `out_shape` with per-axis `scales` and `roi` (start, end).
fn resize(
    rc: &RunCtx,
    x: &Tensor,
    attrs: &ResizeAttrs,
    out_shape: &[usize],
    scales: &[f64],
    roi: &[(f64, f64)],
) -> OpResult<Tensor> {
    let total =
        numel(out_shape).ok_or_else(|| op_err!("output shape {out_shape:?} is too large"))?;
    rc.check_alloc(total, 8)?;
    let mut shape = x.shape().to_vec();
    let mut data = x.to_f64_vec()?;
    for axis in 0..shape.len() {
        let trivial_roi =
            attrs.coord != Coord::TfCropAndResize || (roi[axis].0 == 0.0 && roi[axis].1 == 1.0);
        if (scales[axis] - 1.0).abs() < 1e-9 && out_shape[axis] == shape[axis] && trivial_roi {
            continue;
        }
        if shape[axis] == 0 && out_shape[axis] > 0 {
            return Err(op_err!(
                "cannot resize an empty axis {axis} to {}",
                out_shape[axis]
            ));
        }
        let mut next = shape.clone();
        next[axis] = out_shape[axis];
        let n = numel(&next).ok_or_else(|| op_err!("shape {next:?} is too large"))?;
        rc.check_alloc(n, 8)?;
        // antialiasing widens the filter by 1/scale when shrinking
        let width = if attrs.antialias && scales[axis] < 1.0 {
            (4.0 / scales[axis]).min(1e12) as usize + 4
        } else {
            4
        };
        rc.check_alloc(out_shape[axis].saturating_mul(width), 16)?;
        let t = axis_taps(attrs, shape[axis], out_shape[axis], scales[axis], roi[axis]);
        data = resize_axis(
            &data,
            &shape,
            axis,
            out_shape[axis],
            &t,
            attrs.extrapolation,
        );
        shape = next;
    }
    to_dtype(x.dtype(), shape, data)
}

fn float_list(t: Option<&Tensor>) -> OpResult<Option<Vec<f64>>> {
    match t {
        None => Ok(None),
        Some(t) if t.is_empty() => Ok(None),
        Some(t) => Ok(Some(t.to_f64_vec()?)),
    }
}

fn build_resize(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let legacy = ctx.opset < 11;
    let attrs = ResizeAttrs::read(ctx, legacy)?;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let r = x.rank();
        let (roi, scales, sizes) = if legacy {
            (None, float_list(opt_tensor_in(inputs, 1)?)?, None)
        } else {
            let sizes = match opt_tensor_in(inputs, 3)? {
                Some(t) if !t.is_empty() => Some(t.to_i64_vec()?),
                _ => None,
            };
            (
                float_list(opt_tensor_in(inputs, 1)?)?,
                float_list(opt_tensor_in(inputs, 2)?)?,
                sizes,
            )
        };
        let axes: Vec<usize> = match &attrs.axes {
            Some(a) => norm_axes(a, r)?,
            None => (0..r).collect(),
        };
        let k = axes.len();
        let mut full_roi = vec![(0.0, 1.0); r];
        if let Some(roi) = &roi {
            if attrs.coord == Coord::TfCropAndResize {
                if roi.len() != 2 * k {
                    return Err(op_err!(
                        "roi has {} values but {} are needed",
                        roi.len(),
                        2 * k
                    ));
                }
                for (i, &a) in axes.iter().enumerate() {
                    full_roi[a] = (roi[i], roi[k + i]);
                }
            }
        }
        let mut full_scales = vec![1.0; r];
        let mut out_shape = x.shape().to_vec();
        match (scales, sizes) {
            (Some(_), Some(_)) => return Err(op_err!("only one of scales and sizes may be given")),
            (None, None) => return Err(op_err!("one of scales and sizes is required")),
            (Some(s), None) => {
                if s.len() != k {
                    return Err(op_err!("scales has {} values but {k} are needed", s.len()));
                }
                for (i, &a) in axes.iter().enumerate() {
                    if s[i].is_nan() || s[i] <= 0.0 || !s[i].is_finite() {
                        return Err(op_err!("scale {} must be positive", s[i]));
                    }
                    full_scales[a] = s[i];
                    let o = (s[i] * x.shape()[a] as f64).floor();
                    if o > (isize::MAX / 16) as f64 {
                        return Err(op_err!("scaled size {o} is too large"));
                    }
                    out_shape[a] = o as usize;
                }
            }
            (None, Some(sz)) => {
                if sz.len() != k {
                    return Err(op_err!("sizes has {} values but {k} are needed", sz.len()));
                }
                for (i, &a) in axes.iter().enumerate() {
                    if sz[i] < 0 || sz[i] > isize::MAX as i64 / 16 {
                        return Err(op_err!("size {} is out of range", sz[i]));
                    }
                    out_shape[a] = sz[i] as usize;
                    full_scales[a] = sz[i] as f64 / x.shape()[a] as f64;
                }
                if attrs.aspect != Aspect::Stretch {
                    let it = axes.iter().map(|&a| full_scales[a]);
                    let s = if attrs.aspect == Aspect::NotLarger {
                        it.fold(f64::INFINITY, f64::min)
                    } else {
                        it.fold(f64::NEG_INFINITY, f64::max)
                    };
                    for &a in &axes {
                        full_scales[a] = s;
                        let o = (s * x.shape()[a] as f64 + 0.5).floor();
                        if !(0.0..=(isize::MAX / 16) as f64).contains(&o) {
                            return Err(op_err!("scaled size {o} is out of range"));
                        }
                        out_shape[a] = o as usize;
                    }
                }
            }
        }
        one(resize(rc, x, &attrs, &out_shape, &full_scales, &full_roi)?)
    }))
}

fn build_upsample(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let attrs = ResizeAttrs::read(ctx, true)?;
    let attr_scales = if ctx.opset < 9 {
        match ctx.node.attr_floats("scales")? {
            Some(s) => Some(s.iter().map(|&v| f64::from(v)).collect::<Vec<_>>()),
            None => {
                // opset 1: width_scale / height_scale on the last two axes
                let h = ctx.node.attr_float("height_scale")?;
                let w = ctx.node.attr_float("width_scale")?;
                match (h, w) {
                    (Some(h), Some(w)) => Some(vec![1.0, 1.0, f64::from(h), f64::from(w)]),
                    _ => return Err(op_err!("missing attribute 'scales'")),
                }
            }
        }
    } else {
        None
    };
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let s = match &attr_scales {
            Some(s) => s.clone(),
            None => tensor_in(inputs, 1)?.to_f64_vec()?,
        };
        if s.len() != x.rank() {
            return Err(op_err!(
                "scales has {} values but the input has rank {}",
                s.len(),
                x.rank()
            ));
        }
        let mut out_shape = Vec::with_capacity(s.len());
        for (i, &sv) in s.iter().enumerate() {
            if sv.is_nan() || sv <= 0.0 || !sv.is_finite() {
                return Err(op_err!("scale {sv} must be positive"));
            }
            let o = (sv * x.shape()[i] as f64).floor();
            if o > (isize::MAX / 16) as f64 {
                return Err(op_err!("scaled size {o} is too large"));
            }
            out_shape.push(o as usize);
        }
        let roi = vec![(0.0, 1.0); s.len()];
        one(resize(rc, x, &attrs, &out_shape, &s, &roi)?)
    }))
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum GridPad {
    Zeros,
    Border,
    Reflection,
}

/// Folds `x` back into `[lo, hi]` by reflecting at the borders.
fn reflect(x: f64, lo: f64, hi: f64) -> f64 {
    let rng = hi - lo;
    if rng <= 0.0 {
        return lo;
    }
    if x < lo {
        let dx = lo - x;
        let n = (dx / rng).floor();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            lo + r
        } else {
            hi - r
        }
    } else if x > hi {
        let dx = x - hi;
        let n = (dx / rng).floor();
        let r = dx - n * rng;
        if n % 2.0 == 0.0 {
            hi - r
        } else {
            lo + r
        }
    } else {
        x
    }
}

fn build_grid_sample(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let mode = match ctx.node.attr_string("mode")?.as_deref() {
        None if ctx.opset >= 20 => Mode::Linear,
        None | Some("bilinear") | Some("linear") => Mode::Linear,
        Some("nearest") => Mode::Nearest,
        Some("bicubic") | Some("cubic") => Mode::Cubic,
        Some(other) => return Err(op_err!("unknown GridSample mode '{other}'")),
    };
    let pad = match ctx.node.attr_string("padding_mode")?.as_deref() {
        None | Some("zeros") => GridPad::Zeros,
        Some("border") => GridPad::Border,
        Some("reflection") => GridPad::Reflection,
        Some(other) => return Err(op_err!("unknown padding_mode '{other}'")),
    };
    let align = ctx.node.attr_int("align_corners")?.unwrap_or(0) != 0;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let grid = tensor_in(inputs, 1)?;
        let r = x.rank().saturating_sub(2);
        if x.rank() < 3 || grid.rank() != r + 2 || grid.shape()[r + 1] != r {
            return Err(op_err!(
                "grid of shape {:?} does not fit input of shape {:?} (expected (N, ..., {r}))",
                grid.shape(),
                x.shape()
            ));
        }
        if !x.dtype().is_float() {
            return Err(op_err!("GridSample needs a float input, got {}", x.dtype()));
        }
        let (n, c) = (x.shape()[0], x.shape()[1]);
        if grid.shape()[0] != n {
            return Err(op_err!(
                "grid batch {} differs from input batch {n}",
                grid.shape()[0]
            ));
        }
        let dims = &x.shape()[2..];
        let out_sp = &grid.shape()[1..=r];
        let opl = numel(out_sp).ok_or_else(|| op_err!("grid is too large"))?;
        let ipl = numel(dims).ok_or_else(|| op_err!("input is too large"))?;
        let total = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(opl))
            .ok_or_else(|| op_err!("output is too large"))?;
        rc.check_alloc(total, 8)?;
        let xv = x.to_f64_vec()?;
        let gv = grid.to_f64_vec()?;
        let istr = onyx_tensor::strides_of(dims);
        let (lo, hi): (Vec<f64>, Vec<f64>) = dims
            .iter()
            .map(|&d| {
                if align {
                    (0.0, d as f64 - 1.0)
                } else {
                    (-0.5, d as f64 - 0.5)
                }
            })
            .unzip();
        let ntaps = match mode {
            Mode::Nearest => 1,
            Mode::Linear => 2,
            Mode::Cubic => 4,
        };
        let mut out = vec![0.0; total];
        // per-dim taps: (index or None for a zero, weight)
        let mut taps: Vec<Vec<(Option<usize>, f64)>> = vec![Vec::with_capacity(4); r];
        let mut k = vec![0usize; r];
        let kd = vec![ntaps; r];
        let fetch = |i: i64, d: usize, lo: f64, hi: f64| -> Option<usize> {
            let last = d as i64 - 1;
            match pad {
                GridPad::Zeros => (i >= 0 && i <= last).then_some(i as usize),
                GridPad::Border => (last >= 0).then(|| i.clamp(0, last) as usize),
                GridPad::Reflection => {
                    let j = reflect(i as f64, lo, hi) as i64;
                    (last >= 0).then(|| j.clamp(0, last) as usize)
                }
            }
        };
        for b in 0..n {
            for p in 0..opl {
                let g = &gv[(b * opl + p) * r..(b * opl + p + 1) * r];
                for i in 0..r {
                    let d = dims[i];
                    let nv = g[r - 1 - i];
                    let mut v = if align {
                        (nv + 1.0) / 2.0 * (d as f64 - 1.0)
                    } else {
                        ((nv + 1.0) * d as f64 - 1.0) / 2.0
                    };
                    if mode == Mode::Nearest {
                        v = f64::round_ties_even(v);
                    }
                    if v < lo[i] || v > hi[i] {
                        match pad {
                            GridPad::Border => v = v.clamp(0.0, d as f64 - 1.0),
                            GridPad::Reflection => v = reflect(v, lo[i], hi[i]),
                            GridPad::Zeros => {}
                        }
                    }
                    let t = &mut taps[i];
                    t.clear();
                    if !v.is_finite() {
                        t.extend(std::iter::repeat_n((None, 0.0), ntaps));
                        continue;
                    }
                    match mode {
                        Mode::Nearest => t.push((fetch(v as i64, d, lo[i], hi[i]), 1.0)),
                        Mode::Linear => {
                            let f = v.floor();
                            let fr = v - f;
                            t.push((fetch(f as i64, d, lo[i], hi[i]), 1.0 - fr));
                            t.push((fetch(f as i64 + 1, d, lo[i], hi[i]), fr));
                        }
                        Mode::Cubic => {
                            let f = v.floor();
                            let fr = v - f;
                            let ws = [
                                cubic_kernel(fr + 1.0, -0.75),
                                cubic_kernel(fr, -0.75),
                                cubic_kernel(1.0 - fr, -0.75),
                                cubic_kernel(2.0 - fr, -0.75),
                            ];
                            for (j, w) in ws.into_iter().enumerate() {
                                t.push((fetch(f as i64 - 1 + j as i64, d, lo[i], hi[i]), w));
                            }
                        }
                    }
                }
                for ch in 0..c {
                    let plane = &xv[(b * c + ch) * ipl..(b * c + ch + 1) * ipl];
                    let mut acc = 0.0;
                    k.iter_mut().for_each(|v| *v = 0);
                    loop {
                        let mut w = 1.0;
                        let mut off = Some(0usize);
                        for i in 0..r {
                            let (idx, wt) = taps[i][k[i]];
                            w *= wt;
                            off = match (off, idx) {
                                (Some(o), Some(q)) => Some(o + q * istr[i]),
                                _ => None,
                            };
                        }
                        if let Some(o) = off {
                            acc += w * plane[o];
                        }
                        if !super::pool::next_index(&mut k, &kd) {
                            break;
                        }
                    }
                    out[(b * c + ch) * opl + p] = acc;
                }
            }
        }
        let mut shape = vec![n, c];
        shape.extend_from_slice(out_sp);
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

fn build_affine_grid(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let align = ctx.node.attr_int("align_corners")?.unwrap_or(0) != 0;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let theta = tensor_in(inputs, 0)?;
        let size = tensor_in(inputs, 1)?.to_i64_vec()?;
        if !theta.dtype().is_float() {
            return Err(op_err!("theta should be float, got {}", theta.dtype()));
        }
        let r = match size.len() {
            4 => 2,
            5 => 3,
            other => return Err(op_err!("size should have 4 or 5 values, got {other}")),
        };
        if size.iter().any(|&v| v < 0) {
            return Err(op_err!("size {size:?} has a negative value"));
        }
        let n = size[0] as usize;
        if theta.shape() != [n, r, r + 1] {
            return Err(op_err!(
                "theta shape {:?} should be {:?}",
                theta.shape(),
                [n, r, r + 1]
            ));
        }
        // spatial sizes in (D,) H, W order
        let sp: Vec<usize> = size[2..].iter().map(|&v| v as usize).collect();
        let pts = numel(&sp).ok_or_else(|| op_err!("size {size:?} is too large"))?;
        let total = n
            .checked_mul(pts)
            .and_then(|v| v.checked_mul(r))
            .ok_or_else(|| op_err!("size {size:?} is too large"))?;
        rc.check_alloc(total, 8)?;
        let base = |len: usize| -> Vec<f64> {
            (0..len)
                .map(|i| {
                    if align {
                        if len <= 1 {
                            -1.0
                        } else {
                            -1.0 + 2.0 * i as f64 / (len as f64 - 1.0)
                        }
                    } else {
                        (2.0 * i as f64 + 1.0) / len as f64 - 1.0
                    }
                })
                .collect()
        };
        // coordinates per axis, ordered x (width), y (height), z (depth)
        let coords: Vec<Vec<f64>> = sp.iter().rev().map(|&l| base(l)).collect();
        let tv = theta.to_f64_vec()?;
        let mut out = Vec::with_capacity(total);
        let mut idx = vec![0usize; r];
        for b in 0..n {
            let th = &tv[b * r * (r + 1)..(b + 1) * r * (r + 1)];
            if pts == 0 {
                continue;
            }
            idx.iter_mut().for_each(|v| *v = 0);
            loop {
                // idx is in (D,) H, W order; point is (x, y[, z], 1)
                for row in 0..r {
                    let mut acc = th[row * (r + 1) + r];
                    for (a, cs) in coords.iter().enumerate() {
                        acc += th[row * (r + 1) + a] * cs[idx[r - 1 - a]];
                    }
                    out.push(acc);
                }
                if !super::pool::next_index(&mut idx, &sp) {
                    break;
                }
            }
        }
        let mut shape = vec![n];
        shape.extend_from_slice(&sp);
        shape.push(r);
        one(from_f64(theta.dtype(), shape, out)?)
    }))
}

fn build_roi_align(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    let half_pixel = match node
        .attr_string("coordinate_transformation_mode")?
        .as_deref()
    {
        None => ctx.opset >= 16,
        Some("half_pixel") => true,
        Some("output_half_pixel") => false,
        Some(other) => return Err(op_err!("unknown coordinate_transformation_mode '{other}'")),
    };
    let max_mode = match node.attr_string("mode")?.as_deref() {
        None | Some("avg") => false,
        Some("max") => true,
        Some(other) => return Err(op_err!("unknown RoiAlign mode '{other}'")),
    };
    let oh = node.attr_int("output_height")?.unwrap_or(1);
    let ow = node.attr_int("output_width")?.unwrap_or(1);
    if oh < 1 || ow < 1 || oh > 1 << 20 || ow > 1 << 20 {
        return Err(op_err!("output size {oh}x{ow} is out of range"));
    }
    let (oh, ow) = (oh as usize, ow as usize);
    let sampling = node.attr_int("sampling_ratio")?.unwrap_or(0);
    if !(0..=1 << 16).contains(&sampling) {
        return Err(op_err!("sampling_ratio {sampling} is out of range"));
    }
    let scale = f64::from(node.attr_float("spatial_scale")?.unwrap_or(1.0));
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let rois = tensor_in(inputs, 1)?;
        let bi = tensor_in(inputs, 2)?.to_i64_vec()?;
        if x.rank() != 4 || !x.dtype().is_float() {
            return Err(op_err!(
                "RoiAlign needs a float input of rank 4, got {} {:?}",
                x.dtype(),
                x.shape()
            ));
        }
        let nr = bi.len();
        if rois.shape() != [nr, 4] {
            return Err(op_err!("rois shape {:?} should be [{nr}, 4]", rois.shape()));
        }
        let (n, c, h, w) = (x.shape()[0], x.shape()[1], x.shape()[2], x.shape()[3]);
        let total = nr
            .checked_mul(c)
            .and_then(|v| v.checked_mul(oh * ow))
            .ok_or_else(|| op_err!("output is too large"))?;
        rc.check_alloc(total, 8)?;
        let xv = x.to_f64_vec()?;
        let rv = rois.to_f64_vec()?;
        let mut out = vec![0.0; total];
        let off = if half_pixel { 0.5 } else { 0.0 };
        for ri in 0..nr {
            let b = usize::try_from(bi[ri])
                .ok()
                .filter(|&b| b < n)
                .ok_or_else(|| op_err!("batch index {} is out of range for {n} images", bi[ri]))?;
            let roi = &rv[ri * 4..ri * 4 + 4];
            let (sw, sh) = (roi[0] * scale - off, roi[1] * scale - off);
            let (ew, eh) = (roi[2] * scale - off, roi[3] * scale - off);
            let (mut rw, mut rh) = (ew - sw, eh - sh);
            if !half_pixel {
                rw = rw.max(1.0);
                rh = rh.max(1.0);
            }
            let (bh, bw) = (rh / oh as f64, rw / ow as f64);
            let gh = if sampling > 0 {
                sampling as usize
            } else {
                (rh / oh as f64).ceil().clamp(0.0, 65536.0) as usize
            };
            let gw = if sampling > 0 {
                sampling as usize
            } else {
                (rw / ow as f64).ceil().clamp(0.0, 65536.0) as usize
            };
            let count = (gh * gw).max(1) as f64;
            let n_pre = (oh * ow)
                .checked_mul(gh)
                .and_then(|v| v.checked_mul(gw))
                .ok_or_else(|| op_err!("sampling grid {gh}x{gw} is too large"))?;
            rc.check_alloc(n_pre, 64)?;
            // bilinear sample points for every bin: 4 (offset, weight) pairs each
            let mut pre: Vec<[(usize, f64); 4]> = Vec::with_capacity(oh * ow * gh * gw);
            for ph in 0..oh {
                for pw in 0..ow {
                    for iy in 0..gh {
                        let yy = sh + ph as f64 * bh + (iy as f64 + 0.5) * bh / gh as f64;
                        for ix in 0..gw {
                            let xx = sw + pw as f64 * bw + (ix as f64 + 0.5) * bw / gw as f64;
                            if yy < -1.0
                                || yy > h as f64
                                || xx < -1.0
                                || xx > w as f64
                                || h == 0
                                || w == 0
                            {
                                pre.push([(0, 0.0); 4]);
                                continue;
                            }
                            let (mut y, mut xq) = (yy.max(0.0), xx.max(0.0));
                            let (mut yl, mut xl) = (y as usize, xq as usize);
                            let yh = if yl >= h - 1 {
                                yl = h - 1;
                                y = yl as f64;
                                yl
                            } else {
                                yl + 1
                            };
                            let xh = if xl >= w - 1 {
                                xl = w - 1;
                                xq = xl as f64;
                                xl
                            } else {
                                xl + 1
                            };
                            let (ly, lx) = (y - yl as f64, xq - xl as f64);
                            let (hy, hx) = (1.0 - ly, 1.0 - lx);
                            pre.push([
                                (yl * w + xl, hy * hx),
                                (yl * w + xh, hy * lx),
                                (yh * w + xl, ly * hx),
                                (yh * w + xh, ly * lx),
                            ]);
                        }
                    }
                }
            }
            let per_bin = gh * gw;
            for ch in 0..c {
                let plane = &xv[(b * c + ch) * h * w..(b * c + ch + 1) * h * w];
                for bin in 0..oh * ow {
                    let samples = &pre[bin * per_bin..(bin + 1) * per_bin];
                    let v = if max_mode {
                        let mut best: Option<f64> = None;
                        for s in samples {
                            let val = s
                                .iter()
                                .map(|&(o, wt)| if wt == 0.0 { 0.0 } else { wt * plane[o] })
                                .fold(f64::NEG_INFINITY, f64::max);
                            best = Some(best.map_or(val, |b| b.max(val)));
                        }
                        best.unwrap_or(0.0)
                    } else {
                        let sum: f64 = samples
                            .iter()
                            .flat_map(|s| s.iter())
                            .map(|&(o, wt)| if wt == 0.0 { 0.0 } else { wt * plane[o] })
                            .sum();
                        sum / count
                    };
                    out[(ri * c + ch) * oh * ow + bin] = v;
                }
            }
        }
        one(from_f64(x.dtype(), vec![nr, c, oh, ow], out)?)
    }))
}

/// Whether two boxes overlap by more than `thr` IoU.
fn iou_above(a: &[f64], b: &[f64], center: bool, thr: f64) -> bool {
    let span = |lo: f64, hi: f64| if lo <= hi { (lo, hi) } else { (hi, lo) };
    let (ax, bx, ay, by) = if center {
        (
            (a[0] - a[2] / 2.0, a[0] + a[2] / 2.0),
            (b[0] - b[2] / 2.0, b[0] + b[2] / 2.0),
            (a[1] - a[3] / 2.0, a[1] + a[3] / 2.0),
            (b[1] - b[3] / 2.0, b[1] + b[3] / 2.0),
        )
    } else {
        (
            span(a[1], a[3]),
            span(b[1], b[3]),
            span(a[0], a[2]),
            span(b[0], b[2]),
        )
    };
    let ix = ax.1.min(bx.1) - ax.0.max(bx.0);
    let iy = ay.1.min(by.1) - ay.0.max(by.0);
    if ix <= 0.0 || iy <= 0.0 {
        return false;
    }
    let inter = ix * iy;
    let area_a = (ax.1 - ax.0) * (ay.1 - ay.0);
    let area_b = (bx.1 - bx.0) * (by.1 - by.0);
    let union = area_a + area_b - inter;
    if area_a <= 0.0 || area_b <= 0.0 || union <= 0.0 {
        return false;
    }
    inter / union > thr
}

fn build_nms(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let center = ctx.node.attr_int("center_point_box")?.unwrap_or(0) != 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let boxes = tensor_in(inputs, 0)?;
        let scores = tensor_in(inputs, 1)?;
        if boxes.rank() != 3 || boxes.shape()[2] != 4 || scores.rank() != 3 {
            return Err(op_err!(
                "boxes {:?} should be (B, N, 4) and scores {:?} (B, C, N)",
                boxes.shape(),
                scores.shape()
            ));
        }
        let (nb, nbox) = (boxes.shape()[0], boxes.shape()[1]);
        let ncls = scores.shape()[1];
        if scores.shape()[0] != nb || scores.shape()[2] != nbox {
            return Err(op_err!(
                "scores shape {:?} does not match boxes shape {:?}",
                scores.shape(),
                boxes.shape()
            ));
        }
        let max_out = match opt_tensor_in(inputs, 2)? {
            Some(t) if !t.is_empty() => t.to_i64_vec()?[0].max(0) as usize,
            _ => 0,
        };
        let first = |i: usize| -> OpResult<Option<f64>> {
            Ok(match opt_tensor_in(inputs, i)? {
                Some(t) if !t.is_empty() => Some(t.to_f64_vec()?[0]),
                _ => None,
            })
        };
        let iou = first(3)?.unwrap_or(0.0);
        let score_thr = first(4)?;
        let bv = boxes.to_f64_vec()?;
        let sv = scores.to_f64_vec()?;
        let mut selected: Vec<i64> = Vec::new();
        let mut cand: Vec<usize> = Vec::with_capacity(nbox);
        let mut kept: Vec<usize> = Vec::new();
        for b in 0..nb {
            for cl in 0..ncls {
                let sc = &sv[(b * ncls + cl) * nbox..(b * ncls + cl + 1) * nbox];
                cand.clear();
                cand.extend((0..nbox).filter(|&i| score_thr.is_none_or(|t| sc[i] > t)));
                // highest score first; ties keep the lower index first
                cand.sort_by(|&i, &j| sc[j].total_cmp(&sc[i]).then(i.cmp(&j)));
                kept.clear();
                for &i in &cand {
                    if kept.len() >= max_out {
                        break;
                    }
                    let bi = &bv[(b * nbox + i) * 4..(b * nbox + i + 1) * 4];
                    let suppressed = kept.iter().any(|&k| {
                        iou_above(
                            bi,
                            &bv[(b * nbox + k) * 4..(b * nbox + k + 1) * 4],
                            center,
                            iou,
                        )
                    });
                    if !suppressed {
                        kept.push(i);
                        selected.extend([b as i64, cl as i64, i as i64]);
                    }
                }
            }
        }
        let n = selected.len() / 3;
        one(Tensor::from_vec(vec![n, 3], selected)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "Resize", build_resize);
    r.add("", "Upsample", build_upsample);
    r.add("", "GridSample", build_grid_sample);
    r.add("", "AffineGrid", build_affine_grid);
    r.add("", "RoiAlign", build_roi_align);
    r.add("", "NonMaxSuppression", build_nms);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(mode: Mode, coord: Coord) -> ResizeAttrs {
        ResizeAttrs {
            mode,
            coord,
            nearest: Nearest::RoundPreferFloor,
            cubic_a: -0.75,
            exclude_outside: false,
            extrapolation: 0.0,
            antialias: false,
            axes: None,
            aspect: Aspect::Stretch,
        }
    }

    fn run_1d(a: &ResizeAttrs, data: &[f64], out_w: usize, scale: f64) -> Vec<f64> {
        let t = axis_taps(a, data.len(), out_w, scale, (0.0, 1.0));
        resize_axis(data, &[data.len()], 0, out_w, &t, a.extrapolation)
    }

    #[test]
    fn linear_and_nearest_1d() {
        let lin = attrs(Mode::Linear, Coord::AlignCorners);
        assert_eq!(run_1d(&lin, &[0.0, 3.0], 4, 2.0), vec![0.0, 1.0, 2.0, 3.0]);
        let half = attrs(Mode::Linear, Coord::HalfPixel);
        // half_pixel x2: sources -0.25, 0.25, 0.75, 1.25 (clamped at the edges)
        assert_eq!(run_1d(&half, &[0.0, 4.0], 4, 2.0), vec![0.0, 1.0, 3.0, 4.0]);
        let near = attrs(Mode::Nearest, Coord::Asymmetric);
        assert_eq!(run_1d(&near, &[1.0, 2.0], 4, 2.0), vec![1.0, 1.0, 2.0, 2.0]);
    }

    #[test]
    fn cubic_weights_sum_to_one() {
        let a = attrs(Mode::Cubic, Coord::HalfPixel);
        let c = coeffs(&a, 0.25, 2.0);
        assert!((c.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // at an integer position cubic picks the sample itself
        assert_eq!(run_1d(&a, &[1.0, 5.0, 2.0], 3, 1.0), vec![1.0, 5.0, 2.0]);
    }

    #[test]
    fn integer_outputs_round_and_saturate() {
        let t = to_dtype(DType::Uint8, vec![3], vec![2.5, -3.0, 300.0]).unwrap();
        assert_eq!(t.as_slice::<u8>().unwrap(), &[2, 0, 255]);
    }

    #[test]
    fn reflect_and_round() {
        assert_eq!(reflect(-0.25, 0.0, 2.0), 0.25);
        assert_eq!(reflect(2.5, 0.0, 2.0), 1.5);
        assert_eq!(reflect(4.5, 0.0, 2.0), 0.5);
        assert_eq!(f64::round_ties_even(2.5), 2.0);
        assert_eq!(f64::round_ties_even(-1.5), -2.0);
    }

    #[test]
    fn iou_threshold() {
        // unit squares overlapping by half: IoU = 0.5 / 1.5 = 1/3
        let a = [0.0, 0.0, 1.0, 1.0];
        let b = [0.0, 0.5, 1.0, 1.5];
        assert!(iou_above(&a, &b, false, 0.3));
        assert!(!iou_above(&a, &b, false, 0.34));
        // same boxes as centre points
        assert!(iou_above(
            &[0.5, 0.5, 1.0, 1.0],
            &[1.0, 0.5, 1.0, 1.0],
            true,
            0.3
        ));
        assert!(!iou_above(&a, &[2.0, 2.0, 3.0, 3.0], false, 0.0));
    }
}
