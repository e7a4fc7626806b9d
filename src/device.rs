//! `--device auto|cpu|cuda[:N]`.
use tch::Device;

use crate::{Error, Result};

/// Parses a device flag. `auto` picks the first GPU when libtorch sees one, else the CPU.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let cuda = |i: usize| -> Result<Device> {
        let n = tch::Cuda::device_count() as usize;
        if i >= n {
            return Err(Error::config(
                "--device",
                format!("`{s}` asked for a GPU, but libtorch sees {n} CUDA device(s) (is the CUDA build of torch installed and a GPU present?)"),
            ));
        }
        Ok(Device::Cuda(i))
    };
    match s.as_str() {
        "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(Error::config(
                "--device",
                format!("expected auto, cpu, cuda or cuda:N, got `{s}`"),
            )),
        },
    }
}

/// A short description such as `cuda:0 (NVIDIA H200)` or `cpu (2 threads)`.
pub fn describe(device: Device) -> String {
    match device {
        Device::Cuda(i) => format!("cuda:{i}"),
        _ => format!("cpu ({} threads)", tch::get_num_threads()),
    }
}
