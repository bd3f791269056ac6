//! Convolutions: Conv, ConvTranspose, ConvInteger, DeformConv, Col2Im and
//! CausalConvWithState.
//!
//! The f32 Conv and FusedConv (`conv_f32`) run a direct kernel for depthwise
//! 2-D convolutions, Winograd F(4x4, 3x3) for 3x3 stride-1 convolutions with
//! a constant weight and enough channels, and onyx-kernels' packed GEMM for
//! the rest, the im2col matrix packed straight into the GEMM's panels. Everything else is computed
//! in f64 through im2col (or col2im for the transposed forms) and a plain
//! matrix product (`gemm_acc`), then converted back to the input's element
//! type; that plain path is also the f32 path's oracle. The window geometry
//! is shared with pooling.

use std::sync::OnceLock;

use onyx_tensor::{numel, strides_of, DType, Tensor, Value};

use super::pool::{from_f64, nc_input, next_index, AutoPad, Geometry, Tap, WindowAttrs};
use super::{
    one, opt_ints_in, opt_tensor_in, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx,
};
use crate::op_err;
use onyx_kernels::{
    depthwise, sgemm, sgemm_packed, Act, Epilogue, MatRef, PackedA, PackedB, Plane2d, Winograd3x3,
};

fn checked_prod(dims: &[usize]) -> OpResult<usize> {
    numel(dims).ok_or_else(|| op_err!("shape {dims:?} is too large"))
}

/// The element types convolutions compute in.
pub(crate) trait Num: num_traits::Float + Default + Send + Sync + 'static {}
impl Num for f32 {}
impl Num for f64 {}

/// `out[m][p] += sum_r w[m][r] * col[r][p]` for an `rows x inner` by
/// `inner x cols` product; output rows are `ostride` apart.
fn gemm_acc<F: Num>(
    out: &mut [F],
    ostride: usize,
    w: &[F],
    col: &[F],
    rows: usize,
    inner: usize,
    cols: usize,
) {
    // four output rows at a time, so each column value is loaded once per four
    let mut m = 0;
    while m + 4 <= rows {
        let (o0, rest) = out[m * ostride..].split_at_mut(ostride);
        let (o1, rest) = rest.split_at_mut(ostride);
        let (o2, rest) = rest.split_at_mut(ostride);
        let o3 = &mut rest[..cols];
        let (o0, o1, o2) = (&mut o0[..cols], &mut o1[..cols], &mut o2[..cols]);
        for r in 0..inner {
            let w0 = w[m * inner + r];
            let w1 = w[(m + 1) * inner + r];
            let w2 = w[(m + 2) * inner + r];
            let w3 = w[(m + 3) * inner + r];
            let c = &col[r * cols..(r + 1) * cols];
            let rows4 = o0.iter_mut().zip(o1.iter_mut()).zip(o2.iter_mut());
            for (((a0, a1), a2), (a3, &cv)) in rows4.zip(o3.iter_mut().zip(c)) {
                *a0 = *a0 + w0 * cv;
                *a1 = *a1 + w1 * cv;
                *a2 = *a2 + w2 * cv;
                *a3 = *a3 + w3 * cv;
            }
        }
        m += 4;
    }
    for m in m..rows {
        let o = &mut out[m * ostride..m * ostride + cols];
        let wr = &w[m * inner..(m + 1) * inner];
        for (r, &wv) in wr.iter().enumerate() {
            if wv == F::zero() {
                continue;
            }
            let c = &col[r * cols..(r + 1) * cols];
            for (ov, &cv) in o.iter_mut().zip(c) {
                *ov = *ov + wv * cv;
            }
        }
    }
}

/// The shapes of a grouped convolution, checked.
struct ConvDims {
    n: usize,
    c: usize,
    m: usize,
    group: usize,
    kprod: usize,
    in_plane: usize,
    out_plane: usize,
}

/// `w` is the weight's shape.
fn conv_dims(
    rc: &RunCtx,
    x: &Tensor,
    w: &[usize],
    group: usize,
    g: &Geometry,
) -> OpResult<ConvDims> {
    let (n, c, sp) = nc_input(x, "convolution")?;
    let m = w[0];
    if w[1].checked_mul(group) != Some(c) {
        return Err(op_err!(
            "weights {w:?} with group {group} do not match {c} input channels"
        ));
    }
    if !m.is_multiple_of(group) {
        return Err(op_err!(
            "{m} output channels cannot be split into {group} groups"
        ));
    }
    let kprod = checked_prod(&g.kernel)?;
    let in_plane = checked_prod(&sp)?;
    let out_plane = g.out_size()?;
    let cg = c / group;
    let col = cg
        .checked_mul(kprod)
        .and_then(|v| v.checked_mul(out_plane))
        .ok_or_else(|| op_err!("convolution work buffer is too large"))?;
    rc.check_alloc(col, 8)?;
    let total = n
        .checked_mul(m)
        .and_then(|v| v.checked_mul(out_plane))
        .ok_or_else(|| op_err!("output is too large"))?;
    rc.check_alloc(total, 8)?;
    Ok(ConvDims {
        n,
        c,
        m,
        group,
        kprod,
        in_plane,
        out_plane,
    })
}

/// Runs a grouped convolution given a function that fills the im2col matrix
/// (`C/group * kprod` rows by `ncols` columns, for output positions
/// `col0..col0+ncols`) for (batch, group). Columns go `chunk` at a time.
fn conv_with_cols<F: Num>(
    d: &ConvDims,
    w: &[F],
    bias: Option<&[F]>,
    chunk: usize,
    mut fill: impl FnMut(usize, usize, usize, usize, &mut [F]),
) -> Vec<F> {
    let cg = d.c / d.group;
    let mg = d.m / d.group;
    let inner = cg * d.kprod;
    let mut out = vec![F::zero(); d.n * d.m * d.out_plane];
    let per = chunk.clamp(1, d.out_plane.max(1));
    let mut col = vec![F::zero(); inner * per];
    for b in 0..d.n {
        for gi in 0..d.group {
            let o0 = (b * d.m + gi * mg) * d.out_plane;
            if let Some(bias) = bias {
                let o = &mut out[o0..o0 + mg * d.out_plane];
                for (mi, row) in o.chunks_mut(d.out_plane.max(1)).enumerate() {
                    row.fill(bias[gi * mg + mi]);
                }
            }
            let wg = &w[gi * mg * inner..(gi + 1) * mg * inner];
            let mut c0 = 0;
            while c0 < d.out_plane {
                let nc = per.min(d.out_plane - c0);
                let cbuf = &mut col[..inner * nc];
                fill(b, gi, c0, nc, cbuf);
                gemm_acc(&mut out[o0 + c0..], d.out_plane, wg, cbuf, mg, inner, nc);
                c0 += nc;
            }
        }
    }
    out
}

/// Index of each dim of flat position `flat` in a row-major grid of `dims`.
fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0usize; dims.len()];
    for i in (0..dims.len()).rev() {
        idx[i] = flat % dims[i].max(1);
        flat /= dims[i].max(1);
    }
    idx
}

/// One row of the im2col matrix, any number of spatial dims: the input
/// `plane` (one channel) read at kernel tap `k` for output positions from
/// `start` on, one per cell of `row`; padding reads as zero.
fn im2col_row<F: Num>(
    plane: &[F],
    g: &Geometry,
    taps: &[Vec<Tap>],
    in_strides: &[usize],
    k: &[usize],
    start: &[usize],
    row: &mut [F],
) {
    let nd = g.input.len();
    let mut o = start.to_vec();
    for cell in row.iter_mut() {
        let mut off = 0;
        let mut inside = true;
        for i in 0..nd {
            match taps[i][o[i] * g.kernel[i] + k[i]] {
                Tap::In(q) => off += q * in_strides[i],
                _ => inside = false,
            }
        }
        *cell = if inside { plane[off] } else { F::zero() };
        next_index(&mut o, &g.output);
    }
}

/// Plain im2col of output positions `c0..c0+nc` for the channels of group
/// `gi` of batch `b`; padding reads as zero.
#[allow(clippy::too_many_arguments)]
fn im2col<F: Num>(
    x: &[F],
    d: &ConvDims,
    g: &Geometry,
    taps: &[Vec<Tap>],
    b: usize,
    gi: usize,
    c0: usize,
    nc: usize,
    col: &mut [F],
) {
    let cg = d.c / d.group;
    let in_strides = strides_of(&g.input);
    let start = unravel(c0, &g.output);
    let mut k = vec![0usize; g.input.len()];
    for ci in 0..cg {
        let plane0 = (b * d.c + gi * cg + ci) * d.in_plane;
        let plane = &x[plane0..plane0 + d.in_plane];
        k.iter_mut().for_each(|v| *v = 0);
        for kk in 0..d.kprod {
            let row = &mut col[(ci * d.kprod + kk) * nc..][..nc];
            im2col_row(plane, g, taps, &in_strides, &k, &start, row);
            next_index(&mut k, &g.kernel);
        }
    }
}

