//! The DAVIS-2017 protocol: J and F against a Python reference written from the published
//! definition (`tests/reference/davis_reference.py`), and `kontrast eval` propagating labels
//! end to end on a synthetic DAVIS root in the exact on-disk layout (JPEG frames, palette-PNG
//! annotations, `ImageSets/2017/val.txt`), written at test time by the reference script from
//! real Fashion-MNIST items pasted on a textured background with exact masks (not DAVIS
//! content).
mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{Proc, small_run, train_for_eval};
use kontrast_api::config::{
    Arch, EvaluationConfig, EvaluationDatasetConfig, EvaluationDatasetFormat, EvaluationTask,
};
use kontrast_worker::eval::davis::l2_normalize_channels;
use kontrast_worker::eval::davis_metrics::{
    BOUND_TH, SequenceScorer, f_measure, jaccard, object_count, scored_frames, summarize,
};
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

/// Largest difference allowed between our scores and the reference's (fractions).
const TOLERANCE: f64 = 1e-6;

fn script() -> PathBuf {
    common::reference_script("davis_reference.py")
}

/// xorshift64*: reproducible masks without a random-number crate.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A binary mask: an ellipse centred at (cy, cx) with radii (ry, rx).
fn ellipse(width: usize, height: usize, cy: f64, cx: f64, ry: f64, rx: f64) -> Vec<bool> {
    (0..width * height)
        .map(|i| {
            let (y, x) = ((i / width) as f64, (i % width) as f64);
            ((y - cy) / ry).powi(2) + ((x - cx) / rx).powi(2) <= 1.0
        })
        .collect()
}

/// `mask` with `flips` random pixels flipped.
fn speckle(mut mask: Vec<bool>, flips: usize, rng: &mut Rng) -> Vec<bool> {
    let n = mask.len() as u64;
    for _ in 0..flips {
        let i = rng.below(n) as usize;
        mask[i] = !mask[i];
    }
    mask
}

struct Pair {
    width: usize,
    height: usize,
    gt: Vec<bool>,
    pred: Vec<bool>,
}

/// Binary masks covering DAVIS's conventions and sizes: empty in either or both, matching,
/// disjoint, shifted, noisy, one pixel wide, and a 854×480 pair (tolerance radius 8).
fn pairs(rng: &mut Rng) -> Vec<Pair> {
    let mut out = Vec::new();
    let mut add = |width, height, gt, pred| {
        out.push(Pair {
            width,
            height,
            gt,
            pred,
        })
    };
    let empty = |w: usize, h: usize| vec![false; w * h];
    let blob = ellipse(40, 30, 14.0, 18.0, 8.0, 12.0);
    add(40, 30, empty(40, 30), empty(40, 30));
    add(40, 30, empty(40, 30), blob.clone());
    add(40, 30, blob.clone(), empty(40, 30));
    add(40, 30, blob.clone(), blob.clone());
    add(40, 30, blob.clone(), ellipse(40, 30, 15.0, 21.0, 8.0, 12.0));
    add(40, 30, blob.clone(), ellipse(40, 30, 5.0, 5.0, 3.0, 3.0));
    add(61, 47, ellipse(61, 47, 20.0, 30.0, 15.0, 22.0), {
        let base = ellipse(61, 47, 22.0, 28.0, 14.0, 25.0);
        speckle(base, 300, rng)
    });
    let noise = |w: usize, h: usize, rng: &mut Rng| speckle(empty(w, h), w * h / 3, rng);
    add(33, 29, noise(33, 29, rng), noise(33, 29, rng));
    add(50, 1, noise(50, 1, rng), noise(50, 1, rng));
    add(1, 50, noise(1, 50, rng), noise(1, 50, rng));
    let gt = ellipse(854, 480, 240.0, 400.0, 150.0, 260.0);
    let pred = speckle(ellipse(854, 480, 246.0, 409.0, 140.0, 250.0), 2000, rng);
    add(854, 480, gt, pred);
    let gt = ellipse(854, 480, 100.0, 100.0, 60.0, 80.0);
    let pred = ellipse(854, 480, 112.0, 96.0, 60.0, 80.0);
    add(854, 480, gt, pred);
    out
}

struct Sequence {
    width: usize,
    height: usize,
    gt: Vec<Vec<u8>>,
    pred: Vec<Vec<u8>>,
}

