use std::fmt;

/// What went wrong, coarsely; the faces map these to their own error kinds
/// (exit codes, Python exception classes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// The model file cannot be read or decoded.
    Format,
    /// The model is structurally wrong (cycles, dangling names, bad attributes).
    InvalidGraph,
    /// The model uses something Onyx does not implement.
    NotImplemented,
    /// The caller's inputs do not fit the model.
    InvalidArgument,
    /// A configured limit would be exceeded.
    LimitExceeded,
    /// A failure while running a node, or writing the optimised model.
    Runtime,
}

/// An Onyx error: a kind and one line of text naming what is wrong.
#[derive(Clone, Debug, PartialEq)]
pub struct Error {
    pub kind: ErrorKind,
    pub message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Error {
        Error {
            kind,
            message: message.into(),
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

impl From<onyx_format::FormatError> for Error {
    fn from(e: onyx_format::FormatError) -> Error {
        Error::new(ErrorKind::Format, e.0)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl From<onyx_tensor::TensorError> for Error {
    fn from(e: onyx_tensor::TensorError) -> Error {
        Error::new(ErrorKind::InvalidGraph, e.0)
    }
}
