//! Cast and CastLike between every pair of element types.
//!
//! Integers convert exactly through i128 and wrap like C casts; floats go
//! through f64 and truncate toward zero into integers (saturating, NaN -> 0);
//! float8/float4 targets round to nearest even and honour `saturate`
//! (opset 19+); float8e8m0 rounds by `round_mode` (opset 25+, default up).
//! 4- and 2-bit integer targets keep the low bits of integers (two's
//! complement, like the wider integer casts) and truncate floats, with
//! out-of-range floats becoming 0, as ONNX's reference (ml_dtypes) does.

use onyx_tensor::{bf16, f16, minifloat_from_f32, DType, Data, Tensor, Value};

use super::{one, tensor_in, BuildCtx, Kernel, OpResult, Registry};
use crate::op_err;

/// Elements widened to a type that holds every source value exactly.
enum Wide {
    Int(Vec<i128>),
    Float(Vec<f64>),
    Str(Vec<String>),
}

fn widen(t: &Tensor) -> OpResult<Wide> {
    if t.dtype().is_float() {
        return Ok(Wide::Float(t.to_f64_vec()?));
    }
    Ok(match t.data() {
        Data::Str(v) => Wide::Str(v.to_vec()),
        Data::U64(v) => Wide::Int(v.iter().map(|&x| i128::from(x)).collect()),
        _ => Wide::Int(t.to_i64_vec()?.into_iter().map(i128::from).collect()),
    })
}

/// Parses a string element the way ONNX's Cast does (numpy's float parsing).
fn parse_number(s: &str) -> f64 {
    let t = s.trim();
    match t.to_ascii_lowercase().as_str() {
        "nan" | "+nan" | "-nan" => f64::NAN,
        "inf" | "+inf" | "infinity" | "+infinity" => f64::INFINITY,
        "-inf" | "-infinity" => f64::NEG_INFINITY,
        _ => t.parse::<f64>().unwrap_or(f64::NAN),
    }
}

fn float_to_string(x: f64, dtype: DType) -> String {
    if x.is_nan() {
        return "NaN".into();
    }
    if x.is_infinite() {
        return if x > 0.0 { "INF".into() } else { "-INF".into() };
    }
    if dtype == DType::Double {
        format!("{x}")
    } else {
        format!("{}", x as f32)
    }
}

/// Width in bits of the sub-byte integer types.
fn small_int_bits(dtype: DType) -> Option<u32> {
    match dtype {
        DType::Int4 | DType::Uint4 => Some(4),
        DType::Int2 | DType::Uint2 => Some(2),
        _ => None,
    }
}

/// How float8e8m0 (a bare power of two) rounds values between powers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RoundMode {
    Up,
    Down,
    Nearest,
}

/// Encodes float8e8m0 from an f32's exponent bits, as ONNX specifies.
fn to_e8m0(x: f32, saturate: bool, mode: RoundMode) -> u8 {
    let bits = x.to_bits();
    let exponent = (bits >> 23) & 0xFF;
    if exponent == 0xFF {
        return 0xFF;
    }
    let fraction = bits & 0x7F_FFFF;
    let round_up = match mode {
        RoundMode::Down => false,
        RoundMode::Up => fraction > 0,
        RoundMode::Nearest => {
            let guard = bits & 0x40_0000 != 0;
            let rest = bits & 0x3F_FFFF != 0;
            guard && (rest || exponent > 0)
        }
    };
    if round_up && !(saturate && exponent == 0xFE) {
        (exponent + 1) as u8
    } else {
        exponent as u8
    }
}

/// Converts a tensor to another element type.
pub fn cast_tensor(t: &Tensor, to: DType, saturate: bool) -> OpResult<Tensor> {
    cast_with_round_mode(t, to, saturate, RoundMode::Up)
}

