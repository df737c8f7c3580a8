//! `whale slurm`: write sbatch job-array scripts for a stage's sub-steps, chained by dependencies,
//! and the sbatch script of a multi-node training job.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;

#[derive(clap::Subcommand)]
pub enum SlurmCommand {
    /// Scripts for `whale dedup`: signatures and filter as arrays over input files, buckets as an
    /// array over key partitions, clusters as one job, each starting when the one before succeeded.
    Dedup(DedupArgs),
    /// An sbatch script for `whale train` on several GPU nodes: srun starts one task per GPU, each
    /// a data-parallel rank that reads its place from Slurm's environment (rank 0's node, the
    /// first of the allocation, hosts the rendezvous).
    Train(TrainArgs),
}

#[derive(clap::Args)]
pub struct TrainArgs {
    /// The .sbatch script to write.
    #[arg(long)]
    script: PathBuf,
    /// Nodes to train on.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// GPUs (and so ranks) per node.
    #[arg(long, default_value_t = 8)]
    gpus_per_node: usize,
    /// Extra `#SBATCH` lines, e.g. `--sbatch=--partition=gpu --sbatch=--time=48:00:00`.
    #[arg(long = "sbatch", allow_hyphen_values = true)]
    sbatch: Vec<String>,
    /// `whale train` flags every rank gets (--shards, --model, --config, --out, …), after `--`.
    #[arg(last = true, required = true)]
    train_args: Vec<String>,
}

#[derive(clap::Args)]
pub struct DedupArgs {
    /// Where to write the .sbatch scripts and submit.sh.
    #[arg(long)]
    scripts: PathBuf,
    /// Array size of the signatures, buckets and filter steps.
    #[arg(long, default_value_t = 100)]
    array_tasks: usize,
    /// Extra `#SBATCH` lines, e.g. `--sbatch=--partition=cpu --sbatch=--time=4:00:00`.
    #[arg(long = "sbatch", allow_hyphen_values = true)]
    sbatch: Vec<String>,
    /// `whale dedup` flags every job gets (--input, --output, --config, …), after `--`.
    #[arg(last = true, required = true)]
    dedup_args: Vec<String>,
}

pub fn run(cmd: SlurmCommand) -> anyhow::Result<()> {
    match cmd {
        SlurmCommand::Dedup(args) => write_dedup(&args),
        SlurmCommand::Train(args) => {
            let exe = std::env::current_exe().context("locating the whale binary")?;
            write_script(&args.script, &train_script(&args, &exe)?)?;
            println!(
                "slurm train: {} nodes × {} GPUs → {} (submit with sbatch)",
                args.nodes,
                args.gpus_per_node,
                args.script.display()
            );
            Ok(())
        }
    }
}

/// The sbatch script of a training job: one srun task per GPU, every task a rank.
fn train_script(args: &TrainArgs, exe: &Path) -> anyhow::Result<String> {
    anyhow::ensure!(
        args.nodes >= 1 && args.gpus_per_node >= 1,
        "--nodes and --gpus-per-node must be at least 1"
    );
    anyhow::ensure!(
        !args.train_args.iter().any(|a| a.starts_with("--nproc")),
        "leave --nproc out: srun starts the ranks"
    );
    let g = args.gpus_per_node;
    let mut script = format!(
        "#!/bin/bash\n#SBATCH --job-name=whale-train\n#SBATCH --output=whale-train-%j.log\n\
         #SBATCH --nodes={}\n#SBATCH --ntasks-per-node={g}\n#SBATCH --gpus-per-node={g}\n",
        args.nodes
    );
    for line in &args.sbatch {
        writeln!(script, "#SBATCH {line}")?;
    }
    writeln!(script, "set -euo pipefail")?;
    writeln!(
        script,
        "# Each task is one rank: whale reads SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID (its GPU) and\n\
         # meets the others at the first node of SLURM_JOB_NODELIST, on MASTER_PORT when set, else a\n\
         # port derived from the job id. --kill-on-bad-exit ends every rank when one fails."
    )?;
    let flags: Vec<String> = args.train_args.iter().map(|a| shell_quote(a)).collect();
    writeln!(
        script,
        "srun --kill-on-bad-exit=1 {} train {}",
        shell_quote(&exe.display().to_string()),
        flags.join(" ")
    )?;
    Ok(script)
}

