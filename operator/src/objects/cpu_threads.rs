//! How many compute threads a worker process may use: libtorch sizes its intra-op pool from the
//! machine's cores, not from the container's CPU share, so without a hint every rank of a pod
//! limited to a few cores spins as many threads as the node has, and they thrash.
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use kontrast_api::v1alpha1::Resources;

/// `OMP_NUM_THREADS` for each of `procs_per_node` ranks: the CPU limit (else the request) split
/// evenly, rounded up, at least 1. `None` when the spec names no CPU amount, so libtorch's
/// default applies.
pub fn threads_per_rank(resources: Option<&Resources>, procs_per_node: u32) -> Option<u32> {
    let r = resources?;
    let cpu = r.limits.get("cpu").or_else(|| r.requests.get("cpu"))?;
    let cores = cores(cpu)?;
    let per_rank = (cores / f64::from(procs_per_node.max(1))).ceil();
    Some((per_rank as u32).max(1))
}

/// Cores in a CPU quantity (`2`, `1.5`, `500m`); `None` for forms a CPU amount never takes.
fn cores(q: &Quantity) -> Option<f64> {
    let s = q.0.trim();
    let (number, scale) = match s.strip_suffix('m') {
        Some(milli) => (milli, 1e-3),
        None => (s, 1.0),
    };
    let value: f64 = number.parse().ok()?;
    (value.is_finite() && value > 0.0).then_some(value * scale)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    fn res(requests: &[(&str, &str)], limits: &[(&str, &str)]) -> Resources {
        let map = |kv: &[(&str, &str)]| -> BTreeMap<String, Quantity> {
            kv.iter()
                .map(|(k, v)| (k.to_string(), Quantity(v.to_string())))
                .collect()
        };
        Resources {
            requests: map(requests),
            limits: map(limits),
        }
    }

    #[test]
    fn the_limit_wins_over_the_request_and_is_split_over_the_ranks() {
        let r = res(&[("cpu", "2")], &[("cpu", "16")]);
        assert_eq!(threads_per_rank(Some(&r), 1), Some(16));
        assert_eq!(threads_per_rank(Some(&r), 8), Some(2));
        assert_eq!(threads_per_rank(Some(&r), 3), Some(6));
    }

    #[test]
    fn fractions_and_millicores_round_up_to_at_least_one_thread() {
        assert_eq!(
            threads_per_rank(Some(&res(&[("cpu", "500m")], &[])), 1),
            Some(1)
        );
        assert_eq!(
            threads_per_rank(Some(&res(&[("cpu", "1.5")], &[])), 1),
            Some(2)
        );
        assert_eq!(
            threads_per_rank(Some(&res(&[("cpu", "1")], &[])), 4),
            Some(1)
        );
    }

    #[test]
    fn without_a_cpu_amount_libtorch_keeps_its_default() {
        assert_eq!(threads_per_rank(None, 1), None);
        assert_eq!(
            threads_per_rank(Some(&res(&[("memory", "2Gi")], &[])), 1),
            None
        );
        assert_eq!(threads_per_rank(Some(&res(&[("cpu", "2k")], &[])), 1), None);
    }
}
