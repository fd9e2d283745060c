//! The VOC07 linear-SVM protocol against scikit-learn (`tests/reference/svm_reference.py`), and
//! `kontrast eval` running it end to end.
//!
//! Both run on a synthetic PASCAL VOC root in the exact on-disk layout (JPEG images, per-class
//! `ImageSets/Main` lists with difficult labels, annotation XML), written at test time by the
//! reference script from real Fashion-MNIST images whose labels are mapped onto the 20 VOC
//! classes (not VOC content; see the script's `voc_labels`).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Proc, fashion_mnist_subset, small_run, train_for_eval};
use kontrast_api::config::{
    Arch, EvaluationConfig, EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationTask,
};
use kontrast_data::{EvalTransform, LoaderConfig, VOC_CLASSES, VocSplit};
use kontrast_worker::eval::average_precision::average_precision;
use kontrast_worker::eval::linear_svm::{
    LIBLINEAR_SEED, LabelledFeatures, extract_features, one_vs_rest, protocol_params,
};
use kontrast_worker::eval::svm::{self, SvmParams};
use kontrast_worker::model::{Moco, MocoSpec};
use serde::Deserialize;
use tch::{Device, Tensor};

/// The protocol's cost.
const COST: f64 = 0.5;
/// Per-class AP (0–100) may differ from scikit-learn's by at most this.
const AP_TOLERANCE: f64 = 0.1;
/// With liblinear's seed, weights and intercept may differ from scikit-learn's by at most this
/// fraction of the largest weight (the iterates are the same numbers; only the summation order
/// of dot products outside the solver differs).
const WEIGHT_TOLERANCE: f64 = 1e-9;

fn script() -> PathBuf {
    common::reference_script("svm_reference.py")
}

/// Writes the synthetic VOC root: `trainval` images from Fashion-MNIST's training split, `test`
/// from its test split.
fn voc_fixture(root: &Path, trainval: usize, test: usize) -> PathBuf {
    common::write_fixture(
        "svm_reference.py",
        "voc-fixture",
        root,
        &[trainval.to_string(), test.to_string()],
    )
}

#[derive(Deserialize)]
struct Reference {
    seed: u32,
    classes: Vec<ReferenceClass>,
}

#[derive(Deserialize)]
struct ReferenceClass {
    ap: f64,
    coef: Vec<f64>,
    intercept: f64,
    n_iter: usize,
    fit_seconds: f64,
}

fn run_reference(input: &Path, params: &SvmParams, random_state: u32) -> Reference {
    let out = Command::new(common::python())
        .arg(script())
        .arg("svm")
        .arg(input)
        .args([
            params.cost.to_string(),
            params.max_iter.to_string(),
            random_state.to_string(),
        ])
        .output()
        .expect("run the Python reference (`make setup` installs the venv)");
    assert!(
        out.status.success(),
        "the reference failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the reference's JSON")
}

/// Features of a freshly initialised (seeded) ResNet-18 with a 16-channel CIFAR stem (128-d),
/// extracted as the protocol extracts them.
fn random_network_features(split: &VocSplit, name: &str) -> LabelledFeatures {
    tch::manual_seed(0);
    let moco = Moco::new(
        MocoSpec {
            arch: Arch::Resnet18,
            cifar_stem: true,
            width: 16,
            dim: 16,
            queue_size: 32,
            mlp: true,
            momentum: 0.99,
            temperature: 0.2,
            knn: None,
            shuffle_keys: false,
        },
        Device::Cpu,
    );
    let dataset = Arc::new(split.dataset().expect("data set"));
    let (features, dim) = extract_features(
        name,
        &moco.encoder_q().backbone,
        dataset,
        EvalTransform::ResizeCenterCrop {
            resize: 32,
            crop: 28,
        },
        LoaderConfig {
            batch_per_rank: 250,
            threads: 1,
            ..LoaderConfig::default()
        },
        Device::Cpu,
    )
    .expect("features");
    LabelledFeatures {
        features,
        dim,
        labels: split.labels().iter().flatten().copied().collect(),
    }
}

fn positives(set: &LabelledFeatures, class: usize) -> Vec<bool> {
    set.labels
        .chunks_exact(VOC_CLASSES.len())
        .map(|row| row[class] == 1)
        .collect()
}

