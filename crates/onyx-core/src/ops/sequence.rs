//! Sequence and optional operators: SequenceEmpty, SequenceConstruct,
//! SequenceInsert, SequenceAt, SequenceErase, SequenceLength, SequenceMap,
//! SplitToSequence, ConcatFromSequence, Optional, OptionalHasElement and
//! OptionalGetElement.
//!
//! Also home to the tensor helpers the control-flow operators share:
//! `concat_parts` (concatenate or stack along an axis) and `slice_axis`.

use std::sync::Arc;

use onyx_tensor::{numel, with_data, DType, Data, Elem, Tensor, Value};

use super::{norm_axis, one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;
use crate::plan::Plan;

/// Concatenates `parts` along `axis`; with `new_axis` the parts are stacked
/// along a new dimension inserted at `axis` (0..=rank). All parts must have
/// one element type and the same shape off the axis.
pub(crate) fn concat_parts(parts: &[&Tensor], axis: usize, new_axis: bool) -> OpResult<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| op_err!("cannot concatenate an empty list of tensors"))?;
    let view = |t: &Tensor| -> Vec<usize> {
        let mut s = t.shape().to_vec();
        if new_axis && axis <= s.len() {
            s.insert(axis, 1);
        }
        s
    };
    let base = view(first);
    if axis >= base.len() {
        return Err(op_err!(
            "axis {axis} is out of range for tensors of shape {:?}",
            first.shape()
        ));
    }
    let mut out_shape = base.clone();
    out_shape[axis] = 0;
    let mut chunks = Vec::with_capacity(parts.len());
    for p in parts {
        if p.dtype() != first.dtype() {
            return Err(op_err!(
                "cannot concatenate {} with {}",
                first.dtype(),
                p.dtype()
            ));
        }
        let s = view(p);
        let same_off_axis = s.len() == base.len()
            && s.iter()
                .zip(&base)
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !same_off_axis {
            return Err(op_err!(
                "cannot concatenate shapes {:?} and {:?} along axis {axis}",
                first.shape(),
                p.shape()
            ));
        }
        out_shape[axis] = out_shape[axis]
            .checked_add(s[axis])
            .ok_or_else(|| op_err!("concatenated shape is too large"))?;
        chunks.push(numel(&s[axis..]).unwrap_or(0));
    }
    let outer = numel(&base[..axis]).unwrap_or(0);
    let total = numel(&out_shape).ok_or_else(|| op_err!("concatenated shape is too large"))?;
    fn cat<T: Elem>(
        _first: &[T],
        parts: &[&Tensor],
        chunks: &[usize],
        outer: usize,
        total: usize,
    ) -> Data {
        let slices: Vec<&[T]> = parts
            .iter()
            .map(|p| T::slice(p.data()).unwrap_or(&[]))
            .collect();
        let mut out = Vec::with_capacity(total);
        for o in 0..outer {
            for (s, &c) in slices.iter().zip(chunks) {
                if let Some(chunk) = s.get(o * c..(o + 1) * c) {
                    out.extend_from_slice(chunk);
                }
            }
        }
        T::into_data(out)
    }
    let data = with_data!(first.data(), v => cat(v, parts, &chunks, outer, total));
    Ok(Tensor::new(first.dtype(), out_shape, data)?)
}

/// Index `i` along `axis`, with that axis removed.
pub(crate) fn slice_axis(t: &Tensor, axis: usize, i: usize) -> OpResult<Tensor> {
    let shape = t.shape();
    let dim = *shape
        .get(axis)
        .ok_or_else(|| op_err!("axis {axis} is out of range for shape {shape:?}"))?;
    if i >= dim {
        return Err(op_err!(
            "index {i} is out of range for axis {axis} of {shape:?}"
        ));
    }
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape.remove(axis);
    let idx = (0..outer).flat_map(move |o| {
        let base = (o * dim + i) * inner;
        base..base + inner
    });
    Ok(t.gather_flat(out_shape, idx)?)
}

