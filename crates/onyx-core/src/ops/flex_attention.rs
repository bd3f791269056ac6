//! FlexAttention (ai.onnx.preview opset 1): scaled dot-product attention
//! over [B, H, L, E] inputs with optional `score_mod` and `prob_mod`
//! subgraphs applied to the scores before softmax and the probabilities
//! after it. Query heads share key/value heads in contiguous groups (GQA).
//!
//! Q and K are each pre-scaled by sqrt(scale), rounded to the input type as
//! ONNX's reference does; scores, softmax and the product with V are computed
//! in the softmax precision (float32 for 16-bit inputs unless
//! `softmax_precision` says otherwise) and the result is cast back.

use std::sync::Arc;

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;
use crate::plan::Plan;

struct FlexAttention {
    scale: Option<f32>,
    score_mod: Option<Arc<Plan>>,
    prob_mod: Option<Arc<Plan>>,
    precision: Option<DType>,
}

fn dims4(t: &Tensor, name: &str) -> OpResult<[usize; 4]> {
    match t.shape() {
        &[a, b, c, d] => Ok([a, b, c, d]),
        other => Err(op_err!("{name} must have rank 4 but has shape {other:?}")),
    }
}

/// Values of `t` as f64 after rounding through `dtype` (emulates computing in it).
fn through(t: &Tensor, dtype: DType) -> OpResult<Vec<f64>> {
    Ok(cast_tensor(t, dtype, true)?.to_f64_vec()?)
}

impl FlexAttention {
    fn apply_mod(
        &self,
        ctx: &RunCtx,
        plan: &Plan,
        x: Vec<f64>,
        shape: &[usize],
        dtype: DType,
    ) -> OpResult<Vec<f64>> {
        let t = cast_tensor(&Tensor::from_vec(shape.to_vec(), x)?, dtype, true)?;
        let out = ctx.run_subgraph(plan, vec![Some(Value::Tensor(t))])?;
        match out.into_iter().next() {
            Some(Value::Tensor(t)) if t.shape() == shape => Ok(through(&t, dtype)?),
            _ => Err(op_err!(
                "a modifier subgraph must return one tensor of shape {shape:?}"
            )),
        }
    }

    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
        let (q, k, v) = (
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            tensor_in(inputs, 2)?,
        );
        let [b, hq, l, e] = dims4(q, "Q")?;
        let [kb, hk, s, ke] = dims4(k, "K")?;
        let [vb, vh, vs, ev] = dims4(v, "V")?;
        if kb != b || vb != b || vh != hk || vs != s || ke != e || hk == 0 || hq % hk != 0 {
            return Err(op_err!(
                "Q {:?}, K {:?} and V {:?} do not fit together",
                q.shape(),
                k.shape(),
                v.shape()
            ));
        }
        let dtype = q.dtype();
        let compute = self.precision.unwrap_or(match dtype {
            DType::Float16 | DType::BFloat16 => DType::Float,
            other => other,
        });
        let score_shape = [b, hq, l, s];
        let n_scores = score_shape.iter().product::<usize>();
        ctx.check_alloc(n_scores, 8)?;
        let scale = self.scale.unwrap_or(1.0 / (e as f32).sqrt());
        let root = Tensor::scalar(scale.sqrt());
        let root = through(&root, dtype)?[0];
        let scaled = |t: &Tensor| -> OpResult<Vec<f64>> {
            let x: Vec<f64> = t.to_f64_vec()?.iter().map(|&x| x * root).collect();
            through(&Tensor::from_vec(t.shape().to_vec(), x)?, dtype)
        };
        let (qs, ks) = (scaled(q)?, scaled(k)?);
        let group = hq / hk;
        let mut scores = vec![0.0; n_scores];
        for bi in 0..b {
            for h in 0..hq {
                let kh = h / group;
                for i in 0..l {
                    let qrow = &qs[((bi * hq + h) * l + i) * e..][..e];
                    for j in 0..s {
                        let krow = &ks[((bi * hk + kh) * s + j) * e..][..e];
                        scores[((bi * hq + h) * l + i) * s + j] =
                            qrow.iter().zip(krow).map(|(a, c)| a * c).sum();
                    }
                }
            }
        }
        // scores are produced in the input type, then cast to the compute type
        let mut scores = through(&Tensor::from_vec(score_shape.to_vec(), scores)?, dtype)?;
        if let Some(plan) = &self.score_mod {
            scores = self.apply_mod(ctx, plan, scores, &score_shape, compute)?;
        }
        for row in scores.chunks_mut(s.max(1)) {
            let max = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let sum: f64 = row
                .iter_mut()
                .map(|x| {
                    *x = (*x - max).exp();
                    *x
                })
                .sum();
            row.iter_mut().for_each(|x| *x /= sum);
        }
        let mut probs = through(&Tensor::from_vec(score_shape.to_vec(), scores)?, compute)?;
        if let Some(plan) = &self.prob_mod {
            probs = self.apply_mod(ctx, plan, probs, &score_shape, compute)?;
        }
        let vv = through(v, compute)?;
        let mut out = vec![0.0; b * hq * l * ev];
        for bi in 0..b {
            for h in 0..hq {
                let kh = h / group;
                for i in 0..l {
                    let p = &probs[((bi * hq + h) * l + i) * s..][..s];
                    let o = &mut out[((bi * hq + h) * l + i) * ev..][..ev];
                    for (j, &pj) in p.iter().enumerate() {
                        let vrow = &vv[((bi * hk + kh) * s + j) * ev..][..ev];
                        o.iter_mut().zip(vrow).for_each(|(acc, x)| *acc += pj * x);
                    }
                }
            }
        }
        let out = through(&Tensor::from_vec(vec![b, hq, l, ev], out)?, compute)?;
        let y = cast_tensor(&Tensor::from_vec(vec![b, hq, l, ev], out)?, v.dtype(), true)?;
        Ok(vec![Value::Tensor(y)])
    }
}

