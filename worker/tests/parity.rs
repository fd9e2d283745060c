//! Training steps of our MoCo against the PyTorch reference in
//! `tests/reference/moco_reference.py`: same initial weights and queues (exported through
//! safetensors and loaded there into torchvision models with `strict=True`, which also proves the
//! parameter names and shapes are torchvision's), same batches. The losses, the gradients, the
//! updated query encoder, the momentum-updated key encoder, the BN statistics and the queues must
//! agree.
//!
//! Tolerances. fp32 (the contract): every tensor within 1e-4 of the reference relative to
//! the tensor's largest magnitude, every loss within 1e-4 relative,
//! gradients within 5e-3 of their largest element.
//! Small random-init ResNets on random inputs are ill-conditioned beyond one step in fp32 — the
//! reference itself, run in fp32 and in fp64, disagrees by more than 100 % on ResNet-50's
//! second-step layer-4 gradients — so the multi-step cases (SGD momentum buffers, the queue
//! ring, repeated momentum updates, the kNN loss against a partly filled queue) run both
//! implementations in float64, where every bound is 1e-9.

mod reference;

use kontrast_api::config::Arch;
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::train_step;
use reference::relative_error;
use tch::{Device, Kind, Tensor};

const SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 1e-4,
};

struct Case {
    spec: MocoSpec,
    batch: i64,
    large: i64,
    /// (side, crops per image)
    small: Option<(i64, i64)>,
    steps: usize,
    lr: f64,
    kind: Kind,
}

impl Case {
    fn tolerance(&self) -> f64 {
        if self.kind == Kind::Double {
            1e-9
        } else {
            1e-4
        }
    }

    /// Gradients are compared element-wise against the largest one, where fp32 summation order
    /// shows more than in the weights they update.
    fn gradient_tolerance(&self) -> f64 {
        if self.kind == Kind::Double {
            1e-9
        } else {
            5e-3
        }
    }
}

fn assert_close(what: &str, ours: f64, reference: f64, tolerance: f64) {
    let err = ((ours - reference) / reference).abs();
    assert!(
        err <= tolerance,
        "{what}: ours {ours} reference {reference} (relative {err:e})"
    );
}

