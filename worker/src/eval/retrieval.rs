//! Positive-pair retrieval: for each image's first view, is its own second view the most
//! similar among all images' second views? The quantity contrastive training optimises, measured
//! on held-out images; chance is 1/N.
use tch::{Kind, Tensor};

/// Fraction of rows `i` of `a` whose most cosine-similar row of `b` is row `i` (rows
/// L2-normalised and aligned).
pub fn positive_pair_top1(a: &Tensor, b: &Tensor) -> f64 {
    let n = a.size()[0];
    if n == 0 {
        return 0.0;
    }
    tch::no_grad(|| {
        let best = a.mm(&b.tr()).argmax(1, false);
        let own = Tensor::arange(n, (Kind::Int64, a.device()));
        best.eq_tensor(&own).sum(Kind::Int64).int64_value(&[]) as f64 / n as f64
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_views_are_always_found_and_a_shift_never_is() {
        let a = Tensor::eye(5, (Kind::Float, tch::Device::Cpu));
        assert_eq!(positive_pair_top1(&a, &a), 1.0);
        let shifted = a.roll([1i64].as_slice(), [0i64].as_slice());
        assert_eq!(positive_pair_top1(&a, &shifted), 0.0);
    }
}