/// [`im2col_row`] for two spatial dims and tap (`ky`, `kx`), output
/// positions from `p0` on: whole runs of an output row at a time, a row of
/// input read directly, and rows in the padding zero-filled.
fn im2col_2d_row<F: Num>(
    plane: &[F],
    g: &Geometry,
    taps: &[Vec<Tap>],
    (ky, kx): (usize, usize),
    p0: usize,
    row: &mut [F],
) {
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    let ow = g.output[1].max(1);
    let iw = g.input[1];
    let unit_stride = g.strides[1] == 1;
    let base = (kx * g.dilations[1]) as i64 - g.pad_begin[1] as i64;
    let nc = row.len();
    let (mut oy, mut ox) = (p0 / ow, p0 % ow);
    let mut filled = 0;
    while filled < nc {
        let run = (ow - ox).min(nc - filled);
        let dst = &mut row[filled..filled + run];
        match taps[0][oy * kh + ky] {
            Tap::In(iy) if unit_stride => {
                // input columns ox + j + base, for those inside the row
                let src = &plane[iy * iw..(iy + 1) * iw];
                let first = ox as i64 + base;
                let lo = (-first).clamp(0, run as i64) as usize;
                let hi = (iw as i64 - first).clamp(lo as i64, run as i64) as usize;
                dst[..lo].fill(F::zero());
                if hi > lo {
                    let s0 = (first + lo as i64) as usize;
                    dst[lo..hi].copy_from_slice(&src[s0..s0 + (hi - lo)]);
                }
                dst[hi..].fill(F::zero());
            }
            Tap::In(iy) => {
                let src = &plane[iy * iw..(iy + 1) * iw];
                let xt = &taps[1][ox * kw + kx..];
                for (j, cell) in dst.iter_mut().enumerate() {
                    *cell = match xt[j * kw] {
                        Tap::In(ix) => src[ix],
                        _ => F::zero(),
                    };
                }
            }
            _ => dst.fill(F::zero()),
        }
        filled += run;
        ox = 0;
        oy += 1;
    }
}

/// [`im2col`] for two spatial dims, through [`im2col_2d_row`].
#[allow(clippy::too_many_arguments)]
fn im2col_2d<F: Num>(
    x: &[F],
    d: &ConvDims,
    g: &Geometry,
    taps: &[Vec<Tap>],
    b: usize,
    gi: usize,
    c0: usize,
    nc: usize,
    col: &mut [F],
) {
    let cg = d.c / d.group;
    let (kh, kw) = (g.kernel[0], g.kernel[1]);
    for ci in 0..cg {
        let plane0 = (b * d.c + gi * cg + ci) * d.in_plane;
        let plane = &x[plane0..plane0 + d.in_plane];
        for ky in 0..kh {
            for kx in 0..kw {
                let row = &mut col[((ci * kh + ky) * kw + kx) * nc..][..nc];
                im2col_2d_row(plane, g, taps, (ky, kx), c0, row);
            }
        }
    }
}

fn group_attr(ctx: &BuildCtx) -> OpResult<usize> {
    let g = ctx.node.attr_int("group")?.unwrap_or(1);
    if g < 1 {
        return Err(op_err!("group must be at least 1 but is {g}"));
    }
    usize::try_from(g).map_err(|_| op_err!("group {g} is too large"))
}

/// The kernel dims of a weight of shape `w`.
fn weight_kernel(x: &Tensor, w: &[usize]) -> OpResult<Vec<usize>> {
    if w.len() != x.rank() || x.rank() < 3 {
        return Err(op_err!(
            "weights of shape {w:?} and input of shape {:?} should both have the same rank of 3 or more",
            x.shape()
        ));
    }
    let k = w[2..].to_vec();
    if k.contains(&0) {
        return Err(op_err!("kernel shape {k:?} has a zero dim"));
    }
    Ok(k)
}

fn check_kernel_attr(attr: &Option<Vec<i64>>, k: &[usize]) -> OpResult<()> {
    if let Some(a) = attr {
        if a.len() != k.len() || a.iter().zip(k).any(|(&x, &y)| x != y as i64) {
            return Err(op_err!(
                "kernel_shape {a:?} does not match the weights' kernel {k:?}"
            ));
        }
    }
    Ok(())
}

fn bias_in(inputs: &[Option<&Value>], i: usize, m: usize) -> OpResult<Option<Vec<f64>>> {
    match opt_tensor_in(inputs, i)? {
        None => Ok(None),
        Some(b) => {
            let v = b.to_f64_vec()?;
            if v.len() != m {
                return Err(op_err!(
                    "bias has {} values but there are {m} output channels",
                    v.len()
                ));
            }
            Ok(Some(v))
        }
    }
}

/// A convolution's geometry and shapes, checked once per run.
struct ConvSetup {
    g: Geometry,
    d: ConvDims,
    taps: Vec<Vec<Tap>>,
}

impl ConvSetup {
    /// `w` is the weight's shape.
    fn new(
        rc: &RunCtx,
        x: &Tensor,
        w: &[usize],
        group: usize,
        attrs: &WindowAttrs,
    ) -> OpResult<ConvSetup> {
        let kernel = weight_kernel(x, w)?;
        check_kernel_attr(&attrs.kernel, &kernel)?;
        let g = attrs.geometry(&x.shape()[2..], Some(&kernel))?;
        let d = conv_dims(rc, x, w, group, &g)?;
        rc.check_alloc(g.tap_count()?, 16)?;
        let taps = g.taps();
        Ok(ConvSetup { g, d, taps })
    }

    fn out_shape(&self) -> Vec<usize> {
        let mut shape = vec![self.d.n, self.d.m];
        shape.extend_from_slice(&self.g.output);
        shape
    }

    /// Rows of the im2col matrix of one group.
    fn inner(&self) -> usize {
        (self.d.c / self.d.group) * self.d.kprod
    }

    /// Output positions per im2col chunk: about 1 MiB of f32 columns.
    fn chunk(&self) -> usize {
        ((1usize << 18) / self.inner().max(1)).max(256)
    }

    /// Row `r` of the im2col matrix of group `gi` of batch `b` (input channel
    /// `r / kprod` of the group, tap `r % kprod`), output positions from `p0`
    /// on, one per cell of `dst`.
    fn fill_row<F: Num>(&self, x: &[F], b: usize, gi: usize, r: usize, p0: usize, dst: &mut [F]) {
        let (d, g) = (&self.d, &self.g);
        let (ci, kk) = (r / d.kprod, r % d.kprod);
        let plane0 = (b * d.c + gi * (d.c / d.group) + ci) * d.in_plane;
        let plane = &x[plane0..plane0 + d.in_plane];
        if g.input.len() == 2 {
            let kw = g.kernel[1];
            im2col_2d_row(plane, g, &self.taps, (kk / kw, kk % kw), p0, dst)
        } else {
            let k = unravel(kk, &g.kernel);
            let start = unravel(p0, &g.output);
            im2col_row(plane, g, &self.taps, &strides_of(&g.input), &k, &start, dst)
        }
    }

    /// Whether each output position reads one input position, the same
    /// (kernel of ones, unit strides, no padding): the input is the im2col
    /// matrix.
    fn pointwise(&self) -> bool {
        let g = &self.g;
        g.kernel.iter().all(|&k| k == 1)
            && g.strides.iter().all(|&s| s == 1)
            && g.pad_begin.iter().chain(&g.pad_end).all(|&p| p == 0)
    }

    /// The plane geometry of a 2-D convolution with one input and one output
    /// channel per group (depthwise), which a direct kernel serves best.
    fn depthwise_plane(&self) -> Option<Plane2d> {
        let d = &self.d;
        if d.group != d.c || d.m != d.c {
            return None;
        }
        self.plane_2d()
    }

    /// The plane geometry of a 2-D convolution.
    fn plane_2d(&self) -> Option<Plane2d> {
        let g = &self.g;
        if g.input.len() != 2 {
            return None;
        }
        Some(Plane2d {
            in_h: g.input[0],
            in_w: g.input[1],
            out_h: g.output[0],
            out_w: g.output[1],
            kernel: [g.kernel[0], g.kernel[1]],
            strides: [g.strides[0], g.strides[1]],
            dilations: [g.dilations[0], g.dilations[1]],
            pads: [g.pad_begin[0], g.pad_begin[1]],
        })
    }

    /// Fills the im2col matrix of output positions `c0..c0+nc` of group `gi`
    /// of batch `b`.
    fn fill<F: Num>(&self, x: &[F], b: usize, gi: usize, c0: usize, nc: usize, col: &mut [F]) {
        let (d, g, taps) = (&self.d, &self.g, &self.taps);
        if g.input.len() == 2 {
            im2col_2d(x, d, g, taps, b, gi, c0, nc, col)
        } else {
            im2col(x, d, g, taps, b, gi, c0, nc, col)
        }
    }
}

/// Convolution of `F` data through plain loops; returns the output values
/// and shape. The oracle for the f32 fast path, and the path of other types.
#[allow(clippy::too_many_arguments)]
pub(crate) fn conv_run<F: Num>(
    rc: &RunCtx,
    x: &Tensor,
    xv: &[F],
    w: &Tensor,
    wv: &[F],
    bias: Option<&[F]>,
    group: usize,
    attrs: &WindowAttrs,
) -> OpResult<(Vec<F>, Vec<usize>)> {
    let s = ConvSetup::new(rc, x, w.shape(), group, attrs)?;
    let out = conv_with_cols(&s.d, wv, bias, s.chunk(), |b, gi, c0, nc, col| {
        s.fill(xv, b, gi, c0, nc, col)
    });
    Ok((out, s.out_shape()))
}

/// What is applied after an f32 convolution: its bias, an addend of the
/// output's shape, then an activation.
#[derive(Clone, Copy, Default)]
struct ConvTail<'a> {
    bias: Option<&'a [f32]>,
    z: Option<&'a [f32]>,
    act: Act,
}

/// A constant f32 weight packed once, per group, as the GEMM's left-hand
/// operand; the plan then frees the weight as stored. Depthwise weights
/// (read directly) and those Winograd may take stay as they are.
struct PackedConvWeight {
    shape: Vec<usize>,
    groups: Vec<PackedA>,
}

