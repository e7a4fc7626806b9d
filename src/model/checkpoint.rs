//! Checkpoint files into a model: ours (`model.safetensors`, the variables under the names the
//! model gives them) or the reference's (`torch.save(model.state_dict())` of an
//! `nn.DataParallel(Model)`: names prefixed `module.`, BatchNorm's `num_batches_tracked`, and for
//! `linear.py`'s classifier a `fc.weight`/`fc.bias` beside the encoder), or a training state
//! stored by a run (its blob under the store's `objects/`: the model's variables prefixed
//! [`MODEL_PREFIX`] beside Adam's state, which is left out).
use std::io::Read;
use std::path::Path;

use tch::{nn, Tensor};

use crate::{Error, Result};

/// Which kind of file a checkpoint is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// safetensors (ours, and anything written by `ipirm checkpoint import`).
    Safetensors,
    /// A PyTorch state_dict (`.pth`, zip format).
    Torch,
}

/// The prefix of the model's variables in a stored training state (`crate::train::checkpoint`),
/// before Adam's `adam.*`.
pub const MODEL_PREFIX: &str = "model.";

/// How a file of the legacy `torch.save` format begins (`_use_new_zipfile_serialization=False`,
/// the only format before PyTorch 1.6): pickle protocol 2, then the magic number
/// 0x1950a86a20f9469cfc6c as a 10-byte LONG1.
const LEGACY_TORCH_MAGIC: &[u8] = b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19";

/// The named tensors of a checkpoint file, with the reference's naming undone: a `module.`
/// prefix dropped, `num_batches_tracked` counters left out. A tensor holding NaN or infinite
/// values is refused by name (a checkpoint saved from a diverged run, or damaged).
pub fn read(path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    // The first bytes: a zip's signature, or the legacy format's beginning.
    let mut head = Vec::new();
    std::fs::File::open(path)
        .and_then(|f| {
            f.take(LEGACY_TORCH_MAGIC.len() as u64)
                .read_to_end(&mut head)
        })
        .map_err(|e| Error::io(path, e))?;
    if head == LEGACY_TORCH_MAGIC {
        return Err(Error::file(
            path,
            "a PyTorch state_dict in the zip format torch.save writes by default since PyTorch 1.6",
            "the legacy format (torch.save with _use_new_zipfile_serialization=False, or PyTorch \
             < 1.6), which ipirm does not read; convert it with PyTorch: \
             torch.save(torch.load(OLD, map_location=\"cpu\"), NEW)",
        ));
    }
    let (format, named) = if head.starts_with(b"PK\x03\x04") {
        (Format::Torch, super::torch_file::read_state_dict(path)?)
    } else {
        let named = Tensor::read_safetensors(path).map_err(|e| {
            Error::file(
                path,
                "a checkpoint: ipirm's model.safetensors or a PyTorch state_dict (.pth)",
                format!("neither ({e})"),
            )
        })?;
        (Format::Safetensors, named)
    };
    if let Some((name, bad, of)) = crate::tensor_file::first_non_finite(&named)? {
        return Err(Error::file(
            path,
            "finite weights",
            format!(
                "NaN or infinite values in `{name}` ({bad} of {of}): a checkpoint saved from a \
                 diverged run, or damaged"
            ),
        ));
    }
    // A stored training state: its model's variables alone.
    let state = named.iter().any(|(n, _)| n.starts_with("adam."))
        && (named.iter())
            .all(|(n, _)| n.starts_with(MODEL_PREFIX) || n.starts_with("adam.") || n == "epoch");
    let named = named
        .into_iter()
        .filter_map(|(n, t)| match state {
            true => Some((n.strip_prefix(MODEL_PREFIX)?.to_string(), t)),
            false => Some((n, t)),
        })
        .filter(|(n, _)| !n.ends_with(".num_batches_tracked"))
        .map(|(n, t)| {
            (
                n.strip_prefix("module.").map(str::to_string).unwrap_or(n),
                t,
            )
        })
        .collect();
    Ok((format, named))
}

