//! The artifact store: round trips, stage keys, damage, crashes, gc, export/import, schema.
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

mod common;

use ipirm::store::{self, GcOptions, Stage, Store, StoreOptions, SCHEMA_VERSION};
use ipirm::tensor_file::Meta;
use ipirm::Error;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tch::{Device, Kind, Tensor};

/// Set in a child process started by `killed_writer_leaves_a_consistent_store`.
const CHILD_ROOT: &str = "IPIRM_STORE_TEST_WRITER_ROOT";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Metrics {
    top1: f64,
    per_class: Vec<f64>,
    notes: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize)]
struct Section {
    lr: f64,
    epochs: u32,
    name: String,
    nested: Nested,
    list: Vec<f64>,
    maybe: Option<f32>,
}

#[derive(Debug, Clone, Serialize)]
struct Nested {
    tau: f32,
    flag: bool,
}

/// The stage key of `params` (its canonical JSON).
fn key_of<C: serde::Serialize + ?Sized>(
    stage: &str,
    v: u32,
    params: &C,
    inputs: &[&str],
) -> String {
    store::stage_key(stage, v, &store::canonical_json(params).unwrap(), inputs)
}

fn section() -> Section {
    Section {
        lr: 0.5,
        epochs: 10,
        name: "stl10".into(),
        nested: Nested {
            tau: 0.2,
            flag: true,
        },
        list: vec![1.0, 2.0],
        maybe: None,
    }
}

fn fresh() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path().join("artifacts")).unwrap();
    (dir, store)
}

fn tensors() -> Vec<(String, Tensor)> {
    let x = Tensor::arange(24, (Kind::Float, Device::Cpu)).reshape([2, 3, 4]) / 7.0;
    let y = Tensor::from_slice(&[3i64, -1, 4, 1, 5]);
    // A non-contiguous view: the store makes it contiguous.
    let z = Tensor::arange(12, (Kind::Double, Device::Cpu))
        .reshape([3, 4])
        .transpose(0, 1);
    vec![("x".into(), x), ("labels".into(), y), ("zt".into(), z)]
}

fn named(t: &[(String, Tensor)]) -> Vec<(&str, &Tensor)> {
    t.iter().map(|(n, x)| (n.as_str(), x)).collect()
}

fn assert_same_tensors(a: &[(String, Tensor)], b: &[(String, Tensor)]) {
    let a: BTreeMap<&str, &Tensor> = a.iter().map(|(n, t)| (n.as_str(), t)).collect();
    let b: BTreeMap<&str, &Tensor> = b.iter().map(|(n, t)| (n.as_str(), t)).collect();
    assert_eq!(a.keys().collect::<Vec<_>>(), b.keys().collect::<Vec<_>>());
    for (n, t) in &a {
        let u = b[n];
        assert_eq!(t.size(), u.size(), "{n}");
        assert_eq!(t.kind(), u.kind(), "{n}");
        assert!(t.equal(u), "{n} differs");
    }
}

fn flip_a_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(path, bytes).unwrap();
}

/// Stores raw bytes as a blob of format `bytes`.
fn put_bytes(store: &Store, st: &Stage, bytes: &[u8]) -> String {
    store
        .put_blob(st, "bytes", |p| {
            std::fs::write(p, bytes).map_err(|e| Error::io(p, e))
        })
        .unwrap()
}

/// The bytes [`put_bytes`] stored under `key`, verified like any load.
fn get_bytes(store: &Store, key: &str) -> ipirm::Result<Option<Vec<u8>>> {
    Ok(store.get_blob(key)?.map(|p| std::fs::read(p).unwrap()))
}