impl PackedConvWeight {
    /// Packs the node's constant weight when it is such a weight, and tells
    /// the plan that the kernel stands in for it.
    fn absorb(ctx: &BuildCtx, group: usize, winograd: bool) -> Option<PackedConvWeight> {
        let w = ctx.const_input(1)?;
        let depthwise = w.shape().get(1) == Some(&1) && w.shape().first() == Some(&group);
        if winograd || depthwise {
            return None;
        }
        let packed = PackedConvWeight::new(w, group)?;
        ctx.stand_in_for(1);
        Some(packed)
    }

    /// `w` packed per group; `None` when it is not an f32 weight of rank 3
    /// or more whose output channels split into `group` groups.
    fn new(w: &Tensor, group: usize) -> Option<PackedConvWeight> {
        let shape = w.shape().to_vec();
        if shape.len() < 3 || group == 0 || !shape[0].is_multiple_of(group) {
            return None;
        }
        let v = w.as_slice::<f32>().ok()?;
        let (mg, inner) = (shape[0] / group, numel(&shape[1..])?);
        let groups = (0..group)
            .map(|gi| {
                let rows = v.get(gi * mg * inner..(gi + 1) * mg * inner)?;
                MatRef::row_major(rows, mg, inner).ok().map(PackedA::new)
            })
            .collect::<Option<Vec<_>>>()?;
        Some(PackedConvWeight { shape, groups })
    }
}

/// An f32 convolution's weight: its values, or packed ahead.
#[derive(Clone, Copy)]
enum ConvWeight<'a> {
    Plain(&'a [f32]),
    Packed(&'a PackedConvWeight),
}

/// The f32 convolution, with the tail applied while each block of output
/// is still in cache. A depthwise 2-D convolution runs a direct kernel per
/// channel; one that `wino` (the constant weight, transformed) fits runs
/// Winograd; the rest go through the packed GEMM, the weights of a group as
/// A and the im2col matrix as B, packed straight from the input (for a
/// pointwise convolution, B is the input itself). Both split across the
/// session's threads: channels for the direct kernel, the packing's panels
/// and the product's rows for the GEMM.
fn conv_f32(
    s: &ConvSetup,
    xv: &[f32],
    w: ConvWeight,
    wino: Option<&Winograd3x3>,
    tail: ConvTail,
) -> OpResult<Vec<f32>> {
    let d = &s.d;
    let (inner, mg, cg, plane) = (s.inner(), d.m / d.group, d.c / d.group, d.out_plane);
    let mut out = vec![0.0f32; d.n * d.m * plane];
    if plane == 0 {
        return Ok(out);
    }
    let gemm_err = |e: onyx_kernels::GemmError| op_err!("{e}");
    if let (Some(f), Some(p)) = (wino, s.plane_2d()) {
        if Winograd3x3::fits(&p) && d.group == 1 && (f.m(), f.c()) == (d.m, d.c) {
            for (b, o) in out.chunks_mut(d.m * plane).enumerate() {
                let addend = match tail.z {
                    Some(z) => Some(
                        MatRef::row_major(&z[b * d.m * plane..], d.m, plane).map_err(gemm_err)?,
                    ),
                    None => None,
                };
                let epi = Epilogue {
                    row_bias: tail.bias,
                    col_bias: None,
                    addend,
                    act: tail.act,
                };
                f.conv(&p, &xv[b * d.c * d.in_plane..], o, &epi)
                    .map_err(gemm_err)?;
            }
            return Ok(out);
        }
    }
    if let (Some(p), ConvWeight::Plain(wv)) = (s.depthwise_plane(), w) {
        // output plane i is channel i % m of batch i / m, reading input plane i
        let act = if tail.z.is_some() {
            Act::None
        } else {
            tail.act
        };
        depthwise(&p, d.m, xv, wv, tail.bias, act, &mut out);
        if let Some(z) = tail.z {
            out.iter_mut().zip(z).for_each(|(v, &z)| *v += z);
            tail.act.apply(&mut out);
        }
        return Ok(out);
    }
    // output positions per packing: about 8 MiB of packed columns
    let per = ((1usize << 21) / inner.max(1)).max(256).min(plane);
    let pointwise = s.pointwise();
    // the columns' panels, repacked for every chunk
    PackedB::with_scratch(|pb| -> OpResult<()> {
        for b in 0..d.n {
            for gi in 0..d.group {
                let o0 = (b * d.m + gi * mg) * plane;
                let mut c0 = 0;
                while c0 < plane {
                    let nc = per.min(plane - c0);
                    if pointwise {
                        let x0 = (b * d.c + gi * cg) * d.in_plane + c0;
                        let xm = MatRef::new(&xv[x0..], cg, nc, d.in_plane, 1).map_err(gemm_err)?;
                        pb.repack(xm);
                    } else {
                        pb.repack_with(inner, nc, |r, j0, dst| {
                            s.fill_row(xv, b, gi, r, c0 + j0, dst)
                        });
                    }
                    let addend = match tail.z {
                        Some(z) => {
                            Some(MatRef::new(&z[o0 + c0..], mg, nc, plane, 1).map_err(gemm_err)?)
                        }
                        None => None,
                    };
                    let epi = Epilogue {
                        row_bias: tail.bias.map(|v| &v[gi * mg..(gi + 1) * mg]),
                        col_bias: None,
                        addend,
                        act: tail.act,
                    };
                    let c = &mut out[o0 + c0..];
                    match w {
                        ConvWeight::Plain(wv) => {
                            let a = MatRef::row_major(&wv[gi * mg * inner..], mg, inner)
                                .map_err(gemm_err)?;
                            sgemm(a, pb, c, plane, false, &epi)
                        }
                        ConvWeight::Packed(p) => {
                            sgemm_packed(&p.groups[gi], pb, c, plane, false, &epi)
                        }
                    }
                    .map_err(gemm_err)?;
                    c0 += nc;
                }
            }
        }
        Ok(())
    })?;
    Ok(out)
}

/// What FusedConv applies after the convolution, its bias and the addend Z.
fn fused_activation(ctx: &BuildCtx) -> OpResult<Act> {
    let name = ctx.node.attr_string("activation")?.unwrap_or_default();
    let params = ctx
        .node
        .attr_floats("activation_params")?
        .unwrap_or_default();
    let want = |n: usize, defaults: &[f32]| -> OpResult<Vec<f32>> {
        match params.len() {
            0 => Ok(defaults.to_vec()),
            k if k == n => Ok(params.clone()),
            k => Err(op_err!(
                "activation '{name}' takes {n} activation_params but {k} are given"
            )),
        }
    };
    Ok(match name.as_str() {
        "" | "Relu" | "Sigmoid" | "Tanh" => {
            want(0, &[])?;
            match name.as_str() {
                "Relu" => Act::Relu,
                "Sigmoid" => Act::Sigmoid,
                "Tanh" => Act::Tanh,
                _ => Act::None,
            }
        }
        "LeakyRelu" => Act::LeakyRelu(want(1, &[0.01])?[0]),
        "Clip" => {
            let p = want(2, &[f32::NEG_INFINITY, f32::INFINITY])?;
            Act::Clip(p[0], p[1])
        }
        "HardSigmoid" => {
            let p = want(2, &[0.2, 0.5])?;
            Act::HardSigmoid(p[0], p[1])
        }
        other => return Err(op_err!("unknown activation '{other}'")),
    })
}

/// The activation in f64, for element types other than f32.
fn act_f64(act: Act, x: f64) -> f64 {
    match act {
        Act::None => x,
        Act::Relu if x < 0.0 => 0.0,
        Act::LeakyRelu(a) if x < 0.0 => f64::from(a) * x,
        Act::Relu | Act::LeakyRelu(_) => x,
        Act::Sigmoid => 1.0 / (1.0 + (-x).exp()),
        Act::Tanh => x.tanh(),
        Act::Clip(lo, _) if x < f64::from(lo) => f64::from(lo),
        Act::Clip(_, hi) if x > f64::from(hi) => f64::from(hi),
        Act::Clip(..) => x,
        Act::HardSigmoid(a, b) => (f64::from(a) * x + f64::from(b)).clamp(0.0, 1.0),
    }
}

/// The Winograd form of a constant f32 weight of a 3x3, stride-1,
/// undilated, ungrouped convolution with enough channels for the transforms
/// to pay. It is made on the first run whose output plane has tiles enough
/// (`Winograd3x3::fits`), not at build: a model's small late planes never
/// take this path, and their transformed weights (four times the size)
/// would only cost load time and memory.
struct LazyWinograd(OnceLock<Option<Winograd3x3>>);

impl LazyWinograd {
    fn for_node(ctx: &BuildCtx, attrs: &WindowAttrs, group: usize) -> Option<LazyWinograd> {
        const MIN_CHANNELS: usize = 16;
        let w = ctx.const_input(1)?;
        let ones = |v: &Option<Vec<i64>>| v.as_ref().is_none_or(|v| v.iter().all(|&s| s == 1));
        let shape = w.shape();
        let eligible = group == 1
            && w.dtype() == DType::Float
            && shape.len() == 4
            && shape[2..] == [3, 3]
            && ones(&attrs.strides)
            && ones(&attrs.dilations)
            && shape[0] >= MIN_CHANNELS
            && shape[1] >= MIN_CHANNELS;
        eligible.then(|| LazyWinograd(OnceLock::new()))
    }

    /// The transformed weight when this run's plane fits Winograd; `w` is
    /// the constant weight the node was built with.
    fn get(&self, s: &ConvSetup, w: &[f32]) -> Option<&Winograd3x3> {
        let p = s.plane_2d()?;
        if !Winograd3x3::fits(&p) {
            return None;
        }
        self.0
            .get_or_init(|| Winograd3x3::new(w, s.d.m, s.d.c).ok())
            .as_ref()
    }
}

/// Conv, and FusedConv (`fused`): Conv's inputs plus an optional addend Z of
/// the output's shape, and an activation.
fn build_conv_op(ctx: &BuildCtx, fused: bool) -> OpResult<Box<dyn Kernel>> {
    let attrs = WindowAttrs::read(ctx)?;
    let group = group_attr(ctx)?;
    let act = if fused {
        fused_activation(ctx)?
    } else {
        Act::None
    };
    let op = if fused { "FusedConv" } else { "Conv" };
    let wino = LazyWinograd::for_node(ctx, &attrs, group);
    let packed = PackedConvWeight::absorb(ctx, group, wino.is_some());
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        // the weight as stored, unless the kernel packed it at build
        let (w, w_dtype, w_shape) = match &packed {
            Some(p) => (None, DType::Float, p.shape.as_slice()),
            None => {
                let w = tensor_in(inputs, 1)?;
                (Some(w), w.dtype(), w.shape())
            }
        };
        if !x.dtype().is_float() || w_dtype != x.dtype() {
            return Err(op_err!(
                "{op} needs float inputs of one type but got {} and {w_dtype}",
                x.dtype(),
            ));
        }
        let m = w_shape.first().copied().unwrap_or(0);
        let bias = bias_in(inputs, 2, m)?;
        let z = if fused {
            opt_tensor_in(inputs, 3)?
        } else {
            None
        };
        let s = ConvSetup::new(rc, x, w_shape, group, &attrs)?;
        let shape = s.out_shape();
        if let Some(z) = z {
            if z.shape() != shape.as_slice() || z.dtype() != x.dtype() {
                return Err(op_err!(
                    "Z is {} of shape {:?} but the output is {} of shape {shape:?}",
                    z.dtype(),
                    z.shape(),
                    x.dtype()
                ));
            }
        }
        if x.dtype() == DType::Float {
            let bias: Option<Vec<f32>> = bias.map(|b| b.iter().map(|&v| v as f32).collect());
            let tail = ConvTail {
                bias: bias.as_deref(),
                z: z.map(|z| z.as_slice::<f32>()).transpose()?,
                act,
            };
            let (weight, wino) = match (w, &packed) {
                (Some(w), _) => {
                    let wv = w.as_slice::<f32>()?;
                    let wino = wino.as_ref().and_then(|f| f.get(&s, wv));
                    (ConvWeight::Plain(wv), wino)
                }
                (None, Some(p)) => (ConvWeight::Packed(p), None),
                (None, None) => return Err(op_err!("{op} has no weight")),
            };
            let out = conv_f32(&s, x.as_slice::<f32>()?, weight, wino, tail)?;
            return one(Tensor::from_vec(shape, out)?);
        }
        // only an f32 weight is packed, and then x is f32 too
        let w = w.ok_or_else(|| op_err!("{op} has no weight"))?;
        let (xv, wv) = (x.to_f64_vec()?, w.to_f64_vec()?);
        let mut out = conv_with_cols(
            &s.d,
            &wv,
            bias.as_deref(),
            s.chunk(),
            |b, gi, c0, nc, col| s.fill(&xv, b, gi, c0, nc, col),
        );
        if let Some(z) = z {
            for (o, zv) in out.iter_mut().zip(z.to_f64_vec()?) {
                *o += zv;
            }
        }
        out.iter_mut().for_each(|o| *o = act_f64(act, *o));
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

/// A zero point: a scalar, or one per channel when `per` is given.
fn zero_points(t: Option<&Tensor>, per: usize) -> OpResult<Vec<f64>> {
    match t {
        None => Ok(vec![0.0; per.max(1)]),
        Some(t) => {
            let v = t.to_f64_vec()?;
            if v.len() == 1 {
                Ok(vec![v[0]; per.max(1)])
            } else if v.len() == per {
                Ok(v)
            } else {
                Err(op_err!(
                    "zero point has {} values; expected 1 or {per}",
                    v.len()
                ))
            }
        }
    }
}

fn build_conv_integer(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let attrs = WindowAttrs::read(ctx)?;
    let group = group_attr(ctx)?;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let w = tensor_in(inputs, 1)?;
        for t in [x, w] {
            if !matches!(t.dtype(), DType::Int8 | DType::Uint8) {
                return Err(op_err!(
                    "ConvInteger needs int8 or uint8 inputs but got {}",
                    t.dtype()
                ));
            }
        }
        let m = w.shape().first().copied().unwrap_or(0);
        let xz = zero_points(opt_tensor_in(inputs, 2)?, 1)?[0];
        let wz = zero_points(opt_tensor_in(inputs, 3)?, m)?;
        let xv: Vec<f64> = x.to_f64_vec()?.iter().map(|v| v - xz).collect();
        let per_m = w.len().checked_div(m).unwrap_or(0);
        let wv: Vec<f64> = w
            .to_f64_vec()?
            .iter()
            .enumerate()
            .map(|(i, v)| v - wz[i / per_m.max(1)])
            .collect();
        let (out, shape) = conv_run(rc, x, &xv, w, &wv, None, group, &attrs)?;
        let out: Vec<i32> = out.iter().map(|&v| v as i32).collect();
        one(Tensor::from_vec(shape, out)?)
    }))
}

