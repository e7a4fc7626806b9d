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
use common::pth;

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
    let (code, text) = try_import(pth, out);
    assert_eq!(code, 0, "{text}");
    text
}

/// `ipirm checkpoint import PTH --out OUT`: (exit code, output).
fn try_import(pth: &Path, out: &Path) -> (i32, String) {
    let (pth, out) = (pth.to_str().unwrap(), out.to_str().unwrap());
    ipirm(&["checkpoint", "import", pth, "--out", out])
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
    // The paper's model (the default config): ResNet-50, 128-d head, fitted to the CPU as
    // every command fits its config.
    let cfg = ipirm::fit::fit(&Config::default(), Device::Cpu, 1)
        .unwrap()
        .cfg;
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
    let cfg = ipirm::fit::fit(&Config::default(), Device::Cpu, 1)
        .unwrap()
        .cfg;
    let loaded = ipirm::pipeline::load_model(&cfg, Device::Cpu, &out).unwrap();
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

/// `--out` naming the file imported (by any spelling, or a hard link to it) is refused before
/// anything is written:
/// the import would have replaced the `.pth` by its conversion.
#[test]
fn an_out_that_is_the_imported_file_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let pth = tmp.path().join("model.pth");
    std::fs::copy(fixtures().join("model.pth"), &pth).unwrap();
    let before = std::fs::read(&pth).unwrap();
    let dir_name = tmp.path().file_name().unwrap().to_str().unwrap();
    let other_spelling = tmp.path().join("..").join(dir_name).join("model.pth");
    // A hard link is the same file under another name (it was overwritten through one).
    let hard_link = tmp.path().join("model.safetensors");
    std::fs::hard_link(&pth, &hard_link).unwrap();
    for out in [&pth, &other_spelling, &hard_link] {
        let (code, text) = try_import(&pth, out);
        assert!(
            code == 2 && text.contains("--out") && text.contains("overwrite the input"),
            "{text}"
        );
    }
    assert!(
        std::fs::read(&pth).unwrap() == before,
        "the .pth was changed"
    );
}

#[test]
fn a_reference_checkpoint_evaluates_with_eval_knn() {
    let dir = fixtures();
    let data = tempfile::tempdir().unwrap();
    common::stl_folder(data.path(), 10, 4, 2);
    let d = data.path().to_str().unwrap();
    let eval = |k: &str| {
        ipirm(&[
            "eval",
            "knn",
            "--device=cpu",
            "--preset=stl10-ipirm",
            "--data-dir",
            d,
            &format!("--set=knn.k={k}"),
            "--checkpoint",
            dir.join("model.pth").to_str().unwrap(),
        ])
    };
    let (code, text) = eval("3");
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("kNN (k=3): top-1"), "{text}");
    // A k beyond the memory bank (its 10 labelled images) is the bank's size, and says so.
    let (code, text) = eval("1000");
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("using k = 10") && text.contains("kNN (k=10): top-1"),
        "{text}"
    );
}