fn run(case: Case) {
    tch::set_num_threads(1);
    tch::manual_seed(11);
    let dir = tempfile::tempdir().expect("temp dir");
    let tolerance = case.tolerance();
    let opts = (case.kind, Device::Cpu);
    let moco = Moco::new(case.spec, Device::Cpu);
    moco.set_float_kind(case.kind);
    let before: Vec<(String, Tensor)> = moco
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.tensor.detach().copy()))
        .collect();
    Tensor::write_safetensors(&before, dir.path().join("init.safetensors")).expect("write init");

    let mut batches = Vec::new();
    let mut views = Vec::new();
    for step in 0..case.steps {
        let query = Tensor::randn([case.batch, 3, case.large, case.large], opts);
        let key = Tensor::randn([case.batch, 3, case.large, case.large], opts);
        let small = case
            .small
            .map(|(side, count)| Tensor::randn([case.batch * count, 3, side, side], opts));
        batches.push((format!("step{step}.query"), query.copy()));
        batches.push((format!("step{step}.key"), key.copy()));
        if let Some(s) = &small {
            batches.push((format!("step{step}.small"), s.copy()));
        }
        views.push(Views { query, key, small });
    }
    Tensor::write_safetensors(&batches, dir.path().join("batches.safetensors"))
        .expect("write batches");
    let dtype = if case.kind == Kind::Double {
        "float64"
    } else {
        "float32"
    };
    let config = reference::config(&case.spec, SGD, case.lr, case.steps, dtype);
    std::fs::write(dir.path().join("config.json"), config.to_string()).expect("write config");

    let mut sgd = Sgd::new(moco.trainable(), SGD);
    let mut reports = Vec::new();
    let mut grads = Vec::new();
    for v in &views {
        reports.push(train_step(&moco, &mut sgd, v, case.lr, true, None, None).expect("our step"));
        let step_grads: Vec<(String, Tensor)> = moco
            .params()
            .parameters()
            .filter(|e| e.name.starts_with("encoder_q."))
            .map(|e| (e.name.clone(), e.tensor.grad().copy()))
            .collect();
        grads.push(step_grads);
    }
    let reference = reference::run(dir.path());

    for (step, ours) in reports.iter().enumerate() {
        let get = |name: &str| {
            reference
                .get(&format!("loss.step{step}.{name}"))
                .map(|t| t.double_value(&[0]))
        };
        let info_nce = get("info_nce").expect("reference InfoNCE");
        assert_close(
            &format!("step {step} InfoNCE"),
            ours.losses.info_nce,
            info_nce,
            tolerance,
        );
        assert_eq!(
            ours.losses.knn.is_some(),
            get("knn").is_some(),
            "kNN term presence"
        );
        if let (Some(a), Some(b)) = (ours.losses.knn, get("knn")) {
            assert_close(&format!("step {step} kNN loss"), a, b, tolerance);
        }
        let total = get("total").expect("reference total");
        assert_close(
            &format!("step {step} total"),
            ours.losses.total,
            total,
            tolerance,
        );
    }
    for (step, step_grads) in grads.iter().enumerate() {
        for (name, g) in step_grads {
            let theirs = &reference[&format!("grad.step{step}.{name}")];
            let err = relative_error(g, theirs);
            assert!(
                err <= case.gradient_tolerance(),
                "step {step} gradient of {name}: relative error {err:e}"
            );
        }
    }
    let mut compared = 0;
    for e in moco.params().entries() {
        let theirs = reference
            .get(&e.name)
            .unwrap_or_else(|| panic!("the reference has no {}", e.name));
        assert_eq!(e.tensor.size(), theirs.size(), "{} shape", e.name);
        if e.tensor.kind() == Kind::Int64 {
            assert!(
                e.tensor.equal(theirs),
                "{}: ours {e:?} reference {theirs:?}",
                e.name
            );
        } else {
            let err = relative_error(&e.tensor, theirs);
            assert!(err <= tolerance, "{}: relative error {err:e}", e.name);
        }
        compared += 1;
    }
    let expected = reference
        .keys()
        .filter(|k| !k.starts_with("loss.") && !k.starts_with("grad."))
        .count();
    assert_eq!(
        compared, expected,
        "every tensor of the reference's state_dict is compared"
    );
    // The steps did change the model: a comparison of two untouched copies would prove nothing.
    let moved = before
        .iter()
        .filter(|(name, t)| !moco.params().get(name).is_some_and(|e| e.tensor.equal(t)))
        .count();
    assert!(moved > before.len() / 2, "only {moved} tensors changed");
}

fn resnet50_mocov2() -> MocoSpec {
    MocoSpec {
        arch: Arch::Resnet50,
        cifar_stem: false,
        width: 64,
        dim: 128,
        queue_size: 32,
        mlp: true,
        momentum: 0.99,
        temperature: 0.2,
        knn: None,
        shuffle_keys: true,
    }
}

#[test]
fn a_mocov2_step_on_resnet50_matches_pytorch_in_fp32() {
    run(Case {
        spec: resnet50_mocov2(),
        batch: 8,
        large: 64,
        small: None,
        steps: 1,
        lr: 0.03,
        kind: Kind::Float,
    });
}

#[test]
fn three_mocov2_steps_on_resnet50_match_pytorch_in_fp64() {
    run(Case {
        spec: resnet50_mocov2(),
        batch: 8,
        large: 32,
        small: None,
        steps: 3,
        lr: 0.03,
        kind: Kind::Double,
    });
}

#[test]
fn a_revisiting_step_with_the_knn_loss_on_resnet18_matches_pytorch_in_fp32() {
    run(Case {
        spec: reference::resnet18_revisiting(),
        batch: 4,
        large: 16,
        small: Some((8, 3)),
        steps: 1,
        lr: 0.05,
        kind: Kind::Float,
    });
}

#[test]
fn three_revisiting_steps_with_the_knn_loss_on_resnet18_match_pytorch_in_fp64() {
    run(Case {
        spec: reference::resnet18_revisiting(),
        batch: 4,
        large: 16,
        small: Some((8, 3)),
        steps: 3,
        lr: 0.05,
        kind: Kind::Double,
    });
}
