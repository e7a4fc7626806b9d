//! `ipirm maximize`: one offline maximize step on features read from a safetensors file, with
//! every check of that file's tensors, and of the output path, before any work.
use std::path::Path;

use tch::{Device, Tensor};

use super::output::{check_not_the_input, check_output_file};
use crate::config::Config;
use crate::{Error, Result};

/// `ipirm maximize`: one offline maximize step on features read from a safetensors file.
///
/// `input` holds float32 `z1` and `z2` (N×d, one row per sample, already L2-normalised),
/// optionally float32 `lam` with int64 `labels_aux` (N each: a MixUp step, `z1` the mixed view's
/// projections; see [`crate::train::maximize::maximize_offline_with_order`]), optionally `init` (N×env_num float32 logits: the starting partition; without it the start is
/// N(0,1) drawn from `maximize.seed`) and optionally `order` (int64, K×N: row `t` a permutation of
/// `0..N`, the batch order of epoch `t`, e.g. recorded from a reference run; the run fails if it
/// reaches an epoch `t ≥ K`). Without `order` the batch order is the one the reference's shuffling
/// `DataLoader` draws when `torch.manual_seed(maximize.seed)` is called right before
/// `utils.auto_split_offline` ([`ReferenceShuffle`](crate::train::maximize::ReferenceShuffle)),
/// so such a reference run with the same `init` and settings is reproduced.
/// `output` receives `partition` (N×env_num logits, the best found) and `risk` (epochs×4
/// float64: total, contrastive, penalty, constraint per epoch run).
pub fn maximize_file(
    input: &Path,
    output: &Path,
    cfg: &Config,
) -> Result<crate::train::maximize::MaximizeResult> {
    check_output_file(output, "--out")?;
    check_not_the_input(input, output, "--features")?;
    let named =
        tch::Tensor::read_safetensors(input).map_err(|e| match std::fs::metadata(input) {
            Err(io) => Error::io(input, io),
            Ok(_) => Error::file(
                input,
                "a safetensors file with float32 tensors z1, z2 (and optionally init)",
                e.to_string(),
            ),
        })?;
    let get = |name: &str| {
        named
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.shallow_clone())
    };
    let names: Vec<&str> = named.iter().map(|(n, _)| n.as_str()).collect();
    let bad = |what: String| Error::file(input, what, format!("tensors {names:?}"));
    let check = |name: &str, t: &Tensor| -> Result<()> {
        if t.kind() != tch::Kind::Float {
            return Err(Error::file(
                input,
                format!("`{name}` of dtype float32"),
                format!("{:?}", t.kind()),
            ));
        }
        if t.dim() != 2 {
            return Err(Error::file(
                input,
                format!("`{name}` with 2 dimensions (N×d)"),
                format!("shape {:?}", t.size()),
            ));
        }
        if t.isfinite().logical_not().any().int64_value(&[]) != 0 {
            return Err(Error::file(
                input,
                format!("`{name}` without NaN or infinite values"),
                "non-finite values".to_string(),
            ));
        }
        Ok(())
    };
    // The maximize step's logits are dot products of unit vectors; other scales overflow.
    let unit_rows = |name: &str, t: &Tensor| -> Result<()> {
        let dev = (t.norm_scalaropt_dim(2, [1], false) - 1.0).abs();
        let (worst, row) = (
            dev.max().double_value(&[]),
            dev.argmax(0, false).int64_value(&[]),
        );
        if worst > 1e-3 {
            let norm = t.get(row).norm().double_value(&[]);
            return Err(Error::file(
                input,
                format!("`{name}` with L2-normalised rows (norm 1 within 1e-3)"),
                format!("row {row} of norm {norm:e}"),
            ));
        }
        Ok(())
    };
    let z1 = get("z1").ok_or_else(|| bad("a tensor `z1` (N×d float32)".into()))?;
    let z2 = get("z2").ok_or_else(|| bad("a tensor `z2` (N×d float32)".into()))?;
    check("z1", &z1)?;
    check("z2", &z2)?;
    if z1.size() != z2.size() {
        return Err(Error::file(
            input,
            "`z1` and `z2` of the same shape",
            format!("{:?} and {:?}", z1.size(), z2.size()),
        ));
    }
    let n = z1.size()[0];
    if n < 2 || z1.size()[1] < 1 {
        return Err(Error::file(
            input,
            "`z1` and `z2` with at least 2 samples of at least 1 dimension",
            format!("shape {:?}", z1.size()),
        ));
    }
    unit_rows("z1", &z1)?;
    unit_rows("z2", &z2)?;
    let e = cfg.maximize.env_num;
    if e > n {
        return Err(Error::config(
            "maximize.env_num",
            format!(
                "{e} environments cannot be filled by the {n} samples of {}",
                input.display()
            ),
        ));
    }
    let init = match get("init") {
        Some(init) => {
            check("init", &init)?;
            if init.size() != [n, e] {
                return Err(Error::file(
                    input,
                    format!("`init` of shape [{n}, {e}] (N × maximize.env_num)"),
                    format!("{:?}", init.size()),
                ));
            }
            init
        }
        None => {
            tch::manual_seed(crate::rng::derive(cfg.maximize.seed, "maximize-init", 0));
            Tensor::randn([n, e], (tch::Kind::Float, tch::Device::Cpu))
        }
    };
    let mixup = file_mixup(input, get("lam"), get("labels_aux"), n)?;
    let order = file_order(input, get("order"), n, cfg)?;
    let pb = crate::progress::bar((cfg.maximize.max_epoch + 1) as u64, "maximize");
    let on_epoch = |t: usize, r: &crate::train::maximize::EpochRisk| {
        crate::progress::line(
            &pb,
            format!(
                "epoch {t}: risk {:.4} (contrastive {:.4}, penalty {:.6}, constraint {:.4})",
                r.total, r.contrastive, r.penalty, r.constraint
            ),
        );
        pb.inc(1);
    };
    let tau = cfg.maximize_temperature();
    let result = crate::train::maximize::maximize_offline_with_order(
        &z1,
        &z2,
        mixup.as_ref(),
        &init,
        &cfg.maximize,
        tau,
        order,
        on_epoch,
    )?;
    pb.finish_and_clear();
    crate::train::ipirm::check_finite(&result.risks, &result.partition, "the maximize step")?;
    let risk: Vec<f64> = result
        .risks
        .iter()
        .flat_map(|r| [r.total, r.contrastive, r.penalty, r.constraint])
        .collect();
    let risk = Tensor::from_slice(&risk).view([-1, 4]);
    Tensor::write_safetensors(&[("partition", &result.partition), ("risk", &risk)], output)
        .map_err(|e| {
            Error::file(
                output,
                "a writable path for the output safetensors",
                e.to_string(),
            )
        })?;
    Ok(result)
}

