//! Signal processing: DFT, STFT, the Hann/Hamming/Blackman windows and
//! MelWeightMatrix.
//!
//! Everything is computed in f64 and converted to the output type at the
//! end. Complex tensors are real tensors whose last dimension holds
//! (real, imaginary); a last dimension of 1 means a real signal. The FFT
//! is radix-2 for powers of two, a direct sum for short lengths and
//! Bluestein's algorithm (on a power-of-two FFT) for the other lengths.

use std::f64::consts::PI;
use std::ops::{Add, Mul, Sub};

use onyx_tensor::{numel, DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{
    norm_axis, one, opt_ints_in, opt_scalar_f64_in, opt_tensor_in, scalar_i64_in, tensor_in,
    BuildCtx, Kernel, OpResult, Registry, RunCtx,
};
use crate::op_err;

/// A complex number in f64.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct C {
    re: f64,
    im: f64,
}

impl C {
    fn new(re: f64, im: f64) -> C {
        C { re, im }
    }

    fn conj(self) -> C {
        C::new(self.re, -self.im)
    }

    /// e^(-i angle).
    fn cis_neg(angle: f64) -> C {
        C::new(angle.cos(), -angle.sin())
    }

    fn scale(self, s: f64) -> C {
        C::new(self.re * s, self.im * s)
    }
}

impl Add for C {
    type Output = C;
    fn add(self, o: C) -> C {
        C::new(self.re + o.re, self.im + o.im)
    }
}

impl Sub for C {
    type Output = C;
    fn sub(self, o: C) -> C {
        C::new(self.re - o.re, self.im - o.im)
    }
}

impl Mul for C {
    type Output = C;
    fn mul(self, o: C) -> C {
        C::new(
            self.re * o.re - self.im * o.im,
            self.re * o.im + self.im * o.re,
        )
    }
}

/// Lengths up to this are transformed by the direct O(n^2) sum when they
/// are not powers of two (it is the most accurate and fast enough there).
const DIRECT_MAX: usize = 64;

/// e^(-2 pi i k / n) for k in 0..count, with k reduced mod n first.
fn twiddles(n: usize, count: usize) -> Vec<C> {
    (0..count)
        .map(|k| C::cis_neg(2.0 * PI * ((k % n) as f64) / n as f64))
        .collect()
}

/// A forward transform of one fixed length, with its tables.
pub(crate) struct Fft {
    n: usize,
    kind: FftKind,
}

enum FftKind {
    /// Direct sum; `tw[k] = e^(-2 pi i k / n)`.
    Direct(Vec<C>),
    /// Iterative radix-2; `tw[k] = e^(-2 pi i k / n)` for k < n/2.
    Radix2(Vec<C>),
    /// Bluestein: chirp `w[k] = e^(-pi i k^2 / n)`, the FFT of the
    /// convolution kernel, and the power-of-two FFT of length m.
    Bluestein {
        chirp: Vec<C>,
        kernel_fft: Vec<C>,
        inner: Box<Fft>,
    },
}

impl Fft {
    pub(crate) fn new(n: usize) -> OpResult<Fft> {
        let kind = if n.is_power_of_two() {
            FftKind::Radix2(twiddles(n, n / 2))
        } else if n <= DIRECT_MAX {
            FftKind::Direct(twiddles(n, n))
        } else {
            let m = n
                .checked_mul(2)
                .and_then(|x| x.checked_next_power_of_two())
                .ok_or_else(|| op_err!("DFT length {n} is too large"))?;
            let two_n = 2 * n as u128;
            let chirp: Vec<C> = (0..n)
                .map(|k| {
                    let k2 = (k as u128 * k as u128) % two_n;
                    C::cis_neg(PI * k2 as f64 / n as f64)
                })
                .collect();
            let mut kernel = vec![C::default(); m];
            kernel[0] = chirp[0].conj();
            for k in 1..n {
                kernel[k] = chirp[k].conj();
                kernel[m - k] = chirp[k].conj();
            }
            let inner = Fft::new(m)?;
            inner.forward(&mut kernel);
            FftKind::Bluestein {
                chirp,
                kernel_fft: kernel,
                inner: Box::new(inner),
            }
        };
        Ok(Fft { n, kind })
    }

