//! Names of owned objects. Run names are limited (see [`MAX_RUN_NAME`]) so that every derived
//! name stays a valid DNS label.

/// Longest run name: `<run>-workers` must be a DNS label (63) and leaves room for pod suffixes.
pub const MAX_RUN_NAME: usize = 48;

/// The run-config ConfigMap.
pub fn config_map(run: &str) -> String {
    format!("{run}-config")
}

/// The headless Service whose name is every worker pod's subdomain.
pub fn service(run: &str) -> String {
    format!("{run}-workers")
}

/// Worker pod of `rank` in `attempt`.
pub fn pod(run: &str, attempt: u32, rank: u32) -> String {
    format!("{run}-w-{attempt}-{rank}")
}

/// The host name of a rank (stable across attempts; unique with the run's subdomain).
pub fn hostname(rank: u32) -> String {
    format!("rank-{rank}")
}

/// The DNS name of `rank`'s pod through the headless Service.
pub fn rank_address(run: &str, namespace: &str, rank: u32) -> String {
    format!(
        "{}.{}.{namespace}.svc.cluster.local",
        hostname(rank),
        service(run)
    )
}

/// The Job of evaluation `evaluation`. Job names end up in label values (63 characters at most),
/// so long names are cut and made unique again with a hash of the full name.
pub fn eval_job(run: &str, evaluation: &str) -> String {
    let full = format!("{run}-eval-{evaluation}");
    if full.len() <= 63 {
        return full;
    }
    // FNV-1a: stable across releases, unlike std's hasher.
    let hash = full.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    format!(
        "{}-{:010x}",
        full[..52].trim_end_matches('-'),
        hash & 0xff_ffff_ffff
    )
}

/// The run's checkpoint directory inside the checkpoint mount.
pub fn checkpoint_dir(mount: &str, run: &str) -> String {
    format!("{}/{run}", mount.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn derived_names_of_the_longest_run_name_are_dns_labels() {
        let run = "r".repeat(MAX_RUN_NAME);
        assert!(service(&run).len() <= 63);
        assert!(pod(&run, 999, 1023).len() <= 63);
    }

    #[test]
    fn long_evaluation_job_names_are_cut_to_a_unique_label() {
        let a = eval_job(&"r".repeat(48), &"e".repeat(63));
        let b = eval_job(&"r".repeat(48), &format!("{}f", "e".repeat(62)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert_eq!(eval_job("r", "knn"), "r-eval-knn");
    }

    #[test]
    fn rank_zero_is_addressed_through_the_headless_service() {
        assert_eq!(
            rank_address("coco", "ml", 0),
            "rank-0.coco-workers.ml.svc.cluster.local"
        );
    }
}
