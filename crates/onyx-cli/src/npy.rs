//! Reading and writing numpy .npy files (format versions 1-3, C order).

use onyx_tensor::{bf16, f16, DType, Data, Tensor};

const MAGIC: &[u8] = b"\x93NUMPY";

fn descr_of(dtype: DType) -> Option<&'static str> {
    Some(match dtype {
        DType::Float => "<f4",
        DType::Double => "<f8",
        DType::Float16 => "<f2",
        DType::Int8 => "|i1",
        DType::Uint8 => "|u1",
        DType::Int16 => "<i2",
        DType::Uint16 => "<u2",
        DType::Int32 => "<i4",
        DType::Uint32 => "<u4",
        DType::Int64 => "<i8",
        DType::Uint64 => "<u8",
        DType::Bool => "|b1",
        _ => return None,
    })
}

fn dtype_of(descr: &str) -> Option<DType> {
    let d = descr.replace('=', "<");
    Some(match d.as_str() {
        "<f4" => DType::Float,
        "<f8" => DType::Double,
        "<f2" => DType::Float16,
        "|i1" | "<i1" => DType::Int8,
        "|u1" | "<u1" => DType::Uint8,
        "<i2" => DType::Int16,
        "<u2" => DType::Uint16,
        "<i4" => DType::Int32,
        "<u4" => DType::Uint32,
        "<i8" => DType::Int64,
        "<u8" => DType::Uint64,
        "|b1" | "<b1" => DType::Bool,
        _ => return None,
    })
}

/// The text between the quotes after `'key':` in a header dict.
fn header_field<'a>(header: &'a str, key: &str) -> Option<&'a str> {
    let start = header.find(&format!("'{key}'"))? + key.len() + 2;
    let rest = header[start..].trim_start().strip_prefix(':')?.trim_start();
    Some(rest)
}

fn parse_header(header: &str) -> Result<(DType, Vec<usize>), String> {
    let descr_rest = header_field(header, "descr").ok_or("no 'descr' in the header")?;
    let descr = descr_rest
        .strip_prefix('\'')
        .and_then(|r| r.split('\'').next())
        .ok_or("bad 'descr' in the header")?;
    let dtype = dtype_of(descr).ok_or_else(|| format!("unsupported element type '{descr}'"))?;
    let fortran =
        header_field(header, "fortran_order").ok_or("no 'fortran_order' in the header")?;
    if fortran.starts_with("True") {
        return Err("Fortran-ordered arrays are not supported".into());
    }
    let shape_rest = header_field(header, "shape").ok_or("no 'shape' in the header")?;
    let inner = shape_rest
        .strip_prefix('(')
        .and_then(|r| r.split(')').next())
        .ok_or("bad 'shape' in the header")?;
    let shape = inner
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<usize>()
                .map_err(|_| format!("bad dim '{s}' in the shape"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok((dtype, shape))
}

fn le<T, const N: usize>(b: &[u8], f: fn([u8; N]) -> T) -> Vec<T> {
    b.chunks_exact(N)
        .map(|c| f(c.try_into().expect("N-byte chunk")))
        .collect()
}

/// Decodes the bytes of a .npy file.
pub fn decode(bytes: &[u8]) -> Result<Tensor, String> {
    if bytes.len() < 10 || &bytes[..6] != MAGIC {
        return Err("not a .npy file".into());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10usize),
        2 | 3 if bytes.len() >= 12 => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
        v => return Err(format!("unsupported .npy version {v}")),
    };
    let end = start
        .checked_add(header_len)
        .filter(|&e| e <= bytes.len())
        .ok_or("truncated header")?;
    let header = std::str::from_utf8(&bytes[start..end]).map_err(|_| "header is not text")?;
    let (dtype, shape) = parse_header(header)?;
    let body = &bytes[end..];
    let count = onyx_tensor::numel(&shape).ok_or("shape has too many elements")?;
    let need = count
        .checked_mul(dtype.size_in_memory())
        .ok_or("shape has too many elements")?;
    if body.len() != need {
        return Err(format!(
            "{} data bytes for shape {shape:?} of {dtype}, expected {need}",
            body.len()
        ));
    }
    let data = match dtype {
        DType::Float => Data::F32(le(body, f32::from_le_bytes).into()),
        DType::Double => Data::F64(le(body, f64::from_le_bytes).into()),
        DType::Float16 => Data::F16(le(body, f16::from_le_bytes).into()),
        DType::Int8 => Data::I8(body.iter().map(|&b| b as i8).collect()),
        DType::Uint8 => Data::U8(body.to_vec().into()),
        DType::Int16 => Data::I16(le(body, i16::from_le_bytes).into()),
        DType::Uint16 => Data::U16(le(body, u16::from_le_bytes).into()),
        DType::Int32 => Data::I32(le(body, i32::from_le_bytes).into()),
        DType::Uint32 => Data::U32(le(body, u32::from_le_bytes).into()),
        DType::Int64 => Data::I64(le(body, i64::from_le_bytes).into()),
        DType::Uint64 => Data::U64(le(body, u64::from_le_bytes).into()),
        DType::Bool => Data::Bool(body.iter().map(|&b| b != 0).collect()),
        _ => return Err(format!("unsupported element type {dtype}")),
    };
    Tensor::new(dtype, shape, data).map_err(|e| e.0)
}

/// Encodes a tensor as a version 1.0 .npy file. bfloat16 is written as float32
/// since numpy has no bfloat16.
pub fn encode(t: &Tensor) -> Result<Vec<u8>, String> {
    if t.dtype() == DType::BFloat16 {
        let v: Vec<f32> = t
            .as_slice::<bf16>()
            .map_err(|e| e.0)?
            .iter()
            .map(|x| x.to_f32())
            .collect();
        return encode(&Tensor::from_vec(t.shape().to_vec(), v).map_err(|e| e.0)?);
    }
    let descr = descr_of(t.dtype())
        .ok_or_else(|| format!("element type {} cannot be written as .npy", t.dtype()))?;
    let shape = match t.shape() {
        [d] => format!("({d},)"),
        dims => format!(
            "({})",
            dims.iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // pad so that the data starts on a 64-byte boundary, ending with a newline
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + t.len() * t.dtype().size_in_memory());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&[1, 0]);
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    match t.data() {
        Data::F32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::F16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
        Data::U8(v) => out.extend_from_slice(v),
        Data::I16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U16(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U32(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::I64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::U64(v) => v
            .iter()
            .for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
        Data::Bool(v) => out.extend(v.iter().map(|&b| u8::from(b))),
        Data::BF16(_) | Data::Str(_) => return Err(format!("cannot write {} as .npy", t.dtype())),
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for t in [
            Tensor::from_vec(vec![2, 3], vec![1.5f32, -2.0, 0.0, 1.0, 2.0, 3.0]).unwrap(),
            Tensor::from_vec(vec![4], vec![1i64, -2, 3, 4]).unwrap(),
            Tensor::from_vec(vec![], vec![true]).unwrap(),
        ] {
            let bytes = encode(&t).unwrap();
            assert_eq!(
                (10 + u16::from_le_bytes([bytes[8], bytes[9]]) as usize) % 64,
                0
            );
            assert_eq!(decode(&bytes).unwrap(), t);
        }
    }

    #[test]
    fn refuses_bad_files() {
        assert!(decode(b"hello").is_err());
        let mut bytes = encode(&Tensor::from_vec(vec![3], vec![1f32, 2.0, 3.0]).unwrap()).unwrap();
        bytes.truncate(bytes.len() - 1);
        assert!(decode(&bytes).unwrap_err().contains("data bytes"));
    }
}
