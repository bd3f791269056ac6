//! Direct 2-D convolution of one channel plane by its own small kernel (a
//! depthwise convolution's inner loop), without im2col.
//!
//! For each output row and each kernel tap, the output positions whose input
//! lies inside the image form one contiguous run; the run is a scaled add of
//! an input row (contiguous at stride 1), which the compiler vectorises. The
//! same loop is compiled for AVX-512, AVX2 and plain x86-64 and chosen at
//! run time. With a column stride `s > 1` the plane is first rearranged so
//! that each row holds its `s` phases one after another (columns `r`,
//! `r + s`, `r + 2s`...): every run then reads contiguous input too.

use crate::Isa;

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
    /// Output positions `o` (of `out`) whose input `o * stride + tap - pad`
    /// lies in `0..size`, as a range.
    fn inside(out: usize, stride: usize, tap: usize, pad: usize, size: usize) -> (usize, usize) {
        // o * stride + tap >= pad, and o * stride + tap < pad + size
        let lo = pad.saturating_sub(tap).div_ceil(stride);
        let hi = (pad + size).saturating_sub(tap).div_ceil(stride);
        (lo.min(out), hi.min(out).max(lo.min(out)))
    }
}

/// `out += conv(x, w)` for one plane: `x` is `in_h x in_w`, `w` is
/// `kernel[0] x kernel[1]`, `out` is `out_h x out_w`, all row-major.
///
/// # Panics
/// If a slice is smaller than the geometry says (callers check the shapes).
pub fn depthwise_plane(p: &Plane2d, x: &[f32], w: &[f32], out: &mut [f32]) {
    assert!(
        x.len() >= p.in_h * p.in_w
            && w.len() >= p.kernel[0] * p.kernel[1]
            && out.len() >= p.out_h * p.out_w
            && p.strides[0] > 0
            && p.strides[1] > 0,
        "depthwise plane called with sizes that do not fit"
    );
    match Isa::detect() {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` found AVX-512F on this CPU; the body is safe code.
        Isa::Avx512 => unsafe { plane_avx512(p, x, w, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: `detect` found AVX2 and FMA on this CPU; the body is safe code.
        Isa::Avx2 => unsafe { plane_avx2(p, x, w, out) },
        _ => plane_body(p, x, w, out),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn plane_avx512(p: &Plane2d, x: &[f32], w: &[f32], out: &mut [f32]) {
    plane_body(p, x, w, out)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn plane_avx2(p: &Plane2d, x: &[f32], w: &[f32], out: &mut [f32]) {
    plane_body(p, x, w, out)
}

#[inline(always)]
fn plane_body(p: &Plane2d, x: &[f32], w: &[f32], out: &mut [f32]) {
    let [kh, kw] = p.kernel;
    let [sh, sw] = p.strides;
    let [dh, dw] = p.dilations;
    // per kernel column: the run of output columns that read inside the row
    let cols: Vec<(usize, usize)> = (0..kw)
        .map(|kx| Plane2d::inside(p.out_w, sw, kx * dw, p.pads[1], p.in_w))
        .collect();
    // where phase r starts in a rearranged row: after the phases before it
    let phase_start: Vec<usize> = (0..sw)
        .scan(0, |at, r| {
            let start = *at;
            *at += p.in_w.saturating_sub(r).div_ceil(sw);
            Some(start)
        })
        .collect();
    let mut phased = Vec::new();
    let x = if sw == 1 {
        x
    } else {
        phased.resize(p.in_h * p.in_w, 0.0);
        for (row, dst) in x.chunks_exact(p.in_w).zip(phased.chunks_exact_mut(p.in_w)) {
            for (r, &start) in phase_start.iter().enumerate() {
                let src = row.iter().skip(r).step_by(sw);
                dst[start..].iter_mut().zip(src).for_each(|(d, &v)| *d = v);
            }
        }
        &phased
    };
    for oy in 0..p.out_h {
        let orow = &mut out[oy * p.out_w..(oy + 1) * p.out_w];
        for ky in 0..kh {
            let iy = (oy * sh + ky * dh) as isize - p.pads[0] as isize;
            if iy < 0 || iy >= p.in_h as isize {
                continue;
            }
            let irow = &x[iy as usize * p.in_w..(iy as usize + 1) * p.in_w];
            for (kx, &(lo, hi)) in cols.iter().enumerate() {
                if lo >= hi {
                    continue;
                }
                let wv = w[ky * kw + kx];
                // input column of output column `lo`
                let first = lo * sw + kx * dw - p.pads[1];
                let dst = &mut orow[lo..hi];
                // columns first, first + sw, ...: one run of phase first % sw
                let src = &irow[phase_start[first % sw] + first / sw..][..dst.len()];
                for (o, &v) in dst.iter_mut().zip(src) {
                    *o += wv * v;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            ([3, 3], [1, 1], [1, 1], [4, 4], (2, 2)),
        ];
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
            let x: Vec<f32> = (0..in_h * in_w).map(|i| (i % 7) as f32 - 3.0).collect();
            let w: Vec<f32> = (0..kernel[0] * kernel[1])
                .map(|i| (i % 5) as f32 * 0.5)
                .collect();
            let mut got = vec![0.0f32; out_h * out_w];
            depthwise_plane(&p, &x, &w, &mut got);
            // small integers and halves: every order of summing is exact
            assert_eq!(got, reference(&p, &x, &w), "{p:?}");
        }
    }
}
