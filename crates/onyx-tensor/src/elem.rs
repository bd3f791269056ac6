use crate::{bf16, f16, DType, Data};

/// A Rust type that holds tensor elements natively.
pub trait Elem: Clone + Default + Send + Sync + 'static {
    /// The ONNX type this Rust type stands for by default.
    const DTYPE: DType;
    fn slice(data: &Data) -> Option<&[Self]>;
    /// The vector to change (a view is copied into one first).
    fn slice_mut(data: &mut Data) -> Option<&mut Vec<Self>>;
    fn into_data(values: Vec<Self>) -> Data;
    /// Native-endian bytes read in place as elements; `None` when they are
    /// misaligned or the type has invalid bit patterns (bool, strings).
    fn from_bytes(bytes: &[u8]) -> Option<&[Self]>;
}

macro_rules! impl_elem {
    ($t:ty, $variant:ident, $dtype:ident, $from_bytes:expr) => {
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
                    Data::$variant(v) => Some(v.make_mut()),
                    _ => None,
                }
            }
            fn into_data(values: Vec<Self>) -> Data {
                Data::$variant(values.into())
            }
            fn from_bytes(bytes: &[u8]) -> Option<&[Self]> {
                $from_bytes(bytes)
            }
        }
    };
}

fn pod_view<T: bytemuck::Pod>(bytes: &[u8]) -> Option<&[T]> {
    bytemuck::try_cast_slice(bytes).ok()
}

fn no_view<T>(_: &[u8]) -> Option<&[T]> {
    None
}

impl_elem!(f32, F32, Float, pod_view);
impl_elem!(f64, F64, Double, pod_view);
impl_elem!(f16, F16, Float16, pod_view);
impl_elem!(bf16, BF16, BFloat16, pod_view);
impl_elem!(i8, I8, Int8, pod_view);
impl_elem!(i16, I16, Int16, pod_view);
impl_elem!(i32, I32, Int32, pod_view);
impl_elem!(i64, I64, Int64, pod_view);
impl_elem!(u8, U8, Uint8, pod_view);
impl_elem!(u16, U16, Uint16, pod_view);
impl_elem!(u32, U32, Uint32, pod_view);
impl_elem!(u64, U64, Uint64, pod_view);
impl_elem!(bool, Bool, Bool, no_view);
impl_elem!(String, Str, String, no_view);
