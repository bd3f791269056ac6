//! Dropout and the signal-processing operators: DFT, STFT, HannWindow,
//! HammingWindow, BlackmanWindow and MelWeightMatrix; and the
//! ai.onnx.preview.training optimizers Adagrad, Adam and Momentum; and the
//! small ai.onnx.ml operators Binarizer, ArrayFeatureExtractor, LabelEncoder
//! and TreeEnsemble.
//!
//! Dropout in inference (or with ratio 0) is the identity with an all-true
//! mask. Opset 12+ reads `ratio` and `training_mode` from inputs; earlier
//! opsets have a `ratio` attribute and never train (opsets 1-6 also had
//! `is_test`). Before opset 10 the mask has the input's element type.
//! Training mode draws its mask from MT19937 seeded like numpy's
//! `RandomState(seed)`, which is what the ONNX reference uses.

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{
    norm_axis, opt_scalar_f64_in, opt_tensor_in, scalar_i64_in, tensor_in, BuildCtx, Kernel,
    OpResult, Registry, RunCtx,
};
use crate::op_err;

/// The Mersenne Twister (MT19937) with numpy's `RandomState` seeding and
/// 53-bit doubles, so a seeded training-mode Dropout draws the same mask
/// as the ONNX reference.
struct Mt19937 {
    state: Box<[u32; 624]>,
    index: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Mt19937 {
        let mut state = Box::new([0u32; 624]);
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Mt19937 { state, index: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.index >= 624 {
            let mt = &mut self.state;
            for i in 0..624 {
                let y = (mt[i] & 0x8000_0000) | (mt[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = mt[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                mt[i] = v;
            }
            self.index = 0;
        }
        let mut y = self.state[self.index];
        self.index += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// Uniform in [0, 1) from 53 random bits, as numpy's `random_sample`.
    fn next_f64(&mut self) -> f64 {
        let a = f64::from(self.next_u32() >> 5);
        let b = f64::from(self.next_u32() >> 6);
        (a * 67_108_864.0 + b) / 9_007_199_254_740_992.0
    }
}

fn build_dropout(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let opset = ctx.opset;
    let attr_ratio = f64::from(ctx.node.attr_float("ratio")?.unwrap_or(0.5));
    let seed = ctx.node.attr_int("seed")?;
    let want_mask =
        ctx.node.outputs.len() > 1 && ctx.node.outputs.get(1).is_some_and(|o| !o.is_empty());
    let counter = std::sync::atomic::AtomicU64::new(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(1),
    );
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let (ratio, training) = if opset >= 12 {
            let ratio = opt_scalar_f64_in(inputs, 1)?.unwrap_or(0.5);
            let training = match opt_tensor_in(inputs, 2)? {
                Some(t) => t.to_f64_vec()?.first().is_some_and(|&v| v != 0.0),
                None => false,
            };
            (ratio, training)
        } else {
            (attr_ratio, false)
        };
        if !(0.0..1.0).contains(&ratio) {
            return Err(op_err!("Dropout ratio {ratio} must be in [0, 1)"));
        }
        let mask_dtype = if opset < 10 { x.dtype() } else { DType::Bool };
        if !training || ratio == 0.0 {
            let mut out = vec![Value::Tensor(x.clone())];
            if want_mask {
                ctx.check_alloc(x.len(), 1)?;
                let mask = Tensor::from_vec(x.shape().to_vec(), vec![true; x.len()])?;
                out.push(Value::Tensor(cast_tensor(&mask, mask_dtype, true)?));
            }
            return Ok(out);
        }
        if !x.dtype().is_float() {
            return Err(op_err!(
                "Dropout training needs a float input, got {}",
                x.dtype()
            ));
        }
        let mut rng = Mt19937::new(match seed {
            Some(s) => s as u32,
            None => counter.fetch_add(0x9E37_79B9, std::sync::atomic::Ordering::Relaxed) as u32,
        });
        let scale = 1.0 / (1.0 - ratio);
        let keep: Vec<bool> = (0..x.len()).map(|_| rng.next_f64() >= ratio).collect();
        let v: Vec<f64> = x
            .to_f64_vec()?
            .iter()
            .zip(&keep)
            .map(|(&a, &k)| if k { a * scale } else { 0.0 })
            .collect();
        let y = cast_tensor(&Tensor::from_vec(x.shape().to_vec(), v)?, x.dtype(), false)?;
        let mut out = vec![Value::Tensor(y)];
        if want_mask {
            let mask = Tensor::from_vec(x.shape().to_vec(), keep)?;
            out.push(Value::Tensor(cast_tensor(&mask, mask_dtype, true)?));
        }
        Ok(out)
    }))
}

/// A complex number as (re, im).
type C64 = (f64, f64);

/// `cos` and `sin` of `2 pi j / n` for j in 0..n, so that each DFT term is
/// a table lookup at `(k * t) % n` (exact periodicity, no drift).
fn twiddles(n: usize) -> Vec<C64> {
    (0..n)
        .map(|j| {
            let a = 2.0 * std::f64::consts::PI * j as f64 / n as f64;
            (a.cos(), a.sin())
        })
        .collect()
}

/// `out[k] = sum_t x[t] e^{-+2 pi i k t / n}` for k in 0..out.len(); `x` is
/// zero-padded or cut to `n` (the table's length).
fn dft_line(x: &[C64], tw: &[C64], inverse: bool, out: &mut [C64]) {
    let n = tw.len();
    let m = x.len().min(n);
    let sign = if inverse { 1.0 } else { -1.0 };
    for (k, o) in out.iter_mut().enumerate() {
        let (mut re, mut im) = (0.0, 0.0);
        let step = k % n.max(1);
        let mut j = 0usize;
        for &(xr, xi) in &x[..m] {
            let (c, s) = tw[j];
            let s = sign * s;
            re += xr * c - xi * s;
            im += xr * s + xi * c;
            j += step;
            if j >= n {
                j -= n;
            }
        }
        *o = (re, im);
    }
}

/// Reads the complex lines of `x` (last dim 1 = real, 2 = complex) along
/// `axis`, maps each through `f`, and writes them back as a tensor whose
/// `axis` has `out_len` entries and whose last dim is `out_c`.
fn map_lines(
    ctx: &RunCtx,
    x: &Tensor,
    axis: usize,
    out_len: usize,
    out_c: usize,
    mut f: impl FnMut(&[C64], &mut [C64]),
) -> OpResult<Tensor> {
    let shape = x.shape();
    let rank = shape.len();
    let c = shape[rank - 1];
    if c != 1 && c != 2 {
        return Err(op_err!(
            "the last dimension must be 1 (real) or 2 (complex) but is {c}"
        ));
    }
    let outer: usize = shape[..axis].iter().product();
    let len = shape[axis];
    let inner: usize = shape[axis + 1..rank - 1].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape[axis] = out_len;
    out_shape[rank - 1] = out_c;
    let total = onyx_tensor::numel(&out_shape)
        .ok_or_else(|| op_err!("output shape {out_shape:?} is too large"))?;
    ctx.check_alloc(total, 8)?;
    let v = x.to_f64_vec()?;
    let mut out = vec![0f64; total];
    let mut line = vec![(0.0, 0.0); len];
    let mut res = vec![(0.0, 0.0); out_len];
    for o in 0..outer {
        for i in 0..inner {
            for (t, z) in line.iter_mut().enumerate() {
                let at = ((o * len + t) * inner + i) * c;
                *z = (v[at], if c == 2 { v[at + 1] } else { 0.0 });
            }
            f(&line, &mut res);
            for (k, z) in res.iter().enumerate() {
                let at = ((o * out_len + k) * inner + i) * out_c;
                out[at] = z.0;
                if out_c == 2 {
                    out[at + 1] = z.1;
                }
            }
        }
    }
    let t = Tensor::from_vec(out_shape, out)?;
    cast_tensor(&t, x.dtype(), false)
}

fn positive_len(v: i64, what: &str) -> OpResult<usize> {
    match usize::try_from(v) {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(op_err!("{what} must be positive but is {v}")),
    }
}

fn run_dft(
    ctx: &RunCtx,
    x: &Tensor,
    dft_length: Option<i64>,
    axis: i64,
    inverse: bool,
    onesided: bool,
) -> OpResult<Tensor> {
    if !x.dtype().is_float() {
        return Err(op_err!("DFT needs a float input, got {}", x.dtype()));
    }
    let rank = x.rank();
    if rank < 2 {
        return Err(op_err!(
            "DFT needs rank 2 or more, got shape {:?}",
            x.shape()
        ));
    }
    let ax = norm_axis(axis, rank)?;
    if ax == rank - 1 {
        return Err(op_err!(
            "axis {axis} names the last (complex) dimension; it must be a signal axis"
        ));
    }
    let len = x.shape()[ax];
    let n = match dft_length {
        Some(d) => positive_len(d, "dft_length")?,
        None if inverse && onesided => {
            positive_len(2 * (len as i64 - 1), "the inferred dft_length")?
        }
        None => positive_len(len as i64, "the signal length")?,
    };
    let tw = twiddles(n);
    let scale = 1.0 / n as f64;
    if inverse && onesided {
        // irfft: rebuild the full Hermitian spectrum, keep the real part
        let half = n / 2 + 1;
        let mut full = vec![(0.0, 0.0); n];
        let mut tmp = vec![(0.0, 0.0); n];
        return map_lines(ctx, x, ax, n, 1, |line, out| {
            for (k, z) in full.iter_mut().enumerate() {
                *z = if k < half {
                    line.get(k).copied().unwrap_or((0.0, 0.0))
                } else {
                    let (r, i) = line.get(n - k).copied().unwrap_or((0.0, 0.0));
                    (r, -i)
                };
            }
            dft_line(&full, &tw, true, &mut tmp);
            for (o, z) in out.iter_mut().zip(&tmp) {
                *o = (z.0 * scale, 0.0);
            }
        });
    }
    let out_len = if onesided { n / 2 + 1 } else { n };
    map_lines(ctx, x, ax, out_len, 2, |line, out| {
        dft_line(line, &tw, inverse, out);
        if inverse {
            for z in out.iter_mut() {
                *z = (z.0 * scale, z.1 * scale);
            }
        }
    })
}

fn build_dft(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let opset = ctx.opset;
    let attr_axis = ctx.node.attr_int("axis")?.unwrap_or(1);
    let inverse = ctx.node.attr_int("inverse")?.unwrap_or(0) != 0;
    let onesided = ctx.node.attr_int("onesided")?.unwrap_or(0) != 0;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let dft_length = match opt_tensor_in(inputs, 1)? {
            Some(_) => Some(scalar_i64_in(inputs, 1)?),
            None => None,
        };
        let axis = if opset >= 20 {
            match opt_tensor_in(inputs, 2)? {
                Some(_) => scalar_i64_in(inputs, 2)?,
                None => -2,
            }
        } else {
            attr_axis
        };
        Ok(vec![Value::Tensor(run_dft(
            ctx, x, dft_length, axis, inverse, onesided,
        )?)])
    }))
}

