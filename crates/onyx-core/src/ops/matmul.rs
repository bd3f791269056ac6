//! Matrix products: MatMul, Gemm, Einsum, MatMulInteger, Det, Attention and
//! RotaryEmbedding.
//!
//! f32/f64 MatMul runs natively; the other float paths compute in f64 and
//! round back to the element type at the points where the ONNX reference
//! rounds (so float16/bfloat16 results agree with it); integer MatMul and
//! Einsum wrap like the elementwise ops.
//!
//! Opset notes: Gemm's pre-7 `broadcast` attribute is implied (C always
//! broadcasts); Attention reads `nonpad_kv_seqlen` (input 6) from opset 24
//! and the sliding-window attributes from opset 25.

use onyx_tensor::{
    bf16, broadcast_shapes, broadcast_strides, f16, for_each_broadcast_index, numel, DType, Data,
    Elem, Tensor, Value,
};

use onyx_kernels::vmath::{self, Unary};
use onyx_kernels::{sgemm, Act, Epilogue, MatRef, PackedB};

use super::cast::cast_tensor;
use super::elementwise::Arith;
use super::{one, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

// ---------------------------------------------------------------------------
// shared helpers

/// Rounds an f64 to the precision of a float element type (identity for others).
pub(crate) fn round_to(dtype: DType, x: f64) -> f64 {
    match dtype {
        DType::Float => x as f32 as f64,
        DType::Float16 => f16::from_f64(x).to_f64(),
        DType::BFloat16 => bf16::from_f64(x).to_f64(),
        _ => x,
    }
}

/// The elements of a float tensor (f32, f64, f16, bf16) as f64.
pub(crate) fn float_vec(t: &Tensor, what: &str) -> OpResult<Vec<f64>> {
    match t.data() {
        Data::F32(_) | Data::F64(_) | Data::F16(_) | Data::BF16(_) => Ok(t.to_f64_vec()?),
        _ => Err(op_err!(
            "{what} should be a float tensor but has element type {}",
            t.dtype()
        )),
    }
}

/// A tensor of `dtype` from f64 values (rounding to nearest).
pub(crate) fn tensor_from_f64(dtype: DType, shape: Vec<usize>, v: Vec<f64>) -> OpResult<Tensor> {
    let t = Tensor::from_vec(shape, v)?;
    cast_tensor(&t, dtype, true)
}

/// Checks an allocation of `elements` x `elem_bytes` against the run's limits.
pub(crate) type Check<'a> = &'a dyn Fn(usize, usize) -> OpResult<()>;

fn count(shape: &[usize]) -> OpResult<usize> {
    numel(shape).ok_or_else(|| op_err!("shape {shape:?} has too many elements"))
}

/// How a (batched, broadcast) matrix product lines up its operands.
pub(crate) struct MmPlan {
    pub out_shape: Vec<usize>,
    /// Element offsets of each batch's A and B matrices.
    pub pairs: Vec<(usize, usize)>,
    pub m: usize,
    pub k: usize,
    pub n: usize,
}

/// Plans numpy `matmul` of shapes `a` and `b` (1-D operands promoted and dropped).
pub(crate) fn mm_plan(check: Check, a: &[usize], b: &[usize]) -> OpResult<MmPlan> {
    if a.is_empty() || b.is_empty() {
        return Err(op_err!(
            "matrix product needs operands of rank >= 1, got shapes {a:?} and {b:?}"
        ));
    }
    let (m, ka, a_batch) = if a.len() == 1 {
        (1, a[0], &a[..0])
    } else {
        (a[a.len() - 2], a[a.len() - 1], &a[..a.len() - 2])
    };
    let (kb, n, b_batch) = if b.len() == 1 {
        (b[0], 1, &b[..0])
    } else {
        (b[b.len() - 2], b[b.len() - 1], &b[..b.len() - 2])
    };
    if ka != kb {
        return Err(op_err!(
            "inner dimensions differ: shapes {a:?} and {b:?} cannot be multiplied"
        ));
    }
    let batch = broadcast_shapes(&[a_batch, b_batch])?;
    let nb = count(&batch)?;
    let sa = broadcast_strides(a_batch, &batch);
    let sb = broadcast_strides(b_batch, &batch);
    let (asz, bsz) = (m * ka, ka * n);
    let mut pairs = Vec::new();
    if m * n > 0 {
        check(nb, 16)?;
        pairs.reserve(nb);
        for_each_broadcast_index(&batch, [&sa, &sb], |_, [ia, ib]| {
            pairs.push((ia * asz, ib * bsz))
        });
    }
    let mut out_shape = batch;
    if a.len() > 1 {
        out_shape.push(m);
    }
    if b.len() > 1 {
        out_shape.push(n);
    }
    count(&out_shape)?;
    Ok(MmPlan {
        out_shape,
        pairs,
        m,
        k: ka,
        n,
    })
}

/// Runs a planned product with `madd(acc, a, b)` as the accumulation step.
pub(crate) fn mm_run<T: Copy>(
    a: &[T],
    b: &[T],
    p: &MmPlan,
    zero: T,
    madd: impl Fn(T, T, T) -> T,
) -> OpResult<Vec<T>> {
    let (m, k, n) = (p.m, p.k, p.n);
    let mut out = vec![zero; p.pairs.len() * m * n];
    if m * n == 0 {
        return Ok(out);
    }
    for (o, &(oa, ob)) in out.chunks_mut(m * n).zip(&p.pairs) {
        let am = a
            .get(oa..oa + m * k)
            .ok_or_else(|| op_err!("first operand is smaller than its shape says"))?;
        let bm = b
            .get(ob..ob + k * n)
            .ok_or_else(|| op_err!("second operand is smaller than its shape says"))?;
        for i in 0..m {
            let orow = &mut o[i * n..(i + 1) * n];
            for kk in 0..k {
                let x = am[i * k + kk];
                let brow = &bm[kk * n..(kk + 1) * n];
                for (acc, &y) in orow.iter_mut().zip(brow) {
                    *acc = madd(*acc, x, y);
                }
            }
        }
    }
    Ok(out)
}

fn gemm_err(e: onyx_kernels::GemmError) -> crate::ops::OpError {
    op_err!("{e}")
}

/// The right operand of an f32 product: a matrix (or batch of them) as
/// stored, or one weight packed ahead of time.
#[derive(Clone, Copy)]
enum Rhs<'a> {
    Plain(&'a [f32]),
    Packed(&'a PackedB),
}

/// The planned f32 product through the packed GEMM kernels. A plain B is
/// packed here, once when every batch shares it. `epi` is applied to every
/// batch's product.
fn mm_f32_fast(a: &[f32], b: Rhs, p: &MmPlan, epi: &Epilogue) -> OpResult<Vec<f32>> {
    let (m, k, n) = (p.m, p.k, p.n);
    let mut out = vec![0.0f32; p.pairs.len() * m * n];
    if m * n == 0 {
        return Ok(out);
    }
    let a_mat = |oa: usize, rows: usize| -> OpResult<MatRef> {
        let am = a
            .get(oa..oa + rows * k)
            .ok_or_else(|| op_err!("first operand is smaller than its shape says"))?;
        MatRef::row_major(am, rows, k).map_err(gemm_err)
    };
    let b_packed = |ob: usize| -> OpResult<PackedB> {
        let Rhs::Plain(b) = b else {
            return Err(op_err!("the packed weight does not fit a batched product"));
        };
        let bm = b
            .get(ob..ob + k * n)
            .ok_or_else(|| op_err!("second operand is smaller than its shape says"))?;
        Ok(PackedB::new(MatRef::row_major(bm, k, n).map_err(gemm_err)?))
    };
    let shared_b = p.pairs.iter().all(|&(_, ob)| ob == p.pairs[0].1);
    if shared_b {
        let own;
        let pb = match b {
            Rhs::Packed(pb) if pb.k() == k && pb.n() == n => pb,
            Rhs::Packed(pb) => {
                return Err(op_err!(
                    "the packed weight is {}x{} but the product needs {k}x{n}",
                    pb.k(),
                    pb.n()
                ))
            }
            Rhs::Plain(_) => {
                own = b_packed(p.pairs[0].1)?;
                &own
            }
        };
        // batches of A laid end to end: one tall product
        let a_dense = p
            .pairs
            .iter()
            .enumerate()
            .all(|(i, &(oa, _))| oa == i * m * k);
        if a_dense {
            let rows = p.pairs.len() * m;
            return sgemm(a_mat(0, rows)?, pb, &mut out, n, false, epi)
                .map(|_| out)
                .map_err(gemm_err);
        }
        for (o, &(oa, _)) in out.chunks_mut(m * n).zip(&p.pairs) {
            sgemm(a_mat(oa, m)?, pb, o, n, false, epi).map_err(gemm_err)?;
        }
        return Ok(out);
    }
    for (o, &(oa, ob)) in out.chunks_mut(m * n).zip(&p.pairs) {
        sgemm(a_mat(oa, m)?, &b_packed(ob)?, o, n, false, epi).map_err(gemm_err)?;
    }
    Ok(out)
}

/// A constant f32 MatMul weight of rank 1 or 2, packed once when the kernel
/// is built; the plan then frees the weight as stored.
struct PackedWeight {
    packed: PackedB,
    /// The weight's shape as the product sees it: `[k]` or `[k, n]`.
    shape: Vec<usize>,
}

impl PackedWeight {
    /// Packs constant input `i` when it is such a weight, and tells the plan
    /// that the kernel stands in for it.
    fn absorb(ctx: &BuildCtx, i: usize, trans: bool) -> Option<PackedWeight> {
        let w = PackedWeight::new(ctx.const_input(i)?, trans)?;
        ctx.stand_in_for(i);
        Some(w)
    }

    /// Packs `w` (transposed if `trans`, a matrix only); `None` when it is
    /// not an f32 vector or matrix.
    fn new(w: &Tensor, trans: bool) -> Option<PackedWeight> {
        let v = w.as_slice::<f32>().ok()?;
        let (packed, shape) = match (w.shape(), trans) {
            (&[k], false) => (PackedB::new(MatRef::row_major(v, k, 1).ok()?), vec![k]),
            (&[k, n], false) => (PackedB::new(MatRef::row_major(v, k, n).ok()?), vec![k, n]),
            (&[n, k], true) => (
                PackedB::new(MatRef::row_major(v, n, k).ok()?.t()),
                vec![k, n],
            ),
            _ => return None,
        };
        Some(PackedWeight { packed, shape })
    }

    /// Columns of the product.
    fn n(&self) -> usize {
        self.packed.n()
    }
}

fn mm_f64(a: &[f64], b: &[f64], p: &MmPlan) -> OpResult<Vec<f64>> {
    mm_run(a, b, p, 0.0, |acc, x, y| acc + x * y)
}

fn mm_typed<T: Arith + Elem>(a: &[T], b: &Tensor, p: &MmPlan, dtype: DType) -> OpResult<Tensor> {
    let b = b.as_slice::<T>()?;
    let v = mm_run(a, b, p, T::from_f64(0.0), |acc, x, y| acc.add(x.mul(y)))?;
    Ok(Tensor::new(dtype, p.out_shape.clone(), T::into_data(v))?)
}

/// numpy `matmul` of two tensors of the same numeric type.
pub(crate) fn matmul(check: Check, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    if a.dtype() != b.dtype() {
        return Err(op_err!(
            "operands have different element types {} and {}",
            a.dtype(),
            b.dtype()
        ));
    }
    let p = mm_plan(check, a.shape(), b.shape())?;
    check(count(&p.out_shape)?, a.dtype().size_in_memory())?;
    let dt = a.dtype();
    match a.data() {
        // f32 and f64 multiply natively, as numpy does
        Data::F32(x) => {
            let y = b.as_slice::<f32>()?;
            let v = mm_f32_fast(x, Rhs::Plain(y), &p, &Epilogue::default())?;
            Ok(Tensor::from_vec(p.out_shape, v)?)
        }
        Data::F64(x) => {
            let v = mm_f64(x, b.as_slice::<f64>()?, &p)?;
            Ok(Tensor::from_vec(p.out_shape, v)?)
        }
        Data::F16(_) | Data::BF16(_) => {
            let v = mm_f64(&a.to_f64_vec()?, &b.to_f64_vec()?, &p)?;
            tensor_from_f64(dt, p.out_shape, v)
        }
        Data::I8(x) if !dt.is_minifloat() && dt == DType::Int8 => mm_typed(x, b, &p, dt),
        Data::U8(x) if dt == DType::Uint8 => mm_typed(x, b, &p, dt),
        Data::I16(x) => mm_typed(x, b, &p, dt),
        Data::U16(x) => mm_typed(x, b, &p, dt),
        Data::I32(x) => mm_typed(x, b, &p, dt),
        Data::U32(x) => mm_typed(x, b, &p, dt),
        Data::I64(x) => mm_typed(x, b, &p, dt),
        Data::U64(x) => mm_typed(x, b, &p, dt),
        _ => Err(op_err!("MatMul does not support element type {dt}")),
    }
}

/// `com.onyx::FusedMatMul(A, B, bias)`, made by the passes from MatMul by a
/// constant 2-D f32 B, Add of a bias per column, and optionally an
/// `activation` (Relu or Gelu). The GEMM's epilogue adds the bias and
/// applies ReLU; Gelu runs over the result after.
fn build_fused_matmul(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let (act, gelu) = match ctx.node.attr_string("activation")?.as_deref() {
        None => (Act::None, false),
        Some("Relu") => (Act::Relu, false),
        Some("Gelu") => (Act::None, true),
        Some(other) => return Err(op_err!("unknown activation '{other}'")),
    };
    let weight = PackedWeight::absorb(ctx, 1, false).filter(|w| w.shape.len() == 2);
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let (a, bias) = (tensor_in(inputs, 0)?, tensor_in(inputs, 2)?);
        let b = match &weight {
            Some(w) => Right::Weight(w),
            None => Right::Input(tensor_in(inputs, 1)?),
        };
        let n = b.columns()?;
        let biasv = bias
            .as_slice::<f32>()
            .ok()
            .filter(|_| bias.shape() == [n])
            .ok_or_else(|| {
                op_err!(
                    "the bias must be {n} floats, one per column, got {} of shape {:?}",
                    bias.dtype(),
                    bias.shape()
                )
            })?;
        let epi = Epilogue {
            col_bias: Some(biasv),
            act,
            ..Epilogue::default()
        };
        let (shape, mut out) = b.product(&|n, s| ctx.check_alloc(n, s), a, &epi)?;
        if gelu {
            vmath::map_in_place(&mut out, Unary::Gelu);
        }
        one(Tensor::from_vec(shape, out)?)
    }))
}

