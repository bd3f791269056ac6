//! Control flow: If, Loop and Scan. Each subgraph is compiled once when the
//! node is built and run through `RunCtx::run_subgraph`, which lets it read
//! values of the enclosing graphs.
//!
//! Opset notes: Scan-8 has a leading `sequence_lens` input and a batch axis
//! on every state and scan input; Scan-9+ drops both and adds per-input and
//! per-output axes and directions.

use std::sync::Arc;

use onyx_tensor::{Tensor, Value};

use super::sequence::{concat_parts, slice_axis};
use super::{norm_axis, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::ir::{Dim, TypeInfo};
use crate::op_err;
use crate::plan::Plan;

/// A tensor input read as one boolean.
fn bool_scalar(t: &Tensor, what: &str) -> OpResult<bool> {
    match t.to_f64_vec()?.as_slice() {
        [x] => Ok(*x != 0.0),
        _ => Err(op_err!(
            "{what} should hold one value but has shape {:?}",
            t.shape()
        )),
    }
}

fn build_if(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let then_plan = ctx.subgraph_attr("then_branch")?;
    let else_plan = ctx.subgraph_attr("else_branch")?;
    if then_plan.outputs.len() != else_plan.outputs.len() {
        return Err(op_err!(
            "then_branch has {} outputs but else_branch has {}",
            then_plan.outputs.len(),
            else_plan.outputs.len()
        ));
    }
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let cond = bool_scalar(tensor_in(inputs, 0)?, "the If condition")?;
        let plan = if cond { &then_plan } else { &else_plan };
        ctx.run_subgraph(plan, vec![None; plan.inputs.len()])
    }))
}

/// An empty stack of scan outputs, shaped from the body's declared output type.
fn empty_scan_output(plan: &Plan, index: usize) -> OpResult<Value> {
    let ty = plan
        .outputs
        .get(index)
        .and_then(|(info, _)| info.ty.clone());
    match ty {
        Some(TypeInfo::Tensor {
            dtype: Some(dtype),
            shape,
        }) => {
            let mut dims = vec![0usize];
            if let Some(shape) = shape {
                for d in shape {
                    // unknown dims cannot matter: the tensor has no elements
                    dims.push(match d {
                        Dim::Fixed(n) => n,
                        _ => 1,
                    });
                }
            }
            Ok(Value::Tensor(Tensor::zeros(dtype, dims)?))
        }
        _ => Err(op_err!(
            "the loop ran no iterations and body output {index} has no declared tensor type"
        )),
    }
}

/// Stacks per-iteration scan outputs along a new axis, checking the size first.
fn stack(ctx: &RunCtx, parts: &[Value], axis: usize, what: &str) -> OpResult<Tensor> {
    let tensors: Vec<&Tensor> = parts
        .iter()
        .map(|v| {
            v.as_tensor()
                .ok_or_else(|| op_err!("{what} should be a tensor but is {}", v.kind()))
        })
        .collect::<OpResult<_>>()?;
    let total = tensors
        .iter()
        .try_fold(0usize, |a, t| a.checked_add(t.len()))
        .ok_or_else(|| op_err!("{what} is too large"))?;
    if let Some(t) = tensors.first() {
        ctx.check_alloc(total, t.dtype().size_in_memory().max(1))?;
    }
    concat_parts(&tensors, axis, true).map_err(|e| op_err!("{what}: {}", e.0))
}

