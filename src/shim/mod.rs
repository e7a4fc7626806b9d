//! What tch 0.24 does not bind, from a small C++ file (`shim.cpp`, compiled by `build.rs`
//! against the same libtorch): autocast with a chosen dtype on the CPU and on CUDA, the TF32
//! switches, the channels_last memory format, and whether a GPU computes in bf16 natively.
//!
//! Everything here is safe to call (the FFI is here and, for c10d, in `crate::distributed`). A libtorch
//! error comes back as [`crate::Error::Torch`], never as an abort. Tensors cross as tch's own
//! `at::Tensor*` ([`Tensor::as_ptr`]); a tensor the shim creates is a `new at::Tensor` that
//! [`Tensor::from_ptr`] takes over (tch frees it with `delete`, as its own).
//!
//! Not here, on purpose: CUDA graphs and a side stream to overlap augmentation with the step.
//! They pay only if launch overhead or augmentation shows in a GPU profile, which has not been
//! measured (docs/BENCHMARKS.md lists what is left to measure).
use std::ffi::{c_char, c_int, c_void, CStr};
use std::marker::PhantomData;

use tch::{Device, Kind, Tensor};

use crate::{Error, Result};

extern "C" {
    fn ipirm_shim_free_error(e: *mut c_char);
    fn ipirm_quiet_cpp_backtraces();
    fn ipirm_autocast_state(
        device: c_int,
        enabled: *mut bool,
        dtype: *mut c_int,
        cache: *mut bool,
    ) -> *mut c_char;
    fn ipirm_autocast_set(device: c_int, enabled: bool, dtype: c_int, cache: bool) -> *mut c_char;
    fn ipirm_autocast_increment_nesting(depth: *mut c_int) -> *mut c_char;
    fn ipirm_autocast_decrement_nesting(depth: *mut c_int) -> *mut c_char;
    fn ipirm_autocast_clear_cache() -> *mut c_char;
    fn ipirm_tf32_get(matmul: *mut bool, cudnn_conv: *mut bool) -> *mut c_char;
    fn ipirm_tf32_set(matmul: bool, cudnn: bool) -> *mut c_char;
    fn ipirm_contiguous(t: *const c_void, format: c_int, out: *mut *mut c_void) -> *mut c_char;
    fn ipirm_is_contiguous(t: *const c_void, format: c_int, out: *mut bool) -> *mut c_char;
    fn ipirm_set_memory_format_(t: *mut c_void, format: c_int) -> *mut c_char;
    fn ipirm_cuda_bf16_supported(index: c_int, out: *mut bool) -> *mut c_char;
}

/// Turns the shim's error convention (NULL, or a malloc'd message) into a `Result`.
fn check(err: *mut c_char) -> Result<()> {
    match take_error(err) {
        None => Ok(()),
        Some(msg) => Err(Error::Torch(tch::TchError::Torch(msg))),
    }
}

/// The message of a C++ entry point's error return (NULL, or a malloc'd string, freed here):
/// the convention of `shim.cpp` and of `src/distributed/c10d.cpp`.
pub(crate) fn take_error(err: *mut c_char) -> Option<String> {
    if err.is_null() {
        return None;
    }
    // SAFETY: a non-null return is a NUL-terminated string the C++ side malloc'd for us to free.
    let msg = unsafe { CStr::from_ptr(err) }
        .to_string_lossy()
        .into_owned();
    unsafe { ipirm_shim_free_error(err) };
    Some(msg)
}

/// libtorch's errors without the C++ frames they carry (tch's messages, c10d's warnings while a
/// rank waits to connect); the line naming the function that raised them stays. Kept when
/// `TORCH_SHOW_CPP_STACKTRACES=1`, PyTorch's switch for them. Call it once, before any work.
pub fn quiet_cpp_backtraces() {
    if std::env::var("TORCH_SHOW_CPP_STACKTRACES").is_ok_and(|v| v == "1") {
        return;
    }
    // SAFETY: replaces a process-global function pointer in c10; no tensor is involved.
    unsafe { ipirm_quiet_cpp_backtraces() }
}

