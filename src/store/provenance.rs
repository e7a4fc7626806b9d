//! Where and how an artifact was made: recorded with it, never part of its key.
use std::path::Path;
use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

/// Recorded with every artifact; none of it enters the stage key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Provenance {
    /// The device the stage ran on, as the caller described it (e.g. `cuda:0 (NVIDIA H200)`).
    pub device: String,
    /// The libtorch version, as the caller gave it (e.g. [`crate::device::libtorch_version`]).
    pub libtorch: String,
    /// `git rev-parse HEAD` of the crate's source folder at run time, or `unknown`.
    pub git_commit: String,
    /// Whether `git status --porcelain` listed anything; `None` when git could not tell.
    pub git_dirty: Option<bool>,
    pub host: String,
    /// Unix seconds when the artifact was stored.
    pub created: u64,
    /// Seconds the stage took (from [`Stage::new`](super::Stage::new) to the put, unless set).
    pub wall_seconds: f64,
    /// `CARGO_PKG_VERSION` of the ipirm that wrote it (this one *is* part of the key).
    pub crate_version: String,
}

impl Provenance {
    /// The provenance of something made now on `device` with `libtorch`, taking `wall_seconds`.
    pub fn capture(device: &str, libtorch: &str, wall_seconds: f64) -> Provenance {
        let (git_commit, git_dirty) = git_state();
        Provenance {
            device: device.to_string(),
            libtorch: libtorch.to_string(),
            git_commit: git_commit.clone(),
            git_dirty: *git_dirty,
            host: host().to_string(),
            created: super::now_secs(),
            wall_seconds,
            crate_version: env!("CARGO_PKG_VERSION").to_string(),
        }
    }
}

/// The commit and dirty flag of the crate's source checkout (`CARGO_MANIFEST_DIR`), asked once per
/// process. A binary run away from its checkout records `unknown`. This is the checkout's state
/// when the process runs, which can differ from the one the binary was built from.
fn git_state() -> &'static (String, Option<bool>) {
    static STATE: OnceLock<(String, Option<bool>)> = OnceLock::new();
    STATE.get_or_init(|| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let run = |args: &[&str]| -> Option<String> {
            let out = std::process::Command::new("git")
                .arg("-C")
                .arg(dir)
                .args(args)
                .stderr(std::process::Stdio::null())
                .output()
                .ok()?;
            out.status
                .success()
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let commit = run(&["rev-parse", "HEAD"])
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty());
        let dirty = commit
            .as_ref()
            .and_then(|_| run(&["status", "--porcelain"]))
            .map(|s| !s.trim().is_empty());
        (commit.unwrap_or_else(|| "unknown".into()), dirty)
    })
}

fn host() -> &'static str {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        ["/proc/sys/kernel/hostname", "/etc/hostname"]
            .iter()
            .find_map(|p| {
                std::fs::read_to_string(p)
                    .ok()
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
            })
            .or_else(|| std::env::var("HOSTNAME").ok())
            .unwrap_or_else(|| "unknown".into())
    })
}
