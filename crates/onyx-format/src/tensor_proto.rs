//! `TensorProto` <-> `Tensor`.

use onyx_tensor::{bf16, f16, numel, DType, Data, Tensor};

use crate::onnx::tensor_proto::DataLocation;
use crate::onnx::TensorProto;
use crate::{ExternalDataDir, FormatError};

/// Elements per byte for the packed sub-byte types, else `None`.
fn packing(dtype: DType) -> Option<usize> {
    match dtype {
        DType::Int4 | DType::Uint4 | DType::Float4E2M1 => Some(2),
        DType::Int2 | DType::Uint2 => Some(4),
        _ => None,
    }
}

/// Splits packed bytes into one element per byte, low bits first; signed
/// types are sign-extended.
fn unpack(bytes: &[u8], dtype: DType, count: usize) -> Data {
    let per_byte = packing(dtype).unwrap_or(1);
    let bits = 8 / per_byte;
    let mask = (1u8 << bits) - 1;
    let fields = (0..count).map(|i| (bytes[i / per_byte] >> ((i % per_byte) * bits)) & mask);
    if dtype.is_signed_int() {
        let shift = 8 - bits;
        Data::I8(fields.map(|f| ((f << shift) as i8) >> shift).collect())
    } else {
        Data::U8(fields.collect())
    }
}

/// Packs one element per byte into `8 / bits` elements per byte.
fn pack(data: &Data, dtype: DType) -> Vec<u8> {
    let per_byte = packing(dtype).unwrap_or(1);
    let bits = 8 / per_byte;
    let mask = (1u8 << bits) - 1;
    let fields: Vec<u8> = match data {
        Data::I8(v) => v.iter().map(|&x| x as u8 & mask).collect(),
        Data::U8(v) => v.iter().map(|&x| x & mask).collect(),
        _ => vec![],
    };
    fields
        .chunks(per_byte)
        .map(|c| {
            c.iter()
                .enumerate()
                .fold(0u8, |acc, (i, &f)| acc | (f << (i * bits)))
        })
        .collect()
}

fn from_le<T, const N: usize>(bytes: &[u8], f: impl Fn([u8; N]) -> T) -> Vec<T> {
    bytes
        .chunks_exact(N)
        .map(|c| f(c.try_into().expect("chunk of N bytes")))
        .collect()
}

/// Decodes little-endian raw bytes into storage for `dtype`.
fn data_from_raw(bytes: &[u8], dtype: DType, count: usize) -> Result<Data, FormatError> {
    if let Some(per_byte) = packing(dtype) {
        let need = count.div_ceil(per_byte);
        if bytes.len() != need {
            return Err(FormatError(format!(
                "tensor of {count} {dtype} elements needs {need} bytes of data but has {}",
                bytes.len()
            )));
        }
        return Ok(unpack(bytes, dtype, count));
    }
    let need = count.checked_mul(dtype.size_in_memory());
    if dtype == DType::String || need != Some(bytes.len()) {
        return Err(FormatError(format!(
            "tensor of {count} {dtype} elements cannot use {} bytes of raw data",
            bytes.len()
        )));
    }
    Ok(match dtype {
        DType::Float => Data::F32(from_le(bytes, f32::from_le_bytes).into()),
        DType::Double => Data::F64(from_le(bytes, f64::from_le_bytes).into()),
        DType::Float16 => Data::F16(from_le(bytes, f16::from_le_bytes).into()),
        DType::BFloat16 => Data::BF16(from_le(bytes, bf16::from_le_bytes).into()),
        DType::Int8 => Data::I8(bytes.iter().map(|&b| b as i8).collect()),
        DType::Int16 => Data::I16(from_le(bytes, i16::from_le_bytes).into()),
        DType::Int32 => Data::I32(from_le(bytes, i32::from_le_bytes).into()),
        DType::Int64 => Data::I64(from_le(bytes, i64::from_le_bytes).into()),
        DType::Uint16 => Data::U16(from_le(bytes, u16::from_le_bytes).into()),
        DType::Uint32 => Data::U32(from_le(bytes, u32::from_le_bytes).into()),
        DType::Uint64 => Data::U64(from_le(bytes, u64::from_le_bytes).into()),
        DType::Bool => Data::Bool(bytes.iter().map(|&b| b != 0).collect()),
        DType::Complex64 | DType::Complex128 => {
            return Err(FormatError(format!(
                "element type {dtype} is not supported"
            )))
        }
        _ => Data::U8(bytes.to_vec().into()),
    })
}