/// Positions `start..start+len` along `axis`, keeping the axis.
fn range_axis(t: &Tensor, axis: usize, start: usize, len: usize) -> OpResult<Tensor> {
    let shape = t.shape();
    let dim = shape[axis];
    let outer: usize = shape[..axis].iter().product();
    let inner: usize = shape[axis + 1..].iter().product();
    let mut out_shape = shape.to_vec();
    out_shape[axis] = len;
    let idx = (0..outer).flat_map(move |o| {
        let base = (o * dim + start) * inner;
        base..base + len * inner
    });
    Ok(t.gather_flat(out_shape, idx)?)
}

/// Input `i` as a sequence: its element type and items.
fn seq_in<'a>(inputs: &[Option<&'a Value>], i: usize) -> OpResult<(Option<DType>, &'a [Value])> {
    match inputs.get(i).copied().flatten() {
        Some(Value::Sequence { elem_dtype, items }) => Ok((*elem_dtype, items)),
        Some(Value::Optional(Some(v))) => match v.as_ref() {
            Value::Sequence { elem_dtype, items } => Ok((*elem_dtype, items)),
            other => Err(op_err!(
                "input {i} should be a sequence but is {}",
                other.kind()
            )),
        },
        Some(other) => Err(op_err!(
            "input {i} should be a sequence but is {}",
            other.kind()
        )),
        None => Err(op_err!("required input {i} is missing")),
    }
}

fn seq_value(elem_dtype: Option<DType>, items: Vec<Value>) -> Value {
    let elem_dtype =
        elem_dtype.or_else(|| items.iter().find_map(|v| v.as_tensor().map(|t| t.dtype())));
    Value::Sequence { elem_dtype, items }
}

/// A position input resolved against a sequence of `len` items; `allow_end`
/// admits `len` itself (insertion at the back).
fn position(
    inputs: &[Option<&Value>],
    i: usize,
    len: usize,
    allow_end: bool,
) -> OpResult<Option<usize>> {
    let t = match inputs.get(i).copied().flatten() {
        None => return Ok(None),
        Some(_) => tensor_in(inputs, i)?,
    };
    let v = t.to_i64_vec()?;
    let p = match v.as_slice() {
        [p] => *p,
        _ => {
            return Err(op_err!(
                "position should be a scalar but has shape {:?}",
                t.shape()
            ))
        }
    };
    let n = len as i64;
    let hi = if allow_end { n } else { n - 1 };
    if p < -n || p > hi {
        return Err(op_err!(
            "position {p} is out of range for a sequence of {len} items"
        ));
    }
    Ok(Some(if p < 0 { p + n } else { p } as usize))
}

fn build_sequence_empty(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let code = ctx.node.attr_int("dtype")?.unwrap_or(1);
    let dtype = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("attribute 'dtype' names unknown element type {code}"))?;
    Ok(Box::new(move |_: &RunCtx, _: &[Option<&Value>]| {
        Ok(vec![Value::Sequence {
            elem_dtype: Some(dtype),
            items: vec![],
        }])
    }))
}

fn run_sequence_construct(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let mut items = Vec::with_capacity(inputs.len());
    for i in 0..inputs.len() {
        let t = tensor_in(inputs, i)?;
        if let Some(Value::Tensor(first)) = items.first() {
            if first.dtype() != t.dtype() {
                return Err(op_err!(
                    "sequence items must share one element type, got {} and {}",
                    first.dtype(),
                    t.dtype()
                ));
            }
        }
        items.push(Value::Tensor(t.clone()));
    }
    Ok(vec![seq_value(None, items)])
}

fn run_sequence_insert(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (dtype, items) = seq_in(inputs, 0)?;
    let t = tensor_in(inputs, 1)?;
    if let Some(d) = dtype {
        if d != t.dtype() {
            return Err(op_err!(
                "cannot insert a {} tensor into a sequence of {d}",
                t.dtype()
            ));
        }
    }
    let pos = position(inputs, 2, items.len(), true)?.unwrap_or(items.len());
    let mut items = items.to_vec();
    items.insert(pos, Value::Tensor(t.clone()));
    Ok(vec![seq_value(dtype, items)])
}

