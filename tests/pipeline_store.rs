//! The pipeline through the artifact store, driven as a user would: cache hits on a rerun,
//! selective invalidation, bit-identical resume after `kill -9` at random moments, a damaged
//! blob found, refused and recomputed.
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::run::{
    blob_file, flip_byte, ipirm, ok, ok_one_thread, shown_digests, stage_keys, tiny_run as setup,
    train, with, LogWatch, ONE_THREAD,
};

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
    assert!(
        first.contains("epoch 3/3") && !first.contains("cached"),
        "{first}"
    );

    let second = ok(&store, &["run"], &args);
    for stage in [
        "kNN on raw pixels: cached",
        "initialisation: cached",
        "training: cached",
        "trained encoder: cached",
        "linear probe: cached",
    ] {
        assert!(second.contains(stage), "missing `{stage}` in:\n{second}");
    }
    assert!(!second.contains("epoch 1/3"), "{second}");

    // A new linear-probe setting reuses pretraining and kNN, and recomputes the probe.
    let probe = ok(&store, &["run"], &with(&args, &["--set=linear.lr=0.02"]));
    assert!(
        probe.contains("training: cached") && probe.contains("trained encoder: cached"),
        "{probe}"
    );
    assert!(!probe.contains("linear probe: cached"), "{probe}");

    // A new temperature reuses nothing after the dataset.
    let tau = ok(
        &store,
        &["run"],
        &with(&args, &["--set=train.temperature=0.3"]),
    );
    assert!(!tau.contains("cached"), "{tau}");
    assert!(tau.contains("epoch 1/3"), "{tau}");

    // A new kNN k reuses training but not the kNN results.
    let k = ok(&store, &["run"], &with(&args, &["--set=knn.k=5"]));
    assert!(
        k.contains("training: cached")
            && !k.contains("trained encoder: cached")
            && k.contains("linear probe: cached"),
        "{k}"
    );
}

/// A rerun served from the store records every artifact it stands on, as the run that made
/// them did: the earlier checkpoints, the features of each partition and the kNN monitor points
/// too, which it never loads (a rerun listed 11 of 16, so notebooks and `gc --keep` reading the
/// latest run missed the rest).
#[test]
fn a_cached_rerun_records_what_the_run_that_made_it_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(
        &setup(tmp.path()),
        &["--set=train.knn_every=2", "--set=train.epochs=4"],
    );
    let store = tmp.path().join("store");
    let listed = || {
        let mut keys = all_keys(&store, "fmnist-ipirm-quick");
        keys.extend(
            stage_keys(&store, "fmnist-ipirm-quick", "knn-monitor")
                .into_iter()
                .map(|k| ("knn-monitor".to_string(), k)),
        );
        keys.sort();
        keys
    };
    ok(&store, &["run"], &args);
    let first = listed();
    for stage in ["features", "knn-monitor"] {
        assert!(first.iter().any(|(s, _)| s == stage), "{stage}: {first:?}");
    }
    assert!(first.iter().filter(|(s, _)| s == "checkpoint").count() >= 3);
    let again = ok(&store, &["run"], &args);
    assert!(again.contains("training: cached"), "{again}");
    assert_eq!(listed(), first);
}

#[test]
fn killed_runs_resume_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    // Six epochs, so that the kills below land in the middle of the work.
    let args = with(&setup(tmp.path()), &["--set=train.epochs=6"]);
    kill_and_resume(
        tmp.path(),
        &args,
        "fmnist-ipirm-quick",
        &[
            ("data:", 30),
            ("epoch 1/", 0),
            ("partition after epoch 2", 40),
            ("epoch 3/", 5),
            ("  env 1", 0),
            ("epoch 5/", 10),
        ],
    );
}

