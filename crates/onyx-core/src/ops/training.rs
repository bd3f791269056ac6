//! Optimizers of the ai.onnx.preview.training domain: Adagrad, Adam and
//! Momentum (standard and Nesterov). Each takes a learning rate R, a step
//! count T and then N tensors to optimize, their N gradients and their N
//! accumulators (Adam has two sets), and returns the updated tensors followed
//! by the updated accumulators. Arithmetic is done in f64 and the results are
//! stored in each input's own float type.
//!
//! Gradient is not implemented: it needs automatic differentiation of the
//! graph, which Onyx does not have.

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{scalar_i64_in, tensor_in, BuildCtx, Kernel, OpResult, Registry};
use crate::op_err;

const DOMAIN: &str = "ai.onnx.preview.training";

fn attr_f(ctx: &BuildCtx, name: &str, default: Option<f32>) -> OpResult<f64> {
    match ctx.node.attr_float(name)? {
        Some(v) => Ok(f64::from(v)),
        None => default
            .map(f64::from)
            .ok_or_else(|| op_err!("missing required attribute '{name}'")),
    }
}

/// The learning rate R (a float scalar) and step count T (an int scalar).
fn rate_and_step(inputs: &[Option<&Value>]) -> OpResult<(f64, i64)> {
    let r = tensor_in(inputs, 0)?.to_f64_vec()?;
    let r = match r.as_slice() {
        [x] => *x,
        _ => {
            return Err(op_err!(
                "input R should hold one value but holds {}",
                r.len()
            ))
        }
    };
    Ok((r, scalar_i64_in(inputs, 1)?))
}

/// The `groups` tensors for parameter `i` of `n`, as f64 vectors of one shape.
fn group<'a>(
    inputs: &[Option<&'a Value>],
    groups: usize,
    n: usize,
    i: usize,
) -> OpResult<(Vec<Vec<f64>>, &'a Tensor)> {
    let mut out = Vec::with_capacity(groups);
    let first = tensor_in(inputs, 2 + i)?;
    if !first.dtype().is_float() {
        return Err(op_err!(
            "optimized tensors should be float but input {} is {}",
            2 + i,
            first.dtype()
        ));
    }
    for g in 0..groups {
        let idx = 2 + g * n + i;
        let t = tensor_in(inputs, idx)?;
        if t.shape() != first.shape() {
            return Err(op_err!(
                "input {idx} has shape {:?} but input {} has shape {:?}",
                t.shape(),
                2 + i,
                first.shape()
            ));
        }
        out.push(t.to_f64_vec()?);
    }
    Ok((out, first))
}

fn to_tensor(like: &Tensor, v: Vec<f64>) -> OpResult<Value> {
    let t = Tensor::from_vec(like.shape().to_vec(), v)?;
    let dt = like.dtype();
    Ok(Value::Tensor(if dt == DType::Double {
        t
    } else {
        cast_tensor(&t, dt, false)?
    }))
}

/// Runs an optimizer with `groups` input groups (X, G, and accumulators) and
/// `groups - 1` output groups; `step` maps one element's group values to the
/// new X followed by the new accumulators.
fn run_optimizer(
    inputs: &[Option<&Value>],
    groups: usize,
    step: impl Fn(f64, i64, &[f64], &mut [f64]),
) -> OpResult<Vec<Value>> {
    let (r, t) = rate_and_step(inputs)?;
    let rest = inputs.len().saturating_sub(2);
    if rest == 0 || !rest.is_multiple_of(groups) {
        return Err(op_err!(
            "expected R, T and {groups} groups of equally many tensors but got {} inputs",
            inputs.len()
        ));
    }
    let n = rest / groups;
    let outs = groups - 1;
    let mut results: Vec<Vec<Value>> = vec![Vec::with_capacity(n); outs];
    let mut vals = vec![0.0; groups];
    let mut news = vec![0.0; outs];
    for i in 0..n {
        let (data, like) = group(inputs, groups, n, i)?;
        let len = data[0].len();
        let mut out: Vec<Vec<f64>> = vec![Vec::with_capacity(len); outs];
        for e in 0..len {
            for (g, d) in data.iter().enumerate() {
                vals[g] = d[e];
            }
            step(r, t, &vals, &mut news);
            for (o, v) in out.iter_mut().zip(&news) {
                o.push(*v);
            }
        }
        for (res, o) in results.iter_mut().zip(out) {
            res.push(to_tensor(like, o)?);
        }
    }
    Ok(results.into_iter().flatten().collect())
}

fn build_adagrad(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let decay = attr_f(ctx, "decay_factor", Some(0.0))?;
    let eps = attr_f(ctx, "epsilon", Some(1e-6))?;
    let norm = attr_f(ctx, "norm_coefficient", Some(0.0))?;
    Ok(Box::new(
        move |_: &crate::ops::RunCtx, inputs: &[Option<&Value>]| adagrad(inputs, decay, eps, norm),
    ))
}

