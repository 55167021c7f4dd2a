//! Everything that knows what a transformer is: hyperparameters, weights,
//! tokenizer, chat template, the forward pass, the KV cache, sampling and
//! stop strings. Plain synchronous code: no tokio, axum or redb here.

mod attention;
pub mod chat_template;
pub mod decode;
pub mod forward;
pub mod hparams;
pub mod kv_cache;
pub mod sampling;
pub mod stop;
pub mod synth;
pub mod tokenizer;
pub mod weights;

use std::path::Path;
use std::sync::Arc;

use crate::gguf::{GgufFile, GgufFileError};

pub use forward::{BatchEntry, Forward, ForwardError};
pub use hparams::{Arch, HParams, HParamsError};
pub use kv_cache::SeqCache;
pub use sampling::{Sampler, SamplingParams};
pub use weights::{Weights, WeightsError};

use chat_template::ChatTemplate;
use tokenizer::{Tokenizer, TokenizerError};

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error(transparent)]
    File(#[from] GgufFileError),
    #[error("{path}: {source}")]
    HParams { path: String, source: HParamsError },
    #[error("{path}: {source}")]
    Weights { path: String, source: WeightsError },
    #[error("{path}: tokenizer: {source}")]
    Tokenizer {
        path: String,
        source: TokenizerError,
    },
}

/// A loaded model: shape, mmapped weights, tokenizer and chat template.
/// Immutable and shared; sequences keep their own state (`SeqCache`,
/// `Sampler`).
pub struct Model {
    pub hparams: HParams,
    pub weights: Weights,
    pub tokenizer: Arc<Tokenizer>,
    /// The model's chat template (a built-in or ChatML fallback when the
    /// file has none); None only if the file's template does not compile.
    pub chat_template: Option<ChatTemplate>,
    pub file: Arc<GgufFile>,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("path", &self.file.path)
            .field("arch", &self.hparams.arch)
            .finish()
    }
}

impl Model {
    pub fn load(path: &Path) -> Result<Arc<Model>, ModelError> {
        let file = Arc::new(GgufFile::open(path)?);
        let p = || path.display().to_string();
        let hparams = HParams::from_gguf(&file.header)
            .map_err(|source| ModelError::HParams { path: p(), source })?;
        let weights = Weights::load(file.clone(), &hparams)
            .map_err(|source| ModelError::Weights { path: p(), source })?;
        let tokenizer = Arc::new(
            Tokenizer::from_gguf(&file.header)
                .map_err(|source| ModelError::Tokenizer { path: p(), source })?,
        );
        let chat_template = match ChatTemplate::from_gguf(&file.header, &tokenizer) {
            Ok(t) => Some(t),
            Err(e) => {
                tracing::warn!(path = %p(), error = %e, "chat template unusable; chat requests will be refused");
                None
            }
        };
        Ok(Arc::new(Model {
            hparams,
            chat_template,
            weights,
            tokenizer,
            file,
        }))
    }

    /// A new, empty KV cache for one sequence of up to `ctx` tokens.
    pub fn new_cache(&self, ctx: usize) -> SeqCache {
        SeqCache::new(&self.hparams, ctx)
    }

    /// Run a batch on `fw`; see [`Forward::forward`].
    pub fn forward(&self, fw: &mut Forward, batch: &mut [BatchEntry]) -> Result<(), ForwardError> {
        fw.forward(&self.hparams, &self.weights, batch)
    }

    /// Bytes of the mmapped file (weights are never copied).
    pub fn file_bytes(&self) -> u64 {
        self.file.len()
    }
}
