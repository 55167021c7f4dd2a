//! Corrupt-input tests for the GGUF reader: each builds a small file byte by
//! byte, breaks one thing, and checks the parser names that thing.

use std::time::{Duration, Instant};

use super::reader::{Gguf, GgufError, ValueType, MAX_ARRAY_DEPTH};
use super::types::GgmlType;

/// A hand-assembled GGUF file that remembers where each section starts.
struct Raw {
    bytes: Vec<u8>,
    /// Section name → offset of its first byte.
    marks: Vec<(&'static str, usize)>,
}

impl Raw {
    fn new(n_tensors: u64, n_kv: u64) -> Raw {
        let mut r = Raw {
            bytes: Vec::new(),
            marks: Vec::new(),
        };
        r.mark("magic");
        r.bytes.extend_from_slice(b"GGUF");
        r.mark("version");
        r.u32(3);
        r.mark("tensor count");
        r.u64(n_tensors);
        r.mark("metadata count");
        r.u64(n_kv);
        r
    }
    fn mark(&mut self, name: &'static str) {
        self.marks.push((name, self.bytes.len()));
    }
    fn at(&self, name: &str) -> usize {
        self.marks.iter().find(|m| m.0 == name).unwrap().1
    }
    fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64);
        self.bytes.extend_from_slice(s);
        self
    }
    fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(ValueType::U32.id()).u32(v)
    }
    fn tensor(&mut self, name: &str, dims: &[u64], ty: u32, offset: u64) -> &mut Self {
        self.str(name.as_bytes()).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(ty).u64(offset)
    }
    fn pad_to(&mut self, align: usize) -> &mut Self {
        self.bytes
            .resize(self.bytes.len().next_multiple_of(align), 0);
        self
    }
    fn data(&mut self, n: usize) -> &mut Self {
        self.bytes.extend((0..n).map(|i| i as u8));
        self
    }
}

/// A valid file: two metadata pairs (one a string array), two F32 tensors.
fn valid() -> Raw {
    let mut r = Raw::new(2, 2);
    r.mark("kv 0");
    r.str(b"general.architecture")
        .u32(ValueType::String.id())
        .str(b"llama");
    r.mark("kv 1");
    r.str(b"tokenizer.ggml.tokens")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(2)
        .str(b"a")
        .str(b"b");
    r.mark("tensor info 0");
    r.tensor("w", &[4, 2], GgmlType::F32.id(), 0);
    r.mark("tensor info 1");
    r.tensor("v", &[8], GgmlType::F32.id(), 32);
    r.mark("padding");
    r.pad_to(32);
    r.mark("data");
    r.data(64);
    r
}

fn parse(b: &[u8]) -> Result<Gguf, GgufError> {
    Gguf::parse(b)
}

#[test]
fn the_valid_file_parses() {
    let r = valid();
    let g = parse(&r.bytes).unwrap();
    assert_eq!(g.tensors.len(), 2);
    assert_eq!(g.data_offset as usize, r.at("data"));
    assert_eq!(g.tensor("v").unwrap().offset as usize, r.at("data") + 32);
}

#[test]
fn truncation_at_every_section_boundary_names_the_section() {
    let r = valid();
    // Where the cut falls → what the error must name.
    let expect: [(&str, &[&str]); 8] = [
        ("magic", &["magic"]),
        ("version", &["version"]),
        ("tensor count", &["tensor count"]),
        ("metadata count", &["metadata count"]),
        ("kv 0", &["metadata count", "metadata key #0"]),
        ("kv 1", &["metadata key #1"]),
        ("tensor info 0", &["tensor count", "tensor #0"]),
        ("tensor info 1", &["tensor count", "tensor #1"]),
    ];
    for (mark, names) in expect {
        let cut = r.at(mark);
        // Cut exactly at the boundary and a few bytes into the section.
        for extra in [0, 1, 3] {
            let e = parse(&r.bytes[..cut + extra]).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(
                    e,
                    GgufError::Truncated { .. } | GgufError::AbsurdCount { .. }
                ),
                "cut at {mark}+{extra}: {msg}"
            );
            if extra == 0 {
                assert!(
                    names.iter().any(|n| msg.contains(n)),
                    "cut at {mark}: {msg}"
                );
            }
        }
    }
    // Header complete, padding missing: the data section cannot start.
    let e = parse(&r.bytes[..r.at("padding")]).unwrap_err();
    assert!(e.to_string().contains("padding"), "{e}");
    // Data section cut: the tensor that reaches past the end is named.
    for cut in [r.at("data"), r.at("data") + 40, r.bytes.len() - 1] {
        let e = parse(&r.bytes[..cut]).unwrap_err();
        assert!(matches!(e, GgufError::TensorOutOfBounds { .. }), "{e}");
        assert!(e.to_string().contains("corrupt or incomplete"), "{e}");
    }
}