/// FusedMatMul's B: the weight packed at build time, or the input as given
/// (a model may hold the node with a B that is not constant).
enum Right<'a> {
    Weight(&'a PackedWeight),
    Input(&'a Tensor),
}

impl Right<'_> {
    fn columns(&self) -> OpResult<usize> {
        match self {
            Right::Weight(w) => Ok(w.n()),
            Right::Input(b) if b.rank() == 2 => Ok(b.shape()[1]),
            Right::Input(b) => Err(op_err!("B must be a matrix, got shape {:?}", b.shape())),
        }
    }

    /// `a` times B with `epi` applied: the output's shape and elements.
    fn product(
        &self,
        check: Check,
        a: &Tensor,
        epi: &Epilogue,
    ) -> OpResult<(Vec<usize>, Vec<f32>)> {
        let (b_shape, rhs) = match self {
            Right::Weight(w) => (w.shape.as_slice(), Rhs::Packed(&w.packed)),
            Right::Input(b) => {
                let bv = b
                    .as_slice::<f32>()
                    .map_err(|_| op_err!("B must be a float tensor, got {}", b.dtype()))?;
                (b.shape(), Rhs::Plain(bv))
            }
        };
        let av = a
            .as_slice::<f32>()
            .map_err(|_| op_err!("A must be a float tensor, got {}", a.dtype()))?;
        let p = mm_plan(check, a.shape(), b_shape)?;
        check(count(&p.out_shape)?, 4)?;
        let out = mm_f32_fast(av, rhs, &p, epi)?;
        Ok((p.out_shape, out))
    }
}

// ---------------------------------------------------------------------------
// Gemm

#[derive(Clone, Copy)]
struct GemmAttrs {
    trans_a: bool,
    trans_b: bool,
    alpha: f64,
    beta: f64,
}

fn build_gemm(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let at = GemmAttrs {
        trans_a: ctx.node.attr_int("transA")?.unwrap_or(0) != 0,
        trans_b: ctx.node.attr_int("transB")?.unwrap_or(0) != 0,
        alpha: f64::from(ctx.node.attr_float("alpha")?.unwrap_or(1.0)),
        beta: f64::from(ctx.node.attr_float("beta")?.unwrap_or(1.0)),
    };
    // a constant 2-D f32 B is packed (transposed as the node asks) once, here
    let weight = PackedWeight::absorb(ctx, 1, at.trans_b).filter(|w| w.shape.len() == 2);
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let check = |n, s| ctx.check_alloc(n, s);
        let a = tensor_in(inputs, 0)?;
        let c = opt_tensor_in(inputs, 2)?;
        let b = match &weight {
            Some(w) => Right::Weight(w),
            None => Right::Input(tensor_in(inputs, 1)?),
        };
        if let Some(y) = gemm_f32(&check, &at, a, &b, c)? {
            return one(y);
        }
        match b {
            Right::Input(b) => one(gemm(&check, &at, a, b, c)?),
            Right::Weight(_) => Err(op_err!(
                "B is a 2-D float weight, so A must be a 2-D float matrix and C float, got A {} of shape {:?}",
                a.dtype(),
                a.shape()
            )),
        }
    }))
}

