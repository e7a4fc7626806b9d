//! `ipirm bench`: the figures of the reference's benchmark (`shared/bench/ref_bench.py`, which
//! times the authors' code), measured the same way on our code, so the two print side by side:
//! `FIG name value unit` lines with the same names where the workload is the same.
//!
//! | figure | workload (as ref_bench.py) |
//! |---|---|
//! | `minimize_img_per_s_augmented` | the IP-IRM minimize step with augmentation; ours augments on the device, the reference's counterpart is `minimize_img_per_s_ref_loader_w4` (PIL in 4 loader workers) |
//! | `minimize_img_per_s_ondevice_fp32` | the minimize step's math, views ready: 5 retained partitions, 2 environments, keep_cont, λ1 0.2, τ 0.5, Adam |
//! | `minimize_img_per_s_ondevice_<precision>[_cl]` | the same under the configured numerics when they are not plain fp32 (the reference's `…_bf16_cl`: bf16 autocast, channels_last, cudnn.benchmark) |
//! | `extract_img_per_s` | feature extraction for the offline maximize step: both views augmented and encoded, eval mode, batches of the maximize batch size (256 with `--small`) |
//! | `maximize_s_per_epoch_…`, `maximize_s_full_estimate_61_epochs` | the offline maximize step on N random 128-d feature pairs, batch `maximize.batch_size` |
//!
//! Ours only: `augment_img_per_s` (augmentation alone) and `simclr_img_per_s_ondevice_…`. With
//! `parts` (for profiling) only the on-device minimize figure runs, followed by `PART` lines
//! splitting the step into forward, loss, backward and Adam, wall and process CPU time. With
//! `augment_only` only `augment_img_per_s` runs, followed by `augment_crop_img_per_s` (the
//! sampling and the resized crop alone), each also per second of the process's CPU time
//! (`…_img_per_cpu_s`: on a shared machine it moves less than the wall time). Augmentation
//! resizes as `data.antialias` says (which matters only for images larger than the crop:
//! `--set data.antialias=false` for the plain resize).
//! `small` is the reference's `--small`: batch 32, 1,200 images, 4 timed steps, extraction of
//! 2 × 256 images, maximize on 4,000 pairs for one epoch. Prints figures; asserts nothing.
use std::collections::BTreeMap;
use std::time::Instant;

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::config::{Config, Precision, Switch};
use crate::data::augment::{self, Views};
use crate::numerics::Numerics;
use crate::train::maximize::maximize_offline;
use crate::train::minimize;
use crate::train::Trainer;
use crate::Result;

/// What to measure: the reference's sizes (`small` = its `--small`), overridable.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    pub small: bool,
    /// Side and channels of the synthetic stored images (96×96×3 = STL-10).
    pub side: i64,
    pub channels: i64,
    /// Timed steps of each minimize figure (default: 4 with `small`, else 40, as the reference).
    pub steps: Option<usize>,
    /// Feature pairs of the maximize figure (default: 4,000 with `small`, else 105,000; 0 skips).
    pub maximize_n: Option<i64>,
    /// Only the on-device minimize step, then its parts timed apart (profiling).
    pub parts: bool,
    /// Only the augmentation figures.
    pub augment_only: bool,
}

/// The figures, as ref_bench.py writes them (`figures`: name → (value, unit)), with the
/// settings they were measured under.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub device: String,
    pub settings: String,
    pub figures: BTreeMap<String, (f64, String)>,
}

fn sync(device: Device) {
    if let Device::Cuda(i) = device {
        tch::Cuda::synchronize(i as i64);
    }
}

/// `%.4g` as Python prints it (the reference's format), for values in the range benches see.
fn g4(v: f64) -> String {
    if v == 0.0 || !v.is_finite() {
        return format!("{v}");
    }
    let digits = 3 - v.abs().log10().floor() as i32;
    if (-4..=3).contains(&(3 - digits)) {
        let s = format!("{:.*}", digits.max(0) as usize, v);
        match s.contains('.') {
            true => s.trim_end_matches('0').trim_end_matches('.').to_string(),
            false => s,
        }
    } else {
        format!("{v:.3e}")
    }
}

