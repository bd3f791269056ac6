use crate::{bf16, f16, DType, Data};

/// A Rust type that holds tensor elements natively.
pub trait Elem: Clone + Default + Send + Sync + 'static {
    /// The ONNX type this Rust type stands for by default.
    const DTYPE: DType;
    fn slice(data: &Data) -> Option<&[Self]>;
    fn slice_mut(data: &mut Data) -> Option<&mut Vec<Self>>;
    fn into_data(values: Vec<Self>) -> Data;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, $dtype:ident) => {
        impl Elem for $t {
            const DTYPE: DType = DType::$dtype;
            fn slice(data: &Data) -> Option<&[Self]> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn slice_mut(data: &mut Data) -> Option<&mut Vec<Self>> {
                match data {
                    Data::$variant(v) => Some(v),
                    _ => None,
                }
            }
            fn into_data(values: Vec<Self>) -> Data {
                Data::$variant(values)
            }
        }
    };
}

impl_elem!(f32, F32, Float);
impl_elem!(f64, F64, Double);
impl_elem!(f16, F16, Float16);
impl_elem!(bf16, BF16, BFloat16);
impl_elem!(i8, I8, Int8);
impl_elem!(i16, I16, Int16);
impl_elem!(i32, I32, Int32);
impl_elem!(i64, I64, Int64);
impl_elem!(u8, U8, Uint8);
impl_elem!(u16, U16, Uint16);
impl_elem!(u32, U32, Uint32);
impl_elem!(u64, U64, Uint64);
impl_elem!(bool, Bool, Bool);
impl_elem!(String, Str, String);
