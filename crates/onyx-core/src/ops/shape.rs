//! Shape manipulation: Reshape, Transpose, Concat, Split, Slice, Squeeze,
//! Unsqueeze, Expand, Tile, Pad, Shape, Size, Flatten, Identity,
//! DepthToSpace, SpaceToDepth, CenterCropPad.
//!
//! Every operator here moves elements without looking at them, so each is
//! written once for all element types. Where the source of each output
//! element is an affine function of its coordinate (transpose, split,
//! slices with positive steps, expand) [`strided_copy`] copies it in runs;
//! otherwise the kernel works out, for every output coordinate, the flat
//! index of the source element (or "fill" for padding), and
//! [`gather_coords`] builds the output from that.
//!
//! Opset notes: Reshape takes its shape as an attribute before opset 5;
//! Slice takes starts/ends/axes as attributes before opset 10; Pad takes pads
//! and value as attributes before 11 and gains `axes` in 18 and `wrap` in 19;
//! Split and Squeeze/Unsqueeze take `split`/`axes` as inputs from 13; Split
//! gains `num_outputs` in 18; Shape gains `start`/`end` in 15.

use onyx_tensor::{
    broadcast_shapes, for_each_broadcast_run, numel, strides_of, with_data, DType, Data, Elem,
    Tensor, Value,
};

use super::{
    norm_axes, norm_axis, one, opt_ints_in, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult,
    Registry, RunCtx,
};
use crate::{op_err, Limits};

/// The element count of `shape`, or an error when it overflows.
pub(crate) fn checked_numel(shape: &[usize]) -> OpResult<usize> {
    numel(shape).ok_or_else(|| op_err!("shape {shape:?} has too many elements"))
}

/// Converts a dimension given as i64 to usize, refusing negatives.
fn dim_of(d: i64, what: &str) -> OpResult<usize> {
    usize::try_from(d).map_err(|_| op_err!("{what} {d} is negative"))
}

fn pick<T: Elem>(v: &[T], idx: &[usize], fill: Option<&Data>) -> OpResult<Data> {
    let f = match fill {
        Some(d) => T::slice(d)
            .and_then(|s| s.first())
            .cloned()
            .ok_or_else(|| op_err!("the fill value has a different element type"))?,
        None => T::default(),
    };
    Ok(T::into_data(
        idx.iter()
            .map(|&i| v.get(i).cloned().unwrap_or_else(|| f.clone()))
            .collect(),
    ))
}

/// Builds a tensor of `out_shape` from `t`: `src(coords)` gives the flat index
/// into `t` of the element at each output coordinate, or None for the fill
/// value (`fill`'s first element, or zero/false/"" without one).
pub(crate) fn gather_coords(
    lim: &Limits,
    t: &Tensor,
    out_shape: Vec<usize>,
    fill: Option<&Tensor>,
    mut src: impl FnMut(&[usize]) -> OpResult<Option<usize>>,
) -> OpResult<Tensor> {
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    let len = t.len();
    let mut idx = Vec::with_capacity(n);
    let mut coords = vec![0usize; out_shape.len()];
    for _ in 0..n {
        match src(&coords)? {
            Some(i) if i < len => idx.push(i),
            Some(i) => {
                return Err(op_err!(
                    "source index {i} is out of range for {len} elements"
                ))
            }
            None => idx.push(usize::MAX),
        }
        for a in (0..coords.len()).rev() {
            coords[a] += 1;
            if coords[a] < out_shape[a] {
                break;
            }
            coords[a] = 0;
        }
    }
    if let Some(f) = fill {
        if f.dtype() != t.dtype() {
            return Err(op_err!(
                "the fill value is {} but the data is {}",
                f.dtype(),
                t.dtype()
            ));
        }
    }
    let fill_data = fill.map(|f| f.data());
    let data = with_data!(t.data(), v => pick(v, &idx, fill_data)?);
    Ok(Tensor::new(t.dtype(), out_shape, data)?)
}

/// The tensor of `out_shape` whose element at coordinate `c` is `t`'s
/// element at flat index `base + sum(c[i] * strides[i])`: a transpose, a
/// slice with positive steps or a broadcast (stride 0), read as a view.
/// Copies in runs (`for_each_broadcast_run`), so contiguous stretches are
/// one memcpy; the last element read is checked against `t` first.
pub(crate) fn strided_copy(
    lim: &Limits,
    t: &Tensor,
    out_shape: Vec<usize>,
    base: usize,
    strides: &[usize],
) -> OpResult<Tensor> {
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    if n > 0 {
        let last = out_shape
            .iter()
            .zip(strides)
            .try_fold(base, |acc, (&d, &s)| {
                acc.checked_add((d - 1).checked_mul(s)?)
            });
        if !matches!(last, Some(l) if l < t.len()) {
            return Err(op_err!(
                "a strided read of shape {out_shape:?} goes past the {} elements of the input",
                t.len()
            ));
        }
    }
    fn copy<T: Elem>(
        v: &[T],
        out_shape: &[usize],
        base: usize,
        strides: &[usize],
        n: usize,
    ) -> Data {
        let mut out = Vec::with_capacity(n);
        for_each_broadcast_run(out_shape, [strides], |[off], [step], len| {
            let at = base + off;
            match step {
                1 => out.extend_from_slice(&v[at..at + len]),
                0 => out.extend(std::iter::repeat_n(v[at].clone(), len)),
                _ => out.extend(v[at..].iter().step_by(step).take(len).cloned()),
            }
        });
        T::into_data(out)
    }
    let data = with_data!(t.data(), v => copy(v, &out_shape, base, strides, n));
    Ok(Tensor::new(t.dtype(), out_shape, data)?)
}

