//! Stage keys that a setting must not move where it changes nothing.
//!
//! `data.antialias` (issue 20: the training crops resized with antialiasing, as the reference's
//! PIL) changes a result only where a crop shrinks, i.e. on STL-10's 96×96 images. So the keys of
//! every stage of the CIFAR and Fashion-MNIST presets, and of an STL-10 run with the setting off,
//! are pinned below as the code computed them before the setting existed (commit ed99886, CPU
//! numerics): such runs are served from stores written before it. A config as those stores
//! recorded it (no `data.antialias` key, read by `Config::from_recorded_json`) gives the same
//! keys. The pins hash the crate version too (every key does): a version bump moves them all, and
//! they are then pinned anew.
use ipirm::config::Config;
use ipirm::pipeline::stages::{self, Plan, Planned, StageKind};
use sha2::{Digest, Sha256};
use tch::Device;

/// A stand-in for the dataset's content hash (an input of the dataset stage).
const DATA_SHA: &str = "0123456789abcdef";

/// Every stage key of a run of `cfg` (fitted to the CPU), by stage, in a fixed order: the
/// dataset, the training plan (checkpoints, curves, each maximize step's features and
/// partition), the raw-pixel and encoder kNN, the kNN monitor after every epoch, the probe and
/// the report.
fn run_keys(cfg: &Config) -> Vec<(StageKind, String)> {
    let cfg = ipirm::fit::fit(cfg, Device::Cpu, 1).unwrap().cfg;
    let stage = |kind, params: serde_json::Value, inputs: &[&str]| {
        let inputs = inputs.iter().map(|s| s.to_string()).collect();
        (kind, Planned::new(kind, &params, inputs).unwrap().key)
    };
    let mut keys = vec![stage(
        StageKind::Dataset,
        stages::dataset_params(&cfg),
        &[DATA_SHA],
    )];
    let data = keys[0].1.clone();
    let plan = Plan::new(&cfg, &data, None).unwrap();
    let last = plan.checkpoint(plan.epochs()).key.clone();
    for p in plan.checkpoints.iter().chain(&plan.curves) {
        keys.push((p.kind, p.key.clone()));
    }
    for p in &plan.partitions {
        for s in p.features.iter().chain([&p.partition]) {
            keys.push((s.kind, s.key.clone()));
        }
    }
    keys.push(stage(
        StageKind::PixelKnn,
        stages::knn_params(&cfg),
        &[&data],
    ));
    keys.push(stage(
        StageKind::Knn,
        stages::encoder_knn_params(&cfg),
        &[&last, &data],
    ));
    for e in 1..=plan.epochs() {
        let ck = plan.checkpoint(e).key.clone();
        keys.push(stage(
            StageKind::Monitor,
            stages::monitor_params(&cfg, e),
            &[&ck, &data],
        ));
    }
    keys.push(stage(
        StageKind::Linear,
        stages::linear_params(&cfg),
        &[&last, &data],
    ));
    keys.push(stage(
        StageKind::Report,
        stages::report_params(&cfg).unwrap(),
        &[&last, &data],
    ));
    keys
}

