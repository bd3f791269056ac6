//! A corpus of hand-made hostile models and inputs. Each case is built here
//! from the protobuf types (no binary files in the repository), loaded and
//! run through `Session`, and must fail with the expected error kind and
//! message: never a panic, a hang or a huge allocation. A sample goes
//! through the `onyx` command too, which must print one line and exit 1.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use onyx_core::{ErrorKind, Limits, Session, SessionOptions};
use onyx_format::onnx::attribute_proto::AttributeType;
use onyx_format::onnx::tensor_shape_proto::{dimension, Dimension};
use onyx_format::onnx::{
    tensor_proto, type_proto, AttributeProto, FunctionProto, GraphProto, ModelProto, NodeProto,
    OperatorSetIdProto, SparseTensorProto, StringStringEntryProto, TensorProto, TensorShapeProto,
    TypeProto, ValueInfoProto,
};
use onyx_format::{encode_model, tensor_to_proto};
use onyx_tensor::{Tensor, Value};

const FLOAT: i32 = 1;
const INT64: i32 = 7;
const BIG: i64 = 1_000_000_000_000; // 10^12

// ---------------------------------------------------------------- builders

fn tensor_type(elem: i32, dims: Option<&[i64]>) -> TypeProto {
    TypeProto {
        value: Some(type_proto::Value::TensorType(type_proto::Tensor {
            elem_type: Some(elem),
            shape: dims.map(|dims| TensorShapeProto {
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
    }
}

fn vi(name: &str, elem: i32, dims: Option<&[i64]>) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        r#type: Some(tensor_type(elem, dims)),
        ..Default::default()
    }
}

/// An output of no declared type.
fn out(name: &str) -> ValueInfoProto {
    ValueInfoProto {
        name: Some(name.into()),
        ..Default::default()
    }
}

fn node(op: &str, inputs: &[&str], outputs: &[&str], attrs: Vec<AttributeProto>) -> NodeProto {
    NodeProto {
        op_type: Some(op.into()),
        name: Some(format!(
            "{}_{}",
            op.to_lowercase(),
            outputs.first().unwrap_or(&"")
        )),
        input: inputs.iter().map(|s| s.to_string()).collect(),
        output: outputs.iter().map(|s| s.to_string()).collect(),
        attribute: attrs,
        ..Default::default()
    }
}

fn attr(name: &str, ty: AttributeType) -> AttributeProto {
    AttributeProto {
        name: Some(name.into()),
        r#type: Some(ty as i32),
        ..Default::default()
    }
}

fn a_int(name: &str, v: i64) -> AttributeProto {
    AttributeProto {
        i: Some(v),
        ..attr(name, AttributeType::Int)
    }
}

fn a_ints(name: &str, v: &[i64]) -> AttributeProto {
    AttributeProto {
        ints: v.to_vec(),
        ..attr(name, AttributeType::Ints)
    }
}

fn a_str(name: &str, v: &str) -> AttributeProto {
    AttributeProto {
        s: Some(v.as_bytes().to_vec()),
        ..attr(name, AttributeType::String)
    }
}

fn a_graph(name: &str, g: GraphProto) -> AttributeProto {
    AttributeProto {
        g: Some(g),
        ..attr(name, AttributeType::Graph)
    }
}

fn a_tensor(name: &str, t: TensorProto) -> AttributeProto {
    AttributeProto {
        t: Some(t),
        ..attr(name, AttributeType::Tensor)
    }
}

fn ints(name: &str, v: &[i64]) -> TensorProto {
    tensor_to_proto(&Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap(), name)
}

fn floats(name: &str, v: &[f32]) -> TensorProto {
    tensor_to_proto(&Tensor::from_vec(vec![v.len()], v.to_vec()).unwrap(), name)
}

fn scalar_i64(name: &str, v: i64) -> TensorProto {
    tensor_to_proto(&Tensor::scalar(v), name)
}

fn graph(
    nodes: Vec<NodeProto>,
    inputs: Vec<ValueInfoProto>,
    outputs: Vec<ValueInfoProto>,
    inits: Vec<TensorProto>,
) -> GraphProto {
    GraphProto {
        name: Some("g".into()),
        node: nodes,
        input: inputs,
        output: outputs,
        initializer: inits,
        ..Default::default()
    }
}

fn model(g: GraphProto) -> ModelProto {
    ModelProto {
        ir_version: Some(8),
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        graph: Some(g),
        ..Default::default()
    }
}

/// One node reading initializers (and `x`, a float [1] input, if it names it).
fn one_node(op: &str, inputs: &[&str], attrs: Vec<AttributeProto>, inits: Vec<TensorProto>) -> Src {
    let takes_x = inputs.contains(&"x");
    Src::Model(model(graph(
        vec![node(op, inputs, &["y"], attrs)],
        if takes_x {
            vec![vi("x", FLOAT, Some(&[1]))]
        } else {
            vec![]
        },
        vec![out("y")],
        inits,
    )))
}

fn x_feed() -> Vec<(String, Value)> {
    vec![(
        "x".into(),
        Value::Tensor(Tensor::from_vec(vec![1], vec![1.0f32]).unwrap()),
    )]
}

/// A float initializer whose data lives in an external file.
fn external_init(name: &str, count: i64, entries: &[(&str, &str)]) -> TensorProto {
    TensorProto {
        name: Some(name.into()),
        dims: vec![count],
        data_type: Some(FLOAT),
        data_location: Some(tensor_proto::DataLocation::External as i32),
        external_data: entries
            .iter()
            .map(|(k, v)| StringStringEntryProto {
                key: Some(k.to_string()),
                value: Some(v.to_string()),
            })
            .collect(),
        ..Default::default()
    }
}

fn external_model(init: TensorProto) -> ModelProto {
    model(graph(
        vec![node("Identity", &["w"], &["y"], vec![])],
        vec![],
        vec![out("y")],
        vec![init],
    ))
}

/// `depth` Ifs, each holding the next in its then-branch.
fn nested_ifs(depth: usize) -> GraphProto {
    let leaf = graph(
        vec![node("Identity", &["c"], &["r"], vec![])],
        vec![],
        vec![out("r")],
        vec![],
    );
    let mut g = leaf.clone();
    for _ in 0..depth {
        g = graph(
            vec![node(
                "If",
                &["c"],
                &["r"],
                vec![
                    a_graph("then_branch", g),
                    a_graph("else_branch", leaf.clone()),
                ],
            )],
            vec![],
            vec![out("r")],
            vec![],
        );
    }
    g
}

/// `depth` Loops (one iteration each), each body holding the next.
fn nested_loops(depth: usize) -> GraphProto {
    let body_io = |g: Vec<NodeProto>| {
        graph(
            g,
            vec![vi("i", INT64, Some(&[])), vi("cond", 9, Some(&[]))],
            vec![out("cond_out")],
            vec![],
        )
    };
    let mut body = body_io(vec![node("Identity", &["cond"], &["cond_out"], vec![])]);
    for _ in 0..depth {
        body = body_io(vec![
            node("Identity", &["cond"], &["cond_out"], vec![]),
            node("Loop", &["one", ""], &[], vec![a_graph("body", body)]),
        ]);
    }
    body
}

fn function(name: &str, body: Vec<NodeProto>) -> FunctionProto {
    FunctionProto {
        name: Some(name.into()),
        domain: Some("local".into()),
        input: vec!["a".into()],
        output: vec!["b".into()],
        node: body,
        opset_import: vec![OperatorSetIdProto {
            domain: Some(String::new()),
            version: Some(18),
        }],
        ..Default::default()
    }
}

fn call(f: &str, input: &str, output: &str) -> NodeProto {
    NodeProto {
        domain: Some("local".into()),
        ..node(f, &[input], &[output], vec![])
    }
}

fn with_functions(g: GraphProto, functions: Vec<FunctionProto>) -> ModelProto {
    let mut m = model(g);
    m.opset_import.push(OperatorSetIdProto {
        domain: Some("local".into()),
        version: Some(1),
    });
    m.functions = functions;
    m
}

fn sparse_init(name: &str, dims: &[i64], values: &[f32], indices: Tensor) -> SparseTensorProto {
    SparseTensorProto {
        values: Some(floats(name, values)),
        indices: Some(tensor_to_proto(&indices, "")),
        dims: dims.to_vec(),
    }
}

/// Deterministic pseudo-random bytes.
fn noise(len: usize, mut seed: u64) -> Vec<u8> {
    (0..len)
        .map(|_| {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (seed >> 33) as u8
        })
        .collect()
}

fn good_model_bytes() -> Vec<u8> {
    encode_model(&model(graph(
        vec![node("Relu", &["x"], &["y"], vec![])],
        vec![vi("x", FLOAT, Some(&[1]))],
        vec![vi("y", FLOAT, Some(&[1]))],
        vec![],
    )))
}

// ---------------------------------------------------------------- cases

enum Src {
    Bytes(Vec<u8>),
    Model(ModelProto),
    /// A model written to a folder with extra files; `links` are symlinks
    /// (name, target) made beside it.
    Dir {
        model: ModelProto,
        files: Vec<(&'static str, Vec<u8>)>,
        links: Vec<(&'static str, &'static str)>,
    },
    /// A source with the inputs to run it on.
    Fed(Box<Src>, Vec<(String, Value)>),
}

struct Case {
    name: &'static str,
    src: Src,
    feeds: Vec<(String, Value)>,
    limits: Limits,
    kind: ErrorKind,
    message: &'static str,
    /// Uses an operator this build may not have yet; until it does, its
    /// "is not supported" error is accepted too.
    pending: bool,
}

fn case(name: &'static str, src: Src, kind: ErrorKind, message: &'static str) -> Case {
    Case {
        name,
        src,
        feeds: vec![],
        limits: Limits::default(),
        kind,
        message,
        pending: false,
    }
}

fn pending(mut c: Case) -> Case {
    c.pending = true;
    c
}

fn with_feeds(mut c: Case, feeds: Vec<(String, Value)>) -> Case {
    c.feeds = feeds;
    c
}

/// A model source that runs on `feeds`.
fn fed(src: Src, feeds: Vec<(String, Value)>) -> Src {
    Src::Fed(Box::new(src), feeds)
}

fn limited(mut c: Case, limits: Limits) -> Case {
    c.limits = limits;
    c
}

use ErrorKind::{Format, InvalidArgument, InvalidGraph, LimitExceeded, NotImplemented, Runtime};

fn cases() -> Vec<Case> {
    let good = good_model_bytes();
    let mut v = vec![
        // ---- bytes that are not a model
        case("empty file", Src::Bytes(vec![]), Format, "it has no graph"),
        // found by the session fuzz target: shape inference in the
        // optimisation passes multiplied the Reshape's dims without a check
        with_feeds(
            case(
                "Reshape to dims whose product overflows, then Tile",
                Src::Bytes(include_bytes!("findings/session-shape-overflow.onnx").to_vec()),
                Runtime,
                "has too many elements",
            ),
            vec![(
                "0".into(),
                Tensor::from_vec(vec![1, 2], vec![0f32; 2]).unwrap().into(),
            )],
        ),
        case(
            "truncated model",
            Src::Bytes(good[..good.len() / 2].to_vec()),
            Format,
            "not a valid ONNX model",
        ),
        case(
            "model missing its last byte",
            Src::Bytes(good[..good.len() - 1].to_vec()),
            Format,
            "not a valid ONNX model",
        ),
        case(
            "random bytes",
            Src::Bytes(noise(4096, 7)),
            Format,
            "not a valid ONNX model",
        ),
        case(
            "text file",
            Src::Bytes(b"this is not a model\n".to_vec()),
            Format,
            "not a valid ONNX model",
        ),
        case(
            // field 7 (graph), length-delimited, declared length 2^62
            "length prefix of 2^62 bytes",
            Src::Bytes(vec![
                0x3a, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x40,
            ]),
            Format,
            "not a valid ONNX model",
        ),
        case(
            "protobuf nested past the decoder's recursion limit",
            Src::Bytes(encode_model(&model(nested_ifs(60)))),
            Format,
            "not a valid ONNX model: failed to decode Protobuf message: ModelProto.graph: GraphProto.node: ...: recursion limit reached",
        ),
        case(
            "model without a graph",
            Src::Bytes(encode_model(&ModelProto {
                ir_version: Some(8),
                ..Default::default()
            })),
            Format,
            "it has no graph",
        ),
        // ---- broken graphs
        case(
            "two-node cycle",
            Src::Model(model(graph(
                vec![
                    node("Relu", &["b"], &["a"], vec![]),
                    node("Relu", &["a"], &["b"], vec![]),
                ],
                vec![],
                vec![out("a")],
                vec![],
            ))),
            InvalidGraph,
            "the graph has a cycle",
        ),
        case(
            "node reading its own output",
            Src::Model(model(graph(
                vec![node("Add", &["x", "y"], &["y"], vec![])],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("y")],
                vec![],
            ))),
            InvalidGraph,
            "the graph has a cycle",
        ),
        case(
            "cycle through an If's subgraph",
            Src::Model(model(graph(
                vec![
                    node(
                        "If",
                        &["c"],
                        &["r"],
                        vec![
                            a_graph(
                                "then_branch",
                                graph(
                                    vec![node("Identity", &["r"], &["t"], vec![])],
                                    vec![],
                                    vec![out("t")],
                                    vec![],
                                ),
                            ),
                            a_graph(
                                "else_branch",
                                graph(
                                    vec![node("Identity", &["c"], &["e"], vec![])],
                                    vec![],
                                    vec![out("e")],
                                    vec![],
                                ),
                            ),
                        ],
                    ),
                    node("Identity", &["r"], &["c"], vec![]),
                ],
                vec![],
                vec![out("r")],
                vec![],
            ))),
            InvalidGraph,
            "the graph has a cycle",
        ),
        case(
            "two nodes produce one name",
            Src::Model(model(graph(
                vec![
                    node("Relu", &["x"], &["y"], vec![]),
                    node("Neg", &["x"], &["y"], vec![]),
                ],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("y")],
                vec![],
            ))),
            InvalidGraph,
            "output 'y' is also produced by another node",
        ),
        case(
            "node output shadows a graph input",
            Src::Model(model(graph(
                vec![node("Relu", &["x"], &["x"], vec![])],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("x")],
                vec![],
            ))),
            InvalidGraph,
            "the graph has a cycle",
        ),
        case(
            "node output shadows an initializer",
            Src::Model(model(graph(
                vec![node("Relu", &["x"], &["w"], vec![])],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("w")],
                vec![floats("w", &[1.0])],
            ))),
            InvalidGraph,
            "has the name of a graph input or initializer",
        ),
        case(
            "graph input declared twice",
            Src::Model(model(graph(
                vec![node("Relu", &["x"], &["y"], vec![])],
                vec![vi("x", FLOAT, Some(&[1])), vi("x", FLOAT, Some(&[1]))],
                vec![out("y")],
                vec![],
            ))),
            InvalidGraph,
            "graph input 'x' is declared twice",
        ),
        case(
            "dangling node input",
            Src::Model(model(graph(
                vec![node("Add", &["x", "ghost"], &["y"], vec![])],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("y")],
                vec![],
            ))),
            InvalidGraph,
            "reads 'ghost', which nothing produces",
        ),
        case(
            "dangling graph output",
            Src::Model(model(graph(
                vec![node("Relu", &["x"], &["y"], vec![])],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("nowhere")],
                vec![],
            ))),
            InvalidGraph,
            "graph output 'nowhere' reads 'nowhere', which nothing produces",
        ),
        case(
            "unknown operator",
            one_node("NoSuchOp", &["x"], vec![], vec![]),
            NotImplemented,
            "operator ai.onnx.NoSuchOp is not supported",
        ),
        pending(case(
            "unknown operator inside a subgraph",
            Src::Model(model(graph(
                vec![node(
                    "If",
                    &["c"],
                    &["r"],
                    vec![
                        a_graph(
                            "then_branch",
                            graph(
                                vec![node("Bogus", &["c"], &["t"], vec![])],
                                vec![],
                                vec![out("t")],
                                vec![],
                            ),
                        ),
                        a_graph("else_branch", nested_ifs(0)),
                    ],
                )],
                vec![vi("c", 9, Some(&[]))],
                vec![out("r")],
                vec![],
            ))),
            NotImplemented,
            "operator ai.onnx.Bogus is not supported",
        )),
        case(
            "domain the model does not import",
            Src::Model(model(graph(
                vec![NodeProto {
                    domain: Some("ai.onnx.ml".into()),
                    ..node("Binarizer", &["x"], &["y"], vec![])
                }],
                vec![vi("x", FLOAT, Some(&[1]))],
                vec![out("y")],
                vec![],
            ))),
            InvalidGraph,
            "does not import the domain 'ai.onnx.ml'",
        ),
        // ---- attributes
        case(
            "integer attribute given as a float",
            one_node(
                "Transpose",
                &["x"],
                vec![AttributeProto {
                    floats: vec![0.5],
                    ..attr("perm", AttributeType::Floats)
                }],
                vec![],
            ),
            InvalidGraph,
            "perm",
        ),
        case(
            "float attribute given as a string",
            one_node("LeakyRelu", &["x"], vec![a_str("alpha", "a lot")], vec![]),
            InvalidGraph,
            "alpha",
        ),
        case(
            "attribute with no value and no type",
            one_node(
                "Relu",
                &["x"],
                vec![AttributeProto {
                    name: Some("odd".into()),
                    ..Default::default()
                }],
                vec![],
            ),
            InvalidGraph,
            "attribute 'odd': has no value or an unsupported type",
        ),
        case(
            "tensor attribute with no tensor",
            one_node(
                "Constant",
                &[],
                vec![attr("value", AttributeType::Tensor)],
                vec![],
            ),
            InvalidGraph,
            "attribute 'value': tensor missing",
        ),
        case(
            "graph attribute with no graph",
            one_node(
                "If",
                &["x"],
                vec![attr("then_branch", AttributeType::Graph)],
                vec![],
            ),
            InvalidGraph,
            "attribute 'then_branch': graph missing",
        ),
        pending(case(
            "If without its branches",
            one_node("If", &["x"], vec![], vec![]),
            InvalidGraph,
            "then_branch",
        )),
        case(
            "Transpose perm naming an axis twice",
            fed(
                one_node("Transpose", &["x"], vec![a_ints("perm", &[0, 0])], vec![]),
                x_feed(),
            ),
            Runtime,
            "permutation [0, 0] does not match rank 1",
        ),
        case(
            "Transpose perm out of range",
            fed(
                one_node(
                    "Transpose",
                    &["x"],
                    vec![a_ints("perm", &[i64::MAX])],
                    vec![],
                ),
                x_feed(),
            ),
            Runtime,
            "axis 9223372036854775807 is out of range for rank 1",
        ),
        case(
            "Concat axis far out of range",
            fed(
                one_node("Concat", &["x", "x"], vec![a_int("axis", i64::MIN)], vec![]),
                x_feed(),
            ),
            Runtime,
            "axis",
        ),
        // ---- initializers with lying shapes
        case(
            "initializer with a negative dim",
            Src::Model(model(graph(
                vec![node("Identity", &["w"], &["y"], vec![])],
                vec![],
                vec![out("y")],
                vec![TensorProto {
                    dims: vec![-4],
                    ..floats("w", &[1.0])
                }],
            ))),
            Format,
            "negative",
        ),
        case(
            "initializer declaring 2^80 elements",
            Src::Model(model(graph(
                vec![node("Identity", &["w"], &["y"], vec![])],
                vec![],
                vec![out("y")],
                vec![TensorProto {
                    dims: vec![1 << 40, 1 << 40],
                    ..floats("w", &[1.0])
                }],
            ))),
            Format,
            "too many elements",
        ),
        case(
            "initializer declaring 10^12 elements with one value",
            Src::Model(model(graph(
                vec![node("Identity", &["w"], &["y"], vec![])],
                vec![],
                vec![out("y")],
                vec![TensorProto {
                    dims: vec![BIG],
                    ..floats("w", &[1.0])
                }],
            ))),
            Format,
            "tensor 'w'",
        ),
        case(
            "initializer with raw data of the wrong length",
            Src::Model(model(graph(
                vec![node("Identity", &["w"], &["y"], vec![])],
                vec![],
                vec![out("y")],
                vec![TensorProto {
                    name: Some("w".into()),
                    dims: vec![3],
                    data_type: Some(FLOAT),
                    raw_data: Some(vec![0u8; 5].into()),
                    ..Default::default()
                }],
            ))),
            Format,
            "tensor 'w'",
        ),
        case(
            "initializer of an unknown element type",
            Src::Model(model(graph(
                vec![node("Identity", &["w"], &["y"], vec![])],
                vec![],
                vec![out("y")],
                vec![TensorProto {
                    data_type: Some(999),
                    ..floats("w", &[1.0])
                }],
            ))),
            Format,
            "tensor 'w'",
        ),
        case(
            "sparse initializer with an index past the end",
            Src::Model(model(GraphProto {
                sparse_initializer: vec![sparse_init(
                    "w",
                    &[4],
                    &[1.0],
                    Tensor::from_vec(vec![1], vec![9i64]).unwrap(),
                )],
                ..graph(
                    vec![node("Identity", &["w"], &["y"], vec![])],
                    vec![],
                    vec![out("y")],
                    vec![],
                )
            })),
            InvalidGraph,
            "sparse tensor: indices do not fit the values or the shape",
        ),
        case(
            "sparse initializer with negative coordinates",
            Src::Model(model(GraphProto {
                sparse_initializer: vec![sparse_init(
                    "w",
                    &[4, 4],
                    &[1.0],
                    Tensor::from_vec(vec![1, 2], vec![-1i64, i64::MIN]).unwrap(),
                )],
                ..graph(
                    vec![node("Identity", &["w"], &["y"], vec![])],
                    vec![],
                    vec![out("y")],
                    vec![],
                )
            })),
            InvalidGraph,
            "sparse tensor: indices do not fit the values or the shape",
        ),
        case(
            "sparse initializer declaring 10^12 dense elements",
            Src::Model(model(GraphProto {
                sparse_initializer: vec![sparse_init(
                    "w",
                    &[BIG],
                    &[1.0],
                    Tensor::from_vec(vec![1], vec![0i64]).unwrap(),
                )],
                ..graph(
                    vec![node("Identity", &["w"], &["y"], vec![])],
                    vec![],
                    vec![out("y")],
                    vec![],
                )
            })),
            LimitExceeded,
            "max_tensor_elements",
        ),
        // ---- operators asked for 10^12 elements, or for nonsense sizes
        case(
            "Reshape to 10^12 elements",
            fed(
                one_node("Reshape", &["x", "s"], vec![], vec![ints("s", &[BIG])]),
                x_feed(),
            ),
            Runtime,
            "reshape",
        ),
        case(
            "Reshape with a dim below -1",
            fed(
                one_node("Reshape", &["x", "s"], vec![], vec![ints("s", &[-7])]),
                x_feed(),
            ),
            Runtime,
            "-7",
        ),
        case(
            "Reshape with two -1 dims",
            fed(
                one_node("Reshape", &["x", "s"], vec![], vec![ints("s", &[-1, -1])]),
                x_feed(),
            ),
            Runtime,
            "-1",
        ),
        case(
            "Expand to 10^12 elements",
            fed(
                one_node("Expand", &["x", "s"], vec![], vec![ints("s", &[BIG])]),
                x_feed(),
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "Expand to a shape whose size overflows",
            fed(
                one_node(
                    "Expand",
                    &["x", "s"],
                    vec![],
                    vec![ints("s", &[1 << 32, 1 << 32, 1 << 32])],
                ),
                x_feed(),
            ),
            Runtime,
            "which has too many elements",
        ),
        case(
            "Expand to a negative dim",
            fed(
                one_node("Expand", &["x", "s"], vec![], vec![ints("s", &[-5])]),
                x_feed(),
            ),
            Runtime,
            "-5",
        ),
        case(
            "Tile 10^12 times",
            fed(
                one_node("Tile", &["x", "r"], vec![], vec![ints("r", &[BIG])]),
                x_feed(),
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "Tile a negative number of times",
            fed(
                one_node("Tile", &["x", "r"], vec![], vec![ints("r", &[-3])]),
                x_feed(),
            ),
            Runtime,
            "-3",
        ),
        pending(case(
            "ConstantOfShape of 10^12 elements",
            one_node("ConstantOfShape", &["s"], vec![], vec![ints("s", &[BIG])]),
            LimitExceeded,
            "max_tensor_elements",
        )),
        pending(case(
            "ConstantOfShape whose size overflows",
            one_node(
                "ConstantOfShape",
                &["s"],
                vec![],
                vec![ints("s", &[i64::MAX, i64::MAX])],
            ),
            Runtime,
            "has too many elements",
        )),
        pending(case(
            "ConstantOfShape with a negative dim",
            one_node("ConstantOfShape", &["s"], vec![], vec![ints("s", &[2, -2])]),
            Runtime,
            "-2",
        )),
        pending(case(
            "Range of 10^12 elements",
            one_node(
                "Range",
                &["a", "b", "d"],
                vec![],
                vec![scalar_i64("a", 0), scalar_i64("b", BIG), scalar_i64("d", 1)],
            ),
            LimitExceeded,
            "max_tensor_elements",
        )),
        pending(case(
            "Range over the whole of int64",
            one_node(
                "Range",
                &["a", "b", "d"],
                vec![],
                vec![
                    scalar_i64("a", i64::MIN),
                    scalar_i64("b", i64::MAX),
                    scalar_i64("d", 1),
                ],
            ),
            LimitExceeded,
            "",
        )),
        pending(case(
            "Range with a zero step",
            one_node(
                "Range",
                &["a", "b", "d"],
                vec![],
                vec![scalar_i64("a", 0), scalar_i64("b", 5), scalar_i64("d", 0)],
            ),
            Runtime,
            "",
        )),
        pending(case(
            "Range with an infinitesimal float step",
            one_node(
                "Range",
                &["a", "b", "d"],
                vec![],
                vec![
                    tensor_to_proto(&Tensor::scalar(0.0f32), "a"),
                    tensor_to_proto(&Tensor::scalar(1.0f32), "b"),
                    tensor_to_proto(&Tensor::scalar(1e-30f32), "d"),
                ],
            ),
            Runtime,
            "is too long",
        )),
        pending(case(
            "Range with a NaN step",
            one_node(
                "Range",
                &["a", "b", "d"],
                vec![],
                vec![
                    tensor_to_proto(&Tensor::scalar(0.0f32), "a"),
                    tensor_to_proto(&Tensor::scalar(1.0f32), "b"),
                    tensor_to_proto(&Tensor::scalar(f32::NAN), "d"),
                ],
            ),
            Runtime,
            "",
        )),
        case(
            "Pad by 10^12",
            fed(
                one_node("Pad", &["x", "p"], vec![], vec![ints("p", &[0, BIG])]),
                x_feed(),
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "Pad by a negative amount larger than the tensor",
            fed(
                one_node("Pad", &["x", "p"], vec![], vec![ints("p", &[-5, 0])]),
                x_feed(),
            ),
            Runtime,
            "",
        ),
        case(
            "OneHot of depth 10^12",
            one_node(
                "OneHot",
                &["i", "d", "v"],
                vec![],
                vec![ints("i", &[1]), ints("d", &[BIG]), floats("v", &[0.0, 1.0])],
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "OneHot of negative depth",
            one_node(
                "OneHot",
                &["i", "d", "v"],
                vec![],
                vec![ints("i", &[1]), ints("d", &[-4]), floats("v", &[0.0, 1.0])],
            ),
            Runtime,
            "",
        ),
        case(
            "Resize by a scale of 10^6 on two axes",
            fed(
                Src::Model(model(graph(
                    vec![node("Resize", &["img", "", "sc"], &["y"], vec![])],
                    vec![vi("img", FLOAT, Some(&[1, 1, 1, 1]))],
                    vec![out("y")],
                    vec![floats("sc", &[1.0, 1.0, 1e6, 1e6])],
                ))),
                vec![(
                    "img".into(),
                    Value::Tensor(Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32]).unwrap()),
                )],
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "Resize to sizes of 10^6 x 10^6",
            fed(
                Src::Model(model(graph(
                    vec![node("Resize", &["img", "", "", "sz"], &["y"], vec![])],
                    vec![vi("img", FLOAT, Some(&[1, 1, 1, 1]))],
                    vec![out("y")],
                    vec![ints("sz", &[1, 1, 1_000_000, 1_000_000])],
                ))),
                vec![(
                    "img".into(),
                    Value::Tensor(Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32]).unwrap()),
                )],
            ),
            LimitExceeded,
            "max_tensor_elements",
        ),
        case(
            "Resize by an infinite scale",
            fed(
                Src::Model(model(graph(
                    vec![node("Resize", &["img", "", "sc"], &["y"], vec![])],
                    vec![vi("img", FLOAT, Some(&[1, 1, 1, 1]))],
                    vec![out("y")],
                    vec![floats("sc", &[1.0, 1.0, f32::INFINITY, 1.0])],
                ))),
                vec![(
                    "img".into(),
                    Value::Tensor(Tensor::from_vec(vec![1, 1, 1, 1], vec![1.0f32]).unwrap()),
                )],
            ),
            Runtime,
            "",
        ),
        case(
            "Slice with extreme starts and ends and a zero step",
            fed(
                one_node(
                    "Slice",
                    &["x", "s", "e", "a", "t"],
                    vec![],
                    vec![
                        ints("s", &[i64::MAX]),
                        ints("e", &[i64::MIN]),
                        ints("a", &[0]),
                        ints("t", &[0]),
                    ],
                ),
                x_feed(),
            ),
            Runtime,
            "",
        ),
        case(
            "Gather with an index far out of range",
            fed(
                one_node("Gather", &["x", "i"], vec![], vec![ints("i", &[i64::MIN])]),
                x_feed(),
            ),
            Runtime,
            "",
        ),
        case(
            "Split into pieces that do not add up",
            fed(
                one_node(
                    "Split",
                    &["x", "s"],
                    vec![],
                    vec![ints("s", &[i64::MAX, 2])],
                ),
                x_feed(),
            ),
            Runtime,
            "",
        ),
        case(
            "Constant tensor of 10^12 declared elements",
            one_node(
                "Constant",
                &[],
                vec![a_tensor(
                    "value",
                    TensorProto {
                        dims: vec![BIG],
                        ..floats("", &[])
                    },
                )],
                vec![],
            ),
            Format,
            "",
        ),
        case(
            "Add broadcasting empty tensors whose dims multiply past 2^64",
            Src::Model(model(graph(
                vec![
                    node("Reshape", &["e", "s1"], &["a"], vec![a_int("allowzero", 1)]),
                    node("Reshape", &["e", "s2"], &["b"], vec![a_int("allowzero", 1)]),
                    node("Add", &["a", "b"], &["y"], vec![]),
                ],
                vec![],
                vec![out("y")],
                vec![
                    floats("e", &[]),
                    ints("s1", &[1 << 40, 1, 0]),
                    ints("s2", &[1, 1 << 40, 0]),
                ],
            ))),
            Runtime,
            "too many elements",
        ),
        case(
            "Expand an empty tensor to dims that multiply past 2^64",
            one_node(
                "Expand",
                &["e", "s"],
                vec![],
                vec![floats("e", &[]), ints("s", &[1 << 40, 1 << 40, 0])],
            ),
            Runtime,
            "too many elements",
        ),
        case(
            "Reshape an empty tensor to dims that multiply past 2^64",
            Src::Model(model(graph(
                vec![
                    node("Reshape", &["e", "s"], &["a"], vec![a_int("allowzero", 1)]),
                    node("Transpose", &["a"], &["y"], vec![]),
                ],
                vec![],
                vec![out("y")],
                vec![floats("e", &[]), ints("s", &[0, 1 << 40, 1 << 40])],
            ))),
            Runtime,
            "too many elements",
        ),
        case(
            // found by the run fuzz target: the offset computation overflowed
            "Attention with a nonpad_kv_seqlen of i64::MIN",
            Src::Model({
                let qkv = |name: &str| {
                    tensor_to_proto(
                        &Tensor::from_vec(vec![1, 1, 1, 2], vec![0.5f32, 1.0]).unwrap(),
                        name,
                    )
                };
                let mut m = model(graph(
                    vec![node("Attention", &["q", "k", "v", "", "", "", "np"], &["y"], vec![])],
                    vec![],
                    vec![out("y")],
                    vec![qkv("q"), qkv("k"), qkv("v"), ints("np", &[i64::MIN])],
                ));
                m.opset_import[0].version = Some(24);
                m
            }),
            Runtime,
            "nonpad_kv_seqlen value -9223372036854775808 is negative",
        ),
        // ---- recursion and nesting
        case(
            "function that calls itself",
            Src::Model(with_functions(
                graph(
                    vec![call("f", "x", "y")],
                    vec![vi("x", FLOAT, Some(&[1]))],
                    vec![out("y")],
                    vec![],
                ),
                vec![function("f", vec![call("f", "a", "b")])],
            )),
            LimitExceeded,
            "function 'f' calls nest deeper than",
        ),
        case(
            "functions that call each other",
            Src::Model(with_functions(
                graph(
                    vec![call("f", "x", "y")],
                    vec![vi("x", FLOAT, Some(&[1]))],
                    vec![out("y")],
                    vec![],
                ),
                vec![
                    function("f", vec![call("g", "a", "b")]),
                    function("g", vec![call("f", "a", "b")]),
                ],
            )),
            LimitExceeded,
            "calls nest deeper than",
        ),
        case(
            "self-calling function inside an If branch",
            Src::Model(with_functions(
                graph(
                    vec![node(
                        "If",
                        &["c"],
                        &["r"],
                        vec![
                            a_graph(
                                "then_branch",
                                graph(vec![call("f", "c", "t")], vec![], vec![out("t")], vec![]),
                            ),
                            a_graph("else_branch", nested_ifs(0)),
                        ],
                    )],
                    vec![vi("c", 9, Some(&[]))],
                    vec![out("r")],
                    vec![],
                ),
                vec![function("f", vec![call("f", "a", "b")])],
            )),
            LimitExceeded,
            "function 'f' calls nest deeper than",
        ),
        case(
            "functions that expand to 2^40 nodes",
            Src::Model(with_functions(
                graph(
                    vec![call("f0", "x", "y")],
                    vec![vi("x", FLOAT, Some(&[1]))],
                    vec![out("y")],
                    vec![],
                ),
                (0..40)
                    .map(|i| {
                        let next = format!("f{}", i + 1);
                        let body = if i == 39 {
                            vec![node("Identity", &["a"], &["b"], vec![])]
                        } else {
                            vec![call(&next, "a", "m"), call(&next, "m", "b")]
                        };
                        function(Box::leak(format!("f{i}").into_boxed_str()), body)
                    })
                    .collect(),
            )),
            LimitExceeded,
            "max_graph_nodes",
        ),
        limited(
            case(
                "Ifs nested past max_nesting_depth",
                Src::Model(model(nested_ifs(12))),
                LimitExceeded,
                "max_nesting_depth=8",
            ),
            Limits {
                max_nesting_depth: 8,
                ..Limits::default()
            },
        ),
        limited(
            case(
                "Loops nested past max_nesting_depth",
                Src::Model(model(graph(
                    vec![node(
                        "Loop",
                        &["one", ""],
                        &[],
                        vec![a_graph("body", nested_loops(10))],
                    )],
                    vec![],
                    vec![out("one")],
                    vec![scalar_i64("one", 1)],
                ))),
                LimitExceeded,
                "max_nesting_depth=8",
            ),
            Limits {
                max_nesting_depth: 8,
                ..Limits::default()
            },
        ),
        pending(case(
            "Loop body with no inputs",
            Src::Model(model(graph(
                vec![node(
                    "Loop",
                    &["one", ""],
                    &["y"],
                    vec![a_graph("body", graph(vec![], vec![], vec![], vec![]))],
                )],
                vec![],
                vec![out("y")],
                vec![scalar_i64("one", 1)],
            ))),
            InvalidGraph,
            "",
        )),
        pending(case(
            "Loop carrying more values than its body returns",
            Src::Model(model(graph(
                vec![node(
                    "Loop",
                    &["one", "", "v"],
                    &["y"],
                    vec![a_graph("body", nested_loops(0))],
                )],
                vec![],
                vec![out("y")],
                vec![scalar_i64("one", 1), floats("v", &[1.0])],
            ))),
            Runtime,
            "",
        )),
        pending(limited(
            case(
                "Loop of 10^12 iterations that grows a scan output",
                Src::Model(model(graph(
                    vec![node(
                        "Loop",
                        &["n", ""],
                        &["acc"],
                        vec![a_graph(
                            "body",
                            graph(
                                vec![
                                    node("Identity", &["cond"], &["cond_out"], vec![]),
                                    node("Identity", &["big"], &["s"], vec![]),
                                ],
                                vec![vi("i", INT64, Some(&[])), vi("cond", 9, Some(&[]))],
                                vec![out("cond_out"), out("s")],
                                vec![floats("big", &[0.0; 1024])],
                            ),
                        )],
                    )],
                    vec![],
                    vec![out("acc")],
                    vec![scalar_i64("n", BIG)],
                ))),
                LimitExceeded,
                "max_run_bytes=4194304",
            ),
            Limits {
                max_run_bytes: 4 << 20,
                ..Limits::default()
            },
        )),
        limited(
            case(
                "Loop of 10^12 iterations past the run's time limit",
                Src::Model(model(graph(
                    vec![node(
                        "Loop",
                        &["n", "", "n"],
                        &["last"],
                        vec![a_graph(
                            "body",
                            graph(
                                vec![
                                    node("Identity", &["cond"], &["cond_out"], vec![]),
                                    node("Identity", &["i"], &["i_out"], vec![]),
                                ],
                                vec![
                                    vi("i", INT64, Some(&[])),
                                    vi("cond", 9, Some(&[])),
                                    vi("carried", INT64, Some(&[])),
                                ],
                                vec![out("cond_out"), out("i_out")],
                                vec![],
                            ),
                        )],
                    )],
                    vec![],
                    vec![out("last")],
                    vec![scalar_i64("n", BIG)],
                ))),
                LimitExceeded,
                "max_run_time=0.2s",
            ),
            Limits {
                max_run_time: Some(std::time::Duration::from_millis(200)),
                ..Limits::default()
            },
        ),
        limited(
            case(
                "chain of values over the run's byte budget",
                fed(
                    Src::Model(model(graph(
                        vec![
                            node("Expand", &["x", "s"], &["a"], vec![]),
                            node("Neg", &["a"], &["b"], vec![]),
                            node("Add", &["a", "b"], &["y"], vec![]),
                        ],
                        vec![vi("x", FLOAT, Some(&[1]))],
                        vec![out("y")],
                        vec![ints("s", &[100_000])],
                    ))),
                    x_feed(),
                ),
                LimitExceeded,
                "max_run_bytes=1000000",
            ),
            Limits {
                max_run_bytes: 1_000_000,
                ..Limits::default()
            },
        ),
        // ---- external data
        case(
            "external data from bytes (no folder)",
            Src::Model(external_model(external_init(
                "w",
                2,
                &[("location", "w.bin")],
            ))),
            Format,
            "the model was not loaded from a file",
        ),
        case(
            "external data through ..",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", "../w.bin")])),
                files: vec![],
                links: vec![],
            },
            Format,
            "is outside the model's folder",
        ),
        case(
            "external data at an absolute path",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", "/etc/hostname")])),
                files: vec![],
                links: vec![],
            },
            Format,
            "is outside the model's folder",
        ),
        case(
            "external data through a symlink that leads out",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", "w.bin")])),
                files: vec![],
                links: vec![("w.bin", "/etc/hostname")],
            },
            Format,
            "leads outside the model's folder",
        ),
        case(
            "external data through a symlinked folder that leads out",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", "sub/hostname")])),
                files: vec![],
                links: vec![("sub", "/etc")],
            },
            Format,
            "leads outside the model's folder",
        ),
        case(
            "external data in a file shorter than the tensor",
            Src::Dir {
                model: external_model(external_init("w", 4, &[("location", "w.bin")])),
                files: vec![("w.bin", vec![0; 8])],
                links: vec![],
            },
            Format,
            "tensor 'w'",
        ),
        case(
            "external data range past the end of the file",
            Src::Dir {
                model: external_model(external_init(
                    "w",
                    2,
                    &[("location", "w.bin"), ("offset", "4"), ("length", "8")],
                )),
                files: vec![("w.bin", vec![0; 8])],
                links: vec![],
            },
            Format,
            "past the end of 'w.bin'",
        ),
        case(
            "external data offset past the end of the file",
            Src::Dir {
                model: external_model(external_init(
                    "w",
                    2,
                    &[("location", "w.bin"), ("offset", "99999999999")],
                )),
                files: vec![("w.bin", vec![0; 8])],
                links: vec![],
            },
            Format,
            "past the end of 'w.bin'",
        ),
        case(
            "external data length that disagrees with the tensor",
            Src::Dir {
                model: external_model(external_init(
                    "w",
                    2,
                    &[("location", "w.bin"), ("length", "12")],
                )),
                files: vec![("w.bin", vec![0; 16])],
                links: vec![],
            },
            Format,
            "tensor 'w'",
        ),
        case(
            "external data length of 2^64-1",
            Src::Dir {
                model: external_model(external_init(
                    "w",
                    2,
                    &[
                        ("location", "w.bin"),
                        ("offset", "1"),
                        ("length", "18446744073709551615"),
                    ],
                )),
                files: vec![("w.bin", vec![0; 16])],
                links: vec![],
            },
            Format,
            "past the end of 'w.bin'",
        ),
        case(
            "external data offset that is not a number",
            Src::Dir {
                model: external_model(external_init(
                    "w",
                    2,
                    &[("location", "w.bin"), ("offset", "-1")],
                )),
                files: vec![("w.bin", vec![0; 8])],
                links: vec![],
            },
            Format,
            "bad external data offset '-1'",
        ),
        case(
            "external data without a location",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("offset", "0")])),
                files: vec![],
                links: vec![],
            },
            Format,
            "has external data without a location",
        ),
        case(
            "external data in a file that does not exist",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", "missing.bin")])),
                files: vec![],
                links: vec![],
            },
            Format,
            "cannot open external data file 'missing.bin'",
        ),
        case(
            "external data location that is the model's folder",
            Src::Dir {
                model: external_model(external_init("w", 2, &[("location", ".")])),
                files: vec![],
                links: vec![],
            },
            Format,
            "",
        ),
    ];
    // ---- inputs that do not fit the model
    let relu = || Src::Bytes(good_model_bytes());
    let f32s = |shape: Vec<usize>, n: usize| {
        Value::Tensor(Tensor::from_vec(shape, vec![1.0f32; n]).unwrap())
    };
    v.extend([
        with_feeds(
            case(
                "input of the wrong element type",
                relu(),
                InvalidArgument,
                "input 'x' expects element type float but was given int64",
            ),
            vec![(
                "x".into(),
                Value::Tensor(Tensor::from_vec(vec![1], vec![1i64]).unwrap()),
            )],
        ),
        with_feeds(
            case(
                "input of the wrong rank",
                relu(),
                InvalidArgument,
                "input 'x' expects rank 1 but was given shape [1, 1]",
            ),
            vec![("x".into(), f32s(vec![1, 1], 1))],
        ),
        with_feeds(
            case(
                "input with a dim that contradicts the model",
                relu(),
                InvalidArgument,
                "input 'x' expects dim 0 to be 1 but was given shape [3]",
            ),
            vec![("x".into(), f32s(vec![3], 3))],
        ),
        with_feeds(
            case(
                "input the model does not have",
                relu(),
                InvalidArgument,
                "unknown input 'z'",
            ),
            vec![("z".into(), f32s(vec![1], 1))],
        ),
        with_feeds(
            case(
                "input given twice",
                relu(),
                InvalidArgument,
                "input 'x' is given twice",
            ),
            vec![
                ("x".into(), f32s(vec![1], 1)),
                ("x".into(), f32s(vec![1], 1)),
            ],
        ),
        case(
            "input missing",
            relu(),
            InvalidArgument,
            "input 'x' is missing",
        ),
        with_feeds(
            case(
                "sequence given for a tensor input",
                relu(),
                InvalidArgument,
                "input 'x' expects a tensor but was given",
            ),
            vec![(
                "x".into(),
                Value::Sequence {
                    elem_dtype: None,
                    items: vec![],
                },
            )],
        ),
    ]);
    v
}

