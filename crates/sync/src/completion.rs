//! Completion handles: one per call, fired once by the sync thread.

use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, RecvTimeoutError, Sender, TryRecvError};

use crate::error::Error;

/// The outcome of one call to the engine, to wait for or poll.
///
/// For a delta, `Ok` means the kernel holds it: the commit that included it (or a later
/// one) succeeded. Dropping the handle does not cancel the call.
#[derive(Debug)]
#[must_use = "a completion says whether the call took effect"]
pub struct Completion<T = ()> {
    rx: Receiver<Result<T, Error>>,
}

/// The sync thread's end of a completion, with the time the call was made.
#[derive(Debug)]
pub(crate) struct Ticket<T = ()> {
    tx: Sender<Result<T, Error>>,
    pub(crate) at: Instant,
}

/// A connected pair.
pub(crate) fn pair<T>() -> (Ticket<T>, Completion<T>) {
    // One slot: the sync thread sends exactly once and never waits.
    let (tx, rx) = bounded(1);
    (
        Ticket {
            tx,
            at: Instant::now(),
        },
        Completion { rx },
    )
}

impl<T> Ticket<T> {
    /// Fires the completion. The caller may have dropped it; that's fine.
    pub(crate) fn complete(self, result: Result<T, Error>) {
        let _ = self.tx.try_send(result);
    }
}

impl<T> Completion<T> {
    /// A completion that has already fired.
    pub(crate) fn ready(result: Result<T, Error>) -> Self {
        let (ticket, c) = pair();
        ticket.complete(result);
        c
    }

    /// Waits for the outcome.
    ///
    /// # Errors
    /// The call's error, or [`Error::Stopped`] when the engine stopped first.
    pub fn wait(self) -> Result<T, Error> {
        self.rx.recv().unwrap_or(Err(Error::Stopped))
    }

    /// Waits for the outcome at most `timeout`.
    ///
    /// # Errors
    /// `Err(self)` when the time passed first, so that the caller can wait again; the
    /// outcome (itself a `Result`, as [`Self::wait`] gives it) otherwise.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, Error>, Self> {
        match self.rx.recv_timeout(timeout) {
            Ok(r) => Ok(r),
            Err(RecvTimeoutError::Timeout) => Err(self),
            Err(RecvTimeoutError::Disconnected) => Ok(Err(Error::Stopped)),
        }
    }

    /// The outcome if it is there, without waiting.
    pub fn try_result(&self) -> Option<Result<T, Error>> {
        match self.rx.try_recv() {
            Ok(r) => Some(r),
            Err(TryRecvError::Empty) => None,
            Err(TryRecvError::Disconnected) => Some(Err(Error::Stopped)),
        }
    }
}
