//! Gang semantics as a pure function: from what the pods of a run look like now, decide what the
//! controller does next. Any rank failing ends the whole attempt; the next attempt starts only
//! after every pod of the previous one is gone; a permanent exit code fails the run at once;
//! disruptions (eviction, preemption, deletion by someone else, node shutdown) restart the gang
//! without counting against `maxRestarts`.

/// Exit code the worker uses for errors that retrying cannot fix (bad config, missing dataset).
pub const PERMANENT_EXIT_CODE: i32 = 78;

/// What the controller sees of one worker pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    /// Pod name.
    pub name: String,
    /// Attempt it belongs to.
    pub attempt: u32,
    /// Node rank.
    pub rank: u32,
    /// `status.phase`.
    pub phase: String,
    /// Whether it carries a deletion timestamp.
    pub deleting: bool,
    /// Exit code of the first terminated container, if any.
    pub exit_code: Option<i32>,
    /// `status.reason` (e.g. `Evicted`, `Shutdown`, `Preempting`) or the container's reason.
    pub reason: Option<String>,
    /// Termination message (tail) or status message.
    pub message: Option<String>,
    /// When that container terminated, in seconds since the epoch (Kubernetes keeps seconds).
    pub finished_at: Option<i64>,
    /// When the pod's deletion was requested, in seconds since the epoch.
    pub deleted_at: Option<i64>,
}

/// Why an attempt ended badly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The pod that failed first (see [`decide`] for how ties are broken).
    pub pod: String,
    /// Its rank.
    pub rank: u32,
    /// Its exit code, if it exited.
    pub exit_code: Option<i32>,
    /// Machine-readable reason: `Error`, `Evicted`, `Deleted`, `Stalled`, …
    pub reason: String,
    /// Human-readable detail.
    pub message: String,
    /// Whether it counts against `maxRestarts` (disruptions do not).
    pub counted: bool,
}

/// Where the current attempt stands, as recorded in the run's status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GangState {
    /// Current attempt (1-based).
    pub attempt: u32,
    /// Pods per attempt.
    pub nodes: u32,
    /// Whether every pod of this attempt has been created before (so a missing one was deleted).
    pub created: bool,
}

/// What to do next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Pods of earlier attempts still exist: delete them and wait until they are gone.
    RemoveStale(Vec<String>),
    /// Create these ranks of the current attempt.
    Create(Vec<u32>),
    /// The gang runs; nothing to change.
    Running,
    /// The attempt failed: delete its pods and start the next one (or fail the run; the caller
    /// checks `maxRestarts` and the permanent exit code through [`Failure`]).
    AttemptFailed(Failure),
    /// Every rank finished successfully.
    Succeeded,
}

fn is_disruption(reason: &str) -> bool {
    matches!(
        reason,
        "Evicted"
            | "Preempting"
            | "Shutdown"
            | "Terminated"
            | "NodeLost"
            | "NodeRestarted"
            | "Deleted"
            | "UnexpectedAdmissionError"
    )
}

/// A pod being deleted counts as deleted unless its container failed before the deletion was
/// asked for: the SIGTERM of a deletion makes the container exit with an error too.
fn deleted(p: &PodView) -> bool {
    p.deleting
        && (p.phase != "Failed"
            || match (p.finished_at, p.deleted_at) {
                (Some(finished), Some(deleted)) => finished >= deleted,
                _ => true,
            })
}

/// When the pod failed or its deletion was asked for (seconds since the epoch).
fn failed_at(p: &PodView) -> Option<i64> {
    if deleted(p) {
        p.deleted_at
    } else {
        p.finished_at
    }
}

fn failure_of(p: &PodView) -> Option<Failure> {
    let failed_phase = p.phase == "Failed";
    if !failed_phase && !p.deleting {
        return None;
    }
    let reason = if deleted(p) {
        "Deleted".to_string()
    } else {
        p.reason.clone().unwrap_or_else(|| "Error".to_string())
    };
    let message = match (&p.message, p.exit_code) {
        (Some(m), _) if !m.trim().is_empty() => m.trim().to_string(),
        (_, Some(code)) => format!("exited with code {code}"),
        _ if reason == "Deleted" => "the pod was deleted while the gang was running".to_string(),
        _ => reason.clone(),
    };
    Some(Failure {
        pod: p.name.clone(),
        rank: p.rank,
        exit_code: p.exit_code,
        counted: !is_disruption(&reason),
        reason,
        message,
    })
}