/// Scatter-adds a column matrix (`channels * kprod` rows by `prod(grid)`
/// columns) into images of `image` dims: block position `o`, tap `j` lands at
/// `o * stride + j * dilation - pad_begin`.
#[allow(clippy::too_many_arguments)]
fn col2im_add(
    col: &[f64],
    channels: usize,
    image: &[usize],
    grid: &[usize],
    kernel: &[usize],
    strides: &[usize],
    dilations: &[usize],
    pad_begin: &[i64],
    out: &mut [f64],
) {
    let nd = image.len();
    let kprod: usize = kernel.iter().product();
    let gprod: usize = grid.iter().product();
    let img: usize = image.iter().product();
    let istr = strides_of(image);
    // per axis: image index for (grid pos, tap), or None when outside
    let pos: Vec<Vec<Option<usize>>> = (0..nd)
        .map(|i| {
            let mut v = Vec::with_capacity(grid[i] * kernel[i]);
            for o in 0..grid[i] {
                for j in 0..kernel[i] {
                    let p = (o * strides[i] + j * dilations[i]) as i64 - pad_begin[i];
                    v.push(if p >= 0 && (p as usize) < image[i] {
                        Some(p as usize)
                    } else {
                        None
                    });
                }
            }
            v
        })
        .collect();
    let mut k = vec![0usize; nd];
    let mut o = vec![0usize; nd];
    for ch in 0..channels {
        let plane = &mut out[ch * img..(ch + 1) * img];
        k.iter_mut().for_each(|v| *v = 0);
        for kk in 0..kprod {
            let row = &col[(ch * kprod + kk) * gprod..][..gprod];
            o.iter_mut().for_each(|v| *v = 0);
            for &v in row {
                let mut off = 0;
                let mut inside = true;
                for i in 0..nd {
                    match pos[i][o[i] * kernel[i] + k[i]] {
                        Some(q) => off += q * istr[i],
                        None => inside = false,
                    }
                }
                if inside {
                    plane[off] += v;
                }
                next_index(&mut o, grid);
            }
            next_index(&mut k, kernel);
        }
    }
}

fn list_or(
    name: &str,
    v: &Option<Vec<i64>>,
    nd: usize,
    default: i64,
    min: i64,
) -> OpResult<Vec<usize>> {
    match v {
        None => Ok(vec![default as usize; nd]),
        Some(v) => {
            if v.len() != nd {
                return Err(op_err!(
                    "{name} has {} values but there are {nd} spatial dims",
                    v.len()
                ));
            }
            v.iter()
                .map(|&x| {
                    if x < min {
                        Err(op_err!("{name} value {x} should be at least {min}"))
                    } else {
                        usize::try_from(x).map_err(|_| op_err!("{name} value {x} is too large"))
                    }
                })
                .collect()
        }
    }
}

