//! Mixed precision on the CPU.
//!
//! - A bf16 step (forward under bfloat16 autocast, backward and SGD in fp32) against the PyTorch
//!   reference `tests/reference/moco_reference.py` run with `"autocast": "bf16"`, i.e. its forward
//!   under `torch.autocast("cpu", dtype=torch.bfloat16)`, from the same weights, queues and batch.
//! - The bf16 step against our own fp32 step from the same state, and the autocast state after it.
//! - Loss scaling (what fp16 uses) on the CPU without float16: an overflowing scale skips the
//!   optimiser step, a finite one reproduces the fp32 step.
//! - `trainer::run` in bf16 on a Fashion-MNIST subset, against the same run in fp32.
//! - fp16 on the CPU is refused as a permanent configuration error.
//!
//! Tolerances. Both sides run the same libtorch kernels under the same autocast op lists, but not
//! the same op sequence everywhere (e.g. the positive logit is `einsum` in the reference, a
//! multiply-and-sum here, both in bf16), so a value can differ by a bfloat16 rounding step (2⁻⁸
//! relative) where the formulations differ, and the backward pass, in bf16 too, amplifies that.
//! Each constant gives what was measured (ResNet-18 MoCo v2 / Revisiting) and, to show that the
//! comparison can tell, what the same check measures against the reference run without autocast.
mod common;
mod reference;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kontrast_api::config::{Arch, Precision};
use kontrast_worker::model::autocast::autocast_state;
use kontrast_worker::model::memory_format::Layout;
use kontrast_worker::model::params::Role;
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::TrainError;
use kontrast_worker::train::config::{self, Overrides};
use kontrast_worker::train::error::PERMANENT_EXIT_CODE;
use kontrast_worker::train::loss_scale::{LossScaler, LossScalerConfig};
use kontrast_worker::train::precision::MixedPrecision;
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::{StepReport, train_step, train_step_with_precision};
use kontrast_worker::train::trainer::{self, Options};
use reference::relative_error;
use tch::{Device, Kind, Tensor};

const SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 1e-4,
};

/// Each loss against the reference's, relative. Measured: 0 / 3.0e-4 (InfoNCE), 0 (kNN).
/// Against the fp32 reference: 5.7e-4 / 1.1e-2 — the loss alone barely tells; the update does.
const LOSS_TOLERANCE: f64 = 2e-3;
/// Each query-encoder parameter's update (after − before: lr × (gradient + weight decay))
/// against the reference's, relative to the largest element of the reference's update. Measured:
/// at most 3.0e-5 / 1.9e-2. Against the fp32 reference: 0.25 to 0.81.
const UPDATE_TOLERANCE: f64 = 5e-2;
/// Every other tensor — the key encoder, the BN running statistics, the queues with the new keys
/// and features — relative to its largest element. Measured: 0 / 0 (bit-identical). Against the
/// fp32 reference: 2.2e-2 to 5.2e-2 (bf16-rounded keys). The tolerance admits one bf16 rounding
/// step (3.9e-3) of difference.
const STATE_TOLERANCE: f64 = 5e-3;
/// The bf16 step's losses against our fp32 step's from the same state, relative. Measured: 4.1e-3
/// (InfoNCE), 2.2e-3 (kNN), 2.8e-3 (total).
const FP32_LOSS_TOLERANCE: f64 = 2e-2;

struct Case {
    spec: MocoSpec,
    batch: i64,
    large: i64,
    /// (side, crops per image)
    small: Option<(i64, i64)>,
    lr: f64,
}

fn resnet18_mocov2() -> Case {
    Case {
        spec: MocoSpec {
            arch: Arch::Resnet18,
            cifar_stem: false,
            width: 64,
            dim: 128,
            queue_size: 32,
            mlp: true,
            momentum: 0.99,
            temperature: 0.2,
            knn: None,
            shuffle_keys: true,
        },
        batch: 8,
        large: 32,
        small: None,
        lr: 0.03,
    }
}

fn resnet18_revisiting() -> Case {
    Case {
        spec: reference::resnet18_revisiting(),
        batch: 4,
        large: 16,
        small: Some((8, 3)),
        lr: 0.05,
    }
}

fn relative(ours: f64, reference: f64) -> f64 {
    ((ours - reference) / reference).abs()
}

/// Every tensor of the model, copied.
fn snapshot(moco: &Moco) -> BTreeMap<String, Tensor> {
    moco.params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.tensor.detach().copy()))
        .collect()
}