/// Decides the next step for a gang in state `s` whose pods are `pods` (all attempts).
pub fn decide(s: GangState, pods: &[PodView]) -> Decision {
    let stale: Vec<String> = pods
        .iter()
        .filter(|p| p.attempt != s.attempt)
        .map(|p| p.name.clone())
        .collect();
    if !stale.is_empty() {
        return Decision::RemoveStale(stale);
    }
    // The first rank to fail (or to be deleted) is the likeliest cause: the others then fail
    // because a peer is gone. Times have a resolution of a second, so within one a deletion goes
    // first (its SIGTERM ends the others), then a rank killed by a signal (exit code above 128),
    // then the lowest rank. The operator's own deletions never reach this: it records the
    // attempt's failure before it deletes the attempt's pods.
    let first = pods
        .iter()
        .filter_map(|p| failure_of(p).map(|f| (p, f)))
        .min_by_key(|(p, f)| {
            (
                failed_at(p).unwrap_or(i64::MAX),
                f.reason != "Deleted",
                p.exit_code.is_none_or(|c| c <= 128),
                f.rank,
            )
        });
    if let Some((_, f)) = first {
        return Decision::AttemptFailed(f);
    }
    let missing: Vec<u32> = (0..s.nodes)
        .filter(|r| !pods.iter().any(|p| p.rank == *r))
        .collect();
    if !missing.is_empty() {
        if s.created {
            let rank = missing[0];
            return Decision::AttemptFailed(Failure {
                pod: format!("rank {rank}"),
                rank,
                exit_code: None,
                reason: "Deleted".into(),
                message: format!("the pod of rank {rank} disappeared while the gang was running"),
                counted: false,
            });
        }
        return Decision::Create(missing);
    }
    if pods.iter().all(|p| p.phase == "Succeeded") {
        return Decision::Succeeded;
    }
    Decision::Running
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(rank: u32, attempt: u32, phase: &str) -> PodView {
        PodView {
            name: format!("r-w-{attempt}-{rank}"),
            attempt,
            rank,
            phase: phase.into(),
            deleting: false,
            exit_code: None,
            reason: None,
            message: None,
            finished_at: None,
            deleted_at: None,
        }
    }

    fn state(attempt: u32, created: bool) -> GangState {
        GangState {
            attempt,
            nodes: 2,
            created,
        }
    }

    #[test]
    fn a_new_attempt_creates_every_rank() {
        assert_eq!(decide(state(1, false), &[]), Decision::Create(vec![0, 1]));
    }

    #[test]
    fn pods_of_an_earlier_attempt_are_removed_before_anything_else() {
        let d = decide(state(2, false), &[pod(0, 1, "Running")]);
        assert_eq!(d, Decision::RemoveStale(vec!["r-w-1-0".into()]));
    }

    #[test]
    fn the_rank_that_failed_first_is_the_cause_not_the_peers_that_lost_it() {
        // Rank 1 killed by SIGKILL (the launcher exits 137); rank 0 fails after it in its
        // collective, in the same second or a later one.
        let mut killed = pod(1, 1, "Failed");
        (killed.exit_code, killed.finished_at) = (Some(137), Some(100));
        for later in [100, 101] {
            let mut peer = pod(0, 1, "Failed");
            peer.exit_code = Some(1);
            peer.message = Some("all_gather failed: Connection reset by peer".into());
            peer.finished_at = Some(later);
            let Decision::AttemptFailed(f) = decide(state(1, true), &[peer, killed.clone()]) else {
                panic!()
            };
            assert_eq!((f.rank, f.exit_code), (1, Some(137)), "rank 0 at {later}");
        }
        // Without times or signals the lowest rank is reported.
        let mut a = pod(0, 1, "Failed");
        a.exit_code = Some(1);
        let mut b = pod(1, 1, "Failed");
        b.exit_code = Some(1);
        let Decision::AttemptFailed(f) = decide(state(1, true), &[b, a]) else {
            panic!()
        };
        assert_eq!(f.rank, 0);
    }

    #[test]
    fn one_failed_rank_fails_the_attempt_with_its_exit_code_and_message() {
        let mut bad = pod(1, 1, "Failed");
        bad.exit_code = Some(1);
        bad.message = Some("CUDA error\n".into());
        let Decision::AttemptFailed(f) = decide(state(1, true), &[pod(0, 1, "Running"), bad])
        else {
            panic!()
        };
        assert_eq!(
            (f.rank, f.exit_code, f.message.as_str(), f.counted),
            (1, Some(1), "CUDA error", true)
        );
    }

    #[test]
    fn evictions_and_deletions_are_disruptions_not_counted() {
        let mut evicted = pod(0, 1, "Failed");
        evicted.reason = Some("Evicted".into());
        let Decision::AttemptFailed(f) = decide(state(1, true), &[evicted, pod(1, 1, "Running")])
        else {
            panic!()
        };
        assert!(!f.counted);
        let mut deleting = pod(1, 1, "Running");
        deleting.deleting = true;
        let Decision::AttemptFailed(f) = decide(state(1, true), &[pod(0, 1, "Running"), deleting])
        else {
            panic!()
        };
        assert_eq!((f.reason.as_str(), f.counted), ("Deleted", false));
    }

    #[test]
    fn a_missing_pod_after_creation_is_a_disruption_and_before_creation_is_created() {
        assert!(
            matches!(decide(state(1, true), &[pod(0, 1, "Running")]), Decision::AttemptFailed(f) if f.rank == 1 && !f.counted)
        );
        assert_eq!(
            decide(state(1, false), &[pod(0, 1, "Pending")]),
            Decision::Create(vec![1])
        );
    }

    #[test]
    fn the_gang_succeeds_only_when_every_rank_succeeded() {
        assert_eq!(
            decide(
                state(1, true),
                &[pod(0, 1, "Succeeded"), pod(1, 1, "Running")]
            ),
            Decision::Running
        );
        assert_eq!(
            decide(
                state(1, true),
                &[pod(0, 1, "Succeeded"), pod(1, 1, "Succeeded")]
            ),
            Decision::Succeeded
        );
    }

    #[test]
    fn a_real_failure_is_reported_before_a_later_deletion() {
        let mut bad = pod(1, 1, "Failed");
        (bad.exit_code, bad.finished_at) = (Some(PERMANENT_EXIT_CODE), Some(100));
        let mut deleting = pod(0, 1, "Running");
        (deleting.deleting, deleting.deleted_at) = (true, Some(101));
        let Decision::AttemptFailed(f) = decide(state(1, true), &[deleting, bad]) else {
            panic!()
        };
        assert_eq!(f.exit_code, Some(PERMANENT_EXIT_CODE));
    }

    #[test]
    fn a_deletion_is_reported_before_the_peer_failures_it_caused() {
        // `kubectl delete pod` on rank 0: its SIGTERM ends it (exit 143, phase Failed on a real
        // kubelet) and rank 1's collective fails, in the same second or later.
        for (rank0_phase, peer_at) in [("Running", 100), ("Failed", 100), ("Failed", 102)] {
            let mut deleted = pod(0, 1, rank0_phase);
            (deleted.deleting, deleted.deleted_at) = (true, Some(100));
            if rank0_phase == "Failed" {
                (deleted.exit_code, deleted.finished_at) = (Some(143), Some(101));
            }
            let mut peer = pod(1, 1, "Failed");
            (peer.exit_code, peer.finished_at) = (Some(1), Some(peer_at));
            let Decision::AttemptFailed(f) = decide(state(1, true), &[peer, deleted]) else {
                panic!()
            };
            assert_eq!(
                (f.rank, f.reason.as_str(), f.counted),
                (0, "Deleted", false),
                "rank 0 {rank0_phase}, rank 1 failed at {peer_at}"
            );
        }
        // A pod that had failed on its own before someone deleted it keeps its own failure.
        let mut failed = pod(0, 1, "Failed");
        (failed.exit_code, failed.finished_at) = (Some(1), Some(100));
        (failed.deleting, failed.deleted_at) = (true, Some(105));
        let Decision::AttemptFailed(f) = decide(state(1, true), &[failed, pod(1, 1, "Running")])
        else {
            panic!()
        };
        assert_eq!((f.reason.as_str(), f.counted), ("Error", true));
    }
}