    /// In place: `buf[k] = sum_j buf[j] e^(-2 pi i jk/n)`; `buf.len()` must be n.
    pub(crate) fn forward(&self, buf: &mut [C]) {
        let n = self.n;
        debug_assert_eq!(buf.len(), n);
        match &self.kind {
            FftKind::Direct(tw) => {
                let input = buf.to_vec();
                for (k, out) in buf.iter_mut().enumerate() {
                    let mut acc = C::default();
                    let mut idx = 0usize;
                    for &x in &input {
                        acc = acc + x * tw[idx];
                        idx += k;
                        if idx >= n {
                            idx -= n;
                        }
                    }
                    *out = acc;
                }
            }
            FftKind::Radix2(tw) => {
                if n <= 1 {
                    return;
                }
                let bits = n.trailing_zeros();
                for i in 0..n {
                    let j = i.reverse_bits() >> (usize::BITS - bits);
                    if i < j {
                        buf.swap(i, j);
                    }
                }
                let mut len = 2;
                while len <= n {
                    let half = len / 2;
                    let step = n / len;
                    for start in (0..n).step_by(len) {
                        for j in 0..half {
                            let t = buf[start + j + half] * tw[j * step];
                            let u = buf[start + j];
                            buf[start + j] = u + t;
                            buf[start + j + half] = u - t;
                        }
                    }
                    len *= 2;
                }
            }
            FftKind::Bluestein {
                chirp,
                kernel_fft,
                inner,
            } => {
                let m = inner.n;
                let mut a = vec![C::default(); m];
                for k in 0..n {
                    a[k] = buf[k] * chirp[k];
                }
                inner.forward(&mut a);
                for (x, &k) in a.iter_mut().zip(kernel_fft) {
                    *x = *x * k;
                }
                inner.inverse(&mut a);
                let s = 1.0 / m as f64;
                for k in 0..n {
                    buf[k] = a[k].scale(s) * chirp[k];
                }
            }
        }
    }

    /// In place: `buf[k] = sum_j buf[j] e^(+2 pi i jk/n)` (not divided by n).
    pub(crate) fn inverse(&self, buf: &mut [C]) {
        for x in buf.iter_mut() {
            *x = x.conj();
        }
        self.forward(buf);
        for x in buf.iter_mut() {
            *x = x.conj();
        }
    }
}

fn check_float_input(t: &Tensor, what: &str) -> OpResult<()> {
    match t.dtype() {
        DType::Float | DType::Double | DType::Float16 | DType::BFloat16 => Ok(()),
        other => Err(op_err!("{what} must be a float tensor, not {other}")),
    }
}

/// An f64 result converted to `dtype`.
fn finish(shape: Vec<usize>, values: Vec<f64>, dtype: DType) -> OpResult<Tensor> {
    let t = Tensor::from_vec(shape, values)?;
    cast_tensor(&t, dtype, true)
}

fn checked_product(dims: &[usize]) -> OpResult<usize> {
    numel(dims).ok_or_else(|| op_err!("shape {dims:?} is too large"))
}

