//! The MixUp side of the reference (`main_mixup.py`, `utils_mixup.py`) against its own code:
//! the MixUp op with the reference's draws (and the draws themselves from the same seed), the
//! baseline loss of `main_mixup.train` and the gradient it back-propagates into the projections,
//! and one step of `train_env_mixup_full_retaingp` / `_noretaingp` on a tiny network
//! z = normalize(BN(x) Wᵀ + b) replaying the reference's recorded λ and permutations: the loss
//! parts, the parameters after Adam (lr 1e-3, weight decay 1e-6) and BatchNorm's running
//! statistics (which record how many forwards ran, in which order, on which samples).
//!
//! Fixtures: `source scripts/env.sh && $IPIRM_PY tests/fixtures/gen_mixup.py --ref /path/to/IP-IRM`.
use std::cell::Cell;
use std::collections::HashMap;

use ipirm::config::Config;
use ipirm::loss::{draw_mixup, mixup, mixup_contrastive_loss, mixup_cross_entropy};
use ipirm::model::l2_normalize;
use ipirm::train::adam::Adam;
use ipirm::train::mixup::{
    mixup_baseline_loss, mixup_ipirm_loss, mixup_ipirm_retain_backward, BetaDraws, MixupDraws,
    ReplayDraws,
};
mod common;
use common::parity::{fixture, get, rel_err};
use tch::{nn, nn::Module, nn::ModuleT, Device, Kind, Tensor};

type Fixture = HashMap<String, Tensor>;

/// Held by every test that seeds or draws from tch's global generator (the test harness runs
/// tests on parallel threads, and they would interleave their draws).
static GLOBAL_GENERATOR: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn generator() -> std::sync::MutexGuard<'static, ()> {
    GLOBAL_GENERATOR
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn assert_close(what: &str, ours: &Tensor, theirs: &Tensor, tol: f64) {
    let e = rel_err(ours, theirs);
    eprintln!("{what}: rel. error {e:e}");
    assert!(e < tol, "{what}: rel. error {e:e} ≥ {tol:e}");
}

/// The reference's recorded draws, in order.
fn recorded(f: &Fixture) -> ReplayDraws {
    let n = get(f, "draws").int64_value(&[]);
    ReplayDraws::new(
        (0..n)
            .map(|k| {
                (
                    get(f, &format!("draw{k}_lam")).shallow_clone(),
                    get(f, &format!("draw{k}_perm")).shallow_clone(),
                )
            })
            .collect(),
    )
}

#[test]
fn the_mixup_op_matches_utils_mixup_with_its_draws() {
    let f = fixture("mixup_op");
    for name in ["a1", "a04"] {
        let out = mixup(
            get(&f, "x"),
            get(&f, &format!("{name}_lam")),
            get(&f, &format!("{name}_perm")),
        )
        .unwrap();
        assert_close(
            &format!("mixup {name}"),
            &out,
            get(&f, &format!("{name}_out")),
            1e-6,
        );
    }
}

/// `draw_mixup` uses the sampler `torch.distributions.Beta` uses, after `randperm` as the
/// reference does: on the CPU, the same seed gives the reference's draws exactly.
#[test]
fn draws_from_the_same_seed_are_the_references_on_the_cpu() {
    let _g = generator();
    let f = fixture("mixup_op");
    for (name, alpha) in [("a1", 1.0), ("a04", 0.4), ("big", 1.0)] {
        tch::manual_seed(get(&f, &format!("{name}_seed")).int64_value(&[]));
        let perm_ref = get(&f, &format!("{name}_perm"));
        let (lam, perm) = draw_mixup(perm_ref.size()[0], alpha, Device::Cpu).unwrap();
        assert!(perm.equal(perm_ref), "{name}: permutation differs");
        assert!(
            lam.equal(get(&f, &format!("{name}_lam"))),
            "{name}: λ differs"
        );
    }
    // λ = max(u, 1 − u) ∈ [0.5, 1]; perm a permutation.
    let (lam, perm) = draw_mixup(1000, 0.2, Device::Cpu).unwrap();
    assert!(lam.ge(0.5).all().int64_value(&[]) == 1 && lam.le(1.0).all().int64_value(&[]) == 1);
    let sorted = perm.sort(0, false).0;
    assert!(sorted.equal(&Tensor::arange(1000, (Kind::Int64, Device::Cpu))));
}

