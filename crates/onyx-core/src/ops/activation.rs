//! Activation functions: Relu, Sigmoid, Tanh, Gelu, LeakyRelu, Elu, Selu,
//! Celu, HardSigmoid, HardSwish, Softplus, Softsign, ThresholdedRelu, Mish,
//! Shrink, Swish, SwiGLU, Clip and PRelu.
//!
//! Float activations compute in f64 and round back to the element type.
//! Opset notes: Clip takes `min`/`max` attributes before opset 11 and optional
//! inputs from 11 (every numeric type from 12); Relu accepts signed integers
//! from opset 14; PRelu's slope broadcasts unidirectionally to X from opset 7
//! (before that, and as a fallback, a 1-D slope lines up with the one axis
//! of X of the same length).

use onyx_kernels::vmath::{self, Unary};
use onyx_tensor::{bf16, f16, Data, Elem, Tensor, Value};

use super::elementwise::{erf, Arith};
use super::{
    broadcast_binary, one, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry,
};
use crate::op_err;

/// Applies `f` to every element of a float tensor (f32, f64, f16, bf16),
/// computing in f64.
pub(crate) fn map_float(t: &Tensor, f: impl Fn(f64) -> f64) -> OpResult<Tensor> {
    let data = match t.data() {
        Data::F32(v) => Data::F32(v.iter().map(|&x| f(f64::from(x)) as f32).collect()),
        Data::F64(v) => Data::F64(v.iter().map(|&x| f(x)).collect()),
        Data::F16(v) => Data::F16(v.iter().map(|x| f16::from_f64(f(x.to_f64()))).collect()),
        Data::BF16(v) => Data::BF16(v.iter().map(|x| bf16::from_f64(f(x.to_f64()))).collect()),
        _ => {
            return Err(op_err!(
                "expected a float tensor but got element type {}",
                t.dtype()
            ))
        }
    };
    Ok(Tensor::new(t.dtype(), t.shape().to_vec(), data)?)
}

/// Runs `$body` with `$v` bound to the slice of any numeric (non-minifloat) tensor.
macro_rules! numeric {
    ($t:expr, $v:ident => $body:expr) => {
        match $t.data() {
            Data::F32($v) => $body,
            Data::F64($v) => $body,
            Data::F16($v) => $body,
            Data::BF16($v) => $body,
            Data::I8($v) if !$t.dtype().is_minifloat() => $body,
            Data::I16($v) => $body,
            Data::I32($v) => $body,
            Data::I64($v) => $body,
            Data::U8($v) if !$t.dtype().is_minifloat() => $body,
            Data::U16($v) => $body,
            Data::U32($v) => $body,
            Data::U64($v) => $body,
            _ => return Err(op_err!("unsupported element type {}", $t.dtype())),
        }
    };
}

fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

fn softplus(x: f64) -> f64 {
    if x > 0.0 {
        x + (-x).exp().ln_1p()
    } else {
        x.exp().ln_1p()
    }
}

pub(crate) fn gelu(x: f64) -> f64 {
    0.5 * x * (1.0 + erf(x / std::f64::consts::SQRT_2))
}

fn gelu_tanh(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x * x * x)).tanh())
}

/// A float attribute as f64, or its default.
fn fattr(ctx: &BuildCtx, name: &str, default: f64) -> OpResult<f64> {
    Ok(ctx.node.attr_float(name)?.map_or(default, f64::from))
}

/// A kernel applying `f` elementwise to input 0 (a float tensor).
fn float_kernel(f: impl Fn(f64) -> f64 + Send + Sync + 'static) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            one(map_float(tensor_in(inputs, 0)?, &f)?)
        },
    ))
}

/// As [`float_kernel`], but f32 tensors go through the vectorised f32
/// kernel `op` (`onyx_kernels::vmath`).
fn float_kernel_vectorised(
    op: Unary,
    f: impl Fn(f64) -> f64 + Send + Sync + 'static,
) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            match t.data() {
                Data::F32(v) => one(Tensor::from_vec(t.shape().to_vec(), vmath::map(v, op))?),
                _ => one(map_float(t, &f)?),
            }
        },
    ))
}

