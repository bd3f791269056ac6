//! Comparisons (Equal, Less, Greater, LessOrEqual, GreaterOrEqual), boolean
//! logic (And, Or, Xor, Not), Where, IsNaN, IsInf, bit operations (BitShift,
//! BitwiseAnd/Or/Xor/Not) and BitCast.
//!
//! Opset notes: before opset 7 the binary comparisons and logic ops
//! broadcast only with `broadcast=1` (and an `axis` attribute); that form is
//! handled by aligning the second input at `axis`. BitShift follows opset
//! 28's definition of negative and too-wide shift amounts in every version.

use onyx_tensor::{broadcast_shapes, broadcast_strides, for_each_broadcast_index, DType};
use onyx_tensor::{Data, Elem, Tensor, Value};

use super::{broadcast_binary, one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

/// Runs `$body` with `$x`, `$y` bound to both inputs' slices, which must be
/// of the same element type; `$strs` says whether strings are accepted.
macro_rules! same_pair {
    ($a:expr, $b:expr, $strs:expr, ($x:ident, $y:ident) => $body:expr) => {{
        if $a.dtype() != $b.dtype() {
            return Err(op_err!(
                "inputs have different element types {} and {}",
                $a.dtype(),
                $b.dtype()
            ));
        }
        match ($a.data(), $b.data()) {
            (Data::F32($x), Data::F32($y)) => $body,
            (Data::F64($x), Data::F64($y)) => $body,
            (Data::F16($x), Data::F16($y)) => $body,
            (Data::BF16($x), Data::BF16($y)) => $body,
            (Data::I8($x), Data::I8($y)) if !$a.dtype().is_minifloat() => $body,
            (Data::I16($x), Data::I16($y)) => $body,
            (Data::I32($x), Data::I32($y)) => $body,
            (Data::I64($x), Data::I64($y)) => $body,
            (Data::U8($x), Data::U8($y)) if !$a.dtype().is_minifloat() => $body,
            (Data::U16($x), Data::U16($y)) => $body,
            (Data::U32($x), Data::U32($y)) => $body,
            (Data::U64($x), Data::U64($y)) => $body,
            (Data::Bool($x), Data::Bool($y)) => $body,
            (Data::Str($x), Data::Str($y)) if $strs => $body,
            _ => return Err(op_err!("unsupported element type {}", $a.dtype())),
        }
    }};
}

/// Reshapes `b` for the pre-opset-7 `broadcast=1, axis=k` form: its dims
/// line up with `a`'s starting at `axis` (by default, at the end).
fn legacy_align(a: &Tensor, b: &Tensor, axis: Option<i64>) -> OpResult<Tensor> {
    let rank = a.rank();
    let axis = match axis {
        Some(ax) => super::norm_axis(ax, rank.max(1))?,
        None => rank.saturating_sub(b.rank()),
    };
    if axis + b.rank() > rank {
        return Err(op_err!(
            "cannot align shape {:?} to {:?} at axis {axis}",
            b.shape(),
            a.shape()
        ));
    }
    let mut shape = b.shape().to_vec();
    shape.extend(std::iter::repeat_n(1, rank - axis - b.rank()));
    Ok(b.clone().reshape(shape)?)
}

/// The second input, aligned for the legacy broadcast form when asked for.
struct Legacy {
    on: bool,
    axis: Option<i64>,
}

impl Legacy {
    fn read(ctx: &BuildCtx) -> OpResult<Legacy> {
        Ok(Legacy {
            on: ctx.opset < 7 && ctx.node.attr_int("broadcast")?.unwrap_or(0) == 1,
            axis: ctx.node.attr_int("axis")?,
        })
    }

    fn rhs(&self, a: &Tensor, b: &Tensor) -> OpResult<Option<Tensor>> {
        if self.on {
            Ok(Some(legacy_align(a, b, self.axis)?))
        } else {
            Ok(None)
        }
    }
}

/// Vets the size of the broadcast of `a` and `b` before an output of
/// `elem_bytes`-byte elements is allocated.
pub(crate) fn check_broadcast(
    ctx: &RunCtx,
    a: &Tensor,
    b: &Tensor,
    elem_bytes: usize,
) -> OpResult<()> {
    let shape = broadcast_shapes(&[a.shape(), b.shape()])?;
    let n = onyx_tensor::numel(&shape)
        .ok_or_else(|| op_err!("broadcast shape {shape:?} is too large"))?;
    ctx.check_alloc(n, elem_bytes)
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Cmp {
    Eq,
    Lt,
    Gt,
    Le,
    Ge,
}

impl Cmp {
    fn apply<T: PartialOrd>(self, a: &T, b: &T) -> bool {
        match self {
            Cmp::Eq => a == b,
            Cmp::Lt => a < b,
            Cmp::Gt => a > b,
            Cmp::Le => a <= b,
            Cmp::Ge => a >= b,
        }
    }
}

fn compare(op: Cmp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    let strings = op == Cmp::Eq;
    same_pair!(a, b, strings, (x, y) => {
        let (v, shape) = broadcast_binary_ref(x, a.shape(), y, b.shape(), |p, q| op.apply(p, q))?;
        Ok(Tensor::from_vec(shape, v)?)
    })
}

/// Like `broadcast_binary` but passing references (no clones of strings).
fn broadcast_binary_ref<A, B, O>(
    a: &[A],
    a_shape: &[usize],
    b: &[B],
    b_shape: &[usize],
    f: impl Fn(&A, &B) -> O,
) -> OpResult<(Vec<O>, Vec<usize>)> {
    let out_shape = broadcast_shapes(&[a_shape, b_shape])?;
    let n = onyx_tensor::numel(&out_shape)
        .ok_or_else(|| op_err!("broadcast shape {out_shape:?} is too large"))?;
    let sa = broadcast_strides(a_shape, &out_shape);
    let sb = broadcast_strides(b_shape, &out_shape);
    let mut out = Vec::with_capacity(n);
    let mut bad = false;
    for_each_broadcast_index(&out_shape, [&sa, &sb], |_, [ia, ib]| {
        match (a.get(ia), b.get(ib)) {
            (Some(p), Some(q)) => out.push(f(p, q)),
            _ => bad = true,
        }
    });
    if bad {
        return Err(op_err!("input data does not match its shape"));
    }
    Ok((out, out_shape))
}

fn build_compare(ctx: &BuildCtx, op: Cmp) -> OpResult<Box<dyn Kernel>> {
    let legacy = Legacy::read(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let a = tensor_in(inputs, 0)?;
        let b = tensor_in(inputs, 1)?;
        match legacy.rhs(a, b)? {
            Some(b) => {
                check_broadcast(ctx, a, &b, 1)?;
                one(compare(op, a, &b)?)
            }
            None => {
                check_broadcast(ctx, a, b, 1)?;
                one(compare(op, a, b)?)
            }
        }
    }))
}