#[test]
fn the_baseline_loss_and_its_gradient_match_main_mixup_train() {
    let f = fixture("mixup_baseline");
    let tau = get(&f, "tau").double_value(&[]);
    let (lam, perm) = (get(&f, "draw0_lam"), get(&f, "draw0_perm"));
    // The projections `train` computed: normalize(mixup(x1)), normalize(x2).
    let z1 = l2_normalize(&mixup(get(&f, "x1"), lam, perm).unwrap());
    let z2 = l2_normalize(get(&f, "x2"));
    assert_close("baseline z1", &z1, get(&f, "z1"), 1e-6);
    // The loss and its gradient with respect to the projections.
    let z1 = z1.detach().set_requires_grad(true);
    let z2 = z2.detach().set_requires_grad(true);
    let loss = mixup_contrastive_loss(&z1, &z2, lam, perm, tau).unwrap();
    assert_close("baseline loss", &loss, get(&f, "loss"), 1e-6);
    let g = Tensor::run_backward(&[&loss], &[&z1, &z2], false, false);
    assert_close("baseline grad z1", &g[0], get(&f, "grad_z1"), 1e-5);
    assert_close("baseline grad z2", &g[1], get(&f, "grad_z2"), 1e-5);
    // The step function, forwarding through the same "network", replaying the draw.
    let mut draws = recorded(&f);
    let step = mixup_baseline_loss(
        get(&f, "x1"),
        get(&f, "x2"),
        tau,
        |x| Ok(l2_normalize(x)),
        &mut draws,
    )
    .unwrap();
    assert_eq!(draws.remaining(), 0);
    assert_close("baseline step loss", &step, get(&f, "loss"), 1e-6);
}

/// The tiny network of gen_mixup.py with the fixture's initial weights, its Adam, and how many
/// times it was forwarded.
struct Tiny {
    vs: nn::VarStore,
    fc: nn::Linear,
    bn: nn::BatchNorm,
    opt: Adam,
    forwards: Cell<usize>,
}

impl Tiny {
    fn new(f: &Fixture) -> Tiny {
        let vs = nn::VarStore::new(Device::Cpu);
        // Initialisation draws from the global generator (then overwritten).
        let (mut fc, bn) = {
            let _g = generator();
            // PyTorch's BatchNorm starts at weight 1, bias 0 (tch's default weight is U(0, 1)).
            let bn_cfg = nn::BatchNormConfig {
                ws_init: nn::Init::Const(1.0),
                ..Default::default()
            };
            (
                nn::linear(vs.root() / "fc", 6, 4, Default::default()),
                nn::batch_norm1d(vs.root() / "bn", 6, bn_cfg),
            )
        };
        tch::no_grad(|| {
            fc.ws.copy_(get(f, "w"));
            fc.bs.as_mut().unwrap().copy_(get(f, "b"));
        });
        let opt = Adam::for_var_store(&vs, 1e-3, 1e-6);
        Tiny {
            vs,
            fc,
            bn,
            opt,
            forwards: Cell::new(0),
        }
    }

    fn forward(&self, x: &Tensor) -> Tensor {
        self.forwards.set(self.forwards.get() + 1);
        l2_normalize(&self.fc.forward(&self.bn.forward_t(x, true)))
    }

    /// Parameters and BatchNorm statistics after the step, against the reference's.
    fn check_after(&self, name: &str, f: &Fixture) {
        assert_eq!(
            self.forwards.get() as i64,
            get(f, "bn_batches").int64_value(&[]),
            "{name}: forwards"
        );
        let bs = self.fc.bs.as_ref().unwrap();
        let bn_w = self.bn.ws.as_ref().unwrap();
        let bn_b = self.bn.bs.as_ref().unwrap();
        for (ours, theirs, moves) in [
            (&self.fc.ws, "w_after", Some("w")),
            (bs, "b_after", Some("b")),
            (bn_w, "bn_w_after", None),
            (bn_b, "bn_b_after", None),
            (&self.bn.running_mean, "bn_mean_after", None),
            (&self.bn.running_var, "bn_var_after", None),
        ] {
            assert_close(&format!("{name} {theirs}"), ours, get(f, theirs), 1e-4);
            if let Some(before) = moves {
                assert!(
                    rel_err(ours, get(f, before)) > 1e-5,
                    "{name}: {theirs} did not move"
                );
            }
        }
        assert_eq!(self.vs.variables().len(), 6);
    }
}