fn build_conv_transpose(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let attrs = WindowAttrs::read(ctx)?;
    let group = group_attr(ctx)?;
    let output_padding = ctx.node.attr_ints("output_padding")?;
    let output_shape = ctx.node.attr_ints("output_shape")?;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let w = tensor_in(inputs, 1)?;
        if !x.dtype().is_float() || w.dtype() != x.dtype() {
            return Err(op_err!(
                "ConvTranspose needs float inputs of one type but got {} and {}",
                x.dtype(),
                w.dtype()
            ));
        }
        let (n, c, sp) = nc_input(x, "ConvTranspose")?;
        let nd = sp.len();
        let kernel = weight_kernel(x, w.shape())?;
        check_kernel_attr(&attrs.kernel, &kernel)?;
        if w.shape()[0] != c || c % group != 0 {
            return Err(op_err!(
                "weights {:?} with group {group} do not match {c} input channels",
                w.shape()
            ));
        }
        let mg = w.shape()[1];
        let m = mg * group;
        let strides = list_or("strides", &attrs.strides, nd, 1, 1)?;
        let dil = list_or("dilations", &attrs.dilations, nd, 1, 1)?;
        let opad = list_or("output_padding", &output_padding, nd, 0, 0)?;
        let pads = match &attrs.pads {
            Some(p) if attrs.auto_pad == AutoPad::NotSet => {
                Some(list_or("pads", &Some(p.clone()), 2 * nd, 0, 0)?)
            }
            _ => None,
        };
        let oshape = match &output_shape {
            None => None,
            Some(s) => {
                let s = if s.len() == nd + 2 { &s[2..] } else { &s[..] };
                Some(list_or("output_shape", &Some(s.to_vec()), nd, 0, 0)?)
            }
        };
        // full (unpadded) extent along each axis
        let full: Vec<i64> = (0..nd)
            .map(|i| {
                strides[i]
                    .saturating_mul(sp[i].saturating_sub(1))
                    .saturating_add(opad[i])
                    .saturating_add((kernel[i] - 1).saturating_mul(dil[i]))
                    .saturating_add(1)
                    .min(i64::MAX as usize / 4) as i64
            })
            .collect();
        let same = matches!(attrs.auto_pad, AutoPad::SameUpper | AutoPad::SameLower);
        // an explicit output_shape (or SAME auto_pad) decides the pads, which
        // may be negative; otherwise the pads decide the output size
        let (pad_begin, out_sp): (Vec<i64>, Vec<usize>) =
            if oshape.is_none() && (pads.is_some() || !same) {
                let p = pads.clone().unwrap_or_else(|| vec![0; 2 * nd]);
                let mut out = Vec::with_capacity(nd);
                for i in 0..nd {
                    let o = full[i] - p[i] as i64 - p[i + nd] as i64;
                    if o < 0 {
                        return Err(op_err!("pads {p:?} leave a negative output size"));
                    }
                    out.push(o as usize);
                }
                (p[..nd].iter().map(|&v| v as i64).collect(), out)
            } else {
                let target: Vec<i64> = match &oshape {
                    Some(s) => s.iter().map(|&v| v as i64).collect(),
                    None => (0..nd)
                        .map(|i| sp[i].saturating_mul(strides[i]).min(i64::MAX as usize / 4) as i64)
                        .collect(),
                };
                let mut begin = Vec::with_capacity(nd);
                for i in 0..nd {
                    let total = full[i] - target[i];
                    let b = if attrs.auto_pad == AutoPad::SameUpper {
                        total.div_euclid(2)
                    } else {
                        total - total.div_euclid(2)
                    };
                    begin.push(b);
                }
                (begin, target.iter().map(|&v| v as usize).collect())
            };
        let m_bias = bias_in(inputs, 2, m)?;
        let in_plane = checked_prod(&sp)?;
        let out_plane = checked_prod(&out_sp)?;
        let kprod = checked_prod(&kernel)?;
        let cg = c / group;
        let rows = mg * kprod;
        let total = n
            .checked_mul(m)
            .and_then(|v| v.checked_mul(out_plane))
            .ok_or_else(|| op_err!("output is too large"))?;
        rc.check_alloc(total, 8)?;
        rc.check_alloc(rows.saturating_mul(in_plane), 8)?;
        let xv = x.to_f64_vec()?;
        let wv = w.to_f64_vec()?;
        let mut out = vec![0.0; total];
        let mut col = vec![0.0; rows * in_plane];
        // transposed weights per group: (mg * kprod) x cg
        for b in 0..n {
            for gi in 0..group {
                col.fill(0.0);
                for ci in 0..cg {
                    let ch = gi * cg + ci;
                    let xr = &xv[(b * c + ch) * in_plane..][..in_plane];
                    let wr = &wv[ch * rows..][..rows];
                    for (r, &wval) in wr.iter().enumerate() {
                        if wval == 0.0 {
                            continue;
                        }
                        let cr = &mut col[r * in_plane..][..in_plane];
                        for (cv, &xval) in cr.iter_mut().zip(xr) {
                            *cv += wval * xval;
                        }
                    }
                }
                let o0 = (b * m + gi * mg) * out_plane;
                col2im_add(
                    &col,
                    mg,
                    &out_sp,
                    &sp,
                    &kernel,
                    &strides,
                    &dil,
                    &pad_begin,
                    &mut out[o0..o0 + mg * out_plane],
                );
            }
        }
        if let Some(bias) = &m_bias {
            for (i, chunk) in out.chunks_mut(out_plane.max(1)).enumerate() {
                let bv = bias[i % m];
                chunk.iter_mut().for_each(|v| *v += bv);
            }
        }
        let mut shape = vec![n, m];
        shape.extend_from_slice(&out_sp);
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

fn build_col2im(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let strides = ctx.node.attr_ints("strides")?;
    let dilations = ctx.node.attr_ints("dilations")?;
    let pads = ctx.node.attr_ints("pads")?;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let image = opt_ints_in(inputs, 1)?.ok_or_else(|| op_err!("missing image_shape"))?;
        let block = opt_ints_in(inputs, 2)?.ok_or_else(|| op_err!("missing block_shape"))?;
        let nd = image.len();
        if block.len() != nd || nd == 0 {
            return Err(op_err!(
                "image_shape {image:?} and block_shape {block:?} should have the same non-zero length"
            ));
        }
        if x.rank() != 3 || !x.dtype().is_float() {
            return Err(op_err!(
                "Col2Im needs a float input of rank 3 but got {} {:?}",
                x.dtype(),
                x.shape()
            ));
        }
        let image = list_or("image_shape", &Some(image), nd, 0, 0)?;
        let attrs = WindowAttrs {
            kernel: Some(block.clone()),
            strides: strides.clone(),
            dilations: dilations.clone(),
            pads: pads.clone(),
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let g = attrs.geometry(&image, None)?;
        let kprod = checked_prod(&g.kernel)?;
        let l = g.out_size()?;
        let (n, ck, lin) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if kprod == 0 || ck < kprod || ck % kprod != 0 || lin != l {
            return Err(op_err!(
                "input shape {:?} does not match block {block:?} with {l} block positions",
                x.shape()
            ));
        }
        let c = ck / kprod;
        let img = checked_prod(&image)?;
        let total = n
            .checked_mul(c)
            .and_then(|v| v.checked_mul(img))
            .ok_or_else(|| op_err!("output is too large"))?;
        rc.check_alloc(total, 8)?;
        let xv = x.to_f64_vec()?;
        let pad_begin: Vec<i64> = g.pad_begin.iter().map(|&v| v as i64).collect();
        let mut out = vec![0.0; total];
        for b in 0..n {
            col2im_add(
                &xv[b * ck * l..(b + 1) * ck * l],
                c,
                &image,
                &g.output,
                &g.kernel,
                &g.strides,
                &g.dilations,
                &pad_begin,
                &mut out[b * c * img..(b + 1) * c * img],
            );
        }
        let mut shape = vec![n, c];
        shape.extend_from_slice(&image);
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

/// Bilinear sample of a 2-D plane at (h, w), zero outside.
fn bilinear(plane: &[f64], ih: usize, iw: usize, h: f64, w: f64) -> f64 {
    if !(h > -1.0 && w > -1.0 && h < ih as f64 && w < iw as f64) {
        return 0.0;
    }
    let h0 = h.floor();
    let w0 = w.floor();
    let (dh, dw) = (h - h0, w - w0);
    let mut acc = 0.0;
    for (hh, wh) in [(h0, 1.0 - dh), (h0 + 1.0, dh)] {
        for (ww, wwt) in [(w0, 1.0 - dw), (w0 + 1.0, dw)] {
            if hh >= 0.0 && ww >= 0.0 && hh < ih as f64 && ww < iw as f64 {
                let wt = wh * wwt;
                if wt != 0.0 {
                    acc += wt * plane[hh as usize * iw + ww as usize];
                }
            }
        }
    }
    acc
}

fn build_deform_conv(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let attrs = WindowAttrs::read(ctx)?;
    let group = group_attr(ctx)?;
    let offset_group = ctx.node.attr_int("offset_group")?.unwrap_or(1);
    if offset_group < 1 {
        return Err(op_err!("offset_group must be at least 1"));
    }
    let og = offset_group as usize;
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let w = tensor_in(inputs, 1)?;
        let off = tensor_in(inputs, 2)?;
        if x.rank() != 4 {
            return Err(op_err!(
                "DeformConv supports 2-D images only, got input shape {:?}",
                x.shape()
            ));
        }
        if !x.dtype().is_float() {
            return Err(op_err!("DeformConv needs float inputs, got {}", x.dtype()));
        }
        let kernel = weight_kernel(x, w.shape())?;
        check_kernel_attr(&attrs.kernel, &kernel)?;
        let g = attrs.geometry(&x.shape()[2..], Some(&kernel))?;
        let d = conv_dims(rc, x, w.shape(), group, &g)?;
        if d.c % og != 0 {
            return Err(op_err!(
                "{} input channels cannot be split into {og} offset groups",
                d.c
            ));
        }
        let (oh, ow) = (g.output[0], g.output[1]);
        let want = [d.n, og * d.kprod * 2, oh, ow];
        if off.shape() != want {
            return Err(op_err!("offset shape {:?} should be {want:?}", off.shape()));
        }
        let bias = bias_in(inputs, 3, d.m)?;
        let mask = match opt_tensor_in(inputs, 4)? {
            Some(mk) => {
                let want = [d.n, og * d.kprod, oh, ow];
                if mk.shape() != want {
                    return Err(op_err!("mask shape {:?} should be {want:?}", mk.shape()));
                }
                Some(mk.to_f64_vec()?)
            }
            None => None,
        };
        let xv = x.to_f64_vec()?;
        let wv = w.to_f64_vec()?;
        let ov = off.to_f64_vec()?;
        let (ih, iw) = (g.input[0], g.input[1]);
        let (kh, kw) = (g.kernel[0], g.kernel[1]);
        let cg = d.c / d.group;
        let cpo = d.c / og;
        let out = conv_with_cols(&d, &wv, bias.as_deref(), usize::MAX, |b, gi, _, _, col| {
            for ci in 0..cg {
                let ch = gi * cg + ci;
                let ogi = ch / cpo;
                let plane = &xv[(b * d.c + ch) * d.in_plane..][..d.in_plane];
                for i in 0..kh {
                    for j in 0..kw {
                        let kk = i * kw + j;
                        let row = &mut col[(ci * d.kprod + kk) * d.out_plane..][..d.out_plane];
                        let ob = ((b * og + ogi) * d.kprod + kk) * 2;
                        for y in 0..oh {
                            for xo in 0..ow {
                                let p = y * ow + xo;
                                let dy = ov[(ob * oh + y) * ow + xo];
                                let dx = ov[((ob + 1) * oh + y) * ow + xo];
                                let hpos = (y * g.strides[0] + i * g.dilations[0]) as f64
                                    - g.pad_begin[0] as f64
                                    + dy;
                                let wpos = (xo * g.strides[1] + j * g.dilations[1]) as f64
                                    - g.pad_begin[1] as f64
                                    + dx;
                                let mut v = bilinear(plane, ih, iw, hpos, wpos);
                                if let Some(mk) = &mask {
                                    v *= mk[(((b * og + ogi) * d.kprod + kk) * oh + y) * ow + xo];
                                }
                                row[p] = v;
                            }
                        }
                    }
                }
            }
        });
        let mut shape = vec![d.n, d.m];
        shape.extend_from_slice(&g.output);
        one(from_f64(x.dtype(), shape, out)?)
    }))
}

