//! No code: this crate only unifies dependency features across the workspace's builds (see its
//! Cargo.toml).
