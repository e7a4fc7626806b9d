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
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Checks a failed run: status 2, one paragraph starting `error:` that contains every `needle`.
fn assert_clear_error(args: &[&str], needles: &[&str]) {
    let (code, stderr) = ipirm(args);
    let msg = stderr
        .lines()
        .filter(|l| l.starts_with("error:"))
        .collect::<Vec<_>>();
    assert_eq!(code, 2, "exit status for {args:?}; stderr:\n{stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "no panic or backtrace for {args:?}:\n{stderr}"
    );
    assert_eq!(
        msg.len(),
        1,
        "exactly one error line for {args:?}:\n{stderr}"
    );
    assert!(!msg[0].contains('\n'));
    for n in needles {
        assert!(
            msg[0].contains(n),
            "`{n}` missing from the message for {args:?}: {}",
            msg[0]
        );
    }
}

fn train_args<'a>(data_dir: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--device",
        "cpu",
        "--preset",
        "stl10-ipirm",
        "--data-dir",
        data_dir,
    ];
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
    assert_clear_error(
        &train_args(tmp.path().to_str().unwrap(), &[]),
        &["train_X.bin", "27648"],
    );
}

#[test]
fn stl10_label_out_of_range() {
    let tmp = tempfile::tempdir().unwrap();
    stl_folder(tmp.path(), 4, 2, 4);
    write(&tmp.path().join("stl10_binary/train_y.bin"), &[1, 2, 11, 3]);
    assert_clear_error(
        &train_args(tmp.path().to_str().unwrap(), &[]),
        &["train_y.bin", "11"],
    );
}

#[test]
fn wrong_idx_magic() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 4, 2);
    let mut bad = idx(&[4, 28, 28], &vec![0u8; 4 * 28 * 28]);
    bad[2] = 9; // not the unsigned-byte type code
    write(&tmp.path().join("train-images-idx3-ubyte.gz"), &gzip(&bad));
    let d = tmp.path().to_str().unwrap();
    assert_clear_error(
        &[
            "train",
            "--device",
            "cpu",
            "--preset",
            "fmnist-quick",
            "--data-dir",
            d,
        ],
        &["train-images-idx3-ubyte", "magic"],
    );
}

#[test]
fn unknown_config_key() {
    assert_clear_error(
        &["train", "--set", "train.bogus=1"],
        &["train.bogus", "unknown key"],
    );
}

#[test]
fn negative_batch_size() {
    assert_clear_error(
        &["train", "--set", "train.batch_size=-4"],
        &["train.batch_size", "-4"],
    );
}

/// Model sizes whose allocation fails are refused by name (libtorch panicked in the variable
/// store, and the run was left unfinished in the store).
#[test]
fn huge_model_sizes_are_refused() {
    for (set, key) in [
        ("model.width=100000", "model.width"),
        ("model.head_hidden=9223372036854775807", "model.head_hidden"),
        ("model.feature_dim=20000", "model.feature_dim"),
    ] {
        assert_clear_error(&["config", "--set", set], &[key, "must be at most"]);
    }
}

#[test]
fn bad_device_and_preset() {
    assert_clear_error(&["train", "--device", "tpu"], &["--device", "tpu"]);
    assert_clear_error(
        &["train", "--preset", "imagenet"],
        &["--preset", "imagenet"],
    );
}

