//! Named limits: the run byte budget counts what a run holds at once (freed
//! values give their bytes back), and the model size limit applies to
//! models given as bytes too.

use onyx_core::{ErrorKind, Limits, Session, SessionOptions};
use onyx_format::encode_model;
use onyx_format::onnx::{GraphProto, ModelProto, NodeProto, OperatorSetIdProto, ValueInfoProto};
use onyx_format::LoadLimits;
use onyx_tensor::{Tensor, Value};

fn node(op: &str, input: &[&str], output: &str) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(output.into()),
        input: input.iter().map(|s| s.to_string()).collect(),
        output: vec![output.into()],
        ..Default::default()
    }
}

fn named(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

/// Ten Negs in a chain, then (optionally) an Add of the last two.
fn chain(add: bool) -> Vec<u8> {
    let mut nodes: Vec<NodeProto> = (0..10)
        .map(|i| {
            let input = if i == 0 {
                "x".to_string()
            } else {
                format!("n{}", i - 1)
            };
            node("Neg", &[&input], &format!("n{i}"))
        })
        .collect();
    let mut output = "n9";
    if add {
        nodes.push(node("Add", &["n8", "n9"], "sum"));
        output = "sum";
    }
    encode_model(&ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        graph: Some(GraphProto {
            name: Some("chain".into()),
            node: nodes,
            input: vec![named("x")],
            output: vec![named(output)],
            ..Default::default()
        }),
        ..Default::default()
    })
}

fn options(max_run_bytes: usize) -> SessionOptions {
    SessionOptions {
        limits: Limits {
            max_run_bytes,
            ..Limits::default()
        },
        ..Default::default()
    }
}

fn x() -> Vec<(String, Value)> {
    let t = Tensor::from_vec(vec![100_000], vec![1.5f32; 100_000]).unwrap();
    vec![("x".into(), Value::Tensor(t))]
}

#[test]
fn run_bytes_count_what_is_held_not_what_was_ever_made() {
    // each value (the input too) is 400,000 bytes; the chain makes 4 MB in
    // all but holds at most two values at once
    let s = Session::from_bytes(&chain(false), options(800_000)).unwrap();
    let out = s.run(x()).unwrap();
    let y = out[0].as_tensor().unwrap().as_slice::<f32>().unwrap();
    assert_eq!(y.len(), 100_000);
    assert!(y.iter().all(|&v| v == 1.5));
    // the same budget is too small when three values are alive at once
    let s = Session::from_bytes(&chain(true), options(800_000)).unwrap();
    let e = s.run(x()).unwrap_err();
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert_eq!(
        e.message,
        "node 'sum' (Add): the run would hold 1200000 bytes (800000 held, 400000 more), \
         over the limit max_run_bytes=800000"
    );
    // and a session reused after that failure starts from nothing again
    let s = Session::from_bytes(&chain(true), options(1_200_000)).unwrap();
    for _ in 0..3 {
        let out = s.run(x()).unwrap();
        let y = out[0].as_tensor().unwrap().as_slice::<f32>().unwrap();
        assert!(y.iter().all(|&v| v == 0.0));
    }
}

#[test]
fn model_bytes_over_the_load_limit_are_refused() {
    let bytes = chain(false);
    let small = SessionOptions {
        load_limits: LoadLimits {
            max_model_bytes: 100,
        },
        ..Default::default()
    };
    let e = Session::from_bytes(&bytes, small).err().unwrap();
    assert_eq!(e.kind, ErrorKind::LimitExceeded);
    assert_eq!(
        e.message,
        format!(
            "the model is {} bytes, over the limit max_model_bytes=100",
            bytes.len()
        )
    );
}
