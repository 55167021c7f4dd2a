//! Everything that knows what a transformer is.

pub mod synth;