/// `$LIBTORCH` naming another copy of libtorch than the one the binary links (a notebook's or
/// another venv's): the CUDA backend the binary already holds is used, not loaded a second time
/// from there (which registered libtorch's CUDA hooks twice, and libtorch aborted with "Key
/// already registered with the same priority: CUDAHooks", before any message). The other copy
/// is made here: the linked lib folder's files as links, but `libtorch_cuda.so` copied (a link
/// to the same file is recognised as loaded). Meaningful on a machine without a GPU, where the
/// binary asks for the backend at start-up; on any machine a device it lacks is a clear error.
#[test]
fn another_libtorch_in_libtorch_is_not_loaded_twice() {
    let Ok(linked) = std::env::var("LIBTORCH") else {
        panic!(
            "LIBTORCH is unset: run the tests through scripts/test.sh (or source scripts/env.sh)"
        );
    };
    let tmp = tempfile::tempdir().unwrap();
    let lib = tmp.path().join("lib");
    std::fs::create_dir(&lib).unwrap();
    let mut copied = false;
    for entry in std::fs::read_dir(Path::new(&linked).join("lib")).unwrap() {
        let entry = entry.unwrap();
        let to = lib.join(entry.file_name());
        if entry.file_name() == "libtorch_cuda.so" {
            std::fs::copy(entry.path(), &to).unwrap();
            copied = true;
        } else {
            std::os::unix::fs::symlink(entry.path(), &to).unwrap();
        }
    }
    assert!(copied, "{linked}/lib has no libtorch_cuda.so");
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["train", "--device", "cuda:99", "--preset", "fmnist-quick"])
        .env("LIBTORCH", tmp.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("`cuda:99` asked for a GPU") && !stderr.contains("already registered"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file() {
    assert_clear_error(
        &["train", "--config", "/nonexistent/run.toml"],
        &["/nonexistent/run.toml"],
    );
}

#[test]
fn presets_lists_every_preset_on_one_line_each() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .arg("presets")
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    for p in ipirm::config::PRESETS {
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with(p.name) && l.contains(p.summary))
                .count(),
            1,
            "{}",
            p.name
        );
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
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
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
        &[
            "--device=cpu",
            "--preset=stl10-ipirm",
            "--data-dir",
            d,
            "--set=train.epochs=1",
            "--set=train.batch_size=16",
            "--set=maximize.max_epoch=2",
        ],
    );
    // The maximize step partitioned all 64 training images, 48 of them unlabelled.
    assert!(
        text.contains("partition after epoch 0") && text.contains("unlabelled"),
        "{text}"
    );
    assert!(
        text.contains("epoch 1/1") && text.contains("final checkpoint"),
        "{text}"
    );
}

#[test]
fn the_online_maximize_step_runs_in_training() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let text = train_ok(
        &tmp.path().join("store"),
        &[
            "--device=cpu",
            "--preset=fmnist-ipirm-quick",
            "--data-dir",
            d,
            "--set=data.train_limit=0",
            "--set=model.width=4",
            "--set=train.epochs=2",
            "--set=train.batch_size=16",
            "--set=ipirm.maximize_iter=1",
            "--set=maximize.offline=false",
            "--set=maximize.batch_size=32",
            "--set=maximize.max_epoch=2",
        ],
    );
    assert!(
        text.contains("partition after epoch 0") && text.contains("partition after epoch 1"),
        "{text}"
    );
}

/// MixUp IP-IRM (`train.mixup`, `main_mixup.py` with `--ours_mixup_mode full --retain_group`)
/// end to end through the store: two partitions kept in the last epoch (one backward each, one
/// optimizer step per batch), then the evaluations; and the MixUp baseline for one epoch.
#[test]
fn mixup_runs_train_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 16);
    let d = tmp.path().to_str().unwrap();
    let text = train_ok(
        &tmp.path().join("store"),
        &tiny_fashion(
            d,
            &[
                "--set=train.mixup=true",
                "--set=train.temperature=0.2",
                "--set=ipirm.maximize_iter=1",
                "--set=ipirm.retain_group_set=2",
            ],
        )[1..],
    );
    assert!(
        text.contains("partition after epoch 1") && text.contains("final checkpoint"),
        "{text}"
    );
    let text = train_ok(
        &tmp.path().join("store"),
        &tiny_fashion(
            d,
            &[
                "--set=train.method=simclr",
                "--set=train.mixup=true",
                "--set=train.epochs=1",
            ],
        )[1..],
    );
    assert!(text.contains("final checkpoint"), "{text}");
}

#[test]
fn config_shows_the_mixup_keys() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["config", "--set", "train.mixup=true"])
        .output()
        .unwrap();
    assert!(out.status.success());
    let toml = String::from_utf8_lossy(&out.stdout);
    for key in ["mixup = true", "mixup_alpha = 1.0", "retain_group_set = 0"] {
        assert!(toml.contains(key), "`{key}` missing:\n{toml}");
    }
    assert_clear_error(
        &["config", "--set", "train.mixup_alpha=-1"],
        &["train.mixup_alpha", "positive"],
    );
}

