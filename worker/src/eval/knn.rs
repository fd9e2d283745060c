//! Weighted k-nearest-neighbour classification on frozen features (the kNN monitor of
//! instance-discrimination papers): each test image takes the k most cosine-similar training
//! images, each voting for its class with weight exp(similarity / T).
use tch::{Kind, Tensor};

/// Test rows compared with the training set at a time (bounds memory: rows × N similarities).
const CHUNK: i64 = 512;

/// Calls `each` with the votes of consecutive chunks of test rows, in order.
fn each_vote_chunk(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    k: i64,
    temperature: f64,
    classes: i64,
    mut each: impl FnMut(Tensor),
) {
    let n_test = test.size()[0];
    let k = k.min(train.size()[0]).max(1);
    let train_t = train.tr();
    tch::no_grad(|| {
        let mut start = 0;
        while start < n_test {
            let rows = CHUNK.min(n_test - start);
            let similarity = test.narrow(0, start, rows).mm(&train_t); // rows×N
            let (values, index) = similarity.topk(k, 1, true, true); // rows×k
            let neighbour_labels = train_labels
                .index_select(0, &index.view([-1]))
                .view([rows, k]);
            let weights = (values / temperature).exp().to_kind(Kind::Float);
            let votes = Tensor::zeros([rows, classes], (Kind::Float, test.device())).scatter_add(
                1,
                &neighbour_labels,
                &weights,
            ); // rows×C
            each(votes);
            start += rows;
        }
    });
}

/// The predicted class of every test row. Features are L2-normalised rows; labels int64 in
/// `0..classes`. Ties in the vote go to the lowest class index.
pub fn weighted_knn_predict(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    k: i64,
    temperature: f64,
    classes: i64,
) -> Tensor {
    let mut predictions = Vec::new();
    each_vote_chunk(
        train,
        train_labels,
        test,
        k,
        temperature,
        classes,
        |votes| predictions.push(votes.argmax(1, false)),
    );
    if predictions.is_empty() {
        return Tensor::zeros([0], (Kind::Int64, test.device()));
    }
    Tensor::cat(&predictions, 0)
}

/// Top-1 accuracy in [0, 1] of [`weighted_knn_predict`].
pub fn weighted_knn_top1(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    k: i64,
    temperature: f64,
    classes: i64,
) -> f64 {
    weighted_knn_accuracy(
        train,
        train_labels,
        test,
        test_labels,
        k,
        temperature,
        classes,
    )
    .top1
}

/// Top-1 and top-5 accuracy, in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KnnAccuracy {
    /// The predicted class (the vote's winner, as [`weighted_knn_predict`]) is right.
    pub top1: f64,
    /// The right class is among the five with the most votes (all of them when fewer).
    pub top5: f64,
}

/// Top-1 and top-5 accuracy of the weighted kNN vote; 0 for an empty test set.
pub fn weighted_knn_accuracy(
    train: &Tensor,
    train_labels: &Tensor,
    test: &Tensor,
    test_labels: &Tensor,
    k: i64,
    temperature: f64,
    classes: i64,
) -> KnnAccuracy {
    let n_test = test.size()[0];
    if n_test == 0 {
        return KnnAccuracy {
            top1: 0.0,
            top5: 0.0,
        };
    }
    let (mut top1, mut top5, mut start) = (0i64, 0i64, 0i64);
    let ranks = classes.clamp(1, 5);
    each_vote_chunk(
        train,
        train_labels,
        test,
        k,
        temperature,
        classes,
        |votes| {
            let rows = votes.size()[0];
            let labels = test_labels.narrow(0, start, rows);
            top1 += votes
                .argmax(1, false)
                .eq_tensor(&labels)
                .sum(Kind::Int64)
                .int64_value(&[]);
            let (_, best) = votes.topk(ranks, 1, true, true); // rows×5
            top5 += best
                .eq_tensor(&labels.unsqueeze(1))
                .any_dim(1, false)
                .sum(Kind::Int64)
                .int64_value(&[]);
            start += rows;
        },
    );
    KnnAccuracy {
        top1: top1 as f64 / n_test as f64,
        top5: top5 as f64 / n_test as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_test_point_takes_the_class_of_its_weighted_neighbours() {
        // Two clusters on the unit circle; class 1 has the closer neighbours of the test point.
        let train =
            Tensor::from_slice(&[1.0f32, 0.0, 0.96, 0.28, 0.0, 1.0, 0.28, 0.96]).view([4, 2]);
        let train_labels = Tensor::from_slice(&[0i64, 0, 1, 1]);
        let test = Tensor::from_slice(&[0.6f32, 0.8, 0.8, 0.6]).view([2, 2]);
        let test_labels = Tensor::from_slice(&[1i64, 0]);
        let top1 = weighted_knn_top1(&train, &train_labels, &test, &test_labels, 4, 0.07, 2);
        assert_eq!(top1, 1.0);
        let wrong = Tensor::from_slice(&[0i64, 1]);
        assert_eq!(
            weighted_knn_top1(&train, &train_labels, &test, &wrong, 4, 0.07, 2),
            0.0
        );
    }

    #[test]
    fn top5_counts_the_right_class_among_the_five_best_voted() {
        // Seven classes on a circle; the test point sits nearest class 0, then 1, 2, ... so class
        // c gets the c-th largest vote.
        let angles: Vec<f32> = (0..7).map(|c| c as f32 * 0.3).collect();
        let train: Vec<f32> = angles.iter().flat_map(|a| [a.cos(), a.sin()]).collect();
        let train = Tensor::from_slice(&train).view([7, 2]);
        let train_labels = Tensor::arange(7, (Kind::Int64, tch::Device::Cpu));
        let test = Tensor::from_slice(&[1.0f32, 0.0, 1.0, 0.0, 1.0, 0.0]).view([3, 2]);
        // Right at rank 1, at rank 5, and at rank 6.
        let labels = Tensor::from_slice(&[0i64, 4, 5]);
        let a = weighted_knn_accuracy(&train, &train_labels, &test, &labels, 7, 0.07, 7);
        assert_eq!(a.top1, 1.0 / 3.0);
        assert_eq!(a.top5, 2.0 / 3.0);
        let top1 = weighted_knn_top1(&train, &train_labels, &test, &labels, 7, 0.07, 7);
        assert_eq!(top1, a.top1);
    }
}
