//! Where this process sits in a multi-process job: rank, world size, local rank and the rendezvous
//! address, read from the environment torchrun or Slurm's srun give each task (or that
//! `whale train --nproc N` gives the ranks it starts, the same variables as torchrun).

use std::net::TcpListener;

use anyhow::{bail, Context, Result};

/// One rank's place in the job.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Placement {
    pub rank: usize,
    pub world_size: usize,
    /// Rank among the processes of this machine: the index of its GPU.
    pub local_rank: usize,
    pub master_addr: String,
    pub master_port: u16,
    /// Set when torchrun's agent hosts the TCPStore (`TORCHELASTIC_USE_AGENT_STORE`): the
    /// restart attempt, whose keys are kept apart under a prefix as torch.distributed does.
    pub agent_store_attempt: Option<u64>,
}

/// Port of the rendezvous under Slurm when MASTER_PORT is not set: derived from the job id so
/// that two jobs sharing a node do not collide.
fn slurm_port(job_id: Option<u64>) -> u16 {
    20000 + (job_id.unwrap_or(0) % 20000) as u16
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn number<T: std::str::FromStr>(name: &str) -> Result<Option<T>> {
    var(name)
        .map(|v| {
            v.parse()
                .ok()
                .with_context(|| format!("environment variable {name}={v:?} is not a number"))
        })
        .transpose()
}

fn required<T: std::str::FromStr>(name: &str, launcher: &str) -> Result<T> {
    number(name)?.with_context(|| format!("{launcher} did not set {name}"))
}

impl Placement {
    /// The placement torchrun (`RANK`, `WORLD_SIZE`, …) or Slurm (`SLURM_PROCID`, `SLURM_NTASKS`,
    /// …) describe, in that order of precedence; None for a single process (no launcher, or a
    /// world of one).
    pub fn from_env() -> Result<Option<Self>> {
        let place = if var("RANK").is_some() || var("WORLD_SIZE").is_some() {
            let agent = var("TORCHELASTIC_USE_AGENT_STORE")
                .is_some_and(|v| v.eq_ignore_ascii_case("true") || v == "1");
            let agent_store_attempt = if agent {
                Some(number("TORCHELASTIC_RESTART_COUNT")?.unwrap_or(0))
            } else {
                None
            };
            Self {
                rank: required("RANK", "the launcher")?,
                world_size: required("WORLD_SIZE", "the launcher")?,
                local_rank: number("LOCAL_RANK")?.unwrap_or(0),
                master_addr: var("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
                master_port: required("MASTER_PORT", "the launcher")?,
                agent_store_attempt,
            }
        } else if var("SLURM_PROCID").is_some() {
            let nodes = var("SLURM_JOB_NODELIST")
                .or_else(|| var("SLURM_NODELIST"))
                .context("Slurm did not set SLURM_JOB_NODELIST")?;
            Self {
                rank: required("SLURM_PROCID", "Slurm")?,
                world_size: required("SLURM_NTASKS", "Slurm")?,
                local_rank: number("SLURM_LOCALID")?.unwrap_or(0),
                master_addr: var("MASTER_ADDR").unwrap_or(first_host(&nodes)?),
                master_port: match number("MASTER_PORT")? {
                    Some(port) => port,
                    None => slurm_port(number("SLURM_JOB_ID")?),
                },
                agent_store_attempt: None,
            }
        } else {
            return Ok(None);
        };
        if place.rank >= place.world_size {
            bail!(
                "rank {} is outside the world of {} ranks the launcher set",
                place.rank,
                place.world_size
            );
        }
        Ok((place.world_size > 1).then_some(place))
    }

    /// Rank `rank` of `world_size` processes on this machine, meeting on `127.0.0.1:port`.
    pub fn local(rank: usize, world_size: usize, port: u16) -> Self {
        Self {
            rank,
            world_size,
            local_rank: rank,
            master_addr: "127.0.0.1".into(),
            master_port: port,
            agent_store_attempt: None,
        }
    }

    /// The torchrun variables that describe this placement to a child process.
    pub fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("RANK", self.rank.to_string()),
            ("WORLD_SIZE", self.world_size.to_string()),
            ("LOCAL_RANK", self.local_rank.to_string()),
            ("LOCAL_WORLD_SIZE", self.world_size.to_string()),
            ("MASTER_ADDR", self.master_addr.clone()),
            ("MASTER_PORT", self.master_port.to_string()),
        ]
    }

    /// Whether this process runs the TCPStore server (rank 0, unless torchrun's agent does).
    pub fn hosts_store(&self) -> bool {
        self.rank == 0 && self.agent_store_attempt.is_none()
    }

    /// Whether the rendezvous is on this machine's loopback (then every rank is on this machine).
    pub fn on_loopback(&self) -> bool {
        self.master_addr == "localhost"
            || self
                .master_addr
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
    }

    /// The key prefix of torchrun's agent store for this restart attempt.
    pub fn store_prefix(&self) -> Option<String> {
        self.agent_store_attempt
            .map(|attempt| format!("/worker/attempt_{attempt}"))
    }
}

/// The first host of a Slurm node list: `gpu[07-12,20],cpu1` → `gpu07`.
pub fn first_host(nodelist: &str) -> Result<String> {
    let first = match nodelist.find([',', '[']) {
        Some(i) if nodelist.as_bytes()[i] == b'[' => {
            let ranges = &nodelist[i + 1..];
            let end = ranges.find([',', '-', ']']).unwrap_or(ranges.len());
            format!("{}{}", &nodelist[..i], &ranges[..end])
        }
        Some(i) => nodelist[..i].to_string(),
        None => nodelist.to_string(),
    };
    if first.is_empty() {
        bail!("cannot read a host name from the Slurm node list {nodelist:?}");
    }
    Ok(first)
}

/// A TCP port of 127.0.0.1 that is free now (the OS picks it; it may be taken again before use,
/// as with torchrun's own choice).
pub fn free_port() -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free local port")?;
    Ok(listener.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_host_of_slurm_node_lists() {
        for (list, host) in [
            ("gpu[07-12,20],cpu1", "gpu07"),
            ("node3,node4", "node3"),
            ("solo", "solo"),
            ("a[1]", "a1"),
            ("rack2-n[001-004]", "rack2-n001"),
        ] {
            assert_eq!(first_host(list).unwrap(), host, "{list}");
        }
    }

    #[test]
    fn torchrun_agent_store_is_a_client_under_a_prefix() {
        let mut p = Placement::local(0, 2, 29500);
        assert!(p.hosts_store());
        assert_eq!(p.store_prefix(), None);
        p.agent_store_attempt = Some(1);
        assert!(!p.hosts_store());
        assert_eq!(p.store_prefix().as_deref(), Some("/worker/attempt_1"));
    }
}
