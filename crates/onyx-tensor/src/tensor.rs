use std::fmt;

use crate::{bf16, f16, Buf, DType, Elem};

/// Typed element storage. Minifloats and 2/4-bit integers are one per byte:
/// signed ones (int4, int2) in `I8`, the rest in `U8`.
#[derive(Clone, Debug, PartialEq)]
pub enum Data {
    F32(Buf<f32>),
    F64(Buf<f64>),
    F16(Buf<f16>),
    BF16(Buf<bf16>),
    I8(Buf<i8>),
    I16(Buf<i16>),
    I32(Buf<i32>),
    I64(Buf<i64>),
    U8(Buf<u8>),
    U16(Buf<u16>),
    U32(Buf<u32>),
    U64(Buf<u64>),
    Bool(Buf<bool>),
    Str(Buf<String>),
}

/// Applies a generic expression to the vector inside a [`Data`], whatever its type.
#[macro_export]
macro_rules! with_data {
    ($data:expr, $v:ident => $body:expr) => {
        match $data {
            $crate::Data::F32($v) => $body,
            $crate::Data::F64($v) => $body,
            $crate::Data::F16($v) => $body,
            $crate::Data::BF16($v) => $body,
            $crate::Data::I8($v) => $body,
            $crate::Data::I16($v) => $body,
            $crate::Data::I32($v) => $body,
            $crate::Data::I64($v) => $body,
            $crate::Data::U8($v) => $body,
            $crate::Data::U16($v) => $body,
            $crate::Data::U32($v) => $body,
            $crate::Data::U64($v) => $body,
            $crate::Data::Bool($v) => $body,
            $crate::Data::Str($v) => $body,
        }
    };
}

impl Data {
    pub fn len(&self) -> usize {
        with_data!(self, v => v.len())
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// A vector of `len` default elements (zero, false, "") of the storage for `dtype`.
    pub fn zeros(dtype: DType, len: usize) -> Result<Data, TensorError> {
        Ok(match dtype {
            DType::Float => Data::F32(vec![0.0; len].into()),
            DType::Double => Data::F64(vec![0.0; len].into()),
            DType::Float16 => Data::F16(vec![f16::ZERO; len].into()),
            DType::BFloat16 => Data::BF16(vec![bf16::ZERO; len].into()),
            DType::Int8 | DType::Int4 | DType::Int2 => Data::I8(vec![0; len].into()),
            DType::Int16 => Data::I16(vec![0; len].into()),
            DType::Int32 => Data::I32(vec![0; len].into()),
            DType::Int64 => Data::I64(vec![0; len].into()),
            DType::Uint8
            | DType::Uint4
            | DType::Uint2
            | DType::Float8E4M3FN
            | DType::Float8E4M3FNUZ
            | DType::Float8E5M2
            | DType::Float8E5M2FNUZ
            | DType::Float4E2M1
            | DType::Float8E8M0 => Data::U8(vec![0; len].into()),
            DType::Uint16 => Data::U16(vec![0; len].into()),
            DType::Uint32 => Data::U32(vec![0; len].into()),
            DType::Uint64 => Data::U64(vec![0; len].into()),
            DType::Bool => Data::Bool(vec![false; len].into()),
            DType::String => Data::Str(vec![String::new(); len].into()),
            DType::Complex64 | DType::Complex128 => {
                return Err(TensorError(format!(
                    "element type {dtype} is not supported"
                )))
            }
        })
    }

    /// Picks elements by index into a new vector of the same type.
    pub fn gather(&self, indices: impl Iterator<Item = usize>) -> Data {
        fn pick<T: Elem>(v: &[T], indices: impl Iterator<Item = usize>) -> Data {
            T::into_data(indices.map(|i| v[i].clone()).collect())
        }
        with_data!(self, v => pick(v, indices))
    }
}

/// An error about tensor contents or shapes, as one line of text.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorError(pub String);

impl fmt::Display for TensorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for TensorError {}

/// The number of elements of a shape; `None` if its non-zero dims multiply
/// past `usize` (whatever the order of the dims and even when another dim
/// is zero, so that no shape Onyx accepts overflows its strides).
pub fn numel(shape: &[usize]) -> Option<usize> {
    let product = shape
        .iter()
        .filter(|&&d| d != 0)
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))?;
    Some(if shape.contains(&0) { 0 } else { product })
}

