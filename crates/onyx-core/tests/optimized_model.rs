//! `SessionOptions::optimized_model_path`: the rewritten graph written as an
//! ONNX file, which loads again and computes what the original model does.

use std::path::{Path, PathBuf};

use onyx_core::passes::OptLevel;
use onyx_core::{ErrorKind, Session, SessionOptions};
use onyx_format::onnx::attribute_proto::AttributeType;
use onyx_format::onnx::tensor_shape_proto::{dimension, Dimension};
use onyx_format::onnx::{
    type_proto, AttributeProto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto,
    TensorShapeProto, TypeProto, ValueInfoProto,
};
use onyx_format::{encode_model, load_model, tensor_to_proto, LoadLimits};
use onyx_tensor::{Tensor, Value};

fn info(name: &str, elem_type: i32, dims: &[i64]) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(elem_type),
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
        name: Some(outputs[0].to_string()),
        op_type: Some(op.into()),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

fn with_attr(mut n: NodeProto, a: AttributeProto) -> NodeProto {
    n.attribute.push(a);
    n
}

fn ints_attr(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Ints as i32),
        ints: v.to_vec(),
        ..Default::default()
    }
}

fn graph_attr(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(AttributeType::Graph as i32),
        g: Some(g),
        ..Default::default()
    }
}

/// `n` values spread over [-2, 2], different for each seed.
fn vals(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| (((i * 7 + seed * 13) % 29) as f32 - 14.0) / 7.0)
        .collect()
}

fn f32s(shape: &[usize], v: Vec<f32>) -> Tensor {
    Tensor::from_vec(shape.to_vec(), v).unwrap()
}

const W: [f32; 6] = [0.5, -1.0, 0.25, 2.0, -0.75, 1.5];
const B: [f32; 2] = [0.1, -0.2];

