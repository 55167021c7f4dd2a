//! A small fork-join pool for the forward pass. A decode step runs a few
//! hundred parallel regions, so dispatch must cost about a microsecond:
//! workers spin briefly on a generation counter, then park.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

type Job = dyn Fn(usize, usize) + Sync;

struct Shared {
    generation: AtomicU64,
    /// The job of the current generation (a pointer to a closure on the
    /// caller's stack; valid until `run` returns, which waits for all).
    job: UnsafeCell<Option<*const Job>>,
    done: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Per worker: parked (or about to park) and wants an unpark.
    sleeping: Vec<AtomicBool>,
    n_threads: usize,
}

// Safety: `job` is written only by the thread inside `run` before it bumps
// `generation` (Release) and read by workers after they observe the new
// generation (Acquire); `run` does not return until every worker is done.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

/// Fork-join pool. The calling thread works as thread 0.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
}

/// How long an idle worker spins before parking.
const SPIN: Duration = Duration::from_micros(200);

impl ThreadPool {
    /// A pool of `n_threads` threads in all (the caller plus `n - 1` workers).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n = n_threads.max(1);
        let shared = Arc::new(Shared {
            generation: AtomicU64::new(0),
            job: UnsafeCell::new(None),
            done: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            n_threads: n,
        });
        let workers = (1..n)
            .map(|ith| {
                let s = shared.clone();
                let h = thread::Builder::new()
                    .name(format!("llorchd-cpu-{ith}"))
                    .spawn(move || worker(s, ith))
                    .expect("spawn engine thread");
                let t = h.thread().clone();
                (h, t)
            })
            .collect();
        ThreadPool { shared, workers }
    }

    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Run `f(ith, nth)` on every thread and wait for all of them.
    /// A panic in any thread is re-raised here after all have finished.
    pub fn run(&mut self, f: &(dyn Fn(usize, usize) + Sync)) {
        let s = &*self.shared;
        let n = s.n_threads;
        if n == 1 {
            f(0, 1);
            return;
        }
        // Erase the borrow's lifetime: `run` waits for every worker below.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize, usize) + Sync), &'static Job>(f) };
        unsafe { *s.job.get() = Some(ptr) };
        s.done.store(0, Ordering::Relaxed);
        s.generation.fetch_add(1, Ordering::AcqRel);
        for (i, (_, t)) in self.workers.iter().enumerate() {
            if s.sleeping[i + 1].swap(false, Ordering::AcqRel) {
                t.unpark();
            }
        }
        let mine = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| f(0, n)));
        let mut spins = 0u32;
        while s.done.load(Ordering::Acquire) != n - 1 {
            spins += 1;
            if spins < 1 << 16 {
                std::hint::spin_loop();
            } else {
                thread::yield_now();
            }
        }
        unsafe { *s.job.get() = None };
        if let Err(p) = mine {
            std::panic::resume_unwind(p);
        }
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("an engine worker thread panicked");
        }
    }
}

fn worker(s: Arc<Shared>, ith: usize) {
    let mut seen = 0u64;
    loop {
        // Wait for a new generation: spin, then park.
        let start = Instant::now();
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            let g = s.generation.load(Ordering::Acquire);
            if g != seen {
                seen = g;
                break;
            }
            if start.elapsed() < SPIN {
                std::hint::spin_loop();
                continue;
            }
            s.sleeping[ith].store(true, Ordering::Release);
            // Re-check after announcing, so a bump in between is not missed.
            if s.generation.load(Ordering::Acquire) == seen && !s.stop.load(Ordering::Acquire) {
                thread::park_timeout(Duration::from_millis(50));
            }
            s.sleeping[ith].store(false, Ordering::Release);
        }
        let job = unsafe { (*s.job.get()).expect("job set for generation") };
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| unsafe {
            (*job)(ith, s.n_threads)
        }));
        if r.is_err() {
            s.panicked.store(true, Ordering::Release);
        }
        s.done.fetch_add(1, Ordering::AcqRel);
    }
}

impl Drop for ThreadPool {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        for (h, t) in self.workers.drain(..) {
            t.unpark();
            let _ = h.join();
        }
    }
}

/// A raw pointer that parallel regions may share to write disjoint parts of
/// one buffer. Whoever creates it promises the parts do not overlap.
#[derive(Clone, Copy)]
pub struct SharedMut<T>(pub *mut T);
unsafe impl<T> Send for SharedMut<T> {}
unsafe impl<T> Sync for SharedMut<T> {}

impl<T> SharedMut<T> {
    pub fn new(s: &mut [T]) -> Self {
        SharedMut(s.as_mut_ptr())
    }

    /// # Safety
    /// `start..start+len` must be in bounds and written by one thread only.
    #[allow(clippy::mut_from_ref)] // the point of the type; see the contract
    pub unsafe fn slice(&self, start: usize, len: usize) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.0.add(start), len)
    }
}

/// Split `n` items into `nth` near-equal contiguous ranges, aligned to
/// `align` items; returns thread `ith`'s range.
pub fn split_range(n: usize, ith: usize, nth: usize, align: usize) -> std::ops::Range<usize> {
    let align = align.max(1);
    let units = n.div_ceil(align);
    let per = units / nth;
    let extra = units % nth;
    let start_u = ith * per + ith.min(extra);
    let end_u = start_u + per + usize::from(ith < extra);
    (start_u * align).min(n)..(end_u * align).min(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_thread_runs_each_job_once() {
        for n in [1, 2, 3, 4] {
            let mut pool = ThreadPool::new(n);
            for _ in 0..1000 {
                let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
                pool.run(&|ith, nth| {
                    assert_eq!(nth, n);
                    hits[ith].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn wakes_after_parking() {
        let mut pool = ThreadPool::new(2);
        let c = AtomicUsize::new(0);
        pool.run(&|_, _| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(Duration::from_millis(20));
        pool.run(&|_, _| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 4);
    }

    #[test]
    fn worker_panic_is_reported_not_hung() {
        let mut pool = ThreadPool::new(2);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            pool.run(&|ith, _| {
                if ith == 1 {
                    panic!("boom");
                }
            })
        }));
        assert!(r.is_err());
        // The pool still works afterwards.
        let c = AtomicUsize::new(0);
        pool.run(&|_, _| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn split_range_covers_exactly() {
        for n in [0, 1, 7, 64, 100, 1000] {
            for nth in 1..5 {
                for align in [1, 4, 16] {
                    let mut covered = 0;
                    let mut next = 0;
                    for ith in 0..nth {
                        let r = split_range(n, ith, nth, align);
                        assert_eq!(r.start, next);
                        next = r.end;
                        covered += r.len();
                    }
                    assert_eq!(covered, n);
                }
            }
        }
    }
}