fn bools<'a>(t: &'a Tensor, what: &str) -> OpResult<&'a [bool]> {
    t.as_slice::<bool>()
        .map_err(|_| op_err!("{what} should be bool but is {}", t.dtype()))
}

fn logical(a: &Tensor, b: &Tensor, f: fn(bool, bool) -> bool) -> OpResult<Tensor> {
    let x = bools(a, "input 0")?;
    let y = bools(b, "input 1")?;
    let (v, shape) = broadcast_binary(x, a.shape(), y, b.shape(), f)?;
    Ok(Tensor::from_vec(shape, v)?)
}

fn build_logical(ctx: &BuildCtx, f: fn(bool, bool) -> bool) -> OpResult<Box<dyn Kernel>> {
    let legacy = Legacy::read(ctx)?;
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let a = tensor_in(inputs, 0)?;
        let b = tensor_in(inputs, 1)?;
        match legacy.rhs(a, b)? {
            Some(b) => {
                check_broadcast(ctx, a, &b, 1)?;
                one(logical(a, &b, f)?)
            }
            None => {
                check_broadcast(ctx, a, b, 1)?;
                one(logical(a, b, f)?)
            }
        }
    }))
}

/// Where: picks from X where the condition holds, else from Y; `check`
/// vets the output's size (elements, bytes each) before it is allocated.
fn where_op(
    check: impl Fn(usize, usize) -> OpResult<()>,
    c: &Tensor,
    x: &Tensor,
    y: &Tensor,
) -> OpResult<Tensor> {
    let cond = bools(c, "condition")?;
    if x.dtype() != y.dtype() {
        return Err(op_err!(
            "X and Y have different element types {} and {}",
            x.dtype(),
            y.dtype()
        ));
    }
    let shape = broadcast_shapes(&[c.shape(), x.shape(), y.shape()])?;
    let n = onyx_tensor::numel(&shape)
        .ok_or_else(|| op_err!("broadcast shape {shape:?} is too large"))?;
    check(n, x.dtype().size_in_memory())?;
    let sc = broadcast_strides(c.shape(), &shape);
    let sx = broadcast_strides(x.shape(), &shape);
    let sy = broadcast_strides(y.shape(), &shape);
    fn pick<T: Clone>(
        shape: &[usize],
        strides: [&[usize]; 3],
        cond: &[bool],
        x: &[T],
        y: &[T],
        n: usize,
    ) -> OpResult<Vec<T>> {
        let mut out = Vec::with_capacity(n);
        let mut bad = false;
        for_each_broadcast_index(shape, strides, |_, [ic, ix, iy]| {
            let v = match cond.get(ic) {
                Some(true) => x.get(ix),
                Some(false) => y.get(iy),
                None => None,
            };
            match v {
                Some(v) => out.push(v.clone()),
                None => bad = true,
            }
        });
        if bad {
            return Err(op_err!("input data does not match its shape"));
        }
        Ok(out)
    }
    let strides = [sc.as_slice(), sx.as_slice(), sy.as_slice()];
    let data = match (x.data(), y.data()) {
        (Data::F32(a), Data::F32(b)) => Data::F32(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::F64(a), Data::F64(b)) => Data::F64(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::F16(a), Data::F16(b)) => Data::F16(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::BF16(a), Data::BF16(b)) => Data::BF16(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::I8(a), Data::I8(b)) => Data::I8(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::I16(a), Data::I16(b)) => Data::I16(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::I32(a), Data::I32(b)) => Data::I32(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::I64(a), Data::I64(b)) => Data::I64(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::U8(a), Data::U8(b)) => Data::U8(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::U16(a), Data::U16(b)) => Data::U16(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::U32(a), Data::U32(b)) => Data::U32(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::U64(a), Data::U64(b)) => Data::U64(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::Bool(a), Data::Bool(b)) => Data::Bool(pick(&shape, strides, cond, a, b, n)?.into()),
        (Data::Str(a), Data::Str(b)) => Data::Str(pick(&shape, strides, cond, a, b, n)?.into()),
        _ => return Err(op_err!("unsupported element type {}", x.dtype())),
    };
    Ok(Tensor::new(x.dtype(), shape, data)?)
}

