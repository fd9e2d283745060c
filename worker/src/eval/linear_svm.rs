//! The VOC07 linear-SVM protocol of the reference code (`evaluation/voc_svm`, from PCL): frozen
//! backbone features of resize + centre-crop images, each divided by its norm + 1e-5; one
//! `LinearSVC(C=cost, class_weight={1: 2, -1: 1})` per class, trained on `trainval` with the
//! difficult (0) labels as negatives; average precision of its decision values on `test`, again
//! with difficult as negative; mAP × 100 over the classes. Single-label data sets (imagefolder,
//! Fashion-MNIST) run the same protocol one-vs-rest over their classes.
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use kontrast_data::{Dataset, EvalTransform, Loader, LoaderConfig, VOC_CLASSES, VocSplit};
use tch::{Device, Kind};
use tracing::{info, warn};

use crate::input::Normalizer;
use crate::model::resnet::ResNet;

use super::EvalError;
use super::average_precision::average_precision;
use super::svm::{self, SvmParams};

/// The seed `LinearSVC(random_state=0)` hands liblinear
/// (`np.random.RandomState(0).randint(np.iinfo('i').max)`). The reference code leaves
/// `random_state=None`, i.e. a seed from NumPy's global generator; a fixed one makes the result
/// reproducible and equal to scikit-learn's with `random_state=0`.
pub const LIBLINEAR_SEED: u32 = 209_652_396;

/// The reference code's SVM settings at cost `cost`.
pub fn protocol_params(cost: f64) -> SvmParams {
    SvmParams {
        cost,
        positive_weight: 2.0,
        negative_weight: 1.0,
        tol: 1e-4,
        // The reference passes 2000 (scikit-learn's default is 1000).
        max_iter: 2000,
        intercept_scaling: 1.0,
        seed: LIBLINEAR_SEED,
    }
}

/// The two splits of an evaluation data set.
pub enum SvmData {
    /// PASCAL VOC: `trainval` to train, `test` to score, the 20 classes' labels.
    Voc {
        /// The training split.
        trainval: VocSplit,
        /// The scored split.
        test: VocSplit,
    },
    /// A single-label data set, one-vs-rest over its classes.
    Classes {
        /// The training split.
        train: Dataset,
        /// The scored split.
        test: Dataset,
    },
}

/// Normalised features of one split with their labels per class.
#[derive(Debug, Clone, PartialEq)]
pub struct LabelledFeatures {
    /// `rows × dim` values, row-major.
    pub features: Vec<f32>,
    /// Values per row.
    pub dim: usize,
    /// `rows × classes` labels, row-major: 1 positive, -1 negative, 0 difficult (a negative).
    pub labels: Vec<i8>,
}

impl LabelledFeatures {
    fn rows(&self) -> usize {
        self.features.len() / self.dim.max(1)
    }
}

/// Per-class average precision and their mean, all × 100.
#[derive(Debug, Clone, PartialEq)]
pub struct SvmResult {
    /// `(class, AP)` in class order.
    pub ap: Vec<(String, f64)>,
    /// The mean of the APs.
    pub map: f64,
}

/// Runs the protocol: features of both splits from `backbone` (evaluation mode), then
/// [`one_vs_rest`].
pub fn evaluate(
    data: SvmData,
    backbone: &ResNet,
    transform: EvalTransform,
    loader: LoaderConfig,
    device: Device,
    cost: f64,
) -> Result<SvmResult, EvalError> {
    // Pillow decodes at full size before resizing; DCT-domain downscaling would not.
    let loader = LoaderConfig {
        dct_scaling: false,
        ..loader
    };
    let extract = |name: &str, dataset: Dataset| {
        extract_features(
            name,
            backbone,
            Arc::new(dataset),
            transform,
            loader.clone(),
            device,
        )
    };
    let (train, test, classes) = match data {
        SvmData::Voc { trainval, test } => {
            let train = labelled(
                extract("trainval", trainval.dataset()?)?,
                voc_labels(&trainval),
            );
            let test = labelled(extract("test", test.dataset()?)?, voc_labels(&test));
            let classes = VOC_CLASSES.iter().map(|c| c.to_string()).collect();
            (train, test, classes)
        }
        SvmData::Classes { train, test } => {
            let classes = class_names(&train, &test);
            let train_labels = one_vs_rest_labels(&train, classes.len())?;
            let test_labels = one_vs_rest_labels(&test, classes.len())?;
            (
                labelled(extract("train", train)?, train_labels),
                labelled(extract("test", test)?, test_labels),
                classes,
            )
        }
    };
    one_vs_rest(&train, &test, &classes, &protocol_params(cost))
}