fn tensor_i8(labels: &[i8]) -> Tensor {
    Tensor::from_slice(labels).view([-1, VOC_CLASSES.len() as i64])
}

#[test]
fn linear_svms_and_average_precision_equal_scikit_learn_on_network_features() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = voc_fixture(&dir.path().join("VOC2007"), 2000, 1000);
    let trainval = VocSplit::open(&root, "trainval").expect("trainval");
    let test = VocSplit::open(&root, "test").expect("test");
    // The fixture exercises what VOC has: several classes per image, difficult labels, and
    // positives of every class in both splits.
    for split in [&trainval, &test] {
        let flat: Vec<i8> = split.labels().iter().flatten().copied().collect();
        assert!(flat.iter().filter(|&&l| l == 0).count() > 100);
        for c in 0..VOC_CLASSES.len() {
            assert!(split.labels().iter().any(|row| row[c] == 1), "class {c}");
        }
    }

    let started = Instant::now();
    let train = random_network_features(&trainval, "trainval");
    let scored = random_network_features(&test, "test");
    println!(
        "features of {} images: {:.1} s",
        trainval.len() + test.len(),
        started.elapsed().as_secs_f64()
    );
    assert_eq!(train.features.len(), 2000 * train.dim);
    assert_eq!(train.dim, 128);
    let input = dir.path().join("features.safetensors");
    Tensor::write_safetensors(
        &[
            (
                "train_x",
                &Tensor::from_slice(&train.features).view([-1, train.dim as i64]),
            ),
            ("train_y", &tensor_i8(&train.labels)),
            (
                "test_x",
                &Tensor::from_slice(&scored.features).view([-1, scored.dim as i64]),
            ),
            ("test_y", &tensor_i8(&scored.labels)),
        ],
        &input,
    )
    .expect("write the features");

    let params = protocol_params(COST);
    let reference = run_reference(&input, &params, 0);
    assert_eq!(
        reference.seed, LIBLINEAR_SEED,
        "LinearSVC(random_state=0) seeds liblinear with LIBLINEAR_SEED"
    );
    assert_eq!(reference.classes.len(), VOC_CLASSES.len());

    let x = svm::Features::new(&train.features, train.dim).expect("features");
    let (mut ours_seconds, mut max_ap_diff, mut max_weight_diff) = (0.0, 0.0f64, 0.0f64);
    let mut ours_ap = Vec::new();
    for (c, expected) in reference.classes.iter().enumerate() {
        let started = Instant::now();
        let trained = svm::train(&x, &positives(&train, c), &params).expect("train");
        ours_seconds += started.elapsed().as_secs_f64();
        let scale = expected.coef.iter().fold(0.0f64, |m, w| m.max(w.abs()));
        let weight_diff = trained
            .weights
            .iter()
            .zip(&expected.coef)
            .map(|(a, b)| (a - b).abs())
            .fold((trained.intercept - expected.intercept).abs(), f64::max)
            / scale;
        let ranked: Vec<(f64, bool)> = scored
            .features
            .chunks_exact(scored.dim)
            .map(|x| trained.decision(x))
            .zip(positives(&scored, c))
            .collect();
        let ap = average_precision(&ranked).expect("positives") * 100.0;
        println!(
            "{:>12}: AP {ap:7.3} (scikit-learn {:7.3}), iterations {} ({}), relative weight difference {weight_diff:.1e}",
            VOC_CLASSES[c], expected.ap, trained.iterations, expected.n_iter
        );
        assert_eq!(trained.weights.len(), expected.coef.len());
        assert_eq!(trained.iterations, expected.n_iter, "{}", VOC_CLASSES[c]);
        assert!(
            weight_diff <= WEIGHT_TOLERANCE,
            "{}: weights differ by {weight_diff:e} of the largest",
            VOC_CLASSES[c]
        );
        max_weight_diff = max_weight_diff.max(weight_diff);
        max_ap_diff = max_ap_diff.max((ap - expected.ap).abs());
        ours_ap.push(ap);
    }
    let sklearn_seconds: f64 = reference.classes.iter().map(|c| c.fit_seconds).sum();
    println!(
        "20 SVMs on {} × {}: ours {ours_seconds:.2} s, scikit-learn {sklearn_seconds:.2} s; \
         max AP difference {max_ap_diff:.2e}, max relative weight difference {max_weight_diff:.1e}",
        trainval.len(),
        train.dim
    );
    assert!(
        max_ap_diff <= AP_TOLERANCE,
        "AP differs from scikit-learn's by {max_ap_diff}"
    );

    // The protocol's driver (parallel over classes) gives the same numbers.
    let classes: Vec<String> = VOC_CLASSES.iter().map(|c| c.to_string()).collect();
    let result = one_vs_rest(&train, &scored, &classes, &params).expect("protocol");
    let driver_ap: Vec<f64> = result.ap.iter().map(|(_, a)| *a).collect();
    assert_eq!(driver_ap, ours_ap);
    let mean = ours_ap.iter().sum::<f64>() / ours_ap.len() as f64;
    assert!((result.map - mean).abs() < 1e-12);
    let reference_map =
        reference.classes.iter().map(|c| c.ap).sum::<f64>() / reference.classes.len() as f64;
    println!("mAP {:.3} (scikit-learn {reference_map:.3})", result.map);
    // The features carry class signal: well above the positives' share of the test split.
    assert!(result.map > 40.0, "mAP {}", result.map);
}