/// `cast_tensor` with the rounding mode for float8e8m0 targets.
pub fn cast_with_round_mode(
    t: &Tensor,
    to: DType,
    saturate: bool,
    mode: RoundMode,
) -> OpResult<Tensor> {
    if t.dtype() == to {
        return Ok(t.clone());
    }
    let from = t.dtype();
    let wide = widen(t)?;
    let as_f64: Vec<f64> = match &wide {
        Wide::Int(v) => v.iter().map(|&x| x as f64).collect(),
        Wide::Float(v) => v.clone(),
        Wide::Str(v) => v.iter().map(|s| parse_number(s)).collect(),
    };
    // integer view of the source: exact for integers, truncated for floats
    let as_int = || -> Vec<i128> {
        match &wide {
            Wide::Int(v) => v.clone(),
            _ => as_f64
                .iter()
                .map(|&x| if x.is_nan() { 0 } else { x.trunc() as i128 })
                .collect(),
        }
    };
    let shape = t.shape().to_vec();
    if let Some(bits) = small_int_bits(to) {
        let signed = to.is_signed_int();
        let (lo, hi) = if signed {
            (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1)
        } else {
            (0, (1i128 << bits) - 1)
        };
        let src: Vec<i128> = match &wide {
            Wide::Int(v) => v.clone(),
            _ => as_f64
                .iter()
                .map(|&x| {
                    let t = x.trunc();
                    if t.is_nan() || t < lo as f64 || t > hi as f64 {
                        0
                    } else {
                        t as i128
                    }
                })
                .collect(),
        };
        let shift = 8 - bits;
        let data = if signed {
            Data::I8(
                src.into_iter()
                    .map(|x| ((x as u8) << shift) as i8 >> shift)
                    .collect(),
            )
        } else {
            Data::U8(
                src.into_iter()
                    .map(|x| (x as u8) & ((1 << bits) - 1))
                    .collect(),
            )
        };
        return Ok(Tensor::new(to, shape, data)?);
    }
    if to == DType::Float8E8M0 {
        let codes = as_f64
            .iter()
            .map(|&x| to_e8m0(x as f32, saturate, mode))
            .collect();
        return Ok(Tensor::new(to, shape, Data::U8(codes))?);
    }
    if to.is_minifloat() {
        let codes = as_f64
            .iter()
            .map(|&x| minifloat_from_f32(to, x as f32, saturate).unwrap_or(0))
            .collect();
        return Ok(Tensor::new(to, shape, Data::U8(codes))?);
    }
    let data = match to {
        DType::Float => Data::F32(as_f64.iter().map(|&x| x as f32).collect()),
        DType::Double => Data::F64(as_f64.into()),
        DType::Float16 => Data::F16(as_f64.iter().map(|&x| f16::from_f64(x)).collect()),
        DType::BFloat16 => Data::BF16(as_f64.iter().map(|&x| bf16::from_f64(x)).collect()),
        DType::Bool => Data::Bool(as_f64.iter().map(|&x| x != 0.0).collect()),
        DType::Int8 => Data::I8(as_int().into_iter().map(|x| x as i8).collect()),
        DType::Int16 => Data::I16(as_int().into_iter().map(|x| x as i16).collect()),
        DType::Int32 => Data::I32(as_int().into_iter().map(|x| x as i32).collect()),
        DType::Int64 => Data::I64(as_int().into_iter().map(|x| x as i64).collect()),
        DType::Uint8 => Data::U8(as_int().into_iter().map(|x| x as u8).collect()),
        DType::Uint16 => Data::U16(as_int().into_iter().map(|x| x as u16).collect()),
        DType::Uint32 => Data::U32(as_int().into_iter().map(|x| x as u32).collect()),
        DType::Uint64 => Data::U64(as_int().into_iter().map(|x| x as u64).collect()),
        DType::String => Data::Str(match &wide {
            Wide::Int(v) if from == DType::Bool => v
                .iter()
                .map(|&x| if x != 0 { "1".into() } else { "0".into() })
                .collect(),
            Wide::Int(v) => v.iter().map(|x| x.to_string()).collect(),
            Wide::Float(v) => v.iter().map(|&x| float_to_string(x, from)).collect(),
            Wide::Str(v) => v.clone().into(),
        }),
        _ => return Err(op_err!("cannot cast {from} to {to}")),
    };
    Ok(Tensor::new(to, shape, data)?)
}

fn target_dtype(code: i64) -> OpResult<DType> {
    i32::try_from(code)
        .ok()
        .and_then(DType::from_onnx)
        .ok_or_else(|| op_err!("attribute 'to' names unknown element type {code}"))
}

