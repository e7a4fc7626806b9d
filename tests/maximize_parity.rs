//! Numerical parity of `ipirm::train::maximize` with the reference's `utils.auto_split_offline`.
//!
//! Fixtures: `tests/fixtures/maximize_*.safetensors`, regenerated from a checkout of
//! github.com/Wangt-CN/IP-IRM with
//!
//! ```sh
//! source scripts/env.sh && $IPIRM_PY tests/fixtures/gen_parity.py --ref /path/to/IP-IRM
//! ```
//!
//! The `maximize_long_*` fixtures (N = 600 to 1500, one batch per epoch, made by
//! `tests/fixtures/gen_maximize_long.py --ref /path/to/IP-IRM`) are described at `LONG_CASES`
//! below; their whole-run tests take minutes and are `#[ignore]`d.
//!
//! Each other fixture is one whole `auto_split_offline` call on fixed features (N = 64, d = 16) from a
//! fixed initial partition; it records the batch order the reference's shuffling `DataLoader` drew
//! each epoch, the risk, contrastive loss, penalty and constraint of every batch (read just before
//! each Adam step), the best epoch it reported, the partition it returned and the partition left in
//! the tensor it optimised. The run here replays the same batch orders and must match: per-epoch
//! means, the epoch count, the best epoch, and both partitions, at 1e-4 normwise relative error
//! (`max|ours − ref| / max|ref|`) in float32 on CPU.
use std::collections::HashMap;

use ipirm::config::{IrmMode, MaximizeConfig};
use ipirm::train::maximize::{
    maximize_offline, maximize_offline_with_order, EpochRisk, ReferenceShuffle,
};
use ipirm::{Error, Result};
mod common;
use common::parity::{fixture, get, rel_err};
use tch::{Device, Kind, Tensor};

const TOL: f64 = 1e-4;

/// The config the fixture's call used: the defaults (the reference's hard-coded LR 0.5,
/// milestones 5/35, γ 0.2, stop rule 50/5/60, batch 3096) plus the call's arguments.
fn config(f: &HashMap<String, Tensor>) -> (MaximizeConfig, f64) {
    // (The MixUp fixtures have no irm_temp and no IRM mode: their step reads neither.)
    let flag = |k: &str| f.get(k).is_some_and(|t| t.int64_value(&[]) != 0);
    let cfg = MaximizeConfig {
        irm_temp: f.get("irm_temp").map_or(0.5, |t| t.double_value(&[])),
        irm_weight: get(f, "irm_weight").double_value(&[]),
        env_num: get(f, "init").size()[1],
        irm_mode: if flag("irm_mode_v2") {
            IrmMode::V2
        } else {
            IrmMode::V1
        },
        constrain: flag("constrain"),
        constrain_relax: flag("constrain_relax"),
        nonorm: flag("nonorm"),
        batch_size: get(f, "batch_size").int64_value(&[]),
        ..MaximizeConfig::default()
    };
    (cfg, get(f, "tau").double_value(&[]))
}

/// Per-epoch means of the reference's per-batch records `[epoch, risk, cont, inv, cons, lr]`.
fn reference_epochs(steps: &Tensor) -> Vec<(EpochRisk, f64)> {
    let rows = Vec::<Vec<f64>>::try_from(steps).unwrap();
    let mut out: Vec<(EpochRisk, f64)> = Vec::new();
    let mut counts: Vec<f64> = Vec::new();
    for r in rows {
        let e = r[0] as usize;
        if out.len() == e {
            out.push((
                EpochRisk {
                    total: 0.0,
                    contrastive: 0.0,
                    penalty: 0.0,
                    constraint: 0.0,
                },
                r[5],
            ));
            counts.push(0.0);
        }
        let (acc, _) = &mut out[e];
        acc.total += r[1];
        acc.contrastive += r[2];
        acc.penalty += r[3];
        acc.constraint += r[4];
        counts[e] += 1.0;
    }
    for ((acc, _), k) in out.iter_mut().zip(counts) {
        acc.total /= k;
        acc.contrastive /= k;
        acc.penalty /= k;
        acc.constraint /= k;
    }
    out
}