#[test]
fn every_prefix_is_an_error_and_the_whole_parses() {
    let r = valid();
    for cut in 0..r.bytes.len() {
        assert!(
            parse(&r.bytes[..cut]).is_err(),
            "prefix of {cut} bytes parsed"
        );
    }
    parse(&r.bytes).unwrap();
}

#[test]
fn bad_magic_and_versions() {
    let mut r = valid();
    r.bytes[0] = b'X';
    assert!(matches!(parse(&r.bytes), Err(GgufError::BadMagic(_))));
    for v in [0u32, 1, 4, u32::MAX] {
        let mut r = valid();
        r.bytes[4..8].copy_from_slice(&v.to_le_bytes());
        assert_eq!(
            parse(&r.bytes).unwrap_err(),
            GgufError::UnsupportedVersion(v)
        );
    }
    let mut r = valid();
    r.bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    assert_eq!(parse(&r.bytes).unwrap().version, 2);
}

/// Absurd counts are refused up front, fast and without allocating for them.
#[test]
fn absurd_counts_are_refused_quickly() {
    let started = Instant::now();
    for n in [u64::MAX, u64::MAX / 24 + 1, 1 << 40, 1000] {
        let r = Raw::new(n, 0);
        let e = parse(&r.bytes).unwrap_err();
        assert!(
            matches!(e, GgufError::AbsurdCount { .. }),
            "tensor count {n}: {e}"
        );
        assert!(e.to_string().contains("tensor count"), "{e}");

        let r = Raw::new(0, n);
        let e = parse(&r.bytes).unwrap_err();
        assert!(
            matches!(e, GgufError::AbsurdCount { .. }),
            "kv count {n}: {e}"
        );
        assert!(e.to_string().contains("metadata count"), "{e}");

        // Array length.
        let mut r = Raw::new(0, 1);
        r.str(b"arr")
            .u32(ValueType::Array.id())
            .u32(ValueType::U64.id())
            .u64(n);
        r.data(64);
        let e = parse(&r.bytes).unwrap_err();
        assert!(
            matches!(e, GgufError::AbsurdCount { .. }),
            "array len {n}: {e}"
        );
        assert!(e.to_string().contains("\"arr\""), "{e}");

        // String lengths: a key, a value, a tensor name.
        let mut r = Raw::new(0, 1);
        r.u64(n).data(64);
        assert!(matches!(parse(&r.bytes), Err(GgufError::Truncated { .. })));
        let mut r = Raw::new(0, 1);
        r.str(b"k").u32(ValueType::String.id()).u64(n).data(64);
        let e = parse(&r.bytes).unwrap_err();
        assert!(
            matches!(e, GgufError::Truncated { .. }) && e.to_string().contains("\"k\""),
            "{e}"
        );
        let mut r = Raw::new(1, 0);
        r.u64(n).data(64);
        assert!(parse(&r.bytes).is_err());
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "absurd counts took {:?}",
        started.elapsed()
    );
}

#[test]
fn large_but_plausible_counts_allocate_only_what_is_read() {
    // A count that fits the file (each element really present) still parses.
    let mut r = Raw::new(0, 1);
    r.str(b"many")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(10_000);
    for _ in 0..10_000 {
        r.str(b"");
    }
    let g = parse(&r.bytes).unwrap();
    assert_eq!(g.get_array("many").unwrap().len(), 10_000);
}

#[test]
fn tensor_offsets_out_of_range() {
    for off in [64u64, 1 << 20, 1 << 62, u64::MAX - 31] {
        let mut r = Raw::new(1, 0);
        r.tensor("t", &[8], GgmlType::F32.id(), off)
            .pad_to(32)
            .data(64);
        let e = parse(&r.bytes).unwrap_err();
        assert!(
            matches!(e, GgufError::TensorOutOfBounds { .. }),
            "offset {off}: {e}"
        );
        assert!(e.to_string().contains("\"t\""), "{e}");
    }
    // The last byte just fits; one more does not.
    let mut r = Raw::new(1, 0);
    r.tensor("t", &[8], GgmlType::F32.id(), 32)
        .pad_to(32)
        .data(64);
    parse(&r.bytes).unwrap();
    r.bytes.pop();
    assert!(matches!(
        parse(&r.bytes),
        Err(GgufError::TensorOutOfBounds { .. })
    ));
}