/// A model from `seed` (so two calls build the same weights and queues) and a batch.
fn model_and_views(case: &Case, seed: i64) -> (Moco, Views) {
    tch::set_num_threads(1);
    tch::manual_seed(seed);
    let moco = Moco::new(case.spec, Device::Cpu);
    let opts = (Kind::Float, Device::Cpu);
    let views = Views {
        query: Tensor::randn([case.batch, 3, case.large, case.large], opts),
        key: Tensor::randn([case.batch, 3, case.large, case.large], opts),
        small: case
            .small
            .map(|(side, count)| Tensor::randn([case.batch * count, 3, side, side], opts)),
    };
    (moco, views)
}

fn clone_views(v: &Views) -> Views {
    Views {
        query: v.query.copy(),
        key: v.key.copy(),
        small: v.small.as_ref().map(Tensor::copy),
    }
}

fn bf16_step(moco: &Moco, views: &Views, lr: f64) -> StepReport {
    let mut precision = MixedPrecision::new(Precision::Bf16, Device::Cpu).expect("bf16 on the CPU");
    let mut sgd = Sgd::new(moco.trainable(), SGD);
    train_step_with_precision(moco, &mut sgd, views, lr, true, None, None, &mut precision)
        .expect("bf16 step")
}

/// Runs the reference's bf16-autocast step from `init` on `views`.
fn run_reference(
    dir: &Path,
    case: &Case,
    init: &BTreeMap<String, Tensor>,
    views: &Views,
) -> BTreeMap<String, Tensor> {
    let init: Vec<(&str, &Tensor)> = init.iter().map(|(n, t)| (n.as_str(), t)).collect();
    Tensor::write_safetensors(&init, dir.join("init.safetensors")).expect("write init");
    let mut batch = vec![("step0.query", &views.query), ("step0.key", &views.key)];
    if let Some(s) = &views.small {
        batch.push(("step0.small", s));
    }
    Tensor::write_safetensors(&batch, dir.join("batches.safetensors")).expect("write batch");
    let mut config = reference::config(&case.spec, SGD, case.lr, 1, "float32");
    config["autocast"] = serde_json::json!("bf16");
    std::fs::write(dir.join("config.json"), config.to_string()).expect("write config");
    reference::run(dir)
}

/// A tolerance check that reports what it measured (shown with `--no-capture`).
#[derive(Default)]
struct Checks {
    failures: Vec<String>,
}

impl Checks {
    fn check(&mut self, what: &str, err: f64, tolerance: f64) {
        eprintln!("{what}: {err:.3e} (tolerance {tolerance:e})");
        if err.is_nan() || err > tolerance {
            self.failures
                .push(format!("{what}: {err:e} > {tolerance:e}"));
        }
    }

    /// Checks the largest of `errors` (name, error) and names it.
    fn check_worst(&mut self, what: &str, errors: &[(String, f64)], tolerance: f64) {
        let worst = errors
            .iter()
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .expect("something to compare");
        self.check(&format!("{what} (worst: {})", worst.0), worst.1, tolerance);
        for (name, err) in errors {
            if err.is_nan() || *err > tolerance {
                self.failures
                    .push(format!("{what} of {name}: {err:e} > {tolerance:e}"));
            }
        }
    }
}

fn matches_the_pytorch_autocast_step(case: Case) {
    let dir = tempfile::tempdir().expect("temp dir");
    let (moco, views) = model_and_views(&case, 11);
    let before = snapshot(&moco);
    let ours = bf16_step(&moco, &views, case.lr);
    let reference = run_reference(dir.path(), &case, &before, &views);
    let after = snapshot(&moco);
    assert!(
        !ours.skipped && ours.loss_scale.is_none(),
        "bf16 does not scale the loss"
    );

    let mut checks = Checks::default();
    let loss = |name: &str| {
        reference
            .get(&format!("loss.step0.{name}"))
            .map(|t| t.double_value(&[0]))
    };
    let info_nce = loss("info_nce").expect("reference InfoNCE");
    checks.check(
        "InfoNCE",
        relative(ours.losses.info_nce, info_nce),
        LOSS_TOLERANCE,
    );
    assert_eq!(
        ours.losses.knn.is_some(),
        loss("knn").is_some(),
        "kNN term presence"
    );
    if let (Some(a), Some(b)) = (ours.losses.knn, loss("knn")) {
        checks.check("kNN loss", relative(a, b), LOSS_TOLERANCE);
    }
    let total = loss("total").expect("reference total");
    checks.check(
        "total loss",
        relative(ours.losses.total, total),
        LOSS_TOLERANCE,
    );

    let (mut updates, mut states) = (Vec::new(), Vec::new());
    for e in moco.params().entries() {
        let theirs = reference
            .get(&e.name)
            .unwrap_or_else(|| panic!("the reference has no {}", e.name));
        let (ours, init) = (&after[&e.name], &before[&e.name]);
        assert_eq!(ours.kind(), init.kind(), "{} changed dtype", e.name);
        if ours.kind() == Kind::Int64 {
            assert!(
                ours.equal(theirs),
                "{}: ours {ours:?} reference {theirs:?}",
                e.name
            );
        } else if e.name.starts_with("encoder_q.") && e.role == Role::Parameter {
            let err = relative_error(&(ours - init), &(theirs - init));
            updates.push((e.name.clone(), err));
        } else {
            states.push((e.name.clone(), relative_error(ours, theirs)));
        }
    }
    checks.check_worst("parameter update", &updates, UPDATE_TOLERANCE);
    checks.check_worst("state", &states, STATE_TOLERANCE);
    // The new keys were written into the queue: the comparison is not of untouched copies.
    let b = views.key.size()[0];
    let new_keys = after["queue"].narrow(1, 0, b);
    assert!(
        !new_keys.equal(&before["queue"].narrow(1, 0, b)),
        "the keys were enqueued"
    );
    checks.check(
        "enqueued keys",
        relative_error(&new_keys, &reference["queue"].narrow(1, 0, b)),
        STATE_TOLERANCE,
    );
    assert!(checks.failures.is_empty(), "{}", checks.failures.join("\n"));
}