/// `t`'s elements read as a tensor of `view` (same count), axes permuted by `perm`.
pub(crate) fn permute(
    lim: &Limits,
    t: &Tensor,
    view: &[usize],
    perm: &[usize],
) -> OpResult<Tensor> {
    if perm.len() != view.len() {
        return Err(op_err!(
            "permutation {perm:?} does not match rank {}",
            view.len()
        ));
    }
    let mut seen = vec![false; view.len()];
    for &p in perm {
        if p >= view.len() || seen[p] {
            return Err(op_err!(
                "{perm:?} is not a permutation of 0..{}",
                view.len()
            ));
        }
        seen[p] = true;
    }
    if checked_numel(view)? != t.len() {
        return Err(op_err!("cannot view {:?} as {view:?}", t.shape()));
    }
    let vs = strides_of(view);
    let out_shape: Vec<usize> = perm.iter().map(|&p| view[p]).collect();
    let st: Vec<usize> = perm.iter().map(|&p| vs[p]).collect();
    strided_copy(lim, t, out_shape, 0, &st)
}

/// Copies `len` positions starting at `start` along `axis`.
pub(crate) fn take_range(
    lim: &Limits,
    t: &Tensor,
    axis: usize,
    start: usize,
    len: usize,
) -> OpResult<Tensor> {
    let st = strides_of(t.shape());
    let mut out_shape = t.shape().to_vec();
    out_shape[axis] = len;
    strided_copy(lim, t, out_shape, start * st[axis], &st)
}

fn identity_kernel() -> Box<dyn Kernel> {
    Box::new(
        |_: &RunCtx, inputs: &[Option<&Value>]| match inputs.first().copied().flatten() {
            Some(v) => Ok(vec![v.clone()]),
            None => Err(op_err!("required input 0 is missing")),
        },
    )
}

// ---------------------------------------------------------------- Reshape

/// The output shape of Reshape: 0 copies the input dim (unless `allowzero`),
/// one -1 is inferred.
pub(crate) fn reshape_target(
    in_shape: &[usize],
    spec: &[i64],
    allowzero: bool,
) -> OpResult<Vec<usize>> {
    let total = checked_numel(in_shape)?;
    let mut out = Vec::with_capacity(spec.len());
    let mut infer = None;
    for (i, &d) in spec.iter().enumerate() {
        match d {
            -1 => {
                if infer.is_some() {
                    return Err(op_err!("shape {spec:?} has more than one -1"));
                }
                infer = Some(i);
                out.push(1);
            }
            0 if !allowzero => match in_shape.get(i) {
                Some(&x) => out.push(x),
                None => {
                    return Err(op_err!(
                    "shape {spec:?} copies dimension {i} but the input {in_shape:?} has rank {}",
                    in_shape.len()
                ))
                }
            },
            d if d < 0 => return Err(op_err!("shape {spec:?} has invalid dimension {d}")),
            d => out.push(d as usize),
        }
    }
    if allowzero && infer.is_some() && out.contains(&0) {
        return Err(op_err!("shape {spec:?} has both 0 and -1 with allowzero=1"));
    }
    if let Some(i) = infer {
        let known = checked_numel(&out)?;
        if known == 0 || total % known != 0 {
            return Err(op_err!(
                "cannot reshape {in_shape:?} ({total} elements) to {spec:?}"
            ));
        }
        out[i] = total / known;
    }
    if checked_numel(&out)? != total {
        return Err(op_err!(
            "cannot reshape {in_shape:?} ({total} elements) to {spec:?}"
        ));
    }
    Ok(out)
}

fn build_reshape(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let attr_shape = if ctx.opset < 5 {
        Some(
            ctx.node
                .attr_ints("shape")?
                .ok_or_else(|| op_err!("missing attribute 'shape'"))?,
        )
    } else {
        None
    };
    let allowzero = ctx.node.attr_int("allowzero")?.unwrap_or(0) != 0;
    Ok(Box::new(
        move |_: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let spec = match &attr_shape {
                Some(s) => s.clone(),
                None => tensor_in(inputs, 1)?.to_i64_vec()?,
            };
            let shape = reshape_target(t.shape(), &spec, allowzero)?;
            one(t.clone().reshape(shape)?)
        },
    ))
}

// ---------------------------------------------------------------- Transpose

fn build_transpose(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let perm = ctx.node.attr_ints("perm")?;
    Ok(Box::new(
        move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let rank = t.rank();
            let p: Vec<usize> = match &perm {
                Some(p) => p
                    .iter()
                    .map(|&x| norm_axis(x, rank))
                    .collect::<OpResult<_>>()?,
                None => (0..rank).rev().collect(),
            };
            one(permute(ctx.limits, t, t.shape(), &p)?)
        },
    ))
}

// ---------------------------------------------------------------- Concat

