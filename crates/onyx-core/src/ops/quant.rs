//! Linear quantization: QuantizeLinear, DequantizeLinear (per-tensor,
//! per-axis and blocked), DynamicQuantizeLinear, QLinearMatMul and QLinearConv.
//!
//! Rounding is half to even; integer results saturate to the target type;
//! float8 targets honour `saturate`. Scales and zero points are matched to
//! the input by [`param_index`].

use onyx_tensor::{
    broadcast_shapes, broadcast_strides, for_each_broadcast_index, minifloat_from_f32, numel,
    DType, Data, Tensor, Value,
};

use super::cast::cast_tensor;
use super::matmul::{mm_plan, mm_run, round_to, Check};
use super::RunCtx;
use super::{norm_axis, one, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry};
use crate::op_err;

/// The integer range of a quantized integer type.
fn int_range(dt: DType) -> Option<(i64, i64)> {
    Some(match dt {
        DType::Uint8 => (0, 255),
        DType::Int8 => (-128, 127),
        DType::Uint16 => (0, 65535),
        DType::Int16 => (-32768, 32767),
        DType::Uint4 => (0, 15),
        DType::Int4 => (-8, 7),
        DType::Uint2 => (0, 3),
        DType::Int2 => (-2, 1),
        DType::Int32 => (i64::from(i32::MIN), i64::from(i32::MAX)),
        _ => return None,
    })
}

/// For each element of a tensor of `shape`, the index of its scale or zero
/// point in `param` (per-tensor when `param` has one element, per-axis when
/// it is 1-D of the axis' size, blocked when `block_size` > 0).
fn param_index(
    param: &[usize],
    shape: &[usize],
    axis: i64,
    block_size: i64,
) -> OpResult<Vec<usize>> {
    let n = numel(shape).ok_or_else(|| op_err!("shape {shape:?} is too large"))?;
    let pn = numel(param).unwrap_or(0);
    if pn == 1 {
        return Ok(vec![0; n]);
    }
    let ax = norm_axis(axis, shape.len())?;
    let dim = shape[ax];
    let inner: usize = shape[ax + 1..].iter().product();
    if block_size <= 0 {
        if param.len() != 1 || param[0] != dim {
            return Err(op_err!(
                "scale/zero point of shape {param:?} does not match axis {ax} of shape {shape:?}"
            ));
        }
        return Ok((0..n).map(|i| (i / inner.max(1)) % dim.max(1)).collect());
    }
    let bs = block_size as usize;
    if param.len() != shape.len()
        || param.iter().zip(shape).enumerate().any(|(i, (&p, &s))| {
            if i == ax {
                p != s.div_ceil(bs)
            } else {
                p != s
            }
        })
    {
        return Err(op_err!(
            "blocked scale/zero point of shape {param:?} does not fit shape {shape:?} with block size {bs} on axis {ax}"
        ));
    }
    let pdim = param[ax];
    Ok((0..n)
        .map(|i| {
            let inn = i % inner.max(1);
            let a = (i / inner.max(1)) % dim.max(1);
            let outer = i / (inner * dim).max(1);
            (outer * pdim + a / bs) * inner + inn
        })
        .collect())
}

/// For each element of `out`, the index into a tensor of `shape` broadcast to it.
fn bcast_index(shape: &[usize], out: &[usize]) -> OpResult<Vec<usize>> {
    let b = broadcast_shapes(&[shape, out])?;
    if b != out {
        return Err(op_err!("shape {shape:?} does not broadcast to {out:?}"));
    }
    let st = broadcast_strides(shape, out);
    let mut v = Vec::new();
    for_each_broadcast_index(out, [&st], |_, [i]| v.push(i));
    Ok(v)
}

/// Builds a tensor of a quantized type from already rounded values.
fn quantized_tensor(dt: DType, shape: Vec<usize>, v: &[f64], saturate: bool) -> OpResult<Tensor> {
    if dt.is_minifloat() {
        let codes = v
            .iter()
            .map(|&x| minifloat_from_f32(dt, x as f32, saturate).unwrap_or(0))
            .collect();
        return Ok(Tensor::new(dt, shape, Data::U8(codes))?);
    }
    let (lo, hi) = int_range(dt).ok_or_else(|| op_err!("{dt} is not a quantized type"))?;
    let ints: Vec<i64> = v
        .iter()
        .map(|&x| {
            if x.is_nan() {
                0
            } else {
                (x.clamp(lo as f64, hi as f64)) as i64
            }
        })
        .collect();
    cast_tensor(&Tensor::from_vec(shape, ints)?, dt, true)
}

