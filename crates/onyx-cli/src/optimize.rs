//! `onyx optimize`: the model as the optimisation passes rewrite it, saved
//! as an ONNX file.

use std::path::PathBuf;

use onyx_core::passes::OptLevel;
use onyx_core::Session;

use crate::bench::rewrites_summary;
use crate::run::session_options;

pub struct OptimizeArgs {
    pub model: PathBuf,
    pub output: PathBuf,
    pub opt_level: OptLevel,
}

pub fn optimize(args: &OptimizeArgs) -> Result<(), String> {
    // building the session also checks that Onyx can run the result
    let options = onyx_core::SessionOptions {
        optimized_model_path: Some(args.output.clone()),
        ..session_options(1, args.opt_level)
    };
    let session = Session::from_file(&args.model, options).map_err(|e| e.message)?;
    println!(
        "wrote {}: {} nodes; rewrites: {}",
        args.output.display(),
        session.model().graph.nodes.len(),
        rewrites_summary(&session)
    );
    Ok(())
}
