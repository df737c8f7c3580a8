//! Embeds libtorch's lib dir (exported by torch-sys as DEP_TCH_LIBTORCH_LIB) as an rpath, and keeps
//! libtorch_cuda linked even though no symbol of it is referenced directly, so the same binary finds
//! the GPU when one is there and runs without LD_LIBRARY_PATH.
//!
//! Also compiles the crate's C++ for what tch cannot express (`src/cpp.rs` calls it):
//! - `src/custom_grad.cpp`: an autograd node whose backward calls Rust (`src/custom_grad.rs`);
//! - `src/optim_kernels.cpp`: the fused AdamW kernel and gradient release (`src/optim.rs`);
//! - `src/head_kernels.cpp`: the blocked logits GEMM and in-place softmax cross-entropy of the
//!   fused output head (`src/cross_entropy.rs`);
//! - `src/dist.cpp`: torch.distributed's TCPStore, Gloo and NCCL process groups and collectives
//!   (`src/dist/`), with gloo's declarations from Debian's `libgloo-dev` when installed (see the
//!   comment at the top of dist.cpp for why that is ABI-safe);
//! - `src/autocast.cpp`: autocast on any device type in a chosen dtype (`src/autocast.rs`);
//! - `src/cuda_info.cpp`: the GPU's name and the caching allocator's peak (`src/cuda_info.rs`);
//! - `src/profiler.cpp`: the PyTorch profiler (libkineto) over chosen steps (`src/profile.rs`);
//! - `src/host_memory.cpp`: host-to-GPU copies from pinned memory that do not wait for the GPU
//!   (`src/host_memory.rs`).
//!
//! The CUDA parts (NCCL group, device name, memory peak) compile against the CUDA and NCCL headers
//! the torch wheel's `nvidia-*` packages install beside it (`site-packages/nvidia/{cu13,nccl}`);
//! without them those functions return an error saying what is missing.
fn main() {
    if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
        if std::path::Path::new(&dir).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
        }
        compile_cpp(std::path::Path::new(&dir));
    }
}

/// Where Debian's `libgloo-dev` puts gloo's headers (on the compiler's default include path).
const GLOO_INCLUDE: &str = "/usr/include";

/// Headers the CUDA parts need: the runtime API, the host-compiler definitions it includes
/// (`nvidia-cuda-crt`), libcu++'s `nv/target` (`nvidia-cuda-cccl`) and NCCL.
const CUDA_HEADERS: [&str; 4] = [
    "cuda_runtime_api.h",
    "crt/host_defines.h",
    "nv/target",
    "nccl.h",
];

/// The folders holding [`CUDA_HEADERS`]: those pip's `nvidia-*` wheels install next to torch
/// (`lib_dir` is `site-packages/torch/lib`; scripts/setup installs the two header-only ones the
/// torch wheel does not pull in), then `$CUDA_HOME/include` (a system toolkit). None when a
/// header is missing or libtorch has no CUDA.
fn cuda_includes(lib_dir: &std::path::Path) -> Option<Vec<std::path::PathBuf>> {
    println!("cargo:rerun-if-env-changed=CUDA_HOME");
    let nvidia = lib_dir.join("../../nvidia");
    let mut dirs = vec![nvidia.join("cu13/include"), nvidia.join("nccl/include")];
    if let Ok(home) = std::env::var("CUDA_HOME") {
        dirs.push(std::path::Path::new(&home).join("include"));
    }
    // Watching the folders (cargo scans them) rebuilds once scripts/setup adds a missing header.
    for d in dirs.iter().filter(|d| d.exists()) {
        println!("cargo:rerun-if-changed={}", d.display());
    }
    let found = CUDA_HEADERS
        .iter()
        .all(|h| dirs.iter().any(|d| d.join(h).exists()));
    (found && lib_dir.join("libtorch_cuda.so").exists()).then_some(dirs)
}

/// Builds the C++ bridges against the same libtorch headers and C++ ABI as torch-sys.
fn compile_cpp(lib_dir: &std::path::Path) {
    let srcs = [
        "src/custom_grad.cpp",
        "src/optim_kernels.cpp",
        "src/head_kernels.cpp",
        "src/dist.cpp",
        "src/autocast.cpp",
        "src/cuda_info.cpp",
        "src/profiler.cpp",
        "src/host_memory.cpp",
    ];
    for src in srcs.iter().chain(&["src/cpp_error.h"]) {
        println!("cargo:rerun-if-changed={src}");
    }
    println!("cargo:rerun-if-env-changed=LIBTORCH_CXX11_ABI");
    let include = lib_dir.join("../include");
    let abi = std::env::var("LIBTORCH_CXX11_ABI").unwrap_or_else(|_| "1".into());
    let mut build = cc::Build::new();
    // Headers only: libtorch_cpu.so carries gloo itself.
    let gloo = std::path::Path::new(GLOO_INCLUDE).join("gloo/context.h");
    println!("cargo:rerun-if-changed={}", gloo.display());
    if gloo.exists() {
        build.define("USE_C10D_GLOO", None);
    } else {
        println!("cargo:warning=no gloo headers in {GLOO_INCLUDE}: multi-process training on CPU is disabled (run scripts/setup, which installs libgloo-dev)");
    }
    match cuda_includes(lib_dir) {
        Some(dirs) => {
            build
                .define("WHALE_CUDA", None)
                .define("USE_C10D_NCCL", None);
            build.includes(dirs);
        }
        None => println!(
            "cargo:warning=no CUDA/NCCL headers ({}) beside libtorch \
             (site-packages/nvidia/{{cu13,nccl}}/include) or in $CUDA_HOME/include: NCCL, the \
             GPU's name and memory peak are disabled (run scripts/setup, which installs \
             nvidia-cuda-crt and nvidia-cuda-cccl, or set CUDA_HOME)",
            CUDA_HEADERS.join(", ")
        ),
    }
    build
        .cpp(true)
        .files(srcs)
        .include(&include)
        .include(include.join("torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .flag("-DGLOG_USE_GLOG_EXPORT")
        // libtorch's `at::parallel_for` is inline OpenMP: without -fopenmp it runs serially.
        .flag("-fopenmp")
        .warnings(false)
        // The head kernels' loops are ours: optimized even in the dev profile (opt-level 1).
        .opt_level(2)
        .compile("whale_cpp");
    // The OpenMP runtime libtorch ships and loads (unversioned `libgomp.so` is not in the wheel).
    println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
}
