//! Fitting a config to the machine that runs it: the one step every command that trains,
//! evaluates or plans keys takes first, and the only place these are decided:
//! - the numerics (`train.precision`, `channels_last`, `tf32`) resolved for the device
//!   ([`crate::numerics`]: `auto` becomes the device's best), written back into the config;
//! - `model.bn_splits` for the world size of a data-parallel run (each rank normalises at least
//!   its own chunk of every batch, unless `model.sync_bn` normalises the global batch);
//! - the whole config validated.
//!
//! What comes out ([`Fitted`]) is what the stages key on, what a run records and what the
//! trainer reads ([`Numerics::of_fitted`] refuses a config with `auto` left in it): nothing
//! downstream decides again.
use tch::Device;

use crate::config::Config;
use crate::numerics::Numerics;
use crate::Result;

/// A config fitted to a device and a world size.
#[derive(Debug, Clone)]
pub struct Fitted {
    /// The config with the numerics resolved and `model.bn_splits` fitted to the world.
    pub cfg: Config,
    pub device: Device,
    pub numerics: Numerics,
    /// Ranks of the data-parallel run (1: one process).
    pub world: usize,
    /// What fitting changed that a person should hear (printed by the command).
    pub notes: Vec<String>,
}

/// `cfg` fitted to `device` and `world` ranks (see the module doc). Idempotent.
pub fn fit(cfg: &Config, device: Device, world: usize) -> Result<Fitted> {
    let mut cfg = cfg.clone();
    let mut notes = Vec::new();
    // BatchNorm normalises at least each rank's chunk: the effective `model.bn_splits` is a
    // multiple of the world size (kept when it already is: 2 on 2 ranks is the reference's
    // DataParallel; else the world size). Each rank then splits its chunk `bn_splits / world`
    // ways ([`crate::distributed::local_bn_splits`]).
    let w = world.max(1) as i64;
    if w > 1 && cfg.model.bn_splits % w != 0 && !cfg.model.sync_bn {
        notes.push(format!(
            "model.bn_splits {} → {w}: each of the {w} ranks normalises its own chunk of the batch",
            cfg.model.bn_splits
        ));
        cfg.model.bn_splits = w;
    }
    let numerics = Numerics::resolve(&cfg.train, device)?;
    numerics.write_into(&mut cfg.train);
    cfg.validate()?;
    Ok(Fitted {
        cfg,
        device,
        numerics,
        world: world.max(1),
        notes,
    })
}
