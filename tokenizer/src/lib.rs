//! Byte-level BPE tokenizers, organised like HF tokenizers: added/special tokens are matched
//! first (`added`), the text between them is normalized (`normalizer`: NFC/NFKC, Lowercase,
//! Strip, Prepend, Replace), a pre-tokenizer cuts it into pieces (`pre_tokenizer`, with
//! hand-written scanners for the DeepSeek-V3 and GPT-2 presets in `scan`), bytes map to printable
//! characters (`byte_level`), a BPE model merges each piece (`model`), and a post-processor's
//! special tokens go around the whole (`post_processor`); tokenizer.json is read and written by
//! `json`. [`Tokenizer`] loads any byte-level BPE tokenizer.json (ours or a published one:
//! DeepSeek-V3, Llama-3, Qwen, GPT-4's cl100k, ...) and encodes to exactly HF's ids, and
//! refuses, saying why, files it cannot encode as HF does; [`trainer`] learns merges identical
//! to HF's `BpeTrainer`.

mod added;
pub mod byte_level;
mod encoder;
pub mod fit;
mod json;
mod model;
mod normalizer;
mod post_processor;
pub mod pre_tokenizer;
mod scan;
pub mod trainer;
mod unicode;

pub use added::AddedToken;
pub use encoder::Tokenizer;
pub use pre_tokenizer::PreTokenizer;