struct QAttrs {
    axis: i64,
    block_size: i64,
    saturate: bool,
    output_dtype: Option<DType>,
    precision: Option<DType>,
}

fn dtype_attr(ctx: &BuildCtx, name: &str) -> OpResult<Option<DType>> {
    match ctx.node.attr_int(name)? {
        None | Some(0) => Ok(None),
        Some(c) => i32::try_from(c)
            .ok()
            .and_then(DType::from_onnx)
            .map(Some)
            .ok_or_else(|| op_err!("attribute '{name}' names unknown type {c}")),
    }
}

fn qattrs(ctx: &BuildCtx) -> OpResult<QAttrs> {
    Ok(QAttrs {
        axis: ctx.node.attr_int("axis")?.unwrap_or(1),
        block_size: ctx.node.attr_int("block_size")?.unwrap_or(0),
        saturate: ctx.node.attr_int("saturate")?.unwrap_or(1) != 0,
        output_dtype: dtype_attr(ctx, "output_dtype")?,
        precision: dtype_attr(ctx, "precision")?,
    })
}

/// The f64 precision both operands are computed in (numpy's promotion).
fn common_float(a: DType, b: DType) -> DType {
    if a == b {
        a
    } else if a == DType::Double || b == DType::Double {
        DType::Double
    } else {
        DType::Float
    }
}

fn quantize(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, at: &QAttrs) -> OpResult<Tensor> {
    let out_dt = match (zp, at.output_dtype) {
        (Some(z), Some(o)) if z.dtype() != o => {
            return Err(op_err!(
                "output_dtype {o} differs from the zero point's type {}",
                z.dtype()
            ))
        }
        (Some(z), _) => z.dtype(),
        (None, Some(o)) => o,
        (None, None) => DType::Uint8,
    };
    let xv = x.to_f64_vec()?;
    let sv = scale.to_f64_vec()?;
    let si = param_index(scale.shape(), x.shape(), at.axis, at.block_size)?;
    let zv = match zp {
        Some(z) => Some((
            z.to_f64_vec()?,
            param_index(z.shape(), x.shape(), at.axis, at.block_size)?,
        )),
        None => None,
    };
    let prec = at
        .precision
        .unwrap_or_else(|| common_float(x.dtype(), scale.dtype()));
    let is_int = int_range(out_dt).is_some();
    let is_f8 = matches!(
        out_dt,
        DType::Float8E4M3FN | DType::Float8E4M3FNUZ | DType::Float8E5M2 | DType::Float8E5M2FNUZ
    );
    let mut out = Vec::with_capacity(xv.len());
    for (i, &x) in xv.iter().enumerate() {
        let s = round_to(prec, sv[si[i]]);
        let q = round_to(prec, round_to(prec, x) / s);
        let z = zv.as_ref().map(|(v, idx)| v[idx[i]]).unwrap_or(0.0);
        out.push(if is_int {
            f64::round_ties_even(q) + z
        } else if is_f8 {
            q
        } else {
            q + z
        });
    }
    if !is_int && !out_dt.is_minifloat() {
        return Err(op_err!("{out_dt} is not a quantized type"));
    }
    quantized_tensor(out_dt, x.shape().to_vec(), &out, at.saturate)
}

