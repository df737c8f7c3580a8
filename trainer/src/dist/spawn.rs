//! `whale train --nproc N`: start N ranks of this machine as child processes, like torchrun does,
//! and end the job as soon as one of them fails, naming it.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::dist::placement::{free_port, Placement};

/// How often the launcher looks at its children.
const POLL: Duration = Duration::from_millis(50);

/// Runs `exe args` as `nproc` ranks on 127.0.0.1 (a free port, torchrun's environment variables)
/// and waits for all of them. When one exits unsuccessfully the others are killed and the error
/// names the first rank that failed.
pub fn run_local_ranks(exe: &Path, args: &[OsString], nproc: usize) -> Result<()> {
    let port = free_port()?;
    let mut children: Vec<Option<Child>> = Vec::with_capacity(nproc);
    for rank in 0..nproc {
        let mut cmd = Command::new(exe);
        cmd.args(args)
            .envs(Placement::local(rank, nproc, port).env());
        die_with_parent(&mut cmd);
        match cmd.spawn() {
            Ok(child) => children.push(Some(child)),
            Err(e) => {
                kill_all(&mut children);
                return Err(e).with_context(|| format!("starting rank {rank}: {}", exe.display()));
            }
        }
    }
    loop {
        let mut running = 0;
        let mut failed = Vec::new();
        for (rank, slot) in children.iter_mut().enumerate() {
            let Some(child) = slot.as_mut() else {
                continue;
            };
            match child.try_wait()? {
                None => running += 1,
                Some(status) => {
                    *slot = None;
                    if !status.success() {
                        failed.push((rank, status));
                    }
                }
            }
        }
        // A rank that was killed is the cause; the others then fail to reach it.
        failed.sort_by_key(|(_, status)| status.signal().is_none());
        if let Some((rank, status)) = failed.first() {
            // When a rank timed out waiting, the ranks still running are the ones that hung.
            let alive: Vec<String> = (0..nproc)
                .filter(|&r| children[r].is_some())
                .map(|r| r.to_string())
                .collect();
            kill_all(&mut children);
            let alive = match alive.len() {
                0 => String::new(),
                _ => format!(" (still running then: rank {})", alive.join(", ")),
            };
            bail!(
                "rank {rank} of {nproc} failed ({status}); stopped the other ranks{alive}; its \
                 error, if it wrote one, is above"
            );
        }
        if running == 0 {
            return Ok(());
        }
        std::thread::sleep(POLL);
    }
}

fn kill_all(children: &mut [Option<Child>]) {
    for child in children.iter_mut().flatten() {
        let _ = child.kill();
        let _ = child.wait();
    }
}

/// Children get SIGKILL when the launcher dies, so no rank outlives an interrupted job.
fn die_with_parent(cmd: &mut Command) {
    #[cfg(target_os = "linux")]
    {
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl is async-signal-safe, as pre_exec requires.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
    }
    #[cfg(not(target_os = "linux"))]
    let _ = cmd;
}