/// Row-major strides, in elements.
pub fn strides_of(shape: &[usize]) -> Vec<usize> {
    let mut strides = vec![1; shape.len()];
    for i in (0..shape.len().saturating_sub(1)).rev() {
        strides[i] = strides[i + 1] * shape[i + 1];
    }
    strides
}

/// A dense, row-major tensor of one element type.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    dtype: DType,
    shape: Vec<usize>,
    data: Data,
}

impl Tensor {
    /// Builds a tensor, checking that `data` suits `dtype` and has `shape`'s element count.
    pub fn new(dtype: DType, shape: Vec<usize>, data: Data) -> Result<Tensor, TensorError> {
        let expected = numel(&shape)
            .ok_or_else(|| TensorError(format!("shape {shape:?} has too many elements")))?;
        if data.len() != expected {
            return Err(TensorError(format!(
                "shape {shape:?} needs {expected} elements but {} were given",
                data.len()
            )));
        }
        let storage_ok =
            std::mem::discriminant(&data) == std::mem::discriminant(&Data::zeros(dtype, 0)?);
        if !storage_ok {
            return Err(TensorError(format!(
                "storage does not hold {dtype} elements"
            )));
        }
        Ok(Tensor { dtype, shape, data })
    }

    /// A tensor of a native element type.
    pub fn from_vec<T: Elem>(shape: Vec<usize>, values: Vec<T>) -> Result<Tensor, TensorError> {
        Tensor::new(T::DTYPE, shape, T::into_data(values))
    }

    /// A rank-0 tensor holding one value.
    pub fn scalar<T: Elem>(value: T) -> Tensor {
        Tensor {
            dtype: T::DTYPE,
            shape: vec![],
            data: T::into_data(vec![value]),
        }
    }

