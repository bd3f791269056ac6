//! Winograd F(4x4, 3x3): a 3x3, stride-1 convolution computed on 6x6 input
//! tiles that each give a 4x4 block of output, with 36 multiplications per
//! tile and channel pair where the direct form needs 144.
//!
//! Each output block is `Aᵀ [Σ_c (G g Gᵀ) ⊙ (Bᵀ d B)] A`. For each of the 36
//! positions ξ of a transformed tile, the sum over input channels is a matrix
//! product: V_ξ (tiles x C) times U_ξ (C x M). So a run
//! 1. transforms every input tile (`Bᵀ d B`) into V, tile-major,
//! 2. multiplies the 36 V_ξ by the filters U_ξ, which [`Winograd3x3::new`]
//!    transformed (in f64) and packed for the GEMM once,
//! 3. transforms the products back (`Aᵀ m A`) into the output planes and
//!    applies the epilogue (bias, addend, activation) to each group of
//!    channels while it is in cache.
//!
//! The transforms work on 16 channels at a time, one vector lane each, and
//! are compiled per instruction set (`widest_isa!`). Each step splits across
//! the session's threads by tiles, by ξ or by output channels: never along a
//! sum, so the bits do not depend on the thread count.

use crate::depthwise::Plane2d;
use crate::gemm::{apply_epilogue, run_blocks, Epilogue, GemmError, Lhs, MatRef, PackedB};
use crate::parallel;
use crate::vmath::widest_isa;

/// Channels a transform handles at once (one AVX-512 vector of f32).
const LANES: usize = 16;
/// Positions of a transformed 6x6 tile.
const POS: usize = 36;
/// Output rows and columns per tile.
const OUT: usize = 4;

type Lanes = [f32; LANES];

/// `G`, the filter transform (6x3), for the points 0, ±1, ±2 and infinity.
const G: [[f64; 3]; 6] = [
    [1.0 / 4.0, 0.0, 0.0],
    [-1.0 / 6.0, -1.0 / 6.0, -1.0 / 6.0],
    [-1.0 / 6.0, 1.0 / 6.0, -1.0 / 6.0],
    [1.0 / 24.0, 1.0 / 12.0, 1.0 / 6.0],
    [1.0 / 24.0, -1.0 / 12.0, 1.0 / 6.0],
    [0.0, 0.0, 1.0],
];

/// A 3x3 filter bank (`m` output channels, `c` input channels) transformed
/// for Winograd F(4x4, 3x3) and packed: one `c x m` matrix per position.
#[derive(Clone, Debug)]
pub struct Winograd3x3 {
    m: usize,
    c: usize,
    u: Vec<PackedB>,
}

impl Winograd3x3 {
    /// Transforms `w`, `m x c x 3 x 3` weights in row-major order.
    pub fn new(w: &[f32], m: usize, c: usize) -> Result<Self, GemmError> {
        let want = m.checked_mul(c).and_then(|v| v.checked_mul(9));
        if want != Some(w.len()) || m == 0 || c == 0 {
            return Err(GemmError(format!(
                "{} weights do not make {m} filters of {c} 3x3 channels",
                w.len()
            )));
        }
        let mut u = vec![vec![0.0f32; c * m]; POS];
        for (f, g) in w.chunks_exact(9).enumerate() {
            let (mo, ci) = (f / c, f % c);
            // G g, then (G g) Gᵀ
            let mut gg = [[0.0f64; 3]; 6];
            for (row, gr) in gg.iter_mut().zip(&G) {
                for (j, v) in row.iter_mut().enumerate() {
                    *v = (0..3).map(|k| gr[k] * f64::from(g[k * 3 + j])).sum();
                }
            }
            for (i, row) in gg.iter().enumerate() {
                for (j, gc) in G.iter().enumerate() {
                    let v: f64 = (0..3).map(|k| row[k] * gc[k]).sum();
                    u[i * 6 + j][ci * m + mo] = v as f32;
                }
            }
        }
        let u = u
            .iter()
            .map(|ux| MatRef::row_major(ux, c, m).map(PackedB::new))
            .collect::<Result<_, _>>()?;
        Ok(Winograd3x3 { m, c, u })
    }