// ---------------------------------------------------------------- running

fn scratch(name: &str) -> PathBuf {
    let slug: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    let dir = std::env::temp_dir()
        .join(format!("onyx-hostile-{}", std::process::id()))
        .join(slug)
        .join("model");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes a `Dir` case (or any model) to a folder; returns the model's path.
fn write_case(c: &Case) -> PathBuf {
    write_src(c.name, &c.src)
}

fn write_src(name: &str, src: &Src) -> PathBuf {
    let dir = scratch(name);
    let path = dir.join("model.onnx");
    match src {
        Src::Fed(inner, _) => return write_src(name, inner),
        Src::Bytes(b) => std::fs::write(&path, b).unwrap(),
        Src::Model(m) => std::fs::write(&path, encode_model(m)).unwrap(),
        Src::Dir {
            model,
            files,
            links,
        } => {
            std::fs::write(&path, encode_model(model)).unwrap();
            for (name, bytes) in files {
                std::fs::write(dir.join(name), bytes).unwrap();
            }
            for (name, target) in links {
                #[cfg(unix)]
                std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
                #[cfg(not(unix))]
                let _ = (name, target);
            }
        }
    }
    path
}

/// Loads and runs one case; the error it gives, or None if it succeeded.
fn outcome(c: &Case) -> Option<onyx_core::Error> {
    let options = SessionOptions {
        limits: c.limits.clone(),
        ..Default::default()
    };
    let (src, feeds) = match &c.src {
        Src::Fed(inner, feeds) => (inner.as_ref(), feeds.clone()),
        other => (other, c.feeds.clone()),
    };
    let session = match src {
        Src::Bytes(b) => Session::from_bytes(b, options),
        Src::Model(m) => Session::from_bytes(&encode_model(m), options),
        Src::Dir { .. } | Src::Fed(..) => Session::from_file(&write_src(c.name, src), options),
    };
    match session {
        Err(e) => Some(e),
        Ok(s) => s.run(feeds).err(),
    }
}

#[test]
fn every_hostile_model_gets_its_error() {
    let cases = cases();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut failures = Vec::new();
    for c in &cases {
        if cfg!(not(unix)) && matches!(&c.src, Src::Dir { links, .. } if !links.is_empty()) {
            continue;
        }
        let start = Instant::now();
        let got = catch_unwind(AssertUnwindSafe(|| outcome(c)));
        let took = start.elapsed();
        match &got {
            Ok(Some(e)) => eprintln!("{}: {:?}: {}", c.name, e.kind, e.message),
            _ => eprintln!("{}: no error", c.name),
        }
        let problem = match got {
            Err(_) => Some("panicked".to_string()),
            Ok(None) => Some("succeeded".to_string()),
            Ok(Some(e)) if c.pending && e.kind == NotImplemented => {
                if e.message.contains("is not supported") {
                    None
                } else {
                    Some(format!("got {:?}: {}", e.kind, e.message))
                }
            }
            Ok(Some(e)) => {
                if e.kind != c.kind || !e.message.contains(c.message) {
                    Some(format!("got {:?}: {}", e.kind, e.message))
                } else if e.message.contains('\n') || e.message.is_empty() {
                    Some(format!("not one line: {:?}", e.message))
                } else {
                    None
                }
            }
        };
        if let Some(p) = problem {
            failures.push(format!(
                "{}: expected {:?} with '{}'; {p}",
                c.name, c.kind, c.message
            ));
        } else if took > Duration::from_secs(5) {
            failures.push(format!("{}: took {took:?}", c.name));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
}

/// A sample of the corpus through the `onyx` command: one line on stderr,
/// exit code 1, never a panic or a signal.
#[test]
fn the_command_refuses_hostile_models_cleanly() {
    let sample = [
        "truncated model",
        "random bytes",
        "two-node cycle",
        "integer attribute given as a float",
        "sparse initializer declaring 10^12 dense elements",
        "OneHot of depth 10^12",
        "Pad by 10^12",
        "function that calls itself",
        "functions that expand to 2^40 nodes",
        "external data through a symlink that leads out",
        "external data in a file shorter than the tensor",
    ];
    let cases = cases();
    for name in sample {
        let c = cases.iter().find(|c| c.name == name).unwrap();
        let path = write_case(c);
        let out = Command::new(env!("CARGO_BIN_EXE_onyx"))
            .arg("run")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(!stderr.contains("panicked"), "{name}: {stderr}");
        assert_eq!(stderr.trim_end().lines().count(), 1, "{name}: {stderr}");
        assert!(stderr.contains(c.message), "{name}: {stderr}");
    }
}
