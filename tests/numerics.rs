//! `train.precision`, `train.channels_last`, `train.tf32` on the CPU: the defaults resolve to the
//! fp32 path as it was (bit for bit, and the same stage keys), channels_last stays within 1e-5
//! of it, bf16 autocast within 1e-2, and the losses, weights and gradients stay fp32.
use ipirm::config::{Config, Precision, Switch};
use ipirm::fit::fit;
use ipirm::numerics::Numerics;
use ipirm::pipeline::stages;
use ipirm::shim::{self, MemoryFormat};
use ipirm::train::minimize::minimize_loss;
use ipirm::train::Trainer;
use std::sync::{Mutex, MutexGuard};
use tch::{Device, Kind, Tensor};

const CPU: Device = Device::Cpu;

/// libtorch's random generator is global and training reseeds it: tests that draw take turns.
static RNG: Mutex<()> = Mutex::new(());

fn rng_lock() -> MutexGuard<'static, ()> {
    let guard = RNG.lock().unwrap_or_else(|e| e.into_inner());
    // One intra-op thread: these tiny models run hundreds of small parallel regions, whose
    // OpenMP barriers spin for seconds when the machine's other processes hold a core. Set
    // under the lock: libtorch rebuilds its thread pool on every call, and freed the pool
    // under another test's running convolution ("double free or corruption", CI 2026-12-04).
    tch::set_num_threads(1);
    guard
}

/// A ResNet-18 of width 4 on 64 images of 32×32, batches of 16, split BatchNorm.
fn tiny(method: &str, extra: &[&str]) -> Config {
    let mut o: Vec<String> = [
        "model.arch=resnet18",
        "model.width=4",
        "model.head_hidden=16",
        "model.feature_dim=8",
        "model.bn_splits=2",
        "train.batch_size=16",
        "train.epochs=2",
        "maximize.batch_size=32",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    o.push(format!("train.method={method}"));
    o.extend(extra.iter().map(|s| s.to_string()));
    Config::default().with_overrides(&o).unwrap()
}

/// `cfg` fitted to `device` (as every command does before it builds a trainer).
fn fitted(cfg: &Config, device: Device) -> Config {
    fit(cfg, device, 1).unwrap().cfg
}

fn data() -> (Tensor, Vec<Tensor>) {
    tch::manual_seed(7);
    let images = Tensor::randint(256, [64, 3, 32, 32], (Kind::Uint8, CPU));
    let parts = (0..2)
        .map(|_| Tensor::randn([64, 2], (Kind::Float, CPU)))
        .collect();
    (images, parts)
}

fn max_diff(a: &Tensor, b: &Tensor) -> f64 {
    (a - b).abs().max().double_value(&[])
}

fn states_equal(a: &Trainer, b: &Trainer) -> bool {
    let (ca, cb) = (a.checkpoint(), b.checkpoint());
    let (sa, sb) = (ca.to_named(), cb.to_named());
    ca.epoch == cb.epoch
        && sa.len() == sb.len()
        && sa
            .iter()
            .zip(&sb)
            .all(|((na, ta), (nb, tb))| na == nb && ta.equal(tb))
}

#[test]
fn cpu_defaults_resolve_to_the_plain_fp32_path_and_leave_stage_keys_as_they_were() {
    let cfg = tiny("ipirm", &[]);
    assert_eq!(cfg.train.precision, Precision::Auto);
    assert_eq!(cfg.train.channels_last, Switch::Auto);
    assert_eq!(cfg.train.tf32, Switch::Auto);
    let before = stages::epoch_params(&cfg, 3, None);
    let f = fit(&cfg, CPU, 1).unwrap();
    let (n, cfg) = (f.numerics, f.cfg);
    assert!(n.is_plain(), "{n:?}");
    assert_eq!(n, Numerics::fp32(CPU));
    assert_eq!(cfg.train.precision, Precision::Fp32);
    assert_eq!(cfg.train.channels_last, Switch::Off);
    assert_eq!(cfg.train.tf32, Switch::Off);
    // Resolved or not, a CPU run's keys carry no numerics: those of runs before the settings.
    assert_eq!(stages::epoch_params(&cfg, 3, None), before);
    assert!(before.get("numerics").is_none());
    assert!(stages::features_params(&cfg, 0).get("numerics").is_none());
    assert!(stages::encoder_knn_params(&cfg).get("numerics").is_none());
    assert!(stages::linear_params(&cfg).get("numerics").is_none());
    // TF32 does not exist on the CPU: asked for, it resolves off.
    let on = fit(&tiny("ipirm", &["train.tf32=true"]), CPU, 1).unwrap();
    assert!(on.numerics.is_plain());
    assert_eq!(stages::epoch_params(&on.cfg, 3, None), before);
}

/// The trainer reads the numerics of a fitted config and decides nothing: `auto` left in a
/// config is refused by name (every command fits first, `ipirm::fit`).
#[test]
fn a_trainer_refuses_a_config_not_fitted_to_the_machine() {
    let _rng = rng_lock();
    let e = Trainer::new(&tiny("ipirm", &[]), CPU)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("train.precision"), "{e}");
    assert!(Trainer::new(&fitted(&tiny("ipirm", &[]), CPU), CPU).is_ok());
}

