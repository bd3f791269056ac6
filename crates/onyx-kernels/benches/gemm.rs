//! GEMM micro-benchmark: `cargo bench -p onyx-kernels --bench gemm`.
//!
//! Times `C = A B` for square sizes (B packed once, as a weight is) on one
//! thread and prints GFLOP/s (2 n^3 flops per product) for the best and the
//! median of several runs. Extra arguments are sizes (default 1024 2048);
//! `ONYX_ISA=avx2` or `portable` times a slower path.

use std::time::Instant;

use onyx_kernels::{sgemm, Epilogue, Isa, MatRef, PackedB};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    if sizes.is_empty() {
        sizes = vec![1024, 2048];
    }
    println!("isa: {}", Isa::detect().name());
    for n in sizes {
        let a: Vec<f32> = (0..n * n).map(|i| ((i % 17) as f32 - 8.0) / 8.0).collect();
        let b: Vec<f32> = (0..n * n).map(|i| ((i % 13) as f32 - 6.0) / 6.0).collect();
        let mut c = vec![0.0f32; n * n];
        let am = MatRef::row_major(&a, n, n).expect("A fits");
        let packed = PackedB::new(MatRef::row_major(&b, n, n).expect("B fits"));
        let runs = if n <= 1024 { 10 } else { 4 };
        let mut secs = Vec::new();
        for _ in 0..runs + 1 {
            let t = Instant::now();
            sgemm(am, &packed, &mut c, n, false, &Epilogue::default()).expect("sizes fit");
            secs.push(t.elapsed().as_secs_f64());
        }
        secs.remove(0); // warm-up
        secs.sort_by(f64::total_cmp);
        let flops = 2.0 * (n as f64).powi(3);
        println!(
            "sgemm {n}x{n}x{n}: best {:.1} GFLOP/s, median {:.1} GFLOP/s ({} runs, 1 thread)",
            flops / secs[0] / 1e9,
            flops / secs[secs.len() / 2] / 1e9,
            secs.len()
        );
        std::hint::black_box(&c);
    }
}
