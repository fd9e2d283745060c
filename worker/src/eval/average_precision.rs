//! Average precision as the VOC07 SVM protocol of the reference code computes it (PCL's
//! `get_precision_recall` + `calculate_ap`): rank by score, cumulative true and false positives,
//! recall padded with 0 and 1 and precision with 0 and 0, the precision made monotone from the
//! right, then the sum of Δrecall × precision over every point where recall changes (all points,
//! VOC2010+ style, not the 11-point VOC2007 metric).

/// AP in [0, 1] of ranking `(score, is_positive)` pairs by descending score, or `None` when there
/// is no positive (recall is 0/0 there; the reference code produces NaN).
///
/// Equal scores: the reference sorts with NumPy's default (unstable) `argsort` and reverses it,
/// so its order among ties is unspecified; here the later pair comes first, as a stable sort
/// reversed would give (and as NumPy gives for up to 16 pairs). Ties only matter when a tie mixes
/// positives and negatives.
pub fn average_precision(ranked: &[(f64, bool)]) -> Option<f64> {
    let positives = ranked.iter().filter(|(_, p)| *p).count();
    if positives == 0 {
        return None;
    }
    let mut order: Vec<usize> = (0..ranked.len()).collect();
    order.sort_by(|&a, &b| ranked[a].0.total_cmp(&ranked[b].0));
    order.reverse();

    // Padded recall and precision, in rank order.
    let mut recall = Vec::with_capacity(ranked.len() + 2);
    let mut precision = Vec::with_capacity(ranked.len() + 2);
    recall.push(0.0);
    precision.push(0.0);
    let (mut tp, mut fp) = (0.0f64, 0.0f64);
    for &i in &order {
        if ranked[i].1 {
            tp += 1.0;
        } else {
            fp += 1.0;
        }
        precision.push(tp / (tp + fp));
        recall.push(tp / positives as f64);
    }
    recall.push(1.0);
    precision.push(0.0);

    for i in (0..precision.len() - 1).rev() {
        if precision[i + 1] > precision[i] {
            precision[i] = precision[i + 1];
        }
    }
    let mut ap = 0.0;
    for i in 1..recall.len() {
        if recall[i] != recall[i - 1] {
            ap += (recall[i] - recall[i - 1]) * precision[i];
        }
    }
    Some(ap)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ap(pairs: &[(f64, bool)]) -> f64 {
        average_precision(pairs).expect("positives present")
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn a_perfect_ranking_scores_one_whatever_the_input_order() {
        assert_eq!(
            ap(&[(0.1, false), (0.9, true), (0.5, true), (-2.0, false)]),
            1.0
        );
        assert_eq!(ap(&[(3.0, true)]), 1.0);
        assert_eq!(ap(&[(3.0, true), (1.0, true)]), 1.0);
    }

    #[test]
    fn interleaved_ranking_by_hand() {
        // Ranked P N P N: precision 1, 1/2, 2/3, 1/2 at recall 1/2, 1/2, 1, 1.
        // Envelope: 1 up to recall 1/2, then 2/3 → AP = 1/2·1 + 1/2·2/3 = 5/6.
        let pairs = [(0.9, true), (0.8, false), (0.7, true), (0.6, false)];
        assert!(close(ap(&pairs), 5.0 / 6.0), "{}", ap(&pairs));
        // Ranked N P N P: precision 0, 1/2, 1/3, 1/2 at recall 0, 1/2, 1/2, 1.
        // Envelope at the recall steps: 1/2 (step to 1/2) and 1/2 (step to 1) → AP = 1/2.
        let pairs = [(0.9, false), (0.8, true), (0.7, false), (0.6, true)];
        assert!(close(ap(&pairs), 0.5), "{}", ap(&pairs));
    }

    #[test]
    fn a_lone_positive_ranked_last_scores_its_precision() {
        // N N N P: the only recall step (0 → 1) happens at precision 1/4.
        let pairs = [(0.4, false), (0.3, false), (0.2, false), (0.1, true)];
        assert!(close(ap(&pairs), 0.25));
    }

    #[test]
    fn the_envelope_lifts_earlier_precision() {
        // P N N P P: precision 1, 1/2, 1/3, 1/2, 3/5 at recall 1/3, 1/3, 1/3, 2/3, 1.
        // Envelope: 1 at the first step, 3/5 at the last two → AP = 1/3 + 1/3·3/5 + 1/3·3/5.
        let pairs = [
            (5.0, true),
            (4.0, false),
            (3.0, false),
            (2.0, true),
            (1.0, true),
        ];
        let expected = 1.0 / 3.0 + 2.0 / 3.0 * 3.0 / 5.0;
        assert!(close(ap(&pairs), expected), "{}", ap(&pairs));
    }

    #[test]
    fn ties_put_the_later_pair_first() {
        // A positive and a negative with the same score: the negative (later) ranks first, so
        // the recall step happens at precision 1/2. Swapping them in the input gives 1.
        assert!(close(ap(&[(0.5, true), (0.5, false)]), 0.5));
        assert!(close(ap(&[(0.5, false), (0.5, true)]), 1.0));
        // Ties within one kind change nothing.
        assert!(close(ap(&[(0.5, true), (0.5, true), (0.1, false)]), 1.0));
    }

    #[test]
    fn no_positive_has_no_average_precision() {
        // An all-negative class (VOC's "difficult" count as negatives): recall is undefined.
        assert_eq!(average_precision(&[(0.3, false), (0.1, false)]), None);
        assert_eq!(average_precision(&[]), None);
    }

    #[test]
    fn all_positive_scores_one() {
        assert_eq!(ap(&[(0.3, true), (-0.1, true), (0.0, true)]), 1.0);
    }
}
