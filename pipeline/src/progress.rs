//! The progress bar every long step shows on stderr: hidden when stderr is not a terminal (logs,
//! CI, Slurm), so redirected output stays clean.

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar over `len` items named `unit` (e.g. "files"), labelled `prefix` (the step's name).
pub fn bar(len: u64, prefix: &str, unit: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let template =
        format!("{{prefix:>10}} [{{bar:40}}] {{pos}}/{{len}} {unit} {{msg}} {{elapsed_precise}} eta {{eta}}");
    let style = ProgressStyle::with_template(&template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_prefix(prefix.to_string());
    bar
}
