//! The `onyx` command on good and hostile inputs: every failure is one
//! clear line on stderr and a non-zero exit, never a panic.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use onyx_format::onnx::{
    tensor_proto, type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    StringStringEntryProto, TensorShapeProto, TypeProto, ValueInfoProto,
};
use onyx_format::{encode_model, tensor_to_proto, value_to_proto_bytes};
use onyx_tensor::{Tensor, Value};

fn onyx(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_onyx"))
        .args(args)
        .output()
        .expect("run onyx")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onyx-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn float_input(name: &str, dims: &[i64]) -> ValueInfoProto {
    use onyx_format::onnx::tensor_shape_proto::{dimension, Dimension};
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: Some(TensorShapeProto {
                    dim: dims
                        .iter()
                        .map(|&d| Dimension {
                            value: Some(dimension::Value::DimValue(d)),
                            ..Default::default()
                        })
                        .collect(),
                }),
            })),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str]) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn model(nodes: Vec<NodeProto>, inputs: Vec<ValueInfoProto>, outputs: &[&str]) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("g".into()),
            node: nodes,
            input: inputs,
            output: outputs.iter().map(|o| float_input(o, &[2])).collect(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn write_model(dir: &Path, m: &ModelProto) -> String {
    let path = dir.join("model.onnx");
    std::fs::write(&path, encode_model(m)).unwrap();
    path.to_string_lossy().into_owned()
}

/// Asserts a clean failure whose single stderr line contains `needle`.
fn assert_fails_with(out: &Output, needle: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected failure, got success; stderr: {stderr}"
    );
    assert_eq!(out.status.code(), Some(1), "stderr: {stderr}");
    assert!(
        !stderr.contains("panicked"),
        "panic reached the user: {stderr}"
    );
    assert_eq!(
        stderr.trim_end().lines().count(),
        1,
        "not one line: {stderr}"
    );
    assert!(stderr.contains(needle), "'{needle}' not in: {stderr}");
}

fn add_model() -> ModelProto {
    model(
        vec![node("Add", &["x", "y"], &["z"])],
        vec![float_input("x", &[2]), float_input("y", &[2])],
        &["z"],
    )
}