/// Floats (including minifloats) widened to f64, for IsNaN and IsInf.
fn float_values(t: &Tensor) -> OpResult<Vec<f64>> {
    if !t.dtype().is_float() {
        return Err(op_err!(
            "expected a float tensor but got element type {}",
            t.dtype()
        ));
    }
    Ok(t.to_f64_vec()?)
}

/// Shifts and bitwise logic on one integer type.
trait Bits: Copy + Send + Sync + 'static {
    fn shift_left(self, by: Self) -> Self;
    fn shift_right(self, by: Self) -> Self;
    fn and(self, o: Self) -> Self;
    fn or(self, o: Self) -> Self;
    fn xor(self, o: Self) -> Self;
    fn not(self) -> Self;
}

macro_rules! bits {
    ($($t:ty),*) => {$(
        impl Bits for $t {
            fn shift_left(self, by: Self) -> Self {
                match u32::try_from(by) {
                    Ok(s) if s < <$t>::BITS => self << s,
                    _ => 0,
                }
            }
            #[allow(unused_comparisons)]
            fn shift_right(self, by: Self) -> Self {
                match u32::try_from(by) {
                    Ok(s) if s < <$t>::BITS => self >> s,
                    // only the sign fill is left: -1 for negative values
                    _ => if self < 0 { self >> (<$t>::BITS - 1) } else { 0 },
                }
            }
            fn and(self, o: Self) -> Self { self & o }
            fn or(self, o: Self) -> Self { self | o }
            fn xor(self, o: Self) -> Self { self ^ o }
            fn not(self) -> Self { !self }
        }
    )*};
}
bits!(i8, i16, i32, i64, u8, u16, u32, u64);

