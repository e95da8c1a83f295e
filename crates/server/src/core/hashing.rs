//! The password-hash pool: a few threads of its own (not tokio's blocking pool) that run the
//! argon2id hashes of logins and registrations, at most one per thread at once. A caller first
//! takes a [`HashSlot`]; when every slot is in use the answer is `busy` at once — a hash never
//! waits in a queue, so a flood of hellos costs at most `size` hashes' memory and threads, and
//! the ledger's work (on tokio's blocking pool) never waits behind hashes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};

use stampline_wire::codes;

use super::CoreError;

type Job = Box<dyn FnOnce() + Send>;

/// The pool; dropping it ends its threads once their jobs are done.
#[derive(Debug)]
pub struct HashPool {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    size: usize,
    in_use: AtomicUsize,
    jobs: Mutex<mpsc::Sender<Job>>,
}

/// The right to run one hash now; given back when its job ends (or when dropped unused).
#[derive(Debug)]
pub struct HashSlot {
    shared: Arc<Shared>,
}

impl HashPool {
    /// A pool of `size` threads (at least one), named `stampline-hash-N`.
    pub fn new(size: usize) -> std::io::Result<HashPool> {
        let size = size.max(1);
        let (tx, rx) = mpsc::channel::<Job>();
        let rx = Arc::new(Mutex::new(rx));
        for n in 0..size {
            let rx = Arc::clone(&rx);
            std::thread::Builder::new()
                .name(format!("stampline-hash-{n}"))
                .spawn(move || {
                    loop {
                        // The lock is held only while waiting for the next job.
                        let next = match rx.lock() {
                            Ok(rx) => rx.recv(),
                            Err(_) => return,
                        };
                        match next {
                            Ok(job) => job(),
                            Err(_) => return,
                        }
                    }
                })?;
        }
        Ok(HashPool {
            shared: Arc::new(Shared {
                size,
                in_use: AtomicUsize::new(0),
                jobs: Mutex::new(tx),
            }),
        })
    }

    /// How many hashes may run at once.
    pub fn size(&self) -> usize {
        self.shared.size
    }

    /// A free slot, or `None` when all are in use.
    pub fn try_slot(&self) -> Option<HashSlot> {
        let taken = self
            .shared
            .in_use
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.shared.size).then_some(n + 1)
            });
        taken.ok().map(|_| HashSlot {
            shared: Arc::clone(&self.shared),
        })
    }

    /// A free slot, or `busy` (the one answer of a full pool).
    pub fn slot(&self) -> Result<HashSlot, CoreError> {
        self.try_slot().ok_or_else(|| {
            CoreError::refused(
                codes::BUSY,
                "the server is checking too many passwords at once; try again in a moment",
            )
        })
    }
}

impl HashSlot {
    /// Runs `f` on a pool thread and gives the slot back when it returns.
    pub async fn run<T: Send + 'static>(
        self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, CoreError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let shared = Arc::clone(&self.shared);
        let job: Job = Box::new(move || {
            let slot = self;
            let out = f();
            drop(slot);
            let _ = tx.send(out);
        });
        let sent = shared
            .jobs
            .lock()
            .map_err(|_| CoreError::Internal("hash pool poisoned".into()))?
            .send(job);
        sent.map_err(|_| CoreError::Internal("hash pool stopped".into()))?;
        rx.await
            .map_err(|_| CoreError::Internal("a password hash job failed".into()))
    }
}

impl Drop for HashSlot {
    fn drop(&mut self) {
        self.shared.in_use.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_full_pool_answers_busy_at_once_and_frees_slots_when_jobs_end() {
        let pool = HashPool::new(2).unwrap();
        let a = pool.try_slot().expect("first slot");
        let b = pool.try_slot().expect("second slot");
        assert!(pool.try_slot().is_none(), "both slots are in use");
        let busy = pool.slot().unwrap_err();
        assert_eq!(busy.code(), codes::BUSY);
        drop(a);
        let c = pool.try_slot().expect("a dropped slot is free again");
        let name = c
            .run(|| std::thread::current().name().map(str::to_owned))
            .await
            .unwrap();
        assert!(
            name.is_some_and(|n| n.starts_with("stampline-hash-")),
            "hashes run on the pool's own threads"
        );
        assert!(
            pool.try_slot().is_some(),
            "a finished job gives its slot back"
        );
        drop(b);
    }

    #[tokio::test]
    async fn at_most_size_jobs_run_at_once() {
        let pool = HashPool::new(2).unwrap();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        let mut refused = 0;
        for _ in 0..6 {
            let Some(slot) = pool.try_slot() else {
                refused += 1;
                continue;
            };
            let (running, most) = (Arc::clone(&running), Arc::clone(&most));
            tasks.push(tokio::spawn(slot.run(move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(50));
                running.fetch_sub(1, Ordering::SeqCst);
            })));
        }
        for t in tasks {
            t.await.unwrap().unwrap();
        }
        assert_eq!(refused, 4, "never queued: the rest were refused");
        assert!(most.load(Ordering::SeqCst) <= 2);
    }
}
