//! One IP-IRM minimize step against the reference's own `main.train_env` on a tiny fixed network
//! (z = normalize(x Wᵀ + b)), fixed inputs and fixed partitions: the loss parts and the
//! parameters after the Adam step (lr 1e-3, weight decay 1e-6).
//!
//! Fixtures: `source scripts/env.sh && $IPIRM_PY tests/fixtures/gen_minimize.py --ref /path/to/IP-IRM`.
use ipirm::config::Config;
use ipirm::model::l2_normalize;
use ipirm::train::adam::Adam;
use ipirm::train::minimize::minimize_loss;
mod common;
use common::parity::{fixture, rel_err};
use tch::{nn, nn::Module, Device, Tensor};

fn check(name: &str) {
    let f = fixture(&format!("minimize_{name}"));
    let flags = Vec::<f32>::try_from(&f["flags"]).unwrap();
    let (keep_cont, retain) = (flags[0] == 1.0, flags[1] == 1.0);
    let pw = f["penalty_weight"].double_value(&[]);
    let cfg = Config::default()
        .with_overrides(&[
            format!("ipirm.keep_cont={keep_cont}"),
            format!("ipirm.retain_group={retain}"),
            format!("ipirm.penalty_weight={pw}"),
            "train.temperature=0.5".into(),
            "maximize.irm_temp=0.5".into(),
            "maximize.env_num=2".into(),
        ])
        .unwrap();

    let vs = nn::VarStore::new(Device::Cpu);
    let mut fc = nn::linear(vs.root() / "fc", 6, 4, Default::default());
    tch::no_grad(|| {
        fc.ws.copy_(&f["w"]);
        fc.bs.as_mut().unwrap().copy_(&f["b"]);
    });
    let mut opt = Adam::for_var_store(&vs, 1e-3, 1e-6);

    let z1 = l2_normalize(&fc.forward(&f["x1"]));
    let z2 = l2_normalize(&fc.forward(&f["x2"]));
    let parts = if retain {
        vec![
            f["partition0"].shallow_clone(),
            f["partition1"].shallow_clone(),
        ]
    } else {
        vec![f["partition1"].shallow_clone()]
    };
    let loss = minimize_loss(&z1, &z2, &f["idx"], &parts, &cfg, pw).unwrap();
    assert_eq!(loss.skipped_envs, 0);
    for (ours, theirs) in [
        (&loss.total, "loss"),
        (&loss.contrastive, "loss_cont"),
        (&loss.penalty, "irm_penalty"),
    ] {
        let e = rel_err(ours, &f[theirs]);
        assert!(
            e < 1e-5,
            "{name}: {theirs} rel. error {e:e} (ours {}, reference {})",
            ours.double_value(&[]),
            f[theirs].double_value(&[])
        );
    }
    opt.backward_step(&loss.total);
    for (ours, theirs) in [(&fc.ws, "w_after"), (fc.bs.as_ref().unwrap(), "b_after")] {
        let e = rel_err(ours, &f[theirs]);
        assert!(e < 1e-4, "{name}: {theirs} rel. error {e:e}");
        // The step moved the parameters (so the comparison above is not vacuous).
        let before = if theirs == "w_after" {
            &f["w"]
        } else {
            &f["b"]
        };
        assert!(
            rel_err(ours, before) > 1e-5,
            "{name}: {theirs} did not move"
        );
    }
}

#[test]
fn two_retained_partitions_keep_cont_pw_0_2() {
    check("retain");
}

#[test]
fn latest_partition_only_pw_2_divides_the_loss() {
    check("latest_pw2");
}

/// An environment with one sample of the batch: the reference's loss and penalty for it are 0
/// (its InfoNCE logits are 2 × 1), and they count in the means over environments.
#[test]
fn an_environment_of_one_sample_counts_as_zero_latest_partition() {
    check("lone_latest");
}

#[test]
fn an_environment_of_one_sample_counts_as_zero_retained_partitions() {
    check("lone_retain");
}

#[test]
fn an_empty_environment_is_skipped_without_nan() {
    let cfg = Config::default();
    let z = l2_normalize(&Tensor::randn([4, 3], (tch::Kind::Float, Device::Cpu)));
    // every sample in environment 0: environment 1 is empty
    let part = Tensor::from_slice(&[5.0f32, 0.0, 5.0, 0.0, 5.0, 0.0, 5.0, 0.0]).view([4, 2]);
    let idx = Tensor::arange(4, (tch::Kind::Int64, Device::Cpu));
    let l = minimize_loss(&z, &z, &idx, &[part.shallow_clone()], &cfg, 0.2).unwrap();
    assert_eq!(l.skipped_envs, 1);
    assert!(l.total.isfinite().all().int64_value(&[]) == 1);
}
