//! Seeds, `ipirm compare` and `ipirm report --check` through the binary on tiny runs: what
//! `--seeds` shares and resumes, compare's figures against a hand computation on the stored
//! values (the 95 % t quantile for 1 degree of freedom, 12.706, from a table), the settings diff,
//! the lineage of a branch, the gate's exit codes, and the errors a user meets.
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

mod common;
use common::run::{ipirm, ok, tiny_run, with, LogWatch};

/// t(0.975, 1), from a printed table.
const T_975_1: f64 = 12.706_204_736;

/// One store shared by the tests (each reads it only): arm `a` (2 seeds, killed once in its
/// second seed and resumed), arm `b` (the same with a probe and two kNN settings changed), a run
/// `branch` branched from `a`'s partition after epoch 1, and arm `other` on other data.
struct Fixture {
    _tmp: tempfile::TempDir,
    store: PathBuf,
    out: PathBuf,
    /// The log of the resumed `--seeds 2` run of `a`.
    resumed: String,
    seeds: Vec<u64>,
}

fn fixture() -> &'static Fixture {
    static F: OnceLock<Fixture> = OnceLock::new();
    F.get_or_init(|| {
        let tmp = tempfile::tempdir().unwrap();
        let store = tmp.path().join("store");
        let out = tmp.path().join("out");
        let args = with(&tiny_run(tmp.path()), &["--seeds=2"]);
        let a = with(
            &args,
            &["--name=a", &format!("--out={}", out.join("a").display())],
        );
        // kill -9 in the second seed's training, then the same command again.
        let mut child = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .arg("run")
            .arg(format!("--store={}", store.display()))
            .args(&a)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = LogWatch::new(&mut child);
        assert!(log.wait_for("== seed") && log.wait_for("== seed"));
        assert!(log.wait_for("epoch 2/3"));
        child.kill().unwrap();
        child.wait().unwrap();
        let killed = log.finish();
        assert!(killed.contains("(2 of 2)"), "{killed}");
        let resumed = ok(&store, &["run"], &a);
        let seeds: Vec<u64> = resumed
            .lines()
            .filter_map(|l| l.strip_prefix("== seed "))
            .map(|l| l.split(' ').next().unwrap().parse().unwrap())
            .collect();
        assert_eq!(seeds.len(), 2, "{resumed}");
        let b = with(
            &args,
            &[
                "--name=b",
                "--set=linear.lr=0.02",
                "--set=knn.k=5",
                "--set=knn.temperature=0.3",
                &format!("--out={}", out.join("b").display()),
            ],
        );
        ok(&store, &["run"], &b);
        let branch = with(
            &tiny_run(tmp.path()),
            &[
                "--name=branch",
                "--from-partition=a@1",
                &format!("--set=train.seed={}", seeds[1]),
            ],
        );
        ok(&store, &["run"], &branch);
        // Another dataset: a CIFAR-10 folder of 65 training and 32 test images.
        let cifar = tmp.path().join("cifar");
        let records = |range: std::ops::Range<usize>| -> Vec<u8> {
            range
                .flat_map(|i| common::cifar_record(i, &[(i % 10) as u8]))
                .collect()
        };
        for b in 0..5 {
            let path = cifar.join(format!("cifar-10-batches-bin/data_batch_{}.bin", b + 1));
            common::write(&path, &records(13 * b..13 * b + 13));
        }
        common::write(
            &cifar.join("cifar-10-batches-bin/test_batch.bin"),
            &records(100..132),
        );
        let mut other = args.clone();
        other.retain(|a| !a.starts_with("--data-dir"));
        let other = with(
            &other,
            &[
                "--name=other",
                "--set=data.dataset=cifar10",
                &format!("--data-dir={}", cifar.display()),
                &format!("--out={}", out.join("other").display()),
            ],
        );
        ok(&store, &["run"], &other);
        Fixture {
            _tmp: tmp,
            store,
            out,
            resumed,
            seeds,
        }
    })
}

/// `ipirm compare ARGS --json` on the shared store, which must succeed.
fn compare_json(args: &[&str]) -> serde_json::Value {
    compare_json_in(&fixture().store, args)
}

/// `ipirm compare ARGS --json` on `store`, which must succeed.
fn compare_json_in(store: &Path, args: &[&str]) -> serde_json::Value {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.push("--json".into());
    // The JSON is stdout, after whatever stderr said.
    let text = ok(store, &["compare"], &all);
    let json = &text[text.find("\n{").map_or(0, |i| i + 1)..];
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {text}"))
}

