//! Fuzz the GGUF parser: any input must give Ok or Err, never a panic, a
//! hang or a huge allocation; and what an Ok promises must hold.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llorchd::gguf::{Gguf, GgufSummary};

fuzz_target!(|data: &[u8]| {
    if let Ok(g) = Gguf::parse(data) {
        let mut spans: Vec<(u64, u64)> = Vec::new();
        for t in &g.tensors {
            // In bounds (tensor_data would panic otherwise) and sized right.
            let bytes = g.tensor_data(data, t);
            assert_eq!(bytes.len() as u64, t.size);
            assert!(t.offset >= g.data_offset);
            if t.size > 0 {
                spans.push((t.offset, t.offset + t.size));
            }
        }
        spans.sort();
        assert!(
            spans.windows(2).all(|w| w[0].1 <= w[1].0),
            "tensors overlap"
        );
        let _ = GgufSummary::of(&g).quantization();
    }
});