fn relu(t: &Tensor) -> OpResult<Tensor> {
    if let Data::F32(v) = t.data() {
        return Ok(Tensor::from_vec(
            t.shape().to_vec(),
            vmath::map(v, Unary::Relu),
        )?);
    }
    macro_rules! go {
        ($v:ident) => {{
            let zero = <_ as Default>::default();
            let out: Vec<_> = $v
                .iter()
                .map(|&x| if x < zero { zero } else { x })
                .collect();
            Tensor::new(t.dtype(), t.shape().to_vec(), Elem::into_data(out))?
        }};
    }
    Ok(numeric!(t, v => go!(v)))
}

/// Clips every element to `[lo, hi]` (either bound optional), as numpy's
/// clip: NaN stays NaN, and `lo > hi` gives `hi`. One loop per case, so
/// that each is a plain max/min the compiler vectorises.
fn clip_slice<T: Copy + PartialOrd>(v: &[T], lo: Option<T>, hi: Option<T>) -> Vec<T> {
    let above = |x: T, l: T| if x < l { l } else { x };
    let below = |x: T, h: T| if x > h { h } else { x };
    match (lo, hi) {
        (Some(l), Some(h)) => v.iter().map(|&x| below(above(x, l), h)).collect(),
        (Some(l), None) => v.iter().map(|&x| above(x, l)).collect(),
        (None, Some(h)) => v.iter().map(|&x| below(x, h)).collect(),
        (None, None) => v.to_vec(),
    }
}

/// A bound input of Clip (opset 11+): one element of the same type as X, or
/// None when omitted or empty.
fn bound<T: Elem + Copy>(
    inputs: &[Option<&Value>],
    i: usize,
    x: &Tensor,
    name: &str,
) -> OpResult<Option<T>> {
    let Some(b) = opt_tensor_in(inputs, i)? else {
        return Ok(None);
    };
    if b.dtype() != x.dtype() {
        return Err(op_err!(
            "'{name}' has element type {} but the input has {}",
            b.dtype(),
            x.dtype()
        ));
    }
    let s = b.as_slice::<T>()?;
    match s {
        [] => Ok(None),
        [v] => Ok(Some(*v)),
        _ => Err(op_err!(
            "'{name}' should hold one value but holds {}",
            s.len()
        )),
    }
}

fn clip(inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    let x = tensor_in(inputs, 0)?;
    macro_rules! go {
        ($v:ident) => {{
            let lo = bound(inputs, 1, x, "min")?;
            let hi = bound(inputs, 2, x, "max")?;
            Tensor::new(
                x.dtype(),
                x.shape().to_vec(),
                Elem::into_data(clip_slice($v, lo, hi)),
            )?
        }};
    }
    Ok(numeric!(x, v => go!(v)))
}

fn build_clip(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    if ctx.opset < 11 {
        let lo = fattr(ctx, "min", f64::NEG_INFINITY)?;
        let hi = fattr(ctx, "max", f64::INFINITY)?;
        return float_kernel(move |x| {
            let y = if x < lo { lo } else { x };
            if y > hi {
                hi
            } else {
                y
            }
        });
    }
    Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
        one(clip(inputs)?)
    }))
}

/// The slope reshaped so it broadcasts to `x_shape`: as is when numpy
/// broadcasting gives `x_shape`, else (a 1-D slope) aligned with the single
/// axis of X that has its length.
fn prelu_slope_shape(x_shape: &[usize], s_shape: &[usize]) -> OpResult<Vec<usize>> {
    if let Ok(out) = onyx_tensor::broadcast_shapes(&[x_shape, s_shape]) {
        if out == x_shape {
            return Ok(s_shape.to_vec());
        }
    }
    if let [d] = s_shape {
        let matches: Vec<usize> = (0..x_shape.len()).filter(|&i| x_shape[i] == *d).collect();
        if let [axis] = matches.as_slice() {
            let mut shape = vec![1; x_shape.len()];
            shape[*axis] = *d;
            return Ok(shape);
        }
    }
    Err(op_err!(
        "slope of shape {s_shape:?} does not broadcast to input shape {x_shape:?}"
    ))
}

fn prelu(x: &Tensor, slope: &Tensor) -> OpResult<Tensor> {
    if x.dtype() != slope.dtype() {
        return Err(op_err!(
            "slope has element type {} but the input has {}",
            slope.dtype(),
            x.dtype()
        ));
    }
    let s_shape = prelu_slope_shape(x.shape(), slope.shape())?;
    macro_rules! go {
        ($v:ident) => {{
            let s = Elem::slice(slope.data()).ok_or_else(|| op_err!("slope storage mismatch"))?;
            let zero = <_ as Default>::default();
            let (out, shape) = broadcast_binary($v, x.shape(), s, &s_shape, |a, b| {
                if a < zero {
                    Arith::mul(a, b)
                } else {
                    a
                }
            })?;
            Tensor::new(x.dtype(), shape, Elem::into_data(out))?
        }};
    }
    Ok(numeric!(x, v => go!(v)))
}

