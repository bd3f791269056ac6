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
    let img = reader(bytes)?
        .decode()
        .map_err(|e| op_err!("ImageDecoder failed to decode the image: {e}"))?;
    let (iw, ih) = (img.width() as usize, img.height() as usize);
    if (iw, ih) != (w, h) {
        return Err(op_err!(
            "ImageDecoder: decoded size {iw} x {ih} differs from the header's {w} x {h}"
        ));
    }
    let data: Vec<u8> = match format {
        PixelFormat::Rgb => img.to_rgb8().into_raw(),
        PixelFormat::Bgr => {
            let mut v = img.to_rgb8().into_raw();
            for px in v.chunks_exact_mut(3) {
                px.swap(0, 2);
            }
            v
        }
        PixelFormat::Grayscale if is_grey(&img) => img.to_luma8().into_raw(),
        PixelFormat::Grayscale => img
            .to_rgb8()
            .into_raw()
            .chunks_exact(3)
            .map(|px| luma601(px[0], px[1], px[2]))
            .collect(),
    };
    Ok(Tensor::from_vec(vec![h, w, channels], data)?)
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
        };
        assert!(decode(&RunCtx::detached(&small), &png_2x1(), PixelFormat::Rgb).is_err());
    }
}
