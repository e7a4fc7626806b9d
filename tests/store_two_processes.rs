//! Two processes on one store. The second process is this test binary again, started with
//! `--exact child_role` and an environment variable that picks its role, or the `ipirm` binary
//! holding the index (its flush paused by fault injection).
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use ipirm::store::{Stage, Store, StoreOptions};
use ipirm::tensor_file::Meta;
use tch::Tensor;

mod common;
use common::store::holder_pid;

const ROLE: &str = "IPIRM_STORE_CHILD_ROLE";
const ROOT: &str = "IPIRM_STORE_CHILD_ROOT";
const OPS: u64 = 150;

fn spawn_child(role: &str, root: &Path) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_role", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(ROOT, root)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Many small operations as `tag`: records, a blob every tenth, reads of its own earlier writes
/// and of the other process's; returns the slowest operation.
fn worker(store: &Store, tag: &str, other: &str) -> Duration {
    let run = store.start_run(&format!("worker-{tag}"), &tag).unwrap();
    let mut slowest = Duration::ZERO;
    let mut timed = |f: &mut dyn FnMut()| {
        let t0 = Instant::now();
        f();
        slowest = slowest.max(t0.elapsed());
    };
    for i in 0..OPS {
        let st = Stage::new(&format!("rec-{tag}"), 1, &i, &[])
            .unwrap()
            .run(&run.id);
        timed(&mut || store.put_record(&st, &(tag.to_string(), i)).unwrap());
        if i % 10 == 0 {
            let bs = Stage::new(&format!("blob-{tag}"), 1, &i, &[])
                .unwrap()
                .run(&run.id);
            let bytes = format!("{tag}:{i}").repeat(1000);
            timed(&mut || {
                store
                    .put_tensors(
                        &bs,
                        &[("bytes", &Tensor::from_slice(bytes.as_bytes()))],
                        &Meta::new(),
                    )
                    .unwrap();
            });
        }
        let mine = Stage::new(&format!("rec-{tag}"), 1, &(i / 2), &[]).unwrap();
        timed(&mut || {
            assert_eq!(
                store.get_record::<(String, u64)>(mine.key()).unwrap(),
                Some((tag.to_string(), i / 2))
            )
        });
        let theirs = Stage::new(&format!("rec-{other}"), 1, &i, &[]).unwrap();
        timed(&mut || {
            if let Some(v) = store.get_record::<(String, u64)>(theirs.key()).unwrap() {
                assert_eq!(v, (other.to_string(), i));
            }
        });
    }
    store.finish_run(&run.id).unwrap();
    slowest
}

/// The second process's side; a no-op in a normal test run.
#[test]
fn child_role() {
    let (Ok(role), Ok(root)) = (std::env::var(ROLE), std::env::var(ROOT)) else {
        return;
    };
    let store = Store::open(&root).unwrap();
    match role.as_str() {
        "worker" => {
            let slowest = worker(&store, "B", "A");
            println!("CHILD slowest_ms={}", slowest.as_millis());
        }
        r => panic!("unknown role {r}"),
    }
}

#[test]
fn two_processes_write_and_read_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    let store = Store::open(&root).unwrap();
    let t0 = Instant::now();
    let child = spawn_child("worker", &root);
    let slowest_here = worker(&store, "A", "B");
    let out = child.wait_with_output().unwrap();
    let wall = t0.elapsed();
    assert!(out.status.success(), "the child failed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let slowest_child: u64 = stdout
        .split("CHILD slowest_ms=")
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("the child did not report: {stdout}"));
    eprintln!("two processes, {OPS} iterations each: {:.1} s; slowest operation {} ms here, {slowest_child} ms in the child", wall.as_secs_f64(), slowest_here.as_millis());

    // Every write of both is there, and every run lists all of its own.
    for tag in ["A", "B"] {
        for i in 0..OPS {
            let st = Stage::new(&format!("rec-{tag}"), 1, &i, &[]).unwrap();
            assert_eq!(
                store.get_record::<(String, u64)>(st.key()).unwrap(),
                Some((tag.to_string(), i)),
                "{tag} {i}"
            );
            if i % 10 == 0 {
                let bs = Stage::new(&format!("blob-{tag}"), 1, &i, &[]).unwrap();
                let t = store.get_tensors(bs.key()).unwrap().unwrap();
                assert_eq!(
                    Vec::<u8>::try_from(&t[0].1).unwrap(),
                    format!("{tag}:{i}").repeat(1000).into_bytes()
                );
            }
        }
    }
    let runs = store.list_runs().unwrap();
    assert_eq!(runs.len(), 2);
    for r in &runs {
        assert!(r.finished);
        assert_eq!(r.artifacts.len() as u64, OPS + OPS / 10, "{}", r.id);
    }
    assert_eq!(
        store.list_artifacts().unwrap().len() as u64,
        2 * (OPS + OPS / 10)
    );
    let report = store.verify().unwrap();
    assert!(
        report.is_clean() && report.orphans.is_empty() && report.temp_files.is_empty(),
        "{report:?}"
    );
    // Nobody waited without bound: far below the 30 s lock timeout.
    assert!(
        slowest_here < Duration::from_secs(10) && slowest_child < 10_000,
        "slowest {slowest_here:?} / {slowest_child} ms"
    );
}

#[test]
fn a_process_that_gives_up_names_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("artifacts");
    Store::open(&root).unwrap();
    // `ipirm store ls` holding the index for 3 s: its flush is paused by fault injection.
    let mut child = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(["store", "ls", "--store"])
        .arg(&root)
        .env("FAILPOINTS", "store::index-flush=sleep(3000)")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    while holder_pid(&root) != Some(child.id()) {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "the holder never started"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let t1 = Instant::now();
    let impatient = Store::open_with(
        &root,
        StoreOptions {
            lock_timeout: Duration::from_millis(500),
        },
    );
    let e = match impatient {
        // Opening already needs the index.
        Err(e) => e,
        Ok(s) => s.contains("x").unwrap_err(),
    }
    .to_string();
    let waited = t1.elapsed();
    assert!(e.contains(&format!("held by pid {}", child.id())), "{e}");
    assert!(e.contains("store ls"), "the holder's command line: {e}");
    assert!(e.contains(&root.join("index").display().to_string()), "{e}");
    assert!(
        waited >= Duration::from_millis(450) && waited < Duration::from_millis(2500),
        "gave up after {waited:?}"
    );
    // A patient process gets in once the holder is done.
    let patient = Store::open_with(
        &root,
        StoreOptions {
            lock_timeout: Duration::from_secs(30),
        },
    )
    .unwrap();
    assert!(!patient.contains("x").unwrap());
    assert!(child.wait().unwrap().success());
    assert!(
        holder_pid(&root).is_none(),
        "the holder file is removed on release"
    );
}
