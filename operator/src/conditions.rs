//! Setting `metav1.Condition`s: the transition time changes only when the status does.
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;

/// Sets condition `kind` in `conditions`.
pub fn set(
    conditions: &mut Vec<Condition>,
    kind: &str,
    status: bool,
    reason: &str,
    message: &str,
    generation: Option<i64>,
) {
    let status_str = if status { "True" } else { "False" };
    let now = Time(Timestamp::now());
    match conditions.iter_mut().find(|c| c.type_ == kind) {
        Some(c) => {
            if c.status != status_str {
                c.last_transition_time = now;
            }
            c.status = status_str.into();
            c.reason = reason.into();
            c.message = message.into();
            c.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: kind.into(),
            status: status_str.into(),
            reason: reason.into(),
            message: message.into(),
            last_transition_time: now,
            observed_generation: generation,
        }),
    }
}

/// Condition `kind`, if set.
pub fn get<'a>(conditions: &'a [Condition], kind: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transition_time_moves_only_when_the_status_flips() {
        let mut cs = Vec::new();
        set(&mut cs, "Ready", true, "A", "a", Some(1));
        let t0 = cs[0].last_transition_time.clone();
        std::thread::sleep(std::time::Duration::from_millis(5));
        set(&mut cs, "Ready", true, "B", "b", Some(2));
        assert_eq!(cs[0].last_transition_time, t0);
        assert_eq!(cs[0].reason, "B");
        set(&mut cs, "Ready", false, "C", "c", Some(2));
        assert_ne!(cs[0].last_transition_time, t0);
        assert_eq!(cs.len(), 1);
    }
}