/// The DFT of `x` (real `[..., 1]` or complex `[..., 2]`) along `axis`.
pub(crate) fn dft(
    ctx: &RunCtx,
    x: &Tensor,
    axis: i64,
    length: Option<i64>,
    inverse: bool,
    onesided: bool,
) -> OpResult<Tensor> {
    check_float_input(x, "DFT input")?;
    let shape = x.shape();
    let rank = shape.len();
    if rank < 2 {
        return Err(op_err!(
            "DFT input needs rank >= 2 (signal dims then 1 or 2 for real/complex), got shape {shape:?}"
        ));
    }
    let c = shape[rank - 1];
    if c != 1 && c != 2 {
        return Err(op_err!(
            "DFT input's last dimension must be 1 (real) or 2 (complex), got {c}"
        ));
    }
    let a = norm_axis(axis, rank)?;
    if a == rank - 1 {
        return Err(op_err!(
            "DFT axis {axis} names the last (real/imaginary) dimension of rank {rank}"
        ));
    }
    let n_in = shape[a];
    let irfft = inverse && onesided;
    let n = match length {
        Some(l) if l <= 0 => return Err(op_err!("dft_length must be positive, got {l}")),
        Some(l) => usize::try_from(l).map_err(|_| op_err!("dft_length {l} is too large"))?,
        None if irfft => {
            if n_in == 0 {
                return Err(op_err!("inverse one-sided DFT of an empty axis"));
            }
            2 * (n_in - 1)
        }
        None => n_in,
    };
    if n == 0 {
        return Err(op_err!("DFT length is 0 (axis {a} of shape {shape:?})"));
    }
    let (out_len, out_c) = if irfft {
        (n, 1)
    } else if onesided {
        (n / 2 + 1, 2)
    } else {
        (n, 2)
    };
    let outer = checked_product(&shape[..a])?;
    let inner = checked_product(&shape[a + 1..rank - 1])?;
    let mut out_shape = shape.to_vec();
    out_shape[a] = out_len;
    out_shape[rank - 1] = out_c;
    let total = checked_product(&out_shape)?;
    ctx.check_alloc(total, 8)?;
    // Bluestein's buffers for a length n hold up to 4n complex values.
    ctx.check_alloc(n.saturating_mul(4), 16)?;
    let xs = x.to_f64_vec()?;
    let plan = Fft::new(n)?;
    let mut out = vec![0.0f64; total];
    let mut buf = vec![C::default(); n];
    let take = if irfft {
        n_in.min(n / 2 + 1)
    } else {
        n_in.min(n)
    };
    let scale = 1.0 / n as f64;
    for o in 0..outer {
        for i in 0..inner {
            buf.fill(C::default());
            for (k, slot) in buf.iter_mut().enumerate().take(take) {
                let base = ((o * n_in + k) * inner + i) * c;
                let im = if c == 2 { xs[base + 1] } else { 0.0 };
                *slot = C::new(xs[base], im);
            }
            if irfft {
                // Hermitian completion, as numpy's irfft reads its input.
                buf[0].im = 0.0;
                if n % 2 == 0 {
                    buf[n / 2].im = 0.0;
                }
                for k in 1..=(n - 1) / 2 {
                    buf[n - k] = buf[k].conj();
                }
            }
            if inverse {
                plan.inverse(&mut buf);
                for v in buf.iter_mut() {
                    *v = v.scale(scale);
                }
            } else {
                plan.forward(&mut buf);
            }
            for (k, v) in buf.iter().enumerate().take(out_len) {
                let base = ((o * out_len + k) * inner + i) * out_c;
                out[base] = v.re;
                if out_c == 2 {
                    out[base + 1] = v.im;
                }
            }
        }
    }
    finish(out_shape, out, x.dtype())
}

/// A scalar input that may be omitted.
fn opt_scalar_i64_in(inputs: &[Option<&Value>], i: usize, what: &str) -> OpResult<Option<i64>> {
    match opt_ints_in(inputs, i)? {
        None => Ok(None),
        Some(v) => match v.as_slice() {
            [x] => Ok(Some(*x)),
            _ => Err(op_err!(
                "{what} should hold one value but holds {}",
                v.len()
            )),
        },
    }
}

fn build_dft(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let inverse = ctx.node.attr_int("inverse")?.unwrap_or(0) != 0;
    let onesided = ctx.node.attr_int("onesided")?.unwrap_or(0) != 0;
    // Before opset 20 the axis is an attribute (default 1), after an input (default -2).
    let axis_attr = if ctx.opset < 20 {
        Some(ctx.node.attr_int("axis")?.unwrap_or(1))
    } else {
        None
    };
    Ok(Box::new(move |rctx: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let length = opt_scalar_i64_in(inputs, 1, "dft_length")?;
        let axis = match axis_attr {
            Some(a) => a,
            None => opt_scalar_i64_in(inputs, 2, "axis")?.unwrap_or(-2),
        };
        one(dft(rctx, x, axis, length, inverse, onesided)?)
    }))
}