#[test]
fn a_setting_that_changes_results_enters_the_stage_keys() {
    let bf16 = tiny("ipirm", &["train.precision=bf16"]);
    let n = Numerics::resolve(&bf16.train, CPU).unwrap();
    assert!(n.bf16 && !n.channels_last && !n.tf32);
    let p = stages::epoch_params(&bf16, 3, None);
    assert_eq!(p["numerics"]["precision"], "bf16");
    for p in [
        stages::features_params(&bf16, 0),
        stages::encoder_knn_params(&bf16),
        stages::monitor_params(&bf16, 5),
        stages::linear_params(&bf16),
    ] {
        assert_eq!(p["numerics"]["precision"], "bf16", "{p}");
    }
    // Raw pixels do not go through the model; the offline partition reads stored features.
    assert!(stages::knn_params(&bf16).get("numerics").is_none());
    assert!(stages::partition_params(&bf16, 0).get("numerics").is_none());
    let online = tiny("ipirm", &["train.precision=bf16", "maximize.offline=false"]);
    assert!(stages::partition_params(&online, 0)
        .get("numerics")
        .is_some());
    let cl = tiny("ipirm", &["train.channels_last=true"]);
    assert_eq!(
        stages::epoch_params(&cl, 3, None)["numerics"]["channels_last"],
        true
    );
}

#[test]
fn the_settings_parse_as_auto_true_false() {
    let c = tiny(
        "ipirm",
        &[
            "train.precision=bf16",
            "train.channels_last=on",
            "train.tf32=false",
        ],
    );
    assert_eq!(c.train.precision, Precision::Bf16);
    assert_eq!(c.train.channels_last, Switch::On);
    assert_eq!(c.train.tf32, Switch::Off);
    let c = c
        .with_overrides(&["train.channels_last=auto", "train.precision=fp32"])
        .unwrap();
    assert_eq!(c.train.channels_last, Switch::Auto);
    assert_eq!(c.train.precision, Precision::Fp32);
    let back: Config = toml::from_str(&c.to_toml()).unwrap();
    assert_eq!(back, c);
    assert!(Config::default()
        .with_overrides(&["train.precision=fp16"])
        .is_err());
    assert!(Config::default()
        .with_overrides(&["train.tf32=maybe"])
        .is_err());
    assert!(Config::default()
        .with_overrides(&["train.debiased=auto"])
        .is_err());
}

#[test]
fn an_epoch_with_the_cpu_defaults_is_the_explicit_fp32_epoch_bit_for_bit() {
    let _rng = rng_lock();
    let (images, parts) = data();
    for method in ["simclr", "ipirm"] {
        let mut a = Trainer::new(&fitted(&tiny(method, &[]), CPU), CPU).unwrap();
        let explicit = [
            "train.precision=fp32",
            "train.channels_last=false",
            "train.tf32=false",
        ];
        let mut b = Trainer::new(&fitted(&tiny(method, &explicit), CPU), CPU).unwrap();
        let sa = a.train_epoch(&images, &parts).unwrap();
        let sb = b.train_epoch(&images, &parts).unwrap();
        assert_eq!(sa.loss.to_bits(), sb.loss.to_bits(), "{method}");
        assert!(states_equal(&a, &b), "{method}");
        let za = ipirm::train::ipirm::extract_view_pairs(&a, &images, 0)
            .unwrap()
            .z1;
        let zb = ipirm::train::ipirm::extract_view_pairs(&b, &images, 0)
            .unwrap()
            .z1;
        assert!(za.equal(&zb));
    }
}