/// `eval` without `--preset` or `--config` reads the `config.toml` beside the checkpoint (as
/// `ipirm run` leaves them in its output folder); a preset given still wins.
#[test]
fn eval_reads_the_config_beside_the_checkpoint() {
    let data = tempfile::tempdir().unwrap();
    common::stl_folder(data.path(), 10, 4, 2);
    let d = data.path().to_str().unwrap();
    let run = tempfile::tempdir().unwrap();
    let model = run.path().join("model.pth");
    std::fs::copy(fixtures().join("model.pth"), &model).unwrap();
    let model = model.to_str().unwrap();
    let (code, toml) = ipirm(&[
        "config",
        "--preset=stl10-ipirm",
        "--data-dir",
        d,
        "--set=knn.k=3",
    ]);
    assert_eq!(code, 0, "{toml}");
    let (code, text) = ipirm(&["eval", "knn", "--device=cpu", "--checkpoint", model]);
    // Without the config beside it: the default config, which names no --data-dir.
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("--data-dir"), "{text}");
    std::fs::write(run.path().join("config.toml"), toml).unwrap();
    let (code, text) = ipirm(&["eval", "knn", "--device=cpu", "--checkpoint", model]);
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("kNN (k=3): top-1"), "{text}");
    assert!(
        text.contains("config.toml (beside the checkpoint"),
        "{text}"
    );
    let given = ["--preset=stl10-ipirm", "--data-dir", d, "--set=knn.k=5"];
    let (code, text) = ipirm(
        &[
            &["eval", "knn", "--device=cpu", "--checkpoint", model],
            &given[..],
        ]
        .concat(),
    );
    assert_eq!(code, 0, "{text}");
    assert!(text.contains("kNN (k=5): top-1"), "{text}");
    assert!(!text.contains("beside the checkpoint"), "{text}");
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
    // A variance below zero, and a weight of booleans (both imported, and eval then said
    // training had diverged).
    let model = |name: &str, tensor: &str, change: &dyn Fn(&Tensor) -> Tensor| {
        let mut named = ipirm::model::checkpoint::read(&dir.join("model.pth"))
            .unwrap()
            .1;
        let t = &mut named.iter_mut().find(|(n, _)| n == tensor).unwrap().1;
        *t = change(t);
        let path = tmp.path().join(name);
        Tensor::write_safetensors(&named, &path).unwrap();
        path
    };
    let negative_var = model("negative_var.safetensors", "f.1.running_var", &|t| {
        t.fill(-1.0)
    });
    let bool_weight = model("bool_weight.safetensors", "g.3.weight", &|t| t.gt(0.0));
    // linear.py's checkpoints with a classifier that is not one nn.Linear: a bias of another
    // length, an integer bias, a tensor beside fc.weight and fc.bias (eval panicked in libtorch
    // on the first two; import took all three).
    let linear = ipirm::model::checkpoint::read(&dir.join("linear.pth"))
        .unwrap()
        .1;
    type Named = Vec<(String, Tensor)>;
    let classifier = |name: &str, change: &dyn Fn(&mut Named)| {
        let mut named: Named = (linear.iter())
            .map(|(n, t)| (n.clone(), t.shallow_clone()))
            .collect();
        change(&mut named);
        let path = tmp.path().join(name);
        Tensor::write_safetensors(&named, &path).unwrap();
        path
    };
    let set_bias = |t: Tensor| {
        move |named: &mut Named| {
            named.iter_mut().find(|(n, _)| n == "fc.bias").unwrap().1 = t.shallow_clone()
        }
    };
    let short_bias = classifier(
        "short_bias.safetensors",
        &set_bias(Tensor::zeros([5], (tch::Kind::Float, Device::Cpu))),
    );
    let int_bias = classifier(
        "int_bias.safetensors",
        &set_bias(Tensor::zeros([10], (tch::Kind::Int64, Device::Cpu))),
    );
    let extra = classifier("extra_fc.safetensors", &|named| {
        named.push((
            "fc.extra".into(),
            Tensor::zeros([3], (tch::Kind::Float, Device::Cpu)),
        ))
    });
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
            negative_var,
            vec!["negative_var.safetensors", "`f.1.running_var`", "-1"],
        ),
        (
            bool_weight,
            vec![
                "bool_weight.safetensors",
                "`g.3.weight` of kind Float",
                "Bool",
            ],
        ),
        (
            short_bias.clone(),
            vec!["short_bias.safetensors", "fc.bias [5] Float"],
        ),
        (int_bias, vec!["int_bias.safetensors", "fc.bias [10] Int64"]),
        (
            extra,
            vec![
                "extra_fc.safetensors",
                "fc.extra",
                "exactly `fc.weight` and `fc.bias`",
            ],
        ),
        (
            shape,
            vec![
                "shape.safetensors",
                "`g.3.weight` of shape [128, 512]",
                "[64, 512]",
                "the one it was trained with",
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
    // eval takes the same files and gives the same error; linear.epochs=0 on a checkpoint
    // without a classifier (it scored an untrained one) is refused.
    let model = dir.join("model.pth");
    for (what, file, needles) in [
        ("knn", &garbage, &["garbage.pth"][..]),
        ("linear", &short_bias, &["fc.bias [5]"]),
        ("linear", &model, &["linear.epochs", "has none"]),
    ] {
        let file = file.to_str().unwrap();
        let args = [
            "eval",
            what,
            "--device=cpu",
            "--set=linear.epochs=0",
            "--checkpoint",
            file,
        ];
        let (code, text) = ipirm(&args);
        assert!(code == 2, "{what} {file}: {text}");
        for n in needles {
            assert!(text.contains(n), "`{n}` missing from: {text}");
        }
    }
}

/// What a measured run of the binary gave: its exit status, its output, its peak resident
/// memory in bytes and how long it took.
struct Measured {
    code: i32,
    text: String,
    peak: u64,
    took: std::time::Duration,
}

/// The address space a measured run may take: a guard, so that a reader that regresses fails on
/// an allocation instead of exhausting the machine (the binary needs under 4 GiB to start).
const GUARD: u64 = 4 << 30;

/// The process's peak resident memory so far (VmHWM), if it is still running. After exec it
/// counts the binary's own pages only (the getrusage figure would include the test process's
/// peak, which a forked child inherits).
fn peak_resident(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find_map(|l| l.strip_prefix("VmHWM:"))?;
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib << 10)
}

