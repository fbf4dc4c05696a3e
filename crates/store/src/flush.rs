//! Group flushing: writers that need their writes on stable storage share one flush instead of one each.
//!
//! A writer takes a ticket once its bytes are written (to the OS); it is durable once a flush that *started*
//! after its ticket was issued has completed. One flush runs at a time; whoever finds none running starts the
//! next one, for every ticket issued so far. A failed flush is final: after a failed `fsync` the kernel may
//! have marked the unwritten pages clean, so a later success proves nothing — every ticket not covered by an
//! earlier successful flush gets the error, now and until the process restarts. Used by the blob directory (one `syncfs` for many documents) and
//! by the SQLite writer (one `fsync` of the WAL for many commits, outside the writer's lock).

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

#[derive(Default)]
pub(crate) struct GroupFlush {
    state: Mutex<State>,
    done: Condvar,
}

#[derive(Default)]
struct State {
    issued: u64,
    /// Every ticket up to this one is durable (covered by a successful flush before any failure).
    durable: u64,
    running: bool,
    /// The first failure; final.
    failed: Option<String>,
}

impl GroupFlush {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A ticket for the bytes written so far.
    pub(crate) fn ticket(&self) -> u64 {
        let mut st = self.lock();
        st.issued += 1;
        st.issued
    }

    /// Returns once a flush covering `ticket` has completed, running `flush` if none is under way; the error is
    /// that flush's.
    pub(crate) fn wait<E>(
        &self,
        ticket: u64,
        flush: impl Fn() -> Result<(), E>,
    ) -> Result<(), String>
    where
        E: std::fmt::Display,
    {
        let mut st = self.lock();
        loop {
            if ticket <= st.durable {
                return Ok(());
            }
            if let Some(e) = &st.failed {
                return Err(e.clone());
            }
            if !st.running {
                st.running = true;
                let target = st.issued;
                drop(st);
                let r = flush();
                st = self.lock();
                st.running = false;
                match r {
                    Ok(()) => st.durable = st.durable.max(target),
                    Err(e) => {
                        tracing::error!(error = %e, "échec de la synchronisation sur disque : plus aucune écriture n'est confirmée");
                        st.failed = Some(e.to_string());
                    }
                }
                self.done.notify_all();
                continue;
            }
            st = self.done.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// The flush failure that stopped this group flush, if any.
    pub(crate) fn failure(&self) -> Option<String> {
        self.lock().failed.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicU64, Ordering};

    #[test]
    fn a_ticket_waits_for_a_flush_started_after_it() {
        let g = Arc::new(GroupFlush::default());
        let flushes = Arc::new(AtomicU64::new(0));
        let t1 = g.ticket();
        let f = flushes.clone();
        g.wait(t1, || {
            f.fetch_add(1, Ordering::SeqCst);
            Ok::<(), String>(())
        })
        .unwrap();
        assert_eq!(flushes.load(Ordering::SeqCst), 1);
        // Already covered: no new flush.
        g.wait(t1, || Err::<(), String>("ne doit pas être appelé".into()))
            .unwrap();
        let t2 = g.ticket();
        assert!(t2 > t1);
        let err = g.wait(t2, || Err::<(), String>("disque plein".into()));
        assert_eq!(err, Err("disque plein".to_string()));
        // A failure is final: later tickets get it without another flush; earlier ones stay durable.
        let t3 = g.ticket();
        assert_eq!(
            g.wait(t3, || Ok::<(), String>(())),
            Err("disque plein".to_string())
        );
        g.wait(t1, || Ok::<(), String>(())).unwrap();
        assert_eq!(g.failure(), Some("disque plein".to_string()));
    }

    #[test]
    fn every_waiter_returns_after_a_flush_that_covers_its_write() {
        // `written` counts writes made; a flush makes durable what was written when it started.
        let g = Arc::new(GroupFlush::default());
        let written = Arc::new(AtomicU64::new(0));
        let durable = Arc::new(AtomicU64::new(0));
        let flushes = Arc::new(AtomicU64::new(0));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let (g, w, d, f) = (g.clone(), written.clone(), durable.clone(), flushes.clone());
                std::thread::spawn(move || {
                    for _ in 0..50 {
                        let mine = w.fetch_add(1, Ordering::SeqCst) + 1;
                        let t = g.ticket();
                        g.wait(t, || {
                            let upto = w.load(Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_micros(200));
                            d.fetch_max(upto, Ordering::SeqCst);
                            f.fetch_add(1, Ordering::SeqCst);
                            Ok::<(), String>(())
                        })
                        .unwrap();
                        assert!(
                            d.load(Ordering::SeqCst) >= mine,
                            "write {mine} acknowledged before its flush"
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert!(flushes.load(Ordering::SeqCst) <= 400);
    }
}