fn concat_inner<T: Elem>(
    _first: &[T],
    parts: &[&Tensor],
    outer: usize,
    chunks: &[usize],
    total: usize,
) -> OpResult<Data> {
    let slices = parts
        .iter()
        .map(|p| T::slice(p.data()).ok_or_else(|| op_err!("inputs have different element types")))
        .collect::<OpResult<Vec<&[T]>>>()?;
    let mut out = Vec::with_capacity(total);
    for o in 0..outer {
        for (s, &c) in slices.iter().zip(chunks) {
            let part = s
                .get(o * c..(o + 1) * c)
                .ok_or_else(|| op_err!("input is smaller than its shape says"))?;
            out.extend_from_slice(part);
        }
    }
    Ok(T::into_data(out))
}

/// Joins tensors along `axis` (already checked against the first's rank).
pub(crate) fn concat(lim: &Limits, parts: &[&Tensor], axis: i64) -> OpResult<Tensor> {
    let first = parts
        .first()
        .ok_or_else(|| op_err!("Concat needs at least one input"))?;
    let rank = first.rank();
    let axis = norm_axis(axis, rank)?;
    let mut out_shape = first.shape().to_vec();
    out_shape[axis] = 0;
    for p in parts {
        if p.dtype() != first.dtype() {
            return Err(op_err!(
                "inputs have different element types {} and {}",
                first.dtype(),
                p.dtype()
            ));
        }
        let ok = p.rank() == rank
            && p.shape()
                .iter()
                .zip(first.shape())
                .enumerate()
                .all(|(i, (a, b))| i == axis || a == b);
        if !ok {
            return Err(op_err!(
                "cannot concatenate shapes {:?} and {:?} on axis {axis}",
                first.shape(),
                p.shape()
            ));
        }
        out_shape[axis] = out_shape[axis]
            .checked_add(p.shape()[axis])
            .ok_or_else(|| op_err!("concatenated dimension is too large"))?;
    }
    let total = checked_numel(&out_shape)?;
    lim.check_tensor(total, first.dtype().size_in_memory())?;
    let outer = checked_numel(&first.shape()[..axis])?;
    let chunks: Vec<usize> = parts
        .iter()
        .map(|p| checked_numel(&p.shape()[axis..]))
        .collect::<OpResult<_>>()?;
    let data = with_data!(first.data(), v => concat_inner(v, parts, outer, &chunks, total)?);
    Ok(Tensor::new(first.dtype(), out_shape, data)?)
}

fn build_concat(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axis = match ctx.node.attr_int("axis")? {
        Some(a) => a,
        None if ctx.opset < 4 => 1,
        None => return Err(op_err!("missing attribute 'axis'")),
    };
    Ok(Box::new(
        move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let parts = (0..inputs.len())
                .map(|i| tensor_in(inputs, i))
                .collect::<OpResult<Vec<_>>>()?;
            one(concat(ctx.limits, &parts, axis)?)
        },
    ))
}

// ---------------------------------------------------------------- Split

/// Sizes for splitting `dim` into `n` parts: equal, the last one smaller.
fn even_split(dim: usize, n: usize) -> OpResult<Vec<usize>> {
    if n == 0 {
        return Err(op_err!("cannot split into 0 parts"));
    }
    let chunk = dim.div_ceil(n);
    let mut sizes = Vec::with_capacity(n);
    let mut left = dim;
    for _ in 0..n {
        let s = chunk.min(left);
        sizes.push(s);
        left -= s;
    }
    Ok(sizes)
}

fn build_split(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let axis = ctx.node.attr_int("axis")?.unwrap_or(0);
    let attr_split = if ctx.opset < 13 {
        ctx.node.attr_ints("split")?
    } else {
        None
    };
    let num_outputs = if ctx.opset >= 18 {
        ctx.node.attr_int("num_outputs")?
    } else {
        None
    };
    let n_out = ctx.node.outputs.len();
    Ok(Box::new(
        move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let ax = norm_axis(axis, t.rank())?;
            let dim = t.shape()[ax];
            let split_in = opt_ints_in(inputs, 1)?;
            let sizes: Vec<usize> = match split_in.or_else(|| attr_split.clone()) {
                Some(s) => {
                    let s = s
                        .iter()
                        .map(|&x| dim_of(x, "split size"))
                        .collect::<OpResult<Vec<_>>>()?;
                    if s.iter().try_fold(0usize, |a, &b| a.checked_add(b)) != Some(dim) {
                        return Err(op_err!(
                            "split sizes {s:?} do not add up to dimension {dim}"
                        ));
                    }
                    s
                }
                None => {
                    if let Some(n) = num_outputs {
                        if usize::try_from(n).ok() != Some(n_out) {
                            return Err(op_err!(
                                "num_outputs is {n} but the node has {n_out} outputs"
                            ));
                        }
                    }
                    let n = n_out;
                    even_split(dim, n)?
                }
            };
            let mut out = Vec::with_capacity(sizes.len());
            let mut start = 0;
            for s in sizes {
                out.push(Value::Tensor(take_range(ctx.limits, t, ax, start, s)?));
                start += s;
            }
            Ok(out)
        },
    ))
}

// ---------------------------------------------------------------- Slice

/// One sliced axis: first source position, step, and output length.
#[derive(Clone, Copy, Debug, PartialEq)]
struct AxisSlice {
    start: i64,
    step: i64,
    len: usize,
}

