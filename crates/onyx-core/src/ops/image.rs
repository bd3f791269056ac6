//! ImageDecoder (opset 20): an encoded image (PNG, JPEG, BMP, TIFF, WebP,
//! PNM) to an `[H, W, C]` uint8 tensor in RGB, BGR or grayscale.
//!
//! Grayscale from colour uses ITU-R 601-2 luma with the fixed-point weights
//! Pillow uses (what ONNX's reference calls): `(19595 R + 38470 G + 7471 B
//! + 0x8000) >> 16`. Images already grey are kept as they are.

use std::io::Cursor;

use image::{DynamicImage, ImageReader};
use onyx_tensor::{Tensor, Value};

use super::{one, tensor_in, BuildCtx, Kernel, OpResult, Registry, RunCtx};
use crate::op_err;

#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum PixelFormat {
    Rgb,
    Bgr,
    Grayscale,
}

fn reader(bytes: &[u8]) -> OpResult<ImageReader<Cursor<&[u8]>>> {
    let r = ImageReader::new(Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| op_err!("ImageDecoder cannot read the encoded stream: {e}"))?;
    if r.format().is_none() {
        return Err(op_err!(
            "ImageDecoder does not recognise the image format of the {}-byte stream",
            bytes.len()
        ));
    }
    Ok(r)
}

/// Pillow's RGB -> L conversion.
fn luma601(r: u8, g: u8, b: u8) -> u8 {
    let v = (19595 * u32::from(r) + 38470 * u32::from(g) + 7471 * u32::from(b) + 0x8000) >> 16;
    v.min(255) as u8
}

fn is_grey(img: &DynamicImage) -> bool {
    matches!(
        img,
        DynamicImage::ImageLuma8(_)
            | DynamicImage::ImageLumaA8(_)
            | DynamicImage::ImageLuma16(_)
            | DynamicImage::ImageLumaA16(_)
    )
}

/// Decoded samples before the requested pixel format is applied.
enum Pixels {
    Grey(Vec<u8>),
    Rgb(Vec<u8>),
}

/// Decodes `bytes` to an `[H, W, C]` uint8 tensor.
pub(crate) fn decode(ctx: &RunCtx, bytes: &[u8], format: PixelFormat) -> OpResult<Tensor> {
    let (w, h) = reader(bytes)?
        .into_dimensions()
        .map_err(|e| op_err!("ImageDecoder cannot read the image header: {e}"))?;
    let channels = if format == PixelFormat::Grayscale {
        1
    } else {
        3
    };
    let (w, h) = (w as usize, h as usize);
    let total = w
        .checked_mul(h)
        .and_then(|x| x.checked_mul(channels))
        .ok_or_else(|| op_err!("a {w} x {h} image is too large"))?;
    // The decoder holds up to 4 channels of 16 bits while it works.
    ctx.check_alloc(total, 1)?;
    ctx.check_alloc(w.saturating_mul(h).saturating_mul(4), 2)?;
    let (iw, ih, pixels) = match jpeg::decode(bytes, (w, h)) {
        Some(d) => {
            let px = if d.channels == 1 {
                Pixels::Grey(d.pixels)
            } else {
                Pixels::Rgb(d.pixels)
            };
            (d.width, d.height, px)
        }
        None => {
            let img = reader(bytes)?
                .decode()
                .map_err(|e| op_err!("ImageDecoder failed to decode the image: {e}"))?;
            let (iw, ih) = (img.width() as usize, img.height() as usize);
            let px = if is_grey(&img) {
                Pixels::Grey(img.to_luma8().into_raw())
            } else {
                Pixels::Rgb(img.to_rgb8().into_raw())
            };
            (iw, ih, px)
        }
    };
    if (iw, ih) != (w, h) {
        return Err(op_err!(
            "ImageDecoder: decoded size {iw} x {ih} differs from the header's {w} x {h}"
        ));
    }
    let data: Vec<u8> = match (format, pixels) {
        (PixelFormat::Grayscale, Pixels::Grey(v)) => v,
        (PixelFormat::Grayscale, Pixels::Rgb(v)) => v
            .chunks_exact(3)
            .map(|px| luma601(px[0], px[1], px[2]))
            .collect(),
        (PixelFormat::Rgb | PixelFormat::Bgr, Pixels::Grey(v)) => {
            v.iter().flat_map(|&g| [g, g, g]).collect()
        }
        (PixelFormat::Rgb, Pixels::Rgb(v)) => v,
        (PixelFormat::Bgr, Pixels::Rgb(mut v)) => {
            for px in v.chunks_exact_mut(3) {
                px.swap(0, 2);
            }
            v
        }
    };
    if data.len() != total {
        return Err(op_err!(
            "ImageDecoder: decoded {} bytes for a {w} x {h} x {channels} image",
            data.len()
        ));
    }
    Ok(Tensor::from_vec(vec![h, w, channels], data)?)
}