#[test]
fn runs_with_inputs_dir_and_writes_pb_outputs() {
    let dir = scratch("pb");
    let m = write_model(&dir, &add_model());
    let inputs = dir.join("inputs");
    std::fs::create_dir_all(&inputs).unwrap();
    let x = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    let y = Tensor::from_vec(vec![2], vec![10.0f32, 20.0]).unwrap();
    std::fs::write(
        inputs.join("input_0.pb"),
        value_to_proto_bytes(&Value::Tensor(x), "x"),
    )
    .unwrap();
    std::fs::write(
        inputs.join("input_1.pb"),
        value_to_proto_bytes(&Value::Tensor(y), "y"),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let out = onyx(&[
        "run",
        "--inputs-dir",
        inputs.to_str().unwrap(),
        "--output-dir",
        out_dir.to_str().unwrap(),
        "--format",
        "pb",
        &m,
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(out_dir.join("output_0.pb")).unwrap();
    let (name, value) =
        onyx_format::decode_value_file(&bytes, onyx_format::ValueKind::Tensor).unwrap();
    assert_eq!(name, "z");
    assert_eq!(
        value.as_tensor().unwrap().as_slice::<f32>().unwrap(),
        &[11.0, 22.0]
    );
}

#[test]
fn runs_on_random_inputs_and_prints_a_summary() {
    let dir = scratch("random");
    let m = write_model(&dir, &add_model());
    let out = onyx(&["run", &m]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("z: float [2]"), "{stdout}");
    assert!(
        stdout.contains("min") && stdout.contains("mean"),
        "{stdout}"
    );
}

#[test]
fn refuses_missing_truncated_and_random_files() {
    let dir = scratch("garbage");
    assert_fails_with(
        &onyx(&["run", dir.join("nope.onnx").to_str().unwrap()]),
        "cannot read model",
    );
    let bytes = encode_model(&add_model());
    let truncated = dir.join("truncated.onnx");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    assert_fails_with(
        &onyx(&["run", truncated.to_str().unwrap()]),
        "not a valid ONNX model",
    );
    let random = dir.join("random.onnx");
    let noise: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    std::fs::write(&random, noise).unwrap();
    assert_fails_with(
        &onyx(&["run", random.to_str().unwrap()]),
        "not a valid ONNX model",
    );
}

#[test]
fn refuses_broken_graphs() {
    let dir = scratch("graphs");
    let cycle = model(
        vec![
            node("Add", &["x", "b"], &["a"]),
            node("Add", &["a", "x"], &["b"]),
        ],
        vec![float_input("x", &[2])],
        &["b"],
    );
    assert_fails_with(&onyx(&["run", &write_model(&dir, &cycle)]), "cycle");
    let dangling = model(
        vec![node("Add", &["x", "ghost"], &["z"])],
        vec![float_input("x", &[2])],
        &["z"],
    );
    assert_fails_with(
        &onyx(&["run", &write_model(&dir, &dangling)]),
        "reads 'ghost'",
    );
    let unknown = model(
        vec![node("FrobnicateV9", &["x"], &["z"])],
        vec![float_input("x", &[2])],
        &["z"],
    );
    assert_fails_with(
        &onyx(&["run", &write_model(&dir, &unknown)]),
        "FrobnicateV9 is not supported",
    );
    assert_fails_with(
        &onyx(&["check", &write_model(&dir, &dangling)]),
        "reads 'ghost'",
    );
}

#[test]
fn refuses_external_data_outside_the_model_folder() {
    let dir = scratch("external");
    let mut m = model(
        vec![node("Add", &["x", "w"], &["z"])],
        vec![float_input("x", &[2])],
        &["z"],
    );
    let mut w = tensor_to_proto(&Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap(), "w");
    w.raw_data = None;
    w.data_location = Some(tensor_proto::DataLocation::External as i32);
    w.external_data = vec![StringStringEntryProto {
        key: Some("location".into()),
        value: Some("../../etc/passwd".into()),
    }];
    m.graph.as_mut().unwrap().initializer.push(w);
    assert_fails_with(
        &onyx(&["run", &write_model(&dir, &m)]),
        "outside the model's folder",
    );
}

#[test]
fn refuses_inputs_of_the_wrong_shape_or_type() {
    let dir = scratch("inputs");
    let m = write_model(&dir, &add_model());
    let wrong_shape = dir.join("x3.pb");
    let t = Tensor::from_vec(vec![3], vec![1.0f32, 2.0, 3.0]).unwrap();
    std::fs::write(&wrong_shape, value_to_proto_bytes(&Value::Tensor(t), "x")).unwrap();
    let y = dir.join("y.pb");
    let t = Tensor::from_vec(vec![2], vec![1.0f32, 2.0]).unwrap();
    std::fs::write(&y, value_to_proto_bytes(&Value::Tensor(t), "y")).unwrap();
    let out = onyx(&[
        "run",
        &m,
        "--input",
        &format!("x={}", wrong_shape.display()),
        "--input",
        &format!("y={}", y.display()),
    ]);
    assert_fails_with(&out, "input 'x' expects dim 0 to be 2");
    let wrong_type = dir.join("xi.pb");
    let t = Tensor::from_vec(vec![2], vec![1i64, 2]).unwrap();
    std::fs::write(&wrong_type, value_to_proto_bytes(&Value::Tensor(t), "x")).unwrap();
    let out = onyx(&[
        "run",
        &m,
        "--input",
        &format!("x={}", wrong_type.display()),
        "--input",
        &format!("y={}", y.display()),
    ]);
    assert_fails_with(
        &out,
        "input 'x' expects element type float but was given int64",
    );
    let out = onyx(&["run", &m, "--input", &format!("x={}", y.display())]);
    assert_fails_with(&out, "input 'y' is missing");
}

#[test]
fn runs_the_example_model() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp.onnx");
    let out = onyx(&["run", example.to_str().unwrap(), "--dim", "batch=2"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("probabilities: float [2, 3]"), "{stdout}");
}

#[test]
fn benches_the_example_model() {
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp.onnx");
    let m = example.to_str().unwrap();
    let out = onyx(&[
        "bench",
        m,
        "--runs",
        "5",
        "--warmup",
        "1",
        "--threads",
        "2",
        "--json",
        "--dim",
        "batch=3",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = stdout.trim();
    assert!(line.starts_with('{') && line.ends_with('}'), "{line}");
    for key in ["load_ms", "first_run_ms", "median_ms", "p10_ms", "p90_ms"] {
        let at = line
            .find(&format!("\"{key}\": "))
            .unwrap_or_else(|| panic!("{key} in {line}"));
        let rest = &line[at + key.len() + 4..];
        let num: f64 = rest[..rest.find(',').unwrap()].parse().unwrap();
        assert!(num >= 0.0 && num.is_finite(), "{key} = {num}");
    }
    assert!(
        line.contains("\"runs\": 5") && line.contains("\"threads\": 2"),
        "{line}"
    );
    // the percentiles are ordered
    let get = |key: &str| -> f64 {
        let at = line.find(&format!("\"{key}\": ")).unwrap() + key.len() + 4;
        line[at..at + line[at..].find(',').unwrap()]
            .parse()
            .unwrap()
    };
    assert!(get("p10_ms") <= get("median_ms") && get("median_ms") <= get("p90_ms"));
    let out = onyx(&["bench", m, "--runs", "0"]);
    assert_fails_with(&out, "--runs must be at least 1");
    let out = onyx(&["bench", "no-such-model.onnx"]);
    assert!(!out.status.success());
    let text = onyx(&["bench", m, "--runs", "2"]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("median"));
}

#[test]
fn optimizes_the_example_model_into_a_file_that_runs_the_same() {
    use onyx_core::passes::OptLevel;
    use onyx_core::{Session, SessionOptions};

    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/mlp.onnx");
    let dir = scratch("optimize");
    let out_path = dir.join("mlp-opt.onnx");
    let out = onyx(&[
        "optimize",
        example.to_str().unwrap(),
        "-o",
        out_path.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("3 nodes; rewrites: FusedMatMul 2"),
        "{stdout}"
    );

    let (written, _) = onyx_format::load_model(&out_path, &Default::default()).unwrap();
    let ops: Vec<(&str, &str)> = written
        .graph
        .as_ref()
        .unwrap()
        .node
        .iter()
        .map(|n| (n.domain(), n.op_type()))
        .collect();
    assert_eq!(
        ops,
        [
            ("com.onyx", "FusedMatMul"),
            ("com.onyx", "FusedMatMul"),
            ("", "Softmax")
        ]
    );
    let unoptimised = SessionOptions {
        opt_level: OptLevel::Disabled,
        ..SessionOptions::default()
    };
    let run = |path: &Path| {
        let s = Session::from_file(path, unoptimised.clone()).unwrap();
        let x: Vec<f32> = (0..12).map(|i| i as f32 * 0.3 - 1.7).collect();
        let x = Tensor::from_vec(vec![3, 4], x).unwrap();
        let y = s.run(vec![("features".into(), Value::Tensor(x))]).unwrap();
        y[0].as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    };
    let (got, want) = (run(&out_path), run(&example));
    assert_eq!(got.len(), 9);
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() <= 1e-5, "{got:?} vs {want:?}");
    }

    // the level is chosen as for `onyx run`
    let plain_path = dir.join("mlp-plain.onnx");
    let plain = plain_path.to_str().unwrap();
    let m = example.to_str().unwrap();
    let out = onyx(&["optimize", m, "-o", plain, "--opt-level", "disabled"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("6 nodes; rewrites: none"));

    let missing = dir.join("no-folder").join("x.onnx");
    let out = onyx(&["optimize", m, "-o", missing.to_str().unwrap()]);
    assert_fails_with(&out, "cannot save the optimised model: cannot write model");
    let out = onyx(&[
        "optimize",
        dir.join("nope.onnx").to_str().unwrap(),
        "-o",
        plain,
    ]);
    assert_fails_with(&out, "cannot read model");
    let _ = std::fs::remove_dir_all(&dir);
}