/// The device type autocast keys on: CPU or CUDA.
fn device_type(device: Device) -> Result<c_int> {
    match device {
        Device::Cpu => Ok(0),
        Device::Cuda(_) => Ok(1),
        d => Err(Error::Shape(format!(
            "autocast here covers the CPU and CUDA, not {d:?}"
        ))),
    }
}

/// c10's ScalarType codes of the dtypes autocast takes.
fn scalar_type(kind: Kind) -> Result<c_int> {
    match kind {
        Kind::Half => Ok(5),
        Kind::Float => Ok(6),
        Kind::BFloat16 => Ok(15),
        k => Err(Error::Shape(format!(
            "autocast computes in bf16, fp16 or fp32, not {k:?}"
        ))),
    }
}

fn kind_of(code: c_int) -> Result<Kind> {
    match code {
        5 => Ok(Kind::Half),
        6 => Ok(Kind::Float),
        15 => Ok(Kind::BFloat16),
        c => Err(Error::Shape(format!(
            "libtorch reports autocast dtype code {c}"
        ))),
    }
}

/// Autocast's state for one device type (thread-local in libtorch).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AutocastState {
    pub enabled: bool,
    /// The dtype eligible operations compute in while enabled.
    pub kind: Kind,
    /// Whether casts of leaf tensors that require grad (the weights) are cached in the scope.
    pub cache: bool,
}

/// Autocast's state on this thread for `device`'s type.
pub fn autocast_state(device: Device) -> Result<AutocastState> {
    let (mut enabled, mut dtype, mut cache) = (false, 0, false);
    // SAFETY: plain out-pointers to locals.
    check(unsafe {
        ipirm_autocast_state(device_type(device)?, &mut enabled, &mut dtype, &mut cache)
    })?;
    Ok(AutocastState {
        enabled,
        kind: kind_of(dtype)?,
        cache,
    })
}

fn set_autocast(device: c_int, s: AutocastState) -> Result<()> {
    // SAFETY: plain values.
    check(unsafe { ipirm_autocast_set(device, s.enabled, scalar_type(s.kind)?, s.cache) })
}

/// An autocast scope: while it lives, eligible operations on `device`'s type (matmuls,
/// convolutions, linear layers) compute in its dtype, the others keep theirs, as inside
/// `torch.autocast(device_type, dtype)`. Dropping it restores the previous state and, when the
/// outermost scope closes, clears autocast's cache of cast weights (as `torch.autocast` does).
/// Scopes nest. Autocast's state is per thread, so the guard cannot be sent to another thread.
///
/// Autocast never changes a parameter's dtype: the weights stay fp32 (the optimizer's master
/// copy) and the gradients come back in fp32.
#[must_use = "autocast is on only while the guard lives"]
pub struct AutocastGuard {
    device: c_int,
    previous: AutocastState,
    _per_thread: PhantomData<*const ()>,
}

/// Opens an autocast scope on `device`'s type computing in `kind` (bf16, fp16 or fp32).
pub fn autocast(device: Device, kind: Kind) -> Result<AutocastGuard> {
    let d = device_type(device)?;
    scalar_type(kind)?;
    let previous = autocast_state(device)?;
    set_autocast(
        d,
        AutocastState {
            enabled: true,
            kind,
            cache: previous.cache,
        },
    )?;
    let mut depth = 0;
    // SAFETY: out-pointer to a local.
    if let Err(e) = check(unsafe { ipirm_autocast_increment_nesting(&mut depth) }) {
        set_autocast(d, previous)?;
        return Err(e);
    }
    Ok(AutocastGuard {
        device: d,
        previous,
        _per_thread: PhantomData,
    })
}

impl Drop for AutocastGuard {
    fn drop(&mut self) {
        let mut depth = 0;
        // SAFETY: out-pointer to a local. These calls only fail on a bad device code, which
        // `autocast` already refused; a failure here is reported, not propagated (drop).
        let r = check(unsafe { ipirm_autocast_decrement_nesting(&mut depth) })
            .and_then(|_| match depth {
                0 => check(unsafe { ipirm_autocast_clear_cache() }),
                _ => Ok(()),
            })
            .and_then(|_| set_autocast(self.device, self.previous));
        if let Err(e) = r {
            eprintln!("warning: restoring autocast's state failed: {e}");
        }
    }
}

