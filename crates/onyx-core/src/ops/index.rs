//! Indexing: Gather, GatherElements, GatherND, ScatterND, ScatterElements,
//! Scatter, Compress, OneHot, NonZero, Trilu, TopK, Unique, ReverseSequence,
//! TensorScatter.
//!
//! Gathers work on every element type by computing flat source indices and
//! picking elements with them; scatters compute (destination, source) pairs
//! and then assign (any type) or combine (numeric types, for `reduction`).
//! Negative indices count from the end; out-of-range ones are errors.
//!
//! Opset notes: ScatterND gains `reduction` add/mul in 16 and max/min in 18,
//! as does ScatterElements; TopK takes `k` as an attribute before opset 10
//! and gains `largest`/`sorted` in 11.

use std::cmp::Ordering;

use onyx_tensor::{strides_of, with_data, Data, Elem, Tensor, Value};

use super::elementwise::Arith;
use super::shape::{checked_numel, gather_coords};
use super::{
    norm_axis, one, opt_tensor_in, scalar_i64_in, tensor_in, BuildCtx, Kernel, OpResult, Registry,
    RunCtx,
};
use crate::{op_err, Limits};

/// Resolves a possibly negative index against `dim`.
fn norm_index(i: i64, dim: usize, axis: usize) -> OpResult<usize> {
    let d = dim as i64;
    let j = if i < 0 { i + d } else { i };
    if j < 0 || j >= d {
        return Err(op_err!(
            "index {i} is out of range for axis {axis} of size {dim}"
        ));
    }
    Ok(j as usize)
}

/// Picks `idx` (flat, already checked to be in range) from `t` into a tensor of `shape`.
fn take_flat(lim: &Limits, t: &Tensor, shape: Vec<usize>, idx: Vec<usize>) -> OpResult<Tensor> {
    lim.check_tensor(idx.len(), t.dtype().size_in_memory())?;
    if let Some(&bad) = idx.iter().find(|&&i| i >= t.len()) {
        return Err(op_err!(
            "source index {bad} is out of range for {} elements",
            t.len()
        ));
    }
    Ok(t.gather_flat(shape, idx.into_iter())?)
}

/// Calls `f(coords)` for every coordinate of `shape` in row-major order.
fn for_each_coord(shape: &[usize], mut f: impl FnMut(&[usize]) -> OpResult<()>) -> OpResult<()> {
    let n = checked_numel(shape)?;
    let mut c = vec![0usize; shape.len()];
    for _ in 0..n {
        f(&c)?;
        for a in (0..c.len()).rev() {
            c[a] += 1;
            if c[a] < shape[a] {
                break;
            }
            c[a] = 0;
        }
    }
    Ok(())
}

/// A total order for sorting elements: NaN (anything unordered with itself) is largest.
#[allow(clippy::eq_op)]
fn cmp_vals<T: PartialOrd>(a: &T, b: &T) -> Ordering {
    match a.partial_cmp(b) {
        Some(o) => o,
        None => {
            let an = a.partial_cmp(a).is_none();
            let bn = b.partial_cmp(b).is_none();
            an.cmp(&bn)
        }
    }
}

fn i64_tensor(shape: Vec<usize>, v: Vec<i64>) -> OpResult<Tensor> {
    Ok(Tensor::from_vec(shape, v)?)
}

// ---------------------------------------------------------------- Gather family

fn gather(lim: &Limits, t: &Tensor, idx: &Tensor, axis: i64) -> OpResult<Tensor> {
    let shape = t.shape();
    let axis = norm_axis(axis, t.rank())?;
    let dim = shape[axis];
    let ind = idx
        .to_i64_vec()?
        .into_iter()
        .map(|i| norm_index(i, dim, axis))
        .collect::<OpResult<Vec<_>>>()?;
    let outer = checked_numel(&shape[..axis])?;
    let inner = checked_numel(&shape[axis + 1..])?;
    let mut out_shape = shape[..axis].to_vec();
    out_shape.extend_from_slice(idx.shape());
    out_shape.extend_from_slice(&shape[axis + 1..]);
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    // each index picks a block of `inner` contiguous elements; the indices
    // are in range (norm_index), so every block lies inside `t`
    fn blocks<T: Elem>(
        v: &[T],
        outer: usize,
        dim: usize,
        inner: usize,
        ind: &[usize],
        n: usize,
    ) -> Data {
        let mut out = Vec::with_capacity(n);
        for o in 0..outer {
            for &k in ind {
                let base = (o * dim + k) * inner;
                out.extend_from_slice(&v[base..base + inner]);
            }
        }
        T::into_data(out)
    }
    let data = with_data!(t.data(), v => blocks(v, outer, dim, inner, &ind, n));
    Ok(Tensor::new(t.dtype(), out_shape, data)?)
}

