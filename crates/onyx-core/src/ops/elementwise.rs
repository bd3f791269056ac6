//! Elementwise arithmetic with numpy broadcasting (Add, Sub, Mul, Div, Pow,
//! Mod, Max, Min, Sum, Mean) and unary math (Abs, Neg, Sqrt, Exp, Log, ...).
//!
//! Opset notes: before opset 7 the binary ops broadcast only with
//! `broadcast=1` and an `axis` attribute; those legacy forms are handled by
//! aligning the second input at `axis`. Max/Min/Sum/Mean broadcast from opset 8.

use onyx_kernels::vmath::{self, Unary};
use onyx_tensor::{bf16, f16, Data, Tensor, Value};

use super::{broadcast_binary, one, tensor_in, BuildCtx, Kernel, OpResult, Registry};
use crate::op_err;

/// Arithmetic that every numeric element type supports. Integers wrap on
/// overflow (as ONNX Runtime does) and treat division by zero as 0 instead
/// of trapping.
pub(crate) trait Arith: Copy + PartialOrd + Send + Sync + 'static {
    fn add(self, o: Self) -> Self;
    fn sub(self, o: Self) -> Self;
    fn mul(self, o: Self) -> Self;
    fn div(self, o: Self) -> Self;
    /// Remainder with the sign of the divisor (`fmod=0`).
    fn floor_mod(self, o: Self) -> Self;
    /// Remainder with the sign of the dividend (`fmod=1`).
    fn trunc_mod(self, o: Self) -> Self;
    fn to_f64(self) -> f64;
    fn from_f64(v: f64) -> Self;
    fn is_nan(self) -> bool;
}

macro_rules! int_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self.wrapping_add(o) }
            fn sub(self, o: Self) -> Self { self.wrapping_sub(o) }
            fn mul(self, o: Self) -> Self { self.wrapping_mul(o) }
            fn div(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_div(o) } }
            fn floor_mod(self, o: Self) -> Self {
                if o == 0 { return 0; }
                let r = self.wrapping_rem(o);
                #[allow(unused_comparisons)]
                if r != 0 && ((r < 0) != (o < 0)) { r.wrapping_add(o) } else { r }
            }
            fn trunc_mod(self, o: Self) -> Self { if o == 0 { 0 } else { self.wrapping_rem(o) } }
            fn to_f64(self) -> f64 { self as f64 }
            fn from_f64(v: f64) -> Self { v as $t }
            fn is_nan(self) -> bool { false }
        }
    )*};
}
int_arith!(i8, i16, i32, i64, u8, u16, u32, u64);

macro_rules! float_arith {
    ($($t:ty),*) => {$(
        impl Arith for $t {
            fn add(self, o: Self) -> Self { self + o }
            fn sub(self, o: Self) -> Self { self - o }
            fn mul(self, o: Self) -> Self { self * o }
            fn div(self, o: Self) -> Self { self / o }
            // numpy's mod: the sign of the divisor, a zero result signed like it,
            // x returned for an infinite divisor of the same sign
            fn floor_mod(self, o: Self) -> Self {
                let (a, b) = (self.to_f64(), o.to_f64());
                let r = a % b;
                let r = if r == 0.0 {
                    0f64.copysign(b)
                } else if (r < 0.0) != (b < 0.0) {
                    r + b
                } else {
                    r
                };
                Self::from_f64(r)
            }
            fn trunc_mod(self, o: Self) -> Self { self % o }
            fn to_f64(self) -> f64 { num_traits::ToPrimitive::to_f64(&self).unwrap_or(f64::NAN) }
            fn from_f64(v: f64) -> Self { <Self as num_traits::NumCast>::from(v).unwrap_or(<Self as num_traits::Float>::nan()) }
            fn is_nan(self) -> bool { num_traits::Float::is_nan(self) }
        }
    )*};
}
float_arith!(f32, f64, f16, bf16);

