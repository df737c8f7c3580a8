//! Step 2 (per key partition): gather the partition's entries from every input file, sort them,
//! and turn each group of documents sharing a key into candidate pairs. Memory is one partition's
//! entries, about `15 × 25 bytes × documents / partitions`.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};

use anyhow::{Context, Result};

use super::layout::{AtomicFile, Entry, Pair, Reason};
use super::minhash::band_of;
use super::Run;

/// With `--verify`, each member of a bucket is paired with this many members before it, so one
/// false positive in a bucket cannot hide a true pair behind it. Without, with the one before it:
/// a chain, as datatrove pairs the members of a bucket (its keep rule depends on that order).
const VERIFY_WINDOW: usize = 8;

/// Run the bucket step for key partition `partition`; returns the candidate pairs written.
pub fn run_partition(run: &Run, partition: usize) -> Result<u64> {
    let stats = run.file_stats()?;
    let mut entries = Vec::new();
    for (file, s) in stats.iter().enumerate() {
        let before: u64 = s.partition_entries[..partition].iter().sum();
        let count = s.partition_entries[partition];
        if count == 0 {
            continue;
        }
        let path = run.layout.signatures(file, "entries");
        let mut f = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
        f.seek(SeekFrom::Start(before * Entry::SIZE as u64))?;
        let mut bytes = vec![0u8; count as usize * Entry::SIZE];
        f.read_exact(&mut bytes)
            .with_context(|| format!("reading {}", path.display()))?;
        entries.extend(Entry::read_all(&bytes)?);
    }
    entries.sort_unstable_by_key(|e| (e.key, e.reason, e.doc));
    let mut pairs = Vec::new();
    for group in entries.chunk_by(|x, y| x.key == y.key && x.reason == y.reason) {
        let window = if run.config.verify && group[0].reason == Reason::Near {
            VERIFY_WINDOW
        } else {
            1
        };
        let band = match group[0].reason {
            Reason::Near => band_of(group[0].key),
            _ => 0,
        };
        for (i, e) in group.iter().enumerate().skip(1) {
            for other in &group[i.saturating_sub(window)..i] {
                pairs.push(Pair::new(other.doc, e.doc, e.reason, band));
            }
        }
    }
    pairs.sort_unstable();
    pairs.dedup();
    let mut out = AtomicFile::create(&run.layout.pairs(partition))?;
    for p in &pairs {
        p.write(&mut out.writer)?;
    }
    out.commit()?;
    Ok(pairs.len() as u64)
}