fn build_loop(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let body = ctx.subgraph_attr("body")?;
    let n_body_in = body.inputs.len();
    if n_body_in < 2 {
        return Err(op_err!(
            "the Loop body needs at least 2 inputs (iteration, condition) but has {n_body_in}"
        ));
    }
    let n_carried = n_body_in - 2;
    let n_body_out = body.outputs.len();
    if n_body_out < 1 + n_carried {
        return Err(op_err!(
            "the Loop body has {n_body_out} outputs, fewer than 1 + {n_carried} loop-carried values"
        ));
    }
    let n_scan = n_body_out - 1 - n_carried;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let max_trip = match inputs.first().copied().flatten() {
            None => None,
            Some(_) => Some(super::scalar_i64_in(inputs, 0)?),
        };
        let mut cond = match inputs.get(1).copied().flatten() {
            None => true,
            Some(_) => bool_scalar(tensor_in(inputs, 1)?, "the Loop condition")?,
        };
        let given = inputs.len().saturating_sub(2);
        if given != n_carried {
            return Err(op_err!(
                "Loop has {given} loop-carried inputs but its body expects {n_carried}"
            ));
        }
        let mut carried: Vec<Option<Value>> = inputs
            .get(2..)
            .unwrap_or(&[])
            .iter()
            .map(|v| v.cloned())
            .collect();
        let mut scans: Vec<Vec<Value>> = vec![Vec::new(); n_scan];
        let mut scan_elements = vec![0usize; n_scan];
        let mut i: i64 = 0;
        while cond && !matches!(max_trip, Some(m) if i >= m) {
            let mut args = Vec::with_capacity(n_body_in);
            args.push(Some(Value::Tensor(Tensor::scalar(i))));
            args.push(Some(Value::Tensor(Tensor::scalar(cond))));
            // move the carried values in; the body's outputs replace them
            args.extend(carried.iter_mut().map(Option::take));
            let mut out = ctx.run_subgraph(&body, args)?.into_iter();
            let c = out
                .next()
                .ok_or_else(|| op_err!("the Loop body returned no outputs"))?;
            cond = match &c {
                Value::Tensor(t) => bool_scalar(t, "the body's condition output")?,
                other => return Err(op_err!("the body's condition is {}", other.kind())),
            };
            for slot in carried.iter_mut() {
                *slot = Some(
                    out.next()
                        .ok_or_else(|| op_err!("the Loop body returned too few outputs"))?,
                );
            }
            for (s, grown) in scans.iter_mut().zip(scan_elements.iter_mut()) {
                let item = out
                    .next()
                    .ok_or_else(|| op_err!("the Loop body returned too few outputs"))?;
                // the stacked output grows every iteration: bound it as it grows
                if let Value::Tensor(t) = &item {
                    *grown = grown.saturating_add(t.len());
                    ctx.check_alloc(*grown, t.dtype().size_in_memory())?;
                }
                s.push(item);
            }
            i += 1;
        }
        let mut results = Vec::with_capacity(n_carried + n_scan);
        for (k, v) in carried.into_iter().enumerate() {
            results.push(v.ok_or_else(|| op_err!("loop-carried input {k} is missing"))?);
        }
        for (k, s) in scans.iter().enumerate() {
            if s.is_empty() {
                results.push(empty_scan_output(&body, 1 + n_carried + k)?);
            } else {
                results.push(Value::Tensor(stack(
                    ctx,
                    s,
                    0,
                    &format!("scan output {k}"),
                )?));
            }
        }
        Ok(results)
    }))
}

/// What a Scan node needs at run time.
struct ScanSpec {
    body: Arc<Plan>,
    n_state: usize,
    n_scan_in: usize,
    n_scan_out: usize,
    in_axes: Vec<i64>,
    in_reverse: Vec<bool>,
    out_axes: Vec<i64>,
    out_reverse: Vec<bool>,
}

fn per_input(v: Option<Vec<i64>>, n: usize, what: &str) -> OpResult<Vec<i64>> {
    match v {
        None => Ok(vec![0; n]),
        Some(v) if v.len() == n => Ok(v),
        Some(v) => Err(op_err!(
            "attribute '{what}' has {} entries but there are {n}",
            v.len()
        )),
    }
}

