//! Multi-process training on torch.distributed's own engine (c10d), never a home-made transport:
//! where a rank sits ([`placement`], from torchrun's or Slurm's environment), the process group and
//! its collectives ([`process_group`], Gloo for CPU tensors) and the local launcher behind
//! `whale train --nproc N` ([`spawn`]). What is communicated when is decided by the parallel plan
//! next to the training loop (`crate::data_parallel`).

pub mod placement;
pub mod process_group;
pub mod spawn;

pub use placement::Placement;
pub use process_group::{Backend, ProcessGroup, ReduceOp, Work};