/// A tiny Fashion-MNIST run's flags (training is a few seconds).
fn tiny_fashion<'a>(d: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut v = vec![
        "train",
        "--device=cpu",
        "--preset=fmnist-ipirm-quick",
        "--data-dir",
        d,
        "--set=data.train_limit=0",
        "--set=data.bank_limit=0",
        "--set=data.test_limit=0",
        "--set=model.width=4",
        "--set=train.batch_size=16",
        "--set=train.epochs=2",
        "--set=maximize.batch_size=64",
        "--set=maximize.max_epoch=2",
    ];
    v.extend_from_slice(extra);
    v
}

/// The store's `ls` as text.
fn store_ls(store: &Path) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", "ls"])
        .arg(format!("--store={}", store.display()))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A loss that turns NaN or infinite ends the run with an error naming the epoch and batch, and
/// no result of that epoch is stored (no curve, no checkpoint after the initial one).
#[test]
fn a_diverging_run_stops_and_stores_nothing_non_finite() {
    let cases: [(&[&str], &str); 3] = [
        (&["--set=train.lr=1e300"], "training loss"),
        (
            &[
                "--set=train.temperature=1e-300",
                "--set=maximize.temperature=0.5",
            ],
            "training loss",
        ),
        // The maximize step reads train.temperature too, and it comes first.
        (&["--set=train.temperature=1e-300"], "maximize risk"),
    ];
    for (sets, what) in cases {
        let tmp = tempfile::tempdir().unwrap();
        fashion_folder(tmp.path(), 64, 16);
        let store = tmp.path().join("store");
        let store_flag = format!("--store={}", store.display());
        let d = tmp.path().to_str().unwrap();
        let mut extra = sets.to_vec();
        extra.push(&store_flag);
        let at = if what == "training loss" {
            "epoch 1, batch"
        } else {
            "maximize step 0 (after epoch 0), epoch 0"
        };
        assert_clear_error(&tiny_fashion(d, &extra), &[what, at]);
        let ls = store_ls(&store);
        assert!(
            !ls.contains("stage curve") && ls.contains("unfinished"),
            "{sets:?}:\n{ls}"
        );
        if what == "maximize risk" {
            assert!(!ls.contains("stage partition"), "{sets:?}:\n{ls}");
        }
        assert_eq!(
            ls.matches("stage checkpoint").count(),
            1,
            "{sets:?}: only the initial checkpoint:\n{ls}"
        );
    }
}

fn features_file(dir: &Path, scale: f64) -> std::path::PathBuf {
    use tch::{Device, Kind, Tensor};
    tch::manual_seed(3);
    let z = Tensor::randn([48, 8], (Kind::Float, Device::Cpu));
    let z = &z / z.norm_scalaropt_dim(2, [1], true) * scale;
    let path = dir.join("features.safetensors");
    Tensor::write_safetensors(&[("z1", &z), ("z2", &z.roll([1], [0]))], &path).unwrap();
    path
}

#[test]
fn the_maximize_tool_refuses_non_finite_risks_and_unnormalised_features() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("out.safetensors");
    let f = features_file(tmp.path(), 1.0);
    let (fs, os) = (f.to_str().unwrap(), out.to_str().unwrap());
    assert_clear_error(
        &[
            "maximize",
            "--features",
            fs,
            "--out",
            os,
            "--set",
            "maximize.temperature=1e-300",
            "--set",
            "maximize.max_epoch=30",
        ],
        &["maximize risk", "epoch 0"],
    );
    // The step ends at its first non-finite epoch (it ran every epoch at NaN).
    let (_, stderr) = ipirm(&[
        "maximize",
        "--features",
        fs,
        "--out",
        os,
        "--set=maximize.temperature=1e-300",
        "--set=maximize.max_epoch=30",
    ]);
    assert!(
        stderr.contains("epoch 0: risk") && !stderr.contains("epoch 1: risk"),
        "{stderr}"
    );
    assert_clear_error(
        &[
            "maximize",
            "--features",
            fs,
            "--out",
            os,
            "--set",
            "maximize.irm_temp=1e-300",
            "--set",
            "maximize.max_epoch=2",
        ],
        &["maximize risk"],
    );
    assert!(!out.exists(), "nothing is written for a diverged step");
    let big = features_file(tmp.path(), 1e30);
    assert_clear_error(
        &["maximize", "--features", big.to_str().unwrap(), "--out", os],
        &["features.safetensors", "L2-normalised", "row 0"],
    );
}

