//! Bounded, seeded fuzzing of every reader and of `ipirm maximize`'s input: random and mutated
//! files must give an error naming the file, never a panic, a hang, or an allocation beyond what
//! the files' sizes allow. A counting allocator measures the readers' peak heap use (libtorch's
//! own allocations are not counted: the readers' buffers are what a bad header could inflate).
use std::alloc::{GlobalAlloc, Layout, System};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use ipirm::data::{load, DatasetKind, Split};

mod common;
use common::pth;
use common::*;

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let p = unsafe { System.alloc(l) };
        if !p.is_null() {
            let now = CURRENT.fetch_add(l.size(), Ordering::Relaxed) + l.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        unsafe { System.dealloc(p, l) };
        CURRENT.fetch_sub(l.size(), Ordering::Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// The tests measure one call at a time.
static SERIAL: Mutex<()> = Mutex::new(());

/// A small deterministic generator (xorshift64*).
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// One mutation of `bytes`: truncation, flipped bytes, a random big-endian u32 over a header
/// field, garbage appended, all random, or nothing at all.
fn mutate(rng: &mut Rng, bytes: &[u8]) -> Vec<u8> {
    let mut b = bytes.to_vec();
    match rng.below(7) {
        0 => b.truncate(rng.below(b.len() + 1)),
        1 => {
            for _ in 0..1 + rng.below(8) {
                if !b.is_empty() {
                    let i = rng.below(b.len());
                    b[i] ^= 1 << rng.below(8);
                }
            }
        }
        2 => {
            // A header field (the first 24 bytes hold every format's header).
            let at = 4 * rng.below(6);
            let v = match rng.below(3) {
                0 => u32::MAX,
                1 => 0,
                _ => rng.next() as u32,
            };
            if b.len() >= at + 4 {
                b[at..at + 4].copy_from_slice(&v.to_be_bytes());
            }
        }
        3 => b.extend((0..1 + rng.below(3000)).map(|_| rng.next() as u8)),
        4 => b = (0..rng.below(4000)).map(|_| rng.next() as u8).collect(),
        5 => b.clear(),
        _ => {
            let i = rng.below(b.len() + 1);
            b.insert(i.min(b.len()), rng.next() as u8);
        }
    }
    b
}

/// Loads `split` of `kind` from `dir` with panics caught; checks time and peak heap against the
/// files' sizes (gzip'd ones may legitimately expand ~1000×).
fn load_checked(kind: DatasetKind, split: Split, dir: &Path, label: &str) -> Result<(), String> {
    let (mut raw, mut gz) = (0u64, 0u64);
    for e in walk(dir) {
        let len = std::fs::metadata(&e).map_or(0, |m| m.len());
        if e.extension().is_some_and(|x| x == "gz") {
            gz += len;
        } else {
            raw += len;
        }
    }
    let bound = 4 * raw + 2 * 1100 * gz + (8 << 20);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| load(kind, split, Some(dir))));
    let took = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        took < Duration::from_secs(10),
        "{label}: {took:?} on small files (a hang?)"
    );
    assert!(
        peak as u64 <= bound,
        "{label}: the reader allocated {peak} bytes for files of {raw} + {gz} (gz) bytes"
    );
    match r {
        Err(_) => panic!("{label}: the reader panicked"),
        Ok(Ok(ds)) => {
            assert!(
                !ds.is_empty(),
                "{label}: an empty dataset was returned instead of an error"
            );
            Ok(())
        }
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                !msg.is_empty() && msg.contains(dir.to_str().unwrap()),
                "{label}: the error does not name the file: {msg}"
            );
            Err(msg)
        }
    }
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A folder's files: (relative path, bytes).
type Files = Vec<(String, Vec<u8>)>;

