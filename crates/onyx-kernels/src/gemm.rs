//! Single-precision matrix product `C = act(A B [+ C] + bias)`.
//!
//! The layout follows the classic blocked scheme. B is packed into panels of
//! `NR` columns (for every k, `NR` consecutive values, zero-padded past the
//! last column); a weight is packed once ([`PackedB`]) and reused by every
//! run. For each block of `KC` rows of B (a slice of every panel, kept in
//! L2), the product walks A `MR` rows at a time: those rows are packed into a
//! small k-major buffer that stays in L1, and a register-blocked micro-kernel
//! multiplies it with each panel, holding an `MR x NR` tile of C in vector
//! registers for the whole `KC` loop.
//!
//! | path     | tile (MR x NR)  | registers |
//! |----------|-----------------|-----------|
//! | AVX-512  | 12 x 32         | 24 zmm accumulators |
//! | AVX2+FMA | 6 x 16          | 12 ymm accumulators |
//! | portable | 4 x 8           | plain arrays the compiler vectorises |
//!
//! Rows of A past the last are never computed: the micro-kernels take the
//! number of live rows as a const parameter, so `M = 1` (a batch-1 linear
//! layer) costs one row, not a padded tile. Columns past the last go through
//! a small scratch tile.
//!
//! [`sgemm_reference`] is the plain triple loop the fast path is tested
//! against.

use std::fmt;
use std::sync::OnceLock;

use crate::parallel;
use crate::vmath::widest_isa;

/// Products below this many multiply-adds stay on the calling thread: waking
/// the pool costs a few microseconds.
const PARALLEL_MIN_WORK: usize = 1 << 19;
/// Packings of fewer values stay on the calling thread.
const PARALLEL_MIN_PACK: usize = 1 << 15;

/// The instruction set a product runs with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Plain Rust, for any CPU.
    Portable,
    /// x86-64 with AVX2 and FMA.
    Avx2,
    /// x86-64 with AVX-512F.
    Avx512,
}

