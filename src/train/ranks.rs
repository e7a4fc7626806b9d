//! Rank 0 and the others in data-parallel training: rank 0 announces each piece of shared work with a [`Command`]
//! (broadcast with what it needs: the training state when the others do not hold it, the
//! partitions to train on); the other ranks [`serve`]: receive, take part, repeat until
//! [`Command::Done`].
use std::sync::Arc;

use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::distributed::{self, Group};
use crate::train::{Checkpoint, Trainer};
use crate::{Error, Result};

/// The shared work rank 0 can announce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// One training epoch over the partitions sent with it.
    Epoch,
    /// The view pairs of maximize step `step`, extracted sharded (offline maximize).
    Features(u64),
    /// Online maximize step `step`: rank 0 learns the partition and sends each batch's two
    /// views; every rank projects its chunk of them (`send_views`, `project_views`).
    Online(u64),
    /// Training is over: the other ranks exit.
    Done,
}

impl Command {
    fn encode(self) -> (i64, i64) {
        match self {
            Command::Epoch => (1, 0),
            Command::Features(step) => (2, step as i64),
            Command::Done => (3, 0),
            Command::Online(step) => (4, step as i64),
        }
    }
    fn decode(code: i64, arg: i64) -> Result<Command> {
        match code {
            1 => Ok(Command::Epoch),
            2 => Ok(Command::Features(arg as u64)),
            3 => Ok(Command::Done),
            4 => Ok(Command::Online(arg as u64)),
            c => Err(Error::Dist(format!("rank 0 sent an unknown command ({c})"))),
        }
    }
}

/// Rank 0: broadcasts `command`, then `state` (a [`Trainer::checkpoint`], when given: its epoch
/// in the header, its tensors in [`Checkpoint::to_named`]'s order) and the `partitions`
/// (N × env_num logits each).
pub(crate) fn send(
    g: &Group,
    command: Command,
    state: Option<&Checkpoint>,
    partitions: &[Tensor],
) -> Result<()> {
    let (code, arg) = command.encode();
    let epoch = state.map_or(0, |s| s.epoch as i64);
    let header = Tensor::from_slice(&[
        code,
        arg,
        state.is_some() as i64,
        partitions.len() as i64,
        epoch,
    ]);
    g.broadcast(&header, 0)?;
    for (_, t) in state.map(Checkpoint::to_named).unwrap_or_default() {
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
    let header = Tensor::zeros([5], (Kind::Int64, Device::Cpu));
    g.broadcast(&header, 0)?;
    let h: Vec<i64> = Vec::try_from(&header)?;
    let command = Command::decode(h[0], h[1])?;
    if h[2] != 0 {
        let mine = trainer.checkpoint().to_named();
        let mut theirs = Vec::with_capacity(mine.len());
        for (name, t) in mine {
            let buf = t.contiguous().zeros_like();
            g.broadcast(&buf, 0)?;
            theirs.push((name, buf));
        }
        trainer.restore(&Checkpoint::from_named(theirs, h[4] as usize)?)?;
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
    let data = cfg.load_training_data(device)?;
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
            Command::Online(_) => {
                let _guard = tch::no_grad_guard();
                let _tf32 = trainer.model.numerics().tf32_scope()?;
                while let Some(views) = receive_views(&g, device).map_err(lost)? {
                    // Rank 0 keeps the projections; this rank's part was its chunk.
                    let _ = project_views(&trainer, &views)?;
                }
            }
            Command::Done => return Ok(()),
        }
    }
}

/// Rank 0 during an online maximize step: the next batch's two views (both `B × C × H × W`,
/// float, on every rank's device), or `None` when the step is over.
pub(crate) fn send_views(g: &Group, views: Option<(&Tensor, &Tensor)>) -> Result<()> {
    let Some((v1, v2)) = views else {
        return g.broadcast(&Tensor::from_slice(&[0i64, 0, 0, 0, 0]), 0);
    };
    let mut header = vec![1i64];
    header.extend(v1.size());
    if header.len() != 5 || v2.size() != v1.size() {
        return Err(Error::Shape(format!(
            "online maximize: views of {:?} and {:?}, expected two equal B × C × H × W",
            v1.size(),
            v2.size()
        )));
    }
    g.broadcast(&Tensor::from_slice(&header), 0)?;
    for v in [v1, v2] {
        g.broadcast(&v.to_kind(Kind::Float).contiguous(), 0)?;
    }
    Ok(())
}

/// The other ranks: what [`send_views`] sent.
fn receive_views(g: &Group, device: Device) -> Result<Option<(Tensor, Tensor)>> {
    let header = Tensor::zeros([5], (Kind::Int64, Device::Cpu));
    g.broadcast(&header, 0)?;
    let h: Vec<i64> = Vec::try_from(&header)?;
    if h[0] == 0 {
        return Ok(None);
    }
    let mut views = Vec::with_capacity(2);
    for _ in 0..2 {
        let v = Tensor::zeros(&h[1..], (Kind::Float, device));
        g.broadcast(&v, 0)?;
        views.push(v);
    }
    let v2 = views.pop().expect("two views");
    Ok(Some((views.pop().expect("two views"), v2)))
}

/// Both views' projections (eval mode), each rank forwarding its chunk of the batch.
pub(crate) fn project_views(
    trainer: &Trainer,
    (v1, v2): &(Tensor, Tensor),
) -> Result<(Tensor, Tensor)> {
    let g = trainer.group();
    Ok((
        super::project_batch(&trainer.model, v1, false, g)?,
        super::project_batch(&trainer.model, v2, false, g)?,
    ))
}
