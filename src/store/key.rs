//! Stage keys: what a cached result is filed under, and the [`Stage`] about to be computed
//! that carries its key to the put.
//!
//! A stage's key is the sha256 of its name and version, the canonical JSON of the parameters it
//! reads, the keys of its input artifacts in order, and the crate version. Nothing else: the
//! device, the libtorch version, the git commit, the host and the wall time are recorded in
//! [`Provenance`](super::Provenance) but never keyed on.
//!
//! The canonical JSON is serde_json's compact form of the value: object keys sorted (serde_json's
//! map is ordered by key in this build; a test checks it), every integer width one number, floats
//! in shortest round-trip notation, so `0.5` and `0.5000001` differ and `1e-1` equals `0.1`.
//! serde_json writes NaN and infinities as `null`: configs refuse them when validated.
use std::time::Instant;

use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Artifact, ArtifactKind, Provenance};

use crate::{Error, Result};

/// Domain separation for the stage-key hash; bump the suffix if the hashed layout changes.
const KEY_DOMAIN: &[u8] = b"ipirm-stage-key-v2";

/// The canonical JSON text of `value` (what [`stage_key`] hashes).
pub fn canonical_json<T: Serialize + ?Sized>(value: &T) -> Result<String> {
    let v = serde_json::to_value(value)
        .map_err(|e| Error::Store(format!("stage parameters do not serialise as JSON: {e}")))?;
    Ok(v.to_string())
}

/// The key of a stage's result: hex sha256 over `stage`, `stage_version`, `params_json` (the
/// [`canonical_json`] of the resolved parameters the stage reads), the `inputs` (keys of the
/// input artifacts, in the order the stage uses them) and the crate version.
pub fn stage_key(stage: &str, stage_version: u32, params_json: &str, inputs: &[&str]) -> String {
    let version = env!("CARGO_PKG_VERSION");
    stage_key_of(stage, stage_version, params_json, inputs, version)
}

/// [`stage_key`] as the crate at `crate_version` computed it.
fn stage_key_of(
    stage: &str,
    stage_version: u32,
    params_json: &str,
    inputs: &[&str],
    crate_version: &str,
) -> String {
    let mut h = Sha256::new();
    let mut put = |b: &[u8]| {
        h.update((b.len() as u64).to_le_bytes());
        h.update(b);
    };
    put(KEY_DOMAIN);
    put(stage.as_bytes());
    put(&stage_version.to_le_bytes());
    put(params_json.as_bytes());
    put(&(inputs.len() as u64).to_le_bytes());
    for i in inputs {
        put(i.as_bytes());
    }
    put(crate_version.as_bytes());
    hex::encode(h.finalize())
}

impl Artifact {
    /// Whether its key is the stage key of what it records (stage, version, parameters, inputs,
    /// and the crate version of its provenance): false for an entry changed after it was made
    /// (a damaged meta file, an edited export), which would otherwise be served under that key.
    pub fn key_is_its_own(&self) -> bool {
        let inputs: Vec<&str> = self.inputs.iter().map(String::as_str).collect();
        let (stage, version, params) = (&self.stage, self.stage_version, &self.config_json);
        let crate_version = &self.provenance.crate_version;
        self.key == stage_key_of(stage, version, params, &inputs, crate_version)
    }
}

/// Why [`Artifact::key_is_its_own`] is false, for messages.
pub(super) const NOT_ITS_OWN_KEY: &str =
    "its key is not the stage key of the stage, parameters and inputs it records (it was changed)";

/// A stage about to be computed: what its result is keyed on and what will be recorded with it.
/// Build it before computing: unless [`Stage::wall_seconds`] is given, the wall time recorded is
/// the time from [`Stage::new`] to the put.
#[derive(Debug, Clone)]
pub struct Stage {
    pub(super) name: String,
    version: u32,
    config_json: String,
    inputs: Vec<String>,
    pub(super) key: String,
    run: Option<String>,
    device: String,
    libtorch: String,
    started: Instant,
    wall_seconds: Option<f64>,
}

