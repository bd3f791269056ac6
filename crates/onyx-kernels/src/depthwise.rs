//! Depthwise 2-D convolution: every channel plane convolved with its own
//! small kernel, without im2col.
//!
//! The zero-padded input plane is split into its `sh x sw` stride phases
//! (phase `(r, c)` holds padded rows `r, r + sh, ...` and columns `c, c + sw,
//! ...`), each a small row-major grid `wq` columns wide. In a phase, output
//! position `(oy, ox)` and tap `(ky, kx)` read element `(oy + ky*dh/sh, ox +
//! kx*dw/sw)`: a fixed offset from `oy * wq + ox`. So the output is computed
//! "wide", `wq` columns per row (the last `wq - out_w` are thrown away), and
//! each tap is one long scaled add of a contiguous run of its phase, which
//! vectorises at full width however narrow the plane (7x7 planes included).
//! Bias and activation are applied while a block of output is in L1. The
//! same loop is compiled for AVX-512, AVX2 (both with FMA) and plain x86-64
//! and chosen at run time.

use crate::gemm::Act;
use crate::{parallel, Isa};

/// The geometry of one plane's convolution (2-D, NCHW).
#[derive(Clone, Copy, Debug)]
pub struct Plane2d {
    pub in_h: usize,
    pub in_w: usize,
    pub out_h: usize,
    pub out_w: usize,
    pub kernel: [usize; 2],
    pub strides: [usize; 2],
    pub dilations: [usize; 2],
    /// Padding before the first row and column.
    pub pads: [usize; 2],
}

impl Plane2d {
    fn in_plane(&self) -> usize {
        self.in_h * self.in_w
    }

    fn out_plane(&self) -> usize {
        self.out_h * self.out_w
    }
}

/// Where each tap reads in the phase layout of one plane's geometry.
struct Phases {
    /// Rows and columns of one phase grid (one spare row past the last, so
    /// that the wide output's thrown-away columns read inside the grid).
    hq: usize,
    wq: usize,
    /// Per tap (row-major over the kernel): the phase it reads and its
    /// offset from the output position in that phase's grid.
    taps: Vec<(usize, usize)>,
    /// Whether any tap reads phase `i` (row phase `i / sw`, column `i % sw`).
    used: Vec<bool>,
}

impl Phases {
    fn new(p: &Plane2d) -> Phases {
        let [kh, kw] = p.kernel;
        let [sh, sw] = p.strides;
        let [dh, dw] = p.dilations;
        let wq = p.out_w + (kw - 1) * dw / sw;
        let hq = p.out_h + (kh - 1) * dh / sh + 1;
        let mut used = vec![false; sh * sw];
        let mut taps = Vec::with_capacity(kh * kw);
        for ky in 0..kh {
            for kx in 0..kw {
                let (ay, ax) = (ky * dh, kx * dw);
                let phase = (ay % sh) * sw + ax % sw;
                used[phase] = true;
                taps.push((phase, (ay / sh) * wq + ax / sw));
            }
        }
        Phases { hq, wq, taps, used }
    }

    fn grid(&self) -> usize {
        self.hq * self.wq
    }

    /// Fills the used phase grids from one input plane `x`, zero outside it.
    fn fill(&self, p: &Plane2d, x: &[f32], grids: &mut [f32]) {
        let [sh, sw] = p.strides;
        let (hq, wq) = (self.hq, self.wq);
        for (i, grid) in grids.chunks_exact_mut(self.grid()).enumerate() {
            if !self.used[i] {
                continue;
            }
            let (pr, pc) = (i / sw, i % sw);
            // grid column q reads input column q * sw + pc - pad
            let first = |size: usize, s: usize, ph: usize, pad: usize, n: usize| {
                (
                    pad.saturating_sub(ph).div_ceil(s).min(n),
                    (pad + size).saturating_sub(ph).div_ceil(s).min(n),
                )
            };
            let (c_lo, c_hi) = first(p.in_w, sw, pc, p.pads[1], wq);
            let (r_lo, r_hi) = first(p.in_h, sh, pr, p.pads[0], hq);
            for (qr, row) in grid.chunks_exact_mut(wq).enumerate() {
                if qr < r_lo || qr >= r_hi || c_lo >= c_hi {
                    row.fill(0.0);
                    continue;
                }
                let iy = qr * sh + pr - p.pads[0];
                let irow = &x[iy * p.in_w..(iy + 1) * p.in_w];
                row[..c_lo].fill(0.0);
                row[c_hi..].fill(0.0);
                let x0 = c_lo * sw + pc - p.pads[1];
                let dst = &mut row[c_lo..c_hi];
                if sw == 1 {
                    dst.copy_from_slice(&irow[x0..x0 + dst.len()]);
                } else {
                    let src = irow[x0..].iter().step_by(sw);
                    dst.iter_mut().zip(src).for_each(|(d, &v)| *d = v);
                }
            }
        }
    }
}

/// Wide output values computed per block: a block and a row of each tap's
/// run stay in L1.
const BLOCK: usize = 1024;

