//! `ipirm bench`: throughput of each piece of a training run on synthetic data of the configured
//! dataset's image size, so the pieces can be compared with each other and with the reference's
//! figures (SPEC.md) measured the same way. Prints figures; asserts nothing.
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::config::Config;
use crate::data::augment;
use crate::train::maximize::maximize_offline;
use crate::train::minimize;
use crate::train::Trainer;
use crate::Result;

/// One measured figure.
#[derive(Debug, Clone, Serialize)]
pub struct Figure {
    pub what: String,
    pub value: f64,
    pub unit: &'static str,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// Times `f` over `iters` runs after one warm-up run; returns seconds per run.
fn time(device: Device, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    f()?;
    sync(device);
    let t = Instant::now();
    for _ in 0..iters {
        f()?;
    }
    sync(device);
    Ok(t.elapsed().as_secs_f64() / iters as f64)
}

/// Measures augmentation, the SimCLR and IP-IRM minimize steps, feature extraction and one
/// offline maximize epoch on `n_max` samples. `side`/`channels`: the stored image size.
pub fn run(
    cfg: &Config,
    device: Device,
    side: i64,
    channels: i64,
    iters: usize,
    n_max: i64,
) -> Result<Vec<Figure>> {
    let b = cfg.train.batch_size;
    let mut out = Vec::new();
    let mut push = |what: String, value: f64, unit| {
        eprintln!("{what:<58} {value:>10.1} {unit}");
        out.push(Figure { what, value, unit });
    };
    tch::manual_seed(0);
    let images = Tensor::randint(256, [b, channels, side, side], (Kind::Uint8, device));

    let s = time(device, iters, || {
        let _ = augment::train_view(&images, augment::CROP_SIZE);
        let _ = augment::train_view(&images, augment::CROP_SIZE);
        Ok(())
    })?;
    push(
        format!("augmentation, 2 views of {b} images {side}×{side}"),
        b as f64 / s,
        "img/s",
    );

    let mut trainer = Trainer::new(cfg, device)?;
    let v1 = augment::train_view(&images, augment::CROP_SIZE);
    let v2 = augment::train_view(&images, augment::CROP_SIZE);
    let (tau, debiased) = (
        cfg.train.temperature,
        cfg.train.debiased.then_some(cfg.train.tau_plus),
    );
    let s = time(device, iters, || {
        let (_, z1) = trainer.model.forward(&v1, true);
        let (_, z2) = trainer.model.forward(&v2, true);
        let loss = crate::loss::nt_xent(&z1, &z2, tau, debiased)?;
        trainer.opt.backward_step(&loss);
        Ok(())
    })?;
    push(
        format!("SimCLR step math, batch {b} (views ready)"),
        b as f64 / s,
        "img/s",
    );

    let n = 4 * b;
    let idx = Tensor::arange(b, (Kind::Int64, device));
    let parts: Vec<Tensor> = (0..2)
        .map(|_| Tensor::randn([n, cfg.maximize.env_num], (Kind::Float, device)))
        .collect();
    // The minimize step on fresh views (`augmented`) or on the views made once above.
    let mut minimize_step = |augmented: bool| -> Result<()> {
        let fresh = augmented.then(|| {
            (
                augment::train_view(&images, augment::CROP_SIZE),
                augment::train_view(&images, augment::CROP_SIZE),
            )
        });
        let (a, b) = fresh.as_ref().map_or((&v1, &v2), |(a, b)| (a, b));
        let (_, z1) = trainer.model.forward(a, true);
        let (_, z2) = trainer.model.forward(b, true);
        let l = minimize::minimize_loss(&z1, &z2, &idx, &parts, cfg, cfg.ipirm.penalty_weight)?;
        trainer.opt.backward_step(&l.total);
        Ok(())
    };
    let s = time(device, iters, || minimize_step(false))?;
    push(
        format!("IP-IRM minimize step math, batch {b}, 2 partitions"),
        b as f64 / s,
        "img/s",
    );
    let s = time(device, iters, || minimize_step(true))?;
    push(
        format!("IP-IRM minimize step with augmentation, batch {b}"),
        b as f64 / s,
        "img/s",
    );

    let s = time(device, iters, || {
        let _g = tch::no_grad_guard();
        let _ = trainer
            .model
            .forward(&augment::train_view(&images, augment::CROP_SIZE), false);
        let _ = trainer
            .model
            .forward(&augment::train_view(&images, augment::CROP_SIZE), false);
        Ok(())
    })?;
    push(
        format!("feature extraction for the maximize step (2 views), batch {b}"),
        b as f64 / s,
        "img/s",
    );

    if n_max > 1 {
        let d = cfg.model.feature_dim;
        let z1 = crate::model::l2_normalize(&Tensor::randn([n_max, d], (Kind::Float, device)));
        let z2 = crate::model::l2_normalize(
            &(&z1 + Tensor::randn([n_max, d], (Kind::Float, device)) * 0.5),
        );
        let init = Tensor::randn([n_max, cfg.maximize.env_num], (Kind::Float, device));
        let mut mcfg = cfg.maximize.clone();
        mcfg.max_epoch = 1;
        let t = Instant::now();
        maximize_offline(
            &z1,
            &z2,
            &init,
            &mcfg,
            cfg.maximize_temperature(),
            |_, _| sync(device),
        )?;
        sync(device);
        push(
            format!("offline maximize, N = {n_max}, batch {}", mcfg.batch_size),
            t.elapsed().as_secs_f64() / 2.0,
            "s/epoch",
        );
    }
    Ok(out)
}