#[test]
fn overlapping_tensors() {
    let mut r = Raw::new(2, 0);
    r.tensor("a", &[16], GgmlType::F32.id(), 0)
        .tensor("b", &[8], GgmlType::F32.id(), 32)
        .pad_to(32)
        .data(128);
    let e = parse(&r.bytes).unwrap_err();
    assert_eq!(
        e,
        GgufError::OverlappingTensors {
            a: "a".into(),
            b: "b".into()
        }
    );
    // Same offset, listed in the other order.
    let mut r = Raw::new(2, 0);
    r.tensor("b", &[8], GgmlType::F32.id(), 0)
        .tensor("a", &[8], GgmlType::F32.id(), 0)
        .pad_to(32)
        .data(64);
    assert!(matches!(
        parse(&r.bytes),
        Err(GgufError::OverlappingTensors { .. })
    ));
    // Adjacent is fine.
    let mut r = Raw::new(2, 0);
    r.tensor("a", &[8], GgmlType::F32.id(), 0)
        .tensor("b", &[8], GgmlType::F32.id(), 32)
        .pad_to(32)
        .data(64);
    parse(&r.bytes).unwrap();
}

#[test]
fn bad_utf8_in_keys_values_and_names() {
    let mut r = Raw::new(0, 1);
    r.str(b"gen\xffral").u32(ValueType::U32.id()).u32(1);
    let e = parse(&r.bytes).unwrap_err();
    assert!(
        matches!(e, GgufError::BadUtf8 { .. }) && e.to_string().contains("key #0"),
        "{e}"
    );

    let mut r = Raw::new(0, 1);
    r.str(b"k").u32(ValueType::String.id()).str(b"\xc3\x28");
    assert!(matches!(parse(&r.bytes), Err(GgufError::BadUtf8 { .. })));

    let mut r = Raw::new(0, 1);
    r.str(b"k")
        .u32(ValueType::Array.id())
        .u32(ValueType::String.id())
        .u64(2)
        .str(b"ok")
        .str(b"\x80");
    let e = parse(&r.bytes).unwrap_err();
    assert!(e.to_string().contains("element 1"), "{e}");

    let mut r = Raw::new(1, 0);
    r.str(b"t\xfe").u32(1).u64(8).u32(0).u64(0);
    let e = parse(&r.bytes).unwrap_err();
    assert!(
        matches!(e, GgufError::BadUtf8 { .. }) && e.to_string().contains("tensor #0"),
        "{e}"
    );
}

#[test]
fn unknown_value_types() {
    for ty in [13u32, 99, u32::MAX] {
        let mut r = Raw::new(0, 1);
        r.str(b"k").u32(ty).u64(0);
        assert_eq!(
            parse(&r.bytes).unwrap_err(),
            GgufError::UnknownValueType {
                key: "k".into(),
                ty
            }
        );
        let mut r = Raw::new(0, 1);
        r.str(b"arr").u32(ValueType::Array.id()).u32(ty).u64(0);
        assert_eq!(
            parse(&r.bytes).unwrap_err(),
            GgufError::UnknownValueType {
                key: "arr".into(),
                ty
            }
        );
    }
}

#[test]
fn unknown_tensor_types() {
    // 4 and 5 were Q4_2/Q4_3, removed from ggml; 1000 never existed.
    for id in [4u32, 5, 31, 1000, u32::MAX] {
        let mut r = Raw::new(1, 0);
        r.tensor("t", &[32], id, 0).pad_to(32).data(256);
        assert_eq!(
            parse(&r.bytes).unwrap_err(),
            GgufError::UnknownTensorType {
                name: "t".into(),
                id
            }
        );
    }
}

