//! Config: defaults equal to the paper's STL-10 run, presets, overrides, validation errors.
use ipirm::config::{Arch, Config, Method, PRESETS};

#[test]
fn defaults_are_the_papers_stl10_run() {
    let c = Config::default();
    c.validate().unwrap();
    assert_eq!(c.model.arch, Arch::Resnet50);
    assert_eq!(
        (c.train.batch_size, c.train.epochs, c.train.temperature),
        (256, 400, 0.5)
    );
    assert_eq!(
        (
            c.ipirm.penalty_weight,
            c.maximize.irm_weight,
            c.ipirm.maximize_iter
        ),
        (0.2, 0.5, 50)
    );
    assert!(
        c.ipirm.keep_cont && c.ipirm.retain_group && c.maximize.random_init && c.maximize.offline
    );
    assert!(c.maximize.constrain && c.maximize.constrain_relax);
    assert_eq!(
        (c.knn.k, c.linear.epochs, c.linear.batch_size),
        (200, 100, 512)
    );
}

#[test]
fn every_preset_builds() {
    for p in PRESETS {
        Config::preset(p.name).unwrap_or_else(|e| panic!("preset {}: {e}", p.name));
    }
    let q = Config::preset("fmnist-quick").unwrap();
    assert_eq!(q.model.arch, Arch::Resnet18);
    assert_eq!(q.train.method, Method::Simclr);
}

#[test]
fn overrides_parse_by_type() {
    let c = Config::default()
        .with_overrides(&[
            "train.epochs=3",
            "train.lr=0.01",
            "ipirm.keep_cont=false",
            "model.arch=resnet18",
            "maximize.temperature=0.2",
            "maximize.lr_milestones=[2,4]",
            "data.crop_scale=[0.25, 1]",
            "data.crop_size=28",
        ])
        .unwrap();
    assert_eq!(c.train.epochs, 3);
    assert_eq!(c.train.lr, 0.01);
    assert!(!c.ipirm.keep_cont);
    assert_eq!(c.model.arch, Arch::Resnet18);
    assert_eq!(c.maximize.temperature, Some(0.2));
    assert_eq!(c.maximize.lr_milestones, vec![2, 4]);
    assert_eq!(c.data.crop_scale, [0.25, 1.0]);
    assert_eq!(c.data.crop_size, 28);
    // round trip through TOML
    let back: Config = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
}

fn err(overrides: &[&str]) -> String {
    Config::default()
        .with_overrides(overrides)
        .unwrap_err()
        .to_string()
}

#[test]
fn bad_overrides_name_the_key_and_the_expectation() {
    let e = err(&["train.batch_size=-4"]);
    assert!(
        e.contains("train.batch_size") && e.contains("positive"),
        "{e}"
    );
    let e = err(&["train.bogus=1"]);
    assert!(
        e.contains("unknown key `bogus`") && e.contains("epochs"),
        "{e}"
    );
    let e = err(&["nosection.x=1"]);
    assert!(e.contains("unknown section"), "{e}");
    let e = err(&["train.epochs=many"]);
    assert!(e.contains("train.epochs") && e.contains("integer"), "{e}");
    let e = err(&["model.arch=vgg"]);
    assert!(e.contains("model.arch") && e.contains("vgg"), "{e}");
    let e = err(&["maximize.env_num=1"]);
    assert!(e.contains("maximize.env_num"), "{e}");
    let e = err(&["train.temperature=0"]);
    assert!(e.contains("train.temperature"), "{e}");
    let e = err(&["maximize.lr_milestones=[2.5,4]"]);
    assert!(
        e.contains("maximize.lr_milestones") && e.contains("list of integers"),
        "{e}"
    );
    let e = err(&["data.crop_scale=[0.2,x]"]);
    assert!(
        e.contains("data.crop_scale") && e.contains("list of numbers"),
        "{e}"
    );
    let e = err(&["data.crop_scale=[0.5,0.2]"]);
    assert!(
        e.contains("data.crop_scale") && e.contains("0 < lo ≤ hi ≤ 1"),
        "{e}"
    );
    let e = err(&["data.crop_size=7"]);
    assert!(e.contains("data.crop_size") && e.contains("8..=256"), "{e}");
    let e = err(&["noequals"]);
    assert!(e.contains("section.key=value"), "{e}");
    let e = Config::preset("nope").unwrap_err().to_string();
    assert!(e.contains("fmnist-quick"), "{e}");
}

#[test]
fn unknown_key_in_a_toml_file_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("run.toml");
    std::fs::write(&p, "[train]\nepochs = 2\nepochz = 3\n").unwrap();
    let e = Config::from_toml_file(&p).unwrap_err().to_string();
    assert!(e.contains("run.toml") && e.contains("epochz"), "{e}");
}

/// `data.antialias` is on by default, in a config and in a TOML file that leaves it out; a run
/// recorded before the setting existed (its config has no such key) reads back with it off, the
/// resize that run had.
#[test]
fn antialias_defaults_on_but_reads_off_in_a_run_recorded_before_it() {
    assert!(Config::default().data.antialias);
    let from_toml: Config = toml::from_str("[data]\ndataset = \"stl10\"\n").unwrap();
    assert!(from_toml.data.antialias);
    let off = Config::default()
        .with_overrides(&["data.antialias=off"])
        .unwrap();
    assert!(!off.data.antialias);

    let mut recorded = serde_json::to_value(Config::default()).unwrap();
    assert_eq!(recorded["data"]["antialias"], true);
    let with_it = Config::from_recorded_json(&recorded.to_string()).unwrap();
    assert_eq!(with_it, Config::default());
    recorded["data"]
        .as_object_mut()
        .unwrap()
        .remove("antialias");
    let before = Config::from_recorded_json(&recorded.to_string()).unwrap();
    assert!(!before.data.antialias);
    assert_eq!(before, off);
}
