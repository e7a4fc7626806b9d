//! Checkpoint files into a model: ours (`model.safetensors`, the variables under the names the
//! model gives them) or the reference's (`torch.save(model.state_dict())` of an
//! `nn.DataParallel(Model)`: names prefixed `module.`, BatchNorm's `num_batches_tracked`, and for
//! `linear.py`'s classifier a `fc.weight`/`fc.bias` beside the encoder).
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

/// The named tensors of a checkpoint file, with the reference's naming undone: a `module.`
/// prefix dropped, `num_batches_tracked` counters left out.
pub fn read(path: &Path) -> Result<(Format, Vec<(String, Tensor)>)> {
    let mut magic = [0u8; 4];
    let n = std::fs::File::open(path)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut magic))
        .map_err(|e| Error::io(path, e))?;
    let (format, named) = if n == 4 && &magic == b"PK\x03\x04" {
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
    let named = named
        .into_iter()
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
/// saves the encoder and `fc.*` only; the head is then left as it was). The classifier's
/// tensors are returned; any other tensor the model does not have is refused.
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
                format!("shape {:?}", t.size()),
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
    Ok((format, named))
}