/// `ipirm ARGS` under the [`GUARD`], with its peak resident memory sampled every 2 ms until it
/// exits (the peak never decreases, so only growth in its last 2 ms could be missed).
fn ipirm_measured(args: &[&str]) -> Measured {
    use std::os::unix::process::{CommandExt, ExitStatusExt};
    let out = tempfile::tempdir().unwrap();
    let (stdout, stderr) = (out.path().join("stdout"), out.path().join("stderr"));
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_ipirm"));
    cmd.args(args)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .stderr(std::fs::File::create(&stderr).unwrap());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: GUARD,
                rlim_max: GUARD,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let start = std::time::Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut peak = 0;
    let status = loop {
        peak = peak.max(peak_resident(child.id()).unwrap_or(0));
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    };
    let took = start.elapsed();
    let code = status
        .code()
        .unwrap_or_else(|| 128 + status.signal().unwrap_or(0));
    let text =
        std::fs::read_to_string(&stderr).unwrap() + &std::fs::read_to_string(&stdout).unwrap();
    assert!(!text.contains("panicked"), "{text}");
    Measured {
        code,
        text,
        peak,
        took,
    }
}

/// The flags of a small model: the hostile files are refused before it matters which.
const SMALL_MODEL: [&str; 2] = ["--set=model.arch=resnet18", "--set=model.width=4"];

/// `ipirm checkpoint import FILE` of the small model, measured.
fn import_measured(file: &Path) -> Measured {
    let out = file.with_extension("imported");
    let m = ipirm_measured(
        &[
            &[
                "checkpoint",
                "import",
                file.to_str().unwrap(),
                "--out",
                out.to_str().unwrap(),
            ][..],
            &SMALL_MODEL,
        ]
        .concat(),
    );
    assert!(!out.exists(), "nothing is written for a bad checkpoint");
    m
}

/// The peak memory of the binary refusing a harmless, readable `.pth` (one tensor, not the
/// model's): what starting up and building the model take, measured once.
fn baseline_peak() -> u64 {
    static PEAK: OnceLock<u64> = OnceLock::new();
    *PEAK.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("harmless.pth");
        let views = [pth::View {
            name: "w",
            key: "0",
            numel: 4,
            offset: 0,
            size: &[4],
            stride: &[1],
        }];
        std::fs::write(
            &file,
            pth::pth(&pth::state_dict(&views), &[("0", pth::floats(&[1.0; 4]))]),
        )
        .unwrap();
        let m = import_measured(&file);
        assert!(
            m.code == 2 && m.text.contains("expected a tensor"),
            "{}",
            m.text
        );
        m.peak
    })
}

