//! `ipirm maximize --features IN --out OUT`: one offline maximize step on given features, and
//! clear errors for bad input files.
use std::path::Path;
use std::process::Command;

use tch::{Device, Kind, Tensor};

fn maximize(dir: &Path, input: &Path, extra: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["maximize", "--features"])
        .arg(input)
        .arg("--out")
        .arg(dir.join("out.safetensors"))
        .args(extra)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout),
    )
}

fn normalised(n: i64, d: i64) -> Tensor {
    let z = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    &z / z.norm_scalaropt_dim(2, [1], true)
}

fn write(path: &Path, tensors: &[(&str, &Tensor)]) {
    Tensor::write_safetensors(tensors, path).unwrap();
}

#[test]
fn writes_the_best_partition_and_the_risk_per_epoch() {
    let dir = tempfile::tempdir().unwrap();
    tch::manual_seed(0);
    let (z1, z2) = (normalised(40, 8), normalised(40, 8));
    let input = dir.path().join("in.safetensors");
    write(&input, &[("z1", &z1), ("z2", &z2)]);
    let (ok, text) = maximize(
        dir.path(),
        &input,
        &[
            "--set",
            "maximize.max_epoch=4",
            "--set",
            "maximize.env_num=3",
            "--set",
            "maximize.seed=5",
        ],
    );
    assert!(ok, "{text}");
    let out: std::collections::HashMap<String, Tensor> =
        Tensor::read_safetensors(dir.path().join("out.safetensors"))
            .unwrap()
            .into_iter()
            .collect();
    assert_eq!(out["partition"].size(), [40, 3]);
    assert_eq!(out["risk"].size(), [5, 4], "epochs 0..=4, four columns");
    assert!(text.contains("environment sizes"), "{text}");

    // With `init`, the step starts from it: a deterministic function of the inputs.
    let init = Tensor::randn([40, 3], (Kind::Float, Device::Cpu));
    write(&input, &[("z1", &z1), ("z2", &z2), ("init", &init)]);
    let args = [
        "--set",
        "maximize.max_epoch=2",
        "--set",
        "maximize.env_num=3",
    ];
    let run = || -> std::collections::HashMap<String, Tensor> {
        assert!(maximize(dir.path(), &input, &args).0);
        Tensor::read_safetensors(dir.path().join("out.safetensors"))
            .unwrap()
            .into_iter()
            .collect()
    };
    let (a, b) = (run(), run());
    assert!(a["partition"].equal(&b["partition"]) && a["risk"].equal(&b["risk"]));
}

#[test]
fn bad_feature_files_are_refused_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    let z = normalised(10, 4);
    type Case<'a> = (Vec<(&'a str, Tensor)>, &'a [&'a str]);
    let cases: Vec<Case> = vec![
        (vec![("z1", z.shallow_clone())], &["z2"]),
        (
            vec![("z1", z.shallow_clone()), ("z2", z.to_kind(Kind::Double))],
            &["z2", "float32"],
        ),
        (
            vec![("z1", z.shallow_clone()), ("z2", normalised(9, 4))],
            &["same shape"],
        ),
        (
            vec![("z1", z.shallow_clone()), ("z2", z.view([10, 2, 2]))],
            &["2 dimensions"],
        ),
        (
            vec![
                ("z1", z.shallow_clone()),
                ("z2", z.copy().fill_diagonal_(f64::NAN, false)),
            ],
            &["NaN"],
        ),
        (
            vec![
                ("z1", normalised(10, 4)),
                ("z2", normalised(10, 4)),
                ("init", Tensor::zeros([10, 5], (Kind::Float, Device::Cpu))),
            ],
            &["init", "[10, 2]"],
        ),
    ];
    for (tensors, needles) in cases {
        let refs: Vec<(&str, &Tensor)> = tensors.iter().map(|(n, t)| (*n, t)).collect();
        write(&input, &refs);
        let (ok, text) = maximize(dir.path(), &input, &[]);
        assert!(!ok, "should fail: {text}");
        assert!(
            text.contains("in.safetensors") && !text.contains("panicked"),
            "{text}"
        );
        for n in needles {
            assert!(text.contains(n), "`{n}` missing: {text}");
        }
    }
    std::fs::write(&input, b"not a safetensors file").unwrap();
    let (ok, text) = maximize(dir.path(), &input, &[]);
    assert!(
        !ok && text.contains("in.safetensors") && text.contains("safetensors"),
        "{text}"
    );
    let (ok, text) = maximize(dir.path(), &dir.path().join("missing.safetensors"), &[]);
    assert!(!ok && text.contains("missing.safetensors"), "{text}");
}
