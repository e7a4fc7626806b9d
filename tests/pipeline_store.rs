//! The pipeline through the artifact store, driven as a user would: cache hits on a rerun,
//! selective invalidation, bit-identical resume after `kill -9` at random moments, a damaged
//! blob found, refused and recomputed.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::run::{flip_byte, blob_file, ipirm, ok, shown_digests, stage_keys, tiny_run as setup, with};

/// The digests of every blob the latest run of `fmnist-ipirm-quick` used, keyed by artifact key.
fn digests(store: &Path) -> Vec<(String, String)> {
    shown_digests(store, "fmnist-ipirm-quick")
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
    flip_byte(&blob_file(&store, &blob));

    let (clean, verify) = ipirm(&store, &["store", "verify"], &[]);
    assert!(!clean && verify.contains(&key), "verify must name the damaged key:\n{verify}");
    let again = ok(&store, &["train"], &args);
    assert!(again.contains("recomputing") && again.contains(&key[..12]), "{again}");
    // It resumed from the checkpoint before the damaged one instead of starting over.
    assert!(again.contains("resuming from the stored checkpoint after epoch 2") && again.contains("epoch 3/3"), "{again}");
    let (clean, verify) = ipirm(&store, &["store", "verify"], &[]);
    assert!(clean, "{verify}");
}

/// Damage deep in the chain: the first maximize step's features and partition changed by a byte,
/// the final checkpoint's blob gone. The rerun must recompute each from exactly its own inputs
/// (going back to the initial checkpoint), ending on the digests of the undamaged run, never
/// filing something computed from a later model under an earlier key.
#[test]
fn damage_before_the_resume_point_is_recomputed_from_its_own_inputs() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    let first = ok(&store, &["run"], &args);
    let clean = digests(&store);
    let run = "fmnist-ipirm-quick";
    let digest_of = |key: &str| clean.iter().find(|(k, _)| k == key).map(|(_, d)| d.clone()).unwrap();
    let features = stage_keys(&store, run, "features");
    let partitions = stage_keys(&store, run, "partition");
    let checkpoints = stage_keys(&store, run, "checkpoint");
    assert!(features.len() >= 2 && partitions.len() >= 2 && checkpoints.len() == 4, "{features:?} {partitions:?} {checkpoints:?}");
    flip_byte(&blob_file(&store, &digest_of(&features[0])));
    flip_byte(&blob_file(&store, &digest_of(&partitions[0])));
    std::fs::remove_file(blob_file(&store, &digest_of(checkpoints.last().unwrap()))).unwrap();

    let again = ok(&store, &["run"], &args);
    assert!(again.contains("recomputing") && again.contains(&partitions[0][..12]), "{again}");
    assert!(!again.contains("resuming from the stored checkpoint after epoch"), "the partition learned before epoch 1 was damaged, so training restarts from the initial checkpoint:\n{again}");
    for (key, digest) in &clean {
        let found = shown_digests(&store, key);
        assert!(found.contains(&(key.clone(), digest.clone())), "artifact {key}: {digest} before the damage, {found:?} after the rerun");
    }
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
    // The same results table, line for line (the figures come from the same stages).
    let table = |out: &str| out.lines().filter(|l| l.starts_with("| ")).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(table(&first), table(&again));
}
