//! Datasets read from their official files, and batched on-device augmentation.
//!
//! [`load`] reads one split of one dataset into a [`Dataset`]: uint8 images N×C×H×W and int64
//! labels (0-based; unlabelled images carry -1), all on the CPU. Every file is validated (present,
//! a whole number of records, as many labels as images, labels in range) and a bad file is an
//! [`Error::File`] naming it, what was expected and what was found.
//!
//! # Expected layouts under `--data-dir` (`D`)
//!
//! | dataset | files |
//! |---|---|
//! | `stl10` | `D/stl10_binary/{train_X.bin,train_y.bin,test_X.bin,test_y.bin,unlabeled_X.bin}` (unpack `stl10_binary.tar.gz` into `D`; `D` may also be the `stl10_binary` folder itself) |
//! | `cifar10` | `D/cifar-10-batches-bin/{data_batch_1.bin,…,data_batch_5.bin,test_batch.bin}` (unpack `cifar-10-binary.tar.gz` into `D`; or `D` itself) |
//! | `cifar100` | `D/cifar-100-binary/{train.bin,test.bin}` (unpack `cifar-100-binary.tar.gz` into `D`; or `D` itself) |
//! | `fashion-mnist` | `D/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz` (or the same names uncompressed, without `.gz`); without `--data-dir`, [`FASHION_MNIST_DIR`] (Debian package `dataset-fashion-mnist`) |
//!
//! # Splits
//!
//! `train` and `test` for every dataset; STL-10 also has `unlabeled` (100,000 images, labels -1)
//! and `train+unlabeled` (the 5,000 labelled training images followed by the 100,000 unlabelled
//! ones), the set the reference trains on.
use std::fmt;
use std::ops::RangeInclusive;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use tch::{Device, Kind, Tensor};

use crate::error::{Error, Result};

pub mod augment;
pub mod cifar;
pub mod classes;
pub mod fashion_mnist;
pub mod loader;
mod settings;
pub mod stl10;

pub use settings::DataConfig;

/// A labelled image set held in memory as raw bytes.
#[derive(Debug)]
pub struct Dataset {
    /// e.g. "stl10/train+unlabeled"
    pub name: String,
    /// uint8, N×C×H×W (C = 1 for Fashion-MNIST, 3 otherwise), CPU.
    pub images: Tensor,
    /// int64, N. Unlabelled images (STL-10 `unlabeled`) carry -1.
    pub labels: Tensor,
    /// Number of classes of the labelled splits (10 or 100).
    pub num_classes: i64,
}

impl Dataset {
    pub fn len(&self) -> i64 {
        self.images.size()[0]
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Where the Debian package `dataset-fashion-mnist` installs the gzip'd IDX files; the default
/// data folder for Fashion-MNIST.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The datasets the crate reads. Names (serde, [`FromStr`], [`Display`](fmt::Display)):
/// `fashion-mnist`, `stl10`, `cifar10`, `cifar100`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum DatasetKind {
    #[serde(rename = "fashion-mnist")]
    FashionMnist,
    #[serde(rename = "stl10")]
    Stl10,
    #[serde(rename = "cifar10")]
    Cifar10,
    #[serde(rename = "cifar100")]
    Cifar100,
}

impl DatasetKind {
    /// Every dataset, in the order the names are listed in messages.
    pub const ALL: [DatasetKind; 4] = [
        DatasetKind::FashionMnist,
        DatasetKind::Stl10,
        DatasetKind::Cifar10,
        DatasetKind::Cifar100,
    ];

