//! Connections on the async runtime: caps on how many are open (per listener
//! and per client address), a write deadline on every socket, and an accept
//! loop that backs off when accepting fails (EMFILE) instead of spinning.

use super::strict::HeadScan;
use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// `serve.max_connections` open on this listener.
    Listener,
    /// `serve.max_connections_per_peer` open from this address.
    Peer,
}

/// Open connections of one listener, in total and per peer.
pub struct Admission<K: Eq + Hash + Clone> {
    max_total: usize,
    max_per_peer: usize,
    state: Mutex<(usize, HashMap<K, usize>)>,
}

/// Held while a connection is open; gives its place back on drop.
pub struct Admitted<K: Eq + Hash + Clone> {
    owner: Arc<Admission<K>>,
    peer: Option<K>,
}

impl<K: Eq + Hash + Clone> Admission<K> {
    pub fn new(max_total: usize, max_per_peer: usize) -> Arc<Admission<K>> {
        Arc::new(Admission {
            max_total,
            max_per_peer,
            state: Mutex::new((0, HashMap::new())),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (usize, HashMap<K, usize>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A place for one more connection from `peer` (`None`: no per-peer cap).
    pub fn admit(self: &Arc<Self>, peer: Option<K>) -> Result<Admitted<K>, Full> {
        let mut st = self.lock();
        if st.0 >= self.max_total {
            return Err(Full::Listener);
        }
        if let Some(p) = &peer {
            let n = st.1.entry(p.clone()).or_insert(0);
            if *n >= self.max_per_peer {
                return Err(Full::Peer);
            }
            *n += 1;
        }
        st.0 += 1;
        Ok(Admitted {
            owner: self.clone(),
            peer,
        })
    }

    /// Connections open now.
    pub fn open(&self) -> usize {
        self.lock().0
    }
}

impl<K: Eq + Hash + Clone> Drop for Admitted<K> {
    fn drop(&mut self) {
        let mut st = self.owner.lock();
        st.0 = st.0.saturating_sub(1);
        if let Some(p) = &self.peer {
            if let Some(n) = st.1.get_mut(p) {
                *n -= 1;
                if *n == 0 {
                    st.1.remove(p);
                }
            }
        }
    }
}

/// A stream whose writes fail once they have been stuck for `limit` (a
/// client that does not read its answer gives its socket back).
/// With a [`HeadScan`], every byte read is shown to it first.
pub struct Timed<S> {
    inner: S,
    limit: Duration,
    stuck: Option<Pin<Box<tokio::time::Sleep>>>,
    scan: Option<HeadScan>,
}

impl<S> Timed<S> {
    pub fn new(inner: S, limit: Duration) -> Timed<S> {
        Timed {
            inner,
            limit,
            stuck: None,
            scan: None,
        }
    }

    pub fn scanned(mut self, scan: HeadScan) -> Timed<S> {
        self.scan = Some(scan);
        self
    }

    /// `Pending` from the inner stream: fail once stuck for `limit`.
    fn pending<T>(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<T>> {
        let limit = self.limit;
        let sleep = self
            .stuck
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(limit)));
        match sleep.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "the client does not read its answer",
            ))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Timed<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Some(scan) = self.scan.as_mut() {
            scan.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Timed<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        match Pin::new(&mut self.inner).poll_write(cx, buf) {
            Poll::Pending => self.pending(cx),
            done => {
                self.stuck = None;
                done
            }
        }
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_flush(cx) {
            Poll::Pending => self.pending(cx),
            done => {
                self.stuck = None;
                done
            }
        }
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        match Pin::new(&mut self.inner).poll_shutdown(cx) {
            Poll::Pending => self.pending(cx),
            done => done,
        }
    }
}

/// How long to wait after the `n`-th accept error in a row: 10 ms doubling
/// up to 1 s (EMFILE clears when connections close; retrying at once would
/// spin a core).
pub fn backoff(n: u32) -> Duration {
    Duration::from_millis(10u64.saturating_mul(1 << n.min(7)).min(1000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caps_in_total_and_per_peer_and_places_come_back() {
        let a = Admission::<u8>::new(3, 2);
        let x1 = a.admit(Some(1)).unwrap();
        let _x2 = a.admit(Some(1)).unwrap();
        assert_eq!(a.admit(Some(1)).err(), Some(Full::Peer));
        let _y = a.admit(Some(2)).unwrap();
        assert_eq!(a.admit(Some(3)).err(), Some(Full::Listener));
        assert_eq!(a.admit(None).err(), Some(Full::Listener));
        drop(x1);
        assert_eq!(a.open(), 2);
        let _x3 = a.admit(Some(1)).unwrap();
        assert_eq!(a.open(), 3);
    }

    #[test]
    fn backoff_grows_and_is_bounded() {
        assert_eq!(backoff(0), Duration::from_millis(10));
        assert_eq!(backoff(1), Duration::from_millis(20));
        assert_eq!(backoff(6), Duration::from_millis(640));
        assert_eq!(backoff(7), Duration::from_secs(1));
        assert_eq!(backoff(40), Duration::from_secs(1));
    }
}
