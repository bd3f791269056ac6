//! Onyx's compute kernels: the inner loops that decide how fast a model runs.
//!
//! This is the only crate of the workspace that may use `unsafe`: SIMD
//! intrinsics and raw-pointer micro-kernels live here, behind safe functions
//! that check every size before entering them. Each instruction set has its
//! own path, chosen once at run time from the CPU's features ([`Isa`]), and
//! each fast kernel is tested against a plain loop kept as its oracle.
#![deny(unsafe_op_in_unsafe_fn)]
#![warn(clippy::undocumented_unsafe_blocks)]

pub mod depthwise;
pub mod gemm;
pub mod parallel;
pub mod vmath;
pub mod winograd;

pub use depthwise::{depthwise, Plane2d};
pub use gemm::{
    sgemm, sgemm_packed, sgemm_reference, sgemm_unpacked, Act, Epilogue, GemmError, Isa, MatRef,
    PackedA, PackedB,
};
pub use parallel::ThreadPool;
pub use winograd::Winograd3x3;