fn build_stft(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let onesided = ctx.node.attr_int("onesided")?.unwrap_or(1) != 0;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        if !x.dtype().is_float() {
            return Err(op_err!("STFT needs a float signal, got {}", x.dtype()));
        }
        let (batch, n, c) = match x.shape() {
            [b, n, c] if *c == 1 || *c == 2 => (*b, *n, *c),
            s => {
                return Err(op_err!(
                    "STFT needs a signal of shape [batch, length, 1 or 2], got {s:?}"
                ))
            }
        };
        let step = positive_len(scalar_i64_in(inputs, 1)?, "frame_step")?;
        let window = opt_tensor_in(inputs, 2)?
            .map(|w| {
                if w.rank() != 1 {
                    return Err(op_err!("window must be 1-D but has shape {:?}", w.shape()));
                }
                Ok(w.to_f64_vec()?)
            })
            .transpose()?;
        let frame_len = match opt_tensor_in(inputs, 3)? {
            Some(_) => positive_len(scalar_i64_in(inputs, 3)?, "frame_length")?,
            None => match &window {
                Some(w) => positive_len(w.len() as i64, "the window length")?,
                None => positive_len(n as i64, "the signal length")?,
            },
        };
        if let Some(w) = &window {
            if w.len() != frame_len {
                return Err(op_err!(
                    "window has {} values but frame_length is {frame_len}",
                    w.len()
                ));
            }
        }
        if frame_len > n {
            return Err(op_err!(
                "frame_length {frame_len} is longer than the signal ({n})"
            ));
        }
        let frames = (n - frame_len) / step + 1;
        let bins = if onesided {
            frame_len / 2 + 1
        } else {
            frame_len
        };
        let total = batch
            .checked_mul(frames)
            .and_then(|v| v.checked_mul(bins))
            .and_then(|v| v.checked_mul(2))
            .ok_or_else(|| op_err!("STFT output is too large"))?;
        ctx.check_alloc(total, 8)?;
        let v = x.to_f64_vec()?;
        let tw = twiddles(frame_len);
        let mut out = Vec::with_capacity(total);
        let mut line = vec![(0.0, 0.0); frame_len];
        let mut res = vec![(0.0, 0.0); bins];
        for b in 0..batch {
            for f in 0..frames {
                for (t, z) in line.iter_mut().enumerate() {
                    let at = (b * n + f * step + t) * c;
                    let w = window.as_ref().map_or(1.0, |w| w[t]);
                    *z = (v[at] * w, if c == 2 { v[at + 1] * w } else { 0.0 });
                }
                dft_line(&line, &tw, false, &mut res);
                for z in &res {
                    out.push(z.0);
                    out.push(z.1);
                }
            }
        }
        let t = Tensor::from_vec(vec![batch, frames, bins, 2], out)?;
        Ok(vec![Value::Tensor(cast_tensor(&t, x.dtype(), false)?)])
    }))
}