fn build(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    let sub = |name: &str| -> OpResult<Option<Arc<Plan>>> {
        node.attr_graph(name)?.map(|g| ctx.subgraph(&g)).transpose()
    };
    let precision = match node.attr_int("softmax_precision")? {
        None => None,
        Some(code) => Some(
            i32::try_from(code)
                .ok()
                .and_then(DType::from_onnx)
                .filter(|d| {
                    matches!(
                        d,
                        DType::Float | DType::Double | DType::Float16 | DType::BFloat16
                    )
                })
                .ok_or_else(|| op_err!("softmax_precision {code} is not a float type"))?,
        ),
    };
    let op = FlexAttention {
        scale: node.attr_float("scale")?,
        score_mod: sub("score_mod")?,
        prob_mod: sub("prob_mod")?,
        precision,
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        op.run(ctx, inputs)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("ai.onnx.preview", "FlexAttention", build);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn attends_uniformly_to_equal_keys() {
        // one query, two identical keys: probabilities 0.5/0.5, output = mean of values
        let op = FlexAttention {
            scale: None,
            score_mod: None,
            prob_mod: None,
            precision: None,
        };
        let q = Value::Tensor(Tensor::from_vec(vec![1, 1, 1, 2], vec![1f32, 0.0]).unwrap());
        let k =
            Value::Tensor(Tensor::from_vec(vec![1, 1, 2, 2], vec![1f32, 1.0, 1.0, 1.0]).unwrap());
        let v = Value::Tensor(Tensor::from_vec(vec![1, 1, 2, 1], vec![2f32, 4.0]).unwrap());
        let limits = Limits::default();
        let out = op
            .run(&RunCtx::detached(&limits), &[Some(&q), Some(&k), Some(&v)])
            .unwrap();
        assert_eq!(
            out[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[3.0]
        );
    }
}