fn run_sequence_at(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (_, items) = seq_in(inputs, 0)?;
    let pos = position(inputs, 1, items.len(), false)?
        .ok_or_else(|| op_err!("required input 1 (position) is missing"))?;
    Ok(vec![items[pos].clone()])
}

fn run_sequence_erase(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (dtype, items) = seq_in(inputs, 0)?;
    if items.is_empty() {
        return Err(op_err!("cannot erase from an empty sequence"));
    }
    let pos = position(inputs, 1, items.len(), false)?.unwrap_or(items.len() - 1);
    let mut items = items.to_vec();
    items.remove(pos);
    Ok(vec![seq_value(dtype, items)])
}

fn run_sequence_length(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (_, items) = seq_in(inputs, 0)?;
    one(Tensor::scalar(items.len() as i64))
}

fn build_split_to_sequence(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(0);
    let keepdims = ctx.node.attr_int("keepdims")?.unwrap_or(1) != 0;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let ax = norm_axis(axis, x.rank())?;
        let dim = x.shape()[ax];
        let split = match inputs.get(1).copied().flatten() {
            None => None,
            Some(_) => Some(tensor_in(inputs, 1)?),
        };
        let mut items = Vec::new();
        match split {
            None => {
                for i in 0..dim {
                    let part = if keepdims {
                        range_axis(x, ax, i, 1)?
                    } else {
                        slice_axis(x, ax, i)?
                    };
                    items.push(Value::Tensor(part));
                }
            }
            Some(s) => {
                let sizes = s.to_i64_vec()?;
                let sizes: Vec<usize> = if s.rank() == 0 {
                    let c = sizes[0];
                    if c <= 0 {
                        return Err(op_err!("split size {c} must be positive"));
                    }
                    let c = c as usize;
                    let mut v = vec![c; dim / c];
                    if dim % c != 0 {
                        v.push(dim % c);
                    }
                    v
                } else {
                    let v: Vec<usize> = sizes
                        .iter()
                        .map(|&c| {
                            usize::try_from(c).map_err(|_| op_err!("split size {c} is negative"))
                        })
                        .collect::<OpResult<_>>()?;
                    if v.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
                        return Err(op_err!(
                            "split sizes {sizes:?} do not add up to dimension {dim}"
                        ));
                    }
                    v
                };
                let mut start = 0;
                for len in sizes {
                    items.push(Value::Tensor(range_axis(x, ax, start, len)?));
                    start += len;
                }
            }
        }
        Ok(vec![seq_value(Some(x.dtype()), items)])
    }))
}

fn build_concat_from_sequence(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx
        .node
        .attr_int("axis")?
        .ok_or_else(|| op_err!("attribute 'axis' is required"))?;
    let new_axis = ctx.node.attr_int("new_axis")?.unwrap_or(0) != 0;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let (_, items) = seq_in(inputs, 0)?;
        let parts: Vec<&Tensor> = items
            .iter()
            .map(|v| {
                v.as_tensor()
                    .ok_or_else(|| op_err!("sequence item is {}, not a tensor", v.kind()))
            })
            .collect::<OpResult<_>>()?;
        let first = parts
            .first()
            .ok_or_else(|| op_err!("ConcatFromSequence needs a non-empty sequence"))?;
        let rank = first.rank() + usize::from(new_axis);
        let ax = norm_axis(axis, rank)?;
        let total: usize = parts.iter().map(|p| p.len()).sum();
        ctx.check_alloc(total, first.dtype().size_in_memory().max(1))?;
        one(concat_parts(&parts, ax, new_axis)?)
    }))
}

