//! `--device auto|cpu|cuda[:N]`, and making sure libtorch's CUDA backend is loaded.
//!
//! libtorch registers its CUDA backend when `libtorch_cuda.so` is loaded. The binary keeps it
//! linked (build.rs), but a crate built by evcxr for a notebook gets no link arguments, the
//! linker drops the library as unneeded, and libtorch then sees no GPU. [`cuda`] loads it at
//! run time when it is missing (from `$LIBTORCH/lib` or the library path), so a notebook's
//! `ipirm` uses the GPU like the binary; [`cuda`]'s answer says which device a process gets and
//! why.
use std::path::Path;
use std::sync::OnceLock;

use tch::Device;

use crate::{Error, Result};

/// What the process can use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CudaStatus {
    /// GPUs libtorch sees.
    pub devices: usize,
    /// How the CUDA backend came to be there, or why there is none.
    pub why: String,
}

impl std::fmt::Display for CudaStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.devices {
            0 => write!(f, "cpu: {}", self.why),
            n => write!(
                f,
                "cuda:0 ({n} GPU{}): {}",
                if n == 1 { "" } else { "s" },
                self.why
            ),
        }
    }
}

/// Loads libtorch's CUDA backend if the process lacks it, once; the GPUs libtorch then sees.
pub fn cuda() -> &'static CudaStatus {
    static STATUS: OnceLock<CudaStatus> = OnceLock::new();
    STATUS.get_or_init(|| {
        if tch::Cuda::is_available() {
            return CudaStatus { devices: tch::Cuda::device_count() as usize, why: "libtorch's CUDA backend is linked".into() };
        }
        // A libtorch_cuda already in the process (linked, as the binary links it, on a machine
        // without a GPU) must not be loaded again from elsewhere ($LIBTORCH naming another
        // venv): a second copy registers the CUDA hooks twice and libtorch aborts.
        let (loaded, how) = match mapped_torch_cuda() {
            Some(path) => (Ok(path), "linked"),
            None => (load_torch_cuda(), "loaded at start-up"),
        };
        let devices = tch::Cuda::device_count().max(0) as usize;
        let why = match (&loaded, devices) {
            (Ok(path), n) if n > 0 => format!("libtorch's CUDA backend {how} from {path}"),
            (Ok(path), _) => format!("libtorch's CUDA backend is {how} ({path}) but sees no GPU (no NVIDIA driver or no device)"),
            (Err(e), _) => format!("libtorch's CUDA backend could not be loaded ({e}); CPU only"),
        };
        CudaStatus { devices, why }
    })
}

/// The path of the `libtorch_cuda.so` mapped into this process, if one is.
fn mapped_torch_cuda() -> Option<String> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|path| path.ends_with("/libtorch_cuda.so"))
        .map(str::to_string)
}

/// `dlopen`s `libtorch_cuda.so` (global symbols, so its static initialisers register the CUDA
/// hooks with libtorch); returns where it came from.
fn load_torch_cuda() -> std::result::Result<String, String> {
    let mut candidates: Vec<String> = Vec::new();
    if let Ok(root) = std::env::var("LIBTORCH") {
        candidates.push(format!("{root}/lib/libtorch_cuda.so"));
    }
    candidates.push("libtorch_cuda.so".into());
    let mut errors = Vec::new();
    for c in &candidates {
        let name = std::ffi::CString::new(c.as_str()).map_err(|e| e.to_string())?;
        // SAFETY: dlopen with a NUL-terminated path; the handle is kept for the process's life
        // (never dlclosed), as libtorch's registered hooks point into the library.
        let handle = unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
        if !handle.is_null() {
            return Ok(c.clone());
        }
        // SAFETY: dlerror returns a thread-local C string or null.
        let err = unsafe { libc::dlerror() };
        let msg = if err.is_null() {
            "unknown error".to_string()
        } else {
            unsafe { std::ffi::CStr::from_ptr(err) }
                .to_string_lossy()
                .into_owned()
        };
        errors.push(msg);
    }
    Err(errors.join("; "))
}