fn sha256_hex(path: &Path) -> String {
    Sha256::digest(std::fs::read(path).unwrap())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[test]
fn tensors_and_records_round_trip_with_provenance() {
    let (_dir, store) = fresh();
    for d in ["index", "objects", "tmp"] {
        assert!(store.root().join(d).is_dir(), "{d}");
    }
    let run = store.start_run("smoke", &section()).unwrap();
    assert!(run.id.starts_with("smoke-"));

    let t = tensors();
    let st = Stage::new("features", 1, &section(), &[])
        .unwrap()
        .run(&run.id)
        .device("cpu (2 threads)", "2.11.0");
    assert_eq!(st.key(), key_of("features", 1, &section(), &[]));
    assert!(!store.contains(st.key()).unwrap());
    assert!(store.get_tensors(st.key()).unwrap().is_none());
    let digest = store.put_tensors(&st, &named(&t), &Meta::new()).unwrap();
    assert!(store.contains(st.key()).unwrap());
    assert_same_tensors(&t, &store.get_tensors(st.key()).unwrap().unwrap());
    let path = store.object_path(&digest);
    assert_eq!(sha256_hex(&path), digest);
    assert!(path.starts_with(store.root().join("objects").join(&digest[..2])));

    let m = Metrics {
        top1: 81.25,
        per_class: vec![0.1, f64::MIN_POSITIVE, -0.0],
        notes: [("k".to_string(), "v".to_string())].into(),
    };
    let rs = Stage::new("knn", 2, &section(), &[st.key()])
        .unwrap()
        .run(&run.id)
        .wall_seconds(1.5);
    store.put_record(&rs, &m).unwrap();
    assert!(store.contains(rs.key()).unwrap());
    assert_eq!(
        store.get_record::<Metrics>(rs.key()).unwrap(),
        Some(m.clone())
    );
    assert!(store
        .get_record::<Metrics>("no-such-key")
        .unwrap()
        .is_none());
    // Wrong kinds and types are refused with the key in the message.
    let e = store
        .get_record::<Metrics>(st.key())
        .unwrap_err()
        .to_string();
    assert!(e.contains(st.key()) && e.contains("blob"), "{e}");
    let e = store.get_tensors(rs.key()).unwrap_err().to_string();
    assert!(e.contains(rs.key()) && e.contains("record"), "{e}");
    let e = store
        .get_record::<Vec<String>>(rs.key())
        .unwrap_err()
        .to_string();
    assert!(e.contains(rs.key()) && e.contains("does not decode"), "{e}");

    // The same content under two keys: one blob, the same digest.
    let bytes: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
    let bs = Stage::new("raw", 1, &"bytes", &[]).unwrap();
    let d1 = put_bytes(&store, &bs, &bytes);
    assert_eq!(get_bytes(&store, bs.key()).unwrap().unwrap(), bytes);
    let again = Stage::new("raw", 1, &"again", &[]).unwrap();
    assert_eq!(
        put_bytes(&store, &again, &bytes),
        d1,
        "same bytes, same digest"
    );
    assert!(
        std::fs::read_dir(store.root().join("tmp"))
            .unwrap()
            .next()
            .is_none(),
        "no temp file left"
    );
    assert_eq!(
        store.get_meta(bs.key()).unwrap().unwrap().kind_name(),
        "bytes"
    );
    // A writer that fails stores nothing and leaves no temp file; its error names the stage.
    let failing = Stage::new("raw", 1, &"failing", &[]).unwrap();
    let e = store
        .put_blob(&failing, "bytes", |p| {
            std::fs::write(p, b"half").unwrap();
            Err(Error::Shape("the writer gave up".into()))
        })
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(failing.key()) && e.contains("the writer gave up"),
        "{e}"
    );
    assert!(!store.contains(failing.key()).unwrap());
    assert!(std::fs::read_dir(store.root().join("tmp"))
        .unwrap()
        .next()
        .is_none());
    // Header metadata is written sorted (same content, same digest) and read back alone.
    let meta = Meta::from([
        ("z".to_string(), "1".to_string()),
        ("a".to_string(), "2".to_string()),
        ("m".to_string(), "3".to_string()),
    ]);
    let ms = Stage::new("meta", 1, &0, &[]).unwrap();
    let dm = store.put_tensors(&ms, &named(&t), &meta).unwrap();
    assert_eq!(store.tensor_meta(ms.key()).unwrap().unwrap(), meta);
    assert_eq!(
        store
            .put_tensors(
                &Stage::new("meta", 1, &1, &[]).unwrap(),
                &named(&t),
                &meta.clone()
            )
            .unwrap(),
        dm
    );
    assert!(store.tensor_meta(st.key()).unwrap().unwrap().is_empty());

    let meta = store.get_meta(rs.key()).unwrap().unwrap();
    assert_eq!(meta.stage, "knn");
    assert_eq!(meta.stage_version, 2);
    assert_eq!(meta.inputs, vec![st.key().to_string()]);
    assert_eq!(meta.run.as_deref(), Some(run.id.as_str()));
    assert_eq!(meta.config_json, store::canonical_json(&section()).unwrap());
    assert_eq!(
        meta.config_json,
        r#"{"epochs":10,"list":[1.0,2.0],"lr":0.5,"maybe":null,"name":"stl10","nested":{"flag":true,"tau":0.20000000298023224}}"#
    );
    let p = &meta.provenance;
    assert_eq!(p.wall_seconds, 1.5);
    assert_eq!(p.crate_version, env!("CARGO_PKG_VERSION"));
    assert!(p.created > 1_600_000_000);
    assert!(!p.host.is_empty() && !p.git_commit.is_empty() && p.libtorch == "unspecified");
    let p = store.get_meta(st.key()).unwrap().unwrap().provenance;
    assert_eq!(
        (p.device.as_str(), p.libtorch.as_str()),
        ("cpu (2 threads)", "2.11.0")
    );

    // Puts with a run attach to it, in order; attach adds a reused key once, in the order given.
    store
        .attach(&run.id, &[bs.key(), st.key(), bs.key()])
        .unwrap();
    store.attach(&run.id, &[bs.key()]).unwrap();
    let r = store.get_run(&run.id).unwrap().unwrap();
    assert_eq!(
        r.artifacts,
        vec![
            st.key().to_string(),
            rs.key().to_string(),
            bs.key().to_string()
        ]
    );
    // Attaching what the run lists already writes nothing (each write of a run's meta file is a
    // new file renamed into place): a resumed long run re-attaches thousands of keys.
    let run_file = _dir.path().join("artifacts/meta/runs").join(&run.id);
    let inode = || std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(&run_file).unwrap());
    let before = inode();
    store.attach(&run.id, &[st.key(), bs.key()]).unwrap();
    store.attach(&run.id, &[]).unwrap();
    assert_eq!(inode(), before, "the run record was rewritten unchanged");
    assert!(!r.finished && !r.pinned);
    store.finish_run(&run.id).unwrap();
    store.pin(&run.id, true).unwrap();
    let r = store.get_run(&run.id).unwrap().unwrap();
    assert!(r.finished && r.pinned);
    let e = Stage::new("x", 1, &0, &[]).unwrap().run("no-such-run");
    let e = store.put_record(&e, &1u8).unwrap_err().to_string();
    assert!(e.contains("no-such-run"), "{e}");

    // Reopening sees everything.
    drop(store);
    let store = Store::open(_dir.path().join("artifacts")).unwrap();
    assert_same_tensors(&t, &store.get_tensors(st.key()).unwrap().unwrap());
    assert_eq!(store.get_record::<Metrics>(rs.key()).unwrap(), Some(m));
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn stage_key_changes_with_every_keyed_input_and_only_those() {
    let key = |s: &Section| key_of("features", 3, s, &["in-a", "in-b"]);
    let base = key(&section());
    assert_eq!(base.len(), 64);
    assert!(base.bytes().all(|b| b.is_ascii_hexdigit()));
    assert_eq!(base, key(&section()), "stable");
    assert_eq!(
        base,
        Stage::new("features", 3, &section(), &["in-a", "in-b"])
            .unwrap()
            .key()
    );
    // Provenance is not keyed on.
    assert_eq!(
        base,
        Stage::new("features", 3, &section(), &["in-a", "in-b"])
            .unwrap()
            .device("cuda:7", "2.0.0")
            .wall_seconds(3.0)
            .key()
    );

    let mut variants: Vec<(&str, String)> = Vec::new();
    let mut push = |what: &'static str, f: &dyn Fn(&mut Section)| {
        let mut s = section();
        f(&mut s);
        variants.push((what, key(&s)));
    };
    push("lr 0.5 -> 0.5000001", &|s| s.lr = 0.5000001);
    push("lr 0.5 -> next float", &|s| {
        s.lr = f64::from_bits(0.5f64.to_bits() + 1)
    });
    push("epochs", &|s| s.epochs = 11);
    push("name", &|s| s.name = "cifar10".into());
    push("nested float", &|s| s.nested.tau = 0.2000001);
    push("nested bool", &|s| s.nested.flag = false);
    push("list value", &|s| s.list[1] = 2.5);
    push("list order", &|s| s.list.reverse());
    push("list length", &|s| s.list.push(0.0));
    push("none -> some", &|s| s.maybe = Some(0.0));
    push("-0.0", &|s| s.list[0] = -0.0);
    push("NaN", &|s| s.lr = f64::NAN);
    variants.push((
        "stage version",
        key_of("features", 4, &section(), &["in-a", "in-b"]),
    ));
    variants.push((
        "stage name",
        key_of("feature", 3, &section(), &["in-a", "in-b"]),
    ));
    variants.push((
        "input key",
        key_of("features", 3, &section(), &["in-a", "in-c"]),
    ));
    variants.push((
        "input order",
        key_of("features", 3, &section(), &["in-b", "in-a"]),
    ));
    variants.push((
        "extra input",
        key_of("features", 3, &section(), &["in-a", "in-b", "in-c"]),
    ));
    variants.push(("fewer inputs", key_of("features", 3, &section(), &["in-a"])));
    variants.push((
        "inputs joined",
        key_of("features", 3, &section(), &["in-ain-b"]),
    ));
    let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
    for (what, k) in &variants {
        assert_ne!(*k, base, "{what} must change the key");
        if let Some(other) = seen.insert(k, what) {
            panic!("{what} and {other} give the same key");
        }
    }
    // Floats by bit pattern, whatever their text.
    assert_ne!(
        key_of("s", 1, &0.1f64, &[]),
        key_of("s", 1, &0.1000000001f64, &[])
    );
    assert_eq!(
        key_of("s", 1, &0.1f64, &[]),
        key_of("s", 1, &"0.1".parse::<f64>().unwrap(), &[])
    );
    assert_eq!(
        key_of("s", 1, &1e-1f64, &[]),
        key_of("s", 1, &0.100f64, &[])
    );
    assert_ne!(
        key_of("s", 1, &0.5f32, &[]),
        key_of("s", 1, &0.5000001f32, &[])
    );
    // Map key order never matters; integer width does not either.
    let a: HashMap<String, f64> = (0..50).map(|i| (format!("k{i}"), i as f64 / 3.0)).collect();
    let b: HashMap<String, f64> = (0..50)
        .rev()
        .map(|i| (format!("k{i}"), i as f64 / 3.0))
        .collect();
    assert_eq!(key_of("s", 1, &a, &[]), key_of("s", 1, &b, &[]));
    assert_eq!(key_of("s", 1, &7u8, &[]), key_of("s", 1, &7i64, &[]));
    assert_ne!(key_of("s", 1, &7i64, &[]), key_of("s", 1, &7.0f64, &[]));
    // The whole config of the crate serialises canonically.
    let cfg = ipirm::config::Config::default();
    assert_eq!(key_of("s", 1, &cfg, &[]), key_of("s", 1, &cfg.clone(), &[]));
}

