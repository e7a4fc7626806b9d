//! The dataset readers against small files written in exactly the official formats, and against
//! the bad files a user can produce (missing, truncated, wrong magic, labels out of range, ...).
use std::path::{Path, PathBuf};

use ipirm::data::{load, Dataset, DatasetKind, Split, FASHION_MNIST_DIR};
use ipirm::Error;
use tch::{Kind, Tensor};

mod common;
use common::*;

/// An STL-10 folder `D/stl10_binary` with `train` (3 images, labels 1, 10, 5), `test` (2 images,
/// labels 2, 3) and `unlabeled` (4 images). Returns (tempdir guard, D).
fn stl_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("stl10_binary");
    write(&dir.join("train_X.bin"), &stl_images(0, 3));
    write(&dir.join("train_y.bin"), &[1, 10, 5]);
    write(&dir.join("test_X.bin"), &stl_images(100, 2));
    write(&dir.join("test_y.bin"), &[2, 3]);
    write(&dir.join("unlabeled_X.bin"), &stl_images(200, 4));
    let root = tmp.path().to_path_buf();
    (tmp, root)
}

/// A CIFAR-10 folder `D/cifar-10-batches-bin`: five training batches of 2 records (image i has
/// label i % 10) and a test batch of 3. Returns (tempdir guard, D).
fn cifar10_fixture() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-10-batches-bin");
    for b in 0..5 {
        let bytes: Vec<u8> = (2 * b..2 * b + 2)
            .flat_map(|i| cifar_record(i, &[(i % 10) as u8]))
            .collect();
        write(&dir.join(format!("data_batch_{}.bin", b + 1)), &bytes);
    }
    let test: Vec<u8> = (50..53)
        .flat_map(|i| cifar_record(i, &[(i % 10) as u8]))
        .collect();
    write(&dir.join("test_batch.bin"), &test);
    let root = tmp.path().to_path_buf();
    (tmp, root)
}

/// A Fashion-MNIST folder with `train` (3 images) and `t10k` (2 images), gzip'd or not.
fn fashion_fixture(gz: bool) -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    for (prefix, first, labels) in [("train", 0, vec![9u8, 0, 4]), ("t10k", 10, vec![1, 2])] {
        let n = labels.len();
        let images = idx(&[n as u32, 28, 28], &expected_images(first, n, 1, 28));
        let labels = idx(&[n as u32], &labels);
        for (stem, bytes) in [
            (format!("{prefix}-images-idx3-ubyte"), images),
            (format!("{prefix}-labels-idx1-ubyte"), labels),
        ] {
            if gz {
                write(&tmp.path().join(format!("{stem}.gz")), &gzip(&bytes));
            } else {
                write(&tmp.path().join(stem), &bytes);
            }
        }
    }
    tmp
}

// ----- Helpers -----

fn bytes_of(t: &Tensor) -> Vec<u8> {
    assert_eq!(t.kind(), Kind::Uint8);
    Vec::<u8>::try_from(t.contiguous().view(-1)).unwrap()
}

fn labels_of(ds: &Dataset) -> Vec<i64> {
    assert_eq!(ds.labels.kind(), Kind::Int64);
    Vec::<i64>::try_from(&ds.labels).unwrap()
}

/// The error's message, checked to name `file`.
fn err_naming(result: ipirm::Result<Dataset>, file: &str) -> String {
    let err = result.expect_err("a bad file must be an error");
    let msg = err.to_string();
    assert!(msg.contains(file), "message should name `{file}`: {msg}");
    msg
}

// ----- STL-10 -----

#[test]
fn stl10_train_is_transposed_to_chw_with_zero_based_labels() {
    let (_tmp, root) = stl_fixture();
    let ds = load(DatasetKind::Stl10, Split::Train, Some(&root)).unwrap();
    assert_eq!(ds.name, "stl10/train");
    assert_eq!(ds.images.size(), [3, 3, 96, 96]);
    assert_eq!(ds.num_classes, 10);
    assert_eq!(bytes_of(&ds.images), expected_images(0, 3, 3, 96));
    assert_eq!(labels_of(&ds), [0, 9, 4]);
}