#[test]
fn another_seed_reaches_the_same_optimum_within_the_tolerance() {
    // Raw pixels (784-d, many exact zeros, so the solver's zero skipping is exercised), trained
    // with a seed scikit-learn is not given: only the optimum is shared, not the iterates.
    let dir = tempfile::tempdir().expect("temp dir");
    let root = voc_fixture(&dir.path().join("VOC2007"), 1000, 500);
    let pixels = |split: &VocSplit| -> LabelledFeatures {
        let dataset = split.dataset().expect("data set");
        let mut features = Vec::new();
        for i in 0..dataset.len() {
            let image = dataset.load(i).expect("decode");
            let grey: Vec<f32> = image
                .data
                .chunks_exact(3)
                .map(|p| f32::from(p[0]) / 255.0)
                .collect();
            let norm = grey.iter().map(|v| v * v).sum::<f32>().sqrt();
            features.extend(grey.iter().map(|v| v / (norm + 1e-5)));
        }
        LabelledFeatures {
            features,
            dim: 28 * 28,
            labels: split.labels().iter().flatten().copied().collect(),
        }
    };
    let train = pixels(&VocSplit::open(&root, "trainval").expect("trainval"));
    let scored = pixels(&VocSplit::open(&root, "test").expect("test"));
    assert!(train.features.iter().filter(|&&v| v == 0.0).count() > train.features.len() / 10);
    let input = dir.path().join("pixels.safetensors");
    Tensor::write_safetensors(
        &[
            (
                "train_x",
                &Tensor::from_slice(&train.features).view([-1, 784]),
            ),
            ("train_y", &tensor_i8(&train.labels)),
            (
                "test_x",
                &Tensor::from_slice(&scored.features).view([-1, 784]),
            ),
            ("test_y", &tensor_i8(&scored.labels)),
        ],
        &input,
    )
    .expect("write the features");
    let params = SvmParams {
        seed: 12_345,
        ..protocol_params(COST)
    };
    let reference = run_reference(&input, &params, 0);
    let classes: Vec<String> = VOC_CLASSES.iter().map(|c| c.to_string()).collect();
    let started = Instant::now();
    let result = one_vs_rest(&train, &scored, &classes, &params).expect("protocol");
    let seconds = started.elapsed().as_secs_f64();
    let max_ap_diff = result
        .ap
        .iter()
        .zip(&reference.classes)
        .map(|((_, a), r)| (a - r.ap).abs())
        .fold(0.0, f64::max);
    let sklearn_seconds: f64 = reference.classes.iter().map(|c| c.fit_seconds).sum();
    println!(
        "pixels, seed {}: max AP difference {max_ap_diff:.3}; mAP {:.3}; \
         ours {seconds:.2} s (threads over classes), scikit-learn {sklearn_seconds:.2} s",
        params.seed, result.map
    );
    assert!(
        max_ap_diff <= AP_TOLERANCE,
        "AP differs from scikit-learn's by {max_ap_diff}"
    );
}

