//! STL-10, binary version (`stl10_binary.tar.gz`).
//!
//! Layout: `D/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,unlabeled_X.bin}`, or
//! `D` being the `stl10_binary` folder itself.
//!
//! * `*_X.bin`: images one after the other, 3×96×96 = 27,648 bytes each: three channel planes
//!   (R, G, B), each stored **column-major** (the byte at `col*96 + row` of a plane is the pixel at
//!   row `row`, column `col`). The reader transposes them into the usual row-major N×3×H×W.
//! * `*_y.bin`: one byte per image, the class 1..=10 (read as 0..=9).
//! * `unlabeled_X.bin` (100,000 images, 2.7 GB) has no label file: its images get label -1.
//!
//! Splits: `train` (5,000), `test` (8,000), `unlabeled` (100,000), `train+unlabeled` (train then
//! unlabeled, 105,000).
use std::path::{Path, PathBuf};

use tch::Tensor;

use super::{
    check_count, check_label_range, copy_strided, empty_images, file_len, read_file, resolve_dir,
    whole_records,
};
use super::{Dataset, DatasetKind, Split};
use crate::error::{Error, Result};

/// Image side in pixels.
pub const SIDE: i64 = 96;
/// Bytes per image: 3×96×96.
pub const IMAGE_BYTES: usize = 3 * 96 * 96;
/// The folder the official archive unpacks to.
pub const SUBDIR: &str = "stl10_binary";
/// What `--data-dir` must hold, for messages.
pub const LAYOUT: &str =
    "stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,unlabeled_X.bin} \
                          (unpack the official stl10_binary.tar.gz there)";

/// The image files of a split, each with its label file (`None` for the unlabelled images).
fn parts(split: Split) -> &'static [(&'static str, Option<&'static str>)] {
    match split {
        Split::Train => &[("train_X.bin", Some("train_y.bin"))],
        Split::Test => &[("test_X.bin", Some("test_y.bin"))],
        Split::Unlabeled => &[("unlabeled_X.bin", None)],
        Split::TrainUnlabeled => &[
            ("train_X.bin", Some("train_y.bin")),
            ("unlabeled_X.bin", None),
        ],
    }
}

/// What a file of the dataset should be, for the missing-file error.
fn what(file: &str) -> String {
    format!("the STL-10 file {file} (unpack the official stl10_binary.tar.gz under --data-dir)")
}

/// Reads split `split` of STL-10 from `data_dir` (see the [module docs](self) for the layout).
///
/// Every file's size and every label is checked before the image files are read, so a bad file
/// fails fast; each image file is then read once and transposed straight into the result tensor.
pub fn load(data_dir: &Path, split: Split) -> Result<Dataset> {
    let parts = parts(split);
    let dir = resolve_dir(data_dir, SUBDIR, parts[0].0, LAYOUT)?;

    // Pass 1: image counts from the file sizes, and the labels.
    let mut images_files: Vec<(&str, PathBuf, usize)> = Vec::with_capacity(parts.len());
    let mut labels: Vec<i64> = Vec::new();
    for &(x_name, y_name) in parts {
        let x_path = dir.join(x_name);
        let x_len = file_len(&x_path, &what(x_name))?;
        let n = whole_records(&x_path, x_len, IMAGE_BYTES, "3×96×96 per image")?;
        match y_name {
            Some(y_name) => {
                let y_path = dir.join(y_name);
                let y = read_file(&y_path, &what(y_name))?;
                check_count(&y_path, y.len(), &x_path, n)?;
                check_label_range(&y_path, y.iter().copied(), 1..=10, "labels", "image")?;
                labels.extend(y.iter().map(|&l| i64::from(l) - 1));
            }
            None => labels.resize(labels.len() + n, -1),
        }
        images_files.push((x_name, x_path, n));
    }

    // Pass 2: the pixels, straight into one N×3×96×96 tensor.
    let total = labels.len() as i64;
    let images = empty_images(&[total, 3, SIDE, SIDE])?;
    let mut start = 0i64;
    for (x_name, x_path, n) in images_files {
        let bytes = read_file(&x_path, &what(x_name))?;
        if bytes.len() != n * IMAGE_BYTES {
            // The file changed between the size check and the read.
            return Err(Error::file(
                &x_path,
                format!("{} bytes", n * IMAGE_BYTES),
                format!("{} bytes", bytes.len()),
            ));
        }
        let n = n as i64;
        let mut dst = images.f_narrow(0, start, n)?;
        // Image i, channel c, row h, column w is byte i*27648 + c*9216 + w*96 + h.
        let strides = [IMAGE_BYTES as i64, SIDE * SIDE, 1, SIDE];
        copy_strided(&mut dst, &bytes, 0, &[n, 3, SIDE, SIDE], &strides)?;
        start += n;
    }

    Ok(Dataset {
        name: format!("{}/{split}", DatasetKind::Stl10),
        images,
        labels: Tensor::f_from_slice(&labels)?,
        num_classes: DatasetKind::Stl10.num_classes(),
    })
}
