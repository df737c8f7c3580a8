//! Helpers shared by the end-to-end tests of the `whale-train` binary: run it from the workspace
//! root (where the default `configs/…` paths resolve), as `whale train …` runs it.
#![allow(dead_code)] // each test binary uses its own subset

use std::path::Path;
use std::process::{Command, Output};

/// `whale-train ARGS`, to be run from the workspace root.
pub fn command(args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_whale-train"));
    cmd.args(args)
        .current_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join(".."));
    cmd
}

/// Runs `whale-train ARGS` from the workspace root.
pub fn run(args: &[&str]) -> Output {
    command(args).output().expect("running whale-train")
}

/// Runs `whale-train ARGS` and fails the test, showing its output, unless it succeeds.
pub fn whale_train(args: &[&str]) -> Output {
    let out = run(args);
    assert!(
        out.status.success(),
        "whale-train {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}