impl Isa {
    /// The fastest instruction set this CPU supports, detected once. The
    /// environment variable `ONYX_ISA` (`portable`, `avx2`, `avx512`) can ask
    /// for a slower one, for comparisons; a name the CPU cannot run is ignored.
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            let asked = std::env::var("ONYX_ISA")
                .ok()
                .and_then(|s| Isa::from_name(&s));
            match asked {
                Some(isa) if isa.available() => isa,
                _ => [Isa::Avx512, Isa::Avx2]
                    .into_iter()
                    .find(|i| i.available())
                    .unwrap_or(Isa::Portable),
            }
        })
    }

    /// The instruction set called `name` (`portable`, `avx2`, `avx512`).
    pub fn from_name(name: &str) -> Option<Isa> {
        match name.trim().to_ascii_lowercase().as_str() {
            "portable" => Some(Isa::Portable),
            "avx2" => Some(Isa::Avx2),
            "avx512" => Some(Isa::Avx512),
            _ => None,
        }
    }

    /// A short name, as [`Isa::from_name`] reads it.
    pub fn name(self) -> &'static str {
        match self {
            Isa::Portable => "portable",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Whether this CPU can run the path.
    pub fn available(self) -> bool {
        match self {
            Isa::Portable => true,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => is_x86_feature_detected!("avx512f"),
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// Every path this CPU can run, slowest first.
    pub fn all_available() -> Vec<Isa> {
        [Isa::Portable, Isa::Avx2, Isa::Avx512]
            .into_iter()
            .filter(|i| i.available())
            .collect()
    }

    /// The micro-kernel's tile: rows of A, columns of B.
    const fn tile(self) -> (usize, usize) {
        match self {
            Isa::Portable => (4, 8),
            Isa::Avx2 => (6, 16),
            Isa::Avx512 => (12, 32),
        }
    }
}

/// Why a product could not run: sizes that do not fit together.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GemmError(pub String);

impl fmt::Display for GemmError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for GemmError {}

fn err<T>(msg: String) -> Result<T, GemmError> {
    Err(GemmError(msg))
}

/// A strided view of a `rows x cols` matrix: element (i, j) is
/// `data[i * rs + j * cs]`. Row-major is `rs = cols, cs = 1`; a transposed
/// row-major matrix is `rs = 1, cs = rows`.
#[derive(Clone, Copy, Debug)]
pub struct MatRef<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    rs: usize,
    cs: usize,
}

impl<'a> MatRef<'a> {
    /// A view, checked to lie inside `data`.
    pub fn new(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        rs: usize,
        cs: usize,
    ) -> Result<Self, GemmError> {
        if rows > 0 && cols > 0 {
            let last = (rows - 1)
                .checked_mul(rs)
                .and_then(|r| (cols - 1).checked_mul(cs).and_then(|c| r.checked_add(c)));
            match last {
                Some(l) if l < data.len() => {}
                _ => {
                    return err(format!(
                    "a {rows}x{cols} matrix with strides ({rs}, {cs}) does not fit in {} values",
                    data.len()
                ))
                }
            }
        }
        Ok(MatRef {
            data,
            rows,
            cols,
            rs,
            cs,
        })
    }

    /// A dense row-major `rows x cols` matrix at the start of `data`.
    pub fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Result<Self, GemmError> {
        Self::new(data, rows, cols, cols, 1)
    }

    /// The transpose, as a view of the same values.
    pub fn t(self) -> Self {
        MatRef {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            rs: self.cs,
            cs: self.rs,
        }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Rows `i0..i0+rows` (which must lie inside the view), as a view of their own.
    fn sub_rows(self, i0: usize, rows: usize) -> Self {
        MatRef {
            data: if rows == 0 {
                &[]
            } else {
                &self.data[i0 * self.rs..]
            },
            rows,
            ..self
        }
    }

    #[inline]
    fn at(&self, i: usize, j: usize) -> f32 {
        self.data[i * self.rs + j * self.cs]
    }
}

/// The right-hand operand packed into the micro-kernel's panels, for one
/// instruction set. Build it once for a constant weight.
#[derive(Clone, Debug)]
pub struct PackedB {
    isa: Isa,
    k: usize,
    n: usize,
    buf: Vec<f32>,
    /// Start of the panels in `buf`, chosen so they are 64-byte aligned.
    off: usize,
}

impl PackedB {
    /// Packs `b` (`k x n`) for the fastest path this CPU has.
    pub fn new(b: MatRef) -> Self {
        Self::with_isa(Isa::detect(), b)
    }

    /// Packs `b` for `isa` (the portable path if this CPU cannot run `isa`).
    pub fn with_isa(isa: Isa, b: MatRef) -> Self {
        let isa = if isa.available() { isa } else { Isa::Portable };
        let mut p = PackedB {
            isa,
            k: 0,
            n: 0,
            buf: Vec::new(),
            off: 0,
        };
        p.repack(b);
        p
    }

    /// Runs `f` with a packing whose memory this thread keeps for its next
    /// call: for an operand packed anew every run (a convolution's im2col
    /// matrix), so that runs do not allocate and clear it each time.
    pub fn with_scratch<R>(f: impl FnOnce(&mut PackedB) -> R) -> R {
        thread_local! {
            static SCRATCH: std::cell::Cell<Option<PackedB>> = const { std::cell::Cell::new(None) };
        }
        // taken out while in use: a nested call (a worker waiting in a split
        // may run another kernel) gets a packing of its own
        let mut p = SCRATCH.take().unwrap_or_else(|| PackedB {
            isa: Isa::detect(),
            k: 0,
            n: 0,
            buf: Vec::new(),
            off: 0,
        });
        let out = f(&mut p);
        SCRATCH.set(Some(p));
        out
    }

    /// Packs `b` in place of the current contents, reusing the memory: for
    /// an operand that changes every call.
    pub fn repack(&mut self, b: MatRef) {
        self.repack_with(b.rows, b.cols, |kk, j0, dst| {
            if b.cs == 1 {
                dst.copy_from_slice(&b.data[kk * b.rs + j0..][..dst.len()]);
            } else {
                for (c, d) in dst.iter_mut().enumerate() {
                    *d = b.at(kk, j0 + c);
                }
            }
        })
    }

    /// Packs a `k x n` matrix that `fill` produces piece by piece, in place
    /// of the current contents: `fill(kk, j0, dst)` writes the values of row
    /// `kk`, columns `j0..j0 + dst.len()`. A convolution packs its im2col
    /// matrix this way, without writing it out first. Panels are filled
    /// across the running session's threads.
    pub fn repack_with(
        &mut self,
        k: usize,
        n: usize,
        fill: impl Fn(usize, usize, &mut [f32]) + Sync,
    ) {
        let (_, nr) = self.isa.tile();
        let npanels = n.div_ceil(nr);
        let len = npanels * k * nr;
        // grown, never cleared: every value of the panels is written below
        if self.buf.len() < len + 16 {
            self.buf.resize(len + 16, 0.0);
        }
        let off = match self.buf.as_ptr().align_offset(64) {
            o if o < 16 => o,
            _ => 0,
        };
        let panels = &mut self.buf[off..off + len];
        let fill_panels = |(first, chunk): (usize, &mut [f32])| {
            for (i, panel) in chunk.chunks_exact_mut(k * nr).enumerate() {
                let j0 = (first + i) * nr;
                let w = nr.min(n - j0);
                for (kk, row) in panel.chunks_exact_mut(nr).enumerate() {
                    let (live, past) = row.split_at_mut(w);
                    fill(kk, j0, live);
                    past.fill(0.0);
                }
            }
        };
        let threads = parallel::current_threads();
        if threads > 1 && len >= PARALLEL_MIN_PACK && k > 0 {
            let per = npanels.div_ceil(threads);
            let parts: Vec<(usize, &mut [f32])> = panels
                .chunks_mut(per * k * nr)
                .enumerate()
                .map(|(i, c)| (i * per, c))
                .collect();
            parallel::for_each(parts, fill_panels);
        } else if k > 0 {
            fill_panels((0, panels));
        }
        self.k = k;
        self.n = n;
        self.off = off;
    }

    /// Rows of B (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// Columns of B.
    pub fn n(&self) -> usize {
        self.n
    }

    /// The path this packing is laid out for.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    fn panels(&self) -> &[f32] {
        &self.buf[self.off..]
    }
}

/// The left-hand operand packed for the micro-kernel, for one instruction
/// set: its rows in slabs of `MR` (the last zero-padded), each slab k-major
/// with `MR` values per k. Build it once for a constant weight; it serves
/// every block of a product as it is.
#[derive(Clone, Debug)]
pub struct PackedA {
    isa: Isa,
    m: usize,
    k: usize,
    buf: Vec<f32>,
}

impl PackedA {
    /// Packs `a` (`m x k`) for the fastest path this CPU has.
    pub fn new(a: MatRef) -> Self {
        Self::with_isa(Isa::detect(), a)
    }

    /// Packs `a` for `isa` (the portable path if this CPU cannot run `isa`).
    pub fn with_isa(isa: Isa, a: MatRef) -> Self {
        let isa = if isa.available() { isa } else { Isa::Portable };
        let (mr, _) = isa.tile();
        let (m, k) = (a.rows, a.cols);
        let mut buf = vec![0.0f32; m.div_ceil(mr) * mr * k];
        if k > 0 {
            for (s, slab) in buf.chunks_exact_mut(mr * k).enumerate() {
                pack_a(&a, s * mr, mr.min(m - s * mr), 0, k, mr, slab);
            }
        }
        PackedA { isa, m, k, buf }
    }

    /// Rows of A.
    pub fn m(&self) -> usize {
        self.m
    }

    /// Columns of A (the inner dimension of the product).
    pub fn k(&self) -> usize {
        self.k
    }

    /// The packed values of rows `i..i + MR` (`i` a multiple of `MR`),
    /// columns `p0..p0 + kc`.
    fn slab(&self, i: usize, p0: usize, kc: usize) -> &[f32] {
        let (mr, _) = self.isa.tile();
        &self.buf[i * self.k + p0 * mr..][..kc * mr]
    }
}

/// The left-hand operand of a product: a view, packed as the product goes,
/// or rows `i0..i0 + rows` of a packing (`i0` a multiple of `MR`).
#[derive(Clone, Copy)]
pub(crate) enum Lhs<'a> {
    View(MatRef<'a>),
    Packed {
        a: &'a PackedA,
        i0: usize,
        rows: usize,
    },
}

impl Lhs<'_> {
    fn rows(&self) -> usize {
        match self {
            Lhs::View(v) => v.rows,
            Lhs::Packed { rows, .. } => *rows,
        }
    }

    fn cols(&self) -> usize {
        match self {
            Lhs::View(v) => v.cols,
            Lhs::Packed { a, .. } => a.k,
        }
    }

    /// Rows `i0..i0 + rows` of this operand (`i0` a multiple of `MR`).
    fn sub_rows(self, i0: usize, rows: usize) -> Self {
        match self {
            Lhs::View(v) => Lhs::View(v.sub_rows(i0, rows)),
            Lhs::Packed { a, i0: first, .. } => Lhs::Packed {
                a,
                i0: first + i0,
                rows,
            },
        }
    }
}

