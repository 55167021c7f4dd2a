//! The threaded matrix driver: `out[t][r] = W[r] · x[t]` for every weight
//! row `r` and token `t`, with `x` already in the weight type's activation
//! format. Rows are split across threads in chunks; each dot product is done
//! whole by one thread with the same kernel whatever the batch, so results
//! do not depend on thread count or batch composition.

use crate::gguf::GgmlType;

use std::sync::atomic::{AtomicU64, Ordering};

use super::quant::{self, Kernels};
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
    /// Per token: part of a prompt's whole group of four, computed with the
    /// kernels' quad arithmetic (`Kernels::gemm_quads`). Such tokens come in
    /// aligned runs of four. None: every token uses `gemm`.
    pub quads: Option<&'a [bool]>,
}

/// Token columns in pieces of at most `TOKEN_TILE`, each all-quad (a
/// multiple of four long) or all-plain: `(start, len, quad)`.
fn pieces(n_tok: usize, quads: Option<&[bool]>) -> Vec<(usize, usize, bool)> {
    let mut out = Vec::new();
    let mut t = 0;
    while t < n_tok {
        let q = quads.is_some_and(|f| f[t]);
        let mut end = t + 1;
        while end < n_tok && end - t < TOKEN_TILE && quads.is_some_and(|f| f[end]) == q {
            end += 1;
        }
        if q {
            // Quads are whole: keep pieces a multiple of four.
            end = t + (end - t) / 4 * 4;
            debug_assert!(end > t, "quad tokens come in aligned groups of four");
            end = end.max(t + 4).min(n_tok);
        }
        out.push((t, end - t, q));
        t = end;
    }
    out
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
    // amortise the kernel call (the multi-column kernels lay out their
    // activation tables once per thread and region, see below).
    let total_rows: usize = jobs.iter().map(|j| j.w.rows).sum();
    let (target_chunks, min_chunk) = if (2..=16).contains(&n_tok) {
        (nth * 6, 48)
    } else {
        (nth * 8, 16)
    };
    let chunk = (total_rows / target_chunks).clamp(min_chunk, 512) / 16 * 16;
    // Chunk list: (job, first row, rows).
    let mut chunks: Vec<Chunk> = Vec::with_capacity(total_rows / chunk + jobs.len());
    for (ji, j) in jobs.iter().enumerate() {
        let mut r = 0;
        while r < j.w.rows {
            let nr = chunk.min(j.w.rows - r);
            chunks.push((ji, r, nr));
            r += nr;
        }
    }
    let job_pieces: Vec<Vec<(usize, usize, bool)>> = jobs
        .iter()
        .map(|j| pieces(n_tok, j.quads.filter(|_| j.k.has_quad_arithmetic())))
        .collect();
    // The activations stay as they are until the region ends: kernels may
    // keep what they derive from them across a thread's chunks.
    static EPOCH: AtomicU64 = AtomicU64::new(0);
    let epoch = EPOCH.fetch_add(1, Ordering::Relaxed) + 1;
    pool.run_tasks(chunks.len(), &|c| {
        quant::with_activation_epoch(epoch, || run_chunk(jobs, &job_pieces, chunks[c]))
    });
}

/// One chunk of rows of one job, over every token.
fn run_chunk(jobs: &[MatJob], pieces: &[Vec<(usize, usize, bool)>], (ji, r0, nr): Chunk) {
    let j = &jobs[ji];
    let rb = j.w.row_bytes();
    let w = &j.w.data[r0 * rb..(r0 + nr) * rb];
    for &(t0, nc, quad) in &pieces[ji] {
        let x = &j.x[t0 * j.x_stride..(t0 + nc) * j.x_stride];
        // Safety: rows r0..r0+nr of tokens t0..t0+nc belong to this chunk only.
        let out = unsafe {
            j.out
                .slice(t0 * j.out_stride + r0, (nc - 1) * j.out_stride + nr)
        };
        let r = if quad {
            j.k.gemm_quads(j.w.cols, w, rb, nr, x, j.x_stride, nc, out, j.out_stride)
        } else {
            j.k.gemm(j.w.cols, w, rb, nr, x, j.x_stride, nc, out, j.out_stride)
        };
        r.expect("matmul operands are validated when the model loads");
    }
}

/// A job's rows `r0..r0 + nr`: `(job, r0, nr)`.
type Chunk = (usize, usize, usize);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_keep_quads_whole_and_tiles_bounded() {
        let mut f = vec![false; 3];
        f.extend([true; 8]);
        f.push(false);
        f.extend([true; 4 * 40]);
        let p = pieces(f.len(), Some(&f));
        let mut next = 0;
        for &(t, n, q) in &p {
            assert_eq!(t, next);
            assert!(n > 0 && n <= TOKEN_TILE);
            assert!(f[t..t + n].iter().all(|&x| x == q));
            if q {
                assert_eq!(n % 4, 0);
            }
            next = t + n;
        }
        assert_eq!(next, f.len());
        assert_eq!(pieces(5, None), vec![(0, 5, false)]);
    }
}
