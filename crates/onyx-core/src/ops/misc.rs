//! Dropout.
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
    opt_scalar_f64_in, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx,
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

pub fn register(r: &mut Registry) {
    r.add("", "Dropout", build_dropout);
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
}
