//! Every preset named after a reference script is that script: its command line (copied here as
//! data, flag by flag) read with the defaults of the script's argparse, mapped onto ipirm's
//! configuration, must be the preset's configuration, field by field.
//!
//! Fixed values inside the reference's functions (the maximize step's loader batch, Adam's
//! rate, milestones and epoch limits) are checked too: they differ between `auto_split_offline`
//! (main.py and main_mixup.py with `--offline`) and `auto_split_online_mixup` (`--mixup_max`
//! without `--offline`).

use std::collections::BTreeMap;

use ipirm::config::{Config, PRESETS};
use serde_json::{json, Value};

/// (preset, script, flags of the script's training command line).
const SCRIPTS: &[(&str, &str, &str)] = &[
    (
        "stl10-ipirm",
        "main.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset STL --epochs 400 --offline --keep_cont --retain_group",
    ),
    (
        "stl10-ipirm-mixup",
        "main_mixup.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset STL --epochs 400 --keep_cont --offline --retain_group \
         --ours_mixup_mode full --temperature 0.2",
    ),
    (
        "stl10-ipirm-mixup-1000",
        "main_mixup.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset STL --epochs 1000 --keep_cont --offline --retain_group \
         --ours_mixup_mode full --temperature 0.2",
    ),
    (
        "stl10-ipirm-mixup-set5",
        "main_mixup.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset STL --epochs 400 --keep_cont --offline --retain_group \
         --ours_mixup_mode full --temperature 0.2 --retain_group_set 5",
    ),
    (
        "stl10-baseline-mixup",
        "main_mixup.py",
        "--baseline --dataset STL --epochs 400",
    ),
    (
        "stl10-simclr",
        "main.py",
        "--baseline --dataset STL --epochs 400",
    ),
    (
        "cifar100-ipirm",
        "main.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.2 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset CIFAR100 --epochs 400 --offline --keep_cont --retain_group",
    ),
    (
        "cifar100-ipirm-mixup",
        "main_mixup.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset CIFAR100 --epochs 400 --keep_cont --retain_group \
         --ours_mixup_mode full --temperature 0.2 --mixup_max",
    ),
    (
        "cifar100-ipirm-mixup-set5",
        "main_mixup.py",
        "--penalty_weight 0.2 --irm_weight_maxim 0.5 --maximize_iter 50 --random_init --constrain \
         --constrain_relax --dataset CIFAR100 --epochs 400 --keep_cont --retain_group \
         --ours_mixup_mode full --temperature 0.2 --mixup_max --retain_group_set 5",
    ),
    (
        "cifar100-baseline-mixup",
        "main_mixup.py",
        "--baseline --dataset CIFAR100 --epochs 400",
    ),
    (
        "cifar100-simclr",
        "main.py",
        "--baseline --dataset CIFAR100 --epochs 400",
    ),
];

/// The argparse defaults both scripts share (main_mixup.py adds `retain_group_set` and `alpha`).
fn defaults(script: &str) -> BTreeMap<&'static str, Value> {
    let mut d: BTreeMap<&'static str, Value> = [
        ("feature_dim", json!(128)),
        ("temperature", json!(0.5)),
        ("tau_plus", json!(0.1)),
        ("k", json!(200)),
        ("batch_size", json!(256)),
        ("epochs", json!(200)),
        ("dataset", json!("STL")),
        ("penalty_weight", json!(1.0)),
        ("penalty_iters", json!(0)),
        ("increasing_weight", json!(false)),
        ("env_num", json!(2)),
        ("maximize_iter", json!(30)),
        ("irm_mode", json!("v1")),
        ("irm_weight_maxim", json!(1.0)),
        ("irm_temp", json!(0.5)),
        ("random_init", json!(false)),
        ("constrain", json!(false)),
        ("constrain_relax", json!(false)),
        ("retain_group", json!(false)),
        ("nonorm", json!(false)),
        ("offline", json!(false)),
        ("keep_cont", json!(false)),
        ("baseline", json!(false)),
    ]
    .into_iter()
    .collect();
    if script == "main_mixup.py" {
        d.insert("retain_group_set", json!(0));
        d.insert("alpha", json!(1.0));
        d.insert("mixup_max", json!(false));
        d.insert("ours_mixup_mode", Value::Null);
    }
    d
}