#[derive(Clone, Copy, Debug, PartialEq)]
enum BitOp {
    Left,
    Right,
    And,
    Or,
    Xor,
}

impl BitOp {
    fn apply<T: Bits>(self, a: T, b: T) -> T {
        match self {
            BitOp::Left => a.shift_left(b),
            BitOp::Right => a.shift_right(b),
            BitOp::And => a.and(b),
            BitOp::Or => a.or(b),
            BitOp::Xor => a.xor(b),
        }
    }
}

/// Runs `$body` for each integer storage, binding both inputs' slices.
macro_rules! int_pair {
    ($a:expr, $b:expr, ($x:ident, $y:ident) => $body:expr) => {{
        if $a.dtype() != $b.dtype() {
            return Err(op_err!(
                "inputs have different element types {} and {}",
                $a.dtype(),
                $b.dtype()
            ));
        }
        match ($a.data(), $b.data()) {
            (Data::I8($x), Data::I8($y)) if $a.dtype() == DType::Int8 => $body,
            (Data::I16($x), Data::I16($y)) => $body,
            (Data::I32($x), Data::I32($y)) => $body,
            (Data::I64($x), Data::I64($y)) => $body,
            (Data::U8($x), Data::U8($y)) if $a.dtype() == DType::Uint8 => $body,
            (Data::U16($x), Data::U16($y)) => $body,
            (Data::U32($x), Data::U32($y)) => $body,
            (Data::U64($x), Data::U64($y)) => $body,
            _ => {
                return Err(op_err!(
                    "expected integer inputs but got element type {}",
                    $a.dtype()
                ))
            }
        }
    }};
}

fn bit_binary(op: BitOp, a: &Tensor, b: &Tensor) -> OpResult<Tensor> {
    int_pair!(a, b, (x, y) => {
        let (v, shape) = broadcast_binary(x, a.shape(), y, b.shape(), |p, q| op.apply(p, q))?;
        Ok(Tensor::new(a.dtype(), shape, Elem::into_data(v))?)
    })
}

fn bitwise_not(t: &Tensor) -> OpResult<Tensor> {
    fn go<T: Bits + Elem>(v: &[T]) -> Data {
        T::into_data(v.iter().map(|&x| x.not()).collect())
    }
    let data = match t.data() {
        Data::I8(v) if t.dtype() == DType::Int8 => go(v),
        Data::I16(v) => go(v),
        Data::I32(v) => go(v),
        Data::I64(v) => go(v),
        Data::U8(v) if t.dtype() == DType::Uint8 => go(v),
        Data::U16(v) => go(v),
        Data::U32(v) => go(v),
        Data::U64(v) => go(v),
        _ => {
            return Err(op_err!(
                "expected an integer tensor but got element type {}",
                t.dtype()
            ))
        }
    };
    Ok(Tensor::new(t.dtype(), t.shape().to_vec(), data)?)
}

/// Width in bits of one element of `d` as ONNX defines it.
fn bit_width(d: DType) -> Option<u32> {
    Some(match d {
        DType::Double | DType::Int64 | DType::Uint64 => 64,
        DType::Float | DType::Int32 | DType::Uint32 => 32,
        DType::Float16 | DType::BFloat16 | DType::Int16 | DType::Uint16 => 16,
        DType::Int8
        | DType::Uint8
        | DType::Bool
        | DType::Float8E4M3FN
        | DType::Float8E4M3FNUZ
        | DType::Float8E5M2
        | DType::Float8E5M2FNUZ
        | DType::Float8E8M0 => 8,
        DType::Int4 | DType::Uint4 | DType::Float4E2M1 => 4,
        DType::Int2 | DType::Uint2 => 2,
        DType::String | DType::Complex64 | DType::Complex128 => return None,
    })
}