/// The f32 Gemm through the packed kernels; `None` when the inputs are not
/// all f32 2-D tensors whose inner dimensions agree (the general path then
/// reports the problem).
fn gemm_f32(
    check: Check,
    at: &GemmAttrs,
    a: &Tensor,
    b: &Right,
    c: Option<&Tensor>,
) -> OpResult<Option<Tensor>> {
    let Ok(av) = a.as_slice::<f32>() else {
        return Ok(None);
    };
    if c.is_some_and(|c| c.dtype() != DType::Float) {
        return Ok(None);
    }
    let &[ar, ac] = a.shape() else {
        return Ok(None);
    };
    let am = MatRef::row_major(av, ar, ac).map_err(gemm_err)?;
    let am = if at.trans_a { am.t() } else { am };
    let own;
    let pb = match b {
        Right::Weight(w) => &w.packed,
        Right::Input(b) => {
            let (Ok(bv), &[br, bc]) = (b.as_slice::<f32>(), b.shape()) else {
                return Ok(None);
            };
            let bm = MatRef::row_major(bv, br, bc).map_err(gemm_err)?;
            own = PackedB::new(if at.trans_b { bm.t() } else { bm });
            &own
        }
    };
    let (m, k, n) = (am.rows(), am.cols(), pb.n());
    if k != pb.k() {
        return match b {
            Right::Input(_) => Ok(None),
            Right::Weight(_) => Err(op_err!(
                "Gemm inner dimensions differ: A' is {m}x{k} and B' is {}x{n}",
                pb.k()
            )),
        };
    }
    let total = m
        .checked_mul(n)
        .ok_or_else(|| op_err!("Gemm output {m}x{n} is too large"))?;
    check(total, 4)?;
    let cv = match c {
        Some(c) => {
            let target = [m, n];
            if broadcast_shapes(&[c.shape(), &target]).ok().as_deref() != Some(&target[..]) {
                return Err(op_err!(
                    "Gemm bias C of shape {:?} does not broadcast to {m}x{n}",
                    c.shape()
                ));
            }
            Some((c, c.as_slice::<f32>()?))
        }
        None => None,
    };
    // a bias per column with alpha = beta = 1 is fused into the product
    let fused = at.alpha == 1.0
        && at.beta == 1.0
        && cv.is_some_and(|(c, v)| v.len() == n && c.shape().last() == Some(&n));
    let epi = Epilogue {
        col_bias: if fused { cv.map(|(_, v)| v) } else { None },
        ..Epilogue::default()
    };
    let mut out = vec![0.0f32; total];
    sgemm(am, pb, &mut out, n, false, &epi).map_err(gemm_err)?;
    if !fused {
        if at.alpha != 1.0 {
            let alpha = at.alpha as f32;
            out.iter_mut().for_each(|o| *o *= alpha);
        }
        if let Some((c, v)) = cv {
            let beta = at.beta as f32;
            let cs = broadcast_strides(c.shape(), &[m, n]);
            for_each_broadcast_index(&[m, n], [&cs], |flat, [ic]| {
                out[flat] += beta * v[ic];
            });
        }
    }
    Ok(Some(Tensor::from_vec(vec![m, n], out)?))
}

/// alpha * A' B' + beta * C, with C broadcast to the product's shape.
fn gemm(
    check: Check,
    at: &GemmAttrs,
    a: &Tensor,
    b: &Tensor,
    c: Option<&Tensor>,
) -> OpResult<Tensor> {
    let (trans_a, trans_b, alpha, beta) = (at.trans_a, at.trans_b, at.alpha, at.beta);
    if a.rank() != 2 || b.rank() != 2 {
        return Err(op_err!(
            "Gemm needs 2-D A and B, got shapes {:?} and {:?}",
            a.shape(),
            b.shape()
        ));
    }
    let (m, ka) = if trans_a {
        (a.shape()[1], a.shape()[0])
    } else {
        (a.shape()[0], a.shape()[1])
    };
    let (kb, n) = if trans_b {
        (b.shape()[1], b.shape()[0])
    } else {
        (b.shape()[0], b.shape()[1])
    };
    if ka != kb {
        return Err(op_err!(
            "Gemm inner dimensions differ: A' is {m}x{ka} and B' is {kb}x{n}"
        ));
    }
    let total = m
        .checked_mul(n)
        .ok_or_else(|| op_err!("Gemm output {m}x{n} is too large"))?;
    check(total, 8)?;
    let av = a.to_f64_vec()?;
    let bv = b.to_f64_vec()?;
    let (asr, asc) = if trans_a { (1, m) } else { (ka, 1) };
    let (bsr, bsc) = if trans_b { (1, ka) } else { (n, 1) };
    let mut out = vec![0.0f64; total];
    for i in 0..m {
        for kk in 0..ka {
            let x = av[i * asr + kk * asc];
            if x == 0.0 {
                continue;
            }
            let row = &mut out[i * n..(i + 1) * n];
            for (j, o) in row.iter_mut().enumerate() {
                *o += x * bv[kk * bsr + j * bsc];
            }
        }
    }
    for o in out.iter_mut() {
        *o *= alpha;
    }
    if let Some(c) = c {
        let cv = c.to_f64_vec()?;
        let target = [m, n];
        let bs = broadcast_shapes(&[c.shape(), &target])?;
        if bs != target {
            return Err(op_err!(
                "Gemm bias C of shape {:?} does not broadcast to {m}x{n}",
                c.shape()
            ));
        }
        let cs = broadcast_strides(c.shape(), &target);
        for_each_broadcast_index(&target, [&cs], |flat, [ic]| {
            out[flat] += beta * cv[ic];
        });
    }
    tensor_from_f64(a.dtype(), vec![m, n], out)
}

// ---------------------------------------------------------------------------
// Einsum

struct EinsumSpec {
    /// Labels of each input's dimensions.
    inputs: Vec<Vec<u32>>,
    output: Vec<u32>,
}

/// Labels: letters are their byte value; ellipsis dimensions are 1000 + position.
const ELL: u32 = 1000;

fn parse_term(term: &str) -> OpResult<(Vec<u32>, Option<usize>)> {
    let mut labels = Vec::new();
    let mut ell = None;
    let bytes = term.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'.' {
            if bytes.get(i..i + 3) != Some(b"...") || ell.is_some() {
                return Err(op_err!("Einsum term '{term}' has a malformed ellipsis"));
            }
            ell = Some(labels.len());
            i += 3;
            continue;
        }
        if !c.is_ascii_alphabetic() {
            return Err(op_err!(
                "Einsum term '{term}' has an invalid character '{}'",
                c as char
            ));
        }
        labels.push(u32::from(c));
        i += 1;
    }
    Ok((labels, ell))
}

fn parse_einsum(eq: &str, ranks: &[usize]) -> OpResult<EinsumSpec> {
    let eq: String = eq.chars().filter(|c| !c.is_whitespace()).collect();
    let (lhs, rhs) = match eq.split_once("->") {
        Some((l, r)) => (l, Some(r)),
        None => (eq.as_str(), None),
    };
    let terms: Vec<&str> = lhs.split(',').collect();
    if terms.len() != ranks.len() {
        return Err(op_err!(
            "Einsum equation '{eq}' names {} operands but {} were given",
            terms.len(),
            ranks.len()
        ));
    }
    let mut parsed = Vec::new();
    let mut ell_rank = 0usize;
    for (t, &r) in terms.iter().zip(ranks) {
        let (labels, ell) = parse_term(t)?;
        let e = match ell {
            Some(_) => r.checked_sub(labels.len()).ok_or_else(|| {
                op_err!("Einsum term '{t}' has more labels than the operand's rank {r}")
            })?,
            None if labels.len() != r => {
                return Err(op_err!(
                    "Einsum term '{t}' has {} labels but the operand has rank {r}",
                    labels.len()
                ))
            }
            None => 0,
        };
        ell_rank = ell_rank.max(e);
        parsed.push((labels, ell, e));
    }
    let expand = |labels: &[u32], ell: Option<usize>, e: usize| -> Vec<u32> {
        match ell {
            None => labels.to_vec(),
            Some(pos) => {
                let mut v = labels[..pos].to_vec();
                v.extend((0..e).map(|j| ELL + (ell_rank - e + j) as u32));
                v.extend_from_slice(&labels[pos..]);
                v
            }
        }
    };
    let inputs: Vec<Vec<u32>> = parsed
        .iter()
        .map(|(l, ell, e)| expand(l, *ell, *e))
        .collect();
    let output = match rhs {
        Some(r) => {
            let (labels, ell) = parse_term(r)?;
            let out = expand(&labels, ell, if ell.is_some() { ell_rank } else { 0 });
            for (i, l) in out.iter().enumerate() {
                if out[..i].contains(l) {
                    return Err(op_err!("Einsum output '{r}' repeats a label"));
                }
                if !inputs.iter().any(|inp| inp.contains(l)) {
                    return Err(op_err!("Einsum output '{r}' has a label no input has"));
                }
            }
            out
        }
        None => {
            let mut out: Vec<u32> = (0..ell_rank).map(|j| ELL + j as u32).collect();
            let mut letters: Vec<u32> = Vec::new();
            for inp in &inputs {
                for &l in inp {
                    if l < ELL && !letters.contains(&l) {
                        let n: usize = inputs
                            .iter()
                            .map(|v| v.iter().filter(|&&x| x == l).count())
                            .sum();
                        if n == 1 {
                            letters.push(l);
                        }
                    }
                }
            }
            letters.sort_unstable();
            out.extend(letters);
            out
        }
    };
    Ok(EinsumSpec { inputs, output })
}

