//! The stall clock: how long this operator has watched a running gang without its step changing.
//!
//! The clock is the operator's own and monotonic, not `status.progress.updatedAt`: a gang may only
//! be declared stalled for time the operator actually spent watching it. Whenever it was blind —
//! a new leader, a control-plane outage, a gap between polls — the clock starts again, because
//! what happened meanwhile (steps made, ranks that finished) cannot be known from its memory.
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Polls further apart than this mean the operator was not watching in between.
pub const BLIND_GAP: Duration = Duration::from_secs(15);

/// Clocks not read for this long belong to runs that were deleted while training.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// What one poll of a gang saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Observation {
    /// The attempt polled.
    pub attempt: u32,
    /// Rank 0's step, `None` when it did not answer.
    pub step: Option<u64>,
    /// Whether every worker container of the attempt has started; the clock does not run
    /// while a pod is still being scheduled or pulled.
    pub all_started: bool,
}

#[derive(Debug, Clone, Copy)]
struct Clock {
    attempt: u32,
    step: Option<u64>,
    since: Instant,
    last_seen: Instant,
}

/// One stall clock per run (keyed by the run's uid).
#[derive(Debug, Default)]
pub struct Clocks {
    clocks: Mutex<HashMap<String, Clock>>,
}

impl Clocks {
    /// Records a poll at `now` and returns how long the step has been still while watched.
    pub fn observe(&self, run: &str, seen: Observation, now: Instant) -> Duration {
        let mut clocks = self.clocks.lock().unwrap_or_else(|e| e.into_inner());
        clocks.retain(|_, c| now.saturating_duration_since(c.last_seen) < FORGET_AFTER);
        let restart = match clocks.get(run) {
            None => true,
            Some(c) => {
                c.attempt != seen.attempt
                    || !seen.all_started
                    || now.saturating_duration_since(c.last_seen) > BLIND_GAP
                    || seen.step.is_some_and(|s| c.step != Some(s))
            }
        };
        let clock = clocks.entry(run.to_owned()).or_insert(Clock {
            attempt: seen.attempt,
            step: seen.step,
            since: now,
            last_seen: now,
        });
        if restart {
            clock.since = now;
        }
        clock.attempt = seen.attempt;
        // A rank 0 that does not answer leaves the last step it reported.
        clock.step = seen.step.or(clock.step);
        clock.last_seen = now;
        now.saturating_duration_since(clock.since)
    }

    /// Forgets a run (it finished, failed or was deleted).
    pub fn forget(&self, run: &str) {
        self.clocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(run);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn seen(attempt: u32, step: Option<u64>) -> Observation {
        Observation {
            attempt,
            step,
            all_started: true,
        }
    }

    #[test]
    fn a_still_step_watched_without_gaps_accumulates() {
        let c = Clocks::default();
        let t0 = Instant::now();
        assert_eq!(c.observe("r", seen(1, Some(5)), t0), Duration::ZERO);
        for i in 1..=8 {
            let step = if i % 2 == 0 { Some(5) } else { None };
            assert_eq!(c.observe("r", seen(1, step), t0 + 3 * S * i), 3 * S * i);
        }
    }

    #[test]
    fn a_new_step_restarts_the_clock_and_silence_does_not() {
        let c = Clocks::default();
        let t0 = Instant::now();
        c.observe("r", seen(1, Some(5)), t0);
        assert_eq!(c.observe("r", seen(1, None), t0 + 3 * S), 3 * S);
        assert_eq!(c.observe("r", seen(1, Some(5)), t0 + 6 * S), 6 * S);
        assert_eq!(c.observe("r", seen(1, Some(6)), t0 + 9 * S), Duration::ZERO);
        assert_eq!(c.observe("r", seen(1, None), t0 + 12 * S), 3 * S);
    }

    #[test]
    fn time_the_operator_was_blind_does_not_count() {
        let c = Clocks::default();
        let t0 = Instant::now();
        c.observe("r", seen(1, Some(5)), t0);
        c.observe("r", seen(1, None), t0 + 3 * S);
        // No poll for 30 s (an apiserver outage, a leader change): the clock starts again.
        let back = t0 + 33 * S;
        assert_eq!(c.observe("r", seen(1, None), back), Duration::ZERO);
        assert_eq!(c.observe("r", seen(1, None), back + 3 * S), 3 * S);
    }

    #[test]
    fn a_new_attempt_or_an_unstarted_pod_restarts_the_clock() {
        let c = Clocks::default();
        let t0 = Instant::now();
        c.observe("r", seen(1, Some(5)), t0);
        c.observe("r", seen(1, Some(5)), t0 + 9 * S);
        assert_eq!(
            c.observe("r", seen(2, Some(5)), t0 + 12 * S),
            Duration::ZERO
        );
        let pending = Observation {
            all_started: false,
            ..seen(2, None)
        };
        assert_eq!(c.observe("r", pending, t0 + 15 * S), Duration::ZERO);
        assert_eq!(c.observe("r", seen(2, None), t0 + 18 * S), 3 * S);
    }

    #[test]
    fn clocks_of_runs_no_longer_polled_are_dropped() {
        let c = Clocks::default();
        let t0 = Instant::now();
        c.observe("gone", seen(1, Some(1)), t0);
        c.observe("kept", seen(1, Some(1)), t0 + FORGET_AFTER);
        let held = c.clocks.lock().map(|m| m.len()).unwrap_or(0);
        assert_eq!(held, 1);
    }

    #[test]
    fn runs_have_their_own_clocks_and_a_forgotten_run_starts_afresh() {
        let c = Clocks::default();
        let t0 = Instant::now();
        c.observe("a", seen(1, Some(1)), t0);
        c.observe("b", seen(1, Some(1)), t0 + 6 * S);
        assert_eq!(c.observe("a", seen(1, Some(1)), t0 + 9 * S), 9 * S);
        c.forget("a");
        assert_eq!(
            c.observe("a", seen(1, Some(1)), t0 + 12 * S),
            Duration::ZERO
        );
        assert_eq!(c.observe("b", seen(1, Some(1)), t0 + 12 * S), 6 * S);
    }
}
