//! Generates the Open Inference Protocol's gRPC service from
//! proto/grpc_predict_v2.proto (with protox: no protoc needed).
//!
//! Links libtorch_cuda.so even though no symbol of it is referenced: its static
//! initialisers register the CUDA backend, and without it the binary never sees
//! a GPU. The CPU image drops the entry again (see images/runtime/stage.sh).
use std::path::PathBuf;

fn main() {
    println!("cargo:rerun-if-changed=proto/grpc_predict_v2.proto");
    let descriptors = protox::compile(["grpc_predict_v2.proto"], ["proto"])
        .unwrap_or_else(|e| panic!("proto/grpc_predict_v2.proto: {e}"));
    tonic_prost_build::configure()
        .build_client(false)
        .build_server(true)
        .compile_fds(descriptors)
        .unwrap_or_else(|e| panic!("generating the gRPC service: {e}"));
    println!("cargo:rerun-if-env-changed=KILN_TORCH_LIB");
    println!("cargo:rerun-if-env-changed=LIBTORCH_USE_PYTORCH");
    let Ok(lib) = std::env::var("KILN_TORCH_LIB") else {
        return;
    };
    let lib = PathBuf::from(lib);
    if lib.join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        println!("cargo:rustc-link-arg=-ltorch_cuda");
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
    // Lets tests and local runs find libtorch without LD_LIBRARY_PATH; the
    // image replaces this path with its own (stage.sh).
    println!("cargo:rustc-link-arg=-Wl,-rpath,{}", lib.display());
}