fn dequantize(x: &Tensor, scale: &Tensor, zp: Option<&Tensor>, at: &QAttrs) -> OpResult<Tensor> {
    let xv = x.to_f64_vec()?;
    let sv = scale.to_f64_vec()?;
    let si = param_index(scale.shape(), x.shape(), at.axis, at.block_size)?;
    let out_dt = at.output_dtype.unwrap_or(scale.dtype());
    if !matches!(
        out_dt,
        DType::Float | DType::Double | DType::Float16 | DType::BFloat16
    ) {
        return Err(op_err!("DequantizeLinear cannot produce {out_dt}"));
    }
    let zv = match zp {
        Some(z) if !x.dtype().is_minifloat() => {
            if z.dtype() != x.dtype() {
                return Err(op_err!(
                    "zero point type {} differs from input type {}",
                    z.dtype(),
                    x.dtype()
                ));
            }
            Some((
                z.to_f64_vec()?,
                param_index(z.shape(), x.shape(), at.axis, at.block_size)?,
            ))
        }
        _ => None,
    };
    let wide = scale.dtype() == DType::Double;
    let r = |v: f64| if wide { v } else { v as f32 as f64 };
    let out: Vec<f64> = xv
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let z = zv.as_ref().map(|(zv, idx)| zv[idx[i]]).unwrap_or(0.0);
            r(r(v - z) * sv[si[i]])
        })
        .collect();
    let t = Tensor::from_vec(x.shape().to_vec(), out)?;
    cast_tensor(&t, out_dt, true)
}

fn build_quantize(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let at = qattrs(ctx)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(quantize(
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            &at,
        )?)
    }))
}

fn build_dequantize(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let at = qattrs(ctx)?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(dequantize(
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            opt_tensor_in(inputs, 2)?,
            &at,
        )?)
    }))
}

fn dynamic_quantize(x: &Tensor) -> OpResult<Vec<Value>> {
    let xv = x.to_f64_vec()?;
    let f = |v: f64| v as f32 as f64;
    let mx = xv.iter().fold(0.0f64, |a, &b| if b > a { b } else { a });
    let mn = xv.iter().fold(0.0f64, |a, &b| if b < a { b } else { a });
    let (mx, mn) = (f(mx), f(mn));
    let scale = f(if mx == mn { 1.0 } else { f(mx - mn) } / 255.0);
    let zp = f64::round_ties_even(f(0.0 - f(mn / scale)).clamp(0.0, 255.0));
    let y: Vec<u8> = xv
        .iter()
        .map(|&v| (f64::round_ties_even(f(v / scale)) + zp).clamp(0.0, 255.0) as u8)
        .collect();
    Ok(vec![
        Value::Tensor(Tensor::from_vec(x.shape().to_vec(), y)?),
        Value::Tensor(cast_tensor(&Tensor::scalar(scale), x.dtype(), true)?),
        Value::Tensor(Tensor::scalar(zp as u8)),
    ])
}

/// The operand minus its zero point (broadcast), as i64.
fn minus_zp(t: &Tensor, zp: Option<&Tensor>) -> OpResult<Vec<i64>> {
    let v = t.to_i64_vec()?;
    let Some(z) = zp else { return Ok(v) };
    let zv = z.to_i64_vec()?;
    if zv.len() == 1 {
        return Ok(v.into_iter().map(|x| x - zv[0]).collect());
    }
    // per-row A zero points come as [M] or [M, 1]; per-column B as [N] or [1, N]
    let mut zs = z.shape().to_vec();
    let r = t.rank();
    if zs.len() == 1 && r >= 2 && zs[0] == t.shape()[r - 2] && zs[0] != t.shape()[r - 1] {
        zs.push(1);
    }
    let idx = bcast_index(&zs, t.shape())?;
    Ok(v.iter().zip(idx).map(|(&x, i)| x - zv[i]).collect())
}