fn slice_axis(dim: usize, start: i64, end: i64, step: i64) -> OpResult<AxisSlice> {
    if step == 0 {
        return Err(op_err!("slice step cannot be 0"));
    }
    let d = dim as i128;
    let fix = |v: i64| -> i128 {
        let v = v as i128;
        if v < 0 {
            v + d
        } else {
            v
        }
    };
    let (s, e) = if step > 0 {
        (fix(start).clamp(0, d), fix(end).clamp(0, d))
    } else {
        (fix(start).clamp(0, d - 1), fix(end).clamp(-1, d - 1))
    };
    let st = step as i128;
    let len = if step > 0 {
        if e > s {
            (e - s + st - 1) / st
        } else {
            0
        }
    } else if s > e {
        (s - e + (-st) - 1) / (-st)
    } else {
        0
    };
    Ok(AxisSlice {
        start: if len == 0 { 0 } else { s as i64 },
        step,
        len: len as usize,
    })
}

fn slice(
    lim: &Limits,
    t: &Tensor,
    starts: &[i64],
    ends: &[i64],
    axes: Option<&[i64]>,
    steps: Option<&[i64]>,
) -> OpResult<Tensor> {
    let rank = t.rank();
    if starts.len() != ends.len() {
        return Err(op_err!(
            "starts has {} values but ends has {}",
            starts.len(),
            ends.len()
        ));
    }
    let axes = match axes {
        Some(a) => {
            if a.len() != starts.len() {
                return Err(op_err!(
                    "axes has {} values but starts has {}",
                    a.len(),
                    starts.len()
                ));
            }
            norm_axes(a, rank)?
        }
        None => {
            if starts.len() > rank {
                return Err(op_err!("{} starts for rank {rank}", starts.len()));
            }
            (0..starts.len()).collect()
        }
    };
    if let Some(s) = steps {
        if s.len() != starts.len() {
            return Err(op_err!(
                "steps has {} values but starts has {}",
                s.len(),
                starts.len()
            ));
        }
    }
    let shape = t.shape();
    let mut plan: Vec<AxisSlice> = shape
        .iter()
        .map(|&d| AxisSlice {
            start: 0,
            step: 1,
            len: d,
        })
        .collect();
    for (i, &a) in axes.iter().enumerate() {
        let step = steps.map(|s| s[i]).unwrap_or(1);
        plan[a] = slice_axis(shape[a], starts[i], ends[i], step)?;
    }
    let st = strides_of(shape);
    let out_shape: Vec<usize> = plan.iter().map(|p| p.len).collect();
    if plan.iter().all(|p| p.step > 0 && p.start >= 0) {
        let base = plan
            .iter()
            .zip(&st)
            .map(|(p, &s)| p.start as usize * s)
            .sum();
        let steps: Vec<usize> = plan
            .iter()
            .zip(&st)
            .map(|(p, &s)| p.step as usize * s)
            .collect();
        return strided_copy(lim, t, out_shape, base, &steps);
    }
    gather_coords(lim, t, out_shape, None, |c| {
        let mut off: i64 = 0;
        for ((&x, p), &s) in c.iter().zip(&plan).zip(&st) {
            off += (p.start + x as i64 * p.step) * s as i64;
        }
        Ok(Some(off as usize))
    })
}

fn build_slice(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    if ctx.opset < 10 {
        let starts = ctx
            .node
            .attr_ints("starts")?
            .ok_or_else(|| op_err!("missing attribute 'starts'"))?;
        let ends = ctx
            .node
            .attr_ints("ends")?
            .ok_or_else(|| op_err!("missing attribute 'ends'"))?;
        let axes = ctx.node.attr_ints("axes")?;
        return Ok(Box::new(
            move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
                let t = tensor_in(inputs, 0)?;
                one(slice(ctx.limits, t, &starts, &ends, axes.as_deref(), None)?)
            },
        ));
    }
    Ok(Box::new(
        |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let starts = tensor_in(inputs, 1)?.to_i64_vec()?;
            let ends = tensor_in(inputs, 2)?.to_i64_vec()?;
            let axes = opt_ints_in(inputs, 3)?;
            let steps = opt_ints_in(inputs, 4)?;
            one(slice(
                ctx.limits,
                t,
                &starts,
                &ends,
                axes.as_deref(),
                steps.as_deref(),
            )?)
        },
    ))
}

// ---------------------------------------------------------------- Squeeze / Unsqueeze

fn squeeze(t: &Tensor, axes: Option<&[i64]>) -> OpResult<Tensor> {
    let shape = t.shape();
    let out: Vec<usize> = match axes {
        None => shape.iter().copied().filter(|&d| d != 1).collect(),
        Some(a) => {
            let axes = norm_axes(a, t.rank())?;
            for &a in &axes {
                if shape[a] != 1 {
                    return Err(op_err!(
                        "cannot squeeze axis {a} of size {} in shape {shape:?}",
                        shape[a]
                    ));
                }
            }
            shape
                .iter()
                .enumerate()
                .filter(|(i, _)| !axes.contains(i))
                .map(|(_, &d)| d)
                .collect()
        }
    };
    Ok(t.clone().reshape(out)?)
}