/// Parses a device flag. `auto` picks the first GPU when libtorch sees one, else the CPU.
pub fn parse_device(s: &str) -> Result<Device> {
    let s = s.trim().to_ascii_lowercase();
    let n = cuda().devices;
    let gpu = |i: usize| -> Result<Device> {
        if i >= n {
            return Err(Error::config(
                "--device",
                format!(
                    "`{s}` asked for a GPU, but libtorch sees {n} CUDA device(s): {}",
                    cuda().why
                ),
            ));
        }
        Ok(Device::Cuda(i))
    };
    match s.as_str() {
        "auto" => Ok(if n > 0 { Device::Cuda(0) } else { Device::Cpu }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => gpu(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => gpu(i),
            _ => Err(Error::config(
                "--device",
                format!("expected auto, cpu, cuda or cuda:N, got `{s}`"),
            )),
        },
    }
}

/// A short description such as `cuda:0 (NVIDIA H200)` or `cpu (AMD EPYC 9454, 2 threads)`, with
/// the processor's model where the system names it: it is recorded with every artifact and run
/// report, and CPU results differ in their last digits between processor models.
pub fn describe(device: Device) -> String {
    match (device, processor_model(device)) {
        (Device::Cuda(i), Some(m)) => format!("cuda:{i} ({m})"),
        (Device::Cuda(i), None) => format!("cuda:{i}"),
        (_, Some(m)) => format!("cpu ({m}, {} threads)", tch::get_num_threads()),
        (_, None) => format!("cpu ({} threads)", tch::get_num_threads()),
    }
}

/// The version of the libtorch in use, best effort: `version.py` (a torch wheel) or
/// `build-version` (a libtorch zip) under `$LIBTORCH` at run time, else under the `LIBTORCH` the
/// crate was built with, else `unknown`.
pub fn libtorch_version() -> String {
    static V: OnceLock<String> = OnceLock::new();
    V.get_or_init(|| {
        let roots = [
            std::env::var("LIBTORCH").ok(),
            option_env!("LIBTORCH").map(str::to_string),
        ];
        for root in roots.into_iter().flatten() {
            let root = Path::new(&root);
            if let Ok(s) = std::fs::read_to_string(root.join("version.py")) {
                if let Some(v) = s
                    .lines()
                    .find_map(|l| l.strip_prefix("__version__"))
                    .and_then(|v| v.split_once('='))
                    .map(|(_, v)| v.trim().trim_matches(['\'', '"']))
                {
                    return v.to_string();
                }
            }
            if let Ok(s) = std::fs::read_to_string(root.join("build-version")) {
                return s.trim().to_string();
            }
        }
        "unknown".into()
    })
    .clone()
}

/// The model of the CPU (`/proc/cpuinfo`'s first `model name`), or of the GPUs when the NVIDIA
/// driver lists only one model (`/proc/driver/nvidia/gpus/*/information`: CUDA's device order
/// need not be the driver's, so a machine of mixed GPUs names none). Linux only; read once per
/// process (every stored artifact records it).
fn processor_model(device: Device) -> Option<String> {
    static CPU: OnceLock<Option<String>> = OnceLock::new();
    static GPU: OnceLock<Option<String>> = OnceLock::new();
    let field = |text: &str, name: &str| {
        let line = text.lines().find(|l| l.starts_with(name))?;
        let value = line.split_once(':')?.1.split_whitespace();
        Some(value.collect::<Vec<_>>().join(" ")).filter(|v| !v.is_empty())
    };
    let gpus = || {
        let mut models = std::collections::BTreeSet::new();
        for gpu in std::fs::read_dir("/proc/driver/nvidia/gpus")
            .ok()?
            .flatten()
        {
            let info = std::fs::read_to_string(gpu.path().join("information")).ok()?;
            models.insert(field(&info, "Model")?);
        }
        models.pop_first().filter(|_| models.is_empty())
    };
    match device {
        Device::Cuda(_) => GPU.get_or_init(gpus).clone(),
        _ => CPU
            .get_or_init(|| {
                field(
                    &std::fs::read_to_string("/proc/cpuinfo").ok()?,
                    "model name",
                )
            })
            .clone(),
    }
}

/// Makes glibc keep freed memory for reuse instead of handing large blocks back to the kernel:
/// no `mmap` for large allocations (`M_MMAP_MAX` 0) and no trimming of the heap's top below 2 GiB
/// (`M_TRIM_THRESHOLD`). libtorch allocates every CPU tensor with `posix_memalign`, and glibc
/// maps each block over 32 MiB (the largest activations of a ResNet-50 at batch 32) afresh and
/// unmaps it when freed, so every step paid a page fault per 4 KiB of each large activation and
/// gradient; the kernel's side of that was a quarter of a CPU minimize step. With the memory
/// kept, the process's peak resident size stays reserved. Called first thing by the `ipirm`
/// binary; `IPIRM_MALLOC=default` leaves glibc as it is. Returns whether it changed anything
/// (only with glibc on Linux).
pub fn keep_freed_memory() -> bool {
    if std::env::var("IPIRM_MALLOC").is_ok_and(|v| v == "default") {
        return false;
    }
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets allocator parameters; both values are in range.
    let kept = unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0) == 1
            && libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX) == 1
    };
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let kept = false;
    FREED_MEMORY_KEPT.store(kept, std::sync::atomic::Ordering::Relaxed);
    kept
}

static FREED_MEMORY_KEPT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Whether [`keep_freed_memory`] took effect in this process.
pub fn freed_memory_kept() -> bool {
    FREED_MEMORY_KEPT.load(std::sync::atomic::Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    /// The CPU's description names its model where `/proc/cpuinfo` gives one (CPU results differ
    /// between models), then the thread count.
    #[test]
    fn a_cpu_is_described_with_its_model() {
        let d = super::describe(tch::Device::Cpu);
        let threads = format!("{} threads)", tch::get_num_threads());
        assert!(d.starts_with("cpu (") && d.ends_with(&threads), "{d}");
        let info = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        if let Some(line) = info.lines().find(|l| l.starts_with("model name")) {
            let model: Vec<&str> = line.split(':').nth(1).unwrap().split_whitespace().collect();
            assert_eq!(d, format!("cpu ({}, {threads}", model.join(" ")), "{line}");
        }
    }
}
