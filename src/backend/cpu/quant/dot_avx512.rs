//! AVX-512 kernels (filled in below).
use super::{DotFn, GemmFn};
use crate::gguf::GgmlType;

pub(super) fn select(_weight: GgmlType) -> Option<(DotFn, GemmFn)> {
    None
}
