//! Model shapes, parameter counts and names (the reference's released checkpoints use
//! torchvision's names under `f.N` / `g.N`).
use ipirm::config::{Arch, ModelConfig};
use ipirm::model::{count_parameters, Model};
use tch::{nn, Device, Kind, Tensor};

fn build(arch: Arch, width: i64) -> (nn::VarStore, Model) {
    let vs = nn::VarStore::new(Device::Cpu);
    let cfg = ModelConfig {
        arch,
        width,
        ..Default::default()
    };
    let m = Model::new(&vs.root(), &cfg);
    (vs, m)
}

#[test]
fn resnet50_parameter_counts_match_the_reference() {
    let (vs, m) = build(Arch::Resnet50, 64);
    // torchvision resnet50 without fc (23,508,032 − 9,408 + 1,728 for the 3×3 stem).
    assert_eq!(count_parameters(&vs, "f."), 23_500_352);
    assert_eq!(count_parameters(&vs, "g."), 1_115_264);
    assert_eq!(m.feature_width, 2048);
}

#[test]
fn variable_names_follow_torchvision_under_f_and_g() {
    let (vs, _) = build(Arch::Resnet50, 64);
    let vars = vs.variables();
    for name in [
        "f.0.weight",
        "f.1.running_mean",
        "f.3.0.conv1.weight",
        "f.3.0.downsample.0.weight",
        "f.3.0.downsample.1.bias",
        "f.6.2.conv3.weight",
        "f.6.2.bn3.running_var",
        "g.0.weight",
        "g.1.weight",
        "g.3.bias",
    ] {
        assert!(vars.contains_key(name), "missing variable {name}");
    }
    assert!(!vars.contains_key("g.0.bias"), "g.0 has no bias");
    assert_eq!(vars["f.0.weight"].size(), [64, 3, 3, 3]);
    assert_eq!(vars["f.6.0.conv2.weight"].size(), [512, 512, 3, 3]);
}

#[test]
fn resnet18_width_multiplier_and_normalised_outputs() {
    let (vs, m) = build(Arch::Resnet18, 16);
    assert_eq!(m.feature_width, 128);
    // torchvision resnet18 without fc, 3×3 stem: 11,168,832 at width 64; convs scale with width².
    let (vs64, _) = build(Arch::Resnet18, 64);
    assert_eq!(count_parameters(&vs64, "f."), 11_168_832);
    assert!(count_parameters(&vs, "f.") < count_parameters(&vs64, "f.") / 10);
    let x = Tensor::randn([4, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (f, z) = m.forward(&x, true);
    assert_eq!(f.size(), [4, 128]);
    assert_eq!(z.size(), [4, 128]);
    let norms = z.norm_scalaropt_dim(2, [1], false);
    assert!(norms.allclose(
        &Tensor::ones([4], (Kind::Float, Device::Cpu)),
        1e-5,
        1e-5,
        false
    ));
    // Any input size works (the test transform does not resize: STL-10 at 96, Fashion-MNIST at 28).
    let (f, _) = m.forward(
        &Tensor::randn([2, 3, 28, 28], (Kind::Float, Device::Cpu)),
        false,
    );
    assert_eq!(f.size(), [2, 128]);
}

/// `model.bn_splits = 2` is `nn.DataParallel` on two GPUs in train mode: the forward equals two
/// replicas forwarding `x.chunk(2)` (⌈B/2⌉ and the rest) separately, and the running statistics
/// are those of the first replica alone. In eval mode splitting changes nothing.
#[test]
fn split_batchnorm_is_dataparallel_on_two_gpus() {
    tch::manual_seed(0);
    let two = ModelConfig {
        arch: Arch::Resnet18,
        width: 8,
        head_hidden: 16,
        feature_dim: 8,
        bn_splits: 2,
        sync_bn: false,
    };
    let one = ModelConfig {
        bn_splits: 1,
        ..two.clone()
    };
    let vs = nn::VarStore::new(Device::Cpu);
    let split = Model::new(&vs.root(), &two);
    let replica = |vs_src: &nn::VarStore| {
        let mut v = nn::VarStore::new(Device::Cpu);
        let m = Model::new(&v.root(), &one);
        v.copy(vs_src).unwrap();
        (v, m)
    };
    let (vs_a, a) = replica(&vs);
    let (vs_b, b) = replica(&vs);
    let x = Tensor::randn([7, 3, 32, 32], (Kind::Float, Device::Cpu));
    let (f, z) = split.forward(&x, true);
    let (fa, za) = a.forward(&x.narrow(0, 0, 4), true);
    let (fb, zb) = b.forward(&x.narrow(0, 4, 3), true);
    let diff = |p: &Tensor, q: &Tensor| (p - q).abs().max().double_value(&[]);
    assert!(diff(&f, &Tensor::cat(&[fa, fb], 0)) < 1e-6);
    assert!(diff(&z, &Tensor::cat(&[za, zb], 0)) < 1e-6);
    let (v, va, vb) = (vs.variables(), vs_a.variables(), vs_b.variables());
    let mut checked = 0;
    for (name, t) in v.iter().filter(|(n, _)| n.contains("running_")) {
        assert!(
            diff(t, &va[name]) < 1e-7,
            "{name} follows the first replica"
        );
        assert!(
            diff(t, &vb[name]) > 0.0,
            "{name} ignores the second replica"
        );
        checked += 1;
    }
    assert!(checked > 10);
    assert!(diff(&split.forward(&x, false).1, &a.forward(&x, false).1) < 1e-6);
    // Plain BatchNorm over the whole batch differs (the point of the setting).
    let (vs_c, c) = replica(&vs);
    let _ = vs_c;
    assert!(diff(&c.forward(&x, true).1, &z) > 1e-4);
}

/// The initialisation PyTorch gives the reference's modules (see src/model/resnet.rs).
#[test]
fn initialisation_follows_pytorch() {
    tch::manual_seed(1);
    let (vs, _) = build(Arch::Resnet50, 64);
    let v = vs.variables();
    let max_abs = |n: &str| v[n].abs().max().double_value(&[]);
    for bn in ["f.1", "f.3.0.bn1", "f.6.2.bn3", "g.1"] {
        assert_eq!(
            v[&format!("{bn}.weight")].min().double_value(&[]),
            1.0,
            "{bn}.weight = 1"
        );
        assert_eq!(max_abs(&format!("{bn}.bias")), 0.0, "{bn}.bias = 0");
    }
    // nn.Conv2d / nn.Linear defaults: U(±1/√fan_in), filling most of the range.
    for (name, fan_in) in [
        ("f.0.weight", 27.0f64),
        ("g.0.weight", 2048.0),
        ("g.3.weight", 512.0),
        ("g.3.bias", 512.0),
    ] {
        let bound = 1.0 / fan_in.sqrt();
        let m = max_abs(name);
        assert!(
            m <= bound && m > 0.9 * bound,
            "{name}: max |w| {m} for bound {bound}"
        );
    }
    // torchvision's Kaiming normal, fan-out: std √(2 / (c_out·k·k)).
    let w = &v["f.6.0.conv2.weight"]; // 512 out, 3×3
    let std = w.std(true).double_value(&[]);
    let want = (2.0f64 / (512.0 * 9.0)).sqrt();
    assert!((std / want - 1.0).abs() < 0.02, "std {std} vs {want}");
}