#[test]
fn the_maximize_tool_checks_out_and_env_num_before_computing() {
    let tmp = tempfile::tempdir().unwrap();
    let f = features_file(tmp.path(), 1.0);
    let fs = f.to_str().unwrap();
    let (code, stderr) = ipirm(&[
        "maximize",
        "--features",
        fs,
        "--out",
        "/nonexistent/dir/out.safetensors",
        "--set",
        "maximize.max_epoch=3",
    ]);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("--out") && stderr.contains("/nonexistent/dir") && !stderr.contains("risk"),
        "checked first:\n{stderr}"
    );
    let dir_out = tmp.path().to_str().unwrap();
    assert_clear_error(
        &["maximize", "--features", fs, "--out", dir_out],
        &["--out", "a folder"],
    );
    assert_clear_error(
        &[
            "maximize",
            "--features",
            fs,
            "--out",
            "o.safetensors",
            "--set",
            "maximize.env_num=49",
        ],
        &["maximize.env_num", "48 samples"],
    );
}

#[test]
fn settings_the_data_cannot_serve_fail_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 16);
    let d = tmp.path().to_str().unwrap();
    assert_clear_error(
        &["train", "--set", "maximize.batch_size=1"],
        &["maximize.batch_size", "at least 2"],
    );
    for (set, needle) in [
        ("--set=maximize.env_num=65", "maximize.env_num"),
        ("--set=train.batch_size=65", "train.batch_size"),
    ] {
        let (code, stderr) = ipirm(&tiny_fashion(d, &[set]));
        assert_eq!(code, 2, "{stderr}");
        assert!(
            stderr.contains(needle)
                && stderr.contains("64 training images")
                && !stderr.contains("epoch 1/"),
            "{stderr}"
        );
    }
}

/// A run or train that stops on its data (no such folder, a batch larger than the images) or on
/// its output folder fails before the store is opened: nothing is created at `--store`.
#[test]
fn a_run_that_stops_on_its_data_or_output_creates_no_store() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 16);
    let d = tmp.path().to_str().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "x").unwrap();
    let store = tmp.path().join("store");
    let store_flag = format!("--store={}", store.display());
    let out_flag = format!("--out={}", file.join("out").display());
    let cases: [(&str, &[&str], &str); 3] = [
        ("/nonexistent/fmnist", &[], "/nonexistent/fmnist"),
        (d, &["--set=train.batch_size=65"], "train.batch_size"),
        (d, &[&out_flag], "a-file"),
    ];
    for cmd in ["run", "train"] {
        for (data_dir, extra, needle) in cases {
            let mut args = tiny_fashion(data_dir, extra);
            args[0] = cmd;
            args.push(&store_flag);
            assert_clear_error(&args, &[needle]);
            assert!(!store.exists(), "{cmd} {data_dir} {extra:?} made the store");
        }
    }
    // The same flags with readable data and a good --out make the store: the checks above can
    // fail.
    let out = tmp.path().join("out");
    let out_flag = format!("--out={}", out.display());
    let mut args = tiny_fashion(d, &["--set=train.epochs=1", &out_flag, &store_flag]);
    args[0] = "train";
    let (code, stderr) = ipirm(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(store.join("index").is_dir() && out.join("model.safetensors").is_file());
}

