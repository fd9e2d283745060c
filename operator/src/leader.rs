//! Leader election on a `coordination.k8s.io/v1` Lease, so that several operator replicas can run
//! and exactly one reconciles. A replica acquires the Lease when it is free or expired, renews it
//! every `renew`, and reports the loss when a renewal has not succeeded within the lease
//! duration; the binary then exits so that nothing reconciles without the Lease.
use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Api;
use kube::api::{PostParams, Resource};
use tokio::sync::watch;

/// Election settings.
#[derive(Debug, Clone)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Lease name.
    pub name: String,
    /// This replica's identity (pod name).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub duration: Duration,
    /// How often the holder renews, and how often others retry.
    pub renew: Duration,
}

/// Whether `lease` is held by someone other than `me` and not yet expired at `now`.
pub fn held_by_other(lease: &Lease, me: &str, now: Timestamp) -> bool {
    let Some(spec) = &lease.spec else {
        return false;
    };
    let holder = spec.holder_identity.as_deref().unwrap_or("");
    if holder.is_empty() || holder == me {
        return false;
    }
    let duration = spec.lease_duration_seconds.unwrap_or(15).max(1) as i64;
    match &spec.renew_time {
        Some(MicroTime(t)) => t.as_second() + duration > now.as_second(),
        None => false,
    }
}

fn claimed(mut lease: Lease, cfg: &LeaseConfig, now: Timestamp) -> Lease {
    let spec = lease.spec.get_or_insert_with(Default::default);
    let changing_hands = spec.holder_identity.as_deref() != Some(cfg.identity.as_str());
    if changing_hands {
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions =
            Some(spec.lease_transitions.unwrap_or(0) + i32::from(spec.holder_identity.is_some()));
    }
    spec.holder_identity = Some(cfg.identity.clone());
    spec.lease_duration_seconds = Some(cfg.duration.as_secs().max(1) as i32);
    spec.renew_time = Some(MicroTime(now));
    lease
}

/// Tries once to take or renew the Lease. `Ok(true)` when this replica holds it afterwards.
pub async fn try_acquire(api: &Api<Lease>, cfg: &LeaseConfig) -> kube::Result<bool> {
    let now = Timestamp::now();
    match api.get_opt(&cfg.name).await? {
        None => {
            let mut lease = Lease::default();
            lease.meta_mut().name = Some(cfg.name.clone());
            let lease = claimed(lease, cfg, now);
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
        Some(lease) if held_by_other(&lease, &cfg.identity, now) => Ok(false),
        Some(lease) => {
            // The resourceVersion in the object makes this a compare-and-swap: a concurrent
            // claimer gets 409 and loses.
            match api
                .replace(&cfg.name, &PostParams::default(), &claimed(lease, cfg, now))
                .await
            {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                Err(e) => Err(e),
            }
        }
    }
}

/// Gives the Lease up (on shutdown), so another replica takes over without waiting for expiry.
pub async fn release(api: &Api<Lease>, cfg: &LeaseConfig) {
    if let Ok(Some(mut lease)) = api.get_opt(&cfg.name).await
        && let Some(spec) = lease.spec.as_mut()
        && spec.holder_identity.as_deref() == Some(cfg.identity.as_str())
    {
        spec.holder_identity = None;
        spec.renew_time = None;
        let _ = api.replace(&cfg.name, &PostParams::default(), &lease).await;
    }
}

/// Blocks until this replica holds the Lease, then renews it in the background. The returned
/// receiver turns `false` when leadership is lost.
pub async fn acquire(api: Api<Lease>, cfg: LeaseConfig) -> watch::Receiver<bool> {
    loop {
        match try_acquire(&api, &cfg).await {
            Ok(true) => break,
            Ok(false) => {
                tracing::debug!(lease = %cfg.name, "lease held by another replica; waiting")
            }
            Err(e) => {
                tracing::warn!(lease = %cfg.name, error = %e, "lease acquisition failed; retrying")
            }
        }
        tokio::time::sleep(cfg.renew).await;
    }
    tracing::info!(lease = %cfg.name, identity = %cfg.identity, "became leader");
    let (tx, rx) = watch::channel(true);
    tokio::spawn(async move {
        let mut last_renewal = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(cfg.renew).await;
            if tx.is_closed() {
                // Nobody watches leadership any more: the holder stopped; let the lease expire.
                return;
            }
            match try_acquire(&api, &cfg).await {
                Ok(true) => last_renewal = tokio::time::Instant::now(),
                Ok(false) => {
                    tracing::error!(lease = %cfg.name, "lease taken by another replica");
                    let _ = tx.send(false);
                    return;
                }
                Err(e) => tracing::warn!(lease = %cfg.name, error = %e, "lease renewal failed"),
            }
            if last_renewal.elapsed() > cfg.duration {
                tracing::error!(lease = %cfg.name, "lease not renewed within its duration");
                let _ = tx.send(false);
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(holder: Option<&str>, renewed_secs_ago: i64, duration: i32) -> Lease {
        let mut l = Lease::default();
        let spec = l.spec.get_or_insert_with(Default::default);
        spec.holder_identity = holder.map(Into::into);
        spec.lease_duration_seconds = Some(duration);
        spec.renew_time = Some(MicroTime(
            Timestamp::from_second(1_000_000 - renewed_secs_ago).unwrap(),
        ));
        l
    }

    fn now() -> Timestamp {
        Timestamp::from_second(1_000_000).unwrap()
    }

    #[test]
    fn a_fresh_lease_of_another_replica_is_respected() {
        assert!(held_by_other(&lease(Some("b"), 5, 15), "a", now()));
    }

    #[test]
    fn an_expired_or_empty_or_own_lease_can_be_taken() {
        assert!(!held_by_other(&lease(Some("b"), 16, 15), "a", now()));
        assert!(!held_by_other(&lease(None, 1, 15), "a", now()));
        assert!(!held_by_other(&lease(Some("a"), 1, 15), "a", now()));
    }

    #[test]
    fn taking_over_counts_a_transition_and_renewing_does_not() {
        let cfg = LeaseConfig {
            namespace: "n".into(),
            name: "l".into(),
            identity: "a".into(),
            duration: Duration::from_secs(15),
            renew: Duration::from_secs(5),
        };
        let taken = claimed(lease(Some("b"), 30, 15), &cfg, now());
        assert_eq!(taken.spec.as_ref().unwrap().lease_transitions, Some(1));
        let renewed = claimed(taken, &cfg, now());
        assert_eq!(renewed.spec.as_ref().unwrap().lease_transitions, Some(1));
        assert_eq!(renewed.spec.unwrap().holder_identity.as_deref(), Some("a"));
    }
}