#[test]
fn a_damaged_blob_is_found_refused_and_recomputed() {
    let (_dir, store) = fresh();
    let t = tensors();
    let st = Stage::new("features", 1, &section(), &[]).unwrap();
    let digest = store.put_tensors(&st, &named(&t), &Meta::new()).unwrap();
    let other = Stage::new("other", 1, &1, &[]).unwrap();
    put_bytes(&store, &other, b"fine");
    let path = store.object_path(&digest);
    flip_a_byte(&path);

    let report = store.verify().unwrap();
    assert_eq!(report.damaged, vec![st.key().to_string()], "{report:?}");
    assert!(report.missing.is_empty() && report.orphans.is_empty());
    assert!(!report.is_clean());
    // What `ipirm store verify` prints under its summary (the CLI's text: store_cmd.rs).
    assert!(report.details.iter().any(|d| d.contains(st.key())));

    let e = store.get_tensors(st.key()).unwrap_err();
    assert!(
        matches!(&e, Error::Damaged { key, file, .. } if key == st.key() && file == &path),
        "{e}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains(st.key())
            && msg.contains(&path.display().to_string())
            && msg.contains("damaged"),
        "{msg}"
    );
    assert!(get_bytes(&store, st.key()).is_err());
    // Same size: `contains` cannot tell; the load does.
    assert!(store.contains(st.key()).unwrap());

    assert!(store.invalidate(st.key()).unwrap());
    assert!(!store.contains(st.key()).unwrap());
    assert!(
        !path.exists(),
        "the damaged file is deleted with its only entry"
    );
    assert!(!store.invalidate(st.key()).unwrap());
    store.put_tensors(&st, &named(&t), &Meta::new()).unwrap();
    assert_same_tensors(&t, &store.get_tensors(st.key()).unwrap().unwrap());
    assert!(store.verify().unwrap().is_clean());

    // A missing blob: `contains` is false, verify lists it, the load says so and invalidate drops it.
    std::fs::remove_file(&path).unwrap();
    assert!(!store.contains(st.key()).unwrap());
    let report = store.verify().unwrap();
    assert_eq!(report.missing, vec![st.key().to_string()], "{report:?}");
    assert!(matches!(
        store.get_tensors(st.key()),
        Err(Error::Damaged { .. })
    ));
    assert!(store.invalidate(st.key()).unwrap());
    assert!(store.get_meta(st.key()).unwrap().is_none());
    assert!(store.verify().unwrap().is_clean());
    // The damaged blob's rewrite also heals a damaged file left in place.
    store.put_tensors(&st, &named(&t), &Meta::new()).unwrap();
    flip_a_byte(&path);
    store.put_tensors(&st, &named(&t), &Meta::new()).unwrap();
    assert_same_tensors(&t, &store.get_tensors(st.key()).unwrap().unwrap());
    assert_eq!(get_bytes(&store, other.key()).unwrap().unwrap(), b"fine");
}

