//! A binary linear SVM trained as scikit-learn's `LinearSVC(penalty='l2', loss='squared_hinge',
//! dual=True, fit_intercept=True)` trains it: liblinear's dual coordinate descent for the
//! L2-regularised squared-hinge loss (solver 1, `L2R_L2LOSS_SVC_DUAL`; Hsieh et al., ICML 2008,
//! Algorithm 3, with shrinking), in scikit-learn's build of liblinear.
//!
//! Every step follows that code, so with the same seed the iterates are the same numbers: the
//! instances grouped negatives first (scikit-learn sorts the labels), per-class costs
//! `C·class_weight`, the bias as an extra feature of value `intercept_scaling`, zero features
//! skipped (or, in mostly nonzero features, added as exact zeros, which changes no sum), a
//! Fisher–Yates permutation of the active set every outer iteration drawn from scikit-learn's
//! Mersenne Twister and Lemire bounded integers, and liblinear's projected-gradient stopping
//! rule. Features are `f32` (exactly representable in the `f64` liblinear computes in);
//! all arithmetic is `f64`, accumulated in liblinear's order.

/// Settings of one binary SVM, named as scikit-learn's `LinearSVC` names them.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SvmParams {
    /// `C`.
    pub cost: f64,
    /// `class_weight[1]`: the cost of a positive is `C` times this.
    pub positive_weight: f64,
    /// `class_weight[-1]`.
    pub negative_weight: f64,
    /// `tol`: the stopping tolerance on the spread of the projected gradient.
    pub tol: f64,
    /// `max_iter`: outer iterations (passes over the active set).
    pub max_iter: usize,
    /// `intercept_scaling`: the value of the constant feature that carries the bias.
    pub intercept_scaling: f64,
    /// The seed liblinear's generator is set to (scikit-learn draws it from `random_state`).
    pub seed: u32,
}