#[derive(Clone, Copy)]
enum Window {
    Hann,
    Hamming,
    Blackman,
}

fn window_values(kind: Window, size: usize, periodic: bool) -> Vec<f64> {
    let denom = if periodic {
        size as f64
    } else {
        size as f64 - 1.0
    };
    let pi = std::f64::consts::PI;
    (0..size)
        .map(|i| {
            let x = i as f64 / denom;
            match kind {
                Window::Hann => (pi * x).sin().powi(2),
                Window::Hamming => {
                    let alpha = 25.0 / 46.0;
                    alpha - (1.0 - alpha) * (2.0 * pi * x).cos()
                }
                Window::Blackman => 0.42 - 0.5 * (2.0 * pi * x).cos() + 0.08 * (4.0 * pi * x).cos(),
            }
        })
        .collect()
}

fn output_dtype(ctx: &BuildCtx) -> OpResult<DType> {
    let code = ctx.node.attr_int("output_datatype")?.unwrap_or(1);
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("attribute 'output_datatype' names unknown element type {code}"))
}

fn build_window(ctx: &BuildCtx, kind: Window) -> OpResult<Box<dyn Kernel>> {
    let to = output_dtype(ctx)?;
    let periodic = ctx.node.attr_int("periodic")?.unwrap_or(1) != 0;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let size = scalar_i64_in(inputs, 0)?;
        let size = usize::try_from(size).map_err(|_| op_err!("window size {size} is negative"))?;
        ctx.check_alloc(size, 8)?;
        let t = Tensor::from_vec(vec![size], window_values(kind, size, periodic))?;
        Ok(vec![Value::Tensor(cast_tensor(&t, to, true)?)])
    }))
}

/// The MelWeightMatrix, `[dft_length / 2 + 1, num_mel_bins]`, as f64.
fn mel_weights(
    ctx: &RunCtx,
    num_mel_bins: i64,
    dft_length: i64,
    sample_rate: i64,
    lower_hz: f64,
    upper_hz: f64,
) -> OpResult<(Vec<usize>, Vec<f64>)> {
    let mels = usize::try_from(num_mel_bins)
        .map_err(|_| op_err!("num_mel_bins {num_mel_bins} is negative"))?;
    let dft =
        usize::try_from(dft_length).map_err(|_| op_err!("dft_length {dft_length} is negative"))?;
    if sample_rate <= 0 {
        return Err(op_err!("sample_rate must be positive but is {sample_rate}"));
    }
    let spec_bins = dft / 2 + 1;
    let total = spec_bins
        .checked_mul(mels)
        .ok_or_else(|| op_err!("MelWeightMatrix output is too large"))?;
    ctx.check_alloc(total, 8)?;
    // the mel edges in float32, as the reference computes them
    let to_mel = |hz: f64| (2595.0f32 * ((hz as f32) / 700.0).ln_1p() / 10f32.ln()) as f64;
    let low = to_mel(lower_hz);
    let high = to_mel(upper_hz);
    let step = (high - low) / (mels + 2) as f64;
    let points: Vec<i64> = (0..mels + 2)
        .map(|i| {
            let mel = i as f64 * step + low;
            let hz = 700.0 * (mel / 2595.0 * 10f64.ln()).exp_m1();
            (((dft_length + 1) as f64 * hz) / sample_rate as f64).floor() as i64
        })
        .collect();
    let mut out = vec![0f64; total];
    let mut set = |row: i64, col: usize, v: f64| -> OpResult<()> {
        let r = usize::try_from(row)
            .ok()
            .filter(|&r| r < spec_bins)
            .ok_or_else(|| op_err!("mel filter edge {row} is outside 0..{spec_bins}"))?;
        out[r * mels + col] = v;
        Ok(())
    };
    for i in 0..mels {
        let (lo, center, hi) = (points[i], points[i + 1], points[i + 2]);
        let up = center - lo;
        if up == 0 {
            set(center, i, 1.0)?;
        } else {
            for j in lo..=center {
                set(j, i, (j - lo) as f64 / up as f64)?;
            }
        }
        let down = hi - center;
        if down > 0 {
            for j in center..hi {
                set(j, i, (hi - j) as f64 / down as f64)?;
            }
        }
    }
    Ok((vec![spec_bins, mels], out))
}