/// Each hostile file is one error naming the file and what was found, exit status 2, within a
/// few seconds and at most 256 MiB above what refusing a harmless file takes.
fn assert_refused(file: &Path, needles: &[&str]) -> Measured {
    let base = baseline_peak();
    let m = import_measured(file);
    let errors: Vec<&str> = m.text.lines().filter(|l| l.starts_with("error:")).collect();
    assert!(
        m.code == 2 && errors.len() == 1,
        "{} (exit {}):\n{}",
        file.display(),
        m.code,
        m.text
    );
    let name = file.file_name().unwrap().to_str().unwrap();
    for n in [name, "expected a PyTorch state_dict"]
        .iter()
        .chain(needles)
    {
        assert!(errors[0].contains(n), "`{n}` missing from: {}", errors[0]);
    }
    assert!(
        m.peak < base + (256 << 20),
        "{name}: peak memory {} MiB, {} MiB refusing a harmless file",
        m.peak >> 20,
        base >> 20
    );
    assert!(m.took.as_secs() < 10, "{name}: {:?}", m.took);
    eprintln!(
        "{name}: refused in {:?}, peak {} MiB (harmless file: {} MiB)",
        m.took,
        m.peak >> 20,
        base >> 20
    );
    m
}

/// A one-tensor state_dict of storage "0", `n` floats, whole.
fn vector_pickle(n: i64) -> Vec<u8> {
    pth::state_dict(&[pth::View {
        name: "w",
        key: "0",
        numel: n,
        offset: 0,
        size: &[n],
        stride: &[1],
    }])
}

/// Issue 19, items 4 and 7: entries are inflated no further than their declared size, which is
/// checked first (against the pickle's limit, the size the tensors claim and what the file's
/// size allows).
#[test]
fn decompression_bombs_are_refused_before_they_inflate() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, entries: Vec<pth::Entry>| {
        let file = dir.path().join(name);
        std::fs::write(&file, pth::zip(&entries)).unwrap();
        file
    };
    // A 1 MB file whose data.pkl inflates to 1 GiB of NONE opcodes.
    let none = write(
        "none_bomb.pth",
        vec![pth::Entry::bomb(
            "archive/data.pkl",
            b"\x80\x02",
            b'N',
            1024,
            b".",
        )],
    );
    assert!(std::fs::metadata(&none).unwrap().len() < 1 << 21);
    assert_refused(
        &none,
        &["archive/data.pkl of 1073741827 bytes, beyond the limit of 16777216"],
    );
    // A 4 MB file whose storage inflates to the 4 GiB its tensor claims.
    let storage = write(
        "storage_bomb.pth",
        vec![
            pth::Entry::stored("archive/data.pkl", &vector_pickle(1 << 30)),
            pth::Entry::bomb("archive/data/0", b"", 0, 4096, b""),
        ],
    );
    assert!(std::fs::metadata(&storage).unwrap().len() < 5 << 20);
    assert_refused(
        &storage,
        &[
            "storage archive/data/0 (of tensor `w`",
            "inflating to 4294967296 bytes, beyond what a file of",
        ],
    );
    // A storage declaring the 16 bytes its tensor needs whose stream inflates to 1 GiB.
    let mut lying = pth::Entry::bomb("archive/data/0", b"", 0, 1024, b"");
    lying.size = 16;
    let lying = write(
        "lying.pth",
        vec![
            pth::Entry::stored("archive/data.pkl", &vector_pickle(4)),
            lying,
        ],
    );
    assert_refused(
        &lying,
        &["archive/data/0", "inflating past its declared 16 bytes"],
    );
    // A storage that is not the size its tensor claims is refused before it is read.
    let short = write(
        "short.pth",
        vec![
            pth::Entry::stored("archive/data.pkl", &vector_pickle(1 << 28)),
            pth::Entry::stored("archive/data/0", &[0; 64]),
        ],
    );
    assert_refused(
        &short,
        &[
            "archive/data/0",
            "of 64 bytes where its tensors need 1073741824",
        ],
    );
}

