//! Data-parallel training on several processes (ranks), on PyTorch's own distributed engine:
//! c10d's TCPStore rendezvous and its Gloo or NCCL process group (`c10d.cpp`, compiled by
//! build.rs).
//!
//! How a run is split, and why it matches the reference's two-GPU `nn.DataParallel`:
//! - Every rank reads the data and draws the same random numbers, so every rank augments (and
//!   MixUp-s) the same global batch; each then forwards its chunk of it, the chunks `torch.chunk`
//!   would give ([`Group::chunk`]), and the projections are all-gathered: every rank computes
//!   the same loss on the global batch (negatives from all ranks), with gradients flowing into
//!   its own chunk only. The gradients are summed over ranks ([`StepSync`]: in DDP's buckets
//!   while backward runs, or in one flat buffer after it, [`GradSync`]), so every rank takes the
//!   same Adam step.
//! - BatchNorm normalises each rank's chunk (per-rank statistics) and the running statistics are
//!   rank 0's, broadcast after every step: on two ranks exactly what DataParallel did on two
//!   GPUs, i.e. one process with `model.bn_splits = 2`. The effective split count is what the
//!   config records ([`crate::fit`]), so a run's keys do not depend on the world size where its
//!   result does not. `model.sync_bn` instead normalises with the global batch's statistics,
//!   summed over the ranks (SyncBatchNorm: one process with `bn_splits = 1`).
//! - Rank 0 drives: it runs the pipeline and the store (the only rank that reads or writes it),
//!   learns every partition, runs the kNN monitor and the evaluations. The other ranks serve
//!   ([`crate::train::serve`]): they wait for rank 0's next command (an epoch, with the partitions to train
//!   on and, after a resume, the training state; a sharded feature extraction for an offline
//!   maximize step; or an online maximize step, whose views rank 0 sends batch by batch) and
//!   take part in it.
//!
//! This module knows nothing of training: a trainer is handed a [`Group`]
//! ([`crate::train::Trainer::with_group`]), and the work rank 0 shares with the others is the
//! trainer's protocol (`train/ranks.rs`). The group has one owner, the command that joined it.
//!
//! Launch ([`Launch`]): `--world-size N` alone spawns N local ranks ([`spawn_local`]); each rank
//! of a multi-machine job gets `--rank R --world-size N --master ADDR:PORT`, or `torchrun`'s
//! environment (`RANK`, `WORLD_SIZE`, `MASTER_ADDR`, `MASTER_PORT`, `LOCAL_RANK`).
use std::ffi::{c_char, c_int, c_void, CString};
use std::time::Duration;

use tch::{Device, Tensor};

use crate::{Error, Result};

mod agree;
mod launch;
mod step;

pub use agree::{agree, description};

pub use launch::{spawn_local, take_back_cores, Launch, Mode};
pub use step::{GradBuckets, StepSync};

extern "C" {
    fn ipirm_dist_new(
        host: *const c_char,
        port: c_int,
        rank: c_int,
        world: c_int,
        backend: c_int,
        connect_timeout_ms: i64,
        op_timeout_ms: i64,
        out: *mut *mut c_void,
    ) -> *mut c_char;
    fn ipirm_dist_drop(g: *mut c_void);
    fn ipirm_dist_allreduce_sum(g: *mut c_void, t: *mut c_void) -> *mut c_char;
    fn ipirm_dist_broadcast(g: *mut c_void, t: *mut c_void, root: c_int) -> *mut c_char;
    fn ipirm_dist_allgather(g: *mut c_void, t: *const c_void, out: *mut *mut c_void)
        -> *mut c_char;
    fn ipirm_dist_barrier(g: *mut c_void) -> *mut c_char;
    fn ipirm_dist_allreduce_sum_grad(
        g: *mut c_void,
        t: *const c_void,
        out: *mut *mut c_void,
    ) -> *mut c_char;
}

/// How long a collective may wait: the other ranks wait in one while rank 0 works alone (a
/// maximize step, the kNN monitor), so this is long; a rank that dies is noticed sooner (its
/// sockets close, or the launcher ends the job).
pub const OP_TIMEOUT: Duration = Duration::from_secs(6 * 3600);

/// The process group's implementation (`--dist-backend`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Gloo: collectives on CPU tensors (and CUDA tensors through host copies).
    Gloo,
    /// NCCL: collectives on CUDA tensors, GPU to GPU.
    Nccl,
}

