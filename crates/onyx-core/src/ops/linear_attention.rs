//! LinearAttention (opset 27): recurrent linear attention with the update
//! rules linear, gated, delta and gated_delta, and grouped KV heads.
//!
//! Q, K, V (and decay/beta) arrive packed as [B, T, heads*dim]; the state is
//! [B, H_kv, d_k, d_v]. Each step, for each batch and KV head:
//! gated rules scale the state by exp(decay); delta rules replace v by
//! beta * (v - S^T k); then S += k v^T, and every query head of the group
//! reads o = scale * q^T S. Computed in f32 as ONNX's reference does.

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

#[derive(Clone, Copy)]
struct Rule {
    gated: bool,
    delta: bool,
}

struct LinearAttention {
    q_heads: usize,
    kv_heads: usize,
    scale: f32,
    rule: Rule,
}

fn f32s(t: &Tensor) -> OpResult<Vec<f32>> {
    Ok(cast_tensor(t, DType::Float, true)?
        .as_slice::<f32>()?
        .to_vec())
}

fn rank3(t: &Tensor, name: &str) -> OpResult<(usize, usize, usize)> {
    match t.shape() {
        &[b, s, d] => Ok((b, s, d)),
        other => Err(op_err!(
            "{name} must have rank 3 (B, T, H*D) but has shape {other:?}"
        )),
    }
}

impl LinearAttention {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
        let (query, key, value) = (
            tensor_in(inputs, 0)?,
            tensor_in(inputs, 1)?,
            tensor_in(inputs, 2)?,
        );
        let past = opt_tensor_in(inputs, 3)?;
        let decay = opt_tensor_in(inputs, 4)?;
        let beta = opt_tensor_in(inputs, 5)?;
        let (b, t, qd) = rank3(query, "query")?;
        let (kb, kt, kd) = rank3(key, "key")?;
        let (vb, vt, vd) = rank3(value, "value")?;
        let (hq, hk) = (self.q_heads, self.kv_heads);
        if kb != b
            || vb != b
            || kt != t
            || vt != t
            || qd % hq != 0
            || vd % hk != 0
            || kd != hk * (qd / hq)
        {
            return Err(op_err!(
                "query {:?}, key {:?} and value {:?} do not fit {hq} query and {hk} key/value heads",
                query.shape(),
                key.shape(),
                value.shape()
            ));
        }
        let (dk, dv) = (qd / hq, vd / hk);
        if self.rule.gated != decay.is_some() || self.rule.delta != beta.is_some() {
            return Err(op_err!(
                "the update rule needs decay exactly when gated and beta exactly when delta"
            ));
        }
        let state_len = b * hk * dk * dv;
        ctx.check_alloc(state_len, 4)?;
        let mut state = match past {
            Some(p) if p.shape() == [b, hk, dk, dv] => f32s(p)?,
            Some(p) => {
                return Err(op_err!(
                    "past_state has shape {:?}, expected {:?}",
                    p.shape(),
                    [b, hk, dk, dv]
                ))
            }
            None => vec![0.0; state_len],
        };
        let (q, k, v) = (f32s(query)?, f32s(key)?, f32s(value)?);
        // decay per (b, t, head) either scalar or per key dim
        let decay = match decay {
            None => None,
            Some(d) => {
                let (db, dt, dl) = rank3(d, "decay")?;
                if db != b || dt != t || (dl != hk && dl != hk * dk) {
                    return Err(op_err!(
                        "decay has shape {:?}, expected last dim {hk} or {}",
                        d.shape(),
                        hk * dk
                    ));
                }
                Some((f32s(d)?, dl == hk * dk))
            }
        };
        let beta = match beta {
            None => None,
            Some(bt) => {
                let (bb, btt, bl) = rank3(bt, "beta")?;
                if bb != b || btt != t || (bl != hk && bl != 1) {
                    return Err(op_err!(
                        "beta has shape {:?}, expected last dim {hk} or 1",
                        bt.shape()
                    ));
                }
                Some((f32s(bt)?, bl))
            }
        };
        let group = hq / hk;
        let mut out = vec![0f32; b * t * hq * dv];
        let mut vt_buf = vec![0f32; dv];
        for bi in 0..b {
            for ti in 0..t {
                for h in 0..hk {
                    let s = &mut state[(bi * hk + h) * dk * dv..(bi * hk + h + 1) * dk * dv];
                    let kt = &k[((bi * t + ti) * hk + h) * dk..][..dk];
                    vt_buf.copy_from_slice(&v[((bi * t + ti) * hk + h) * dv..][..dv]);
                    if let Some((d, per_dim)) = &decay {
                        for di in 0..dk {
                            let g = if *per_dim {
                                d[((bi * t + ti) * hk + h) * dk + di]
                            } else {
                                d[(bi * t + ti) * hk + h]
                            };
                            let e = g.exp();
                            s[di * dv..(di + 1) * dv].iter_mut().for_each(|x| *x *= e);
                        }
                    }
                    if let Some((bv, bl)) = &beta {
                        let beta_t = bv[(bi * t + ti) * bl + if *bl == 1 { 0 } else { h }];
                        for m in 0..dv {
                            let retrieved: f32 = (0..dk).map(|di| s[di * dv + m] * kt[di]).sum();
                            vt_buf[m] = beta_t * (vt_buf[m] - retrieved);
                        }
                    }
                    for di in 0..dk {
                        for m in 0..dv {
                            s[di * dv + m] += kt[di] * vt_buf[m];
                        }
                    }
                    for qh in h * group..(h + 1) * group {
                        let qt = &q[((bi * t + ti) * hq + qh) * dk..][..dk];
                        let o = &mut out[((bi * t + ti) * hq + qh) * dv..][..dv];
                        for (m, om) in o.iter_mut().enumerate() {
                            *om = self.scale_for(dk)
                                * (0..dk).map(|di| qt[di] * s[di * dv + m]).sum::<f32>();
                        }
                    }
                }
            }
        }
        let output = cast_tensor(
            &Tensor::from_vec(vec![b, t, hq * dv], out)?,
            query.dtype(),
            true,
        )?;
        let state_dtype = past.map(Tensor::dtype).unwrap_or(query.dtype());
        let present = cast_tensor(
            &Tensor::from_vec(vec![b, hk, dk, dv], state)?,
            state_dtype,
            true,
        )?;
        Ok(vec![Value::Tensor(output), Value::Tensor(present)])
    }

    fn scale_for(&self, dk: usize) -> f32 {
        if self.scale == 0.0 {
            1.0 / (dk as f32).sqrt()
        } else {
            self.scale
        }
    }
}