/// The same for the MixUp preset, with MixUp in the maximize step too (`--mixup_max`, offline):
/// every λ and permutation comes from the run's derived seeds, so a resumed run draws the same
/// ones. Then `ipirm run` on the resumed store reuses the training and evaluates it.
#[test]
fn killed_mixup_runs_resume_bit_identical_to_an_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let args: Vec<String> = setup(tmp.path())
        .into_iter()
        .map(|a| {
            a.replace(
                "--preset=fmnist-ipirm-quick",
                "--preset=fmnist-ipirm-mixup-quick",
            )
        })
        .collect();
    let args = with(
        &args,
        &["--set=train.epochs=5", "--set=maximize.mixup=true"],
    );
    let store = kill_and_resume(
        tmp.path(),
        &args,
        "fmnist-ipirm-mixup-quick",
        &[
            ("partition after epoch 0", 20),
            ("epoch 2/", 0),
            ("data:", 50),
            ("epoch 4/", 3),
            ("partition after epoch 4", 0),
        ],
    );
    let run = ok(&store, &["run"], &args);
    for stage in ["training: cached", "linear probe", "kNN"] {
        assert!(run.contains(stage), "missing `{stage}` in:\n{run}");
    }
}

/// Runs `ipirm train ARGS` to the end in one store (on one intra-op thread, as every run here),
/// and in another kills it (SIGKILL) at each of `moments` before letting it finish; every
/// artifact of the first must be in the second with the same bytes. Returns the
/// killed-and-resumed store. A moment is a line of the run's log (its start) and a delay after
/// it: the kills land at the same points of the work on a fast or busy machine, where delays from
/// the start alone raced the run.
fn kill_and_resume(
    dir: &Path,
    args: &[String],
    run_name: &str,
    moments: &[(&str, u64)],
) -> std::path::PathBuf {
    let clean = dir.join("clean");
    let out = train(&clean, args);
    let want = shown_digests(&clean, run_name);
    assert!(want.len() >= 8, "{want:?}\n{out}");

    let killed = dir.join("killed");
    let mut kills = 0;
    for (i, (line, ms)) in moments.iter().enumerate() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .arg("train")
            .arg(format!("--store={}", killed.display()))
            .args(args)
            .envs(ONE_THREAD.iter().copied())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = LogWatch::new(&mut child);
        if log.wait_for(line) {
            std::thread::sleep(Duration::from_millis(*ms));
            if child.try_wait().unwrap().is_none() {
                child.kill().unwrap(); // SIGKILL
                kills += 1;
            }
        }
        child.wait().unwrap();
        let text = log.finish();
        let (clean, verify) = ipirm(&killed, &["store", "verify"], &[]);
        assert!(
            clean,
            "after kill {i} the store must verify (orphans allowed):\n{verify}\nthe run:\n{text}"
        );
    }
    assert!(
        kills + 1 >= moments.len(),
        "only {kills} of {} kills landed before the run ended",
        moments.len()
    );
    let last = train(&killed, args);
    assert!(last.contains("final checkpoint"), "{last}");
    let (clean_verify, v) = ipirm(&killed, &["store", "verify"], &[]);
    assert!(
        clean_verify,
        "the store left by the kills must verify (orphans allowed):\n{v}"
    );
    // Every artifact of the uninterrupted run is in the killed-and-resumed store, with the same
    // bytes (the last resumed run itself may have reused most of them from the cache).
    for (key, digest) in &want {
        let found = shown_digests(&killed, key);
        assert!(
            found.contains(&(key.clone(), digest.clone())),
            "artifact {key}: {digest} in the clean store, {found:?} after the kills"
        );
    }
    killed
}

