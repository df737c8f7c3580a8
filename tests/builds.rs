//! What the workspace's builds compile, read from `cargo tree` (offline, from Cargo.lock): the
//! data binary's build needs no libtorch, and the binaries' build (`scripts/demo`) compiles every
//! dependency with the same features as the tests' build (`scripts/test`), so the second reuses
//! the first's artifacts instead of recompiling polars.

use std::collections::BTreeSet;
use std::process::Command;

/// `cargo tree ARGS` lines as `name vX.Y.Z features`, without repeats.
fn cargo_tree(args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--offline",
            "--prefix",
            "none",
            "--format",
            "{p} {f}",
        ])
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("run cargo tree");
    assert!(
        out.status.success(),
        "cargo tree {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| l.trim_end_matches(" (*)").trim_end().to_string())
        .collect()
}

#[test]
fn the_data_binary_builds_without_libtorch() {
    let tree = cargo_tree(&["-p", "whale", "-e", "normal,build"]);
    assert!(
        tree.iter().any(|l| l.starts_with("polars ")),
        "cargo tree lists the dependencies: {tree:?}"
    );
    let torch: Vec<&String> = tree
        .iter()
        .filter(|l| {
            ["torch-sys ", "tch ", "trainer "]
                .iter()
                .any(|k| l.starts_with(k))
        })
        .collect();
    assert!(torch.is_empty(), "building whale compiles {torch:?}");
    // The check can fail: the trainer's build does compile them.
    let trainer = cargo_tree(&["-p", "trainer", "-e", "normal,build"]);
    assert!(trainer.iter().any(|l| l.starts_with("torch-sys ")));
}

#[test]
fn binaries_and_tests_compile_dependencies_with_the_same_features() {
    let bins = cargo_tree(&["--workspace", "-e", "no-dev"]);
    let tests = cargo_tree(&["--workspace"]);
    assert!(bins.len() > 100, "{bins:?}");
    let differ: Vec<&String> = bins.difference(&tests).collect();
    assert!(
        differ.is_empty(),
        "the tests' build compiles these dependencies with other features than the binaries' \
         build, so `scripts/test` would recompile them after `scripts/demo`: {differ:?}; add the \
         tests' features (`cargo tree --workspace -f '{{p}} {{f}}' -i CRATE`) to \
         workspace-hack/Cargo.toml"
    );
}
