//! Thousands of corrupted variants of the real SmolLM2 file's header fed to
//! the GGUF parser: none may panic, take long, or allocate without bound.
//! A counting allocator measures each parse's peak memory on its thread.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use llorchd::gguf::{Gguf, GgufFile};
use llorchd::testing::{real_model, RealModel};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;

struct Counting;

thread_local! {
    static LIVE: Cell<usize> = const { Cell::new(0) };
    static PEAK: Cell<usize> = const { Cell::new(0) };
}

fn track(delta: isize) {
    // try_with: the thread's locals may be gone while it exits.
    let _ = LIVE.try_with(|l| {
        let v = (l.get() as isize + delta).max(0) as usize;
        l.set(v);
        let _ = PEAK.try_with(|p| p.set(p.get().max(v)));
    });
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        track(l.size() as isize);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        track(-(l.size() as isize));
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        track(new as isize - l.size() as isize);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Parse, returning whether it succeeded, the time and peak bytes allocated.
fn measured_parse(buf: &[u8]) -> (bool, Duration, usize) {
    let base = LIVE.with(Cell::get);
    PEAK.with(|p| p.set(base));
    let t = Instant::now();
    let ok = Gguf::parse(buf).is_ok();
    let elapsed = t.elapsed();
    (ok, elapsed, PEAK.with(Cell::get) - base)
}

const BOUNDARY_U64: [u64; 10] = [
    0,
    1,
    0xFF,
    0xFFFF,
    0x7FFF_FFFF,
    0xFFFF_FFFF,
    1 << 32,
    i64::MAX as u64,
    1 << 63,
    u64::MAX,
];

#[derive(Debug)]
enum Mutation {
    BitFlips(Vec<usize>),
    Overwrite { at: usize, width: usize, value: u64 },
    Splice { from: usize, to: usize, len: usize },
    Truncate(usize),
    Delete { at: usize, len: usize },
    Insert { at: usize, bytes: Vec<u8> },
}

#[test]
fn corrupted_real_headers_never_panic_hang_or_balloon() {
    let file = GgufFile::open(&real_model(RealModel::Smollm2)).unwrap();
    let header_len = file.header.data_offset as usize;
    // The whole file in memory, so that header mutations still reach the
    // tensor bounds checks; plus the header with a little tensor data, for
    // mutations that shift bytes.
    let full: Vec<u8> = file.bytes().to_vec();
    let short: Vec<u8> = full[..header_len + 4096].to_vec();
    drop(file);

    let (ok, t, peak) = measured_parse(&full);
    assert!(ok, "the real file must parse");
    eprintln!("real header: {header_len} bytes, parsed in {t:?}, peak {peak} bytes");
    // Memory may grow with the bytes actually read (strings become String),
    // never with what corrupt counts claim.
    let mem_bound = 16 * header_len + (1 << 20);
    assert!(peak < mem_bound, "the real header took {peak} bytes");

    let mut rng = ChaCha8Rng::seed_from_u64(0x6767_7566);
    let mut work = full.clone();
    let iterations = 2000;
    let mut parsed_ok = 0;
    let mut slowest = Duration::ZERO;
    let started = Instant::now();
    for i in 0..iterations {
        // Positions: mostly the first 64 KiB (counts, early keys, and for a
        // real file the key/value types), then anywhere in the header.
        let pos = |rng: &mut ChaCha8Rng| {
            if rng.random_bool(0.6) {
                rng.random_range(0..65_536.min(header_len))
            } else {
                rng.random_range(0..header_len)
            }
        };
        let m = match rng.random_range(0..6) {
            0 => Mutation::BitFlips((0..rng.random_range(1..8)).map(|_| pos(&mut rng)).collect()),
            1 => Mutation::Overwrite {
                at: pos(&mut rng),
                width: [1, 2, 4, 8][rng.random_range(0..4)],
                value: if rng.random_bool(0.8) {
                    BOUNDARY_U64[rng.random_range(0..BOUNDARY_U64.len())]
                } else {
                    rng.next_u64()
                },
            },
            2 => Mutation::Splice {
                from: pos(&mut rng),
                to: pos(&mut rng),
                len: rng.random_range(1..64),
            },
            3 => Mutation::Truncate(rng.random_range(0..full.len())),
            4 => Mutation::Delete {
                at: pos(&mut rng),
                len: rng.random_range(1..16),
            },
            _ => Mutation::Insert {
                at: pos(&mut rng),
                bytes: (0..rng.random_range(1..16)).map(|_| rng.random()).collect(),
            },
        };
        // Build the variant: in place in `work` where the length is kept.
        let shifted: Vec<u8>;
        let mut restore = None;
        let input: &[u8] = match &m {
            Mutation::BitFlips(at) => {
                for &p in at {
                    work[p] ^= 1 << (p % 8);
                }
                restore = Some(0..header_len);
                &work
            }
            Mutation::Overwrite { at, width, value } => {
                let end = (at + width).min(header_len);
                work[*at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
                restore = Some(*at..end);
                &work
            }
            Mutation::Splice { from, to, len } => {
                let len = (*len).min(header_len - from).min(header_len - to);
                work.copy_within(*from..from + len, *to);
                restore = Some(*to..to + len);
                &work
            }
            Mutation::Truncate(n) => &full[..*n],
            Mutation::Delete { at, len } => {
                let mut v = short.clone();
                let end = (at + len).min(v.len());
                v.drain(*at..end);
                shifted = v;
                &shifted
            }
            Mutation::Insert { at, bytes } => {
                let mut v = short.clone();
                v.splice(*at..*at, bytes.iter().copied());
                shifted = v;
                &shifted
            }
        };
        let r = catch_unwind(AssertUnwindSafe(|| measured_parse(input)));
        let (ok, t, peak) = r.unwrap_or_else(|_| panic!("variant {i} panicked: {m:?}"));
        assert!(t < Duration::from_secs(2), "variant {i} took {t:?}: {m:?}");
        assert!(
            peak < mem_bound,
            "variant {i} allocated {peak} bytes: {m:?}"
        );
        slowest = slowest.max(t);
        parsed_ok += ok as usize;
        if let Some(range) = restore {
            work[range.clone()].copy_from_slice(&full[range]);
        }
    }
    eprintln!(
        "{iterations} variants in {:?} (slowest {slowest:?}); {parsed_ok} still parsed",
        started.elapsed()
    );
    // Most corruptions must be caught; some (a flipped bit in a float, a
    // string's letters) are still valid files.
    assert!(
        parsed_ok < iterations / 2,
        "{parsed_ok} of {iterations} corrupt variants parsed"
    );
    assert!(
        parsed_ok > 0,
        "no variant parsed: the mutations are too coarse"
    );
}