#[test]
fn too_many_dims() {
    let mut r = Raw::new(1, 0);
    r.tensor("t", &[1, 1, 1, 1, 1], 0, 0).pad_to(32).data(32);
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::TooManyDims {
            name: "t".into(),
            n_dims: 5
        }
    );
    // A huge dimension count is refused before reading any dimension.
    let mut r = Raw::new(1, 0);
    r.str(b"t").u32(u32::MAX).data(64);
    assert!(matches!(
        parse(&r.bytes),
        Err(GgufError::TooManyDims { .. })
    ));
}

#[test]
fn element_count_overflow_and_bad_shapes() {
    let shapes: [(&[u64], u32, &str); 5] = [
        (&[1 << 32, 1 << 32, 4], 0, "element count overflows"),
        (&[u64::MAX, 2], 0, "negative"),
        (&[1 << 63, 0], 0, "negative"),
        (&[33], GgmlType::Q4_0.id(), "block size"),
        (&[100, 1 << 61], GgmlType::F32.id(), "overflows"),
    ];
    for (dims, ty, why) in shapes {
        let mut r = Raw::new(1, 0);
        r.tensor("t", dims, ty, 0).pad_to(32).data(64);
        let e = parse(&r.bytes).unwrap_err();
        assert!(matches!(e, GgufError::BadShape { .. }), "{dims:?}: {e}");
        assert!(e.to_string().contains(why), "{dims:?}: {e}");
    }
}

#[test]
fn misaligned_tensor() {
    let mut r = Raw::new(1, 0);
    r.tensor("t", &[8], 0, 4).pad_to(32).data(64);
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::MisalignedTensor {
            name: "t".into(),
            offset: 4,
            alignment: 32
        }
    );
}

#[test]
fn alignment_key_is_checked() {
    for a in [0u32, 3, 48] {
        let mut r = Raw::new(0, 1);
        r.kv_u32("general.alignment", a);
        assert_eq!(
            parse(&r.bytes).unwrap_err(),
            GgufError::BadAlignment(a as u64)
        );
    }
    let mut r = Raw::new(0, 1);
    r.str(b"general.alignment")
        .u32(ValueType::String.id())
        .str(b"32");
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::BadAlignmentType("string")
    );
    // A valid custom alignment moves the data section.
    let mut r = Raw::new(1, 1);
    r.kv_u32("general.alignment", 256)
        .tensor("t", &[8], 0, 0)
        .pad_to(256)
        .data(32);
    let g = parse(&r.bytes).unwrap();
    assert_eq!(g.alignment, 256);
    assert_eq!(g.data_offset % 256, 0);
}

#[test]
fn nested_arrays_too_deep() {
    let nest = |depth: u32| {
        let mut r = Raw::new(0, 1);
        r.str(b"deep").u32(ValueType::Array.id());
        for _ in 1..depth {
            r.u32(ValueType::Array.id()).u64(1);
        }
        r.u32(ValueType::U8.id()).u64(0);
        r
    };
    parse(&nest(MAX_ARRAY_DEPTH).bytes).unwrap();
    assert_eq!(
        parse(&nest(MAX_ARRAY_DEPTH + 1).bytes).unwrap_err(),
        GgufError::NestingTooDeep { key: "deep".into() }
    );
    // Very deep nesting is refused without recursing that deep.
    assert!(matches!(
        parse(&nest(100_000).bytes),
        Err(GgufError::NestingTooDeep { .. })
    ));
}

#[test]
fn duplicates_and_empty_names() {
    let mut r = Raw::new(0, 2);
    r.kv_u32("a", 1).kv_u32("a", 2);
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::DuplicateKey("a".into())
    );

    let mut r = Raw::new(0, 1);
    r.kv_u32("", 1);
    assert_eq!(parse(&r.bytes).unwrap_err(), GgufError::EmptyKey(0));

    let mut r = Raw::new(2, 0);
    r.tensor("t", &[8], 0, 0)
        .tensor("t", &[8], 0, 32)
        .pad_to(32)
        .data(64);
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::DuplicateTensor("t".into())
    );

    let long = "x".repeat(64);
    let mut r = Raw::new(1, 0);
    r.tensor(&long, &[8], 0, 0).pad_to(32).data(32);
    assert_eq!(
        parse(&r.bytes).unwrap_err(),
        GgufError::TensorNameTooLong { index: 0, len: 64 }
    );
}

#[test]
fn zero_tensors_need_no_data_section() {
    let mut r = Raw::new(0, 1);
    r.kv_u32("general.alignment", 64);
    let g = parse(&r.bytes).unwrap();
    assert!(g.tensors.is_empty());
}