fn build_mel_weight_matrix(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let to = output_dtype(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let f = |i: usize| -> OpResult<f64> {
            match tensor_in(inputs, i)?.to_f64_vec()?.as_slice() {
                [x] => Ok(*x),
                _ => Err(op_err!("input {i} should be a scalar")),
            }
        };
        let (shape, v) = mel_weights(
            ctx,
            scalar_i64_in(inputs, 0)?,
            scalar_i64_in(inputs, 1)?,
            scalar_i64_in(inputs, 2)?,
            f(3)?,
            f(4)?,
        )?;
        let t = Tensor::from_vec(shape, v)?;
        Ok(vec![Value::Tensor(cast_tensor(&t, to, true)?)])
    }))
}

/// Which ai.onnx.preview.training optimizer a node applies.
#[derive(Clone, Copy)]
enum Optimizer {
    Adagrad {
        decay: f64,
        epsilon: f64,
        norm: f64,
    },
    Adam {
        alpha: f64,
        beta: f64,
        epsilon: f64,
        norm: f64,
        norm_post: f64,
    },
    Momentum {
        alpha: f64,
        beta: f64,
        norm: f64,
        nesterov: bool,
    },
}

impl Optimizer {
    /// Tensors per optimized value: X, G and one or two states.
    fn group(self) -> usize {
        match self {
            Optimizer::Adam { .. } => 4,
            _ => 3,
        }
    }
}

fn build_optimizer(ctx: &BuildCtx, kind: &str) -> OpResult<Box<dyn Kernel>> {
    let n = ctx.node;
    let f = |name: &str, default: Option<f32>| -> OpResult<f64> {
        n.attr_float(name)?
            .or(default)
            .map(f64::from)
            .ok_or_else(|| op_err!("attribute '{name}' is required"))
    };
    let opt = match kind {
        "Adagrad" => Optimizer::Adagrad {
            decay: f("decay_factor", Some(0.0))?,
            epsilon: f("epsilon", Some(1e-6))?,
            norm: f("norm_coefficient", Some(0.0))?,
        },
        "Adam" => Optimizer::Adam {
            alpha: f("alpha", Some(0.9))?,
            beta: f("beta", Some(0.999))?,
            epsilon: f("epsilon", Some(1e-6))?,
            norm: f("norm_coefficient", Some(0.0))?,
            norm_post: f("norm_coefficient_post", Some(0.0))?,
        },
        _ => {
            let mode = n
                .attr_string("mode")?
                .ok_or_else(|| op_err!("attribute 'mode' is required"))?;
            let nesterov = match mode.as_str() {
                "standard" => false,
                "nesterov" => true,
                other => return Err(op_err!("unknown Momentum mode '{other}'")),
            };
            Optimizer::Momentum {
                alpha: f("alpha", None)?,
                beta: f("beta", None)?,
                norm: f("norm_coefficient", None)?,
                nesterov,
            }
        }
    };
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        run_optimizer(opt, inputs)
    }))
}

fn run_optimizer(opt: Optimizer, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let r =
        opt_scalar_f64_in(inputs, 0)?.ok_or_else(|| op_err!("the learning rate R is missing"))?;
    let t = scalar_i64_in(inputs, 1)? as f64;
    let g = opt.group();
    let rest = inputs.len().saturating_sub(2);
    let count = rest / g;
    if count == 0 || count * g != rest {
        return Err(op_err!(
            "expected 2 + {g} x N inputs but got {}",
            inputs.len()
        ));
    }
    // outputs: all new X, then each state kind for all values
    let mut outs: Vec<Vec<Value>> = vec![Vec::with_capacity(count); g - 1];
    for i in 0..count {
        let ts: Vec<&Tensor> = (0..g)
            .map(|k| tensor_in(inputs, 2 + k * count + i))
            .collect::<OpResult<_>>()?;
        let x = ts[0];
        let vals: Vec<Vec<f64>> = ts
            .iter()
            .map(|t| {
                if t.shape() != x.shape() {
                    return Err(op_err!(
                        "optimizer inputs have shapes {:?} and {:?}",
                        x.shape(),
                        t.shape()
                    ));
                }
                Ok(t.to_f64_vec()?)
            })
            .collect::<OpResult<_>>()?;
        let len = x.len();
        let mut new: Vec<Vec<f64>> = vec![Vec::with_capacity(len); g - 1];
        // j indexes X, G and the states alike
        #[allow(clippy::needless_range_loop)]
        for j in 0..len {
            let (xv, gv) = (vals[0][j], vals[1][j]);
            match opt {
                Optimizer::Adagrad {
                    decay,
                    epsilon,
                    norm,
                } => {
                    let rate = r / (1.0 + t * decay);
                    let gr = norm * xv + gv;
                    let h = vals[2][j] + gr * gr;
                    new[0].push(xv - rate * gr / (h.sqrt() + epsilon));
                    new[1].push(h);
                }
                Optimizer::Adam {
                    alpha,
                    beta,
                    epsilon,
                    norm,
                    norm_post,
                } => {
                    let gr = norm * xv + gv;
                    let v = alpha * vals[2][j] + (1.0 - alpha) * gr;
                    let h = beta * vals[3][j] + (1.0 - beta) * gr * gr;
                    let rate = if t > 0.0 {
                        r * (1.0 - beta.powf(t)).sqrt() / (1.0 - alpha.powf(t))
                    } else {
                        r
                    };
                    let xn = xv - rate * (v / (h.sqrt() + epsilon));
                    new[0].push((1.0 - norm_post) * xn);
                    new[1].push(v);
                    new[2].push(h);
                }
                Optimizer::Momentum {
                    alpha,
                    beta,
                    norm,
                    nesterov,
                } => {
                    let gr = norm * xv + gv;
                    let b = if t > 0.0 { beta } else { 1.0 };
                    let v = alpha * vals[2][j] + b * gr;
                    let xn = if nesterov {
                        xv - r * (gr + alpha * v)
                    } else {
                        xv - r * v
                    };
                    new[0].push(xn);
                    new[1].push(v);
                }
            }
        }
        for (k, v) in new.into_iter().enumerate() {
            // output k has the type of input group k (X, then the states)
            let like = if k == 0 { ts[0] } else { ts[k + 1] };
            let out = Tensor::from_vec(like.shape().to_vec(), v)?;
            outs[k].push(Value::Tensor(cast_tensor(&out, like.dtype(), false)?));
        }
    }
    Ok(outs.into_iter().flatten().collect())
}