fn einsum(check: Check, eq: &str, ts: &[&Tensor]) -> OpResult<Tensor> {
    let dtype = ts
        .first()
        .ok_or_else(|| op_err!("Einsum needs at least one input"))?
        .dtype();
    if ts.iter().any(|t| t.dtype() != dtype) {
        return Err(op_err!("Einsum inputs have different element types"));
    }
    let ranks: Vec<usize> = ts.iter().map(|t| t.rank()).collect();
    let spec = parse_einsum(eq, &ranks)?;
    // every label with its size (size-1 dimensions broadcast)
    let mut labels: Vec<u32> = spec.output.clone();
    let mut sizes: Vec<usize> = Vec::new();
    for inp in &spec.inputs {
        for &l in inp {
            if !labels.contains(&l) {
                labels.push(l);
            }
        }
    }
    sizes.resize(labels.len(), 1);
    for (inp, t) in spec.inputs.iter().zip(ts) {
        for (&l, &d) in inp.iter().zip(t.shape()) {
            let pos = labels.iter().position(|&x| x == l).unwrap_or(0);
            if sizes[pos] == 1 {
                sizes[pos] = d;
            } else if d != 1 && d != sizes[pos] {
                return Err(op_err!(
                    "Einsum label has sizes {} and {d} in different places",
                    sizes[pos]
                ));
            }
        }
    }
    // per input: stride of each label (0 when the label is absent or broadcast)
    let mut strides: Vec<Vec<usize>> = Vec::new();
    for (inp, t) in spec.inputs.iter().zip(ts) {
        let own = onyx_tensor::strides_of(t.shape());
        let mut s = vec![0usize; labels.len()];
        for (d, &l) in inp.iter().enumerate() {
            if t.shape()[d] != 1 {
                let pos = labels.iter().position(|&x| x == l).unwrap_or(0);
                s[pos] += own[d];
            }
        }
        strides.push(s);
    }
    let nout = spec.output.len();
    let out_shape: Vec<usize> = sizes[..nout].to_vec();
    let out_n = count(&out_shape)?;
    let inner = count(&sizes[nout..])?;
    out_n
        .checked_mul(inner)
        .ok_or_else(|| op_err!("Einsum iteration space is too large"))?;
    check(out_n, 8)?;
    let space = EinsumSpace {
        sizes: &sizes,
        strides: &strides,
        out_n,
        inner,
    };
    if dtype.is_float() {
        let vals: Vec<Vec<f64>> = ts
            .iter()
            .map(|t| t.to_f64_vec())
            .collect::<Result<_, _>>()?;
        let out = space.run(&vals, 0.0, 1.0, |a, b| a * b, |a, b| a + b);
        tensor_from_f64(dtype, out_shape, out)
    } else {
        // integers are exact (wrapping) in i64
        let vals: Vec<Vec<i64>> = ts
            .iter()
            .map(|t| t.to_i64_vec())
            .collect::<Result<_, _>>()?;
        let out = space.run(&vals, 0, 1, i64::wrapping_mul, i64::wrapping_add);
        cast_tensor(&Tensor::from_vec(out_shape, out)?, dtype, true)
    }
}

/// The iteration space of an Einsum: every label's size, each input's stride
/// per label, and how many output elements and summed terms there are.
struct EinsumSpace<'a> {
    sizes: &'a [usize],
    strides: &'a [Vec<usize>],
    out_n: usize,
    inner: usize,
}

impl EinsumSpace<'_> {
    fn run<T: Copy>(
        &self,
        vals: &[Vec<T>],
        zero: T,
        unit: T,
        mul: impl Fn(T, T) -> T,
        add: impl Fn(T, T) -> T,
    ) -> Vec<T> {
        let mut out = vec![zero; self.out_n];
        let total = self.out_n * self.inner;
        let nl = self.sizes.len();
        let mut idx = vec![0usize; nl];
        let mut offs = vec![0usize; vals.len()];
        for flat in 0..total {
            let mut prod = unit;
            for (v, &o) in vals.iter().zip(&offs) {
                prod = mul(prod, v[o]);
            }
            let slot = &mut out[flat / self.inner];
            *slot = add(*slot, prod);
            // advance the counter (last label fastest)
            for d in (0..nl).rev() {
                idx[d] += 1;
                for (o, s) in offs.iter_mut().zip(self.strides) {
                    *o += s[d];
                }
                if idx[d] < self.sizes[d] {
                    break;
                }
                for (o, s) in offs.iter_mut().zip(self.strides) {
                    *o -= s[d] * idx[d];
                }
                idx[d] = 0;
            }
        }
        out
    }
}

fn build_einsum(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let eq = ctx
        .node
        .attr_string("equation")?
        .ok_or_else(|| op_err!("Einsum needs the 'equation' attribute"))?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let ts: Vec<&Tensor> = (0..inputs.len())
            .map(|i| tensor_in(inputs, i))
            .collect::<Result<_, _>>()?;
        one(einsum(&|n, b| ctx.check_alloc(n, b), &eq, &ts)?)
    }))
}

// ---------------------------------------------------------------------------
// MatMulInteger

/// Zero-point-adjusted operand as i64: `zp` is a scalar or one value per
/// row (`per_row`, for A) or per column (for B).
fn int_operand(t: &Tensor, zp: Option<&Tensor>, per_row: bool) -> OpResult<Vec<i64>> {
    let v = match t.dtype() {
        DType::Int8 | DType::Uint8 | DType::Int16 | DType::Uint16 | DType::Int32 => {
            t.to_i64_vec()?
        }
        d => return Err(op_err!("integer matrix product does not support {d}")),
    };
    let Some(zp) = zp else { return Ok(v) };
    let z = zp.to_i64_vec()?;
    if z.is_empty() {
        return Err(op_err!("zero point is empty"));
    }
    if z.len() == 1 {
        return Ok(v.into_iter().map(|x| x - z[0]).collect());
    }
    let r = t.rank();
    if r < 2 {
        return Err(op_err!(
            "a zero point of {} values needs a matrix operand",
            z.len()
        ));
    }
    let (rows, cols) = (t.shape()[r - 2], t.shape()[r - 1]);
    let want = if per_row { rows } else { cols };
    if z.len() != want && z.len() % want.max(1) != 0 {
        return Err(op_err!(
            "zero point has {} values but the operand needs 1 or {want}",
            z.len()
        ));
    }
    let mat = rows * cols;
    Ok(v.iter()
        .enumerate()
        .map(|(i, &x)| {
            let within = i % mat.max(1);
            let batch = i / mat.max(1);
            let key = if per_row {
                within / cols
            } else {
                within % cols
            };
            let zi = if z.len() == want {
                key
            } else {
                (batch * want + key) % z.len()
            };
            x - z[zi]
        })
        .collect())
}

fn build_matmul_integer(_: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
        one(matmul_integer(&|n, b| ctx.check_alloc(n, b), inputs)?)
    }))
}

fn matmul_integer(check: Check, inputs: &[Option<&Value>]) -> OpResult<Tensor> {
    {
        let a = tensor_in(inputs, 0)?;
        let b = tensor_in(inputs, 1)?;
        let av = int_operand(a, opt_tensor_in(inputs, 2)?, true)?;
        let bv = int_operand(b, opt_tensor_in(inputs, 3)?, false)?;
        let p = mm_plan(check, a.shape(), b.shape())?;
        check(count(&p.out_shape)?, 4)?;
        let v = mm_run(&av, &bv, &p, 0i64, |acc, x, y| {
            acc.wrapping_add(x.wrapping_mul(y))
        })?;
        Ok(Tensor::from_vec(
            p.out_shape,
            v.into_iter().map(|x| x as i32).collect::<Vec<i32>>(),
        )?)
    }
}

// ---------------------------------------------------------------------------
// Det

