//! Step 3 (one task, global): join all candidate pairs of all inputs with union-find, keep one
//! document per cluster (scheme `whale`: oldest dump, then smallest id; scheme `datatrove`: its
//! union-find root), and write `_removed.parquet`, the removed keys for the filter step, and
//! `manifest.json`. Memory is proportional to the number of documents (4 bytes each, 8 for
//! `datatrove`) plus the facts of documents that have a candidate.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::BufReader;
use std::os::unix::fs::FileExt;

use anyhow::{Context, Result};
use polars::prelude::*;
use rayon::prelude::*;

use super::config::Scheme;
use super::layout::{key_file, key_record, AtomicFile, DocMeta, Pair, Reason};
use super::minhash::jaccard;
use super::union_find::{SizedUnionFind, UnionFind};
use super::Run;

/// What clustering found, for the manifest and the summary line.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct ClusterStats {
    pub candidate_pairs: u64,
    /// Near-duplicate pairs dropped by `--verify` as below the Jaccard threshold.
    pub rejected_pairs: u64,
    pub clusters: u64,
    pub removed: BTreeMap<String, u64>,
    pub removed_per_source: BTreeMap<String, u64>,
}

/// Run the clustering step.
pub fn run_clusters(run: &Run) -> Result<ClusterStats> {
    let stats = run.file_stats()?;
    let mut first = Vec::with_capacity(stats.len() + 1);
    let mut total = 0u64;
    for s in stats.iter() {
        first.push(total);
        total += s.docs;
    }
    anyhow::ensure!(
        total < u32::MAX as u64,
        "more than 4 billion documents: not supported"
    );
    let dense = |key: u64| (first[key_file(key)] + key_record(key)) as u32;

    let mut pairs = Vec::new();
    for p in 0..run.config.partitions {
        let path = run.layout.pairs(p);
        let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        pairs.extend(Pair::read_all(&bytes)?);
    }
    // One pair per two documents and reason: the one of the lowest band, which is the one
    // datatrove unions first (it reads the buckets in order).
    pairs.sort_unstable();
    pairs.dedup_by_key(|p| (p.a, p.b, p.reason));
    let mut cluster_stats = ClusterStats {
        candidate_pairs: pairs.len() as u64,
        ..Default::default()
    };

    // Facts of the documents that appear in a pair; nobody else can be removed.
    let mut involved = vec![false; total as usize];
    for p in &pairs {
        involved[dense(p.a) as usize] = true;
        involved[dense(p.b) as usize] = true;
    }
    let mut meta: HashMap<u32, DocMeta> = HashMap::new();
    for (file, start) in first.iter().enumerate() {
        let path = run.layout.signatures(file, "docs");
        let mut r = BufReader::new(
            File::open(&path).with_context(|| format!("opening {}", path.display()))?,
        );
        while let Some(m) = DocMeta::read(&mut r)? {
            let d = (start + m.record) as u32;
            if involved[d as usize] {
                meta.insert(d, m);
            }
        }
    }

    if run.config.verify {
        let shingle_files: Vec<Option<File>> = (0..stats.len())
            .map(|f| File::open(run.layout.signatures(f, "shingles")).ok())
            .collect();
        let load = |key: u64| -> Result<Vec<u64>> {
            let m = &meta[&dense(key)];
            let file = shingle_files[key_file(key)]
                .as_ref()
                .context("missing .shingles file")?;
            let mut bytes = vec![0u8; m.shingles_len as usize * 8];
            file.read_exact_at(&mut bytes, m.shingles_at * 8)?;
            Ok(bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect())
        };
        let threshold = run.config.verify_threshold;
        let keep: Vec<bool> = pairs
            .par_iter()
            .map(|p| -> Result<bool> {
                Ok(p.reason != Reason::Near || jaccard(&load(p.a)?, &load(p.b)?) >= threshold)
            })
            .collect::<Result<_>>()?;
        let before = pairs.len();
        let mut flags = keep.into_iter();
        pairs.retain(|_| flags.next().unwrap_or(false));
        cluster_stats.rejected_pairs = (before - pairs.len()) as u64;
    }

    let mut members: Vec<u32> = meta.keys().copied().collect();
    members.sort_unstable();
    let kept = match run.config.scheme {
        Scheme::Whale => keep_oldest(&pairs, total as usize, &members, &meta, dense),
        Scheme::Datatrove => keep_union_root(run, &pairs, total as usize, &members, dense)?,
    };
    let mut roots: Vec<u32> = kept.values().copied().collect();
    roots.sort_unstable();
    roots.dedup();
    cluster_stats.clusters = roots.len() as u64;

    let mut removed = Vec::new();
    for &d in &members {
        let k = kept[&d];
        if k != d {
            let (m, km) = (&meta[&d], &meta[&k]);
            let reason = if m.text_hash == km.text_hash && m.text_hash != 0 {
                Reason::Exact
            } else if m.url_hash == km.url_hash && m.url_hash != 0 && run.config.url {
                Reason::Url
            } else {
                Reason::Near
            };
            *cluster_stats
                .removed
                .entry(reason.name().to_string())
                .or_insert(0) += 1;
            *cluster_stats
                .removed_per_source
                .entry(m.source.clone())
                .or_insert(0) += 1;
            removed.push((d, k, reason));
        }
    }
    write_removed_parquet(run, &meta, &removed)?;

    // Keys of removed documents, sorted, for the filter step.
    let mut keys: Vec<u64> = removed
        .iter()
        .map(|&(d, _, _)| {
            let file = first.partition_point(|&f| f <= d as u64) - 1;
            super::layout::doc_key(file, d as u64 - first[file])
        })
        .collect();
    keys.sort_unstable();
    let mut out = AtomicFile::create(&run.layout.removed_keys())?;
    for k in &keys {
        std::io::Write::write_all(&mut out.writer, &k.to_le_bytes())?;
    }
    out.commit()?;
    Ok(cluster_stats)
}

