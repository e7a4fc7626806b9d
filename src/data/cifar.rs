//! CIFAR-10 and CIFAR-100, binary versions (`cifar-10-binary.tar.gz`, `cifar-100-binary.tar.gz`).
//!
//! Layouts: `D/cifar-10-batches-bin/{data_batch_1.bin,…,data_batch_5.bin,test_batch.bin}` and
//! `D/cifar-100-binary/{train.bin,test.bin}`, or `D` being that folder itself.
//!
//! Each file is a sequence of records of one 32×32 colour image:
//! * CIFAR-10, 3,073 bytes: the label (0..=9), then 3,072 pixel bytes: the R plane (1,024 bytes,
//!   row-major), then G, then B.
//! * CIFAR-100, 3,074 bytes: the coarse label (0..=19), the fine label (0..=99), then the 3,072
//!   pixel bytes. The dataset's labels are the fine ones (100 classes).
//!
//! Splits: `train` (50,000: the five batches in order for CIFAR-10) and `test` (10,000).
use std::path::Path;

use tch::Tensor;

use super::{
    check_label_range, check_split, copy_strided, empty_images, read_file, resolve_dir,
    whole_records,
};
use super::{Dataset, DatasetKind, Split};
use crate::error::Result;

/// Image side in pixels.
pub const SIDE: i64 = 32;
/// Pixel bytes per image: 3×32×32.
pub const PIXEL_BYTES: usize = 3 * 32 * 32;
/// What `--data-dir` must hold for CIFAR-10, for messages.
pub const CIFAR10_LAYOUT: &str =
    "cifar-10-batches-bin/{data_batch_1.bin,...,data_batch_5.bin,test_batch.bin} \
                                  (unpack the official cifar-10-binary.tar.gz there)";
/// What `--data-dir` must hold for CIFAR-100, for messages.
pub const CIFAR100_LAYOUT: &str = "cifar-100-binary/{train.bin,test.bin} \
                                   (unpack the official cifar-100-binary.tar.gz there)";

/// One of the two binary formats.
struct Format {
    kind: DatasetKind,
    /// The folder the official archive unpacks to.
    subdir: &'static str,
    layout: &'static str,
    archive: &'static str,
    train_files: &'static [&'static str],
    test_files: &'static [&'static str],
    /// The label bytes at the start of each record: (name, largest value). The last one is the
    /// dataset's label.
    label_bytes: &'static [(&'static str, u8)],
    /// Describes one record, for the size error.
    record_layout: &'static str,
}

impl Format {
    fn record_len(&self) -> usize {
        self.label_bytes.len() + PIXEL_BYTES
    }
}

const CIFAR10: Format = Format {
    kind: DatasetKind::Cifar10,
    subdir: "cifar-10-batches-bin",
    layout: CIFAR10_LAYOUT,
    archive: "cifar-10-binary.tar.gz",
    train_files: &[
        "data_batch_1.bin",
        "data_batch_2.bin",
        "data_batch_3.bin",
        "data_batch_4.bin",
        "data_batch_5.bin",
    ],
    test_files: &["test_batch.bin"],
    label_bytes: &[("labels", 9)],
    record_layout: "1 label byte + 3×32×32 pixel bytes per record",
};

const CIFAR100: Format = Format {
    kind: DatasetKind::Cifar100,
    subdir: "cifar-100-binary",
    layout: CIFAR100_LAYOUT,
    archive: "cifar-100-binary.tar.gz",
    train_files: &["train.bin"],
    test_files: &["test.bin"],
    label_bytes: &[("coarse labels", 19), ("fine labels", 99)],
    record_layout: "coarse and fine label bytes + 3×32×32 pixel bytes per record",
};

/// Reads split `split` (`train` or `test`) of CIFAR-10 from `data_dir`.
pub fn load_cifar10(data_dir: &Path, split: Split) -> Result<Dataset> {
    load(&CIFAR10, data_dir, split)
}

/// Reads split `split` (`train` or `test`) of CIFAR-100 from `data_dir`, with the fine labels.
pub fn load_cifar100(data_dir: &Path, split: Split) -> Result<Dataset> {
    load(&CIFAR100, data_dir, split)
}

fn load(format: &Format, data_dir: &Path, split: Split) -> Result<Dataset> {
    check_split(format.kind, split)?;
    let names = if split == Split::Train {
        format.train_files
    } else {
        format.test_files
    };
    let dir = resolve_dir(data_dir, format.subdir, names[0], format.layout)?;
    let record = format.record_len();

    // Read and validate every file first: they are small (30 MB each), and this gives the total.
    let mut files: Vec<(Vec<u8>, usize)> = Vec::with_capacity(names.len());
    let mut labels: Vec<i64> = Vec::new();
    for name in names {
        let path = dir.join(name);
        let what = format!(
            "the {} file {name} (unpack the official {} under --data-dir)",
            format.kind, format.archive
        );
        let bytes = read_file(&path, &what)?;
        let n = whole_records(&path, bytes.len() as u64, record, format.record_layout)?;
        for (i, &(label_name, max)) in format.label_bytes.iter().enumerate() {
            let column = bytes.chunks_exact(record).map(|r| r[i]);
            check_label_range(&path, column, 0..=max, label_name, "record")?;
        }
        let label_at = format.label_bytes.len() - 1;
        labels.extend(bytes.chunks_exact(record).map(|r| i64::from(r[label_at])));
        files.push((bytes, n));
    }

    // Gather the pixel planes out of the records into one N×3×32×32 tensor.
    let images = empty_images(&[labels.len() as i64, 3, SIDE, SIDE])?;
    let mut start = 0i64;
    for (bytes, n) in &files {
        let n = *n as i64;
        let mut dst = images.f_narrow(0, start, n)?;
        let strides = [record as i64, SIDE * SIDE, SIDE, 1];
        copy_strided(
            &mut dst,
            bytes,
            format.label_bytes.len(),
            &[n, 3, SIDE, SIDE],
            &strides,
        )?;
        start += n;
    }

    Ok(Dataset {
        name: format!("{}/{split}", format.kind),
        images,
        labels: Tensor::f_from_slice(&labels)?,
        num_classes: format.kind.num_classes(),
    })
}
