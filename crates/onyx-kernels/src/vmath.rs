//! f32 math that vectorises: `exp` and `erf` written without branches or
//! library calls, so that a loop over them compiles to SIMD; reductions in
//! lanes; and the slice kernels built on them (elementwise maps, softmax,
//! layer norm), each compiled once per instruction set, the widest one the
//! CPU has chosen at run time (`widest_isa!`).
//!
//! Accuracy (checked against f64 in the tests): `exp` within 2e-7 relative,
//! `erf` within 2e-7 absolute. The plain f64 forms in onyx-core stay the
//! oracle for the other element types.

const LOG2_E: f32 = std::f32::consts::LOG2_E;
// ln 2 split in two so that n * LN2_HI is exact for the n that occur
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// Below this, e^x is under f32's smallest normal number; above the next,
/// it overflows.
const EXP_MIN: f32 = -87.336_54;
const EXP_MAX: f32 = 88.722_83;

/// e^x. Range reduction x = n ln2 + r with |r| <= ln2 / 2, then the Taylor
/// series of e^r to the 7th power, scaled by 2^n through the exponent bits.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let xc = x.clamp(EXP_MIN, EXP_MAX);
    // adding 1.5 * 2^23 rounds to an integer (ties to even) in the low
    // mantissa bits, without a rounding instruction or an int conversion
    let t = xc * LOG2_E + ROUNDER;
    let n = t - ROUNDER;
    let r = (xc - n * LN2_HI) - n * LN2_LO;
    let p = 1.0
        + r * (1.0
            + r * (0.5
                + r * (1.0 / 6.0
                    + r * (1.0 / 24.0
                        + r * (1.0 / 120.0 + r * (1.0 / 720.0 + r * (1.0 / 5040.0)))))));
    // n lies in [-126, 128]: scale by 2^(n/2) twice so that 2^128 never
    // has to be formed
    let ni = t.to_bits().wrapping_sub(ROUNDER.to_bits()) as i32;
    let lo = ni >> 1;
    let scale_a = f32::from_bits(((lo + 127) as u32) << 23);
    let scale_b = f32::from_bits((((ni - lo) + 127) as u32) << 23);
    let y = p * scale_a * scale_b;
    if x < EXP_MIN {
        0.0
    } else if x > EXP_MAX {
        f32::INFINITY
    } else {
        // NaN passes through the arithmetic
        y
    }
}

const ROUNDER: f32 = 12_582_912.0;

/// erf(x)/x = P(x^2) on [0, 1], a least-squares fit to f64 erf.
const ERF_SMALL: [f32; 7] = [
    std::f32::consts::FRAC_2_SQRT_PI,
    -0.376_126_3,
    0.112_836_35,
    -0.026_856_07,
    0.005_192_958,
    -0.000_805_375_1,
    8.006_874e-5,
];
/// erfc(x) e^(x^2) x = Q(1/x) on [1, 3.93], a least-squares fit to f64 erfc.
const ERFC_LARGE: [f32; 9] = [
    0.564_003_7,
    0.002_706_575,
    -0.295_274_6,
    0.002_787_911,
    0.655_156_5,
    -1.032_364_2,
    0.807_161_7,
    -0.336_095_65,
    0.059_501_775,
];
/// From here on erf(x) rounds to 1 in f32.
const ERF_ONE: f32 = 3.93;

#[inline(always)]
fn horner<const N: usize>(c: &[f32; N], x: f32) -> f32 {
    let mut acc = c[N - 1];
    for k in (0..N - 1).rev() {
        acc = acc * x + c[k];
    }
    acc
}

/// The Gauss error function.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = a * a;
    let small = a * horner(&ERF_SMALL, t);
    let u = 1.0 / a.max(1.0);
    let large = 1.0 - exp(-t) * u * horner(&ERFC_LARGE, u);
    let r = if a >= ERF_ONE {
        1.0
    } else if a < 1.0 {
        small
    } else {
        // NaN lands here and stays NaN
        large
    };
    r.copysign(x)
}

