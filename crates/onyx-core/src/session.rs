use std::path::{Path, PathBuf};
use std::time::Duration;

use onyx_format::{decode_model, load_model, save_model, LoadLimits};
use onyx_tensor::{DType, Value};

use crate::ir::{export_model, import_model_with, Dim, Model, TypeInfo, ValueInfo};
use crate::ops::Registry;
use crate::passes::{optimize, OptLevel, PassCounts};
use crate::plan::{Plan, Planner};
use crate::{Error, ErrorKind, Limits, Result};
use onyx_kernels::ThreadPool;

/// The time one node took in one run.
#[derive(Clone, Debug)]
pub struct NodeTime {
    pub name: String,
    pub op_type: String,
    pub time: Duration,
}

/// How a session is built and run.
#[derive(Clone, Debug, Default)]
pub struct SessionOptions {
    pub limits: Limits,
    pub load_limits: LoadLimits,
    /// Threads one run may split an operator's work across: 0 (the default)
    /// means one per physical core, 1 keeps every run on its caller's thread.
    pub threads: usize,
    /// How much the graph is rewritten before planning.
    pub opt_level: OptLevel,
    /// Where `Session::from_model` writes the model as rewritten by the
    /// passes, as an ONNX file (as ONNX Runtime's `optimized_model_filepath`);
    /// a model over protobuf's 2 GiB limit gets its large initializers in
    /// `<file name>.data` beside it. Failing to write fails the session.
    pub optimized_model_path: Option<PathBuf>,
}

/// A model, checked and compiled once, ready to run many times, from many
/// threads at once (`Session` is `Send + Sync`).
pub struct Session {
    model: Model,
    plan: Plan,
    options: SessionOptions,
    /// The threads this session's runs split their operators across.
    pool: ThreadPool,
    rewrites: PassCounts,
}

fn invalid_arg(msg: String) -> Error {
    Error::new(ErrorKind::InvalidArgument, msg)
}

impl Session {
    /// Loads an .onnx file; external data is read from the file's folder.
    pub fn from_file(path: &Path, options: SessionOptions) -> Result<Session> {
        let (proto, dir) = load_model(path, &options.load_limits)?;
        let model = import_model_with(&proto, Some(&dir), &options.limits)?;
        // the decoded file is no longer needed: free it before planning
        drop(proto);
        Session::from_model(model, options)
    }

    /// Builds a session from the bytes of an .onnx file (no external data).
    pub fn from_bytes(bytes: &[u8], options: SessionOptions) -> Result<Session> {
        let max = options.load_limits.max_model_bytes;
        if bytes.len() as u64 > max {
            return Err(Error::new(
                ErrorKind::LimitExceeded,
                format!(
                    "the model is {} bytes, over the limit max_model_bytes={max}",
                    bytes.len()
                ),
            ));
        }
        let proto = decode_model(bytes)?;
        let model = import_model_with(&proto, None, &options.limits)?;
        drop(proto);
        Session::from_model(model, options)
    }

    pub fn from_model(mut model: Model, options: SessionOptions) -> Result<Session> {
        let rewrites = optimize(&mut model, options.opt_level, &options.limits);
        if let Some(path) = &options.optimized_model_path {
            // before planning, which takes the initializers over
            save_model(export_model(&model), path).map_err(|e| {
                Error::new(
                    ErrorKind::Runtime,
                    format!("cannot save the optimised model: {}", e.0),
                )
            })?;
        }
        let planner = Planner {
            opsets: &model.opsets,
            registry: Registry::global(),
        };
        // the plan takes the initializers over
        let initializers = std::mem::take(&mut model.graph.initializers);
        let plan = planner.plan(&model.graph, initializers)?;
        Ok(Session {
            model,
            plan,
            pool: ThreadPool::new(options.threads),
            options,
            rewrites,
        })
    }

    /// The model as run: after the optimisation passes, without the data of
    /// its initializers (the plan holds those).
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// How often each optimisation pass rewrote the graph.
    pub fn rewrites(&self) -> &PassCounts {
        &self.rewrites
    }

    /// The inputs a caller must or may feed: graph inputs without an initializer.
    pub fn inputs(&self) -> Vec<&ValueInfo> {
        self.plan
            .input_infos()
            .filter(|(_, has_init)| !has_init)
            .map(|(i, _)| i)
            .collect()
    }