fn unsqueeze(t: &Tensor, axes: &[i64]) -> OpResult<Tensor> {
    let rank = t.rank() + axes.len();
    let axes = norm_axes(axes, rank)?;
    let mut out = Vec::with_capacity(rank);
    let mut src = t.shape().iter();
    for i in 0..rank {
        if axes.contains(&i) {
            out.push(1);
        } else {
            out.push(
                *src.next()
                    .ok_or_else(|| op_err!("Unsqueeze: inconsistent axes"))?,
            );
        }
    }
    Ok(t.clone().reshape(out)?)
}

fn build_squeeze(ctx: &BuildCtx, un: bool) -> OpResult<Box<dyn Kernel>> {
    let attr_axes = if ctx.opset < 13 {
        ctx.node.attr_ints("axes")?
    } else {
        None
    };
    let from_input = ctx.opset >= 13;
    Ok(Box::new(
        move |_: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let axes = if from_input {
                opt_ints_in(inputs, 1)?
            } else {
                attr_axes.clone()
            };
            if un {
                let axes = axes.ok_or_else(|| op_err!("Unsqueeze needs axes"))?;
                one(unsqueeze(t, &axes)?)
            } else {
                one(squeeze(t, axes.as_deref())?)
            }
        },
    ))
}

// ---------------------------------------------------------------- Expand / Tile

fn expand(lim: &Limits, t: &Tensor, shape: &[i64]) -> OpResult<Tensor> {
    let target = shape
        .iter()
        .map(|&d| dim_of(d, "Expand dimension"))
        .collect::<OpResult<Vec<_>>>()?;
    let out = broadcast_shapes(&[t.shape(), &target])?;
    let st = onyx_tensor::broadcast_strides(t.shape(), &out);
    strided_copy(lim, t, out, 0, &st)
}

/// A count or axis given as a one-value tensor. Tile-1 types its tiles and
/// axis like its input (float16, float or double); a float must be whole.
fn whole_scalar_in(inputs: &[Option<&Value>], i: usize) -> OpResult<i64> {
    let t = tensor_in(inputs, i)?;
    if !t.dtype().is_float() {
        return super::scalar_i64_in(inputs, i);
    }
    match t.to_f64_vec()?.as_slice() {
        [x] if x.fract() == 0.0 && x.abs() <= 9.0e15 => Ok(*x as i64),
        [x] => Err(op_err!(
            "input {i} should hold a whole number but holds {x}"
        )),
        v => Err(op_err!(
            "input {i} should hold one value but holds {}",
            v.len()
        )),
    }
}

fn tile(lim: &Limits, t: &Tensor, repeats: &[i64]) -> OpResult<Tensor> {
    let shape = t.shape();
    if repeats.len() != shape.len() {
        return Err(op_err!(
            "repeats has {} values but the input has rank {}",
            repeats.len(),
            shape.len()
        ));
    }
    let mut out = Vec::with_capacity(shape.len());
    for (&d, &r) in shape.iter().zip(repeats) {
        let r = dim_of(r, "repeat")?;
        out.push(
            d.checked_mul(r)
                .ok_or_else(|| op_err!("tiled shape is too large"))?,
        );
    }
    let st = strides_of(shape);
    gather_coords(lim, t, out, None, |c| {
        Ok(Some(
            c.iter()
                .zip(shape)
                .zip(&st)
                .map(|((&x, &d), &s)| (x % d) * s)
                .sum(),
        ))
    })
}

// ---------------------------------------------------------------- Pad

#[derive(Clone, Copy, Debug, PartialEq)]
enum PadMode {
    Constant,
    Reflect,
    Edge,
    Wrap,
}

/// The source position along one axis for output position `o`, or None for fill.
fn pad_source(o: i64, before: i64, dim: i64, mode: PadMode) -> Option<i64> {
    // i128: `before` may be any i64, even i64::MIN
    let s = i128::from(o) - i128::from(before);
    let d = i128::from(dim);
    if (0..d).contains(&s) {
        return Some(s as i64);
    }
    if dim == 0 {
        return None;
    }
    let r = match mode {
        PadMode::Constant => return None,
        PadMode::Edge => s.clamp(0, d - 1),
        PadMode::Wrap => s.rem_euclid(d),
        PadMode::Reflect => {
            if dim == 1 {
                return Some(0);
            }
            let period = 2 * (d - 1);
            let m = s.rem_euclid(period);
            if m >= d {
                period - m
            } else {
                m
            }
        }
    };
    Some(r as i64)
}

fn pad(
    lim: &Limits,
    t: &Tensor,
    pads: &[i64],
    axes: Option<&[i64]>,
    mode: PadMode,
    fill: Option<&Tensor>,
) -> OpResult<Tensor> {
    let rank = t.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => norm_axes(a, rank)?,
        None => (0..rank).collect(),
    };
    if pads.len() != 2 * axes.len() {
        return Err(op_err!(
            "pads has {} values but {} axes need {}",
            pads.len(),
            axes.len(),
            2 * axes.len()
        ));
    }
    let shape = t.shape();
    let mut before = vec![0i64; rank];
    let mut after = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        before[a] = pads[i];
        after[a] = pads[i + axes.len()];
    }
    let mut out = Vec::with_capacity(rank);
    for a in 0..rank {
        let d = (shape[a] as i128) + before[a] as i128 + after[a] as i128;
        if d < 0 || d > usize::MAX as i128 {
            return Err(op_err!(
                "pads {:?} give axis {a} of size {} a size of {d}",
                pads,
                shape[a]
            ));
        }
        if mode != PadMode::Constant && shape[a] == 0 && d > 0 {
            return Err(op_err!("cannot pad empty axis {a} in {mode:?} mode"));
        }
        out.push(d as usize);
    }
    let st = strides_of(shape);
    let dims: Vec<i64> = shape.iter().map(|&d| d as i64).collect();
    gather_coords(lim, t, out, fill, |c| {
        let mut off = 0usize;
        for a in 0..c.len() {
            match pad_source(c[a] as i64, before[a], dims[a], mode) {
                Some(s) => off += s as usize * st[a],
                None => return Ok(None),
            }
        }
        Ok(Some(off))
    })
}

