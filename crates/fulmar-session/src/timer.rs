//! Timers are data: a table of named deadlines; `poll_timeout` is the earliest.

use std::time::{Duration, Instant};

/// A named deadline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Timer {
    /// Server: CONNECT must arrive. Client: CONNACK must arrive.
    Connect = 0,
    /// Client: send PINGREQ if nothing was sent for a keep alive period.
    KeepAlive = 1,
    /// Client: PINGRESP must arrive.
    PingResp = 2,
    /// Server: a packet must arrive within 1.5 times the keep alive.
    /// Client: nothing has arrived for a keep alive period; probe with a
    /// PINGREQ even if packets were sent (a client that only publishes at
    /// QoS 0 would otherwise never learn that the server is gone).
    Idle = 3,
}

const COUNT: usize = 4;
const ALL: [Timer; COUNT] = [
    Timer::Connect,
    Timer::KeepAlive,
    Timer::PingResp,
    Timer::Idle,
];

/// The deadline table.
#[derive(Clone, Debug, Default)]
pub(crate) struct Timers {
    deadlines: [Option<Instant>; COUNT],
}

impl Timers {
    /// Arms `timer` to fire `after` from `now`. A deadline beyond what
    /// `Instant` can represent never fires.
    pub(crate) fn set(&mut self, timer: Timer, now: Instant, after: Duration) {
        if let Some(slot) = self.deadlines.get_mut(timer as usize) {
            *slot = now.checked_add(after);
        }
    }

    pub(crate) fn stop(&mut self, timer: Timer) {
        if let Some(slot) = self.deadlines.get_mut(timer as usize) {
            *slot = None;
        }
    }

    pub(crate) fn get(&self, timer: Timer) -> Option<Instant> {
        self.deadlines.get(timer as usize).copied().flatten()
    }

    pub(crate) fn stop_all(&mut self) {
        self.deadlines = [None; COUNT];
    }

    /// The earliest deadline.
    pub(crate) fn next(&self) -> Option<Instant> {
        self.deadlines.iter().flatten().min().copied()
    }

    /// The one running timer and its deadline (`Ok(None)`: none runs);
    /// `Err(())` when more than one runs.
    pub(crate) fn single(&self) -> Result<Option<(Timer, Instant)>, ()> {
        let mut running = ALL
            .into_iter()
            .filter_map(|timer| self.get(timer).map(|at| (timer, at)));
        let first = running.next();
        match running.next() {
            Some(_) => Err(()),
            None => Ok(first),
        }
    }

    /// A table with `timer` alone running, if given.
    pub(crate) fn with(timer: Option<(Timer, Instant)>) -> Self {
        let mut timers = Self::default();
        if let Some((timer, at)) = timer
            && let Some(slot) = timers.deadlines.get_mut(timer as usize)
        {
            *slot = Some(at);
        }
        timers
    }

    /// The timers whose deadline is at or before `now`, stopped.
    pub(crate) fn expired(&mut self, now: Instant) -> impl Iterator<Item = Timer> + use<> {
        let mut fired = [None; COUNT];
        for (slot, timer) in fired.iter_mut().zip(ALL) {
            if self.get(timer).is_some_and(|at| at <= now) {
                self.stop(timer);
                *slot = Some(timer);
            }
        }
        fired.into_iter().flatten()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::disallowed_methods)] // a base instant; only differences matter
    fn earliest_deadline_and_expiry() {
        let t0 = Instant::now();
        let mut timers = Timers::default();
        assert_eq!(timers.next(), None);
        timers.set(Timer::Idle, t0, Duration::from_secs(90));
        timers.set(Timer::KeepAlive, t0, Duration::from_secs(60));
        timers.set(Timer::PingResp, t0, Duration::MAX);
        assert_eq!(
            timers.get(Timer::PingResp),
            None,
            "an unrepresentable deadline never fires"
        );
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(60)));
        assert_eq!(timers.expired(t0).count(), 0, "nothing fires early");
        let fired: Vec<_> = timers.expired(t0 + Duration::from_secs(60)).collect();
        assert_eq!(fired, vec![Timer::KeepAlive]);
        assert_eq!(timers.get(Timer::KeepAlive), None);
        assert_eq!(timers.next(), Some(t0 + Duration::from_secs(90)));
        let one = Some((Timer::Idle, t0 + Duration::from_secs(90)));
        assert_eq!(timers.single(), Ok(one));
        let rebuilt = Timers::with(one);
        assert_eq!(rebuilt.next(), timers.next());
        assert_eq!(rebuilt.single(), Ok(one));
        timers.set(Timer::KeepAlive, t0, Duration::from_secs(60));
        assert!(timers.single().is_err(), "two run");
        timers.stop_all();
        assert_eq!(timers.next(), None);
        assert_eq!(timers.single(), Ok(None));
        assert_eq!(Timers::with(None).next(), None);
    }
}