/// An activation applied to every result.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Act {
    #[default]
    None,
    /// `max(x, 0)`, NaN kept.
    Relu,
    /// `x` when `x >= 0`, else `alpha * x`.
    LeakyRelu(f32),
    /// `1 / (1 + exp(-x))`.
    Sigmoid,
    Tanh,
    /// `x` held within `[min, max]`, NaN kept.
    Clip(f32, f32),
    /// `alpha * x + beta` held within `[0, 1]`.
    HardSigmoid(f32, f32),
}

impl Act {
    /// Applies the activation to every value of `v`. Inlined, so that a
    /// kernel compiled for a wider instruction set vectorises it at its width.
    #[inline(always)]
    pub fn apply(self, v: &mut [f32]) {
        match self {
            Act::None => {}
            // selects, not conditional stores, so the loops vectorise (a
            // branch per element mispredicts on mixed signs)
            Act::Relu => v
                .iter_mut()
                .for_each(|x| *x = if *x < 0.0 { 0.0 } else { *x }),
            Act::LeakyRelu(a) => v
                .iter_mut()
                .for_each(|x| *x = if *x < 0.0 { *x * a } else { *x }),
            Act::Sigmoid => v.iter_mut().for_each(|x| *x = 1.0 / (1.0 + (-*x).exp())),
            Act::Tanh => v.iter_mut().for_each(|x| *x = x.tanh()),
            Act::Clip(lo, hi) => v.iter_mut().for_each(|x| {
                let y = if *x < lo { lo } else { *x };
                *x = if y > hi { hi } else { y };
            }),
            Act::HardSigmoid(a, b) => v.iter_mut().for_each(|x| *x = (a * *x + b).clamp(0.0, 1.0)),
        }
    }
}

/// What is added to and applied to the product before it is stored, in this
/// order: biases, the addend, the activation.
#[derive(Clone, Copy, Debug, Default)]
pub struct Epilogue<'a> {
    /// One value per row of C (a convolution's bias per output channel).
    pub row_bias: Option<&'a [f32]>,
    /// One value per column of C (a linear layer's bias).
    pub col_bias: Option<&'a [f32]>,
    /// A matrix of C's shape added element by element (a residual input).
    pub addend: Option<MatRef<'a>>,
    pub act: Act,
}

impl Epilogue<'_> {
    pub(crate) fn check(&self, m: usize, n: usize) -> Result<(), GemmError> {
        if let Some(b) = self.row_bias {
            if b.len() != m {
                return err(format!("row bias has {} values for {m} rows", b.len()));
            }
        }
        if let Some(b) = self.col_bias {
            if b.len() != n {
                return err(format!(
                    "column bias has {} values for {n} columns",
                    b.len()
                ));
            }
        }
        if let Some(z) = self.addend {
            if (z.rows, z.cols) != (m, n) {
                return err(format!(
                    "the addend is {}x{} for a {m}x{n} result",
                    z.rows, z.cols
                ));
            }
        }
        Ok(())
    }

    /// The epilogue of rows `i0..i0+rows` of C, as for a product of those rows alone.
    pub(crate) fn rows(&self, i0: usize, rows: usize) -> Self {
        Epilogue {
            row_bias: self.row_bias.map(|r| &r[i0..i0 + rows]),
            addend: self.addend.map(|z| z.sub_rows(i0, rows)),
            ..*self
        }
    }

    fn is_identity(&self) -> bool {
        self.row_bias.is_none()
            && self.col_bias.is_none()
            && self.addend.is_none()
            && self.act == Act::None
    }

    /// Applies the epilogue to rows `i0..i0+rows`, columns `j0..j0+cols` of C.
    #[inline(always)]
    pub(crate) fn apply(
        &self,
        c: &mut [f32],
        ldc: usize,
        i0: usize,
        rows: usize,
        j0: usize,
        cols: usize,
    ) {
        if self.is_identity() {
            return;
        }
        for i in i0..i0 + rows {
            let row = &mut c[i * ldc + j0..][..cols];
            if let Some(rb) = self.row_bias {
                let v = rb[i];
                row.iter_mut().for_each(|x| *x += v);
            }
            if let Some(cb) = self.col_bias {
                for (x, &v) in row.iter_mut().zip(&cb[j0..j0 + cols]) {
                    *x += v;
                }
            }
            if let Some(z) = self.addend {
                if z.cs == 1 {
                    let zr = &z.data[i * z.rs + j0..][..cols];
                    row.iter_mut().zip(zr).for_each(|(x, &v)| *x += v);
                } else {
                    for (j, x) in row.iter_mut().enumerate() {
                        *x += z.at(i, j0 + j);
                    }
                }
            }
            self.act.apply(row);
        }
    }
}