/// Valid files of each format: (dataset, split, folder layout).
fn corpus() -> Vec<(DatasetKind, Split, Files)> {
    let fashion = |gz: bool| {
        let mut files = Vec::new();
        for (prefix, n) in [("train", 5usize), ("t10k", 3)] {
            let images = idx(&[n as u32, 28, 28], &expected_images(0, n, 1, 28));
            let labels = idx(&[n as u32], &(0..n as u8).collect::<Vec<_>>());
            for (stem, bytes) in [
                (format!("{prefix}-images-idx3-ubyte"), images),
                (format!("{prefix}-labels-idx1-ubyte"), labels),
            ] {
                if gz {
                    files.push((format!("{stem}.gz"), gzip(&bytes)));
                } else {
                    files.push((stem, bytes));
                }
            }
        }
        files
    };
    let stl = vec![
        ("stl10_binary/train_X.bin".to_string(), stl_images(0, 2)),
        ("stl10_binary/train_y.bin".to_string(), vec![1, 10]),
        ("stl10_binary/test_X.bin".to_string(), stl_images(5, 2)),
        ("stl10_binary/test_y.bin".to_string(), vec![3, 4]),
        ("stl10_binary/unlabeled_X.bin".to_string(), stl_images(9, 1)),
    ];
    let mut cifar10: Vec<(String, Vec<u8>)> = (1..=5)
        .map(|b| {
            (
                format!("cifar-10-batches-bin/data_batch_{b}.bin"),
                [cifar_record(b, &[b as u8]), cifar_record(b + 9, &[2])].concat(),
            )
        })
        .collect();
    cifar10.push((
        "cifar-10-batches-bin/test_batch.bin".into(),
        cifar_record(30, &[7]),
    ));
    let cifar100 = vec![
        (
            "cifar-100-binary/train.bin".to_string(),
            [cifar_record(1, &[3, 99]), cifar_record(2, &[0, 5])].concat(),
        ),
        (
            "cifar-100-binary/test.bin".to_string(),
            cifar_record(3, &[19, 42]),
        ),
    ];
    vec![
        (DatasetKind::FashionMnist, Split::Train, fashion(true)),
        (DatasetKind::FashionMnist, Split::Test, fashion(false)),
        (DatasetKind::Stl10, Split::TrainUnlabeled, stl.clone()),
        (DatasetKind::Stl10, Split::Test, stl),
        (DatasetKind::Cifar10, Split::Train, cifar10),
        (DatasetKind::Cifar100, Split::Train, cifar100),
    ]
}

#[test]
fn mutated_dataset_files_give_errors_never_panics() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let mut rng = Rng(0x1234_5678_9abc_def1);
    let mut errors = 0;
    for (kind, split, files) in corpus() {
        // The untouched files load.
        let dir = tempfile::tempdir().unwrap();
        for (rel, bytes) in &files {
            write(&dir.path().join(rel), bytes);
        }
        assert!(load_checked(
            kind,
            split,
            dir.path(),
            &format!("{kind} {split} unchanged")
        )
        .is_ok());
        for case in 0..60 {
            let dir = tempfile::tempdir().unwrap();
            let victim = rng.below(files.len());
            for (i, (rel, bytes)) in files.iter().enumerate() {
                let b = if i == victim {
                    mutate(&mut rng, bytes)
                } else {
                    bytes.clone()
                };
                write(&dir.path().join(rel), &b);
            }
            if load_checked(
                kind,
                split,
                dir.path(),
                &format!("{kind} {split} case {case} ({})", files[victim].0),
            )
            .is_err()
            {
                errors += 1;
            }
        }
    }
    assert!(
        errors > 100,
        "the mutations must reach the checks ({errors} of 360 refused)"
    );
}