fn build_pad(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let mode = match ctx
        .node
        .attr_string("mode")?
        .unwrap_or_else(|| "constant".into())
        .as_str()
    {
        "constant" => PadMode::Constant,
        "reflect" => PadMode::Reflect,
        "edge" => PadMode::Edge,
        "wrap" => PadMode::Wrap,
        other => return Err(op_err!("unknown pad mode '{other}'")),
    };
    if ctx.opset < 11 {
        let pads = match ctx.node.attr_ints("pads")? {
            Some(p) => p,
            None => ctx
                .node
                .attr_ints("paddings")?
                .ok_or_else(|| op_err!("missing attribute 'pads'"))?,
        };
        let value = ctx.node.attr_float("value")?.unwrap_or(0.0);
        return Ok(Box::new(
            move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
                let t = tensor_in(inputs, 0)?;
                let fill = if t.dtype() == DType::String {
                    None
                } else {
                    Some(super::cast::cast_tensor(
                        &Tensor::scalar(value),
                        t.dtype(),
                        false,
                    )?)
                };
                one(pad(ctx.limits, t, &pads, None, mode, fill.as_ref())?)
            },
        ));
    }
    Ok(Box::new(
        move |ctx: &RunCtx, inputs: &[Option<&Value>]| -> OpResult<Vec<Value>> {
            let t = tensor_in(inputs, 0)?;
            let pads = tensor_in(inputs, 1)?.to_i64_vec()?;
            let fill = opt_tensor_in(inputs, 2)?.filter(|f| !f.is_empty());
            let axes = opt_ints_in(inputs, 3)?;
            one(pad(ctx.limits, t, &pads, axes.as_deref(), mode, fill)?)
        },
    ))
}

// ---------------------------------------------------------------- CenterCropPad

fn center_crop_pad(
    lim: &Limits,
    t: &Tensor,
    target: &[i64],
    axes: Option<&[i64]>,
) -> OpResult<Tensor> {
    let rank = t.rank();
    let axes: Vec<usize> = match axes {
        Some(a) => norm_axes(a, rank)?,
        None => (0..rank).collect(),
    };
    if target.len() != axes.len() {
        return Err(op_err!(
            "shape has {} values but there are {} axes",
            target.len(),
            axes.len()
        ));
    }
    let shape = t.shape();
    let mut out = shape.to_vec();
    // source = output - shift (shift negative when cropping)
    let mut shift = vec![0i64; rank];
    for (i, &a) in axes.iter().enumerate() {
        let want = dim_of(target[i], "target size")?;
        let have = shape[a];
        out[a] = want;
        shift[a] = if have >= want {
            -(((have - want) / 2) as i64)
        } else {
            ((want - have) / 2) as i64
        };
    }
    let st = strides_of(shape);
    gather_coords(lim, t, out, None, |c| {
        let mut off = 0usize;
        for a in 0..c.len() {
            let s = c[a] as i64 - shift[a];
            if s < 0 || s >= shape[a] as i64 {
                return Ok(None);
            }
            off += s as usize * st[a];
        }
        Ok(Some(off))
    })
}

// ---------------------------------------------------------------- DepthToSpace / SpaceToDepth

fn depth_to_space(lim: &Limits, t: &Tensor, b: usize, crd: bool) -> OpResult<Tensor> {
    let &[n, c, h, w] = t.shape() else {
        return Err(op_err!(
            "DepthToSpace needs a 4-D input, got {:?}",
            t.shape()
        ));
    };
    let bb = b
        .checked_mul(b)
        .filter(|&x| x > 0)
        .ok_or_else(|| op_err!("invalid blocksize {b}"))?;
    if c % bb != 0 {
        return Err(op_err!(
            "channels {c} are not divisible by blocksize^2 {bb}"
        ));
    }
    let cc = c / bb;
    let r = if crd {
        permute(lim, t, &[n, cc, b, b, h, w], &[0, 1, 4, 2, 5, 3])?
    } else {
        permute(lim, t, &[n, b, b, cc, h, w], &[0, 3, 4, 1, 5, 2])?
    };
    Ok(r.reshape(vec![n, cc, h * b, w * b])?)
}

