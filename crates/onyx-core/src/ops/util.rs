//! Helpers shared by operator files: reading inputs, axes, and dispatching
//! generic code over element types.

use onyx_tensor::{
    broadcast_shapes, broadcast_strides, for_each_broadcast_run, Elem, Tensor, Value,
};

use super::{OpError, OpResult};
use crate::op_err;

/// Input `i` as a tensor; an error if it is omitted or not a tensor.
pub fn tensor_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<&'a Tensor> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Tensor(t)) => Ok(t),
        Some(other) => Err(op_err!(
            "input {i} should be a tensor but is {}",
            other.kind()
        )),
        None => Err(op_err!("required input {i} is missing")),
    }
}

/// Input `i` as a tensor, or None when omitted.
pub fn opt_tensor_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<Option<&'a Tensor>> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Tensor(t)) => Ok(Some(t)),
        Some(Value::Optional(None)) => Ok(None),
        Some(Value::Optional(Some(v))) => match v.as_ref() {
            Value::Tensor(t) => Ok(Some(t)),
            other => Err(op_err!(
                "input {i} should be a tensor but is {}",
                other.kind()
            )),
        },
        Some(other) => Err(op_err!(
            "input {i} should be a tensor but is {}",
            other.kind()
        )),
        None => Ok(None),
    }
}

/// Input `i` as a list of i64 (shapes, axes, pads...), or None when omitted.
pub fn opt_ints_in(inputs: &[Option<&Value>], i: usize) -> OpResult<Option<Vec<i64>>> {
    opt_tensor_in(inputs, i)?
        .map(|t| t.to_i64_vec().map_err(OpError::from))
        .transpose()
}

/// Input `i` as a single i64 scalar (or one-element tensor).
pub fn scalar_i64_in(inputs: &[Option<&Value>], i: usize) -> OpResult<i64> {
    let v = tensor_in(inputs, i)?.to_i64_vec()?;
    match v.as_slice() {
        [x] => Ok(*x),
        _ => Err(op_err!(
            "input {i} should hold one value but holds {}",
            v.len()
        )),
    }
}

/// Input `i` as a single f64 scalar, or None when omitted.
pub fn opt_scalar_f64_in(inputs: &[Option<&Value>], i: usize) -> OpResult<Option<f64>> {
    match opt_tensor_in(inputs, i)? {
        None => Ok(None),
        Some(t) => {
            let v = t.to_f64_vec()?;
            match v.as_slice() {
                [x] => Ok(Some(*x)),
                [] => Ok(None),
                _ => Err(op_err!(
                    "input {i} should hold one value but holds {}",
                    v.len()
                )),
            }
        }
    }
}

/// Resolves a possibly negative axis against `rank`.
pub fn norm_axis(axis: i64, rank: usize) -> OpResult<usize> {
    let r = rank as i64;
    let a = if axis < 0 { axis + r } else { axis };
    if a < 0 || a >= r {
        return Err(op_err!("axis {axis} is out of range for rank {rank}"));
    }
    Ok(a as usize)
}

/// Resolves a list of possibly negative axes, refusing duplicates.
pub fn norm_axes(axes: &[i64], rank: usize) -> OpResult<Vec<usize>> {
    let mut out = Vec::with_capacity(axes.len());
    for &a in axes {
        let a = norm_axis(a, rank)?;
        if out.contains(&a) {
            return Err(op_err!("axis {a} is repeated in {axes:?}"));
        }
        out.push(a);
    }
    Ok(out)
}

/// The elements of a tensor of `shape` from a function of flat index, type-checked.
pub fn tensor_from_fn<T: Elem>(shape: Vec<usize>, f: impl FnMut(usize) -> T) -> OpResult<Tensor> {
    let n = onyx_tensor::numel(&shape).ok_or_else(|| op_err!("shape {shape:?} is too large"))?;
    Ok(Tensor::from_vec(shape, (0..n).map(f).collect())?)
}

