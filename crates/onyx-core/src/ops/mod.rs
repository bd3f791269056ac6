//! Operators: the `Kernel` trait, the registry that maps (domain, op_type)
//! to a builder, and one file per operator family.
//!
//! A builder runs once per node when a session is built: it reads and checks
//! the attributes for the node's opset version and returns a kernel. The
//! kernel's `run` is the hot path and sees only inputs.

mod util;

mod activation;
mod cast;
mod control;
mod conv;
mod elementwise;
mod flex_attention;
mod generator;
mod image;
mod index;
mod linear_attention;
mod logic;
mod matmul;
mod misc;
mod ml;
mod norm;
mod pool;
mod quant;
mod reduce;
mod resize;
mod rnn;
mod sequence;
mod shape;
mod spectral;
mod string;
mod text;
mod training;

pub use util::*;

use std::cell::Cell;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, OnceLock};

use onyx_tensor::{TensorError, Value};

use crate::exec::Frame;
use crate::ir::{AttrError, Graph, Node};
use crate::plan::{Plan, Planner};
use crate::Limits;

/// A failure inside an operator, as one line; the executor adds the node's name.
#[derive(Clone, Debug, PartialEq)]
pub struct OpError(pub String);

impl fmt::Display for OpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<TensorError> for OpError {
    fn from(e: TensorError) -> OpError {
        OpError(e.0)
    }
}

impl From<AttrError> for OpError {
    fn from(e: AttrError) -> OpError {
        OpError(e.0)
    }
}

impl From<crate::Error> for OpError {
    fn from(e: crate::Error) -> OpError {
        OpError(e.message)
    }
}

pub type OpResult<T> = Result<T, OpError>;

/// Builds an `OpError` from a format string.
#[macro_export]
macro_rules! op_err {
    ($($arg:tt)*) => { $crate::ops::OpError(format!($($arg)*)) };
}

/// A built operator, ready to run many times (from many threads at once).
pub trait Kernel: Send + Sync {
    /// Computes the outputs; `inputs[i]` is None for an omitted optional input.
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>>;
}

/// Any suitable closure is a kernel: builders capture their parsed attributes.
impl<F> Kernel for F
where
    F: Fn(&RunCtx, &[Option<&Value>]) -> OpResult<Vec<Value>> + Send + Sync,
{
    fn run(&self, ctx: &RunCtx, inputs: &[Option<&Value>]) -> OpResult<Vec<Value>> {
        self(ctx, inputs)
    }
}

/// What a builder sees: the node, its opset version, and a way to compile subgraphs.
pub struct BuildCtx<'a> {
    pub node: &'a Node,
    /// The version of the node's domain the model imports.
    pub opset: i64,
    pub(crate) planner: &'a Planner<'a>,
    /// Per node input: the initializer it reads, when no run can change it.
    pub(crate) const_inputs: &'a [Option<&'a Value>],
    /// Bit `i` set: the kernel keeps its own form of constant input `i`.
    pub(crate) stood_in: Cell<u64>,
}

impl BuildCtx<'_> {
    /// Input `i` when it is a constant tensor (an initializer that is not
    /// also a graph input), so a kernel can prepare it once, at build time.
    pub fn const_input(&self, i: usize) -> Option<&onyx_tensor::Tensor> {
        match self.const_inputs.get(i).copied().flatten() {
            Some(Value::Tensor(t)) => Some(t),
            _ => None,
        }
    }

    /// Says that the kernel keeps its own form of constant input `i` (a
    /// packed weight) and never reads that input when it runs: the run
    /// passes None there, and the plan frees the constant when nothing else
    /// reads it.
    pub fn stand_in_for(&self, i: usize) {
        if i < 64 && self.const_input(i).is_some() {
            self.stood_in.set(self.stood_in.get() | 1 << i);
        }
    }

    /// Compiles a subgraph held by this node; it may read the enclosing scopes.
    pub fn subgraph(&self, graph: &Graph) -> OpResult<Arc<Plan>> {
        self.planner
            .subplan(graph)
            .map(Arc::new)
            .map_err(OpError::from)
    }

    /// The required graph attribute `name`, compiled.
    pub fn subgraph_attr(&self, name: &str) -> OpResult<Arc<Plan>> {
        let g = self
            .node
            .attr_graph(name)?
            .ok_or_else(|| op_err!("missing graph attribute '{name}'"))?;
        self.subgraph(&g)
    }
}

/// What a kernel sees while it runs.
pub struct RunCtx<'a> {
    pub(crate) frame: Option<&'a Frame<'a>>,
    pub limits: &'a Limits,
}

impl<'a> RunCtx<'a> {
    /// A context outside any graph run (for calling kernels directly, as tests do).
    pub fn detached(limits: &'a Limits) -> RunCtx<'a> {
        RunCtx {
            frame: None,
            limits,
        }
    }

    /// Runs a compiled subgraph whose outer scope is the current graph.
    pub fn run_subgraph(&self, plan: &Plan, inputs: Vec<Option<Value>>) -> OpResult<Vec<Value>> {
        plan.run(inputs, self.frame, self.limits)
            .map_err(OpError::from)
    }

    /// Fails, naming the limit, if a tensor of `elements` x `elem_bytes` is over it.
    /// Also fails if the run, holding what it holds now, would go over
    /// `max_run_bytes` with it.
    pub fn check_alloc(&self, elements: usize, elem_bytes: usize) -> OpResult<()> {
        self.limits
            .check_tensor(elements, elem_bytes)
            .map_err(OpError::from)?;
        if let Some(frame) = self.frame {
            self.limits
                .check_run_bytes(frame.held_bytes(), elements.saturating_mul(elem_bytes))
                .map_err(OpError::from)?;
        }
        Ok(())
    }
}

pub type BuildFn = fn(&BuildCtx) -> OpResult<Box<dyn Kernel>>;

/// Operator builders by (domain, op_type).
#[derive(Default)]
pub struct Registry {
    builders: HashMap<(&'static str, &'static str), BuildFn>,
}

impl Registry {
    pub fn add(&mut self, domain: &'static str, op_type: &'static str, build: BuildFn) {
        self.builders.insert((domain, op_type), build);
    }

    pub fn get(&self, domain: &str, op_type: &str) -> Option<BuildFn> {
        self.builders.get(&(domain, op_type)).copied()
    }

    pub fn contains(&self, domain: &str, op_type: &str) -> bool {
        self.get(domain, op_type).is_some()
    }

    /// Every operator Onyx implements.
    pub fn global() -> &'static Registry {
        static REGISTRY: OnceLock<Registry> = OnceLock::new();
        REGISTRY.get_or_init(|| {
            let mut r = Registry::default();
            activation::register(&mut r);
            cast::register(&mut r);
            control::register(&mut r);
            conv::register(&mut r);
            elementwise::register(&mut r);
            flex_attention::register(&mut r);
            generator::register(&mut r);
            image::register(&mut r);
            index::register(&mut r);
            linear_attention::register(&mut r);
            logic::register(&mut r);
            matmul::register(&mut r);
            misc::register(&mut r);
            ml::register(&mut r);
            norm::register(&mut r);
            pool::register(&mut r);
            quant::register(&mut r);
            reduce::register(&mut r);
            resize::register(&mut r);
            rnn::register(&mut r);
            sequence::register(&mut r);
            shape::register(&mut r);
            spectral::register(&mut r);
            string::register(&mut r);
            text::register(&mut r);
            training::register(&mut r);
            r
        })
    }
}