/// STFT of `signal` (`[batch, len]`, `[batch, len, 1]` or `[batch, len, 2]`).
pub(crate) fn stft(
    ctx: &RunCtx,
    signal: &Tensor,
    step: i64,
    window: Option<&Tensor>,
    frame_length: Option<i64>,
    onesided: bool,
) -> OpResult<Tensor> {
    check_float_input(signal, "STFT signal")?;
    let (batch, len, c) = match *signal.shape() {
        [b, l] => (b, l, 1),
        [b, l, c] if c == 1 || c == 2 => (b, l, c),
        _ => {
            return Err(op_err!(
                "STFT signal must be [batch, length] or [batch, length, 1 or 2], got {:?}",
                signal.shape()
            ))
        }
    };
    if step <= 0 {
        return Err(op_err!("STFT frame_step must be positive, got {step}"));
    }
    let step = usize::try_from(step).map_err(|_| op_err!("frame_step {step} is too large"))?;
    let window = match window {
        None => None,
        Some(w) => {
            if w.rank() != 1 {
                return Err(op_err!(
                    "STFT window must be 1-D, got shape {:?}",
                    w.shape()
                ));
            }
            Some(w.to_f64_vec()?)
        }
    };
    let fl = match (frame_length, &window) {
        (Some(l), Some(w)) => {
            if usize::try_from(l).ok() != Some(w.len()) {
                return Err(op_err!(
                    "STFT frame_length {l} differs from the window length {}",
                    w.len()
                ));
            }
            w.len()
        }
        (Some(l), None) => {
            usize::try_from(l).map_err(|_| op_err!("STFT frame_length {l} is negative"))?
        }
        (None, Some(w)) => w.len(),
        (None, None) => len,
    };
    if fl == 0 {
        return Err(op_err!("STFT frame length is 0"));
    }
    if fl > len {
        return Err(op_err!(
            "STFT frame length {fl} is longer than the signal ({len})"
        ));
    }
    let frames = 1 + (len - fl) / step;
    let bins = if onesided { fl / 2 + 1 } else { fl };
    let out_shape = vec![batch, frames, bins, 2];
    let total = checked_product(&out_shape)?;
    ctx.check_alloc(total, 8)?;
    ctx.check_alloc(fl.saturating_mul(4), 16)?;
    let xs = signal.to_f64_vec()?;
    let plan = Fft::new(fl)?;
    let mut out = vec![0.0f64; total];
    let mut buf = vec![C::default(); fl];
    for b in 0..batch {
        for f in 0..frames {
            let start = f * step;
            for (k, slot) in buf.iter_mut().enumerate() {
                let base = (b * len + start + k) * c;
                let w = window.as_ref().map_or(1.0, |w| w[k]);
                let im = if c == 2 { xs[base + 1] } else { 0.0 };
                *slot = C::new(xs[base] * w, im * w);
            }
            plan.forward(&mut buf);
            let obase = (b * frames + f) * bins * 2;
            for (k, v) in buf.iter().take(bins).enumerate() {
                out[obase + 2 * k] = v.re;
                out[obase + 2 * k + 1] = v.im;
            }
        }
    }
    finish(out_shape, out, signal.dtype())
}

fn build_stft(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let onesided = ctx.node.attr_int("onesided")?.unwrap_or(1) != 0;
    Ok(Box::new(move |rctx: &RunCtx, inputs: &[Option<&Value>]| {
        let signal = tensor_in(inputs, 0)?;
        let step = scalar_i64_in(inputs, 1)?;
        let window = opt_tensor_in(inputs, 2)?;
        let frame_length = opt_scalar_i64_in(inputs, 3, "frame_length")?;
        one(stft(rctx, signal, step, window, frame_length, onesided)?)
    }))
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum WindowKind {
    Hann,
    Hamming,
    Blackman,
}

/// The window's values in f64 (NaN for a symmetric window of one point).
pub(crate) fn window_values(kind: WindowKind, size: usize, periodic: bool) -> Vec<f64> {
    let denom = if periodic {
        size
    } else {
        size.saturating_sub(1)
    };
    (0..size)
        .map(|i| {
            // A symmetric window of size 1 divides 0 by 0 and is NaN, as in
            // ONNX's reference. The operations in the order ONNX's reference does them, so that
            // integer outputs truncate the same values.
            let (n, d) = (i as f64, denom as f64);
            match kind {
                WindowKind::Hann => (n * PI / d).sin().powi(2),
                WindowKind::Hamming => {
                    let alpha = 25.0 / 46.0;
                    alpha - (n * PI * 2.0 / d).cos() * (1.0 - alpha)
                }
                WindowKind::Blackman => {
                    (n * (PI * 2.0) / d).cos() * -0.5 + (n * (PI * 4.0) / d).cos() * 0.08 + 0.42
                }
            }
        })
        .collect()
}

fn output_datatype(ctx: &BuildCtx) -> OpResult<DType> {
    let code = ctx.node.attr_int("output_datatype")?.unwrap_or(1);
    let dtype = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("output_datatype {code} is not a known element type"))?;
    if !(dtype.is_float() && !dtype.is_minifloat()
        || dtype.is_signed_int()
        || dtype.is_unsigned_int())
        || matches!(
            dtype,
            DType::Int4 | DType::Uint4 | DType::Int2 | DType::Uint2 | DType::Bool
        )
    {
        return Err(op_err!("output_datatype {dtype} is not supported"));
    }
    Ok(dtype)
}

