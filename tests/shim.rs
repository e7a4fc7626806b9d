//! The C++ shim loads and each wrapper does what it says (on the CPU: the CUDA paths need a GPU).
use ipirm::shim::{self, MemoryFormat, Tf32};
use tch::{Device, Kind, Tensor};

/// Autocast's state is per thread and every test runs on its own thread, so the tests below do
/// not see each other's scopes; TF32 is process-wide, so one test owns it.
#[test]
fn bf16_autocast_on_the_cpu_is_scoped_and_nests() {
    let cpu = Device::Cpu;
    let a = Tensor::randn([8, 16], (Kind::Float, cpu));
    let b = Tensor::randn([16, 4], (Kind::Float, cpu));
    let before = shim::autocast_state(cpu).unwrap();
    assert!(!before.enabled);
    assert_eq!(a.matmul(&b).kind(), Kind::Float);
    {
        let _outer = shim::autocast(cpu, Kind::BFloat16).unwrap();
        let s = shim::autocast_state(cpu).unwrap();
        assert!(s.enabled);
        assert_eq!(s.kind, Kind::BFloat16);
        assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        // Not eligible for a lower precision: stays fp32.
        assert_eq!(a.exp().kind(), Kind::Float);
        {
            let _inner = shim::autocast(cpu, Kind::BFloat16).unwrap();
            assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
        }
        // The inner scope's exit left the outer one on.
        assert!(shim::autocast_state(cpu).unwrap().enabled);
        assert_eq!(a.matmul(&b).kind(), Kind::BFloat16);
    }
    assert_eq!(shim::autocast_state(cpu).unwrap(), before);
    assert_eq!(a.matmul(&b).kind(), Kind::Float);
}

#[test]
fn autocast_leaves_weights_fp32_and_gradients_flow_in_fp32() {
    let cpu = Device::Cpu;
    let w = Tensor::randn([16, 4], (Kind::Float, cpu)).set_requires_grad(true);
    let x = Tensor::randn([8, 16], (Kind::Float, cpu));
    let y = {
        let _g = shim::autocast(cpu, Kind::BFloat16).unwrap();
        x.matmul(&w)
    };
    assert_eq!(y.kind(), Kind::BFloat16);
    y.to_kind(Kind::Float).sum(Kind::Float).backward();
    assert_eq!(w.kind(), Kind::Float);
    assert_eq!(w.grad().kind(), Kind::Float);
}

#[test]
fn autocast_refuses_a_dtype_it_cannot_compute_in() {
    let e = shim::autocast(Device::Cpu, Kind::Int64)
        .err()
        .expect("an error");
    assert!(e.to_string().contains("bf16"), "{e}");
    assert!(!shim::autocast_state(Device::Cpu).unwrap().enabled);
}

#[test]
fn channels_last_is_reported_and_keeps_values() {
    let x = Tensor::randn([2, 3, 5, 7], (Kind::Float, Device::Cpu));
    assert!(!shim::is_contiguous(&x, MemoryFormat::ChannelsLast).unwrap());
    let cl = shim::contiguous(&x, MemoryFormat::ChannelsLast).unwrap();
    assert!(shim::is_contiguous(&cl, MemoryFormat::ChannelsLast).unwrap());
    assert!(!cl.is_contiguous());
    assert_eq!(cl.size(), x.size());
    assert_eq!(cl.stride(), vec![105, 1, 21, 3]);
    assert!(cl.equal(&x));

    // In place on a parameter: same tensor (the gradient flag stays), new layout, same values.
    let mut w = Tensor::randn([4, 3, 3, 3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    let copy = w.detach().copy();
    let alias = w.shallow_clone();
    shim::set_memory_format_(&mut w, MemoryFormat::ChannelsLast).unwrap();
    assert!(shim::is_contiguous(&alias, MemoryFormat::ChannelsLast).unwrap());
    assert!(alias.requires_grad());
    assert!(alias.equal(&copy));
}

#[test]
fn a_libtorch_error_comes_back_as_an_error() {
    // channels_last needs a 4-d tensor: libtorch throws, the wrapper returns it.
    let e = shim::contiguous(
        &Tensor::zeros([3, 4], (Kind::Float, Device::Cpu)),
        MemoryFormat::ChannelsLast,
    )
    .expect_err("an error");
    assert!(e.to_string().contains("rank 4"), "{e}");
}

#[test]
fn tf32_switches_read_back_and_a_scope_restores_them() {
    let start = shim::tf32().unwrap();
    for t in [
        Tf32 {
            matmul: true,
            cudnn: false,
        },
        Tf32 {
            matmul: false,
            cudnn: true,
        },
        Tf32 {
            matmul: true,
            cudnn: true,
        },
        Tf32 {
            matmul: false,
            cudnn: false,
        },
    ] {
        shim::set_tf32(t).unwrap();
        assert_eq!(shim::tf32().unwrap(), t);
    }
    shim::set_tf32(start).unwrap();
    {
        let flipped = Tf32 {
            matmul: !start.matmul,
            cudnn: !start.cudnn,
        };
        let _g = shim::tf32_scope(flipped).unwrap();
        assert_eq!(shim::tf32().unwrap(), flipped);
    }
    assert_eq!(shim::tf32().unwrap(), start);
}

#[test]
fn no_gpu_means_no_bf16_gpu() {
    if tch::Cuda::device_count() == 0 {
        assert!(!shim::cuda_bf16_supported(0).unwrap());
    }
    assert!(!shim::cuda_bf16_supported(1000).unwrap());
}