/// One Scan-9 style run over unbatched states and scan inputs.
fn scan_once(
    ctx: &RunCtx,
    spec: &ScanSpec,
    states: Vec<Value>,
    scan_in: &[&Tensor],
) -> OpResult<Vec<Value>> {
    let mut axes = Vec::with_capacity(scan_in.len());
    let mut len: Option<usize> = None;
    for (k, t) in scan_in.iter().enumerate() {
        let ax = norm_axis(spec.in_axes[k], t.rank())?;
        let d = t.shape()[ax];
        if let Some(l) = len {
            if l != d {
                return Err(op_err!(
                    "scan input {k} has length {d} on its scan axis but another has {l}"
                ));
            }
        }
        len = Some(d);
        axes.push(ax);
    }
    let len = len.ok_or_else(|| op_err!("Scan needs at least one scan input"))?;
    let mut states: Vec<Value> = states;
    let mut outs: Vec<Vec<Value>> = vec![Vec::with_capacity(len); spec.n_scan_out];
    for step in 0..len {
        // move the states in; the body's outputs replace them
        let mut args: Vec<Option<Value>> =
            std::mem::take(&mut states).into_iter().map(Some).collect();
        for (k, t) in scan_in.iter().enumerate() {
            let at = if spec.in_reverse[k] {
                len - 1 - step
            } else {
                step
            };
            args.push(Some(Value::Tensor(slice_axis(t, axes[k], at)?)));
        }
        let res = ctx.run_subgraph(&spec.body, args)?;
        if res.len() != spec.n_state + spec.n_scan_out {
            return Err(op_err!(
                "the Scan body gave {} outputs, expected {}",
                res.len(),
                spec.n_state + spec.n_scan_out
            ));
        }
        let mut it = res.into_iter();
        states = it.by_ref().take(spec.n_state).collect();
        for o in outs.iter_mut() {
            if let Some(v) = it.next() {
                o.push(v);
            }
        }
    }
    let mut results = states;
    for (k, mut o) in outs.into_iter().enumerate() {
        if o.is_empty() {
            results.push(empty_scan_output(&spec.body, spec.n_state + k)?);
            continue;
        }
        if spec.out_reverse[k] {
            o.reverse();
        }
        let rank = o[0].as_tensor().map(|t| t.rank()).unwrap_or(0) + 1;
        let ax = norm_axis(spec.out_axes[k], rank)?;
        results.push(Value::Tensor(stack(
            ctx,
            &o,
            ax,
            &format!("scan output {k}"),
        )?));
    }
    Ok(results)
}

