//! Document pipeline: readers and writers for web dumps, normalization, global dedup, quality
//! filters and domain remixing. Each stage reads a directory and writes a directory.

pub mod dedup;
pub mod doc;
pub mod extract;
pub mod filter;
pub mod io;
pub mod normalize;
pub mod progress;
pub mod remix;
pub mod synth;

pub use doc::Document;