/// A baseline JPEG decoder that reproduces libjpeg-turbo's default output
/// (what Pillow, and so ONNX's reference, returns): the "islow" integer
/// IDCT, "fancy" (triangle) chroma upsampling and its fixed-point
/// YCbCr -> RGB tables. It takes single-scan Huffman files with 8-bit
/// samples, one (grey) or three (YCbCr) components, chroma at 1x1 and luma
/// at 1x1, 2x1 or 2x2; anything else returns `None` and goes to the
/// `image` crate, whose results may differ from libjpeg's by a unit or two.
mod jpeg {
    const NATURAL: [usize; 64] = [
        0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27,
        20, 13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51,
        58, 59, 52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63,
    ];

    /// Decoded samples: `channels` is 1 (grey) or 3 (RGB), row-major.
    pub struct Decoded {
        pub width: usize,
        pub height: usize,
        pub channels: usize,
        pub pixels: Vec<u8>,
    }

    #[derive(Clone, Default)]
    struct Huffman {
        /// Largest code of each length (index 1..=16), -1 when none.
        maxcode: [i32; 18],
        /// Index into `values` of the first code of each length, minus that code.
        offset: [i32; 17],
        values: Vec<u8>,
    }

    impl Huffman {
        fn new(counts: &[u8; 16], values: Vec<u8>) -> Option<Huffman> {
            let mut h = Huffman {
                maxcode: [-1; 18],
                offset: [0; 17],
                values,
            };
            let mut code = 0i32;
            let mut k = 0i32;
            for len in 1..=16 {
                let n = i32::from(counts[len - 1]);
                if n > 0 {
                    h.offset[len] = k - code;
                    code += n;
                    k += n;
                    h.maxcode[len] = code - 1;
                    if code > (1 << len) {
                        return None;
                    }
                }
                code <<= 1;
            }
            if k as usize > h.values.len() {
                return None;
            }
            Some(h)
        }
    }

    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
        acc: u32,
        left: u32,
        at_marker: bool,
    }

    impl Bits<'_> {
        fn bit(&mut self) -> u32 {
            if self.left == 0 {
                let mut b = 0u32;
                if !self.at_marker && self.pos < self.data.len() {
                    let x = self.data[self.pos];
                    if x == 0xFF {
                        if self.data.get(self.pos + 1) == Some(&0) {
                            self.pos += 2;
                            b = 0xFF;
                        } else {
                            self.at_marker = true;
                        }
                    } else {
                        self.pos += 1;
                        b = u32::from(x);
                    }
                }
                self.acc = b;
                self.left = 8;
            }
            self.left -= 1;
            (self.acc >> self.left) & 1
        }

        fn receive(&mut self, n: u32) -> i32 {
            let mut v = 0i32;
            for _ in 0..n {
                v = (v << 1) | self.bit() as i32;
            }
            v
        }

        fn extend(&mut self, n: u32) -> i32 {
            if n == 0 {
                return 0;
            }
            if n > 16 {
                return 0;
            }
            let v = self.receive(n);
            if v < (1 << (n - 1)) {
                v - (1 << n) + 1
            } else {
                v
            }
        }

        fn decode(&mut self, h: &Huffman) -> Option<u8> {
            let mut code = 0i32;
            for len in 1..=16 {
                code = (code << 1) | self.bit() as i32;
                if code <= h.maxcode[len] {
                    return h.values.get((code + h.offset[len]) as usize).copied();
                }
            }
            None
        }

        /// Skips to just after the next RSTn marker.
        fn restart(&mut self) {
            self.left = 0;
            self.at_marker = false;
            let mut i = self.pos;
            while i + 1 < self.data.len() {
                if self.data[i] == 0xFF && (0xD0..=0xD7).contains(&self.data[i + 1]) {
                    self.pos = i + 2;
                    return;
                }
                i += 1;
            }
            self.pos = self.data.len();
        }
    }

    struct Component {
        id: u8,
        h: usize,
        v: usize,
        tq: usize,
        td: usize,
        ta: usize,
        /// Samples of whole blocks, `stride` wide.
        plane: Vec<u8>,
        stride: usize,
    }

    fn u16_at(d: &[u8], i: usize) -> Option<usize> {
        Some(usize::from(*d.get(i)?) << 8 | usize::from(*d.get(i + 1)?))
    }

    /// libjpeg's idct_range_limit[x & 1023] (x is the IDCT output before +128).
    fn range_limit(x: i32) -> u8 {
        let m = x & 1023;
        if m < 128 {
            (m + 128) as u8
        } else if m < 512 {
            255
        } else if m < 896 {
            0
        } else {
            (m - 896) as u8
        }
    }

    /// jpeg_idct_islow: dequantised coefficients (natural order) to samples.
    fn idct_islow(coef: &[i32; 64], out: &mut [u8], stride: usize) {
        const CB: i32 = 13;
        const P1: i32 = 2;
        const F0298: i32 = 2446;
        const F0390: i32 = 3196;
        const F0541: i32 = 4433;
        const F0765: i32 = 6270;
        const F0899: i32 = 7373;
        const F1175: i32 = 9633;
        const F1501: i32 = 12299;
        const F1847: i32 = 15137;
        const F1961: i32 = 16069;
        const F2053: i32 = 16819;
        const F2562: i32 = 20995;
        const F3072: i32 = 25172;
        let descale = |x: i64, n: i32| ((x + (1i64 << (n - 1))) >> n) as i32;
        let mut ws = [0i32; 64];
        // (even part, odd part) of one 8-point pass over values v[0..8].
        let pass = |v: [i64; 8]| -> [i64; 8] {
            let (z2, z3) = (v[2], v[6]);
            let z1 = (z2 + z3) * i64::from(F0541);
            let tmp2 = z1 + z3 * -i64::from(F1847);
            let tmp3 = z1 + z2 * i64::from(F0765);
            let tmp0 = (v[0] + v[4]) << CB;
            let tmp1 = (v[0] - v[4]) << CB;
            let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
            let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
            let (mut t0, mut t1, mut t2, mut t3) = (v[7], v[5], v[3], v[1]);
            let z1 = t0 + t3;
            let z2 = t1 + t2;
            let z3 = t0 + t2;
            let z4 = t1 + t3;
            let z5 = (z3 + z4) * i64::from(F1175);
            t0 *= i64::from(F0298);
            t1 *= i64::from(F2053);
            t2 *= i64::from(F3072);
            t3 *= i64::from(F1501);
            let z1 = z1 * -i64::from(F0899);
            let z2 = z2 * -i64::from(F2562);
            let z3 = z3 * -i64::from(F1961) + z5;
            let z4 = z4 * -i64::from(F0390) + z5;
            t0 += z1 + z3;
            t1 += z2 + z4;
            t2 += z2 + z3;
            t3 += z1 + z4;
            [
                tmp10 + t3,
                tmp11 + t2,
                tmp12 + t1,
                tmp13 + t0,
                tmp13 - t0,
                tmp12 - t1,
                tmp11 - t2,
                tmp10 - t3,
            ]
        };
        for col in 0..8 {
            if (1..8).all(|r| coef[r * 8 + col] == 0) {
                let dc = coef[col] << P1;
                for r in 0..8 {
                    ws[r * 8 + col] = dc;
                }
                continue;
            }
            let v: [i64; 8] = std::array::from_fn(|r| i64::from(coef[r * 8 + col]));
            let o = pass(v);
            for r in 0..8 {
                ws[r * 8 + col] = descale(o[r], CB - P1);
            }
        }
        for row in 0..8 {
            let v: [i64; 8] = std::array::from_fn(|c| i64::from(ws[row * 8 + c]));
            let o = pass(v);
            for c in 0..8 {
                out[row * stride + c] = range_limit(descale(o[c], CB + P1 + 3));
            }
        }
    }

    /// Fancy upsampling of a `w` x `h` plane (stride `stride`) by (fx, fy) in {1,2}.
    fn upsample(plane: &[u8], stride: usize, w: usize, h: usize, fx: usize, fy: usize) -> Vec<u8> {
        let at = |x: usize, y: usize| i32::from(plane[y * stride + x]);
        let ow = w * fx;
        let oh = h * fy;
        let mut out = vec![0u8; ow * oh];
        if fx == 1 && fy == 1 {
            for y in 0..h {
                out[y * ow..(y + 1) * ow].copy_from_slice(&plane[y * stride..y * stride + w]);
            }
        } else if fy == 1 {
            // h2v1_fancy_upsample
            for y in 0..h {
                let row = &mut out[y * ow..(y + 1) * ow];
                if w <= 2 {
                    for x in 0..w {
                        row[2 * x] = at(x, y) as u8;
                        row[2 * x + 1] = at(x, y) as u8;
                    }
                    continue;
                }
                for x in 0..w {
                    let c = at(x, y) * 3;
                    let prev = if x == 0 { None } else { Some(at(x - 1, y)) };
                    let next = if x + 1 == w { None } else { Some(at(x + 1, y)) };
                    row[2 * x] = match prev {
                        None => at(x, y) as u8,
                        Some(p) => ((c + p + 1) >> 2) as u8,
                    };
                    row[2 * x + 1] = match next {
                        None => at(x, y) as u8,
                        Some(n) => ((c + n + 2) >> 2) as u8,
                    };
                }
            }
        } else {
            // h2v2_fancy_upsample; the rows above the first and below the last
            // repeat them, as libjpeg's context rows do.
            for y in 0..h {
                for (half, ny) in [(0usize, y.saturating_sub(1)), (1, (y + 1).min(h - 1))] {
                    let orow = &mut out[(2 * y + half) * ow..(2 * y + half + 1) * ow];
                    let colsum = |x: usize| at(x, y) * 3 + at(x, ny);
                    if w <= 2 {
                        // plain replication (h2v2_upsample) for very narrow planes
                        for x in 0..w {
                            orow[2 * x] = at(x, y) as u8;
                            orow[2 * x + 1] = at(x, y) as u8;
                        }
                        continue;
                    }
                    for x in 0..w {
                        let this = colsum(x);
                        orow[2 * x] = if x == 0 {
                            ((this * 4 + 8) >> 4) as u8
                        } else {
                            ((this * 3 + colsum(x - 1) + 8) >> 4) as u8
                        };
                        orow[2 * x + 1] = if x + 1 == w {
                            ((this * 4 + 7) >> 4) as u8
                        } else {
                            ((this * 3 + colsum(x + 1) + 7) >> 4) as u8
                        };
                    }
                }
            }
        }
        out
    }

    fn fix(x: f64) -> i32 {
        (x * 65536.0 + 0.5) as i32
    }

    /// Decodes `data`, or None when it is outside what this decoder takes
    /// (or is malformed: the caller then tries the `image` crate).
    pub fn decode(data: &[u8], expect: (usize, usize)) -> Option<Decoded> {
        if data.get(..2)? != [0xFF, 0xD8] {
            return None;
        }
        let mut qt = [[0i32; 64]; 4];
        let mut dc: [Option<Huffman>; 4] = Default::default();
        let mut ac: [Option<Huffman>; 4] = Default::default();
        let mut comps: Vec<Component> = Vec::new();
        let (mut width, mut height) = (0usize, 0usize);
        let mut restart = 0usize;
        let mut pos = 2;
        let mut adobe = false;
        let mut jfif = false;
        let scan_start;
        loop {
            if *data.get(pos)? != 0xFF {
                return None;
            }
            let marker = *data.get(pos + 1)?;
            if marker == 0xFF {
                pos += 1;
                continue;
            }
            let len = u16_at(data, pos + 2)?;
            let seg = data.get(pos + 4..pos + 2 + len)?;
            match marker {
                0xDB => {
                    let mut i = 0;
                    while i < seg.len() {
                        let pq = seg[i] >> 4;
                        let tq = usize::from(seg[i] & 15);
                        if tq > 3 {
                            return None;
                        }
                        i += 1;
                        for &nat in NATURAL.iter() {
                            let v = if pq == 0 {
                                i32::from(*seg.get(i)?)
                            } else {
                                u16_at(seg, i)? as i32
                            };
                            i += if pq == 0 { 1 } else { 2 };
                            qt[tq][nat] = v;
                        }
                    }
                }
                0xC4 => {
                    let mut i = 0;
                    while i < seg.len() {
                        let class = seg[i] >> 4;
                        let id = usize::from(seg[i] & 15);
                        if id > 3 || class > 1 {
                            return None;
                        }
                        let counts: [u8; 16] = seg.get(i + 1..i + 17)?.try_into().ok()?;
                        let n: usize = counts.iter().map(|&c| usize::from(c)).sum();
                        let values = seg.get(i + 17..i + 17 + n)?.to_vec();
                        i += 17 + n;
                        let h = Huffman::new(&counts, values)?;
                        if class == 0 {
                            dc[id] = Some(h);
                        } else {
                            ac[id] = Some(h);
                        }
                    }
                }
                0xC0 | 0xC1 => {
                    if *seg.first()? != 8 || !comps.is_empty() {
                        return None;
                    }
                    height = u16_at(seg, 1)?;
                    width = u16_at(seg, 3)?;
                    let n = usize::from(*seg.get(5)?);
                    for k in 0..n {
                        let c = seg.get(6 + 3 * k..9 + 3 * k)?;
                        comps.push(Component {
                            id: c[0],
                            h: usize::from(c[1] >> 4),
                            v: usize::from(c[1] & 15),
                            tq: usize::from(c[2]),
                            td: 0,
                            ta: 0,
                            plane: Vec::new(),
                            stride: 0,
                        });
                    }
                }
                0xDD => restart = u16_at(seg, 0)?,
                0xE0 => jfif |= seg.starts_with(b"JFIF\0"),
                0xEE => adobe = true,
                0xDA => {
                    let n = usize::from(*seg.first()?);
                    if n != comps.len() || seg.len() < 1 + 2 * n + 3 {
                        return None;
                    }
                    for k in 0..n {
                        let id = seg[1 + 2 * k];
                        let t = seg[2 + 2 * k];
                        let c = comps.get_mut(k)?;
                        if c.id != id {
                            return None;
                        }
                        c.td = usize::from(t >> 4);
                        c.ta = usize::from(t & 15);
                    }
                    let (ss, se, a) = (seg[1 + 2 * n], seg[2 + 2 * n], seg[3 + 2 * n]);
                    if ss != 0 || se != 63 || a != 0 {
                        return None;
                    }
                    scan_start = pos + 2 + len;
                    break;
                }
                // progressive, arithmetic, lossless, hierarchical: not ours
                0xC2 | 0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => return None,
                _ => {}
            }
            pos += 2 + len;
        }
        let ncomp = comps.len();
        if (width, height) != expect {
            return None;
        }
        if width == 0 || height == 0 || !(ncomp == 1 || ncomp == 3) {
            return None;
        }
        if ncomp == 3 {
            // Adobe files and files with R, G, B component ids may be RGB.
            if adobe || (!jfif && comps.iter().map(|c| c.id).eq([b'R', b'G', b'B'])) {
                return None;
            }
            let ok_luma = matches!((comps[0].h, comps[0].v), (1, 1) | (2, 1) | (2, 2));
            if !ok_luma || comps[1..].iter().any(|c| (c.h, c.v) != (1, 1)) {
                return None;
            }
        }
        for c in &comps {
            if c.tq > 3 || c.td > 3 || c.ta > 3 || dc[c.td].is_none() || ac[c.ta].is_none() {
                return None;
            }
        }
        let (hmax, vmax) = if ncomp == 1 {
            (1, 1)
        } else {
            (comps[0].h, comps[0].v)
        };
        if ncomp == 1 {
            comps[0].h = 1;
            comps[0].v = 1;
        }
        let mcux = width.div_ceil(8 * hmax);
        let mcuy = height.div_ceil(8 * vmax);
        for c in comps.iter_mut() {
            c.stride = mcux * c.h * 8;
            c.plane = vec![0u8; c.stride * mcuy * c.v * 8];
        }
        let mut bits = Bits {
            data: data.get(scan_start..)?,
            pos: 0,
            acc: 0,
            left: 0,
            at_marker: false,
        };
        let mut pred = [0i32; 3];
        let mut coef = [0i32; 64];
        let total = mcux * mcuy;
        for m in 0..total {
            if restart > 0 && m > 0 && m % restart == 0 {
                bits.restart();
                pred = [0; 3];
            }
            let (mx, my) = (m % mcux, m / mcux);
            for (ci, c) in comps.iter_mut().enumerate() {
                let dct = dc[c.td].as_ref()?;
                let act = ac[c.ta].as_ref()?;
                let q = &qt[c.tq];
                for by in 0..c.v {
                    for bx in 0..c.h {
                        coef.fill(0);
                        let t = bits.decode(dct)?;
                        pred[ci] = pred[ci].wrapping_add(bits.extend(u32::from(t)));
                        coef[0] = pred[ci].wrapping_mul(q[0]);
                        let mut k = 1;
                        while k < 64 {
                            let rs = bits.decode(act)?;
                            let (r, s) = (usize::from(rs >> 4), u32::from(rs & 15));
                            if s == 0 {
                                if r != 15 {
                                    break;
                                }
                                k += 16;
                                continue;
                            }
                            k += r;
                            if k > 63 {
                                return None;
                            }
                            let nat = NATURAL[k];
                            coef[nat] = bits.extend(s).wrapping_mul(q[nat]);
                            k += 1;
                        }
                        let x0 = (mx * c.h + bx) * 8;
                        let y0 = (my * c.v + by) * 8;
                        let stride = c.stride;
                        idct_islow(&coef, &mut c.plane[y0 * stride + x0..], stride);
                    }
                }
            }
        }
        if ncomp == 1 {
            let c = &comps[0];
            let mut pixels = Vec::with_capacity(width * height);
            for y in 0..height {
                pixels.extend_from_slice(&c.plane[y * c.stride..y * c.stride + width]);
            }
            return Some(Decoded {
                width,
                height,
                channels: 1,
                pixels,
            });
        }
        // Chroma planes are ceil(width / hmax) x ceil(height / vmax).
        let (cw, ch) = (width.div_ceil(hmax), height.div_ceil(vmax));
        let cb = upsample(&comps[1].plane, comps[1].stride, cw, ch, hmax, vmax);
        let cr = upsample(&comps[2].plane, comps[2].stride, cw, ch, hmax, vmax);
        let uw = cw * hmax;
        let luma = &comps[0];
        let mut pixels = Vec::with_capacity(width * height * 3);
        let clamp = |x: i32| x.clamp(0, 255) as u8;
        for y in 0..height {
            for x in 0..width {
                let yy = i32::from(luma.plane[y * luma.stride + x]);
                let b = i32::from(cb[y * uw + x]) - 128;
                let r = i32::from(cr[y * uw + x]) - 128;
                let r_add = (fix(1.402) * r + (1 << 15)) >> 16;
                let b_add = (fix(1.772) * b + (1 << 15)) >> 16;
                let g_add = (-fix(0.34414) * b + (1 << 15) - fix(0.71414) * r) >> 16;
                pixels.push(clamp(yy + r_add));
                pixels.push(clamp(yy + g_add));
                pixels.push(clamp(yy + b_add));
            }
        }
        Some(Decoded {
            width,
            height,
            channels: 3,
            pixels,
        })
    }
}

