//! Everything that knows what a language model is: tokenizers and chat
//! templates (the forward pass, KV cache and sampling join later). Plain
//! synchronous code: no tokio, axum or redb here.

pub mod chat_template;
pub mod tokenizer;
