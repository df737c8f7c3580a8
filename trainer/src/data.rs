//! Where training batches come from: the token-shard loader of the `shards` crate, or a
//! deterministic synthetic stream (smoke tests and benchmarks that should not depend on data).
//! Both are resumable from a JSON cursor saved in the checkpoint.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use shards::{Batch, Loader};

/// A resumable stream of packed batches (`batch × (seq_len + 1 + mtp_depth)` tokens).
pub trait BatchSource {
    fn next_batch(&mut self) -> Result<Batch>;
    /// Cursor to store in a checkpoint; the same source resumed from it yields the same batches.
    fn state(&self) -> Result<serde_json::Value>;
}

impl BatchSource for Loader {
    fn next_batch(&mut self) -> Result<Batch> {
        Loader::next_batch(self)
    }

    fn state(&self) -> Result<serde_json::Value> {
        serde_json::to_value(Loader::state(self)).context("serializing the loader state")
    }
}

/// Documents of 8–63 tokens in which every token is a fixed function of the previous one
/// (`t' = (5t + 3) mod vocab`), starting from a random token: learnable from one token of context,
/// except for each document's first token.
///
/// With several ranks, batch `k` of the stream is the global batch of `batch_size × world_size`
/// rows and each rank takes its own `batch_size` rows of it (every rank generates the whole batch:
/// the stream is for tests, where that costs nothing), so `W` ranks see what one process with a
/// `W` times larger batch sees.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Synthetic {
    pub vocab_size: u32,
    pub window: usize,
    /// Rows per batch of this rank.
    pub batch_size: usize,
    pub seed: u64,
    /// Batches produced so far (the cursor, the same on every rank).
    pub batches: u64,
    /// This rank's slice of each global batch: (rank, world size). Not part of the cursor.
    #[serde(skip, default = "single_process")]
    pub slice: (usize, usize),
}

fn single_process() -> (usize, usize) {
    (0, 1)
}

/// splitmix64: a tiny, well-mixed generator so the stream is identical on every platform.
fn splitmix(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

impl Synthetic {
    /// Restores a stream from `state()` output.
    pub fn resume(state: &serde_json::Value) -> Result<Self> {
        serde_json::from_value(state.clone()).context("synthetic stream state")
    }
}

impl BatchSource for Synthetic {
    fn next_batch(&mut self) -> Result<Batch> {
        let mut rng = self.seed ^ self.batches.wrapping_mul(0xA24B_AED4_963E_E407);
        self.batches += 1;
        let (rank, world) = self.slice;
        let rows = self.window * self.batch_size;
        let n = rows * world;
        let (mut tokens, mut doc_start) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut left = 0u64;
        let mut token = 0u32;
        for _ in 0..n {
            let starts = left == 0;
            if starts {
                left = 8 + splitmix(&mut rng) % 56;
                token = (splitmix(&mut rng) % self.vocab_size as u64) as u32;
            } else {
                token = ((5 * token as u64 + 3) % self.vocab_size as u64) as u32;
            }
            left -= 1;
            tokens.push(token);
            doc_start.push(starts);
        }
        if world > 1 {
            let mine = rank * rows..(rank + 1) * rows;
            (tokens, doc_start) = (tokens[mine.clone()].to_vec(), doc_start[mine].to_vec());
        }
        Ok(Batch { tokens, doc_start })
    }

    fn state(&self) -> Result<serde_json::Value> {
        serde_json::to_value(self).context("serializing the synthetic stream state")
    }
}
