//! Learning-rate schedules: pure functions of the epoch, as in the reference (updated per epoch,
//! no warm-up).
use kontrast_api::config::LrSchedule;

/// The learning rate of `epoch` (0-based) out of `epochs`.
pub fn learning_rate(schedule: LrSchedule, base: f64, epoch: u32, epochs: u32) -> f64 {
    match schedule {
        LrSchedule::Constant => base,
        LrSchedule::Cosine => {
            let progress = f64::from(epoch) / f64::from(epochs.max(1));
            base * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_starts_at_the_base_rate_and_halves_at_mid_training() {
        assert_eq!(learning_rate(LrSchedule::Cosine, 0.3, 0, 200), 0.3);
        assert!((learning_rate(LrSchedule::Cosine, 0.3, 100, 200) - 0.15).abs() < 1e-12);
        assert!(learning_rate(LrSchedule::Cosine, 0.3, 199, 200) < 0.001);
    }

    #[test]
    fn constant_ignores_the_epoch() {
        assert_eq!(learning_rate(LrSchedule::Constant, 0.1, 7, 10), 0.1);
    }
}
