//! The threaded matrix driver: `out[t][r] = W[r] · x[t]` for every weight
//! row `r` and token `t`, with `x` already in the weight type's activation
//! format. Rows are split across threads in chunks; each dot product is done
//! whole by one thread with the same kernel whatever the batch, so results
//! do not depend on thread count or batch composition.

use crate::gguf::GgmlType;

use super::quant::Kernels;
use super::threadpool::{SharedMut, ThreadPool};

/// A row-major weight matrix in the mmap.
#[derive(Clone, Copy, Debug)]
pub struct Matrix<'a> {
    pub ty: GgmlType,
    /// Elements per row.
    pub cols: usize,
    pub rows: usize,
    pub data: &'a [u8],
}

impl Matrix<'_> {
    pub fn row_bytes(&self) -> usize {
        self.data.len() / self.rows.max(1)
    }
}

/// One product in a parallel region.
pub struct MatJob<'a> {
    pub w: Matrix<'a>,
    /// Kernels for `w.ty` on the chosen ISA.
    pub k: Kernels,
    /// `n_tok` activation rows of `x_stride` bytes.
    pub x: &'a [u8],
    pub x_stride: usize,
    /// Output: token `t`, row `r` at `out[t * out_stride + r]`.
    pub out: SharedMut<f32>,
    pub out_stride: usize,
}

/// Tokens per kernel call: keeps the activation tile cache-resident while
/// the weight rows stream.
const TOKEN_TILE: usize = 64;

/// Compute every job over `n_tok` tokens, in one parallel region.
///
/// # Safety contract
/// Each job's `out` must be valid for `n_tok * out_stride` floats and not
/// alias another job's output; the caller guarantees this by construction.
pub fn matmul(pool: &mut ThreadPool, jobs: &[MatJob], n_tok: usize) {
    if jobs.is_empty() || n_tok == 0 {
        return;
    }
    let nth = pool.n_threads();
    // Row chunks: enough per thread to balance uneven cores, big enough to
    // amortise the kernel call.
    let total_rows: usize = jobs.iter().map(|j| j.w.rows).sum();
    let target_chunks = nth * 8;
    let chunk = (total_rows / target_chunks).clamp(16, 512) / 16 * 16;
    let chunk = chunk.max(16);
    // Chunk list: (job, first row, rows).
    let mut chunks = Vec::with_capacity(total_rows / chunk + jobs.len());
    for (ji, j) in jobs.iter().enumerate() {
        let mut r = 0;
        while r < j.w.rows {
            let nr = chunk.min(j.w.rows - r);
            chunks.push((ji, r, nr));
            r += nr;
        }
    }
    pool.run_tasks(chunks.len(), &|c| {
        let (ji, r0, nr) = chunks[c];
        let j = &jobs[ji];
        let rb = j.w.row_bytes();
        let w = &j.w.data[r0 * rb..(r0 + nr) * rb];
        let mut t0 = 0;
        while t0 < n_tok {
            let nc = TOKEN_TILE.min(n_tok - t0);
            let x = &j.x[t0 * j.x_stride..(t0 + nc) * j.x_stride];
            // Safety: rows r0..r0+nr of tokens t0..t0+nc belong to this chunk only.
            let out = unsafe {
                j.out
                    .slice(t0 * j.out_stride + r0, (nc - 1) * j.out_stride + nr)
            };
            j.k.gemm(j.w.cols, w, rb, nr, x, j.x_stride, nc, out, j.out_stride)
                .expect("matmul operands are validated when the model loads");
            t0 += nc;
        }
    });
}