#[test]
fn stl10_test_split_and_folder_given_directly() {
    let (_tmp, root) = stl_fixture();
    let ds = load(
        DatasetKind::Stl10,
        Split::Test,
        Some(&root.join("stl10_binary")),
    )
    .unwrap();
    assert_eq!(ds.images.size(), [2, 3, 96, 96]);
    assert_eq!(bytes_of(&ds.images), expected_images(100, 2, 3, 96));
    assert_eq!(labels_of(&ds), [1, 2]);
}

#[test]
fn stl10_unlabeled_and_train_plus_unlabeled() {
    let (_tmp, root) = stl_fixture();
    let unl = load(DatasetKind::Stl10, Split::Unlabeled, Some(&root)).unwrap();
    assert_eq!(unl.images.size(), [4, 3, 96, 96]);
    assert_eq!(labels_of(&unl), [-1; 4]);

    let both = load(DatasetKind::Stl10, Split::TrainUnlabeled, Some(&root)).unwrap();
    assert_eq!(both.name, "stl10/train+unlabeled");
    assert_eq!(both.len(), 7);
    let mut expected = expected_images(0, 3, 3, 96);
    expected.extend(expected_images(200, 4, 3, 96));
    assert_eq!(bytes_of(&both.images), expected);
    assert_eq!(labels_of(&both), [0, 9, 4, -1, -1, -1, -1]);
}

#[test]
fn stl10_missing_folder_is_an_error_naming_it() {
    let tmp = tempfile::tempdir().unwrap();
    let msg = err_naming(
        load(DatasetKind::Stl10, Split::Train, Some(tmp.path())),
        "stl10_binary",
    );
    assert!(msg.contains("train_X.bin"), "{msg}");
    let gone = tmp.path().join("nowhere");
    err_naming(
        load(DatasetKind::Stl10, Split::Train, Some(&gone)),
        "nowhere",
    );
}

#[test]
fn stl10_missing_file_is_an_error_naming_it() {
    let (_tmp, root) = stl_fixture();
    std::fs::remove_file(root.join("stl10_binary/unlabeled_X.bin")).unwrap();
    let msg = err_naming(
        load(DatasetKind::Stl10, Split::TrainUnlabeled, Some(&root)),
        "unlabeled_X.bin",
    );
    assert!(msg.contains("no such file"), "{msg}");
}

#[test]
fn stl10_truncated_images_file() {
    let (_tmp, root) = stl_fixture();
    let path = root.join("stl10_binary/train_X.bin");
    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 5);
    std::fs::write(&path, &bytes).unwrap();
    let msg = err_naming(
        load(DatasetKind::Stl10, Split::Train, Some(&root)),
        "train_X.bin",
    );
    assert!(
        msg.contains("expected a multiple of 27648 bytes (3×96×96 per image)"),
        "{msg}"
    );
    assert!(
        msg.contains(&format!("found {} bytes", bytes.len())),
        "{msg}"
    );
}

#[test]
fn stl10_labels_out_of_range() {
    for bad in [11u8, 0] {
        let (_tmp, root) = stl_fixture();
        std::fs::write(root.join("stl10_binary/train_y.bin"), [1, bad, 5]).unwrap();
        let msg = err_naming(
            load(DatasetKind::Stl10, Split::Train, Some(&root)),
            "train_y.bin",
        );
        assert!(
            msg.contains("1..=10") && msg.contains(&format!("found {bad} at image 1")),
            "{msg}"
        );
    }
}

#[test]
fn stl10_label_count_mismatch() {
    let (_tmp, root) = stl_fixture();
    std::fs::write(root.join("stl10_binary/test_y.bin"), [2, 3, 4]).unwrap();
    let msg = err_naming(
        load(DatasetKind::Stl10, Split::Test, Some(&root)),
        "test_y.bin",
    );
    assert!(
        msg.contains("expected 2 labels") && msg.contains("found 3 labels"),
        "{msg}"
    );
}

