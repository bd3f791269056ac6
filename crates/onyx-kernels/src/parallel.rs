//! Splitting a kernel's work across the threads of the running session.
//!
//! A [`ThreadPool`] belongs to whoever runs kernels (a session). Work done
//! inside [`ThreadPool::run`] may split across the pool's threads; anywhere
//! else the kernels stay on the calling thread. A run of a pool of several
//! threads moves onto one of them, and for as long as it lasts the others
//! spin waiting for the parts its kernels split off: a kernel's part is
//! often shorter than it takes to wake a sleeping thread. A run whose last
//! run was short stays on the caller's thread, as moving it costs a few
//! microseconds.
//!
//! Kernels split by output rows or columns, never along a sum, so the number
//! of threads never changes a result's bits.

use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use rayon::prelude::*;

thread_local! {
    /// The pool of the run this thread is executing, when it may split.
    static CURRENT: RefCell<Option<Arc<rayon::ThreadPool>>> = const { RefCell::new(None) };
}

/// Threads a session's kernels may split their work across.
pub struct ThreadPool {
    threads: usize,
    /// Started on the first run that can use it; None when the threads
    /// could not be started, and then work stays on the caller's thread.
    pool: OnceLock<Option<Arc<rayon::ThreadPool>>>,
    /// How long the last run took, in nanoseconds (u64::MAX before any).
    last_run_ns: AtomicU64,
}

/// Runs that took less than this last time stay on the caller's thread:
/// moving a run onto the pool costs a few microseconds, which a model of
/// small operators would feel.
const MOVE_MIN_NS: u64 = 200_000;

impl ThreadPool {
    /// A pool of `threads` threads; 0 means one per physical core the process
    /// may use. A pool of one thread runs everything on the caller's thread.
    /// The threads start on the first run that needs them.
    pub fn new(threads: usize) -> ThreadPool {
        let threads = if threads == 0 {
            default_threads()
        } else {
            threads
        };
        ThreadPool {
            threads,
            pool: OnceLock::new(),
            last_run_ns: AtomicU64::new(u64::MAX),
        }
    }

    /// How many threads the pool's runs may use.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// Runs `f` so that the kernels it calls may split across this pool.
    pub fn run<R: Send>(&self, f: impl FnOnce() -> R + Send) -> R {
        let pool = if self.threads > 1 {
            self.pool
                .get_or_init(|| {
                    rayon::ThreadPoolBuilder::new()
                        .num_threads(self.threads)
                        .thread_name(|i| format!("onyx-worker-{i}"))
                        .build()
                        .ok()
                        .map(Arc::new)
                })
                .clone()
        } else {
            None
        };
        let start = Instant::now();
        let long = self.last_run_ns.load(Ordering::Relaxed) >= MOVE_MIN_NS;
        let out = match pool {
            // a long run moves onto one of the pool's threads, and the others
            // wait for its parts spinning, not asleep: waking a sleeping
            // thread takes longer than many a kernel's part runs
            Some(p) if long => p.clone().install(|| {
                let done = Arc::new(AtomicBool::new(false));
                let home = rayon::current_thread_index();
                let flag = done.clone();
                p.spawn_broadcast(move |ctx| {
                    if Some(ctx.index()) != home {
                        wait_for_parts(&flag)
                    }
                });
                let out = with_pool(Some(p), f);
                done.store(true, Ordering::Release);
                out
            }),
            pool => with_pool(pool, f),
        };
        let took = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.last_run_ns.store(took, Ordering::Relaxed);
        out
    }
}

impl std::fmt::Debug for ThreadPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ThreadPool({} threads)", self.threads)
    }
}

/// One per physical core, bounded by the cores this process may run on.
fn default_threads() -> usize {
    let allowed = std::thread::available_parallelism().map_or(1, |n| n.get());
    num_cpus::get_physical().clamp(1, allowed)
}

/// How long a worker waits for a part with none coming before it goes back
/// to sleeping until woken.
const SPIN_IDLE: std::time::Duration = std::time::Duration::from_millis(1);

/// Runs the parts other threads split off until `done` is set, or until
/// none has come for [`SPIN_IDLE`]. Between checks the thread yields its
/// core, so that on a busy machine waiting costs the other threads little.
fn wait_for_parts(done: &AtomicBool) {
    let mut last = Instant::now();
    while !done.load(Ordering::Acquire) {
        if rayon::yield_now() == Some(rayon::Yield::Executed) {
            last = Instant::now();
        } else if last.elapsed() > SPIN_IDLE {
            return;
        } else {
            std::thread::yield_now();
        }
    }
}