#[test]
fn a_damaged_blob_is_found_refused_and_recomputed() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    let out = ok(&store, &["train"], &args);
    let key = out
        .lines()
        .find_map(|l| l.strip_prefix("final checkpoint: "))
        .unwrap()
        .trim()
        .to_string();
    let blob = digests(&store)
        .into_iter()
        .find(|(k, _)| *k == key)
        .unwrap()
        .1;
    flip_byte(&blob_file(&store, &blob));

    let (clean, verify) = ipirm(&store, &["store", "verify"], &[]);
    assert!(
        !clean && verify.contains(&key),
        "verify must name the damaged key:\n{verify}"
    );
    let again = ok(&store, &["train"], &args);
    assert!(
        again.contains("recomputing") && again.contains(&key[..12]),
        "{again}"
    );
    // It resumed from the checkpoint before the damaged one instead of starting over.
    assert!(
        again.contains("resuming from the stored checkpoint after epoch 2")
            && again.contains("epoch 3/3"),
        "{again}"
    );
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
    let first = ok_one_thread(&store, &["run"], &args);
    let clean = digests(&store);
    let run = "fmnist-ipirm-quick";
    let digest_of = |key: &str| {
        clean
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, d)| d.clone())
            .unwrap()
    };
    let features = stage_keys(&store, run, "features");
    let partitions = stage_keys(&store, run, "partition");
    let checkpoints = stage_keys(&store, run, "checkpoint");
    assert!(
        features.len() >= 2 && partitions.len() >= 2 && checkpoints.len() == 4,
        "{features:?} {partitions:?} {checkpoints:?}"
    );
    flip_byte(&blob_file(&store, &digest_of(&features[0])));
    flip_byte(&blob_file(&store, &digest_of(&partitions[0])));
    std::fs::remove_file(blob_file(&store, &digest_of(checkpoints.last().unwrap()))).unwrap();

    let again = ok_one_thread(&store, &["run"], &args);
    assert!(
        again.contains("recomputing") && again.contains(&partitions[0][..12]),
        "{again}"
    );
    assert!(!again.contains("resuming from the stored checkpoint after epoch"), "the partition learned before epoch 1 was damaged, so training restarts from the initial checkpoint:\n{again}");
    for (key, digest) in &clean {
        let found = shown_digests(&store, key);
        assert!(
            found.contains(&(key.clone(), digest.clone())),
            "artifact {key}: {digest} before the damage, {found:?} after the rerun"
        );
    }
    let (verified, v) = ipirm(&store, &["store", "verify"], &[]);
    assert!(verified, "{v}");
    // The same results table, line for line (the figures come from the same stages).
    let table = |out: &str| {
        out.lines()
            .filter(|l| l.starts_with("| "))
            .map(str::to_string)
            .collect::<Vec<_>>()
    };
    assert_eq!(table(&first), table(&again));
}

/// `train.epochs` enters no checkpoint's key: a 4-epoch run extended to 5 trains one epoch (and
/// the maximize step after epoch 4 that the longer run needs) and ends on the same model file,
/// byte for byte, as a 5-epoch run from scratch; with the kNN monitor after every epoch, its
/// points are the 5-epoch run's too (the one after epoch 4, the shorter run's last, was missing).
#[test]
fn a_longer_run_continues_a_shorter_one_bit_for_bit() {
    let tmp = tempfile::tempdir().unwrap();
    let args = with(&setup(tmp.path()), &["--set=train.knn_every=1"]);
    let (store, fresh) = (tmp.path().join("store"), tmp.path().join("fresh"));
    let (out_a, out_b) = (tmp.path().join("a"), tmp.path().join("b"));
    let four = train(
        &store,
        &with(
            &args,
            &[
                "--set=train.epochs=4",
                &format!("--out={}", out_a.display()),
            ],
        ),
    );
    assert!(
        four.contains("epoch 4/4") && !four.contains("partition after epoch 4"),
        "{four}"
    );
    let five = train(
        &store,
        &with(
            &args,
            &[
                "--set=train.epochs=5",
                &format!("--out={}", out_a.display()),
            ],
        ),
    );
    assert!(
        five.contains("resuming from the stored checkpoint after epoch 4"),
        "{five}"
    );
    assert!(
        five.contains("partition after epoch 4") && five.contains("epoch 5/5"),
        "{five}"
    );
    for e in 1..=4 {
        assert!(
            !five.contains(&format!("epoch {e}/5")),
            "epoch {e} was trained again:\n{five}"
        );
    }
    train(
        &fresh,
        &with(
            &args,
            &[
                "--set=train.epochs=5",
                &format!("--out={}", out_b.display()),
            ],
        ),
    );
    let (a, b) = (
        std::fs::read(out_a.join("model.safetensors")).unwrap(),
        std::fs::read(out_b.join("model.safetensors")).unwrap(),
    );
    assert!(
        a == b,
        "the extended run's model differs from a 5-epoch run's"
    );
    let monitor = |store: &Path| -> Vec<(String, String)> {
        let shown = ok(
            store,
            &["store", "show", "fmnist-ipirm-quick", "--json"],
            &[],
        );
        let shown: serde_json::Value = serde_json::from_str(&shown).unwrap();
        let mut points: Vec<(String, String)> = (shown["artifact_details"].as_array().unwrap())
            .iter()
            .filter(|a| a["stage"] == "knn-monitor")
            .map(|a| (a["key"].to_string(), a["record_hex"].to_string()))
            .collect();
        points.sort();
        points
    };
    let (extended, whole) = (monitor(&store), monitor(&fresh));
    assert_eq!(whole.len(), 4, "{whole:?}");
    assert_eq!(extended, whole);
}