fn space_to_depth(lim: &Limits, t: &Tensor, b: usize, crd: bool) -> OpResult<Tensor> {
    let &[n, c, h, w] = t.shape() else {
        return Err(op_err!(
            "SpaceToDepth needs a 4-D input, got {:?}",
            t.shape()
        ));
    };
    if b == 0 || h % b != 0 || w % b != 0 {
        return Err(op_err!(
            "spatial size {h}x{w} is not divisible by blocksize {b}"
        ));
    }
    let perm: &[usize] = if crd {
        &[0, 1, 3, 5, 2, 4]
    } else {
        &[0, 3, 5, 1, 2, 4]
    };
    let r = permute(lim, t, &[n, c, h / b, b, w / b, b], perm)?;
    Ok(r.reshape(vec![n, c * b * b, h / b, w / b])?)
}

fn blocksize(ctx: &BuildCtx) -> OpResult<usize> {
    let b = ctx
        .node
        .attr_int("blocksize")?
        .ok_or_else(|| op_err!("missing attribute 'blocksize'"))?;
    if b <= 0 {
        return Err(op_err!("blocksize {b} must be positive"));
    }
    Ok(b as usize)
}

/// The `mode` attribute of DepthToSpace/SpaceToDepth: true for CRD.
fn crd_mode(ctx: &BuildCtx) -> OpResult<bool> {
    match ctx.node.attr_string("mode")?.as_deref() {
        None | Some("DCR") => Ok(false),
        Some("CRD") => Ok(true),
        Some(m) => Err(op_err!("unknown mode '{m}'")),
    }
}

// ---------------------------------------------------------------- registration

