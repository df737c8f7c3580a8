//! The DeepSeek family on libtorch (tch): the model (MLA or GQA, DeepSeekMoE or dense SwiGLU, MTP)
//! in small modules that read top to bottom like DeepSeek-V3 `inference/model.py`, and the pretraining machinery around it
//! (schedules, AdamW, checkpoints in the public tensor names, the training loop) apart from it.

pub mod autocast;
pub mod balance;
pub mod block;
pub mod capacity;
pub mod checkpoint;
pub mod config;
mod cpp;
pub mod cross_entropy;
pub mod cuda_info;
pub mod custom_grad;
pub mod data;
pub mod data_parallel;
pub mod device_check;
pub mod dist;
pub mod eval;
pub mod expert_parallel;
pub mod experts;
pub mod fp8;
pub mod generate;
pub mod gqa;
pub mod grad_overlap;
pub mod host_memory;
pub mod info;
pub mod init_from;
pub mod kv_cache;
pub mod linear;
pub mod memory_fit;
pub mod mla;
pub mod mlp;
pub mod model;
pub mod moe;
pub mod mtp;
pub mod norm;
pub mod optim;
pub mod plot;
pub mod profile;
pub mod recompute;
pub mod rope;
pub mod run;
pub mod schedule;
pub mod train;

#[cfg(test)]
pub(crate) mod testing {
    use crate::config::ModelConfig;

    /// A shipped `configs/model/{name}.toml`.
    pub fn repo_config(name: &str) -> ModelConfig {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join(format!("../configs/model/{name}.toml"));
        ModelConfig::from_file(&path).unwrap()
    }

    pub fn tiny_config() -> ModelConfig {
        repo_config("tiny")
    }
}
