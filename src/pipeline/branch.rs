//! Branching a run from a stored partition (`--from-partition`): the spec resolved to the
//! partition and the checkpoint it was learned from, and the checks that the branch fits the
//! run's data and model.
use serde_json::Value;

use super::artifacts::short;
use super::stages::{Branch, StageKind};
use crate::config::Config;
use crate::store::{Found, Store};
use crate::train::ipirm::PartitionRecord;
use crate::{Error, Result};

/// Resolves `--from-partition` (`ipirm.from_partition`): a partition's key (or a unique prefix
/// of at least 4 characters), or `RUN@EPOCH`, the partition a run (id or name) learned after
/// EPOCH training epochs.
pub fn resolve_branch(store: &Store, spec: &str) -> Result<Branch> {
    let flag = "ipirm.from_partition";
    let key = match spec.rsplit_once('@') {
        Some((run, epoch)) => {
            let epoch: usize = epoch.parse().map_err(|_| {
                Error::config(
                    flag,
                    format!("`{spec}`: expected KEY or RUN@EPOCH with EPOCH a number"),
                )
            })?;
            let run = store.resolve_run(run)?;
            let mut found = None;
            for key in &run.artifacts {
                let Some(a) = store.get_meta(key)? else {
                    continue;
                };
                if a.stage == StageKind::Partition.name()
                    && partition_epoch(store, key)? == Some(epoch)
                {
                    found = Some(key.clone());
                }
            }
            found.ok_or_else(|| {
                Error::config(
                    flag,
                    format!(
                        "run {} has no stored partition learned after epoch {epoch}",
                        run.id
                    ),
                )
            })?
        }
        None => match store.find(spec)? {
            Found::Artifact(a) if a.stage == StageKind::Partition.name() => a.key,
            Found::Artifact(a) => {
                return Err(Error::config(
                    flag,
                    format!("`{spec}` is a {} artifact, not a partition", a.stage),
                ))
            }
            Found::Run(r) => {
                return Err(Error::config(
                    flag,
                    format!(
                        "`{spec}` names run {}; give RUN@EPOCH to pick one of its partitions",
                        r.id
                    ),
                ))
            }
        },
    };
    let a = store
        .get_meta(&key)?
        .ok_or_else(|| Error::Store(format!("partition {key} left the store")))?;
    let checkpoint = a
        .inputs
        .first()
        .cloned()
        .ok_or_else(|| Error::Store(format!("partition {key} names no checkpoint")))?;
    let after_epoch = partition_epoch(store, &key)?.ok_or_else(|| {
        Error::Store(format!(
            "partition {key} does not say after which epoch it was learned"
        ))
    })?;
    if !store.contains(&checkpoint)? {
        return Err(Error::config(flag, format!("the checkpoint partition {} was learned from ({checkpoint}) is no longer in the store", short(&key))));
    }
    Ok(Branch {
        partition: key,
        checkpoint,
        after_epoch,
    })
}

/// Refuses a branch whose checkpoint was trained with another model than this run's (its
/// tensors would not fit), or whose partition does not assign this run's training images: one
/// row per image is required. A partition learned on other images of the same count is allowed
/// (the branch's keys name it), with a note.
pub(super) fn check_branch(
    store: &Store,
    cfg: &Config,
    b: &Branch,
    dataset_key: &str,
    images: i64,
) -> Result<()> {
    let flag = "ipirm.from_partition";
    check_branch_model(store, cfg, b)?;
    let rec = store
        .get_typed::<PartitionRecord>(&b.partition)?
        .ok_or_else(|| {
            Error::config(
                flag,
                format!(
                    "partition {} is no longer in the store",
                    short(&b.partition)
                ),
            )
        })?;
    let rows = rec.partition.size()[0];
    if rows != images {
        return Err(Error::config(
            flag,
            format!(
                "partition {} assigns {rows} training images, but this run trains on {images} (check data.train_limit and data.dataset)",
                short(&b.partition)
            ),
        ));
    }
    // Partitions stored before the dataset was among their inputs name none.
    let mut learned_on = None;
    for k in store.get_meta(&b.partition)?.map_or(vec![], |a| a.inputs) {
        if store
            .get_meta(&k)?
            .is_some_and(|a| a.stage == StageKind::Dataset.name())
        {
            learned_on = Some(k);
        }
    }
    if learned_on.is_some_and(|k| k != dataset_key) {
        eprintln!(
            "note: partition {} was learned on other data than this run's (same number of images)",
            short(&b.partition)
        );
    }
    Ok(())
}

/// The model keys that set a tensor's shape must be those the branch's checkpoint recorded.
fn check_branch_model(store: &Store, cfg: &Config, b: &Branch) -> Result<()> {
    let Some(a) = store.get_meta(&b.checkpoint)? else {
        return Ok(());
    };
    let recorded = serde_json::from_str::<Value>(&a.config_json).ok();
    let Some(theirs) = recorded.as_ref().and_then(|v| v.get("model")) else {
        return Ok(());
    };
    let ours = serde_json::to_value(&cfg.model).expect("a config serialises");
    for key in ["arch", "width", "head_hidden", "feature_dim"] {
        match (theirs.get(key), ours.get(key)) {
            (Some(t), Some(o)) if t != o => {
                let text = |v: &Value| v.as_str().map_or(v.to_string(), String::from);
                let (t, o) = (text(t), text(o));
                return Err(Error::config(
                    "ipirm.from_partition",
                    format!(
                        "the branch continues checkpoint {}, trained with model.{key}={t}, but this run has model.{key}={o}: give the model settings of the run it branches from",
                        short(&b.checkpoint)
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(())
}

/// After which epoch a stored partition was learned, from its header (or its tensors, for a
/// partition stored without metadata).
fn partition_epoch(store: &Store, key: &str) -> Result<Option<usize>> {
    if let Some(e) = store
        .tensor_meta(key)?
        .and_then(|m| m.get("after_epoch").and_then(|v| v.parse().ok()))
    {
        return Ok(Some(e));
    }
    Ok(store
        .get_tensors(key)?
        .and_then(|t| t.into_iter().find(|(n, _)| n == "after_epoch"))
        .map(|(_, t)| t.int64_value(&[0]) as usize))
}