/// Checks that `idx` has `t`'s rank and fits inside it on every axis but `axis`.
fn check_elements_shape(t: &Tensor, idx_shape: &[usize], axis: usize) -> OpResult<()> {
    let ok = idx_shape.len() == t.rank()
        && idx_shape
            .iter()
            .zip(t.shape())
            .enumerate()
            .all(|(k, (&i, &d))| k == axis || i <= d);
    if !ok {
        return Err(op_err!(
            "indices of shape {idx_shape:?} do not fit data of shape {:?} on axis {axis}",
            t.shape()
        ));
    }
    Ok(())
}

fn gather_elements(lim: &Limits, t: &Tensor, idx: &Tensor, axis: i64) -> OpResult<Tensor> {
    let axis = norm_axis(axis, t.rank())?;
    check_elements_shape(t, idx.shape(), axis)?;
    let ind = idx.to_i64_vec()?;
    let st = strides_of(t.shape());
    let dim = t.shape()[axis];
    let mut flat = 0usize;
    gather_coords(lim, t, idx.shape().to_vec(), None, |c| {
        let i = norm_index(ind[flat], dim, axis)?;
        flat += 1;
        let mut off = 0;
        for (k, (&x, &s)) in c.iter().zip(&st).enumerate() {
            off += if k == axis { i } else { x } * s;
        }
        Ok(Some(off))
    })
}

/// For GatherND/ScatterND: the flat offset of each index tuple's slice, the
/// slice length, and the shape of the index tuples' grid.
struct NdPlan {
    bases: Vec<usize>,
    slice: usize,
}

fn nd_plan(
    lim: &Limits,
    data_shape: &[usize],
    idx: &Tensor,
    batch_dims: usize,
) -> OpResult<NdPlan> {
    let q = idx.rank();
    let r = data_shape.len();
    if q == 0 || r == 0 {
        return Err(op_err!("data and indices must have rank at least 1"));
    }
    if batch_dims >= q.min(r) {
        return Err(op_err!(
            "batch_dims {batch_dims} must be less than the ranks {r} and {q}"
        ));
    }
    let m = idx.shape()[q - 1];
    if m > r - batch_dims {
        return Err(op_err!(
            "index tuples of length {m} are too long for data of rank {r} with batch_dims {batch_dims}"
        ));
    }
    if idx.shape()[..batch_dims] != data_shape[..batch_dims] {
        return Err(op_err!(
            "batch dimensions of indices {:?} and data {data_shape:?} differ",
            idx.shape()
        ));
    }
    let ind = idx.to_i64_vec()?;
    let st = strides_of(data_shape);
    let batches = checked_numel(&data_shape[..batch_dims])?;
    let batch_size = checked_numel(&data_shape[batch_dims..])?;
    let tuples = checked_numel(&idx.shape()[batch_dims..q - 1])?;
    let slice = checked_numel(&data_shape[batch_dims + m..])?;
    let n_tuples = batches
        .checked_mul(tuples)
        .ok_or_else(|| op_err!("indices shape {:?} is too large", idx.shape()))?;
    lim.check_tensor(n_tuples, std::mem::size_of::<usize>())?;
    let mut bases = Vec::with_capacity(batches * tuples);
    for b in 0..batches {
        for t in 0..tuples {
            let tuple = &ind[(b * tuples + t) * m..(b * tuples + t + 1) * m];
            let mut off = b * batch_size;
            for (k, &i) in tuple.iter().enumerate() {
                let ax = batch_dims + k;
                off += norm_index(i, data_shape[ax], ax)? * st[ax];
            }
            bases.push(off);
        }
    }
    Ok(NdPlan { bases, slice })
}

fn gather_nd(lim: &Limits, t: &Tensor, idx: &Tensor, batch_dims: usize) -> OpResult<Tensor> {
    let plan = nd_plan(lim, t.shape(), idx, batch_dims)?;
    let q = idx.rank();
    let m = idx.shape()[q - 1];
    let mut out_shape = idx.shape()[..q - 1].to_vec();
    out_shape.extend_from_slice(&t.shape()[batch_dims + m..]);
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    let mut src = Vec::with_capacity(n);
    for &b in &plan.bases {
        src.extend(b..b + plan.slice);
    }
    take_flat(lim, t, out_shape, src)
}

// ---------------------------------------------------------------- Scatter family

#[derive(Clone, Copy, Debug, PartialEq)]
enum Reduction {
    None,
    Add,
    Mul,
    Max,
    Min,
}

fn reduction_attr(ctx: &BuildCtx) -> OpResult<Reduction> {
    Ok(match ctx.node.attr_string("reduction")?.as_deref() {
        None | Some("none") => Reduction::None,
        Some("add") => Reduction::Add,
        Some("mul") => Reduction::Mul,
        Some("max") => Reduction::Max,
        Some("min") => Reduction::Min,
        Some(other) => return Err(op_err!("unknown reduction '{other}'")),
    })
}