fn build_window(ctx: &BuildCtx, kind: WindowKind) -> OpResult<Box<dyn Kernel>> {
    let periodic = ctx.node.attr_int("periodic")?.unwrap_or(1) != 0;
    let dtype = output_datatype(ctx)?;
    Ok(Box::new(move |rctx: &RunCtx, inputs: &[Option<&Value>]| {
        let size = scalar_i64_in(inputs, 0)?;
        let size = usize::try_from(size).map_err(|_| op_err!("window size {size} is negative"))?;
        rctx.check_alloc(size, 8)?;
        one(finish(
            vec![size],
            window_values(kind, size, periodic),
            dtype,
        )?)
    }))
}

fn build_hann(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    build_window(ctx, WindowKind::Hann)
}

fn build_hamming(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    build_window(ctx, WindowKind::Hamming)
}

fn build_blackman(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    build_window(ctx, WindowKind::Blackman)
}

/// The `[dft_length / 2 + 1, num_mel_bins]` matrix of triangular mel
/// filters, laid out as ONNX's reference lays them.
pub(crate) fn mel_weight_matrix(
    ctx: &RunCtx,
    num_mel_bins: i64,
    dft_length: i64,
    sample_rate: i64,
    lower_hz: f64,
    upper_hz: f64,
) -> OpResult<(Vec<usize>, Vec<f64>)> {
    let mels = usize::try_from(num_mel_bins)
        .map_err(|_| op_err!("num_mel_bins {num_mel_bins} is negative"))?;
    if dft_length <= 0 {
        return Err(op_err!("dft_length must be positive, got {dft_length}"));
    }
    if sample_rate <= 0 {
        return Err(op_err!("sample_rate must be positive, got {sample_rate}"));
    }
    let spec_bins = usize::try_from(dft_length / 2 + 1)
        .map_err(|_| op_err!("dft_length {dft_length} is too large"))?;
    let total = spec_bins
        .checked_mul(mels)
        .ok_or_else(|| op_err!("a {spec_bins} x {mels} matrix is too large"))?;
    ctx.check_alloc(total, 8)?;
    let to_mel = |hz: f64| 2595.0 * (hz / 700.0).ln_1p() / std::f64::consts::LN_10;
    let low_mel = to_mel(lower_hz);
    let high_mel = to_mel(upper_hz);
    let points = mels + 2;
    let mel_step = (high_mel - low_mel) / points as f64;
    let mut edges = Vec::with_capacity(points);
    for i in 0..points {
        let mel = i as f64 * mel_step + low_mel;
        let hz = 700.0 * (mel / 2595.0 * std::f64::consts::LN_10).exp_m1();
        let bin = ((dft_length as f64 + 1.0) * hz / sample_rate as f64).floor();
        if !bin.is_finite() || bin.abs() > 1e15 {
            return Err(op_err!(
                "mel edge {i} falls on an invalid frequency bin ({bin}); check the edge frequencies"
            ));
        }
        edges.push(bin as i64);
    }
    let mut out = vec![0.0f64; total];
    let mut set = |j: i64, i: usize, v: f64| -> OpResult<()> {
        match usize::try_from(j) {
            Ok(j) if j < spec_bins => {
                out[j * mels + i] = v;
                Ok(())
            }
            _ => Err(op_err!(
                "mel filter {i} reaches frequency bin {j}, outside 0..{spec_bins}; \
                 upper_edge_hertz is above sample_rate / 2 or lower_edge_hertz is negative"
            )),
        }
    };
    for i in 0..mels {
        let (low, center, high) = (edges[i], edges[i + 1], edges[i + 2]);
        let up = center - low;
        if up == 0 {
            set(center, i, 1.0)?;
        } else {
            for j in low..=center {
                set(j, i, (j - low) as f64 / up as f64)?;
            }
        }
        let down = high - center;
        if down > 0 {
            for j in center..high {
                set(j, i, (high - j) as f64 / down as f64)?;
            }
        }
    }
    Ok((vec![spec_bins, mels], out))
}