/// The child side of `killed_writer_leaves_a_consistent_store`: writes blobs and records until
/// killed. A no-op in a normal test run.
#[test]
fn writer_child() {
    let Ok(root) = std::env::var(CHILD_ROOT) else {
        return;
    };
    let store = Store::open(&root).unwrap();
    let run = store.start_run("victim", &0).unwrap();
    let big: Vec<u8> = (0..1_000_000u32).map(|i| (i % 253) as u8).collect();
    // Bounded, in case the parent dies before killing it.
    let t0 = Instant::now();
    for i in 0u64..300 {
        if t0.elapsed() > Duration::from_secs(30) {
            break;
        }
        let st = Stage::new("victim", 1, &i, &[]).unwrap().run(&run.id);
        let mut b = big.clone();
        b[..8].copy_from_slice(&i.to_le_bytes());
        put_bytes(&store, &st, &b);
        store
            .put_record(
                &Stage::new("victim-rec", 1, &i, &[]).unwrap().run(&run.id),
                &i,
            )
            .unwrap();
        if i == 0 {
            std::fs::write(Path::new(&root).join("started"), b"").unwrap();
        }
    }
}

#[test]
fn killed_writer_leaves_a_consistent_store() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let store = Store::open(&root).unwrap();
    let kept = Stage::new("kept", 1, &section(), &[]).unwrap();
    let t = tensors();
    store.put_tensors(&kept, &named(&t), &Meta::new()).unwrap();

    // Kill a real writer at several points of its loop.
    for round in 0..3 {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "writer_child", "--nocapture", "--test-threads=1"])
            .env(CHILD_ROOT, &root)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let t0 = Instant::now();
        while !root.join("started").exists() {
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "the writer never started"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        std::thread::sleep(Duration::from_millis(150 + 97 * round));
        child.kill().unwrap();
        child.wait().unwrap();
        std::fs::remove_file(root.join("started")).unwrap();
    }

    // What a kill can leave, by hand: a half-written temp file, an orphan blob, a blob renamed
    // into objects/ but never indexed.
    std::fs::write(root.join("tmp/123.0.0.part"), b"half a blo").unwrap();
    let orphan_bytes = b"never indexed";
    let od: String = Sha256::digest(orphan_bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    std::fs::create_dir_all(root.join("objects").join(&od[..2])).unwrap();
    std::fs::write(root.join("objects").join(&od[..2]).join(&od), orphan_bytes).unwrap();
    let renamed = Stage::new("renamed", 1, &0, &[]).unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let other = Store::open(tmp.path()).unwrap();
    let t2 = vec![("other".to_string(), Tensor::from_slice(&[1.5f32, 2.5]))];
    let rd = other
        .put_tensors(&renamed, &named(&t2), &Meta::new())
        .unwrap();
    std::fs::create_dir_all(root.join("objects").join(&rd[..2])).unwrap();
    std::fs::copy(
        other.object_path(&rd),
        root.join("objects").join(&rd[..2]).join(&rd),
    )
    .unwrap();

    // A kill between an entry's meta file and its index insert (a fresh clone met this once in
    // ~40 kills, 2026-12-04) leaves the index one entry short: opening restores it.
    let store = Store::open(&root).unwrap();
    assert_eq!(store.index_gaps().unwrap(), None);
    let report = store.verify().unwrap();
    assert!(report.is_clean(), "{report:?}");
    assert!(report.dangling_run_refs.is_empty(), "{report:?}");
    assert!(
        report.temp_files.contains(&root.join("tmp/123.0.0.part")),
        "{report:?}"
    );
    assert!(
        report
            .orphans
            .contains(&root.join("objects").join(&od[..2]).join(&od)),
        "{report:?}"
    );
    assert!(
        report.orphans.contains(&store.object_path(&rd)),
        "{report:?}"
    );
    assert!(!store.contains(renamed.key()).unwrap());
    // Every indexed artifact loads.
    let arts = store.list_artifacts().unwrap();
    assert!(
        arts.len() > 1,
        "the writer stored something before it was killed"
    );
    for a in &arts {
        assert!(store.contains(&a.key).unwrap(), "{}", a.key);
        match a.stage.as_str() {
            "kept" => assert_same_tensors(&t, &store.get_tensors(&a.key).unwrap().unwrap()),
            "victim" => assert_eq!(get_bytes(&store, &a.key).unwrap().unwrap().len(), 1_000_000),
            "victim-rec" => assert!(store.get_record::<u64>(&a.key).unwrap().is_some()),
            s => panic!("unexpected stage {s}"),
        }
    }
    // And the store keeps working: gc removes the leftovers, a write succeeds.
    let gc = store
        .gc_with(&GcOptions {
            grace_secs: 0,
            ..GcOptions::default()
        })
        .unwrap();
    assert!(
        gc.removed_temp_files
            .contains(&root.join("tmp/123.0.0.part")),
        "{gc:?}"
    );
    let after = store.verify().unwrap();
    assert!(
        after.orphans.is_empty() && after.temp_files.is_empty() && after.is_clean(),
        "{after:?}"
    );
    store
        .put_record(&Stage::new("after", 1, &0, &[]).unwrap(), &1u32)
        .unwrap();
}

