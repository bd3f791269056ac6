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
            // tf_half_pixel_for_nn (opset 11-12) equals half_pixel without the -0.5
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
                .map(|x| {
                    let r = x.round();
                    let r = if (x - x.trunc()).abs() == 0.5 {
                        2.0 * (x / 2.0).round()
                    } else {
                        r
                    };
                    r.clamp(lo, hi)
                })
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

pub fn register(r: &mut Registry) {
    r.add("", "Resize", build_resize);
    r.add("", "Upsample", build_upsample);
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
}
