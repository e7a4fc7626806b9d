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
    _group: Arc<Group>,
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
        let mut ptr = std::ptr::null_mut();
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
                )
            },
            "gradient buckets",
        )?;
        Ok(GradBuckets { ptr, _group: group })
    }

    /// Arms the next backward pass: its gradients are summed over the ranks as they come, and
    /// written back into the parameters' `.grad` when it ends.
    fn arm(&self) -> Result<()> {
        // SAFETY: a live Reducer.
        check(unsafe { ipirm_reducer_arm(self.ptr) }, "gradient buckets")
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
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        through_one_buffer(&grads, |flat| self.group.all_reduce_sum(flat))
    }

    /// Every rank takes rank 0's running statistics.
    pub fn broadcast_buffers(&self) -> Result<()> {
        for kind in [Kind::Float, Kind::Int64, Kind::Double] {
            let of_kind: Vec<Tensor> = self
                .buffers
                .iter()
                .filter(|b| b.kind() == kind)
                .map(Tensor::shallow_clone)
                .collect();
            if !of_kind.is_empty() {
                through_one_buffer(&of_kind, |flat| self.group.broadcast(flat, 0))?;
            }
        }
        Ok(())
    }
}

/// `collective` run once on all of `tensors` (one dtype) concatenated into one flat buffer,
/// whose result is copied back into them: one call over the wire instead of one per tensor.
fn through_one_buffer(
    tensors: &[Tensor],
    collective: impl FnOnce(&Tensor) -> Result<()>,
) -> Result<()> {
    let _guard = tch::no_grad_guard();
    let flat = Tensor::cat(
        &tensors.iter().map(|t| t.reshape([-1])).collect::<Vec<_>>(),
        0,
    );
    collective(&flat)?;
    let mut offset = 0;
    for t in tensors {
        let n = t.numel() as i64;
        let mut t = t.shallow_clone();
        t.f_copy_(&flat.narrow(0, offset, n).view_as(&t))?;
        offset += n;
    }
    Ok(())
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
