//! Weighted kNN classification against `tests/reference/knn_reference.py` (PyTorch) on the same
//! features: every prediction must be identical (the votes are computed in the same precision;
//! well-separated random features make near-ties improbable, and a tie would show as a mismatch
//! worth looking at).
use std::path::Path;
use std::process::Command;

use kontrast_worker::eval::knn::weighted_knn_predict;
use tch::{Device, Kind, Tensor};

#[test]
fn weighted_knn_predictions_equal_the_pytorch_reference() {
    tch::manual_seed(5);
    let dir = tempfile::tempdir().expect("temp dir");
    let normalize = |x: Tensor| {
        let n = x.norm_scalaropt_dim(2, [1i64].as_slice(), true);
        x / n
    };
    // Ten classes around random centres, so the neighbourhoods carry signal.
    let centres = Tensor::randn([10, 32], (Kind::Float, Device::Cpu));
    let train_labels = Tensor::randint(10, [2000], (Kind::Int64, Device::Cpu));
    let test_labels = Tensor::randint(10, [700], (Kind::Int64, Device::Cpu));
    let train = normalize(
        centres.index_select(0, &train_labels)
            + Tensor::randn([2000, 32], (Kind::Float, Device::Cpu)),
    );
    let test = normalize(
        centres.index_select(0, &test_labels)
            + Tensor::randn([700, 32], (Kind::Float, Device::Cpu)),
    );
    let input = dir.path().join("in.safetensors");
    let output = dir.path().join("out.safetensors");
    Tensor::write_safetensors(
        &[
            ("train", &train),
            ("train_labels", &train_labels),
            ("test", &test),
        ],
        &input,
    )
    .expect("write features");
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python"))
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/knn_reference.py"))
        .args([input.as_os_str(), output.as_os_str()])
        .args(["20", "0.07", "10"])
        .status()
        .expect("run the Python reference (`make setup` installs the venv)");
    assert!(status.success(), "the reference failed: {status}");
    let reference = Tensor::read_safetensors(&output)
        .expect("read the reference's predictions")
        .into_iter()
        .find(|(n, _)| n == "predictions")
        .expect("predictions")
        .1;
    let ours = weighted_knn_predict(&train, &train_labels, &test, 20, 0.07, 10);
    let differ = ours.ne_tensor(&reference).sum(Kind::Int64).int64_value(&[]);
    assert_eq!(
        differ, 0,
        "{differ} of 700 predictions differ from the reference"
    );
    let accuracy = ours
        .eq_tensor(&test_labels)
        .to_kind(Kind::Float)
        .mean(Kind::Float);
    assert!(
        accuracy.double_value(&[]) > 0.5,
        "the features carry class signal"
    );
}
