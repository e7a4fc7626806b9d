//! Writers of the datasets' official file formats, shared by the integration tests.
#![allow(dead_code)]

pub mod parity;
pub mod pth;
pub mod run;
pub mod store;
use std::io::Write;
use std::path::Path;

use flate2::write::GzEncoder;
use flate2::Compression;

/// The test pattern: pixel (channel c, row h, column w) of image i. Not symmetric in h and w, so a
/// missing or doubled transpose shows.
pub fn pattern(i: usize, c: usize, h: usize, w: usize) -> u8 {
    ((i * 11 + c * 7 + h * 3 + w) % 251) as u8
}

/// `n` STL-10 images in `*_X.bin` form: per image, per channel, column-major (column outer).
pub fn stl_images(first: usize, n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * 3 * 96 * 96);
    for i in first..first + n {
        for c in 0..3 {
            for w in 0..96 {
                for h in 0..96 {
                    out.push(pattern(i, c, h, w));
                }
            }
        }
    }
    out
}

/// The pattern in N×C×H×W row-major order, as the reader should return it.
pub fn expected_images(first: usize, n: usize, channels: usize, side: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n * channels * side * side);
    for i in first..first + n {
        for c in 0..channels {
            for h in 0..side {
                for w in 0..side {
                    out.push(pattern(i, c, h, w));
                }
            }
        }
    }
    out
}

/// A CIFAR record: the label bytes, then the R, G, B planes, each row-major.
pub fn cifar_record(i: usize, labels: &[u8]) -> Vec<u8> {
    let mut out = labels.to_vec();
    for c in 0..3 {
        for h in 0..32 {
            for w in 0..32 {
                out.push(pattern(i, c, h, w));
            }
        }
    }
    out
}

/// An unsigned-byte IDX file: magic 0x0000080N, the dimensions, the data.
pub fn idx(dims: &[u32], data: &[u8]) -> Vec<u8> {
    let mut out = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    out
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files_under(&p));
        } else {
            out.push(p);
        }
    }
    out
}

pub fn gunzip(bytes: &[u8]) -> Vec<u8> {
    use std::io::Read;
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .unwrap();
    out
}

pub fn write(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
}

/// A complete STL-10 folder `dir/stl10_binary` with `n_train` labelled train images, `n_test`
/// test images and `n_unlabeled` unlabelled ones (labels cycle through 1..=10).
pub fn stl_folder(dir: &Path, n_train: usize, n_test: usize, n_unlabeled: usize) {
    let d = dir.join("stl10_binary");
    let labels = |n: usize| (0..n).map(|i| (i % 10 + 1) as u8).collect::<Vec<u8>>();
    write(&d.join("train_X.bin"), &stl_images(0, n_train));
    write(&d.join("train_y.bin"), &labels(n_train));
    write(&d.join("test_X.bin"), &stl_images(10_000, n_test));
    write(&d.join("test_y.bin"), &labels(n_test));
    write(&d.join("unlabeled_X.bin"), &stl_images(20_000, n_unlabeled));
}

/// A Fashion-MNIST folder (gzip'd IDX) with `n_train` and `n_test` images, labels cycling 0..10.
pub fn fashion_folder(dir: &Path, n_train: usize, n_test: usize) {
    for (prefix, first, n) in [("train", 0, n_train), ("t10k", 10_000, n_test)] {
        let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
        let images = idx(&[n as u32, 28, 28], &expected_images(first, n, 1, 28));
        write(
            &dir.join(format!("{prefix}-images-idx3-ubyte.gz")),
            &gzip(&images),
        );
        write(
            &dir.join(format!("{prefix}-labels-idx1-ubyte.gz")),
            &gzip(&idx(&[n as u32], &labels)),
        );
    }
}
