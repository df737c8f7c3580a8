//! The `whale` binary as a new user meets it: version, help for every command and flag, and the
//! sample-dump generator.

use std::path::Path;
use std::process::Command;

fn whale(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_whale"))
        .args(args)
        .output()
        .expect("run whale")
}

fn stdout(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "whale failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

#[test]
fn version_is_the_crate_version() {
    let out = stdout(&whale(&["--version"]));
    assert_eq!(out.trim(), format!("whale {}", env!("CARGO_PKG_VERSION")));
}

/// Subcommand names listed under "Commands:" in a help text.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_string)
        .collect()
}

/// Walks every (sub)command's --help and checks that each flag and command carries an explanation.
fn check_help(path: &mut Vec<String>) -> usize {
    let mut args: Vec<&str> = path.iter().map(String::as_str).collect();
    args.push("--help");
    let help = stdout(&whale(&args));
    let mut undocumented = Vec::new();
    let mut lines = help.lines().peekable();
    while let Some(line) = lines.next() {
        let t = line.trim_start();
        let is_item =
            t.starts_with('-') || (line.starts_with("  ") && !t.is_empty() && !t.starts_with('['));
        if !is_item || line.starts_with("      ") && !t.starts_with('-') {
            continue;
        }
        // clap puts the explanation on the same line (after 2+ spaces) or on the next indented line.
        let same_line = t
            .split_once("  ")
            .is_some_and(|(_, rest)| !rest.trim().is_empty());
        let next_line = lines
            .peek()
            .is_some_and(|n| n.starts_with("          ") && !n.trim().is_empty());
        if !same_line && !next_line {
            undocumented.push(line.to_string());
        }
    }
    assert!(
        undocumented.is_empty(),
        "`whale {}` has undocumented items: {undocumented:?}",
        path.join(" ")
    );
    let mut count = 1;
    for sub in subcommands(&help) {
        path.push(sub);
        count += check_help(path);
        path.pop();
    }
    count
}

#[test]
fn every_command_and_flag_is_explained_in_help() {
    let checked = check_help(&mut Vec::new());
    assert!(
        checked >= 2,
        "expected at least the top level and `synth`, got {checked}"
    );
    let top = stdout(&whale(&["--help"]));
    assert!(subcommands(&top).contains(&"synth".to_string()));
}