/// `out = act(conv(x, w) + bias)` for every plane: `x` holds the input
/// planes (`in_h x in_w` each), `out` the output planes (`out_h x out_w`),
/// and plane `i` is convolved with kernel `i % channels` of `w`
/// (`kernel[0] x kernel[1]` values each, row-major) and gets bias `i %
/// channels`. Planes are split across the running session's threads.
///
/// # Panics
/// If a slice is smaller than the geometry says, or a stride is zero
/// (callers check the shapes).
pub fn depthwise(
    p: &Plane2d,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    out: &mut [f32],
) {
    let kprod = p.kernel[0] * p.kernel[1];
    let planes = out.len().checked_div(p.out_plane()).unwrap_or(0);
    assert!(
        p.strides[0] > 0
            && p.strides[1] > 0
            && p.dilations[0] > 0
            && p.dilations[1] > 0
            && kprod > 0
            && channels > 0
            && x.len() >= planes * p.in_plane()
            && w.len() >= channels * kprod
            && bias.is_none_or(|b| b.len() >= channels),
        "depthwise convolution called with sizes that do not fit"
    );
    if planes == 0 {
        return;
    }
    run_planes(Isa::detect(), p, channels, x, w, bias, act, out)
}

/// [`depthwise`] on the path `isa` (which this CPU runs), sizes checked.
#[allow(clippy::too_many_arguments)]
fn run_planes(
    isa: Isa,
    p: &Plane2d,
    channels: usize,
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    act: Act,
    out: &mut [f32],
) {
    let kprod = p.kernel[0] * p.kernel[1];
    let planes = out.len() / p.out_plane();
    let ph = Phases::new(p);
    let threads = parallel::current_threads();
    // a part per thread, unless the planes are too small to be worth it
    let parts = if planes * p.out_plane() * kprod < 1 << 14 {
        1
    } else {
        threads
    };
    let work: Vec<(usize, &mut [f32])> = parallel::split_range(planes, 1, parts)
        .into_iter()
        .scan(out, |rest, r| {
            let (mine, tail) = std::mem::take(rest).split_at_mut(r.len() * p.out_plane());
            *rest = tail;
            Some((r.start, mine))
        })
        .collect();
    parallel::for_each(work, |(first, out)| {
        let mut grids = vec![0.0f32; ph.grid() * p.strides[0] * p.strides[1]];
        let mut acc = vec![0.0f32; BLOCK.max(ph.wq)];
        for (j, o) in out.chunks_exact_mut(p.out_plane()).enumerate() {
            let i = first + j;
            let ch = i % channels;
            ph.fill(p, &x[i * p.in_plane()..(i + 1) * p.in_plane()], &mut grids);
            let plane = Plane {
                ph: &ph,
                grids: &grids,
                w: &w[ch * kprod..(ch + 1) * kprod],
                bias: bias.map_or(0.0, |b| b[ch]),
                act,
            };
            plane.run(isa, p, &mut acc, o);
        }
    });
}

/// One plane's convolution, its input already laid out in phases.
struct Plane<'a> {
    ph: &'a Phases,
    grids: &'a [f32],
    w: &'a [f32],
    bias: f32,
    act: Act,
}

