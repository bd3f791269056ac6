//! The Session API: concurrent runs, input checking, subgraph-free models
//! built in code.

use onyx_core::{ErrorKind, Session, SessionOptions};
use onyx_format::onnx::{
    type_proto, GraphProto, ModelProto, NodeProto, OperatorSetIdProto, TypeProto, ValueInfoProto,
};
use onyx_format::{encode_model, tensor_to_proto};
use onyx_tensor::{Tensor, Value};

fn float_info(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(TypeProto {
            value: Some(type_proto::Value::TensorType(type_proto::Tensor {
                elem_type: Some(1),
                shape: None,
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

/// y = (x + w) * x - w, with w an initializer the caller may override.
fn session() -> Session {
    let w = Tensor::from_vec(vec![3], vec![0.5f32, -1.0, 2.0]).unwrap();
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: None,
            version: Some(17),
        }],
        graph: Some(GraphProto {
            node: vec![
                node("Add", &["x", "w"], &["a"]),
                node("Mul", &["a", "x"], &["b"]),
                node("Sub", &["b", "w"], &["y"]),
            ],
            input: vec![float_info("x"), float_info("w")],
            output: vec![float_info("y")],
            initializer: vec![tensor_to_proto(&w, "w")],
            ..Default::default()
        }),
        ..Default::default()
    };
    Session::from_bytes(&encode_model(&model), SessionOptions::default()).unwrap()
}

fn input(i: usize) -> Tensor {
    let v: Vec<f32> = (0..3).map(|k| (i * 3 + k) as f32 * 0.25 - 1.0).collect();
    Tensor::from_vec(vec![3], v).unwrap()
}

fn expected(i: usize) -> Vec<f32> {
    let w = [0.5f32, -1.0, 2.0];
    let x = input(i);
    x.as_slice::<f32>()
        .unwrap()
        .iter()
        .zip(w)
        .map(|(&x, w)| (x + w) * x - w)
        .collect()
}

#[test]
fn computes_and_exposes_inputs() {
    let s = session();
    assert_eq!(
        s.inputs()
            .iter()
            .map(|i| i.name.as_str())
            .collect::<Vec<_>>(),
        ["x"]
    );
    assert_eq!(s.overridable_initializers()[0].name, "w");
    let out = s.run(vec![("x".into(), Value::Tensor(input(1)))]).unwrap();
    assert_eq!(
        out[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        expected(1).as_slice()
    );
    // overriding the initializer
    let w = Tensor::from_vec(vec![3], vec![0f32; 3]).unwrap();
    let out = s
        .run(vec![("x".into(), input(1).into()), ("w".into(), w.into())])
        .unwrap();
    let x = input(1);
    let want: Vec<f32> = x
        .as_slice::<f32>()
        .unwrap()
        .iter()
        .map(|&x| x * x)
        .collect();
    assert_eq!(
        out[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        want.as_slice()
    );
}

#[test]
fn runs_from_many_threads_at_once() {
    let s = session();
    let sequential: Vec<Value> = (0..8)
        .map(|i| {
            s.run(vec![("x".into(), input(i).into())])
                .unwrap()
                .remove(0)
        })
        .collect();
    std::thread::scope(|scope| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let s = &s;
                scope.spawn(move || {
                    (0..200)
                        .map(|_| {
                            s.run(vec![("x".into(), input(i).into())])
                                .unwrap()
                                .remove(0)
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        for (i, h) in handles.into_iter().enumerate() {
            for v in h.join().unwrap() {
                assert_eq!(v, sequential[i]);
            }
        }
    });
    assert_eq!(
        sequential[3]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap(),
        expected(3).as_slice()
    );
}

#[test]
fn names_bad_inputs() {
    let s = session();
    let e = s.run(vec![]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::InvalidArgument);
    assert!(e.message.contains("input 'x' is missing"), "{}", e.message);
    let e = s.run(vec![("z".into(), input(0).into())]).unwrap_err();
    assert!(e.message.contains("unknown input 'z'"), "{}", e.message);
    let ints = Tensor::from_vec(vec![3], vec![1i64, 2, 3]).unwrap();
    let e = s.run(vec![("x".into(), ints.into())]).unwrap_err();
    assert!(
        e.message
            .contains("expects element type float but was given int64"),
        "{}",
        e.message
    );
    let short = Tensor::from_vec(vec![2], vec![1f32, 2.0]).unwrap();
    let e = s.run(vec![("x".into(), short.into())]).unwrap_err();
    assert_eq!(e.kind, ErrorKind::Runtime);
    assert!(
        e.message.contains("node producing 'a' (Add)"),
        "{}",
        e.message
    );
}

#[test]
fn session_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Session>();
}

#[test]
fn profiled_runs_time_every_node_and_compute_the_same() {
    let s = session();
    let (out, times) = s
        .run_profiled(vec![("x".into(), Value::Tensor(input(2)))])
        .unwrap();
    assert_eq!(
        out[0].as_tensor().unwrap().as_slice::<f32>().unwrap(),
        expected(2).as_slice()
    );
    let ops: Vec<&str> = times.iter().map(|t| t.op_type.as_str()).collect();
    assert_eq!(ops, ["Add", "Mul", "Sub"]);
    // a bad input fails the same way as in a plain run
    assert!(s.run_profiled(vec![]).is_err());
}

/// A Gradient node of `y` with respect to `xs`, outputs `d<x>`.
fn gradient_node(xs: &[&str], y: &str) -> NodeProto {
    use onyx_format::onnx::AttributeProto;
    let outputs: Vec<String> = xs.iter().map(|x| format!("d{x}")).collect();
    let outputs: Vec<&str> = outputs.iter().map(String::as_str).collect();
    let mut n = node("Gradient", xs, &outputs);
    n.domain = Some("ai.onnx.preview.training".into());
    n.attribute = vec![
        AttributeProto {
            name: Some("xs".into()),
            r#type: Some(8), // STRINGS
            strings: xs.iter().map(|x| x.as_bytes().to_vec()).collect(),
            ..Default::default()
        },
        AttributeProto {
            name: Some("y".into()),
            r#type: Some(3), // STRING
            s: Some(y.as_bytes().to_vec()),
            ..Default::default()
        },
    ];
    n
}

#[test]
fn gradient_differentiates_broadcast_products_and_quotients() {
    // y = a * b / c with a [2, 3], b [3] (broadcast), c a scalar; the
    // gradient is that of sum(y)
    let model = ModelProto {
        ir_version: Some(8),
        opset_import: vec![
            OperatorSetIdProto {
                domain: None,
                version: Some(17),
            },
            OperatorSetIdProto {
                domain: Some("ai.onnx.preview.training".into()),
                version: Some(1),
            },
        ],
        graph: Some(GraphProto {
            node: vec![
                node("Mul", &["a", "b"], &["ab"]),
                node("Div", &["ab", "c"], &["y"]),
                gradient_node(&["a", "b", "c"], "y"),
            ],
            input: vec![float_info("a"), float_info("b"), float_info("c")],
            output: vec![float_info("da"), float_info("db"), float_info("dc")],
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = Session::from_bytes(&encode_model(&model), SessionOptions::default()).unwrap();
    let a = [1f32, 2.0, 3.0, 4.0, 5.0, 6.0];
    let b = [0.5f32, -1.0, 2.0];
    let c = 4f32;
    let out = s
        .run(vec![
            (
                "a".into(),
                Tensor::from_vec(vec![2, 3], a.to_vec()).unwrap().into(),
            ),
            (
                "b".into(),
                Tensor::from_vec(vec![3], b.to_vec()).unwrap().into(),
            ),
            ("c".into(), Tensor::scalar(c).into()),
        ])
        .unwrap();
    let get = |i: usize| {
        out[i]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    };
    let da: Vec<f32> = (0..6).map(|i| b[i % 3] / c).collect();
    let db: Vec<f32> = (0..3).map(|j| (a[j] + a[j + 3]) / c).collect();
    let dc = -(0..6).map(|i| a[i] * b[i % 3]).sum::<f32>() / (c * c);
    assert_eq!(out[0].as_tensor().unwrap().shape(), &[2, 3]);
    assert_eq!(get(0), da);
    assert_eq!(get(1), db);
    assert!((get(2)[0] - dc).abs() < 1e-6, "{:?} vs {dc}", get(2));
}
