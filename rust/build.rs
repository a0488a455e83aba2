//! Compiles the Cython pixel kernels (core/kernels/*.pyx) into this extension module, so one
//! maturin build yields one shared object holding both the Rust bindings and `dicomvault._kernels`
//! (the pattern cryptography uses for its cffi C code).
//!
//! Only with the `extension-module` feature: plain `cargo test`/`clippy` of the workspace must not
//! need a Python interpreter, Cython, or libpython.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../core/kernels");
    println!("cargo:rerun-if-env-changed=PYO3_PYTHON");
    if env::var_os("CARGO_FEATURE_EXTENSION_MODULE").is_none() {
        return;
    }
    // maturin points PYO3_PYTHON at the interpreter it builds for (in pip's isolated build env
    // that interpreter has Cython, from pyproject's build-system.requires).
    let python = env::var("PYO3_PYTHON")
        .or_else(|_| env::var("PYTHON_SYS_EXECUTABLE"))
        .unwrap_or_else(|_| "python3".to_string());
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let pyx = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .join("../core/kernels/_kernels.pyx");
    let c_file = out.join("_kernels.c");

    let status = Command::new(&python)
        .args(["-m", "cython", "-3", "--module-name", "dicomvault._kernels", "-o"])
        .arg(&c_file)
        .arg(&pyx)
        .status()
        .unwrap_or_else(|e| panic!("running {python} -m cython: {e}"));
    assert!(status.success(), "cython failed on {}", pyx.display());

    let include = Command::new(&python)
        .args(["-c", "import sysconfig; print(sysconfig.get_paths()['include'])"])
        .output()
        .unwrap_or_else(|e| panic!("asking {python} for its include dir: {e}"));
    let include = String::from_utf8(include.stdout).expect("utf-8 include path");

    cc::Build::new()
        .file(&c_file)
        .include(include.trim())
        // Single-phase init: PyInit__kernels returns the module object itself, which the Rust
        // module init then registers as dicomvault._kernels.
        .define("CYTHON_PEP489_MULTI_PHASE_INIT", "0")
        .opt_level(3)
        .warnings(false)
        .compile("dv_kernels");
}