/// A gzip'd IDX file whose header declares 5 images but whose stream inflates to 64 MiB: read no
/// further than the header allows.
#[test]
fn a_decompression_bomb_is_not_inflated() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let mut payload = idx(&[5, 28, 28], &[]);
    payload.resize(payload.len() + (64 << 20), 0);
    write(
        &dir.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&payload),
    );
    write(
        &dir.path().join("train-labels-idx1-ubyte.gz"),
        &gzip(&idx(&[5], &[0, 1, 2, 3, 4])),
    );
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let err = load(DatasetKind::FashionMnist, Split::Train, Some(dir.path()))
        .unwrap_err()
        .to_string();
    let peak = PEAK.load(Ordering::Relaxed) - base;
    assert!(
        err.contains("train-images-idx3-ubyte.gz") && err.contains("more data"),
        "{err}"
    );
    assert!(
        peak < 4 << 20,
        "read {peak} bytes of a 64 MiB stream declared as 5 images"
    );
    // A header declaring far more than the file can hold is refused before reading.
    write(
        &dir.path().join("train-images-idx3-ubyte.gz"),
        &gzip(&idx(&[4_000_000, 28, 28], &[0; 100])),
    );
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let err = load(DatasetKind::FashionMnist, Split::Train, Some(dir.path()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than a gzip file"), "{err}");
    assert!(PEAK.load(Ordering::Relaxed) - base < 1 << 20);
}

fn features_bytes(seed: i64) -> Vec<u8> {
    use tch::{Device, Kind, Tensor};
    tch::manual_seed(seed);
    let z = Tensor::randn([12, 4], (Kind::Float, Device::Cpu));
    let z = &z / z.norm_scalaropt_dim(2, [1], true);
    let init = Tensor::randn([12, 2], (Kind::Float, Device::Cpu));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("f.safetensors");
    Tensor::write_safetensors(
        &[("z1", &z), ("z2", &z.roll([1], [0])), ("init", &init)],
        &p,
    )
    .unwrap();
    std::fs::read(p).unwrap()
}

#[test]
fn mutated_maximize_inputs_give_errors_never_panics() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let cfg = ipirm::config::Config::default()
        .with_overrides(&["maximize.max_epoch=1", "maximize.batch_size=8"])
        .unwrap();
    let good = features_bytes(1);
    let mut rng = Rng(99);
    let dir = tempfile::tempdir().unwrap();
    let (input, output) = (
        dir.path().join("in.safetensors"),
        dir.path().join("out.safetensors"),
    );
    write(&input, &good);
    assert!(ipirm::pipeline::maximize_file(&input, &output, &cfg).is_ok());
    let mut refused = 0;
    for case in 0..120 {
        write(&input, &mutate(&mut rng, &good));
        let start = Instant::now();
        let r = catch_unwind(AssertUnwindSafe(|| {
            ipirm::pipeline::maximize_file(&input, &output, &cfg)
        }));
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "case {case}: a hang?"
        );
        match r {
            Err(_) => panic!("case {case}: ipirm maximize panicked"),
            Ok(Err(e)) => {
                refused += 1;
                assert!(
                    e.to_string().contains("in.safetensors") || e.to_string().contains("maximize"),
                    "case {case}: {e}"
                );
            }
            Ok(Ok(r)) => assert!(
                r.risks.iter().all(|x| x.total.is_finite()),
                "case {case}: a non-finite result was returned"
            ),
        }
    }
    assert!(refused > 60, "{refused}");
}