/// tanh(x)/x = P(x^2) on [0, 0.625], a least-squares fit to f64 tanh.
const TANH_SMALL: [f32; 6] = [
    1.0,
    -0.333_332_78,
    0.133_315_28,
    -0.053_752_825,
    0.020_692_378,
    -0.005_772_202_3,
];

/// The hyperbolic tangent: the polynomial near 0, where 1 - 2/(e^2x + 1)
/// would lose digits to cancellation, that form further out.
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    let a = x.abs();
    let small = a * horner(&TANH_SMALL, a * a);
    let large = 1.0 - 2.0 / (exp(2.0 * a) + 1.0);
    let r = if a < 0.625 { small } else { large };
    r.copysign(x)
}

/// The logistic function 1 / (1 + e^-x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// GELU's tanh form: x/2 (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))).
#[inline(always)]
pub fn gelu_tanh(x: f32) -> f32 {
    const K: f32 = 0.797_884_6; // sqrt(2/pi)
    0.5 * x * (1.0 + tanh(K * (x + 0.044_715 * x * x * x)))
}

/// GELU with the exact erf form: x/2 (1 + erf(x / sqrt 2)).
#[inline(always)]
pub fn gelu(x: f32) -> f32 {
    0.5 * x * (1.0 + erf(x * std::f32::consts::FRAC_1_SQRT_2))
}