impl Stage {
    /// `stage` at `version` reading the resolved parameters `params`, computed from the
    /// artifacts `inputs` (their keys, in order), keyed by [`stage_key`].
    pub fn new<C: Serialize + ?Sized>(
        stage: &str,
        version: u32,
        params: &C,
        inputs: &[&str],
    ) -> Result<Stage> {
        Ok(Stage::canonical(
            stage,
            version,
            canonical_json(params)?,
            inputs,
        ))
    }
    /// [`Stage::new`] of parameters already in [`canonical_json`].
    pub fn canonical(stage: &str, version: u32, config_json: String, inputs: &[&str]) -> Stage {
        Stage {
            name: stage.to_string(),
            version,
            key: stage_key(stage, version, &config_json, inputs),
            config_json,
            inputs: inputs.iter().map(|s| s.to_string()).collect(),
            run: None,
            device: "unspecified".into(),
            libtorch: "unspecified".into(),
            started: Instant::now(),
            wall_seconds: None,
        }
    }
    /// The artifact key.
    pub fn key(&self) -> &str {
        &self.key
    }
    /// The run the result belongs to: a put also appends the key to that run (which must exist).
    pub fn run(mut self, run_id: &str) -> Stage {
        self.run = Some(run_id.to_string());
        self
    }
    /// The device and libtorch version to record (e.g. [`crate::device::describe`] and
    /// [`crate::device::libtorch_version`]).
    pub fn device(mut self, device: impl Into<String>, libtorch: impl Into<String>) -> Stage {
        (self.device, self.libtorch) = (device.into(), libtorch.into());
        self
    }
    /// The wall time to record instead of the time since [`Stage::new`].
    pub fn wall_seconds(mut self, seconds: f64) -> Stage {
        self.wall_seconds = Some(seconds);
        self
    }

    /// What the put of its result with `kind` records.
    pub(super) fn artifact(&self, kind: ArtifactKind) -> Artifact {
        let wall = self
            .wall_seconds
            .unwrap_or_else(|| self.started.elapsed().as_secs_f64());
        // Microseconds: short decimals survive a JSON round trip (export/import) bit for bit.
        let wall = (wall * 1e6).round() / 1e6;
        Artifact {
            key: self.key.clone(),
            stage: self.name.clone(),
            stage_version: self.version,
            kind,
            inputs: self.inputs.clone(),
            config_json: self.config_json.clone(),
            provenance: Provenance::capture(&self.device, &self.libtorch, wall),
            run: self.run.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    /// An artifact made for a stage has its own key; a change to anything the key is computed
    /// from (stage, version, parameters, inputs, crate version) makes it not its own.
    #[test]
    fn a_changed_entry_no_longer_has_its_own_key() {
        let stage = Stage::new("x", 2, &serde_json::json!({"seed": 1}), &["in"]).unwrap();
        let a = stage.artifact(ArtifactKind::Record(vec![1]));
        assert!(a.key_is_its_own());
        let changes: [fn(&mut Artifact); 5] = [
            |a| a.stage.push('y'),
            |a| a.stage_version += 1,
            |a| a.config_json = r#"{"seed":2}"#.into(),
            |a| a.inputs.push("other".into()),
            |a| a.provenance.crate_version.push('9'),
        ];
        for change in changes {
            let mut b = a.clone();
            change(&mut b);
            assert!(!b.key_is_its_own(), "{b:?}");
        }
    }

    #[test]
    fn json_is_sorted_and_floats_exact() {
        #[derive(serde::Serialize)]
        struct C {
            z: f64,
            a: Option<u8>,
            m: HashMap<String, f32>,
            e: E,
        }
        #[derive(serde::Serialize)]
        enum E {
            V { y: i32, x: f64 },
        }
        let m: HashMap<String, f32> = (0..20)
            .map(|i| (format!("k{i:02}"), i as f32 / 4.0))
            .collect();
        let c = C {
            z: 0.1,
            a: None,
            m,
            e: E::V { y: -1, x: -0.0 },
        };
        let json = canonical_json(&c).unwrap();
        assert!(
            json.starts_with(r#"{"a":null,"e":{"V":{"x":-0.0,"y":-1}},"m":{"k00":0.0,"k01":0.25,"#),
            "{json}"
        );
        assert!(json.ends_with(r#""k19":4.75},"z":0.1}"#), "{json}");
    }
}