/// y1 = Relu(x W + b); y2 = Relu(BatchNormalization(Conv(img))); y3 = If
/// flag then -y1 else y1, its branches reading y1 from the main graph.
fn fusable_model() -> ModelProto {
    let branch = |name: &str, op: &str| GraphProto {
        name: Some(name.into()),
        node: vec![node(op, &["y1"], &[&format!("{name}_out")])],
        output: vec![info(&format!("{name}_out"), 1, &[4, 2])],
        ..Default::default()
    };
    let float = |name: &str, shape: &[usize], v: Vec<f32>| tensor_to_proto(&f32s(shape, v), name);
    let var: Vec<f32> = vals(3, 5).iter().map(|v| v.abs() + 0.5).collect();
    ModelProto {
        ir_version: Some(8),
        producer_name: Some("optimized_model test".into()),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(17),
        }],
        graph: Some(GraphProto {
            name: Some("fusable".into()),
            node: vec![
                node("MatMul", &["x", "w"], &["m"]),
                node("Add", &["m", "b"], &["a"]),
                node("Relu", &["a"], &["y1"]),
                with_attr(
                    node("Conv", &["img", "cw"], &["c"]),
                    ints_attr("pads", &[1, 1, 1, 1]),
                ),
                node(
                    "BatchNormalization",
                    &["c", "scale", "beta", "mean", "var"],
                    &["bn"],
                ),
                node("Relu", &["bn"], &["y2"]),
                with_attr(
                    with_attr(
                        node("If", &["flag"], &["y3"]),
                        graph_attr("then_branch", branch("then", "Neg")),
                    ),
                    graph_attr("else_branch", branch("else", "Identity")),
                ),
            ],
            input: vec![
                info("x", 1, &[4, 3]),
                info("img", 1, &[1, 2, 5, 5]),
                info("flag", 9, &[]),
            ],
            output: vec![
                info("y1", 1, &[4, 2]),
                info("y2", 1, &[1, 3, 5, 5]),
                info("y3", 1, &[4, 2]),
            ],
            initializer: vec![
                float("w", &[3, 2], W.to_vec()),
                float("b", &[2], B.to_vec()),
                float("cw", &[3, 2, 3, 3], vals(54, 1)),
                float("scale", &[3], vals(3, 2)),
                float("beta", &[3], vals(3, 3)),
                float("mean", &[3], vals(3, 4)),
                float("var", &[3], var),
            ],
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("onyx-optimized-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn options(opt_level: OptLevel, optimized_model_path: Option<PathBuf>) -> SessionOptions {
    SessionOptions {
        opt_level,
        optimized_model_path,
        ..SessionOptions::default()
    }
}

fn feeds(flag: bool) -> Vec<(String, Value)> {
    vec![
        ("x".into(), Value::Tensor(f32s(&[4, 3], vals(12, 6)))),
        (
            "img".into(),
            Value::Tensor(f32s(&[1, 2, 5, 5], vals(50, 7))),
        ),
        (
            "flag".into(),
            Value::Tensor(Tensor::from_vec(vec![], vec![flag]).unwrap()),
        ),
    ]
}

fn run(s: &Session, flag: bool) -> Vec<Vec<f32>> {
    s.run(feeds(flag))
        .unwrap()
        .into_iter()
        .map(|v| v.into_tensor().unwrap().as_slice::<f32>().unwrap().to_vec())
        .collect()
}

/// (domain, op_type) of each node of the main graph of a saved model.
fn saved_ops(path: &Path) -> Vec<(String, String)> {
    let (proto, _) = load_model(path, &LoadLimits::default()).unwrap();
    proto
        .graph
        .unwrap()
        .node
        .iter()
        .map(|n| (n.domain().to_string(), n.op_type().to_string()))
        .collect()
}

fn assert_close(got: &[Vec<f32>], want: &[Vec<f32>]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        assert_eq!(g.len(), w.len());
        for (a, b) in g.iter().zip(w) {
            assert!((a - b).abs() <= 1e-5 * b.abs().max(1.0), "{a} vs {b}");
        }
    }
}

#[test]
fn the_written_model_holds_the_fusions_and_computes_the_same() {
    let dir = scratch("fused");
    let path = dir.join("opt.onnx");
    let bytes = encode_model(&fusable_model());
    let original = Session::from_bytes(&bytes, options(OptLevel::Disabled, None)).unwrap();
    Session::from_bytes(&bytes, options(OptLevel::All, Some(path.clone()))).unwrap();

    let ops = saved_ops(&path);
    let onyx = |op: &str| ("com.onyx".to_string(), op.to_string());
    assert!(ops.contains(&onyx("FusedMatMul")), "{ops:?}");
    assert!(ops.contains(&onyx("FusedConv")), "{ops:?}");
    for gone in ["MatMul", "Add", "Relu", "BatchNormalization", "Conv"] {
        assert!(
            !ops.contains(&(String::new(), gone.to_string())),
            "{gone} in {ops:?}"
        );
    }
    let (proto, _) = load_model(&path, &LoadLimits::default()).unwrap();
    assert!(proto
        .opset_import
        .iter()
        .any(|o| o.domain() == "com.onyx" && o.version() == 1));
    assert_eq!(proto.producer_name(), "optimized_model test");

    // loaded as it is, without rewriting it again
    let reloaded = Session::from_file(&path, options(OptLevel::Disabled, None)).unwrap();
    for flag in [true, false] {
        let got = run(&reloaded, flag);
        let want = run(&original, flag);
        assert_close(&got, &want);
        // y1 by hand: Relu(x W + b)
        let x = vals(12, 6);
        let y1: Vec<f32> = (0..8)
            .map(|k| {
                let (i, j) = (k / 2, k % 2);
                let dot: f32 = (0..3).map(|t| x[i * 3 + t] * W[t * 2 + j]).sum();
                (dot + B[j]).max(0.0)
            })
            .collect();
        assert_close(&got[..1], std::slice::from_ref(&y1));
        let y3: Vec<f32> = y1.iter().map(|v| if flag { -v } else { *v }).collect();
        assert_close(&got[2..], &[y3]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unoptimised_the_written_model_is_the_given_graph() {
    let dir = scratch("disabled");
    let given = dir.join("given.onnx");
    let written = dir.join("written.onnx");
    std::fs::write(&given, encode_model(&fusable_model())).unwrap();
    let s = Session::from_file(&given, options(OptLevel::Disabled, Some(written.clone()))).unwrap();
    assert_eq!(saved_ops(&written), saved_ops(&given));
    let again = Session::from_file(&written, options(OptLevel::Disabled, None)).unwrap();
    assert_eq!(run(&again, true), run(&s, true));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_path_fails_the_session() {
    let dir = scratch("unwritable");
    let path = dir.join("missing-folder").join("opt.onnx");
    let bytes = encode_model(&fusable_model());
    let err = Session::from_bytes(&bytes, options(OptLevel::All, Some(path)))
        .err()
        .unwrap();
    assert_eq!(err.kind, ErrorKind::Runtime);
    assert!(
        err.message
            .starts_with("cannot save the optimised model: cannot write model '"),
        "{}",
        err.message
    );
    assert!(!err.message.contains('\n'));
    let _ = std::fs::remove_dir_all(&dir);
}
