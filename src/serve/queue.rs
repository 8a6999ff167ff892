//! A bounded queue between the acceptors and the workers: a full queue makes
//! the acceptor wait a bounded time, then the request gets a temporary failure.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

pub struct BoundedQueue<T> {
    state: Mutex<State<T>>,
    not_empty: Condvar,
    not_full: Condvar,
    capacity: usize,
}

struct State<T> {
    items: VecDeque<T>,
    closed: bool,
}

impl<T> BoundedQueue<T> {
    pub fn new(capacity: usize) -> BoundedQueue<T> {
        BoundedQueue {
            state: Mutex::new(State {
                items: VecDeque::new(),
                closed: false,
            }),
            not_empty: Condvar::new(),
            not_full: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State<T>> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add an item, waiting at most `wait` for room. Gives the item back when
    /// the queue stayed full or is closed.
    pub fn push_timeout(&self, item: T, wait: Duration) -> Result<(), T> {
        let end = Instant::now() + wait;
        let mut st = self.lock();
        while st.items.len() >= self.capacity && !st.closed {
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(item);
            }
            st = self
                .not_full
                .wait_timeout(st, left)
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
        if st.closed {
            return Err(item);
        }
        st.items.push_back(item);
        self.not_empty.notify_one();
        Ok(())
    }

    /// The next item; `None` once the queue is closed and empty.
    pub fn pop(&self) -> Option<T> {
        let mut st = self.lock();
        loop {
            if let Some(item) = st.items.pop_front() {
                self.not_full.notify_one();
                return Some(item);
            }
            if st.closed {
                return None;
            }
            st = self.not_empty.wait(st).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// No more items: workers finish what is queued, then `pop` returns `None`.
    pub fn close(&self) {
        self.lock().closed = true;
        self.not_empty.notify_all();
        self.not_full.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn bounded_with_timeout_and_drained_on_close() {
        let q = BoundedQueue::new(2);
        assert!(q.push_timeout(1, Duration::ZERO).is_ok());
        assert!(q.push_timeout(2, Duration::ZERO).is_ok());
        let t = Instant::now();
        assert_eq!(q.push_timeout(3, Duration::from_millis(50)), Err(3));
        assert!(t.elapsed() >= Duration::from_millis(50));
        assert_eq!(q.pop(), Some(1));
        assert!(q.push_timeout(3, Duration::ZERO).is_ok());
        q.close();
        assert_eq!(q.push_timeout(4, Duration::ZERO), Err(4));
        assert_eq!((q.pop(), q.pop(), q.pop()), (Some(2), Some(3), None));
    }

    #[test]
    fn a_waiting_producer_gets_room_when_a_consumer_pops() {
        let q = Arc::new(BoundedQueue::new(1));
        q.push_timeout(0, Duration::ZERO).unwrap();
        let q2 = q.clone();
        let producer = std::thread::spawn(move || q2.push_timeout(1, Duration::from_secs(10)));
        assert_eq!(q.pop(), Some(0));
        assert!(producer.join().unwrap().is_ok());
        assert_eq!(q.pop(), Some(1));
    }
}
