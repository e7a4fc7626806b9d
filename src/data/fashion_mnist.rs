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

use super::{check_count, check_folder, check_label_range, check_split, file_len, regular_file};
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
    let ([n, rows, cols], pixels) = read_idx::<3>(&images_path, |[n, rows, cols]| {
        if (rows, cols) != (SIDE, SIDE) {
            return Err(("28×28 images".into(), format!("{rows}×{cols} images")));
        }
        if n == 0 {
            return Err((
                "at least one image".into(),
                "a header declaring 0 images".into(),
            ));
        }
        Ok(())
    })?;
    debug_assert_eq!((rows, cols), (SIDE, SIDE));

    let labels_path = find(dir, &format!("{prefix}-labels-idx1-ubyte"))?;
    let (_, labels) = read_idx::<1>(&labels_path, |[m]| {
        if m != n {
            return Err((
                format!("{n} labels, one per image of {}", images_path.display()),
                format!("{m} labels"),
            ));
        }
        Ok(())
    })?;
    check_count(&labels_path, labels.len(), &images_path, n)?;
    check_label_range(
        &labels_path,
        labels.iter().copied(),
        0..=9,
        "labels",
        "image",
    )?;

    let side = SIDE as i64;
    let images = Tensor::f_from_slice(&pixels)?.f_view([n as i64, 1, side, side])?;
    let labels: Vec<i64> = labels.iter().map(|&l| i64::from(l)).collect();
    Ok(Dataset {
        name: format!("{}/{split}", DatasetKind::FashionMnist),
        images,
        labels: Tensor::f_from_slice(&labels)?,
        num_classes: DatasetKind::FashionMnist.num_classes(),
    })
}

/// `dir/stem.gz` if it exists, else `dir/stem` if it exists, else an error naming both. A folder,
/// a dangling or looping link in place of the file is named as such. With both there, a note
/// says which is read.
fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{stem}.gz"));
    let plain = dir.join(stem);
    let what = format!("the Fashion-MNIST file {stem}.gz (or {stem} uncompressed)");
    if regular_file(&gz, &what)? {
        if regular_file(&plain, &what).unwrap_or(false) {
            eprintln!(
                "note: {} has both {stem}.gz and {stem}: reading {stem}.gz",
                dir.display()
            );
        }
        return Ok(gz);
    }
    if regular_file(&plain, &what)? {
        return Ok(plain);
    }
    Err(Error::file(gz, what, "no such file"))
}

/// The largest ratio of uncompressed to compressed size gzip's deflate can reach (about 1032:1),
/// with a margin: a header declaring more data than that is refused before anything is read.
const MAX_GZIP_RATIO: u64 = 1100;

/// Reads an unsigned-byte IDX file with `N` dimensions (gunzipped when its name ends in `.gz`):
/// the magic (`0x0000080N`) and dimensions are checked first, then `check(dims)` (an error is
/// `(expected, found)`), then exactly
/// the declared number of data bytes is read, streaming, and the file must end there. Memory is
/// bounded by the declared size, which is itself bounded by the file's size (× gzip's largest
/// ratio when compressed), so a damaged header or a decompression bomb cannot exhaust memory.
fn read_idx<const N: usize>(
    path: &Path,
    check: impl FnOnce([usize; N]) -> std::result::Result<(), (String, String)>,
) -> Result<([usize; N], Vec<u8>)> {
    let file_len = file_len(path, "a Fashion-MNIST IDX file")?;
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let gz = path.extension().is_some_and(|e| e == "gz");
    let mut reader: Box<dyn Read> = if gz {
        Box::new(GzDecoder::new(file))
    } else {
        Box::new(file)
    };
    let corrupt = |e: std::io::Error| {
        if gz {
            Error::file(path, "a gzip stream", format!("a corrupt one ({e})"))
        } else {
            Error::io(path, e)
        }
    };

    let magic = 0x0800 | N as u32;
    let header_len = 4 + 4 * N;
    let mut header = vec![0u8; header_len];
    let got = read_up_to(&mut reader, &mut header).map_err(corrupt)?;
    if got < 4 || u32::from_be_bytes([header[0], header[1], header[2], header[3]]) != magic {
        let found = if got < 4 {
            format!("{got} bytes in all")
        } else {
            format!(
                "0x{:08x}",
                u32::from_be_bytes([header[0], header[1], header[2], header[3]])
            )
        };
        return Err(Error::file(
            path,
            format!("IDX magic 0x{magic:08x} (unsigned bytes, {N} dimensions)"),
            found,
        ));
    }
    if got < header_len {
        return Err(Error::file(
            path,
            format!("an IDX header of {header_len} bytes"),
            format!("{got} bytes in all"),
        ));
    }
    let mut dims = [0usize; N];
    for (d, c) in dims.iter_mut().zip(header[4..].chunks_exact(4)) {
        *d = u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize;
    }
    let shape = dims
        .iter()
        .map(|d| d.to_string())
        .collect::<Vec<_>>()
        .join("×");
    check(dims).map_err(|(expected, found)| Error::file(path, expected, found))?;
    let declared = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d as u64));
    let limit = if gz {
        file_len.saturating_mul(MAX_GZIP_RATIO)
    } else {
        file_len.saturating_sub(header_len as u64)
    };
    let declared = match declared {
        Some(d) if d <= limit => d,
        _ => {
            let found = if gz {
                format!("a header declaring {shape} bytes of data, more than a gzip file of {file_len} bytes can hold")
            } else {
                format!(
                    "{} data bytes after the header (dimensions {shape})",
                    file_len.saturating_sub(header_len as u64)
                )
            };
            return Err(Error::file(
                path,
                format!("as many data bytes as the dimensions declare ({shape})"),
                found,
            ));
        }
    };
    // Grown as the data arrives: what is allocated follows what the stream really holds.
    let mut data = Vec::with_capacity(declared.min(1 << 26) as usize);
    (&mut reader)
        .take(declared + 1)
        .read_to_end(&mut data)
        .map_err(corrupt)?;
    if data.len() as u64 != declared {
        let found = if data.len() as u64 > declared {
            "more data after them".to_string()
        } else {
            format!("{} bytes", data.len())
        };
        return Err(Error::file(
            path,
            format!("{declared} data bytes after the header (dimensions {shape})"),
            found,
        ));
    }
    Ok((dims, data))
}

/// Fills `buf` as far as the stream allows; returns how many bytes were read.
fn read_up_to(r: &mut dyn Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}
