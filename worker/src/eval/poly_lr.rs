//! The poly learning-rate schedule of the Cityscapes fine-tuning: `base·(1 − epoch/epochs)^0.9`,
//! set per epoch.

/// The exponent of the decay.
pub const POWER: f64 = 0.9;

/// The learning rate of epoch `epoch` (0-based) of `epochs`: `base` at the first epoch, falling
/// to `base·(1/epochs)^0.9` at the last (never 0: the last epoch still trains).
pub fn poly_lr(base: f64, epoch: u32, epochs: u32) -> f64 {
    let epochs = f64::from(epochs.max(1));
    let left = (1.0 - f64::from(epoch) / epochs).max(0.0);
    base * left.powf(POWER)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_decays_as_the_power_of_the_remaining_fraction() {
        assert_eq!(poly_lr(1e-4, 0, 150), 1e-4);
        // (1 − 75/150)^0.9 = 0.5^0.9 = 0.535886…
        assert!((poly_lr(1.0, 75, 150) - 0.535_886_731_268_146_6).abs() < 1e-12);
        // (1 − 149/150)^0.9 = (1/150)^0.9 = 0.010965…
        assert!((poly_lr(1.0, 149, 150) - (1.0f64 / 150.0).powf(0.9)).abs() < 1e-15);
        assert!((poly_lr(2.0, 1, 4) - 2.0 * 0.75f64.powf(0.9)).abs() < 1e-15);
        let lrs: Vec<f64> = (0..150).map(|e| poly_lr(1.0, e, 150)).collect();
        assert!(lrs.windows(2).all(|w| w[1] < w[0]) && lrs[149] > 0.0);
        assert_eq!(poly_lr(1.0, 0, 1), 1.0);
    }
}
