//! `onyx bench`: load a model, make random inputs as `onyx run` does, and
//! time it. Reports the load time, the first run (which pays for one-off
//! work) and the median, p10 and p90 of the timed runs.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use onyx_core::passes::OptLevel;
use onyx_core::{NodeTime, Session};

use crate::run::{random_feeds, session_options};

pub struct BenchArgs {
    pub model: PathBuf,
    pub threads: usize,
    pub runs: usize,
    pub warmup: usize,
    pub json: bool,
    pub dims: Vec<String>,
    /// Print where the timed runs spent their time, by operator type.
    pub profile: bool,
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
    let ms = |t: Instant| t.elapsed().as_secs_f64() * 1e3;
    let start = Instant::now();
    let session = Session::from_file(&args.model, session_options(args.threads, args.opt_level))
        .map_err(|e| e.message)?;
    let threads = session.threads();
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
    if args.profile {
        // profiled runs are kept apart from the timed ones: timing every
        // node has a cost of its own
        let mut nodes = Vec::new();
        for _ in 0..args.runs {
            let (_, times) = session.run_profiled(feeds.clone()).map_err(|e| e.message)?;
            nodes.extend(times);
        }
        print_profile(&nodes, args.runs);
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
    let peak = peak_rss_mib();
    let nodes = session.model().graph.nodes.len();
    if args.json {
        let peak = peak.map_or("null".to_string(), |m| format!("{m:.1}"));
        println!(
            "{{\"model\": {}, \"load_ms\": {load_ms:.4}, \"first_run_ms\": {first_run_ms:.4}, \
             \"median_ms\": {median:.4}, \"p10_ms\": {p10:.4}, \"p90_ms\": {p90:.4}, \
             \"runs\": {}, \"warmup\": {}, \"threads\": {}, \"nodes\": {nodes}, \"peak_rss_mib\": {peak}}}",
            json_string(&args.model.display().to_string()),
            args.runs,
            args.warmup,
            threads
        );
    } else {
        println!("model: {}", args.model.display());
        println!(
            "threads {}, runs {}, warmup {}",
            threads, args.runs, args.warmup
        );
        println!(
            "opt level {:?}: {nodes} nodes; rewrites: {}",
            args.opt_level,
            rewrites_summary(&session)
        );
        println!("load {load_ms:.3} ms, first run {first_run_ms:.3} ms");
        println!("median {median:.3} ms, p10 {p10:.3} ms, p90 {p90:.3} ms");
        if let Some(m) = peak {
            println!("peak resident memory {m:.1} MiB");
        }
    }
    Ok(())
}

/// This process's peak resident memory so far (Linux's VmHWM), if known.
fn peak_rss_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    vm_hwm_kib(&status).map(|kib| kib as f64 / 1024.0)
}

fn vm_hwm_kib(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Per operator type over `runs` runs: nodes, total ms per run and share.
fn op_type_table(nodes: &[NodeTime], runs: usize) -> Vec<(String, usize, f64, f64)> {
    let mut by_op: HashMap<&str, (usize, Duration)> = HashMap::new();
    for n in nodes {
        let e = by_op.entry(n.op_type.as_str()).or_default();
        e.0 += 1;
        e.1 += n.time;
    }
    let total: f64 = by_op.values().map(|(_, t)| t.as_secs_f64()).sum();
    let mut rows: Vec<_> = by_op
        .into_iter()
        .map(|(op, (count, t))| {
            let secs = t.as_secs_f64();
            let share = if total > 0.0 { secs / total } else { 0.0 };
            (
                op.to_string(),
                count / runs.max(1),
                secs * 1e3 / runs.max(1) as f64,
                share,
            )
        })
        .collect();
    rows.sort_by(|a, b| b.2.total_cmp(&a.2).then(a.0.cmp(&b.0)));
    rows
}

fn print_profile(nodes: &[NodeTime], runs: usize) {
    println!(
        "{:<28} {:>6} {:>12} {:>7}",
        "operator", "nodes", "ms per run", "share"
    );
    for (op, count, ms, share) in op_type_table(nodes, runs) {
        println!("{op:<28} {count:>6} {ms:>12.3} {:>6.1}%", share * 100.0);
    }
}

/// Which passes rewrote the graph and how often, e.g. "Gelu 2, FusedMatMul 4",
/// or "none".
pub fn rewrites_summary(session: &Session) -> String {
    let rewrites: Vec<String> = session
        .rewrites()
        .iter()
        .map(|(pass, n)| format!("{pass} {n}"))
        .collect();
    if rewrites.is_empty() {
        "none".to_string()
    } else {
        rewrites.join(", ")
    }
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
    fn profile_groups_by_operator_type() {
        let node = |op: &str, ms: u64| NodeTime {
            name: String::new(),
            op_type: op.into(),
            time: Duration::from_millis(ms),
        };
        // two runs of a graph with two Conv nodes and one Relu
        let nodes = [
            node("Conv", 3),
            node("Relu", 1),
            node("Conv", 4),
            node("Conv", 5),
            node("Relu", 1),
            node("Conv", 2),
        ];
        let rows = op_type_table(&nodes, 2);
        assert_eq!(rows.len(), 2);
        assert_eq!((rows[0].0.as_str(), rows[0].1), ("Conv", 2));
        assert!((rows[0].2 - 7.0).abs() < 1e-9);
        assert!((rows[0].3 - 14.0 / 16.0).abs() < 1e-9);
        assert_eq!((rows[1].0.as_str(), rows[1].1), ("Relu", 1));
        assert!((rows[1].2 - 1.0).abs() < 1e-9);
    }

    #[test]
    fn reads_the_peak_from_proc_status() {
        let status = "Name:\tonyx\nVmPeak:\t  200 kB\nVmHWM:\t   5120 kB\nVmRSS:\t 100 kB\n";
        assert_eq!(vm_hwm_kib(status), Some(5120));
        assert_eq!(vm_hwm_kib("Name:\tx\n"), None);
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\n"), "\"a\\\"b\\\\c\\u000a\"");
    }
}
