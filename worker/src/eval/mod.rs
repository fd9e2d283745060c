//! Evaluation on frozen features: feature extraction, weighted kNN classification and
//! positive-pair retrieval.
pub mod cli;
pub mod features;
pub mod knn;
pub mod retrieval;

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
}