/// The raw bit pattern of every element, in the low bits of a u64.
fn to_bits(t: &Tensor, width: u32) -> OpResult<Vec<u64>> {
    let mask = if width == 64 {
        u64::MAX
    } else {
        (1u64 << width) - 1
    };
    Ok(match t.data() {
        Data::F32(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        Data::F64(v) => v.iter().map(|x| x.to_bits()).collect(),
        Data::F16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        Data::BF16(v) => v.iter().map(|x| u64::from(x.to_bits())).collect(),
        // sign-extended small ints keep only their own bits
        Data::I8(v) => v.iter().map(|&x| u64::from(x as u8) & mask).collect(),
        Data::I16(v) => v.iter().map(|&x| u64::from(x as u16)).collect(),
        Data::I32(v) => v.iter().map(|&x| u64::from(x as u32)).collect(),
        Data::I64(v) => v.iter().map(|&x| x as u64).collect(),
        Data::U8(v) => v.iter().map(|&x| u64::from(x) & mask).collect(),
        Data::U16(v) => v.iter().map(|&x| u64::from(x)).collect(),
        Data::U32(v) => v.iter().map(|&x| u64::from(x)).collect(),
        Data::U64(v) => v.to_vec(),
        Data::Bool(v) => v.iter().map(|&x| u64::from(x)).collect(),
        Data::Str(_) => return Err(op_err!("BitCast does not accept strings")),
    })
}

/// Elements of `to` from their bit patterns (the low `width` bits of each u64).
fn from_bits(to: DType, width: u32, bits: &[u64]) -> OpResult<Data> {
    use onyx_tensor::{bf16, f16};
    Ok(match Data::zeros(to, 0)? {
        Data::F32(_) => Data::F32(bits.iter().map(|&b| f32::from_bits(b as u32)).collect()),
        Data::F64(_) => Data::F64(bits.iter().map(|&b| f64::from_bits(b)).collect()),
        Data::F16(_) => Data::F16(bits.iter().map(|&b| f16::from_bits(b as u16)).collect()),
        Data::BF16(_) => Data::BF16(bits.iter().map(|&b| bf16::from_bits(b as u16)).collect()),
        Data::I8(_) => {
            // sign-extend from `width` bits
            let shift = 8 - width;
            Data::I8(
                bits.iter()
                    .map(|&b| ((b as u8) << shift) as i8 >> shift)
                    .collect(),
            )
        }
        Data::I16(_) => Data::I16(bits.iter().map(|&b| b as u16 as i16).collect()),
        Data::I32(_) => Data::I32(bits.iter().map(|&b| b as u32 as i32).collect()),
        Data::I64(_) => Data::I64(bits.iter().map(|&b| b as i64).collect()),
        Data::U8(_) => Data::U8(bits.iter().map(|&b| b as u8).collect()),
        Data::U16(_) => Data::U16(bits.iter().map(|&b| b as u16).collect()),
        Data::U32(_) => Data::U32(bits.iter().map(|&b| b as u32).collect()),
        Data::U64(_) => Data::U64(bits.to_vec().into()),
        Data::Bool(_) => Data::Bool(bits.iter().map(|&b| b != 0).collect()),
        Data::Str(_) => return Err(op_err!("BitCast cannot produce strings")),
    })
}

fn bitcast(t: &Tensor, to: DType) -> OpResult<Tensor> {
    let (Some(wf), Some(wt)) = (bit_width(t.dtype()), bit_width(to)) else {
        return Err(op_err!("BitCast does not support {} to {to}", t.dtype()));
    };
    if wf != wt {
        return Err(op_err!(
            "BitCast needs types of one bit width but {} has {wf} bits and {to} has {wt}",
            t.dtype()
        ));
    }
    let bits = to_bits(t, wf)?;
    Ok(Tensor::new(
        to,
        t.shape().to_vec(),
        from_bits(to, wt, &bits)?,
    )?)
}

fn build_bitcast(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let code = ctx
        .node
        .attr_int("to")?
        .ok_or_else(|| op_err!("attribute 'to' is required"))?;
    let to = i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("attribute 'to' names unknown element type {code}"))?;
    Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
        one(bitcast(tensor_in(inputs, 0)?, to)?)
    }))
}

fn build_bitshift(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let op = match ctx.node.attr_string("direction")?.as_deref() {
        Some("LEFT") => BitOp::Left,
        Some("RIGHT") => BitOp::Right,
        Some(other) => {
            return Err(op_err!(
                "attribute 'direction' should be LEFT or RIGHT but is \"{other}\""
            ))
        }
        None => return Err(op_err!("attribute 'direction' is required")),
    };
    build_bitwise(op)
}

