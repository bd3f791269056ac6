//! Dropout, and (later) signal-processing operators.
//!
//! Dropout in inference (or with ratio 0) is the identity with an all-true
//! mask. Opset 12+ reads `ratio` and `training_mode` from inputs; earlier
//! opsets have a `ratio` attribute and never train (opsets 1-6 also had
//! `is_test`). Before opset 10 the mask has the input's element type.

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{
    opt_scalar_f64_in, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx,
};
use crate::op_err;

/// splitmix64, for the training-mode mask.
fn next_uniform(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    (z >> 11) as f64 / (1u64 << 53) as f64
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
        let mut state = match seed {
            Some(s) => s as u64 ^ 0x5EED,
            None => counter.fetch_add(0x9E37_79B9_7F4A_7C15, std::sync::atomic::Ordering::Relaxed),
        };
        let scale = 1.0 / (1.0 - ratio);
        let keep: Vec<bool> = (0..x.len())
            .map(|_| next_uniform(&mut state) >= ratio)
            .collect();
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

pub fn register(r: &mut Registry) {
    r.add("", "Dropout", build_dropout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uniform_draws_are_in_unit_interval() {
        let mut s = 3u64;
        let v: Vec<f64> = (0..1000).map(|_| next_uniform(&mut s)).collect();
        assert!(v.iter().all(|x| (0.0..1.0).contains(x)));
        let mean = v.iter().sum::<f64>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05);
    }
}