/// A few mutated inputs through the binary: exit status 2 and one `error:` line, no panic.
#[test]
fn the_binary_reports_mutated_inputs_with_exit_status_2() {
    let mut rng = Rng(7);
    let (kind, split, files) = corpus().swap_remove(0);
    assert_eq!((kind, split), (DatasetKind::FashionMnist, Split::Train));
    let mut checked = 0;
    while checked < 4 {
        let dir = tempfile::tempdir().unwrap();
        for (i, (rel, bytes)) in files.iter().enumerate() {
            let b = if i == 0 {
                mutate(&mut rng, bytes)
            } else {
                bytes.clone()
            };
            write(&dir.path().join(rel), &b);
        }
        if load(kind, split, Some(dir.path())).is_ok() {
            continue;
        }
        let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
            .args([
                "train",
                "--device=cpu",
                "--preset=fmnist-quick",
                "--data-dir",
            ])
            .arg(dir.path())
            .arg(format!("--store={}", dir.path().join("store").display()))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{err}");
        assert!(
            err.lines().filter(|l| l.starts_with("error:")).count() == 1
                && !err.contains("panicked"),
            "{err}"
        );
        checked += 1;
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.safetensors");
    write(&input, &mutate(&mut Rng(3), &features_bytes(2))[..100]);
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["maximize", "--features"])
        .arg(&input)
        .arg("--out")
        .arg(dir.path().join("o"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.code() == Some(2) && err.starts_with("error:") && err.contains("in.safetensors"),
        "{err}"
    );
}

/// `ipirm::model::checkpoint::read` of `path` with panics caught; checks time and peak heap
/// against the limits of the `.pth` reader: what an archive may inflate to (16× the file plus
/// 64 MiB) and what a pickle's values may take (64 MiB, counted as built; a growing stack or
/// list holds up to twice that while it is reallocated). libtorch's own allocations (the tensors
/// copied out of the read bytes) are not counted.
fn read_checkpoint_checked(path: &Path, label: &str) -> Result<usize, String> {
    let len = std::fs::metadata(path).unwrap().len();
    let bound = 16 * len + (64 << 20) + 3 * (64 << 20);
    let base = CURRENT.load(Ordering::Relaxed);
    PEAK.store(base, Ordering::Relaxed);
    let start = Instant::now();
    let r = catch_unwind(AssertUnwindSafe(|| ipirm::model::checkpoint::read(path)));
    let took = start.elapsed();
    let peak = PEAK.load(Ordering::Relaxed).saturating_sub(base);
    assert!(
        took < Duration::from_secs(10),
        "{label}: {took:?} (a hang?)"
    );
    assert!(
        peak as u64 <= bound,
        "{label}: the reader allocated {peak} bytes for a file of {len}"
    );
    match r {
        Err(_) => panic!("{label}: the reader panicked"),
        Ok(Ok((_, named))) => Ok(named.len()),
        Ok(Err(e)) => {
            let msg = e.to_string();
            assert!(
                msg.contains(path.to_str().unwrap()),
                "{label}: the error does not name the file: {msg}"
            );
            Err(msg)
        }
    }
}

/// A small `.pth` as `torch.save` writes it (three tensors, two of them views of one storage).
struct PthCorpus {
    pickle: Vec<u8>,
    /// (key, bytes).
    storages: Vec<(&'static str, Vec<u8>)>,
    /// The archive with stored entries, and with deflated ones.
    files: Vec<Vec<u8>>,
}

fn pth_corpus() -> PthCorpus {
    let view = |name, key, numel, offset, size, stride| pth::View {
        name,
        key,
        numel,
        offset,
        size,
        stride,
    };
    let pickle = pth::state_dict(&[
        view("a.weight", "0", 6, 0, &[2, 3], &[3, 1]),
        view("a.bias", "0", 6, 1, &[2, 2], &[3, 1]),
        view("b", "1", 3, 0, &[3], &[1]),
    ]);
    let storages = vec![
        ("0", pth::floats(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0])),
        ("1", pth::floats(&[0.5; 3])),
    ];
    let mut deflated = vec![pth::Entry::deflated("archive/data.pkl", &pickle)];
    deflated.extend(
        storages
            .iter()
            .map(|(k, b)| pth::Entry::deflated(&format!("archive/data/{k}"), b)),
    );
    let files = vec![pth::pth(&pickle, &storages), pth::zip(&deflated)];
    PthCorpus {
        pickle,
        storages,
        files,
    }
}

/// The pickle reader and the archive reader under random damage: the whole file mutated, or
/// only its pickle (re-zipped, so the damage reaches the pickle machine).
#[test]
fn mutated_checkpoints_give_errors_never_panics() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let PthCorpus {
        pickle,
        storages,
        files,
    } = pth_corpus();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.pth");
    for bytes in &files {
        write(&path, bytes);
        assert_eq!(read_checkpoint_checked(&path, "unchanged"), Ok(3));
    }
    let mut rng = Rng(0x7074_6866_7a7a);
    let mut refused = 0;
    for case in 0..600 {
        let bytes = if case % 2 == 0 {
            let file = &files[rng.below(files.len())];
            mutate(&mut rng, file)
        } else {
            pth::pth(&mutate(&mut rng, &pickle), &storages)
        };
        write(&path, &bytes);
        if read_checkpoint_checked(&path, &format!("case {case}")).is_err() {
            refused += 1;
        }
    }
    assert!(
        refused > 400,
        "the mutations must reach the checks ({refused} of 600 refused)"
    );
}

/// Pickles within the size limit built to exhaust the machine (issue 19, items 4 to 6) are
/// refused with the heap bounded, in the reader's own process.
#[test]
fn hostile_pickles_are_refused_with_bounded_memory() {
    let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let pickle = |body: &[u8]| [&b"\x80\x02"[..], body, b"."].concat();
    for (label, body, needle) in [
        (
            "NONE",
            vec![b'N'; 15 << 20],
            "more than 100000 values on the stack",
        ),
        (
            "APPEND",
            [&b"]"[..], &b"Na".repeat(6 << 20)].concat(),
            "values taking more than 64 MiB",
        ),
        (
            "nesting",
            [&b")"[..], &vec![0x85; 2_000_000]].concat(),
            "nested more than 1000 deep",
        ),
        (
            "MARK",
            vec![b'('; 4 << 20],
            "more than 100000 values on the stack",
        ),
    ] {
        let path = dir.path().join(format!("{label}.pth"));
        write(
            &path,
            &pth::zip(&[pth::Entry::deflated("archive/data.pkl", &pickle(&body))]),
        );
        let e = read_checkpoint_checked(&path, label).unwrap_err();
        assert!(e.contains(needle), "{label}: {e}");
    }
}