fn build_binarizer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let threshold = f64::from(ctx.node.attr_float("threshold")?.unwrap_or(0.0));
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        if x.dtype() == DType::String || x.dtype() == DType::Bool {
            return Err(op_err!(
                "Binarizer needs a numeric input, got {}",
                x.dtype()
            ));
        }
        let v: Vec<f64> = x
            .to_f64_vec()?
            .into_iter()
            .map(|a| if a > threshold { 1.0 } else { 0.0 })
            .collect();
        let t = Tensor::from_vec(x.shape().to_vec(), v)?;
        Ok(vec![Value::Tensor(cast_tensor(&t, x.dtype(), false)?)])
    }))
}

fn run_array_feature_extractor(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let x = tensor_in(inputs, 0)?;
    let idx = tensor_in(inputs, 1)?.to_i64_vec()?;
    let shape = x.shape();
    let last = *shape
        .last()
        .ok_or_else(|| op_err!("ArrayFeatureExtractor needs an input of rank 1 or more"))?;
    let cols: Vec<usize> = idx
        .iter()
        .map(|&i| {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < last)
                .ok_or_else(|| op_err!("index {i} is out of range for a last dimension of {last}"))
        })
        .collect::<OpResult<_>>()?;
    let rows = x.len() / last.max(1);
    let out_shape = if shape.len() == 1 {
        vec![1, cols.len()]
    } else {
        let mut s = shape[..shape.len() - 1].to_vec();
        s.push(cols.len());
        s
    };
    let rows = if last == 0 { 0 } else { rows };
    let picks = (0..rows).flat_map(|r| cols.iter().map(move |&c| r * last + c));
    Ok(vec![Value::Tensor(x.gather_flat(out_shape, picks)?)])
}

/// A LabelEncoder key: strings and integers exactly, floats by bit pattern.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    S(String),
    I(i64),
    F(u64),
}

fn float_key(x: f64) -> Key {
    if x.is_nan() {
        Key::F(f64::NAN.to_bits())
    } else {
        Key::F((x + 0.0).to_bits())
    }
}

fn keys_of(t: &Tensor) -> OpResult<Vec<Key>> {
    Ok(match t.data() {
        onyx_tensor::Data::Str(v) => v.iter().cloned().map(Key::S).collect(),
        _ if t.dtype().is_float() => t.to_f64_vec()?.into_iter().map(float_key).collect(),
        _ => t.to_i64_vec()?.into_iter().map(Key::I).collect(),
    })
}

fn build_label_encoder(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let n = ctx.node;
    let list = |t: Result<Tensor, onyx_tensor::TensorError>| t.map_err(super::OpError::from);
    // opset 1: classes_strings maps strings to their index and back
    if let Some(classes) = n.attr_strings("classes_strings")? {
        let count = classes.len();
        let str_keys = list(Tensor::from_vec(vec![count], classes))?;
        let idx = list(Tensor::from_vec(vec![count], (0..count as i64).collect()))?;
        let default_int = n.attr_int("default_int64")?.unwrap_or(-1);
        let default_str = n
            .attr_string("default_string")?
            .unwrap_or_else(|| "_Unused".into());
        let to_int = LabelTable::new(&str_keys, &idx, Tensor::scalar(default_int))?;
        let to_str = LabelTable::new(&idx, &str_keys, Tensor::scalar(default_str))?;
        return Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let x = tensor_in(inputs, 0)?;
            let table = if x.dtype() == DType::String {
                &to_int
            } else {
                &to_str
            };
            table.apply(ctx, x)
        }));
    }
    let keys = if let Some(t) = n.attr_tensor("keys_tensor")? {
        t
    } else if let Some(v) = n.attr_strings("keys_strings")? {
        list(Tensor::from_vec(vec![v.len()], v))?
    } else if let Some(v) = n.attr_ints("keys_int64s")? {
        list(Tensor::from_vec(vec![v.len()], v))?
    } else if let Some(v) = n.attr_floats("keys_floats")? {
        list(Tensor::from_vec(vec![v.len()], v))?
    } else {
        return Err(op_err!("LabelEncoder has no keys attribute"));
    };
    let (values, default) = if let Some(t) = n.attr_tensor("values_tensor")? {
        let d = match n.attr_tensor("default_tensor")? {
            Some(d) => d,
            None if t.dtype() == DType::String => Tensor::scalar("_Unused".to_string()),
            None if t.dtype().is_float() => cast_tensor(&Tensor::scalar(-0.0f64), t.dtype(), true)?,
            None => cast_tensor(&Tensor::scalar(-1i64), t.dtype(), true)?,
        };
        (t, d)
    } else if let Some(v) = n.attr_strings("values_strings")? {
        let d = n
            .attr_string("default_string")?
            .unwrap_or_else(|| "_Unused".into());
        (list(Tensor::from_vec(vec![v.len()], v))?, Tensor::scalar(d))
    } else if let Some(v) = n.attr_ints("values_int64s")? {
        let d = n.attr_int("default_int64")?.unwrap_or(-1);
        (list(Tensor::from_vec(vec![v.len()], v))?, Tensor::scalar(d))
    } else if let Some(v) = n.attr_floats("values_floats")? {
        let d = n.attr_float("default_float")?.unwrap_or(-0.0);
        (list(Tensor::from_vec(vec![v.len()], v))?, Tensor::scalar(d))
    } else {
        return Err(op_err!("LabelEncoder has no values attribute"));
    };
    let table = LabelTable::new(&keys, &values, default)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        table.apply(ctx, tensor_in(inputs, 0)?)
    }))
}

/// Key -> position in `values`, whose last entry is the default.
struct LabelTable {
    index: std::collections::HashMap<Key, usize>,
    values: Tensor,
}