fn run_parity(name: &str) {
    let f = fixture(name);
    let (cfg, tau) = config(&f);
    let orders = get(&f, "orders");
    let mut seen = Vec::new();
    let result = maximize_offline_with_order(
        get(&f, "z1"),
        get(&f, "z2"),
        None,
        get(&f, "init"),
        &cfg,
        tau,
        |epoch| Ok(orders.get(epoch as i64).copy()),
        |epoch, risk| seen.push((epoch, *risk)),
    )
    .unwrap();

    let reference = reference_epochs(get(&f, "steps"));
    assert_eq!(
        result.risks.len(),
        reference.len(),
        "{name}: number of epochs run"
    );
    assert_eq!(seen.len(), reference.len(), "{name}: on_epoch calls");
    let mut worst = [0f64; 4];
    for (epoch, (ours, (theirs, _lr))) in result.risks.iter().zip(&reference).enumerate() {
        assert_eq!(seen[epoch], (epoch, *ours));
        let pairs = [
            (ours.total, theirs.total),
            (ours.contrastive, theirs.contrastive),
            (ours.penalty, theirs.penalty),
            (ours.constraint, theirs.constraint),
        ];
        for (i, (a, b)) in pairs.into_iter().enumerate() {
            let err = if a == b {
                0.0
            } else {
                (a - b).abs() / b.abs().max(1e-30)
            };
            worst[i] = worst[i].max(err);
            assert!(
                err <= TOL,
                "{name} epoch {epoch} field {i}: ours {a} vs reference {b} (rel err {err:e})"
            );
        }
    }
    let best_epoch = get(&f, "best_epoch").int64_value(&[]) as usize;
    assert_eq!(result.best_epoch, best_epoch, "{name}: best epoch");
    let e_best = rel_err(&result.partition, get(&f, "best"));
    let e_last = rel_err(&result.last_partition, get(&f, "last"));
    println!(
        "{name:<22} epochs {:>2} best {:>2} | rel err: risk {:.2e} cont {:.2e} pen {:.2e} cons {:.2e} best P {:.2e} last P {:.2e}",
        result.risks.len(),
        result.best_epoch,
        worst[0],
        worst[1],
        worst[2],
        worst[3],
        e_best,
        e_last
    );
    assert!(e_best <= TOL, "{name}: best partition rel err {e_best:e}");
    assert!(e_last <= TOL, "{name}: last partition rel err {e_last:e}");

    let hard = get(&f, "best")
        .argmax(1, false)
        .bincount::<Tensor>(None, cfg.env_num);
    assert_eq!(
        result.env_sizes,
        Vec::<i64>::try_from(&hard).unwrap(),
        "{name}: env sizes"
    );
    assert_eq!(
        result.env_sizes.iter().sum::<i64>(),
        get(&f, "init").size()[0]
    );
}

#[test]
fn v1_relaxed_constraint_one_batch() {
    run_parity("maximize_v1");
}

#[test]
fn v2_variance_one_batch() {
    run_parity("maximize_v2");
}

#[test]
fn v1_nonorm_three_envs() {
    run_parity("maximize_v1_nonorm3");
}

#[test]
fn v1_three_batches_per_epoch_distinct_temperatures() {
    run_parity("maximize_v1_batches");
}

#[test]
fn random_order_runs_and_reports() {
    tch::manual_seed(0);
    let (n, d) = (40, 8);
    let z1 = Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let z2 = &z1 + 0.5 * Tensor::randn([n, d], (Kind::Float, Device::Cpu));
    let norm = |z: &Tensor| z / z.norm_scalaropt_dim(2, [1], true);
    let (z1, z2) = (norm(&z1), norm(&z2));
    let init = Tensor::randn([n, 2], (Kind::Float, Device::Cpu));
    // A trailing batch of one sample (40 = 3·13 + 1) is skipped, not turned into NaN.
    let cfg = MaximizeConfig {
        batch_size: 13,
        max_epoch: 6,
        ..MaximizeConfig::default()
    };
    let mut calls = 0;
    let r = maximize_offline(&z1, &z2, &init, &cfg, 0.5, |_, _| calls += 1).unwrap();
    assert_eq!(r.risks.len(), 7);
    assert_eq!(calls, 7);
    assert!(r
        .risks
        .iter()
        .all(|x| x.total.is_finite() && x.penalty >= 0.0));
    assert_eq!(r.partition.size(), [n, 2]);
    assert_eq!(r.env_sizes.iter().sum::<i64>(), n);
    let best = r
        .risks
        .iter()
        .map(|x| x.total)
        .fold(f64::INFINITY, f64::min);
    assert_eq!(r.risks[r.best_epoch].total, best);
    // The caller's initial partition is not modified.
    assert!(init.equal(&init.copy()));
}