fn qlinear_matmul(check: Check, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let a = tensor_in(inputs, 0)?;
    let a_scale = tensor_in(inputs, 1)?;
    let a_zp = opt_tensor_in(inputs, 2)?;
    let b = tensor_in(inputs, 3)?;
    let b_scale = tensor_in(inputs, 4)?;
    let b_zp = opt_tensor_in(inputs, 5)?;
    let y_scale = tensor_in(inputs, 6)?;
    let y_zp = opt_tensor_in(inputs, 7)?;
    let av = minus_zp(a, a_zp)?;
    let bv = minus_zp(b, b_zp)?;
    let p = mm_plan(check, a.shape(), b.shape())?;
    let n = numel(&p.out_shape).ok_or_else(|| op_err!("output is too large"))?;
    check(n, 8)?;
    let c = mm_run(&av, &bv, &p, 0i64, |acc, x, y| {
        acc.wrapping_add(x.wrapping_mul(y))
    })?;
    let sdt = a_scale.dtype();
    let (asv, bsv, ysv) = (
        a_scale.to_f64_vec()?,
        b_scale.to_f64_vec()?,
        y_scale.to_f64_vec()?,
    );
    let out = &p.out_shape;
    let fit = |t: &Tensor, rowwise: bool| -> OpResult<Vec<usize>> {
        let mut s = t.shape().to_vec();
        if rowwise && s.len() == 1 && s[0] > 1 {
            s.push(1);
        }
        bcast_index(&s, out)
    };
    let (ai, bi, yi) = (
        fit(a_scale, true)?,
        fit(b_scale, false)?,
        fit(y_scale, false)?,
    );
    let out_dt = y_zp.map(|z| z.dtype()).unwrap_or(a.dtype());
    let (zv, zi) = match y_zp {
        Some(z) => (z.to_f64_vec()?, fit(z, false)?),
        None => (vec![0.0], vec![0; n]),
    };
    let r = |x: f64| round_to(sdt, x);
    let v: Vec<f64> = (0..n)
        .map(|i| {
            let m = r(r(asv[ai[i]] * bsv[bi[i]]) / ysv[yi[i]]);
            f64::round_ties_even(c[i] as f64 * m + zv[zi[i]])
        })
        .collect();
    quantized_tensor(out_dt, p.out_shape.clone(), &v, true)
}

// ---------------------------------------------------------------------------
// QLinearConv

struct ConvAttrs {
    auto_pad: String,
    dilations: Option<Vec<i64>>,
    group: i64,
    kernel_shape: Option<Vec<i64>>,
    pads: Option<Vec<i64>>,
    strides: Option<Vec<i64>>,
}