impl LabelTable {
    fn new(keys: &Tensor, values: &Tensor, default: Tensor) -> OpResult<LabelTable> {
        if keys.len() != values.len() {
            return Err(op_err!(
                "LabelEncoder has {} keys but {} values",
                keys.len(),
                values.len()
            ));
        }
        if default.len() != 1 || default.dtype() != values.dtype() {
            return Err(op_err!(
                "the default should be one {} value",
                values.dtype()
            ));
        }
        let mut index = std::collections::HashMap::new();
        for (i, k) in keys_of(keys)?.into_iter().enumerate() {
            index.entry(k).or_insert(i);
        }
        let flat = values.clone().reshape(vec![values.len()])?;
        let def = default.reshape(vec![1])?;
        let values = super::sequence::concat_parts(&[&flat, &def], 0, false)?;
        Ok(LabelTable { index, values })
    }

    fn apply(&self, ctx: &RunCtx, x: &Tensor) -> OpResult<Vec<Value>> {
        ctx.check_alloc(x.len(), self.values.dtype().size_in_memory().max(1))?;
        let missing = self.values.len() - 1;
        let picks: Vec<usize> = keys_of(x)?
            .iter()
            .map(|k| self.index.get(k).copied().unwrap_or(missing))
            .collect();
        Ok(vec![Value::Tensor(
            self.values
                .gather_flat(x.shape().to_vec(), picks.into_iter())?,
        )])
    }
}

/// A parsed ai.onnx.ml TreeEnsemble (opset 5).
struct Trees {
    modes: Vec<u8>,
    splits: Vec<f64>,
    features: Vec<usize>,
    true_ids: Vec<usize>,
    false_ids: Vec<usize>,
    true_leaf: Vec<bool>,
    false_leaf: Vec<bool>,
    missing_true: Vec<bool>,
    /// The member set of each BRANCH_MEMBER node (empty for other modes).
    members: Vec<Vec<f64>>,
    leaf_targets: Vec<usize>,
    leaf_weights: Vec<f64>,
    roots: Vec<usize>,
    n_targets: usize,
    aggregate: i64,
    post: i64,
}

fn build_tree_ensemble(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let n = ctx.node;
    let ints = |name: &str| -> OpResult<Vec<i64>> {
        n.attr_ints(name)?
            .ok_or_else(|| op_err!("attribute '{name}' is required"))
    };
    let tensor = |name: &str| -> OpResult<Tensor> {
        n.attr_tensor(name)?
            .ok_or_else(|| op_err!("attribute '{name}' is required"))
    };
    let count = |v: Vec<i64>, what: &str| -> OpResult<Vec<usize>> {
        v.into_iter()
            .map(|i| usize::try_from(i).map_err(|_| op_err!("'{what}' holds negative index {i}")))
            .collect()
    };
    let modes: Vec<u8> = tensor("nodes_modes")?
        .to_i64_vec()?
        .into_iter()
        .map(|m| match u8::try_from(m) {
            Ok(m) if m <= 6 => Ok(m),
            _ => Err(op_err!("unknown node mode {m}")),
        })
        .collect::<OpResult<_>>()?;
    let nodes = modes.len();
    let splits = tensor("nodes_splits")?.to_f64_vec()?;
    let features = count(ints("nodes_featureids")?, "nodes_featureids")?;
    let true_ids = count(ints("nodes_truenodeids")?, "nodes_truenodeids")?;
    let false_ids = count(ints("nodes_falsenodeids")?, "nodes_falsenodeids")?;
    let true_leaf: Vec<bool> = ints("nodes_trueleafs")?.iter().map(|&v| v != 0).collect();
    let false_leaf: Vec<bool> = ints("nodes_falseleafs")?.iter().map(|&v| v != 0).collect();
    let missing_true: Vec<bool> = match n.attr_ints("nodes_missing_value_tracks_true")? {
        Some(v) => v.iter().map(|&x| x != 0).collect(),
        None => vec![false; nodes],
    };
    let lens = [
        splits.len(),
        features.len(),
        true_ids.len(),
        false_ids.len(),
        true_leaf.len(),
        false_leaf.len(),
        missing_true.len(),
    ];
    if lens.iter().any(|&l| l != nodes) {
        return Err(op_err!(
            "the nodes_* attributes have different lengths: {nodes} modes and {lens:?}"
        ));
    }
    let leaf_targets = count(ints("leaf_targetids")?, "leaf_targetids")?;
    let leaf_weights = tensor("leaf_weights")?.to_f64_vec()?;
    if leaf_targets.len() != leaf_weights.len() {
        return Err(op_err!(
            "{} leaf_targetids but {} leaf_weights",
            leaf_targets.len(),
            leaf_weights.len()
        ));
    }
    let n_targets = n
        .attr_int("n_targets")?
        .ok_or_else(|| op_err!("attribute 'n_targets' is required"))?;
    let n_targets =
        usize::try_from(n_targets).map_err(|_| op_err!("n_targets {n_targets} is negative"))?;
    if let Some(t) = leaf_targets.iter().find(|&&t| t >= n_targets) {
        return Err(op_err!(
            "leaf target {t} is not below n_targets {n_targets}"
        ));
    }
    let mut members = vec![Vec::new(); nodes];
    let member_nodes: Vec<usize> = (0..nodes).filter(|&i| modes[i] == 6).collect();
    if !member_nodes.is_empty() {
        let values = tensor("membership_values")?.to_f64_vec()?;
        let sets: Vec<Vec<f64>> = values.split(|v| v.is_nan()).map(|s| s.to_vec()).collect();
        if sets.len() < member_nodes.len() {
            return Err(op_err!(
                "membership_values has {} sets for {} BRANCH_MEMBER nodes",
                sets.len(),
                member_nodes.len()
            ));
        }
        for (node, set) in member_nodes.into_iter().zip(sets) {
            members[node] = set;
        }
    }
    let roots = count(ints("tree_roots")?, "tree_roots")?;
    if let Some(r) = roots.iter().find(|&&r| r >= nodes) {
        return Err(op_err!("tree root {r} is not a node (there are {nodes})"));
    }
    let aggregate = n.attr_int("aggregate_function")?.unwrap_or(1);
    if !(0..=3).contains(&aggregate) {
        return Err(op_err!("unknown aggregate_function {aggregate}"));
    }
    let post = n.attr_int("post_transform")?.unwrap_or(0);
    if !(0..=3).contains(&post) {
        return Err(op_err!("post_transform {post} is not supported"));
    }
    let trees = Trees {
        modes,
        splits,
        features,
        true_ids,
        false_ids,
        true_leaf,
        false_leaf,
        missing_true,
        members,
        leaf_targets,
        leaf_weights,
        roots,
        n_targets,
        aggregate,
        post,
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        trees.run(ctx, tensor_in(inputs, 0)?)
    }))
}

