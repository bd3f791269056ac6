//! Generates the Rust protobuf types for the ONNX schema.
//!
//! Usage: protogen INCLUDE_DIR OUT_DIR
//! INCLUDE_DIR holds onnx/onnx-ml.proto and onnx/onnx-data.proto (the onnx wheel's
//! site-packages folder), since onnx-data.proto imports "onnx/onnx-ml.proto".

use std::path::PathBuf;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: protogen INCLUDE_DIR OUT_DIR");
        std::process::exit(2);
    }
    let proto_dir = PathBuf::from(&args[1]);
    let out_dir = PathBuf::from(&args[2]);
    let files = ["onnx/onnx-ml.proto", "onnx/onnx-data.proto"];
    let descriptors = protox::compile(&files, [&proto_dir]).unwrap_or_else(|e| {
        eprintln!("protogen: cannot compile the schema: {e}");
        std::process::exit(1);
    });
    let mut config = prost_build::Config::new();
    config.out_dir(&out_dir);
    // Tensor payloads can be large: decode raw_data into `bytes::Bytes` so that
    // it can borrow from the model buffer instead of copying.
    config.bytes([".onnx.TensorProto.raw_data"]);
    if let Err(e) = config.compile_fds(descriptors) {
        eprintln!("protogen: cannot generate code: {e}");
        std::process::exit(1);
    }
}