/// Label maps of `objects` ellipses drifting over `frames` frames, void (255) around the first
/// object in the annotations, and predictions that drift further and drop objects.
fn sequence(frames: usize, objects: u8, rng: &mut Rng) -> Sequence {
    let (width, height) = (72usize, 56usize);
    let mut gt = Vec::new();
    let mut pred = Vec::new();
    for t in 0..frames {
        let mut g = vec![0u8; width * height];
        let mut p = vec![0u8; width * height];
        for o in 1..=objects {
            let (cy, cx) = (
                12.0 + 9.0 * f64::from(o - 1) + t as f64,
                14.0 + 16.0 * f64::from(o - 1) + 2.0 * t as f64,
            );
            let truth = ellipse(width, height, cy, cx, 7.0, 9.0);
            let halo = ellipse(width, height, cy, cx, 9.0, 11.0);
            let guess = speckle(
                ellipse(width, height, cy + 1.5, cx - 1.0, 7.0 + o as f64, 8.0),
                40,
                rng,
            );
            for i in 0..width * height {
                if o == 1 && halo[i] && !truth[i] {
                    g[i] = 255;
                }
                if truth[i] {
                    g[i] = o;
                }
                // The last object is never predicted after frame 2; frame 3 predicts nothing.
                if guess[i] && !(o == objects && t > 2) && t != 3 {
                    p[i] = o;
                }
            }
        }
        // An object that appears later than the first frame is not an object of the sequence.
        if t > 1 {
            for y in 44..50 {
                for x in 60..68 {
                    g[y * width + x] = objects + 1;
                }
            }
        }
        gt.push(g);
        pred.push(p);
    }
    Sequence {
        width,
        height,
        gt,
        pred,
    }
}

fn flat_bits(mask: &[bool]) -> Vec<u8> {
    mask.iter().map(|&b| u8::from(b)).collect()
}

fn close(what: &str, ours: f64, reference: f64, worst: &mut f64) {
    let d = (ours - reference).abs();
    *worst = worst.max(d);
    assert!(
        d <= TOLERANCE,
        "{what}: ours {ours}, reference {reference} (|Δ| = {d:e})"
    );
}

fn as_f64(v: &Value) -> f64 {
    v.as_f64().unwrap_or_else(|| panic!("not a number: {v}"))
}