/// The stored values of arm `arm`: (linear top-1, kNN top-1) of each seed, from each seed's
/// `report.json`.
fn reported(arm: &str) -> Vec<(f64, f64)> {
    let f = fixture();
    f.seeds
        .iter()
        .map(|s| {
            let path = f.out.join(arm).join(format!("seed-{s}/report.json"));
            let r: serde_json::Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            (
                r["linear"]["test"]["top1"].as_f64().unwrap(),
                r["trained_knn"]["top1"].as_f64().unwrap(),
            )
        })
        .collect()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-9 * (1.0 + b.abs())
}

/// mean, sample standard deviation and 95 % interval of two values, by hand.
fn by_hand(x: f64, y: f64) -> (f64, f64, (f64, f64)) {
    let mean = (x + y) / 2.0;
    let sd = ((x - mean).powi(2) + (y - mean).powi(2)).sqrt(); // n − 1 = 1
    let half = T_975_1 * sd / 2f64.sqrt();
    (mean, sd, (mean - half, mean + half))
}

#[test]
fn seeds_are_runs_of_one_name_that_share_what_does_not_read_the_seed_and_resume() {
    let f = fixture();
    // The resumed command found the first seed whole in the store and continued the second.
    let second = f.resumed.split("(2 of 2)").nth(1).unwrap();
    let first = f.resumed.split("(2 of 2)").next().unwrap();
    assert!(first.contains("training: cached"), "{}", f.resumed);
    assert!(
        second.contains("training: resuming") && !second.contains("epoch 1/3"),
        "{}",
        f.resumed
    );
    assert_eq!(f.seeds[1], f.seeds[0] + 1);
    // Two finished runs of `a`, one per seed, with one raw-pixel kNN and one dataset between them.
    let c = compare_json(&["a"]);
    let runs = c["arms"][0]["runs"].as_array().unwrap();
    let seeds: Vec<u64> = runs.iter().map(|r| r[1].as_u64().unwrap()).collect();
    assert_eq!(seeds, f.seeds);
    for stage in ["knn-pixels", "dataset"] {
        let keys: std::collections::BTreeSet<String> = runs
            .iter()
            .flat_map(|r| common::run::stage_keys(&f.store, r[0].as_str().unwrap(), stage))
            .collect();
        assert_eq!(keys.len(), 1, "{stage}: {keys:?}");
    }
    // The model differs between the seeds.
    let checkpoints: std::collections::BTreeSet<Vec<String>> = runs
        .iter()
        .map(|r| common::run::stage_keys(&f.store, r[0].as_str().unwrap(), "checkpoint"))
        .collect();
    assert_eq!(checkpoints.len(), 2);
}