fn build_mel(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let dtype = output_datatype(ctx)?;
    Ok(Box::new(move |rctx: &RunCtx, inputs: &[Option<&Value>]| {
        let num_mel_bins = scalar_i64_in(inputs, 0)?;
        let dft_length = scalar_i64_in(inputs, 1)?;
        let sample_rate = scalar_i64_in(inputs, 2)?;
        let lower = opt_scalar_f64_in(inputs, 3)?
            .ok_or_else(|| op_err!("lower_edge_hertz (input 3) is required"))?;
        let upper = opt_scalar_f64_in(inputs, 4)?
            .ok_or_else(|| op_err!("upper_edge_hertz (input 4) is required"))?;
        let (shape, values) =
            mel_weight_matrix(rctx, num_mel_bins, dft_length, sample_rate, lower, upper)?;
        one(finish(shape, values, dtype)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "DFT", build_dft);
    r.add("", "STFT", build_stft);
    r.add("", "HannWindow", build_hann);
    r.add("", "HammingWindow", build_hamming);
    r.add("", "BlackmanWindow", build_blackman);
    r.add("", "MelWeightMatrix", build_mel);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    fn close(a: &[f64], b: &[f64], tol: f64) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() <= tol, "{a:?} vs {b:?}");
        }
    }

    /// The direct sum, to check the fast paths against.
    fn naive(x: &[C]) -> Vec<C> {
        let n = x.len();
        (0..n)
            .map(|k| {
                x.iter().enumerate().fold(C::default(), |acc, (j, &v)| {
                    acc + v * C::cis_neg(2.0 * PI * ((j * k) % n) as f64 / n as f64)
                })
            })
            .collect()
    }

    #[test]
    fn fft_paths_agree_with_the_direct_sum() {
        for n in [1, 2, 3, 8, 12, 64, 100, 128, 257] {
            let x: Vec<C> = (0..n)
                .map(|i| C::new((i as f64 * 0.37).sin(), (i as f64 * 0.11).cos()))
                .collect();
            let mut y = x.clone();
            Fft::new(n).unwrap().forward(&mut y);
            let want = naive(&x);
            for (a, b) in y.iter().zip(&want) {
                assert!(
                    (a.re - b.re).abs() < 1e-9 && (a.im - b.im).abs() < 1e-9,
                    "n={n}"
                );
            }
        }
    }

    #[test]
    fn dft_of_a_short_real_signal() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        // x = [1, 2, 3, 4] as [1, 4, 1]; X = [10, -2+2i, -2, -2-2i]
        let x = Tensor::from_vec(vec![1, 4, 1], vec![1.0f32, 2.0, 3.0, 4.0]).unwrap();
        let y = dft(&ctx, &x, 1, None, false, false).unwrap();
        assert_eq!(y.shape(), &[1, 4, 2]);
        close(
            &y.to_f64_vec().unwrap(),
            &[10.0, 0.0, -2.0, 2.0, -2.0, 0.0, -2.0, -2.0],
            1e-6,
        );
        let half = dft(&ctx, &x, -2, None, false, true).unwrap();
        assert_eq!(half.shape(), &[1, 3, 2]);
        // the inverse of the one-sided spectrum is the signal again
        let back = dft(&ctx, &half, 1, None, true, true).unwrap();
        assert_eq!(back.shape(), &[1, 4, 1]);
        close(&back.to_f64_vec().unwrap(), &[1.0, 2.0, 3.0, 4.0], 1e-6);
        // padding to 6 points: X[3] = 1 - 2 + 3 - 4 = -2
        let padded = dft(&ctx, &x, 1, Some(6), false, false).unwrap();
        assert_eq!(padded.shape(), &[1, 6, 2]);
        close(&padded.to_f64_vec().unwrap()[6..8], &[-2.0, 0.0], 1e-6);
        assert!(dft(&ctx, &x, 2, None, false, false).is_err());
        assert!(dft(&ctx, &x, 1, Some(0), false, false).is_err());
        let small = Limits {
            max_tensor_elements: 1000,
            max_tensor_bytes: 1 << 20,
            ..Limits::default()
        };
        let tight = RunCtx::detached(&small);
        assert!(dft(&tight, &x, 1, Some(1 << 40), false, false).is_err());
    }

    #[test]
    fn stft_frames_and_windows() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        // [1, 6] signal, frames of 4 every 2 -> 2 frames, 3 bins
        let x = Tensor::from_vec(vec![1, 6], vec![1.0f32, 1.0, 1.0, 1.0, 2.0, 2.0]).unwrap();
        let y = stft(&ctx, &x, 2, None, Some(4), true).unwrap();
        assert_eq!(y.shape(), &[1, 2, 3, 2]);
        // frame 0 = [1,1,1,1] -> [4, 0, 0]; frame 1 = [1,1,2,2] -> [6, -1+1i, 0]
        close(
            &y.to_f64_vec().unwrap(),
            &[4.0, 0.0, 0.0, 0.0, 0.0, 0.0, 6.0, 0.0, -1.0, 1.0, 0.0, 0.0],
            1e-6,
        );
        let w = Tensor::from_vec(vec![4], vec![0.0f32, 1.0, 1.0, 0.0]).unwrap();
        let y = stft(&ctx, &x, 2, Some(&w), None, true).unwrap();
        // frame 1 windowed = [0,1,2,0] -> X0 = 3, X1 = 1*(-i) + 2*(-1) = -2 - 1i
        close(
            &y.to_f64_vec().unwrap()[6..10],
            &[3.0, 0.0, -2.0, -1.0],
            1e-6,
        );
        assert!(stft(&ctx, &x, 0, None, Some(4), true).is_err());
        assert!(stft(&ctx, &x, 1, Some(&w), Some(3), true).is_err());
        assert!(stft(&ctx, &x, 1, None, Some(7), true).is_err());
    }

    #[test]
    fn windows() {
        close(
            &window_values(WindowKind::Hann, 4, true),
            &[0.0, 0.5, 1.0, 0.5],
            1e-12,
        );
        close(
            &window_values(WindowKind::Hann, 3, false),
            &[0.0, 1.0, 0.0],
            1e-12,
        );
        assert!(window_values(WindowKind::Hann, 1, false)[0].is_nan());
        assert!(window_values(WindowKind::Hann, 0, true).is_empty());
        let a = 25.0 / 46.0;
        close(
            &window_values(WindowKind::Hamming, 2, true),
            &[a - (1.0 - a), 1.0],
            1e-12,
        );
        close(
            &window_values(WindowKind::Blackman, 2, true),
            &[0.0, 0.42 + 0.5 + 0.08],
            1e-12,
        );
    }

    #[test]
    fn mel_matrix() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        // 2 mel bins over 0..4000 Hz of an 8 kHz signal, dft 8 -> 5 spectrogram bins
        let (shape, m) = mel_weight_matrix(&ctx, 2, 8, 8000, 0.0, 4000.0).unwrap();
        assert_eq!(shape, vec![5, 2]);
        // edges (0, 427, 1114, 2220 Hz) fall on bins 0, 0, 1, 2: filter 0 is 1 at
        // bin 0 only; filter 1 rises from 0 at bin 0 to 1 at bin 1, then falls
        // and is 0 from bin 2 on (bin 2 is its exclusive end)
        close(&m, &[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0.0);
        assert!(mel_weight_matrix(&ctx, 2, 8, 8000, 0.0, 40000.0).is_err());
        assert!(mel_weight_matrix(&ctx, 2, 8, 0, 0.0, 4000.0).is_err());
    }
}
