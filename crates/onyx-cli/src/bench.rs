//! `onyx bench`: load a model, make random inputs as `onyx run` does, and
//! time it. Reports the load time, the first run (which pays for one-off
//! work) and the median, p10 and p90 of the timed runs.

use std::path::PathBuf;
use std::time::Instant;

use onyx_core::passes::OptLevel;
use onyx_core::{Session, SessionOptions};

use crate::run::random_feeds;

pub struct BenchArgs {
    pub model: PathBuf,
    pub threads: usize,
    pub runs: usize,
    pub warmup: usize,
    pub json: bool,
    pub dims: Vec<String>,
    pub opt_level: OptLevel,
}

/// The `p`-th percentile (0..=100) of sorted values, by nearest rank.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn json_string(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

pub fn bench(args: &BenchArgs) -> Result<(), String> {
    if args.runs == 0 {
        return Err("--runs must be at least 1".into());
    }
    if args.threads == 0 {
        return Err("--threads must be at least 1".into());
    }
    onyx_kernels::set_threads(args.threads);
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let options = SessionOptions {
        opt_level: args.opt_level,
        ..SessionOptions::default()
    };
    let session = Session::from_file(&args.model, options).map_err(|e| e.message)?;
    let load_ms = ms(start);
    let feeds = random_feeds(&session, &args.dims)?;
    let once = || -> Result<f64, String> {
        let t = Instant::now();
        let out = session.run(feeds.clone()).map_err(|e| e.message)?;
        let elapsed = ms(t);
        drop(out);
        Ok(elapsed)
    };
    let first_run_ms = once()?;
    for _ in 0..args.warmup {
        once()?;
    }
    let mut times = (0..args.runs)
        .map(|_| once())
        .collect::<Result<Vec<f64>, String>>()?;
    times.sort_by(f64::total_cmp);
    let (median, p10, p90) = (
        percentile(&times, 50.0),
        percentile(&times, 10.0),
        percentile(&times, 90.0),
    );
    let nodes = session.model().graph.nodes.len();
    let rewrites: Vec<String> = session
        .rewrites()
        .iter()
        .map(|(pass, n)| format!("{pass} {n}"))
        .collect();
    if args.json {
        println!(
            "{{\"model\": {}, \"load_ms\": {load_ms:.4}, \"first_run_ms\": {first_run_ms:.4}, \
             \"median_ms\": {median:.4}, \"p10_ms\": {p10:.4}, \"p90_ms\": {p90:.4}, \
             \"runs\": {}, \"warmup\": {}, \"threads\": {}, \"nodes\": {nodes}}}",
            json_string(&args.model.display().to_string()),
            args.runs,
            args.warmup,
            args.threads
        );
    } else {
        println!("model: {}", args.model.display());
        println!(
            "threads {}, runs {}, warmup {}",
            args.threads, args.runs, args.warmup
        );
        println!(
            "opt level {:?}: {nodes} nodes; rewrites: {}",
            args.opt_level,
            if rewrites.is_empty() {
                "none".to_string()
            } else {
                rewrites.join(", ")
            }
        );
        println!("load {load_ms:.3} ms, first run {first_run_ms:.3} ms");
        println!("median {median:.3} ms, p10 {p10:.3} ms, p90 {p90:.3} ms");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let v: Vec<f64> = (1..=11).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), 6.0);
        assert_eq!(percentile(&v, 10.0), 2.0);
        assert_eq!(percentile(&v, 90.0), 10.0);
        assert_eq!(percentile(&[4.0], 90.0), 4.0);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