fn shrink_slice<T: Arith>(v: &[T], lambd: f64, bias: f64) -> Vec<T> {
    v.iter()
        .map(|&x| {
            let f = x.to_f64();
            let y = if f < -lambd {
                f + bias
            } else if f > lambd {
                f - bias
            } else {
                0.0
            };
            T::from_f64(y)
        })
        .collect()
}

fn shrink(t: &Tensor, lambd: f64, bias: f64) -> OpResult<Tensor> {
    Ok(numeric!(t, v => Tensor::new(
        t.dtype(),
        t.shape().to_vec(),
        Elem::into_data(shrink_slice(v, lambd, bias)),
    )?))
}

fn swiglu(a: &Tensor, b: &Tensor, alpha: f64) -> OpResult<Tensor> {
    if a.shape() != b.shape() || a.dtype() != b.dtype() {
        return Err(op_err!(
            "SwiGLU needs inputs of one shape and type but got {} {:?} and {} {:?}",
            a.dtype(),
            a.shape(),
            b.dtype(),
            b.shape()
        ));
    }
    let gate = map_float(a, |x| x * sigmoid(alpha * x))?;
    super::elementwise::binary(super::elementwise::BinOp::Mul, &gate, b)
}

fn build_gelu(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    match ctx.node.attr_string("approximate")?.as_deref() {
        None | Some("none") => float_kernel_vectorised(Unary::Gelu, gelu),
        Some("tanh") => float_kernel_vectorised(Unary::GeluTanh, gelu_tanh),
        Some(other) => Err(op_err!(
            "attribute 'approximate' should be \"none\" or \"tanh\" but is \"{other}\""
        )),
    }
}

