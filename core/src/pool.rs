//! Scratch values (buffers, codec contexts) shared by every thread of the process.
//!
//! Why not thread-locals: the server runs each association, and each retrieve batch's reader,
//! on a thread of its own. A per-thread scratch therefore started cold for every association
//! and every batch: its first object paid fresh allocations, their page faults and a new zstd
//! context, ~0.2-0.35 ms on a 512 KiB CT slice (measured: a read in a new thread against one in
//! a warm thread), which is a sixth of a C-GET's time to its first image. A thread takes warm
//! values from here instead, and gives them back when done.

use std::sync::Mutex;

/// Up to `keep` idle values of `T`, lent to one caller at a time.
pub struct Pool<T> {
    free: Mutex<Vec<T>>,
    keep: usize,
}

impl<T: Default> Pool<T> {
    pub const fn new(keep: usize) -> Self {
        Pool { free: Mutex::new(Vec::new()), keep }
    }

    /// A value from the pool, or a new `T::default()` when none is idle.
    pub fn take(&self) -> T {
        self.free.lock().ok().and_then(|mut free| free.pop()).unwrap_or_default()
    }

    /// Keeps `value` for the next caller, unless `keep` values are idle already.
    pub fn give(&self, value: T) {
        if let Ok(mut free) = self.free.lock() {
            if free.len() < self.keep {
                free.push(value);
            }
        }
    }

    /// Runs `f` on a value taken from the pool, then `tidy` on it (drop what should not be
    /// kept, such as an oversized buffer), then gives it back. The lock is not held while `f`
    /// runs, so callers on several threads work in parallel, each on its own value; if `f`
    /// panics, its value is dropped and the pool stays usable.
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R, tidy: impl FnOnce(&mut T)) -> R {
        let mut value = self.take();
        let r = f(&mut value);
        tidy(&mut value);
        self.give(value);
        r
    }

    /// How many values are idle (0 if the pool cannot be read).
    pub fn idle(&self) -> usize {
        self.free.lock().map(|free| free.len()).unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_thread_gets_the_buffer_an_earlier_thread_gave_back() {
        static POOL: Pool<Vec<u8>> = Pool::new(2);
        let first = std::thread::spawn(|| {
            POOL.with(
                |v| {
                    v.resize(1 << 20, 7);
                    v.as_ptr() as usize
                },
                |_| {},
            )
        })
        .join()
        .unwrap();
        let (again, cap) =
            std::thread::spawn(|| POOL.with(|v| (v.as_ptr() as usize, v.capacity()), |_| {})).join().unwrap();
        assert_eq!(again, first, "the second thread got a new allocation");
        assert!(cap >= 1 << 20);
    }

    #[test]
    fn keeps_at_most_keep_and_applies_tidy() {
        static POOL: Pool<Vec<u8>> = Pool::new(1);
        // two lent at once: both come back, only one is kept
        POOL.with(
            |a| {
                a.push(2);
                POOL.with(|b| b.push(1), |_| {});
            },
            |_| {},
        );
        assert_eq!(POOL.idle(), 1);
        POOL.with(|v| v.resize(64, 0), |v| *v = Vec::new());
        POOL.with(|v| assert_eq!(v.capacity(), 0, "tidy did not apply"), |_| {});
    }

    #[test]
    fn a_panic_in_use_leaves_the_pool_usable() {
        static POOL: Pool<Vec<u8>> = Pool::new(2);
        let r = std::panic::catch_unwind(|| POOL.with(|_| panic!("decoder bug"), |_| {}));
        assert!(r.is_err());
        assert_eq!(POOL.with(|v| v.len(), |_| {}), 0);
    }
}