impl Backend {
    /// `--dist-backend` (`auto`, `nccl` or `gloo`) for a rank that trains on `device`: `auto` is
    /// NCCL for CUDA devices and Gloo on the CPU; NCCL on the CPU is refused by name.
    pub fn choose(flag: &str, device: Device) -> Result<Backend> {
        match (flag, device.is_cuda()) {
            ("auto", true) | ("nccl", true) => Ok(Backend::Nccl),
            ("auto", false) | ("gloo", _) => Ok(Backend::Gloo),
            ("nccl", false) => Err(Error::config(
                "--dist-backend",
                "nccl runs collectives between GPUs, and this rank trains on the CPU: use gloo (or auto)",
            )),
            (other, _) => Err(Error::config(
                "--dist-backend",
                format!("`{other}`: expected auto, nccl or gloo"),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Gloo => "gloo",
            Backend::Nccl => "nccl",
        }
    }
}

/// One c10d process group (this process's rank in it).
pub struct Group {
    ptr: *mut c_void,
    rank: usize,
    world: usize,
    backend: Backend,
    /// NCCL's collectives take tensors on this rank's GPU: CPU tensors are staged there.
    stage_on: Option<Device>,
    /// How the ranks sum their gradients (`--bucket-cap-mb`).
    grad_sync: GradSync,
}

/// How the ranks sum their gradients at each optimizer step (`--bucket-cap-mb`, DDP's
/// `bucket_cap_mb`). Either way every rank ends with the same sums (tested within 1e-6).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum GradSync {
    /// As DistributedDataParallel: c10d's Reducer fills buckets of at most this many MiB as the
    /// backward pass produces the gradients, and sums each full bucket over the ranks while
    /// backward goes on ([`GradBuckets`]).
    Buckets { cap_mb: f64 },
    /// One all-reduce of every gradient in one flat buffer, after the backward passes
    /// (`--bucket-cap-mb 0`).
    Flat,
}

impl GradSync {
    /// DDP's default bucket size, 25 MiB.
    pub const DEFAULT: GradSync = GradSync::Buckets { cap_mb: 25.0 };

    /// From `--bucket-cap-mb`: 0 for the flat all-reduce, else the buckets' size in MiB.
    pub fn from_cap_mb(mb: f64) -> Result<GradSync> {
        if mb == 0.0 {
            Ok(GradSync::Flat)
        } else if mb.is_finite() && mb > 0.0 {
            Ok(GradSync::Buckets { cap_mb: mb })
        } else {
            Err(Error::config(
                "--bucket-cap-mb",
                format!("{mb}: expected a size in MiB above 0, or 0 for one flat all-reduce after backward"),
            ))
        }
    }

    /// Buckets need every parameter's gradient from every rank at each step, so every rank
    /// must forward some rows of a batch of `batch_size` (in `torch.chunk`'s chunks over
    /// `world` ranks); the flat all-reduce gives a rank without rows zero gradients.
    pub fn check_rows(self, batch_size: i64, world: usize) -> Result<()> {
        let (b, w) = (batch_size, world as i64);
        let empty = (0..w).find(|&r| chunk_of(b, w, r).1 == 0);
        match (self, empty) {
            (GradSync::Buckets { .. }, Some(r)) => Err(Error::config(
                "train.batch_size",
                format!(
                    "{b} split over {w} ranks in chunks of {} (as torch.chunk splits it) leaves \
                     rank {r} no rows, and gradient buckets need every rank's gradients: use a \
                     multiple of {w}, or --bucket-cap-mb 0 (one flat all-reduce)",
                    (b + w - 1) / w
                ),
            )),
            _ => Ok(()),
        }
    }

    /// What the ranks compare ([`agree`]): every rank must sum its gradients the same way.
    pub fn describe(self) -> String {
        match self {
            GradSync::Buckets { cap_mb } => format!("buckets of {cap_mb} MiB"),
            GradSync::Flat => "one flat all-reduce".into(),
        }
    }
}

// SAFETY: the C++ group is never changed after it is made (c10d.cpp), and c10d's Store and
// Backend take calls from several threads (PyTorch's DistributedDataParallel makes them from
// autograd's threads, as the backward of `all_reduce_sum_grad` does here).
unsafe impl Send for Group {}
unsafe impl Sync for Group {}

impl Drop for Group {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from ipirm_dist_new and is dropped once.
        unsafe { ipirm_dist_drop(self.ptr) }
    }
}

fn check(err: *mut c_char, what: &str) -> Result<()> {
    match crate::shim::take_error(err) {
        None => Ok(()),
        Some(msg) => Err(Error::Dist(format!("{what}: {msg}"))),
    }
}