fn det_one(m: &mut [f64], n: usize) -> f64 {
    let mut det = 1.0;
    for c in 0..n {
        let mut piv = c;
        for r in c + 1..n {
            if m[r * n + c].abs() > m[piv * n + c].abs() {
                piv = r;
            }
        }
        if m[piv * n + c] == 0.0 {
            return 0.0;
        }
        if piv != c {
            for j in 0..n {
                m.swap(c * n + j, piv * n + j);
            }
            det = -det;
        }
        let p = m[c * n + c];
        det *= p;
        for r in c + 1..n {
            let f = m[r * n + c] / p;
            if f != 0.0 {
                for j in c..n {
                    m[r * n + j] -= f * m[c * n + j];
                }
            }
        }
    }
    det
}

fn det(t: &Tensor) -> OpResult<Tensor> {
    let r = t.rank();
    if r < 2 || t.shape()[r - 1] != t.shape()[r - 2] {
        return Err(op_err!(
            "Det needs square matrices in the last two dimensions, got shape {:?}",
            t.shape()
        ));
    }
    let n = t.shape()[r - 1];
    let v = float_vec(t, "Det input")?;
    let batch = t.shape()[..r - 2].to_vec();
    let out: Vec<f64> = if n == 0 {
        vec![1.0; count(&batch)?]
    } else {
        v.chunks(n * n)
            .map(|c| {
                let mut m = c.to_vec();
                det_one(&mut m, n)
            })
            .collect()
    };
    tensor_from_f64(t.dtype(), batch, out)
}

// ---------------------------------------------------------------------------
// Attention

#[derive(Clone, Copy)]
struct AttnAttrs {
    q_heads: Option<usize>,
    kv_heads: Option<usize>,
    scale: Option<f64>,
    causal: bool,
    softcap: f64,
    mode: i64,
    softmax_dtype: Option<DType>,
    left: i64,
    right: i64,
}

fn build_attention(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let n = &ctx.node;
    let heads = |name: &str| -> OpResult<Option<usize>> {
        match n.attr_int(name)? {
            None => Ok(None),
            Some(h) if h > 0 => Ok(Some(h as usize)),
            Some(h) => Err(op_err!("attribute '{name}' must be positive, got {h}")),
        }
    };
    let softmax_dtype = match n.attr_int("softmax_precision")? {
        None => None,
        Some(code) => match i32::try_from(code).ok().and_then(DType::from_onnx) {
            Some(d @ (DType::Float | DType::Double | DType::Float16 | DType::BFloat16)) => Some(d),
            _ => return Err(op_err!("softmax_precision {code} is not a float type")),
        },
    };
    let mode = n.attr_int("qk_matmul_output_mode")?.unwrap_or(0);
    if !(0..=3).contains(&mode) {
        return Err(op_err!("qk_matmul_output_mode {mode} is not 0, 1, 2 or 3"));
    }
    let windowed = ctx.opset >= 25;
    let left = if windowed {
        n.attr_int("left_window_size")?.unwrap_or(-1)
    } else {
        -1
    };
    let right = if windowed {
        n.attr_int("right_window_size")?.unwrap_or(-1)
    } else {
        -1
    };
    if left < -1 || right < -1 {
        return Err(op_err!("window sizes must be -1 or nonnegative"));
    }
    let a = AttnAttrs {
        q_heads: heads("q_num_heads")?,
        kv_heads: heads("kv_num_heads")?,
        scale: n.attr_float("scale")?.map(f64::from),
        causal: n.attr_int("is_causal")?.unwrap_or(0) != 0,
        softcap: f64::from(n.attr_float("softcap")?.unwrap_or(0.0)),
        mode,
        softmax_dtype,
        left,
        right,
    };
    let want_qk = n.outputs.len() > 3 && !n.outputs[3].is_empty();
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        attention(&|n, b| ctx.check_alloc(n, b), &a, want_qk, inputs)
    }))
}

/// [B, S, H*D] -> [B, H, S, D].
fn split_heads(v: &[f64], b: usize, s: usize, h: usize, d: usize) -> Vec<f64> {
    let mut out = vec![0.0; v.len()];
    for bi in 0..b {
        for si in 0..s {
            for hi in 0..h {
                let src = ((bi * s + si) * h + hi) * d;
                let dst = ((bi * h + hi) * s + si) * d;
                out[dst..dst + d].copy_from_slice(&v[src..src + d]);
            }
        }
    }
    out
}

/// Reads Q/K/V as [B, H, S, D] from a 3-D or 4-D tensor.
fn to_bhsd(t: &Tensor, heads: Option<usize>, what: &str) -> OpResult<(Vec<f64>, [usize; 4])> {
    let v = float_vec(t, what)?;
    match *t.shape() {
        [b, s, hidden] => {
            let h = heads.ok_or_else(|| {
                op_err!("3-D {what} needs the q_num_heads and kv_num_heads attributes")
            })?;
            if hidden % h != 0 {
                return Err(op_err!(
                    "{what} hidden size {hidden} is not a multiple of {h} heads"
                ));
            }
            let d = hidden / h;
            Ok((split_heads(&v, b, s, h, d), [b, h, s, d]))
        }
        [b, h, s, d] => Ok((v, [b, h, s, d])),
        _ => Err(op_err!(
            "{what} must be 3-D or 4-D, got shape {:?}",
            t.shape()
        )),
    }
}

/// Concatenates past [B,H,P,D] and current [B,H,S,D] along the sequence axis.
fn concat_seq(past: &[f64], p: usize, cur: &[f64], s: usize, bh: usize, d: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(bh * (p + s) * d);
    for i in 0..bh {
        out.extend_from_slice(&past[i * p * d..(i + 1) * p * d]);
        out.extend_from_slice(&cur[i * s * d..(i + 1) * s * d]);
    }
    out
}