fn write_dedup(args: &DedupArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.array_tasks >= 1, "--array-tasks must be at least 1");
    let exe = std::env::current_exe().context("locating the whale binary")?;
    std::fs::create_dir_all(&args.scripts)?;
    let common: Vec<String> = args.dedup_args.iter().map(|a| shell_quote(a)).collect();
    let steps = [
        ("signatures", args.array_tasks),
        ("buckets", args.array_tasks),
        ("clusters", 1),
        ("filter", args.array_tasks),
    ];
    let mut submit = String::from("#!/bin/bash\n# Submit the dedup sub-steps as dependent Slurm jobs.\nset -euo pipefail\ncd \"$(dirname \"$0\")\"\n");
    let mut previous: Option<String> = None;
    for (i, (step, tasks)) in steps.iter().enumerate() {
        let name = format!("{}-{step}.sbatch", i + 1);
        let mut script = format!("#!/bin/bash\n#SBATCH --job-name=whale-dedup-{step}\n#SBATCH --output=whale-dedup-{step}-%A_%a.log\n");
        if *tasks > 1 {
            writeln!(script, "#SBATCH --array=0-{}", tasks - 1)?;
        }
        for line in &args.sbatch {
            writeln!(script, "#SBATCH {line}")?;
        }
        writeln!(script, "set -euo pipefail")?;
        writeln!(script, "# Task index comes from SLURM_ARRAY_TASK_ID; finished units are skipped on resubmission.")?;
        writeln!(
            script,
            "exec {} dedup {} --step {step} --tasks {tasks} --task \"${{SLURM_ARRAY_TASK_ID:-0}}\"",
            shell_quote(&exe.display().to_string()),
            common.join(" ")
        )?;
        write_script(&args.scripts.join(&name), &script)?;
        let var = format!("job{}", i + 1);
        let dependency = previous
            .as_ref()
            .map(|p| format!("--dependency=afterok:${p} "))
            .unwrap_or_default();
        writeln!(submit, "{var}=$(sbatch --parsable {dependency}{name})")?;
        writeln!(submit, "echo \"{step}: job ${var}\"")?;
        previous = Some(var);
    }
    write_script(&args.scripts.join("submit.sh"), &submit)?;
    println!(
        "slurm dedup: 4 job scripts and submit.sh → {}",
        args.scripts.display()
    );
    Ok(())
}

fn write_script(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))?;
    }
    Ok(())
}

/// Single-quote `s` for bash unless it is made only of safe characters.
fn shell_quote(s: &str) -> String {
    if !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@".contains(c))
    {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn train_script_runs_one_srun_task_per_gpu() {
        let args = TrainArgs {
            script: PathBuf::from("train.sbatch"),
            nodes: 2,
            gpus_per_node: 8,
            sbatch: vec!["--partition=gpu".into()],
            train_args: ["--shards", "data/my shards", "--out", "runs/a"]
                .map(String::from)
                .to_vec(),
        };
        let script = train_script(&args, Path::new("/opt/whale")).unwrap();
        for line in [
            "#SBATCH --nodes=2",
            "#SBATCH --ntasks-per-node=8",
            "#SBATCH --gpus-per-node=8",
            "#SBATCH --partition=gpu",
            "srun --kill-on-bad-exit=1 /opt/whale train --shards 'data/my shards' --out runs/a",
        ] {
            assert!(script.lines().any(|l| l == line), "{line:?} in\n{script}");
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("train.sbatch");
        write_script(&path, &script).unwrap();
        let syntax = std::process::Command::new("bash")
            .arg("-n")
            .arg(&path)
            .status()
            .unwrap();
        assert!(syntax.success(), "bash -n rejects\n{script}");

        let nproc = TrainArgs {
            train_args: vec!["--nproc".into(), "8".into()],
            ..args
        };
        assert!(train_script(&nproc, Path::new("whale")).is_err());
    }
}
