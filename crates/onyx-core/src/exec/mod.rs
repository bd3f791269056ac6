//! Runs a `Plan`: feeds the inputs, runs each step's kernel in order, frees
//! values after their last reader, and returns the graph outputs.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use onyx_tensor::{Data, Tensor, Value};

use crate::ops::RunCtx;
use crate::plan::{Plan, Source};
use crate::{Error, ErrorKind, Limits, Result};

/// The values of one run of one plan; subgraph runs point at their parent's frame.
pub(crate) struct Frame<'a> {
    plan: &'a Plan,
    slots: Vec<Option<Value>>,
    parent: Option<&'a Frame<'a>>,
    /// Bytes of values the whole run holds now, shared with subgraph frames.
    held: &'a AtomicUsize,
    /// When the run must have finished (`Limits::max_run_time`), shared
    /// with subgraph frames.
    deadline: Option<Instant>,
}

impl<'a> Frame<'a> {
    fn get(&self, src: &Source) -> Option<&Value> {
        match src {
            Source::Slot(s) => self.slots[*s].as_ref(),
            Source::Const(c) => Some(&self.plan.consts[*c]),
            Source::Outer(name) => self.parent.and_then(|p| p.lookup(name)),
        }
    }

    /// Bytes of values the run holds now (for `Limits::max_run_bytes`).
    pub(crate) fn held_bytes(&self) -> usize {
        self.held.load(Ordering::Relaxed)
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
        self.run_timed(inputs, parent, limits, None)
    }

    /// Runs the plan as [`Plan::run`] does; with `step_times` (one entry
    /// per step), adds each step's kernel time to its entry.
    pub(crate) fn run_timed(
        &self,
        inputs: Vec<Option<Value>>,
        parent: Option<&Frame>,
        limits: &Limits,
        mut step_times: Option<&mut [Duration]>,
    ) -> Result<Vec<Value>> {
        let run_total = AtomicUsize::new(0);
        let deadline = match parent {
            Some(p) => p.deadline,
            None => limits.max_run_time.map(|t| Instant::now() + t),
        };
        let mut frame = Frame {
            plan: self,
            slots: vec![None; self.slot_count],
            parent,
            held: parent.map_or(&run_total, |p| p.held),
            deadline,
        };
        // a subgraph with no nodes still checks once per run (a Loop's iteration)
        check_deadline(deadline, limits)?;
        // bytes this frame has added to `held` and not yet given back
        let mut own = 0usize;
        for (input, value) in self.inputs.iter().zip(inputs) {
            frame.slots[input.slot] = match (value, input.default) {
                (Some(v), _) => Some(v),
                (None, Some(c)) => Some(self.consts[c].clone()),
                (None, None) => None,
            };
        }
        // the inputs count too: they are freed, like any value, after their last reader
        let fed = frame
            .slots
            .iter()
            .flatten()
            .fold(0usize, |n, v| n.saturating_add(value_bytes(v)));
        limits
            .check_run_bytes(frame.held_bytes(), fed)
            .map_err(|e| Error::new(e.kind, format!("the graph's inputs: {e}")))?;
        frame.held.fetch_add(fed, Ordering::Relaxed);
        own += fed;
        for (index, step) in self.steps.iter().enumerate() {
            check_deadline(deadline, limits).map_err(|e| {
                Error::new(e.kind, format!("{}: {}", step.node.describe(), e.message))
            })?;
            let started = step_times.is_some().then(Instant::now);
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
                    // limits keep their kind through the operator's error
                    let kind = if e.0.contains("over the limit max_") {
                        ErrorKind::LimitExceeded
                    } else {
                        ErrorKind::Runtime
                    };
                    Error::new(kind, format!("{}: {}", step.node.describe(), e.0))
                })?
            };
            if let (Some(times), Some(started)) = (step_times.as_deref_mut(), started) {
                times[index] += started.elapsed();
            }
            let made = outputs
                .iter()
                .fold(0usize, |n, v| n.saturating_add(value_bytes(v)));
            limits
                .check_run_bytes(frame.held_bytes(), made)
                .map_err(|e| Error::new(e.kind, format!("{}: {}", step.node.describe(), e)))?;
            frame.held.fetch_add(made, Ordering::Relaxed);
            own += made;
            for (slot, value) in step.outputs.iter().zip(outputs) {
                if let Some(s) = slot {
                    frame.slots[*s] = Some(value);
                }
            }
            for &s in &step.frees {
                if let Some(v) = frame.slots[s].take() {
                    let n = value_bytes(&v).min(own);
                    frame.held.fetch_sub(n, Ordering::Relaxed);
                    own -= n;
                }
            }
        }
        // what this frame still holds goes to the caller, who counts it anew
        frame.held.fetch_sub(own, Ordering::Relaxed);
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

/// Fails, naming the limit, once the run is past its deadline.
fn check_deadline(deadline: Option<Instant>, limits: &Limits) -> Result<()> {
    match (deadline, limits.max_run_time) {
        (Some(d), Some(limit)) if Instant::now() > d => Err(Error::new(
            ErrorKind::LimitExceeded,
            format!(
                "the run has gone over the limit max_run_time={}s",
                limit.as_secs_f64()
            ),
        )),
        _ => Ok(()),
    }
}

/// Bytes a tensor takes in memory: its elements, and the text of strings.
fn tensor_bytes(t: &Tensor) -> usize {
    let base = t.len().saturating_mul(t.dtype().size_in_memory());
    match t.data() {
        Data::Str(s) => s.iter().fold(base, |n, s| n.saturating_add(s.len())),
        _ => base,
    }
}

/// Bytes a value takes in memory.
pub(crate) fn value_bytes(v: &Value) -> usize {
    match v {
        Value::Tensor(t) => tensor_bytes(t),
        Value::Sequence { items, .. } => items
            .iter()
            .fold(0usize, |n, v| n.saturating_add(value_bytes(v))),
        Value::Map(m) => tensor_bytes(&m.keys).saturating_add(value_bytes(&m.values)),
        Value::Optional(o) => o.as_deref().map_or(0, value_bytes),
    }
}