fn build_image_decoder(ctx: &BuildCtx) -> OpResult<Box<dyn Kernel>> {
    let format = match ctx
        .node
        .attr_string("pixel_format")?
        .as_deref()
        .unwrap_or("RGB")
    {
        "RGB" => PixelFormat::Rgb,
        "BGR" => PixelFormat::Bgr,
        "Grayscale" => PixelFormat::Grayscale,
        other => {
            return Err(op_err!(
                "pixel_format '{other}' is not one of RGB, BGR, Grayscale"
            ))
        }
    };
    Ok(Box::new(move |rctx: &RunCtx, inputs: &[Option<&Value>]| {
        let t = tensor_in(inputs, 0)?;
        let bytes = t
            .as_slice::<u8>()
            .map_err(|_| op_err!("ImageDecoder input must be uint8, not {}", t.dtype()))?;
        one(decode(rctx, bytes, format)?)
    }))
}

pub fn register(r: &mut Registry) {
    r.add("", "ImageDecoder", build_image_decoder);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Limits;
    use image::{ImageFormat, RgbImage};

    fn png_2x1() -> Vec<u8> {
        let img = RgbImage::from_raw(2, 1, vec![255, 0, 0, 10, 20, 30]).unwrap();
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_png_in_each_pixel_format() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        let bytes = png_2x1();
        let rgb = decode(&ctx, &bytes, PixelFormat::Rgb).unwrap();
        assert_eq!(rgb.shape(), &[1, 2, 3]);
        assert_eq!(rgb.as_slice::<u8>().unwrap(), &[255, 0, 0, 10, 20, 30]);
        let bgr = decode(&ctx, &bytes, PixelFormat::Bgr).unwrap();
        assert_eq!(bgr.as_slice::<u8>().unwrap(), &[0, 0, 255, 30, 20, 10]);
        let grey = decode(&ctx, &bytes, PixelFormat::Grayscale).unwrap();
        assert_eq!(grey.shape(), &[1, 2, 1]);
        // 255 * 0.299 = 76.2 -> 76; 10*.299 + 20*.587 + 30*.114 = 18.13 -> 18
        assert_eq!(grey.as_slice::<u8>().unwrap(), &[76, 18]);
    }

    fn jpeg(img: &RgbImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        img.write_to(&mut out, ImageFormat::Jpeg).unwrap();
        out.into_inner()
    }

    #[test]
    fn decodes_jpeg_like_libjpeg() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        // A flat mid-grey image is DC only: every sample decodes to exactly 128.
        let grey = jpeg(&RgbImage::from_pixel(17, 9, image::Rgb([128, 128, 128])));
        let t = decode(&ctx, &grey, PixelFormat::Rgb).unwrap();
        assert_eq!(t.shape(), &[9, 17, 3]);
        assert!(t.as_slice::<u8>().unwrap().iter().all(|&v| v == 128));
        // A gradient through our decoder stays within a unit or two of the
        // `image` crate's decoder (they differ only in rounding).
        let img = RgbImage::from_fn(40, 24, |x, y| {
            image::Rgb([(x * 6) as u8, (y * 10) as u8, 90])
        });
        let bytes = jpeg(&img);
        let ours = decode(&ctx, &bytes, PixelFormat::Rgb).unwrap();
        let theirs = image::load_from_memory(&bytes)
            .unwrap()
            .to_rgb8()
            .into_raw();
        let worst = ours
            .as_slice::<u8>()
            .unwrap()
            .iter()
            .zip(&theirs)
            .map(|(&a, &b)| (i32::from(a) - i32::from(b)).abs())
            .max()
            .unwrap();
        assert!(worst <= 3, "worst difference {worst}");
        // every truncation of the stream is an error or an image, never a panic
        for n in 0..bytes.len() {
            let _ = decode(&ctx, &bytes[..n], PixelFormat::Grayscale);
        }
        let mut flipped = bytes.clone();
        for i in (0..flipped.len()).step_by(7) {
            flipped[i] ^= 0x5A;
            let _ = decode(&ctx, &flipped, PixelFormat::Bgr);
        }
    }

    #[test]
    fn bad_streams_are_errors() {
        let limits = Limits::default();
        let ctx = RunCtx::detached(&limits);
        assert!(decode(&ctx, &[1, 2, 3, 4], PixelFormat::Rgb).is_err());
        let mut bytes = png_2x1();
        bytes.truncate(bytes.len() / 2);
        assert!(decode(&ctx, &bytes, PixelFormat::Rgb).is_err());
        let small = Limits {
            max_tensor_elements: 4,
            max_tensor_bytes: 1 << 20,
            ..Limits::default()
        };
        assert!(decode(&RunCtx::detached(&small), &png_2x1(), PixelFormat::Rgb).is_err());
    }
}