/// Planning is linear in the number of epochs, and the number is bounded with a clear message.
#[test]
fn a_huge_epoch_count_is_refused_at_once() {
    assert_clear_error(
        &["config", "--set", "train.epochs=1000000"],
        &["train.epochs", "100000"],
    );
    let cfg = ipirm::config::Config::default()
        .with_overrides(&["train.epochs=100000", "ipirm.maximize_iter=1"])
        .unwrap();
    let plan = ipirm::pipeline::stages::Plan::new(&cfg, "dataset", None).unwrap();
    assert_eq!(plan.checkpoints.len(), 100_001);
    assert_eq!(plan.partitions.len(), 100_000);
    // Every checkpoint names at most three inputs (the previous one, the dataset, the newest
    // partition), however many partitions are kept.
    assert!(plan.checkpoints.iter().all(|c| c.inputs.len() <= 3));
}

#[test]
fn unsigned_seeds_take_the_whole_range() {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["config", "--set", "train.seed=18446744073709551615"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let toml = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(toml.contains("seed = \"18446744073709551615\""), "{toml}");
    // ... and the TOML reads back.
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("c.toml");
    std::fs::write(&path, &toml).unwrap();
    let cfg = ipirm::config::Config::from_toml_file(&path).unwrap();
    assert_eq!(cfg.train.seed, u64::MAX);
    // A negative seed says what a seed must be.
    assert_clear_error(
        &["config", "--set", "train.seed=-1"],
        &["train.seed", "0..=18446744073709551615", "-1"],
    );
}

#[test]
fn an_os_error_is_printed_once() {
    let tmp = tempfile::tempdir().unwrap();
    let (code, stderr) = ipirm(&["train", "--config", tmp.path().to_str().unwrap()]);
    assert_eq!(code, 2);
    assert_eq!(stderr.matches("os error 21").count(), 1, "{stderr}");
}

#[test]
fn empty_folders_and_link_loops_in_place_of_data_files() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().to_str().unwrap();
    // A Fashion-MNIST image file holding no image.
    fashion_folder(tmp.path(), 4, 2);
    write(
        &tmp.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&idx(&[0, 28, 28], &[])),
    );
    write(
        &tmp.path().join("train-labels-idx1-ubyte.gz"),
        &gzip(&idx(&[0], &[])),
    );
    assert_clear_error(
        &tiny_fashion(d, &[]),
        &["train-images-idx3-ubyte.gz", "at least one image"],
    );
    // A folder, then a link loop, where the file should be.
    let f = tmp.path().join("train-images-idx3-ubyte.gz");
    std::fs::remove_file(&f).unwrap();
    std::fs::create_dir(&f).unwrap();
    assert_clear_error(
        &tiny_fashion(d, &[]),
        &["train-images-idx3-ubyte.gz", "a folder"],
    );
    std::fs::remove_dir(&f).unwrap();
    std::os::unix::fs::symlink(&f, &f).unwrap();
    assert_clear_error(
        &tiny_fashion(d, &[]),
        &["train-images-idx3-ubyte.gz", "symbolic link loop"],
    );
    // STL-10 likewise.
    let stl = tempfile::tempdir().unwrap();
    stl_folder(stl.path(), 4, 2, 4);
    let x = stl.path().join("stl10_binary/train_X.bin");
    std::fs::remove_file(&x).unwrap();
    std::fs::create_dir(&x).unwrap();
    assert_clear_error(
        &train_args(stl.path().to_str().unwrap(), &[]),
        &["train_X.bin", "a folder"],
    );
}

/// A `knn.k` larger than the memory bank is used as the bank's size, and said so with both
/// numbers (it was clamped silently).
#[test]
fn a_knn_k_beyond_the_bank_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let store = format!("--store={}", tmp.path().join("store").display());
    let mut args = tiny_fashion(d, &["--set=knn.k=500", "--set=linear.epochs=0", &store]);
    args[0] = "run";
    let (code, stderr) = ipirm(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stderr.contains("knn.k = 500 is larger than the memory bank (64 images); using k = 64"),
        "{stderr}"
    );
}

/// channels_last on the CPU with an encoder too narrow for oneDNN's strided 1×1 kernel (it
/// corrupts the heap on AVX2 CPUs: "double free or corruption", exit 134) is refused by name.
#[test]
fn channels_last_on_a_too_narrow_cpu_encoder_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let store = format!("--store={}", tmp.path().join("store").display());
    let mut args = tiny_fashion(d, &["--set=train.channels_last=true", &store]);
    args[0] = "run";
    let (code, stderr) = ipirm(&args);
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("train.channels_last") && stderr.contains("model.width"),
        "{stderr}"
    );
}