    /// The name used in configs and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            DatasetKind::FashionMnist => "fashion-mnist",
            DatasetKind::Stl10 => "stl10",
            DatasetKind::Cifar10 => "cifar10",
            DatasetKind::Cifar100 => "cifar100",
        }
    }

    /// Number of classes of the labelled splits (CIFAR-100: the fine labels).
    pub fn num_classes(self) -> i64 {
        match self {
            DatasetKind::Cifar100 => 100,
            DatasetKind::FashionMnist | DatasetKind::Stl10 | DatasetKind::Cifar10 => 10,
        }
    }

    /// The side of the dataset's square images, in pixels.
    pub fn image_side(self) -> i64 {
        match self {
            DatasetKind::FashionMnist => fashion_mnist::SIDE as i64,
            DatasetKind::Stl10 => stl10::SIDE,
            DatasetKind::Cifar10 | DatasetKind::Cifar100 => cifar::SIDE,
        }
    }

    /// Whether the dataset has the split (only STL-10 has `unlabeled` and `train+unlabeled`).
    pub fn has_split(self, split: Split) -> bool {
        matches!(split, Split::Train | Split::Test) || self == DatasetKind::Stl10
    }
}

impl fmt::Display for DatasetKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DatasetKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        DatasetKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::config(
                "data.dataset",
                format!("unknown dataset `{s}`; expected one of fashion-mnist, stl10, cifar10, cifar100"),
            )
        })
    }
}

/// A split of a dataset. Names (serde, [`FromStr`], [`Display`](fmt::Display)): `train`, `test`,
/// `unlabeled`, `train+unlabeled`; the last two exist only for STL-10.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Split {
    #[serde(rename = "train")]
    Train,
    #[serde(rename = "test")]
    Test,
    #[serde(rename = "unlabeled")]
    Unlabeled,
    #[serde(rename = "train+unlabeled")]
    TrainUnlabeled,
}

impl Split {
    /// Every split, in the order the names are listed in messages.
    pub const ALL: [Split; 4] = [
        Split::Train,
        Split::Test,
        Split::Unlabeled,
        Split::TrainUnlabeled,
    ];

    /// The name used in configs, on the command line and in [`Dataset::name`].
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
            Split::Unlabeled => "unlabeled",
            Split::TrainUnlabeled => "train+unlabeled",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Split::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            Error::config(
                "data.split",
                format!("unknown split `{s}`; expected one of train, test, unlabeled, train+unlabeled"),
            )
        })
    }
}

/// Reads one split of a dataset from its official files (layouts in the [module docs](self)).
///
/// Fashion-MNIST reads from [`FASHION_MNIST_DIR`] when `data_dir` is `None`; the other datasets
/// need `data_dir`. A split the dataset does not have is an [`Error::Config`] on `data.split`.
pub fn load(kind: DatasetKind, split: Split, data_dir: Option<&Path>) -> Result<Dataset> {
    check_split(kind, split)?;
    match kind {
        DatasetKind::FashionMnist => {
            fashion_mnist::load(data_dir.unwrap_or(Path::new(FASHION_MNIST_DIR)), split)
        }
        DatasetKind::Stl10 => stl10::load(require_dir(kind, data_dir, stl10::LAYOUT)?, split),
        DatasetKind::Cifar10 => {
            cifar::load_cifar10(require_dir(kind, data_dir, cifar::CIFAR10_LAYOUT)?, split)
        }
        DatasetKind::Cifar100 => {
            cifar::load_cifar100(require_dir(kind, data_dir, cifar::CIFAR100_LAYOUT)?, split)
        }
    }
}

/// `data_dir`, or an error on `--data-dir` saying which `layout` the dataset expects there.
fn require_dir<'a>(
    kind: DatasetKind,
    data_dir: Option<&'a Path>,
    layout: &str,
) -> Result<&'a Path> {
    data_dir.ok_or_else(|| {
        Error::config(
            "--data-dir",
            format!("dataset {kind} needs --data-dir D, with {layout}"),
        )
    })
}

/// The error for a split the dataset does not have (`unlabeled` / `train+unlabeled` outside STL-10).
pub(crate) fn check_split(kind: DatasetKind, split: Split) -> Result<()> {
    if kind.has_split(split) {
        return Ok(());
    }
    Err(Error::config(
        "data.split",
        format!("{kind} has no split `{split}` (only stl10 has `unlabeled` and `train+unlabeled`); use `train` or `test`"),
    ))
}