#[test]
fn compare_shows_means_intervals_and_paired_differences_computed_by_hand() {
    let c = compare_json(&["a", "b"]);
    let (va, vb) = (reported("a"), reported("b"));
    for (i, arm) in [&va, &vb].iter().enumerate() {
        let m = &c["arms"][i]["metrics"];
        for (metric, x, y) in [
            ("linear_top1", arm[0].0, arm[1].0),
            ("knn_top1", arm[0].1, arm[1].1),
        ] {
            let (mean, sd, (lo, hi)) = by_hand(x, y);
            let s = &m[metric];
            assert_eq!(s["n"], 2, "{metric}: {s}");
            assert!(
                close(s["mean"].as_f64().unwrap(), mean),
                "{metric}: {s} vs {mean}"
            );
            assert!(
                close(s["sd"].as_f64().unwrap(), sd),
                "{metric}: {s} vs {sd}"
            );
            assert!(close(s["ci95"][0].as_f64().unwrap(), lo), "{metric}: {s}");
            assert!(close(s["ci95"][1].as_f64().unwrap(), hi), "{metric}: {s}");
        }
    }
    // b − a paired over the seeds: the mean and interval of the per-seed differences.
    let d = c["differences"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["metric"] == "linear_top1")
        .unwrap();
    assert!(d["form"].as_str().unwrap().starts_with("paired"), "{d}");
    let (mean, _, (lo, hi)) = by_hand(vb[0].0 - va[0].0, vb[1].0 - va[1].0);
    assert!(close(d["mean"].as_f64().unwrap(), mean), "{d} vs {mean}");
    assert!(close(d["ci95"][0].as_f64().unwrap(), lo), "{d}");
    assert!(close(d["ci95"][1].as_f64().unwrap(), hi), "{d}");
    // The settings that differ: exactly the three set with --set, each arm's value.
    let keys: Vec<&str> = c["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["key"].as_str().unwrap())
        .collect();
    assert_eq!(
        keys,
        ["knn.k", "knn.temperature", "linear.lr"],
        "{}",
        c["settings"]
    );
    assert_eq!(c["settings"][0]["values"], serde_json::json!(["10", "5"]));
    // The kNN temperature as each arm's kNN weighted with (a: train.temperature's 0.5), and the
    // note that their kNN columns are not on one scale.
    assert_eq!(
        c["settings"][1]["values"],
        serde_json::json!(["0.5", "0.3"])
    );
    let notes = c["notes"].as_array().unwrap();
    assert!(
        notes.len() == 1 && notes[0].as_str().unwrap().contains("0.5 / 0.3"),
        "{notes:?}"
    );
    assert!(c["arms"][0]["inconsistent"].as_array().unwrap().is_empty());
    // The Markdown and the chart.
    let f = fixture();
    let dir = f.out.join("compare");
    let text = ok(
        &f.store,
        &["compare"],
        &["a".into(), "b".into(), format!("--out={}", dir.display())],
    );
    assert!(text.contains("paired over seeds"), "{text}");
    for file in ["compare.md", "compare.json", "compare.svg"] {
        assert!(dir.join(file).is_file(), "{file}");
    }
}

#[test]
fn the_lineage_of_a_branch_names_the_first_stage_where_the_runs_part() {
    let f = fixture();
    let a = compare_json(&["a"])["arms"][0]["runs"][1][0]
        .as_str()
        .unwrap()
        .to_string();
    let b = latest_run_id(&f.store, "branch");
    let c = compare_json(&[&a, &b]);
    let lineage = &c["lineage"];
    let shared: Vec<&str> = lineage["shared"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    // (The branch starts after epoch 1: it has no checkpoint 0 of its own.)
    for stage in [
        "dataset",
        "kNN of raw pixels",
        "checkpoint after epoch 1",
        "partition after epoch 1",
    ] {
        assert!(shared.contains(&stage), "{stage}: {lineage}");
    }
    assert_eq!(
        lineage["first_parting"]["stage"], "checkpoint after epoch 2",
        "{lineage}"
    );
}

/// A run recorded before `data.antialias` and `model.sync_bn` existed (its config has neither
/// key; it resized without antialiasing) is read as it ran: in a copy of the store, seed 2 of `a` recorded again
/// so, over the same artifacts. On Fashion-MNIST the setting changes nothing, so the arm is not
/// inconsistent, and the run's stages from its recorded config are those the store holds.
/// A private copy of the shared store.
fn copy_of_fixture() -> (tempfile::TempDir, PathBuf) {
    let f = fixture();
    let tmp = tempfile::tempdir().unwrap();
    let store = tmp.path().join("store");
    for file in common::files_under(&f.store) {
        let to = store.join(file.strip_prefix(&f.store).unwrap());
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&file, &to).unwrap();
    }
    (tmp, store)
}

/// `store gc` keeps every seed of an arm: each is the latest run of its name and seed (it kept
/// only the latest run of a name, and removed the other seeds a compare reads).
#[test]
fn gc_keeps_every_seed_of_an_arm() {
    let (_tmp, store) = copy_of_fixture();
    let before = compare_json_in(&store, &["a", "b"]);
    let gc = ok(&store, &["store", "gc"], &[]);
    assert!(gc.contains("gc removed"), "{gc}");
    let after = compare_json_in(&store, &["a", "b"]);
    for arm in 0..2 {
        assert_eq!(
            after["arms"][arm]["metrics"]["linear_top1"]["n"], 2,
            "{gc}\n{after}"
        );
    }
    assert_eq!(before["arms"], after["arms"]);
}

#[test]
fn a_run_recorded_before_antialias_is_read_as_it_ran() {
    let (_tmp, store) = copy_of_fixture();
    let new = latest_run_id(&store, "a");
    let old = {
        let s = ipirm::store::Store::open(&store).unwrap();
        let run = s.get_run(&new).unwrap().unwrap();
        let mut cfg: serde_json::Value = serde_json::from_str(&run.config_json).unwrap();
        assert_eq!(cfg["data"]["antialias"], true);
        cfg["data"].as_object_mut().unwrap().remove("antialias");
        // Nor `model.sync_bn` (added the same day, default off): read as off, no difference.
        assert!(cfg["model"]
            .as_object_mut()
            .unwrap()
            .remove("sync_bn")
            .is_some());
        let old = s.start_run("a", &cfg).unwrap();
        let keys: Vec<&str> = run.artifacts.iter().map(String::as_str).collect();
        s.attach(&old.id, &keys).unwrap();
        s.finish_run(&old.id).unwrap();
        old.id
    };
    let c = compare_json_in(&store, &["a"]);
    let runs: Vec<&str> = c["arms"][0]["runs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r[0].as_str().unwrap())
        .collect();
    assert!(runs.contains(&old.as_str()), "{runs:?}");
    assert!(
        c["arms"][0]["inconsistent"].as_array().unwrap().is_empty(),
        "{}",
        c["arms"][0]["inconsistent"]
    );
    let lineage = &compare_json_in(&store, &[&old, &new])["lineage"];
    assert!(lineage["first_parting"].is_null(), "{lineage}");
    assert!(
        lineage["shared"]
            .as_array()
            .unwrap()
            .contains(&"checkpoint after epoch 3".into()),
        "{lineage}"
    );
}

/// The id of the latest run named `name`, from `store show NAME --json`.
fn latest_run_id(store: &Path, name: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args([
            "store",
            &format!("--store={}", store.display()),
            "show",
            name,
            "--json",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["id"].as_str().unwrap().to_string()
}

#[test]
fn the_gate_exits_1_naming_what_is_off_and_0_when_all_holds() {
    let f = fixture();
    let knn = reported("a");
    let mean = (knn[0].1 + knn[1].1) / 2.0;
    let file = f.out.join("expect.toml");
    let write = |value: f64| {
        std::fs::write(
            &file,
            format!(
                "[[expect]]\nrun = \"a\"\nmetric = \"knn_top1\"\nvalue = {value}\ntolerance = 1.0\n"
            ),
        )
        .unwrap();
    };
    let check = || {
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args(["report", &format!("--store={}", f.store.display())])
            .arg(format!("--check={}", file.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        (out.status.code(), text)
    };
    write(mean + 0.5);
    let (code, text) = check();
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("check passed"), "{text}");
    // Paper rows without a run are listed and do not fail.
    assert!(text.contains("no finished run"), "{text}");
    write(mean + 3.0);
    let (code, text) = check();
    assert_eq!(code, Some(1), "{text}");
    let line = format!(
        "`a` knn_top1: ours {mean:.2}, expected {:.2}, tolerance 1.00",
        mean + 3.0
    );
    assert!(text.contains(&line), "{line}\n{text}");
    // A file's row naming no finished run fails (a misspelt name passed as "no finished run").
    std::fs::write(
        &file,
        "[[expect]]\nrun = \"a-misspelt\"\nmetric = \"knn_top1\"\nvalue = 50\ntolerance = 1.0\n",
    )
    .unwrap();
    let (code, text) = check();
    let line = "- expect `a-misspelt` knn_top1: no finished run (the expectations file names it)";
    assert!(code == Some(1) && text.contains(line), "{text}");
    write(mean + 3.0);
    // --require-all: the paper rows without a run fail too.
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["report", &format!("--store={}", f.store.display())])
        .args([
            format!("--check={}", file.display()),
            "--require-all".into(),
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
}

#[test]
fn the_html_report_shows_the_arms_of_each_dataset() {
    let f = fixture();
    let dir = f.out.join("report");
    ok(&f.store, &["report"], &[format!("--out={}", dir.display())]);
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    // Arms are names with two finished seeds, side by side per dataset; `branch` (one run) is none.
    let groups: Vec<(String, Vec<String>)> = json["comparisons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| {
            let arms = c["arms"].as_array().unwrap();
            (
                c["dataset"].as_str().unwrap().to_string(),
                arms.iter()
                    .map(|a| a.as_str().unwrap().to_string())
                    .collect(),
            )
        })
        .collect();
    assert_eq!(
        groups,
        vec![
            ("cifar10".to_string(), vec!["other".to_string()]),
            ("fashion-mnist".to_string(), vec!["a".into(), "b".into()]),
        ]
    );
    let a_vs_b = &json["comparisons"][1]["comparison"];
    assert_eq!(a_vs_b["arms"][0]["runs"].as_array().unwrap().len(), 2);
    for needle in [
        "<h3>fashion-mnist: a, b</h3>",
        "<h3>cifar10: other</h3>",
        "<h4><code>b</code> − <code>a</code></h4>",
        "<code>knn.k</code>",
        "Arms: mean and 95 % interval",
    ] {
        assert!(html.contains(needle), "{needle}");
    }
    // CIFAR-10's classes by name in its run's gallery and charts.
    assert!(html.contains("automobile"));
}

#[test]
fn errors_name_the_arm_the_dataset_or_the_file_with_exit_status_2() {
    let f = fixture();
    let fails = |args: &[&str], needle: &str| {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args(&args)
            .arg(format!("--store={}", f.store.display()))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
        assert!(text.contains(needle), "{args:?}: `{needle}` in {text}");
        assert!(!text.contains("panicked"), "{text}");
    };
    fails(&["compare", "nothing-here"], "nothing-here");
    fails(
        &["compare", "a", "branch"],
        "arm `branch` has one finished run",
    );
    fails(&["compare", "a", "b", "a"], "`a` and `a` are the same runs");
    fails(
        &["compare", "a", "other"],
        "arms on different datasets: `a` on fashion-mnist, `other` on cifar10",
    );
    let bad = f.out.join("bad.toml");
    std::fs::write(&bad, "[[expect]]\nrun = \"a\"\nmetric = \"accuracy\"\n").unwrap();
    fails(
        &["report", &format!("--check={}", bad.display())],
        &bad.display().to_string(),
    );
    let (success, _) = ipirm(&f.store, &["compare"], &["a".into()]);
    assert!(success);
}