/// Integer convolution of x [N, C, *spatial] with w [M, C/group, *kernel].
fn conv_i64(
    check: Check,
    x: &[i64],
    xs: &[usize],
    w: &[i64],
    ws: &[usize],
    at: &ConvAttrs,
) -> OpResult<(Vec<i64>, Vec<usize>)> {
    let nd = xs
        .len()
        .checked_sub(2)
        .filter(|&d| d > 0 && ws.len() == d + 2)
        .ok_or_else(|| {
            op_err!("convolution input {xs:?} and weights {ws:?} have unsuitable ranks")
        })?;
    let (n, c) = (xs[0], xs[1]);
    let m = ws[0];
    let g = usize::try_from(at.group)
        .ok()
        .filter(|&g| g > 0 && c.is_multiple_of(g) && m.is_multiple_of(g))
        .ok_or_else(|| {
            op_err!(
                "group {} does not divide {c} channels and {m} filters",
                at.group
            )
        })?;
    let cg = c / g;
    if ws[1] != cg {
        return Err(op_err!(
            "weights have {} input channels but {cg} are expected",
            ws[1]
        ));
    }
    let kshape: Vec<usize> = ws[2..].to_vec();
    if let Some(k) = &at.kernel_shape {
        if k.len() != nd || k.iter().zip(&kshape).any(|(&a, &b)| a as usize != b) {
            return Err(op_err!("kernel_shape {k:?} does not match weights {ws:?}"));
        }
    }
    let pos = |v: &Option<Vec<i64>>, what: &str, len: usize| -> OpResult<Vec<usize>> {
        match v {
            None => Ok(vec![1; len]),
            Some(v) if v.len() == len && v.iter().all(|&x| x >= 1) => {
                Ok(v.iter().map(|&x| x as usize).collect())
            }
            Some(v) => Err(op_err!("{what} {v:?} is invalid for {len} spatial axes")),
        }
    };
    let strides = pos(&at.strides, "strides", nd)?;
    let dil = pos(&at.dilations, "dilations", nd)?;
    let sp = &xs[2..];
    // shape arithmetic in i128 so hostile attributes cannot overflow it
    let mut pads = vec![0i128; 2 * nd];
    let mut out_sp = vec![0usize; nd];
    for d in 0..nd {
        let ek = dil[d] as i128 * (kshape[d].max(1) - 1) as i128 + 1;
        let (sd, st) = (sp[d] as i128, strides[d] as i128);
        let (lo, hi, o) = match at.auto_pad.as_str() {
            "SAME_UPPER" | "SAME_LOWER" => {
                let o = (sd + st - 1) / st;
                let total = ((o - 1) * st + ek - sd).max(0);
                let small = total / 2;
                if at.auto_pad == "SAME_UPPER" {
                    (small, total - small, o)
                } else {
                    (total - small, small, o)
                }
            }
            "VALID" => (0, 0, (sd - ek).div_euclid(st) + 1),
            _ => {
                let (lo, hi) = match &at.pads {
                    Some(p) if p.len() == 2 * nd => (p[d] as i128, p[d + nd] as i128),
                    Some(p) => return Err(op_err!("pads {p:?} should have {} values", 2 * nd)),
                    None => (0, 0),
                };
                (lo, hi, (sd + lo + hi - ek).div_euclid(st) + 1)
            }
        };
        if o < 0 || lo < 0 || hi < 0 {
            return Err(op_err!(
                "convolution output along axis {d} would be empty or negative"
            ));
        }
        pads[d] = lo;
        pads[d + nd] = hi;
        out_sp[d] = usize::try_from(o)
            .map_err(|_| op_err!("convolution output along axis {d} is too large"))?;
    }
    let mut out_shape = vec![n, m];
    out_shape.extend_from_slice(&out_sp);
    let total = numel(&out_shape).ok_or_else(|| op_err!("convolution output is too large"))?;
    check(total, 8)?;
    let osz: usize = out_sp.iter().product();
    let ksz: usize = kshape.iter().product();
    let isz: usize = sp.iter().product();
    let mut out = vec![0i64; total];
    let mut oidx = vec![0usize; nd];
    let mut kidx = vec![0usize; nd];
    for b in 0..n {
        for f in 0..m {
            let grp = f / (m / g);
            for o in 0..osz {
                // spatial output index
                let mut r = o;
                for d in (0..nd).rev() {
                    oidx[d] = r % out_sp[d];
                    r /= out_sp[d];
                }
                let mut acc = 0i64;
                for ci in 0..cg {
                    let ch = grp * cg + ci;
                    for k in 0..ksz {
                        let mut r = k;
                        for d in (0..nd).rev() {
                            kidx[d] = r % kshape[d];
                            r /= kshape[d];
                        }
                        let mut off = 0usize;
                        let mut inside = true;
                        for d in 0..nd {
                            let p = (oidx[d] as i128) * (strides[d] as i128)
                                + (kidx[d] as i128) * (dil[d] as i128)
                                - pads[d];
                            if p < 0 || p >= sp[d] as i128 {
                                inside = false;
                                break;
                            }
                            off = off * sp[d] + p as usize;
                        }
                        if inside {
                            let xv = x[(b * c + ch) * isz + off];
                            let wv = w[(f * cg + ci) * ksz + k];
                            acc = acc.wrapping_add(xv.wrapping_mul(wv));
                        }
                    }
                }
                out[(b * m + f) * osz + o] = acc;
            }
        }
    }
    Ok((out, out_shape))
}

