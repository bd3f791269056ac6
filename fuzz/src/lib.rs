//! Helpers shared by the fuzz targets: tight limits, and inputs made from
//! fuzz data.

use onyx_core::ir::{Dim, TypeInfo};
use onyx_core::{Limits, Session, SessionOptions};
use onyx_tensor::{bf16, f16, DType, Data, Tensor, Value};

/// Limits small enough that a fuzz run never allocates much (64 MiB per
/// tensor, 256 MiB per run) and never runs long (1 s, under the fuzzer's
/// 5 s hang timeout).
pub fn options() -> SessionOptions {
    SessionOptions {
        limits: Limits {
            max_tensor_elements: 1 << 24,
            max_tensor_bytes: 64 << 20,
            max_run_bytes: 256 << 20,
            max_nesting_depth: 16,
            max_graph_nodes: 1 << 14,
            max_run_time: Some(std::time::Duration::from_secs(1)),
        },
        ..Default::default()
    }
}

/// Splits run-target data: a little-endian u32 length, that many bytes of
/// model, and the rest for the inputs.
pub fn split(data: &[u8]) -> (&[u8], &[u8]) {
    if data.len() < 4 {
        return (data, &[]);
    }
    let len = u32::from_le_bytes([data[0], data[1], data[2], data[3]]) as usize;
    let body = &data[4..];
    let len = len.min(body.len());
    body.split_at(len)
}

/// The largest input the harness makes, in elements.
const MAX_INPUT_ELEMENTS: usize = 1 << 16;

/// An endless stream of bytes from `data` (zeros when it is empty).
struct Bytes<'a> {
    data: &'a [u8],
    pos: usize,
}

impl Bytes<'_> {
    fn next(&mut self) -> u8 {
        if self.data.is_empty() {
            return 0;
        }
        let b = self.data[self.pos % self.data.len()];
        self.pos += 1;
        b
    }
}

/// One tensor per declared input: declared element type (float when not
/// declared), fixed dims as declared, other dims 1..=4 from the data, and
/// element values from the data.
pub fn feeds(session: &Session, data: &[u8]) -> Vec<(String, Value)> {
    let mut bytes = Bytes { data, pos: 0 };
    let mut feeds = Vec::new();
    for input in session.inputs() {
        let (dtype, dims) = match &input.ty {
            Some(TypeInfo::Tensor { dtype, shape }) => (dtype.unwrap_or(DType::Float), shape.clone()),
            None => (DType::Float, None),
            _ => continue,
        };
        let shape: Vec<usize> = match dims {
            Some(dims) => dims
                .iter()
                .map(|d| match d {
                    Dim::Fixed(n) => *n,
                    _ => 1 + (bytes.next() % 4) as usize,
                })
                .collect(),
            None => (0..bytes.next() % 4)
                .map(|_| 1 + (bytes.next() % 4) as usize)
                .collect(),
        };
        let Some(n) = onyx_tensor::numel(&shape).filter(|&n| n <= MAX_INPUT_ELEMENTS) else {
            continue;
        };
        if let Some(t) = tensor(dtype, shape, n, &mut bytes) {
            feeds.push((input.name.clone(), Value::Tensor(t)));
        }
    }
    feeds
}

fn tensor(dtype: DType, shape: Vec<usize>, n: usize, b: &mut Bytes) -> Option<Tensor> {
    // small signed values, with the odd extreme one
    let mut int = || -> i64 {
        match b.next() {
            255 => i64::MAX,
            254 => i64::MIN,
            253 => -1,
            x => i64::from(x as i8) / 4,
        }
    };
    let ints: Vec<i64> = (0..n).map(|_| int()).collect();
    let float = |i: i64| -> f64 {
        match i {
            i64::MAX => f64::NAN,
            i64::MIN => f64::INFINITY,
            i => i as f64 / 4.0,
        }
    };
    let data = match dtype {
        DType::Float => Data::F32(ints.iter().map(|&i| float(i) as f32).collect()),
        DType::Double => Data::F64(ints.iter().map(|&i| float(i)).collect()),
        DType::Float16 => Data::F16(ints.iter().map(|&i| f16::from_f64(float(i))).collect()),
        DType::BFloat16 => Data::BF16(ints.iter().map(|&i| bf16::from_f64(float(i))).collect()),
        DType::Int8 => Data::I8(ints.iter().map(|&i| i as i8).collect()),
        DType::Int16 => Data::I16(ints.iter().map(|&i| i as i16).collect()),
        DType::Int32 => Data::I32(ints.iter().map(|&i| i as i32).collect()),
        DType::Int64 => Data::I64(ints),
        DType::Uint8 => Data::U8(ints.iter().map(|&i| i as u8).collect()),
        DType::Uint16 => Data::U16(ints.iter().map(|&i| i as u16).collect()),
        DType::Uint32 => Data::U32(ints.iter().map(|&i| i as u32).collect()),
        DType::Uint64 => Data::U64(ints.iter().map(|&i| i as u64).collect()),
        DType::Bool => Data::Bool(ints.iter().map(|&i| i & 1 == 1).collect()),
        DType::String => Data::Str(ints.iter().map(|i| i.to_string()).collect()),
        other => return Tensor::zeros(other, shape).ok(),
    };
    Tensor::new(dtype, shape, data).ok()
}