/// Seconds per call of `f` over `n` calls after `warm` warm-up calls.
fn time(device: Device, warm: usize, n: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
    for _ in 0..warm {
        f()?;
    }
    sync(device);
    let t = Instant::now();
    for _ in 0..n {
        f()?;
    }
    sync(device);
    Ok(t.elapsed().as_secs_f64() / n.max(1) as f64)
}

/// [`time`], with the process's CPU seconds per call (all its threads) beside the wall seconds:
/// on a machine others share, CPU time moves less than wall time.
fn time_cpu(
    device: Device,
    warm: usize,
    n: usize,
    mut f: impl FnMut() -> Result<()>,
) -> Result<(f64, f64)> {
    for _ in 0..warm {
        f()?;
    }
    let cpu = cpu_seconds();
    let wall = time(device, 0, n, f)?;
    Ok((wall, (cpu_seconds() - cpu) / n.max(1) as f64))
}

/// The numerics' figure suffix: `fp32`, `bf16`, `fp32_cl`, `bf16_cl`.
fn tag(n: &Numerics) -> String {
    format!(
        "{}{}",
        if n.bf16 { "bf16" } else { "fp32" },
        if n.channels_last { "_cl" } else { "" }
    )
}

/// A config whose numerics are `n` (so a trainer built from it computes so).
fn with_numerics(cfg: &Config, n: &Numerics) -> Config {
    let mut c = cfg.clone();
    c.train.precision = if n.bf16 {
        Precision::Bf16
    } else {
        Precision::Fp32
    };
    c.train.channels_last = Switch::from(n.channels_last);
    c.train.tf32 = Switch::from(n.tf32);
    c
}