pub fn register(r: &mut Registry) {
    r.add("", "Relu", |_| {
        Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
            one(relu(tensor_in(inputs, 0)?)?)
        }))
    });
    r.add("", "Sigmoid", |_| {
        float_kernel_vectorised(Unary::Sigmoid, sigmoid)
    });
    r.add("", "Tanh", |_| {
        float_kernel_vectorised(Unary::Tanh, f64::tanh)
    });
    r.add("", "Gelu", build_gelu);
    // the passes' fused Gelu, for opsets before 20 that lack the standard one
    r.add(crate::passes::ONYX_DOMAIN, "Gelu", build_gelu);
    r.add("", "LeakyRelu", |ctx| {
        let alpha = fattr(ctx, "alpha", 0.01)?;
        float_kernel(move |x| if x < 0.0 { alpha * x } else { x })
    });
    r.add("", "Elu", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.0)?;
        float_kernel(move |x| if x < 0.0 { alpha * x.exp_m1() } else { x })
    });
    r.add("", "Selu", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.673_263_192_176_818_8)?;
        let gamma = fattr(ctx, "gamma", 1.050_701_022_148_132_3)?;
        float_kernel(move |x| {
            if x <= 0.0 {
                gamma * (alpha * x.exp() - alpha)
            } else {
                gamma * x
            }
        })
    });
    r.add("", "Celu", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.0)?;
        if alpha == 0.0 {
            return Err(op_err!("attribute 'alpha' of Celu must not be 0"));
        }
        float_kernel(move |x| x.max(0.0) + (alpha * (x / alpha).exp_m1()).min(0.0))
    });
    r.add("", "HardSigmoid", |ctx| {
        let alpha = fattr(ctx, "alpha", 0.2)?;
        let beta = fattr(ctx, "beta", 0.5)?;
        float_kernel(move |x| (alpha * x + beta).clamp(0.0, 1.0))
    });
    r.add("", "HardSwish", |_| {
        float_kernel(|x| x * (x / 6.0 + 0.5).clamp(0.0, 1.0))
    });
    r.add("", "Softplus", |_| float_kernel(softplus));
    r.add("", "Softsign", |_| float_kernel(|x| x / (1.0 + x.abs())));
    r.add("", "ThresholdedRelu", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.0)?;
        float_kernel(move |x| if x > alpha { x } else { 0.0 })
    });
    r.add("", "Mish", |_| float_kernel(|x| x * softplus(x).tanh()));
    r.add("", "Swish", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.0)?;
        float_kernel(move |x| x * sigmoid(alpha * x))
    });
    r.add("", "SwiGLU", |ctx| {
        let alpha = fattr(ctx, "alpha", 1.0)?;
        Ok(Box::new(
            move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
                one(swiglu(tensor_in(inputs, 0)?, tensor_in(inputs, 1)?, alpha)?)
            },
        ))
    });
    r.add("", "Shrink", |ctx| {
        let lambd = fattr(ctx, "lambd", 0.5)?;
        let bias = fattr(ctx, "bias", 0.0)?;
        Ok(Box::new(
            move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
                one(shrink(tensor_in(inputs, 0)?, lambd, bias)?)
            },
        ))
    });
    r.add("", "Clip", build_clip);
    r.add("", "PRelu", |_| {
        Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
            one(prelu(tensor_in(inputs, 0)?, tensor_in(inputs, 1)?)?)
        }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn float_activations() {
        let x = t32(&[3], &[-1.0, 0.0, 2.0]);
        let s = map_float(&x, sigmoid).unwrap();
        close(s.as_slice().unwrap(), &[0.268_941_43, 0.5, 0.880_797_1]);
        let sp = map_float(&x, softplus).unwrap();
        close(
            sp.as_slice().unwrap(),
            &[0.313_261_7, std::f32::consts::LN_2, 2.126_928],
        );
        let g = map_float(&x, gelu).unwrap();
        close(g.as_slice().unwrap(), &[-0.158_655_25, 0.0, 1.954_5]);
        assert!(map_float(&Tensor::scalar(1i32), sigmoid).is_err());
    }

    #[test]
    fn relu_on_ints_and_clip() {
        let x = Tensor::from_vec(vec![3], vec![-3i8, 0, 5]).unwrap();
        assert_eq!(relu(&x).unwrap().as_slice::<i8>().unwrap(), &[0, 0, 5]);
        let lo = Value::Tensor(Tensor::scalar(-1i8));
        let hi = Value::Tensor(Tensor::scalar(2i8));
        let xv = Value::Tensor(x);
        let y = clip(&[Some(&xv), Some(&lo), Some(&hi)]).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-1, 0, 2]);
        let y = clip(&[Some(&xv), None, Some(&hi)]).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-3, 0, 2]);
        // min > max gives max everywhere, as numpy does
        let y = clip(&[Some(&xv), Some(&hi), Some(&lo)]).unwrap();
        assert_eq!(y.as_slice::<i8>().unwrap(), &[-1, -1, -1]);
        let wrong = Value::Tensor(Tensor::scalar(1.0f32));
        assert!(clip(&[Some(&xv), Some(&wrong), None]).is_err());
    }

    #[test]
    fn prelu_broadcasts() {
        let x = t32(&[2, 3], &[-1.0, 2.0, -3.0, 4.0, -5.0, 6.0]);
        let slope = t32(&[3], &[0.1, 0.2, 0.3]);
        let y = prelu(&x, &slope).unwrap();
        close(y.as_slice().unwrap(), &[-0.1, 2.0, -0.9, 4.0, -1.0, 6.0]);
        // a 1-D slope lines up with the one axis of its length
        let slope = t32(&[2], &[0.5, 2.0]);
        let y = prelu(&x, &slope).unwrap();
        close(y.as_slice().unwrap(), &[-0.5, 2.0, -1.5, 4.0, -10.0, 6.0]);
        assert!(prelu(&x, &t32(&[4], &[1.0; 4])).is_err());
    }

    #[test]
    fn shrink_and_swiglu() {
        let x = Tensor::from_vec(vec![4], vec![-3i32, -1, 1, 3]).unwrap();
        let y = shrink(&x, 1.5, 1.0).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[-2, 0, 0, 2]);
        let a = t32(&[2], &[0.0, 1.0]);
        let b = t32(&[2], &[3.0, 2.0]);
        let y = swiglu(&a, &b, 1.0).unwrap();
        close(y.as_slice().unwrap(), &[0.0, 2.0 * 0.731_058_6]);
        assert!(swiglu(&a, &t32(&[1], &[1.0]), 1.0).is_err());
    }
}
