//! The dedup stage without the `whale` binary around it, for `scripts/bench-dedup`: `whale` links
//! libtorch for `train`, whose shared libraries alone add ~470 MB of resident memory and ~1 s of
//! start-up to every command, which would hide the stage's own footprint.
//!
//! `cargo run --release -p pipeline --example dedup -- INPUT OUTPUT THREADS [--verify] [--seed=N]
//! [--scheme=whale|datatrove] [--no-exact]`

use std::path::PathBuf;

use pipeline::dedup::{DedupConfig, Run, Scheme};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [input, output, threads, flags @ ..] = args.as_slice() else {
        anyhow::bail!(
            "usage: dedup INPUT OUTPUT THREADS [--verify] [--seed=N] [--scheme=S] [--no-exact]"
        );
    };
    let mut config = DedupConfig::default();
    for flag in flags {
        match flag.split_once('=') {
            None if flag == "--verify" => config.verify = true,
            None if flag == "--no-exact" => config.exact = false,
            Some(("--seed", n)) => config.seed = Some(n.parse()?),
            Some(("--scheme", "whale")) => config.scheme = Scheme::Whale,
            Some(("--scheme", "datatrove")) => config.scheme = Scheme::Datatrove,
            _ => anyhow::bail!("unknown flag {flag}"),
        }
    }
    let run = Run::open(config, &[PathBuf::from(input)], output.as_ref(), true)?
        .with_threads(threads.parse()?)?;
    run.run_all()?;
    let m = run.manifest()?;
    println!(
        "dedup: {} docs in, {} kept, {} removed {:?}",
        m.docs_in, m.docs_kept, m.docs_removed, m.clusters.removed
    );
    Ok(())
}