#[test]
fn opening_restores_entries_an_interrupted_put_left_out_of_the_index() {
    let (_dir, store) = fresh();
    let run = store.start_run("r", &section()).unwrap();
    let kept = Stage::new("kept", 1, &0, &[]).unwrap().run(&run.id);
    put_bytes(&store, &kept, b"kept bytes");
    let rec = Stage::new("rec", 1, &0, &[]).unwrap().run(&run.id);
    store.put_record(&rec, &7u32).unwrap();
    let spoilt = Stage::new("spoilt", 1, &0, &[]).unwrap().run(&run.id);
    let sd = put_bytes(&store, &spoilt, b"bytes that will change");
    let root = store.root().to_path_buf();
    drop(store);
    // What a kill after each meta file and before its index insert leaves.
    common::store::drop_index_entries(&root, "artifacts", &[kept.key(), rec.key(), spoilt.key()]);
    common::store::drop_index_entries(&root, "runs", &[&run.id]);
    flip_a_byte(&root.join("objects").join(&sd[..2]).join(&sd));

    let store = Store::open(&root).unwrap();
    assert_eq!(
        get_bytes(&store, kept.key()).unwrap().unwrap(),
        b"kept bytes"
    );
    assert_eq!(store.get_record::<u32>(rec.key()).unwrap(), Some(7));
    let restored = store.get_run(&run.id).unwrap().unwrap();
    assert_eq!(restored.artifacts.len(), 3);
    // The entry whose blob changed is left out, its file moved aside for a person to look at,
    // so nothing counts as a gap: gc runs (and removes the changed blob as an orphan).
    assert!(!store.contains(spoilt.key()).unwrap());
    assert_eq!(store.index_gaps().unwrap(), None);
    let aside: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("meta.left-out-")
        })
        .collect();
    assert_eq!(aside.len(), 1);
    let moved = common::files_under(&aside[0].path());
    assert!(
        moved.len() == 1 && moved[0].ends_with(spoilt.key()),
        "{moved:?}"
    );
    let gc = store.gc(false).unwrap();
    assert_eq!(gc.removed_artifacts.len(), 0, "{gc:?}");
    assert_eq!(gc.removed_blobs.len(), 1, "{gc:?}");
    // What gc removed stays removed: no file is left to restore it from.
    store.finish_run(&run.id).unwrap();
    let other = store.start_run("r", &section()).unwrap();
    store.finish_run(&other.id).unwrap();
    assert!(store.gc(false).unwrap().removed_runs.contains(&run.id));
    drop(store);
    let store = Store::open(&root).unwrap();
    assert!(store.get_run(&run.id).unwrap().is_none());
    assert!(store.verify().unwrap().is_clean());
}

