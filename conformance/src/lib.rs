//! The conformance runner: runs ONNX backend test cases through Onyx and
//! compares outputs the way onnx's backend test runner does (rtol 1e-3,
//! atol 1e-7, NaN equals NaN, element type and shape exact).
#![forbid(unsafe_code)]

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use onyx_core::passes::OptLevel;
use onyx_core::test_data::{read_expected_outputs, read_inputs_dir};
use onyx_core::{Session, SessionOptions};
use onyx_tensor::{Data, Tensor, Value};

pub const RTOL: f64 = 1e-3;
pub const ATOL: f64 = 1e-7;

/// How one case went.
#[derive(Clone, Debug, PartialEq)]
pub enum Outcome {
    Passed,
    /// Ran, but an output differs from the expected one.
    Failed(String),
    /// Could not load or run (unsupported operator, refused model, error).
    Errored(String),
}

fn compare_tensors(expected: &Tensor, actual: &Tensor) -> Result<(), String> {
    if expected.dtype() != actual.dtype() {
        return Err(format!(
            "element type {} != expected {}",
            actual.dtype(),
            expected.dtype()
        ));
    }
    if expected.shape() != actual.shape() {
        return Err(format!(
            "shape {:?} != expected {:?}",
            actual.shape(),
            expected.shape()
        ));
    }
    match (expected.data(), actual.data()) {
        (Data::Str(e), Data::Str(a)) => {
            if let Some(i) = (0..e.len()).find(|&i| e[i] != a[i]) {
                return Err(format!("element {i}: {:?} != expected {:?}", a[i], e[i]));
            }
        }
        _ if expected.dtype().is_float() => {
            let e = expected.to_f64_vec().map_err(|e| e.0)?;
            let a = actual.to_f64_vec().map_err(|e| e.0)?;
            for i in 0..e.len() {
                let (x, y) = (a[i], e[i]);
                let ok =
                    (x.is_nan() && y.is_nan()) || x == y || (x - y).abs() <= ATOL + RTOL * y.abs();
                if !ok {
                    return Err(format!("element {i}: {x} != expected {y}"));
                }
            }
        }
        (e, a) => {
            if e != a {
                let ev = expected.to_i64_vec().unwrap_or_default();
                let av = actual.to_i64_vec().unwrap_or_default();
                let i = (0..ev.len().min(av.len()))
                    .find(|&i| ev[i] != av[i])
                    .unwrap_or(0);
                return Err(format!(
                    "element {i}: {:?} != expected {:?}",
                    av.get(i),
                    ev.get(i)
                ));
            }
        }
    }
    Ok(())
}

/// Compares two values: tensors as above, sequences item by item, optionals by presence.
pub fn compare(expected: &Value, actual: &Value) -> Result<(), String> {
    match (expected, actual) {
        (Value::Tensor(e), Value::Tensor(a)) => compare_tensors(e, a),
        (Value::Sequence { items: e, .. }, Value::Sequence { items: a, .. }) => {
            if e.len() != a.len() {
                return Err(format!(
                    "sequence of {} items != expected {}",
                    a.len(),
                    e.len()
                ));
            }
            e.iter()
                .zip(a)
                .enumerate()
                .try_for_each(|(i, (e, a))| compare(e, a).map_err(|m| format!("item {i}: {m}")))
        }
        (Value::Optional(e), Value::Optional(a)) => match (e, a) {
            (None, None) => Ok(()),
            (Some(e), Some(a)) => compare(e, a),
            _ => Err("optional presence differs".into()),
        },
        // an optional output holding a value may be compared with the value itself
        (Value::Optional(Some(e)), a) => compare(e, a),
        (e, Value::Optional(Some(a))) => compare(e, a),
        (Value::Map(e), Value::Map(a)) => {
            compare_tensors(&e.keys, &a.keys)?;
            compare(&e.values, &a.values)
        }
        (e, a) => Err(format!("value kind {} != expected {}", a.kind(), e.kind())),
    }
}

