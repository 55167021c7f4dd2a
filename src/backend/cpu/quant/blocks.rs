//! Byte layouts of the GGML blocks (ggml-common.h), as offsets into a
//! block's bytes. Blocks are read straight from the mmapped file, so they are
//! addressed as `&[u8]` rather than `#[repr(C)]` structs (no alignment
//! guarantee in GGUF for a tensor's rows).

use half::{bf16, f16};

/// Elements per block of the 32-wide formats.
pub const QK: usize = 32;
/// Elements per super-block of the K-quants (same as `gguf::QK_K`).
pub const QK_K: usize = 256;

pub mod q4_0 {
    pub const SIZE: usize = 18;
    pub const D: usize = 0;
    pub const QS: usize = 2;
}
pub mod q4_1 {
    pub const SIZE: usize = 20;
    pub const D: usize = 0;
    pub const M: usize = 2;
    pub const QS: usize = 4;
}
pub mod q5_0 {
    pub const SIZE: usize = 22;
    pub const D: usize = 0;
    pub const QH: usize = 2;
    pub const QS: usize = 6;
}
pub mod q5_1 {
    pub const SIZE: usize = 24;
    pub const D: usize = 0;
    pub const M: usize = 2;
    pub const QH: usize = 4;
    pub const QS: usize = 8;
}
pub mod q8_0 {
    pub const SIZE: usize = 34;
    pub const D: usize = 0;
    pub const QS: usize = 2;
}
pub mod q8_1 {
    pub const SIZE: usize = 36;
    pub const D: usize = 0;
    /// `d * sum(qs)`, as f16.
    pub const S: usize = 2;
    pub const QS: usize = 4;
}
pub mod q2_k {
    pub const SIZE: usize = 84;
    /// 16 bytes: low nibble scale, high nibble min.
    pub const SCALES: usize = 0;
    pub const QS: usize = 16;
    pub const D: usize = 80;
    pub const DMIN: usize = 82;
}
pub mod q3_k {
    pub const SIZE: usize = 110;
    pub const HMASK: usize = 0;
    pub const QS: usize = 32;
    pub const SCALES: usize = 96;
    pub const D: usize = 108;
}
pub mod q4_k {
    pub const SIZE: usize = 144;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QS: usize = 16;
}
pub mod q5_k {
    pub const SIZE: usize = 176;
    pub const D: usize = 0;
    pub const DMIN: usize = 2;
    pub const SCALES: usize = 4;
    pub const QH: usize = 16;
    pub const QS: usize = 48;
}
pub mod q6_k {
    pub const SIZE: usize = 210;
    pub const QL: usize = 0;
    pub const QH: usize = 128;
    /// 16 signed bytes.
    pub const SCALES: usize = 192;
    pub const D: usize = 208;
}
pub mod q8_k {
    pub const SIZE: usize = 292;
    /// f32, not f16.
    pub const D: usize = 0;
    pub const QS: usize = 4;
    /// 16 x i16: sums of `qs` in groups of 16.
    pub const BSUMS: usize = 260;
}

#[inline(always)]
pub fn rd_f16(b: &[u8], off: usize) -> f32 {
    f16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline(always)]
pub fn wr_f16(b: &mut [u8], off: usize, v: f32) {
    b[off..off + 2].copy_from_slice(&f16::from_f32(v).to_bits().to_le_bytes());
}

#[inline(always)]
pub fn rd_bf16(b: &[u8], off: usize) -> f32 {
    bf16::from_bits(u16::from_le_bytes([b[off], b[off + 1]])).to_f32()
}

#[inline(always)]
pub fn rd_f32(b: &[u8], off: usize) -> f32 {
    f32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

#[inline(always)]
pub fn rd_i16(b: &[u8], off: usize) -> i16 {
    i16::from_le_bytes([b[off], b[off + 1]])
}

#[inline(always)]
pub fn rd_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

/// Scale and min of sub-block `j` (0..8) of a Q4_K/Q5_K block's 12 packed
/// 6-bit scale bytes (ggml's `get_scale_min_k4`).
#[inline(always)]
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        (
            (q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4),
            (q[j + 4] >> 4) | ((q[j] >> 6) << 4),
        )
    }
}

/// The 16 signed 6-bit scales of a Q3_K block (already minus 32).
#[inline(always)]
pub fn q3k_scales(sc: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (j, o) in out.iter_mut().enumerate() {
        let low = if j < 8 { sc[j] & 0xF } else { sc[j - 8] >> 4 };
        let high = (sc[8 + j % 4] >> (2 * (j / 4))) & 3;
        *o = ((low | (high << 4)) as i8).wrapping_sub(32);
    }
    out
}

/// Element `e` (0..32) of a 32-wide nibble block: the low nibbles hold
/// elements 0..16, the high nibbles 16..32.
#[inline(always)]
pub fn nibble(qs: &[u8], e: usize) -> u8 {
    if e < 16 {
        qs[e] & 0xF
    } else {
        qs[e - 16] >> 4
    }
}