/// Runs `$body` for each numeric storage, binding both inputs' slices as the same type.
macro_rules! same_type_pair {
    ($a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {{
        if $a.dtype() != $b.dtype() {
            return Err(op_err!(
                "inputs have different element types {} and {}",
                $a.dtype(),
                $b.dtype()
            ));
        }
        match ($a.data(), $b.data()) {
            (Data::F32($x), Data::F32($y)) => $body,
            (Data::F64($x), Data::F64($y)) => $body,
            (Data::F16($x), Data::F16($y)) => $body,
            (Data::BF16($x), Data::BF16($y)) => $body,
            (Data::I8($x), Data::I8($y)) => $body,
            (Data::I16($x), Data::I16($y)) => $body,
            (Data::I32($x), Data::I32($y)) => $body,
            (Data::I64($x), Data::I64($y)) => $body,
            (Data::U8($x), Data::U8($y)) if !$a.dtype().is_minifloat() => $body,
            (Data::U16($x), Data::U16($y)) => $body,
            (Data::U32($x), Data::U32($y)) => $body,
            (Data::U64($x), Data::U64($y)) => $body,
            _ => return Err(op_err!("unsupported element type {}", $a.dtype())),
        }
    }};
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum BinOp {
    Add,
    Sub,
    Mul,
    Div,
    Max,
    Min,
    FloorMod,
    TruncMod,
}

impl BinOp {
    fn apply<T: Arith>(self, a: T, b: T) -> T {
        match self {
            BinOp::Add => a.add(b),
            BinOp::Sub => a.sub(b),
            BinOp::Mul => a.mul(b),
            BinOp::Div => a.div(b),
            // NaN propagates through Max and Min (a NaN `b` fails the comparison)
            BinOp::Max => {
                if a.is_nan() || a > b {
                    a
                } else {
                    b
                }
            }
            BinOp::Min => {
                if a.is_nan() || a < b {
                    a
                } else {
                    b
                }
            }
            BinOp::FloorMod => a.floor_mod(b),
            BinOp::TruncMod => a.trunc_mod(b),
        }
    }
}

/// `op(a, b)` with broadcasting, for two tensors of the same numeric type.
pub(crate) fn binary(op: BinOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    same_type_pair!(a, b, (x, y) => {
        let (v, shape) = binary_slices(op, x, a.shape(), y, b.shape())?;
        Ok(Tensor::new(a.dtype(), shape, onyx_tensor::Elem::into_data(v))?)
    })
}

/// One loop per operator, so that each inner loop is a plain add, multiply...
/// that the compiler vectorises, not a match on `op` per element.
fn binary_slices<T: Arith>(
    op: BinOp,
    x: &[T],
    xs: &[usize],
    y: &[T],
    ys: &[usize],
) -> OpResult<(Vec<T>, Vec<usize>)> {
    match op {
        BinOp::Add => broadcast_binary(x, xs, y, ys, T::add),
        BinOp::Sub => broadcast_binary(x, xs, y, ys, T::sub),
        BinOp::Mul => broadcast_binary(x, xs, y, ys, T::mul),
        BinOp::Div => broadcast_binary(x, xs, y, ys, T::div),
        _ => broadcast_binary(x, xs, y, ys, |p, q| op.apply(p, q)),
    }
}

/// Reshapes `b` for the pre-opset-7 `broadcast=1, axis=k` form: its dims
/// line up with `a`'s starting at `axis`.
fn legacy_align(a: &Tensor, b: &Tensor, axis: Option<i64>) -> OpResult<Tensor> {
    let rank = a.rank();
    let axis = match axis {
        Some(ax) if ax < 0 => (ax + rank as i64) as usize,
        Some(ax) => ax as usize,
        None => rank - b.rank().min(rank),
    };
    if axis + b.rank() > rank {
        return Err(op_err!(
            "cannot align shape {:?} to {:?} at axis {axis}",
            b.shape(),
            a.shape()
        ));
    }
    let mut shape = b.shape().to_vec();
    shape.extend(std::iter::repeat_n(1, rank - axis - b.rank()));
    Ok(b.clone().reshape(shape)?)
}

fn build_binary(ctx: &BuildCtx, op: BinOp) -> OpResult<Box<dyn Kernel>> {
    let legacy = ctx.opset < 7 && ctx.node.attr_int("broadcast")?.unwrap_or(0) == 1;
    let axis = ctx.node.attr_int("axis")?;
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let a = tensor_in(inputs, 0)?;
            let b = tensor_in(inputs, 1)?;
            if legacy {
                return one(binary(op, a, &legacy_align(a, b, axis)?)?);
            }
            one(binary(op, a, b)?)
        },
    ))
}

