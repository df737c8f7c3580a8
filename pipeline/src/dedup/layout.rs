//! Where each sub-step keeps its files under `OUT/.work/`, the fixed-width records they exchange,
//! and the done-markers that make every task resumable.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Paths of one dedup run.
pub struct Layout {
    pub out: PathBuf,
    pub work: PathBuf,
}

impl Layout {
    pub fn new(out: &Path) -> Layout {
        Layout {
            out: out.to_path_buf(),
            work: out.join(".work"),
        }
    }
    pub fn plan(&self) -> PathBuf {
        self.work.join("plan.json")
    }
    pub fn signatures(&self, file: usize, ext: &str) -> PathBuf {
        self.work
            .join("signatures")
            .join(format!("{file:06}.{ext}"))
    }
    pub fn pairs(&self, partition: usize) -> PathBuf {
        self.work
            .join("buckets")
            .join(format!("{partition:05}.pairs"))
    }
    pub fn removed_keys(&self) -> PathBuf {
        self.work.join("clusters").join("removed.bin")
    }
    /// Kept documents of input file `file`, beside those of the other files.
    pub fn docs(&self, file: usize) -> PathBuf {
        self.out.join(format!("part-{file:06}.parquet"))
    }
    /// Removed documents; `_`-prefixed so that the next stage, listing `OUT`, skips it.
    pub fn removed(&self) -> PathBuf {
        self.out.join("_removed.parquet")
    }
    pub fn done_dir(&self, step: &str) -> PathBuf {
        self.work.join("done").join(step)
    }
    pub fn done(&self, step: &str, unit: usize) -> PathBuf {
        self.done_dir(step).join(format!("{unit:06}"))
    }
}

/// Write `bytes` to `path` through a temp name, so readers see all of it or nothing. The temp
/// name holds the process id: tasks of a job array may write the same file at once.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let mut tmp = crate::io::tmp_path(path).into_os_string();
    tmp.push(format!(".{}", std::process::id()));
    let tmp = PathBuf::from(tmp);
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&tmp, bytes).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming into {}", path.display()))
}

/// A buffered file written under a temp name and renamed by [`AtomicFile::commit`].
pub struct AtomicFile {
    path: PathBuf,
    tmp: PathBuf,
    pub writer: BufWriter<File>,
}

impl AtomicFile {
    pub fn create(path: &Path) -> Result<AtomicFile> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = crate::io::tmp_path(path);
        let file = File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        Ok(AtomicFile {
            path: path.to_path_buf(),
            tmp,
            writer: BufWriter::with_capacity(1 << 20, file),
        })
    }

    pub fn commit(self) -> Result<()> {
        let file = self.writer.into_inner().map_err(|e| e.into_error())?;
        file.sync_data()?;
        std::fs::rename(&self.tmp, &self.path)
            .with_context(|| format!("renaming into {}", self.path.display()))
    }
}

/// Globally unique document key: input file index (high 32 bits) and record ordinal in it.
pub fn doc_key(file: usize, record: u64) -> u64 {
    ((file as u64) << 32) | record
}

pub fn key_file(key: u64) -> usize {
    (key >> 32) as usize
}

pub fn key_record(key: u64) -> u64 {
    key & 0xffff_ffff
}

/// Why two documents are joined: same normalized text, same URL, or MinHash band collision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(u8)]
pub enum Reason {
    Exact = 0,
    Url = 1,
    Near = 2,
}

impl Reason {
    pub fn from_u8(v: u8) -> Result<Reason> {
        Ok(match v {
            0 => Reason::Exact,
            1 => Reason::Url,
            2 => Reason::Near,
            _ => anyhow::bail!("corrupt intermediate file: reason {v}"),
        })
    }
    pub fn name(self) -> &'static str {
        match self {
            Reason::Exact => "exact",
            Reason::Url => "url",
            Reason::Near => "near",
        }
    }
}

