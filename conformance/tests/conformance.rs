//! Runs the whole conformance suite and fails on any regression from
//! conformance/expected-pass.txt. Needs the data from conformance/make-data.sh.

use std::path::PathBuf;

use onyx_conformance::{check_expected, run_suites, summary_table, Runner, SUITES};

fn main() {
    let crate_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let data = std::env::var_os("ONYX_CONFORMANCE_DATA")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_dir.join("data"));
    assert!(
        data.join("node").is_dir(),
        "no conformance data in '{}'; run conformance/make-data.sh",
        data.display()
    );
    let threads = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let results = run_suites(
        &data,
        &SUITES,
        "",
        threads,
        &Runner::Api(Default::default()),
    );
    println!("{}", summary_table(&results));
    let expected: Vec<String> = std::fs::read_to_string(crate_dir.join("expected-pass.txt"))
        .expect("conformance/expected-pass.txt")
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_string())
        .collect();
    let (regressions, newly) = check_expected(&results, &expected);
    println!("{} newly passing cases not yet on the list", newly.len());
    for id in &regressions {
        println!("REGRESSION {id}");
    }
    let listed_and_ran = expected.len() - regressions.len();
    if regressions.is_empty() {
        println!("{listed_and_ran} passed, 0 failed");
    } else {
        println!("{listed_and_ran} passed, {} failed", regressions.len());
        std::process::exit(1);
    }
}