#[test]
fn stl10_needs_a_data_dir() {
    let err = load(DatasetKind::Stl10, Split::Train, None).unwrap_err();
    assert!(
        matches!(&err, Error::Config { key, .. } if key == "--data-dir"),
        "{err}"
    );
    assert!(err.to_string().contains("stl10_binary/"), "{err}");
}

// ----- CIFAR -----

#[test]
fn cifar10_round_trip() {
    let (_tmp, root) = cifar10_fixture();
    let train = load(DatasetKind::Cifar10, Split::Train, Some(&root)).unwrap();
    assert_eq!(train.name, "cifar10/train");
    assert_eq!(train.images.size(), [10, 3, 32, 32]);
    assert_eq!(train.num_classes, 10);
    assert_eq!(bytes_of(&train.images), expected_images(0, 10, 3, 32));
    assert_eq!(labels_of(&train), (0..10).collect::<Vec<i64>>());

    let test = load(
        DatasetKind::Cifar10,
        Split::Test,
        Some(&root.join("cifar-10-batches-bin")),
    )
    .unwrap();
    assert_eq!(bytes_of(&test.images), expected_images(50, 3, 3, 32));
    assert_eq!(labels_of(&test), [0, 1, 2]);
}

#[test]
fn cifar100_round_trip_uses_fine_labels() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("cifar-100-binary");
    // (coarse, fine) pairs: the fine label must be the one read.
    let pairs = [(3u8, 99u8), (19, 0), (0, 42)];
    let train: Vec<u8> = pairs
        .iter()
        .enumerate()
        .flat_map(|(i, &(c, f))| cifar_record(i, &[c, f]))
        .collect();
    write(&dir.join("train.bin"), &train);
    write(&dir.join("test.bin"), &cifar_record(7, &[5, 17]));

    let ds = load(DatasetKind::Cifar100, Split::Train, Some(tmp.path())).unwrap();
    assert_eq!(ds.name, "cifar100/train");
    assert_eq!(ds.num_classes, 100);
    assert_eq!(ds.images.size(), [3, 3, 32, 32]);
    assert_eq!(bytes_of(&ds.images), expected_images(0, 3, 3, 32));
    assert_eq!(labels_of(&ds), [99, 0, 42]);

    let test = load(DatasetKind::Cifar100, Split::Test, Some(tmp.path())).unwrap();
    assert_eq!(bytes_of(&test.images), expected_images(7, 1, 3, 32));
    assert_eq!(labels_of(&test), [17]);

    write(&dir.join("test.bin"), &cifar_record(0, &[5, 100]));
    let msg = err_naming(
        load(DatasetKind::Cifar100, Split::Test, Some(tmp.path())),
        "test.bin",
    );
    assert!(
        msg.contains("fine labels in 0..=99") && msg.contains("found 100 at record 0"),
        "{msg}"
    );
}

#[test]
fn cifar10_label_out_of_range() {
    let (_tmp, root) = cifar10_fixture();
    let mut bytes = cifar_record(0, &[3]);
    bytes.extend(cifar_record(1, &[10]));
    write(&root.join("cifar-10-batches-bin/data_batch_3.bin"), &bytes);
    let msg = err_naming(
        load(DatasetKind::Cifar10, Split::Train, Some(&root)),
        "data_batch_3.bin",
    );
    assert!(
        msg.contains("labels in 0..=9") && msg.contains("found 10 at record 1"),
        "{msg}"
    );
}

#[test]
fn cifar10_truncated_and_missing_batches() {
    let (_tmp, root) = cifar10_fixture();
    let path = root.join("cifar-10-batches-bin/test_batch.bin");
    write(&path, &cifar_record(0, &[1])[..3000]);
    let msg = err_naming(
        load(DatasetKind::Cifar10, Split::Test, Some(&root)),
        "test_batch.bin",
    );
    assert!(
        msg.contains("expected a multiple of 3073 bytes") && msg.contains("found 3000 bytes"),
        "{msg}"
    );

    std::fs::remove_file(root.join("cifar-10-batches-bin/data_batch_5.bin")).unwrap();
    err_naming(
        load(DatasetKind::Cifar10, Split::Train, Some(&root)),
        "data_batch_5.bin",
    );
}