/// Runs `body` once per sequence position; sequence inputs give their i-th
/// item, tensor inputs are passed whole; each output is gathered into a sequence.
fn run_sequence_map(ctx: &RunCtx, body: &Plan, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let (_, first) = seq_in(inputs, 0)?;
    let n = first.len();
    for (i, v) in inputs.iter().enumerate().skip(1) {
        if let Some(Value::Sequence { items, .. }) = v {
            if items.len() != n {
                return Err(op_err!(
                    "sequence input {i} has {} items but input 0 has {n}",
                    items.len()
                ));
            }
        }
    }
    let outs = body.outputs.len();
    let mut collected: Vec<Vec<Value>> = vec![Vec::with_capacity(n); outs];
    for k in 0..n {
        let args: Vec<Option<Value>> = inputs
            .iter()
            .map(|v| match v {
                Some(Value::Sequence { items, .. }) => items.get(k).cloned(),
                Some(other) => Some((*other).clone()),
                None => None,
            })
            .collect();
        let res = ctx.run_subgraph(body, args)?;
        if res.len() != outs {
            return Err(op_err!(
                "the body gave {} outputs, expected {outs}",
                res.len()
            ));
        }
        for (c, r) in collected.iter_mut().zip(res) {
            c.push(r);
        }
    }
    let elem_types: Vec<Option<DType>> = body
        .outputs
        .iter()
        .map(|(info, _)| match &info.ty {
            Some(crate::ir::TypeInfo::Tensor { dtype, .. }) => *dtype,
            _ => None,
        })
        .collect();
    Ok(collected
        .into_iter()
        .zip(elem_types)
        .map(|(items, d)| seq_value(d, items))
        .collect())
}

fn build_sequence_map(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let body: Arc<Plan> = ctx.subgraph_attr("body")?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        run_sequence_map(ctx, &body, inputs)
    }))
}

fn run_optional(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    Ok(vec![Value::Optional(
        inputs
            .first()
            .copied()
            .flatten()
            .map(|v| Box::new(v.clone())),
    )])
}

fn run_optional_has_element(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    let has = match inputs.first().copied().flatten() {
        None | Some(Value::Optional(None)) => false,
        Some(_) => true,
    };
    one(Tensor::scalar(has))
}

fn run_optional_get_element(_: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
    match inputs.first().copied().flatten() {
        Some(Value::Optional(Some(v))) => Ok(vec![v.as_ref().clone()]),
        Some(Value::Optional(None)) | None => {
            Err(op_err!("OptionalGetElement was given an empty optional"))
        }
        Some(v) => Ok(vec![v.clone()]),
    }
}