#[test]
fn channels_last_on_the_cpu_stays_within_rounding() {
    let _rng = rng_lock();
    let (images, parts) = data();
    // Width 8: narrower strided shortcuts are refused in channels_last on the CPU (oneDNN's
    // kernel for them corrupts the heap on AVX2 CPUs; the test below).
    let plain_cfg = tiny("ipirm", &["model.width=8"]);
    let cl_cfg = tiny("ipirm", &["model.width=8", "train.channels_last=true"]);
    let mut plain = Trainer::new(&fitted(&plain_cfg, CPU), CPU).unwrap();
    let mut cl = Trainer::new(&fitted(&cl_cfg, CPU), CPU).unwrap();
    assert!(cl.model.numerics().channels_last);
    // The convolution weights are channels_last (and the same values); BatchNorm's are 1-d.
    let mut convs = 0;
    for (name, t) in cl.vs.variables() {
        if t.dim() == 4 {
            convs += 1;
            assert!(
                shim::is_contiguous(&t, MemoryFormat::ChannelsLast).unwrap(),
                "{name}"
            );
            assert!(t.equal(&plain.vs.variables()[&name]), "{name}");
        }
    }
    assert_eq!(convs, 1 + 8 * 2 + 3);
    let x = ipirm::data::augment::test_view(&images.narrow(0, 0, 16));
    for train in [false, true] {
        let (hp, zp) = plain.model.forward(&x, train);
        let (hc, zc) = cl.model.forward(&x, train);
        assert_eq!(zc.kind(), Kind::Float);
        assert!(
            max_diff(&hp, &hc) < 1e-5,
            "train {train}: {}",
            max_diff(&hp, &hc)
        );
        // The projection in training mode goes through the head's BatchNorm on 16 samples,
        // which divides the convolutions' rounding differences by a small batch deviation:
        // measured 1.1e-5 on one thread (below 1e-5 on two) with |z| up to 0.86, hence 2e-5.
        let tol = if train { 2e-5 } else { 1e-5 };
        assert!(
            max_diff(&zp, &zc) < tol,
            "train {train}: {} (largest |z| {})",
            max_diff(&zp, &zc),
            zp.abs().max().double_value(&[])
        );
    }
    // One backward pass on a fixed batch. The bound is a noise floor measured here: how far
    // the fp32 model's gradients move when its input moves by one rounding (a relative 2^-24),
    // which is what any change in the order of a sum does, amplified through this network on
    // this CPU's kernels (a fixed 1e-4 of the largest entry held on one CPU, 2e-5 measured,
    // and failed at 1.3e-3 on an AVX2 one, 2026-12-04).
    let grads = |t: &mut Trainer, x: &Tensor| {
        t.opt.zero_grad();
        let (_, z1) = t.model.forward(x, true);
        let (_, z2) = t.model.forward(&x.flip([3]), true);
        ipirm::loss::info_nce_loss(&z1, &z2, 0.5)
            .unwrap()
            .backward();
        let mut g: Vec<(String, Tensor)> =
            t.vs.variables()
                .into_iter()
                .filter(|(_, v)| v.requires_grad())
                .map(|(n, v)| (n, v.grad().copy()))
                .collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        g
    };
    let nudged = &x * (1.0 + (x.rand_like() * 2.0 - 1.0) * 2f64.powi(-22));
    let reference = grads(&mut plain, &x);
    let floor = grads(&mut plain, &nudged);
    let ours = grads(&mut cl, &x);
    // Each parameter's gradient: within 1e-4 of its largest entry, or of ten times the floor
    // where the network amplifies a rounding more than that (measured on an AVX2 CPU: the stem's
    // weight gradient moves 6.4e-3 of 4.85 under the nudge and as much under channels_last).
    for (((n, a), (_, f)), (_, b)) in reference.iter().zip(&floor).zip(&ours) {
        let scale = a.abs().max().double_value(&[]).max(1e-30);
        let (d, noise) = (max_diff(a, b), max_diff(a, f));
        assert!(
            d < (1e-4 * scale).max(10.0 * noise),
            "{n}: {d} of {scale}, noise floor {noise}"
        );
    }
    // An epoch's mean loss. Its four Adam steps move each weight whose gradient is near zero
    // by about lr toward whichever side rounding puts that gradient, so the epochs part by more
    // than the gradients: 4.2e-4 relative on one CPU (2026-11-29), 1.7e-3 on an AVX2 one where
    // the fp32 epoch itself is bit-identical on 1 and 2 threads (2026-12-04):
    // the bound is 5e-3, three times the largest measured.
    let sp = plain.train_epoch(&images, &parts).unwrap();
    let sc = cl.train_epoch(&images, &parts).unwrap();
    assert!(
        ((sp.loss - sc.loss) / sp.loss).abs() < 5e-3,
        "{} vs {}",
        sp.loss,
        sc.loss
    );
    // A checkpoint of either layout loads into the other.
    let mut again = Trainer::new(&fitted(&cl_cfg, CPU), CPU).unwrap();
    again.restore(&plain.checkpoint()).unwrap();
    let w = &again.vs.variables()["f.0.weight"];
    assert!(shim::is_contiguous(w, MemoryFormat::ChannelsLast).unwrap());
    assert!(w.equal(&plain.vs.variables()["f.0.weight"]));
}