/// `bench --augment-only` prints the augmentation figures alone, resized as `data.antialias`
/// says.
#[test]
fn bench_augment_only_prints_the_augmentation_figures() {
    for (set, crops) in [
        ("data.antialias=true", "crops antialiased"),
        ("data.antialias=false", "crops plain bilinear"),
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args([
                "bench",
                "--device=cpu",
                "--preset=fmnist-quick",
                "--side=48",
            ])
            .args(["--iters=1", "--augment-only", "--set", set])
            .output()
            .expect("the binary runs");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{stdout}");
        assert!(stdout.contains(crops), "{stdout}");
        let figures: Vec<&str> = stdout
            .lines()
            .filter_map(|l| l.strip_prefix("FIG "))
            .map(|l| l.split(' ').next().unwrap())
            .collect();
        assert_eq!(
            figures,
            [
                "augment_img_per_s",
                "augment_img_per_cpu_s",
                "augment_crop_img_per_s",
                "augment_crop_img_per_cpu_s"
            ],
            "{stdout}"
        );
    }
}

/// `--name` names a folder under `<store>/runs/` and starts the run's id: a name that would leave
/// that folder (`..`, `/`), hide (`.x`), be nothing or carry other characters is refused before
/// anything is made.
#[test]
fn a_run_name_that_is_not_a_plain_folder_name_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    let store_flag = format!("--store={}", store.display());
    for name in [
        "../escape",
        "/tmp/abs",
        "",
        ".hidden",
        "a/b",
        "a b",
        "run@1",
    ] {
        let flag = format!("--name={name}");
        assert_clear_error(
            &["run", "--preset=fmnist-ipirm-quick", &flag, &store_flag],
            &["--name", "expected"],
        );
    }
    assert!(!store.exists() && !tmp.path().join("escape").exists());
    let (code, stderr) = ipirm(&["run", "--name=ok-name_1.2", "--preset=nosuch", &store_flag]);
    assert!(
        code == 2 && stderr.contains("nosuch") && !stderr.contains("--name"),
        "{stderr}"
    );
}

/// `model.bn_splits` cutting a training batch into a chunk of a single image is refused by name
/// (BatchNorm's running variance of one image is NaN; the reference's PyTorch raises), as
/// `Tensor.chunk` cuts: 16 in 16 and 7 in 3 (3, 3, 1) are refused, 10 in 3 (4, 4, 2) is not.
#[test]
fn bn_splits_leaving_a_single_image_chunk_are_refused() {
    for (batch, splits) in [("16", "16"), ("7", "3")] {
        let (b, s) = (
            format!("--set=train.batch_size={batch}"),
            format!("--set=model.bn_splits={splits}"),
        );
        assert_clear_error(
            &["config", "--preset=fmnist-ipirm-quick", &b, &s],
            &["model.bn_splits", "train.batch_size", "single image"],
        );
    }
    let (code, stderr) = ipirm(&[
        "config",
        "--preset=fmnist-ipirm-quick",
        "--set=train.batch_size=10",
        "--set=model.bn_splits=3",
    ]);
    assert_eq!(code, 0, "{stderr}");
}

/// `bench` refuses sizes it cannot use by flag, before any work (a side of 0 or 100,000 and 0 or
/// 2 channels panicked, `--iters 0` printed a nonsense rate, a `--json` in a missing folder failed
/// only after the whole benchmark).
#[test]
fn bench_sizes_and_its_json_path_are_checked_first() {
    let base = [
        "bench",
        "--device=cpu",
        "--preset=fmnist-ipirm-quick",
        "--augment-only",
    ];
    for (flag, needle) in [
        ("--side=0", "--side"),
        ("--side=100000", "--side"),
        ("--channels=0", "--channels"),
        ("--channels=2", "--channels"),
        ("--iters=0", "--iters"),
        ("--json=/nonexistent-folder/x.json", "--json"),
    ] {
        let args: Vec<&str> = base.iter().copied().chain([flag]).collect();
        assert_clear_error(&args, &[needle]);
    }
}