fn config(f: &Fixture, retain: bool) -> (Config, f64) {
    let flags = Vec::<f32>::try_from(get(f, "flags")).unwrap();
    assert_eq!(flags[1] == 1.0, retain);
    let pw = get(f, "penalty_weight").double_value(&[]);
    let cfg = Config::default()
        .with_overrides(&[
            "train.mixup=true".to_string(),
            "train.mixup_alpha=1".into(),
            format!("train.temperature={}", get(f, "tau").double_value(&[])),
            format!("ipirm.keep_cont={}", flags[0] == 1.0),
            format!("ipirm.retain_group={retain}"),
            format!("ipirm.penalty_weight={pw}"),
            "maximize.env_num=2".into(),
        ])
        .unwrap();
    (cfg, pw)
}

fn check_retain(name: &str) {
    let f = fixture(&format!("mixup_{name}"));
    let (cfg, pw) = config(&f, true);
    let mut net = Tiny::new(&f);
    let parts = [
        get(&f, "partition0").shallow_clone(),
        get(&f, "partition1").shallow_clone(),
    ];
    let mut draws = recorded(&f);
    net.opt.zero_grad();
    let l = mixup_ipirm_retain_backward(
        get(&f, "x1"),
        get(&f, "x2"),
        get(&f, "idx"),
        &parts,
        &cfg,
        pw,
        |x| Ok(net.forward(x)),
        &mut draws,
    )
    .unwrap();
    assert_eq!(draws.remaining(), 0, "{name}: every recorded draw used");
    assert_eq!(l.skipped_envs(), 0);
    // One backward for the global term, then one per partition.
    assert_eq!(get(&f, "backwards").int64_value(&[]), 3);
    assert_close(
        &format!("{name} global (loss_original)"),
        &l.global,
        get(&f, "backward0_value"),
        1e-5,
    );
    for (k, p) in l.partitions.iter().enumerate() {
        let b = format!("backward{}", k + 1);
        assert_close(
            &format!("{name} partition {k} loss_env"),
            &p.total,
            get(&f, &format!("{b}_value")),
            1e-5,
        );
        assert_close(
            &format!("{name} partition {k} loss_cont"),
            &p.contrastive,
            get(&f, &format!("{b}_loss_cont")),
            1e-5,
        );
        assert_close(
            &format!("{name} partition {k} irm_penalty"),
            &p.penalty,
            get(&f, &format!("{b}_irm_penalty")),
            1e-5,
        );
    }
    assert_close(
        &format!("{name} reported loss"),
        &l.total(),
        get(&f, "loss"),
        1e-5,
    );
    net.opt.step();
    net.check_after(name, &f);
}

fn check_latest(name: &str) {
    let f = fixture(&format!("mixup_{name}"));
    let (cfg, pw) = config(&f, false);
    let mut net = Tiny::new(&f);
    let mut draws = recorded(&f);
    let l = mixup_ipirm_loss(
        get(&f, "x1"),
        get(&f, "x2"),
        get(&f, "idx"),
        get(&f, "partition1"),
        &cfg,
        pw,
        |x| Ok(net.forward(x)),
        &mut draws,
    )
    .unwrap();
    assert_eq!(draws.remaining(), 0, "{name}: every recorded draw used");
    assert_eq!(l.skipped_envs, 0);
    for (ours, theirs) in [
        (&l.total, "loss"),
        (&l.contrastive, "loss_cont"),
        (&l.penalty, "irm_penalty"),
    ] {
        assert_close(&format!("{name} {theirs}"), ours, get(&f, theirs), 1e-5);
    }
    net.opt.backward_step(&l.total);
    net.check_after(name, &f);
}

#[test]
fn retaingp_step_two_partitions_keep_cont_pw_0_2() {
    check_retain("retain");
}

#[test]
fn retaingp_step_two_partitions_pw_2_divides_each_partitions_loss() {
    check_retain("retain_pw2");
}

#[test]
fn noretaingp_step_keep_cont_pw_2() {
    check_latest("latest_pw2");
}

#[test]
fn noretaingp_step_without_keep_cont() {
    check_latest("latest_nokeep");
}

