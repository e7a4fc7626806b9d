//! Fashion-MNIST, gzip'd IDX files, as the Debian package `dataset-fashion-mnist` installs them
//! under [`FASHION_MNIST_DIR`](super::FASHION_MNIST_DIR).
//!
//! Layout: `D/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz`; the same names without `.gz`
//! (uncompressed) are read too when the `.gz` file is absent.
//!
//! IDX: a big-endian u32 magic `0x000008NN` (`08` = unsigned bytes, `NN` = number of dimensions),
//! then one big-endian u32 per dimension, then the bytes, row-major. Images: magic `0x00000803`,
//! dimensions N×28×28; labels: magic `0x00000801`, dimension N, values 0..=9.
//!
//! Splits: `train` (60,000) and `test` (10,000), grayscale 28×28, 10 classes.
use std::io::Read;
use std::path::{Path, PathBuf};

use flate2::read::GzDecoder;
use tch::Tensor;

use super::{check_count, check_folder, check_label_range, check_split, read_file};
use super::{Dataset, DatasetKind, Split};
use crate::error::{Error, Result};

/// Image side in pixels.
pub const SIDE: usize = 28;

/// What the data folder must hold, for messages.
const LAYOUT: &str =
    "{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz (the Debian package dataset-fashion-mnist \
                      installs them under /usr/share/datasets/fashion-mnist)";

/// Reads split `split` (`train` or `test`) of Fashion-MNIST from `dir` (for instance
/// [`FASHION_MNIST_DIR`](super::FASHION_MNIST_DIR)).
pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
    check_split(DatasetKind::FashionMnist, split)?;
    check_folder(dir, LAYOUT)?;
    let prefix = if split == Split::Train {
        "train"
    } else {
        "t10k"
    };

    let images_path = find(dir, &format!("{prefix}-images-idx3-ubyte"))?;
    let raw = read_idx_bytes(&images_path)?;
    let ([n, rows, cols], pixels) = parse_idx::<3>(&images_path, &raw)?;
    if (rows, cols) != (SIDE, SIDE) {
        return Err(Error::file(
            &images_path,
            "28×28 images",
            format!("{rows}×{cols} images"),
        ));
    }

    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let raw_labels = read_idx_bytes(&labels_path)?;
    let (_, labels) = parse_idx::<1>(&labels_path, &raw_labels)?;
    check_count(&labels_path, labels.len(), &images_path, n)?;
    check_label_range(
        &labels_path,
        labels.iter().copied(),
        0..=9,
        "labels",
        "image",
    )?;

    let side = SIDE as i64;
    let images = Tensor::f_from_slice(pixels)?.f_view([n as i64, 1, side, side])?;
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Ok(Dataset {
        name: format!("{}/{split}", DatasetKind::FashionMnist),
        images,
        labels: Tensor::f_from_slice(&labels)?,
        num_classes: DatasetKind::FashionMnist.num_classes(),
    })
}

/// `dir/stem.gz` if it exists, else `dir/stem` if it exists, else an error naming both.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let plain = dir.join(stem);
    if plain.is_file() {
        return Ok(plain);
    }
    Err(Error::file(
        gz,
        format!("the Fashion-MNIST file {stem}.gz (or {stem} uncompressed)"),
        "no such file",
    ))
}

/// The IDX bytes of a file, gunzipped when its name ends in `.gz`.
fn read_idx_bytes(path: &Path) -> Result<Vec<u8>> {
    let raw = read_file(path, "a Fashion-MNIST IDX file")?;
    if path.extension().is_none_or(|e| e != "gz") {
        return Ok(raw);
    }
    let mut out = Vec::with_capacity(raw.len().saturating_mul(4));
    GzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, "a gzip stream", format!("a corrupt one ({e})")))?;
    Ok(out)
}

/// Splits an unsigned-byte IDX file with `N` dimensions into its dimensions and its data,
/// checking the magic (`0x0000080N`) and that the data is exactly as long as the dimensions say.
fn parse_idx<'a, const N: usize>(path: &Path, bytes: &'a [u8]) -> Result<([usize; N], &'a [u8])> {
    let magic = 0x0800 | N as u32;
    let truncated = |needed: usize| {
        Error::file(
            path,
            format!("an IDX header of {needed} bytes"),
            format!("{} bytes in all", bytes.len()),
        )
    };
    let (head, rest) = bytes.split_first_chunk::<4>().ok_or_else(|| truncated(4))?;
    let found = u32::from_be_bytes(*head);
    if found != magic {
        return Err(Error::file(
            path,
            format!("IDX magic 0x{magic:08x} (unsigned bytes, {N} dimensions)"),
            format!("0x{found:08x}"),
        ));
    }
    if rest.len() < 4 * N {
        return Err(truncated(4 + 4 * N));
    }
    let (dim_bytes, data) = rest.split_at(4 * N);
    let mut dims = [0usize; N];
    for (d, c) in dims.iter_mut().zip(dim_bytes.chunks_exact(4)) {
        *d = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize;
    }
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    let expected = dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d));
    if expected != Some(data.len()) {
        let expected =
            expected.map_or_else(|| "more than fits in memory".to_string(), |e| e.to_string());
        return Err(Error::file(
            path,
            format!("{expected} data bytes after the header (dimensions {shape})"),
            format!("{} bytes", data.len()),
        ));
    }
    Ok((dims, data))
}