#[test]
fn a_bf16_mocov2_step_on_resnet18_matches_pytorch_autocast() {
    matches_the_pytorch_autocast_step(resnet18_mocov2());
}

#[test]
fn a_bf16_revisiting_step_with_the_knn_loss_matches_pytorch_autocast() {
    matches_the_pytorch_autocast_step(resnet18_revisiting());
}

#[test]
fn a_bf16_step_is_close_to_the_fp32_step_and_leaves_autocast_off() {
    let case = resnet18_revisiting();
    let (fp32_model, views) = model_and_views(&case, 5);
    let (bf16_model, _) = model_and_views(&case, 5);
    let mut sgd = Sgd::new(fp32_model.trainable(), SGD);
    let fp32 = train_step(
        &fp32_model,
        &mut sgd,
        &clone_views(&views),
        case.lr,
        true,
        None,
        None,
    )
    .expect("fp32 step");
    let bf16 = bf16_step(&bf16_model, &views, case.lr);
    let pairs = [
        ("InfoNCE", bf16.losses.info_nce, fp32.losses.info_nce),
        (
            "kNN",
            bf16.losses.knn.expect("kNN"),
            fp32.losses.knn.expect("kNN"),
        ),
        ("total", bf16.losses.total, fp32.losses.total),
    ];
    for (what, ours, theirs) in pairs {
        let err = relative(ours, theirs);
        eprintln!("{what}: bf16 {ours} fp32 {theirs} relative {err:.3e}");
        assert!(
            err <= FP32_LOSS_TOLERANCE,
            "{what}: bf16 {ours} fp32 {theirs} ({err:e})"
        );
    }
    // The guard is gone: autocast is off again and ops run in fp32.
    assert_eq!(autocast_state(Device::Cpu).expect("autocast state"), None);
    let x = Tensor::ones([2, 2], (Kind::Float, Device::Cpu));
    assert_eq!(x.mm(&x).kind(), Kind::Float);
    // Weights, gradients and queues stay fp32.
    for e in bf16_model.params().entries() {
        if e.tensor.is_floating_point() {
            assert_eq!(e.tensor.kind(), Kind::Float, "{}", e.name);
        }
    }
    for p in bf16_model.trainable() {
        assert_eq!(p.grad().kind(), Kind::Float);
    }
}

#[test]
fn loss_scaling_skips_an_overflowing_step_and_reproduces_a_finite_one() {
    let case = resnet18_mocov2();
    let scaled = |init_scale: f64| {
        MixedPrecision::fp32().with_loss_scaler(LossScaler::new(LossScalerConfig {
            init_scale,
            ..LossScalerConfig::default()
        }))
    };
    // 2²⁰⁰ is infinite in fp32: every gradient overflows.
    let (moco, views) = model_and_views(&case, 7);
    let before = snapshot(&moco);
    let mut sgd = Sgd::new(moco.trainable(), SGD);
    let mut precision = scaled(2f64.powi(200));
    let report = train_step_with_precision(
        &moco,
        &mut sgd,
        &views,
        case.lr,
        true,
        None,
        None,
        &mut precision,
    )
    .expect("overflowing step");
    assert!(report.skipped, "the step was skipped");
    assert_eq!(report.loss_scale, Some(2f64.powi(200)));
    assert_eq!(
        precision.scaler().map(LossScaler::scale),
        Some(2f64.powi(199))
    );
    let after = snapshot(&moco);
    for (name, t) in &before {
        if name.starts_with("encoder_q.")
            && !name.contains("running_")
            && !name.ends_with("num_batches_tracked")
        {
            assert!(after[name].equal(t), "{name} changed in a skipped step");
        }
    }
    assert_eq!(moco.queue_ptr(), case.batch, "the keys were enqueued");
    assert!(sgd.state().is_empty(), "no momentum buffer was created");

    // A power-of-two scale: the step is the fp32 step.
    let (plain, views) = model_and_views(&case, 7);
    let (with_scaling, _) = model_and_views(&case, 7);
    let mut sgd = Sgd::new(plain.trainable(), SGD);
    let fp32 = train_step(
        &plain,
        &mut sgd,
        &clone_views(&views),
        case.lr,
        true,
        None,
        None,
    )
    .expect("fp32 step");
    let mut sgd = Sgd::new(with_scaling.trainable(), SGD);
    let mut precision = scaled(1024.0);
    let report = train_step_with_precision(
        &with_scaling,
        &mut sgd,
        &views,
        case.lr,
        true,
        None,
        None,
        &mut precision,
    )
    .expect("scaled step");
    assert!(!report.skipped);
    assert_eq!(report.losses, fp32.losses);
    let (a, b) = (snapshot(&plain), snapshot(&with_scaling));
    let worst = a
        .iter()
        .filter(|(_, t)| t.is_floating_point())
        .map(|(name, t)| relative_error(&b[name], t))
        .fold(0.0f64, f64::max);
    eprintln!("scaled vs fp32 step: worst relative difference {worst:e}");
    assert!(worst <= 1e-6, "{worst:e}");
}