/// Defines `$vis fn $name(args) -> ret` that runs `$imp`, an
/// `#[inline(always)]` function, compiled for the widest instruction set the
/// CPU has: `$imp` is inlined into one copy built with AVX-512 enabled and
/// one with AVX2, so the loops inside it vectorise for that width.
macro_rules! widest_isa {
    ($(#[$doc:meta])* $vis:vis fn $name:ident => $imp:ident($($arg:ident: $ty:ty),*) $(-> $ret:ty)?) => {
        $(#[$doc])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx2,fma")]
            unsafe fn avx512($($arg: $ty),*) $(-> $ret)? {
                $imp($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            unsafe fn avx2($($arg: $ty),*) $(-> $ret)? {
                $imp($($arg),*)
            }
            match $crate::Isa::detect() {
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detect() returns Avx512 only when the CPU has
                // avx512f (and every AVX-512 CPU has AVX2 and FMA)
                $crate::Isa::Avx512 => unsafe { avx512($($arg),*) },
                #[cfg(target_arch = "x86_64")]
                // SAFETY: detect() returns Avx2 only when the CPU has avx2 and fma
                $crate::Isa::Avx2 => unsafe { avx2($($arg),*) },
                _ => $imp($($arg),*),
            }
        }
    };
}
pub(crate) use widest_isa;

/// The elementwise functions [`map`] applies.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Unary {
    Exp,
    Erf,
    Tanh,
    Sigmoid,
    Gelu,
    /// GELU's tanh approximation (GPT-2's "gelu_new").
    GeluTanh,
    /// max(x, 0), NaN kept.
    Relu,
}

/// Evaluates `$body` with `$f` bound to the function `$op` names, so that
/// a loop in `$body` calls one known function, not a match per element.
macro_rules! with_unary {
    ($op:expr, $f:ident => $body:expr) => {
        match $op {
            Unary::Exp => {
                let $f = exp;
                $body
            }
            Unary::Erf => {
                let $f = erf;
                $body
            }
            Unary::Tanh => {
                let $f = tanh;
                $body
            }
            Unary::Sigmoid => {
                let $f = sigmoid;
                $body
            }
            Unary::Gelu => {
                let $f = gelu;
                $body
            }
            Unary::GeluTanh => {
                let $f = gelu_tanh;
                $body
            }
            Unary::Relu => {
                let $f = relu;
                $body
            }
        }
    };
}

impl Unary {
    /// The function on one value, as the slice loops compute it.
    pub fn apply(self, x: f32) -> f32 {
        with_unary!(self, f => f(x))
    }
}

#[inline(always)]
fn relu(x: f32) -> f32 {
    if x < 0.0 {
        0.0
    } else {
        x
    }
}

/// One loop per function, the match outside it.
#[inline(always)]
fn map_slices(src: &[f32], dst: &mut [f32], op: Unary) {
    with_unary!(op, f => {
        for (d, &x) in dst.iter_mut().zip(src) {
            *d = f(x);
        }
    })
}

widest_isa! {
    /// `op` over `src` into `dst` (of the same length; extra elements of
    /// the longer one are left alone).
    pub fn map_into => map_slices(src: &[f32], dst: &mut [f32], op: Unary)
}

#[inline(always)]
fn map_slice_in_place(v: &mut [f32], op: Unary) {
    with_unary!(op, f => {
        for x in v.iter_mut() {
            *x = f(*x);
        }
    })
}

widest_isa! {
    /// `op` over `v`, in place.
    pub fn map_in_place => map_slice_in_place(v: &mut [f32], op: Unary)
}

/// `op` over `src` into a new vector.
pub fn map(src: &[f32], op: Unary) -> Vec<f32> {
    let mut out = vec![0f32; src.len()];
    map_into(src, &mut out, op);
    out
}

/// Lanes for reductions: summing into this many partial sums lets the
/// compiler keep them in vector registers without reordering one sum.
const LANES: usize = 16;

/// The sum of `v`, in `LANES` partial sums added at the end.
#[inline(always)]
pub fn sum(v: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let chunks = v.chunks_exact(LANES);
    let tail: f32 = chunks.remainder().iter().sum();
    for c in chunks {
        for k in 0..LANES {
            acc[k] += c[k];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest element of `v` (-inf for an empty slice; NaN if any is NaN).
#[inline(always)]
pub fn max(v: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = v.chunks_exact(LANES);
    let mut m = f32::NEG_INFINITY;
    for &x in chunks.remainder() {
        m = if x > m || x.is_nan() { x } else { m };
    }
    for c in chunks {
        for k in 0..LANES {
            acc[k] = if c[k] > acc[k] || c[k].is_nan() {
                c[k]
            } else {
                acc[k]
            };
        }
    }
    acc.iter()
        .fold(m, |m, &x| if x > m || x.is_nan() { x } else { m })
}

widest_isa! {
    /// Softmax (or, with `log`, log-softmax) of each row of `n` contiguous
    /// values of `x`, written to `out` (of the same length). Rows whose
    /// largest value is infinite are shifted by 0 instead, as the f64 form
    /// does.
    pub fn softmax_rows => softmax_rows_impl(x: &[f32], out: &mut [f32], n: usize, log: bool)
}

#[inline(always)]
fn softmax_rows_impl(x: &[f32], out: &mut [f32], n: usize, log: bool) {
    if n == 0 {
        return;
    }
    {
        for (row, dst) in x.chunks_exact(n).zip(out.chunks_exact_mut(n)) {
            let m = max(row);
            let shift = if m.is_finite() { m } else { 0.0 };
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = exp(v - shift);
            }
            let s = sum(dst);
            if log {
                let ls = s.ln();
                for (d, &v) in dst.iter_mut().zip(row) {
                    *d = v - shift - ls;
                }
            } else {
                let inv = 1.0 / s;
                for d in dst.iter_mut() {
                    *d *= inv;
                }
            }
        }
    }
}

widest_isa! {
    /// Layer normalization of each row of `cols` contiguous values of `x`
    /// into `out` (of the same length): `(x - mean) / sqrt(var + eps) *
    /// scale + bias`, with `scale` and `bias` (if any) of length `cols`.
    /// Returns each row's mean and 1/std.
    pub fn layer_norm_rows => layer_norm_rows_impl(
        x: &[f32],
        out: &mut [f32],
        cols: usize,
        eps: f32,
        scale: &[f32],
        bias: Option<&[f32]>
    ) -> (Vec<f32>, Vec<f32>)
}

#[inline(always)]
fn layer_norm_rows_impl(
    x: &[f32],
    out: &mut [f32],
    cols: usize,
    eps: f32,
    scale: &[f32],
    bias: Option<&[f32]>,
) -> (Vec<f32>, Vec<f32>) {
    assert!(
        x.len() == out.len() && scale.len() == cols && bias.is_none_or(|b| b.len() == cols),
        "layer_norm_rows: lengths do not fit"
    );
    if cols == 0 {
        return (Vec::new(), Vec::new());
    }
    let rows = x.len() / cols;
    let (mut means, mut inv_stds) = (Vec::with_capacity(rows), Vec::with_capacity(rows));
    {
        for (row, dst) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
            let mean = sum(row) / cols as f32;
            for (d, &v) in dst.iter_mut().zip(row) {
                *d = (v - mean) * (v - mean);
            }
            let inv = 1.0 / (sum(dst) / cols as f32 + eps).sqrt();
            match bias {
                Some(b) => {
                    for (((d, &v), &s), &b) in dst.iter_mut().zip(row).zip(scale).zip(b) {
                        *d = (v - mean) * inv * s + b;
                    }
                }
                None => {
                    for ((d, &v), &s) in dst.iter_mut().zip(row).zip(scale) {
                        *d = (v - mean) * inv * s;
                    }
                }
            }
            means.push(mean);
            inv_stds.push(inv);
        }
    }
    (means, inv_stds)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Points over [lo, hi], plus the ends.
    fn grid(lo: f32, hi: f32, n: usize) -> Vec<f32> {
        (0..=n)
            .map(|i| lo + (hi - lo) * i as f32 / n as f32)
            .collect()
    }

    #[test]
    fn exp_is_close_to_f64() {
        for x in grid(-87.0, 88.0, 200_000) {
            let want = f64::from(x).exp();
            let got = f64::from(exp(x));
            assert!(
                ((got - want) / want).abs() < 2e-7,
                "exp({x}) = {got}, want {want}"
            );
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
    }

    /// erf in f64, for the test only: the Maclaurin series near 0, the
    /// continued fraction of erfc further out.
    fn erf_f64(x: f64) -> f64 {
        let a = x.abs();
        let r = if a < 2.5 {
            let (mut sum, mut term, mut n) = (a, a, 0.0);
            while term.abs() > 1e-18 * sum {
                n += 1.0;
                term *= -a * a / n;
                sum += term / (2.0 * n + 1.0);
            }
            sum * 2.0 / std::f64::consts::PI.sqrt()
        } else {
            let mut f = 0.0;
            for k in (1..80).rev() {
                f = (k as f64 / 2.0) / (a + f);
            }
            1.0 - (-a * a).exp() / ((a + f) * std::f64::consts::PI.sqrt())
        };
        r.copysign(x)
    }

    #[test]
    fn tanh_is_close_to_f64() {
        for x in grid(-20.0, 20.0, 200_000) {
            let want = f64::from(x).tanh();
            let got = f64::from(tanh(x));
            assert!(
                (got - want).abs() < 2.5e-7 * want.abs().max(1e-30),
                "tanh({x}) = {got}, want {want}"
            );
        }
        assert_eq!(tanh(0.0), 0.0);
        assert_eq!(tanh(100.0), 1.0);
        assert_eq!(tanh(f32::NEG_INFINITY), -1.0);
        assert!(tanh(f32::NAN).is_nan());
    }

    #[test]
    fn erf_is_close_to_f64() {
        for x in grid(-6.0, 6.0, 120_000) {
            let want = erf_f64(f64::from(x));
            let got = f64::from(erf(x));
            assert!((got - want).abs() < 2e-7, "erf({x}) = {got}, want {want}");
            // relative accuracy where erf is small
            if x.abs() < 1.0 && x != 0.0 {
                assert!(((got - want) / want).abs() < 3e-7, "erf({x})");
            }
        }
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(-0.0).is_sign_negative());
        assert_eq!(erf(f32::INFINITY), 1.0);
        assert_eq!(erf(f32::NEG_INFINITY), -1.0);
        assert!(erf(f32::NAN).is_nan());
    }

    /// Values with a spread of magnitudes and signs, from a fixed recipe.
    fn wavy(n: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) * 0.13)
            .collect()
    }

    #[test]
    fn reductions_match_plain_sums() {
        for n in [0, 1, 15, 16, 17, 100, 1000] {
            let v = wavy(n);
            let want: f64 = v.iter().map(|&x| f64::from(x)).sum();
            assert!((f64::from(sum(&v)) - want).abs() < 1e-4, "sum of {n}");
            let m = v.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!(max(&v), m, "max of {n}");
        }
        let mut v = wavy(40);
        v[33] = f32::NAN;
        assert!(max(&v).is_nan());
    }

    #[test]
    fn softmax_and_layer_norm_match_f64() {
        let (rows, n) = (5, 37);
        let x = wavy(rows * n);
        let mut y = vec![0.0; x.len()];
        let mut ly = vec![0.0; x.len()];
        softmax_rows(&x, &mut y, n, false);
        softmax_rows(&x, &mut ly, n, true);
        for r in 0..rows {
            let row: Vec<f64> = x[r * n..(r + 1) * n]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let s: f64 = row.iter().map(|v| (v - m).exp()).sum();
            for j in 0..n {
                let want = (row[j] - m).exp() / s;
                assert!((f64::from(y[r * n + j]) - want).abs() < 1e-6 * want.max(1e-3));
                let lwant = row[j] - m - s.ln();
                assert!((f64::from(ly[r * n + j]) - lwant).abs() < 1e-5);
            }
        }
        // a row of -inf and a finite row
        let x = [f32::NEG_INFINITY, 0.0, 0.0, 0.0];
        let mut y = [0.0; 4];
        softmax_rows(&x, &mut y, 2, false);
        assert_eq!(y, [0.0, 1.0, 0.5, 0.5]);

        let scale: Vec<f32> = (0..n).map(|j| 0.5 + j as f32 * 0.01).collect();
        let bias: Vec<f32> = (0..n).map(|j| j as f32 * -0.02).collect();
        let x = wavy(rows * n);
        let mut y = vec![0.0; x.len()];
        let (means, inv) = layer_norm_rows(&x, &mut y, n, 1e-5, &scale, Some(&bias));
        for r in 0..rows {
            let row: Vec<f64> = x[r * n..(r + 1) * n]
                .iter()
                .map(|&v| f64::from(v))
                .collect();
            let m = row.iter().sum::<f64>() / n as f64;
            let var = row.iter().map(|v| (v - m) * (v - m)).sum::<f64>() / n as f64;
            let is = 1.0 / (var + 1e-5).sqrt();
            assert!((f64::from(means[r]) - m).abs() < 1e-5);
            assert!((f64::from(inv[r]) - is).abs() < 1e-5 * is);
            for j in 0..n {
                let want = (row[j] - m) * is * f64::from(scale[j]) + f64::from(bias[j]);
                assert!(
                    (f64::from(y[r * n + j]) - want).abs() < 1e-5,
                    "row {r} col {j}"
                );
            }
        }
    }

    #[test]
    fn slice_loops_agree_with_the_scalar_function_on_every_path() {
        let src: Vec<f32> = grid(-10.0, 10.0, 1001);
        for op in [
            Unary::Exp,
            Unary::Erf,
            Unary::Sigmoid,
            Unary::Gelu,
            Unary::Relu,
        ] {
            let want: Vec<f32> = src.iter().map(|&x| op.apply(x)).collect();
            assert_eq!(map(&src, op), want, "{op:?}");
        }
        assert_eq!(map(&[-1.0, f32::NAN, 2.0], Unary::Relu)[0], 0.0);
        assert!(map(&[-1.0, f32::NAN, 2.0], Unary::Relu)[1].is_nan());
        let s: Vec<f32> = src.iter().map(|&x| sigmoid(x)).collect();
        for (x, y) in src.iter().zip(&s) {
            let want = 1.0 / (1.0 + (-f64::from(*x)).exp());
            assert!((f64::from(*y) - want).abs() < 1e-7 * want.max(1e-30) + 1e-7);
        }
        let t = f64::from(gelu_tanh(-0.7));
        let k = (2.0 / std::f64::consts::PI).sqrt();
        let want = 0.5 * -0.7 * (1.0 + (k * (-0.7 + 0.044715 * -0.343)).tanh());
        assert!((t - want).abs() < 3e-7, "{t} vs {want}");
        let g = gelu(1.5);
        let want = 0.5 * 1.5 * (1.0 + erf_f64(1.5 / std::f64::consts::SQRT_2));
        assert!((f64::from(g) - want).abs() < 3e-7);
    }
}