/// Measures the figures of ref_bench.py (see the module doc) under `cfg`, fitted to `device`
/// ([`crate::fit`]), printing each as it comes.
pub fn run(cfg: &Config, device: Device, o: &BenchOptions) -> Result<BenchReport> {
    let numerics = Numerics::of_fitted(&cfg.train, device)?;
    let b = if o.small { 32 } else { cfg.train.batch_size };
    let n_img: i64 = if o.small { 1200 } else { 12000 };
    let steps = o.steps.unwrap_or(if o.small { 4 } else { 40 });
    let mut cfg = cfg.clone();
    cfg.train.batch_size = b;
    let antialias = cfg.data.antialias;
    // The configured crops, antialiased as `data.antialias` says whatever `--side` is.
    let views = Views {
        antialias,
        ..cfg.data.views()
    };
    let settings = format!(
        "device {}; {:?} width {}, bn_splits {}; batch {b}; {}; crops {}; CPU allocator {}",
        crate::device::describe(device),
        cfg.model.arch,
        cfg.model.width,
        cfg.model.bn_splits,
        numerics.describe(),
        match antialias {
            true => "antialiased",
            false => "plain bilinear",
        },
        match crate::device::freed_memory_kept() {
            true => "keeps freed memory",
            false => "glibc's default",
        }
    );
    println!("settings: {settings}");
    let mut figures = BTreeMap::new();
    let mut fig = |name: String, value: f64, unit: &str| {
        println!("FIG {name} {} {unit}", g4(value));
        figures.insert(name, (value, unit.to_string()));
    };

    tch::manual_seed(0);
    let (side, c) = (o.side, o.channels);
    let images = Tensor::randint(256, [b, c, side, side], (Kind::Uint8, device));
    if !o.parts {
        let (s, cpu) = time_cpu(device, 1, steps, || {
            let _ = views.draw(&images);
            let _ = views.draw(&images);
            Ok(())
        })?;
        fig("augment_img_per_s".into(), b as f64 / s, "img/s");
        if o.augment_only {
            fig("augment_img_per_cpu_s".into(), b as f64 / cpu, "img/s");
        }
    }
    if o.augment_only {
        let (s, cpu) = time_cpu(device, 1, steps, || {
            for _ in 0..2 {
                let p = augment::sample_train_params_in(b, side, side, views.scale);
                let x = augment::to_unit(&images);
                let _ = augment::resized_crop_as(&x, &p.crop, views.size, antialias);
            }
            Ok(())
        })?;
        fig("augment_crop_img_per_s".into(), b as f64 / s, "img/s");
        fig("augment_crop_img_per_cpu_s".into(), b as f64 / cpu, "img/s");
        return Ok(BenchReport {
            device: crate::device::describe(device),
            settings,
            figures,
        });
    }

    // Five retained partitions over the dataset, the batch its first b images (as the reference).
    let parts: Vec<Tensor> = (0..5)
        .map(|_| Tensor::randn([n_img, cfg.maximize.env_num], (Kind::Float, device)))
        .collect();
    let idx = Tensor::arange(b, (Kind::Int64, device));
    let pw = minimize::penalty_weight(&cfg.ipirm, 1, cfg.train.epochs);
    // fp32 first (the reference's first on-device figure), then the configured numerics.
    let fp32 = Numerics {
        bf16: false,
        channels_last: false,
        ..numerics
    };
    let mut runs = vec![fp32];
    if numerics != fp32 {
        runs.push(numerics);
    }
    for n in runs {
        let mut trainer = Trainer::new(&with_numerics(&cfg, &n), device)?;
        let _tf32 = n.tf32_scope()?;
        let v1 = Tensor::randn([b, 3, 32, 32], (Kind::Float, device));
        let v2 = Tensor::randn([b, 3, 32, 32], (Kind::Float, device));
        let cfg = &trainer.cfg.clone();
        let mut step = |augmented: bool| -> Result<()> {
            let fresh = augmented.then(|| (views.draw(&images), views.draw(&images)));
            let (x1, x2) = fresh.as_ref().map_or((&v1, &v2), |(a, b)| (a, b));
            let (_, z1) = trainer.model.forward(x1, true);
            let (_, z2) = trainer.model.forward(x2, true);
            let l = minimize::minimize_loss(&z1, &z2, &idx, &parts, cfg, pw)?;
            trainer.opt.backward_step(&l.total);
            Ok(())
        };
        if n == numerics && !o.parts {
            let s = time(device, 2, steps, || step(true))?;
            fig("minimize_img_per_s_augmented".into(), b as f64 / s, "img/s");
        }
        let s = time(device, 2, steps, || step(false))?;
        fig(
            format!("minimize_img_per_s_ondevice_{}", tag(&n)),
            b as f64 / s,
            "img/s",
        );
        if o.parts {
            minimize_parts(&mut trainer, (&v1, &v2), &idx, &parts, pw, steps)?;
            continue;
        }
        let (tau, debiased) = (
            cfg.train.temperature,
            cfg.train.debiased.then_some(cfg.train.tau_plus),
        );
        let s = time(device, 1, steps.min(4), || {
            let (_, z1) = trainer.model.forward(&v1, true);
            let (_, z2) = trainer.model.forward(&v2, true);
            let loss = crate::loss::nt_xent(&z1, &z2, tau, debiased)?;
            trainer.opt.backward_step(&loss);
            Ok(())
        })?;
        fig(
            format!("simclr_img_per_s_ondevice_{}", tag(&n)),
            b as f64 / s,
            "img/s",
        );
    }
    if !o.parts {
        pipeline_figures(&cfg, device, o, &mut fig)?;
    }
    Ok(BenchReport {
        device: crate::device::describe(device),
        settings,
        figures,
    })
}

