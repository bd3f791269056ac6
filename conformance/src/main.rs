//! `onyx-conformance`: runs the ONNX backend test data and reports.
//!
//! Usage: onyx-conformance [--data DIR] [--filter TEXT] [--suite NAME]... [--update]
//!                         [--failures] [--cli PATH_TO_ONYX] [--opt-level LEVEL]
//!
//! With --cli, every case runs through the `onyx` command line
//! (`onyx run --inputs-dir ... --output-dir ... --format pb`) instead of the API.
//! --opt-level (disabled, basic, extended, all; default all) sets the API
//! sessions' graph optimisations.
//! Without --update it checks the expected-pass list and exits non-zero on
//! a regression. With --update it rewrites conformance/expected-pass.txt
//! and conformance/RESULTS.md from this run.
#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use onyx_conformance::{check_expected, run_suites, summary_table, Outcome, Runner, SUITES};
use onyx_core::passes::OptLevel;

fn main() -> ExitCode {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut data = std::env::var_os("ONYX_CONFORMANCE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("data"));
    let mut filter = String::new();
    let mut suites: Vec<String> = Vec::new();
    let mut update = false;
    let mut show_failures = false;
    let mut runner = Runner::Api(OptLevel::default());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--data" => data = args.next().map(PathBuf::from).unwrap_or(data),
            "--filter" => filter = args.next().unwrap_or_default(),
            "--suite" => suites.extend(args.next()),
            "--update" => update = true,
            "--failures" => show_failures = true,
            "--opt-level" => match args.next().map(|l| l.parse::<OptLevel>()) {
                Some(Ok(level)) => runner = Runner::Api(level),
                Some(Err(e)) => {
                    eprintln!("onyx-conformance: {e}");
                    return ExitCode::from(2);
                }
                None => {
                    eprintln!("onyx-conformance: --opt-level needs a level");
                    return ExitCode::from(2);
                }
            },
            "--cli" => match args.next() {
                Some(path) => runner = Runner::Cli(PathBuf::from(path)),
                None => {
                    eprintln!("onyx-conformance: --cli needs the path of the onyx binary");
                    return ExitCode::from(2);
                }
            },
            other => {
                eprintln!("onyx-conformance: unknown argument '{other}'");
                return ExitCode::from(2);
            }
        }
    }
    if !data.join("node").is_dir() {
        eprintln!(
            "onyx-conformance: no test data in '{}'; run conformance/make-data.sh first",
            data.display()
        );
        return ExitCode::from(2);
    }
    let suite_refs: Vec<&str> = if suites.is_empty() {
        SUITES.to_vec()
    } else {
        suites.iter().map(String::as_str).collect()
    };
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let results = run_suites(&data, &suite_refs, &filter, threads, &runner);
    if show_failures {
        for r in &results {
            match &r.outcome {
                Outcome::Passed => {}
                Outcome::Failed(m) => println!("FAIL  {}: {m}", r.id()),
                Outcome::Errored(m) => println!("ERROR {}: {m}", r.id()),
            }
        }
    }
    let table = summary_table(&results);
    println!("{table}");
    let list_path = crate_dir.join("expected-pass.txt");
    if update && matches!(runner, Runner::Cli(_)) {
        eprintln!("onyx-conformance: --update records API results; run it without --cli");
        return ExitCode::from(2);
    }
    if update {
        let mut passed: Vec<String> = results
            .iter()
            .filter(|r| r.outcome == Outcome::Passed)
            .map(|r| r.id())
            .collect();
        passed.sort();
        let body = passed.join("\n") + "\n";
        let results_md = format!(
            "# Conformance results\n\nThe ONNX backend test data of onnx 1.23.2, run through the Rust API by\n`cargo run --release -p onyx-conformance -- --update` (data from\n`conformance/make-data.sh`). Comparison: rtol {}, atol {}, NaN equals NaN,\nelement type and shape exact. The `light` suite ships no input files; its inputs are made as\nonnx's backend runner makes them (`arange(n) / n` in the declared shape).\n\n{table}",
            onyx_conformance::RTOL,
            onyx_conformance::ATOL
        );
        // hand-written sections: why cases fail, then results from other
        // test suites (exported models)
        let mut results_md = results_md;
        for notes_file in ["known-failures.md", "exported-models.md"] {
            let notes = std::fs::read_to_string(crate_dir.join(notes_file)).unwrap_or_default();
            if !notes.is_empty() {
                results_md = format!("{results_md}\n{notes}");
            }
        }
        if let Err(e) = std::fs::write(&list_path, body)
            .and_then(|_| std::fs::write(crate_dir.join("RESULTS.md"), results_md))
        {
            eprintln!("onyx-conformance: cannot write results: {e}");
            return ExitCode::FAILURE;
        }
        println!(
            "wrote {} passing cases to {}",
            passed.len(),
            list_path.display()
        );
        return ExitCode::SUCCESS;
    }
    let expected: Vec<String> = std::fs::read_to_string(&list_path)
        .unwrap_or_default()
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    let (regressions, newly) = check_expected(&results, &expected);
    if !newly.is_empty() {
        println!(
            "{} passing cases are not on the expected-pass list (add them with --update)",
            newly.len()
        );
    }
    for id in &regressions {
        let why = results
            .iter()
            .find(|r| &r.id() == id)
            .map(|r| format!("{:?}", r.outcome));
        println!("REGRESSION {id}: {}", why.unwrap_or_default());
    }
    let passed = results
        .iter()
        .filter(|r| r.outcome == Outcome::Passed)
        .count();
    println!(
        "conformance: {passed} of {} cases pass, {} expected-pass cases regressed",
        results.len(),
        regressions.len()
    );
    if regressions.is_empty() {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "conformance: {} expected-pass cases regressed",
            regressions.len()
        );
        ExitCode::FAILURE
    }
}
