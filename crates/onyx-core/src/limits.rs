use crate::{Error, ErrorKind, Result};

/// Bounds that protect a process from models and inputs that ask for too
/// much. Checked before the allocation they guard.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest number of elements in one tensor an operator may create.
    pub max_tensor_elements: usize,
    /// Largest size in bytes of one tensor an operator may create.
    pub max_tensor_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_elements: 1 << 32,
            max_tensor_bytes: 16 << 30,
        }
    }
}

impl Limits {
    /// Fails, naming the limit and the numbers, if a tensor would be over it.
    pub fn check_tensor(&self, elements: usize, elem_bytes: usize) -> Result<()> {
        if elements > self.max_tensor_elements {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a tensor of {elements} elements is over the limit max_tensor_elements={}",
                    self.max_tensor_elements
                ),
            ));
        }
        let bytes = elements.saturating_mul(elem_bytes);
        if bytes > self.max_tensor_bytes {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "a tensor of {bytes} bytes is over the limit max_tensor_bytes={}",
                    self.max_tensor_bytes
                ),
            ));
        }
        Ok(())
    }
}
