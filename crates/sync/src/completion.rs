//! Completion handles: one per call, fired once by the sync thread.
//!
//! A handle is one shared slot (a mutex and a condition variable) rather than a
//! channel: an agent's full sync holds one handle per object, tens of thousands at
//! once, and a one-slot crossbeam channel costs about 640 bytes of heap each (its
//! cache-padded head and tail and two waker lists), against under 100 for the slot.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::{Condvar, Mutex};

use crate::error::Error;

/// Where a completion stands.
enum State<T> {
    /// Not fired yet.
    Pending,
    /// Fired; the outcome waits to be taken.
    Fired(Result<T, Error>),
    /// The outcome was taken by [`Completion::try_result`].
    Taken,
}

/// What a ticket and its completion share.
struct Slot<T> {
    state: Mutex<State<T>>,
    fired: Condvar,
}

impl<T> Slot<T> {
    /// Fires the slot unless it already has; returns whether it did.
    fn fire(&self, result: Result<T, Error>) -> bool {
        let mut s = self.state.lock();
        if !matches!(*s, State::Pending) {
            return false;
        }
        *s = State::Fired(result);
        drop(s);
        self.fired.notify_all();
        true
    }
}

/// Takes the outcome out of a fired state: after it is taken, later reads see
/// [`Error::Stopped`], as they would on a channel whose sender is gone.
fn take<T>(s: &mut State<T>) -> Result<T, Error> {
    match std::mem::replace(s, State::Taken) {
        State::Fired(r) => r,
        State::Pending | State::Taken => Err(Error::Stopped),
    }
}

/// The outcome of one call to the engine, to wait for or poll.
///
/// For a delta, `Ok` means the kernel holds it: the commit that included it (or a later
/// one) succeeded. Dropping the handle does not cancel the call.
#[must_use = "a completion says whether the call took effect"]
pub struct Completion<T = ()> {
    slot: Arc<Slot<T>>,
}

impl<T> fmt::Debug for Completion<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let fired = !matches!(*self.slot.state.lock(), State::Pending);
        f.debug_struct("Completion").field("fired", &fired).finish()
    }
}

/// The sync thread's end of a completion, with the time the call was made. Dropped
/// without being completed (the sync thread stopped), it fires [`Error::Stopped`].
pub(crate) struct Ticket<T = ()> {
    slot: Arc<Slot<T>>,
    pub(crate) at: Instant,
}

impl<T> fmt::Debug for Ticket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ticket").field("at", &self.at).finish()
    }
}

/// A connected pair.
pub(crate) fn pair<T>() -> (Ticket<T>, Completion<T>) {
    let slot = Arc::new(Slot {
        state: Mutex::new(State::Pending),
        fired: Condvar::new(),
    });
    (
        Ticket {
            slot: slot.clone(),
            at: Instant::now(),
        },
        Completion { slot },
    )
}

impl<T> Ticket<T> {
    /// Fires the completion. The caller may have dropped it; that's fine.
    pub(crate) fn complete(self, result: Result<T, Error>) {
        self.slot.fire(result);
        // Drop finds the slot fired and leaves it.
    }
}

impl<T> Drop for Ticket<T> {
    fn drop(&mut self) {
        self.slot.fire(Err(Error::Stopped));
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
        let mut s = self.slot.state.lock();
        while matches!(*s, State::Pending) {
            self.slot.fired.wait(&mut s);
        }
        take(&mut s)
    }

    /// Waits for the outcome at most `timeout`.
    ///
    /// # Errors
    /// `Err(self)` when the time passed first, so that the caller can wait again; the
    /// outcome (itself a `Result`, as [`Self::wait`] gives it) otherwise.
    pub fn wait_timeout(self, timeout: Duration) -> Result<Result<T, Error>, Self> {
        let deadline = Instant::now().checked_add(timeout);
        let mut s = self.slot.state.lock();
        while matches!(*s, State::Pending) {
            match deadline {
                Some(d) => {
                    if self.slot.fired.wait_until(&mut s, d).timed_out()
                        && matches!(*s, State::Pending)
                    {
                        drop(s);
                        return Err(self);
                    }
                }
                // A timeout past the end of time is no timeout.
                None => self.slot.fired.wait(&mut s),
            }
        }
        Ok(take(&mut s))
    }

    /// The outcome if it is there, without waiting. It is handed out once: later calls
    /// give [`Error::Stopped`].
    pub fn try_result(&self) -> Option<Result<T, Error>> {
        let mut s = self.slot.state.lock();
        match *s {
            State::Pending => None,
            _ => Some(take(&mut s)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_completed_ticket_hands_its_outcome_out_once() {
        let (t, c) = pair::<u32>();
        assert!(c.try_result().is_none());
        t.complete(Ok(7));
        assert!(matches!(c.try_result(), Some(Ok(7))));
        assert!(matches!(c.try_result(), Some(Err(Error::Stopped))));
    }

    #[test]
    fn a_dropped_ticket_fires_stopped() {
        let (t, c) = pair::<()>();
        drop(t);
        assert!(matches!(c.wait(), Err(Error::Stopped)));
    }

    #[test]
    fn wait_timeout_gives_the_handle_back_then_the_outcome() {
        let (t, c) = pair::<u8>();
        let c = c
            .wait_timeout(Duration::from_millis(5))
            .expect_err("nothing fired yet");
        let waiter = std::thread::spawn(move || c.wait_timeout(Duration::from_secs(30)));
        std::thread::sleep(Duration::from_millis(20));
        t.complete(Ok(3));
        let r = waiter.join().expect("the waiter ran");
        assert!(matches!(r, Ok(Ok(3))));
    }

    #[test]
    fn an_enormous_timeout_waits_for_the_outcome() {
        let (t, c) = pair::<()>();
        let waiter = std::thread::spawn(move || c.wait_timeout(Duration::MAX));
        t.complete(Ok(()));
        assert!(matches!(waiter.join().expect("the waiter ran"), Ok(Ok(()))));
    }
}
