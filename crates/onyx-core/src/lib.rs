//! Onyx's engine: the graph IR, operators, planner and executor, and the
//! [`Session`] that the faces (the `onyx` command, later Python) use.
//!
//! A model flows `ir` (decoded graph) -> `passes` (rewrites) -> `plan` (ordered kernels with
//! resolved inputs and value lifetimes) -> `exec` (one run of a plan).
#![forbid(unsafe_code)]

mod error;
pub mod exec;
pub mod ir;
mod limits;
pub mod ops;
pub mod passes;
pub mod plan;
mod session;

pub use error::{Error, ErrorKind, Result};
pub use limits::Limits;
pub use session::{declared_dtype, NodeTime, Session, SessionOptions};
pub mod test_data;