fn build_causal_conv(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let silu = match ctx.node.attr_string("activation")?.as_deref() {
        None | Some("none") => false,
        Some("silu") | Some("swish") => true,
        Some(other) => return Err(op_err!("unknown activation '{other}'")),
    };
    Ok(Box::new(move |rc: &RunCtx, inputs: &[Option<&Value>]| {
        let x = tensor_in(inputs, 0)?;
        let w = tensor_in(inputs, 1)?;
        if x.rank() != 3 || !x.dtype().is_float() {
            return Err(op_err!(
                "input should be a float tensor of rank 3 but is {} {:?}",
                x.dtype(),
                x.shape()
            ));
        }
        let (bsz, c, len) = (x.shape()[0], x.shape()[1], x.shape()[2]);
        if w.rank() != 3 || w.shape()[0] != c || w.shape()[1] != 1 || w.shape()[2] == 0 {
            return Err(op_err!(
                "weight shape {:?} should be ({c}, 1, k)",
                w.shape()
            ));
        }
        let k = w.shape()[2];
        let bias = bias_in(inputs, 2, c)?;
        let past = match opt_tensor_in(inputs, 3)? {
            Some(p) => {
                if p.shape() != [bsz, c, k - 1] {
                    return Err(op_err!(
                        "past_state shape {:?} should be {:?}",
                        p.shape(),
                        [bsz, c, k - 1]
                    ));
                }
                p.to_f64_vec()?
            }
            None => vec![0.0; bsz * c * (k - 1)],
        };
        let total = bsz
            .checked_mul(c)
            .and_then(|v| v.checked_mul(len + k))
            .ok_or_else(|| op_err!("input is too large"))?;
        rc.check_alloc(total, 8)?;
        let xv = x.to_f64_vec()?;
        let wv = w.to_f64_vec()?;
        let mut out = Vec::with_capacity(bsz * c * len);
        let mut state = Vec::with_capacity(bsz * c * (k - 1));
        let mut padded = Vec::with_capacity(len + k);
        for b in 0..bsz {
            for ch in 0..c {
                let row = b * c + ch;
                padded.clear();
                padded.extend_from_slice(&past[row * (k - 1)..(row + 1) * (k - 1)]);
                padded.extend_from_slice(&xv[row * len..(row + 1) * len]);
                let wr = &wv[ch * k..(ch + 1) * k];
                let bv = bias.as_ref().map_or(0.0, |bb| bb[ch]);
                for t in 0..len {
                    let mut acc = bv;
                    for (j, &wj) in wr.iter().enumerate() {
                        acc += wj * padded[t + j];
                    }
                    if silu {
                        // the activation runs on the value rounded to the output type
                        let r = round_to(x.dtype(), acc);
                        acc = r / (1.0 + (-r).exp());
                    }
                    out.push(acc);
                }
                state.extend_from_slice(&padded[padded.len() - (k - 1)..]);
            }
        }
        Ok(vec![
            Value::Tensor(from_f64(x.dtype(), vec![bsz, c, len], out)?),
            Value::Tensor(from_f64(x.dtype(), vec![bsz, c, k - 1], state)?),
        ])
    }))
}

fn round_to(dtype: DType, v: f64) -> f64 {
    match dtype {
        DType::Float => f64::from(v as f32),
        DType::Float16 => onyx_tensor::f16::from_f64(v).to_f64(),
        DType::BFloat16 => onyx_tensor::bf16::from_f64(v).to_f64(),
        _ => v,
    }
}