#[test]
fn bad_inputs_are_refused() {
    let z = Tensor::randn([10, 4], (Kind::Float, Device::Cpu));
    let init = Tensor::randn([10, 2], (Kind::Float, Device::Cpu));
    let cfg = MaximizeConfig {
        max_epoch: 0,
        ..MaximizeConfig::default()
    };
    let shape_err = |r: Result<_>| matches!(r, Err(Error::Shape(_)));
    assert!(shape_err(maximize_offline(
        &z,
        &z.narrow(0, 0, 9),
        &init,
        &cfg,
        0.5,
        |_, _| {}
    )));
    assert!(shape_err(maximize_offline(
        &z,
        &z,
        &init.narrow(0, 0, 9),
        &cfg,
        0.5,
        |_, _| {}
    )));
    let three = MaximizeConfig {
        env_num: 3,
        ..cfg.clone()
    };
    assert!(shape_err(maximize_offline(
        &z,
        &z,
        &init,
        &three,
        0.5,
        |_, _| {}
    )));
    let not_perm = |_| Ok(Tensor::zeros([10], (Kind::Int64, Device::Cpu)));
    assert!(shape_err(maximize_offline_with_order(
        &z,
        &z,
        None,
        &init,
        &cfg,
        0.5,
        not_perm,
        |_, _| {}
    )));
    assert!(maximize_offline(&z, &z, &init, &cfg, 0.5, |_, _| {}).is_ok());
}

/// Speed check, not parity: `IPIRM_MAX_N` samples (default 4096) in batches of 3096 for two epochs
/// on the GPU when there is one, else on the CPU; prints seconds per epoch.
/// `cargo test --release --test maximize_parity -- --ignored --nocapture timing`
#[test]
#[ignore]
fn timing() {
    let n: i64 = std::env::var("IPIRM_MAX_N")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4096);
    let device = Device::cuda_if_available();
    tch::manual_seed(0);
    let norm = |z: Tensor| &z / z.norm_scalaropt_dim(2, [1], true);
    let z1 = norm(Tensor::randn([n, 128], (Kind::Float, device)));
    let z2 = norm(&z1 + 0.5 * Tensor::randn([n, 128], (Kind::Float, device)));
    let init = Tensor::randn([n, 2], (Kind::Float, device));
    let cfg = MaximizeConfig {
        max_epoch: 1,
        ..MaximizeConfig::default()
    };
    let start = std::time::Instant::now();
    let mut last = start;
    maximize_offline(&z1, &z2, &init, &cfg, 0.5, |epoch, risk| {
        let now = std::time::Instant::now();
        println!(
            "N = {n} on {device:?}: epoch {epoch} {:.2} s (risk {:.4})",
            (now - last).as_secs_f64(),
            risk.total
        );
        last = now;
    })
    .unwrap();
}