fn build_mod(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let fmod = ctx.node.attr_int("fmod")?.unwrap_or(0) == 1;
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let a = tensor_in(inputs, 0)?;
            let b = tensor_in(inputs, 1)?;
            one(binary(
                if fmod {
                    BinOp::TruncMod
                } else {
                    BinOp::FloorMod
                },
                a,
                b,
            )?)
        },
    ))
}

/// Max, Min, Sum, Mean over any number of inputs.
fn build_variadic(op: BinOp, mean: bool) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let mut acc = tensor_in(inputs, 0)?.clone();
            for i in 1..inputs.len() {
                acc = binary(op, &acc, tensor_in(inputs, i)?)?;
            }
            if mean {
                let n = Tensor::from_vec(vec![], vec![inputs.len() as f64])?;
                let n = super::cast::cast_tensor(&n, acc.dtype(), true)?;
                acc = binary(BinOp::Div, &acc, &n)?;
            }
            one(acc)
        },
    ))
}

/// Pow: base and exponent may have different numeric types; computed in f64
/// (f32 for float bases, to match single-precision results).
fn pow(a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let exps = b.to_f64_vec()?;
    fn generic<T: Arith + onyx_tensor::Elem>(
        a: &Tensor,
        x: &[T],
        e: &[f64],
        es: &[usize],
    ) -> OpResult<Tensor> {
        let (v, shape) = broadcast_binary(x, a.shape(), e, es, |p: T, q| {
            T::from_f64(p.to_f64().powf(q))
        })?;
        Ok(Tensor::new(a.dtype(), shape, T::into_data(v))?)
    }
    macro_rules! go {
        ($x:ident) => {
            generic(a, $x, &exps, b.shape())?
        };
    }
    Ok(match a.data() {
        // squares and cubes (as in torch's GELU and variance patterns) as
        // products, as ONNX Runtime computes them
        Data::F32(x) if matches!(exps.as_slice(), [e] if *e == 2.0 || *e == 3.0) => {
            let out_shape = onyx_tensor::broadcast_shapes(&[a.shape(), b.shape()])?;
            let v = if exps[0] == 2.0 {
                x.iter().map(|&p| p * p).collect()
            } else {
                x.iter().map(|&p| p * p * p).collect()
            };
            Tensor::from_vec(a.shape().to_vec(), v)?.reshape(out_shape)?
        }
        Data::F32(x) => {
            let (v, shape) =
                broadcast_binary(x, a.shape(), &exps, b.shape(), |p, q| p.powf(q as f32))?;
            Tensor::from_vec(shape, v)?
        }
        Data::F64(x) => go!(x),
        Data::F16(x) => go!(x),
        Data::BF16(x) => go!(x),
        Data::I32(x) => go!(x),
        Data::I64(x) => go!(x),
        _ => return Err(op_err!("Pow does not support element type {}", a.dtype())),
    })
}

/// A float-only unary function, computed in the element's own precision
/// for f32/f64 and through f32 for f16/bf16.
pub(crate) fn unary_float(
    t: &Tensor,
    f32f: impl Fn(f32) -> f32,
    f64f: impl Fn(f64) -> f64,
) -> OpResult<Tensor> {
    let data = match t.data() {
        Data::F32(v) => Data::F32(v.iter().map(|&x| f32f(x)).collect()),
        Data::F64(v) => Data::F64(v.iter().map(|&x| f64f(x)).collect()),
        Data::F16(v) => Data::F16(v.iter().map(|x| f16::from_f32(f32f(x.to_f32()))).collect()),
        Data::BF16(v) => Data::BF16(v.iter().map(|x| bf16::from_f32(f32f(x.to_f32()))).collect()),
        _ => return Err(op_err!("unsupported element type {}", t.dtype())),
    };
    Ok(Tensor::new(t.dtype(), t.shape().to_vec(), data)?)
}

/// As [`unary_float`], with the f32 form one of the vectorised kernels.
pub(crate) fn unary_vectorised(
    t: &Tensor,
    op: Unary,
    f64f: impl Fn(f64) -> f64,
) -> OpResult<Tensor> {
    match t.data() {
        Data::F32(v) => Ok(Tensor::from_vec(t.shape().to_vec(), vmath::map(v, op))?),
        _ => unary_float(t, |x| op.apply(x), f64f),
    }
}