#[test]
fn a_linear_svm_evaluation_on_voc_lands_in_the_termination_log() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = fashion_mnist_subset(&dir.path().join("data"), 64);
    let voc = voc_fixture(&dir.path().join("VOC2007"), 200, 200);
    let broken = voc_fixture(&dir.path().join("broken"), 20, 20);
    std::fs::remove_file(broken.join("ImageSets/Main/sheep_test.txt")).expect("remove a list");
    // A single-label data set runs one-vs-rest; scored on its training images here.
    let single = fashion_mnist_subset(&dir.path().join("single"), 300);
    for kind in ["images-idx3", "labels-idx1"] {
        std::fs::copy(
            single.join(format!("train-{kind}-ubyte")),
            single.join(format!("t10k-{kind}-ubyte")),
        )
        .expect("copy the split");
    }
    let mut config = small_run(&data, 1, 1, 16, 32);
    for (name, format, path) in [
        ("voc-svm", EvaluationDatasetFormat::Voc, &voc),
        ("broken-voc", EvaluationDatasetFormat::Voc, &broken),
        (
            "fashion-svm",
            EvaluationDatasetFormat::FashionMnist,
            &single,
        ),
    ] {
        config.evaluations.push(EvaluationConfig {
            name: name.into(),
            dataset: EvaluationDatasetConfig {
                format,
                path: path.display().to_string(),
            },
            gpus: 0,
            task: EvaluationTask::LinearSvm { cost: COST },
        });
    }
    let run = train_for_eval(dir.path(), &config);

    let eval = |name: &str| run.eval(name, &[]);
    let mut proc = Proc::spawn(eval("voc-svm"), dir.path(), "eval");
    proc.assert_success(Duration::from_secs(300));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["evaluation"], "voc-svm", "{result}");
    assert_eq!(result["kind"], "linearSvm", "{result}");
    assert_eq!(result["checkpointEpoch"], 1, "{result}");
    let ap = result["metrics"]["ap"].as_object().expect("per-class AP");
    let mut names: Vec<&str> = ap.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(names, VOC_CLASSES, "{result}");
    let values: Vec<f64> = ap.values().filter_map(|v| v.as_f64()).collect();
    assert_eq!(values.len(), 20, "{result}");
    assert!(values.iter().all(|a| (0.0..=100.0).contains(a)), "{result}");
    let map = result["metrics"]["mAP"].as_f64().expect("mAP");
    assert!(
        (map - values.iter().sum::<f64>() / 20.0).abs() < 1e-9,
        "{result}"
    );
    println!("VOC fixture mAP {map:.2}");
    // Chance level is each class's share of positives (about 10–40 %); even a one-epoch model's
    // features do much better.
    assert!(map > 45.0, "mAP {map}: {result}");
    let log = proc.stderr();
    assert!(log.contains("extracting features"), "{log}");
    assert!(
        log.contains("linear SVM") && log.contains("tvmonitor"),
        "{log}"
    );

    let mut proc = Proc::spawn(eval("fashion-svm"), dir.path(), "eval-fashion");
    proc.assert_success(Duration::from_secs(300));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: serde_json::Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["kind"], "linearSvm", "{result}");
    let ap = result["metrics"]["ap"].as_object().expect("per-class AP");
    let mut names: Vec<&str> = ap.keys().map(String::as_str).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"],
        "{result}"
    );
    let map = result["metrics"]["mAP"].as_f64().expect("mAP");
    println!("Fashion-MNIST one-vs-rest mAP {map:.2}");
    // Scored on the images it was trained on: far above chance (about 10).
    assert!(map > 60.0, "mAP {map}: {result}");

    let mut proc = Proc::spawn(eval("broken-voc"), dir.path(), "eval-broken");
    let status = proc.wait(Duration::from_secs(60));
    assert_eq!(status.code(), Some(78), "{}", proc.stderr());
    let message = std::fs::read_to_string(dir.path().join("termination-log")).unwrap_or_default();
    assert!(message.contains("sheep_test.txt"), "{message}");
}