/// The script's arguments after parsing `flags`: `--name value`, or `--name` alone for a
/// store_true flag (a default of `false`).
fn parse(script: &str, flags: &str) -> BTreeMap<&'static str, Value> {
    let mut args = defaults(script);
    let mut words = flags.split_whitespace().peekable();
    while let Some(word) = words.next() {
        let name = word
            .strip_prefix("--")
            .unwrap_or_else(|| panic!("not a flag: {word}"));
        let (&key, default) = args
            .iter()
            .find(|(k, _)| **k == name)
            .unwrap_or_else(|| panic!("{script} has no flag --{name}"));
        let value = match default {
            Value::Bool(false) => json!(true),
            Value::Number(n) => {
                let v = words
                    .next()
                    .unwrap_or_else(|| panic!("--{name} needs a value"));
                if n.is_f64() {
                    json!(v.parse::<f64>().unwrap())
                } else {
                    json!(v.parse::<i64>().unwrap())
                }
            }
            _ => json!(words
                .next()
                .unwrap_or_else(|| panic!("--{name} needs a value"))),
        };
        args.insert(key, value);
    }
    args
}

/// The configuration fields the parsed script determines, as `section.field` → value.
fn expected(script: &str, a: &BTreeMap<&'static str, Value>) -> BTreeMap<String, Value> {
    let mut e = BTreeMap::new();
    let mut set = |k: &str, v: Value| {
        e.insert(k.to_string(), v);
    };
    let dataset = match a["dataset"].as_str().unwrap() {
        "STL" => "stl10",
        "CIFAR10" => "cifar10",
        "CIFAR100" => "cifar100",
        other => panic!("dataset {other}"),
    };
    let mixup = script == "main_mixup.py";
    let baseline = a["baseline"] == json!(true);
    set("data.dataset", json!(dataset));
    set("model.feature_dim", a["feature_dim"].clone());
    set(
        "train.method",
        json!(if baseline { "simclr" } else { "ipirm" }),
    );
    set("train.epochs", a["epochs"].clone());
    set("train.batch_size", a["batch_size"].clone());
    set("train.temperature", a["temperature"].clone());
    set("train.tau_plus", a["tau_plus"].clone());
    set("train.debiased", json!(false));
    set("train.mixup", json!(mixup));
    set("knn.k", a["k"].clone());
    if mixup {
        set("train.mixup_alpha", a["alpha"].clone());
        if !baseline {
            assert_eq!(
                a["ours_mixup_mode"],
                json!("full"),
                "only the full MixUp mode is built"
            );
        }
    }
    if baseline {
        return e;
    }
    set("ipirm.penalty_weight", a["penalty_weight"].clone());
    set("ipirm.penalty_iters", a["penalty_iters"].clone());
    set("ipirm.increasing_weight", a["increasing_weight"].clone());
    set("ipirm.keep_cont", a["keep_cont"].clone());
    set("ipirm.retain_group", a["retain_group"].clone());
    set(
        "ipirm.retain_group_set",
        a.get("retain_group_set").cloned().unwrap_or(json!(0)),
    );
    set("ipirm.maximize_iter", a["maximize_iter"].clone());
    set("maximize.irm_weight", a["irm_weight_maxim"].clone());
    set("maximize.irm_temp", a["irm_temp"].clone());
    set("maximize.irm_mode", a["irm_mode"].clone());
    set("maximize.env_num", a["env_num"].clone());
    set("maximize.random_init", a["random_init"].clone());
    set("maximize.constrain", a["constrain"].clone());
    set("maximize.constrain_relax", a["constrain_relax"].clone());
    set("maximize.nonorm", a["nonorm"].clone());
    set("maximize.offline", a["offline"].clone());
    let mixup_max = a.get("mixup_max") == Some(&json!(true));
    set("maximize.mixup", json!(mixup_max));
    // The contrastive temperature of the maximize step is the script's `temperature`.
    set("maximize.temperature", Value::Null);
    let offline = a["offline"] == json!(true);
    if !offline && mixup_max {
        // auto_split_online_mixup over main_mixup.py's update_loader (STL and CIFAR-100: 2048).
        assert_ne!(
            dataset, "cifar10",
            "main_mixup.py's CIFAR-10 update_loader batch is 3096"
        );
        set("maximize.batch_size", json!(2048));
        set("maximize.lr", json!(0.1));
        set("maximize.lr_milestones", json!([5, 25]));
        set("maximize.lr_gamma", json!(0.2));
        set("maximize.max_epoch", json!(30));
        set("maximize.patience_after", json!(25));
        set("maximize.patience", json!(5));
    } else {
        assert!(
            offline,
            "the plain online maximize step (auto_split) has no preset"
        );
        assert!(!mixup_max, "offline MixUp maximize has no preset");
        // auto_split_offline: its own loader of batch 3096, Adam 0.5, milestones 5 and 35.
        set("maximize.batch_size", json!(3096));
        set("maximize.lr", json!(0.5));
        set("maximize.lr_milestones", json!([5, 35]));
        set("maximize.lr_gamma", json!(0.2));
        set("maximize.max_epoch", json!(60));
        set("maximize.patience_after", json!(50));
        set("maximize.patience", json!(5));
    }
    e
}

