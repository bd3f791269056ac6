//! Tensors and the other values an ONNX graph passes around.
//!
//! A [`Tensor`] holds its elements in a typed [`Data`] buffer ([`Buf`]: a
//! vector it owns, or a read-only view of memory it shares) and carries its
//! ONNX element type ([`DType`]) and shape. Element types without a native
//! Rust representation (float8 variants, int4/uint4, int2/uint2, float4) are
//! held one element per byte, as their bit pattern, in `Data::U8`/`Data::I8`.
#![forbid(unsafe_code)]

mod broadcast;
mod buf;
mod dtype;
mod elem;
mod minifloat;
mod tensor;
mod value;

pub use broadcast::{
    broadcast_shapes, broadcast_strides, for_each_broadcast_index, for_each_broadcast_run,
};
pub use buf::{Buf, SharedBytes};
pub use dtype::DType;
pub use elem::Elem;
pub use half::{bf16, f16};
pub use minifloat::{minifloat_from_f32, minifloat_to_f32};
pub use tensor::{numel, strides_of, Data, Tensor, TensorError};
pub use value::{MapValue, Value};