widest_isa! {
    /// [`Epilogue::apply`], vectorised for the widest instruction set.
    pub(crate) fn apply_epilogue => apply_epilogue_body(
        epi: &Epilogue, c: &mut [f32], ldc: usize, i0: usize, rows: usize, j0: usize, cols: usize
    )
}

#[inline(always)]
fn apply_epilogue_body(
    epi: &Epilogue,
    c: &mut [f32],
    ldc: usize,
    i0: usize,
    rows: usize,
    j0: usize,
    cols: usize,
) {
    epi.apply(c, ldc, i0, rows, j0, cols)
}

/// Checks C's size for an `m x n` result with rows `ldc` apart.
fn check_c(c: &[f32], m: usize, n: usize, ldc: usize) -> Result<(), GemmError> {
    if m == 0 || n == 0 {
        return Ok(());
    }
    if ldc < n {
        return err(format!(
            "row stride {ldc} of C is less than its {n} columns"
        ));
    }
    let need = (m - 1)
        .checked_mul(ldc)
        .and_then(|v| v.checked_add(n))
        .ok_or_else(|| GemmError(format!("a {m}x{n} result is too large")))?;
    if c.len() < need {
        return err(format!(
            "C holds {} values but a {m}x{n} result with row stride {ldc} needs {need}",
            c.len()
        ));
    }
    Ok(())
}

/// Rows of B handled per pass over the panels (a panel slice of
/// `KC x NR` floats is 32 KiB at NR = 32).
const KC: usize = 256;
/// Columns of B handled per block: `KC x NC` floats (1.5 MiB) stay in a
/// 2 MiB L2. Each block repacks the rows of A it multiplies, so a wide block
/// keeps that repacking rare (with 384 columns it cost a tenth of the time).
const NC: usize = 1536;

/// `C = act(A B + (C if accumulate) + biases)` for `A` of `m x k` and a packed
/// `B` of `k x n`; C is row-major with rows `ldc` apart.
pub fn sgemm(
    a: MatRef,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    product(Lhs::View(a), b, c, ldc, accumulate, epi)
}

/// [`sgemm`] with A packed too (a constant weight, packed once).
pub fn sgemm_packed(
    a: &PackedA,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    if a.isa != b.isa {
        return err(format!(
            "A is packed for {} but B for {}",
            a.isa.name(),
            b.isa.name()
        ));
    }
    let lhs = Lhs::Packed {
        a,
        i0: 0,
        rows: a.m,
    };
    product(lhs, b, c, ldc, accumulate, epi)
}

fn product(
    a: Lhs,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows(), a.cols(), b.n);
    if k != b.k {
        return err(format!(
            "inner dimensions differ: A is {m}x{k} but B is {}x{n}",
            b.k
        ));
    }
    check_c(c, m, n, ldc)?;
    epi.check(m, n)?;
    if m == 0 || n == 0 {
        return Ok(());
    }
    if k == 0 {
        if !accumulate {
            for i in 0..m {
                c[i * ldc..i * ldc + n].fill(0.0);
            }
        }
        epi.apply(c, ldc, 0, m, 0, n);
        return Ok(());
    }
    let (mr, _) = b.isa.tile();
    let work = m.saturating_mul(n).saturating_mul(k);
    let threads = parallel::current_threads();
    if threads > 1 && work >= PARALLEL_MIN_WORK && m > mr {
        // each thread takes a band of whole micro-tiles of rows of A and C:
        // every row is computed exactly as it would be on one thread
        let mut parts = Vec::with_capacity(threads);
        let mut rest = &mut c[..];
        for r in parallel::split_range(m, mr, threads) {
            let take = if r.end < m { r.len() * ldc } else { rest.len() };
            let (mine, tail) = std::mem::take(&mut rest).split_at_mut(take);
            rest = tail;
            parts.push((r, mine));
        }
        parallel::for_each(parts, |(r, mine)| {
            let sub = a.sub_rows(r.start, r.len());
            let epi = epi.rows(r.start, r.len());
            run_blocks(sub, b, mine, ldc, accumulate, &epi)
        });
        return Ok(());
    }
    run_blocks(a, b, c, ldc, accumulate, epi);
    Ok(())
}

/// The blocked product on the calling thread; sizes already checked.
pub(crate) fn run_blocks(
    a: Lhs,
    b: &PackedB,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) {
    let (m, k, n) = (a.rows(), a.cols(), b.n);
    let isa = b.isa;
    let (mr, nr) = isa.tile();
    let panels = b.panels();
    let mut apack = match a {
        Lhs::View(_) => vec![0.0f32; mr * KC.min(k)],
        Lhs::Packed { .. } => Vec::new(),
    };
    let mut tile = [0.0f32; 12 * 32];
    for jc in (0..n).step_by(NC) {
        let nc = NC.min(n - jc);
        for pc in (0..k).step_by(KC) {
            let kc = KC.min(k - pc);
            let acc = accumulate || pc > 0;
            let last = pc + kc == k;
            for ic in (0..m).step_by(mr) {
                let rows = mr.min(m - ic);
                let ap: &[f32] = match a {
                    Lhs::View(v) => {
                        pack_a(&v, ic, rows, pc, kc, mr, &mut apack[..mr * kc]);
                        &apack[..mr * kc]
                    }
                    Lhs::Packed { a, i0, .. } => a.slab(i0 + ic, pc, kc),
                };
                for jr in (jc..jc + nc).step_by(nr) {
                    let cols = nr.min(n - jr);
                    let bp = &panels[(jr / nr) * k * nr + pc * nr..][..kc * nr];
                    if cols == nr {
                        micro(isa, rows, kc, ap, bp, &mut c[ic * ldc + jr..], ldc, acc);
                    } else {
                        micro(isa, rows, kc, ap, bp, &mut tile, nr, false);
                        for i in 0..rows {
                            let dst = &mut c[(ic + i) * ldc + jr..][..cols];
                            let src = &tile[i * nr..][..cols];
                            if acc {
                                dst.iter_mut().zip(src).for_each(|(d, s)| *d += s);
                            } else {
                                dst.copy_from_slice(src);
                            }
                        }
                    }
                }
                if last {
                    apply_epilogue(epi, c, ldc, ic, rows, jc, nc);
                }
            }
        }
    }
}

