//! `onyx`: run, inspect, check, benchmark and optimise ONNX models from the
//! command line.
//!
//! Every failure prints one line on stderr and exits non-zero; a panic
//! (always a bug) is reported the same way, without a backtrace.
#![forbid(unsafe_code)]

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod bench;
mod inspect;
mod npy;
mod optimize;
mod run;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use onyx_core::passes::OptLevel;

#[derive(Parser)]
#[command(name = "onyx", version, about = "Onyx: an ONNX runtime")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// How output files are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OutputFormat {
    Npy,
    Pb,
}

#[derive(Subcommand)]
enum Command {
    /// Run a model on inputs from files, or on random inputs.
    Run {
        model: PathBuf,
        /// An input as NAME=FILE (.npy, or .pb TensorProto/SequenceProto/OptionalProto).
        #[arg(long = "input", value_name = "NAME=FILE")]
        inputs: Vec<String>,
        /// A folder of input_0.pb, input_1.pb, ... as the ONNX test data lays them out.
        #[arg(long)]
        inputs_dir: Option<PathBuf>,
        /// Where to write output_0.npy/.pb, ... in graph-output order.
        #[arg(long)]
        output_dir: Option<PathBuf>,
        /// The format of the output files.
        #[arg(long, value_enum, default_value = "npy")]
        format: OutputFormat,
        /// The size of a symbolic dim for random inputs, as NAME=VALUE (default 1).
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
        /// Threads a run may split its operators across (0: one per physical core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Graph optimisations: disabled, basic, extended or all.
        #[arg(long, default_value = "all")]
        opt_level: OptLevel,
    },
    /// Time a model on random inputs: load, first run, and the median, p10
    /// and p90 of repeated runs.
    Bench {
        model: PathBuf,
        /// Threads a run may split its operators across (0: one per physical core).
        #[arg(long, default_value_t = 0)]
        threads: usize,
        /// Timed runs.
        #[arg(long, default_value_t = 20)]
        runs: usize,
        /// Untimed runs after the first, before timing.
        #[arg(long, default_value_t = 3)]
        warmup: usize,
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
        /// The size of a symbolic dim, as NAME=VALUE (default 1).
        #[arg(long = "dim", value_name = "NAME=VALUE")]
        dims: Vec<String>,
        /// Also print the time per operator type (from separate, profiled runs).
        #[arg(long)]
        profile: bool,
        /// Graph optimisations: disabled, basic, extended or all.
        #[arg(long, default_value = "all")]
        opt_level: OptLevel,
    },
    /// Save the model as the optimisation passes rewrite it, as an ONNX file.
    Optimize {
        model: PathBuf,
        /// Where to write the optimised model.
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Graph optimisations: disabled, basic, extended or all.
        #[arg(long, default_value = "all")]
        opt_level: OptLevel,
    },
    /// Describe a model: versions, inputs and outputs, operators, parameters.
    Inspect { model: PathBuf },
    /// Validate a model's structure; exits non-zero if it has problems.
    Check { model: PathBuf },
}

fn main() -> ExitCode {
    std::panic::set_hook(Box::new(|info| {
        let msg = info
            .payload()
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| info.payload().downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "unknown".into());
        eprintln!("onyx: internal error (please report): {msg}");
    }));
    let cli = Cli::parse();
    let result = std::panic::catch_unwind(|| match cli.command {
        Command::Run {
            model,
            inputs,
            inputs_dir,
            output_dir,
            format,
            dims,
            threads,
            opt_level,
        } => run::run(&run::RunArgs {
            model,
            inputs,
            inputs_dir,
            output_dir,
            format,
            dims,
            threads,
            opt_level,
        }),
        Command::Bench {
            model,
            threads,
            runs,
            warmup,
            json,
            dims,
            profile,
            opt_level,
        } => bench::bench(&bench::BenchArgs {
            model,
            threads,
            runs,
            warmup,
            json,
            dims,
            profile,
            opt_level,
        }),
        Command::Optimize {
            model,
            output,
            opt_level,
        } => optimize::optimize(&optimize::OptimizeArgs {
            model,
            output,
            opt_level,
        }),
        Command::Inspect { model } => inspect::inspect(&model),
        Command::Check { model } => inspect::check(&model),
    });
    match result {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(message)) => {
            eprintln!("onyx: error: {message}");
            ExitCode::FAILURE
        }
        Err(_) => ExitCode::from(101),
    }
}