fn labelled((features, dim): (Vec<f32>, usize), labels: Vec<i8>) -> LabelledFeatures {
    LabelledFeatures {
        features,
        dim,
        labels,
    }
}

fn voc_labels(split: &VocSplit) -> Vec<i8> {
    split.labels().iter().flatten().copied().collect()
}

/// The class names of a single-label data set (its folder names, or the label numbers).
fn class_names(train: &Dataset, test: &Dataset) -> Vec<String> {
    let named = train.classes();
    let largest = [train, test]
        .iter()
        .flat_map(|d| (0..d.len()).filter_map(|i| d.label(i)))
        .max()
        .map_or(0, |m| m as usize + 1);
    if named.len() >= largest {
        named
    } else {
        (0..largest).map(|c| c.to_string()).collect()
    }
}

/// One-vs-rest labels (1 for the image's class, -1 for every other).
fn one_vs_rest_labels(dataset: &Dataset, classes: usize) -> Result<Vec<i8>, EvalError> {
    let mut labels = vec![-1i8; dataset.len() * classes];
    for i in 0..dataset.len() {
        let label = dataset.label(i).ok_or(EvalError::Unlabelled { index: i })? as usize;
        if let Some(slot) = labels.get_mut(i * classes + label) {
            *slot = 1;
        }
    }
    Ok(labels)
}

/// Pooled backbone features of every image of `dataset`, in order, each divided by its L2 norm +
/// 1e-5 (the reference code's normalisation; `features::extract` divides by the norm alone).
/// An image that cannot be decoded is an error: leaving it out would change the result.
pub fn extract_features(
    split: &str,
    backbone: &ResNet,
    dataset: Arc<Dataset>,
    transform: EvalTransform,
    config: LoaderConfig,
    device: Device,
) -> Result<(Vec<f32>, usize), EvalError> {
    let total = dataset.len();
    let started = Instant::now();
    let input = Normalizer::new(device);
    let (mut features, mut dim) = (Vec::new(), 0);
    let mut decoded = Vec::with_capacity(total);
    let mut next_log = 0;
    for batch in Loader::eval(dataset.clone(), (0..total).collect(), transform, config)? {
        let batch = batch?;
        if batch.indices.is_empty() {
            continue;
        }
        let x = input.apply(&batch.views[0], batch.indices.len());
        let f = tch::no_grad(|| backbone.forward_t(&x, false)).to_kind(Kind::Float);
        let norm = f.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        let f = (f / (norm + 1e-5)).to_device(Device::Cpu).contiguous();
        dim = f.size().get(1).map_or(0, |&d| d as usize);
        features.extend(
            Vec::<f32>::try_from(f.view([-1])).map_err(|e| EvalError::Internal(e.to_string()))?,
        );
        decoded.extend_from_slice(&batch.indices);
        if decoded.len() >= next_log {
            info!(
                split,
                done = decoded.len(),
                total,
                seconds = started.elapsed().as_secs_f64(),
                "extracting features"
            );
            next_log = decoded.len() + total.div_ceil(10);
        }
    }
    // The loader leaves undecodable images out of their batch; the indices say which remain.
    if decoded.len() < total {
        let mut present = vec![false; total];
        for &i in &decoded {
            present[i] = true;
        }
        let first = present.iter().position(|p| !p).unwrap_or(0);
        return Err(EvalError::Undecodable {
            missing: total - decoded.len(),
            total,
            first: dataset.describe(first),
        });
    }
    if decoded.iter().enumerate().any(|(row, &i)| row != i) || dim == 0 {
        return Err(EvalError::Internal(format!(
            "{split}: features of {} images came back out of order or empty",
            decoded.len()
        )));
    }
    info!(
        split,
        images = total,
        dim,
        seconds = started.elapsed().as_secs_f64(),
        "features extracted"
    );
    Ok((features, dim))
}

