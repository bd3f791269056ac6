//! 3x3 stride-1 convolution micro-benchmark:
//! `cargo bench -p onyx-kernels --bench conv3x3`.
//!
//! For ResNet-50's 3x3 stride-1 layer shapes (padding 1, batch 1) times
//! Winograd F(4x4, 3x3) against im2col packed into the GEMM, on one thread,
//! and prints the best of several runs with the effective GFLOP/s (the
//! direct convolution's 2 * 9 * C * M * H * W flops).

use std::time::Instant;

use onyx_kernels::{sgemm, Epilogue, MatRef, PackedB, Plane2d, Winograd3x3};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn best_secs(runs: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

fn main() {
    for (side, ch) in [(56usize, 64usize), (28, 128), (14, 256), (7, 512)] {
        let (c, m, plane) = (ch, ch, side * side);
        let x: Vec<f32> = (0..c * plane)
            .map(|i| ((i % 23) as f32 - 11.0) / 11.0)
            .collect();
        let w: Vec<f32> = (0..m * c * 9)
            .map(|i| ((i % 19) as f32 - 9.0) / 90.0)
            .collect();
        let mut out = vec![0.0f32; m * plane];
        let p = Plane2d {
            in_h: side,
            in_w: side,
            out_h: side,
            out_w: side,
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [1, 1],
        };
        let flops = 2.0 * 9.0 * (c * m * plane) as f64;
        let wino = Winograd3x3::new(&w, m, c).expect("weights fit");
        let epi = Epilogue::default();
        let t_wino = if Winograd3x3::fits(&p) {
            best_secs(10, || wino.conv(&p, &x, &mut out, &epi).expect("fits"))
        } else {
            f64::NAN // too few tiles: convolutions do not take this path
        };
        let a = MatRef::row_major(&w, m, c * 9).expect("fits");
        let mut packed = PackedB::new(MatRef::row_major(&[], 0, 0).expect("fits"));
        let t_gemm = best_secs(10, || {
            packed.repack_with(c * 9, plane, |r, j0, dst| {
                let (ci, ky, kx) = (r / 9, r / 3 % 3, r % 3);
                for (j, v) in dst.iter_mut().enumerate() {
                    let (oy, ox) = ((j0 + j) / side, (j0 + j) % side);
                    let (iy, ix) = ((oy + ky) as isize - 1, (ox + kx) as isize - 1);
                    let inside =
                        (0..side as isize).contains(&iy) && (0..side as isize).contains(&ix);
                    *v = if inside {
                        x[ci * plane + iy as usize * side + ix as usize]
                    } else {
                        0.0
                    };
                }
            });
            sgemm(a, &packed, &mut out, plane, false, &epi).expect("fits");
        });
        println!(
            "{side}x{side} C=M={ch}: winograd {:.3} ms ({:.0} GFLOP/s eff), im2col+gemm {:.3} ms ({:.0} GFLOP/s)",
            t_wino * 1e3,
            flops / t_wino / 1e9,
            t_gemm * 1e3,
            flops / t_gemm / 1e9
        );
    }
}
