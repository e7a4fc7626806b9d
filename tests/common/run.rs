//! Driving the binary on a tiny Fashion-MNIST-format run, as a user would: the overrides that
//! make a run take seconds, running commands, reading digests back through `store show --json`.
use std::path::Path;
use std::process::Command;

/// A tiny Fashion-MNIST folder under `dir/data` and the flags that make an IP-IRM run on it take
/// seconds (3 epochs, a maximize step after each).
pub fn tiny_run(dir: &Path) -> Vec<String> {
    super::fashion_folder(&dir.join("data"), 64, 32);
    [
        "--preset=fmnist-ipirm-quick",
        "--device=cpu",
        "--set=data.train_limit=0",
        "--set=data.bank_limit=0",
        "--set=data.test_limit=0",
        "--set=model.width=4",
        "--set=model.head_hidden=16",
        "--set=model.feature_dim=8",
        "--set=train.batch_size=16",
        "--set=train.epochs=3",
        "--set=ipirm.maximize_iter=1",
        "--set=maximize.batch_size=64",
        "--set=maximize.max_epoch=3",
        "--set=knn.k=10",
        "--set=linear.epochs=1",
        "--set=linear.batch_size=32",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("--data-dir={}", dir.join("data").display())])
    .collect()
}

/// One intra-op thread per process, for tests that compare a rerun's bytes with a first run's:
/// with more threads a maximize step can, rarely, round otherwise (README, "Not guaranteed"), and
/// two tests' processes on 2 threads each oversubscribe a 2-core machine.
pub const ONE_THREAD: &[(&str, &str)] = &[("OMP_NUM_THREADS", "1")];

/// `ipirm train --store=STORE ARGS` on [`ONE_THREAD`], which must succeed: its output.
pub fn train(store: &Path, args: &[String]) -> String {
    ok_one_thread(store, &["train"], args)
}

/// [`ok`] on [`ONE_THREAD`]: for a run whose bytes a later run must match.
pub fn ok_one_thread(store: &Path, cmd: &[&str], args: &[String]) -> String {
    let (success, text) = ipirm_env(store, cmd, args, ONE_THREAD);
    assert!(success, "ipirm {cmd:?} failed:\n{text}");
    text
}

/// `ipirm CMD --store=STORE ARGS`: (success, stderr then stdout).
pub fn ipirm(store: &Path, cmd: &[&str], args: &[String]) -> (bool, String) {
    ipirm_env(store, cmd, args, &[])
}

/// [`ipirm`] with extra environment variables.
pub fn ipirm_env(
    store: &Path,
    cmd: &[&str],
    args: &[String],
    env: &[(&str, &str)],
) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args(cmd)
        .arg(format!("--store={}", store.display()))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("panicked"),
        "ipirm {cmd:?} panicked:\n{text}"
    );
    (out.status.success(), text)
}

/// [`ipirm`], which must succeed; its output.
pub fn ok(store: &Path, cmd: &[&str], args: &[String]) -> String {
    let (success, text) = ipirm(store, cmd, args);
    assert!(success, "ipirm {cmd:?} failed:\n{text}");
    text
}

/// `args` followed by `extra`.
pub fn with(args: &[String], extra: &[&str]) -> Vec<String> {
    args.iter()
        .cloned()
        .chain(extra.iter().map(|s| s.to_string()))
        .collect()
}

/// The (key, digest) pairs `ipirm store show WHAT --json` lists, sorted.
pub fn shown_digests(store: &Path, what: &str) -> Vec<(String, String)> {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args([
            "store",
            &format!("--store={}", store.display()),
            "show",
            what,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut found = Vec::new();
    collect_digests(&v, &mut found);
    found.sort();
    found.dedup();
    found
}

fn collect_digests(v: &serde_json::Value, out: &mut Vec<(String, String)>) {
    match v {
        serde_json::Value::Object(m) => {
            if let (Some(k), Some(d)) = (
                m.get("key").and_then(|k| k.as_str()),
                m.get("digest").and_then(|d| d.as_str()),
            ) {
                out.push((k.to_string(), d.to_string()));
            }
            m.values().for_each(|x| collect_digests(x, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_digests(x, out)),
        _ => {}
    }
}

/// The blob file of `digest` in `store`.
pub fn blob_file(store: &Path, digest: &str) -> std::path::PathBuf {
    store.join("objects").join(&digest[..2]).join(digest)
}

/// Flips one byte in the middle of a file.
pub fn flip_byte(path: &Path) {
    let mut bytes = std::fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(path, bytes).unwrap();
}

/// The keys of a run's artifacts of `stage`, in the run's order, from `store show RUN --json`.
pub fn stage_keys(store: &Path, run: &str, stage: &str) -> Vec<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_ipirm"))
        .args([
            "store",
            &format!("--store={}", store.display()),
            "show",
            run,
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["artifact_details"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["stage"] == stage)
        .map(|a| a["key"].as_str().unwrap().to_string())
        .collect()
}

/// A running child's stderr, read line by line as it comes (so that a test can act on what the
/// run reports rather than on a timer, which races a faster or busier machine) and kept whole.
pub struct LogWatch {
    lines: std::sync::mpsc::Receiver<String>,
    reader: std::thread::JoinHandle<String>,
}

impl LogWatch {
    /// Takes `child`'s stderr (spawned with `Stdio::piped()`).
    pub fn new(child: &mut std::process::Child) -> LogWatch {
        let stderr = child.stderr.take().expect("stderr piped");
        let (tx, lines) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            use std::io::BufRead;
            let mut all = String::new();
            for line in std::io::BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                let _ = tx.send(line.clone());
                all.push_str(&line);
                all.push('\n');
            }
            all
        });
        LogWatch { lines, reader }
    }

    /// Waits for a line starting with `prefix`: true when one came, false when the log ended
    /// (the process exited) first. Panics after 5 minutes.
    pub fn wait_for(&self, prefix: &str) -> bool {
        loop {
            match self.lines.recv_timeout(std::time::Duration::from_secs(300)) {
                Ok(line) if line.starts_with(prefix) => return true,
                Ok(_) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return false,
                Err(e) => panic!("no line `{prefix}…` within 5 minutes ({e:?})"),
            }
        }
    }

    /// The whole log, once the process has exited.
    pub fn finish(self) -> String {
        drop(self.lines);
        self.reader.join().unwrap()
    }
}
