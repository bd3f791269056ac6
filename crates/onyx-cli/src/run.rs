//! `onyx run`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use onyx_core::ir::{Dim, TypeInfo, ValueInfo};
use onyx_core::passes::OptLevel;
use onyx_core::test_data::{read_inputs_dir, read_value_file, value_kind};
use onyx_core::{Session, SessionOptions};
use onyx_format::value_to_proto_bytes;
use onyx_tensor::{bf16, f16, DType, Data, Tensor, Value};

use crate::{npy, OutputFormat};

pub struct RunArgs {
    pub model: PathBuf,
    pub inputs: Vec<String>,
    pub inputs_dir: Option<PathBuf>,
    pub output_dir: Option<PathBuf>,
    pub format: OutputFormat,
    pub dims: Vec<String>,
    /// Threads for the session (0: one per physical core).
    pub threads: usize,
    pub opt_level: OptLevel,
}

/// The session options the commands use: defaults, with `threads` and the
/// optimisation level.
pub fn session_options(threads: usize, opt_level: OptLevel) -> SessionOptions {
    SessionOptions {
        threads,
        opt_level,
        ..SessionOptions::default()
    }
}

fn split_pair<'a>(arg: &'a str, what: &str) -> Result<(&'a str, &'a str), String> {
    arg.split_once('=')
        .filter(|(k, v)| !k.is_empty() && !v.is_empty())
        .ok_or_else(|| format!("{what} '{arg}' should look like NAME=VALUE"))
}

/// Reads one `--input NAME=FILE`: .npy by extension, else a value proto of
/// the kind the model declares for that input.
fn read_input(session: &Session, arg: &str) -> Result<(String, Value), String> {
    let (name, file) = split_pair(arg, "--input")?;
    let path = Path::new(file);
    if path.extension().is_some_and(|e| e == "npy") {
        let bytes = std::fs::read(path).map_err(|e| format!("cannot read '{file}': {e}"))?;
        let t = npy::decode(&bytes).map_err(|e| format!("'{file}': {e}"))?;
        return Ok((name.to_string(), Value::Tensor(t)));
    }
    let declared = session
        .inputs()
        .into_iter()
        .chain(session.overridable_initializers())
        .find(|i| i.name == name)
        .map(|i| i.ty.clone())
        .unwrap_or(None);
    let (_, value) = read_value_file(path, value_kind(&declared)).map_err(|e| e.message)?;
    Ok((name.to_string(), value))
}

/// A small deterministic generator for random inputs (xorshift64*).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 52) as f64 - 1.0
    }
}

fn random_input(
    info: &ValueInfo,
    dims: &HashMap<String, usize>,
    rng: &mut Rng,
) -> Result<Value, String> {
    let Some(TypeInfo::Tensor { dtype, shape }) = &info.ty else {
        return Err(format!(
            "input '{}' is not a tensor; give it with --input or --inputs-dir",
            info.name
        ));
    };
    let dtype =
        dtype.ok_or_else(|| format!("input '{}' has no declared element type", info.name))?;
    let shape: Vec<usize> = shape
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .map(|d| match d {
            Dim::Fixed(n) => *n,
            Dim::Symbolic(s) => dims.get(s).copied().unwrap_or(1),
            Dim::Unknown => 1,
        })
        .collect();
    let n = onyx_tensor::numel(&shape)
        .filter(|&n| n <= 1 << 28)
        .ok_or_else(|| {
            format!(
                "input '{}' of shape {shape:?} is too large to make at random",
                info.name
            )
        })?;
    let data = match dtype {
        DType::Float => Data::F32((0..n).map(|_| rng.unit() as f32).collect()),
        DType::Double => Data::F64((0..n).map(|_| rng.unit()).collect()),
        DType::Float16 => Data::F16((0..n).map(|_| f16::from_f64(rng.unit())).collect()),
        DType::BFloat16 => Data::BF16((0..n).map(|_| bf16::from_f64(rng.unit())).collect()),
        DType::Bool => Data::Bool((0..n).map(|_| rng.next().is_multiple_of(2)).collect()),
        DType::String => Data::Str((0..n).map(|i| format!("s{i}")).collect()),
        DType::Int64 => Data::I64((0..n).map(|_| (rng.next() % 10) as i64).collect()),
        DType::Int32 => Data::I32((0..n).map(|_| (rng.next() % 10) as i32).collect()),
        other => {
            let zeros = Data::zeros(other, n).map_err(|e| e.0)?;
            let t = Tensor::new(other, shape.clone(), zeros).map_err(|e| e.0)?;
            return Ok(Value::Tensor(t));
        }
    };
    Ok(Value::Tensor(
        Tensor::new(dtype, shape, data).map_err(|e| e.0)?,
    ))
}