/// Registers a float unary op given as two function items (f32 and f64 forms).
macro_rules! float_unary {
    ($r:expr, $name:literal, $f:expr) => {
        $r.add("", $name, |_| {
            Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
                one(unary_float(
                    tensor_in(inputs, 0)?,
                    |x: f32| $f(x),
                    |x: f64| $f(x),
                )?)
            }))
        });
    };
}

/// Abs and Neg work on every signed numeric type (Abs on unsigned too).
fn abs_neg(t: &Tensor, neg: bool) -> OpResult<Tensor> {
    macro_rules! signed {
        ($v:ident) => {
            if neg {
                onyx_tensor::Elem::into_data(
                    $v.iter().map(|&x| x.wrapping_neg()).collect::<Vec<_>>(),
                )
            } else {
                onyx_tensor::Elem::into_data(
                    $v.iter().map(|&x| x.wrapping_abs()).collect::<Vec<_>>(),
                )
            }
        };
    }
    let data = match t.data() {
        Data::I8(v) => signed!(v),
        Data::I16(v) => signed!(v),
        Data::I32(v) => signed!(v),
        Data::I64(v) => signed!(v),
        Data::U8(_) | Data::U16(_) | Data::U32(_) | Data::U64(_) if !neg => t.data().clone(),
        _ => {
            return unary_float(
                t,
                if neg { |x: f32| -x } else { f32::abs },
                if neg { |x: f64| -x } else { f64::abs },
            )
        }
    };
    Ok(Tensor::new(t.dtype(), t.shape().to_vec(), data)?)
}

fn sign(t: &Tensor) -> OpResult<Tensor> {
    let v = t.to_f64_vec()?;
    let s: Vec<f64> = v
        .iter()
        .map(|&x| {
            if x > 0.0 {
                1.0
            } else if x < 0.0 {
                -1.0
            } else {
                x
            }
        })
        .collect();
    super::cast::cast_tensor(&Tensor::from_vec(t.shape().to_vec(), s)?, t.dtype(), true)
}

/// The Gauss error function (libm's, accurate to about an ulp of f64).
pub(crate) fn erf(x: f64) -> f64 {
    libm::erf(x)
}

