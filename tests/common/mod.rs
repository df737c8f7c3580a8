//! Helpers shared by the end-to-end tests: run the built `whale` binary from the project root,
//! with no library path, so the data stages are seen to run without libtorch.
#![allow(dead_code)] // each test binary uses its own subset

use std::process::{Command, Output};

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .env_remove("LD_LIBRARY_PATH")
        .env_remove("LIBTORCH")
        .output()
        .expect("running whale")
}

/// Runs `whale ARGS` and fails the test, showing its output, unless it succeeds.
pub fn whale(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "whale {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `whale ARGS`, which must fail, and returns its error output.
pub fn whale_fails(args: &[&str]) -> String {
    let out = run(args);
    assert!(
        !out.status.success(),
        "whale {args:?} succeeded but should fail"
    );
    String::from_utf8_lossy(&out.stderr).into_owned()
}