/// An `--out` folder of report or compare, or an export folder, that is a file is refused before
/// any work, naming it (they printed "File exists (os error 17)" or "Not a directory", report
/// only after building its galleries).
#[test]
fn an_output_folder_that_is_a_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("a-file");
    std::fs::write(&file, b"kept").unwrap();
    let (f, store) = (file.to_str().unwrap(), tmp.path().join("store"));
    drop(ipirm::store::Store::open(&store).unwrap());
    let out = format!("--out={f}");
    let store = format!("--store={}", store.display());
    for args in [
        vec!["report", &store, &out],
        vec!["compare", &store, "a", "b", &out],
    ] {
        assert_clear_error(&args, &["--out", f, "found a file"]);
    }
    assert_clear_error(&["store", &store, "export", f], &[f, "found a file"]);
    assert_eq!(std::fs::read(&file).unwrap(), b"kept");
}

/// A folder with both `X.gz` and `X`: the `.gz` is read, and a note says so (it was silent, so
/// an edited uncompressed copy was ignored without a word).
#[test]
fn both_a_gz_and_a_plain_data_file_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 16);
    std::fs::write(tmp.path().join("train-images-idx3-ubyte"), b"not IDX").unwrap();
    let d = tmp.path().to_str().unwrap();
    let (code, stderr) = ipirm(&tiny_fashion(d, &["--set=train.batch_size=65"]));
    assert_eq!(code, 2, "{stderr}");
    assert!(
        stderr.contains("has both train-images-idx3-ubyte.gz and train-images-idx3-ubyte: reading train-images-idx3-ubyte.gz")
            && stderr.contains("64 training images"),
        "{stderr}"
    );
    assert_eq!(stderr.matches("note: ").count(), 1, "{stderr}");
}

/// `IPIRM_LOG_EVERY` that is not a number of seconds from 0 to 1e9 is refused at start, naming
/// it (a negative, NaN, infinite or huge value panicked in the first progress bar; text was
/// ignored).
#[test]
fn a_bad_log_interval_is_refused_at_start() {
    let run = |value: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args(["config", "--preset=fmnist-ipirm-quick"])
            .env("IPIRM_LOG_EVERY", value)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    for bad in ["-1", "nan", "inf", "1e300", "abc", ""] {
        let (code, err) = run(bad);
        assert!(
            code == Some(2) && err.contains("IPIRM_LOG_EVERY") && !err.contains("panicked"),
            "{bad}: {err}"
        );
    }
    for good in ["0", "0.5", "60"] {
        assert_eq!(run(good).0, Some(0), "{good}");
    }
}

/// `train` under the name of `run`'s runs is refused: as that name's latest run it hid the main
/// job's scores from report and compare, and gc deleted them. Under its own name it trains (a
/// cache hit on the run's training).
#[test]
fn a_training_run_does_not_take_the_name_of_main_job_runs() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let store = format!("--store={}", tmp.path().join("store").display());
    let mut args = tiny_fashion(d, &["--set=linear.epochs=1", &store]);
    args[0] = "run";
    let (code, stderr) = ipirm(&args);
    assert_eq!(code, 0, "{stderr}");
    args[0] = "train";
    assert_clear_error(
        &args,
        &["--name", "`fmnist-ipirm-quick` names runs of `ipirm run`"],
    );
    args.push("--name=pretraining");
    let (code, stderr) = ipirm(&args);
    assert_eq!(code, 0, "{stderr}");
    assert!(stderr.contains("training: cached"), "{stderr}");
    // Compared, the two share their training, and not the raw-pixel kNN the training-only run
    // never computed.
    let id = |name: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args(["store", "show", name, "--json", &store])
            .output()
            .unwrap();
        let shown: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        shown["id"].as_str().unwrap().to_string()
    };
    let (full, pretraining) = (id("fmnist-ipirm-quick"), id("pretraining"));
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["compare", &full, &pretraining, &store])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    let shared = text.lines().find(|l| l.starts_with("Shared stages"));
    let shared = shared.unwrap_or_else(|| panic!("no shared stages in:\n{text}"));
    assert!(
        shared.contains("checkpoint after epoch 2") && !shared.contains("raw pixels"),
        "{shared}"
    );
}