/// Trains one SVM per class on `train` and scores `test` with it: per-class AP × 100 and their
/// mean. Classes are trained in parallel (each is independent, so the result does not depend on
/// the number of threads).
pub fn one_vs_rest(
    train: &LabelledFeatures,
    test: &LabelledFeatures,
    classes: &[String],
    params: &SvmParams,
) -> Result<SvmResult, EvalError> {
    let k = classes.len();
    let shaped = |s: &LabelledFeatures| {
        s.dim > 0 && s.features.len().is_multiple_of(s.dim) && s.labels.len() == s.rows() * k
    };
    if k == 0 || !shaped(train) || !shaped(test) || train.dim != test.dim {
        return Err(EvalError::Internal(format!(
            "{} classes; train {} values of dim {} with {} labels; test {} values of dim {} with {} labels",
            k,
            train.features.len(),
            train.dim,
            train.labels.len(),
            test.features.len(),
            test.dim,
            test.labels.len()
        )));
    }
    let started = Instant::now();
    let x = svm::Features::new(&train.features, train.dim)
        .map_err(|e| EvalError::Internal(e.to_string()))?;
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<f64, EvalError>>>> =
        Mutex::new((0..k).map(|_| None).collect());
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(k);
    std::thread::scope(|scope| {
        for _ in 0..threads {
            scope.spawn(|| {
                loop {
                    let c = next.fetch_add(1, Ordering::Relaxed);
                    if c >= k {
                        return;
                    }
                    let result = class_ap(&x, (train, test), (c, k), &classes[c], params);
                    if let Ok(mut slots) = results.lock() {
                        slots[c] = Some(result);
                    }
                }
            });
        }
    });
    let slots = results
        .into_inner()
        .map_err(|_| EvalError::Internal("an SVM thread panicked".into()))?;
    let mut ap = Vec::with_capacity(k);
    for (class, slot) in classes.iter().zip(slots) {
        let value =
            slot.ok_or_else(|| EvalError::Internal(format!("class {class} was not trained")))??;
        ap.push((class.clone(), value));
    }
    let map = ap.iter().map(|(_, a)| a).sum::<f64>() / k as f64;
    info!(
        map,
        classes = k,
        seconds = started.elapsed().as_secs_f64(),
        "linear SVMs trained and scored"
    );
    Ok(SvmResult { ap, map })
}

/// AP × 100 on `test` of the SVM of class `c` (of `k`) trained on `x`, the features of `train`.
fn class_ap(
    x: &svm::Features,
    (train, test): (&LabelledFeatures, &LabelledFeatures),
    (c, k): (usize, usize),
    class: &str,
    params: &SvmParams,
) -> Result<f64, EvalError> {
    let positive = |s: &LabelledFeatures| -> Vec<bool> {
        (0..s.rows()).map(|r| s.labels[r * k + c] == 1).collect()
    };
    let started = Instant::now();
    let svm = svm::train(x, &positive(train), params).map_err(|source| EvalError::Svm {
        class: class.to_string(),
        source,
    })?;
    let seconds = started.elapsed().as_secs_f64();
    if !svm.converged(params) {
        warn!(
            class,
            iterations = svm.iterations,
            "the SVM did not converge within max_iter"
        );
    }
    let ranked: Vec<(f64, bool)> = test
        .features
        .chunks_exact(test.dim)
        .map(|x| svm.decision(x))
        .zip(positive(test))
        .collect();
    let ap = average_precision(&ranked).ok_or_else(|| EvalError::NoPositives {
        class: class.to_string(),
    })? * 100.0;
    info!(
        class,
        ap,
        iterations = svm.iterations,
        seconds,
        "linear SVM"
    );
    Ok(ap)
}