/// Packs rows `i0..i0+rows`, columns `p0..p0+kc` of A k-major with `mr` rows
/// per k (rows past `rows` are left as they are: the kernels never read them).
fn pack_a(a: &MatRef, i0: usize, rows: usize, p0: usize, kc: usize, mr: usize, out: &mut [f32]) {
    if a.cs == 1 {
        for i in 0..rows {
            let src = &a.data[(i0 + i) * a.rs + p0..][..kc];
            for (kk, &v) in src.iter().enumerate() {
                out[kk * mr + i] = v;
            }
        }
    } else {
        for kk in 0..kc {
            for i in 0..rows {
                out[kk * mr + i] = a.at(i0 + i, p0 + kk);
            }
        }
    }
}

/// [`sgemm`] with B given as a view: packs it, then multiplies.
pub fn sgemm_unpacked(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    if a.cols != b.rows {
        return err(format!(
            "inner dimensions differ: A is {}x{} but B is {}x{}",
            a.rows, a.cols, b.rows, b.cols
        ));
    }
    sgemm(a, &PackedB::new(b), c, ldc, accumulate, epi)
}

/// The plain triple loop, the oracle the fast path is tested against; same
/// contract as [`sgemm_unpacked`].
pub fn sgemm_reference(
    a: MatRef,
    b: MatRef,
    c: &mut [f32],
    ldc: usize,
    accumulate: bool,
    epi: &Epilogue,
) -> Result<(), GemmError> {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    if k != b.rows {
        return err(format!(
            "inner dimensions differ: A is {m}x{k} but B is {}x{n}",
            b.rows
        ));
    }
    check_c(c, m, n, ldc)?;
    epi.check(m, n)?;
    for i in 0..m {
        for j in 0..n {
            let mut s = 0.0f32;
            for p in 0..k {
                s += a.at(i, p) * b.at(p, j);
            }
            let o = &mut c[i * ldc + j];
            *o = if accumulate { *o + s } else { s };
        }
    }
    epi.apply(c, ldc, 0, m, 0, n);
    Ok(())
}