/// Copies the tensors of the checkpoint at `path` into the variables of `vs` (a [`super::Model`]
/// of the configured shape): every encoder variable (`f.*`) must be there with its shape, and
/// every head variable (`g.*`) too unless the file is a classifier checkpoint (`linear.py`
/// saves the encoder and `fc.*` only; the head is then left as it was), floating point where the
/// model's is, and a BatchNorm's `running_var` not negative. The classifier's tensors are
/// returned; any other tensor the model does not have is refused.
pub fn load_into(vs: &nn::VarStore, path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    let (format, mut named) = read(path)?;
    let classifier = named.iter().any(|(n, _)| n.starts_with("fc."));
    let _guard = tch::no_grad_guard();
    let mut vars: Vec<(String, Tensor)> = vs.variables().into_iter().collect();
    vars.sort_by(|a, b| a.0.cmp(&b.0));
    for (name, mut var) in vars {
        let Some(i) = named.iter().position(|(n, _)| *n == name) else {
            if classifier && name.starts_with("g.") {
                continue;
            }
            return Err(Error::file(
                path,
                format!(
                    "a tensor `{name}` of shape {:?} (the configured model's)",
                    var.size()
                ),
                "none (are model.arch and model.width right?)",
            ));
        };
        let (_, t) = named.swap_remove(i);
        if t.size() != var.size() {
            return Err(Error::file(
                path,
                format!("`{name}` of shape {:?}", var.size()),
                format!(
                    "shape {:?} (is the config the one it was trained with? model.arch, \
                     model.width, model.feature_dim)",
                    t.size()
                ),
            ));
        }
        // Of the model's kind: a float weight from integers or booleans is no weight.
        if t.is_floating_point() != var.is_floating_point() {
            return Err(Error::file(
                path,
                format!("`{name}` of kind {:?}", var.kind()),
                format!("kind {:?}", t.kind()),
            ));
        }
        // BatchNorm divides by the square root of its running variance.
        if name.ends_with(".running_var") && t.lt(0.0).any().int64_value(&[]) != 0 {
            return Err(Error::file(
                path,
                format!("`{name}`, a variance, without negative values"),
                format!("a minimum of {}", t.min().double_value(&[])),
            ));
        }
        var.f_copy_(&t.f_to_kind(var.kind())?)?;
    }
    if let Some((name, _)) = named.iter().find(|(n, _)| !n.starts_with("fc.")) {
        return Err(Error::file(
            path,
            "only the configured model's tensors (and a classifier's fc.*)",
            format!("an unexpected tensor `{name}`"),
        ));
    }
    named.sort_by(|a, b| a.0.cmp(&b.0));
    if !named.is_empty() {
        check_classifier(path, &named)?;
    }
    Ok((format, named))
}

/// A classifier (the `fc.*` tensors, sorted by name) must be `fc.bias` [classes] and `fc.weight`
/// [classes, features], both floating point: `linear.py`'s `nn.Linear`.
fn check_classifier(path: &Path, fc: &[(String, Tensor)]) -> Result<()> {
    let names: Vec<&str> = fc.iter().map(|(n, _)| n.as_str()).collect();
    if names != ["fc.bias", "fc.weight"] {
        return Err(Error::file(
            path,
            "a classifier of exactly `fc.weight` and `fc.bias`",
            format!("the classifier tensors {}", names.join(", ")),
        ));
    }
    let (b, w) = (&fc[0].1, &fc[1].1);
    let fits =
        w.dim() == 2 && b.size() == [w.size()[0]] && w.is_floating_point() && b.is_floating_point();
    if !fits {
        return Err(Error::file(
            path,
            "a classifier `fc.weight` [classes, features] and `fc.bias` [classes] of floats",
            format!(
                "fc.weight {:?} {:?}, fc.bias {:?} {:?}",
                w.size(),
                w.kind(),
                b.size(),
                b.kind()
            ),
        ));
    }
    Ok(())
}