#[test]
fn gc_keeps_what_pinned_and_latest_runs_reach() {
    let (_dir, store) = fresh();
    let put = |name: &str, inputs: &[&str], run: Option<&str>, bytes: &[u8]| {
        let mut st = Stage::new(name, 1, &0, inputs).unwrap();
        if let Some(r) = run {
            st = st.run(r);
        }
        put_bytes(&store, &st, bytes);
        st.key().to_string()
    };
    let shared = put("shared-input", &[], None, b"shared");
    let deep = put("deep-input", &[], None, b"deep");
    let a1 = store.start_run("a", &1).unwrap();
    let x1 = put("x", &[&shared], Some(&a1.id), b"x1");
    store.finish_run(&a1.id).unwrap();
    let a2 = store.start_run("a", &2).unwrap();
    let mid = put("mid", &[&deep], None, b"mid");
    let x2 = put("x2", &[&shared, &mid], Some(&a2.id), b"x2");
    store.finish_run(&a2.id).unwrap();
    let b1 = store.start_run("b", &1).unwrap();
    let y = put("y", &[], Some(&b1.id), b"y");
    store.finish_run(&b1.id).unwrap();
    store.pin(&b1.id, true).unwrap();
    let b2 = store.start_run("b", &2).unwrap();
    let z = put("z", &[], Some(&b2.id), b"z");
    store.finish_run(&b2.id).unwrap();
    let loose = put("loose", &[], None, b"loose");
    let orphan = store.object_path("00aa").with_file_name("00aa");
    std::fs::create_dir_all(orphan.parent().unwrap()).unwrap();
    std::fs::write(&orphan, b"orphan").unwrap();
    std::fs::write(store.root().join("tmp/old.part"), b"partial").unwrap();

    let latest: Vec<String> = store
        .latest_runs()
        .unwrap()
        .into_iter()
        .map(|r| r.id)
        .collect();
    assert_eq!(latest, vec![a2.id.clone(), b2.id.clone()]);

    let keys = |s: &Store| -> Vec<String> {
        s.list_artifacts()
            .unwrap()
            .into_iter()
            .map(|a| a.key)
            .collect()
    };
    let before = keys(&store);
    let x1_blob = store.object_path(store.get_meta(&x1).unwrap().unwrap().digest().unwrap());
    let loose_blob = store.object_path(store.get_meta(&loose).unwrap().unwrap().digest().unwrap());

    // Default grace: the young loose artifact and the young temp file are kept.
    let gentle = store.gc(true).unwrap();
    assert_eq!(gentle.removed_artifacts, vec![x1.clone()], "{gentle:?}");
    assert!(gentle.removed_temp_files.is_empty());

    let opts = GcOptions {
        dry_run: true,
        grace_secs: 0,
        ..GcOptions::default()
    };
    let dry = store.gc_with(&opts).unwrap();
    assert!(dry.dry_run);
    assert_eq!(dry.removed_runs, vec![a1.id.clone()]);
    let mut expect_removed = vec![x1.clone(), loose.clone()];
    expect_removed.sort();
    let mut removed = dry.removed_artifacts.clone();
    removed.sort();
    assert_eq!(removed, expect_removed, "{dry:?}");
    assert!(
        dry.removed_blobs.contains(&x1_blob)
            && dry.removed_blobs.contains(&loose_blob)
            && dry.removed_blobs.contains(&orphan),
        "{dry:?}"
    );
    assert_eq!(dry.removed_blobs.len(), 3, "{dry:?}");
    assert_eq!(
        dry.removed_temp_files,
        vec![store.root().join("tmp/old.part")]
    );
    assert!(dry.dry_run, "{dry:?}");
    // Nothing removed.
    assert_eq!(keys(&store), before);
    assert!(x1_blob.exists() && orphan.exists() && store.root().join("tmp/old.part").exists());
    assert_eq!(store.list_runs().unwrap().len(), 4);

    let done = store
        .gc_with(&GcOptions {
            dry_run: false,
            ..opts
        })
        .unwrap();
    assert_eq!(
        (
            done.removed_runs.clone(),
            done.removed_artifacts.len(),
            done.removed_blobs.len()
        ),
        (dry.removed_runs.clone(), 2, 3)
    );
    assert!(done.freed_bytes > 0);
    assert!(
        !x1_blob.exists()
            && !loose_blob.exists()
            && !orphan.exists()
            && !store.root().join("tmp/old.part").exists()
    );
    let mut left = keys(&store);
    left.sort();
    let mut want = vec![shared, deep, mid, x2, y, z];
    want.sort();
    assert_eq!(left, want);
    for k in &left {
        assert!(store.contains(k).unwrap() && get_bytes(&store, k).unwrap().is_some());
    }
    assert!(store.get_run(&a1.id).unwrap().is_none());
    assert!(store.verify().unwrap().is_clean());
    // A second gc has nothing left to do.
    let again = store
        .gc_with(&GcOptions {
            dry_run: false,
            ..opts
        })
        .unwrap();
    assert!(
        again.removed_artifacts.is_empty()
            && again.removed_blobs.is_empty()
            && again.removed_runs.is_empty(),
        "{again:?}"
    );

    // An unfinished run is kept while recent, even when not the latest of its name.
    let c1 = store.start_run("c", &1).unwrap();
    let w = put("w", &[], Some(&c1.id), b"w");
    let c2 = store.start_run("c", &2).unwrap();
    store.finish_run(&c2.id).unwrap();
    let g = store
        .gc_with(&GcOptions {
            dry_run: false,
            ..opts
        })
        .unwrap();
    assert!(
        g.kept_runs.contains(&c1.id) && store.contains(&w).unwrap(),
        "{g:?}"
    );
    let g = store
        .gc_with(&GcOptions {
            dry_run: false,
            unfinished_run_secs: 0,
            ..opts
        })
        .unwrap();
    assert_eq!(g.removed_runs, vec![c1.id.clone()]);
    assert!(!store.contains(&w).unwrap());
}

/// The seeds of an arm (`ipirm run --seeds N`: one name, a run per seed) are each a latest run:
/// gc keeps every seed's latest finished run, and removes a seed's earlier one.
#[test]
fn gc_keeps_the_latest_run_of_each_seed_of_a_name() {
    let (_dir, store) = fresh();
    let seeded = |seed: u64, bytes: &[u8]| {
        let run = store
            .start_run("arm", &serde_json::json!({"train": {"seed": seed}}))
            .unwrap();
        let st = Stage::new("x", 1, &(seed, bytes), &[])
            .unwrap()
            .run(&run.id);
        put_bytes(&store, &st, bytes);
        store.finish_run(&run.id).unwrap();
        (run, st.key().to_string())
    };
    let (first, first_key) = seeded(1, b"one");
    let (second, second_key) = seeded(2, b"two");
    let (again, again_key) = seeded(1, b"one again");
    assert_eq!(first.seed().as_deref(), Some("1"));
    let opts = GcOptions {
        grace_secs: 0,
        ..GcOptions::default()
    };
    let g = store.gc_with(&opts).unwrap();
    assert_eq!(g.removed_runs, vec![first.id.clone()], "{g:?}");
    assert_eq!(g.removed_artifacts, vec![first_key], "{g:?}");
    assert!(store.contains(&second_key).unwrap() && store.contains(&again_key).unwrap());
    assert!(
        store.get_run(&second.id).unwrap().is_some() && store.get_run(&again.id).unwrap().is_some()
    );
}