pub fn register(r: &mut Registry) {
    r.add("", "Add", |c| build_binary(c, BinOp::Add));
    r.add("", "Sub", |c| build_binary(c, BinOp::Sub));
    r.add("", "Mul", |c| build_binary(c, BinOp::Mul));
    r.add("", "Div", |c| build_binary(c, BinOp::Div));
    r.add("", "Mod", build_mod);
    r.add("", "Max", |_| build_variadic(BinOp::Max, false));
    r.add("", "Min", |_| build_variadic(BinOp::Min, false));
    r.add("", "Sum", |_| build_variadic(BinOp::Add, false));
    r.add("", "Mean", |_| build_variadic(BinOp::Add, true));
    r.add("", "Pow", |_| {
        Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
            one(pow(tensor_in(inputs, 0)?, tensor_in(inputs, 1)?)?)
        }))
    });
    r.add("", "Abs", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(abs_neg(tensor_in(i, 0)?, false)?)
        }))
    });
    r.add("", "Neg", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(abs_neg(tensor_in(i, 0)?, true)?)
        }))
    });
    r.add("", "Sign", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(sign(tensor_in(i, 0)?)?)
        }))
    });
    float_unary!(r, "Sqrt", num_traits::Float::sqrt);
    r.add("", "Exp", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(unary_vectorised(tensor_in(i, 0)?, Unary::Exp, f64::exp)?)
        }))
    });
    float_unary!(r, "Log", num_traits::Float::ln);
    float_unary!(r, "Reciprocal", num_traits::Float::recip);
    float_unary!(r, "Floor", num_traits::Float::floor);
    float_unary!(r, "Ceil", num_traits::Float::ceil);
    float_unary!(r, "Sin", num_traits::Float::sin);
    float_unary!(r, "Cos", num_traits::Float::cos);
    float_unary!(r, "Tan", num_traits::Float::tan);
    float_unary!(r, "Asin", num_traits::Float::asin);
    float_unary!(r, "Acos", num_traits::Float::acos);
    float_unary!(r, "Atan", num_traits::Float::atan);
    float_unary!(r, "Sinh", num_traits::Float::sinh);
    float_unary!(r, "Cosh", num_traits::Float::cosh);
    float_unary!(r, "Asinh", num_traits::Float::asinh);
    float_unary!(r, "Acosh", num_traits::Float::acosh);
    float_unary!(r, "Atanh", num_traits::Float::atanh);
    r.add("", "Round", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(unary_float(
                tensor_in(i, 0)?,
                // ONNX's Round rounds half to even
                f32::round_ties_even,
                f64::round_ties_even,
            )?)
        }))
    });
    r.add("", "Erf", |_| {
        Ok(Box::new(|_: &super::RunCtx, i: &[Option<&Value>]| {
            one(unary_vectorised(tensor_in(i, 0)?, Unary::Erf, erf)?)
        }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn add_broadcasts() {
        let a = t32(&[2, 1], &[1.0, 2.0]);
        let b = t32(&[3], &[10.0, 20.0, 30.0]);
        let c = binary(BinOp::Add, &a, &b).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(
            c.as_slice::<f32>().unwrap(),
            &[11.0, 21.0, 31.0, 12.0, 22.0, 32.0]
        );
    }

    #[test]
    fn integer_mod_and_div() {
        let a = Tensor::from_vec(vec![4], vec![-7i32, 7, -7, 7]).unwrap();
        let b = Tensor::from_vec(vec![4], vec![3i32, -3, -3, 3]).unwrap();
        let m = binary(BinOp::FloorMod, &a, &b).unwrap();
        assert_eq!(m.as_slice::<i32>().unwrap(), &[2, -2, -1, 1]);
        let f = binary(BinOp::TruncMod, &a, &b).unwrap();
        assert_eq!(f.as_slice::<i32>().unwrap(), &[-1, 1, -1, 1]);
        let x = Tensor::from_vec(vec![5], vec![-4.5f64, 0.0, -0.0, 3.0, f64::INFINITY]).unwrap();
        let y = Tensor::from_vec(vec![5], vec![2.0f64, -2.0, 2.0, f64::NEG_INFINITY, 2.0]).unwrap();
        let m = binary(BinOp::FloorMod, &x, &y).unwrap();
        let m = m.as_slice::<f64>().unwrap();
        assert_eq!(&m[..4], &[1.5, 0.0, 0.0, f64::NEG_INFINITY]);
        assert!(m[1].is_sign_negative() && m[2].is_sign_positive() && m[4].is_nan());
        let d = binary(BinOp::Div, &a, &b).unwrap();
        assert_eq!(d.as_slice::<i32>().unwrap(), &[-2, -2, 2, 2]);
        let mixed = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        assert!(binary(BinOp::Add, &a, &mixed).is_err());
    }

    #[test]
    fn pow_squares_and_cubes_as_products() {
        let x = t32(&[3], &[-1.5, 0.25, 3.0]);
        for (e, want) in [
            (2.0f32, [2.25f32, 0.0625, 9.0]),
            (3.0, [-3.375, 0.015_625, 27.0]),
        ] {
            let y = pow(&x, &t32(&[1, 1], &[e])).unwrap();
            assert_eq!(y.shape(), &[1, 3]);
            assert_eq!(y.as_slice::<f32>().unwrap(), &want);
        }
        let y = pow(&x, &t32(&[], &[0.5])).unwrap();
        assert!(y.as_slice::<f32>().unwrap()[0].is_nan());
        assert_eq!(y.as_slice::<f32>().unwrap()[1], 0.5);
    }

    #[test]
    fn erf_and_round() {
        assert!((erf(0.5) - 0.520_499_877_813_046_5).abs() < 1e-12);
        assert!((erf(3.0) - 0.999_977_909_503_001_4).abs() < 1e-12);
        assert!((erf(-1.0) + 0.842_700_792_949_714_9).abs() < 1e-12);
        assert_eq!(erf(0.0), 0.0);
        assert!(erf(f64::NAN).is_nan());
        assert_eq!(erf(f64::INFINITY), 1.0);
        let x = t32(&[3], &[2.5, -1.5, 0.4]);
        let r = unary_float(&x, f32::round_ties_even, f64::round_ties_even).unwrap();
        assert_eq!(r.as_slice::<f32>().unwrap(), &[2.0, -2.0, 0.0]);
    }
}