#[test]
fn j_and_f_match_the_python_reference() {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let pairs = pairs(&mut rng);
    let sequences = [sequence(7, 3, &mut rng), sequence(4, 2, &mut rng)];
    let input = json!({
        "pairs": pairs.iter().map(|p| json!({
            "width": p.width, "height": p.height,
            "gt": flat_bits(&p.gt), "pred": flat_bits(&p.pred),
        })).collect::<Vec<_>>(),
        "sequences": sequences.iter().map(|s| json!({
            "width": s.width, "height": s.height, "gt": s.gt, "pred": s.pred,
        })).collect::<Vec<_>>(),
    });
    let (src, dst) = (
        dir.path().join("masks.json"),
        dir.path().join("scores.json"),
    );
    std::fs::write(&src, input.to_string()).expect("write the masks");
    let status = Command::new(common::python())
        .arg(script())
        .arg("metrics")
        .args([&src, &dst])
        .status()
        .expect("run the Python reference (`make setup` installs the venv)");
    assert!(status.success(), "the reference failed: {status}");
    let reference: Value =
        serde_json::from_slice(&std::fs::read(&dst).expect("the reference's scores"))
            .expect("JSON");

    let mut worst = 0.0f64;
    for (i, (p, r)) in pairs
        .iter()
        .zip(reference["pairs"].as_array().expect("pairs"))
        .enumerate()
    {
        close(
            &format!("pair {i} J"),
            jaccard(&p.gt, &p.pred),
            as_f64(&r["J"]),
            &mut worst,
        );
        let f = f_measure(&p.gt, &p.pred, p.width, p.height, BOUND_TH);
        close(&format!("pair {i} F"), f, as_f64(&r["F"]), &mut worst);
    }
    // The pairs span the whole range, so agreement is not agreement on constants.
    let fs: Vec<f64> = reference["pairs"]
        .as_array()
        .expect("pairs")
        .iter()
        .map(|r| as_f64(&r["F"]))
        .collect();
    assert!(fs.contains(&0.0) && fs.contains(&1.0), "{fs:?}");
    assert!(fs.iter().any(|f| *f > 0.05 && *f < 0.95), "{fs:?}");

    let mut all_objects = Vec::new();
    let reference_sequences = reference["sequences"].as_array().expect("sequences");
    for (s, (seq, r)) in sequences.iter().zip(reference_sequences).enumerate() {
        let objects = object_count(&seq.gt[0]);
        let mut scorer = SequenceScorer::new(objects, seq.width, seq.height);
        for t in scored_frames(seq.gt.len()) {
            scorer.add_frame(&seq.gt[t], &seq.pred[t]);
        }
        let (j, f) = scorer.per_frame();
        let rj = r["J"].as_array().expect("J");
        assert_eq!(j.len(), rj.len(), "sequence {s}: objects");
        for (o, (ours, theirs)) in j.iter().zip(rj).enumerate() {
            let theirs = theirs.as_array().expect("frames");
            assert_eq!(ours.len(), theirs.len(), "sequence {s} object {o}: frames");
            for (t, (a, b)) in ours.iter().zip(theirs).enumerate() {
                close(
                    &format!("sequence {s} object {o} frame {t} J"),
                    *a,
                    as_f64(b),
                    &mut worst,
                );
            }
        }
        for (o, (ours, theirs)) in f.iter().zip(r["F"].as_array().expect("F")).enumerate() {
            for (t, (a, b)) in ours
                .iter()
                .zip(theirs.as_array().expect("frames"))
                .enumerate()
            {
                close(
                    &format!("sequence {s} object {o} frame {t} F"),
                    *a,
                    as_f64(b),
                    &mut worst,
                );
            }
        }
        let scores = scorer.object_scores();
        for (o, score) in scores.iter().enumerate() {
            close(
                &format!("sequence {s} object {o} J-M"),
                score.j,
                as_f64(&r["J_M"][o]),
                &mut worst,
            );
            close(
                &format!("sequence {s} object {o} F-M"),
                score.f,
                as_f64(&r["F_M"][o]),
                &mut worst,
            );
        }
        all_objects.extend(scores);
    }
    let summary = summarize(&all_objects);
    let rs = &reference["summary"];
    close("J-Mean", summary.j, as_f64(&rs["J-Mean"]), &mut worst);
    close("F-Mean", summary.f, as_f64(&rs["F-Mean"]), &mut worst);
    close("J&F-Mean", summary.jf, as_f64(&rs["J&F-Mean"]), &mut worst);
    assert_eq!(all_objects.len(), 5, "3 + 2 objects");
    println!("largest |ours − reference| over every J, F and mean: {worst:e}");
}

#[test]
fn layer3_features_match_videowalks_modified_torchvision_resnet() {
    let dir = tempfile::tempdir().expect("temp dir");
    for (arch, name, channels) in [
        (Arch::Resnet50, "resnet50", 1024),
        (Arch::Resnet18, "resnet18", 256),
    ] {
        let (moco, mut tensors) = common::perturbed_moco(arch);
        // A size that is not a multiple of the stride: the grid is ⌈H/8⌉ × ⌈W/8⌉.
        let image = Tensor::randn([2, 3, 70, 99], (Kind::Float, Device::Cpu));
        tensors.push(("image".into(), image.copy()));
        let (src, dst) = (
            dir.path().join(format!("{name}.safetensors")),
            dir.path().join(format!("{name}-features.safetensors")),
        );
        Tensor::write_safetensors(&tensors, &src).expect("write the weights");
        let status = Command::new(common::python())
            .arg(script())
            .arg("layer3")
            .arg(&src)
            .arg(name)
            .arg(&dst)
            .status()
            .expect("run the Python reference (`make setup` installs the venv)");
        assert!(status.success(), "the reference failed: {status}");
        let reference = Tensor::read_safetensors(&dst)
            .expect("the reference's features")
            .into_iter()
            .find(|(n, _)| n == "features")
            .map(|(_, t)| t)
            .expect("features");
        let backbone = &moco.encoder_q().backbone;
        assert_eq!(backbone.layer3_stride(), 8);
        let ours = tch::no_grad(|| {
            l2_normalize_channels(&backbone.forward_layer3_unstrided_t(&image, false))
        });
        assert_eq!(ours.size(), [2, channels, 9, 13], "{name}");
        assert_eq!(ours.size(), reference.size(), "{name}");
        let diff = (&ours - &reference).abs().max().double_value(&[]);
        println!("{name}: largest |ours − torchvision| of the normalised features: {diff:e}");
        assert!(diff < 1e-5, "{name}: {diff:e}");
    }
}

