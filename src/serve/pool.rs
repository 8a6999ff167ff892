//! The decision pools: a fixed set of threads per front end that make the
//! blocking LDAP/database decisions. A request takes a thread only once it
//! has been read completely (reading happens on the async runtime, where a
//! slow client costs a socket and a few bytes), waits at most
//! `serve.queue_timeout_ms` for one, and gives it back on every path: a
//! panic inside a decision is caught on the thread, the waiting request is
//! answered as a temporary failure, and the thread takes the next job.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{oneshot, OwnedSemaphorePermit, Semaphore};

type Job = Box<dyn FnOnce() + Send>;

/// Why a request got no decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// Every thread stayed busy for the queue time.
    Busy,
    /// The decision panicked (or the pool is closing).
    Failed,
}

/// One front end's decision threads.
pub struct Pool {
    size: usize,
    slots: Arc<Semaphore>,
    jobs: Mutex<Option<mpsc::Sender<(Job, OwnedSemaphorePermit)>>>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    panics: Arc<AtomicU64>,
}

impl Pool {
    /// Start `size` threads named `<name>-<i>`.
    pub fn new(name: &str, size: usize) -> Pool {
        let (tx, rx) = mpsc::channel::<(Job, OwnedSemaphorePermit)>();
        let rx = Arc::new(Mutex::new(rx));
        let panics = Arc::new(AtomicU64::new(0));
        let threads = (0..size.max(1))
            .map(|i| {
                let (rx, panics) = (rx.clone(), panics.clone());
                std::thread::Builder::new()
                    .name(format!("{name}-{i}"))
                    .spawn(move || loop {
                        let next = rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                        let Ok((job, permit)) = next else { return };
                        if catch_unwind(AssertUnwindSafe(job)).is_err() {
                            panics.fetch_add(1, Ordering::Relaxed);
                            crate::log::error(
                                "serve: a request panicked: it was answered as a temporary failure",
                            );
                        }
                        // The slot is free again, whatever the job did.
                        drop(permit);
                    })
                    .expect("spawn a decision thread")
            })
            .collect();
        Pool {
            size: size.max(1),
            slots: Arc::new(Semaphore::new(size.max(1))),
            jobs: Mutex::new(Some(tx)),
            threads: Mutex::new(threads),
            panics,
        }
    }

    /// Run `f` on a free thread, waiting at most `wait` for one. Returns the
    /// result and how long the request waited for its thread.
    pub async fn run<T: Send + 'static>(
        &self,
        wait: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (Result<T, Refused>, Duration) {
        let queued = Instant::now();
        let permit = match tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await {
            Ok(Ok(p)) => p,
            Ok(Err(_)) => return (Err(Refused::Failed), queued.elapsed()),
            Err(_) => return (Err(Refused::Busy), queued.elapsed()),
        };
        let (tx, rx) = oneshot::channel();
        let started = Arc::new(Mutex::new(None));
        let mark = started.clone();
        let panics = self.panics.clone();
        let job: Job = Box::new(move || {
            *mark.lock().unwrap_or_else(|p| p.into_inner()) = Some(Instant::now());
            match catch_unwind(AssertUnwindSafe(f)) {
                Ok(v) => {
                    let _ = tx.send(v);
                }
                Err(_) => {
                    // Counted before `tx` is dropped (the waiting side then sees
                    // the failure), so whoever sees the failure sees it counted.
                    panics.fetch_add(1, Ordering::Relaxed);
                    crate::log::error(
                        "serve: a request panicked: it was answered as a temporary failure",
                    );
                    drop(tx);
                }
            }
        });
        let sent = self
            .jobs
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_ref()
            .map(|j| j.send((job, permit)).is_ok())
            .unwrap_or(false);
        if !sent {
            return (Err(Refused::Failed), queued.elapsed());
        }
        let result = rx.await.map_err(|_| Refused::Failed);
        let waited = started
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .map(|s| s.saturating_duration_since(queued))
            .unwrap_or_default();
        (result, waited)
    }

    /// Threads in the pool.
    pub fn size(&self) -> usize {
        self.size
    }

    /// Threads making a decision right now.
    pub fn busy(&self) -> usize {
        self.size - self.slots.available_permits().min(self.size)
    }

    /// Decisions that panicked since the start.
    pub fn panics(&self) -> u64 {
        self.panics.load(Ordering::Relaxed)
    }

    /// Finish the jobs handed over, then stop the threads.
    pub fn close(&self) {
        self.jobs.lock().unwrap_or_else(|p| p.into_inner()).take();
        let threads = std::mem::take(&mut *self.threads.lock().unwrap_or_else(|p| p.into_inner()));
        for t in threads {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
            .block_on(f)
    }

    #[test]
    fn a_panic_is_a_failure_and_the_slot_comes_back() {
        let pool = Pool::new("t", 1);
        // Keep the panic message out of the test output.
        let (r, _) = block_on(pool.run(Duration::from_secs(5), || -> u32 {
            std::panic::resume_unwind(Box::new("forced"))
        }));
        assert_eq!(r, Err(Refused::Failed));
        assert_eq!(pool.panics(), 1);
        // The one thread still answers, again and again.
        for i in 0..3u32 {
            let (r, _) = block_on(pool.run(Duration::from_secs(5), move || i * 2));
            assert_eq!(r, Ok(i * 2));
        }
        assert_eq!(pool.busy(), 0);
        pool.close();
    }

    #[test]
    fn busy_threads_refuse_after_the_queue_time() {
        let pool = Arc::new(Pool::new("t", 1));
        let (hold, release) = mpsc::channel::<()>();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let p = pool.clone();
            let first = tokio::spawn(async move {
                p.run(Duration::from_secs(5), move || release.recv().is_ok())
                    .await
                    .0
            });
            while pool.busy() == 0 {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            let (r, waited) = pool.run(Duration::from_millis(50), || 1).await;
            assert_eq!(r, Err(Refused::Busy));
            assert!(waited >= Duration::from_millis(50));
            hold.send(()).unwrap();
            assert_eq!(first.await.unwrap(), Ok(true));
        });
        pool.close();
    }
}
