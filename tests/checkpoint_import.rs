//! The reference's checkpoints (`torch.save(nn.DataParallel(Model).state_dict())`, and
//! `linear.py`'s encoder + classifier) read here give the same features, projections and
//! logits as PyTorch on the same input, through `ipirm checkpoint import` and directly through
//! `ipirm eval`; a checkpoint missing a tensor, of the wrong shape, or not a checkpoint at all is
//! one clear error.
//!
//! The checkpoints are made at test time by tests/fixtures/gen_checkpoint.py with the venv's
//! PyTorch, from an architecture checked name by name and shape by shape against the
//! reference's own `Model` and `Net` (tests/fixtures/reference_checkpoint_keys.json, written by
//! the same script from a reference checkout).
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use ipirm::config::Config;
use tch::{nn, Device, Tensor};

mod common;

/// The venv's Python (scripts/env.sh sets IPIRM_PY).
fn python() -> PathBuf {
    std::env::var_os("IPIRM_PY")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python"))
}

/// The folder of checkpoints the script writes, made once per test binary.
fn fixtures() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gen_checkpoint.py");
        let out = Command::new(python())
            .arg(script)
            .arg("--out")
            .arg(&dir)
            .output()
            .expect("the venv's python runs");
        assert!(
            out.status.success(),
            "gen_checkpoint.py failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        dir
    })
}

fn ipirm(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(args)
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("panicked"), "{text}");
    (out.status.code().unwrap_or(-1), text)
}

/// What PyTorch computed on the fixture's input (gen script's `expected.safetensors`).
fn expected(dir: &Path) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(dir.join("expected.safetensors"))
        .unwrap()
        .into_iter()
        .collect()
}

/// `ipirm checkpoint import PTH --out OUT`, which must succeed; its output.
fn import(pth: &Path, out: &Path) -> String {
    let (code, text) = ipirm(&[
        "checkpoint",
        "import",
        pth.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    text
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

#[test]
fn an_imported_reference_checkpoint_computes_what_pytorch_computes() {
    let dir = fixtures();
    let expected = expected(dir);
    let out = dir.join("imported.safetensors");
    let text = import(&dir.join("model.pth"), &out);
    assert!(text.contains("imported 272 tensors"), "{text}");
    // The paper's model (the default config): ResNet-50, 128-d head.
    let cfg = Config::default();
    for file in [out.clone(), dir.join("model.pth")] {
        let loaded = ipirm::pipeline::load_model(&cfg, Device::Cpu, &file).unwrap();
        let model = &loaded.model;
        assert!(loaded.classifier.is_empty());
        let (f, z) = tch::no_grad(|| model.forward(&expected["x"], false));
        let (df, dz) = (
            max_diff(&f, &expected["feature"]),
            max_diff(&z, &expected["projection"]),
        );
        assert!(
            df < 1e-5 && dz < 1e-5,
            "{}: feature {df:e}, projection {dz:e}",
            file.display()
        );
    }
}

#[test]
fn a_linear_checkpoint_keeps_its_classifier() {
    let dir = fixtures();
    let expected = expected(dir);
    let out = dir.join("linear.safetensors");
    let text = import(&dir.join("linear.pth"), &out);
    assert!(text.contains("with the classifier"), "{text}");
    let loaded = ipirm::pipeline::load_model(&Config::default(), Device::Cpu, &out).unwrap();
    let (model, extra) = (&loaded.model, &loaded.classifier);
    let get = |n: &str| {
        extra
            .iter()
            .find(|(k, _)| k == n)
            .map(|(_, t)| t.shallow_clone())
            .unwrap()
    };
    let fc = nn::Linear {
        ws: get("fc.weight"),
        bs: Some(get("fc.bias")),
    };
    let logits = tch::no_grad(|| nn::Module::forward(&fc, &model.encode(&expected["x"], false)));
    let d = max_diff(&logits, &expected["logits"]);
    assert!(d < 1e-4, "logits differ by {d:e}");
}

#[test]
fn a_reference_checkpoint_evaluates_with_eval_knn() {
    let dir = fixtures();
    let data = tempfile::tempdir().unwrap();
    common::stl_folder(data.path(), 10, 4, 2);
    let d = data.path().to_str().unwrap();
    let (code, text) = ipirm(&[
        "eval",
        "knn",
        "--device=cpu",
        "--preset=stl10-ipirm",
        "--data-dir",
        d,
        "--set=knn.k=3",
        "--checkpoint",
        dir.join("model.pth").to_str().unwrap(),
    ]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("kNN (k=3): top-1"), "{text}");
}

#[test]
fn broken_checkpoints_are_one_clear_error() {
    let dir = fixtures();
    let tmp = tempfile::tempdir().unwrap();
    let garbage = tmp.path().join("garbage.pth");
    std::fs::write(
        &garbage,
        (0..5000u32)
            .map(|i| ((i * 2654435761u32) >> 13) as u8)
            .collect::<Vec<u8>>(),
    )
    .unwrap();
    // A zip whose pickle is not a state_dict.
    let truncated = tmp.path().join("truncated.pth");
    let bytes = std::fs::read(dir.join("model.pth")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // Our own format with one tensor of the wrong shape.
    let shape = tmp.path().join("shape.safetensors");
    let mut named = ipirm::model::checkpoint::read(&dir.join("model.pth"))
        .unwrap()
        .1;
    named.iter_mut().find(|(n, _)| n == "g.3.weight").unwrap().1 =
        Tensor::zeros([64, 512], (tch::Kind::Float, Device::Cpu));
    Tensor::write_safetensors(&named, &shape).unwrap();
    let out = tmp.path().join("out.safetensors");
    for (file, needles) in [
        (
            dir.join("missing.pth"),
            vec!["missing.pth", "`f.4.1.bn2.running_var`", "none"],
        ),
        (
            garbage.clone(),
            vec!["garbage.pth", "expected a checkpoint"],
        ),
        (truncated, vec!["truncated.pth", "zip"]),
        (
            shape,
            vec![
                "shape.safetensors",
                "`g.3.weight` of shape [128, 512]",
                "[64, 512]",
            ],
        ),
    ] {
        let (code, text) = ipirm(&[
            "checkpoint",
            "import",
            file.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
        ]);
        let errors: Vec<&str> = text.lines().filter(|l| l.starts_with("error:")).collect();
        assert!(
            code == 2 && errors.len() == 1,
            "{}:\n{text}",
            file.display()
        );
        for n in needles {
            assert!(errors[0].contains(n), "`{n}` missing from: {}", errors[0]);
        }
        assert!(!out.exists(), "nothing is written for a bad checkpoint");
    }
    // eval takes the same files and gives the same error.
    let (code, text) = ipirm(&[
        "eval",
        "knn",
        "--device=cpu",
        "--checkpoint",
        garbage.to_str().unwrap(),
    ]);
    assert!(code == 2 && text.contains("garbage.pth"), "{text}");
}
