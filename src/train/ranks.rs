//! Rank 0 and the others in data-parallel training: rank 0 announces each piece of shared work with a [`Command`]
//! (broadcast with what it needs: the training state when the others do not hold it, the
//! partitions to train on); the other ranks [`serve`]: receive, take part, repeat until
//! [`Command::Done`].
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::data::loader::RunData;
use crate::distributed::{self, Group};
use crate::train::Trainer;
use crate::{Error, Result};

/// The shared work rank 0 can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// One training epoch over the partitions sent with it.
    Epoch,
    /// The view pairs of maximize step `step`, extracted sharded (offline maximize).
    Features(u64),
    /// Training is over: the other ranks exit.
    Done,
}

impl Command {
    fn encode(self) -> (i64, i64) {
        match self {
            Command::Epoch => (1, 0),
            Command::Features(step) => (2, step as i64),
            Command::Done => (3, 0),
        }
    }
    fn decode(code: i64, arg: i64) -> Result<Command> {
        match code {
            1 => Ok(Command::Epoch),
            2 => Ok(Command::Features(arg as u64)),
            3 => Ok(Command::Done),
            c => Err(Error::Dist(format!("rank 0 sent an unknown command ({c})"))),
        }
    }
}

/// Rank 0: broadcasts `command`, then `state` (a [`Trainer::state`], when given) and the
/// `partitions` (N × env_num logits each).
pub(crate) fn send(
    g: &Group,
    command: Command,
    state: Option<&[(String, Tensor)]>,
    partitions: &[Tensor],
) -> Result<()> {
    let (code, arg) = command.encode();
    let header = Tensor::from_slice(&[code, arg, state.is_some() as i64, partitions.len() as i64]);
    g.broadcast(&header, 0)?;
    for (_, t) in state.unwrap_or_default() {
        g.broadcast(&t.contiguous(), 0)?;
    }
    for p in partitions {
        g.broadcast(&p.to_kind(Kind::Float).contiguous(), 0)?;
    }
    Ok(())
}

/// The other ranks: the next command, having loaded the state that came with it into `trainer`;
/// the partitions that came with it (`n` × `env_num` each, on `device`).
fn receive(
    g: &Group,
    trainer: &mut Trainer,
    n: i64,
    env_num: i64,
    device: Device,
) -> Result<(Command, Vec<Tensor>)> {
    let header = Tensor::zeros([4], (Kind::Int64, Device::Cpu));
    g.broadcast(&header, 0)?;
    let h: Vec<i64> = Vec::try_from(&header)?;
    let command = Command::decode(h[0], h[1])?;
    if h[2] != 0 {
        let mine = trainer.state();
        let mut theirs = Vec::with_capacity(mine.len());
        for (name, t) in mine {
            let buf = t.contiguous().zeros_like();
            g.broadcast(&buf, 0)?;
            theirs.push((name, buf));
        }
        trainer.load_state(&theirs)?;
    }
    let mut partitions = Vec::new();
    for _ in 0..h[3] {
        let p = Tensor::zeros([n, env_num], (Kind::Float, device));
        g.broadcast(&p, 0)?;
        partitions.push(p);
    }
    Ok((command, partitions))
}

/// A rank other than 0 of the group `g`: reads the training data as rank 0 does, then takes
/// part in whatever rank 0 announces until it is done. Writes nothing; prints only errors.
pub fn serve(cfg: &Config, device: Device, g: Arc<Group>) -> Result<()> {
    crate::progress::set_quiet();
    let data = RunData::load_for_training(cfg, device)?;
    distributed::agree(
        &g,
        &distributed::description(cfg, &data.fingerprint()?, device, &g)?,
    )?;
    let images = &data.train.images;
    let mut trainer = Trainer::with_group(cfg, device, g.clone())?;
    let n = images.size()[0];
    let lost = |e: Error| {
        Error::Dist(format!(
            "rank {} lost rank 0 (it failed or was stopped; its error says why): {e}",
            g.rank()
        ))
    };
    loop {
        let (command, partitions) =
            receive(&g, &mut trainer, n, cfg.maximize.env_num, device).map_err(lost)?;
        match command {
            Command::Epoch => {
                trainer.train_epoch_here(images, &partitions)?;
            }
            Command::Features(step) => {
                crate::train::ipirm::extract_view_pairs_here(&trainer, images, step)?;
            }
            Command::Done => return Ok(()),
        }
    }
}