#[test]
fn cifar_has_no_unlabeled_split() {
    let (_tmp, root) = cifar10_fixture();
    for split in [Split::Unlabeled, Split::TrainUnlabeled] {
        for kind in [
            DatasetKind::Cifar10,
            DatasetKind::Cifar100,
            DatasetKind::FashionMnist,
        ] {
            let err = load(kind, split, Some(&root)).unwrap_err();
            assert!(
                matches!(&err, Error::Config { key, .. } if key == "data.split"),
                "{err}"
            );
            assert!(err.to_string().contains(split.name()), "{err}");
        }
    }
}

// ----- Fashion-MNIST -----

#[test]
fn fashion_mnist_gz_round_trip() {
    let tmp = fashion_fixture(true);
    let train = load(DatasetKind::FashionMnist, Split::Train, Some(tmp.path())).unwrap();
    assert_eq!(train.name, "fashion-mnist/train");
    assert_eq!(train.images.size(), [3, 1, 28, 28]);
    assert_eq!(train.num_classes, 10);
    assert_eq!(bytes_of(&train.images), expected_images(0, 3, 1, 28));
    assert_eq!(labels_of(&train), [9, 0, 4]);

    let test = load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())).unwrap();
    assert_eq!(bytes_of(&test.images), expected_images(10, 2, 1, 28));
    assert_eq!(labels_of(&test), [1, 2]);
}

#[test]
fn fashion_mnist_uncompressed_files() {
    let tmp = fashion_fixture(false);
    let test = load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())).unwrap();
    assert_eq!(bytes_of(&test.images), expected_images(10, 2, 1, 28));
    assert_eq!(labels_of(&test), [1, 2]);
}

#[test]
fn fashion_mnist_wrong_magic() {
    let tmp = fashion_fixture(true);
    // A labels file (magic 0x00000801) where the images should be.
    let path = tmp.path().join("train-images-idx3-ubyte.gz");
    write(&path, &gzip(&idx(&[3], &[0, 1, 2])));
    let msg = err_naming(
        load(DatasetKind::FashionMnist, Split::Train, Some(tmp.path())),
        "train-images-idx3-ubyte.gz",
    );
    assert!(
        msg.contains("IDX magic 0x00000803") && msg.contains("found 0x00000801"),
        "{msg}"
    );
}

#[test]
fn fashion_mnist_bad_sizes_and_labels() {
    // Payload shorter than the dimensions say.
    let tmp = fashion_fixture(true);
    let short = idx(&[3, 28, 28], &vec![0; 3 * 28 * 28 - 1]);
    write(
        &tmp.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&short),
    );
    err_naming(
        load(DatasetKind::FashionMnist, Split::Train, Some(tmp.path())),
        "train-images-idx3-ubyte.gz",
    );

    // Images that are not 28×28.
    let tmp = fashion_fixture(true);
    write(
        &tmp.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&idx(&[3, 32, 32], &vec![0; 3 * 32 * 32])),
    );
    let msg = err_naming(
        load(DatasetKind::FashionMnist, Split::Train, Some(tmp.path())),
        "train-images-idx3-ubyte.gz",
    );
    assert!(msg.contains("28×28") && msg.contains("32×32"), "{msg}");

    // Fewer labels than images.
    let tmp = fashion_fixture(true);
    write(
        &tmp.path().join("train-labels-idx1-ubyte.gz"),
        &gzip(&idx(&[2], &[1, 2])),
    );
    let msg = err_naming(
        load(DatasetKind::FashionMnist, Split::Train, Some(tmp.path())),
        "train-labels-idx1-ubyte.gz",
    );
    assert!(
        msg.contains("expected 3 labels") && msg.contains("found 2 labels"),
        "{msg}"
    );

    // A label out of range.
    let tmp = fashion_fixture(true);
    write(
        &tmp.path().join("t10k-labels-idx1-ubyte.gz"),
        &gzip(&idx(&[2], &[1, 10])),
    );
    let msg = err_naming(
        load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())),
        "t10k-labels-idx1-ubyte.gz",
    );
    assert!(
        msg.contains("0..=9") && msg.contains("found 10 at image 1"),
        "{msg}"
    );

    // A truncated header.
    let tmp = fashion_fixture(false);
    write(&tmp.path().join("t10k-labels-idx1-ubyte"), &[0, 0, 8]);
    err_naming(
        load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())),
        "t10k-labels-idx1-ubyte",
    );
}