/// One bucket entry: a 128-bit key (text hash, URL hash or band key) and its document.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Entry {
    pub key: u128,
    pub doc: u64,
    pub reason: Reason,
}

impl Entry {
    pub const SIZE: usize = 25;

    pub fn partition(&self, partitions: usize) -> usize {
        (self.key as u64 % partitions as u64) as usize
    }

    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.key.to_le_bytes())?;
        w.write_all(&self.doc.to_le_bytes())?;
        w.write_all(&[self.reason as u8])
    }

    pub fn read_all(bytes: &[u8]) -> Result<Vec<Entry>> {
        bytes
            .chunks_exact(Entry::SIZE)
            .map(|c| {
                Ok(Entry {
                    key: u128::from_le_bytes(c[..16].try_into()?),
                    doc: u64::from_le_bytes(c[16..24].try_into()?),
                    reason: Reason::from_u8(c[24])?,
                })
            })
            .collect()
    }
}

/// A candidate pair of document keys (`a < b`), why they are joined, and for a near pair the
/// LSH band they met in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Pair {
    pub a: u64,
    pub b: u64,
    pub reason: Reason,
    pub band: u8,
}

impl Pair {
    pub const SIZE: usize = 18;

    pub fn new(x: u64, y: u64, reason: Reason, band: u8) -> Pair {
        Pair {
            a: x.min(y),
            b: x.max(y),
            reason,
            band,
        }
    }

    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.a.to_le_bytes())?;
        w.write_all(&self.b.to_le_bytes())?;
        w.write_all(&[self.reason as u8, self.band])
    }

    pub fn read_all(bytes: &[u8]) -> Result<Vec<Pair>> {
        bytes
            .chunks_exact(Pair::SIZE)
            .map(|c| {
                Ok(Pair {
                    a: u64::from_le_bytes(c[..8].try_into()?),
                    b: u64::from_le_bytes(c[8..16].try_into()?),
                    reason: Reason::from_u8(c[16])?,
                    band: c[17],
                })
            })
            .collect()
    }
}

/// Per-document facts the clustering step needs (never the text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocMeta {
    pub record: u64,
    pub text_hash: u128,
    pub url_hash: u128,
    /// Position of the document's sorted shingle hashes in the `.shingles` file (`--verify`).
    pub shingles_at: u64,
    pub shingles_len: u32,
    pub source: String,
    pub id: String,
}

impl DocMeta {
    pub fn write(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.record.to_le_bytes())?;
        w.write_all(&self.text_hash.to_le_bytes())?;
        w.write_all(&self.url_hash.to_le_bytes())?;
        w.write_all(&self.shingles_at.to_le_bytes())?;
        w.write_all(&self.shingles_len.to_le_bytes())?;
        for s in [&self.source, &self.id] {
            w.write_all(&(s.len() as u32).to_le_bytes())?;
            w.write_all(s.as_bytes())?;
        }
        Ok(())
    }

    /// Next record of a `.docs` stream, `None` at its end.
    pub fn read(r: &mut impl Read) -> Result<Option<DocMeta>> {
        let mut fixed = [0u8; 8 + 16 + 16 + 8 + 4];
        match r.read_exact(&mut fixed) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut string = || -> Result<String> {
            let mut len = [0u8; 4];
            r.read_exact(&mut len)?;
            let mut bytes = vec![0u8; u32::from_le_bytes(len) as usize];
            r.read_exact(&mut bytes)?;
            Ok(String::from_utf8(bytes)?)
        };
        let (source, id) = (string()?, string()?);
        Ok(Some(DocMeta {
            record: u64::from_le_bytes(fixed[..8].try_into()?),
            text_hash: u128::from_le_bytes(fixed[8..24].try_into()?),
            url_hash: u128::from_le_bytes(fixed[24..40].try_into()?),
            shingles_at: u64::from_le_bytes(fixed[40..48].try_into()?),
            shingles_len: u32::from_le_bytes(fixed[48..52].try_into()?),
            source,
            id,
        }))
    }
}
