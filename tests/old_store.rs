//! A store written by an earlier build is read by this one: the same run is served whole from
//! its cache, with the same results.
//!
//! `tests/fixtures/old-store/` holds the store of a tiny IP-IRM run (the synthetic Fashion-MNIST
//! folder of `common::fashion_folder(64, 32)`, ResNet-18 width 2, 2 epochs with a maximize step
//! before each, kNN and a 1-epoch probe) as the build named in its `made-by` file wrote it: its
//! sled index and blobs, untouched, and the run's config as `run.toml` (a config file, so the
//! run does not depend on how the presets change). Restructuring the store, the stages or the
//! config must leave this test passing: a person's store from before keeps hitting its cache.
//!
//! Every stage key hashes the crate's version, so a version bump makes every key new on purpose;
//! then make the fixture again with the new build (and say so in the commit):
//! `IPIRM_WRITE_OLD_STORE=1 cargo test --release --test old_store`.
mod common;

use std::path::{Path, PathBuf};

use common::run::{ok, tiny_run};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/old-store")
}

/// Copies the folder `from` to `to` (which must not exist), recursively.
fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// The store's artifacts as `store ls` lists them (kind, key, size, when and by which run it was
/// made; the report only by kind and key), sorted.
fn artifacts(store: &Path) -> Vec<String> {
    let out = ok(store, &["store", "ls"], &[]);
    let mut lines: Vec<String> = out
        .lines()
        .filter(|l| l.starts_with("stage "))
        .map(|l| match l.starts_with("stage report ") {
            // Every run writes its report anew under the same key (it holds that run's
            // timings): its kind and key, not when it was made.
            true => l.split("  ").take(2).collect::<Vec<_>>().join("  "),
            false => l.to_string(),
        })
        .collect();
    lines.sort();
    lines
}

/// The results table the main job prints last (kNN of raw pixels, initialisation, trained
/// encoder, linear probe), as printed.
fn results(out: &str) -> Vec<String> {
    out.lines()
        .filter(|l| (l.contains("top-1") || l.starts_with('|')) && !l.contains("cached"))
        .map(str::to_string)
        .collect()
}

/// Writes the fixture with this build (see the module doc).
fn write_fixture(dir: &Path) {
    // The tiny run at width 2 for 2 epochs: a fixture of about a megabyte.
    let mut args = tiny_run(dir);
    args.extend(["--set=model.width=2".into(), "--set=train.epochs=2".into()]);
    let fx = fixture();
    if fx.exists() {
        std::fs::remove_dir_all(&fx).unwrap();
    }
    std::fs::create_dir_all(&fx).unwrap();
    // The config without where this machine keeps things (the test gives those).
    let settings: Vec<String> = args
        .into_iter()
        .filter(|a| !a.starts_with("--device") && !a.starts_with("--data-dir"))
        .collect();
    let toml = ok(&fx.join("store"), &["config"], &settings);
    std::fs::write(fx.join("run.toml"), toml).unwrap();
    let out = ok(&fx.join("store"), &["run"], &run_args(dir));
    std::fs::write(fx.join("results.txt"), results(&out).join("\n") + "\n").unwrap();
    let made_by = format!(
        "ipirm {} (git {})\n",
        env!("CARGO_PKG_VERSION"),
        String::from_utf8_lossy(
            &std::process::Command::new("git")
                .args(["rev-parse", "--short", "HEAD"])
                .output()
                .unwrap()
                .stdout
        )
        .trim()
    );
    std::fs::write(fx.join("made-by"), made_by).unwrap();
    // The run's report folder is output, not store: only the store and the config are kept.
    let _ = std::fs::remove_dir_all(fx.join("store/runs"));
    let _ = std::fs::remove_dir_all(fx.join("store/tmp"));
    // An empty folder git would not keep (sled makes it again).
    let _ = std::fs::remove_dir(fx.join("store/index/blobs"));
}

fn run_args(dir: &Path) -> Vec<String> {
    vec![
        format!("--config={}", fixture().join("run.toml").display()),
        "--device=cpu".into(),
        format!("--data-dir={}", dir.join("data").display()),
        format!("--out={}", dir.join("out").display()),
    ]
}

#[test]
fn a_store_from_an_earlier_build_is_served_from_its_cache() {
    let dir = tempfile::tempdir().unwrap();
    if std::env::var_os("IPIRM_WRITE_OLD_STORE").is_some() {
        write_fixture(dir.path());
        return;
    }
    common::fashion_folder(&dir.path().join("data"), 64, 32);
    let store = dir.path().join("store");
    copy_dir(&fixture().join("store"), &store);
    let before = artifacts(&store);
    assert!(
        before.len() > 10,
        "the fixture's store lists:\n{}",
        before.join("\n")
    );
    let out = ok(&store, &["run"], &run_args(dir.path()));
    // Nothing computed: no artifact added, and the results are the stored ones.
    assert_eq!(
        artifacts(&store),
        before,
        "the run computed stages an earlier build had stored:\n{out}"
    );
    let stored = std::fs::read_to_string(fixture().join("results.txt")).unwrap();
    assert_eq!(results(&out).join("\n") + "\n", stored, "{out}");
    // And the store is whole by this build's checks.
    let verify = ok(&store, &["store", "verify"], &[]);
    assert!(
        verify.contains(" 0 damaged, 0 missing, 0 unreadable"),
        "{verify}"
    );
}