/// Issue 19, items 4 to 6: the pickle machine's stack, nesting and memo copies are bounded.
#[test]
fn hostile_pickles_stop_at_their_limits() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, pickle: &[u8]| {
        let file = dir.path().join(name);
        std::fs::write(
            &file,
            pth::zip(&[pth::Entry::deflated("archive/data.pkl", pickle)]),
        )
        .unwrap();
        file
    };
    let pickle = |body: &[u8]| [&b"\x80\x02"[..], body, b"."].concat();
    // 16 MiB of NONE within the size limit: the stack stops it.
    let nones = write("nones.pth", &pickle(&vec![b'N'; (16 << 20) - 3]));
    assert_refused(
        &nones,
        &[
            "more than 100000 values on the stack",
            "in archive/data.pkl",
        ],
    );
    // Nested 2,000,000 deep (TUPLE1 around TUPLE1 ...).
    let deep = write(
        "deep.pth",
        &pickle(&[&b")"[..], &vec![0x85; 2_000_000]].concat()),
    );
    assert_refused(
        &deep,
        &[
            "containers nested more than 1000 deep",
            "in archive/data.pkl",
        ],
    );
    // The memo's billion laughs: memo 0 = (memo 0, memo 0), 39 times, 279 bytes.
    let laughs = pickle(&[&b")q\x00"[..], &b"h\x00h\x00\x86q\x00".repeat(39)].concat());
    let laughs = write("laughs.pth", &laughs);
    assert_refused(
        &laughs,
        &["memo references counted as copies", "in archive/data.pkl"],
    );
    // Calls outside the allow-list are refused by name.
    let system = pickle(&[&b"cos\nsystem\n("[..], &pth::text("touch pwned"), b"tR"].concat());
    let system = write("system.pth", &system);
    assert_refused(
        &system,
        &["a call to os.system, which a state_dict does not make"],
    );
    // eval --checkpoint reads through the same limits.
    let m = ipirm_measured(&[
        "eval",
        "knn",
        "--device=cpu",
        "--checkpoint",
        deep.to_str().unwrap(),
    ]);
    assert!(
        m.code == 2 && m.text.contains("deep.pth") && m.text.contains("nested more than 1000"),
        "{}",
        m.text
    );
}

/// An encrypted entry (ZipCrypto, or WinZip's AES with or without the encrypted flag) is an
/// error, never a panic of the zip reader.
#[test]
fn encrypted_entries_are_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let pickle = vector_pickle(4);
    // WinZip's AES record: AE-2, vendor "AE", AES-256, then the real method (stored).
    let aes = b"\x01\x99\x07\x00\x02\x00AE\x03\x00\x00".to_vec();
    for (name, flags, method, extra) in [
        ("zipcrypto.pth", 1, 0, vec![]),
        ("aes.pth", 1, 99, aes.clone()),
        ("aes_unflagged.pth", 0, 99, aes),
    ] {
        let entry = pth::Entry {
            flags,
            method,
            extra,
            ..pth::Entry::stored("archive/data.pkl", &pickle)
        };
        let file = dir.path().join(name);
        std::fs::write(
            &file,
            pth::zip(&[
                entry,
                pth::Entry::stored("archive/data/0", &pth::floats(&[0.0; 4])),
            ]),
        )
        .unwrap();
        assert_refused(&file, &["archive/data.pkl encrypted (password-protected)"]);
    }
}