fn build(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    let heads = |name: &str| -> OpResult<usize> {
        node.attr_int(name)?
            .and_then(|h| usize::try_from(h).ok())
            .filter(|&h| h > 0)
            .ok_or_else(|| op_err!("attribute '{name}' must be a positive int"))
    };
    let (q_heads, kv_heads) = (heads("q_num_heads")?, heads("kv_num_heads")?);
    if q_heads % kv_heads != 0 {
        return Err(op_err!(
            "q_num_heads {q_heads} is not a multiple of kv_num_heads {kv_heads}"
        ));
    }
    let rule = match node
        .attr_string("update_rule")?
        .as_deref()
        .unwrap_or("gated_delta")
    {
        "linear" => Rule {
            gated: false,
            delta: false,
        },
        "gated" => Rule {
            gated: true,
            delta: false,
        },
        "delta" => Rule {
            gated: false,
            delta: true,
        },
        "gated_delta" => Rule {
            gated: true,
            delta: true,
        },
        other => return Err(op_err!("unknown update_rule '{other}'")),
    };
    let op = LinearAttention {
        q_heads,
        kv_heads,
        scale: node.attr_float("scale")?.unwrap_or(0.0),
        rule,
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        op.run(ctx, inputs)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "LinearAttention", build);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn linear_rule_accumulates_outer_products() {
        // B=1, T=2, one head, d_k = d_v = 1, scale 1: S1 = k1 v1, S2 = S1 + k2 v2
        let op = LinearAttention {
            q_heads: 1,
            kv_heads: 1,
            scale: 1.0,
            rule: Rule {
                gated: false,
                delta: false,
            },
        };
        let t = |v: Vec<f32>| Value::Tensor(Tensor::from_vec(vec![1, 2, 1], v).unwrap());
        let (q, k, v) = (t(vec![1.0, 2.0]), t(vec![3.0, 4.0]), t(vec![5.0, 6.0]));
        let limits = Limits::default();
        let out = op
            .run(&RunCtx::detached(&limits), &[Some(&q), Some(&k), Some(&v)])
            .unwrap();
        let y = out[0]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec();
        assert_eq!(y, vec![15.0, 2.0 * (15.0 + 24.0)]);
        assert_eq!(
            out[1].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[39.0]
        );
    }
}
