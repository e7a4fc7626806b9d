//! The trainer's side of data-parallel training around an optimizer step ([`StepSync`]): every
//! rank's gradients summed over the ranks, either in DistributedDataParallel's buckets while the
//! backward pass runs ([`GradBuckets`], c10d's Reducer) or in one flat all-reduce after it
//! ([`super::GradSync::Flat`]); then rank 0's BatchNorm statistics broadcast.
//!
//! With buckets, the backward pass whose end sums the gradients must be *armed* first
//! ([`StepSync::before_backward`]). A step whose own code runs several backward passes (the
//! MixUp step with `retain_group`, one per partition) leaves them unarmed, as DDP's `no_sync`
//! does: they only accumulate, and [`StepSync::reduce_gradients`] then runs one armed backward
//! of zero through every parameter, whose hooks sum the accumulated gradients. That step gains
//! nothing from overlap; the others (one backward a step) get it whole.
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex};

use tch::{Kind, Tensor};

use super::{check, Group};
use crate::{Error, Result};

extern "C" {
    fn ipirm_reducer_new(
        g: *mut c_void,
        params: *const *mut c_void,
        n: i64,
        cap: i64,
        first_cap: i64,
        out: *mut *mut c_void,
        buckets: *mut i64,
    ) -> *mut c_char;
    fn ipirm_reducer_arm(r: *mut c_void) -> *mut c_char;
    fn ipirm_reducer_drop(r: *mut c_void);
}

/// DDP's cap on the first bucket (the first parameters' gradients, the last to come), 1 MiB:
/// small, so that little is left to sum once backward ends.
const FIRST_BUCKET_BYTES: i64 = 1 << 20;

/// c10d's Reducer over a trainer's parameters: gradient buckets summed over the ranks while the
/// backward pass runs. Made once per trainer; its hooks stay on the parameters until it drops.
pub struct GradBuckets {
    ptr: *mut c_void,
    /// The group the Reducer sums over, kept alive as long as it is.
    group: Arc<Group>,
    buckets: usize,
}

// SAFETY: the Reducer guards its state with its own mutex (its hooks run in autograd's threads);
// ipirm arms it from the training thread only.
unsafe impl Send for GradBuckets {}
unsafe impl Sync for GradBuckets {}

impl Drop for GradBuckets {
    fn drop(&mut self) {
        // SAFETY: `ptr` came from ipirm_reducer_new and is dropped once.
        unsafe { ipirm_reducer_drop(self.ptr) }
    }
}

impl GradBuckets {
    /// A Reducer for `params` (the same order on every rank) in buckets of `cap_mb` MiB.
    pub fn new(group: Arc<Group>, params: &[Tensor], cap_mb: f64) -> Result<GradBuckets> {
        let cap = (cap_mb * (1u64 << 20) as f64).round().max(1.0) as i64;
        let ptrs: Vec<*mut c_void> = params.iter().map(|p| p.as_ptr() as *mut c_void).collect();
        let (mut ptr, mut buckets) = (std::ptr::null_mut(), 0i64);
        // SAFETY: live tensor handles (the Reducer copies them) and valid out-pointers.
        check(
            unsafe {
                ipirm_reducer_new(
                    group.ptr,
                    ptrs.as_ptr(),
                    ptrs.len() as i64,
                    cap,
                    FIRST_BUCKET_BYTES.min(cap),
                    &mut ptr,
                    &mut buckets,
                )
            },
            "gradient buckets",
        )?;
        Ok(GradBuckets {
            ptr,
            group,
            buckets: buckets as usize,
        })
    }

    /// How many buckets the parameters were put in (before the rebuild after the first step).
    pub fn buckets(&self) -> usize {
        self.buckets
    }

    /// Arms the next backward pass: its gradients are summed over the ranks as they come, and
    /// written back into the parameters' `.grad` when it ends.
    fn arm(&self) -> Result<()> {
        // SAFETY: a live Reducer.
        check(unsafe { ipirm_reducer_arm(self.ptr) }, "gradient buckets")
    }

    pub fn group(&self) -> &Group {
        &self.group
    }
}

