//! The resized crop of the train transform: each image's box resized to the crop's side, as
//! PyTorch's bilinear `upsample_bilinear2d` samples it ([`resized_crop`]) or as PIL's bilinear
//! resize antialiases where a box shrinks ([`resized_crop_antialiased`], `data.antialias`).
use tch::{Device, Kind, Tensor};

use super::assert_images;
use crate::shim::{self, Tf32, Tf32Guard};

/// Source rows (or columns) of a bilinear resize of the segments [start, start + len) of each image
/// to `size` samples, as PyTorch's `upsample_bilinear2d` (align_corners = False, no antialias)
/// computes them: src = (len / size)·(i + 0.5) − 0.5 in float32, clamped at 0; i0 = ⌊src⌋ (at most
/// len − 1), i1 = i0 + 1 inside the segment (else i0), λ = src − i0 in [0, 1].
/// Returns (start + i0, start + i1) int64 B×size and λ float32 B×size.
fn linear_indices(start: &Tensor, len: &Tensor, size: i64) -> (Tensor, Tensor, Tensor) {
    let device = start.device();
    let scale = (len.to_kind(Kind::Float) / size as f64).unsqueeze(1);
    let dst = Tensor::arange(size, (Kind::Float, device)).unsqueeze(0);
    let src = ((dst + 0.5) * scale - 0.5).clamp_min(0.0);
    let last = (len - 1).unsqueeze(1);
    let i0 = src.floor().to_kind(Kind::Int64).minimum(&last);
    let lambda = (src - i0.to_kind(Kind::Float)).clamp(0.0, 1.0);
    let i1 = &i0 + i0.lt_tensor(&last).to_kind(Kind::Int64);
    let start = start.unsqueeze(1);
    (i0 + &start, i1 + start, lambda)
}

/// Checks the arguments of a resized crop; returns B×C×H×W.
fn assert_crop_args(x: &Tensor, crop: &Tensor, size: i64, what: &str) -> (i64, i64, i64, i64) {
    let (b, c, h, w) = assert_images(x, what);
    assert!(
        x.is_floating_point(),
        "{what}: expected float images, found {:?}",
        x.kind()
    );
    assert!(
        crop.size() == [b, 4],
        "{what}: expected a {b}×4 crop tensor, found shape {:?}",
        crop.size()
    );
    assert!(size > 0, "{what}: output size {size} must be positive");
    (b, c, h, w)
}

/// Crops each image to its box and resizes it to size×size, bilinear with align_corners = False
/// and no antialiasing: equal to torchvision's `F.resized_crop(img, top, left, height, width,
/// [size, size], antialias=False)` on float images. Pixels outside the box are never read.
///
/// `x`: float B×C×H×W; `crop`: int64 B×4 (top, left, height, width), boxes inside the image.
/// Returns float B×C×size×size. The reference resizes PIL images, which antialiases when
/// downscaling (crops larger than `size`, as on STL-10's 96×96 images); this does not (see
/// [`resized_crop_antialiased`]).
pub fn resized_crop(x: &Tensor, crop: &Tensor, size: i64) -> Tensor {
    let (b, c, _, w) = assert_crop_args(x, crop, size, "resized_crop");
    let device = x.device();
    let crop = crop.to_device(device).to_kind(Kind::Int64);
    let (top, left) = (crop.select(1, 0), crop.select(1, 1));
    let (ch, cw) = (crop.select(1, 2), crop.select(1, 3));
    let (y0, y1, ly) = linear_indices(&top, &ch, size);
    let (x0, x1, lx) = linear_indices(&left, &cw, size);
    // Rows first: B×C×size×W.
    let rows = |i: &Tensor| {
        x.gather(
            2,
            &i.view([b, 1, size, 1]).expand([b, c, size, w], false),
            false,
        )
    };
    let ly = ly.view([b, 1, size, 1]).to_kind(x.kind());
    let r = rows(&y0) * (-&ly + 1.0) + rows(&y1) * ly;
    // Then columns: B×C×size×size.
    let cols = |i: &Tensor| {
        r.gather(
            3,
            &i.view([b, 1, 1, size]).expand([b, c, size, size], false),
            false,
        )
    };
    let lx = lx.view([b, 1, 1, size]).to_kind(x.kind());
    cols(&x0) * (-&lx + 1.0) + cols(&x1) * lx
}