    /// A tensor of `dtype` filled with zeros (false, "").
    pub fn zeros(dtype: DType, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        let n = numel(&shape)
            .ok_or_else(|| TensorError(format!("shape {shape:?} has too many elements")))?;
        Ok(Tensor {
            dtype,
            shape,
            data: Data::zeros(dtype, n)?,
        })
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn rank(&self) -> usize {
        self.shape.len()
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &Data {
        &self.data
    }

    pub fn into_data(self) -> Data {
        self.data
    }

    pub fn into_parts(self) -> (DType, Vec<usize>, Data) {
        (self.dtype, self.shape, self.data)
    }

    /// The elements as a slice of `T`, or an error naming both types.
    pub fn as_slice<T: Elem>(&self) -> Result<&[T], TensorError> {
        T::slice(&self.data).ok_or_else(|| {
            TensorError(format!(
                "expected a tensor of {} but got {}",
                T::DTYPE,
                self.dtype
            ))
        })
    }

    /// Same elements under a new shape of the same element count.
    pub fn reshape(mut self, shape: Vec<usize>) -> Result<Tensor, TensorError> {
        if numel(&shape) != Some(self.len()) {
            return Err(TensorError(format!(
                "cannot reshape {:?} ({} elements) to {shape:?}",
                self.shape,
                self.len()
            )));
        }
        self.shape = shape;
        Ok(self)
    }

    /// Reinterprets the element type when the storage is shared (e.g. uint8 as float8).
    pub fn with_dtype(self, dtype: DType) -> Result<Tensor, TensorError> {
        Tensor::new(dtype, self.shape, self.data)
    }

    /// The elements widened to f64 (integers and floats; minifloats decoded).
    pub fn to_f64_vec(&self) -> Result<Vec<f64>, TensorError> {
        if self.dtype.is_minifloat() {
            let codes = self.as_slice::<u8>()?;
            return Ok(codes
                .iter()
                .map(|&c| f64::from(crate::minifloat_to_f32(self.dtype, c).unwrap_or(f32::NAN)))
                .collect());
        }
        Ok(match &self.data {
            Data::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::F64(v) => v.to_vec(),
            Data::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
            Data::I8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::I64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::U8(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U16(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Data::U64(v) => v.iter().map(|&x| x as f64).collect(),
            Data::Bool(v) => v.iter().map(|&x| f64::from(u8::from(x))).collect(),
            Data::Str(_) => {
                return Err(TensorError(
                    "expected a numeric tensor but got string".into(),
                ))
            }
        })
    }

    /// Integer elements widened to i64 (for indices, shapes and axes).
    pub fn to_i64_vec(&self) -> Result<Vec<i64>, TensorError> {
        Ok(match &self.data {
            Data::I8(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::I64(v) => v.to_vec(),
            Data::U8(v) if !self.dtype.is_minifloat() => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U16(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U32(v) => v.iter().map(|&x| i64::from(x)).collect(),
            Data::U64(v) => v.iter().map(|&x| x as i64).collect(),
            Data::Bool(v) => v.iter().map(|&x| i64::from(x)).collect(),
            _ => {
                return Err(TensorError(format!(
                    "expected an integer tensor but got {}",
                    self.dtype
                )))
            }
        })
    }

    /// Picks elements by flat index into a new tensor of `shape`.
    pub fn gather_flat(
        &self,
        shape: Vec<usize>,
        indices: impl Iterator<Item = usize>,
    ) -> Result<Tensor, TensorError> {
        Tensor::new(self.dtype, shape, self.data.gather(indices))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_checks_count_and_storage() {
        let t = Tensor::from_vec(vec![2, 3], vec![1f32; 6]).unwrap();
        assert_eq!(t.shape(), &[2, 3]);
        assert!(Tensor::from_vec(vec![2, 3], vec![1f32; 5]).is_err());
        assert!(Tensor::new(DType::Int64, vec![1], Data::F32(vec![1.0].into())).is_err());
        assert!(Tensor::new(DType::Float8E4M3FN, vec![1], Data::U8(vec![0x38].into())).is_ok());
        assert!(Tensor::zeros(DType::Float, vec![usize::MAX, 2]).is_err());
    }

    #[test]
    fn numel_refuses_overflow_in_any_order() {
        assert_eq!(numel(&[2, 3, 4]), Some(24));
        assert_eq!(numel(&[]), Some(1));
        assert_eq!(numel(&[5, 0]), Some(0));
        assert_eq!(numel(&[1 << 40, 1 << 40]), None);
        assert_eq!(numel(&[0, 1 << 40, 1 << 40]), None);
        assert_eq!(numel(&[1 << 40, 1 << 40, 0]), None);
        assert!(Tensor::from_vec::<f32>(vec![0, 1 << 40, 1 << 40], vec![]).is_err());
    }

    #[test]
    fn strides_and_reshape() {
        assert_eq!(strides_of(&[2, 3, 4]), vec![12, 4, 1]);
        let t = Tensor::from_vec(vec![6], (0..6i64).collect()).unwrap();
        let r = t.reshape(vec![3, 2]).unwrap();
        assert_eq!(r.shape(), &[3, 2]);
        assert_eq!(r.to_i64_vec().unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert!(r.reshape(vec![4]).is_err());
    }

    #[test]
    fn widening() {
        let t = Tensor::new(
            DType::Float8E4M3FN,
            vec![2],
            Data::U8(vec![0x38, 0xB8].into()),
        )
        .unwrap();
        assert_eq!(t.to_f64_vec().unwrap(), vec![1.0, -1.0]);
        assert!(t.to_i64_vec().is_err());
    }
}
