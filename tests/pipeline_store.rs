//! The pipeline through the artifact store, driven as a user would: cache hits on a rerun,
//! selective invalidation, bit-identical resume after `kill -9` at random moments, a damaged
//! blob found, refused and recomputed.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;

/// A tiny Fashion-MNIST-format folder and the overrides that make a run take seconds.
fn setup(dir: &Path) -> Vec<String> {
    common::fashion_folder(&dir.join("data"), 64, 32);
    [
        "--preset=fmnist-ipirm-quick",
        "--device=cpu",
        "--set=data.train_limit=0",
        "--set=data.bank_limit=0",
        "--set=data.test_limit=0",
        "--set=model.width=4",
        "--set=model.head_hidden=16",
        "--set=model.feature_dim=8",
        "--set=train.batch_size=16",
        "--set=train.epochs=3",
        "--set=ipirm.maximize_iter=1",
        "--set=maximize.batch_size=64",
        "--set=maximize.max_epoch=3",
        "--set=knn.k=10",
        "--set=linear.epochs=1",
        "--set=linear.batch_size=32",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--data-dir={}", dir.join("data").display())])
    .collect()
}

fn ipirm(store: &Path, cmd: &[&str], args: &[String]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(cmd)
        .arg(format!("--store={}", store.display()))
        .args(args)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    (out.status.success(), text)
}

fn ok(store: &Path, cmd: &[&str], args: &[String]) -> String {
    let (success, text) = ipirm(store, cmd, args);
    assert!(success, "ipirm {cmd:?} failed:\n{text}");
    text
}

fn with(args: &[String], extra: &[&str]) -> Vec<String> {
    args.iter().cloned().chain(extra.iter().map(|s| s.to_string())).collect()
}

/// The digests of every blob the latest run of `fmnist-ipirm-quick` used, keyed by artifact key.
fn digests(store: &Path) -> Vec<(String, String)> {
    shown_digests(store, "fmnist-ipirm-quick")
}

/// The (key, digest) pairs `ipirm store show WHAT --json` lists.
fn shown_digests(store: &Path, what: &str) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", &format!("--store={}", store.display()), "show", what, "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = Vec::new();
    collect_digests(&v, &mut found);
    found.sort();
    found
}

fn collect_digests(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(k), Some(d)) = (m.get("key").and_then(|k| k.as_str()), m.get("digest").and_then(|d| d.as_str())) {
                out.push((k.to_string(), d.to_string()));
            }
            m.values().for_each(|x| collect_digests(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

#[test]
fn rerun_is_a_cache_hit_and_changes_invalidate_only_what_depends_on_them() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    let first = ok(&store, &["run"], &args);
    assert!(first.contains("epoch 3/3") && !first.contains("cached"), "{first}");

    let second = ok(&store, &["run"], &args);
    for stage in ["kNN on raw pixels: cached", "initialisation: cached", "training: cached", "trained encoder: cached", "linear probe: cached"] {
        assert!(second.contains(stage), "missing `{stage}` in:\n{second}");
    }
    assert!(!second.contains("epoch 1/3"), "{second}");

    // A new linear-probe setting reuses pretraining and kNN, and recomputes the probe.
    let probe = ok(&store, &["run"], &with(&args, &["--set=linear.lr=0.02"]));
    assert!(probe.contains("training: cached") && probe.contains("trained encoder: cached"), "{probe}");
    assert!(!probe.contains("linear probe: cached"), "{probe}");

    // A new temperature reuses nothing after the dataset.
    let tau = ok(&store, &["run"], &with(&args, &["--set=train.temperature=0.3"]));
    assert!(!tau.contains("cached"), "{tau}");
    assert!(tau.contains("epoch 1/3"), "{tau}");

    // A new kNN k reuses training but not the kNN results.
    let k = ok(&store, &["run"], &with(&args, &["--set=knn.k=5"]));
    assert!(k.contains("training: cached") && !k.contains("trained encoder: cached") && k.contains("linear probe: cached"), "{k}");
}

#[test]
fn killed_runs_resume_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Six epochs, so that the kills below land in the middle of the work.
    let args = with(&setup(tmp.path()), &["--set=train.epochs=6"]);
    let clean = tmp.path().join("clean");
    ok(&clean, &["train"], &args);
    let want = digests(&clean);
    assert!(want.len() >= 8, "{want:?}");

    let killed = tmp.path().join("killed");
    // Kill at several moments (deterministic pseudo-random delays), then let it finish.
    let mut kills = 0;
    for (i, ms) in [350u64, 1300, 700, 2100, 1700, 2900].iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .arg("train")
            .arg(format!("--store={}", killed.display()))
            .args(&args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(*ms));
        if child.try_wait().unwrap().is_none() {
            child.kill().unwrap(); // SIGKILL
            kills += 1;
        }
        child.wait().unwrap();
        let (clean, verify) = ipirm(&killed, &["store", "verify"], &[]);
        assert!(clean, "after kill {i} the store must verify (orphans allowed):\n{verify}");
    }
    assert!(kills >= 2, "the runs finished before they could be killed; the test needs slower runs");
    let last = ok(&killed, &["train"], &args);
    assert!(last.contains("final checkpoint"), "{last}");
    let (clean_verify, v) = ipirm(&killed, &["store", "verify"], &[]);
    assert!(clean_verify, "the store left by the kills must verify (orphans allowed):\n{v}");
    // Every artifact of the uninterrupted run is in the killed-and-resumed store, with the same
    // bytes (the last resumed run itself may have reused most of them from the cache).
    for (key, digest) in &want {
        let found = shown_digests(&killed, key);
        assert!(found.contains(&(key.clone(), digest.clone())), "artifact {key}: {digest} in the clean store, {found:?} after the kills");
    }
}

#[test]
fn a_damaged_blob_is_found_refused_and_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    let out = ok(&store, &["train"], &args);
    let key = out.lines().find_map(|l| l.strip_prefix("final checkpoint: ")).unwrap().trim().to_string();
    let blob = digests(&store).into_iter().find(|(k, _)| *k == key).unwrap().1;
    let file = store.join("objects").join(&blob[..2]).join(&blob);
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();

    let (clean, verify) = ipirm(&store, &["store", "verify"], &[]);
    assert!(!clean && verify.contains(&key), "verify must name the damaged key:\n{verify}");
    let again = ok(&store, &["train"], &args);
    assert!(again.contains("recomputing") && again.contains(&key[..12]), "{again}");
    // It resumed from the checkpoint before the damaged one instead of starting over.
    assert!(again.contains("resuming from the stored checkpoint after epoch 2") && again.contains("epoch 3/3"), "{again}");
    let (clean, verify) = ipirm(&store, &["store", "verify"], &[]);
    assert!(clean, "{verify}");
}