impl Plane<'_> {
    fn run(&self, isa: Isa, p: &Plane2d, acc: &mut [f32], out: &mut [f32]) {
        match isa {
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::detect` found AVX-512F on this CPU; the body is
            // safe code.
            Isa::Avx512 => unsafe { self.run_avx512(p, acc, out) },
            #[cfg(target_arch = "x86_64")]
            // SAFETY: `Isa::detect` found AVX2 and FMA on this CPU; the body
            // is safe code.
            Isa::Avx2 => unsafe { self.run_avx2(p, acc, out) },
            _ => self.body::<false>(p, acc, out),
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f,fma")]
    unsafe fn run_avx512(&self, p: &Plane2d, acc: &mut [f32], out: &mut [f32]) {
        self.body::<true>(p, acc, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2,fma")]
    unsafe fn run_avx2(&self, p: &Plane2d, acc: &mut [f32], out: &mut [f32]) {
        self.body::<true>(p, acc, out)
    }

    /// `FMA`: multiply-adds fused (for paths whose CPU has the instruction;
    /// without it `mul_add` would be a slow library call).
    #[inline(always)]
    fn body<const FMA: bool>(&self, p: &Plane2d, acc: &mut [f32], out: &mut [f32]) {
        let wq = self.ph.wq;
        let grid = self.ph.grid();
        let rows_per_block = (acc.len() / wq).max(1);
        let mut oy = 0;
        while oy < p.out_h {
            let rows = rows_per_block.min(p.out_h - oy);
            let acc = &mut acc[..rows * wq];
            acc.fill(self.bias);
            for (&(phase, off), &wv) in self.ph.taps.iter().zip(self.w) {
                let start = phase * grid + oy * wq + off;
                let src = &self.grids[start..start + acc.len()];
                if FMA {
                    acc.iter_mut()
                        .zip(src)
                        .for_each(|(a, &v)| *a = v.mul_add(wv, *a));
                } else {
                    acc.iter_mut().zip(src).for_each(|(a, &v)| *a += v * wv);
                }
            }
            self.act.apply(acc);
            for (orow, arow) in out[oy * p.out_w..(oy + rows) * p.out_w]
                .chunks_exact_mut(p.out_w)
                .zip(acc.chunks_exact(wq))
            {
                orow.copy_from_slice(&arow[..p.out_w]);
            }
            oy += rows;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ThreadPool;

    /// The plain definition: every output, every tap, bounds checked.
    fn reference(p: &Plane2d, x: &[f32], w: &[f32]) -> Vec<f32> {
        let mut out = vec![0.0f32; p.out_h * p.out_w];
        for oy in 0..p.out_h {
            for ox in 0..p.out_w {
                let mut s = 0.0f32;
                for ky in 0..p.kernel[0] {
                    for kx in 0..p.kernel[1] {
                        let iy =
                            (oy * p.strides[0] + ky * p.dilations[0]) as isize - p.pads[0] as isize;
                        let ix =
                            (ox * p.strides[1] + kx * p.dilations[1]) as isize - p.pads[1] as isize;
                        if (0..p.in_h as isize).contains(&iy) && (0..p.in_w as isize).contains(&ix)
                        {
                            s += w[ky * p.kernel[1] + kx] * x[iy as usize * p.in_w + ix as usize];
                        }
                    }
                }
                out[oy * p.out_w + ox] = s;
            }
        }
        out
    }

    #[test]
    fn matches_the_definition() {
        // kernel, stride, dilation, pads (output sizes follow), input size
        let cases = [
            ([3, 3], [1, 1], [1, 1], [1, 1], (7, 9)),
            ([3, 3], [2, 2], [1, 1], [1, 1], (8, 7)),
            ([3, 3], [2, 2], [1, 1], [0, 0], (9, 10)),
            ([5, 5], [3, 3], [1, 2], [2, 1], (11, 13)),
            ([5, 3], [1, 2], [2, 1], [3, 0], (6, 11)),
            ([1, 1], [1, 1], [1, 1], [0, 0], (3, 4)),
            ([1, 1], [2, 2], [1, 1], [0, 0], (5, 6)),
            ([3, 3], [1, 1], [1, 1], [4, 4], (2, 2)),
            ([3, 3], [1, 1], [1, 1], [1, 1], (40, 37)),
        ];
        let (planes, channels) = (48, 3);
        let pool = ThreadPool::new(3);
        for (kernel, strides, dilations, pads, (in_h, in_w)) in cases {
            let span = |i: usize| (kernel[i] - 1) * dilations[i] + 1;
            let out_h = (in_h + 2 * pads[0] - span(0)) / strides[0] + 1;
            let out_w = (in_w + 2 * pads[1] - span(1)) / strides[1] + 1;
            let p = Plane2d {
                in_h,
                in_w,
                out_h,
                out_w,
                kernel,
                strides,
                dilations,
                pads,
            };
            let kprod = kernel[0] * kernel[1];
            let x: Vec<f32> = (0..planes * in_h * in_w)
                .map(|i| (i % 7) as f32 - 3.0)
                .collect();
            let w: Vec<f32> = (0..channels * kprod)
                .map(|i| (i % 5) as f32 * 0.5 - 0.5)
                .collect();
            let bias = [0.5, -1.0, 2.0];
            let act = Act::Clip(-4.0, 6.0);
            let mut want = Vec::new();
            for (i, xp) in x.chunks_exact(in_h * in_w).enumerate() {
                let ch = i % channels;
                let mut v = reference(&p, xp, &w[ch * kprod..(ch + 1) * kprod]);
                v.iter_mut().for_each(|o| *o += bias[ch]);
                act.apply(&mut v);
                want.extend(v);
            }
            for isa in Isa::all_available() {
                for split in [false, true] {
                    let mut got = vec![f32::NAN; planes * out_h * out_w];
                    let mut run =
                        || run_planes(isa, &p, channels, &x, &w, Some(&bias), act, &mut got);
                    if split {
                        pool.run(run);
                    } else {
                        run();
                    }
                    // small integers and halves: every order of summing is exact
                    assert_eq!(got, want, "{p:?} {isa:?} split {split}");
                }
            }
        }
    }

    #[test]
    fn without_bias_or_activation() {
        let p = Plane2d {
            in_h: 3,
            in_w: 3,
            out_h: 3,
            out_w: 3,
            kernel: [3, 3],
            strides: [1, 1],
            dilations: [1, 1],
            pads: [1, 1],
        };
        let x = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0];
        let mut w = [0.0; 9];
        w[4] = -1.0; // the centre tap: out = -x
        w[8] = 1.0; // bottom right: out(y, x) += x(y + 1, x + 1)
        let mut got = [0.0; 9];
        depthwise(&p, 1, &x, &w, None, Act::None, &mut got);
        assert_eq!(got, [4.0, 4.0, -3.0, 4.0, 4.0, -6.0, -7.0, -8.0, -9.0]);
    }
}