#[test]
fn export_import_round_trip_through_plain_json() {
    let (_dir, store) = fresh();
    let run = store.start_run("exp", &section()).unwrap();
    let t = tensors();
    let feats = Stage::new("features", 1, &section(), &[])
        .unwrap()
        .run(&run.id);
    let digest = store.put_tensors(&feats, &named(&t), &Meta::new()).unwrap();
    let m = Metrics {
        top1: 55.5,
        per_class: vec![1.0],
        notes: BTreeMap::new(),
    };
    let rec = Stage::new("knn", 1, &section(), &[feats.key()])
        .unwrap()
        .run(&run.id);
    store.put_record(&rec, &m).unwrap();
    store.finish_run(&run.id).unwrap();
    store.pin(&run.id, true).unwrap();

    let out = tempfile::tempdir().unwrap();
    let exp_dir = out.path().join("export");
    let rep = store.export(&exp_dir).unwrap();
    assert_eq!((rep.artifacts, rep.runs, rep.blobs), (2, 1, 1));
    // Plain JSON, readable without sled.
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(exp_dir.join("manifest.json")).unwrap())
            .unwrap();
    assert_eq!(manifest["format"], store::MANIFEST_FORMAT);
    let arts = manifest["artifacts"].as_array().unwrap();
    let blob = arts.iter().find(|a| a["key"] == feats.key()).unwrap();
    assert_eq!(blob["digest"], digest.as_str());
    assert_eq!(blob["kind"], "blob");
    assert_eq!(blob["file"], format!("objects/{digest}"));
    assert_eq!(sha256_hex(&exp_dir.join("objects").join(&digest)), digest);
    assert_eq!(
        blob["config_json"],
        store::canonical_json(&section()).unwrap()
    );
    assert!(blob["provenance"]["git_commit"].is_string());
    let r = arts.iter().find(|a| a["key"] == rec.key()).unwrap();
    assert_eq!(r["kind"], "record");
    assert!(r["record_hex"].is_string());
    assert_eq!(manifest["runs"][0]["id"], run.id.as_str());
    assert_eq!(
        manifest["runs"][0]["artifacts"].as_array().unwrap().len(),
        2
    );
    assert!(
        store.export(&exp_dir).is_err(),
        "refuses a non-empty folder"
    );

    let other_dir = tempfile::tempdir().unwrap();
    let other = Store::open(other_dir.path()).unwrap();
    let imp = other.import(&exp_dir).unwrap();
    assert_eq!(
        (imp.artifacts_added, imp.runs_added, imp.blobs_copied),
        (2, 1, 1),
        "{imp:?}"
    );
    assert_eq!(
        other.list_artifacts().unwrap(),
        store.list_artifacts().unwrap()
    );
    let (a, b) = (
        store.get_run(&run.id).unwrap().unwrap(),
        other.get_run(&run.id).unwrap().unwrap(),
    );
    assert_eq!(
        (
            a.name,
            a.config_json,
            a.artifacts,
            a.pinned,
            a.created,
            a.finished
        ),
        (
            b.name,
            b.config_json,
            b.artifacts,
            b.pinned,
            b.created,
            b.finished
        )
    );
    assert_same_tensors(&t, &other.get_tensors(feats.key()).unwrap().unwrap());
    assert_eq!(other.get_record::<Metrics>(rec.key()).unwrap(), Some(m));
    assert!(other.verify().unwrap().is_clean());
    let again = other.import(&exp_dir).unwrap();
    assert_eq!(
        (
            again.artifacts_added,
            again.artifacts_skipped,
            again.runs_skipped
        ),
        (0, 2, 1)
    );

    // A damaged export is refused, naming the key, and nothing is added.
    flip_a_byte(&exp_dir.join("objects").join(&digest));
    let third_dir = tempfile::tempdir().unwrap();
    let third = Store::open(third_dir.path()).unwrap();
    let e = third.import(&exp_dir).unwrap_err();
    assert!(
        matches!(&e, Error::Damaged { key, .. } if key == feats.key()),
        "{e}"
    );
    assert!(third.list_artifacts().unwrap().is_empty() && third.list_runs().unwrap().is_empty());
    assert!(third.verify().unwrap().temp_files.is_empty());
}

#[test]
fn a_newer_schema_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    Store::open(&root).unwrap();
    common::store::overwrite_schema_version(&root, SCHEMA_VERSION + 1);
    let e = Store::open(&root).unwrap_err().to_string();
    let want = format!("store at {} was written by a newer ipirm (schema {}, this build reads up to {SCHEMA_VERSION})", root.display(), SCHEMA_VERSION + 1);
    assert!(e.contains(&want), "{e}");
    common::store::overwrite_schema_version(&root, 0);
    let e = Store::open(&root).unwrap_err().to_string();
    assert!(e.contains("older than any this build can migrate"), "{e}");
    common::store::overwrite_schema_version(&root, SCHEMA_VERSION);
    Store::open(&root).unwrap();
}