fn adagrad(inputs: &[Option<&Value>], decay: f64, eps: f64, norm: f64) -> OpResult<Vec<Value>> {
    // groups: X, G, H
    run_optimizer(inputs, 3, |r, t, v, out| {
        let (x, g, h) = (v[0], v[1], v[2]);
        let rate = r / (1.0 + t as f64 * decay);
        let gr = norm * x + g;
        let h_new = h + gr * gr;
        out[0] = x - rate * gr / (h_new.sqrt() + eps);
        out[1] = h_new;
    })
}

#[derive(Clone, Copy)]
struct AdamAttrs {
    alpha: f64,
    beta: f64,
    eps: f64,
    norm: f64,
    norm_post: f64,
}

fn build_adam(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let a = AdamAttrs {
        alpha: attr_f(ctx, "alpha", Some(0.9))?,
        beta: attr_f(ctx, "beta", Some(0.999))?,
        eps: attr_f(ctx, "epsilon", Some(1e-6))?,
        norm: attr_f(ctx, "norm_coefficient", Some(0.0))?,
        norm_post: attr_f(ctx, "norm_coefficient_post", Some(0.0))?,
    };
    Ok(Box::new(
        move |_: &crate::ops::RunCtx, inputs: &[Option<&Value>]| adam(inputs, a),
    ))
}

fn adam(inputs: &[Option<&Value>], a: AdamAttrs) -> OpResult<Vec<Value>> {
    // groups: X, G, V, H
    run_optimizer(inputs, 4, |r, t, vals, out| {
        let (x, g, v, h) = (vals[0], vals[1], vals[2], vals[3]);
        let gr = a.norm * x + g;
        let v_new = a.alpha * v + (1.0 - a.alpha) * gr;
        let h_new = a.beta * h + (1.0 - a.beta) * gr * gr;
        let rate = if t > 0 {
            let tf = t as f64;
            r * (1.0 - a.beta.powf(tf)).sqrt() / (1.0 - a.alpha.powf(tf))
        } else {
            r
        };
        let x_new = x - rate * (v_new / (h_new.sqrt() + a.eps));
        out[0] = (1.0 - a.norm_post) * x_new;
        out[1] = v_new;
        out[2] = h_new;
    })
}

#[derive(Clone, Copy)]
struct MomentumAttrs {
    alpha: f64,
    beta: f64,
    norm: f64,
    nesterov: bool,
}

fn build_momentum(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let mode = ctx
        .node
        .attr_string("mode")?
        .ok_or_else(|| op_err!("missing required attribute 'mode'"))?;
    let nesterov = match mode.as_str() {
        "standard" => false,
        "nesterov" => true,
        other => return Err(op_err!("unknown Momentum mode '{other}'")),
    };
    let a = MomentumAttrs {
        alpha: attr_f(ctx, "alpha", None)?,
        beta: attr_f(ctx, "beta", None)?,
        norm: attr_f(ctx, "norm_coefficient", None)?,
        nesterov,
    };
    Ok(Box::new(
        move |_: &crate::ops::RunCtx, inputs: &[Option<&Value>]| momentum(inputs, a),
    ))
}

fn momentum(inputs: &[Option<&Value>], a: MomentumAttrs) -> OpResult<Vec<Value>> {
    // groups: X, G, V
    run_optimizer(inputs, 3, |r, t, vals, out| {
        let (x, g, v) = (vals[0], vals[1], vals[2]);
        let gr = a.norm * x + g;
        let beta = if t > 0 { a.beta } else { 1.0 };
        let v_new = a.alpha * v + beta * gr;
        out[0] = if a.nesterov {
            x - r * (gr + a.alpha * v_new)
        } else {
            x - r * v_new
        };
        out[1] = v_new;
    })
}

/// `com.onyx::SumToShape(g, shape)`: `g` summed over the dims along which a
/// tensor of `shape` was broadcast to `g`'s shape. The expansion of the
/// Gradient operator (ir/gradient.rs) uses it for inputs that broadcast.
fn sum_to_shape(g: &Tensor, shape: &[i64]) -> OpResult<Tensor> {
    let target = shape
        .iter()
        .map(|&d| usize::try_from(d).map_err(|_| op_err!("shape has a negative dim {d}")))
        .collect::<OpResult<Vec<usize>>>()?;
    if onyx_tensor::broadcast_shapes(&[&target, g.shape()])
        .ok()
        .as_deref()
        != Some(g.shape())
    {
        return Err(op_err!(
            "shape {target:?} does not broadcast to the gradient's shape {:?}",
            g.shape()
        ));
    }
    if target == g.shape() {
        return Ok(g.clone());
    }
    let n = onyx_tensor::numel(&target).ok_or_else(|| op_err!("shape {target:?} is too large"))?;
    let mut sums = vec![0f64; n];
    let strides = onyx_tensor::broadcast_strides(&target, g.shape());
    let values = g.to_f64_vec()?;
    onyx_tensor::for_each_broadcast_index(g.shape(), [&strides], |i, [at]| sums[at] += values[i]);
    super::pool::from_f64(g.dtype(), target, sums)
}

