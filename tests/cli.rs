//! The binary on bad input: each case exits non-zero with a one-paragraph message that names
//! the file, key or flag at fault, and never a panic or a backtrace.
use std::path::Path;
use std::process::Command;

mod common;
use common::*;

/// Runs `ipirm ARGS` (CPU) and returns (exit code, stderr).
fn ipirm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("the binary runs");
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Checks a failed run: status 2, one paragraph starting `error:` that contains every `needle`.
fn assert_clear_error(args: &[&str], needles: &[&str]) {
    let (code, stderr) = ipirm(args);
    let msg = stderr.lines().filter(|l| l.starts_with("error:")).collect::<Vec<_>>();
    assert_eq!(code, 2, "exit status for {args:?}; stderr:\n{stderr}");
    assert!(!stderr.contains("panicked") && !stderr.contains("backtrace"), "no panic or backtrace for {args:?}:\n{stderr}");
    assert_eq!(msg.len(), 1, "exactly one error line for {args:?}:\n{stderr}");
    assert!(!msg[0].contains('\n'));
    for n in needles {
        assert!(msg[0].contains(n), "`{n}` missing from the message for {args:?}: {}", msg[0]);
    }
}

fn train_args<'a>(data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec!["train", "--device", "cpu", "--preset", "stl10-ipirm", "--data-dir", data_dir];
    v.extend_from_slice(extra);
    v
}

#[test]
fn missing_data_folder() {
    assert_clear_error(&train_args("/nonexistent/stl", &[]), &["/nonexistent/stl"]);
}

#[test]
fn truncated_stl10_file() {
    let tmp = tempfile::tempdir().unwrap();
    stl_folder(tmp.path(), 4, 2, 4);
    let f = tmp.path().join("stl10_binary/train_X.bin");
    let bytes = std::fs::read(&f).unwrap();
    std::fs::write(&f, &bytes[..bytes.len() - 100]).unwrap();
    assert_clear_error(&train_args(tmp.path().to_str().unwrap(), &[]), &["train_X.bin", "27648"]);
}

#[test]
fn stl10_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    stl_folder(tmp.path(), 4, 2, 4);
    write(&tmp.path().join("stl10_binary/train_y.bin"), &[1, 2, 11, 3]);
    assert_clear_error(&train_args(tmp.path().to_str().unwrap(), &[]), &["train_y.bin", "11"]);
}

#[test]
fn wrong_idx_magic() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 4, 2);
    let mut bad = idx(&[4, 28, 28], &vec![0u8; 4 * 28 * 28]);
    bad[2] = 9; // not the unsigned-byte type code
    write(&tmp.path().join("train-images-idx3-ubyte.gz"), &gzip(&bad));
    let d = tmp.path().to_str().unwrap();
    assert_clear_error(&["train", "--device", "cpu", "--preset", "fmnist-quick", "--data-dir", d], &["train-images-idx3-ubyte", "magic"]);
}

#[test]
fn unknown_config_key() {
    assert_clear_error(&["train", "--set", "train.bogus=1"], &["train.bogus", "unknown key"]);
}

#[test]
fn negative_batch_size() {
    assert_clear_error(&["train", "--set", "train.batch_size=-4"], &["train.batch_size", "-4"]);
}

#[test]
fn bad_device_and_preset() {
    assert_clear_error(&["train", "--device", "tpu"], &["--device", "tpu"]);
    assert_clear_error(&["train", "--preset", "imagenet"], &["--preset", "imagenet"]);
}

#[test]
fn missing_config_file() {
    assert_clear_error(&["train", "--config", "/nonexistent/run.toml"], &["/nonexistent/run.toml"]);
}

#[test]
fn presets_lists_every_preset_on_one_line_each() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm")).arg("presets").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for p in ipirm::config::PRESETS {
        assert_eq!(text.lines().filter(|l| l.starts_with(p.name) && l.contains(p.summary)).count(), 1, "{}", p.name);
    }
    assert!(Path::new(env!("CARGO_BIN_EXE_ipirm")).exists());
}

/// Runs `ipirm train ARGS` in a fresh store and returns its output (stderr + stdout), asserting
/// success.
fn train_ok(store: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .arg("train")
        .arg(format!("--store={}", store.display()))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    text
}

#[test]
fn the_stl10_ipirm_preset_trains_on_an_stl10_format_folder() {
    let tmp = tempfile::tempdir().unwrap();
    stl_folder(tmp.path(), 16, 8, 48);
    let d = tmp.path().to_str().unwrap();
    let store = tmp.path().join("store");
    // The paper's preset (ResNet-50, 96×96 images, 32×32 crops) for one epoch of 4 steps.
    let text = train_ok(
        &store,
        &["--device=cpu", "--preset=stl10-ipirm", "--data-dir", d, "--set=train.epochs=1", "--set=train.batch_size=16", "--set=maximize.max_epoch=2"],
    );
    // The maximize step partitioned all 64 training images, 48 of them unlabelled.
    assert!(text.contains("partition after epoch 0") && text.contains("unlabelled"), "{text}");
    assert!(text.contains("epoch 1/1") && text.contains("final checkpoint"), "{text}");
}

#[test]
fn the_online_maximize_step_runs_in_training() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let text = train_ok(
        &tmp.path().join("store"),
        &[
            "--device=cpu", "--preset=fmnist-ipirm-quick", "--data-dir", d, "--set=data.train_limit=0", "--set=model.width=4",
            "--set=train.epochs=2", "--set=train.batch_size=16", "--set=ipirm.maximize_iter=1", "--set=maximize.offline=false",
            "--set=maximize.batch_size=32", "--set=maximize.max_epoch=2",
        ],
    );
    assert!(text.contains("partition after epoch 0") && text.contains("partition after epoch 1"), "{text}");
}
