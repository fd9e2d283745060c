//! Evaluation of the trained encoder: feature extraction, weighted kNN classification,
//! positive-pair retrieval, the VOC07 linear-SVM protocol, segmentation (linear probe and
//! fine-tuning), segment retrieval and DAVIS propagation.
pub mod adam;
pub mod average_precision;
pub mod cli;
pub mod davis;
pub mod davis_metrics;
pub mod features;
pub mod finetune;
pub mod finetune_head;
pub mod knn;
pub mod labelled;
pub mod linear_svm;
pub mod miou;
pub mod poly_lr;
pub mod retrieval;
pub mod segment_retrieval;
pub mod segmentation;
pub mod segmentation_data;
pub mod segmentation_head;
pub mod svm;

/// Why an evaluation failed.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    /// The data could not be read.
    #[error("evaluation data: {0}")]
    Data(#[from] kontrast_data::DataError),
    /// An image has no label where labels are needed.
    #[error("image {index} has no label")]
    Unlabelled {
        /// Its index in the data set.
        index: usize,
    },
    /// There is nothing to evaluate.
    #[error("no images to evaluate")]
    Empty,
    /// Images that could not be decoded were left out, which would change the result.
    #[error(
        "{missing} of the {total} images could not be decoded (first: {first}); this evaluation needs every image"
    )]
    Undecodable {
        /// How many.
        missing: usize,
        /// Images in the split.
        total: usize,
        /// The first of them.
        first: String,
    },
    /// A class's SVM could not be trained.
    #[error("class {class}: {source}")]
    Svm {
        /// The class.
        class: String,
        /// Why.
        #[source]
        source: svm::SvmError,
    },
    /// A class has no positive test image, so its average precision is undefined.
    #[error("class {class} has no positive test image: its average precision is undefined")]
    NoPositives {
        /// The class.
        class: String,
    },
    /// Inconsistent shapes or a failed tensor conversion (a bug).
    #[error("internal evaluation error: {0}")]
    Internal(String),
}