fn check_count(found: usize, count: usize, dtype: DType, field: &str) -> Result<(), FormatError> {
    if found != count {
        return Err(FormatError(format!(
            "tensor of {count} {dtype} elements has {found} values in {field}"
        )));
    }
    Ok(())
}

/// Decodes the typed repeated fields (used when there is no raw_data).
fn data_from_fields(t: &TensorProto, dtype: DType, count: usize) -> Result<Data, FormatError> {
    let ints = &t.int32_data;
    if let Some(per_byte) = packing(dtype) {
        let bytes: Vec<u8> = ints.iter().map(|&x| x as u8).collect();
        check_count(bytes.len(), count.div_ceil(per_byte), dtype, "int32_data")?;
        return Ok(unpack(&bytes, dtype, count));
    }
    let data = match dtype {
        DType::Float => Data::F32(t.float_data.clone().into()),
        DType::Double => Data::F64(t.double_data.clone().into()),
        DType::Int64 => Data::I64(t.int64_data.clone().into()),
        DType::Uint64 => Data::U64(t.uint64_data.clone().into()),
        DType::Uint32 => Data::U32(t.uint64_data.iter().map(|&x| x as u32).collect()),
        DType::Int32 => Data::I32(ints.clone().into()),
        DType::Int16 => Data::I16(ints.iter().map(|&x| x as i16).collect()),
        DType::Int8 => Data::I8(ints.iter().map(|&x| x as i8).collect()),
        DType::Uint16 => Data::U16(ints.iter().map(|&x| x as u16).collect()),
        DType::Bool => Data::Bool(ints.iter().map(|&x| x != 0).collect()),
        DType::Float16 => Data::F16(ints.iter().map(|&x| f16::from_bits(x as u16)).collect()),
        DType::BFloat16 => Data::BF16(ints.iter().map(|&x| bf16::from_bits(x as u16)).collect()),
        DType::String => Data::Str(
            t.string_data
                .iter()
                .map(|b| String::from_utf8_lossy(b).into_owned())
                .collect(),
        ),
        DType::Complex64 | DType::Complex128 => {
            return Err(FormatError(format!(
                "element type {dtype} is not supported"
            )))
        }
        // uint8 and the minifloats
        _ => Data::U8(ints.iter().map(|&x| x as u8).collect()),
    };
    check_count(data.len(), count, dtype, "its typed data field")?;
    Ok(data)
}

fn external_bytes(t: &TensorProto, dir: Option<&ExternalDataDir>) -> Result<Vec<u8>, FormatError> {
    let mut location = None;
    let mut offset = 0u64;
    let mut length = None;
    for entry in &t.external_data {
        let parse = |v: &str| {
            v.parse::<u64>().map_err(|_| {
                FormatError(format!(
                    "tensor '{}': bad external data {} '{v}'",
                    t.name(),
                    entry.key()
                ))
            })
        };
        match entry.key() {
            "location" => location = Some(entry.value()),
            "offset" => offset = parse(entry.value())?,
            "length" => length = Some(parse(entry.value())?),
            _ => {}
        }
    }
    let location = location.ok_or_else(|| {
        FormatError(format!(
            "tensor '{}' has external data without a location",
            t.name()
        ))
    })?;
    let dir = dir.ok_or_else(|| {
        FormatError(format!(
            "tensor '{}' has external data but the model was not loaded from a file",
            t.name()
        ))
    })?;
    dir.read(location, offset, length)
        .map_err(|e| FormatError(format!("tensor '{}': {e}", t.name())))
}

/// Converts a `TensorProto` to a tensor. `dir` is where external data may be
/// read from (None: external data is refused).
pub fn tensor_from_proto(
    t: &TensorProto,
    dir: Option<&ExternalDataDir>,
) -> Result<Tensor, FormatError> {
    let dtype = DType::from_onnx(t.data_type()).ok_or_else(|| {
        FormatError(format!(
            "tensor '{}' has unknown element type {}",
            t.name(),
            t.data_type()
        ))
    })?;
    let shape = t
        .dims
        .iter()
        .map(|&d| usize::try_from(d))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| {
            FormatError(format!(
                "tensor '{}' has a negative dim in {:?}",
                t.name(),
                t.dims
            ))
        })?;
    let count = numel(&shape)
        .ok_or_else(|| FormatError(format!("tensor '{}' has too many elements", t.name())))?;
    if t.segment.is_some() {
        return Err(FormatError(format!(
            "tensor '{}' is segmented, which is not supported",
            t.name()
        )));
    }
    let with_name = |e: FormatError| FormatError(format!("tensor '{}': {}", t.name(), e.0));
    let data = if t.data_location() == DataLocation::External {
        data_from_raw(&external_bytes(t, dir)?, dtype, count).map_err(with_name)?
    } else if !t.raw_data().is_empty() || (count == 0 && dtype != DType::String) {
        data_from_raw(t.raw_data(), dtype, count).map_err(with_name)?
    } else {
        data_from_fields(t, dtype, count).map_err(with_name)?
    };
    Ok(Tensor::new(dtype, shape, data)?)
}