/// Writes the synthetic DAVIS root.
fn davis_fixture(root: &Path) -> PathBuf {
    common::write_fixture("davis_reference.py", "fixture", root, &[])
}

#[test]
fn kontrast_eval_propagates_labels_through_a_davis_root() {
    let dir = tempfile::tempdir().expect("temp dir");
    let davis = davis_fixture(&dir.path().join("DAVIS"));
    let data = common::fashion_mnist_subset(&dir.path().join("data"), 64);
    let mut config = small_run(&data, 1, 1, 16, 32);
    config.evaluations.push(EvaluationConfig {
        name: "davis".into(),
        dataset: EvaluationDatasetConfig {
            format: EvaluationDatasetFormat::Davis,
            path: davis.display().to_string(),
        },
        gpus: 0,
        task: EvaluationTask::Davis {
            k: 10,
            temperature: 0.07,
        },
    });
    let run = train_for_eval(dir.path(), &config);

    let eval = run.eval("davis", &[]);
    let mut proc = Proc::spawn(eval, dir.path(), "eval");
    proc.assert_success(Duration::from_secs(300));
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    let result: Value = serde_json::from_str(&message).expect("JSON");
    assert_eq!(result["evaluation"], "davis", "{result}");
    assert_eq!(result["kind"], "davis", "{result}");
    let metrics = &result["metrics"];
    let (jf, j, f) = (
        as_f64(&metrics["J&F"]),
        as_f64(&metrics["J"]),
        as_f64(&metrics["F"]),
    );
    for (name, v) in [("J&F", jf), ("J", j), ("F", f)] {
        assert!((0.0..=100.0).contains(&v), "{name} = {v}: {result}");
    }
    assert!((jf - (j + f) / 2.0).abs() < 1e-9, "{result}");
    let objects = metrics["objects"].as_object().expect("per-object scores");
    let names: Vec<&str> = objects.keys().map(String::as_str).collect();
    assert_eq!(
        names,
        [
            "moving-pair_1",
            "moving-pair_2",
            "static-pair_1",
            "static-pair_2"
        ],
        "{result}"
    );
    let mean_j = objects.values().map(|o| as_f64(&o["J"])).sum::<f64>() / 4.0;
    assert!(
        (mean_j - j).abs() < 1e-9,
        "J is the mean over objects: {result}"
    );
    // Objects that do not move: every location's best matches are itself in the first frame
    // and its copies, whatever the features, so only the resampling to the feature grid and
    // back can cost anything.
    for name in ["static-pair_1", "static-pair_2"] {
        let (oj, of) = (as_f64(&objects[name]["J"]), as_f64(&objects[name]["F"]));
        assert!(oj > 90.0 && of > 90.0, "{name}: J {oj}, F {of}: {result}");
    }
    assert_eq!(
        result["metrics"]["protocol"]["featureStride"], 2,
        "{result}"
    );
    let logs = proc.stderr();
    let progress: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("DAVIS sequence"))
        .collect();
    for sequence in ["static-pair", "moving-pair"] {
        let lines = progress
            .iter()
            .filter(|l| l.contains(&format!("sequence=\"{sequence}\"")))
            .count();
        assert_eq!(lines, 1, "one progress line for {sequence}:\n{logs}");
    }
    println!("{}", progress.join("\n"));

    // A frame without its annotation fails permanently, naming the file.
    let missing = davis.join("Annotations/480p/moving-pair/00003.png");
    std::fs::remove_file(&missing).expect("remove an annotation");
    let eval = run.eval("davis", &[]);
    let mut proc = Proc::spawn(eval, dir.path(), "eval-broken");
    let status = proc.wait(Duration::from_secs(120));
    assert_eq!(status.code(), Some(78), "{}", proc.stderr());
    let message = std::fs::read_to_string(dir.path().join("termination-log"))
        .expect("the termination message");
    assert!(
        message.contains("moving-pair/00003.png") && message.contains("missing"),
        "{message}"
    );
    println!(
        "{}",
        serde_json::to_string_pretty(metrics).unwrap_or_default()
    );
}