impl Group {
    /// Joins the group `launch` describes with `backend`: rendezvous at its master within its
    /// timeout; every rank must ask for the same backend (checked there, by name). `device`:
    /// the rank's training device.
    pub fn connect(launch: &Launch, backend: Backend, device: Device) -> Result<Group> {
        let host = CString::new(launch.master_addr.clone())
            .map_err(|_| Error::config("--master", "an address without NUL bytes"))?;
        let mut ptr = std::ptr::null_mut();
        let ms = |d: Duration| d.as_millis().min(i64::MAX as u128) as i64;
        // SAFETY: valid C string and out-pointer; the shim copies what it keeps.
        let err = unsafe {
            ipirm_dist_new(
                host.as_ptr(),
                launch.master_port as c_int,
                launch.rank as c_int,
                launch.world as c_int,
                (backend == Backend::Nccl) as c_int,
                ms(launch.connect_timeout),
                ms(OP_TIMEOUT),
                &mut ptr,
            )
        };
        let hint = match launch.rank {
            0 => "is the port free, and the other ranks started?",
            _ => "is rank 0 running there, and the port open?",
        };
        check(err, "").map_err(|e| {
            Error::Dist(format!(
                "rank {} of {} could not join the group at {}:{} within {} s ({hint}){e}",
                launch.rank,
                launch.world,
                launch.master_addr,
                launch.master_port,
                launch.connect_timeout.as_secs()
            ))
        })?;
        Ok(Group {
            ptr,
            rank: launch.rank,
            world: launch.world,
            backend,
            stage_on: (backend == Backend::Nccl).then_some(device),
            grad_sync: GradSync::DEFAULT,
        })
    }