fn to_le<T: Copy, const N: usize>(v: &[T], f: impl Fn(T) -> [u8; N]) -> Vec<u8> {
    v.iter().flat_map(|&x| f(x)).collect()
}

/// Converts a tensor to a `TensorProto` (raw_data for numbers, string_data for strings).
pub fn tensor_to_proto(t: &Tensor, name: &str) -> TensorProto {
    let dtype = t.dtype();
    let mut proto = TensorProto {
        name: Some(name.to_string()),
        data_type: Some(dtype.onnx_code()),
        dims: t.shape().iter().map(|&d| d as i64).collect(),
        ..Default::default()
    };
    let raw: Vec<u8> = if packing(dtype).is_some() {
        pack(t.data(), dtype)
    } else {
        match t.data() {
            Data::F32(v) => to_le(v, f32::to_le_bytes),
            Data::F64(v) => to_le(v, f64::to_le_bytes),
            Data::F16(v) => to_le(v, f16::to_le_bytes),
            Data::BF16(v) => to_le(v, bf16::to_le_bytes),
            Data::I8(v) => v.iter().map(|&x| x as u8).collect(),
            Data::I16(v) => to_le(v, i16::to_le_bytes),
            Data::I32(v) => to_le(v, i32::to_le_bytes),
            Data::I64(v) => to_le(v, i64::to_le_bytes),
            Data::U8(v) => v.to_vec(),
            Data::U16(v) => to_le(v, u16::to_le_bytes),
            Data::U32(v) => to_le(v, u32::to_le_bytes),
            Data::U64(v) => to_le(v, u64::to_le_bytes),
            Data::Bool(v) => v.iter().map(|&b| u8::from(b)).collect(),
            Data::Str(v) => {
                proto.string_data = v.iter().map(|s| s.as_bytes().to_vec()).collect();
                return proto;
            }
        }
    };
    proto.raw_data = Some(raw.into());
    proto
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(t: &Tensor) -> Tensor {
        tensor_from_proto(&tensor_to_proto(t, "t"), None).unwrap()
    }

    #[test]
    fn round_trips_every_storage() {
        let cases = vec![
            Tensor::from_vec(vec![2, 2], vec![1.5f32, -2.0, 0.0, 7.25]).unwrap(),
            Tensor::from_vec(vec![3], vec![1i64, -5, i64::MAX]).unwrap(),
            Tensor::from_vec(vec![2], vec![true, false]).unwrap(),
            Tensor::from_vec(vec![2], vec!["a".to_string(), "héllo".to_string()]).unwrap(),
            Tensor::from_vec(vec![1], vec![f16::from_f32(0.5)]).unwrap(),
            Tensor::new(DType::Int4, vec![3], Data::I8(vec![-8, 7, -1].into())).unwrap(),
            Tensor::new(DType::Uint2, vec![5], Data::U8(vec![0, 1, 2, 3, 1].into())).unwrap(),
            Tensor::from_vec(vec![0, 3], Vec::<f32>::new()).unwrap(),
        ];
        for t in &cases {
            assert_eq!(&round_trip(t), t);
        }
    }

    #[test]
    fn reads_typed_fields_and_checks_counts() {
        let proto = TensorProto {
            data_type: Some(DType::Float.onnx_code()),
            dims: vec![2],
            float_data: vec![1.0, 2.0],
            ..Default::default()
        };
        let t = tensor_from_proto(&proto, None).unwrap();
        assert_eq!(t.as_slice::<f32>().unwrap(), &[1.0, 2.0]);
        let short = TensorProto {
            dims: vec![3],
            ..proto.clone()
        };
        assert!(tensor_from_proto(&short, None)
            .unwrap_err()
            .0
            .contains("3 float elements"));
        let negative = TensorProto {
            dims: vec![-1],
            ..proto.clone()
        };
        assert!(tensor_from_proto(&negative, None)
            .unwrap_err()
            .0
            .contains("negative"));
        let huge = TensorProto {
            dims: vec![1 << 40, 1 << 40],
            float_data: vec![],
            ..proto
        };
        assert!(tensor_from_proto(&huge, None).is_err());
    }
}