/// Views that reach past their storage, overflow or repeat it beyond what the file allows name
/// the file and the tensor (libtorch would refuse them without either, or allocate them).
#[test]
fn views_outside_their_storage_name_the_file_and_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    for (name, offset, size, stride, needle) in [
        (
            "past.pth",
            2,
            &[2, 2][..],
            &[2, 1][..],
            "a view reaching past its storage of 4 elements",
        ),
        (
            "overflow.pth",
            i64::MAX - 1,
            &[2][..],
            &[1][..],
            "a view reaching past its storage",
        ),
        (
            "stride.pth",
            0,
            &[3, 2][..],
            &[i64::MAX / 2 + 1, 1][..],
            "a view reaching past its storage",
        ),
        (
            "negative.pth",
            -4,
            &[1][..],
            &[1][..],
            "a negative size, stride or offset",
        ),
        (
            "repeat.pth",
            0,
            &[1 << 20, 1 << 20][..],
            &[0, 0][..],
            "taking 4398046511104 bytes",
        ),
    ] {
        let views = [pth::View {
            name: "w",
            key: "0",
            numel: 4,
            offset,
            size,
            stride,
        }];
        let file = dir.path().join(name);
        std::fs::write(
            &file,
            pth::pth(&pth::state_dict(&views), &[("0", pth::floats(&[1.0; 4]))]),
        )
        .unwrap();
        assert_refused(&file, &["tensor `w`", needle]);
    }
    // A second tensor claiming the same storage to be longer than the first one did.
    let view = |name, numel| pth::View {
        name,
        key: "0",
        numel,
        offset: 0,
        size: &[1 << 20],
        stride: &[0],
    };
    let file = dir.path().join("reclaimed.pth");
    let pickle = pth::state_dict(&[view("v", 4), view("w", 1 << 20)]);
    std::fs::write(&file, pth::pth(&pickle, &[("0", pth::floats(&[1.0; 4]))])).unwrap();
    assert_refused(
        &file,
        &["tensor `w` claiming storage 0 as 1048576 elements of Float, where an earlier tensor claimed 4"],
    );
}

/// A legacy (non-zip) torch.save file says what it is and how to convert it; a checkpoint
/// holding NaN says so at import, naming the tensor (not the learning rate at evaluation).
#[test]
fn legacy_and_non_finite_checkpoints_say_what_is_wrong() {
    let dir = fixtures();
    let (code, text) = ipirm(&[
        "checkpoint",
        "import",
        dir.join("legacy.pth").to_str().unwrap(),
        "--out",
        dir.join("legacy.safetensors").to_str().unwrap(),
    ]);
    assert_eq!(code, 2, "{text}");
    for n in [
        "legacy.pth",
        "the legacy format",
        "_use_new_zipfile_serialization=False",
        "torch.save(torch.load(",
    ] {
        assert!(text.contains(n), "`{n}` missing from: {text}");
    }
    let tmp = tempfile::tempdir().unwrap();
    let nan_pth = tmp.path().join("nan.pth");
    let views = [
        pth::View {
            name: "module.f.0.weight",
            key: "0",
            numel: 4,
            offset: 0,
            size: &[4],
            stride: &[1],
        },
        pth::View {
            name: "module.g.0.weight",
            key: "1",
            numel: 4,
            offset: 0,
            size: &[2, 2],
            stride: &[2, 1],
        },
    ];
    let storages = [
        ("0", pth::floats(&[1.0; 4])),
        ("1", pth::floats(&[1.0, f32::NAN, 2.0, f32::INFINITY])),
    ];
    std::fs::write(&nan_pth, pth::pth(&pth::state_dict(&views), &storages)).unwrap();
    let nan_st = tmp.path().join("nan.safetensors");
    let t = Tensor::from_slice(&[0.5f32, f32::NAN]);
    Tensor::write_safetensors(&[("f.0.weight", &t)], &nan_st).unwrap();
    for (file, tensor) in [
        (&nan_pth, "`module.g.0.weight` (2 of 4)"),
        (&nan_st, "`f.0.weight` (1 of 2)"),
    ] {
        let name = file.to_str().unwrap();
        for args in [
            &[
                "checkpoint",
                "import",
                name,
                "--out",
                tmp.path().join("o").to_str().unwrap(),
            ][..],
            &["eval", "knn", "--device=cpu", "--checkpoint", name],
        ] {
            let (code, text) = ipirm(args);
            assert_eq!(code, 2, "{text}");
            for n in [
                name,
                "expected finite weights",
                "NaN or infinite values in",
                tensor,
            ] {
                assert!(text.contains(n), "`{n}` missing from: {text}");
            }
            assert!(!text.contains("learning rate"), "{text}");
        }
    }
}