/// Kept document of each member's cluster: oldest dump, then smallest id, then input order.
fn keep_oldest(
    pairs: &[Pair],
    total: usize,
    members: &[u32],
    meta: &HashMap<u32, DocMeta>,
    dense: impl Fn(u64) -> u32,
) -> HashMap<u32, u32> {
    let mut sets = UnionFind::new(total);
    for p in pairs {
        sets.union(dense(p.a), dense(p.b));
    }
    let mut best: HashMap<u32, u32> = HashMap::new();
    let rank = |x: u32| (&meta[&x].source, &meta[&x].id, x);
    for &d in members {
        let kept = best.entry(sets.find(d)).or_insert(d);
        if rank(d) < rank(*kept) {
            *kept = d;
        }
    }
    members.iter().map(|&d| (d, best[&sets.find(d)])).collect()
}

/// Kept document of each member's cluster as datatrove keeps it: the root of its union by size
/// (`MinhashDedupCluster`) over the near pairs in its order — band by band, each band's buckets
/// in ascending order of their signature values, the members of a bucket chained in input order
/// — then exact and URL pairs, which datatrove does not look for. Input order equals datatrove's
/// (task, document) order when it ran one task per input file, as `scripts/bench-dedup` does.
fn keep_union_root(
    run: &Run,
    pairs: &[Pair],
    total: usize,
    members: &[u32],
    dense: impl Fn(u64) -> u32,
) -> Result<HashMap<u32, u32>> {
    let rows = run.config.rows;
    let stride = run.config.bands * rows;
    let sigs: Vec<File> = (0..run.inputs.len())
        .map(|f| {
            let path = run.layout.signatures(f, "sigs");
            File::open(&path).with_context(|| format!("opening {}", path.display()))
        })
        .collect::<Result<_>>()?;
    let mut near: Vec<(u8, Vec<u64>, u64, u64)> = pairs
        .par_iter()
        .filter(|p| p.reason == Reason::Near)
        .map(|p| -> Result<(u8, Vec<u64>, u64, u64)> {
            let at = (key_record(p.a) as usize * stride + p.band as usize * rows) * 8;
            let mut bytes = vec![0u8; rows * 8];
            sigs[key_file(p.a)]
                .read_exact_at(&mut bytes, at as u64)
                .context("reading a .sigs file")?;
            let values = bytes
                .chunks_exact(8)
                .map(|c| u64::from_le_bytes(c.try_into().unwrap_or_default()))
                .collect();
            Ok((p.band, values, p.a, p.b))
        })
        .collect::<Result<_>>()?;
    near.par_sort_unstable();
    let mut sets = SizedUnionFind::new(total);
    for (_, _, a, b) in &near {
        sets.union(dense(*a), dense(*b));
    }
    for p in pairs.iter().filter(|p| p.reason != Reason::Near) {
        sets.union(dense(p.a), dense(p.b));
    }
    Ok(members.iter().map(|&d| (d, sets.find(d))).collect())
}