/// The maximize step's figures: feature extraction as the pipeline runs it, then the offline
/// maximize step on random feature pairs.
fn pipeline_figures(
    cfg: &Config,
    device: Device,
    o: &BenchOptions,
    fig: &mut impl FnMut(String, f64, &str),
) -> Result<()> {
    let (side, c) = (o.side, o.channels);
    // Feature extraction: as the pipeline runs it, on ub × nb stored images.
    let (ub, nb) = if o.small {
        (256, 2)
    } else {
        (cfg.maximize.batch_size, 3)
    };
    let mut ecfg = cfg.clone();
    ecfg.maximize.batch_size = ub;
    let trainer = Trainer::new(&ecfg, device)?;
    let stored = Tensor::randint(256, [ub * nb, c, side, side], (Kind::Uint8, device));
    let s = time(device, 0, 1, || {
        crate::train::ipirm::extract_view_pairs(&trainer, &stored, 0).map(|_| ())
    })?;
    fig("extract_img_per_s".into(), (ub * nb) as f64 / s, "img/s");

    let n_max = o.maximize_n.unwrap_or(if o.small { 4000 } else { 105_000 });
    if n_max > 1 {
        let d = cfg.model.feature_dim;
        let z1 = crate::model::l2_normalize(&Tensor::randn([n_max, d], (Kind::Float, device)));
        let z2 = crate::model::l2_normalize(
            &(&z1 + Tensor::randn([n_max, d], (Kind::Float, device)) * 0.3),
        );
        let init = Tensor::randn([n_max, cfg.maximize.env_num], (Kind::Float, device));
        let epochs = if o.small { 1 } else { 3 };
        let mut mcfg = cfg.maximize.clone();
        mcfg.max_epoch = epochs - 1;
        let tau = cfg.maximize_temperature();
        sync(device);
        let t = Instant::now();
        maximize_offline(&z1, &z2, &init, &mcfg, tau, |_, _| {})?;
        sync(device);
        let per_epoch = t.elapsed().as_secs_f64() / epochs as f64;
        let name = match (o.small, n_max) {
            (true, _) => "maximize_s_per_epoch_small".to_string(),
            (false, 105_000) => "maximize_s_per_epoch_N105k".to_string(),
            (false, n) => format!("maximize_s_per_epoch_N{n}"),
        };
        fig(name, per_epoch, "s");
        fig(
            "maximize_s_full_estimate_61_epochs".into(),
            per_epoch * 61.0,
            "s",
        );
    }
    Ok(())
}

/// `PART` lines: the minimize step on ready views split into the forward of both views, the
/// loss, the backward pass and Adam, each synchronised, in ms per step.
fn minimize_parts(
    trainer: &mut Trainer,
    (v1, v2): (&Tensor, &Tensor),
    idx: &Tensor,
    parts: &[Tensor],
    pw: f64,
    steps: usize,
) -> Result<()> {
    let device = trainer.device;
    let cfg = trainer.cfg.clone();
    // [wall, cpu] seconds of forward, loss, backward, Adam
    let mut sums = [[0.0f64; 2]; 4];
    for i in 0..steps + 1 {
        let mut lap = {
            sync(device);
            let mut t = (Instant::now(), cpu_seconds());
            move || {
                sync(device);
                let now = (Instant::now(), cpu_seconds());
                let s = [(now.0 - t.0).as_secs_f64(), now.1 - t.1];
                t = now;
                s
            }
        };
        trainer.opt.zero_grad();
        let (_, z1) = trainer.model.forward(v1, true);
        let (_, z2) = trainer.model.forward(v2, true);
        let f = lap();
        let l = minimize::minimize_loss(&z1, &z2, idx, parts, &cfg, pw)?;
        let lo = lap();
        l.total.backward();
        let bw = lap();
        trainer.opt.step();
        let ad = lap();
        if i > 0 {
            // the first is the warm-up
            for (sum, part) in sums.iter_mut().zip([f, lo, bw, ad]) {
                sum[0] += part[0];
                sum[1] += part[1];
            }
        }
    }
    let ms = |s: f64| 1e3 * s / steps.max(1) as f64;
    for (k, name) in ["forward (2 views)", "loss", "backward", "adam"]
        .iter()
        .enumerate()
    {
        println!(
            "PART {name:<18} {:>8.1} ms wall {:>8.1} ms cpu",
            ms(sums[k][0]),
            ms(sums[k][1])
        );
    }
    println!("PART threads {}", tch::get_num_threads());
    Ok(())
}

/// CPU time of the whole process (every thread), in seconds.
fn cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the struct it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}