impl Trees {
    /// The leaf a row reaches from `root`.
    fn leaf(&self, row: &[f64], root: usize) -> OpResult<usize> {
        let mut node = root;
        // a well-formed tree visits each node at most once
        for _ in 0..=self.modes.len() {
            let x = *row.get(self.features[node]).ok_or_else(|| {
                op_err!(
                    "feature {} is out of range for rows of {}",
                    self.features[node],
                    row.len()
                )
            })?;
            let s = self.splits[node];
            let hit = (x.is_nan() && self.missing_true[node])
                || match self.modes[node] {
                    0 => x <= s,
                    1 => x < s,
                    2 => x >= s,
                    3 => x > s,
                    4 => x == s,
                    5 => x != s,
                    _ => self.members[node].contains(&x),
                };
            let (next, is_leaf) = if hit {
                (self.true_ids[node], self.true_leaf[node])
            } else {
                (self.false_ids[node], self.false_leaf[node])
            };
            if is_leaf {
                if next >= self.leaf_weights.len() {
                    return Err(op_err!("leaf index {next} is out of range"));
                }
                return Ok(next);
            }
            if next >= self.modes.len() {
                return Err(op_err!("node index {next} is out of range"));
            }
            node = next;
        }
        Err(op_err!("the tree from root {root} has a cycle"))
    }

    fn run(&self, ctx: &RunCtx, x: &Tensor) -> OpResult<Vec<Value>> {
        if !x.dtype().is_float() {
            return Err(op_err!(
                "TreeEnsemble needs a float input, got {}",
                x.dtype()
            ));
        }
        let (rows, cols) = match x.shape() {
            [r, c] => (*r, *c),
            [c] => (1, *c),
            s => return Err(op_err!("TreeEnsemble needs a 2-D input, got shape {s:?}")),
        };
        let total = rows
            .checked_mul(self.n_targets)
            .ok_or_else(|| op_err!("TreeEnsemble output is too large"))?;
        ctx.check_alloc(total, 8)?;
        let v = x.to_f64_vec()?;
        // MIN and MAX start from the largest finite value of the element type
        let big = match x.dtype() {
            DType::Double => f64::MAX,
            DType::Float16 => 65504.0,
            DType::BFloat16 => onyx_tensor::bf16::MAX.to_f64(),
            _ => f64::from(f32::MAX),
        };
        let init = match self.aggregate {
            2 => big,
            3 => -big,
            _ => 0.0,
        };
        let mut out = vec![init; total];
        let trees = self.roots.len().max(1) as f64;
        for r in 0..rows {
            let row = &v[r * cols..(r + 1) * cols];
            let acc = &mut out[r * self.n_targets..(r + 1) * self.n_targets];
            for &root in &self.roots {
                let leaf = self.leaf(row, root)?;
                let (w, t) = (self.leaf_weights[leaf], self.leaf_targets[leaf]);
                acc[t] = match self.aggregate {
                    0 => acc[t] + w / trees,
                    2 => acc[t].min(w),
                    3 => acc[t].max(w),
                    _ => acc[t] + w,
                };
            }
            match self.post {
                2 => acc.iter_mut().for_each(|a| *a = 1.0 / (1.0 + (-*a).exp())),
                1 | 3 => {
                    let zero_stays = self.post == 3;
                    let max = acc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                    let mut sum = 0.0;
                    for a in acc.iter_mut() {
                        if !(zero_stays && *a == 0.0) {
                            *a = (*a - max).exp();
                            sum += *a;
                        }
                    }
                    if sum > 0.0 {
                        for a in acc.iter_mut() {
                            *a /= sum;
                        }
                    }
                }
                _ => {}
            }
        }
        let t = Tensor::from_vec(vec![rows, self.n_targets], out)?;
        Ok(vec![Value::Tensor(cast_tensor(&t, x.dtype(), false)?)])
    }
}

