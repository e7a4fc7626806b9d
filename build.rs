//! Keeps libtorch_cuda linked, embeds an rpath to the libtorch the crate was built against, and
//! compiles the C++ shim (`src/shim/shim.cpp`) against that libtorch's headers.
//!
//! torch-sys links `torch_cuda`, but the linker's default `--as-needed` drops it because no symbol
//! of ours references it directly; without it libtorch registers no CUDA backend and the binary
//! sees no GPU. The rpath lets the binary run without the user exporting `LD_LIBRARY_PATH`.
//!
//! The shim needs only `torch_cpu` and `c10` (it reaches CUDA through libtorch's CUDA hooks, not
//! CUDA's headers), so the crate builds and runs where libtorch has no CUDA. libtorch is found
//! where torch-sys found it (`DEP_TCH_LIBTORCH_LIB`, its `links = "tch"` metadata), else at
//! `$LIBTORCH`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rerun-if-changed=src/shim/shim.cpp");
    println!("cargo:rerun-if-changed=src/distributed/c10d.cpp");
    println!("cargo:rerun-if-env-changed=GLOO_INCLUDE");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    let lib = std::env::var_os("DEP_TCH_LIBTORCH_LIB")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("LIBTORCH").map(|r| PathBuf::from(r).join("lib")));
    let Some(lib) = lib else {
        panic!("libtorch not found: torch-sys gave no DEP_TCH_LIBTORCH_LIB and LIBTORCH is unset (source scripts/env.sh)");
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let root = lib.parent().expect("libtorch's lib folder has a parent");
    let include = root.join("include");
    // C++ against libtorch's headers, as torch-sys builds its own glue.
    let against_libtorch = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .std("c++17")
            .define("_GLIBCXX_USE_CXX11_ABI", "1")
            .include(&include)
            .include(include.join("torch/csrc/api/include"))
            // libtorch's headers are not warning-clean under -Wall; our own code is small.
            .warnings(false);
        b
    };
    against_libtorch()
        .file("src/shim/shim.cpp")
        .compile("ipirm_shim");
    // c10d (TCPStore, ProcessGroupGloo) for training on several processes. ProcessGroupGloo.hpp
    // includes Gloo's headers, which the torch wheel does not ship: Debian's libgloo-dev has them
    // (`GLOO_INCLUDE` names another folder). Without them the entry points say so at run time.
    let gloo_dir = std::env::var_os("GLOO_INCLUDE").map(PathBuf::from);
    let gloo = gloo_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("/usr/include"));
    let mut dist = against_libtorch();
    dist.file("src/distributed/c10d.cpp");
    if gloo.join("gloo/context.h").exists() {
        dist.define("USE_C10D_GLOO", None);
        // Not /usr/include itself: as a -I folder it breaks libstdc++'s #include_next.
        if let Some(dir) = &gloo_dir {
            dist.include(dir);
        }
    } else {
        println!(
            "cargo:warning=no Gloo headers at {} (apt install libgloo-dev, or set GLOO_INCLUDE): multi-process training is disabled in this build",
            gloo.display()
        );
        dist.define("IPIRM_NO_GLOO", None);
    }
    // NCCL (ProcessGroupNCCL, for CUDA ranks): its header ships in the nvidia-nccl wheel torch
    // installs beside libtorch, the CUDA headers its include chain needs in the nvidia-cuda-*
    // wheels scripts/setup.sh adds; compiled and linked wherever they are, GPU or not.
    let site = lib
        .ancestors()
        .nth(2)
        .map(PathBuf::from)
        .unwrap_or_default();
    let nccl_include = site.join("nvidia/nccl/include");
    let cuda_include = site.join("nvidia/cu13/include");
    let nccl = nccl_include.join("nccl.h").exists()
        && ["cuda_runtime_api.h", "crt/host_config.h", "nv/target"]
            .iter()
            .all(|h| cuda_include.join(h).exists());
    if nccl {
        dist.define("IPIRM_NCCL", None)
            .define("USE_C10D_NCCL", None)
            .define("USE_CUDA", None)
            .include(&nccl_include)
            .include(&cuda_include);
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
    } else {
        println!(
            "cargo:warning=no NCCL or CUDA headers under {} (scripts/setup.sh installs them): --dist-backend nccl is disabled in this build",
            site.join("nvidia").display()
        );
    }
    dist.compile("ipirm_c10d");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib=torch_cpu");
    println!("cargo:rustc-link-lib=dylib=c10");
}