    /// Output channels.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Input channels.
    pub fn c(&self) -> usize {
        self.c
    }

    /// Whether `p` is a geometry this transform computes, and with profit: a
    /// 3x3 kernel, unit strides and dilations, padding under the kernel's
    /// size, and enough tiles to amortise reading the transformed filters
    /// (four times the size of the plain ones) once per position.
    pub fn fits(p: &Plane2d) -> bool {
        const MIN_TILES: usize = 12;
        p.out_h.div_ceil(OUT) * p.out_w.div_ceil(OUT) >= MIN_TILES
            && p.kernel == [3, 3]
            && p.strides == [1, 1]
            && p.dilations == [1, 1]
            && p.pads[0] < 3
            && p.pads[1] < 3
    }

    /// One image: `x` holds `c` input planes (`in_h x in_w`), `out` receives
    /// `m` output planes (`out_h x out_w`), then `epi` is applied with output
    /// channels as rows and positions as columns.
    pub fn conv(
        &self,
        p: &Plane2d,
        x: &[f32],
        out: &mut [f32],
        epi: &Epilogue,
    ) -> Result<(), GemmError> {
        let (m, c) = (self.m, self.c);
        let (in_plane, plane) = (p.in_h * p.in_w, p.out_h * p.out_w);
        if !Self::fits(p) {
            return Err(GemmError(
                "Winograd 3x3 needs a 3x3 kernel with unit strides and dilations".into(),
            ));
        }
        if x.len() < c * in_plane || out.len() < m * plane {
            return Err(GemmError(format!(
                "Winograd 3x3 got {} input and {} output values for {c} and {m} planes",
                x.len(),
                out.len()
            )));
        }
        epi.check(m, plane)?;
        let tiles = Tiles {
            across: p.out_w.div_ceil(OUT),
            count: p.out_h.div_ceil(OUT) * p.out_w.div_ceil(OUT),
        };
        let threads = parallel::current_threads();

        // 1. input tiles, transformed: V[t][ξ][c]
        let mut v = vec![0.0f32; tiles.count * POS * c];
        let per = tiles.count.div_ceil(threads);
        let parts: Vec<(usize, &mut [f32])> = v
            .chunks_mut(per * POS * c)
            .enumerate()
            .map(|(i, s)| (i * per, s))
            .collect();
        parallel::for_each(parts, |(t0, dst)| {
            transform_inputs(p, x, c, tiles.across, t0, dst)
        });

        // 2. per position ξ: M_ξ (tiles x m) = V_ξ (tiles x c) U_ξ (c x m)
        let mut prod = vec![0.0f32; POS * tiles.count * m];
        let items: Vec<(usize, &mut [f32])> =
            prod.chunks_mut(tiles.count * m).enumerate().collect();
        let v = &v;
        let none = Epilogue::default();
        parallel::for_each(items, |(xi, dst)| {
            // rows of V_ξ are POS * c apart; the view lies inside v
            if let Ok(a) = MatRef::new(&v[xi * c..], tiles.count, c, POS * c, 1) {
                run_blocks(Lhs::View(a), &self.u[xi], dst, m, false, &none);
            }
        });

        // 3. back to output planes, LANES channels at a time, then the epilogue
        let prod = &prod;
        let groups: Vec<(usize, &mut [f32])> = out[..m * plane]
            .chunks_mut(LANES * plane)
            .enumerate()
            .map(|(g, o)| (g * LANES, o))
            .collect();
        parallel::for_each(groups, |(m0, o)| {
            let lanes = LANES.min(m - m0);
            transform_outputs(p, prod, m, m0, lanes, tiles, o);
            apply_epilogue(&epi.rows(m0, lanes), o, plane, 0, lanes, 0, plane);
        });
        Ok(())
    }
}

