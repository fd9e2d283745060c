//! The training objective: InfoNCE plus the optional kNN loss of "Revisiting Contrastive
//! Methods", in one function.
use tch::{Kind, Tensor};

/// The kNN term's inputs.
pub struct KnnTerm<'a> {
    /// R×D L2-normalised backbone features of the query rows (only used to choose neighbours).
    pub query_features: &'a Tensor,
    /// D×K L2-normalised backbone features of the queued keys, index-aligned with the queue.
    pub queue_features: &'a Tensor,
    /// Neighbours per query row.
    pub top_k: i64,
    /// Weight of the term in the total.
    pub weight: f64,
}

/// The loss terms of one step (scalars).
pub struct Losses {
    /// Cross-entropy of the positive key against the queue.
    pub info_nce: Tensor,
    /// The kNN term, unweighted, when it is active.
    pub knn: Option<Tensor>,
    /// `info_nce + weight · knn`: what is back-propagated.
    pub total: Tensor,
}

/// InfoNCE over R query rows, each with its own positive key and the shared negatives:
/// `logits = [q·k₊, q·queue] / T`, cross-entropy with label 0, averaged over rows. With `knn`,
/// adds `weight · L_aux` where, for each row, the `top_k` queue entries nearest in backbone
/// space are treated as extra positives: `L_aux = −mean_rows (1/k) Σ_{j∈N} log softmax(q·queue/T)_j`
/// (over the queue columns only, row max subtracted first and detached, as in the reference).
///
/// `q`, `k`: R×dim L2-normalised; `queue`: dim×K L2-normalised columns.
///
/// Under autocast the similarities come out of the matrix product in the reduced dtype; both
/// softmax terms are computed from them in fp32 (on the CPU autocast would leave `log_softmax` in
/// bfloat16), so every loss is an fp32 scalar.
pub fn contrastive_loss(
    q: &Tensor,
    k: &Tensor,
    queue: &Tensor,
    temperature: f64,
    knn: Option<KnnTerm<'_>>,
) -> Losses {
    let l_pos = (q * k).sum_dim_intlist([1i64].as_slice(), true, None::<Kind>); // R×1
    let l_neg = q.mm(queue); // R×K
    let logits = at_least_f32(&(Tensor::cat(&[&l_pos, &l_neg], 1) / temperature)); // R×(1+K)
    let labels = Tensor::zeros([logits.size()[0]], (Kind::Int64, q.device()));
    let info_nce =
        logits.cross_entropy_loss::<Tensor>(&labels, None, tch::Reduction::Mean, -100, 0.0);

    let Some(knn) = knn else {
        return Losses {
            total: info_nce.shallow_clone(),
            info_nce,
            knn: None,
        };
    };
    let neighbours = tch::no_grad(|| {
        let similarity = knn.query_features.mm(knn.queue_features); // R×K
        similarity.topk(knn.top_k, 1, true, false).1 // R×k
    });
    let z = at_least_f32(&l_neg) / temperature;
    let z = &z - z.amax([1i64].as_slice(), true).detach();
    let log_p = z.log_softmax(1, None::<Kind>); // R×K
    let aux = -log_p
        .gather(1, &neighbours, false)
        .mean_dim([1i64].as_slice(), false, None::<Kind>)
        .mean(None::<Kind>);
    let total = &info_nce + &aux * knn.weight;
    Losses {
        info_nce,
        knn: Some(aux),
        total,
    }
}

/// `t` in fp32 when it is in a reduced precision (float16 or bfloat16, from autocast), otherwise
/// `t` itself: an fp32 run is untouched and an fp64 one stays fp64.
fn at_least_f32(t: &Tensor) -> Tensor {
    match t.kind() {
        Kind::Half | Kind::BFloat16 => t.to_kind(Kind::Float),
        _ => t.shallow_clone(),
    }
}