/// Below 8 channels into a strided 1×1 shortcut, channels_last on the CPU is refused by name
/// before any work: oneDNN's backward kernel for it corrupts the heap (PyTorch 2.11.0, AVX2).
#[test]
fn channels_last_on_the_cpu_refuses_a_too_narrow_encoder() {
    let _rng = rng_lock();
    for width in [4, 7] {
        let w = format!("model.width={width}");
        let e = Trainer::new(
            &fitted(&tiny("ipirm", &[&w, "train.channels_last=true"]), CPU),
            CPU,
        )
        .err()
        .expect("refused");
        let m = e.to_string();
        assert!(
            m.contains("train.channels_last") && m.contains(&format!("one of {width}")),
            "{m}"
        );
    }
    assert!(Trainer::new(&fitted(&tiny("ipirm", &["model.width=4"]), CPU), CPU).is_ok());
}

#[test]
fn bf16_autocast_on_the_cpu_stays_within_1e_2_and_keeps_fp32_where_it_must() {
    let _rng = rng_lock();
    let (images, parts) = data();
    let plain = Trainer::new(&fitted(&tiny("ipirm", &[]), CPU), CPU).unwrap();
    let mut bf =
        Trainer::new(&fitted(&tiny("ipirm", &["train.precision=bf16"]), CPU), CPU).unwrap();
    assert!(bf.model.numerics().bf16);
    let cfg = &plain.cfg;
    let idx = Tensor::arange(16, (Kind::Int64, CPU));
    let x1 = ipirm::data::augment::test_view(&images.narrow(0, 0, 16));
    let x2 = x1.flip([3]);
    let loss = |t: &Trainer| {
        let (_, z1) = t.model.forward(&x1, true);
        let (_, z2) = t.model.forward(&x2, true);
        assert_eq!((z1.kind(), z2.kind()), (Kind::Float, Kind::Float));
        minimize_loss(&z1, &z2, &idx, &parts, cfg, 0.2).unwrap()
    };
    let (lp, lb) = (loss(&plain), loss(&bf));
    let d = (lp.total.double_value(&[]) - lb.total.double_value(&[])).abs();
    assert!(
        d < 1e-2,
        "fp32 {} bf16 {}",
        lp.total.double_value(&[]),
        lb.total.double_value(&[])
    );
    assert!(d > 0.0, "bf16 changed nothing: autocast was not on");
    assert_eq!(lb.total.kind(), Kind::Float);
    // The step: gradients and weights stay fp32, and autocast is off once the forward is done.
    bf.opt.backward_step(&lb.total);
    for (name, t) in bf.vs.trainable_variables().iter().enumerate() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
        assert_eq!(t.grad().kind(), Kind::Float, "{name}");
    }
    assert!(!shim::autocast_state(CPU).unwrap().enabled);
    // A whole epoch runs and reports a finite loss near fp32's.
    let s = bf.train_epoch(&images, &parts).unwrap();
    assert!(s.loss.is_finite());
}

/// On a GPU only (returns at once without one): the defaults resolve to bf16 (on compute
/// capability ≥ 8), channels_last and TF32; an epoch under them lands within 1e-2 of the fp32
/// epoch's loss; the TF32 switches are restored after it.
#[test]
fn on_a_gpu_the_defaults_train_within_1e_2_of_fp32() {
    if tch::Cuda::device_count() == 0 {
        eprintln!("no GPU: skipped");
        return;
    }
    let _rng = rng_lock();
    let gpu = Device::Cuda(0);
    let (images, parts) = data();
    let (images, parts): (Tensor, Vec<Tensor>) = (
        images.to_device(gpu),
        parts.iter().map(|p| p.to_device(gpu)).collect(),
    );
    let n = Numerics::resolve(&tiny("ipirm", &[]).train, gpu).unwrap();
    eprintln!("cuda:0 defaults: {}", n.describe());
    assert!(n.channels_last && n.tf32);
    assert_eq!(n.bf16, shim::cuda_bf16_supported(0).unwrap());
    let before = shim::tf32().unwrap();
    let mut auto = Trainer::new(&fitted(&tiny("ipirm", &[]), gpu), gpu).unwrap();
    let fp32 = [
        "train.precision=fp32",
        "train.channels_last=false",
        "train.tf32=false",
    ];
    let mut plain = Trainer::new(&fitted(&tiny("ipirm", &fp32), gpu), gpu).unwrap();
    let sa = auto.train_epoch(&images, &parts).unwrap();
    let sp = plain.train_epoch(&images, &parts).unwrap();
    assert_eq!(shim::tf32().unwrap(), before);
    assert!(
        (sa.loss - sp.loss).abs() < 1e-2,
        "{} vs {}",
        sa.loss,
        sp.loss
    );
    for (name, t) in auto.vs.variables() {
        assert_eq!(t.kind(), Kind::Float, "{name}");
    }
}
