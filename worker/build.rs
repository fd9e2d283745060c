//! Compiles the C++ shims (`csrc/c10d_shim.cpp`, `csrc/autocast_shim.cpp`, `csrc/cuda_memory.cpp`,
//! `csrc/memory_format.cpp`)
//! against libtorch's headers and embeds libtorch's directory as an rpath so `kontrast` runs without
//! LD_LIBRARY_PATH.
//!
//! libtorch's location comes from torch-sys (`DEP_TCH_LIBTORCH_LIB`, the `lib/` directory); its
//! headers are next to it (`../include`). With the `nccl` feature the CUDA and NCCL headers come
//! from the nvidia-* wheels next to the torch wheel (scripts/setup-python.sh installs the
//! header-only ones), or from `$CUDA_HOME/include` for a standalone libtorch.
use std::env;
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    println!("cargo:rerun-if-changed=csrc");
    let Ok(lib) = env::var("DEP_TCH_LIBTORCH_LIB") else {
        panic!("DEP_TCH_LIBTORCH_LIB is not set: torch-sys did not locate libtorch");
    };
    let lib = PathBuf::from(lib);
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
    let nccl = env::var_os("CARGO_FEATURE_NCCL").is_some();

    let include = lib.join("..").join("include");
    let mut build = cc::Build::new();
    build
        .cpp(true)
        .pic(true)
        .std("c++20")
        .file("csrc/c10d_shim.cpp")
        .file("csrc/autocast_shim.cpp")
        .file("csrc/cuda_memory.cpp")
        .file("csrc/memory_format.cpp")
        // The stand-in gloo headers first (see csrc/gloo/README.md).
        .include("csrc")
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .define("USE_C10D_GLOO", None)
        // libtorch's headers are not warning-clean; ours are checked by the build of csrc alone.
        .flag_if_supported("-Wno-unused-parameter")
        .flag_if_supported("-Wno-deprecated-declarations")
        .flag_if_supported("-Wno-missing-field-initializers")
        // c10's CUDA event pool aligns to it; we never allocate that class.
        .flag_if_supported("-Wno-interference-size");
    if nccl {
        // USE_CUDA as torch_cuda and c10_cuda were built, so their headers lay out alike.
        build.define("USE_C10D_NCCL", None).define("USE_CUDA", None);
        for dir in cuda_includes(&lib) {
            build.include(dir);
        }
    }
    build.compile("kontrast_c10d");

    println!("cargo:rustc-link-search=native={}", lib.display());
    if nccl {
        // Kept even though only the shim refers to it, so CUDA's hooks register at load time.
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
    }
    for name in ["torch_cpu", "torch", "c10"] {
        println!("cargo:rustc-link-lib=dylib={name}");
    }
}

/// Header directories for CUDA, NCCL and CCCL: the nvidia-* wheels beside the torch wheel
/// (`<site-packages>/torch/lib` → `<site-packages>/nvidia/*/include`), then `$CUDA_HOME/include`.
fn cuda_includes(lib: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let nvidia = lib.join("../../nvidia");
    if let Ok(entries) = std::fs::read_dir(&nvidia) {
        let mut found: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path().join("include"))
            .filter(|p| p.is_dir())
            .collect();
        found.sort();
        for dir in found {
            // CCCL's headers (nv/target, cuda/std) live one level down in its wheel.
            let cccl = dir.join("cccl");
            if cccl.is_dir() {
                dirs.push(cccl);
            }
            dirs.push(dir);
        }
    }
    if let Some(home) = env::var_os("CUDA_HOME") {
        dirs.push(PathBuf::from(home).join("include"));
    }
    if dirs.is_empty() {
        println!(
            "cargo:warning=no CUDA headers found beside libtorch or under CUDA_HOME; \
             run scripts/setup-python.sh"
        );
    }
    dirs
}
