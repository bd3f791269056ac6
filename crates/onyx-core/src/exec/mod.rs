//! Runs a `Plan`: feeds the inputs, runs each step's kernel in order, frees
//! values after their last reader, and returns the graph outputs.

use onyx_tensor::Value;

use crate::ops::RunCtx;
use crate::plan::{Plan, Source};
use crate::{Error, ErrorKind, Limits, Result};

/// The values of one run of one plan; subgraph runs point at their parent's frame.
pub(crate) struct Frame<'a> {
    plan: &'a Plan,
    slots: Vec<Option<Value>>,
    parent: Option<&'a Frame<'a>>,
}

impl<'a> Frame<'a> {
    fn get(&self, src: &Source) -> Option<&Value> {
        match src {
            Source::Slot(s) => self.slots[*s].as_ref(),
            Source::Const(c) => Some(&self.plan.consts[*c]),
            Source::Outer(name) => self.parent.and_then(|p| p.lookup(name)),
        }
    }

    /// Finds a value by name here or in an enclosing frame.
    pub(crate) fn lookup(&self, name: &str) -> Option<&Value> {
        match self.plan.names.get(name) {
            Some(src) => self.get(src),
            None => self.parent.and_then(|p| p.lookup(name)),
        }
    }
}

impl Plan {
    /// Runs the plan. `inputs` are positional, one per graph input; None
    /// takes the input's initializer.
    pub(crate) fn run(
        &self,
        inputs: Vec<Option<Value>>,
        parent: Option<&Frame>,
        limits: &Limits,
    ) -> Result<Vec<Value>> {
        let mut frame = Frame {
            plan: self,
            slots: vec![None; self.slot_count],
            parent,
        };
        for (input, value) in self.inputs.iter().zip(inputs) {
            frame.slots[input.slot] = match (value, input.default) {
                (Some(v), _) => Some(v),
                (None, Some(c)) => Some(self.consts[c].clone()),
                (None, None) => None,
            };
        }
        for step in &self.steps {
            let outputs = {
                let args: Vec<Option<&Value>> = step
                    .inputs
                    .iter()
                    .map(|src| src.as_ref().and_then(|s| frame.get(s)))
                    .collect();
                let ctx = RunCtx {
                    frame: Some(&frame),
                    limits,
                };
                step.kernel.run(&ctx, &args).map_err(|e| {
                    Error::new(
                        ErrorKind::Runtime,
                        format!("{}: {}", step.node.describe(), e.0),
                    )
                })?
            };
            for (slot, value) in step.outputs.iter().zip(outputs) {
                if let Some(s) = slot {
                    frame.slots[*s] = Some(value);
                }
            }
            for &s in &step.frees {
                frame.slots[s] = None;
            }
        }
        let mut results = Vec::with_capacity(self.outputs.len());
        for (info, src) in &self.outputs {
            let value = match src {
                // the last output to read a slot may take it
                Source::Slot(s) => {
                    let later = self
                        .outputs
                        .iter()
                        .skip(results.len() + 1)
                        .any(|(_, o)| o == src);
                    if later {
                        frame.slots[*s].clone()
                    } else {
                        frame.slots[*s].take()
                    }
                }
                other => frame.get(other).cloned(),
            };
            results.push(value.ok_or_else(|| {
                Error::new(
                    ErrorKind::Runtime,
                    format!("graph output '{}' was not computed", info.name),
                )
            })?);
        }
        Ok(results)
    }
}