/// Elementwise `f(a, b)` with numpy broadcasting. The work goes in runs of
/// the innermost elements (see `for_each_broadcast_run`), each a tight loop
/// that the compiler can vectorise when `f` is simple.
pub fn broadcast_binary<A: Clone, B: Clone, O>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    f: impl Fn(A, B) -> O,
) -> OpResult<(Vec<O>, Vec<usize>)> {
    let out_shape = broadcast_shapes(&[a_shape, b_shape])?;
    let sa = broadcast_strides(a_shape, &out_shape);
    let sb = broadcast_strides(b_shape, &out_shape);
    let n = onyx_tensor::numel(&out_shape).unwrap_or(0);
    let mut out = Vec::with_capacity(n);
    for_each_broadcast_run(&out_shape, [&sa, &sb], |[ia, ib], step, len| match step {
        [1, 1] => out.extend(
            a[ia..ia + len]
                .iter()
                .zip(&b[ib..ib + len])
                .map(|(x, y)| f(x.clone(), y.clone())),
        ),
        [1, 0] => {
            let y = &b[ib];
            out.extend(a[ia..ia + len].iter().map(|x| f(x.clone(), y.clone())))
        }
        [0, 1] => {
            let x = &a[ia];
            out.extend(b[ib..ib + len].iter().map(|y| f(x.clone(), y.clone())))
        }
        [s, t] => out.extend((0..len).map(|k| f(a[ia + k * s].clone(), b[ib + k * t].clone()))),
    });
    Ok((out, out_shape))
}

/// Runs `$body` with `$v` bound to the slice of a float tensor (f32, f64, f16,
/// bf16), evaluating to `OpResult<_>`; other types are an error.
#[macro_export]
macro_rules! dispatch_float {
    ($t:expr, $v:ident => $body:expr) => {
        match $t.data() {
            onyx_tensor::Data::F32($v) => Ok($body),
            onyx_tensor::Data::F64($v) => Ok($body),
            onyx_tensor::Data::F16($v) => Ok($body),
            onyx_tensor::Data::BF16($v) => Ok($body),
            _ => Err($crate::op_err!("unsupported element type {}", $t.dtype())),
        }
    };
}

/// Like `dispatch_float!` but for every numeric storage (floats and integers).
#[macro_export]
macro_rules! dispatch_numeric {
    ($t:expr, $v:ident => $body:expr) => {
        match $t.data() {
            onyx_tensor::Data::F32($v) => Ok($body),
            onyx_tensor::Data::F64($v) => Ok($body),
            onyx_tensor::Data::F16($v) => Ok($body),
            onyx_tensor::Data::BF16($v) => Ok($body),
            onyx_tensor::Data::I8($v) if !$t.dtype().is_minifloat() => Ok($body),
            onyx_tensor::Data::I16($v) => Ok($body),
            onyx_tensor::Data::I32($v) => Ok($body),
            onyx_tensor::Data::I64($v) => Ok($body),
            onyx_tensor::Data::U8($v) if !$t.dtype().is_minifloat() => Ok($body),
            onyx_tensor::Data::U16($v) => Ok($body),
            onyx_tensor::Data::U32($v) => Ok($body),
            onyx_tensor::Data::U64($v) => Ok($body),
            _ => Err($crate::op_err!("unsupported element type {}", $t.dtype())),
        }
    };
}

/// Like `dispatch_numeric!` for the integer storages only.
#[macro_export]
macro_rules! dispatch_int {
    ($t:expr, $v:ident => $body:expr) => {
        match $t.data() {
            onyx_tensor::Data::I8($v) => Ok($body),
            onyx_tensor::Data::I16($v) => Ok($body),
            onyx_tensor::Data::I32($v) => Ok($body),
            onyx_tensor::Data::I64($v) => Ok($body),
            onyx_tensor::Data::U8($v) if !$t.dtype().is_minifloat() => Ok($body),
            onyx_tensor::Data::U16($v) => Ok($body),
            onyx_tensor::Data::U32($v) => Ok($body),
            onyx_tensor::Data::U64($v) => Ok($body),
            _ => Err($crate::op_err!("unsupported element type {}", $t.dtype())),
        }
    };
}

/// Wraps one output tensor as a kernel result.
pub fn one(t: Tensor) -> OpResult<Vec<Value>> {
    Ok(vec![Value::Tensor(t)])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn axes() {
        assert_eq!(norm_axis(-1, 3).unwrap(), 2);
        assert!(norm_axis(0, 0).is_err());
        assert!(norm_axis(3, 3).is_err());
        assert!(norm_axes(&[0, -3], 3).is_err());
    }

    #[test]
    fn broadcasting_binary() {
        let (v, s) = broadcast_binary(&[1, 2], &[2, 1], &[10, 20, 30], &[3], |a, b| a + b).unwrap();
        assert_eq!(s, vec![2, 3]);
        assert_eq!(v, vec![11, 21, 31, 12, 22, 32]);
        assert!(broadcast_binary(&[1, 2], &[2], &[1, 2, 3], &[3], |a: i32, b: i32| a + b).is_err());
    }
}
