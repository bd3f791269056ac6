use crate::{Error, ErrorKind, Result};

/// Bounds that protect a process from models and inputs that ask for too
/// much. Checked before the allocation they guard where the size is known
/// beforehand; every message names the limit and the numbers.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest number of elements in one tensor an operator may create.
    pub max_tensor_elements: usize,
    /// Largest size in bytes of one tensor an operator may create.
    pub max_tensor_bytes: usize,
    /// Most bytes of values one run may hold at once, across the graph and
    /// its subgraphs (inputs counted, initializers not).
    pub max_run_bytes: usize,
    /// Deepest nesting of subgraphs (If/Loop/Scan bodies) and of calls of
    /// model-local functions.
    pub max_nesting_depth: usize,
    /// Most nodes one graph may have once model-local functions are inlined.
    pub max_graph_nodes: usize,
    /// Longest time one run may take, checked before each node (in the
    /// graph and in every subgraph iteration); None for no bound. A Loop
    /// may ask for any number of iterations, so a server that runs
    /// untrusted models sets this.
    pub max_run_time: Option<std::time::Duration>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_tensor_elements: 1 << 32,
            max_tensor_bytes: 16 << 30,
            max_run_bytes: 64 << 30,
            max_nesting_depth: 64,
            max_graph_nodes: 1 << 19,
            max_run_time: None,
        }
    }
}

pub(crate) fn over_limit(msg: String) -> Error {
    Error::new(ErrorKind::LimitExceeded, msg)
}

impl Limits {
    /// Fails, naming the limit and the numbers, if a tensor would be over it.
    pub fn check_tensor(&self, elements: usize, elem_bytes: usize) -> Result<()> {
        if elements > self.max_tensor_elements {
            return Err(over_limit(format!(
                "a tensor of {elements} elements is over the limit max_tensor_elements={}",
                self.max_tensor_elements
            )));
        }
        let bytes = elements.saturating_mul(elem_bytes);
        if bytes > self.max_tensor_bytes {
            return Err(over_limit(format!(
                "a tensor of {bytes} bytes is over the limit max_tensor_bytes={}",
                self.max_tensor_bytes
            )));
        }
        Ok(())
    }

    /// Fails if a run holding `held` bytes would go over `max_run_bytes`
    /// by taking `more`.
    pub fn check_run_bytes(&self, held: usize, more: usize) -> Result<()> {
        let total = held.saturating_add(more);
        if total > self.max_run_bytes {
            return Err(over_limit(format!(
                "the run would hold {total} bytes ({held} held, {more} more), over the limit max_run_bytes={}",
                self.max_run_bytes
            )));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_limit_and_the_numbers() {
        let l = Limits {
            max_tensor_elements: 10,
            max_tensor_bytes: 20,
            max_run_bytes: 100,
            ..Limits::default()
        };
        assert!(l.check_tensor(10, 2).is_ok());
        let e = l.check_tensor(11, 1).unwrap_err();
        assert_eq!(e.kind, ErrorKind::LimitExceeded);
        assert!(e.message.contains("11 elements") && e.message.contains("max_tensor_elements=10"));
        let e = l.check_tensor(6, 4).unwrap_err();
        assert!(e.message.contains("24 bytes") && e.message.contains("max_tensor_bytes=20"));
        assert!(l.check_run_bytes(60, 40).is_ok());
        let e = l.check_run_bytes(60, 41).unwrap_err();
        assert!(
            e.message.contains("101 bytes (60 held, 41 more)"),
            "{}",
            e.message
        );
        assert!(l.check_run_bytes(usize::MAX, usize::MAX).is_err());
    }
}