    /// This group with its ranks summing gradients as `grad_sync` says (default: DDP's buckets).
    pub fn with_grad_sync(mut self, grad_sync: GradSync) -> Group {
        self.grad_sync = grad_sync;
        self
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    pub fn grad_sync(&self) -> GradSync {
        self.grad_sync
    }

    /// `t` where this group's collectives take it: itself, or (NCCL) a copy on the rank's GPU.
    fn staged(&self, t: &Tensor) -> Tensor {
        match self.stage_on {
            Some(d) if t.device() != d => t.to_device(d),
            _ => contiguous_view(t),
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn world(&self) -> usize {
        self.world
    }

    /// `t` ← the sum of every rank's `t` (in place; same shape and dtype on every rank).
    pub fn all_reduce_sum(&self, t: &Tensor) -> Result<()> {
        let c = self.staged(t);
        // SAFETY: a live tensor handle; c10d writes into its storage.
        check(
            unsafe { ipirm_dist_allreduce_sum(self.ptr, c.as_ptr() as *mut c_void) },
            "all-reduce",
        )?;
        copy_back(t, &c)
    }

    /// `t` ← rank `root`'s `t` (in place).
    pub fn broadcast(&self, t: &Tensor, root: usize) -> Result<()> {
        let c = self.staged(t);
        // SAFETY: as above.
        check(
            unsafe { ipirm_dist_broadcast(self.ptr, c.as_ptr() as *mut c_void, root as c_int) },
            "broadcast",
        )?;
        copy_back(t, &c)
    }

    /// Every rank's `t` (same shape everywhere), stacked: world × shape.
    pub fn all_gather(&self, t: &Tensor) -> Result<Tensor> {
        let c = self.staged(t).contiguous();
        let mut out = std::ptr::null_mut();
        // SAFETY: a live tensor handle; on success `out` is a new at::Tensor we take over.
        check(
            unsafe { ipirm_dist_allgather(self.ptr, c.as_ptr() as *const c_void, &mut out) },
            "all-gather",
        )?;
        let all = unsafe { Tensor::from_ptr(out as *mut _) };
        Ok(all.to_device(t.device()))
    }

    /// The sum of every rank's `t` as a new tensor, differentiable: its backward sums the
    /// incoming gradients over the ranks (SyncBatchNorm's statistics, `model.sync_bn`). `t` must
    /// be on a device the backend takes (the GPU for NCCL).
    pub fn all_reduce_sum_grad(&self, t: &Tensor) -> Result<Tensor> {
        let mut out = std::ptr::null_mut();
        // SAFETY: a live tensor handle; on success `out` is a new at::Tensor we take over. The
        // group outlives the autograd graph that holds it: the trainer that owns both drops the
        // graph with each step.
        check(
            unsafe {
                ipirm_dist_allreduce_sum_grad(self.ptr, t.as_ptr() as *const c_void, &mut out)
            },
            "all-reduce (sync_bn)",
        )?;
        Ok(unsafe { Tensor::from_ptr(out as *mut _) })
    }

    pub fn barrier(&self) -> Result<()> {
        // SAFETY: a live group.
        check(unsafe { ipirm_dist_barrier(self.ptr) }, "barrier")
    }

    /// This rank's rows of a global batch of `b`: the chunk `torch.chunk(b, world)` gives it,
    /// as (start, length); length 0 when the batch has fewer chunks than ranks.
    pub fn chunk(&self, b: i64) -> (i64, i64) {
        chunk_of(b, self.world as i64, self.rank as i64)
    }

    /// `forward` of this rank's chunk of the global batch `x`, all-gathered into the global
    /// result (rows in `x`'s order); gradients flow into this rank's rows only. `forward` maps
    /// a chunk to one row per sample.
    pub fn sharded(&self, x: &Tensor, forward: impl Fn(&Tensor) -> Tensor) -> Result<Tensor> {
        let b = x.size()[0];
        let w = self.world as i64;
        let c = (b + w - 1) / w;
        let (start, len) = self.chunk(b);
        // The output's row shape, from this rank's chunk (every rank but one with an empty
        // chunk has at least one row; an empty chunk still forwards, to learn the shape).
        let local = forward(&x.narrow(0, start, len));
        let mut padded_shape = local.size();
        padded_shape[0] = c;
        let padded = Tensor::zeros(padded_shape.as_slice(), (local.kind(), local.device()));
        if len > 0 {
            padded.narrow(0, 0, len).copy_(&local.detach());
        }
        let all = self.all_gather(&padded)?;
        let mut parts = Vec::with_capacity(self.world);
        for r in 0..w {
            let (s, l) = chunk_of(b, w, r);
            if l == 0 {
                continue;
            }
            parts.push(match r == self.rank as i64 {
                true => local.shallow_clone(),
                false => all.get(r).narrow(0, 0, l),
            });
            let _ = s;
        }
        Ok(Tensor::cat(&parts, 0))
    }
}

/// A contiguous tensor sharing `t`'s storage where `t` is contiguous (else a copy).
fn contiguous_view(t: &Tensor) -> Tensor {
    match t.is_contiguous() {
        true => t.shallow_clone(),
        false => t.contiguous(),
    }
}

fn copy_back(t: &Tensor, c: &Tensor) -> Result<()> {
    if !t.is_contiguous() || t.device() != c.device() {
        let _guard = tch::no_grad_guard();
        let mut t = t.shallow_clone();
        t.f_copy_(c)?;
    }
    Ok(())
}

/// `torch.chunk`'s rows for chunk `r` of `w` over `b` rows: chunks of ⌈b/w⌉, the last smaller,
/// fewer than `w` when they run out.
pub fn chunk_of(b: i64, w: i64, r: i64) -> (i64, i64) {
    let c = (b + w - 1) / w.max(1);
    let start = (r * c).min(b);
    (start, c.min(b - start))
}

/// The per-rank split count of a `bn_splits` fitted to `world` ranks ([`crate::fit`]).
pub fn local_bn_splits(bn_splits: i64, world: usize) -> i64 {
    (bn_splits / world.max(1) as i64).max(1)
}

/// The device rank `local_rank` trains on when `device` is a GPU and the machine has `gpus`:
/// `cuda:LOCAL_RANK`, one rank per GPU. With Gloo, more ranks than GPUs share them in turn
/// (`cuda:LOCAL_RANK % gpus`: a check of several ranks on a one-GPU machine); NCCL refuses two
/// ranks on one GPU, so that is refused here by name.
pub fn rank_device(
    device: Device,
    local_rank: usize,
    gpus: usize,
    backend: Backend,
) -> Result<Device> {
    match device {
        Device::Cuda(_) if local_rank < gpus => Ok(Device::Cuda(local_rank)),
        Device::Cuda(_) if gpus == 0 => Err(Error::config(
            "--device",
            "this rank was asked to train on a GPU and libtorch sees none",
        )),
        Device::Cuda(_) => match backend {
            Backend::Gloo => Ok(Device::Cuda(local_rank % gpus)),
            Backend::Nccl => Err(Error::config(
                "--dist-backend",
                format!(
                    "nccl needs a GPU of its own for each rank on a machine: LOCAL_RANK {local_rank}, \
                     {gpus} GPU(s) here; use gloo to let ranks share a GPU"
                ),
            )),
        },
        d => Ok(d),
    }
}
