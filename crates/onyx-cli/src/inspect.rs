//! `onyx inspect` and `onyx check`.

use std::path::Path;

use onyx_core::ir::{import_model, validate, Dim, Model, TypeInfo, ValueInfo};
use onyx_core::ops::Registry;
use onyx_format::{load_model, LoadLimits};

fn load(path: &Path) -> Result<Model, String> {
    let (proto, dir) = load_model(path, &LoadLimits::default()).map_err(|e| e.0)?;
    import_model(&proto, Some(&dir)).map_err(|e| e.message)
}

fn describe_type(ty: &Option<TypeInfo>) -> String {
    match ty {
        None => "(no type)".into(),
        Some(t @ TypeInfo::Tensor { shape, .. }) => {
            let dims = match shape {
                None => "unknown rank".to_string(),
                Some(dims) => {
                    let d: Vec<String> = dims
                        .iter()
                        .map(|d| match d {
                            Dim::Fixed(n) => n.to_string(),
                            Dim::Symbolic(s) => s.clone(),
                            Dim::Unknown => "?".into(),
                        })
                        .collect();
                    format!("[{}]", d.join(", "))
                }
            };
            format!("{} {dims}", t.type_string())
        }
        Some(t) => t.type_string(),
    }
}

fn print_values(title: &str, values: &[ValueInfo]) {
    println!("{title}:");
    for v in values {
        println!("  {}: {}", v.name, describe_type(&v.ty));
    }
}

/// Operators the model uses that this build of Onyx does not implement.
fn unsupported(model: &Model) -> Vec<String> {
    let registry = Registry::global();
    model
        .graph
        .operator_histogram()
        .keys()
        .filter(|(d, op)| !registry.contains(d, op))
        .map(|(d, op)| {
            if d.is_empty() {
                op.clone()
            } else {
                format!("{d}.{op}")
            }
        })
        .collect()
}

pub fn inspect(path: &Path) -> Result<(), String> {
    let m = load(path)?;
    println!("model: {}", path.display());
    println!("ir version: {}", m.ir_version);
    println!("producer: {} {}", m.producer_name, m.producer_version);
    let opsets: Vec<String> = m
        .opsets
        .iter()
        .map(|(d, v)| format!("{}={v}", if d.is_empty() { "ai.onnx" } else { d }))
        .collect();
    println!("opsets: {}", opsets.join(", "));
    let initialized: std::collections::HashSet<&str> = m
        .graph
        .initializers
        .iter()
        .map(|(n, _)| n.as_str())
        .collect();
    let inputs: Vec<ValueInfo> = m
        .graph
        .inputs
        .iter()
        .filter(|i| !initialized.contains(i.name.as_str()))
        .cloned()
        .collect();
    print_values("inputs", &inputs);
    print_values("outputs", &m.graph.outputs);
    println!("operators:");
    for ((d, op), n) in m.graph.operator_histogram() {
        let name = if d.is_empty() {
            op
        } else {
            format!("{d}.{op}")
        };
        println!("  {name}: {n}");
    }
    let params: usize = m.graph.initializers.iter().map(|(_, t)| t.len()).sum();
    let bytes: usize = m
        .graph
        .initializers
        .iter()
        .map(|(_, t)| t.len() * t.dtype().size_in_memory())
        .sum();
    println!(
        "parameters: {params} in {} initializers, {bytes} bytes",
        m.graph.initializers.len()
    );
    let missing = unsupported(&m);
    if missing.is_empty() {
        println!("unsupported operators: none");
    } else {
        println!("unsupported operators: {}", missing.join(", "));
    }
    Ok(())
}

pub fn check(path: &Path) -> Result<(), String> {
    let m = load(path)?;
    let mut problems = validate(&m.graph);
    let missing = unsupported(&m);
    if !missing.is_empty() {
        problems.push(format!("unsupported operators: {}", missing.join(", ")));
    }
    if problems.is_empty() {
        println!("{}: ok", path.display());
        return Ok(());
    }
    for p in &problems[..problems.len() - 1] {
        eprintln!("onyx: {p}");
    }
    Err(problems[problems.len() - 1].clone())
}