/// How cases are run: through the Rust API with the given graph
/// optimisations, or through the `onyx` command line (`onyx run
/// --inputs-dir SET --output-dir DIR --format pb MODEL`, optimised).
#[derive(Clone, Debug)]
pub enum Runner {
    Api(OptLevel),
    Cli(PathBuf),
}

/// Runs one data set through the `onyx` binary and reads back its .pb outputs.
fn run_with_cli(
    onyx: &Path,
    session: &Session,
    model: &Path,
    set: &Path,
) -> Result<Vec<Value>, String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let out_dir = std::env::temp_dir().join(format!(
        "onyx-conformance-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let result = Command::new(onyx)
        .arg("run")
        .arg("--inputs-dir")
        .arg(set)
        .arg("--output-dir")
        .arg(&out_dir)
        .args(["--format", "pb"])
        .arg(model)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", onyx.display()))
        .and_then(|out| {
            if out.status.success() {
                read_expected_outputs(session, &out_dir).map_err(|e| e.message)
            } else {
                Err(String::from_utf8_lossy(&out.stderr).trim().to_string())
            }
        });
    let _ = std::fs::remove_dir_all(&out_dir);
    result
}

fn run_case_inner(case_dir: &Path, runner: &Runner) -> Outcome {
    let options = SessionOptions {
        opt_level: match runner {
            Runner::Api(level) => *level,
            Runner::Cli(_) => OptLevel::default(),
        },
        ..SessionOptions::default()
    };
    let session = match Session::from_file(&case_dir.join("model.onnx"), options) {
        Ok(s) => s,
        Err(e) => return Outcome::Errored(e.message),
    };
    let mut sets: Vec<_> = std::fs::read_dir(case_dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default();
    sets.sort();
    if sets.is_empty() {
        return Outcome::Errored("the case has no test data sets".into());
    }
    for set in sets {
        let feeds = match read_inputs_dir(&session, &set) {
            Ok(f) => f,
            Err(e) => return Outcome::Errored(e.message),
        };
        let expected = match read_expected_outputs(&session, &set) {
            Ok(v) => v,
            Err(e) => return Outcome::Errored(e.message),
        };
        let actual = match runner {
            Runner::Api(_) => session.run(feeds).map_err(|e| e.message),
            Runner::Cli(onyx) => run_with_cli(onyx, &session, &case_dir.join("model.onnx"), &set),
        };
        let actual = match actual {
            Ok(v) => v,
            Err(e) => return Outcome::Errored(e),
        };
        if actual.len() < expected.len() {
            return Outcome::Failed(format!(
                "{} outputs, expected {}",
                actual.len(),
                expected.len()
            ));
        }
        for (k, (e, a)) in expected.iter().zip(&actual).enumerate() {
            if let Err(m) = compare(e, a) {
                return Outcome::Failed(format!("output {k}: {m}"));
            }
        }
    }
    Outcome::Passed
}

/// Runs every data set of one case folder; a panic is reported as an error.
pub fn run_case(case_dir: &Path, runner: &Runner) -> Outcome {
    match catch_unwind(AssertUnwindSafe(|| run_case_inner(case_dir, runner))) {
        Ok(o) => o,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            Outcome::Errored(format!("panic: {msg}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comparison_rules() {
        let e = Tensor::from_vec(vec![3], vec![1.0f32, f32::NAN, 100.0]).unwrap();
        let close = Tensor::from_vec(vec![3], vec![1.0005f32, f32::NAN, 100.05]).unwrap();
        assert!(compare(&e.clone().into(), &close.into()).is_ok());
        let far = Tensor::from_vec(vec![3], vec![1.01f32, f32::NAN, 100.0]).unwrap();
        assert!(compare(&e.clone().into(), &far.into()).is_err());
        let reshaped = e.clone().reshape(vec![3, 1]).unwrap();
        assert!(compare(&e.into(), &reshaped.into())
            .unwrap_err()
            .contains("shape"));
        let i = Tensor::from_vec(vec![1], vec![1i64]).unwrap();
        let j = Tensor::from_vec(vec![1], vec![1i32]).unwrap();
        assert!(compare(&i.into(), &j.into())
            .unwrap_err()
            .contains("element type"));
    }
}

/// The suites the runner knows, in report order.
pub const SUITES: [&str; 5] = [
    "node",
    "simple",
    "pytorch-converted",
    "pytorch-operator",
    "light",
];

/// One case's result.
#[derive(Clone, Debug)]
pub struct CaseResult {
    pub suite: String,
    pub name: String,
    pub outcome: Outcome,
}

impl CaseResult {
    /// The id used in the expected-pass list: `suite/case`.
    pub fn id(&self) -> String {
        format!("{}/{}", self.suite, self.name)
    }
}

/// Runs every case under `root/SUITE/` for the given suites whose name
/// contains `filter`, on `threads` threads.
pub fn run_suites(
    root: &Path,
    suites: &[&str],
    filter: &str,
    threads: usize,
    runner: &Runner,
) -> Vec<CaseResult> {
    let mut cases = Vec::new();
    for suite in suites {
        let Ok(rd) = std::fs::read_dir(root.join(suite)) else {
            continue;
        };
        let mut names: Vec<String> = rd
            .filter_map(|e| e.ok())
            .filter(|e| e.path().join("model.onnx").is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.contains(filter))
            .collect();
        names.sort();
        cases.extend(names.into_iter().map(|n| (suite.to_string(), n)));
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results = std::sync::Mutex::new(Vec::with_capacity(cases.len()));
    std::thread::scope(|s| {
        for _ in 0..threads.max(1) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some((suite, name)) = cases.get(i) else {
                    break;
                };
                let outcome = run_case(&root.join(suite).join(name), runner);
                let r = CaseResult {
                    suite: suite.clone(),
                    name: name.clone(),
                    outcome,
                };
                results
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push((i, r));
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    results.sort_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// The per-suite table as Markdown: total, passed, failed, errored, pass %.
pub fn summary_table(results: &[CaseResult]) -> String {
    let mut out = String::from(
        "| suite | total | passed | failed | errored | pass % |\n|---|---:|---:|---:|---:|---:|\n",
    );
    let mut all = (0, 0, 0, 0);
    for suite in SUITES {
        let rs: Vec<_> = results.iter().filter(|r| r.suite == suite).collect();
        if rs.is_empty() {
            continue;
        }
        let passed = rs.iter().filter(|r| r.outcome == Outcome::Passed).count();
        let failed = rs
            .iter()
            .filter(|r| matches!(r.outcome, Outcome::Failed(_)))
            .count();
        let errored = rs.len() - passed - failed;
        all = (
            all.0 + rs.len(),
            all.1 + passed,
            all.2 + failed,
            all.3 + errored,
        );
        out += &format!(
            "| {suite} | {} | {passed} | {failed} | {errored} | {:.1} |\n",
            rs.len(),
            100.0 * passed as f64 / rs.len() as f64
        );
    }
    if all.0 > 0 {
        out += &format!(
            "| all | {} | {} | {} | {} | {:.1} |\n",
            all.0,
            all.1,
            all.2,
            all.3,
            100.0 * all.1 as f64 / all.0 as f64
        );
    }
    out
}

/// Cases on the expected-pass list that did not pass, and passing cases not on it.
pub fn check_expected(results: &[CaseResult], expected: &[String]) -> (Vec<String>, Vec<String>) {
    let passed: std::collections::HashSet<String> = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .map(CaseResult::id)
        .collect();
    let ran: std::collections::HashSet<String> = results.iter().map(CaseResult::id).collect();
    let regressions = expected
        .iter()
        .filter(|id| ran.contains(*id) && !passed.contains(*id))
        .cloned()
        .collect();
    let listed: std::collections::HashSet<&String> = expected.iter().collect();
    let mut newly: Vec<String> = passed
        .iter()
        .filter(|id| !listed.contains(id))
        .cloned()
        .collect();
    newly.sort();
    (regressions, newly)
}