/// The weights of PIL's bilinear resize of the segments [start, start + len) of each image's
/// `full` rows (or columns) to `size` samples, as a dense float32 B×size×full matrix (zero outside
/// the segment): output sample i is centred at c = (i + 0.5)·s in the segment, s = len / size;
/// segment pixel j weighs max(0, 1 − |j + 0.5 − c| / max(s, 1)), normalised over the segment.
/// Shrinking (s > 1), the triangle is stretched over the whole footprint of the sample: PIL's
/// antialiasing (its `precompute_coeffs`; libtorch's `_upsample_bilinear2d_aa` is the same).
/// Enlarging, it reaches the two nearest pixels: the plain bilinear weights 1 − λ and λ, clamped
/// at the ends as [`linear_indices`] clamps. Computed in double precision on the device of
/// `start` and `len` (a few elementwise ops; on a GPU this spares the CPU the work and the copy of
/// the matrices).
fn bilinear_weights(start: &Tensor, len: &Tensor, size: i64, full: i64) -> Tensor {
    let f64_here = (Kind::Double, start.device());
    let b = len.size()[0];
    let len = len.to_kind(Kind::Double).view([b, 1, 1]);
    let scale = &len / size as f64;
    let support = scale.clamp_min(1.0);
    let center = (Tensor::arange(size, f64_here) + 0.5).view([1, size, 1]) * &scale;
    // Source pixels relative to the segment's start.
    let j = Tensor::arange(full, f64_here).view([1, 1, full])
        - start.to_kind(Kind::Double).view([b, 1, 1]);
    let inside = j.ge(0.0).logical_and(&j.lt_tensor(&len));
    let w = (-((&j + 0.5 - center) / support).abs() + 1.0).clamp_min(0.0) * inside;
    (&w / w.sum_dim_intlist([2i64].as_slice(), true, Kind::Double)).to_kind(Kind::Float)
}

/// Crops each image to its box and resizes it to size×size as PIL's bilinear resize does: with
/// antialiasing along every side of the box longer than `size` (each output pixel averages its
/// whole source footprint, see `bilinear_weights`), plain bilinear along the others
/// (upsampling). torchvision's `F.resized_crop(img, top, left, height, width, [size, size],
/// antialias=True)` on float images computes the same (its kernel is libtorch's
/// `_upsample_bilinear2d_aa`, which torchvision matches to PIL); PIL's own uint8 result differs by
/// its rounding. Batched with per-image boxes as two matrix products with each image's weights,
/// columns then rows (PIL's order); on CUDA in full fp32 whatever the TF32 switches say. Pixels
/// outside the box weigh nothing.
///
/// `x`: float B×C×H×W; `crop`: int64 B×4 (top, left, height, width), boxes inside the image.
/// Returns float B×C×size×size. A batch with no box longer than `size` is handed to
/// [`resized_crop`], so images no larger than the output (CIFAR, Fashion-MNIST) are resized as
/// without antialiasing to the bit; elsewhere a side that grows is within float rounding of it.
pub fn resized_crop_antialiased(x: &Tensor, crop: &Tensor, size: i64) -> Tensor {
    let (b, c, h, w) = assert_crop_args(x, crop, size, "resized_crop_antialiased");
    let crop = crop.to_device(Device::Cpu).to_kind(Kind::Int64);
    if b == 0 || crop.narrow(1, 2, 2).max().int64_value(&[]) <= size {
        return resized_crop(x, &crop, size);
    }
    let (device, kind) = (x.device(), x.kind());
    let crop = crop.to_device(device);
    let weights = |side: i64, full: i64| {
        bilinear_weights(&crop.select(1, side), &crop.select(1, side + 2), size, full).to_kind(kind)
    };
    let (wy, wx) = (weights(0, h), weights(1, w));
    let _fp32 = full_fp32_matmuls(device);
    // Columns: B×(C·H)×W · B×W×size.
    let cols = x
        .reshape([b, c * h, w])
        .bmm(&wx.transpose(1, 2))
        .view([b, c, h, size]);
    // Rows: B×size×H · B×H×(C·size).
    let rows = cols.permute([0, 2, 1, 3]).reshape([b, h, c * size]);
    wy.bmm(&rows)
        .view([b, size, c, size])
        .permute([0, 2, 1, 3])
        .contiguous()
}

/// The crops resized as a run says: [`resized_crop_antialiased`] with `antialias` (as PIL),
/// else [`resized_crop`]; the two differ only where a box is larger than `size`.
pub fn resized_crop_as(x: &Tensor, crop: &Tensor, size: i64, antialias: bool) -> Tensor {
    match antialias {
        true => resized_crop_antialiased(x, crop, size),
        false => resized_crop(x, crop, size),
    }
}

/// On a CUDA device, TF32 off for cuBLAS matmuls until the guard drops (their 10-bit mantissas
/// would move a resized pixel by up to about 0.25 of 255); nothing elsewhere.
fn full_fp32_matmuls(device: Device) -> Option<Tf32Guard> {
    if !device.is_cuda() {
        return None;
    }
    let set = shim::tf32().and_then(|now| {
        shim::tf32_scope(Tf32 {
            matmul: false,
            cudnn: now.cudnn,
        })
    });
    Some(set.unwrap_or_else(|e| panic!("resized_crop_antialiased: the TF32 switches: {e}")))
}