pub fn register(r: &mut Registry) {
    r.add("", "Conv", |ctx| build_conv_op(ctx, false));
    r.add("com.onyx", "FusedConv", |ctx| build_conv_op(ctx, true));
    r.add("", "ConvInteger", build_conv_integer);
    r.add("", "ConvTranspose", build_conv_transpose);
    r.add("", "Col2Im", build_col2im);
    r.add("", "DeformConv", build_deform_conv);
    r.add("", "CausalConvWithState", build_causal_conv);
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::ir::{Attr, Graph, Model, Node, ValueInfo};
    use crate::{Session, SessionOptions};

    /// Deterministic values in [-1, 1).
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

    fn attr_node(
        op: &str,
        domain: &str,
        ins: &[&str],
        outs: &[&str],
        attrs: Vec<(&str, Attr)>,
    ) -> Node {
        Node {
            name: String::new(),
            op_type: op.into(),
            domain: domain.into(),
            inputs: ins.iter().map(|s| s.to_string()).collect(),
            outputs: outs.iter().map(|s| s.to_string()).collect(),
            attrs: attrs.into_iter().map(|(k, v)| (k.to_string(), v)).collect(),
        }
    }

    /// Runs a graph of `nodes` over the inputs x, w, b, z, returning output `y`.
    fn run_graph(nodes: Vec<Node>, feeds: &[(&str, Tensor)]) -> Tensor {
        run_graph_on(nodes, feeds, 1)
    }

    fn run_graph_on(nodes: Vec<Node>, feeds: &[(&str, Tensor)], threads: usize) -> Tensor {
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let graph = Graph {
            nodes,
            inputs: feeds.iter().map(|(n, _)| vi(n)).collect(),
            outputs: vec![vi("y")],
            ..Graph::default()
        };
        let model = Model {
            opsets: BTreeMap::from([(String::new(), 17), ("com.onyx".to_string(), 1)]),
            graph,
            ..Model::default()
        };
        let options = SessionOptions {
            threads,
            ..SessionOptions::default()
        };
        let s = Session::from_model(model, options).unwrap();
        let feeds = feeds
            .iter()
            .map(|(n, t)| (n.to_string(), Value::from(t.clone())))
            .collect();
        let out = s.run(feeds).unwrap();
        out[0].as_tensor().unwrap().clone()
    }

    fn conv_attrs() -> Vec<(&'static str, Attr)> {
        vec![
            ("group", Attr::Int(2)),
            ("strides", Attr::Ints(vec![2, 1])),
            ("pads", Attr::Ints(vec![1, 0, 1, 2])),
        ]
    }

    /// FusedConv against Conv, Add and the activation as separate nodes, in
    /// f32 (the GEMM epilogue) and f64 (the plain path).
    #[test]
    fn fused_conv_matches_conv_add_activation() {
        // activation, its activation_params, the standalone operator's attributes
        type ActCase<'a> = (&'a str, Vec<f32>, Vec<(&'a str, Attr)>);
        let acts: [ActCase; 8] = [
            ("", vec![], vec![]),
            ("Relu", vec![], vec![]),
            ("Sigmoid", vec![], vec![]),
            ("Tanh", vec![], vec![]),
            ("LeakyRelu", vec![0.3], vec![("alpha", Attr::Float(0.3))]),
            ("LeakyRelu", vec![], vec![]),
            (
                "HardSigmoid",
                vec![0.4, 0.6],
                vec![("alpha", Attr::Float(0.4)), ("beta", Attr::Float(0.6))],
            ),
            ("Clip", vec![-0.2, 0.5], vec![]),
        ];
        let (xs, ws) = (vec![2, 4, 7, 6], vec![6, 2, 3, 3]);
        let ys = vec![2, 6, 4, 6];
        let x = values(numel(&xs).unwrap(), 1);
        let w = values(numel(&ws).unwrap(), 2);
        let b = values(6, 3);
        let z = values(numel(&ys).unwrap(), 4);
        for double in [false, true] {
            let t = |shape: &[usize], v: &[f32]| {
                if double {
                    let v: Vec<f64> = v.iter().map(|&x| f64::from(x)).collect();
                    Tensor::from_vec(shape.to_vec(), v).unwrap()
                } else {
                    Tensor::from_vec(shape.to_vec(), v.to_vec()).unwrap()
                }
            };
            for with_z in [false, true] {
                for (act, params, act_attrs) in &acts {
                    let mut feeds = vec![("x", t(&xs, &x)), ("w", t(&ws, &w)), ("b", t(&[6], &b))];
                    let mut fused_attrs = conv_attrs();
                    fused_attrs.push(("activation", Attr::String(act.to_string())));
                    fused_attrs.push(("activation_params", Attr::Floats(params.clone())));
                    let mut fused_in = vec!["x", "w", "b"];
                    let mut plain = vec![attr_node(
                        "Conv",
                        "",
                        &["x", "w", "b"],
                        &["c"],
                        conv_attrs(),
                    )];
                    let mut last = "c";
                    if with_z {
                        feeds.push(("z", t(&ys, &z)));
                        fused_in.push("z");
                        plain.push(attr_node("Add", "", &["c", "z"], &["s"], vec![]));
                        last = "s";
                    }
                    let clip_bounds = match *act {
                        "Clip" => {
                            feeds.push(("lo", t(&[], &[-0.2])));
                            feeds.push(("hi", t(&[], &[0.5])));
                            vec![last, "lo", "hi"]
                        }
                        _ => vec![last],
                    };
                    plain.push(match *act {
                        "" => attr_node("Identity", "", &[last], &["y"], vec![]),
                        op => attr_node(op, "", &clip_bounds, &["y"], act_attrs.clone()),
                    });
                    let fused = vec![attr_node(
                        "FusedConv",
                        "com.onyx",
                        &fused_in,
                        &["y"],
                        fused_attrs,
                    )];
                    let want = run_graph(plain, &feeds).to_f64_vec().unwrap();
                    let got = run_graph(fused, &feeds);
                    assert_eq!(got.shape(), ys.as_slice());
                    let got = got.to_f64_vec().unwrap();
                    for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                        assert!(
                            (g - w).abs() <= 1e-5,
                            "{act} z={with_z} f64={double} [{i}]: {g} vs {w}"
                        );
                    }
                }
            }
        }
    }

    /// The f32 fast paths (depthwise, pointwise, packed im2col) against the
    /// plain f64 convolution over shapes, strides, pads, dilations and
    /// groups, on one thread and on three.
    #[test]
    fn fast_paths_match_plain_conv() {
        // (input shape, weight shape, group, strides, pads, dilations)
        type Case = (Vec<usize>, Vec<usize>, usize, Vec<i64>, Vec<i64>, Vec<i64>);
        let cases: Vec<Case> = vec![
            (
                vec![1, 8, 9, 7],
                vec![8, 1, 3, 3],
                8,
                vec![1, 1],
                vec![1; 4],
                vec![1, 1],
            ),
            (
                vec![2, 6, 10, 9],
                vec![6, 1, 3, 3],
                6,
                vec![2, 2],
                vec![1, 0, 1, 1],
                vec![1, 1],
            ),
            (
                vec![1, 4, 8, 8],
                vec![4, 1, 5, 3],
                4,
                vec![1, 2],
                vec![2; 4],
                vec![2, 1],
            ),
            (
                vec![2, 12, 5, 6],
                vec![20, 12, 1, 1],
                1,
                vec![1, 1],
                vec![0; 4],
                vec![1, 1],
            ),
            (
                vec![1, 12, 5, 6],
                vec![9, 4, 1, 1],
                3,
                vec![1, 1],
                vec![0; 4],
                vec![1, 1],
            ),
            (
                vec![1, 6, 9, 9],
                vec![10, 6, 1, 1],
                1,
                vec![2, 2],
                vec![0; 4],
                vec![1, 1],
            ),
            (
                vec![1, 5, 11, 13],
                vec![7, 5, 3, 3],
                1,
                vec![1, 1],
                vec![1; 4],
                vec![1, 1],
            ),
            (
                vec![2, 4, 12, 10],
                vec![10, 2, 3, 2],
                2,
                vec![2, 1],
                vec![0, 1, 2, 0],
                vec![1, 2],
            ),
            (
                vec![1, 8, 6, 6],
                vec![16, 1, 3, 3],
                8,
                vec![1, 1],
                vec![1; 4],
                vec![1, 1],
            ),
            (
                vec![1, 3, 40, 30],
                vec![16, 3, 7, 7],
                1,
                vec![2, 2],
                vec![3; 4],
                vec![1, 1],
            ),
            (
                vec![2, 16, 18, 14],
                vec![24, 16, 3, 3],
                1,
                vec![1, 1],
                vec![1, 0, 2, 1],
                vec![1, 1],
            ),
            (
                vec![2, 4, 17],
                vec![6, 2, 3],
                2,
                vec![2],
                vec![1, 2],
                vec![2],
            ),
            (
                vec![1, 2, 4, 5, 6],
                vec![3, 2, 2, 3, 2],
                1,
                vec![1, 2, 1],
                vec![1, 0, 1, 0, 1, 1],
                vec![1, 1, 2],
            ),
        ];
        let limits = crate::Limits::default();
        let rc = RunCtx::detached(&limits);
        let mut winograd_cases = 0;
        for (i, (xs, ws, group, strides, pads, dil)) in cases.into_iter().enumerate() {
            let attrs = WindowAttrs {
                kernel: None,
                strides: Some(strides),
                dilations: Some(dil),
                pads: Some(pads),
                auto_pad: AutoPad::NotSet,
                ceil_mode: false,
            };
            let xv = values(numel(&xs).unwrap(), i as u64 + 1);
            let wv = values(numel(&ws).unwrap(), i as u64 + 50);
            let bias = values(ws[0], i as u64 + 99);
            let x = Tensor::from_vec(xs.clone(), xv.clone()).unwrap();
            let w = Tensor::from_vec(ws.clone(), wv.clone()).unwrap();
            let x64: Vec<f64> = xv.iter().map(|&v| f64::from(v)).collect();
            let w64: Vec<f64> = wv.iter().map(|&v| f64::from(v)).collect();
            let b64: Vec<f64> = bias.iter().map(|&v| f64::from(v)).collect();
            let (want, shape) =
                conv_run(&rc, &x, &x64, &w, &w64, Some(&b64), group, &attrs).unwrap();
            let z = values(want.len(), i as u64 + 7);
            let s = ConvSetup::new(&rc, &x, w.shape(), group, &attrs).unwrap();
            assert_eq!(s.out_shape(), shape);
            let tail = ConvTail {
                bias: Some(&bias),
                z: Some(&z),
                act: Act::LeakyRelu(0.5),
            };
            // the Winograd filter, for the 3x3 ungrouped cases; it must
            // serve those it fits and leave the others to the GEMM
            let wino = (group == 1 && ws.len() == 4 && ws[2..] == [3, 3])
                .then(|| Winograd3x3::new(&wv, ws[0], ws[1]).unwrap());
            let plane = s.plane_2d();
            winograd_cases +=
                usize::from(wino.is_some() && plane.is_some_and(|p| Winograd3x3::fits(&p)));
            // the weight packed ahead, for all but the depthwise cases
            let packed =
                (ws[1] != 1 || ws[0] != group).then(|| PackedConvWeight::new(&w, group).unwrap());
            for wino in [None, wino.as_ref()] {
                let one = conv_f32(&s, &xv, ConvWeight::Plain(&wv), wino, tail).unwrap();
                if let Some(p) = &packed {
                    let pre = conv_f32(&s, &xv, ConvWeight::Packed(p), None, tail).unwrap();
                    if wino.is_none() {
                        assert_eq!(pre, one, "case {i}: packed weight");
                    }
                }
                for (j, (g, w)) in one.iter().zip(&want).enumerate() {
                    let w = w + f64::from(z[j]);
                    let w = if w < 0.0 { 0.5 * w } else { w };
                    assert!(
                        (f64::from(*g) - w).abs() <= 1e-4,
                        "case {i} [{j}]: {g} vs {w}"
                    );
                }
                let three = onyx_kernels::ThreadPool::new(3)
                    .run(|| conv_f32(&s, &xv, ConvWeight::Plain(&wv), wino, tail).unwrap());
                assert_eq!(three, one, "case {i}: 3 threads");
            }
        }
        assert_eq!(winograd_cases, 2);
    }

    #[test]
    fn constant_3x3_weight_runs_winograd() {
        let (xs, ws) = ([1, 16, 20, 20], [32, 16, 3, 3]);
        let x = Tensor::from_vec(xs.to_vec(), values(numel(&xs).unwrap(), 1)).unwrap();
        let w = Tensor::from_vec(ws.to_vec(), values(numel(&ws).unwrap(), 2)).unwrap();
        let node = attr_node(
            "Conv",
            "",
            &["x", "w"],
            &["y"],
            vec![("pads", Attr::Ints(vec![1; 4]))],
        );
        // w fed at run time: the im2col GEMM
        let fed = run_graph(vec![node.clone()], &[("x", x.clone()), ("w", w.clone())]);
        // w an initializer: transformed on the first run, Winograd then
        let out = run_with_constant_weight(node, x, w);
        let (a, b) = (fed.as_slice::<f32>().unwrap(), out.as_slice());
        assert!(a
            .iter()
            .zip(b)
            .all(|(p, q)| (p - q).abs() <= 1e-4 * (1.0 + p.abs())));
        // the two paths round differently, so equal bits would mean the
        // constant weight did not take the Winograd path
        assert_ne!(a, b);
    }

    /// Runs `node` (reading inputs x and w) in a session where w is an
    /// initializer; returns its output.
    fn run_with_constant_weight(node: Node, x: Tensor, w: Tensor) -> Vec<f32> {
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let graph = Graph {
            nodes: vec![node],
            inputs: vec![vi("x")],
            outputs: vec![vi("y")],
            initializers: vec![("w".into(), w)],
            ..Graph::default()
        };
        let model = Model {
            opsets: BTreeMap::from([(String::new(), 17)]),
            graph,
            ..Model::default()
        };
        let s = Session::from_model(model, SessionOptions::default()).unwrap();
        let out = s.run(vec![("x".to_string(), Value::from(x))]).unwrap();
        out[0]
            .as_tensor()
            .unwrap()
            .as_slice::<f32>()
            .unwrap()
            .to_vec()
    }

    #[test]
    fn constant_weight_packed_ahead_matches_fed() {
        // pointwise, grouped strided 3x3, and a 1-D convolution
        // (input shape, weight shape, group, attributes)
        type Case = (
            &'static [usize],
            &'static [usize],
            i64,
            Vec<(&'static str, Attr)>,
        );
        let cases: [Case; 3] = [
            (&[1, 24, 9, 7], &[40, 24, 1, 1], 1, vec![]),
            (
                &[1, 8, 11, 10],
                &[12, 4, 3, 3],
                2,
                vec![
                    ("strides", Attr::Ints(vec![2, 2])),
                    ("pads", Attr::Ints(vec![1; 4])),
                ],
            ),
            (&[2, 6, 30], &[5, 6, 3], 1, vec![]),
        ];
        for (i, (xs, ws, group, mut attrs)) in cases.into_iter().enumerate() {
            let x = Tensor::from_vec(xs.to_vec(), values(numel(xs).unwrap(), i as u64)).unwrap();
            let w = Tensor::from_vec(ws.to_vec(), values(numel(ws).unwrap(), 9)).unwrap();
            attrs.push(("group", Attr::Int(group)));
            let node = attr_node("Conv", "", &["x", "w"], &["y"], attrs);
            let fed = run_graph(vec![node.clone()], &[("x", x.clone()), ("w", w.clone())]);
            let packed = run_with_constant_weight(node, x, w);
            // the same sums in the same order
            assert_eq!(
                fed.as_slice::<f32>().unwrap(),
                packed.as_slice(),
                "case {i}"
            );
        }
    }

    #[test]
    fn threads_give_the_same_bits() {
        let (xs, ws, ys) = ([1, 16, 32, 32], [32, 16, 3, 3], [1, 32, 32, 32]);
        let t = |shape: &[usize], seed| {
            Tensor::from_vec(shape.to_vec(), values(numel(shape).unwrap(), seed)).unwrap()
        };
        let feeds = [
            ("x", t(&xs, 1)),
            ("w", t(&ws, 2)),
            ("b", t(&[32], 3)),
            ("z", t(&ys, 4)),
        ];
        let attrs = vec![
            ("pads", Attr::Ints(vec![1; 4])),
            ("activation", Attr::String("Tanh".into())),
        ];
        let node = || {
            attr_node(
                "FusedConv",
                "com.onyx",
                &["x", "w", "b", "z"],
                &["y"],
                attrs.clone(),
            )
        };
        let bits = |threads| -> Vec<u32> {
            let y = run_graph_on(vec![node()], &feeds, threads);
            y.as_slice::<f32>()
                .unwrap()
                .iter()
                .map(|v| v.to_bits())
                .collect()
        };
        let one = bits(1);
        assert_eq!(bits(2), one);
        assert_eq!(bits(3), one);
    }

    #[test]
    fn fused_conv_refuses_bad_z_and_activation() {
        let x = Tensor::from_vec(vec![1, 1, 3, 3], values(9, 1)).unwrap();
        let w = Tensor::from_vec(vec![1, 1, 2, 2], values(4, 2)).unwrap();
        let z = Tensor::from_vec(vec![1, 1, 3, 3], values(9, 3)).unwrap();
        let node = |attrs| attr_node("FusedConv", "com.onyx", &["x", "w", "", "z"], &["y"], attrs);
        let vi = |n: &str| ValueInfo {
            name: n.into(),
            ty: None,
        };
        let model = |attrs| Model {
            opsets: BTreeMap::from([(String::new(), 17), ("com.onyx".to_string(), 1)]),
            graph: Graph {
                nodes: vec![node(attrs)],
                inputs: vec![vi("x"), vi("w"), vi("z")],
                outputs: vec![vi("y")],
                ..Graph::default()
            },
            ..Model::default()
        };
        let s = Session::from_model(model(vec![]), SessionOptions::default()).unwrap();
        let feeds = vec![
            ("x".to_string(), Value::from(x)),
            ("w".to_string(), Value::from(w)),
            ("z".to_string(), Value::from(z)),
        ];
        let e = s.run(feeds).unwrap_err();
        assert!(
            e.message.contains("Z is float of shape [1, 1, 3, 3]"),
            "{}",
            e.message
        );
        for attrs in [
            vec![("activation", Attr::String("Swish".into()))],
            vec![
                ("activation", Attr::String("Clip".into())),
                ("activation_params", Attr::Floats(vec![1.0])),
            ],
        ] {
            let e = Session::from_model(model(attrs), SessionOptions::default())
                .err()
                .unwrap();
            assert!(e.message.contains("activation"), "{}", e.message);
        }
    }

    #[test]
    fn gemm_accumulates() {
        let mut out = vec![1.0, 1.0];
        // [1 2] x [[1 0],[0 1]] added to [1 1]
        gemm_acc(&mut out, 2, &[1.0, 2.0], &[1.0, 0.0, 0.0, 1.0], 1, 2, 2);
        assert_eq!(out, vec![2.0, 3.0]);
        // five rows: four through the blocked path, one through the tail
        let mut out = vec![0.0; 10];
        gemm_acc(
            &mut out,
            2,
            &[1.0, 2.0, 3.0, 4.0, 5.0],
            &[1.0, 10.0],
            5,
            1,
            2,
        );
        assert_eq!(
            out,
            vec![1.0, 10.0, 2.0, 20.0, 3.0, 30.0, 4.0, 40.0, 5.0, 50.0]
        );
    }

    #[test]
    fn col2im_overlaps() {
        // 1 channel, image 3, kernel 2, stride 1: blocks at 0 and 1 overlap at 1
        let col = [1.0, 2.0, 10.0, 20.0]; // tap 0: [1, 2], tap 1: [10, 20]
        let mut out = vec![0.0; 3];
        col2im_add(&col, 1, &[3], &[2], &[2], &[1], &[1], &[0], &mut out);
        assert_eq!(out, vec![1.0, 12.0, 20.0]);
        // a negative begin pad shifts blocks right
        let mut out = vec![0.0; 3];
        col2im_add(&col, 1, &[3], &[2], &[2], &[1], &[1], &[-1], &mut out);
        assert_eq!(out, vec![0.0, 1.0, 12.0]);
    }

    #[test]
    fn bilinear_samples() {
        let plane = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(bilinear(&plane, 2, 2, 0.5, 0.5), 2.5);
        assert_eq!(bilinear(&plane, 2, 2, 1.0, 1.0), 4.0);
        assert_eq!(bilinear(&plane, 2, 2, -0.5, 0.0), 0.5);
        assert_eq!(bilinear(&plane, 2, 2, 5.0, 0.0), 0.0);
    }

    fn conv_direct(x: &[f64], side: usize, pads: i64, chunk: usize) -> Vec<f64> {
        let attrs = WindowAttrs {
            kernel: None,
            strides: None,
            dilations: None,
            pads: Some(vec![pads; 4]),
            auto_pad: AutoPad::NotSet,
            ceil_mode: false,
        };
        let g = attrs.geometry(&[side, side], Some(&[2, 2])).unwrap();
        let d = ConvDims {
            n: 1,
            c: 1,
            m: 1,
            group: 1,
            kprod: 4,
            in_plane: side * side,
            out_plane: g.out_size().unwrap(),
        };
        let taps = g.taps();
        conv_with_cols(&d, &[1.0; 4], Some(&[0.5]), chunk, |b, gi, c0, nc, col| {
            im2col(x, &d, &g, &taps, b, gi, c0, nc, col)
        })
    }

    #[test]
    fn im2col_2d_matches_general() {
        // strides, dilations, uneven padding, two groups, ceil mode, chunks
        type Case<'a> = (&'a [i64], &'a [i64], &'a [i64], bool, usize);
        let cases: [Case; 5] = [
            (&[1, 1], &[1, 1], &[1, 1, 1, 1], false, 7),
            (&[1, 1], &[2, 3], &[0, 4, 2, 5], false, 11),
            (&[2, 1], &[1, 2], &[0, 2, 1, 0], false, 5),
            (&[2, 2], &[2, 1], &[1, 0, 0, 1], true, 64),
            (&[3, 2], &[1, 1], &[2, 2, 2, 2], true, 1),
        ];
        let (c, group, h, w) = (4, 2, 7, 6);
        let x: Vec<f64> = (0..2 * c * h * w).map(|i| i as f64 * 0.25 - 3.0).collect();
        for (strides, dil, pads, ceil, chunk) in cases {
            let attrs = WindowAttrs {
                kernel: None,
                strides: Some(strides.to_vec()),
                dilations: Some(dil.to_vec()),
                pads: Some(pads.to_vec()),
                auto_pad: AutoPad::NotSet,
                ceil_mode: ceil,
            };
            let g = attrs.geometry(&[h, w], Some(&[3, 2])).unwrap();
            let d = ConvDims {
                n: 2,
                c,
                m: 2,
                group,
                kprod: 6,
                in_plane: h * w,
                out_plane: g.out_size().unwrap(),
            };
            let taps = g.taps();
            let inner = (c / group) * d.kprod;
            for b in 0..2 {
                for gi in 0..group {
                    let mut c0 = 0;
                    while c0 < d.out_plane {
                        let nc = chunk.min(d.out_plane - c0);
                        let mut want = vec![9.0; inner * nc];
                        let mut got = vec![7.0; inner * nc];
                        im2col(&x, &d, &g, &taps, b, gi, c0, nc, &mut want);
                        im2col_2d(&x, &d, &g, &taps, b, gi, c0, nc, &mut got);
                        assert_eq!(got, want, "strides {strides:?} pads {pads:?} c0 {c0}");
                        c0 += nc;
                    }
                }
            }
        }
    }

    #[test]
    fn conv_2x2_ones() {
        let x: Vec<f64> = (1..=9).map(f64::from).collect();
        // windows of 1..9 summed, plus bias 0.5
        assert_eq!(
            conv_direct(&x, 3, 0, usize::MAX),
            vec![12.5, 16.5, 24.5, 28.5]
        );
        // padded by one: corners see one element; chunked columns give the same
        let whole = conv_direct(&x, 3, 1, usize::MAX);
        assert_eq!(whole.len(), 16);
        assert_eq!(whole[0], 1.5);
        assert_eq!(whole[15], 9.5);
        assert_eq!(conv_direct(&x, 3, 1, 3), whole);
    }
}
