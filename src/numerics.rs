//! How the model computes on its device: the precision of its forward passes, the memory layout
//! of images and convolution weights, TF32 — `train.precision`, `train.channels_last` and
//! `train.tf32` resolved for the device.
//!
//! Resolution (`auto` = the device's best):
//! - precision `auto`: bf16 on a CUDA device that computes in bf16 natively (compute capability
//!   8.0 or later, as libtorch's CUDA hooks report it: decided at run time, so the crate needs
//!   no CUDA to build), fp32 on the CPU and on older GPUs;
//! - channels_last `auto`: on for CUDA (cuDNN's tensor-core convolutions want NHWC), off on the
//!   CPU (there it changes the last bits of results, within 1e-5, for no measured gain);
//! - tf32 `auto`: on for CUDA; always off on the CPU, which has no TF32.
//!
//! So on the CPU every default resolves to the fp32 path exactly as it was before these
//! settings existed: [`Numerics::is_plain`] holds and the model's forward makes no shim call.
//!
//! bf16 means autocast around the model's forward only: convolutions and linear layers compute
//! in bf16, the model's outputs are cast back to fp32 before they are normalised, so every loss
//! (the parity-tested math) runs in fp32, the weights stay fp32 (the optimizer's master copy) and
//! their gradients come back in fp32. Every command resolves the config once for its device
//! ([`crate::fit`]) before it plans stage keys and records the run, so the config a run records,
//! and the keys of its stages, hold the values actually used.
use tch::{Device, Kind, Tensor};

use crate::config::{Precision, Switch, TrainConfig};
use crate::shim::{self, AutocastGuard, MemoryFormat, Tf32, Tf32Guard};
use crate::Result;

/// The resolved settings of one device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Numerics {
    pub device: Device,
    /// The forward passes under bf16 autocast (else fp32).
    pub bf16: bool,
    /// Image batches and convolution weights in channels_last layout.
    pub channels_last: bool,
    /// TF32 for cuBLAS matmuls and cuDNN convolutions (CUDA only).
    pub tf32: bool,
}

impl Numerics {
    /// Plain fp32 on `device`: no autocast, default layout, TF32 off.
    pub fn fp32(device: Device) -> Numerics {
        Numerics {
            device,
            bf16: false,
            channels_last: false,
            tf32: false,
        }
    }

    /// `train`'s settings resolved for `device` (see the module doc).
    pub fn resolve(train: &TrainConfig, device: Device) -> Result<Numerics> {
        let cuda = device.is_cuda();
        let bf16 = match train.precision {
            Precision::Fp32 => false,
            Precision::Bf16 => true,
            Precision::Auto => match device {
                Device::Cuda(i) => shim::cuda_bf16_supported(i)?,
                _ => false,
            },
        };
        Ok(Numerics {
            device,
            bf16,
            channels_last: train.channels_last.or(cuda),
            tf32: cuda && train.tf32.or(true),
        })
    }

    /// The settings of a config fitted to `device` ([`crate::fit`]): read, not decided. A
    /// config with `auto` left in it was not fitted, and is refused.
    pub fn of_fitted(train: &TrainConfig, device: Device) -> Result<Numerics> {
        let auto = [
            ("train.precision", train.precision == Precision::Auto),
            ("train.channels_last", train.channels_last == Switch::Auto),
            ("train.tf32", train.tf32 == Switch::Auto),
        ];
        if let Some((key, _)) = auto.iter().find(|(_, a)| *a) {
            return Err(crate::Error::config(
                *key,
                "still `auto`: the config was not fitted to the machine (ipirm::fit::fit)",
            ));
        }
        Numerics::resolve(train, device)
    }

    /// The settings as a resolved config states them (no `auto` left).
    pub fn write_into(&self, train: &mut TrainConfig) {
        train.precision = if self.bf16 {
            Precision::Bf16
        } else {
            Precision::Fp32
        };
        train.channels_last = self.channels_last.into();
        train.tf32 = self.tf32.into();
    }

    /// Nothing to do: the fp32 path as it was before these settings existed.
    pub fn is_plain(&self) -> bool {
        !self.bf16 && !self.channels_last && !self.tf32
    }

    /// An image batch (N×C×H×W) laid out for the model: channels_last when set, else as is.
    pub fn input(&self, x: &Tensor) -> Result<Tensor> {
        match self.channels_last {
            true => shim::contiguous(x, MemoryFormat::ChannelsLast),
            false => Ok(x.shallow_clone()),
        }
    }

    /// A bf16 autocast scope on the device when bf16 is set.
    pub fn autocast(&self) -> Result<Option<AutocastGuard>> {
        match self.bf16 {
            true => shim::autocast(self.device, Kind::BFloat16).map(Some),
            false => Ok(None),
        }
    }

    /// On CUDA, the TF32 switches (matmul and cuDNN) set to [`Numerics::tf32`] until the guard
    /// drops; on the CPU nothing (no shim call). Held around whole training epochs and
    /// evaluations, since backward passes compute under it too.
    pub fn tf32_scope(&self) -> Result<Option<Tf32Guard>> {
        match self.device.is_cuda() {
            true => shim::tf32_scope(Tf32 {
                matmul: self.tf32,
                cudnn: self.tf32,
            })
            .map(Some),
            false => Ok(None),
        }
    }

    /// One line for logs and the bench: `precision bf16, channels_last on, tf32 on`.
    pub fn describe(&self) -> String {
        let on = |b: bool| if b { "on" } else { "off" };
        format!(
            "precision {}, channels_last {}, tf32 {}",
            if self.bf16 { "bf16" } else { "fp32" },
            on(self.channels_last),
            match self.device.is_cuda() {
                true => on(self.tf32),
                false => "off (CPU)",
            }
        )
    }
}

/// The settings as a stage key reads them: `None` for the plain fp32 path (so keys of such runs
/// are those from before these settings existed), else all three. A config not yet resolved
/// reads as on the CPU (`auto` = off), which is how the pipeline never plans: it resolves first.
pub fn key_params(train: &TrainConfig) -> Option<serde_json::Value> {
    let bf16 = train.precision == Precision::Bf16;
    let channels_last = train.channels_last == Switch::On;
    let tf32 = train.tf32 == Switch::On;
    (bf16 || channels_last || tf32).then(|| {
        serde_json::json!({
            "precision": if bf16 { "bf16" } else { "fp32" },
            "channels_last": channels_last,
            "tf32": tf32,
        })
    })
}