pub fn register(r: &mut Registry) {
    r.add("", "Reshape", build_reshape);
    r.add("", "Transpose", build_transpose);
    r.add("", "Concat", build_concat);
    r.add("", "Split", build_split);
    r.add("", "Slice", build_slice);
    r.add("", "Squeeze", |c| build_squeeze(c, false));
    r.add("", "Unsqueeze", |c| build_squeeze(c, true));
    r.add("", "Expand", |_| {
        Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let shape = tensor_in(inputs, 1)?.to_i64_vec()?;
            one(expand(ctx.limits, tensor_in(inputs, 0)?, &shape)?)
        }))
    });
    r.add("", "Tile", |c| {
        if c.opset < 6 {
            // Tile-1: tiles (count) and axis inputs
            return Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
                let t = tensor_in(inputs, 0)?;
                let tiles = whole_scalar_in(inputs, 1)?;
                let axis = norm_axis(whole_scalar_in(inputs, 2)?, t.rank())?;
                let mut reps = vec![1i64; t.rank()];
                reps[axis] = tiles;
                one(tile(ctx.limits, t, &reps)?)
            }));
        }
        Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let reps = tensor_in(inputs, 1)?.to_i64_vec()?;
            one(tile(ctx.limits, tensor_in(inputs, 0)?, &reps)?)
        }))
    });
    r.add("", "Pad", build_pad);
    r.add("", "Shape", |c| {
        let start = c.node.attr_int("start")?.unwrap_or(0);
        let end = c.node.attr_int("end")?;
        Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            let rank = t.rank() as i64;
            let fix = |v: i64| (if v < 0 { v + rank } else { v }).clamp(0, rank) as usize;
            let s = fix(start);
            let e = fix(end.unwrap_or(rank)).max(s);
            let dims: Vec<i64> = t.shape()[s..e].iter().map(|&d| d as i64).collect();
            one(Tensor::from_vec(vec![dims.len()], dims)?)
        }))
    });
    r.add("", "Size", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            one(Tensor::scalar(tensor_in(inputs, 0)?.len() as i64))
        }))
    });
    r.add("", "Flatten", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(1);
        Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            let rank = t.rank() as i64;
            let a = if axis < 0 { axis + rank } else { axis };
            if a < 0 || a > rank {
                return Err(op_err!("axis {axis} is out of range for rank {rank}"));
            }
            let a = a as usize;
            let outer = checked_numel(&t.shape()[..a])?;
            let inner = checked_numel(&t.shape()[a..])?;
            one(t.clone().reshape(vec![outer, inner])?)
        }))
    });
    r.add("", "Identity", |_| Ok(identity_kernel()));
    r.add("", "DepthToSpace", |c| {
        let b = blocksize(c)?;
        let crd = crd_mode(c)?;
        Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
            one(depth_to_space(ctx.limits, tensor_in(inputs, 0)?, b, crd)?)
        }))
    });
    r.add("", "SpaceToDepth", |c| {
        let b = blocksize(c)?;
        let crd = crd_mode(c)?;
        Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
            one(space_to_depth(ctx.limits, tensor_in(inputs, 0)?, b, crd)?)
        }))
    });
    r.add("", "CenterCropPad", |c| {
        let axes = c.node.attr_ints("axes")?;
        Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let target = tensor_in(inputs, 1)?.to_i64_vec()?;
            one(center_crop_pad(
                ctx.limits,
                tensor_in(inputs, 0)?,
                &target,
                axes.as_deref(),
            )?)
        }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(t: &Tensor) -> Vec<i64> {
        t.to_i64_vec().unwrap()
    }

    fn ti(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn tile_1_counts_may_be_floats() {
        let whole: Value = Tensor::scalar(3.0f32).into();
        let int: Value = Tensor::scalar(-1i64).into();
        let half: Value = Tensor::scalar(2.5f64).into();
        assert_eq!(whole_scalar_in(&[Some(&whole)], 0).unwrap(), 3);
        assert_eq!(whole_scalar_in(&[Some(&int)], 0).unwrap(), -1);
        assert!(whole_scalar_in(&[Some(&half)], 0)
            .unwrap_err()
            .0
            .contains("whole number"));
    }

    #[test]
    fn reshape_rules() {
        assert_eq!(
            reshape_target(&[2, 3, 4], &[0, -1], false).unwrap(),
            vec![2, 12]
        );
        assert_eq!(reshape_target(&[0, 3], &[3, 0], true).unwrap(), vec![3, 0]);
        assert!(reshape_target(&[2, 3], &[-1, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[4, -1], false).is_err());
        assert!(reshape_target(&[2, 3], &[0, 0, 0], false).is_err());
    }

    #[test]
    fn slicing() {
        assert_eq!(
            slice_axis(10, -1, i64::MIN, -3).unwrap(),
            AxisSlice {
                start: 9,
                step: -3,
                len: 4
            }
        );
        assert_eq!(slice_axis(10, 2, 1000, 1).unwrap().len, 8);
        assert_eq!(slice_axis(3, 5, 0, 1).unwrap().len, 0);
        assert!(slice_axis(3, 0, 1, 0).is_err());
    }

    #[test]
    fn pad_modes() {
        // input [1,2,3], pads 2 before
        let src = |mode| {
            (0..2)
                .map(|o| pad_source(o, 2, 3, mode))
                .collect::<Vec<_>>()
        };
        assert_eq!(src(PadMode::Reflect), vec![Some(2), Some(1)]);
        assert_eq!(src(PadMode::Edge), vec![Some(0), Some(0)]);
        assert_eq!(src(PadMode::Wrap), vec![Some(1), Some(2)]);
        assert_eq!(src(PadMode::Constant), vec![None, None]);
        assert_eq!(even_split(7, 3).unwrap(), vec![3, 3, 1]);
    }

    #[test]
    fn kernels_move_elements() {
        {
            let lim = Limits::default();
            let t = ti(&[2, 3], &[1, 2, 3, 4, 5, 6]);
            let p = permute(&lim, &t, &[2, 3], &[1, 0]).unwrap();
            assert_eq!(p.shape(), &[3, 2]);
            assert_eq!(iv(&p), vec![1, 4, 2, 5, 3, 6]);
            let s = slice(&lim, &t, &[0, -1], &[2, -4], Some(&[0, 1]), Some(&[1, -2])).unwrap();
            assert_eq!(iv(&s), vec![3, 1, 6, 4]);
            let c = concat(&lim, &[&t, &t], 1).unwrap();
            assert_eq!(c.shape(), &[2, 6]);
            assert_eq!(iv(&c), vec![1, 2, 3, 1, 2, 3, 4, 5, 6, 4, 5, 6]);
            let e = expand(&lim, &ti(&[2, 1], &[7, 8]), &[2, 2]).unwrap();
            assert_eq!(iv(&e), vec![7, 7, 8, 8]);
            let tl = tile(&lim, &ti(&[2], &[1, 2]), &[2]).unwrap();
            assert_eq!(iv(&tl), vec![1, 2, 1, 2]);
            let fill = Tensor::scalar(9i64);
            let pd = pad(
                &lim,
                &ti(&[2], &[1, 2]),
                &[1, 2],
                None,
                PadMode::Constant,
                Some(&fill),
            )
            .unwrap();
            assert_eq!(iv(&pd), vec![9, 1, 2, 9, 9]);
            let cc = center_crop_pad(&lim, &ti(&[3], &[1, 2, 3]), &[6], None).unwrap();
            assert_eq!(iv(&cc), vec![0, 1, 2, 3, 0, 0]);
            let d = ti(&[1, 4, 1, 1], &[1, 2, 3, 4]);
            let ds = depth_to_space(&lim, &d, 2, false).unwrap();
            assert_eq!(ds.shape(), &[1, 1, 2, 2]);
            assert_eq!(iv(&ds), vec![1, 2, 3, 4]);
            let back = space_to_depth(&lim, &ds, 2, false).unwrap();
            assert_eq!(iv(&back), vec![1, 2, 3, 4]);
            assert!(squeeze(&t, Some(&[0])).is_err());
            assert_eq!(unsqueeze(&t, &[0, -1]).unwrap().shape(), &[1, 2, 3, 1]);
        }
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let lim = Limits::default();
        let t = ti(&[2], &[1, 2]);
        assert!(pad(&lim, &t, &[i64::MIN, 0], None, PadMode::Reflect, None).is_err());
        assert!(pad(&lim, &t, &[i64::MAX, 0], None, PadMode::Constant, None).is_err());
        assert_eq!(
            pad_source(0, i64::MIN, 3, PadMode::Wrap),
            Some(2) // 2^63 mod 3
        );
        assert!(tile(&lim, &t, &[i64::MAX]).is_err());
        assert!(tile(&lim, &t, &[-1]).is_err());
        assert!(expand(&lim, &t, &[1 << 40, 1 << 40]).is_err());
        assert!(slice(&lim, &t, &[0], &[1], Some(&[3]), None).is_err());
        assert!(concat(&lim, &[&t, &ti(&[1, 2], &[1, 2])], 0).is_err());
        assert!(permute(&lim, &t, &[2], &[1]).is_err());
        assert!(depth_to_space(&lim, &t, 2, false).is_err());
    }
}
