//! A small fork-join pool for the forward pass. A decode step runs a few
//! hundred parallel regions, so dispatch must cost about a microsecond:
//! workers spin briefly on the job word, then park.
//!
//! Work is handed out as tasks claimed from a shared counter, never as fixed
//! per-thread shares, and a region ends when its tasks are done, not when
//! every thread has checked in: a worker that has not joined by the time the
//! caller runs out of tasks skips that region. On a shared machine (more
//! runnable threads than cores) a descheduled worker therefore costs at
//! most the task it holds, instead of stalling every region until the
//! scheduler runs it again.

use std::cell::UnsafeCell;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle, Thread};
use std::time::{Duration, Instant};

type Job = dyn Fn(usize) + Sync;

/// `state` layout: job sequence number in the high 32 bits, `CLOSED` once the
/// caller has found no task left, and the count of workers inside the job.
const CLOSED: u64 = 1 << 31;
const ACTIVE: u64 = CLOSED - 1;

fn seq_of(state: u64) -> u32 {
    (state >> 32) as u32
}

struct Shared {
    state: AtomicU64,
    /// The current job (a pointer to a closure on the caller's stack; valid
    /// until `run_tasks` returns, which waits for every worker inside it).
    job: UnsafeCell<Option<*const Job>>,
    n_tasks: AtomicUsize,
    next_task: AtomicUsize,
    panicked: AtomicBool,
    stop: AtomicBool,
    /// Per worker: parked (or about to park) and wants an unpark.
    sleeping: Vec<AtomicBool>,
    /// The caller of the current job, parked until the last worker leaves.
    caller: Mutex<Option<Thread>>,
    caller_sleeping: AtomicBool,
    n_threads: usize,
}

// Safety: `job` is written only by the caller of `run_tasks` while no worker
// is inside a job (`ACTIVE` is 0 and the previous job is `CLOSED`), before
// the new sequence number is published (Release). A worker reads it only
// after registering in `state` (Acquire) for that sequence number, and the
// caller does not return, or write `job` again, until every registered
// worker has left.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

impl Shared {
    /// Claims and runs tasks until none is left. Panics are caught so that
    /// every participant leaves the job; the first one is reported.
    fn work(&self, job: &(dyn Fn(usize) + Sync + '_)) {
        let n = self.n_tasks.load(Ordering::Relaxed);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| loop {
            let t = self.next_task.fetch_add(1, Ordering::Relaxed);
            if t >= n {
                break;
            }
            job(t);
        }));
        if r.is_err() {
            // Let the others stop early: no task is handed out after this.
            self.next_task.store(usize::MAX / 2, Ordering::Relaxed);
            self.panicked.store(true, Ordering::Release);
        }
    }
}

/// Fork-join pool. The calling thread works too.
pub struct ThreadPool {
    shared: Arc<Shared>,
    workers: Vec<(JoinHandle<()>, Thread)>,
    seq: u32,
}

/// How long an idle worker waits for the next job before parking: it spins
/// for `SPIN`, then yields between checks until `IDLE`. Yielding matters on
/// a loaded machine, where a spinning worker may share a core with the
/// thread it waits for.
const SPIN: Duration = Duration::from_micros(20);
const IDLE: Duration = Duration::from_micros(500);
/// How long the caller spins for workers to leave a job before parking.
const CALLER_SPIN: Duration = Duration::from_micros(20);