fn build_bitwise(op: BitOp) -> OpResult<Box<dyn Kernel>> {
    Ok(Box::new(move |ctx: &RunCtx, inputs: &[Option<&Value>]| {
        let a = tensor_in(inputs, 0)?;
        let b = tensor_in(inputs, 1)?;
        check_broadcast(ctx, a, b, a.dtype().size_in_memory())?;
        one(bit_binary(op, a, b)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "Equal", |c| build_compare(c, Cmp::Eq));
    r.add("", "Less", |c| build_compare(c, Cmp::Lt));
    r.add("", "Greater", |c| build_compare(c, Cmp::Gt));
    r.add("", "LessOrEqual", |c| build_compare(c, Cmp::Le));
    r.add("", "GreaterOrEqual", |c| build_compare(c, Cmp::Ge));
    r.add("", "And", |c| build_logical(c, |a, b| a && b));
    r.add("", "Or", |c| build_logical(c, |a, b| a || b));
    r.add("", "Xor", |c| build_logical(c, |a, b| a != b));
    r.add("", "Not", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            let v: Vec<bool> = bools(t, "input 0")?.iter().map(|&x| !x).collect();
            one(Tensor::from_vec(t.shape().to_vec(), v)?)
        }))
    });
    r.add("", "Where", |_| {
        Ok(Box::new(|ctx: &RunCtx, inputs: &[Option<&Value>]| {
            one(where_op(
                |n, b| ctx.check_alloc(n, b),
                tensor_in(inputs, 0)?,
                tensor_in(inputs, 1)?,
                tensor_in(inputs, 2)?,
            )?)
        }))
    });
    r.add("", "IsNaN", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            let v: Vec<bool> = float_values(t)?.iter().map(|x| x.is_nan()).collect();
            one(Tensor::from_vec(t.shape().to_vec(), v)?)
        }))
    });
    r.add("", "IsInf", |ctx| {
        let pos = ctx.node.attr_int("detect_positive")?.unwrap_or(1) != 0;
        let neg = ctx.node.attr_int("detect_negative")?.unwrap_or(1) != 0;
        Ok(Box::new(move |_: &RunCtx, inputs: &[Option<&Value>]| {
            let t = tensor_in(inputs, 0)?;
            let v: Vec<bool> = float_values(t)?
                .iter()
                .map(|&x| (pos && x == f64::INFINITY) || (neg && x == f64::NEG_INFINITY))
                .collect();
            one(Tensor::from_vec(t.shape().to_vec(), v)?)
        }))
    });
    r.add("", "BitShift", build_bitshift);
    r.add("", "BitwiseAnd", |_| build_bitwise(BitOp::And));
    r.add("", "BitwiseOr", |_| build_bitwise(BitOp::Or));
    r.add("", "BitwiseXor", |_| build_bitwise(BitOp::Xor));
    r.add("", "BitwiseNot", |_| {
        Ok(Box::new(|_: &RunCtx, inputs: &[Option<&Value>]| {
            one(bitwise_not(tensor_in(inputs, 0)?)?)
        }))
    });
    r.add("", "BitCast", build_bitcast);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparisons_broadcast() {
        let a = Tensor::from_vec(vec![2, 1], vec![1i32, 3]).unwrap();
        let b = Tensor::from_vec(vec![3], vec![1i32, 2, 3]).unwrap();
        let lt = compare(Cmp::Lt, &a, &b).unwrap();
        assert_eq!(lt.shape(), &[2, 3]);
        assert_eq!(
            lt.as_slice::<bool>().unwrap(),
            &[false, true, true, false, false, false]
        );
        let ge = compare(Cmp::Ge, &a, &b).unwrap();
        assert_eq!(
            ge.as_slice::<bool>().unwrap(),
            &[true, false, false, true, true, true]
        );
        let s = Tensor::from_vec(vec![2], vec!["a".to_string(), "b".to_string()]).unwrap();
        let t = Tensor::from_vec(vec![], vec!["b".to_string()]).unwrap();
        let eq = compare(Cmp::Eq, &s, &t).unwrap();
        assert_eq!(eq.as_slice::<bool>().unwrap(), &[false, true]);
        assert!(compare(Cmp::Lt, &s, &t).is_err());
        assert!(compare(Cmp::Eq, &a, &s).is_err());
    }

    #[test]
    fn legacy_broadcast_aligns_at_axis() {
        let a = Tensor::from_vec(vec![2, 3, 2], vec![0i64; 12]).unwrap();
        let b = Tensor::from_vec(vec![3], vec![0i64, 1, 2]).unwrap();
        assert_eq!(legacy_align(&a, &b, Some(1)).unwrap().shape(), &[3, 1]);
        let b2 = Tensor::from_vec(vec![3, 2], vec![0i64; 6]).unwrap();
        assert_eq!(legacy_align(&a, &b2, None).unwrap().shape(), &[3, 2]);
        assert!(legacy_align(&a, &b2, Some(2)).is_err());
        assert!(legacy_align(&a, &b, Some(5)).is_err());
    }

    #[test]
    fn where_and_logic() {
        let c = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
        let x = Tensor::from_vec(vec![2, 2], vec![1i64, 2, 3, 4]).unwrap();
        let y = Tensor::scalar(0i64);
        let ok = |_: usize, _: usize| Ok(());
        let w = where_op(ok, &c, &x, &y).unwrap();
        assert_eq!(w.shape(), &[2, 2]);
        assert_eq!(w.as_slice::<i64>().unwrap(), &[1, 0, 3, 0]);
        let xs = Tensor::from_vec(vec![1], vec!["yes".to_string()]).unwrap();
        let ys = Tensor::from_vec(vec![1], vec!["no".to_string()]).unwrap();
        let w = where_op(ok, &c, &xs, &ys).unwrap();
        assert_eq!(w.as_slice::<String>().unwrap(), &["yes", "no"]);
        assert!(where_op(ok, &c, &x, &xs).is_err());
        assert!(where_op(|_, _| Err(op_err!("too big")), &c, &x, &y).is_err());
        let l = logical(&c, &Tensor::scalar(true), |a, b| a != b).unwrap();
        assert_eq!(l.as_slice::<bool>().unwrap(), &[false, true]);
        assert!(logical(&c, &x, |a, b| a && b).is_err());
    }

    #[test]
    fn shifts_and_bits() {
        let a = Tensor::from_vec(vec![4], vec![-8i8, 64, 1, -1]).unwrap();
        let b = Tensor::from_vec(vec![4], vec![1i8, 1, 8, -1]).unwrap();
        let l = bit_binary(BitOp::Left, &a, &b).unwrap();
        assert_eq!(l.as_slice::<i8>().unwrap(), &[-16, -128, 0, 0]);
        let r = bit_binary(BitOp::Right, &a, &b).unwrap();
        assert_eq!(r.as_slice::<i8>().unwrap(), &[-4, 32, 0, -1]);
        let x = Tensor::from_vec(vec![2], vec![0b1100u8, 0b1010]).unwrap();
        let y = Tensor::scalar(0b0110u8);
        let and = bit_binary(BitOp::And, &x, &y).unwrap();
        assert_eq!(and.as_slice::<u8>().unwrap(), &[0b0100, 0b0010]);
        let not = bitwise_not(&x).unwrap();
        assert_eq!(not.as_slice::<u8>().unwrap(), &[0b1111_0011, 0b1111_0101]);
        assert!(bit_binary(BitOp::Or, &x, &a).is_err());
    }

    #[test]
    fn bitcasts() {
        let f = Tensor::from_vec(vec![2], vec![1.0f32, -2.0]).unwrap();
        let i = bitcast(&f, DType::Int32).unwrap();
        assert_eq!(
            i.as_slice::<i32>().unwrap(),
            &[0x3f80_0000, 0xc000_0000u32 as i32]
        );
        assert_eq!(bitcast(&i, DType::Float).unwrap(), f);
        assert!(bitcast(&f, DType::Int64).is_err());
        let n = Tensor::new(DType::Int4, vec![2], Data::I8(vec![-1, 7].into())).unwrap();
        let u = bitcast(&n, DType::Uint4).unwrap();
        assert_eq!(u.into_data(), Data::U8(vec![15, 7].into()));
        let b = Tensor::from_vec(vec![2], vec![true, false]).unwrap();
        let u8s = bitcast(&b, DType::Uint8).unwrap();
        assert_eq!(u8s.as_slice::<u8>().unwrap(), &[1, 0]);
    }
}