/// sha256 over the keys in order, hex: one short pin for a run's hundreds of keys.
fn digest(keys: &[(StageKind, String)]) -> String {
    let mut h = Sha256::new();
    for (_, k) in keys {
        h.update(k.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

fn preset(name: &str, overrides: &[&str]) -> Config {
    Config::preset(name)
        .unwrap()
        .with_overrides(overrides)
        .unwrap()
}

/// The Fashion-MNIST presets' crops set back to the reference's (they crop at 28 from a fifth of
/// the image since 2026-12-04): what their runs from before had.
const REFERENCE_CROPS: &[&str] = &["data.crop_size=32", "data.crop_scale=[0.08,1.0]"];

/// (preset, overrides, digest of [`run_keys`] as computed before `data.antialias` existed: the
/// STL-10 runs with it off).
/// The Fashion-MNIST presets with the reference's crops ([`REFERENCE_CROPS`]).
const PINNED: &[(&str, &[&str], &str)] = &[
    (
        "fmnist-quick",
        REFERENCE_CROPS,
        "92895c47e57ea9eb30938e8ab3abb856f46003eb25ff5b80316f2adf025e23da",
    ),
    (
        "fmnist-ipirm-quick",
        REFERENCE_CROPS,
        "8d4c52b77129343f4855359e92ef8b2fee2f12fa3558df0d52520206097fcb88",
    ),
    (
        "fmnist-ipirm-mixup-quick",
        REFERENCE_CROPS,
        "10b5e6446ae6e82fecf1fe3ce624394dae2e13526ca95f431686a5028c98a292",
    ),
    (
        "fmnist-ipirm-full",
        REFERENCE_CROPS,
        "6db615dd3fad5bf68996cca57f69b0ae30e0df2c3cd872c13ea6e330b57d6818",
    ),
    (
        "cifar100-ipirm",
        &[],
        "3ac4c357e73ad8052d281a20851417b80bfb4c51dbeff379a78f106c9bf8aa3c",
    ),
    (
        "cifar100-ipirm-mixup",
        &[],
        "4031b47e3e20b55c3ca73451eebd00f93f17828df8f70cdca7e7828e4ddbb8c9",
    ),
    (
        "cifar100-simclr",
        &[],
        "c4d6879526382170e88f048ca5e72bd4ca0621ca0180eab690f6f65dc74d7f7a",
    ),
    (
        "stl10-ipirm",
        &["data.antialias=false"],
        "98ddd2893bee9d41b9dac7ae3d1d6d7a6295e3f70fb7c1c8be30f1c34714c3bd",
    ),
    (
        "stl10-ipirm-mixup",
        &["maximize.offline=false", "data.antialias=false"],
        "360ca7f929b8746bf7f3b0d4a1e78792b11fa2319da5a8ab904e6f73e66d4ea4",
    ),
    (
        "stl10-simclr",
        &["data.antialias=false"],
        "f2517afda000de82a35e69075ce4ce9f13626cefd7344b8c98daec16e66a9a66",
    ),
];

#[test]
fn keys_of_runs_the_setting_does_not_change_are_those_from_before_it() {
    let mut wrong = Vec::new();
    for (name, overrides, want) in PINNED {
        let cfg = preset(name, overrides);
        let got = digest(&run_keys(&cfg));
        eprintln!("(\"{name}\", &{overrides:?}, \"{got}\"),");
        if got != *want {
            wrong.push(format!("{name} {overrides:?}: {got}, pinned {want}"));
        }
        // The same run as a store recorded it before the setting: no `data.antialias` at all.
        let mut recorded = serde_json::to_value(&cfg).unwrap();
        recorded["data"]
            .as_object_mut()
            .unwrap()
            .remove("antialias");
        let before = Config::from_recorded_json(&recorded.to_string()).unwrap();
        let got = digest(&run_keys(&before));
        if got != *want {
            wrong.push(format!("{name} as recorded before: {got}, pinned {want}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "stage keys moved (a crate version bump moves them all; else a setting entered keys it \
         does not change):\n{}",
        wrong.join("\n")
    );
}

/// On images no larger than the crop the setting changes nothing, so it enters no key; on
/// STL-10 it enters exactly the stages that draw training views, and the keys they feed.
/// The parameters of the stages that draw training views of `cfg` (the partition's from
/// `online`, a config with the online maximize step).
fn drawing_views(cfg: &Config, online: &Config) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("epoch", stages::epoch_params(cfg, 1, None)),
        ("features", stages::features_params(cfg, 0)),
        ("online partition", stages::partition_params(online, 0)),
        ("linear", stages::linear_params(cfg)),
    ]
}

/// The parameters of the stages that draw no training view.
fn not_drawing_views(cfg: &Config) -> Vec<(&'static str, serde_json::Value)> {
    vec![
        ("dataset", stages::dataset_params(cfg)),
        ("offline partition", stages::partition_params(cfg, 0)),
        ("knn", stages::encoder_knn_params(cfg)),
        ("monitor", stages::monitor_params(cfg, 1)),
        ("pixel knn", stages::knn_params(cfg)),
    ]
}

/// Between two configs that draw training views differently, every key moves but the dataset's,
/// the initial checkpoint's and the raw-pixel kNN's.
fn only_views_stages_move(a: &Config, b: &Config, what: &str) {
    let (keys_a, keys_b) = (run_keys(a), run_keys(b));
    assert_eq!(keys_a.len(), keys_b.len());
    let initial = &keys_b[1];
    assert_eq!(initial.0, StageKind::Checkpoint);
    for ((kind, x), (_, y)) in keys_a.iter().zip(&keys_b) {
        let stays = matches!(kind, StageKind::Dataset | StageKind::PixelKnn) || y == &initial.1;
        assert_eq!(x == y, stays, "{what}: {kind:?} {y}");
    }
}

#[test]
fn antialias_enters_only_the_stl10_stages_that_draw_training_views() {
    for name in [
        "fmnist-ipirm-quick",
        "cifar100-ipirm-mixup",
        "cifar100-simclr",
    ] {
        assert_eq!(
            run_keys(&preset(name, &["data.antialias=true"])),
            run_keys(&preset(name, &["data.antialias=false"])),
            "{name}"
        );
    }
    // The parameters: the minimize epochs, the offline step's features, the online step's
    // partition, the probe and the report read it; the kNN stages, the offline partition and the
    // dataset do not.
    let on = preset("stl10-ipirm", &[]);
    assert!(on.data.antialias, "on by default");
    let online = preset("stl10-ipirm", &["maximize.offline=false"]);
    for (what, p) in drawing_views(&on, &online) {
        assert_eq!(p["antialias"], true, "{what}: {p}");
    }
    assert_eq!(
        stages::report_params(&on).unwrap()["data"]["antialias"],
        true
    );
    for (what, p) in not_drawing_views(&on) {
        assert!(p.get("antialias").is_none(), "{what}: {p}");
    }
    // The keys: all but the dataset, the initial checkpoint and the raw-pixel kNN move.
    only_views_stages_move(
        &on,
        &preset("stl10-ipirm", &["data.antialias=false"]),
        "antialias",
    );
    // And a config says it, and reads it back.
    let off = preset("stl10-ipirm", &["data.antialias=false"]);
    assert!(off.to_toml().contains("antialias = false"));
    let back: Config = toml::from_str(&off.to_toml()).unwrap();
    assert_eq!(back, off);
}

/// `data.crop_size` and `data.crop_scale` enter the stages that draw training views (those
/// `data.antialias` enters) when they differ from the reference's 32 and [0.08, 1], and no stage
/// at the reference's values (the pins above hold the keys from before the settings).
#[test]
fn crop_settings_enter_the_stages_that_draw_training_views_unless_the_reference_s() {
    let reference = ["data.crop_size=32", "data.crop_scale=[0.08,1.0]"];
    for name in ["fmnist-ipirm-quick", "stl10-ipirm", "cifar100-ipirm-mixup"] {
        let base = preset(name, &reference);
        let every = drawing_views(&base, &base)
            .into_iter()
            .chain(not_drawing_views(&base));
        for (what, p) in every {
            assert!(
                p.get("crop_size").is_none() && p.get("crop_scale").is_none(),
                "{what}: {p}"
            );
        }
        assert!(stages::report_params(&base).unwrap()["data"]
            .get("crop_size")
            .is_none());
    }
    for set in ["data.crop_size=28", "data.crop_scale=[0.2,1.0]"] {
        let on = preset("stl10-ipirm", &[set]);
        let online = preset("stl10-ipirm", &[set, "maximize.offline=false"]);
        for (what, p) in drawing_views(&on, &online) {
            assert_eq!(
                p["crop_size"],
                serde_json::json!(on.data.crop_size),
                "{set} {what}: {p}"
            );
            assert_eq!(
                p["crop_scale"],
                serde_json::json!(on.data.crop_scale),
                "{set} {what}: {p}"
            );
        }
        assert_eq!(
            stages::report_params(&on).unwrap()["data"]["crop_scale"],
            serde_json::json!(on.data.crop_scale)
        );
        for (what, p) in not_drawing_views(&on) {
            assert!(p.get("crop_size").is_none(), "{set} {what}: {p}");
        }
        // The keys: all but the dataset, the initial checkpoint and the raw-pixel kNN move.
        only_views_stages_move(&on, &preset("stl10-ipirm", &reference), set);
    }
}