/// Stages that never read `train.lr` are reused when it changes.
#[test]
fn a_new_learning_rate_reuses_the_reference_points() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    ok(&store, &["run"], &with(&args, &["--set=train.epochs=1"]));
    let lr = ok(
        &store,
        &["run"],
        &with(&args, &["--set=train.epochs=1", "--set=train.lr=0.002"]),
    );
    assert!(
        lr.contains("kNN on raw pixels: cached")
            && lr.contains("kNN of the encoder at initialisation: cached"),
        "{lr}"
    );
    // The first maximize step reads the initial checkpoint only: reused too. Training is not.
    assert!(
        lr.contains("partition after epoch 0")
            && lr.contains("epoch 1/1")
            && !lr.contains("training: cached"),
        "{lr}"
    );
}

/// A run branched from a stored partition starts from the checkpoint it was learned from, with
/// it as its first partition, under other settings; its keys record where it came from.
#[test]
fn a_run_branches_from_a_stored_partition() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    ok(&store, &["run"], &args);
    let source_ckpts = stage_keys(&store, "fmnist-ipirm-quick", "checkpoint");
    let branch = ok(
        &store,
        &["run"],
        &with(
            &args,
            &[
                "--name=branch",
                "--from-partition=fmnist-ipirm-quick@1",
                "--set=ipirm.penalty_weight=0.5",
            ],
        ),
    );
    assert!(
        branch.contains("branching from partition") && branch.contains("learned after epoch 1"),
        "{branch}"
    );
    assert!(
        branch.contains("starting from the checkpoint after epoch 1"),
        "{branch}"
    );
    assert!(
        branch.contains("epoch 2/3")
            && branch.contains("epoch 3/3")
            && !branch.contains("epoch 1/3"),
        "{branch}"
    );
    assert!(
        branch.contains("partition after epoch 2") && branch.contains("kNN of the trained encoder"),
        "{branch}"
    );
    let shown = ok(&store, &["store", "show", "branch"], &[]);
    assert!(
        shown.contains("branched  from partition") && shown.contains("fmnist-ipirm-quick-"),
        "{shown}"
    );
    // Its own checkpoints are new keys; it starts from the source's checkpoint after epoch 1.
    let own = stage_keys(&store, "branch", "checkpoint");
    assert!(
        own.iter().filter(|k| source_ckpts.contains(k)).count() == 1,
        "{own:?} vs {source_ckpts:?}"
    );
    // With the source's own settings, a branch is still not the source run: no key is shared
    // past the branch point (the source kept its partition 0 too).
    let same = ok(
        &store,
        &["run"],
        &with(
            &args,
            &["--name=same", "--from-partition=fmnist-ipirm-quick@1"],
        ),
    );
    assert!(
        same.contains("epoch 2/3") && !same.contains("training: cached"),
        "{same}"
    );
    // Bad specifications are clear errors.
    for (spec, needle) in [
        ("fmnist-ipirm-quick@9", "after epoch 9"),
        ("nosuchrun@1", "nosuchrun"),
        ("fmnist-ipirm-quick@x", "EPOCH"),
    ] {
        let (success, text) = ipirm(
            &store,
            &["run"],
            &with(&args, &["--name=bad", &format!("--from-partition={spec}")]),
        );
        assert!(!success && text.contains(needle), "{spec}:\n{text}");
    }
    // A branch must continue a checkpoint of the same model, and SimCLR trains on no partition.
    for (set, needle) in [
        (
            "model.width=8",
            "model.width=4, but this run has model.width=8",
        ),
        ("train.method=simclr", "train.method=simclr has no use for"),
    ] {
        let set_arg = format!("--set={set}");
        let branch = [
            "--name=bad",
            "--from-partition=fmnist-ipirm-quick@1",
            &set_arg,
        ];
        let args = with(&args, &branch);
        let (success, text) = ipirm(&store, &["run"], &args);
        assert!(
            !success && text.contains("ipirm.from_partition") && text.contains(needle),
            "{set}:\n{text}"
        );
        assert!(!text.contains("epoch 2/3"), "{set}:\n{text}");
    }
    // None of the refused branches left a run under its name (each did, unfinished).
    let ls = ok(&store, &["store", "ls"], &[]);
    assert!(!ls.contains("bad-"), "{ls}");
}

