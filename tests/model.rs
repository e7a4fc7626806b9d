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
