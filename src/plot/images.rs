//! Images (augmented views, the partition gallery) as one PNG grid.
use base64::Engine;
use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

/// A grid of `images` (N×C×H×W, C = 1 or 3; float in [0, 1], clamped, or uint8), `cols` per
/// row, each pixel drawn `scale`×`scale`, 2-pixel white gaps; PNG bytes (greyscale for C = 1,
/// RGB for C = 3).
pub fn image_grid_png(images: &Tensor, cols: usize, scale: usize) -> Result<Vec<u8>> {
    let size = images.size();
    let [n, c, h, w] = size[..] else {
        return Err(Error::Shape(format!(
            "image grid: expected N×C×H×W images, found shape {size:?}"
        )));
    };
    if !(c == 1 || c == 3) || n == 0 || cols == 0 || scale == 0 {
        return Err(Error::Shape(format!(
            "image grid: {n} images of {c} channels in {cols} columns at scale {scale}"
        )));
    }
    let x = images.to_device(Device::Cpu);
    let x = if x.kind() == Kind::Uint8 {
        x
    } else {
        (x.to_kind(Kind::Float).clamp(0.0, 1.0) * 255.0)
            .round()
            .to_kind(Kind::Uint8)
    };
    // One byte per pixel for grey images (C = 1), three (RGB) otherwise.
    let bpp = c as usize;
    let x = x.permute([0, 2, 3, 1]).contiguous(); // N×H×W×C
    let pixels = Vec::<u8>::try_from(x.view([-1]))?;
    let (n, h, w, cols) = (n as usize, h as usize, w as usize, cols.min(n as usize));
    let rows = n.div_ceil(cols);
    let gap = 2;
    let (cell_w, cell_h) = (w * scale + gap, h * scale + gap);
    let (width, height) = (cols * cell_w + gap, rows * cell_h + gap);
    let mut canvas = vec![255u8; width * height * bpp];
    for i in 0..n {
        let (ox, oy) = (gap + (i % cols) * cell_w, gap + (i / cols) * cell_h);
        for y in 0..h * scale {
            for x in 0..w * scale {
                let src = ((i * h + y / scale) * w + x / scale) * bpp;
                let dst = ((oy + y) * width + ox + x) * bpp;
                canvas[dst..dst + bpp].copy_from_slice(&pixels[src..src + bpp]);
            }
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, width as u32, height as u32);
        enc.set_color(if bpp == 1 {
            png::ColorType::Grayscale
        } else {
            png::ColorType::Rgb
        });
        enc.set_depth(png::BitDepth::Eight);
        // Up and Paeth predict the repeated rows of a scaled image: a third of the bytes.
        enc.set_adaptive_filter(png::AdaptiveFilterType::Adaptive);
        enc.set_compression(png::Compression::Best);
        let mut writer = enc
            .write_header()
            .map_err(|e| Error::Shape(format!("PNG: {e}")))?;
        writer
            .write_image_data(&canvas)
            .map_err(|e| Error::Shape(format!("PNG: {e}")))?;
    }
    Ok(out)
}

/// Displays PNG bytes inline in an evcxr notebook (its rich-output protocol on stdout).
pub fn show_png(png: &[u8]) {
    println!(
        "EVCXR_BEGIN_CONTENT image/png\n{}\nEVCXR_END_CONTENT",
        base64::engine::general_purpose::STANDARD.encode(png)
    );
}