pub fn register(r: &mut Registry) {
    r.add("", "SequenceEmpty", build_sequence_empty);
    r.add("", "SequenceConstruct", |_| {
        Ok(Box::new(run_sequence_construct))
    });
    r.add("", "SequenceInsert", |_| Ok(Box::new(run_sequence_insert)));
    r.add("", "SequenceAt", |_| Ok(Box::new(run_sequence_at)));
    r.add("", "SequenceErase", |_| Ok(Box::new(run_sequence_erase)));
    r.add("", "SequenceLength", |_| Ok(Box::new(run_sequence_length)));
    r.add("", "SequenceMap", build_sequence_map);
    r.add("", "SplitToSequence", build_split_to_sequence);
    r.add("", "ConcatFromSequence", build_concat_from_sequence);
    r.add("", "Optional", |_| Ok(Box::new(run_optional)));
    r.add("", "OptionalHasElement", |_| {
        Ok(Box::new(run_optional_has_element))
    });
    r.add("", "OptionalGetElement", |_| {
        Ok(Box::new(run_optional_get_element))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(shape: Vec<usize>, v: Vec<i64>) -> Tensor {
        Tensor::from_vec(shape, v).unwrap()
    }

    #[test]
    fn concat_and_stack() {
        let a = t(vec![2, 2], vec![1, 2, 3, 4]);
        let b = t(vec![2, 1], vec![5, 6]);
        let c = concat_parts(&[&a, &b], 1, false).unwrap();
        assert_eq!(c.shape(), &[2, 3]);
        assert_eq!(c.to_i64_vec().unwrap(), vec![1, 2, 5, 3, 4, 6]);
        let s = concat_parts(&[&a, &a], 1, true).unwrap();
        assert_eq!(s.shape(), &[2, 2, 2]);
        assert_eq!(s.to_i64_vec().unwrap(), vec![1, 2, 1, 2, 3, 4, 3, 4]);
        assert!(concat_parts(&[&a, &b], 0, false).is_err());
        assert!(concat_parts(&[], 0, false).is_err());
    }

    #[test]
    fn slices() {
        let a = t(vec![2, 3], vec![1, 2, 3, 4, 5, 6]);
        assert_eq!(
            slice_axis(&a, 1, 2).unwrap().to_i64_vec().unwrap(),
            vec![3, 6]
        );
        assert_eq!(slice_axis(&a, 0, 1).unwrap().shape(), &[3]);
        assert!(slice_axis(&a, 1, 3).is_err());
        let r = range_axis(&a, 1, 1, 2).unwrap();
        assert_eq!(r.shape(), &[2, 2]);
        assert_eq!(r.to_i64_vec().unwrap(), vec![2, 3, 5, 6]);
    }

    #[test]
    fn sequence_ops() {
        let a = Value::Tensor(t(vec![1], vec![1]));
        let b = Value::Tensor(t(vec![1], vec![2]));
        let seq = seq_value(None, vec![a.clone(), b.clone()]);
        assert_eq!(
            position(&[Some(&Value::Tensor(Tensor::scalar(-1i64)))], 0, 2, false).unwrap(),
            Some(1)
        );
        assert!(position(&[Some(&Value::Tensor(Tensor::scalar(2i64)))], 0, 2, false).is_err());
        assert_eq!(
            position(&[Some(&Value::Tensor(Tensor::scalar(2i64)))], 0, 2, true).unwrap(),
            Some(2)
        );
        let (d, items) = seq_in(&[Some(&seq)], 0).unwrap();
        assert_eq!(d, Some(DType::Int64));
        assert_eq!(items.len(), 2);
    }

    #[test]
    fn split_insert_and_concat_in_a_model() {
        use std::collections::BTreeMap;

        use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
        use crate::{Session, SessionOptions};

        let node = |op: &str, ins: &[&str], outs: &[&str], attrs: Vec<(&str, Attr)>| Node {
            name: String::new(),
            op_type: op.into(),
            domain: String::new(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: outs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        };
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let graph = Graph {
            nodes: vec![
                node(
                    "SplitToSequence",
                    &["x"],
                    &["s"],
                    vec![("axis", Attr::Int(1)), ("keepdims", Attr::Int(0))],
                ),
                node("SequenceInsert", &["s", "x0", "p"], &["s2"], vec![]),
                node("SequenceLength", &["s2"], &["n"], vec![]),
                node("SequenceAt", &["s2", "p"], &["at"], vec![]),
                node(
                    "ConcatFromSequence",
                    &["s2"],
                    &["y"],
                    vec![("axis", Attr::Int(-1)), ("new_axis", Attr::Int(1))],
                ),
            ],
            inputs: vec![vi("x"), vi("x0"), vi("p")],
            outputs: vec![vi("n"), vi("at"), vi("y")],
            ..Graph::default()
        };
        let model = Model {
            opsets: BTreeMap::from([(String::new(), 17)]),
            graph,
            ..Model::default()
        };
        let s = Session::from_model(model, SessionOptions::default()).unwrap();
        let out = s
            .run(vec![
                ("x".into(), t(vec![2, 2], vec![1, 2, 3, 4]).into()),
                ("x0".into(), t(vec![2], vec![9, 9]).into()),
                ("p".into(), Tensor::scalar(0i64).into()),
            ])
            .unwrap();
        let ints = |v: &Value| v.as_tensor().unwrap().to_i64_vec().unwrap();
        assert_eq!(ints(&out[0]), vec![3]);
        assert_eq!(ints(&out[1]), vec![9, 9]);
        // items [9 9], [1 3], [2 4] stacked on a new last axis
        assert_eq!(out[2].as_tensor().unwrap().shape(), &[2, 3]);
        assert_eq!(ints(&out[2]), vec![9, 1, 2, 9, 3, 4]);
    }
}