/// Gradient sum and buffer broadcast around an optimizer step.
pub struct StepSync {
    pub group: Arc<Group>,
    /// The trainable parameters, in the optimizer's order.
    pub params: Vec<Tensor>,
    /// BatchNorm's running statistics (every variable that is not trained), in the same order
    /// on every rank.
    pub buffers: Vec<Tensor>,
    /// Where a collective inside the forward pass (SyncBatchNorm's) left its error, since a
    /// forward cannot return one: raised before the gradients are summed.
    pub forward_failure: Option<Arc<Mutex<Option<Error>>>>,
    /// The Reducer with [`super::GradSync::Buckets`]; `None`: one flat all-reduce.
    pub buckets: Option<Arc<GradBuckets>>,
}

impl StepSync {
    /// The error a collective of the forward pass left, if any.
    fn forward_failed(&self) -> Result<()> {
        match &self.forward_failure {
            Some(slot) => match slot.lock().unwrap_or_else(|p| p.into_inner()).take() {
                Some(e) => Err(e),
                None => Ok(()),
            },
            None => Ok(()),
        }
    }

    /// Before a step's one backward pass: with buckets, arms it (its gradients are summed over
    /// the ranks while it runs). Nothing with the flat all-reduce.
    pub fn before_backward(&self) -> Result<()> {
        self.forward_failed()?;
        match &self.buckets {
            Some(b) => b.arm(),
            None => Ok(()),
        }
    }

    /// After the step's backward passes, every parameter's gradient is the sum over the ranks.
    /// `armed`: the last backward was armed by [`StepSync::before_backward`] (with buckets, the
    /// sums are then already in place). Otherwise, with buckets, an armed backward of zero
    /// through every parameter sums what the unarmed passes accumulated; with the flat
    /// all-reduce, a parameter no forward reached on this rank gets a zero gradient first (a
    /// backward of 0·p), so that every rank steps the same parameters, then one all-reduce of
    /// every gradient in one flat buffer.
    pub fn reduce_gradients(&self, armed: bool) -> Result<()> {
        self.forward_failed()?;
        if let Some(b) = &self.buckets {
            if !armed {
                b.arm()?;
                zero_backward(self.params.iter())?;
            }
            return Ok(());
        }
        zero_backward(self.params.iter().filter(|p| !p.grad().defined()))?;
        let _guard = tch::no_grad_guard();
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad().reshape([-1])).collect();
        let flat = Tensor::cat(&grads, 0);
        self.group.all_reduce_sum(&flat)?;
        let mut offset = 0;
        for p in &self.params {
            let n = p.numel() as i64;
            let mut g = p.grad();
            g.f_copy_(&flat.narrow(0, offset, n).view_as(p))?;
            offset += n;
        }
        Ok(())
    }

    /// Every rank takes rank 0's running statistics.
    pub fn broadcast_buffers(&self) -> Result<()> {
        if self.buffers.is_empty() {
            return Ok(());
        }
        let _guard = tch::no_grad_guard();
        for kind in [Kind::Float, Kind::Int64, Kind::Double] {
            let of_kind: Vec<&Tensor> = self.buffers.iter().filter(|b| b.kind() == kind).collect();
            if of_kind.is_empty() {
                continue;
            }
            let flat = Tensor::cat(
                &of_kind.iter().map(|b| b.reshape([-1])).collect::<Vec<_>>(),
                0,
            );
            self.group.broadcast(&flat, 0)?;
            let mut offset = 0;
            for b in of_kind {
                let n = b.numel() as i64;
                let mut b = b.shallow_clone();
                b.f_copy_(&flat.narrow(0, offset, n).view_as(&b))?;
                offset += n;
            }
        }
        Ok(())
    }
}

/// A backward pass of zero through `params` (each gets 0 added to its gradient, created where
/// it had none; their gradient hooks run).
fn zero_backward<'a>(params: impl Iterator<Item = &'a Tensor>) -> Result<()> {
    let zeros: Vec<Tensor> = params.map(|p| p.sum(Kind::Float) * 0.0).collect();
    if !zeros.is_empty() {
        Tensor::stack(&zeros, 0).sum(Kind::Float).f_backward()?;
    }
    Ok(())
}