fn build_scan(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let body = ctx.subgraph_attr("body")?;
    let n_scan_in = ctx
        .node
        .attr_int("num_scan_inputs")?
        .ok_or_else(|| op_err!("attribute 'num_scan_inputs' is required"))?;
    let n_scan_in = usize::try_from(n_scan_in)
        .map_err(|_| op_err!("num_scan_inputs {n_scan_in} is negative"))?;
    let n_body_in = body.inputs.len();
    let n_state = n_body_in.checked_sub(n_scan_in).ok_or_else(|| {
        op_err!("the Scan body has {n_body_in} inputs, fewer than num_scan_inputs {n_scan_in}")
    })?;
    let n_scan_out = body
        .outputs
        .len()
        .checked_sub(n_state)
        .ok_or_else(|| op_err!("the Scan body has fewer outputs than state variables"))?;
    let legacy = ctx.opset < 9;
    let node = ctx.node;
    let dirs = |name: &str, n: usize| -> OpResult<Vec<bool>> {
        Ok(per_input(node.attr_ints(name)?, n, name)?
            .into_iter()
            .map(|d| d != 0)
            .collect())
    };
    let spec = if legacy {
        ScanSpec {
            in_axes: vec![0; n_scan_in],
            in_reverse: dirs("directions", n_scan_in)?,
            out_axes: vec![0; n_scan_out],
            out_reverse: vec![false; n_scan_out],
            body,
            n_state,
            n_scan_in,
            n_scan_out,
        }
    } else {
        ScanSpec {
            in_axes: per_input(
                node.attr_ints("scan_input_axes")?,
                n_scan_in,
                "scan_input_axes",
            )?,
            in_reverse: dirs("scan_input_directions", n_scan_in)?,
            out_axes: per_input(
                node.attr_ints("scan_output_axes")?,
                n_scan_out,
                "scan_output_axes",
            )?,
            out_reverse: dirs("scan_output_directions", n_scan_out)?,
            body,
            n_state,
            n_scan_in,
            n_scan_out,
        }
    };
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let offset = usize::from(legacy);
        let expected = offset + spec.n_state + spec.n_scan_in;
        if inputs.len() != expected {
            return Err(op_err!(
                "Scan has {} inputs but expects {expected}",
                inputs.len()
            ));
        }
        let states: Vec<Value> = (0..spec.n_state)
            .map(|k| {
                inputs[offset + k]
                    .cloned()
                    .ok_or_else(|| op_err!("state input {k} is missing"))
            })
            .collect::<OpResult<_>>()?;
        let scan_in: Vec<&Tensor> = (0..spec.n_scan_in)
            .map(|k| tensor_in(inputs, offset + spec.n_state + k))
            .collect::<OpResult<_>>()?;
        if !legacy {
            return scan_once(ctx, &spec, states, &scan_in);
        }
        // Scan-8: every state and scan input has a leading batch axis.
        let batch = match scan_in.first().map(|t| t.shape().first()) {
            Some(Some(&b)) => b,
            _ => return Err(op_err!("Scan-8 scan inputs need a batch axis")),
        };
        let lens = super::opt_ints_in(inputs, 0)?;
        let mut per_batch: Vec<Vec<Value>> = Vec::with_capacity(batch);
        for b in 0..batch {
            let st: Vec<Value> = states
                .iter()
                .enumerate()
                .map(|(k, v)| match v {
                    Value::Tensor(t) => Ok(Value::Tensor(slice_axis(t, 0, b)?)),
                    other => Err(op_err!(
                        "state {k} should be a tensor but is {}",
                        other.kind()
                    )),
                })
                .collect::<OpResult<_>>()?;
            let sc: Vec<Tensor> = scan_in
                .iter()
                .map(|t| slice_axis(t, 0, b))
                .collect::<OpResult<_>>()?;
            if let Some(lens) = &lens {
                let full = sc
                    .first()
                    .and_then(|t| t.shape().first())
                    .copied()
                    .unwrap_or(0);
                match lens.get(b) {
                    Some(&l) if l == full as i64 => {}
                    Some(&l) => {
                        return Err(op_err!(
                            "sequence_lens {l} shorter than the scan length {full} is not supported"
                        ))
                    }
                    None => return Err(op_err!("sequence_lens has no entry for batch {b}")),
                }
            }
            let refs: Vec<&Tensor> = sc.iter().collect();
            per_batch.push(scan_once(ctx, &spec, st, &refs)?);
        }
        let n_out = spec.n_state + spec.n_scan_out;
        let mut results = Vec::with_capacity(n_out);
        for k in 0..n_out {
            let parts: Vec<Value> = per_batch
                .iter()
                .map(|r| {
                    r.get(k)
                        .cloned()
                        .ok_or_else(|| op_err!("missing Scan output {k}"))
                })
                .collect::<OpResult<_>>()?;
            if parts.is_empty() {
                return Err(op_err!("Scan-8 with a batch of 0 is not supported"));
            }
            results.push(Value::Tensor(stack(
                ctx,
                &parts,
                0,
                &format!("Scan output {k}"),
            )?));
        }
        Ok(results)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "If", build_if);
    r.add("", "Loop", build_loop);
    r.add("", "Scan", build_scan);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use onyx_tensor::DType;

    use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
    use crate::{Session, SessionOptions};

    use super::*;

    fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<(&str, Attr)>) -> Node {
        Node {
            name: String::new(),
            op_type: op.into(),
            domain: String::new(),
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            outputs: outputs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    fn info(name: &str, dtype: Option<DType>) -> ValueInfo {
        ValueInfo {
            name: name.into(),
            ty: dtype.map(|d| TypeInfo::Tensor {
                dtype: Some(d),
                shape: None,
            }),
        }
    }

    fn graph(nodes: Vec<Node>, inputs: &[&str], outputs: &[(&str, Option<DType>)]) -> Graph {
        Graph {
            nodes,
            inputs: inputs.iter().map(|n| info(n, None)).collect(),
            outputs: outputs.iter().map(|(n, d)| info(n, *d)).collect(),
            ..Graph::default()
        }
    }

    fn session(g: Graph, opset: i64) -> Session {
        let model = Model {
            opsets: BTreeMap::from([(String::new(), opset)]),
            graph: g,
            ..Model::default()
        };
        Session::from_model(model, SessionOptions::default()).unwrap()
    }

    fn f32s(v: &Value) -> (Vec<usize>, Vec<f32>) {
        let t = v.as_tensor().unwrap();
        (t.shape().to_vec(), t.as_slice::<f32>().unwrap().to_vec())
    }

    #[test]
    fn if_picks_a_branch() {
        let branch = |v: i64| {
            Attr::Graph(graph(
                vec![node(
                    "Constant",
                    &[],
                    &["o"],
                    vec![("value_int", Attr::Int(v))],
                )],
                &[],
                &[("o", None)],
            ))
        };
        let g = graph(
            vec![node(
                "If",
                &["c"],
                &["y"],
                vec![("then_branch", branch(1)), ("else_branch", branch(2))],
            )],
            &["c"],
            &[("y", None)],
        );
        let s = session(g, 16);
        for (c, want) in [(true, 1i64), (false, 2)] {
            let out = s.run(vec![("c".into(), Tensor::scalar(c).into())]).unwrap();
            assert_eq!(
                out[0].as_tensor().unwrap().to_i64_vec().unwrap(),
                vec![want]
            );
        }
    }

    #[test]
    fn loop_carries_and_scans() {
        // body: (i, c, x) -> (c, x + x, x + x)
        let body = graph(
            vec![node("Add", &["x_in", "x_in"], &["x_out"], vec![])],
            &["i", "c_in", "x_in"],
            &[
                ("c_in", None),
                ("x_out", None),
                ("x_out", Some(DType::Float)),
            ],
        );
        let g = graph(
            vec![node(
                "Loop",
                &["m", "", "x"],
                &["x_final", "scan"],
                vec![("body", Attr::Graph(body))],
            )],
            &["m", "x"],
            &[("x_final", None), ("scan", None)],
        );
        let s = session(g, 16);
        let x = Tensor::from_vec(vec![1], vec![1f32]).unwrap();
        let out = s
            .run(vec![
                ("m".into(), Tensor::scalar(3i64).into()),
                ("x".into(), x.clone().into()),
            ])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![1], vec![8.0]));
        assert_eq!(f32s(&out[1]), (vec![3, 1], vec![2.0, 4.0, 8.0]));
        // zero iterations: the carried value passes through, the scan is empty
        let out = s
            .run(vec![
                ("m".into(), Tensor::scalar(0i64).into()),
                ("x".into(), x.into()),
            ])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![1], vec![1.0]));
        assert_eq!(f32s(&out[1]).0, vec![0]);
    }

    #[test]
    fn scan_runs_in_reverse() {
        // body: (s, e) -> (s + e, s + e), scanning [1, 2, 3] backwards
        let body = graph(
            vec![node("Add", &["s", "e"], &["t"], vec![])],
            &["s", "e"],
            &[("t", None), ("t", None)],
        );
        let g = graph(
            vec![node(
                "Scan",
                &["init", "xs"],
                &["total", "partial"],
                vec![
                    ("body", Attr::Graph(body)),
                    ("num_scan_inputs", Attr::Int(1)),
                    ("scan_input_directions", Attr::Ints(vec![1])),
                ],
            )],
            &["init", "xs"],
            &[("total", None), ("partial", None)],
        );
        let s = session(g, 16);
        let out = s
            .run(vec![
                ("init".into(), Tensor::scalar(0f32).into()),
                (
                    "xs".into(),
                    Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0])
                        .unwrap()
                        .into(),
                ),
            ])
            .unwrap();
        assert_eq!(f32s(&out[0]), (vec![], vec![6.0]));
        assert_eq!(f32s(&out[1]), (vec![3], vec![3.0, 5.0, 6.0]));
    }
}