    /// Graph inputs that have an initializer, which a caller may override.
    pub fn overridable_initializers(&self) -> Vec<&ValueInfo> {
        self.plan
            .input_infos()
            .filter(|(_, has_init)| *has_init)
            .map(|(i, _)| i)
            .collect()
    }

    pub fn outputs(&self) -> Vec<&ValueInfo> {
        self.plan.output_infos().collect()
    }

    /// Runs the model on named inputs; returns the outputs in graph order.
    pub fn run(&self, feeds: Vec<(String, Value)>) -> Result<Vec<Value>> {
        let positional = self.positional_inputs(feeds)?;
        let (plan, limits) = (&self.plan, &self.options.limits);
        self.pool.run(|| plan.run(positional, None, limits))
    }

    /// Runs the model as [`Session::run`] does and also returns the time
    /// each node of the main graph took (a node holding a subgraph counts
    /// the subgraph's time), in the order the nodes ran.
    pub fn run_profiled(&self, feeds: Vec<(String, Value)>) -> Result<(Vec<Value>, Vec<NodeTime>)> {
        let positional = self.positional_inputs(feeds)?;
        let mut times = vec![Duration::ZERO; self.plan.steps.len()];
        let (plan, limits) = (&self.plan, &self.options.limits);
        let outputs = self
            .pool
            .run(|| plan.run_timed(positional, None, limits, Some(&mut times)))?;
        let profile = self
            .plan
            .steps
            .iter()
            .zip(times)
            .map(|(step, time)| NodeTime {
                name: step.node.name.clone(),
                op_type: step.node.op_type.clone(),
                time,
            })
            .collect();
        Ok((outputs, profile))
    }

    /// Orders named feeds as the plan's inputs, checking each against its
    /// declaration and that every required input is there.
    fn positional_inputs(&self, feeds: Vec<(String, Value)>) -> Result<Vec<Option<Value>>> {
        let mut positional: Vec<Option<Value>> = vec![None; self.plan.inputs.len()];
        for (name, value) in feeds {
            let idx = self
                .plan
                .inputs
                .iter()
                .position(|i| i.info.name == name)
                .ok_or_else(|| {
                    let expected: Vec<&str> = self
                        .plan
                        .inputs
                        .iter()
                        .map(|i| i.info.name.as_str())
                        .collect();
                    invalid_arg(format!(
                        "unknown input '{name}'; the model's inputs are {expected:?}"
                    ))
                })?;
            if positional[idx].is_some() {
                return Err(invalid_arg(format!("input '{name}' is given twice")));
            }
            check_input(&self.plan.inputs[idx].info, &value)?;
            positional[idx] = Some(value);
        }
        for (input, value) in self.plan.inputs.iter().zip(&positional) {
            let optional = matches!(input.info.ty, Some(TypeInfo::Optional(_)));
            if value.is_none() && input.default.is_none() && !optional {
                return Err(invalid_arg(format!(
                    "input '{}' is missing",
                    input.info.name
                )));
            }
        }
        Ok(positional)
    }

    /// How many threads a run may use.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }
}

/// Checks a fed value against the input's declared type: kind, element
/// type, rank and fixed dims.
fn check_input(info: &ValueInfo, value: &Value) -> Result<()> {
    let Some(TypeInfo::Tensor { dtype, shape }) = &info.ty else {
        return Ok(());
    };
    let name = &info.name;
    let Value::Tensor(t) = value else {
        return Err(invalid_arg(format!(
            "input '{name}' expects a tensor but was given {}",
            value.kind()
        )));
    };
    if let Some(d) = dtype {
        if *d != t.dtype() {
            return Err(invalid_arg(format!(
                "input '{name}' expects element type {d} but was given {}",
                t.dtype()
            )));
        }
    }
    if let Some(dims) = shape {
        if dims.len() != t.rank() {
            return Err(invalid_arg(format!(
                "input '{name}' expects rank {} but was given shape {:?}",
                dims.len(),
                t.shape()
            )));
        }
        for (i, (d, &got)) in dims.iter().zip(t.shape()).enumerate() {
            if let Dim::Fixed(want) = d {
                if *want != got {
                    return Err(invalid_arg(format!(
                        "input '{name}' expects dim {i} to be {want} but was given shape {:?}",
                        t.shape()
                    )));
                }
            }
        }
    }
    Ok(())
}

/// The element type a declared tensor type names, if any.
pub fn declared_dtype(ty: &Option<TypeInfo>) -> Option<DType> {
    match ty {
        Some(TypeInfo::Tensor { dtype, .. }) => *dtype,
        _ => None,
    }
}