// ----- Helpers shared by the readers -----

/// The folder holding a dataset's files: `data_dir/subdir` when it exists, else `data_dir` itself
/// when it is named `subdir` or holds `probe` (a file the split needs). `layout` describes what
/// the folder should hold, for the error.
pub(crate) fn resolve_dir(
    data_dir: &Path,
    subdir: &str,
    probe: &str,
    layout: &str,
) -> Result<PathBuf> {
    check_folder(data_dir, layout)?;
    let nested = data_dir.join(subdir);
    if nested.is_dir() {
        return Ok(nested);
    }
    if data_dir.file_name().is_some_and(|n| n == subdir)
        || regular_file(&data_dir.join(probe), layout)?
    {
        return Ok(data_dir.to_path_buf());
    }
    Err(Error::file(
        nested,
        format!("--data-dir to hold {layout}"),
        "no such folder",
    ))
}

/// An error unless `dir` is a folder; `layout` says what it should hold.
pub(crate) fn check_folder(dir: &Path, layout: &str) -> Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let found = if dir.exists() {
        "a file, not a folder"
    } else {
        "no such folder"
    };
    Err(Error::file(
        dir,
        format!("a data folder holding {layout}"),
        found,
    ))
}

/// The error for a missing file; `what` says what it should be.
fn missing(path: &Path, what: &str) -> Error {
    Error::file(path, what, "no such file")
}

/// What stands at `path` when it is not a readable regular file: a folder, a dangling or looping
/// symbolic link, something else; `None` when nothing is there.
fn not_a_file(path: &Path) -> Option<String> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Some("a file that changed while it was being checked".into()),
        Ok(m) if m.is_dir() => Some("a folder, not a file".into()),
        Ok(_) => Some("not a regular file".into()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => std::fs::symlink_metadata(path)
            .ok()
            .map(|_| "a symbolic link to nothing".to_string()),
        Err(e) if e.raw_os_error() == Some(40) => Some("a symbolic link loop".into()),
        Err(e) => Some(format!("unreadable ({e})")),
    }
}

/// Whether `path` is a regular file: `Ok(false)` when nothing is there, an error naming what is
/// there instead (a folder, a link loop, …) otherwise; `what` says what it should be.
pub(crate) fn regular_file(path: &Path, what: &str) -> Result<bool> {
    if std::fs::metadata(path).is_ok_and(|m| m.is_file()) {
        return Ok(true);
    }
    match not_a_file(path) {
        None => Ok(false),
        Some(found) => Err(Error::file(path, what, found)),
    }
}

/// The size in bytes of a file that must exist; `what` says what it should be.
pub(crate) fn file_len(path: &Path, what: &str) -> Result<u64> {
    match std::fs::metadata(path) {
        Ok(m) if m.is_file() => Ok(m.len()),
        _ => Err(match not_a_file(path) {
            None => missing(path, what),
            Some(found) => Error::file(path, what, found),
        }),
    }
}

/// Reads a whole file that must exist (one allocation of the file's size); `what` says what it
/// should be.
pub(crate) fn read_file(path: &Path, what: &str) -> Result<Vec<u8>> {
    file_len(path, what)?;
    std::fs::read(path).map_err(|e| Error::io(path, e))
}

/// The number of `record`-byte records in a file of `len` bytes: an error unless `len` is a
/// positive multiple of `record`. `layout` describes one record, e.g. "3×96×96 per image".
pub(crate) fn whole_records(path: &Path, len: u64, record: usize, layout: &str) -> Result<usize> {
    let record_u64 = record as u64;
    if len == 0 {
        return Err(Error::file(
            path,
            format!("at least one record of {record} bytes ({layout})"),
            "an empty file",
        ));
    }
    if !len.is_multiple_of(record_u64) {
        return Err(Error::file(
            path,
            format!("a multiple of {record} bytes ({layout})"),
            format!(
                "{len} bytes ({} whole records and {} bytes over)",
                len / record_u64,
                len % record_u64
            ),
        ));
    }
    usize::try_from(len / record_u64)
        .map_err(|_| Error::file(path, "a file that fits in memory", format!("{len} bytes")))
}