/// `ipirm store ARGS --store ROOT`: stdout, asserting success.
fn store_cmd(root: &Path, args: &[&str]) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .arg("store")
        .args(args)
        .arg("--store")
        .arg(root)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn ls_and_show_describe_runs_and_artifacts() {
    let (_dir, store) = fresh();
    let run = store.start_run("preset-x", &section()).unwrap();
    let t = tensors();
    let feats = Stage::new("features", 1, &section(), &[])
        .unwrap()
        .run(&run.id)
        .device("cpu", "2.11.0");
    let digest = store.put_tensors(&feats, &named(&t), &Meta::new()).unwrap();
    let rec = Stage::new("knn", 1, &section(), &[feats.key()])
        .unwrap()
        .run(&run.id);
    store.put_record(&rec, &3.5f64).unwrap();
    let root = store.root().to_path_buf();
    drop(store);

    let ls = store_cmd(&root, &["ls"]);
    assert!(
        ls.lines()
            .any(|l| l.starts_with(&format!("run {}", run.id)) && l.contains("latest")),
        "{ls}"
    );
    // Stage versions this build does not write are marked as never reused.
    assert!(
        ls.lines().any(|l| l.starts_with("stage features v1")
            && l.contains(&feats.key()[..16])
            && l.contains("stale")),
        "{ls}"
    );
    assert!(
        ls.lines()
            .any(|l| l.starts_with("stage knn v1") && l.contains("record")),
        "{ls}"
    );

    let text = store_cmd(&root, &["show", rec.key()]);
    assert!(
        text.contains(feats.key())
            && text.contains(&digest)
            && text.contains("\"epochs\":10")
            && text.contains("git"),
        "{text}"
    );
    let text = store_cmd(&root, &["show", "preset-x"]);
    assert!(
        text.contains(&run.id) && text.contains(feats.key()) && text.contains(&digest),
        "{text}"
    );
    let j: serde_json::Value =
        serde_json::from_str(&store_cmd(&root, &["show", &run.id, "--json"])).unwrap();
    assert_eq!(j["id"], run.id.as_str());
    let details = j["artifact_details"].as_array().unwrap();
    assert_eq!(details.len(), 2);
    assert_eq!(details[0]["digest"], digest.as_str());
    let j: serde_json::Value =
        serde_json::from_str(&store_cmd(&root, &["show", &feats.key()[..10], "--json"])).unwrap();
    assert_eq!(j["digest"], digest.as_str());
    assert_eq!(j["provenance"]["device"], "cpu");
    let store = Store::open(&root).unwrap();
    let e = store.find("nothing-like-this").unwrap_err().to_string();
    assert!(e.contains("nothing-like-this"), "{e}");

    // What find takes: an exact key or id, a run name (its latest run), a unique prefix of at
    // least 4 characters.
    store.finish_run(&run.id).unwrap();
    let later = store.start_run("preset-x", &section()).unwrap();
    let run_of = |what: &str| match store.find(what).unwrap() {
        store::Found::Run(r) => r.id,
        store::Found::Artifact(a) => a.key,
    };
    assert_eq!(run_of("preset-x"), run.id, "the finished run is the latest");
    assert_eq!(run_of(&later.id), later.id);
    assert_eq!(run_of(&rec.key()[..12]), rec.key());
    let e = store.find("preset-").unwrap_err().to_string();
    assert!(
        e.contains("prefix of 2") && e.contains(&run.id) && e.contains(&later.id),
        "{e}"
    );
    let e = store.find(&rec.key()[..3]).unwrap_err().to_string();
    assert!(
        e.contains("too short a prefix") && e.contains("at least 4 characters"),
        "{e}"
    );
    let e = store.find("zzz").unwrap_err().to_string();
    assert!(e.contains("no artifact key, run id or run name"), "{e}");
    let e = store.resolve_run(&rec.key()[..12]).unwrap_err().to_string();
    assert!(e.contains("no run id or run name"), "{e}");
    // Through the binary: a short prefix that would match says so.
    drop(store);
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", "show", &rec.key()[..3], "--store"])
        .arg(&root)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("too short a prefix"),
        "{err}"
    );
}

#[test]
fn two_handles_in_one_process_take_turns() {
    let (_dir, store) = fresh();
    store
        .put_record(&Stage::new("r", 1, &0, &[]).unwrap(), &5u32)
        .unwrap();
    let second = Store::open_with(
        store.root(),
        StoreOptions {
            lock_timeout: Duration::from_secs(5),
        },
    )
    .unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 0..20u32 {
                second
                    .put_record(&Stage::new("t", 1, &i, &[]).unwrap(), &i)
                    .unwrap();
            }
        });
        for i in 20..40u32 {
            store
                .put_record(&Stage::new("t", 1, &i, &[]).unwrap(), &i)
                .unwrap();
        }
    });
    assert_eq!(store.list_artifacts().unwrap().len(), 41);
}

#[test]
fn one_open_put_flush_close_takes_milliseconds() {
    let (_dir, store) = fresh();
    let n = 100;
    let mut times = Vec::with_capacity(n);
    for i in 0..n {
        let st = Stage::new("timing", 1, &i, &[]).unwrap();
        let t0 = Instant::now();
        store.put_record(&st, &(i as u64)).unwrap();
        times.push(t0.elapsed().as_secs_f64() * 1e3);
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let mean = times.iter().sum::<f64>() / n as f64;
    eprintln!(
        "open+put_record+flush+close: mean {mean:.2} ms, median {:.2} ms, max {:.2} ms over {n}",
        times[n / 2],
        times[n - 1]
    );
    assert!(mean < 500.0, "mean {mean} ms");
}

/// An export that meets a damaged blob fails naming it and leaves nothing behind: no new folder,
/// and an empty folder it was given stays empty (a half export made the next one refuse the
/// folder as not empty).
#[test]
fn an_export_that_meets_a_damaged_blob_leaves_nothing_behind() {
    let (dir, store) = fresh();
    let st = Stage::new("x", 1, &0, &[]).unwrap();
    let digest = put_bytes(&store, &st, b"some bytes");
    let path = store.object_path(&digest);
    std::fs::write(&path, b"other bytes").unwrap();
    let new = dir.path().join("new-export");
    let empty = dir.path().join("empty-export");
    std::fs::create_dir(&empty).unwrap();
    for target in [&new, &empty] {
        let e = store.export(target).unwrap_err().to_string();
        assert!(
            e.contains(st.key()) && e.contains("nothing was exported"),
            "{e}"
        );
    }
    assert!(!new.exists());
    assert_eq!(std::fs::read_dir(&empty).unwrap().count(), 0);
}