/// How the output is cut into 4x4 tiles.
#[derive(Clone, Copy)]
struct Tiles {
    /// Tiles per row of output.
    across: usize,
    count: usize,
}

widest_isa! {
    /// Transforms the input tiles `t0..` (as many as `dst` holds) of the
    /// `c` planes of `x` into `dst`, laid out `[tile][ξ][channel]`.
    fn transform_inputs => transform_inputs_body(
        p: &Plane2d, x: &[f32], c: usize, across: usize, t0: usize, dst: &mut [f32]
    )
}

#[inline(always)]
fn transform_inputs_body(
    p: &Plane2d,
    x: &[f32],
    c: usize,
    across: usize,
    t0: usize,
    dst: &mut [f32],
) {
    let in_plane = p.in_h * p.in_w;
    for (i, tile) in dst.chunks_exact_mut(POS * c).enumerate() {
        let t = t0 + i;
        // the tile's top-left input position (may lie in the padding)
        let y0 = ((t / across) * OUT) as isize - p.pads[0] as isize;
        let x0 = ((t % across) * OUT) as isize - p.pads[1] as isize;
        // the rows and columns of the 6x6 window inside the image
        let rows = clip(y0, p.in_h);
        let cols = clip(x0, p.in_w);
        for c0 in (0..c).step_by(LANES) {
            let lanes = LANES.min(c - c0);
            let mut d = [[0.0f32; LANES]; POS];
            for l in 0..lanes {
                let plane = &x[(c0 + l) * in_plane..][..in_plane];
                for r in rows.clone() {
                    let src = &plane[(y0 + r as isize) as usize * p.in_w..][..p.in_w];
                    for q in cols.clone() {
                        d[r * 6 + q][l] = src[(x0 + q as isize) as usize];
                    }
                }
            }
            let mut tmp = [[0.0f32; LANES]; POS];
            for j in 0..6 {
                input_1d(&d, &mut tmp, [j, 6 + j, 12 + j, 18 + j, 24 + j, 30 + j]);
            }
            for i in 0..6 {
                let row = [6 * i, 6 * i + 1, 6 * i + 2, 6 * i + 3, 6 * i + 4, 6 * i + 5];
                input_1d(&tmp, &mut d, row);
            }
            for (xi, vals) in d.iter().enumerate() {
                tile[xi * c + c0..][..lanes].copy_from_slice(&vals[..lanes]);
            }
        }
    }
}

/// The offsets `0..6` of a window starting at `start` that lie in `0..size`.
fn clip(start: isize, size: usize) -> std::ops::Range<usize> {
    let lo = (-start).clamp(0, 6) as usize;
    let hi = (size as isize - start).clamp(0, 6) as usize;
    lo..hi.max(lo)
}

/// `Bᵀ` applied to the six vectors of `s` at `at`, into `d` at `at`.
#[inline(always)]
fn input_1d(s: &[Lanes; POS], d: &mut [Lanes; POS], at: [usize; 6]) {
    for l in 0..LANES {
        let [v0, v1, v2, v3, v4, v5] = at.map(|i| s[i][l]);
        d[at[0]][l] = 4.0 * v0 - 5.0 * v2 + v4;
        d[at[1]][l] = -4.0 * (v1 + v2) + v3 + v4;
        d[at[2]][l] = 4.0 * (v1 - v2) - v3 + v4;
        d[at[3]][l] = 2.0 * (v3 - v1) - v2 + v4;
        d[at[4]][l] = 2.0 * (v1 - v3) - v2 + v4;
        d[at[5]][l] = 4.0 * v1 - 5.0 * v3 + v5;
    }
}