fn tree(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().display().to_string(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn synth_is_byte_identical_for_a_seed_and_reports_what_it_wrote() {
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let pa = a.path().join("dump");
    let pb = b.path().join("dump");
    let out = stdout(&whale(&[
        "synth",
        "--out",
        pa.to_str().unwrap(),
        "--seed",
        "3",
        "--docs",
        "50",
    ]));
    stdout(&whale(&[
        "synth",
        "--out",
        pb.to_str().unwrap(),
        "--seed",
        "3",
        "--docs",
        "50",
    ]));
    assert!(out.contains("150 originals"), "{out}");
    let (ta, tb) = (tree(&pa), tree(&pb));
    assert_eq!(ta, tb);
    let names: Vec<&str> = ta.iter().map(|(n, _)| n.as_str()).collect();
    assert!(names.contains(&"truth.jsonl"));
    assert!(names.iter().any(|n| n.ends_with(".warc.wet.gz")));
    assert!(names.iter().any(|n| n.ends_with(".jsonl.zst")));
    assert!(names.iter().any(|n| n.ends_with("truncated.jsonl.gz")));
}

#[test]
fn a_bad_flag_gets_a_clear_error() {
    let out = whale(&["synth"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--out"), "{err}");
}

/// `whale-train`, which cargo builds beside `whale` for the workspace's tests.
fn trainer_binary() -> std::path::PathBuf {
    let path = Path::new(env!("CARGO_BIN_EXE_whale")).with_file_name("whale-train");
    assert!(
        path.is_file(),
        "{} is missing: run the workspace's tests (`cargo test --workspace`), which build it",
        path.display()
    );
    path
}

#[test]
fn trainer_commands_are_handed_to_whale_train() {
    trainer_binary();
    let help = stdout(&whale(&["train", "--help"]));
    assert!(help.contains("Usage: whale train"), "{help}");
    assert!(help.contains("--shards"), "{help}");
    for (command, flag) in [("eval", "--windows"), ("generate", "--speculative")] {
        let help = stdout(&whale(&[command, "--help"]));
        assert!(help.contains(&format!("Usage: whale {command}")), "{help}");
        assert!(help.contains(flag), "{help}");
    }
    let info = stdout(&whale(&[
        "model",
        "info",
        concat!(env!("CARGO_MANIFEST_DIR"), "/configs/model/tiny.toml"),
        "--json",
    ]));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    assert!(info["total_params"].as_f64().unwrap() > 1e5, "{info}");
    // The trainer's own errors and exit codes come through unchanged.
    let out = whale(&["train", "--no-such-flag"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"));
}

/// Every shared library `binary` loads, as the dynamic loader resolves them (`ldd`): names and
/// paths only, without the load addresses (a random `0x…c10…` must not read as libc10).
fn loaded_libraries(binary: &Path) -> String {
    let out = Command::new("ldd").arg(binary).output().expect("run ldd");
    assert!(out.status.success(), "ldd {}", binary.display());
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|line| {
            line.split_whitespace()
                .filter(|t| !t.starts_with("(0x"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn the_data_binary_links_no_libtorch() {
    let libs = loaded_libraries(Path::new(env!("CARGO_BIN_EXE_whale")));
    for lib in ["torch", "c10", "gomp", ".venv"] {
        assert!(!libs.contains(lib), "whale loads {lib}:\n{libs}");
    }
    // The trainer does load it: the check above can tell the difference.
    assert!(loaded_libraries(&trainer_binary()).contains("libtorch_cpu"));
}

/// Runs the copied `whale` in `dir` with nothing but a minimal PATH in its environment.
fn isolated(exe: &Path, dir: &Path, args: &[&str]) -> std::process::Output {
    Command::new(exe)
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .output()
        .expect("run the copied whale")
}

#[test]
fn every_data_stage_runs_without_libtorch_and_train_says_how_to_install_it() {
    // A data-only install: `whale` alone in a directory with no .venv, no whale-train beside it,
    // and no library path.
    let dir = tempfile::tempdir().unwrap();
    let exe = dir.path().join("whale");
    std::fs::copy(env!("CARGO_BIN_EXE_whale"), &exe).unwrap();
    let ok = |args: &[&str]| {
        let out = isolated(&exe, dir.path(), args);
        assert!(
            out.status.success(),
            "whale {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    ok(&["synth", "--out", "dump", "--docs", "60"]);
    ok(&["dedup", "--input", "dump/CC-MAIN-*", "--output", "dedup"]);
    ok(&["filter", "--input", "dedup", "--output", "filter"]);
    ok(&[
        "remix",
        "--input",
        "filter",
        "--output",
        "remix",
        "--balance",
        "2",
    ]);
    ok(&[
        "tokenizer",
        "train",
        "--input",
        "remix",
        "--out",
        "tok/tokenizer.json",
        "--vocab-size",
        "600",
    ]);
    let shard = ok(&[
        "shard",
        "--tokenizer",
        "tok/tokenizer.json",
        "--input",
        "remix",
        "--output",
        "shards",
    ]);
    assert!(shard.contains("docs"), "{shard}");
    ok(&["shards", "verify", "shards"]);
    let encoded = ok(&[
        "tokenizer",
        "encode",
        "--tokenizer",
        "tok/tokenizer.json",
        "--input",
        "remix",
        "--output",
        "ids.jsonl",
    ]);
    assert!(encoded.contains("tokens"), "{encoded}");
    ok(&[
        "slurm",
        "dedup",
        "--scripts",
        "sbatch",
        "--",
        "--input",
        "dump",
        "--output",
        "d",
    ]);
    for command in ["train", "model", "eval", "generate"] {
        let out = isolated(&exe, dir.path(), &[command, "--help"]);
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("whale-train"), "{err}");
        assert!(err.contains("scripts/setup"), "{err}");
        assert!(err.contains("cargo build --release -p trainer"), "{err}");
    }
}