/// Runs `f` with the current thread's splitting flag set to `on`, restoring
/// it after (runs nest: a worker waiting in a split may pick up another run).
fn with_pool<R>(pool: Option<Arc<rayon::ThreadPool>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Option<Arc<rayon::ThreadPool>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            CURRENT.with(|c| *c.borrow_mut() = self.0.take());
        }
    }
    let _restore = Restore(CURRENT.with(|c| c.replace(pool)));
    f()
}

/// How many threads a kernel running now may split across (1 outside
/// [`ThreadPool::run`], and inside a part already split off).
pub fn current_threads() -> usize {
    CURRENT.with(|c| c.borrow().as_ref().map_or(1, |p| p.current_num_threads()))
}

/// Calls `f` on every item, across the current pool's threads when there are
/// several (items in any order), else in order on this thread.
pub fn for_each<T: Send>(items: Vec<T>, f: impl Fn(T) + Sync + Send) {
    let pool = CURRENT.with(|c| c.borrow().clone());
    match pool {
        // the pool's workers have no current pool: what they run stays on them
        Some(p) if items.len() > 1 && p.current_num_threads() > 1 => p.install(|| {
            // a part already split off stays on the thread that runs it
            let part = |item| with_pool(None, || f(item));
            items.into_par_iter().with_max_len(1).for_each(part)
        }),
        _ => items.into_iter().for_each(f),
    }
}

/// Splits `0..n` into at most `parts` ranges of whole multiples of `unit`
/// (the last range takes the rest), as even as the unit allows.
pub fn split_range(n: usize, unit: usize, parts: usize) -> Vec<std::ops::Range<usize>> {
    let unit = unit.max(1);
    let units = n.div_ceil(unit);
    let parts = parts.clamp(1, units.max(1));
    let mut out = Vec::with_capacity(parts);
    let mut start = 0;
    for p in 0..parts {
        // units handed out so far, spread as evenly as integers allow
        let end_units = units * (p + 1) / parts;
        let end = (end_units * unit).min(n);
        if end > start {
            out.push(start..end);
        }
        start = end;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn ranges_cover_in_units() {
        assert_eq!(split_range(10, 1, 3), vec![0..3, 3..6, 6..10]);
        assert_eq!(split_range(25, 12, 4), vec![0..12, 12..24, 24..25]);
        assert_eq!(split_range(25, 12, 2), vec![0..12, 12..25]);
        assert_eq!(split_range(24, 6, 2), vec![0..12, 12..24]);
        assert_eq!(split_range(0, 4, 3), Vec::<std::ops::Range<usize>>::new());
        assert_eq!(split_range(5, 8, 3), vec![0..5]);
    }

    #[test]
    fn splitting_only_inside_a_run() {
        assert_eq!(current_threads(), 1);
        let pool = ThreadPool::new(3);
        assert_eq!(pool.threads(), 3);
        assert_eq!(pool.run(current_threads), 3);
        assert_eq!(current_threads(), 1);
        assert_eq!(ThreadPool::new(1).run(current_threads), 1);
        assert!(ThreadPool::new(0).threads() >= 1);
        // every item is visited once
        let sum = AtomicUsize::new(0);
        pool.run(|| {
            for_each((1..=100).collect(), |i: usize| {
                sum.fetch_add(i, Ordering::Relaxed);
            })
        });
        assert_eq!(sum.load(Ordering::Relaxed), 5050);
    }

    #[test]
    fn concurrent_and_nested_runs_finish() {
        // runs from several threads at once share one pool, and a part may
        // start a run of its own: every one must finish, each item once
        let pool = ThreadPool::new(2);
        let sum = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..50 {
                        pool.run(|| {
                            for_each((1..=10).collect(), |i: usize| {
                                let inner = pool.run(|| {
                                    let part = AtomicUsize::new(0);
                                    for_each(vec![i, i], |v| {
                                        part.fetch_add(v, Ordering::Relaxed);
                                    });
                                    part.load(Ordering::Relaxed)
                                });
                                sum.fetch_add(inner, Ordering::Relaxed);
                            })
                        });
                    }
                });
            }
        });
        assert_eq!(sum.load(Ordering::Relaxed), 4 * 50 * 2 * 55);
    }
}
