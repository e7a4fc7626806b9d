//! The ranks' check that they run the same job: before any collective that depends on the
//! settings, every rank all-gathers a description of what it is about to do (its resolved
//! config without where the data and the store live, the fingerprint of the data it read, the
//! crate version, the backend, how gradients are summed and the kind of device) and compares it with rank 0's. A rank
//! with other settings would otherwise train under mixed settings while rank 0 stores the
//! result under its own keys, or die in a collective whose shapes differ.
use serde_json::{json, Value};
use tch::{Device, Kind, Tensor};

use super::Group;
use crate::config::{json_leaves as leaves, Config};
use crate::{Error, Result};

/// What a rank runs: the description [`agree`] compares, from the config as the command line
/// gave it (before rank 0 resolves a branch or the numerics). `dataset` is the sha256 of the
/// images and labels the rank read.
pub fn description(cfg: &Config, dataset: &str, device: Device, group: &Group) -> Result<Value> {
    let mut c = cfg.clone();
    // Where the data lives may differ by machine (the content is compared); only rank 0 uses
    // the store.
    c.data.data_dir = None;
    c.store = Default::default();
    let mut d = serde_json::to_value(&c)
        .map_err(|e| Error::Dist(format!("the config does not serialise: {e}")))?;
    d["data sha256 (of the images read)"] = json!(dataset);
    d["ipirm version"] = json!(env!("CARGO_PKG_VERSION"));
    d["backend"] = json!(group.backend().name());
    d["gradient sums (--bucket-cap-mb)"] = json!(group.grad_sync().describe());
    d["device"] = json!(if device.is_cuda() { "cuda" } else { "cpu" });
    Ok(d)
}

/// All-gathers every rank's `description` and fails on every rank, naming the first setting
/// that differs from rank 0's and the rank that has it, unless all agree.
pub fn agree(group: &Group, description: &Value) -> Result<()> {
    let mine = serde_json::to_vec(description).expect("JSON serialises");
    let len = Tensor::from_slice(&[mine.len() as i64]);
    let lens = group.all_gather(&len)?;
    let lens: Vec<i64> = Vec::<i64>::try_from(lens.flatten(0, -1))?;
    let longest = lens.iter().copied().max().unwrap_or(0);
    let padded = Tensor::zeros([longest], (Kind::Uint8, Device::Cpu));
    padded
        .narrow(0, 0, mine.len() as i64)
        .copy_(&Tensor::from_slice(&mine));
    let all = group.all_gather(&padded)?;
    let first = |rank: usize| -> Result<Value> {
        let row = all.get(rank as i64).narrow(0, 0, lens[rank]);
        let bytes = Vec::<u8>::try_from(row)?;
        serde_json::from_slice(&bytes)
            .map_err(|e| Error::Dist(format!("rank {rank}'s settings do not parse: {e}")))
    };
    let reference = leaves(&first(0)?);
    for rank in 1..group.world() {
        let other = leaves(&first(rank)?);
        // Settings (`section.key`) first, then what follows from them (the data, the version).
        let mut keys: Vec<&String> = reference.keys().chain(other.keys()).collect();
        keys.sort_by_key(|k| (!k.contains('.'), *k));
        if let Some(k) = keys
            .into_iter()
            .find(|k| reference.get(*k) != other.get(*k))
        {
            let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(absent)".into());
            return Err(Error::Dist(format!(
                "rank {rank} runs with other settings than rank 0: {k} is {} on rank {rank} and {} on rank 0; every rank must run the same command (but --rank) on the same data and ipirm version",
                show(other.get(k)),
                show(reference.get(k))
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn leaves_are_dotted_paths() {
        let l = leaves(&json!({"train": {"lr": 0.5, "milestones": [5, 25]}, "b": null}));
        let want: Vec<(&str, &str)> = vec![
            ("b", "null"),
            ("train.lr", "0.5"),
            ("train.milestones", "[5,25]"),
        ];
        let got: Vec<(&str, &str)> = l.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        assert_eq!(got, want);
    }
}