/// The artifact keys of every stage of run `name`, from `store show NAME --json`.
fn all_keys(store: &Path, name: &str) -> Vec<(String, String)> {
    [
        "dataset",
        "checkpoint",
        "curve",
        "features",
        "partition",
        "knn-pixels",
        "knn",
        "linear",
        "report",
    ]
    .iter()
    .flat_map(|s| {
        stage_keys(store, name, s)
            .into_iter()
            .map(move |k| (s.to_string(), k))
    })
    .collect()
}

/// Other pixels of the same size, under the same settings: nothing that reads the images is
/// reused. Only the initialisation (checkpoint 0, drawn from the seed) is shared; before the
/// dataset was an input of the maximize steps, the first partition and its features were served
/// from the first data. Also other image counts of the same files (`data.train_limit`).
#[test]
fn changed_data_reuses_nothing_that_reads_it() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    ok(&store, &["run"], &with(&args, &["--name=first"]));

    // The same files with the first 16 training images inverted.
    let other = tmp.path().join("other");
    std::fs::create_dir_all(&other).unwrap();
    for f in std::fs::read_dir(tmp.path().join("data")).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, other.join(f.file_name().unwrap())).unwrap();
    }
    let images = other.join("train-images-idx3-ubyte.gz");
    let raw = common::gunzip(&std::fs::read(&images).unwrap());
    let mut changed = raw.clone();
    for b in &mut changed[16..16 + 16 * 28 * 28] {
        *b = 255 - *b;
    }
    std::fs::write(&images, common::gzip(&changed)).unwrap();
    let second = ok(
        &store,
        &["run"],
        &with(
            &args,
            &[
                "--name=second",
                &format!("--set=data.data_dir={}", other.display()),
            ],
        ),
    );
    assert!(!second.contains("cached"), "{second}");
    let first = all_keys(&store, "first");
    let shared: Vec<_> = all_keys(&store, "second")
        .into_iter()
        .filter(|k| first.contains(k))
        .collect();
    let init = stage_keys(&store, "first", "checkpoint")[0].clone();
    assert_eq!(shared, vec![("checkpoint".to_string(), init)], "{second}");

    // Fewer images of the same files: a run of its own (it ended in a shape panic when the
    // first partition of 64 images was reused).
    let fewer = ok(
        &store,
        &["run"],
        &with(&args, &["--name=fewer", "--set=data.train_limit=32"]),
    );
    assert!(fewer.contains("(32 images) for training"), "{fewer}");
    assert!(
        stage_keys(&store, "fewer", "partition")
            .iter()
            .all(|k| !first.contains(&("partition".to_string(), k.clone()))),
        "{fewer}"
    );
}

/// A branch whose partition assigns another number of images than the run trains on is refused
/// before any work, naming both counts.
#[test]
fn a_branch_on_another_number_of_images_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let args = setup(tmp.path());
    let store = tmp.path().join("store");
    ok(&store, &["run"], &args);
    let (success, text) = ipirm(
        &store,
        &["run"],
        &with(
            &args,
            &[
                "--name=fewer",
                "--from-partition=fmnist-ipirm-quick@1",
                "--set=data.train_limit=32",
            ],
        ),
    );
    assert!(!success, "{text}");
    assert!(
        text.contains("ipirm.from_partition")
            && text.contains("assigns 64 training images")
            && text.contains("trains on 32"),
        "{text}"
    );
    assert!(!text.contains("epoch 2/3"), "{text}");
}
