//! The recurrent operators RNN, GRU and LSTM, in every direction and layout.
//!
//! Weights follow ONNX's packing: W [dirs, gates*hidden, input], R [dirs,
//! gates*hidden, hidden], B [dirs, 2*gates*hidden] (input biases, then
//! recurrent ones). Gate order: LSTM i, o, f, c; GRU z, r, h. `layout=1`
//! (opset 14) puts batch first in X, Y, Y_h and Y_c. Steps past a batch
//! entry's `sequence_lens` produce zeros in Y and leave its state unchanged.
//! Arithmetic is in f64 and rounded to the input's type at the end.

use onyx_tensor::{DType, Tensor, Value};

use super::cast::cast_tensor;
use super::{opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

/// An activation function by its ONNX name, with its alpha and beta.
#[derive(Clone, Copy, Debug)]
enum Act {
    Relu,
    Tanh,
    Sigmoid,
    Affine(f64, f64),
    LeakyRelu(f64),
    ThresholdedRelu(f64),
    ScaledTanh(f64, f64),
    HardSigmoid(f64, f64),
    Elu(f64),
    Softsign,
    Softplus,
}

impl Act {
    fn apply(self, x: f64) -> f64 {
        match self {
            Act::Relu => x.max(0.0),
            Act::Tanh => x.tanh(),
            Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
            Act::Affine(a, b) => a * x + b,
            Act::LeakyRelu(a) => {
                if x < 0.0 {
                    a * x
                } else {
                    x
                }
            }
            Act::ThresholdedRelu(a) => {
                if x > a {
                    x
                } else {
                    0.0
                }
            }
            Act::ScaledTanh(a, b) => a * (b * x).tanh(),
            Act::HardSigmoid(a, b) => (a * x + b).clamp(0.0, 1.0),
            Act::Elu(a) => {
                if x < 0.0 {
                    a * (x.exp() - 1.0)
                } else {
                    x
                }
            }
            Act::Softsign => x / (1.0 + x.abs()),
            Act::Softplus => (1.0 + x.exp()).ln(),
        }
    }
}

/// Parses the `activations` list, taking alphas and betas in order for the
/// functions that use them (defaults as in the ONNX spec).
fn parse_activations(names: &[String], alphas: &[f32], betas: &[f32]) -> OpResult<Vec<Act>> {
    let (mut ai, mut bi) = (0, 0);
    let mut alpha = |default: f64| {
        let v = alphas.get(ai).map(|&a| f64::from(a)).unwrap_or(default);
        ai += 1;
        v
    };
    let mut beta = |default: f64| {
        let v = betas.get(bi).map(|&b| f64::from(b)).unwrap_or(default);
        bi += 1;
        v
    };
    names
        .iter()
        .map(|n| {
            Ok(match n.to_ascii_lowercase().as_str() {
                "relu" => Act::Relu,
                "tanh" => Act::Tanh,
                "sigmoid" => Act::Sigmoid,
                "affine" => Act::Affine(alpha(1.0), beta(0.0)),
                "leakyrelu" => Act::LeakyRelu(alpha(0.01)),
                "thresholdedrelu" => Act::ThresholdedRelu(alpha(1.0)),
                "scaledtanh" => Act::ScaledTanh(alpha(1.0), beta(1.0)),
                "hardsigmoid" => Act::HardSigmoid(alpha(0.2), beta(0.5)),
                "elu" => Act::Elu(alpha(1.0)),
                "softsign" => Act::Softsign,
                "softplus" => Act::Softplus,
                other => return Err(op_err!("unknown activation function '{other}'")),
            })
        })
        .collect()
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cell {
    Rnn,
    Gru { linear_before_reset: bool },
    Lstm { input_forget: bool },
}

impl Cell {
    fn gates(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 3,
            Cell::Lstm { .. } => 4,
        }
    }

    fn activations_per_direction(self) -> usize {
        match self {
            Cell::Rnn => 1,
            Cell::Gru { .. } => 2,
            Cell::Lstm { .. } => 3,
        }
    }

    fn default_activations(self) -> Vec<Act> {
        match self {
            Cell::Rnn => vec![Act::Tanh],
            Cell::Gru { .. } => vec![Act::Sigmoid, Act::Tanh],
            Cell::Lstm { .. } => vec![Act::Sigmoid, Act::Tanh, Act::Tanh],
        }
    }
}

struct Recurrent {
    cell: Cell,
    hidden: usize,
    directions: Vec<bool>, // true = runs backwards in time
    acts: Vec<Act>,
    clip: Option<f64>,
    batch_first: bool,
}

/// `m [rows, cols] x v [cols]` added into `out [rows]`.
fn matvec_add(m: &[f64], v: &[f64], out: &mut [f64]) {
    let cols = v.len();
    for (o, row) in out.iter_mut().zip(m.chunks_exact(cols.max(1))) {
        *o += row.iter().zip(v).map(|(a, b)| a * b).sum::<f64>();
    }
}

/// The f64 elements of an optional input, or zeros of the given length.
fn values_or_zeros(t: Option<&Tensor>, len: usize, what: &str) -> OpResult<Vec<f64>> {
    match t {
        None => Ok(vec![0.0; len]),
        Some(t) if t.len() == len => Ok(t.to_f64_vec()?),
        Some(t) => Err(op_err!("{what} has {} elements, expected {len}", t.len())),
    }
}

impl Recurrent {
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
        let x = tensor_in(inputs, 0)?;
        let w = tensor_in(inputs, 1)?;
        let r = tensor_in(inputs, 2)?;
        if x.rank() != 3 {
            return Err(op_err!(
                "X should have rank 3 but has shape {:?}",
                x.shape()
            ));
        }
        let (seq, batch, input) = if self.batch_first {
            (x.shape()[1], x.shape()[0], x.shape()[2])
        } else {
            (x.shape()[0], x.shape()[1], x.shape()[2])
        };
        let (h, g, dirs) = (self.hidden, self.cell.gates(), self.directions.len());
        if w.shape() != [dirs, g * h, input] || r.shape() != [dirs, g * h, h] {
            return Err(op_err!(
                "W {:?} and R {:?} do not fit {dirs} directions, hidden size {h}, input size {input}",
                w.shape(),
                r.shape()
            ));
        }
        let out_len = seq
            .checked_mul(batch)
            .and_then(|n| n.checked_mul(dirs * h))
            .ok_or_else(|| op_err!("output is too large"))?;
        ctx.check_alloc(out_len, 8)?;
        let xv = x.to_f64_vec()?;
        let wv = w.to_f64_vec()?;
        let rv = r.to_f64_vec()?;
        let bv = values_or_zeros(opt_tensor_in(inputs, 3)?, dirs * 2 * g * h, "B")?;
        let lens: Vec<usize> = match opt_tensor_in(inputs, 4)? {
            None => vec![seq; batch],
            Some(t) => t
                .to_i64_vec()?
                .iter()
                .map(|&l| usize::try_from(l).ok().filter(|&l| l <= seq))
                .collect::<Option<Vec<_>>>()
                .filter(|v| v.len() == batch)
                .ok_or_else(|| {
                    op_err!("sequence_lens should hold {batch} lengths of at most {seq}")
                })?,
        };
        let state_len = dirs * batch * h;
        // initial states arrive in the output layout
        let from_layout = |v: Vec<f64>| -> Vec<f64> {
            if !self.batch_first {
                return v;
            }
            let mut out = vec![0.0; state_len];
            for b in 0..batch {
                for d in 0..dirs {
                    let src = (b * dirs + d) * h;
                    let dst = (d * batch + b) * h;
                    out[dst..dst + h].copy_from_slice(&v[src..src + h]);
                }
            }
            out
        };
        let h0 = from_layout(values_or_zeros(
            opt_tensor_in(inputs, 5)?,
            state_len,
            "initial_h",
        )?);
        let is_lstm = matches!(self.cell, Cell::Lstm { .. });
        let c0 = if is_lstm {
            from_layout(values_or_zeros(
                opt_tensor_in(inputs, 6)?,
                state_len,
                "initial_c",
            )?)
        } else {
            vec![0.0; state_len]
        };
        let peep = if is_lstm {
            values_or_zeros(opt_tensor_in(inputs, 7)?, dirs * 3 * h, "P")?
        } else {
            vec![]
        };
        // y[t][d][b][k] in sequence-first order; converted at the end if batch-first
        let mut y = vec![0.0; out_len];
        let mut y_h = h0.clone();
        let mut y_c = c0.clone();
        let apd = self.cell.activations_per_direction();
        let clip = |v: f64| match self.clip {
            Some(c) => v.clamp(-c, c),
            None => v,
        };
        for (d, &backwards) in self.directions.iter().enumerate() {
            let acts = &self.acts[d * apd..(d + 1) * apd];
            let wd = &wv[d * g * h * input..(d + 1) * g * h * input];
            let rd = &rv[d * g * h * h..(d + 1) * g * h * h];
            let wb = &bv[d * 2 * g * h..d * 2 * g * h + g * h];
            let rb = &bv[d * 2 * g * h + g * h..(d + 1) * 2 * g * h];
            for b in 0..batch {
                let mut hs = h0[(d * batch + b) * h..(d * batch + b + 1) * h].to_vec();
                let mut cs = c0[(d * batch + b) * h..(d * batch + b + 1) * h].to_vec();
                for step in 0..lens[b] {
                    let t = if backwards { lens[b] - 1 - step } else { step };
                    let xt_start = if self.batch_first {
                        (b * seq + t) * input
                    } else {
                        (t * batch + b) * input
                    };
                    let xt = &xv[xt_start..xt_start + input];
                    // input and recurrent contributions of every gate
                    let mut xw = wb.to_vec();
                    matvec_add(wd, xt, &mut xw);
                    let mut hr = rb.to_vec();
                    matvec_add(rd, &hs, &mut hr);
                    match self.cell {
                        Cell::Rnn => {
                            for k in 0..h {
                                hs[k] = acts[0].apply(clip(xw[k] + hr[k]));
                            }
                        }
                        Cell::Gru {
                            linear_before_reset,
                        } => {
                            let (f, gact) = (acts[0], acts[1]);
                            let z: Vec<f64> =
                                (0..h).map(|k| f.apply(clip(xw[k] + hr[k]))).collect();
                            let rg: Vec<f64> = (0..h)
                                .map(|k| f.apply(clip(xw[h + k] + hr[h + k])))
                                .collect();
                            let cand: Vec<f64> = if linear_before_reset {
                                (0..h)
                                    .map(|k| {
                                        gact.apply(clip(xw[2 * h + k] + rg[k] * hr[2 * h + k]))
                                    })
                                    .collect()
                            } else {
                                let rh: Vec<f64> = (0..h).map(|k| rg[k] * hs[k]).collect();
                                let mut rec = rb[2 * h..3 * h].to_vec();
                                matvec_add(&rd[2 * h * h..3 * h * h], &rh, &mut rec);
                                (0..h)
                                    .map(|k| gact.apply(clip(xw[2 * h + k] + rec[k])))
                                    .collect()
                            };
                            for k in 0..h {
                                hs[k] = (1.0 - z[k]) * cand[k] + z[k] * hs[k];
                            }
                        }
                        Cell::Lstm { input_forget } => {
                            let (f, gact, hact) = (acts[0], acts[1], acts[2]);
                            let p = &peep[d * 3 * h..(d + 1) * 3 * h];
                            for k in 0..h {
                                let pre = |gate: usize| xw[gate * h + k] + hr[gate * h + k];
                                let i = f.apply(clip(pre(0) + p[k] * cs[k]));
                                let fg = if input_forget {
                                    1.0 - i
                                } else {
                                    f.apply(clip(pre(2) + p[2 * h + k] * cs[k]))
                                };
                                let c_new = fg * cs[k] + i * gact.apply(clip(pre(3)));
                                let o = f.apply(clip(pre(1) + p[h + k] * c_new));
                                cs[k] = c_new;
                                hs[k] = o * hact.apply(c_new);
                            }
                        }
                    }
                    let dst = ((t * dirs + d) * batch + b) * h;
                    y[dst..dst + h].copy_from_slice(&hs);
                }
                y_h[(d * batch + b) * h..(d * batch + b + 1) * h].copy_from_slice(&hs);
                y_c[(d * batch + b) * h..(d * batch + b + 1) * h].copy_from_slice(&cs);
            }
        }
        let dtype = x.dtype();
        let make = |v: Vec<f64>, shape: Vec<usize>| -> OpResult<Value> {
            Ok(Value::Tensor(cast_tensor(
                &Tensor::from_vec(shape, v)?,
                dtype,
                true,
            )?))
        };
        let (y, y_shape, state_shape, y_h, y_c) = if self.batch_first {
            let mut yb = vec![0.0; out_len];
            for t in 0..seq {
                for d in 0..dirs {
                    for b in 0..batch {
                        let src = ((t * dirs + d) * batch + b) * h;
                        let dst = ((b * seq + t) * dirs + d) * h;
                        yb[dst..dst + h].copy_from_slice(&y[src..src + h]);
                    }
                }
            }
            let to_batch_first = |v: &[f64]| {
                let mut out = vec![0.0; state_len];
                for d in 0..dirs {
                    for b in 0..batch {
                        let src = (d * batch + b) * h;
                        let dst = (b * dirs + d) * h;
                        out[dst..dst + h].copy_from_slice(&v[src..src + h]);
                    }
                }
                out
            };
            (
                yb,
                vec![batch, seq, dirs, h],
                vec![batch, dirs, h],
                to_batch_first(&y_h),
                to_batch_first(&y_c),
            )
        } else {
            (y, vec![seq, dirs, batch, h], vec![dirs, batch, h], y_h, y_c)
        };
        let mut outs = vec![make(y, y_shape)?, make(y_h, state_shape.clone())?];
        if is_lstm {
            outs.push(make(y_c, state_shape)?);
        }
        Ok(outs)
    }
}

