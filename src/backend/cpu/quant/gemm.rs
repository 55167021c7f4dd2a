//! The multi-row x multi-column driver shared by every ISA.
//!
//! Batch invariance rests on one rule: each (row, column) value is computed by
//! exactly the arithmetic of the single-pair dot product, whatever tile it
//! falls in. Tiled SIMD kernels keep one accumulator chain per pair, so tiling
//! changes the instruction schedule, never the operations a value sees.

use std::cell::Cell;

use super::{DotFn, GemmFn};

thread_local! {
    static ACT_EPOCH: Cell<u64> = const { Cell::new(0) };
}

/// Runs `f` (gemm calls on this thread) with the caller's promise that an
/// activation buffer keeps its contents for as long as `epoch` (nonzero)
/// does: a kernel may then reuse what it derived from the buffer in an
/// earlier call with the same epoch (its per-column tables), rather than
/// derive it again for every chunk of rows.
pub fn with_activation_epoch<R>(epoch: u64, f: impl FnOnce() -> R) -> R {
    /// Puts the previous promise back, also when `f` panics.
    struct Restore(u64);
    impl Drop for Restore {
        fn drop(&mut self) {
            ACT_EPOCH.set(self.0);
        }
    }
    let _restore = Restore(ACT_EPOCH.replace(epoch));
    f()
}

/// The promise in force (see `with_activation_epoch`); 0: none.
pub(crate) fn activation_epoch() -> u64 {
    ACT_EPOCH.get()
}

/// Validated gemm operands (see `Kernels::gemm`): `nr` weight rows of `wb`
/// bytes at `w_stride`, `nc` activation rows of `ab` bytes at `act_stride`,
/// each `nb` blocks; output `out[c * out_stride + r]`.
pub(crate) struct GemmArgs<'a> {
    pub nb: usize,
    pub wb: usize,
    pub ab: usize,
    /// The pair kernel of the same ISA, for tails and for types without a
    /// tiled kernel.
    pub dot: DotFn,
    pub w: &'a [u8],
    pub w_stride: usize,
    pub nr: usize,
    pub acts: &'a [u8],
    pub act_stride: usize,
    pub nc: usize,
    pub out_stride: usize,
}

impl GemmArgs<'_> {
    #[inline(always)]
    pub fn w_row(&self, r: usize) -> &[u8] {
        &self.w[r * self.w_stride..r * self.w_stride + self.wb]
    }

    #[inline(always)]
    pub fn act_row(&self, c: usize) -> &[u8] {
        &self.acts[c * self.act_stride..c * self.act_stride + self.ab]
    }

    /// Pairs `rows x cols` one at a time through `dot`.
    ///
    /// # Safety
    /// `dot`'s ISA must be available (guaranteed by `Kernels`).
    #[inline(always)]
    pub unsafe fn pairs(
        &self,
        rows: std::ops::Range<usize>,
        cols: std::ops::Range<usize>,
        out: &mut [f32],
    ) {
        for c in cols {
            let a = self.act_row(c);
            for r in rows.clone() {
                out[c * self.out_stride + r] = unsafe { (self.dot)(self.nb, self.w_row(r), a) };
            }
        }
    }
}

/// Gemm as a loop of pair dot products (scalar ISA, and types without a tiled
/// kernel). Column-outer so one activation row stays in cache across rows.
///
/// # Safety
/// See [`super::GemmFn`].
pub(crate) unsafe fn gemm_by_dot_scalar(args: &GemmArgs<'_>, out: &mut [f32]) {
    unsafe { args.pairs(0..args.nr, 0..args.nc, out) }
}

/// Runs a gemm kernel on one pair (the `vec_dot` entry point).
///
/// # Safety
/// As for `DotFn`: `w`, `a` hold `nb` blocks; `g`'s ISA is available.
#[inline(always)]
pub(super) unsafe fn single(nb: usize, w: &[u8], a: &[u8], g: GemmFn, dot: DotFn) -> f32 {
    let args = GemmArgs {
        nb,
        wb: w.len(),
        ab: a.len(),
        dot,
        w,
        w_stride: w.len(),
        nr: 1,
        acts: a,
        act_stride: a.len(),
        nc: 1,
        out_stride: 1,
    };
    let mut out = [0f32];
    unsafe { g(&args, &mut out) };
    out[0]
}