fn write_removed_parquet(
    run: &Run,
    meta: &HashMap<u32, DocMeta>,
    removed: &[(u32, u32, Reason)],
) -> Result<()> {
    let col =
        |f: &dyn Fn(&(u32, u32, Reason)) -> String| removed.iter().map(f).collect::<Vec<String>>();
    let mut df = DataFrame::new(vec![
        Column::new("id".into(), col(&|r| meta[&r.0].id.clone())),
        Column::new("source".into(), col(&|r| meta[&r.0].source.clone())),
        Column::new(
            "cluster".into(),
            removed.iter().map(|r| r.1 as u64).collect::<Vec<u64>>(),
        ),
        Column::new("kept_id".into(), col(&|r| meta[&r.1].id.clone())),
        Column::new("kept_source".into(), col(&|r| meta[&r.1].source.clone())),
        Column::new("reason".into(), col(&|r| r.2.name().to_string())),
    ])?;
    let path = run.layout.removed();
    let tmp = crate::io::tmp_path(&path);
    std::fs::create_dir_all(&run.layout.out)?;
    let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    ParquetWriter::new(file)
        .with_compression(ParquetCompression::Zstd(None))
        .finish(&mut df)?;
    std::fs::rename(&tmp, &path)?;
    Ok(())
}

/// One row of `_removed.parquet`: a removed document and the one kept in its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Removed {
    pub id: String,
    pub source: String,
    /// Cluster id: the input-order index of the kept document.
    pub cluster: u64,
    pub kept_id: String,
    pub kept_source: String,
    /// `exact`, `url` or `near`.
    pub reason: String,
}

/// Rows of `OUT/_removed.parquet` of a finished dedup run, for audits and tests.
pub fn read_removed(out: &std::path::Path) -> Result<Vec<Removed>> {
    let path = super::layout::Layout::new(out).removed();
    let file = File::open(&path).with_context(|| format!("opening {}", path.display()))?;
    let df = ParquetReader::new(file).finish()?;
    let text = |name: &str| -> Result<Vec<String>> {
        Ok(df
            .column(name)?
            .str()?
            .into_iter()
            .map(|v| v.unwrap_or("").to_string())
            .collect())
    };
    let (id, source, kept_id, kept_source, reason) = (
        text("id")?,
        text("source")?,
        text("kept_id")?,
        text("kept_source")?,
        text("reason")?,
    );
    let cluster: Vec<u64> = df
        .column("cluster")?
        .u64()?
        .into_iter()
        .map(|v| v.unwrap_or(0))
        .collect();
    Ok((0..df.height())
        .map(|i| Removed {
            id: id[i].clone(),
            source: source[i].clone(),
            cluster: cluster[i],
            kept_id: kept_id[i].clone(),
            kept_source: kept_source[i].clone(),
            reason: reason[i].clone(),
        })
        .collect())
}
