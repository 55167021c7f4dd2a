//! Dev tool: greedy generation printing the top-3 logits per step, in the
//! same format as a llama.cpp-side tool, to find where two engines diverge.
//!   cargo run --release --example toplogits -- MODEL PROMPT STEPS [isa] [prefill_chunk]

use llorchd::backend::cpu::Isa;
use llorchd::model::{BatchEntry, Forward, Model};

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let model = Model::load(std::path::Path::new(&a[1])).expect("model");
    let steps: usize = a[3].parse().unwrap();
    let isa = a
        .get(4)
        .and_then(|s| Isa::from_name(s))
        .unwrap_or_else(Isa::detect);
    let chunk: usize = a.get(5).map(|s| s.parse().unwrap()).unwrap_or(usize::MAX);
    let mut fw = Forward::new(2, isa);
    let ids = model.tokenizer.encode(&a[2], true, true);
    let mut cache = model.new_cache(ids.len() + steps + 1);
    let nv = model.hparams.n_vocab;
    let mut pos = 0;
    let mut next: Vec<u32> = Vec::new();
    for step in 0..steps {
        loop {
            let prefill = pos < ids.len();
            let toks: Vec<u32> = if prefill {
                let end = (pos + chunk).min(ids.len());
                let t = ids[pos..end].to_vec();
                pos = end;
                t
            } else {
                std::mem::take(&mut next)
            };
            let want = pos == ids.len();
            let mut b = [BatchEntry {
                cache: &mut cache,
                tokens: &toks,
                want_logits: want,
                prompt_len: if prefill { ids.len() } else { 0 },
            }];
            model.forward(&mut fw, &mut b).unwrap();
            if want {
                break;
            }
        }
        let l = fw.logits(0, nv);
        let mut idx: Vec<usize> = (0..nv).collect();
        idx.sort_by(|&x, &y| l[y].total_cmp(&l[x]));
        let piece =
            String::from_utf8_lossy(model.tokenizer.token_to_piece(idx[0] as u32)).into_owned();
        println!(
            "{step}\t{}\t{:.5}\t{}\t{:.5}\t{}\t{:.5}\t{piece}",
            idx[0], l[idx[0]], idx[1], l[idx[1]], idx[2], l[idx[2]]
        );
        next = vec![idx[0] as u32];
    }
}