pub fn register(r: &mut Registry) {
    r.add("com.onyx", "SumToShape", |_| {
        Ok(Box::new(|_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let shape = tensor_in(inputs, 1)?.to_i64_vec()?;
            Ok(vec![Value::Tensor(sum_to_shape(
                tensor_in(inputs, 0)?,
                &shape,
            )?)])
        }))
    });
    r.add(DOMAIN, "Adagrad", build_adagrad);
    r.add(DOMAIN, "Adam", build_adam);
    r.add(DOMAIN, "Momentum", build_momentum);
}

#[cfg(test)]
mod tests {
    #[test]
    fn sums_back_to_the_broadcast_shape() {
        let g = Tensor::from_vec(vec![2, 3], vec![1f32, 2.0, 3.0, 4.0, 5.0, 6.0]).unwrap();
        let y = super::sum_to_shape(&g, &[3]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[5.0, 7.0, 9.0]);
        let y = super::sum_to_shape(&g, &[2, 1]).unwrap();
        assert_eq!(
            (y.shape(), y.as_slice::<f32>().unwrap()),
            (&[2, 1][..], &[6.0, 15.0][..])
        );
        let y = super::sum_to_shape(&g, &[]).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[21.0]);
        assert!(super::sum_to_shape(&g, &[4]).is_err());
    }

    use super::*;

    fn f(v: &[f32]) -> Value {
        Value::Tensor(Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap())
    }

    fn vals(v: &Value) -> Vec<f32> {
        v.as_tensor().unwrap().as_slice::<f32>().unwrap().to_vec()
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len());
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn adagrad_step() {
        let r = Value::Tensor(Tensor::scalar(0.1f32));
        let t = Value::Tensor(Tensor::scalar(0i64));
        let (x, g, h) = (f(&[1.0]), f(&[3.0]), f(&[0.0]));
        let out = adagrad(
            &[Some(&r), Some(&t), Some(&x), Some(&g), Some(&h)],
            0.0,
            0.0,
            0.0,
        )
        .unwrap();
        // h = 9, x = 1 - 0.1 * 3 / 3
        close(&vals(&out[0]), &[0.9]);
        close(&vals(&out[1]), &[9.0]);
    }

    #[test]
    fn momentum_first_and_later_steps() {
        let r = Value::Tensor(Tensor::scalar(0.5f32));
        let t0 = Value::Tensor(Tensor::scalar(0i64));
        let t1 = Value::Tensor(Tensor::scalar(1i64));
        let (x, g, v) = (f(&[2.0]), f(&[1.0]), f(&[4.0]));
        let a = MomentumAttrs {
            alpha: 0.5,
            beta: 0.25,
            norm: 0.0,
            nesterov: false,
        };
        // t = 0: v = 0.5*4 + 1*1 = 3, x = 2 - 0.5*3 = 0.5
        let out = momentum(&[Some(&r), Some(&t0), Some(&x), Some(&g), Some(&v)], a).unwrap();
        close(&vals(&out[0]), &[0.5]);
        close(&vals(&out[1]), &[3.0]);
        // t = 1, nesterov: v = 2 + 0.25 = 2.25, x = 2 - 0.5*(1 + 0.5*2.25) = 0.9375
        let a = MomentumAttrs {
            nesterov: true,
            ..a
        };
        let out = momentum(&[Some(&r), Some(&t1), Some(&x), Some(&g), Some(&v)], a).unwrap();
        close(&vals(&out[0]), &[0.9375]);
        close(&vals(&out[1]), &[2.25]);
    }

    #[test]
    fn adam_without_bias_correction() {
        let r = Value::Tensor(Tensor::scalar(1.0f32));
        let t = Value::Tensor(Tensor::scalar(0i64));
        let (x, g, v, h) = (f(&[1.0]), f(&[2.0]), f(&[0.0]), f(&[0.0]));
        let a = AdamAttrs {
            alpha: 0.5,
            beta: 0.75,
            eps: 0.0,
            norm: 0.0,
            norm_post: 0.0,
        };
        let ins = [Some(&r), Some(&t), Some(&x), Some(&g), Some(&v), Some(&h)];
        let out = adam(&ins, a).unwrap();
        // v = 1, h = 0.25*4 = 1, x = 1 - 1*(1/1) = 0
        close(&vals(&out[0]), &[0.0]);
        close(&vals(&out[1]), &[1.0]);
        close(&vals(&out[2]), &[1.0]);
        assert!(adam(&ins[..5], a).is_err());
    }
}
