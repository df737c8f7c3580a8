//! Step 4 (per input file): read the file again and write every document that clustering did
//! not remove to `OUT/part-NNNNNN.parquet`, in input order.

use anyhow::{Context, Result};

use super::layout::{doc_key, key_file, key_record};
use super::Run;
use crate::io::{read_documents_with, DocumentWriter};

/// Sorted keys of all removed documents, as the clustering step wrote them.
pub fn load_removed(run: &Run) -> Result<Vec<u64>> {
    let path = run.layout.removed_keys();
    let bytes = std::fs::read(&path)
        .with_context(|| format!("reading {} (clusters step not run?)", path.display()))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
        .collect())
}

/// Run the filter step for input file `file`; returns the documents kept.
pub fn run_file(run: &Run, file: usize, removed: &[u64]) -> Result<u64> {
    let start = removed.partition_point(|&k| k < doc_key(file, 0));
    let end = removed.partition_point(|&k| key_file(k) <= file);
    let mut gone = removed[start..end]
        .iter()
        .map(|&k| key_record(k))
        .peekable();
    let expected = run.file_stats()?[file].docs;
    let path = &run.inputs[file];
    let mut out = DocumentWriter::create(&run.layout.docs(file))?;
    let mut record = 0u64;
    for doc in read_documents_with(path, run.config.read_options()).flatten() {
        if gone.peek() == Some(&record) {
            gone.next();
        } else {
            out.write(&doc)?;
        }
        record += 1;
    }
    anyhow::ensure!(
        record == expected,
        "{}: {record} documents now, {expected} when its signatures were computed: the input changed",
        path.display()
    );
    out.finish()
}