pub fn register(r: &mut Registry) {
    r.add("", "Dropout", build_dropout);
    r.add("", "DFT", build_dft);
    r.add("", "STFT", build_stft);
    r.add("", "HannWindow", |c| build_window(c, Window::Hann));
    r.add("", "HammingWindow", |c| build_window(c, Window::Hamming));
    r.add("", "BlackmanWindow", |c| build_window(c, Window::Blackman));
    r.add("", "MelWeightMatrix", build_mel_weight_matrix);
    const TRAINING: &str = "ai.onnx.preview.training";
    r.add(TRAINING, "Adagrad", |c| build_optimizer(c, "Adagrad"));
    r.add(TRAINING, "Adam", |c| build_optimizer(c, "Adam"));
    r.add(TRAINING, "Momentum", |c| build_optimizer(c, "Momentum"));
    r.add("ai.onnx.ml", "Binarizer", build_binarizer);
    r.add("ai.onnx.ml", "ArrayFeatureExtractor", |_| {
        Ok(Box::new(run_array_feature_extractor))
    });
    r.add("ai.onnx.ml", "LabelEncoder", build_label_encoder);
    r.add("ai.onnx.ml", "TreeEnsemble", build_tree_ensemble);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_are_in_unit_interval() {
        // the first outputs of numpy.random.RandomState(0).random_sample()
        let mut rng = Mt19937::new(0);
        assert!((rng.next_f64() - 0.548_813_503_927_325).abs() < 1e-15);
        assert!((rng.next_f64() - 0.715_189_366_372_419_1).abs() < 1e-15);
        let v: Vec<f64> = (0..1000).map(|_| rng.next_f64()).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }

    #[test]
    fn dft_of_a_short_line() {
        // DFT of [1, 2, 3, 4] is [10, -2+2i, -2, -2-2i]
        let x = [(1.0, 0.0), (2.0, 0.0), (3.0, 0.0), (4.0, 0.0)];
        let tw = twiddles(4);
        let mut out = [(0.0, 0.0); 4];
        dft_line(&x, &tw, false, &mut out);
        let want = [(10.0, 0.0), (-2.0, 2.0), (-2.0, 0.0), (-2.0, -2.0)];
        for (a, b) in out.iter().zip(&want) {
            assert!((a.0 - b.0).abs() < 1e-9 && (a.1 - b.1).abs() < 1e-9);
        }
        // the inverse (unscaled) gives back 4x the signal
        let mut back = [(0.0, 0.0); 4];
        dft_line(&out, &tw, true, &mut back);
        for (a, b) in back.iter().zip(&x) {
            assert!((a.0 - 4.0 * b.0).abs() < 1e-9 && a.1.abs() < 1e-9);
        }
    }

    #[test]
    fn windows() {
        let h = window_values(Window::Hann, 4, true);
        let want = [0.0, 0.5, 1.0, 0.5];
        assert!(h.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-12));
        let b = window_values(Window::Blackman, 3, false);
        assert!((b[0]).abs() < 1e-12 && (b[1] - 1.0).abs() < 1e-12);
        let m = window_values(Window::Hamming, 2, true);
        assert!((m[0] - (25.0 / 46.0 - 21.0 / 46.0)).abs() < 1e-12);
    }

    #[test]
    fn momentum_step() {
        let opt = Optimizer::Momentum {
            alpha: 0.9,
            beta: 0.5,
            norm: 0.0,
            nesterov: false,
        };
        let r = Value::Tensor(Tensor::scalar(0.1f32));
        let t = Value::Tensor(Tensor::scalar(0i64));
        let x = Value::Tensor(Tensor::from_vec(vec![1], vec![1.0f32]).unwrap());
        let g = Value::Tensor(Tensor::from_vec(vec![1], vec![2.0f32]).unwrap());
        let v = Value::Tensor(Tensor::from_vec(vec![1], vec![0.0f32]).unwrap());
        let out = run_optimizer(opt, &[Some(&r), Some(&t), Some(&x), Some(&g), Some(&v)]).unwrap();
        // first step: beta is taken as 1, so v = 2 and x = 1 - 0.1 * 2
        let x1 = out[0].as_tensor().unwrap().as_slice::<f32>().unwrap()[0];
        let v1 = out[1].as_tensor().unwrap().as_slice::<f32>().unwrap()[0];
        assert!((x1 - 0.8).abs() < 1e-6 && (v1 - 2.0).abs() < 1e-6);
        assert!(run_optimizer(opt, &[Some(&r), Some(&t), Some(&x)]).is_err());
    }

    #[test]
    fn ml_operators_in_a_model() {
        use std::collections::BTreeMap;

        use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
        use crate::{Session, SessionOptions};

        let node = |op: &str, ins: &[&str], outs: &[&str], attrs: Vec<(&str, Attr)>| Node {
            name: String::new(),
            op_type: op.into(),
            domain: "ai.onnx.ml".into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: outs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let graph = Graph {
            nodes: vec![
                node(
                    "LabelEncoder",
                    &["s"],
                    &["codes"],
                    vec![
                        ("keys_strings", Attr::Strings(vec!["a".into(), "b".into()])),
                        ("values_int64s", Attr::Ints(vec![10, 20])),
                        ("default_int64", Attr::Int(7)),
                    ],
                ),
                node("ArrayFeatureExtractor", &["x", "i"], &["picked"], vec![]),
                node(
                    "Binarizer",
                    &["x"],
                    &["bin"],
                    vec![("threshold", Attr::Float(2.5))],
                ),
            ],
            inputs: vec![vi("s"), vi("x"), vi("i")],
            outputs: vec![vi("codes"), vi("picked"), vi("bin")],
            ..Graph::default()
        };
        let model = Model {
            opsets: BTreeMap::from([(String::new(), 17), ("ai.onnx.ml".to_string(), 3)]),
            graph,
            ..Model::default()
        };
        let s = Session::from_model(model, SessionOptions::default()).unwrap();
        let strs = vec!["b".to_string(), "z".into(), "a".into()];
        let out = s
            .run(vec![
                ("s".into(), Tensor::from_vec(vec![3], strs).unwrap().into()),
                (
                    "x".into(),
                    Tensor::from_vec(vec![2, 2], vec![1.0f32, 2.0, 3.0, 4.0])
                        .unwrap()
                        .into(),
                ),
                (
                    "i".into(),
                    Tensor::from_vec(vec![1], vec![1i64]).unwrap().into(),
                ),
            ])
            .unwrap();
        let t = |v: &Value| v.as_tensor().unwrap().clone();
        assert_eq!(t(&out[0]).to_i64_vec().unwrap(), vec![20, 7, 10]);
        assert_eq!(t(&out[1]).shape(), &[2, 1]);
        assert_eq!(t(&out[1]).as_slice::<f32>().unwrap(), &[2.0, 4.0]);
        assert_eq!(t(&out[2]).as_slice::<f32>().unwrap(), &[0.0, 0.0, 1.0, 1.0]);
    }

    #[test]
    fn tree_walks_to_leaves() {
        // node 0: x0 <= 1 ? leaf 0 : node 1; node 1: x0 in {5, 6} ? leaf 1 : leaf 2
        let trees = Trees {
            modes: vec![0, 6],
            splits: vec![1.0, 0.0],
            features: vec![0, 0],
            true_ids: vec![0, 1],
            false_ids: vec![1, 2],
            true_leaf: vec![true, true],
            false_leaf: vec![false, true],
            missing_true: vec![true, false],
            members: vec![vec![], vec![5.0, 6.0]],
            leaf_targets: vec![0, 0, 0],
            leaf_weights: vec![1.0, 2.0, 3.0],
            roots: vec![0],
            n_targets: 1,
            aggregate: 1,
            post: 0,
        };
        assert_eq!(trees.leaf(&[0.5], 0).unwrap(), 0);
        assert_eq!(trees.leaf(&[6.0], 0).unwrap(), 1);
        assert_eq!(trees.leaf(&[7.0], 0).unwrap(), 2);
        assert_eq!(trees.leaf(&[f64::NAN], 0).unwrap(), 0);
        assert!(trees.leaf(&[], 0).is_err());
    }
}