fn build_qlinear_conv(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let n = &ctx.node;
    let at = ConvAttrs {
        auto_pad: n
            .attr_string("auto_pad")?
            .unwrap_or_else(|| "NOTSET".into()),
        dilations: n.attr_ints("dilations")?,
        group: n.attr_int("group")?.unwrap_or(1),
        kernel_shape: n.attr_ints("kernel_shape")?,
        pads: n.attr_ints("pads")?,
        strides: n.attr_ints("strides")?,
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let x_scale = tensor_in(inputs, 1)?.to_f64_vec()?;
        let x_zp = opt_tensor_in(inputs, 2)?;
        let w = tensor_in(inputs, 3)?;
        let w_scale = tensor_in(inputs, 4)?.to_f64_vec()?;
        let w_zp = opt_tensor_in(inputs, 5)?;
        let y_scale = tensor_in(inputs, 6)?.to_f64_vec()?;
        let y_zp = opt_tensor_in(inputs, 7)?;
        let bias = opt_tensor_in(inputs, 8)?;
        let xv = minus_zp(x, x_zp)?;
        // per-output-channel weight zero points
        let wv = match w_zp {
            Some(z) if z.len() > 1 => {
                let zv = z.to_i64_vec()?;
                let per = w.len() / w.shape().first().copied().unwrap_or(1).max(1);
                if zv.len() != w.shape().first().copied().unwrap_or(0) {
                    return Err(op_err!(
                        "w_zero_point must have one value per output channel"
                    ));
                }
                w.to_i64_vec()?
                    .iter()
                    .enumerate()
                    .map(|(i, &v)| v - zv[i / per.max(1)])
                    .collect()
            }
            other => minus_zp(w, other)?,
        };
        let (mut acc, shape) = conv_i64(
            &|n, b| ctx.check_alloc(n, b),
            &xv,
            x.shape(),
            &wv,
            w.shape(),
            &at,
        )?;
        let m = shape[1];
        let osz: usize = shape[2..].iter().product();
        if let Some(b) = bias {
            let bv = b.to_i64_vec()?;
            if bv.len() != m {
                return Err(op_err!("bias has {} values for {m} filters", bv.len()));
            }
            for (i, a) in acc.iter_mut().enumerate() {
                *a += bv[(i / osz.max(1)) % m];
            }
        }
        if w_scale.len() != 1 && w_scale.len() != m {
            return Err(op_err!("w_scale must have 1 or {m} values"));
        }
        let xs = *x_scale.first().ok_or_else(|| op_err!("x_scale is empty"))?;
        let ys = *y_scale.first().ok_or_else(|| op_err!("y_scale is empty"))?;
        let out_dt = y_zp.map(|z| z.dtype()).unwrap_or(x.dtype());
        let zp = match y_zp {
            Some(z) => *z.to_f64_vec()?.first().unwrap_or(&0.0),
            None => 0.0,
        };
        let f = |v: f64| v as f32 as f64;
        let v: Vec<f64> = acc
            .iter()
            .enumerate()
            .map(|(i, &a)| {
                let ws = w_scale[if w_scale.len() == 1 {
                    0
                } else {
                    (i / osz.max(1)) % m
                }];
                let r = f(a as f64 * f(f(xs * ws) / ys)) + zp;
                f64::round_ties_even(r)
            })
            .collect();
        one(quantized_tensor(out_dt, shape, &v, true)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "QuantizeLinear", build_quantize);
    r.add("", "DequantizeLinear", build_dequantize);
    r.add("", "DynamicQuantizeLinear", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            dynamic_quantize(tensor_in(inputs, 0)?)
        }))
    });
    r.add("", "QLinearMatMul", |_| {
        Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
            one(qlinear_matmul(&|n, b| ctx.check_alloc(n, b), inputs)?)
        }))
    });
    r.add("", "QLinearConv", build_qlinear_conv);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attrs(axis: i64, block: i64) -> QAttrs {
        QAttrs {
            axis,
            block_size: block,
            saturate: true,
            output_dtype: None,
            precision: None,
        }
    }

    #[test]
    fn quantize_rounds_half_even_and_saturates() {
        let x = Tensor::from_vec(vec![5], vec![0.0f32, 1.0, 3.0, -4.0, 1000.0]).unwrap();
        let s = Tensor::scalar(2.0f32);
        let z = Tensor::scalar(10u8);
        let q = quantize(&x, &s, Some(&z), &attrs(1, 0)).unwrap();
        // 0.5 -> 0, 1.5 -> 2, -2 -> -2, 500 -> saturates
        assert_eq!(q.as_slice::<u8>().unwrap(), &[10, 10, 12, 8, 255]);
        let d = dequantize(&q, &s, Some(&z), &attrs(1, 0)).unwrap();
        assert_eq!(d.as_slice::<f32>().unwrap(), &[0.0, 0.0, 4.0, -4.0, 490.0]);
    }

    #[test]
    fn per_axis_and_blocked_indices() {
        assert_eq!(
            param_index(&[2], &[2, 3], 0, 0).unwrap(),
            vec![0, 0, 0, 1, 1, 1]
        );
        assert_eq!(
            param_index(&[3], &[2, 3], 1, 0).unwrap(),
            vec![0, 1, 2, 0, 1, 2]
        );
        assert_eq!(
            param_index(&[2, 2], &[2, 3], 1, 2).unwrap(),
            vec![0, 0, 1, 2, 2, 3]
        );
        assert!(param_index(&[4], &[2, 3], 1, 0).is_err());
    }

    #[test]
    fn dynamic_quantization() {
        let x = Tensor::from_vec(vec![3], vec![0.0f32, 2.55, -2.55]).unwrap();
        let out = dynamic_quantize(&x).unwrap();
        let y = out[0]
            .as_tensor()
            .unwrap()
            .as_slice::<u8>()
            .unwrap()
            .to_vec();
        let zp = out[2].as_tensor().unwrap().as_slice::<u8>().unwrap()[0];
        assert_eq!(zp, 128);
        assert_eq!(y, vec![128, 255, 0]);
    }

    #[test]
    fn qlinear_matmul_requantizes() {
        // (2 - 0) * 0.5 times (6 - 2) * 0.25, requantized at 0.5 with zero point 1
        let v = |t: Tensor| Value::Tensor(t);
        let ins = [
            v(Tensor::from_vec(vec![1, 1], vec![2u8]).unwrap()),
            v(Tensor::scalar(0.5f32)),
            v(Tensor::scalar(0u8)),
            v(Tensor::from_vec(vec![1, 1], vec![6u8]).unwrap()),
            v(Tensor::scalar(0.25f32)),
            v(Tensor::scalar(2u8)),
            v(Tensor::scalar(0.5f32)),
            v(Tensor::scalar(1u8)),
        ];
        let refs: Vec<Option<&Value>> = ins.iter().map(Some).collect();
        let y = qlinear_matmul(&|_, _| Ok(()), &refs).unwrap();
        assert_eq!(y.as_slice::<u8>().unwrap(), &[3]);
    }

    #[test]
    fn small_and_float8_targets() {
        let x = Tensor::from_vec(vec![3], vec![1.0f32, 100.0, -100.0]).unwrap();
        let s = Tensor::scalar(1.0f32);
        let z4 = Tensor::new(DType::Int4, vec![], Data::I8(vec![0].into())).unwrap();
        let q = quantize(&x, &s, Some(&z4), &attrs(1, 0)).unwrap();
        assert_eq!(q.dtype(), DType::Int4);
        assert_eq!(q.into_data(), Data::I8(vec![1, 7, -8].into()));
        let z8 = Tensor::new(DType::Float8E4M3FN, vec![], Data::U8(vec![0].into())).unwrap();
        let q = quantize(&x, &s, Some(&z8), &attrs(1, 0)).unwrap();
        // 1.0 is 0x38; 100 lies halfway between 96 (0x6C) and 104 and rounds to even
        assert_eq!(q.as_slice::<u8>().unwrap(), &[0x38, 0x6C, 0xEC]);
        let d = dequantize(&q, &s, None, &attrs(1, 0)).unwrap();
        assert_eq!(d.as_slice::<f32>().unwrap(), &[1.0, 96.0, -96.0]);
        // an axis outside the input is an error, not a panic
        let per = Tensor::from_vec(vec![3], vec![1.0f32; 3]).unwrap();
        assert!(quantize(&x, &per, None, &attrs(4, 0)).is_err());
    }

    #[test]
    fn integer_conv() {
        // 1x1x3x3 input, 1x1x2x2 kernel of ones: sums of 2x2 windows
        let x: Vec<i64> = (1..=9).collect();
        let w = vec![1i64; 4];
        let at = ConvAttrs {
            auto_pad: "NOTSET".into(),
            dilations: None,
            group: 1,
            kernel_shape: None,
            pads: None,
            strides: None,
        };
        let (v, s) = conv_i64(&|_, _| Ok(()), &x, &[1, 1, 3, 3], &w, &[1, 1, 2, 2], &at).unwrap();
        assert_eq!(s, vec![1, 1, 2, 2]);
        assert_eq!(v, vec![12, 16, 24, 28]);
    }
}