#[test]
fn environments_with_fewer_than_two_samples_are_skipped_without_nan() {
    let cfg = Config::default()
        .with_overrides(&["train.mixup=true", "ipirm.keep_cont=true"])
        .unwrap();
    let _g = generator();
    tch::manual_seed(3);
    let x1 = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let x2 = Tensor::randn([4, 3], (Kind::Float, Device::Cpu));
    let idx = Tensor::arange(4, (Kind::Int64, Device::Cpu));
    // Environment 1 empty, then environment 1 with one sample.
    let empty = Tensor::from_slice(&[5.0f32, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0]).view([4, 2]);
    let single = Tensor::from_slice(&[5.0f32, 0.0, 5.0, 0.0, 5.0, 0.0, 0.0, 5.0]).view([4, 2]);
    let w = Tensor::randn([3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let forward = |x: &Tensor| Ok(l2_normalize(&x.matmul(&w)));
    for part in [&empty, &single] {
        let mut draws = BetaDraws { alpha: 1.0 };
        let l = mixup_ipirm_loss(&x1, &x2, &idx, part, &cfg, 0.2, forward, &mut draws).unwrap();
        assert_eq!(l.skipped_envs, 1);
        assert!(l.total.double_value(&[]).is_finite());
    }
    // A partition whose environments are all skipped back-propagates nothing and reports 0.
    let x1 = x1.narrow(0, 0, 2);
    let x2 = x2.narrow(0, 0, 2);
    let idx = Tensor::from_slice(&[0i64, 3]); // one sample in each environment
    let mut draws = BetaDraws { alpha: 1.0 };
    let l = mixup_ipirm_retain_backward(
        &x1,
        &x2,
        &idx,
        &[single.shallow_clone()],
        &cfg,
        0.2,
        forward,
        &mut draws,
    )
    .unwrap();
    assert_eq!(l.skipped_envs(), 2);
    assert!(l.total().double_value(&[]).is_finite());
    assert_eq!(l.partitions[0].total.double_value(&[]), 0.0);
}

#[test]
fn shapes_and_draws_are_checked() {
    let x = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    let lam = Tensor::ones([3], (Kind::Float, Device::Cpu));
    let perm = Tensor::from_slice(&[2i64, 0, 1]);
    let _g = generator();
    let msg = |r: ipirm::Result<Tensor>| r.expect_err("an error").to_string();
    assert!(msg(mixup(&x, &lam.narrow(0, 0, 2), &perm)).contains("one per sample (3)"));
    assert!(msg(mixup(&x, &lam, &perm.to_kind(Kind::Int))).contains("int64"));
    let logits = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu));
    assert!(msg(mixup_cross_entropy(&logits, &lam, &perm)).contains("square"));
    assert!(draw_mixup(4, 0.0, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("α"));
    let mut replay = ReplayDraws::new(vec![(lam.shallow_clone(), perm.shallow_clone())]);
    assert!(replay
        .draw(4, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("asked for 4"));
    assert!(replay.draw(3, Device::Cpu).is_ok());
    assert!(replay
        .draw(3, Device::Cpu)
        .err()
        .unwrap()
        .to_string()
        .contains("only 1 recorded"));
    // Config: α must be positive; MixUp has no debiased form.
    assert!(Config::default()
        .with_overrides(&["train.mixup_alpha=0"])
        .is_err());
    let e = Config::default()
        .with_overrides(&["train.mixup=true", "train.debiased=true"])
        .unwrap_err()
        .to_string();
    assert!(e.contains("train.debiased"), "{e}");
}

/// The new settings enter a checkpoint's key only where they are read, so the keys of runs
/// without MixUp and without `retain_group_set` are the ones they had before these options.
#[test]
fn mixup_settings_enter_only_the_keys_of_runs_that_read_them() {
    use ipirm::pipeline::stages::epoch_params;
    let params = |sets: &[&str]| {
        let cfg = Config::default().with_overrides(sets).unwrap();
        epoch_params(&cfg, 3, None)
    };
    let plain = params(&[]);
    for key in ["mixup", "mixup_alpha"] {
        assert!(plain.get(key).is_none(), "{plain}");
    }
    assert!(plain["ipirm"].get("retain_group_set").is_none());
    assert!(plain["ipirm"].get("irm_temp").is_some());
    // Not read: no change.
    assert_eq!(params(&["train.mixup_alpha=0.4"]), plain);
    assert_eq!(
        params(&["ipirm.retain_group=false", "ipirm.retain_group_set=2"]),
        params(&["ipirm.retain_group=false"])
    );
    // Read: a different key.
    assert_ne!(params(&["ipirm.retain_group_set=2"]), plain);
    let mixup = params(&["train.mixup=true"]);
    assert_eq!(mixup["mixup"], true);
    assert_eq!(mixup["mixup_alpha"], 1.0);
    assert!(mixup["ipirm"].get("irm_temp").is_none(), "unread by MixUp");
    assert_ne!(
        params(&["train.mixup=true", "train.mixup_alpha=0.4"]),
        mixup
    );
    let baseline = params(&["train.method=simclr", "train.mixup=true"]);
    assert!(baseline.get("debiased").is_none() && baseline.get("ipirm").is_none());
    assert!(params(&["train.method=simclr"]).get("debiased").is_some());
}