/// The online form with features that happen to be fixed is the offline form (same batch
/// orders; N a multiple of the batch, so dropping the last partial batch drops nothing).
#[test]
fn online_with_fixed_features_equals_offline() {
    use ipirm::train::maximize::{maximize_online_with_order, BatchFeatures};
    let cfg = MaximizeConfig {
        batch_size: 16,
        max_epoch: 6,
        ..MaximizeConfig::default()
    };
    let unit = |t: Tensor| &t / t.norm_scalaropt_dim(2, [1], true);
    let g = |seed: i64, n: i64, d: i64| {
        let x = Tensor::arange(n * d, (Kind::Float, Device::Cpu)) * (seed as f64 + 0.37);
        x.sin().view([n, d])
    };
    let (z1, z2, init) = (unit(g(1, 48, 8)), unit(g(2, 48, 8)), g(3, 48, 2));
    // A fixed order per epoch: a rotation of 0..48.
    let order = |e: usize| {
        Ok(Tensor::arange(48, (Kind::Int64, Device::Cpu)).roll([(7 * e as i64 + 5) % 48], [0]))
    };
    let off =
        maximize_offline_with_order(&z1, &z2, None, &init, &cfg, 0.5, order, |_, _| {}).unwrap();
    let features = |idx: &Tensor| {
        Ok(BatchFeatures::plain(
            z1.index_select(0, idx),
            z2.index_select(0, idx),
        ))
    };
    let on = maximize_online_with_order(
        48,
        &init,
        &cfg,
        0.5,
        Device::Cpu,
        order,
        features,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(off.risks, on.risks);
    assert_eq!(off.best_epoch, on.best_epoch);
    assert!(off.partition.equal(&on.partition));
    // and the online form drops a last partial batch, which the offline form keeps
    let cfg = MaximizeConfig {
        batch_size: 20,
        max_epoch: 0,
        ..cfg
    };
    let calls = std::cell::Cell::new(0);
    let counting = |idx: &Tensor| {
        calls.set(calls.get() + 1);
        assert_eq!(idx.size()[0], 20);
        Ok(BatchFeatures::plain(
            z1.index_select(0, idx),
            z2.index_select(0, idx),
        ))
    };
    maximize_online_with_order(
        48,
        &init,
        &cfg,
        0.5,
        Device::Cpu,
        order,
        counting,
        |_, _| {},
    )
    .unwrap();
    assert_eq!(calls.get(), 2);
}

/// Largest softmax-probability difference between two `N × E` logit tensors.
fn prob_err(ours: &Tensor, reference: &Tensor) -> f64 {
    let p = |t: &Tensor| t.detach().to_kind(Kind::Double).softmax(-1, Kind::Double);
    (p(ours) - p(reference)).abs().max().double_value(&[])
}

/// Largest relative difference of the per-epoch risks (total, contrastive, penalty; the constraint
/// absolute, it is often exactly 0) over the epochs both lists have.
fn risk_err(ours: &[EpochRisk], reference: &[(EpochRisk, f64)]) -> f64 {
    let rel = |a: f64, b: f64| {
        if a == b {
            0.0
        } else {
            (a - b).abs() / b.abs().max(1e-30)
        }
    };
    ours.iter()
        .zip(reference)
        .map(|(o, (r, _))| {
            rel(o.total, r.total)
                .max(rel(o.contrastive, r.contrastive))
                .max(rel(o.penalty, r.penalty))
                .max((o.constraint - r.constraint).abs())
        })
        .fold(0.0, f64::max)
}

/// The long-run fixtures (`tests/fixtures/gen_maximize_long.py`): one whole `auto_split_offline`
/// call of the reference each, N below its batch of 3096 (one batch per epoch), stopped by the
/// reference at epoch 60, `torch.manual_seed(seed)` right before the call. Replayed here with the
/// batch orders the reference recorded (`long_run_*`, `long_prefix_*`) and with the orders
/// re-derived from `seed` ([`ReferenceShuffle`]).
///
/// Measured on the machine that made the fixtures (x86-64, libtorch 2.11 CPU, float32): the replay
/// is bit for bit (probability error 0) for all three cases. Before the rounding fix (see
/// `maximize_offline_with_order`) the N = 1500 case ended 2.0e-4 off in probability. The
/// reference's own runs on 1 and 2 threads differ by 9.3e-5 (N = 1500), 4.2e-3 (N = 1000, three
/// environments, τ 0.2) and 1.2e-7 (nonorm) (`ref_repeat_prob_err`). The batch order matters
/// more: with the same features and `init`, two other shuffling seeds move the reference's own
/// result by 8.7e-3 and 1.2e-3 (N = 1500) and by 4.7e-2 and 6.2e-3 (N = 1000), the size of the
/// drift the issue reported for CLI runs, which shuffled differently.
const LONG_CASES: [&str; 3] = [
    "maximize_long_relax",
    "maximize_long_3env",
    "maximize_long_nonorm",
];

/// The fixture's whole run through `maximize_offline_with_order` with its recorded batch orders,
/// under the fixture's settings as `adjust` changes them.
fn replay(
    f: &HashMap<String, Tensor>,
    adjust: impl FnOnce(&mut MaximizeConfig),
) -> ipirm::train::maximize::MaximizeResult {
    let (mut cfg, tau) = config(f);
    adjust(&mut cfg);
    let orders = get(f, "orders");
    let order = |t: usize| Ok(orders.get(t as i64).copy());
    let (z1, z2, init) = (get(f, "z1"), get(f, "z2"), get(f, "init"));
    // A MixUp fixture (gen_maximize_mixup.py) has `lam`: auto_split_offline_mixuup.
    maximize_offline_with_order(z1, z2, f.get("lam"), init, &cfg, tau, order, |_, _| {}).unwrap()
}

/// The whole run: same epoch count, same best epoch, the best partition within 1e-4 in softmax
/// probability where the reference repeats itself that closely across thread counts, else 1e-3.
/// Each step at the long cases' sizes costs about as much as the reference's own (seconds at
/// N = 1500 on 2 CPU cores), so those tests are `#[ignore]`d (run them with
/// `cargo test --release --test maximize_parity -- --ignored long_run`); the smaller whole runs
/// below (`whole_run_*`, same settings, N ≤ 300) run by default.
fn run_long(name: &str) {
    let f = fixture(name);
    let start = std::time::Instant::now();
    let result = replay(&f, |_| {});
    let secs = start.elapsed().as_secs_f64();
    let reference = reference_epochs(get(&f, "steps"));
    let best_epoch = get(&f, "best_epoch").int64_value(&[]) as usize;
    let e_best = prob_err(&result.partition, get(&f, "best"));
    let e_last = prob_err(&result.last_partition, get(&f, "last"));
    let e_risk = risk_err(&result.risks, &reference);
    let repeat = get(&f, "ref_repeat_prob_err").double_value(&[]);
    println!(
        "{name}: {secs:.1} s, epochs {} (ref {}), best {} (ref {best_epoch}), risk rel err {e_risk:.1e}, \
         probability error best {e_best:.2e} last {e_last:.2e}; reference vs itself {repeat:.2e}",
        result.risks.len(),
        reference.len(),
        result.best_epoch
    );
    assert_eq!(
        result.risks.len(),
        reference.len(),
        "{name}: number of epochs run"
    );
    assert_eq!(result.best_epoch, best_epoch, "{name}: best epoch");
    assert!(e_risk <= 1e-4, "{name}: per-epoch risks off by {e_risk:e}");
    let tol = if repeat <= 1e-4 { 1e-4 } else { 1e-3 };
    assert!(
        e_best <= tol,
        "{name}: best partition probability error {e_best:e} > {tol:e}"
    );
    assert!(
        e_last <= tol,
        "{name}: last partition probability error {e_last:e} > {tol:e}"
    );
    let hard = get(&f, "best")
        .argmax(1, false)
        .bincount::<Tensor>(None, result.env_sizes.len() as i64);
    assert_eq!(
        result.env_sizes,
        Vec::<i64>::try_from(&hard).unwrap(),
        "{name}: env sizes"
    );
}

/// The first three epochs of a long run (a few seconds): the partition after epoch 2 and the risks
/// of epochs 0..=2. Bit for bit where the fixtures were made; the bound (1e-3 in probability)
/// leaves room for other CPUs, where last-bit differences grow about that large in a few steps
/// (the reference's own runs on 1 and 2 threads differ by 1.1e-3 in the logits after one step of
/// the N = 1500 case).
fn run_prefix(name: &str) {
    let f = fixture(name);
    let reference = reference_epochs(get(&f, "steps"));
    {
        let epoch = 2usize;
        let result = replay(&f, |c| c.max_epoch = epoch);
        assert_eq!(result.risks.len(), epoch + 1);
        let e_p = prob_err(
            &result.last_partition,
            get(&f, &format!("after_epoch{epoch}")),
        );
        let e_logit = rel_err(
            &result.last_partition,
            get(&f, &format!("after_epoch{epoch}")),
        );
        let e_risk = risk_err(&result.risks, &reference);
        println!("{name} ({} threads) after epoch {epoch}: probability error {e_p:.2e}, logits rel err {e_logit:.2e}, risk rel err {e_risk:.1e}", tch::get_num_threads());
        assert!(
            e_p <= 1e-3,
            "{name} after epoch {epoch}: probability error {e_p:e}"
        );
        assert!(
            e_risk <= 1e-5,
            "{name} epochs 0..={epoch}: risks off by {e_risk:e}"
        );
    }
}

#[test]
fn long_prefix_relaxed_constraint_n1500() {
    run_prefix("maximize_long_relax");
}

#[test]
fn long_prefix_three_envs_n1000() {
    run_prefix("maximize_long_3env");
}

#[test]
fn long_prefix_nonorm_n600() {
    run_prefix("maximize_long_nonorm");
}

#[test]
#[ignore = "minutes on 2 cores; cargo test --release --test maximize_parity -- --ignored long_run"]
fn long_run_relaxed_constraint_n1500() {
    run_long("maximize_long_relax");
}

#[test]
#[ignore = "minutes on 2 cores; cargo test --release --test maximize_parity -- --ignored long_run"]
fn long_run_three_envs_n1000() {
    run_long("maximize_long_3env");
}

#[test]
#[ignore = "minutes on 2 cores; cargo test --release --test maximize_parity -- --ignored long_run"]
fn long_run_nonorm_n600() {
    run_long("maximize_long_nonorm");
}

/// `ReferenceShuffle` (what `ipirm maximize` uses without an `order` tensor) re-derives, from the
/// seed alone, every batch order the reference's `DataLoader` drew in the long-run fixtures; this
/// also checks tch's `randperm` after `manual_seed(s)` against torch's
/// `randperm(n, generator=Generator().manual_seed(s))` for 61 × 3 seeds.
#[test]
fn reference_shuffle_reproduces_the_recorded_orders() {
    for name in LONG_CASES {
        let f = fixture(name);
        let orders = get(&f, "orders");
        let (epochs, n) = (orders.size()[0], orders.size()[1]);
        let seed = get(&f, "seed").int64_value(&[]) as u64;
        let shuffle = ReferenceShuffle::new(seed, n, epochs as usize).unwrap();
        for t in 0..epochs {
            assert!(
                shuffle.order(t as usize).unwrap().equal(&orders.get(t)),
                "{name}: epoch {t}"
            );
        }
        assert!(shuffle.order(epochs as usize).is_err());
    }
}

/// Whole 61-epoch runs small enough for every test run (gen_maximize_long.py's `maximize_run_*`):
/// the relaxed constraint with two environments, and three environments at τ 0.2 without relax.
#[test]
fn whole_run_relaxed_constraint_n256() {
    run_long("maximize_run_relax");
}

#[test]
fn whole_run_three_envs_n192() {
    run_long("maximize_run_3env");
}

/// Whole `auto_split_offline_mixuup` runs (gen_maximize_mixup.py): the MixUp-ed first view with
/// its λ, one batch (the reference's 2048) per epoch, the recorded orders replayed; partition
/// within 1e-4 where the reference repeats itself that closely, same best epoch and epoch count.
#[test]
fn whole_run_mixup_offline_relaxed_constraint() {
    run_long("maximize_mixup_relax");
}

#[test]
fn whole_run_mixup_offline_nonorm_three_envs() {
    run_long("maximize_mixup_nonorm3");
}

/// `maximize.exact = false` (the fast form: the loss with its row maximum factored out, the
/// contrastive loss read off the penalty's forward pass): the same formulas, rounded otherwise;
/// on a whole run it stays within 1e-3 in probability of the reference, with the same best epoch.
#[test]
fn the_fast_form_stays_close_to_the_reference() {
    let f = fixture("maximize_run_relax");
    let r = replay(&f, |c| c.exact = false);
    let e = prob_err(&r.partition, get(&f, "best"));
    println!("fast form: probability error {e:.2e}");
    assert!(e > 0.0, "the fast form rounds differently");
    assert!(e <= 1e-3, "fast form off by {e:e}");
    assert_eq!(
        r.best_epoch,
        get(&f, "best_epoch").int64_value(&[]) as usize
    );
}