fn assign<T: Elem>(v: &mut [T], u: &Data, pairs: &[(usize, usize)]) -> OpResult<()> {
    let u = T::slice(u).ok_or_else(|| op_err!("updates have a different element type"))?;
    for &(d, s) in pairs {
        v[d] = u[s].clone();
    }
    Ok(())
}

fn combine<T: Elem + Arith>(
    v: &mut [T],
    u: &Data,
    pairs: &[(usize, usize)],
    red: Reduction,
) -> OpResult<()> {
    let u = T::slice(u).ok_or_else(|| op_err!("updates have a different element type"))?;
    for &(d, s) in pairs {
        let (a, b) = (v[d], u[s]);
        v[d] = match red {
            Reduction::Add => a.add(b),
            Reduction::Mul => a.mul(b),
            Reduction::Max => {
                if b > a {
                    b
                } else {
                    a
                }
            }
            Reduction::Min => {
                if b < a {
                    b
                } else {
                    a
                }
            }
            Reduction::None => b,
        };
    }
    Ok(())
}

/// A copy of `t` with `updates[s]` written (or combined) into position `d` for each pair.
fn scatter_apply(
    t: &Tensor,
    updates: &Tensor,
    pairs: &[(usize, usize)],
    red: Reduction,
) -> OpResult<Tensor> {
    if t.dtype() != updates.dtype() {
        return Err(op_err!(
            "data is {} but updates are {}",
            t.dtype(),
            updates.dtype()
        ));
    }
    if let Some(&(d, s)) = pairs
        .iter()
        .find(|&&(d, s)| d >= t.len() || s >= updates.len())
    {
        return Err(op_err!("scatter pair ({d}, {s}) is out of range"));
    }
    let (dtype, shape, mut data) = t.clone().into_parts();
    let u = updates.data();
    if red == Reduction::None {
        with_data!(&mut data, v => assign(v.make_mut(), u, pairs)?);
    } else {
        if dtype.is_minifloat() {
            return Err(op_err!("reduction is not supported for {dtype}"));
        }
        match &mut data {
            Data::F32(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::F64(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::F16(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::BF16(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::I8(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::I16(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::I32(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::I64(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::U8(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::U16(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::U32(v) => combine(v.make_mut(), u, pairs, red)?,
            Data::U64(v) => combine(v.make_mut(), u, pairs, red)?,
            _ => return Err(op_err!("reduction is not supported for {dtype}")),
        }
    }
    Ok(Tensor::new(dtype, shape, data)?)
}

fn scatter_nd(
    lim: &Limits,
    t: &Tensor,
    idx: &Tensor,
    updates: &Tensor,
    red: Reduction,
) -> OpResult<Tensor> {
    let plan = nd_plan(lim, t.shape(), idx, 0)?;
    let q = idx.rank();
    let m = idx.shape()[q - 1];
    let mut want = idx.shape()[..q - 1].to_vec();
    want.extend_from_slice(&t.shape()[m..]);
    if updates.shape() != want.as_slice() {
        return Err(op_err!(
            "updates have shape {:?} but {want:?} is needed",
            updates.shape()
        ));
    }
    let mut pairs = Vec::with_capacity(updates.len());
    for (ti, &b) in plan.bases.iter().enumerate() {
        for j in 0..plan.slice {
            pairs.push((b + j, ti * plan.slice + j));
        }
    }
    scatter_apply(t, updates, &pairs, red)
}

fn scatter_elements(
    t: &Tensor,
    idx: &Tensor,
    updates: &Tensor,
    axis: i64,
    red: Reduction,
) -> OpResult<Tensor> {
    let axis = norm_axis(axis, t.rank())?;
    check_elements_shape(t, idx.shape(), axis)?;
    if updates.shape() != idx.shape() {
        return Err(op_err!(
            "updates have shape {:?} but indices have {:?}",
            updates.shape(),
            idx.shape()
        ));
    }
    let ind = idx.to_i64_vec()?;
    let st = strides_of(t.shape());
    let dim = t.shape()[axis];
    let mut pairs = Vec::with_capacity(ind.len());
    let mut flat = 0usize;
    for_each_coord(idx.shape(), |c| {
        let i = norm_index(ind[flat], dim, axis)?;
        let mut off = 0;
        for (k, (&x, &s)) in c.iter().zip(&st).enumerate() {
            off += if k == axis { i } else { x } * s;
        }
        pairs.push((off, flat));
        flat += 1;
        Ok(())
    })?;
    scatter_apply(t, updates, &pairs, red)
}

fn tensor_scatter(
    past: &Tensor,
    update: &Tensor,
    write: Option<&Tensor>,
    axis: i64,
    circular: bool,
) -> OpResult<Tensor> {
    let rank = past.rank();
    let axis = norm_axis(axis, rank)?;
    if axis == 0 {
        return Err(op_err!("the sequence axis cannot be the batch axis 0"));
    }
    let ok = update.rank() == rank
        && update
            .shape()
            .iter()
            .zip(past.shape())
            .enumerate()
            .all(|(k, (&u, &p))| if k == axis { u <= p } else { u == p });
    if !ok {
        return Err(op_err!(
            "update of shape {:?} does not fit cache of shape {:?} on axis {axis}",
            update.shape(),
            past.shape()
        ));
    }
    let batch = past.shape()[0];
    let writes = match write {
        Some(w) => {
            let w = w.to_i64_vec()?;
            if w.len() != batch {
                return Err(op_err!(
                    "write_indices has {} values for batch size {batch}",
                    w.len()
                ));
            }
            w
        }
        None => vec![0; batch],
    };
    let max = past.shape()[axis] as i64;
    let st = strides_of(past.shape());
    let mut pairs = Vec::with_capacity(update.len());
    let mut flat = 0usize;
    for_each_coord(update.shape(), |c| {
        let mut pos = writes[c[0]]
            .checked_add(c[axis] as i64)
            .ok_or_else(|| op_err!("write index overflows"))?;
        if circular && max > 0 {
            pos = pos.rem_euclid(max);
        }
        if pos < 0 || pos >= max {
            return Err(op_err!(
                "write position {pos} is out of range for sequence length {max}"
            ));
        }
        let mut off = 0;
        for (k, (&x, &s)) in c.iter().zip(&st).enumerate() {
            off += if k == axis { pos as usize } else { x } * s;
        }
        pairs.push((off, flat));
        flat += 1;
        Ok(())
    })?;
    scatter_apply(past, update, &pairs, Reduction::None)
}

// ---------------------------------------------------------------- selection

fn compress(lim: &Limits, t: &Tensor, cond: &Tensor, axis: Option<i64>) -> OpResult<Tensor> {
    let cond = cond.to_i64_vec()?;
    let (outer, dim, inner, axis) = match axis {
        None => (1, t.len(), 1, None),
        Some(a) => {
            let a = norm_axis(a, t.rank())?;
            (
                checked_numel(&t.shape()[..a])?,
                t.shape()[a],
                checked_numel(&t.shape()[a + 1..])?,
                Some(a),
            )
        }
    };
    let mut sel = Vec::new();
    for (i, &c) in cond.iter().enumerate() {
        if c != 0 {
            if i >= dim {
                return Err(op_err!(
                    "condition selects position {i} but the axis has size {dim}"
                ));
            }
            sel.push(i);
        }
    }
    let out_shape = match axis {
        None => vec![sel.len()],
        Some(a) => {
            let mut s = t.shape().to_vec();
            s[a] = sel.len();
            s
        }
    };
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    let mut src = Vec::with_capacity(n);
    for o in 0..outer {
        for &k in &sel {
            let base = (o * dim + k) * inner;
            src.extend(base..base + inner);
        }
    }
    take_flat(lim, t, out_shape, src)
}

fn one_hot(lim: &Limits, idx: &Tensor, depth: f64, values: &Tensor, axis: i64) -> OpResult<Tensor> {
    if values.len() != 2 {
        return Err(op_err!(
            "values should hold [off, on] but holds {} elements",
            values.len()
        ));
    }
    if !depth.is_finite() || depth < 1.0 || depth > i64::MAX as f64 {
        return Err(op_err!("depth {depth} is not a positive size"));
    }
    let depth = depth as i64;
    let d = usize::try_from(depth).map_err(|_| op_err!("depth {depth} is too large"))?;
    let ind = idx.to_f64_vec()?;
    let r = idx.rank();
    let axis = norm_axis(axis, r + 1)?;
    let outer = checked_numel(&idx.shape()[..axis])?;
    let inner = checked_numel(&idx.shape()[axis..])?;
    let mut out_shape = idx.shape()[..axis].to_vec();
    out_shape.push(d);
    out_shape.extend_from_slice(&idx.shape()[axis..]);
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, values.dtype().size_in_memory())?;
    let mut src = Vec::with_capacity(n);
    if n == 0 {
        return take_flat(lim, values, out_shape, src);
    }
    for o in 0..outer {
        for k in 0..depth {
            for j in 0..inner {
                let mut i = ind[o * inner + j] as i64;
                if i < 0 {
                    i += depth;
                }
                src.push(usize::from(i == k));
            }
        }
    }
    take_flat(lim, values, out_shape, src)
}

fn non_zero(t: &Tensor) -> OpResult<Tensor> {
    let flags: Vec<bool> = match t.data() {
        Data::Str(v) => v.iter().map(|s| !s.is_empty()).collect(),
        _ => t.to_f64_vec()?.into_iter().map(|x| x != 0.0).collect(),
    };
    let shape = t.shape();
    let st = strides_of(shape);
    let hits: Vec<usize> = flags
        .iter()
        .enumerate()
        .filter(|(_, &f)| f)
        .map(|(i, _)| i)
        .collect();
    let nnz = hits.len();
    let mut out = vec![0i64; shape.len() * nnz];
    for (j, &h) in hits.iter().enumerate() {
        for a in 0..shape.len() {
            out[a * nnz + j] = ((h / st[a]) % shape[a]) as i64;
        }
    }
    i64_tensor(vec![shape.len(), nnz], out)
}

fn trilu(lim: &Limits, t: &Tensor, k: i64, upper: bool) -> OpResult<Tensor> {
    let r = t.rank();
    if r < 2 {
        return Err(op_err!("Trilu needs rank at least 2, got {r}"));
    }
    let mut flat = 0usize;
    gather_coords(lim, t, t.shape().to_vec(), None, |c| {
        let i = c[r - 2] as i128;
        let j = c[r - 1] as i128;
        let diff = j - i;
        let keep = if upper {
            diff >= k as i128
        } else {
            diff <= k as i128
        };
        let here = flat;
        flat += 1;
        Ok(keep.then_some(here))
    })
}

// ---------------------------------------------------------------- TopK / Unique

fn topk_positions<T: PartialOrd>(
    v: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    k: usize,
    largest: bool,
) -> Vec<(usize, i64)> {
    // (flat source index, position along the axis), in output order
    let mut out = vec![(0usize, 0i64); outer * k * inner];
    let mut pos: Vec<usize> = Vec::with_capacity(dim);
    for o in 0..outer {
        for j in 0..inner {
            let at = |p: usize| (o * dim + p) * inner + j;
            pos.clear();
            pos.extend(0..dim);
            if largest {
                pos.sort_by(|&a, &b| cmp_vals(&v[at(b)], &v[at(a)]));
            } else {
                pos.sort_by(|&a, &b| cmp_vals(&v[at(a)], &v[at(b)]));
            }
            for (r, &p) in pos.iter().take(k).enumerate() {
                out[(o * k + r) * inner + j] = (at(p), p as i64);
            }
        }
    }
    out
}

fn top_k(lim: &Limits, t: &Tensor, k: i64, axis: i64, largest: bool) -> OpResult<Vec<Value>> {
    if t.dtype().is_minifloat() || t.dtype() == onyx_tensor::DType::String {
        return Err(op_err!("TopK does not support element type {}", t.dtype()));
    }
    let axis = norm_axis(axis, t.rank())?;
    let dim = t.shape()[axis];
    if k < 0 || k as u64 > dim as u64 {
        return Err(op_err!(
            "k {k} is out of range for axis {axis} of size {dim}"
        ));
    }
    let k = k as usize;
    let outer = checked_numel(&t.shape()[..axis])?;
    let inner = checked_numel(&t.shape()[axis + 1..])?;
    let mut out_shape = t.shape().to_vec();
    out_shape[axis] = k;
    let picked = with_data!(t.data(), v => topk_positions(v, outer, dim, inner, k, largest));
    let (src, idx): (Vec<usize>, Vec<i64>) = picked.into_iter().unzip();
    let values = take_flat(lim, t, out_shape.clone(), src)?;
    Ok(vec![
        Value::Tensor(values),
        Value::Tensor(i64_tensor(out_shape, idx)?),
    ])
}

/// Groups of equal slices along the axis: each group lists its members in
/// ascending order; groups come sorted by value or by first occurrence.
fn unique_groups<T: PartialOrd>(
    v: &[T],
    outer: usize,
    dim: usize,
    inner: usize,
    sorted: bool,
) -> Vec<Vec<usize>> {
    let cmp = |a: usize, b: usize| -> Ordering {
        for o in 0..outer {
            for j in 0..inner {
                let x = &v[(o * dim + a) * inner + j];
                let y = &v[(o * dim + b) * inner + j];
                match cmp_vals(x, y) {
                    Ordering::Equal => {}
                    other => return other,
                }
            }
        }
        Ordering::Equal
    };
    let mut order: Vec<usize> = (0..dim).collect();
    order.sort_by(|&a, &b| cmp(a, b));
    let mut groups: Vec<Vec<usize>> = Vec::new();
    for p in order {
        match groups.last_mut() {
            Some(g) if cmp(g[0], p) == Ordering::Equal => g.push(p),
            _ => groups.push(vec![p]),
        }
    }
    if !sorted {
        groups.sort_by_key(|g| g[0]);
    }
    groups
}

fn unique(lim: &Limits, t: &Tensor, axis: Option<i64>, sorted: bool) -> OpResult<Vec<Value>> {
    if t.dtype().is_minifloat() {
        return Err(op_err!(
            "Unique does not support element type {}",
            t.dtype()
        ));
    }
    let (outer, dim, inner, axis) = match axis {
        None => (1, t.len(), 1, None),
        Some(a) => {
            let a = norm_axis(a, t.rank())?;
            (
                checked_numel(&t.shape()[..a])?,
                t.shape()[a],
                checked_numel(&t.shape()[a + 1..])?,
                Some(a),
            )
        }
    };
    let groups = with_data!(t.data(), v => unique_groups(v, outer, dim, inner, sorted));
    let ng = groups.len();
    let out_shape = match axis {
        None => vec![ng],
        Some(a) => {
            let mut s = t.shape().to_vec();
            s[a] = ng;
            s
        }
    };
    let n = checked_numel(&out_shape)?;
    lim.check_tensor(n, t.dtype().size_in_memory())?;
    let mut src = Vec::with_capacity(n);
    for o in 0..outer {
        for g in &groups {
            let base = (o * dim + g[0]) * inner;
            src.extend(base..base + inner);
        }
    }
    let y = take_flat(lim, t, out_shape, src)?;
    let mut inverse = vec![0i64; dim];
    for (gi, g) in groups.iter().enumerate() {
        for &m in g {
            inverse[m] = gi as i64;
        }
    }
    let firsts: Vec<i64> = groups.iter().map(|g| g[0] as i64).collect();
    let counts: Vec<i64> = groups.iter().map(|g| g.len() as i64).collect();
    Ok(vec![
        Value::Tensor(y),
        Value::Tensor(i64_tensor(vec![ng], firsts)?),
        Value::Tensor(i64_tensor(vec![dim], inverse)?),
        Value::Tensor(i64_tensor(vec![ng], counts)?),
    ])
}

// ---------------------------------------------------------------- ReverseSequence

fn reverse_sequence(
    lim: &Limits,
    t: &Tensor,
    lens: &Tensor,
    batch_axis: i64,
    time_axis: i64,
) -> OpResult<Tensor> {
    let r = t.rank();
    if r < 2 {
        return Err(op_err!("ReverseSequence needs rank at least 2, got {r}"));
    }
    let ba = norm_axis(batch_axis, r)?;
    let ta = norm_axis(time_axis, r)?;
    if ba == ta {
        return Err(op_err!("batch_axis and time_axis are both {ba}"));
    }
    let shape = t.shape();
    let lens = lens.to_i64_vec()?;
    if lens.len() != shape[ba] {
        return Err(op_err!(
            "sequence_lens has {} values for batch size {}",
            lens.len(),
            shape[ba]
        ));
    }
    let max = shape[ta];
    let lens = lens
        .into_iter()
        .map(|l| {
            usize::try_from(l)
                .ok()
                .filter(|&l| l <= max)
                .ok_or_else(|| op_err!("sequence length {l} is out of range 0..={max}"))
        })
        .collect::<OpResult<Vec<_>>>()?;
    let st = strides_of(shape);
    gather_coords(lim, t, shape.to_vec(), None, |c| {
        let len = lens[c[ba]];
        let mut off = 0;
        for (k, (&x, &s)) in c.iter().zip(&st).enumerate() {
            let x = if k == ta && x < len { len - 1 - x } else { x };
            off += x * s;
        }
        Ok(Some(off))
    })
}

// ---------------------------------------------------------------- registration

pub fn register(r: &mut Registry) {
    r.add("", "Gather", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(0);
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(gather(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                axis,
            )?)
        }))
    });
    r.add("", "GatherElements", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(0);
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(gather_elements(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                axis,
            )?)
        }))
    });
    r.add("", "GatherND", |c| {
        let b = c.node.attr_int("batch_dims")?.unwrap_or(0);
        let b = usize::try_from(b).map_err(|_| op_err!("batch_dims {b} is negative"))?;
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(gather_nd(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                b,
            )?)
        }))
    });
    r.add("", "ScatterND", |c| {
        let red = reduction_attr(c)?;
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(scatter_nd(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                tensor_in(i, 2)?,
                red,
            )?)
        }))
    });
    fn build_scatter_elements(c: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
        let axis = c.node.attr_int("axis")?.unwrap_or(0);
        let red = reduction_attr(c)?;
        Ok(Box::new(move |_: &RunCtx, i: &[Option<&Value>]| {
            one(scatter_elements(
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                tensor_in(i, 2)?,
                axis,
                red,
            )?)
        }))
    }
    r.add("", "ScatterElements", build_scatter_elements);
    r.add("", "Scatter", build_scatter_elements);
    r.add("", "TensorScatter", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(-2);
        let circular = match c.node.attr_string("mode")?.as_deref() {
            None | Some("linear") => false,
            Some("circular") => true,
            Some(m) => return Err(op_err!("unknown mode '{m}'")),
        };
        Ok(Box::new(move |_: &RunCtx, i: &[Option<&Value>]| {
            one(tensor_scatter(
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                opt_tensor_in(i, 2)?,
                axis,
                circular,
            )?)
        }))
    });
    r.add("", "Compress", |c| {
        let axis = c.node.attr_int("axis")?;
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(compress(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                axis,
            )?)
        }))
    });
    r.add("", "OneHot", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(-1);
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            let depth = tensor_in(i, 1)?.to_f64_vec()?;
            let depth = match depth.as_slice() {
                [d] => *d,
                _ => return Err(op_err!("depth should hold one value")),
            };
            one(one_hot(
                ctx.limits,
                tensor_in(i, 0)?,
                depth,
                tensor_in(i, 2)?,
                axis,
            )?)
        }))
    });
    r.add("", "NonZero", |_| {
        Ok(Box::new(|_: &RunCtx, i: &[Option<&Value>]| {
            one(non_zero(tensor_in(i, 0)?)?)
        }))
    });
    r.add("", "Trilu", |c| {
        let upper = c.node.attr_int("upper")?.unwrap_or(1) != 0;
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            let k = match opt_tensor_in(i, 1)? {
                Some(_) => scalar_i64_in(i, 1)?,
                None => 0,
            };
            one(trilu(ctx.limits, tensor_in(i, 0)?, k, upper)?)
        }))
    });
    r.add("", "TopK", |c| {
        let axis = c.node.attr_int("axis")?.unwrap_or(-1);
        let largest = c.node.attr_int("largest")?.unwrap_or(1) != 0;
        let attr_k = if c.opset < 10 {
            Some(
                c.node
                    .attr_int("k")?
                    .ok_or_else(|| op_err!("missing attribute 'k'"))?,
            )
        } else {
            None
        };
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            let k = match attr_k {
                Some(k) => k,
                None => scalar_i64_in(i, 1)?,
            };
            top_k(ctx.limits, tensor_in(i, 0)?, k, axis, largest)
        }))
    });
    r.add("", "Unique", |c| {
        let axis = c.node.attr_int("axis")?;
        let sorted = c.node.attr_int("sorted")?.unwrap_or(1) != 0;
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            unique(ctx.limits, tensor_in(i, 0)?, axis, sorted)
        }))
    });
    r.add("", "ReverseSequence", |c| {
        let ba = c.node.attr_int("batch_axis")?.unwrap_or(1);
        let ta = c.node.attr_int("time_axis")?.unwrap_or(0);
        Ok(Box::new(move |ctx: &RunCtx, i: &[Option<&Value>]| {
            one(reverse_sequence(
                ctx.limits,
                tensor_in(i, 0)?,
                tensor_in(i, 1)?,
                ba,
                ta,
            )?)
        }))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ti(shape: &[usize], v: &[i64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    fn iv(v: &Value) -> Vec<i64> {
        v.as_tensor().unwrap().to_i64_vec().unwrap()
    }

    #[test]
    fn gathers() {
        let lim = Limits::default();
        let t = ti(&[3, 2], &[1, 2, 3, 4, 5, 6]);
        let g = gather(&lim, &t, &ti(&[2], &[-1, 0]), 0).unwrap();
        assert_eq!(g.shape(), &[2, 2]);
        assert_eq!(g.to_i64_vec().unwrap(), vec![5, 6, 1, 2]);
        assert!(gather(&lim, &t, &ti(&[1], &[3]), 0).is_err());
        let ge = gather_elements(&lim, &t, &ti(&[3, 1], &[1, 0, 1]), 1).unwrap();
        assert_eq!(ge.to_i64_vec().unwrap(), vec![2, 3, 6]);
        let nd = gather_nd(&lim, &t, &ti(&[2, 2], &[2, 1, 0, 0]), 0).unwrap();
        assert_eq!(nd.to_i64_vec().unwrap(), vec![6, 1]);
        let s = Tensor::from_vec(vec![3], vec!["a".to_string(), "b".into(), "c".into()]).unwrap();
        let gs = gather(&lim, &s, &ti(&[1], &[1]), 0).unwrap();
        assert_eq!(gs.as_slice::<String>().unwrap(), &["b".to_string()]);
    }

    #[test]
    fn scatters() {
        let t = ti(&[4], &[1, 2, 3, 4]);
        let s = scatter_nd(
            &Limits::default(),
            &t,
            &ti(&[2, 1], &[0, 0]),
            &ti(&[2], &[10, 20]),
            Reduction::Add,
        )
        .unwrap();
        assert_eq!(s.to_i64_vec().unwrap(), vec![31, 2, 3, 4]);
        let e = scatter_elements(
            &t,
            &ti(&[2], &[-1, 1]),
            &ti(&[2], &[9, 8]),
            0,
            Reduction::None,
        )
        .unwrap();
        assert_eq!(e.to_i64_vec().unwrap(), vec![1, 8, 3, 9]);
        assert!(
            scatter_elements(&t, &ti(&[1], &[4]), &ti(&[1], &[0]), 0, Reduction::None).is_err()
        );
        let past = ti(&[1, 3, 1], &[0, 0, 0]);
        let ts = tensor_scatter(
            &past,
            &ti(&[1, 2, 1], &[7, 8]),
            Some(&ti(&[1], &[2])),
            1,
            true,
        )
        .unwrap();
        assert_eq!(ts.to_i64_vec().unwrap(), vec![8, 0, 7]);
    }

    #[test]
    fn selection() {
        let lim = Limits::default();
        let t = ti(&[2, 3], &[0, 5, 0, 7, 0, 9]);
        let nz = non_zero(&t).unwrap();
        assert_eq!(nz.shape(), &[2, 3]);
        assert_eq!(nz.to_i64_vec().unwrap(), vec![0, 1, 1, 1, 0, 2]);
        let cond = Tensor::from_vec(vec![2], vec![false, true]).unwrap();
        let c = compress(&lim, &t, &cond, Some(1)).unwrap();
        assert_eq!(c.to_i64_vec().unwrap(), vec![5, 0]);
        let oh = one_hot(&lim, &ti(&[2], &[1, -1]), 3.0, &ti(&[2], &[0, 1]), -1).unwrap();
        assert_eq!(oh.to_i64_vec().unwrap(), vec![0, 1, 0, 0, 0, 1]);
        let tr = trilu(&lim, &ti(&[2, 2], &[1, 2, 3, 4]), 0, false).unwrap();
        assert_eq!(tr.to_i64_vec().unwrap(), vec![1, 0, 3, 4]);
        let rs = reverse_sequence(
            &lim,
            &ti(&[3, 2], &[1, 2, 3, 4, 5, 6]),
            &ti(&[2], &[2, 3]),
            1,
            0,
        )
        .unwrap();
        assert_eq!(rs.to_i64_vec().unwrap(), vec![3, 6, 1, 4, 5, 2]);
    }

    #[test]
    fn topk_and_unique() {
        let lim = Limits::default();
        let t = Tensor::from_vec(vec![4], vec![1.0f32, 3.0, 3.0, 2.0]).unwrap();
        let r = top_k(&lim, &t, 2, 0, true).unwrap();
        assert_eq!(
            r[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
            &[3.0, 3.0]
        );
        assert_eq!(iv(&r[1]), vec![1, 2]);
        let r = top_k(&lim, &t, 1, -1, false).unwrap();
        assert_eq!(iv(&r[1]), vec![0]);
        let u = unique(&lim, &ti(&[5], &[2, 1, 1, 3, 2]), None, false).unwrap();
        assert_eq!(iv(&u[0]), vec![2, 1, 3]);
        assert_eq!(iv(&u[1]), vec![0, 1, 3]);
        assert_eq!(iv(&u[2]), vec![0, 1, 1, 2, 0]);
        assert_eq!(iv(&u[3]), vec![2, 2, 1]);
        let u = unique(&lim, &ti(&[3, 2], &[1, 0, 0, 1, 1, 0]), Some(0), true).unwrap();
        assert_eq!(iv(&u[0]), vec![0, 1, 1, 0]);
        assert_eq!(iv(&u[3]), vec![1, 2]);
    }

    #[test]
    fn hostile_inputs_are_errors() {
        let lim = Limits::default();
        let t = ti(&[2], &[1, 2]);
        let big_empty = Tensor::from_vec(vec![1 << 31, 1 << 31, 0], Vec::<i64>::new()).unwrap();
        assert!(gather_nd(&lim, &t, &big_empty, 0).is_err());
        assert!(gather_nd(&lim, &t, &ti(&[1, 2], &[0, 0]), 0).is_err());
        assert!(gather_elements(&lim, &t, &ti(&[1], &[-3]), 0).is_err());
        assert!(one_hot(&lim, &ti(&[1], &[0]), 1e18, &ti(&[2], &[0, 1]), -1).is_err());
        assert!(one_hot(&lim, &ti(&[1], &[0]), -1.0, &ti(&[2], &[0, 1]), -1).is_err());
        assert!(top_k(&lim, &t, 3, 0, true).is_err());
        assert!(reverse_sequence(&lim, &ti(&[2, 1], &[1, 2]), &ti(&[1], &[5]), 1, 0).is_err());
        let past = ti(&[1, 2, 1], &[0, 0]);
        assert!(tensor_scatter(
            &past,
            &ti(&[1, 1, 1], &[1]),
            Some(&ti(&[1], &[2])),
            1,
            false
        )
        .is_err());
    }
}