#[test]
fn fashion_mnist_corrupt_gzip_and_missing_files() {
    let tmp = fashion_fixture(true);
    let path = tmp.path().join("t10k-images-idx3-ubyte.gz");
    let good = std::fs::read(&path).unwrap();
    // Not gzip at all, then a gzip stream cut short.
    for bad in [
        b"not a gzip stream".to_vec(),
        good[..good.len() / 2].to_vec(),
    ] {
        write(&path, &bad);
        let msg = err_naming(
            load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())),
            "t10k-images-idx3-ubyte.gz",
        );
        assert!(msg.contains("gzip"), "{msg}");
    }

    std::fs::remove_file(&path).unwrap();
    let msg = err_naming(
        load(DatasetKind::FashionMnist, Split::Test, Some(tmp.path())),
        "t10k-images-idx3-ubyte.gz",
    );
    assert!(msg.contains("no such file"), "{msg}");

    let gone = tmp.path().join("no-such-dir");
    err_naming(
        load(DatasetKind::FashionMnist, Split::Train, Some(&gone)),
        "no-such-dir",
    );
}

#[test]
fn fashion_mnist_real_train_split() {
    if !Path::new(FASHION_MNIST_DIR).is_dir() {
        println!("skipped: {FASHION_MNIST_DIR} absent (Debian package dataset-fashion-mnist)");
        return;
    }
    let ds = load(DatasetKind::FashionMnist, Split::Train, None).unwrap();
    assert_eq!(ds.name, "fashion-mnist/train");
    assert_eq!(ds.images.size(), [60000, 1, 28, 28]);
    assert_eq!(ds.labels.size(), [60000]);
    assert_eq!(ds.num_classes, 10);
    let counts = Vec::<i64>::try_from(ds.labels.bincount::<Tensor>(None, 10)).unwrap();
    assert_eq!(
        counts, [6000; 10],
        "Fashion-MNIST train has 6,000 images per class"
    );
}

// ----- Names -----

#[test]
fn names_parse_display_and_serde() {
    for (kind, name, classes) in [
        (DatasetKind::FashionMnist, "fashion-mnist", 10),
        (DatasetKind::Stl10, "stl10", 10),
        (DatasetKind::Cifar10, "cifar10", 10),
        (DatasetKind::Cifar100, "cifar100", 100),
    ] {
        assert_eq!(kind.to_string(), name);
        assert_eq!(name.parse::<DatasetKind>().unwrap(), kind);
        assert_eq!(serde_json::to_string(&kind).unwrap(), format!("\"{name}\""));
        assert_eq!(
            serde_json::from_str::<DatasetKind>(&format!("\"{name}\"")).unwrap(),
            kind
        );
        assert_eq!(kind.num_classes(), classes);
    }
    for (split, name) in [
        (Split::Train, "train"),
        (Split::Test, "test"),
        (Split::Unlabeled, "unlabeled"),
        (Split::TrainUnlabeled, "train+unlabeled"),
    ] {
        assert_eq!(split.to_string(), name);
        assert_eq!(name.parse::<Split>().unwrap(), split);
    }
    assert!(matches!(
        "mnist".parse::<DatasetKind>(),
        Err(Error::Config { .. })
    ));
    assert!(matches!("val".parse::<Split>(), Err(Error::Config { .. })));
}