/// One micro-kernel call: `rows` (1..=MR) rows of the packed A slice `a`
/// (k-major, MR values per k) times the panel slice `b` (k-major, NR values
/// per k) into C at `c`, rows `ldc` apart, adding to C when `acc`.
#[allow(clippy::too_many_arguments)]
fn micro(
    isa: Isa,
    rows: usize,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc: bool,
) {
    let (mr, nr) = isa.tile();
    assert!(
        (1..=mr).contains(&rows)
            && a.len() >= kc * mr
            && b.len() >= kc * nr
            && ldc >= nr
            && c.len() >= (rows - 1) * ldc + nr,
        "micro-kernel called with sizes that do not fit"
    );
    match isa {
        Isa::Portable => portable_dispatch(rows, kc, a, b, c, ldc, acc),
        #[cfg(target_arch = "x86_64")]
        Isa::Avx2 => {
            // SAFETY: an `Isa::Avx2` reaches here only through a `PackedB`,
            // whose constructor checked `available()` (AVX2 and FMA present).
            // The assert above proves the pointer ranges the kernel reads
            // (`kc * 6` of A, `kc * 16` of B) and writes (`rows` rows of 16
            // values, `ldc` apart) lie inside the slices.
            unsafe {
                x86::avx2_dispatch(rows, kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, acc)
            }
        }
        #[cfg(target_arch = "x86_64")]
        Isa::Avx512 => {
            // SAFETY: as for AVX2: `available()` checked AVX-512F when the
            // `PackedB` was built, and the assert above bounds every access
            // (`kc * 12` of A, `kc * 32` of B, `rows` rows of 32 of C).
            unsafe {
                x86::avx512_dispatch(rows, kc, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, acc)
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        _ => unreachable!("no SIMD path on this architecture"),
    }
}

fn portable_dispatch(
    rows: usize,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc: bool,
) {
    match rows {
        1 => portable::<1>(kc, a, b, c, ldc, acc),
        2 => portable::<2>(kc, a, b, c, ldc, acc),
        3 => portable::<3>(kc, a, b, c, ldc, acc),
        _ => portable::<4>(kc, a, b, c, ldc, acc),
    }
}

/// The portable micro-kernel: `R` rows by 8 columns in plain arrays.
fn portable<const R: usize>(kc: usize, a: &[f32], b: &[f32], c: &mut [f32], ldc: usize, acc: bool) {
    const MR: usize = 4;
    const NR: usize = 8;
    let mut t = [[0.0f32; NR]; R];
    for (bv, av) in b[..kc * NR].chunks_exact(NR).zip(a.chunks_exact(MR)) {
        for (row, &x) in t.iter_mut().zip(av) {
            for (o, &y) in row.iter_mut().zip(bv) {
                *o += x * y;
            }
        }
    }
    for (i, row) in t.iter().enumerate() {
        let dst = &mut c[i * ldc..i * ldc + NR];
        for (d, &v) in dst.iter_mut().zip(row) {
            *d = if acc { *d + v } else { v };
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// Calls the AVX2 kernel for `rows` (1..=6) live rows.
    ///
    /// # Safety
    /// The CPU has AVX2 and FMA; `a` is valid for `kc * 6` reads, `b` for
    /// `kc * 16` reads, and `c` for reads and writes of `rows` rows of 16
    /// values, `ldc` apart.
    pub(super) unsafe fn avx2_dispatch(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: the caller's contract is passed on unchanged; each arm's
        // R equals `rows`.
        unsafe {
            match rows {
                1 => avx2::<1>(kc, a, b, c, ldc, acc),
                2 => avx2::<2>(kc, a, b, c, ldc, acc),
                3 => avx2::<3>(kc, a, b, c, ldc, acc),
                4 => avx2::<4>(kc, a, b, c, ldc, acc),
                5 => avx2::<5>(kc, a, b, c, ldc, acc),
                _ => avx2::<6>(kc, a, b, c, ldc, acc),
            }
        }
    }

    /// `R` rows x 16 columns: 2R ymm accumulators.
    ///
    /// # Safety
    /// As [`avx2_dispatch`] with `rows = R`.
    #[target_feature(enable = "avx2,fma")]
    unsafe fn avx2<const R: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        const MR: usize = 6;
        let mut t = [[_mm256_setzero_ps(); 2]; R];
        for p in 0..kc {
            // SAFETY: p < kc, so B's values p*16..p*16+16 are in range.
            let (b0, b1) = unsafe {
                (
                    _mm256_loadu_ps(b.add(p * 16)),
                    _mm256_loadu_ps(b.add(p * 16 + 8)),
                )
            };
            for (i, r) in t.iter_mut().enumerate() {
                // SAFETY: p < kc and i < R <= 6, so p*6+i < kc*6.
                let x = _mm256_set1_ps(unsafe { *a.add(p * MR + i) });
                r[0] = _mm256_fmadd_ps(x, b0, r[0]);
                r[1] = _mm256_fmadd_ps(x, b1, r[1]);
            }
        }
        for (i, r) in t.iter().enumerate() {
            for (h, &v) in r.iter().enumerate() {
                // SAFETY: i < R rows and h*8+8 <= 16 columns are in C's range.
                unsafe {
                    let p = c.add(i * ldc + h * 8);
                    let v = if acc {
                        _mm256_add_ps(_mm256_loadu_ps(p), v)
                    } else {
                        v
                    };
                    _mm256_storeu_ps(p, v);
                }
            }
        }
    }

    /// Calls the AVX-512 kernel for `rows` (1..=12) live rows.
    ///
    /// # Safety
    /// The CPU has AVX-512F; `a` is valid for `kc * 12` reads, `b` for
    /// `kc * 32` reads, and `c` for reads and writes of `rows` rows of 32
    /// values, `ldc` apart.
    pub(super) unsafe fn avx512_dispatch(
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        // SAFETY: the caller's contract is passed on unchanged; each arm's
        // R equals `rows`.
        unsafe {
            match rows {
                1 => avx512::<1>(kc, a, b, c, ldc, acc),
                2 => avx512::<2>(kc, a, b, c, ldc, acc),
                3 => avx512::<3>(kc, a, b, c, ldc, acc),
                4 => avx512::<4>(kc, a, b, c, ldc, acc),
                5 => avx512::<5>(kc, a, b, c, ldc, acc),
                6 => avx512::<6>(kc, a, b, c, ldc, acc),
                7 => avx512::<7>(kc, a, b, c, ldc, acc),
                8 => avx512::<8>(kc, a, b, c, ldc, acc),
                9 => avx512::<9>(kc, a, b, c, ldc, acc),
                10 => avx512::<10>(kc, a, b, c, ldc, acc),
                11 => avx512::<11>(kc, a, b, c, ldc, acc),
                _ => avx512::<12>(kc, a, b, c, ldc, acc),
            }
        }
    }

    /// `R` rows x 32 columns: 2R zmm accumulators.
    ///
    /// # Safety
    /// As [`avx512_dispatch`] with `rows = R`.
    #[target_feature(enable = "avx512f")]
    unsafe fn avx512<const R: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        acc: bool,
    ) {
        const MR: usize = 12;
        let mut t = [[_mm512_setzero_ps(); 2]; R];
        for p in 0..kc {
            // SAFETY: p < kc, so B's values p*32..p*32+32 are in range.
            let (b0, b1) = unsafe {
                (
                    _mm512_loadu_ps(b.add(p * 32)),
                    _mm512_loadu_ps(b.add(p * 32 + 16)),
                )
            };
            for (i, r) in t.iter_mut().enumerate() {
                // SAFETY: p < kc and i < R <= 12, so p*12+i < kc*12.
                let x = _mm512_set1_ps(unsafe { *a.add(p * MR + i) });
                r[0] = _mm512_fmadd_ps(x, b0, r[0]);
                r[1] = _mm512_fmadd_ps(x, b1, r[1]);
            }
        }
        for (i, r) in t.iter().enumerate() {
            for (h, &v) in r.iter().enumerate() {
                // SAFETY: i < R rows and h*16+16 <= 32 columns are in C's range.
                unsafe {
                    let p = c.add(i * ldc + h * 16);
                    let v = if acc {
                        _mm512_add_ps(_mm512_loadu_ps(p), v)
                    } else {
                        v
                    };
                    _mm512_storeu_ps(p, v);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Deterministic values in [-1, 1).
    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut s = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (0..n)
            .map(|_| {
                s = s
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                ((s >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
            })
            .collect()
    }

    fn close(got: &[f32], want: &[f32], k: usize, what: &str) {
        assert_eq!(got.len(), want.len());
        let tol = 1e-5 * (k as f32 + 1.0);
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            assert!(
                (g - w).abs() <= tol * (1.0 + w.abs()),
                "{what}: element {i} is {g}, expected {w}"
            );
        }
    }

    /// Runs the fast path for every available ISA against the oracle.
    fn check(m: usize, k: usize, n: usize, trans_a: bool, trans_b: bool, epi_kind: u8) {
        let av = values(m * k, (m * 31 + k) as u64);
        let bv = values(k * n, (k * 17 + n) as u64);
        let a = if trans_a {
            MatRef::row_major(&av, k, m).unwrap().t()
        } else {
            MatRef::row_major(&av, m, k).unwrap()
        };
        let b = if trans_b {
            MatRef::row_major(&bv, n, k).unwrap().t()
        } else {
            MatRef::row_major(&bv, k, n).unwrap()
        };
        let rb = values(m, 5);
        let cb = values(n, 6);
        let zv = values(m * n, 8);
        let epi = match epi_kind {
            0 => Epilogue::default(),
            1 => Epilogue {
                row_bias: Some(&rb),
                col_bias: None,
                addend: None,
                act: Act::Relu,
            },
            2 => Epilogue {
                row_bias: None,
                col_bias: Some(&cb),
                addend: None,
                act: Act::None,
            },
            _ => Epilogue {
                row_bias: Some(&rb),
                col_bias: None,
                addend: Some(MatRef::row_major(&zv, m, n).unwrap()),
                act: Act::Clip(-0.5, 0.7),
            },
        };
        // C has a wider row stride than n, and starts with values, so both
        // overwriting and accumulating are exercised
        let ldc = n + 3;
        let c0 = values(m * ldc, 9);
        for accumulate in [false, true] {
            let mut want = c0.clone();
            sgemm_reference(a, b, &mut want, ldc, accumulate, &epi).unwrap();
            for isa in Isa::all_available() {
                let packed = PackedB::with_isa(isa, b);
                assert_eq!(packed.isa(), isa);
                let mut got = c0.clone();
                sgemm(a, &packed, &mut got, ldc, accumulate, &epi).unwrap();
                let what = format!(
                    "{} m={m} k={k} n={n} ta={trans_a} tb={trans_b} acc={accumulate}",
                    isa.name()
                );
                close(&got, &want, k, &what);
                // A packed ahead: the same sums in the same order
                let mut pre = c0.clone();
                let pa = PackedA::with_isa(isa, a);
                assert_eq!((pa.m(), pa.k()), (m, k));
                sgemm_packed(&pa, &packed, &mut pre, ldc, accumulate, &epi).unwrap();
                assert_eq!(pre, got, "{what}: A packed");
            }
        }
    }

    #[test]
    fn matches_oracle_on_odd_shapes() {
        let dims = [1, 2, 3, 5, 7, 11, 12, 13, 17, 31, 33, 47, 64, 65];
        for (i, &m) in dims.iter().enumerate() {
            for (j, &n) in dims.iter().enumerate() {
                let k = dims[(i * 3 + j) % dims.len()];
                check(
                    m,
                    k,
                    n,
                    (i + j) % 3 == 0,
                    (i * j) % 2 == 1,
                    ((i + j) % 4) as u8,
                );
            }
        }
    }

    #[test]
    fn matches_oracle_across_blocks() {
        // K crosses the KC block, N the NC block, M many tiles with a tail
        check(1, 600, 1000, false, false, 2);
        check(29, 513, 401, false, true, 1);
        check(130, 257, 385, true, false, 0);
        check(14, 300, 1600, false, false, 2);
        check(3, 1, 70, false, false, 1);
    }

    #[test]
    fn threads_split_rows_with_the_same_bits() {
        let (m, k, n) = (203, 150, 190);
        let av = values(m * k, 1);
        let bv = values(k * n, 2);
        let rb = values(m, 3);
        let zv = values(m * n, 4);
        let a = MatRef::row_major(&av, m, k).unwrap();
        let b = MatRef::row_major(&bv, k, n).unwrap();
        let epi = Epilogue {
            row_bias: Some(&rb),
            col_bias: None,
            addend: Some(MatRef::row_major(&zv, m, n).unwrap()),
            act: Act::Relu,
        };
        let mut want = vec![0.0f32; m * n];
        sgemm_reference(a, b, &mut want, n, false, &epi).unwrap();
        // a buffer packed for another shape first: repacking replaces it
        let mut packed = PackedB::new(MatRef::row_major(&av, 7, 9).unwrap());
        packed.repack(b);
        assert_eq!((packed.k(), packed.n()), (k, n));
        let mut one = vec![0.0f32; m * n];
        sgemm(a, &packed, &mut one, n, false, &epi).unwrap();
        close(&one, &want, k, "1 thread");
        for threads in [2, 3] {
            let pool = crate::ThreadPool::new(threads);
            let mut got = vec![0.0f32; m * n];
            pool.run(|| sgemm(a, &packed, &mut got, n, false, &epi).unwrap());
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&got), bits(&one), "{threads} threads");
            let pa = PackedA::new(a);
            let mut pre = vec![0.0f32; m * n];
            pool.run(|| sgemm_packed(&pa, &packed, &mut pre, n, false, &epi).unwrap());
            assert_eq!(bits(&pre), bits(&one), "{threads} threads, A packed");
        }
    }

    #[test]
    fn scratch_packing_is_reused_across_shapes() {
        // a larger packing first, of values that would poison a product
        // reading past the live panels
        let big = vec![f32::NAN; 40 * 70];
        PackedB::with_scratch(|p| p.repack(MatRef::row_major(&big, 40, 70).unwrap()));
        let (m, k, n) = (13, 17, 37);
        let (av, bv) = (values(m * k, 5), values(k * n, 6));
        let a = MatRef::row_major(&av, m, k).unwrap();
        let b = MatRef::row_major(&bv, k, n).unwrap();
        let mut want = vec![0.0f32; m * n];
        sgemm_reference(a, b, &mut want, n, false, &Epilogue::default()).unwrap();
        let got = PackedB::with_scratch(|p| {
            p.repack(b);
            let mut c = vec![0.0f32; m * n];
            sgemm(a, p, &mut c, n, false, &Epilogue::default()).unwrap();
            c
        });
        close(&got, &want, k, "scratch");
    }

    #[test]
    fn empty_and_degenerate() {
        // k = 0: the product is zero, the epilogue still applies
        let bias = [1.0f32, -2.0];
        let epi = Epilogue {
            row_bias: None,
            col_bias: Some(&bias),
            addend: None,
            act: Act::Relu,
        };
        let a = MatRef::row_major(&[], 2, 0).unwrap();
        let b = MatRef::row_major(&[], 0, 2).unwrap();
        let mut c = vec![5.0f32; 4];
        sgemm(a, &PackedB::new(b), &mut c, 2, false, &epi).unwrap();
        assert_eq!(c, vec![1.0, 0.0, 1.0, 0.0]);
        // m = 0 and n = 0 do nothing
        let a = MatRef::row_major(&[], 0, 3).unwrap();
        let bv = [1.0f32; 6];
        let b = MatRef::row_major(&bv, 3, 2).unwrap();
        let mut c: Vec<f32> = vec![];
        sgemm(a, &PackedB::new(b), &mut c, 2, false, &Epilogue::default()).unwrap();
    }

    #[test]
    fn known_values_and_relu_keeps_nan() {
        let a = [1.0f32, 2.0, 3.0, 4.0];
        let b = [5.0f32, 6.0, 7.0, 8.0];
        let (a, b) = (
            MatRef::row_major(&a, 2, 2).unwrap(),
            MatRef::row_major(&b, 2, 2).unwrap(),
        );
        for isa in Isa::all_available() {
            let mut c = vec![0.0f32; 4];
            sgemm(
                a,
                &PackedB::with_isa(isa, b),
                &mut c,
                2,
                false,
                &Epilogue::default(),
            )
            .unwrap();
            assert_eq!(c, vec![19.0, 22.0, 43.0, 50.0], "{}", isa.name());
        }
        let rb = [-100.0f32, f32::NAN];
        let epi = Epilogue {
            row_bias: Some(&rb),
            col_bias: None,
            addend: None,
            act: Act::Relu,
        };
        let mut c = vec![0.0f32; 4];
        sgemm(a, &PackedB::new(b), &mut c, 2, false, &epi).unwrap();
        assert_eq!(&c[..2], &[0.0, 0.0]);
        assert!(c[2].is_nan() && c[3].is_nan());
    }

    #[test]
    fn activations_known_values() {
        let apply = |act: Act| {
            let mut v = [-2.0f32, 0.0, 3.0, f32::NAN];
            act.apply(&mut v);
            v
        };
        let same = |got: [f32; 4], want: [f32; 4]| {
            for (g, w) in got.iter().zip(&want) {
                assert!(g == w || (g.is_nan() && w.is_nan()), "{got:?} != {want:?}");
            }
        };
        same(apply(Act::None), [-2.0, 0.0, 3.0, f32::NAN]);
        same(apply(Act::Relu), [0.0, 0.0, 3.0, f32::NAN]);
        same(apply(Act::LeakyRelu(0.5)), [-1.0, 0.0, 3.0, f32::NAN]);
        same(apply(Act::Clip(-1.0, 1.0)), [-1.0, 0.0, 1.0, f32::NAN]);
        same(
            apply(Act::HardSigmoid(0.25, 0.75)),
            [0.25, 0.75, 1.0, f32::NAN],
        );
        let s = apply(Act::Sigmoid);
        assert!((s[0] - 0.119_202_92).abs() < 1e-6 && s[1] == 0.5);
        let t = apply(Act::Tanh);
        assert!((t[2] - 0.995_054_8).abs() < 1e-6 && t[1] == 0.0);
    }

    #[test]
    fn bad_sizes_are_errors() {
        let v = [0.0f32; 6];
        assert!(MatRef::new(&v, 2, 3, 3, 1).is_ok());
        assert!(MatRef::new(&v, 2, 4, 4, 1).is_err());
        assert!(MatRef::new(&v, 3, 3, usize::MAX, 1).is_err());
        let a = MatRef::row_major(&v, 2, 3).unwrap();
        let b = MatRef::row_major(&v, 2, 3).unwrap();
        let mut c = vec![0.0f32; 9];
        let e = sgemm_unpacked(a, b, &mut c, 3, false, &Epilogue::default()).unwrap_err();
        assert!(e.0.contains("inner dimensions differ"), "{e}");
        let b = MatRef::row_major(&v, 3, 2).unwrap();
        let mut small = vec![0.0f32; 3];
        assert!(sgemm_unpacked(a, b, &mut small, 2, false, &Epilogue::default()).is_err());
        assert!(sgemm_unpacked(a, b, &mut c, 1, false, &Epilogue::default()).is_err());
        let short = [1.0f32];
        let epi = Epilogue {
            row_bias: Some(&short),
            col_bias: None,
            addend: None,
            act: Act::None,
        };
        assert!(sgemm_unpacked(a, b, &mut c, 2, false, &epi).is_err());
        let z = MatRef::row_major(&v, 3, 2).unwrap();
        let epi = Epilogue {
            addend: Some(z),
            ..Epilogue::default()
        };
        let e = sgemm_unpacked(a, b, &mut c, 2, false, &epi).unwrap_err();
        assert!(e.0.contains("addend is 3x2"), "{e}");
    }

    #[test]
    fn isa_names_round_trip() {
        for isa in [Isa::Portable, Isa::Avx2, Isa::Avx512] {
            assert_eq!(Isa::from_name(isa.name()), Some(isa));
        }
        assert_eq!(Isa::from_name("sse9"), None);
        assert!(Isa::detect().available());
        assert_eq!(Isa::all_available()[0], Isa::Portable);
    }
}
