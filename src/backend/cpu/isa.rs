//! Which x86 SIMD level the kernels run at, chosen once at run time.

use std::fmt;
use std::sync::OnceLock;

/// The instruction-set level a kernel is built for.
///
/// Every level gives bit-identical results for the quantized dot products
/// (they all follow ggml's x86 arithmetic, lane for lane). The f16/f32
/// helpers in [`super::vec`] follow ggml's AVX2 build for `Avx2` and its
/// AVX-512 build for `Avx512` and `Scalar`, so those may differ in the last
/// bits between `Avx2` and the others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, always available.
    Scalar,
    /// AVX2 + FMA + F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ/VNNI on top of `Avx2`.
    Avx512,
}

impl Isa {
    pub const ALL: [Isa; 3] = [Isa::Scalar, Isa::Avx2, Isa::Avx512];

    /// The best level this CPU supports (probed once, then cached).
    pub fn detect() -> Isa {
        static BEST: OnceLock<Isa> = OnceLock::new();
        *BEST.get_or_init(|| {
            if Isa::Avx512.available() {
                Isa::Avx512
            } else if Isa::Avx2.available() {
                Isa::Avx2
            } else {
                Isa::Scalar
            }
        })
    }

    /// Whether this CPU can run kernels built for `self`.
    pub fn available(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => has_avx2(),
            Isa::Avx512 => has_avx2() && has_avx512(),
        }
    }

    /// The levels this CPU can run, lowest first (tests iterate these).
    pub fn all_available() -> Vec<Isa> {
        Isa::ALL.into_iter().filter(|i| i.available()).collect()
    }

    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
        }
    }

    /// Parses `scalar`, `avx2` or `avx512` (case-insensitive).
    pub fn from_name(s: &str) -> Option<Isa> {
        Isa::ALL
            .into_iter()
            .find(|i| i.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(target_arch = "x86_64")]
fn has_avx2() -> bool {
    is_x86_feature_detected!("avx2")
        && is_x86_feature_detected!("fma")
        && is_x86_feature_detected!("f16c")
}

#[cfg(target_arch = "x86_64")]
fn has_avx512() -> bool {
    is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx512dq")
        && is_x86_feature_detected!("avx512vnni")
        && is_x86_feature_detected!("bmi2")
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx2() -> bool {
    false
}

#[cfg(not(target_arch = "x86_64"))]
fn has_avx512() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detect_is_available_and_scalar_always_is() {
        assert!(Isa::detect().available());
        assert!(Isa::Scalar.available());
        // Avx512 implies Avx2.
        if Isa::Avx512.available() {
            assert!(Isa::Avx2.available());
        }
        assert_eq!(Isa::all_available()[0], Isa::Scalar);
    }

    #[test]
    fn names_round_trip() {
        for i in Isa::ALL {
            assert_eq!(Isa::from_name(i.name()), Some(i));
        }
        assert_eq!(Isa::from_name("AVX2"), Some(Isa::Avx2));
        assert_eq!(Isa::from_name("neon"), None);
    }
}