impl ThreadPool {
    /// A pool of `n_threads` threads in all (the caller plus `n - 1` workers).
    pub fn new(n_threads: usize) -> ThreadPool {
        let n = n_threads.max(1);
        let shared = Arc::new(Shared {
            state: AtomicU64::new(CLOSED),
            job: UnsafeCell::new(None),
            n_tasks: AtomicUsize::new(0),
            next_task: AtomicUsize::new(0),
            panicked: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            sleeping: (0..n).map(|_| AtomicBool::new(false)).collect(),
            caller: Mutex::new(None),
            caller_sleeping: AtomicBool::new(false),
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
        ThreadPool {
            shared,
            workers,
            seq: 0,
        }
    }

    pub fn n_threads(&self) -> usize {
        self.shared.n_threads
    }

    /// Runs `f(t)` once for every task `t` in `0..n_tasks`, each on whichever
    /// thread claims it, and returns when all are done. Tasks must not
    /// depend on which thread runs them or on each other's order.
    /// A panic in any task is re-raised here after every participant has
    /// left; tasks not yet started are then skipped.
    pub fn run_tasks(&mut self, n_tasks: usize, f: &(dyn Fn(usize) + Sync)) {
        let s = &*self.shared;
        if n_tasks == 0 {
            return;
        }
        if s.n_threads == 1 || n_tasks == 1 {
            (0..n_tasks).for_each(f);
            return;
        }
        // Erase the borrow's lifetime: we wait below for every worker that
        // entered the job, and no worker can enter once it is closed.
        let ptr: *const Job =
            unsafe { std::mem::transmute::<&(dyn Fn(usize) + Sync), &'static Job>(f) };
        unsafe { *s.job.get() = Some(ptr) };
        {
            let mut caller = s.caller.lock().unwrap_or_else(|e| e.into_inner());
            if caller
                .as_ref()
                .is_none_or(|t| t.id() != thread::current().id())
            {
                *caller = Some(thread::current());
            }
        }
        s.n_tasks.store(n_tasks, Ordering::Relaxed);
        s.next_task.store(0, Ordering::Relaxed);
        self.seq = self.seq.wrapping_add(1);
        s.state.store(u64::from(self.seq) << 32, Ordering::SeqCst);
        for (i, (_, t)) in self.workers.iter().enumerate() {
            if s.sleeping[i + 1].swap(false, Ordering::SeqCst) {
                t.unpark();
            }
        }
        s.work(f);
        let st = s.state.fetch_or(CLOSED, Ordering::AcqRel) | CLOSED;
        if st & ACTIVE != 0 {
            wait_for_workers(s);
        }
        unsafe { *s.job.get() = None };
        if s.panicked.swap(false, Ordering::AcqRel) {
            panic!("an engine task panicked");
        }
    }
}

/// The caller's wait for the workers still inside a closed job: a short
/// spin (the usual case: a worker finishing its last task), then park until
/// the last one out unparks it. Spinning longer would, on a loaded machine,
/// keep a preempted worker that shares our core from finishing.
fn wait_for_workers(s: &Shared) {
    let start = Instant::now();
    let mut i = 0u32;
    while s.state.load(Ordering::Acquire) & ACTIVE != 0 {
        i += 1;
        if i % 64 != 0 || start.elapsed() < CALLER_SPIN {
            std::hint::spin_loop();
            continue;
        }
        s.caller_sleeping.store(true, Ordering::SeqCst);
        // Re-check after announcing, so the last worker's exit is not missed.
        if s.state.load(Ordering::SeqCst) & ACTIVE != 0 {
            thread::park_timeout(Duration::from_millis(10));
        }
        s.caller_sleeping.store(false, Ordering::SeqCst);
    }
}

fn worker(s: Arc<Shared>, ith: usize) {
    let mut seen = 0u32;
    loop {
        // Wait for a new job: spin, then yield, then park.
        let start = Instant::now();
        let mut st;
        let mut i = 0u32;
        loop {
            if s.stop.load(Ordering::Acquire) {
                return;
            }
            st = s.state.load(Ordering::Acquire);
            if seq_of(st) != seen {
                seen = seq_of(st);
                break;
            }
            i += 1;
            if i % 16 != 0 {
                std::hint::spin_loop();
                continue;
            }
            let idle = start.elapsed();
            if idle < SPIN {
                std::hint::spin_loop();
                continue;
            }
            if idle < IDLE {
                thread::yield_now();
                continue;
            }
            s.sleeping[ith].store(true, Ordering::SeqCst);
            // Re-check after announcing, so a new job in between is not missed.
            if seq_of(s.state.load(Ordering::SeqCst)) == seen && !s.stop.load(Ordering::Acquire) {
                thread::park_timeout(Duration::from_millis(50));
            }
            s.sleeping[ith].store(false, Ordering::SeqCst);
        }
        // Enter the job unless it is already closed (or replaced).
        let entered = loop {
            if seq_of(st) != seen || st & CLOSED != 0 {
                break false;
            }
            match s
                .state
                .compare_exchange_weak(st, st + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => st = now,
            }
        };
        if !entered {
            continue;
        }
        let job = unsafe { (*s.job.get()).expect("job set while open") };
        s.work(unsafe { &*job });
        let prev = s.state.fetch_sub(1, Ordering::SeqCst);
        if prev & CLOSED != 0
            && prev & ACTIVE == 1
            && s.caller_sleeping.swap(false, Ordering::SeqCst)
        {
            // Last one out of a closed job: the caller may be parked.
            if let Some(t) = s.caller.lock().unwrap_or_else(|e| e.into_inner()).as_ref() {
                t.unpark();
            }
        }
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
    use std::sync::Mutex;

    #[test]
    fn every_task_runs_once() {
        for n in [1, 2, 3, 4] {
            let mut pool = ThreadPool::new(n);
            for iter in 0..2000 {
                let n_tasks = [0, 1, 2, 3, 7, 64][iter % 6];
                let hits: Vec<AtomicUsize> = (0..n_tasks).map(|_| AtomicUsize::new(0)).collect();
                pool.run_tasks(n_tasks, &|t| {
                    hits[t].fetch_add(1, Ordering::Relaxed);
                });
                assert!(hits.iter().all(|h| h.load(Ordering::Relaxed) == 1));
            }
        }
    }

    #[test]
    fn workers_take_part() {
        let mut pool = ThreadPool::new(2);
        let ids = Mutex::new(std::collections::HashSet::new());
        // Long tasks: the worker has time to wake and join.
        pool.run_tasks(16, &|_| {
            ids.lock().unwrap().insert(thread::current().id());
            thread::sleep(Duration::from_millis(5));
        });
        assert_eq!(ids.lock().unwrap().len(), 2);
    }

    #[test]
    fn wakes_after_parking() {
        let mut pool = ThreadPool::new(2);
        let c = AtomicUsize::new(0);
        pool.run_tasks(2, &|_| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        std::thread::sleep(Duration::from_millis(20));
        pool.run_tasks(40, &|_| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 42);
    }

    #[test]
    fn task_panic_is_reported_not_hung() {
        let mut pool = ThreadPool::new(2);
        for bad in [0, 5, 63] {
            let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                pool.run_tasks(64, &|t| {
                    if t == bad {
                        panic!("boom");
                    }
                })
            }));
            assert!(r.is_err());
        }
        // The pool still works afterwards.
        let c = AtomicUsize::new(0);
        pool.run_tasks(10, &|_| {
            c.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(c.load(Ordering::Relaxed), 10);
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