fn build_cast(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let to = match ctx.node.attrs.get("to") {
        Some(crate::ir::Attr::Int(code)) => target_dtype(*code)?,
        // opset 1-5 named the type as a string, e.g. "FLOAT"
        Some(crate::ir::Attr::String(name)) => {
            let lower = name.to_ascii_lowercase();
            let lower = if lower == "float32" {
                "float".to_string()
            } else {
                lower
            };
            (1..=26)
                .filter_map(DType::from_onnx)
                .find(|d| d.name() == lower)
                .ok_or_else(|| op_err!("attribute 'to' names unknown type '{name}'"))?
        }
        _ => return Err(op_err!("attribute 'to' is required")),
    };
    let saturate = ctx.node.attr_int("saturate")?.unwrap_or(1) != 0;
    let mode = round_mode(ctx)?;
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            one(cast_with_round_mode(
                tensor_in(inputs, 0)?,
                to,
                saturate,
                mode,
            )?)
        },
    ))
}

fn round_mode(ctx: &BuildCtx) -> OpResult<RoundMode> {
    Ok(
        match ctx
            .node
            .attr_string("round_mode")?
            .as_deref()
            .unwrap_or("up")
        {
            "up" => RoundMode::Up,
            "down" => RoundMode::Down,
            "nearest" => RoundMode::Nearest,
            other => return Err(op_err!("unknown round_mode '{other}'")),
        },
    )
}

fn build_cast_like(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let saturate = ctx.node.attr_int("saturate")?.unwrap_or(1) != 0;
    let mode = round_mode(ctx)?;
    Ok(Box::new(
        move |_: &super::RunCtx, inputs: &[Option<&Value>]| {
            let target = tensor_in(inputs, 1)?.dtype();
            one(cast_with_round_mode(
                tensor_in(inputs, 0)?,
                target,
                saturate,
                mode,
            )?)
        },
    ))
}

pub fn register(r: &mut Registry) {
    r.add("", "Cast", build_cast);
    r.add("", "CastLike", build_cast_like);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn casts_between_kinds() {
        let f = Tensor::from_vec(vec![4], vec![1.7f32, -1.7, 300.0, f32::NAN]).unwrap();
        let i = cast_tensor(&f, DType::Int32, true).unwrap();
        assert_eq!(i.as_slice::<i32>().unwrap(), &[1, -1, 300, 0]);
        let u8s = cast_tensor(&i, DType::Uint8, true).unwrap();
        assert_eq!(u8s.as_slice::<u8>().unwrap(), &[1, 255, 44, 0]);
        let b = cast_tensor(&f, DType::Bool, true).unwrap();
        assert_eq!(b.as_slice::<bool>().unwrap(), &[true, true, true, true]);
        let s = Tensor::from_vec(vec![2], vec!["3.5".to_string(), "-inf".to_string()]).unwrap();
        let sf = cast_tensor(&s, DType::Float, true).unwrap();
        assert_eq!(sf.as_slice::<f32>().unwrap(), &[3.5, f32::NEG_INFINITY]);
        // integers wrap to the low four bits: 300 = 0x12C -> 0xC = -4
        let i4 = cast_tensor(&i, DType::Int4, true).unwrap();
        assert_eq!(i4.into_data(), Data::I8(vec![1, -1, -4, 0].into()));
        // floats truncate, and out-of-range floats become 0
        let f4 = cast_tensor(&f, DType::Int4, true).unwrap();
        assert_eq!(f4.into_data(), Data::I8(vec![1, -1, 0, 0].into()));
        let e8 = Tensor::from_vec(vec![3], vec![1.1f32, 2.0, 0.75]).unwrap();
        let up = cast_with_round_mode(&e8, DType::Float8E8M0, true, RoundMode::Up).unwrap();
        assert_eq!(up.as_slice::<u8>().unwrap(), &[128, 128, 127]);
        let down = cast_with_round_mode(&e8, DType::Float8E8M0, true, RoundMode::Down).unwrap();
        assert_eq!(down.as_slice::<u8>().unwrap(), &[127, 128, 126]);
        let f8 = cast_tensor(&f, DType::Float8E4M3FN, true).unwrap();
        assert_eq!(f8.as_slice::<u8>().unwrap()[2], 0x79); // 288, the nearest to 300
    }
}