/// A relative data folder is recorded absolute (`eval` reads a run's config.toml from anywhere;
/// it failed from another folder), an empty one is refused by name, and a `config.toml` beside a
/// checkpoint that is not a file is an error (it fell back to the default config silently).
#[test]
fn data_folders_are_recorded_absolute_and_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args([
            "config",
            "--preset=fmnist-ipirm-quick",
            "--data-dir=rel/data",
        ])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let toml = String::from_utf8_lossy(&out.stdout);
    let want = format!("data_dir = \"{}\"", tmp.path().join("rel/data").display());
    assert!(toml.contains(&want), "{want} in:\n{toml}");
    assert_clear_error(
        &["config", "--set=data.data_dir="],
        &["data.data_dir", "empty"],
    );
    std::fs::create_dir(tmp.path().join("config.toml")).unwrap();
    let checkpoint = tmp.path().join("model.safetensors");
    std::fs::write(&checkpoint, b"").unwrap();
    let (code, err) = ipirm(&[
        "eval",
        "knn",
        "--device=cpu",
        "--checkpoint",
        checkpoint.to_str().unwrap(),
    ]);
    assert!(code == 2 && err.contains("config.toml"), "{err}");
}

/// `--out` inside a folder the store manages is refused before any work (gc took the run's
/// model.safetensors and report.json for orphan blobs and deleted them). A training state the
/// store keeps (the file `store show` prints for a checkpoint) evaluates as the model it holds.
#[test]
fn out_inside_the_store_is_refused_and_a_stored_state_evaluates() {
    let tmp = tempfile::tempdir().unwrap();
    fashion_folder(tmp.path(), 64, 8);
    let d = tmp.path().to_str().unwrap();
    let root = tmp.path().join("store");
    let store = format!("--store={}", root.display());
    for inside in ["objects", "meta/x"] {
        let out = format!("--out={}", root.join(inside).display());
        let args = tiny_fashion(d, &[&store, &out]);
        assert_clear_error(&args, &["--out", "a folder the store manages"]);
    }
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(tiny_fashion(d, &[&store]))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let key = (text.lines())
        .find_map(|l| l.strip_prefix("final checkpoint: "))
        .expect("train names its final checkpoint")
        .to_string();
    // Every other command's output, too (report's files were moved aside as damaged meta
    // files, or deleted by gc as orphan blobs).
    let inside = |dir: &str| root.join(dir).join("x").display().to_string();
    let features = root.join("f.safetensors").display().to_string();
    for (args, flag) in [
        (vec!["report", "--out", &inside("meta")], "--out"),
        (
            vec!["compare", "a", "b", "--out", &inside("objects")],
            "--out",
        ),
        (vec!["store", "export", &inside("tmp")], "store export DIR"),
        (
            vec![
                "maximize",
                "--features",
                &features,
                "--out",
                &inside("objects"),
            ],
            "--out",
        ),
        (
            vec!["checkpoint", "import", &features, "--out", &inside("index")],
            "--out",
        ),
        (vec!["bench", "--json", &inside("objects")], "--json"),
    ] {
        let args = [&args[..], &[&store]].concat();
        assert_clear_error(&args, &[flag, "a folder the store manages"]);
    }
    let shown = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", "show", &key, "--json", &store])
        .output()
        .unwrap();
    let shown: serde_json::Value = serde_json::from_slice(&shown.stdout).unwrap();
    let state = shown["file"].as_str().unwrap().to_string();
    let run_dir = root.join("runs/fmnist-ipirm-quick");
    let config = run_dir.join("config.toml");
    let knn = |checkpoint: &str| {
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args(["eval", "knn", "--device=cpu", "--checkpoint", checkpoint])
            .arg(format!("--config={}", config.display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{checkpoint}: {err}");
        let text = String::from_utf8_lossy(&out.stdout);
        let line = text.lines().find(|l| l.contains("top-1"));
        line.expect("eval knn prints its top-1").to_string()
    };
    let model = run_dir.join("model.safetensors");
    assert_eq!(knn(&state), knn(model.to_str().unwrap()));
}