/// Random inputs of every declared input's type and shape, symbolic dims
/// sized by `--dim NAME=VALUE` arguments (1 when not given).
pub fn random_feeds(
    session: &Session,
    dim_args: &[String],
) -> Result<Vec<(String, Value)>, String> {
    let mut dims = HashMap::new();
    for d in dim_args {
        let (name, value) = split_pair(d, "--dim")?;
        let value = value
            .parse::<usize>()
            .map_err(|_| format!("--dim '{d}': '{value}' is not a size"))?;
        dims.insert(name.to_string(), value);
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut feeds = Vec::new();
    for info in session.inputs() {
        feeds.push((info.name.clone(), random_input(info, &dims, &mut rng)?));
    }
    Ok(feeds)
}

/// One line describing a value: kind, shape, a few elements, min/max/mean.
fn summary(v: &Value) -> String {
    let Value::Tensor(t) = v else {
        return match v {
            Value::Sequence { items, .. } => format!("{} with {} items", v.kind(), items.len()),
            Value::Optional(None) => "empty optional".into(),
            _ => v.kind(),
        };
    };
    let head = format!("{} {:?}", t.dtype(), t.shape());
    if let Ok(s) = t.as_slice::<String>() {
        let first: Vec<&String> = s.iter().take(4).collect();
        return format!("{head} first {first:?}");
    }
    match t.to_f64_vec() {
        Ok(v) if !v.is_empty() => {
            let first: Vec<String> = v.iter().take(6).map(|x| format!("{x:.6}")).collect();
            let min = v.iter().copied().fold(f64::INFINITY, f64::min);
            let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let mean = v.iter().sum::<f64>() / v.len() as f64;
            format!(
                "{head} first [{}]{} min {min:.6} max {max:.6} mean {mean:.6}",
                first.join(", "),
                if v.len() > 6 { " ..." } else { "" }
            )
        }
        _ => format!("{head} (empty)"),
    }
}

fn write_outputs(
    dir: &Path,
    outputs: &[Value],
    names: &[&ValueInfo],
    format: OutputFormat,
) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create '{}': {e}", dir.display()))?;
    for (k, (v, info)) in outputs.iter().zip(names).enumerate() {
        let (path, bytes) = match format {
            OutputFormat::Pb => (
                dir.join(format!("output_{k}.pb")),
                value_to_proto_bytes(v, &info.name),
            ),
            OutputFormat::Npy => {
                let t = v.as_tensor().ok_or_else(|| {
                    format!(
                        "output '{}' is a {}, which .npy cannot hold; use --format pb",
                        info.name,
                        v.kind()
                    )
                })?;
                (
                    dir.join(format!("output_{k}.npy")),
                    npy::encode(t).map_err(|e| format!("output '{}': {e}", info.name))?,
                )
            }
        };
        std::fs::write(&path, bytes)
            .map_err(|e| format!("cannot write '{}': {e}", path.display()))?;
    }
    Ok(())
}

pub fn run(args: &RunArgs) -> Result<(), String> {
    let load_start = Instant::now();
    let session = Session::from_file(&args.model, session_options(args.threads, args.opt_level))
        .map_err(|e| e.message)?;
    let load_time = load_start.elapsed();
    let mut feeds = Vec::new();
    if let Some(dir) = &args.inputs_dir {
        feeds = read_inputs_dir(&session, dir).map_err(|e| e.message)?;
    }
    for arg in &args.inputs {
        feeds.push(read_input(&session, arg)?);
    }
    let random = feeds.is_empty() && !session.inputs().is_empty();
    if random {
        feeds = random_feeds(&session, &args.dims)?;
    }
    let input_lines: Vec<String> = feeds
        .iter()
        .map(|(n, v)| format!("  {n}: {}", summary(v)))
        .collect();
    let run_start = Instant::now();
    let outputs = session.run(feeds).map_err(|e| e.message)?;
    let run_time = run_start.elapsed();
    let output_infos = session.outputs();
    if let Some(dir) = &args.output_dir {
        write_outputs(dir, &outputs, &output_infos, args.format)?;
    }
    if random {
        println!("random inputs:");
        input_lines.iter().for_each(|l| println!("{l}"));
    }
    println!("outputs:");
    for (v, info) in outputs.iter().zip(&output_infos) {
        println!("  {}: {}", info.name, summary(v));
    }
    println!(
        "load {:.3} ms, run {:.3} ms",
        load_time.as_secs_f64() * 1e3,
        run_time.as_secs_f64() * 1e3
    );
    Ok(())
}
