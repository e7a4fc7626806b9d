//! Keeps libtorch_cuda linked and embeds an rpath to the libtorch the crate was built against.
//!
//! torch-sys links `torch_cuda`, but the linker's default `--as-needed` drops it because no symbol
//! of ours references it directly; without it libtorch registers no CUDA backend and the binary
//! sees no GPU. The rpath lets the binary run without the user exporting `LD_LIBRARY_PATH`.
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if let Ok(root) = std::env::var("LIBTORCH") {
        let lib = PathBuf::from(root).join("lib");
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    }
}