fn build(ctx: &BuildCtx, cell: Cell) -> OpResult<Box<dyn Kernel>> {
    let node = ctx.node;
    let hidden = node
        .attr_int("hidden_size")?
        .and_then(|h| usize::try_from(h).ok())
        .filter(|&h| h > 0)
        .ok_or_else(|| op_err!("attribute 'hidden_size' must be a positive int"))?;
    let directions = match node
        .attr_string("direction")?
        .as_deref()
        .unwrap_or("forward")
    {
        "forward" => vec![false],
        "reverse" => vec![true],
        "bidirectional" => vec![false, true],
        other => return Err(op_err!("unknown direction '{other}'")),
    };
    let names = node.attr_strings("activations")?.unwrap_or_default();
    let alphas = node.attr_floats("activation_alpha")?.unwrap_or_default();
    let betas = node.attr_floats("activation_beta")?.unwrap_or_default();
    let per_dir = cell.activations_per_direction();
    let acts = if names.is_empty() {
        directions
            .iter()
            .flat_map(|_| cell.default_activations())
            .collect()
    } else {
        let acts = parse_activations(&names, &alphas, &betas)?;
        if acts.len() == per_dir && directions.len() == 2 {
            acts.iter().chain(acts.iter()).copied().collect()
        } else if acts.len() == per_dir * directions.len() {
            acts
        } else {
            return Err(op_err!(
                "{} activations given, expected {}",
                acts.len(),
                per_dir * directions.len()
            ));
        }
    };
    let rec = Recurrent {
        cell,
        hidden,
        directions,
        acts,
        clip: node.attr_float("clip")?.map(f64::from),
        batch_first: node.attr_int("layout")?.unwrap_or(0) == 1,
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let dtype = tensor_in(inputs, 0)?.dtype();
        if !matches!(
            dtype,
            DType::Float | DType::Double | DType::Float16 | DType::BFloat16
        ) {
            return Err(op_err!("unsupported element type {dtype}"));
        }
        rec.run(ctx, inputs)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "RNN", |c| build(c, Cell::Rnn));
    r.add("", "GRU", |c| {
        let lbr = c.node.attr_int("linear_before_reset")?.unwrap_or(0) != 0;
        build(
            c,
            Cell::Gru {
                linear_before_reset: lbr,
            },
        )
    });
    r.add("", "LSTM", |c| {
        let input_forget = c.node.attr_int("input_forget")?.unwrap_or(0) != 0;
        build(c, Cell::Lstm { input_forget })
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;

    #[test]
    fn activations_parse_with_parameters() {
        let acts = parse_activations(&["LeakyRelu".into(), "Tanh".into()], &[0.5], &[]).unwrap();
        assert_eq!(acts[0].apply(-2.0), -1.0);
        assert!((acts[1].apply(0.5) - 0.5f64.tanh()).abs() < 1e-15);
        assert!(parse_activations(&["Bogus".into()], &[], &[]).is_err());
    }

    #[test]
    fn rnn_step_by_hand() {
        // one step, one batch, input 1, hidden 1: h = tanh(2*x + 3*h0 + 0.5 + 0.25)
        let rec = Recurrent {
            cell: Cell::Rnn,
            hidden: 1,
            directions: vec![false],
            acts: vec![Act::Tanh],
            clip: None,
            batch_first: false,
        };
        let x = Value::Tensor(Tensor::from_vec(vec![1, 1, 1], vec![0.5f64]).unwrap());
        let w = Value::Tensor(Tensor::from_vec(vec![1, 1, 1], vec![2.0f64]).unwrap());
        let r = Value::Tensor(Tensor::from_vec(vec![1, 1, 1], vec![3.0f64]).unwrap());
        let b = Value::Tensor(Tensor::from_vec(vec![1, 2], vec![0.5f64, 0.25]).unwrap());
        let h0 = Value::Tensor(Tensor::from_vec(vec![1, 1, 1], vec![0.1f64]).unwrap());
        let limits = Limits::default();
        let out = rec
            .run(
                &RunCtx::detached(&limits),
                &[Some(&x), Some(&w), Some(&r), Some(&b), None, Some(&h0)],
            )
            .unwrap();
        let want = (2.0f64 * 0.5 + 3.0 * 0.1 + 0.75).tanh();
        let y = out[0].as_tensor().unwrap().as_slice::<f64>().unwrap()[0];
        assert!((y - want).abs() < 1e-12);
        assert_eq!(out[1].as_tensor().unwrap().shape(), &[1, 1, 1]);
    }
}