/// `Aᵀ` applied to the six vectors of `s` at `at`, into the four of `d` at `to`.
#[inline(always)]
fn output_1d(s: &[Lanes; POS], at: [usize; 6], d: &mut [Lanes; POS], to: [usize; 4]) {
    for l in 0..LANES {
        let [v0, v1, v2, v3, v4, v5] = at.map(|i| s[i][l]);
        let (s12, d12, s34, d34) = (v1 + v2, v1 - v2, v3 + v4, v3 - v4);
        d[to[0]][l] = v0 + s12 + s34;
        d[to[1]][l] = d12 + 2.0 * d34;
        d[to[2]][l] = s12 + 4.0 * s34;
        d[to[3]][l] = d12 + 8.0 * d34 + v5;
    }
}

widest_isa! {
    /// Transforms the products of output channels `m0..m0 + lanes` back into
    /// their planes `o` (`prod` is laid out `[ξ][tile][channel]`).
    fn transform_outputs => transform_outputs_body(
        p: &Plane2d, prod: &[f32], m: usize, m0: usize, lanes: usize, tiles: Tiles, o: &mut [f32]
    )
}

#[inline(always)]
fn transform_outputs_body(
    p: &Plane2d,
    prod: &[f32],
    m: usize,
    m0: usize,
    lanes: usize,
    tiles: Tiles,
    o: &mut [f32],
) {
    let plane = p.out_h * p.out_w;
    let stride = tiles.count * m;
    for t in 0..tiles.count {
        let mut s = [[0.0f32; LANES]; POS];
        for (xi, vals) in s.iter_mut().enumerate() {
            vals[..lanes].copy_from_slice(&prod[xi * stride + t * m + m0..][..lanes]);
        }
        // rows first (6x6 -> 4x6, rows 0..4 of tmp), then columns (4x6 -> 4x4)
        let mut tmp = [[0.0f32; LANES]; POS];
        for j in 0..6 {
            output_1d(
                &s,
                [j, 6 + j, 12 + j, 18 + j, 24 + j, 30 + j],
                &mut tmp,
                [j, 6 + j, 12 + j, 18 + j],
            );
        }
        for i in 0..OUT {
            let row = [6 * i, 6 * i + 1, 6 * i + 2, 6 * i + 3, 6 * i + 4, 6 * i + 5];
            output_1d(&tmp, row, &mut s, [4 * i, 4 * i + 1, 4 * i + 2, 4 * i + 3]);
        }
        let (oy, ox) = ((t / tiles.across) * OUT, (t % tiles.across) * OUT);
        let (h, w) = (OUT.min(p.out_h - oy), OUT.min(p.out_w - ox));
        for l in 0..lanes {
            let dst = &mut o[l * plane..][..plane];
            for i in 0..h {
                let row = &mut dst[(oy + i) * p.out_w + ox..][..w];
                for (j, v) in row.iter_mut().enumerate() {
                    *v = s[4 * i + j][l];
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Act, ThreadPool};

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..n)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    /// The direct 3x3 convolution in f64, with bias, addend and ReLU.
    fn direct(
        p: &Plane2d,
        x: &[f32],
        w: &[f32],
        m: usize,
        c: usize,
        bias: &[f32],
        z: &[f32],
    ) -> Vec<f64> {
        let plane = p.out_h * p.out_w;
        let mut out = vec![0.0f64; m * plane];
        for mo in 0..m {
            for oy in 0..p.out_h {
                for ox in 0..p.out_w {
                    let mut s = f64::from(bias[mo]);
                    for ci in 0..c {
                        for ky in 0..3 {
                            for kx in 0..3 {
                                let iy = (oy + ky) as isize - p.pads[0] as isize;
                                let ix = (ox + kx) as isize - p.pads[1] as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= p.in_h as isize
                                    || ix >= p.in_w as isize
                                {
                                    continue;
                                }
                                let xv =
                                    x[ci * p.in_h * p.in_w + iy as usize * p.in_w + ix as usize];
                                s +=
                                    f64::from(xv) * f64::from(w[((mo * c + ci) * 3 + ky) * 3 + kx]);
                            }
                        }
                    }
                    let i = mo * plane + oy * p.out_w + ox;
                    out[i] = (s + f64::from(z[i])).max(0.0);
                }
            }
        }
        out
    }

    fn geometry(in_h: usize, in_w: usize, pad: [usize; 2], end: [usize; 2]) -> Plane2d {
        Plane2d {
            in_h,
            in_w,
            out_h: in_h + pad[0] + end[0] - 2,
            out_w: in_w + pad[1] + end[1] - 2,
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: pad,
        }
    }

    fn run(p: &Plane2d, m: usize, c: usize, threads: usize, seed: u64) -> (Vec<f32>, Vec<f64>) {
        let x = values(c * p.in_h * p.in_w, seed);
        let w = values(m * c * 9, seed + 1);
        let bias = values(m, seed + 2);
        let z = values(m * p.out_h * p.out_w, seed + 3);
        let f = Winograd3x3::new(&w, m, c).unwrap();
        let mut out = vec![f32::NAN; m * p.out_h * p.out_w];
        let epi = Epilogue {
            row_bias: Some(&bias),
            col_bias: None,
            addend: Some(MatRef::row_major(&z, m, p.out_h * p.out_w).unwrap()),
            act: Act::Relu,
        };
        ThreadPool::new(threads).run(|| f.conv(p, &x, &mut out, &epi).unwrap());
        (out, direct(p, &x, &w, m, c, &bias, &z))
    }

    #[test]
    fn matches_direct_conv_within_1e_4() {
        // (in_h, in_w, pads begin, pads end, m, c): tails of tiles and of
        // channel lanes, no padding, asymmetric padding, ResNet-like sizes
        let cases = [
            (16, 12, [1, 1], [1, 1], 16, 16),
            (15, 9, [1, 0], [1, 2], 5, 3),
            (14, 14, [1, 1], [1, 1], 33, 40),
            (18, 14, [0, 0], [0, 0], 17, 18),
            (13, 9, [2, 2], [2, 2], 2, 1),
            (13, 10, [0, 1], [2, 0], 20, 70),
        ];
        for (i, &(h, w, pad, end, m, c)) in cases.iter().enumerate() {
            let p = geometry(h, w, pad, end);
            let (got, want) = run(&p, m, c, 1, i as u64 * 10 + 1);
            // relative to the largest output (ReLU zeroes some)
            let scale = want.iter().fold(1.0f64, |a, &b| a.max(b.abs()));
            for (k, (&g, &r)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (f64::from(g) - r).abs() <= 1e-4 * scale,
                    "case {i} value {k}: {g} vs {r}"
                );
            }
        }
    }

    #[test]
    fn threads_give_the_same_bits() {
        let p = geometry(20, 17, [1, 1], [1, 1]);
        let one = run(&p, 40, 24, 1, 7).0;
        for threads in [2, 3] {
            assert_eq!(
                run(&p, 40, 24, threads, 7)
                    .0
                    .iter()
                    .map(|v| v.to_bits())
                    .collect::<Vec<_>>(),
                one.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
        }
    }

    #[test]
    fn bad_sizes_are_errors() {
        assert!(Winograd3x3::new(&[0.0; 17], 2, 1).is_err());
        let f = Winograd3x3::new(&[0.0; 18], 2, 1).unwrap();
        let none = Epilogue::default();
        let mut p = geometry(16, 12, [1, 1], [1, 1]);
        let mut out = vec![0.0; 2 * 16 * 12];
        assert!(f.conv(&p, &[0.0; 191], &mut out, &none).is_err());
        assert!(f.conv(&p, &[0.0; 192], &mut out, &none).is_ok());
        p.strides = [2, 2];
        assert!(f.conv(&p, &[0.0; 192], &mut out, &none).is_err());
        // too few tiles to pay
        assert!(!Winograd3x3::fits(&geometry(7, 7, [1, 1], [1, 1])));
    }
}