/// An error unless a label file holds exactly one label per image of its image file.
pub(crate) fn check_count(
    labels_path: &Path,
    n_labels: usize,
    images_path: &Path,
    n_images: usize,
) -> Result<()> {
    if n_labels == n_images {
        return Ok(());
    }
    Err(Error::file(
        labels_path,
        format!(
            "{n_images} labels, one per image of {}",
            images_path.display()
        ),
        format!("{n_labels} labels"),
    ))
}

/// An error naming the first label outside `range`; `what` names the labels (e.g. "fine labels")
/// and `unit` what they are indexed by (e.g. "image", "record").
pub(crate) fn check_label_range(
    path: &Path,
    labels: impl IntoIterator<Item = u8>,
    range: RangeInclusive<u8>,
    what: &str,
    unit: &str,
) -> Result<()> {
    match labels
        .into_iter()
        .enumerate()
        .find(|(_, l)| !range.contains(l))
    {
        None => Ok(()),
        Some((i, l)) => Err(Error::file(
            path,
            format!("{what} in {}..={}", range.start(), range.end()),
            format!("{l} at {unit} {i} (counting from 0)"),
        )),
    }
}

/// Copies the uint8 tensor that `bytes[offset..]` holds with the given `size` and `strides` (in
/// bytes) into `dst`, which must have shape `size`: one pass over the data, with no intermediate
/// tensor. This is how the readers gather pixels out of records (CIFAR) and transpose column-major
/// images (STL-10) while building their image tensor.
pub(crate) fn copy_strided(
    dst: &mut Tensor,
    bytes: &[u8],
    offset: usize,
    size: &[i64],
    strides: &[i64],
) -> Result<()> {
    // The largest byte offset the view reads must lie inside `bytes`: checked before the unsafe
    // view is made, so a wrong size can only be an error, never an out-of-bounds read.
    let in_bounds = size.len() == strides.len()
        && size.iter().chain(strides).all(|&v| v >= 0)
        && (size.contains(&0) || {
            let last = size
                .iter()
                .zip(strides)
                .try_fold(offset as u64, |acc, (&n, &s)| {
                    (n as u64 - 1)
                        .checked_mul(s as u64)
                        .and_then(|d| acc.checked_add(d))
                });
            last.is_some_and(|last| last < bytes.len() as u64)
        });
    if !in_bounds || dst.size() != size || dst.kind() != Kind::Uint8 {
        return Err(Error::Shape(format!(
            "copy_strided: view {size:?} / {strides:?} at byte {offset} of {} bytes into a {:?} {:?} tensor",
            bytes.len(),
            dst.kind(),
            dst.size()
        )));
    }
    if size.contains(&0) {
        return Ok(());
    }
    // SAFETY: every byte the view addresses lies in `bytes` (checked above); the view is only read
    // by `copy_`, which completes synchronously on the CPU, and is dropped at the end of this
    // function, while `bytes` is still borrowed.
    let view = unsafe {
        Tensor::f_from_blob(
            bytes[offset..].as_ptr(),
            size,
            strides,
            Kind::Uint8,
            Device::Cpu,
        )?
    };
    dst.f_copy_(&view)?;
    Ok(())
}

/// A new uninitialised uint8 CPU tensor of shape `size`, to be filled with [`copy_strided`].
pub(crate) fn empty_images(size: &[i64]) -> Result<Tensor> {
    Ok(Tensor::f_empty(size, (Kind::Uint8, Device::Cpu))?)
}