/// The batch order of `ipirm maximize`: the file's `order` (checked: int64 `[epochs, n]`, each row
/// a permutation of `0..n`), else the reference's DataLoader shuffle after
/// `torch.manual_seed(maximize.seed)`.
fn file_order(
    input: &Path,
    order: Option<Tensor>,
    n: i64,
    cfg: &Config,
) -> Result<Box<dyn Fn(usize) -> Result<Tensor>>> {
    let Some(order) = order else {
        let shuffle = crate::train::maximize::ReferenceShuffle::new(
            cfg.maximize.seed,
            n,
            cfg.maximize.max_epoch + 1,
        )?;
        return Ok(Box::new(move |t: usize| shuffle.order(t)));
    };
    if order.kind() != tch::Kind::Int64
        || order.dim() != 2
        || order.size()[1] != n
        || order.size()[0] < 1
    {
        return Err(Error::file(
            input,
            format!("`order` of dtype int64 and shape [epochs, {n}] (one permutation of 0..{n} per epoch)"),
            format!("{:?} of shape {:?}", order.kind(), order.size()),
        ));
    }
    let rows = order.size()[0];
    let sorted = order.sort(1, false).0;
    if !sorted.equal(&Tensor::arange(n, (tch::Kind::Int64, Device::Cpu)).expand([rows, n], false)) {
        return Err(Error::file(
            input,
            format!("`order` rows that are permutations of 0..{n}"),
            "a row that is not",
        ));
    }
    let input = input.to_path_buf();
    Ok(Box::new(move |t: usize| {
        if t as i64 >= rows {
            return Err(Error::file(
                &input,
                format!("an `order` row for epoch {t}"),
                format!("{rows} rows"),
            ));
        }
        Ok(order.get(t as i64))
    }))
}

/// The MixUp inputs of `ipirm maximize`: float32 `lam` (N, each in [0.5, 1] as the reference
/// draws it) with int64 `labels_aux` (N, each the index of the sample it was mixed with: checked,
/// though the offline loss reads only λ), or neither.
fn file_mixup(
    input: &Path,
    lam: Option<Tensor>,
    aux: Option<Tensor>,
    n: i64,
) -> Result<Option<Tensor>> {
    let (lam, aux) = match (lam, aux) {
        (None, None) => return Ok(None),
        (Some(l), Some(a)) => (l, a),
        _ => {
            return Err(Error::file(
                input,
                "`lam` and `labels_aux` together (a MixUp maximize step) or neither",
                "only one of them",
            ))
        }
    };
    if lam.kind() != tch::Kind::Float || lam.size() != [n] {
        return Err(Error::file(
            input,
            format!("`lam` of dtype float32 and shape [{n}]"),
            format!("{:?} of shape {:?}", lam.kind(), lam.size()),
        ));
    }
    let (lo, hi) = (lam.min().double_value(&[]), lam.max().double_value(&[]));
    if !(lo >= 0.5 && hi <= 1.0) {
        return Err(Error::file(
            input,
            "`lam` values in [0.5, 1] (λ = max(λ, 1 − λ))",
            format!("values in [{lo}, {hi}]"),
        ));
    }
    if aux.kind() != tch::Kind::Int64 || aux.size() != [n] {
        return Err(Error::file(
            input,
            format!("`labels_aux` of dtype int64 and shape [{n}]"),
            format!("{:?} of shape {:?}", aux.kind(), aux.size()),
        ));
    }
    let (lo, hi) = (aux.min().int64_value(&[]), aux.max().int64_value(&[]));
    if lo < 0 || hi >= n {
        return Err(Error::file(
            input,
            format!("`labels_aux` indices in 0..{n}"),
            format!("indices in {lo}..={hi}"),
        ));
    }
    Ok(Some(lam))
}