/// Why an SVM could not be trained.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum SvmError {
    /// The feature matrix does not have one row of `dim` values per label.
    #[error("{values} feature values are not {rows} rows of {dim}")]
    Shape {
        /// Feature values given.
        values: usize,
        /// Labels given.
        rows: usize,
        /// Values per row.
        dim: usize,
    },
    /// Only one class is present (scikit-learn refuses this too).
    #[error("the training labels hold only {0} examples; an SVM needs positives and negatives")]
    OneClass(&'static str),
    /// A setting is out of range.
    #[error("invalid SVM setting: {0}")]
    Params(&'static str),
}

/// A trained SVM: `decision(x) = weights·x + intercept`.
#[derive(Debug, Clone, PartialEq)]
pub struct LinearSvm {
    /// One weight per feature.
    pub weights: Vec<f64>,
    /// `intercept_scaling` times the bias feature's weight.
    pub intercept: f64,
    /// Outer iterations run (scikit-learn's `n_iter_`).
    pub iterations: usize,
}

impl LinearSvm {
    /// Whether the stopping rule was met before `max_iter` (scikit-learn warns otherwise).
    pub fn converged(&self, params: &SvmParams) -> bool {
        self.iterations < params.max_iter
    }

    /// The decision value of one feature row.
    pub fn decision(&self, x: &[f32]) -> f64 {
        self.weights
            .iter()
            .zip(x)
            .fold(0.0, |s, (w, &v)| s + w * f64::from(v))
            + self.intercept
    }
}

/// Training features in liblinear's layout: the nonzero values of every row with their column
/// (zeros add exactly nothing to liblinear's sums, which skip them too). Built once, shared by
/// every class's SVM.
///
/// Mostly nonzero features (pooled ReLU features are) are kept dense instead, zeros included:
/// a product with an exact zero adds ±0, which leaves every sum the same number (a sum that
/// starts at +0 never becomes −0), so the iterates are unchanged, while the loops read no column
/// indices and the weight update vectorises.
#[derive(Debug, Clone)]
pub struct Features {
    dim: usize,
    /// Every row holds all `dim` values and `column` is empty.
    dense: bool,
    start: Vec<usize>,
    column: Vec<u32>,
    value: Vec<f32>,
}

impl Features {
    /// `dense` holds rows of `dim` values, row-major.
    pub fn new(dense: &[f32], dim: usize) -> Result<Self, SvmError> {
        if dim == 0 || !dense.len().is_multiple_of(dim) || u32::try_from(dim).is_err() {
            return Err(SvmError::Shape {
                values: dense.len(),
                rows: dense.len() / dim.max(1),
                dim,
            });
        }
        let rows = dense.len() / dim;
        // Dense storage takes less memory from half the values nonzero on.
        let nonzero = dense.iter().filter(|&&v| v != 0.0).count();
        if nonzero * 2 > dense.len() {
            return Ok(Self {
                dim,
                dense: true,
                start: (0..=rows).map(|i| i * dim).collect(),
                column: Vec::new(),
                value: dense.to_vec(),
            });
        }
        let mut start = Vec::with_capacity(rows + 1);
        let (mut column, mut value) = (Vec::new(), Vec::new());
        start.push(0);
        for row in dense.chunks_exact(dim) {
            for (j, &v) in row.iter().enumerate() {
                if v != 0.0 {
                    column.push(j as u32);
                    value.push(v);
                }
            }
            start.push(value.len());
        }
        Ok(Self {
            dim,
            dense: false,
            start,
            column,
            value,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.start.len() - 1
    }

    /// Values per row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Row `i`'s columns (none when dense) and values.
    fn row(&self, i: usize) -> (&[u32], &[f32]) {
        let range = self.start[i]..self.start[i + 1];
        if self.dense {
            return (&[], &self.value[range]);
        }
        (&self.column[range.clone()], &self.value[range])
    }
}

/// Trains on `features`; `positive[i]` says whether row `i` is a positive (everything else,
/// VOC's "difficult" included, is a negative).
pub fn train(
    features: &Features,
    positive: &[bool],
    params: &SvmParams,
) -> Result<LinearSvm, SvmError> {
    let rows = positive.len();
    let dim = features.dim;
    if features.rows() != rows {
        return Err(SvmError::Shape {
            values: features.rows() * dim,
            rows,
            dim,
        });
    }
    check(params)?;
    if !positive.contains(&true) {
        return Err(SvmError::OneClass("negative"));
    }
    if !positive.contains(&false) {
        return Err(SvmError::OneClass("positive"));
    }
    // scikit-learn's liblinear groups the instances by sorted label (-1 before 1), each group in
    // input order; the coordinate order is drawn over that grouping.
    let order: Vec<usize> = (0..rows)
        .filter(|&i| !positive[i])
        .chain((0..rows).filter(|&i| positive[i]))
        .collect();
    let y: Vec<f64> = order
        .iter()
        .map(|&i| if positive[i] { 1.0 } else { -1.0 })
        .collect();
    let bias = params.intercept_scaling;
    let (cp, cn) = (
        params.cost * params.positive_weight,
        params.cost * params.negative_weight,
    );
    // Squared hinge: no upper bound on α, and D_ii = 1/(2·C_i) on the diagonal.
    let diag: Vec<f64> = y
        .iter()
        .map(|&yi| 0.5 / if yi > 0.0 { cp } else { cn })
        .collect();
    let qd: Vec<f64> = (0..rows)
        .map(|k| {
            let (_, values) = features.row(order[k]);
            let squares = values
                .iter()
                .fold(diag[k], |s, &v| s + f64::from(v) * f64::from(v));
            squares + bias * bias
        })
        .collect();

    let mut w = vec![0.0f64; dim + 1];
    let mut alpha = vec![0.0f64; rows];
    let mut index: Vec<usize> = (0..rows).collect();
    let mut rng = Mt19937::new(params.seed);
    let mut active = rows;
    // liblinear's PGmin_old only shrinks α at its upper bound, which squared hinge does not have.
    let mut pg_max_old = f64::INFINITY;
    let mut iter = 0;
    while iter < params.max_iter {
        let (mut pg_max_new, mut pg_min_new) = (f64::NEG_INFINITY, f64::INFINITY);
        for i in 0..active {
            let j = i + rng.bounded((active - i) as u32) as usize;
            index.swap(i, j);
        }
        let mut s = 0;
        while s < active {
            let k = index[s];
            let (columns, values) = features.row(order[k]);
            let dot = if features.dense {
                values
                    .iter()
                    .zip(&w[..dim])
                    .fold(0.0, |g, (&v, &wj)| g + wj * f64::from(v))
            } else {
                columns
                    .iter()
                    .zip(values)
                    .fold(0.0, |g, (&j, &v)| g + w[j as usize] * f64::from(v))
            };
            let g = (dot + w[dim] * bias) * y[k] - 1.0 + alpha[k] * diag[k];
            let pg = if alpha[k] == 0.0 {
                if g > pg_max_old {
                    // Shrink: at its bound and likely to stay there.
                    active -= 1;
                    index.swap(s, active);
                    continue;
                }
                if g < 0.0 { g } else { 0.0 }
            } else {
                g
            };
            pg_max_new = max(pg_max_new, pg);
            pg_min_new = min(pg_min_new, pg);
            if pg.abs() > 1.0e-12 {
                let old = alpha[k];
                let step = alpha[k] - g / qd[k];
                alpha[k] = if step < 0.0 { 0.0 } else { step };
                let d = (alpha[k] - old) * y[k];
                if features.dense {
                    for (wj, &v) in w[..dim].iter_mut().zip(values) {
                        *wj += d * f64::from(v);
                    }
                } else {
                    for (&j, &v) in columns.iter().zip(values) {
                        w[j as usize] += d * f64::from(v);
                    }
                }
                w[dim] += d * bias;
            }
            s += 1;
        }
        iter += 1;
        if pg_max_new - pg_min_new <= params.tol {
            if active == rows {
                break;
            }
            // Converged on the active set: check every instance once more.
            active = rows;
            pg_max_old = f64::INFINITY;
            continue;
        }
        pg_max_old = if pg_max_new <= 0.0 {
            f64::INFINITY
        } else {
            pg_max_new
        };
    }
    let intercept = bias * w[dim];
    w.truncate(dim);
    Ok(LinearSvm {
        weights: w,
        intercept,
        iterations: iter,
    })
}

fn check(p: &SvmParams) -> Result<(), SvmError> {
    let positive = |v: f64| v.is_finite() && v > 0.0;
    if !positive(p.cost) {
        return Err(SvmError::Params("the cost C must be positive"));
    }
    if !positive(p.positive_weight) || !positive(p.negative_weight) {
        return Err(SvmError::Params("class weights must be positive"));
    }
    if !positive(p.tol) {
        return Err(SvmError::Params("the tolerance must be positive"));
    }
    if !positive(p.intercept_scaling) {
        return Err(SvmError::Params("intercept_scaling must be positive"));
    }
    if p.max_iter == 0 {
        return Err(SvmError::Params("max_iter must be at least 1"));
    }
    Ok(())
}

/// `std::max` (the first argument unless the second is larger), as liblinear compares.
fn max(a: f64, b: f64) -> f64 {
    if a < b { b } else { a }
}

/// `std::min`.
fn min(a: f64, b: f64) -> f64 {
    if b < a { b } else { a }
}

/// `std::mt19937`, the generator of scikit-learn's liblinear build (`newrand.h`).
struct Mt19937 {
    state: [u32; 624],
    next: usize,
}

impl Mt19937 {
    fn new(seed: u32) -> Self {
        let mut state = [0u32; 624];
        state[0] = seed;
        for i in 1..624 {
            let prev = state[i - 1];
            state[i] = 1_812_433_253u32
                .wrapping_mul(prev ^ (prev >> 30))
                .wrapping_add(i as u32);
        }
        Self { state, next: 624 }
    }

    fn next_u32(&mut self) -> u32 {
        if self.next >= 624 {
            for i in 0..624 {
                let y = (self.state[i] & 0x8000_0000) | (self.state[(i + 1) % 624] & 0x7fff_ffff);
                let mut v = self.state[(i + 397) % 624] ^ (y >> 1);
                if y & 1 != 0 {
                    v ^= 0x9908_b0df;
                }
                self.state[i] = v;
            }
            self.next = 0;
        }
        let mut y = self.state[self.next];
        self.next += 1;
        y ^= y >> 11;
        y ^= (y << 7) & 0x9d2c_5680;
        y ^= (y << 15) & 0xefc6_0000;
        y ^ (y >> 18)
    }

    /// An integer in `0..range` by scikit-learn's "tweaked Lemire" rejection (`bounded_rand_int`);
    /// one draw even when `range` is 1, as there.
    fn bounded(&mut self, range: u32) -> u32 {
        let mut m = u64::from(self.next_u32()) * u64::from(range);
        let mut low = m as u32;
        if low < range {
            let mut t = range.wrapping_neg();
            if t >= range {
                t -= range;
                if t >= range {
                    t %= range;
                }
            }
            while low < t {
                m = u64::from(self.next_u32()) * u64::from(range);
                low = m as u32;
            }
        }
        (m >> 32) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dense(values: &[f32], dim: usize) -> Features {
        Features::new(values, dim).expect("features")
    }

    fn params() -> SvmParams {
        SvmParams {
            cost: 0.5,
            positive_weight: 2.0,
            negative_weight: 1.0,
            tol: 1e-4,
            max_iter: 1000,
            intercept_scaling: 1.0,
            seed: 7,
        }
    }

    #[test]
    fn the_generator_is_the_standard_mt19937() {
        // The C++ standard fixes the 10000th output of a default-seeded std::mt19937.
        let mut rng = Mt19937::new(5489);
        let first = rng.next_u32();
        assert_eq!(first, 3_499_211_612);
        let last = (1..10_000).map(|_| rng.next_u32()).last();
        assert_eq!(last, Some(4_123_659_995));
    }

    #[test]
    fn bounded_integers_stay_in_range_and_cover_it() {
        let mut rng = Mt19937::new(1);
        let mut seen = [0usize; 7];
        for _ in 0..7000 {
            seen[rng.bounded(7) as usize] += 1;
        }
        assert!(seen.iter().all(|&c| c > 850 && c < 1150), "{seen:?}");
        assert_eq!(rng.bounded(1), 0);
    }

    #[test]
    fn separable_data_gets_the_margin_solution() {
        // Two points, x = ±1 with labels ±1, both costs C·weight: the squared-hinge optimum of
        // ½(w² + b²) + Σ C_i·max(0, 1 − y_i(w·x_i + b))² is symmetric in w and found exactly.
        let features = [1.0f32, -1.0];
        let params = SvmParams {
            positive_weight: 1.0,
            tol: 1e-10,
            ..params()
        };
        let svm = train(&dense(&features, 1), &[true, false], &params).expect("train");
        // Stationarity: w = 2C·2(1 − w) with b = 0 → w = 4C/(1 + 4C) = 2/3 for C = 0.5.
        assert!((svm.weights[0] - 2.0 / 3.0).abs() < 1e-8, "{svm:?}");
        assert!(svm.intercept.abs() < 1e-8, "{svm:?}");
        assert!(svm.decision(&[1.0]) > 0.0 && svm.decision(&[-1.0]) < 0.0);
        assert!(svm.converged(&params));
    }

    #[test]
    fn the_class_weight_moves_the_boundary_towards_the_negatives() {
        // Overlapping 1-d classes: weighting positives twice pushes the boundary left.
        let features = [-1.0f32, -0.2, 0.1, 0.3, 1.0, -0.4];
        let positive = [false, false, false, true, true, true];
        let even = SvmParams {
            positive_weight: 1.0,
            ..params()
        };
        let threshold = |svm: &LinearSvm| -svm.intercept / svm.weights[0];
        let x = dense(&features, 1);
        let a = train(&x, &positive, &even).expect("train");
        let b = train(&x, &positive, &params()).expect("train");
        assert!(threshold(&b) < threshold(&a), "{a:?} {b:?}");
    }

    #[test]
    fn the_solution_does_not_depend_on_the_seed_beyond_the_tolerance() {
        let features: Vec<f32> = (0..200)
            .flat_map(|i| {
                let t = i as f32 * 0.37;
                [t.sin(), (t * 1.7).cos(), (t * 0.3).sin() * 0.5]
            })
            .collect();
        let positive: Vec<bool> = (0..200)
            .map(|i| {
                let t = i as f32 * 0.37;
                t.sin() + 0.5 * (t * 1.7).cos() > 0.1
            })
            .collect();
        let tight = SvmParams {
            tol: 1e-9,
            ..params()
        };
        let x = dense(&features, 3);
        let a = train(&x, &positive, &tight).expect("train");
        let b = train(&x, &positive, &SvmParams { seed: 99, ..tight }).expect("train");
        for (x, y) in a.weights.iter().zip(&b.weights) {
            assert!((x - y).abs() < 1e-6, "{a:?} {b:?}");
        }
        assert!((a.intercept - b.intercept).abs() < 1e-6);
        let c = train(&x, &positive, &tight).expect("train");
        assert_eq!(a, c, "the same seed gives the same numbers");
    }

    #[test]
    fn bad_input_is_refused() {
        let p = params();
        assert_eq!(
            Features::new(&[1.0, 2.0, 3.0], 2).map(|_| ()),
            Err(SvmError::Shape {
                values: 3,
                rows: 1,
                dim: 2
            })
        );
        let x = dense(&[1.0, 2.0, 3.0, 4.0], 2);
        assert_eq!(
            train(&x, &[true, false, true], &p),
            Err(SvmError::Shape {
                values: 4,
                rows: 3,
                dim: 2
            })
        );
        let x = dense(&[1.0, 2.0], 1);
        assert_eq!(
            train(&x, &[false, false], &p),
            Err(SvmError::OneClass("negative"))
        );
        assert_eq!(
            train(&x, &[true, true], &p),
            Err(SvmError::OneClass("positive"))
        );
        let zero_cost = SvmParams { cost: 0.0, ..p };
        assert!(matches!(
            train(&x, &[true, false], &zero_cost),
            Err(SvmError::Params(_))
        ));
    }

    #[test]
    fn zero_features_are_stored_sparsely_and_change_nothing() {
        let x = dense(&[0.0, 1.5, 0.0, -2.0, 0.0, 0.0], 3);
        assert_eq!(x.rows(), 2);
        assert_eq!(x.row(0), (&[1u32][..], &[1.5f32][..]));
        assert_eq!(x.row(1), (&[0u32][..], &[-2.0f32][..]));
        // The same problem with the zero columns dropped has the same solution.
        let narrow = dense(&[1.5, 0.0, 0.0, -2.0], 2);
        let a = train(&x, &[true, false], &params()).expect("train");
        let b = train(&narrow, &[true, false], &params()).expect("train");
        assert_eq!(a.weights[1], b.weights[0]);
        assert_eq!(a.weights[0], b.weights[1]);
        assert_eq!((a.weights[2], a.intercept), (0.0, b.intercept));
    }

    #[test]
    fn dense_storage_takes_the_same_steps_as_sparse_storage() {
        // Mostly nonzero rows (every seventh value zero) are stored densely, zeros included;
        // five extra zero columns push the same problem under half nonzero, to the indexed
        // path. Both must give the same numbers to the last bit.
        let full: Vec<f32> = (0..240)
            .map(|i| {
                if i % 7 == 3 {
                    0.0
                } else {
                    (i as f32 * 0.61).sin() + 0.3
                }
            })
            .collect();
        let padded: Vec<f32> = full
            .chunks_exact(4)
            .flat_map(|r| [r[0], 0.0, r[1], r[2], 0.0, 0.0, r[3], 0.0, 0.0])
            .collect();
        let positive: Vec<bool> = (0..60)
            .map(|i| (i as f32 * 0.61 * 4.0).sin() > 0.2)
            .collect();
        let (x, y) = (dense(&full, 4), dense(&padded, 9));
        assert!(x.dense && !y.dense);
        let a = train(&x, &positive, &params()).expect("train");
        let b = train(&y, &positive, &params()).expect("train");
        let moved: Vec<f64> = [0, 2, 3, 6].iter().map(|&j| b.weights[j]).collect();
        assert_eq!(a.weights, moved);
        assert!([1, 4, 5, 7, 8].iter().all(|&j| b.weights[j] == 0.0));
        assert_eq!((a.intercept, a.iterations), (b.intercept, b.iterations));
    }

    #[test]
    fn the_iteration_cap_is_reported() {
        let features: Vec<f32> = (0..50).map(|i| (i as f32 * 0.7).sin()).collect();
        let positive: Vec<bool> = (0..50).map(|i| i % 3 == 0).collect();
        let capped = SvmParams {
            max_iter: 1,
            tol: 1e-12,
            ..params()
        };
        let svm = train(&dense(&features, 1), &positive, &capped).expect("train");
        assert_eq!(svm.iterations, 1);
        assert!(!svm.converged(&capped));
    }
}