#[test]
fn fp16_on_the_cpu_is_a_permanent_configuration_error_naming_precision() {
    let message = MixedPrecision::new(Precision::Fp16, Device::Cpu)
        .expect_err("fp16 needs CUDA")
        .to_string();
    assert!(message.contains("precision fp16"), "{message}");

    let mut config = config::standalone(&Overrides::default()).expect("the embedded run resolves");
    config.recipe.precision = Precision::Fp16;
    config.world.gpus_per_node = 0;
    config.world.nodes = 1;
    config.world.procs_per_node = 1;
    config.world.world_size = 1;
    let options = Options {
        checkpoint_dir: None,
        resume: false,
        seed: 0,
        data_threads: 0,
        prefetch: 1,
        log_every: 1,
        metrics_port: None,
        collective_timeout: Duration::from_secs(5),
        layout: Layout::Auto,
    };
    let err = trainer::run(&config, &options).expect_err("fp16 on the CPU is refused");
    assert!(matches!(err, TrainError::Config(_)), "{err:?}");
    assert!(err.to_string().contains("precision fp16"), "{err}");
    assert!(err.is_permanent());
    assert_eq!(err.exit_code(), PERMANENT_EXIT_CODE);

    // The binary exits with the permanent code and says why.
    let dir = tempfile::tempdir().expect("temp dir");
    let path = common::write_config(dir.path(), &config);
    let output = common::kontrast(
        dir.path(),
        &["train", "--config", path.to_str().expect("UTF-8 path")],
    )
    .output()
    .expect("run kontrast train");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(
        output.status.code(),
        Some(i32::from(PERMANENT_EXIT_CODE)),
        "{stderr}"
    );
    assert!(stderr.contains("precision fp16"), "{stderr}");
}

/// The whole trainer in bf16: a short run on real images trains, checkpoints, and stays close to
/// the same run in fp32 (without being identical to it: autocast was on).
#[test]
fn a_bf16_run_trains_and_stays_close_to_the_fp32_run() {
    tch::set_num_threads(1);
    let dir = tempfile::tempdir().expect("temp dir");
    let data = common::fashion_mnist_subset(&dir.path().join("data"), 32);
    let run = |precision: Precision| {
        let mut config = common::small_run(&data, 1, 1, 16, 32);
        config.recipe.precision = precision;
        let checkpoints = dir.path().join(format!("{precision:?}"));
        let outcome = trainer::run(
            &config,
            &Options {
                checkpoint_dir: Some(checkpoints.clone()),
                resume: false,
                seed: 3,
                data_threads: 0,
                prefetch: 1,
                log_every: 1,
                metrics_port: Some(0),
                collective_timeout: Duration::from_secs(30),
                layout: Layout::Auto,
            },
        )
        .expect("training runs");
        let names: Vec<String> = std::fs::read_dir(&checkpoints)
            .expect("checkpoint directory")
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .collect();
        assert!(!names.is_empty(), "no checkpoint written");
        outcome.epoch_losses[0]
    };
    let fp32 = run(Precision::Fp32);
    let bf16 = run(Precision::Bf16);
    let err = relative(bf16, fp32);
    eprintln!("mean loss of the epoch: bf16 {bf16} fp32 {fp32} relative {err:.3e}");
    assert!(bf16.is_finite() && bf16 != fp32, "bf16 {bf16} fp32 {fp32}");
    assert!(
        err <= FP32_LOSS_TOLERANCE,
        "bf16 {bf16} fp32 {fp32} ({err:e})"
    );
}