/// The TF32 switches (CUDA only; the CPU never computes fp32 in TF32): cuBLAS matmuls and
/// cuDNN convolutions. libtorch's defaults: matmul off, cuDNN on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tf32 {
    pub matmul: bool,
    pub cudnn: bool,
}

/// The TF32 switches as libtorch reads them (its per-backend fp32 precision of CUDA matmuls and
/// convolutions).
pub fn tf32() -> Result<Tf32> {
    let (mut matmul, mut cudnn) = (false, false);
    // SAFETY: out-pointers to locals.
    check(unsafe { ipirm_tf32_get(&mut matmul, &mut cudnn) })?;
    Ok(Tf32 { matmul, cudnn })
}

/// Sets the TF32 switches (process-wide); see [`tf32_scope`] for a scoped change.
pub fn set_tf32(t: Tf32) -> Result<()> {
    // SAFETY: plain values.
    check(unsafe { ipirm_tf32_set(t.matmul, t.cudnn) })
}

/// Restores the TF32 switches it found when dropped.
#[must_use = "the switches are restored when the guard drops"]
pub struct Tf32Guard {
    previous: Tf32,
}

/// Sets the TF32 switches to `t` until the guard drops. The switches are process-wide: scopes
/// on two threads at once see each other's.
pub fn tf32_scope(t: Tf32) -> Result<Tf32Guard> {
    let previous = tf32()?;
    set_tf32(t)?;
    Ok(Tf32Guard { previous })
}

impl Drop for Tf32Guard {
    fn drop(&mut self) {
        if let Err(e) = set_tf32(self.previous) {
            eprintln!("warning: restoring the TF32 switches failed: {e}");
        }
    }
}

/// Memory layouts of a 4-d tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemoryFormat {
    /// N×C×H×W row-major (PyTorch's default).
    Contiguous,
    /// N×H×W×C in memory, same logical shape (cuDNN's and oneDNN's preferred layout).
    ChannelsLast,
}

impl MemoryFormat {
    fn code(self) -> c_int {
        match self {
            MemoryFormat::Contiguous => 0,
            MemoryFormat::ChannelsLast => 2,
        }
    }
}

/// `t.contiguous(memory_format=format)`: `t` itself when already laid out so, else a copy.
pub fn contiguous(t: &Tensor, format: MemoryFormat) -> Result<Tensor> {
    let mut out: *mut c_void = std::ptr::null_mut();
    // SAFETY: `t` outlives the call; on success `out` is a new at::Tensor* that we own.
    check(unsafe { ipirm_contiguous(t.as_ptr() as *const c_void, format.code(), &mut out) })?;
    Ok(unsafe { Tensor::from_ptr(out as *mut _) })
}

/// Whether `t` is laid out in `format` (a tensor can be both, e.g. with H = W = 1).
pub fn is_contiguous(t: &Tensor, format: MemoryFormat) -> Result<bool> {
    let mut out = false;
    // SAFETY: `t` outlives the call.
    check(unsafe { ipirm_is_contiguous(t.as_ptr() as *const c_void, format.code(), &mut out) })?;
    Ok(out)
}

/// Relays out a parameter in place (`param.data = param.contiguous(format)`, what
/// `nn.Module.to(memory_format=…)` does): the tensor keeps its identity, so every handle that
/// shares it (the VarStore's, the layer's, the optimizer's) sees the new layout. Values and
/// `requires_grad` are unchanged.
pub fn set_memory_format_(t: &mut Tensor, format: MemoryFormat) -> Result<()> {
    // SAFETY: `t` is a live tensor we hold mutably for the call.
    check(unsafe { ipirm_set_memory_format_(t.as_mut_ptr() as *mut c_void, format.code()) })
}

/// Whether CUDA device `index` computes in bf16 natively (compute capability 8.0 or later, as
/// libtorch's CUDA hooks report it); false where libtorch has no CUDA backend or no such device.
pub fn cuda_bf16_supported(index: usize) -> Result<bool> {
    let mut out = false;
    let index = c_int::try_from(index).unwrap_or(c_int::MAX);
    // SAFETY: out-pointer to a local.
    check(unsafe { ipirm_cuda_bf16_supported(index, &mut out) })?;
    Ok(out)
}