fn field<'a>(config: &'a Value, path: &str) -> &'a Value {
    path.split('.').fold(config, |v, k| {
        v.get(k).unwrap_or_else(|| panic!("no config field {path}"))
    })
}

fn same(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

#[test]
fn every_script_preset_is_its_script() {
    let mut wrong = Vec::new();
    for (preset, script, flags) in SCRIPTS {
        let config = Config::preset(preset).unwrap_or_else(|e| panic!("{preset}: {e}"));
        let config = serde_json::to_value(&config).unwrap();
        let args = parse(script, flags);
        for (path, want) in expected(script, &args) {
            let got = field(&config, &path);
            if !same(got, &want) {
                wrong.push(format!("{preset}: {path} = {got}, {script} has {want}"));
            }
        }
        // The encoder and optimizer every script shares.
        for (path, want) in [
            ("model.arch", json!("resnet50")),
            ("model.bn_splits", json!(2)),
            ("train.lr", json!(1e-3)),
            ("train.weight_decay", json!(1e-6)),
        ] {
            let got = field(&config, path);
            if !same(got, &want) {
                wrong.push(format!(
                    "{preset}: {path} = {got}, the reference has {want}"
                ));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "presets differ from their scripts:\n{}",
        wrong.join("\n")
    );
}

#[test]
fn every_preset_of_a_reference_script_is_checked_and_every_preset_resolves() {
    for p in PRESETS {
        Config::preset(p.name).unwrap_or_else(|e| panic!("{}: {e}", p.name));
        let from_script = p.summary.starts_with("runsh/");
        let checked = SCRIPTS.iter().any(|(name, _, _)| *name == p.name);
        assert!(
            !from_script || checked,
            "{} names a reference script but tests/presets.rs does not check it",
            p.name
        );
    }
    for (name, _, _) in SCRIPTS {
        assert!(PRESETS.iter().any(|p| p.name == *name), "no preset {name}");
    }
}

#[test]
fn the_checker_catches_a_wrong_flag() {
    // The checker itself: a preset compared with a script it is not must be found wrong.
    let config = serde_json::to_value(Config::preset("stl10-ipirm").unwrap()).unwrap();
    let (_, script, flags) = SCRIPTS
        .iter()
        .find(|(n, _, _)| *n == "cifar100-ipirm")
        .unwrap();
    let differs: Vec<String> = expected(script, &parse(script, flags))
        .into_iter()
        .filter(|(path, want)| !same(field(&config, path), want))
        .map(|(path, _)| path)
        .collect();
    assert_eq!(differs, ["data.dataset", "maximize.irm_weight"]);
}