fn attention(
    check: Check,
    at: &AttnAttrs,
    want_qk: bool,
    inputs: &[Option<&Value>],
) -> OpResult<Vec<Value>> {
    let qt = tensor_in(inputs, 0)?;
    let kt = tensor_in(inputs, 1)?;
    let vt = tensor_in(inputs, 2)?;
    let dt = qt.dtype();
    if kt.dtype() != dt || vt.dtype() != dt {
        return Err(op_err!("Q, K and V must have the same element type"));
    }
    if kt.rank() != qt.rank() || vt.rank() != qt.rank() {
        return Err(op_err!("Q, K and V must have the same rank"));
    }
    let three_d = qt.rank() == 3;
    let (q, [b, hq, sq, d]) = to_bhsd(qt, at.q_heads, "Q")?;
    let (k, [bk, hk, sk, dk]) = to_bhsd(kt, at.kv_heads, "K")?;
    let (v, [bv, hv, sv, dv]) = to_bhsd(vt, at.kv_heads, "V")?;
    if bk != b || bv != b || hv != hk || sv != sk || dk != d {
        return Err(op_err!(
            "Q, K and V shapes {:?}, {:?}, {:?} do not agree",
            qt.shape(),
            kt.shape(),
            vt.shape()
        ));
    }
    if hk == 0 || hq % hk != 0 {
        return Err(op_err!(
            "{hq} query heads cannot be grouped over {hk} key/value heads"
        ));
    }
    let group = hq / hk;
    let mask = opt_tensor_in(inputs, 3)?;
    let past_k = opt_tensor_in(inputs, 4)?;
    let past_v = opt_tensor_in(inputs, 5)?;
    let nonpad = match opt_tensor_in(inputs, 6)? {
        Some(t) => {
            let v = t.to_i64_vec()?;
            if v.len() != b {
                return Err(op_err!(
                    "nonpad_kv_seqlen has {} values but the batch is {b}",
                    v.len()
                ));
            }
            if let Some(bad) = v.iter().find(|&&n| n < 0) {
                return Err(op_err!("nonpad_kv_seqlen value {bad} is negative"));
            }
            Some(v)
        }
        None => None,
    };
    if past_k.is_some() != past_v.is_some() {
        return Err(op_err!("past_key and past_value must be given together"));
    }
    if nonpad.is_some() && past_k.is_some() {
        return Err(op_err!(
            "nonpad_kv_seqlen cannot be combined with past_key/past_value"
        ));
    }
    let (present_k, present_v, past_len) = match (past_k, past_v) {
        (Some(pk), Some(pv)) => {
            let pkv = float_vec(pk, "past_key")?;
            let pvv = float_vec(pv, "past_value")?;
            let p = match *pk.shape() {
                [pb, ph, p, pd] if pb == b && ph == hk && pd == d => p,
                _ => {
                    return Err(op_err!(
                        "past_key shape {:?} does not match [{b}, {hk}, P, {d}]",
                        pk.shape()
                    ))
                }
            };
            if pv.shape() != [b, hk, p, dv] {
                return Err(op_err!(
                    "past_value shape {:?} does not match [{b}, {hk}, {p}, {dv}]",
                    pv.shape()
                ));
            }
            (
                concat_seq(&pkv, p, &k, sk, b * hk, d),
                concat_seq(&pvv, p, &v, sk, b * hk, dv),
                p,
            )
        }
        _ => (k, v, 0),
    };
    let l = past_len + sk;
    let qk_n = count(&[b, hq, sq, l])?;
    check(qk_n, 8)?;
    check(count(&[b, hq, sq, dv])?, 8)?;

    // mask as a broadcast view over [B, Hq, Sq, mask_len]
    let mask_info = match mask {
        None => None,
        Some(m) => {
            if m.rank() > 4 || m.rank() == 0 {
                return Err(op_err!(
                    "attn_mask must have rank 1 to 4, got shape {:?}",
                    m.shape()
                ));
            }
            let mut ms = vec![1usize; 4 - m.rank()];
            ms.extend_from_slice(m.shape());
            let target = [b, hq, sq, ms[3]];
            for i in 0..3 {
                if ms[i] != 1 && ms[i] != target[i] {
                    return Err(op_err!(
                        "attn_mask shape {:?} does not broadcast to [{b}, {hq}, {sq}, {l}]",
                        m.shape()
                    ));
                }
            }
            if ms[3] > l {
                return Err(op_err!(
                    "attn_mask covers {} keys but there are only {l}",
                    ms[3]
                ));
            }
            let strides = broadcast_strides(&ms, &target);
            let vals: Vec<f64> = match m.data() {
                Data::Bool(bv) => bv
                    .iter()
                    .map(|&x| if x { 0.0 } else { f64::NEG_INFINITY })
                    .collect(),
                _ => float_vec(m, "attn_mask")?,
            };
            Some((vals, strides, ms[3], m.dtype() == DType::Bool))
        }
    };

    let rnd = |x: f64| round_to(dt, x);
    let sm_dt = at.softmax_dtype.unwrap_or(dt);
    let rnd_sm = |x: f64| round_to(sm_dt, x);
    let narrow = matches!(dt, DType::Float16 | DType::BFloat16);
    let scale = at.scale.unwrap_or(1.0 / (d as f64).sqrt());
    let sf = rnd(scale.sqrt());
    let qs: Vec<f64> = q.iter().map(|&x| rnd(x * sf)).collect();
    let ks: Vec<f64> = present_k.iter().map(|&x| rnd(x * sf)).collect();

    let mut y = vec![0.0f64; b * hq * sq * dv];
    let mut qk_out = if want_qk { vec![0.0f64; qk_n] } else { vec![] };
    let mut bias = vec![0.0f64; l];
    let mut scores = vec![0.0f64; l];
    let ninf = f64::NEG_INFINITY;
    for bi in 0..b {
        let offset: i64 = match &nonpad {
            Some(np) if past_k.is_none() => np[bi] - sq as i64,
            _ => past_len as i64,
        };
        for h in 0..hq {
            let g = h / group;
            for i in 0..sq {
                // the additive bias for this query row
                for (j, bj) in bias.iter_mut().enumerate() {
                    let mut x = 0.0;
                    if let Some((vals, st, mlen, _)) = &mask_info {
                        x += if j < *mlen {
                            vals[bi * st[0] + h * st[1] + i * st[2] + j * st[3]]
                        } else {
                            ninf
                        };
                    }
                    let pos = i as i64 + offset;
                    let jj = j as i64;
                    if at.causal && jj > pos {
                        x += ninf;
                    }
                    if at.left >= 0 && pos - jj > at.left {
                        x += ninf;
                    }
                    if at.right >= 0 && jj - pos > at.right {
                        x += ninf;
                    }
                    if let Some(np) = &nonpad {
                        if jj >= np[bi] {
                            x += ninf;
                        }
                    }
                    *bj = rnd(x);
                }
                let qrow = &qs[((bi * hq + h) * sq + i) * d..][..d];
                for (j, s) in scores.iter_mut().enumerate() {
                    let krow = &ks[((bi * hk + g) * l + j) * d..][..d];
                    let dot = if narrow {
                        // 16-bit floats accumulate dot products in f32
                        qrow.iter()
                            .zip(krow)
                            .fold(0.0f64, |acc, (a, c)| (acc + a * c) as f32 as f64)
                    } else {
                        qrow.iter().zip(krow).map(|(a, c)| a * c).sum()
                    };
                    let mut x = rnd(dot);
                    if at.softcap > 0.0 {
                        x = rnd(rnd(rnd(x / at.softcap).tanh()) * at.softcap);
                    }
                    *s = x;
                }
                let row_base = ((bi * hq + h) * sq + i) * l;
                if want_qk && at.mode <= 1 {
                    qk_out[row_base..row_base + l].copy_from_slice(&scores);
                }
                for (s, &bj) in scores.iter_mut().zip(&bias) {
                    *s = rnd(*s + bj);
                }
                if want_qk && at.mode == 2 {
                    qk_out[row_base..row_base + l].copy_from_slice(&scores);
                }
                // softmax (NaN propagates through the max)
                let mut mx = ninf;
                for s in scores.iter_mut() {
                    *s = rnd_sm(*s);
                    if !mx.is_nan() && (s.is_nan() || *s > mx) {
                        mx = *s;
                    }
                }
                let all_masked = bias.iter().all(|&x| x == ninf);
                if all_masked || mx == ninf {
                    scores.iter_mut().for_each(|s| *s = 0.0);
                } else {
                    let mut sum = 0.0;
                    for s in scores.iter_mut() {
                        *s = rnd_sm((*s - mx).exp());
                        // bfloat16 reductions round at every step
                        sum = if sm_dt == DType::BFloat16 {
                            rnd_sm(sum + *s)
                        } else {
                            sum + *s
                        };
                    }
                    let sum = rnd_sm(sum);
                    let sum = if sum == 0.0 { 1.0 } else { sum };
                    for s in scores.iter_mut() {
                        *s = rnd(rnd_sm(*s / sum));
                    }
                }
                if want_qk && at.mode == 3 {
                    qk_out[row_base..row_base + l].copy_from_slice(&scores);
                }
                let yrow = &mut y[((bi * hq + h) * sq + i) * dv..][..dv];
                for (j, &p) in scores.iter().enumerate() {
                    if p == 0.0 {
                        continue;
                    }
                    let vrow = &present_v[((bi * hk + g) * l + j) * dv..][..dv];
                    for (o, &x) in yrow.iter_mut().zip(vrow) {
                        *o += p * x;
                    }
                }
                // 0 * NaN/inf in V must still poison the row, as in a real matmul
                if scores.contains(&0.0) {
                    for (j, &p) in scores.iter().enumerate() {
                        if p == 0.0 {
                            let vrow = &present_v[((bi * hk + g) * l + j) * dv..][..dv];
                            for (o, &x) in yrow.iter_mut().zip(vrow) {
                                if !x.is_finite() {
                                    *o = f64::NAN;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
    let y = if three_d {
        // [B, Hq, Sq, Dv] -> [B, Sq, Hq*Dv]
        let mut out = vec![0.0; y.len()];
        for bi in 0..b {
            for h in 0..hq {
                for i in 0..sq {
                    let src = ((bi * hq + h) * sq + i) * dv;
                    let dst = ((bi * sq + i) * hq + h) * dv;
                    out[dst..dst + dv].copy_from_slice(&y[src..src + dv]);
                }
            }
        }
        tensor_from_f64(dt, vec![b, sq, hq * dv], out.into_iter().map(rnd).collect())?
    } else {
        tensor_from_f64(dt, vec![b, hq, sq, dv], y.into_iter().map(rnd).collect())?
    };
    let mut outs = vec![
        Value::Tensor(y),
        Value::Tensor(tensor_from_f64(dt, vec![b, hk, l, d], present_k)?),
        Value::Tensor(tensor_from_f64(dt, vec![b, hk, l, dv], present_v)?),
    ];
    if want_qk {
        outs.push(Value::Tensor(tensor_from_f64(
            dt,
            vec![b, hq, sq, l],
            qk_out,
        )?));
    }
    Ok(outs)
}

// ---------------------------------------------------------------------------
// RotaryEmbedding

fn build_rotary(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let interleaved = ctx.node.attr_int("interleaved")?.unwrap_or(0) != 0;
    let rot_dim = ctx.node.attr_int("rotary_embedding_dim")?.unwrap_or(0);
    let num_heads = ctx.node.attr_int("num_heads")?.unwrap_or(0);
    if rot_dim < 0 || num_heads < 0 {
        return Err(op_err!(
            "rotary_embedding_dim and num_heads must not be negative"
        ));
    }
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let cos = tensor_in(inputs, 1)?;
        let sin = tensor_in(inputs, 2)?;
        let pos = opt_tensor_in(inputs, 3)?;
        rotary(
            x,
            cos,
            sin,
            pos,
            interleaved,
            rot_dim as usize,
            num_heads as usize,
        )
    }))
}

fn rotary(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    pos: Option<&Tensor>,
    interleaved: bool,
    rot_dim: usize,
    num_heads: usize,
) -> OpResult<Vec<Value>> {
    let xv = float_vec(x, "input")?;
    // element (b, s, h, d) lives at b*sb + s*ss + h*sh + d
    let (b, s, h, hd, sb, ss, sh) = match *x.shape() {
        [b, h, s, d] => (b, s, h, d, h * s * d, d, s * d),
        [b, s, hidden] => {
            if num_heads == 0 || hidden % num_heads != 0 {
                return Err(op_err!(
                    "3-D input of hidden size {hidden} needs num_heads dividing it"
                ));
            }
            let d = hidden / num_heads;
            (b, s, num_heads, d, s * hidden, hidden, d)
        }
        _ => {
            return Err(op_err!(
                "RotaryEmbedding input must be 3-D or 4-D, got {:?}",
                x.shape()
            ))
        }
    };
    let rd = if rot_dim == 0 { hd } else { rot_dim };
    if rd > hd || rd % 2 != 0 {
        return Err(op_err!(
            "rotary_embedding_dim {rd} must be even and at most the head size {hd}"
        ));
    }
    let half = rd / 2;
    let cv = float_vec(cos, "cos_cache")?;
    let svv = float_vec(sin, "sin_cache")?;
    if cos.shape() != sin.shape() {
        return Err(op_err!("cos_cache and sin_cache shapes differ"));
    }
    if cos.shape().last() != Some(&half) {
        return Err(op_err!(
            "last dimension of cos_cache {:?} does not match rotary_embedding_dim/2 = {half}",
            cos.shape()
        ));
    }
    // row of the caches for (b, s)
    let rows: Vec<usize> = match pos {
        Some(p) => {
            let ids = p.to_i64_vec()?;
            if ids.len() != b * s {
                return Err(op_err!(
                    "position_ids shape {:?} is not [{b}, {s}]",
                    p.shape()
                ));
            }
            let max = if cos.rank() == 2 { cos.shape()[0] } else { 0 };
            ids.iter()
                .map(|&i| {
                    if i >= 0 && (i as usize) < max {
                        Ok(i as usize)
                    } else {
                        Err(op_err!(
                            "position id {i} is outside the cache of {max} rows"
                        ))
                    }
                })
                .collect::<OpResult<_>>()?
        }
        None => match *cos.shape() {
            [cb, cs, _] if (cb == b || cb == 1) && cs == s => (0..b * s)
                .map(|i| if cb == 1 { i % s } else { i })
                .collect(),
            [cs, _] if cs >= s => (0..b * s).map(|i| i % s).collect(),
            _ => {
                return Err(op_err!(
                    "cos_cache shape {:?} does not fit batch {b} and sequence {s}",
                    cos.shape()
                ))
            }
        },
    };
    let mut out = xv.clone();
    for bi in 0..b {
        for si in 0..s {
            let row = rows[bi * s + si] * half;
            let c = &cv[row..row + half];
            let sn = &svv[row..row + half];
            for hi in 0..h {
                let base = bi * sb + si * ss + hi * sh;
                for j in 0..half {
                    let (i1, i2) = if interleaved {
                        (base + 2 * j, base + 2 * j + 1)
                    } else {
                        (base + j, base + half + j)
                    };
                    let (x1, x2) = (xv[i1], xv[i2]);
                    out[i1] = c[j] * x1 - sn[j] * x2;
                    out[i2] = sn[j] * x1 + c[j] * x2;
                }
            }
        }
    }
    one(tensor_from_f64(x.dtype(), x.shape().to_vec(), out)?)
}

pub fn register(r: &mut Registry) {
    r.add("", "MatMul", |bctx| {
        let weight = PackedWeight::absorb(bctx, 1, false);
        Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
            let check = |n, s| ctx.check_alloc(n, s);
            let a = tensor_in(inputs, 0)?;
            match &weight {
                // only the type error is renamed; shape errors stay as they are
                Some(_) if a.dtype() != DType::Float => Err(op_err!(
                    "operands have different element types {} and float",
                    a.dtype()
                )),
                Some(w) => {
                    let (shape, out) = Right::Weight(w).product(&check, a, &Epilogue::default())?;
                    one(Tensor::from_vec(shape, out)?)
                }
                None => one(matmul(&check, a, tensor_in(inputs, 1)?)?),
            }
        }))
    });
    r.add("", "Gemm", build_gemm);
    r.add(
        crate::passes::ONYX_DOMAIN,
        "FusedMatMul",
        build_fused_matmul,
    );
    r.add("", "Einsum", build_einsum);
    r.add("", "MatMulInteger", build_matmul_integer);
    r.add("", "Det", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            one(det(tensor_in(inputs, 0)?)?)
        }))
    });
    r.add("", "Attention", build_attention);
    r.add("", "RotaryEmbedding", build_rotary);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t32(shape: &[usize], v: &[f32]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn matmul_plans_broadcast_and_vectors() {
        let p = mm_plan(&no_limit, &[2, 1, 3, 4], &[5, 4, 6]).unwrap();
        assert_eq!(p.out_shape, vec![2, 5, 3, 6]);
        assert_eq!(p.pairs.len(), 10);
        let p = mm_plan(&no_limit, &[4], &[4]).unwrap();
        assert_eq!(p.out_shape, Vec::<usize>::new());
        assert!(mm_plan(&no_limit, &[2, 3], &[4, 2]).is_err());
        let a = [1.0, 2.0, 3.0, 4.0];
        let b = [5.0, 6.0, 7.0, 8.0];
        let p = mm_plan(&no_limit, &[2, 2], &[2, 2]).unwrap();
        assert_eq!(mm_f64(&a, &b, &p).unwrap(), vec![19.0, 22.0, 43.0, 50.0]);
        let p = mm_plan(&no_limit, &[2], &[2, 2]).unwrap();
        assert_eq!(mm_f64(&a[..2], &b, &p).unwrap(), vec![19.0, 22.0]);
    }

    fn vals(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7 + seed * 13) % 23) as f32 / 8.0 - 1.0)
            .collect()
    }

    #[test]
    fn fast_f32_matmul_matches_plain_loop() {
        let cases: [(&[usize], &[usize]); 7] = [
            (&[1, 70], &[70, 33]),
            (&[3, 5, 17], &[17, 40]),
            (&[2, 1, 4, 9], &[3, 9, 5]),
            (&[13], &[13, 6]),
            (&[4, 13], &[13]),
            (&[2, 3, 300], &[2, 300, 2]),
            (&[0, 4], &[4, 3]),
        ];
        for (sa, sb) in cases {
            let a = vals(sa.iter().product(), 1);
            let b = vals(sb.iter().product(), 2);
            let p = mm_plan(&no_limit, sa, sb).unwrap();
            let want = mm_run(&a, &b, &p, 0.0f32, |acc, x, y| acc + x * y).unwrap();
            let mut got = vec![mm_f32_fast(&a, Rhs::Plain(&b), &p, &Epilogue::default()).unwrap()];
            // a weight packed ahead of time gives the same result
            if sb.len() <= 2 {
                let w = PackedWeight::new(&t32(sb, &b), false).unwrap();
                let (shape, out) = Right::Weight(&w)
                    .product(&no_limit, &t32(sa, &a), &Epilogue::default())
                    .unwrap();
                assert_eq!(shape, p.out_shape);
                got.push(out);
            }
            for g in got {
                assert_eq!(g.len(), want.len(), "{sa:?} x {sb:?}");
                for (x, y) in g.iter().zip(&want) {
                    assert!(
                        (x - y).abs() <= 1e-4 * (1.0 + y.abs()),
                        "{sa:?} x {sb:?}: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn fast_f32_gemm_matches_f64_path() {
        let a = t32(&[5, 7], &vals(35, 3));
        let b = t32(&[7, 9], &vals(63, 4));
        let bt = t32(&[9, 7], &vals(63, 4));
        let at_ = t32(&[7, 5], &vals(35, 3));
        let biases = [
            None,
            Some(t32(&[9], &vals(9, 5))),
            Some(t32(&[5, 1], &vals(5, 6))),
            Some(t32(&[5, 9], &vals(45, 7))),
        ];
        for (alpha, beta) in [(1.0, 1.0), (0.5, 2.0)] {
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let at = GemmAttrs {
                    trans_a: ta,
                    trans_b: tb,
                    alpha,
                    beta,
                };
                let (aa, bb) = (if ta { &at_ } else { &a }, if tb { &bt } else { &b });
                for c in &biases {
                    let want = gemm(&no_limit, &at, aa, bb, c.as_ref()).unwrap();
                    // B as given, and B packed ahead of time
                    let packed = PackedWeight::new(bb, tb).unwrap();
                    for b in [Right::Input(bb), Right::Weight(&packed)] {
                        let got = gemm_f32(&no_limit, &at, aa, &b, c.as_ref())
                            .unwrap()
                            .unwrap();
                        assert_eq!(got.shape(), &[5, 9]);
                        let (g, w) = (
                            got.as_slice::<f32>().unwrap(),
                            want.as_slice::<f32>().unwrap(),
                        );
                        for (x, y) in g.iter().zip(w) {
                            assert!((x - y).abs() <= 1e-5 * (1.0 + y.abs()), "{x} vs {y}");
                        }
                    }
                }
            }
        }
        // a bias that does not broadcast is an error, not a panic
        let at = GemmAttrs {
            trans_a: false,
            trans_b: false,
            alpha: 1.0,
            beta: 1.0,
        };
        let bad = t32(&[4], &[0.0; 4]);
        assert!(gemm_f32(&no_limit, &at, &a, &Right::Input(&b), Some(&bad)).is_err());
        // mismatched inner dims fall through to the general path's error,
        // or are one when B is a packed weight
        assert!(gemm_f32(&no_limit, &at, &a, &Right::Input(&a), None)
            .unwrap()
            .is_none());
        let packed = PackedWeight::new(&a, false).unwrap();
        assert!(gemm_f32(&no_limit, &at, &a, &Right::Weight(&packed), None).is_err());
    }

    #[test]
    fn einsum_forms() {
        let spec = parse_einsum("ij,jk", &[2, 2]).unwrap();
        assert_eq!(spec.output, vec![u32::from(b'i'), u32::from(b'k')]);
        let spec = parse_einsum("...ii->...i", &[3]).unwrap();
        assert_eq!(spec.inputs[0].len(), 3);
        assert!(parse_einsum("ij->k", &[2]).is_err());
    }

    #[test]
    fn determinant() {
        let t = t32(&[2, 2, 2], &[1.0, 2.0, 3.0, 4.0, 2.0, 0.0, 0.0, 3.0]);
        let d = det(&t).unwrap();
        assert_eq!(d.shape(), &[2]);
        let v = d.as_slice::<f32>().unwrap();
        assert!((v[0] + 2.0).abs() < 1e-6 && (v[1] - 6.0).abs() < 1e-6);
    }

    fn no_limit(_: usize, _: usize) -> OpResult<()> {
        Ok(())
    }

    fn t64(shape: &[usize], v: &[f64]) -> Tensor {
        Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
    }

    #[test]
    fn einsum_runs() {
        let a = t32(&[2, 2], &[1.0, 2.0, 3.0, 4.0]);
        let b = t32(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let c = einsum(&no_limit, "ij,jk->ik", &[&a, &b]).unwrap();
        assert_eq!(c.as_slice::<f32>().unwrap(), &[19.0, 22.0, 43.0, 50.0]);
        let d = einsum(&no_limit, "ii->i", &[&a]).unwrap();
        assert_eq!(d.as_slice::<f32>().unwrap(), &[1.0, 4.0]);
        let tr = einsum(&no_limit, "ii", &[&a]).unwrap();
        assert_eq!(tr.shape(), &[] as &[usize]);
        assert_eq!(tr.as_slice::<f32>().unwrap(), &[5.0]);
        let t = einsum(&no_limit, "...ij->...ji", &[&a]).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 3.0, 2.0, 4.0]);
        let ints = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
        let dot = einsum(&no_limit, "i,i", &[&ints, &ints]).unwrap();
        assert_eq!(dot.as_slice::<i64>().unwrap(), &[14]);
    }

    #[test]
    fn gemm_transposes_and_bias() {
        let a = t32(&[2, 2], &[1.0, 3.0, 2.0, 4.0]); // A^T = [[1,2],[3,4]]
        let b = t32(&[2, 2], &[5.0, 6.0, 7.0, 8.0]);
        let c = t32(&[2], &[1.0, -1.0]);
        let at = GemmAttrs {
            trans_a: true,
            trans_b: false,
            alpha: 2.0,
            beta: 10.0,
        };
        let y = gemm(&no_limit, &at, &a, &b, Some(&c)).unwrap();
        assert_eq!(y.as_slice::<f32>().unwrap(), &[48.0, 34.0, 96.0, 90.0]);
        let bad = t32(&[3], &[0.0; 3]);
        assert!(gemm(&no_limit, &at, &a, &b, Some(&bad)).is_err());
    }

    #[test]
    fn integer_products() {
        let a = Tensor::from_vec(vec![2, 2], vec![1i32, 2, 3, 4]).unwrap();
        let y = matmul(&no_limit, &a, &a).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[7, 10, 15, 22]);
        let a = Tensor::from_vec(vec![1, 2], vec![12u8, 14]).unwrap();
        let b = Tensor::from_vec(vec![2, 1], vec![3u8, 5]).unwrap();
        let za = Value::Tensor(Tensor::scalar(10u8));
        let (va, vb) = (Value::Tensor(a), Value::Tensor(b));
        let y = matmul_integer(&no_limit, &[Some(&va), Some(&vb), Some(&za)]).unwrap();
        assert_eq!(y.as_slice::<i32>().unwrap(), &[2 * 3 + 4 * 5]);
    }

    fn attn_attrs(causal: bool) -> AttnAttrs {
        AttnAttrs {
            q_heads: None,
            kv_heads: None,
            scale: Some(1.0),
            causal,
            softcap: 0.0,
            mode: 0,
            softmax_dtype: None,
            left: -1,
            right: -1,
        }
    }

    #[test]
    fn attention_by_hand() {
        // scores [0, ln 3] give weights [1/4, 3/4] over values [4, 8]
        let q = Value::Tensor(t64(&[1, 1, 2, 1], &[1.0, 1.0]));
        let k = Value::Tensor(t64(&[1, 1, 2, 1], &[0.0, 3f64.ln()]));
        let v = Value::Tensor(t64(&[1, 1, 2, 1], &[4.0, 8.0]));
        let run = |causal: bool, mask: Option<&Value>| -> Vec<f64> {
            let out = attention(
                &no_limit,
                &attn_attrs(causal),
                true,
                &[Some(&q), Some(&k), Some(&v), mask],
            )
            .unwrap();
            out[0].as_tensor().unwrap().to_f64_vec().unwrap()
        };
        let y = run(false, None);
        assert!((y[0] - 7.0).abs() < 1e-12 && (y[1] - 7.0).abs() < 1e-12);
        // causal: the first query sees only the first key
        let y = run(true, None);
        assert!((y[0] - 4.0).abs() < 1e-12 && (y[1] - 7.0).abs() < 1e-12);
        // a boolean mask that hides the second key
        let m = Value::Tensor(Tensor::from_vec(vec![2], vec![true, false]).unwrap());
        let y = run(false, Some(&m));
        assert_eq!(y, vec![4.0, 4.0]);
        // fully masked rows give zeros, not NaN
        let m = Value::Tensor(Tensor::from_vec(vec![1], vec![false]).unwrap());
        let y = run(false, Some(&m));
        assert_eq!(y, vec![0.0, 0.0]);
    }

    #[test]
    fn bad_inputs_are_errors() {
        let a = t32(&[2, 3], &[0.0; 6]);
        assert!(einsum(&no_limit, "ij,jk", &[&a]).is_err());
        assert!(einsum(&no_limit, "i.j", &[&a]).is_err());
        assert!(einsum(&no_limit, "ijk", &[&a]).is_err());
        assert!(det(&a).is_err());
        let q = Value::Tensor(t32(&[1, 1, 2, 4], &[0.0; 8]));
        let k = Value::Tensor(t32(&[1, 1, 2, 3], &[0.0; 6]));
        let err = attention(
            &no_limit,
            &attn_attrs(false),
            false,
            &[Some(&q), Some(&k), Some(&k)],
        );
        assert!(err.is_err());
        // 3-D inputs need head counts
        let q3 = Value::Tensor(t32(&[1, 2, 4], &[0.0; 8]));
        let err = attention(
            &no_limit,
            &attn_attrs(false),
            false,
            &[Some(&q3), Some(&q3), Some(&q3)],
        );
        assert!(err.is_err());
        let big = |_: usize, _: usize| -> OpResult<()> { Err(op_err!("over the limit")) };
        assert!(matmul(&big, &a, &t32(&[3, 1], &[0.0; 3])).is_err());
    }

    #[test]
    fn rotary_rotates_pairs() {
        // one batch, one head, one position, head size 2: a 90 degree turn
        let x = t32(&[1, 1, 1, 2], &[1.0, 2.0]);
        let cos = t32(&[1, 1, 1], &[0.0]);
        let sin = t32(&[1, 1, 1], &[1.0]);
        let out = rotary(&x, &cos, &sin, None, false, 0, 0).unwrap();
        let t = out[0].as_tensor().unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[-2.0, 1.0]);
    }
}
