//! MoCo training steps in Rust and in the PyTorch reference (`tests/reference/moco_reference.py`,
//! driven by `tests/reference/train_step_bench.py`), side by side in one run: the same model from
//! the same initial weights (written as safetensors and loaded there with `strict=True`), the same
//! batches, the same number of threads, rounds alternating between the two so that load from
//! other processes hits both alike.
//!
//! `cargo bench -p kontrast-worker --bench train_step -- [--config moco,revisiting] [--arch ...]
//! [--size 32] [--batch 64] [--threads N] [--steps 3] [--rounds 3] [--device cpu|cuda]
//! [--precision fp32|bf16] [--layout auto|channels-last|contiguous] [--check] [--json FILE]`
//!
//! Each round runs warm-up steps, then timed `train_step` calls (the trainer's step), then steps
//! replicated phase by phase from the public API with a timer (and, on CUDA, a synchronisation)
//! around each phase. The headline numbers are the median over rounds of the timed steps; the
//! phase breakdown is the median over rounds of the replicated steps.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, bail, ensure};
use clap::{Parser, ValueEnum};
use kontrast_api::config::{Arch, Precision};
use kontrast_worker::model::head::ProjectionHead;
use kontrast_worker::model::loss::{KnnTerm, contrastive_loss};
use kontrast_worker::model::memory_format::Layout;
use kontrast_worker::model::moco::virtual_ranks;
use kontrast_worker::model::params::Params;
use kontrast_worker::model::resnet::ResNet;
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::precision::MixedPrecision;
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::train_step_with_precision;
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use common::{median, python, run_reference};

const SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 1e-4,
};
const LR: f64 = 0.03;
/// Distinct batches cycled through: enough that no step sees the previous step's tensors.
const BATCHES: usize = 2;
/// The phases of a step, in order, as both sides report them.
const PHASES: [&str; 7] = [
    "forward_query",
    "momentum_update",
    "key_forward",
    "loss",
    "backward",
    "optimizer",
    "enqueue",
];

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum Recipe {
    /// MoCo v2: one query and one key crop.
    Moco,
    /// Revisiting: two large crops plus small crops, with the kNN loss.
    Revisiting,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum ArchArg {
    Resnet18,
    Resnet50,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DeviceArg {
    Cpu,
    Cuda,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum PrecisionArg {
    Fp32,
    Bf16,
}

#[derive(Debug, Parser)]
#[command(about = "MoCo training steps: Rust versus the PyTorch reference")]
struct Args {
    /// Recipes to run, comma-separated.
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = [Recipe::Moco, Recipe::Revisiting])]
    config: Vec<Recipe>,
    /// Backbone.
    #[arg(long, value_enum, default_value_t = ArchArg::Resnet18)]
    arch: ArchArg,
    /// Side of the large crops in pixels.
    #[arg(long, default_value_t = 32)]
    size: i64,
    /// Side of the small crops (Revisiting).
    #[arg(long, default_value_t = 16)]
    small_size: i64,
    /// Small crops per image (Revisiting).
    #[arg(long, default_value_t = 2)]
    small_crops: i64,
    /// 3×3 stride-1 stem without max-pool; by default for crops under 96 px.
    #[arg(long)]
    cifar_stem: Option<bool>,
    /// Images per step.
    #[arg(long, default_value_t = 64)]
    batch: i64,
    /// Queue length K (a multiple of the batch).
    #[arg(long, default_value_t = 4096)]
    queue: i64,
    /// Intra-op threads on both sides (libtorch's and torch.set_num_threads); 0 = all cores.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Untimed steps at the start of every round. One is not enough for the steady state: with
    /// one, the Rust step measured 0.44 s (10 %) above the sum of its own phases timed right
    /// after it, and equal to it from three on (allocator and page warm-up).
    #[arg(long, default_value_t = 3)]
    warmup: usize,
    /// Timed steps per round and side.
    #[arg(long, default_value_t = 3)]
    steps: usize,
    /// Phase-timed steps per round and side.
    #[arg(long, default_value_t = 2)]
    phase_steps: usize,
    /// Rounds (each: Rust, then Python); the median is reported.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[arg(long, value_enum, default_value_t = DeviceArg::Cpu)]
    device: DeviceArg,
    /// fp32, or bf16 autocast over the forward pass (as `kontrast train --precision bf16`).
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// Convolution weight layout (as `kontrast train --layout`); applied to both sides.
    #[arg(long, value_enum, default_value_t = Layout::Auto)]
    layout: Layout,
    /// Shuffle BN over virtual ranks on the Rust side (the trainer's default); the reference
    /// has no shuffle, so the comparison is of the same computation only without it.
    #[arg(long)]
    shuffle_keys: bool,
    /// Before timing, check that the first step's losses agree with the reference (relative
    /// 1e-3 in fp32, 5e-2 under bf16 autocast); exits 1 if they do not.
    #[arg(long)]
    check: bool,
    /// Only the check, no timing.
    #[arg(long)]
    check_only: bool,
    /// Also write the results as JSON here.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Python interpreter with torch (default: the repository's `.venv`).
    #[arg(long)]
    python: Option<PathBuf>,
    /// Passed by `cargo bench`; ignored.
    #[arg(long, hide = true)]
    bench: bool,
}

/// One benchmark case: a model and the shape of its batches.
struct Case {
    recipe: Recipe,
    spec: MocoSpec,
    batch: i64,
    large: i64,
    /// (side, crops per image)
    small: Option<(i64, i64)>,
}

impl Case {
    fn new(recipe: Recipe, args: &Args) -> Self {
        let arch = match args.arch {
            ArchArg::Resnet18 => Arch::Resnet18,
            ArchArg::Resnet50 => Arch::Resnet50,
        };
        let spec = MocoSpec {
            arch,
            cifar_stem: args.cifar_stem.unwrap_or(args.size < 96),
            // The reference builds torchvision's ResNets, whose first stage has 64 channels.
            width: 64,
            dim: 128,
            queue_size: args.queue,
            mlp: true,
            momentum: 0.99,
            temperature: 0.2,
            knn: (recipe == Recipe::Revisiting).then_some((5, 0.4)),
            shuffle_keys: args.shuffle_keys,
        };
        Self {
            recipe,
            spec,
            batch: args.batch,
            large: args.size,
            small: (recipe == Recipe::Revisiting).then_some((args.small_size, args.small_crops)),
        }
    }

    fn label(&self) -> String {
        let arch = match self.spec.arch {
            Arch::Resnet18 => "ResNet-18",
            Arch::Resnet50 => "ResNet-50",
        };
        let crops = match self.small {
            Some((side, count)) => format!("2×{} + {count}×{side} px, kNN loss", self.large),
            None => format!("2×{} px", self.large),
        };
        let recipe = match self.recipe {
            Recipe::Moco => "MoCo v2",
            Recipe::Revisiting => "Revisiting",
        };
        let stem = if self.spec.cifar_stem {
            ", CIFAR stem"
        } else {
            ""
        };
        format!("{recipe}, {arch}{stem}, {crops}, batch {}", self.batch)
    }

    /// The reference's `config.json` (field names of `moco_reference.py`) plus the bench's own.
    fn python_config(&self, args: &Args, threads: usize) -> Value {
        let arch = match self.spec.arch {
            Arch::Resnet18 => "resnet18",
            Arch::Resnet50 => "resnet50",
        };
        json!({
            "arch": arch,
            "cifar_stem": self.spec.cifar_stem,
            "dim": self.spec.dim,
            "queue_size": self.spec.queue_size,
            "mlp": self.spec.mlp,
            "momentum": self.spec.momentum,
            "temperature": self.spec.temperature,
            "knn": self.spec.knn.map(|(k, w)| json!({"top_k": k, "weight": w})),
            "lr": LR,
            "sgd_momentum": SGD.momentum,
            "weight_decay": SGD.weight_decay,
            "threads": threads,
            "device": device_name(args.device),
            "autocast": (args.precision == PrecisionArg::Bf16).then_some("bf16"),
            "channels_last": args.layout.channels_last(device(args.device)),
            "batches": BATCHES,
            "warmup": args.warmup,
            "steps": args.steps,
            "phase_steps": args.phase_steps,
        })
    }
}

fn device(arg: DeviceArg) -> Device {
    match arg {
        DeviceArg::Cpu => Device::Cpu,
        DeviceArg::Cuda => Device::Cuda(0),
    }
}

fn device_name(arg: DeviceArg) -> &'static str {
    match arg {
        DeviceArg::Cpu => "cpu",
        DeviceArg::Cuda => "cuda",
    }
}

/// Waits for queued CUDA work, so a timer reading covers the work it is meant to.
fn sync(device: Device) {
    if let Device::Cuda(index) = device {
        tch::Cuda::synchronize(index as i64);
    }
}

fn l2_normalize(x: &Tensor, dim: i64) -> Tensor {
    // As the model's: x / max(‖x‖, 1e-12).
    let norm = x
        .norm_scalaropt_dim(2, [dim].as_slice(), true)
        .clamp_min(1e-12);
    x / norm
}

/// The key encoder rebuilt from public parts, its tensors aliasing the model's `encoder_k.*`, so
/// the key forward pass can be timed on its own while `Moco::momentum_update` still moves it.
struct KeyEncoder {
    backbone: ResNet,
    head: ProjectionHead,
}

impl KeyEncoder {
    fn new(moco: &Moco, device: Device) -> anyhow::Result<Self> {
        let spec = moco.spec();
        let mut params = Params::default();
        let (backbone, head) = {
            let mut scope = params.scope("encoder_k", device, false);
            let backbone = ResNet::new(scope.reborrow(), spec.arch, spec.cifar_stem, spec.width);
            let head =
                ProjectionHead::new(scope.reborrow(), backbone.feature_dim(), spec.dim, spec.mlp);
            (backbone, head)
        };
        for e in params.entries() {
            let theirs = moco
                .params()
                .get(&e.name)
                .with_context(|| format!("the model has no {}", e.name))?;
            // set_data makes this tensor share the model's storage (and strides): one encoder.
            e.tensor.shallow_clone().set_data(&theirs.tensor);
            ensure!(
                e.tensor.data_ptr() == theirs.tensor.data_ptr(),
                "{} does not alias the model's tensor",
                e.name
            );
        }
        Ok(Self { backbone, head })
    }

    /// (normalised keys, normalised backbone features), shuffled into BN groups as the model's
    /// single-process key pass does when `shuffle_keys` is on.
    fn encode(&self, im_k: &Tensor, shuffle: bool) -> (Tensor, Tensor) {
        let encode = |x: &Tensor| {
            let h = self.backbone.forward_t(x, true);
            let z = self.head.forward(&h);
            (l2_normalize(&z, 1), l2_normalize(&h, 1))
        };
        let b = im_k.size()[0];
        let splits = if shuffle { virtual_ranks(b) } else { 1 };
        if splits == 1 {
            return encode(im_k);
        }
        let perm = Tensor::randperm(b, (Kind::Int64, im_k.device()));
        let (keys, features): (Vec<Tensor>, Vec<Tensor>) = im_k
            .index_select(0, &perm)
            .chunk(splits, 0)
            .iter()
            .map(encode)
            .unzip();
        let unshuffle = perm.argsort(0, false);
        (
            Tensor::cat(&keys, 0).index_select(0, &unshuffle),
            Tensor::cat(&features, 0).index_select(0, &unshuffle),
        )
    }
}

/// One training step as `train_step_with_precision` runs it (fp32 or bf16 autocast, no loss
/// scaler, no gang), spelled out from the public API so that each phase can be timed; adds each
/// phase's seconds to `times` and returns (InfoNCE, kNN, total).
#[allow(
    clippy::too_many_arguments,
    reason = "the step's inputs plus the timers"
)]
fn phased_step(
    moco: &Moco,
    keys_encoder: &KeyEncoder,
    sgd: &mut Sgd,
    views: &Views,
    precision: &MixedPrecision,
    device: Device,
    times: &mut [f64; PHASES.len()],
) -> anyhow::Result<(f64, Option<f64>, f64)> {
    let spec = *moco.spec();
    let mut clock = Instant::now();
    let mut lap = |phase: usize| {
        sync(device);
        let now = Instant::now();
        times[phase] += (now - clock).as_secs_f64();
        clock = now;
    };
    sgd.zero_grad();
    let guard = precision.enter_forward()?;
    let b = views.key.size()[0];
    let large_rows = views.query.size()[0] / b;
    let (mut h, mut z) = moco.encoder_q().forward_t(&views.query, true);
    let mut small_rows = 0;
    if let Some(small) = &views.small {
        small_rows = small.size()[0] / b;
        let (h_small, z_small) = moco.encoder_q().forward_t(small, true);
        h = Tensor::cat(&[&h, &h_small], 0);
        z = Tensor::cat(&[&z, &z_small], 0);
    }
    let q = l2_normalize(&z, 1);
    lap(0);
    moco.momentum_update();
    lap(1);
    let (k, key_features) = tch::no_grad(|| keys_encoder.encode(&views.key, spec.shuffle_keys));
    lap(2);
    let mut positives = vec![k.repeat_interleave_self_int(large_rows, 0, None)];
    if small_rows > 0 {
        positives.push(k.repeat_interleave_self_int(small_rows, 0, None));
    }
    let k_rows = Tensor::cat(&positives, 0);
    let queue = &moco.params().get("queue").context("no queue")?.tensor;
    let queue_features = moco.params().get("queue_backbone").map(|e| &e.tensor);
    let hq = spec.knn.map(|_| l2_normalize(&h, 1));
    let knn = match (spec.knn, queue_features, &hq) {
        (Some((top_k, weight)), Some(queue_features), Some(hq)) => Some(KnnTerm {
            query_features: hq,
            queue_features,
            top_k,
            weight,
        }),
        _ => None,
    };
    let losses = contrastive_loss(&q, &k_rows, queue, spec.temperature, knn);
    drop(guard);
    // The step reads the loss (its divergence check) before the backward pass.
    let total = losses.total.double_value(&[]);
    ensure!(total.is_finite(), "the loss is {total}");
    lap(3);
    losses.total.backward();
    lap(4);
    sgd.step(LR);
    lap(5);
    moco.enqueue(&k, queue_features.map(|_| &key_features))?;
    lap(6);
    Ok((
        losses.info_nce.double_value(&[]),
        losses.knn.as_ref().map(|t| t.double_value(&[])),
        total,
    ))
}

/// Copies every tensor of `from` into `to` (same spec): two models in the same state.
fn copy_state(from: &Moco, to: &Moco) -> anyhow::Result<()> {
    tch::no_grad(|| {
        for e in from.params().entries() {
            let mine = to.params().get(&e.name).context("models differ")?;
            mine.tensor.shallow_clone().copy_(&e.tensor);
        }
        Ok(())
    })
}

struct Setup {
    moco: Moco,
    precision: MixedPrecision,
    views: Vec<Views>,
    dir: tempfile::TempDir,
}

/// Builds the model, writes its initial state and the batches for the reference.
fn setup(case: &Case, args: &Args, threads: usize) -> anyhow::Result<Setup> {
    let device = device(args.device);
    ensure!(
        case.spec.queue_size % case.batch == 0,
        "the queue ({}) must be a multiple of the batch ({})",
        case.spec.queue_size,
        case.batch
    );
    tch::manual_seed(7);
    let moco = Moco::new(case.spec, device);
    if args.layout.channels_last(device) {
        moco.set_channels_last()?;
    }
    let precision = match args.precision {
        PrecisionArg::Fp32 => MixedPrecision::new(Precision::Fp32, device)?,
        PrecisionArg::Bf16 => MixedPrecision::new(Precision::Bf16, device)?,
    };
    let dir = tempfile::tempdir()?;
    let init: Vec<(String, Tensor)> = moco
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.tensor.to_device(Device::Cpu).contiguous()))
        .collect();
    Tensor::write_safetensors(&init, dir.path().join("init.safetensors"))?;
    let opts = (Kind::Float, device);
    let mut batches = Vec::new();
    let mut views = Vec::new();
    for step in 0..BATCHES {
        let query = Tensor::randn([case.batch, 3, case.large, case.large], opts);
        let key = Tensor::randn([case.batch, 3, case.large, case.large], opts);
        let small = case
            .small
            .map(|(side, count)| Tensor::randn([case.batch * count, 3, side, side], opts));
        batches.push((format!("step{step}.query"), query.to_device(Device::Cpu)));
        batches.push((format!("step{step}.key"), key.to_device(Device::Cpu)));
        if let Some(s) = &small {
            batches.push((format!("step{step}.small"), s.to_device(Device::Cpu)));
        }
        views.push(Views { query, key, small });
    }
    Tensor::write_safetensors(&batches, dir.path().join("batches.safetensors"))?;
    std::fs::write(
        dir.path().join("config.json"),
        case.python_config(args, threads).to_string(),
    )?;
    Ok(Setup {
        moco,
        precision,
        views,
        dir,
    })
}

/// Runs `train_step_bench.py` in `dir` (mode `check` or `time`) and returns its JSON.
fn run_python(args: &Args, dir: &Path, mode: &str) -> anyhow::Result<Value> {
    let out = format!("{mode}.json");
    run_reference(
        &python(args.python.as_deref()),
        "train_step_bench.py",
        [
            mode,
            "--init",
            "init.safetensors",
            "--batches",
            "batches.safetensors",
            "--config",
            "config.json",
            "--out",
            &out,
        ],
        Some(dir),
        Path::new(&out),
    )
}

/// First-step losses: `train_step` and the phase-by-phase step in Rust, and the reference's
/// own forward pass in Python, all from the same state and batch. Returns the report as JSON.
fn check(case: &Case, args: &Args, s: &Setup) -> anyhow::Result<Value> {
    ensure!(
        !case.spec.shuffle_keys,
        "--check compares the unshuffled key pass (the reference has no shuffle BN)"
    );
    let device = device(args.device);
    let tolerance = match args.precision {
        PrecisionArg::Fp32 => 1e-3,
        PrecisionArg::Bf16 => 5e-2,
    };
    let twin = Moco::new(case.spec, device);
    if args.layout.channels_last(device) {
        twin.set_channels_last()?;
    }
    copy_state(&s.moco, &twin)?;
    let keys = KeyEncoder::new(&twin, device)?;
    let mut sgd = Sgd::new(s.moco.trainable(), SGD);
    let mut precision = match args.precision {
        PrecisionArg::Fp32 => MixedPrecision::new(Precision::Fp32, device)?,
        PrecisionArg::Bf16 => MixedPrecision::new(Precision::Bf16, device)?,
    };
    let ours = train_step_with_precision(
        &s.moco,
        &mut sgd,
        &s.views[0],
        LR,
        true,
        None,
        None,
        &mut precision,
    )?
    .losses;
    let mut twin_sgd = Sgd::new(twin.trainable(), SGD);
    let mut times = [0.0; PHASES.len()];
    let phased = phased_step(
        &twin,
        &keys,
        &mut twin_sgd,
        &s.views[0],
        &s.precision,
        device,
        &mut times,
    )?;
    let reference = run_python(args, s.dir.path(), "check")?;
    let get = |v: &Value, name: &str| v.get(name).and_then(Value::as_f64);
    let mut rows = Vec::new();
    let mut ok = true;
    let mut compare = |what: &str, a: Option<f64>, b: Option<f64>| {
        let (a, b) = match (a, b) {
            (Some(a), Some(b)) => (a, b),
            (None, None) => return,
            _ => {
                ok = false;
                rows.push(json!({"what": what, "ours": a, "reference": b, "ok": false}));
                return;
            }
        };
        let err = ((a - b) / b).abs();
        let pass = err <= tolerance;
        ok &= pass;
        rows.push(json!({"what": what, "ours": a, "reference": b, "relative": err, "ok": pass}));
    };
    for (side, losses) in [
        ("train_step", (ours.info_nce, ours.knn, ours.total)),
        ("phase-by-phase", phased),
    ] {
        compare(
            &format!("{side} InfoNCE"),
            Some(losses.0),
            get(&reference, "info_nce"),
        );
        compare(&format!("{side} kNN"), losses.1, get(&reference, "knn"));
        compare(
            &format!("{side} total"),
            Some(losses.2),
            get(&reference, "total"),
        );
    }
    compare(
        "reference phase-by-phase total",
        get(&reference, "phased_total"),
        get(&reference, "total"),
    );
    for row in &rows {
        println!("check: {row}");
    }
    Ok(json!({"ok": ok, "tolerance": tolerance, "rows": rows}))
}

/// One Rust round: warm-up, timed `train_step` calls, phase-timed steps. Returns (seconds per
/// step, seconds per step of each phase).
fn rust_round(
    args: &Args,
    s: &mut Setup,
    sgd: &mut Sgd,
    keys: &KeyEncoder,
) -> anyhow::Result<(f64, [f64; PHASES.len()])> {
    let device = device(args.device);
    let mut step = 0;
    let mut run = |s: &mut Setup, sgd: &mut Sgd| -> anyhow::Result<()> {
        let views = &s.views[step % BATCHES];
        step += 1;
        train_step_with_precision(&s.moco, sgd, views, LR, true, None, None, &mut s.precision)?;
        Ok(())
    };
    for _ in 0..args.warmup {
        run(s, sgd)?;
    }
    sync(device);
    let start = Instant::now();
    for _ in 0..args.steps {
        run(s, sgd)?;
    }
    sync(device);
    let per_step = start.elapsed().as_secs_f64() / args.steps as f64;
    let mut times = [0.0; PHASES.len()];
    for i in 0..args.phase_steps {
        phased_step(
            &s.moco,
            keys,
            sgd,
            &s.views[i % BATCHES],
            &s.precision,
            device,
            &mut times,
        )?;
    }
    for t in &mut times {
        *t /= args.phase_steps.max(1) as f64;
    }
    Ok((per_step, times))
}

fn phases_of(v: &Value) -> anyhow::Result<[f64; PHASES.len()]> {
    let mut out = [0.0; PHASES.len()];
    for (slot, name) in out.iter_mut().zip(PHASES) {
        *slot = v
            .get("phases")
            .and_then(|p| p.get(name))
            .and_then(Value::as_f64)
            .with_context(|| format!("the reference reported no phase {name}"))?;
    }
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ensure!(
        args.steps > 0 && args.rounds > 0,
        "--steps and --rounds must be positive"
    );
    if args.device == DeviceArg::Cuda && !tch::Cuda::is_available() {
        bail!("--device cuda: libtorch sees no CUDA device");
    }
    let threads = if args.threads == 0 {
        std::thread::available_parallelism().map_or(1, usize::from)
    } else {
        args.threads
    };
    tch::set_num_threads(threads as i32);
    println!(
        "device {} | precision {:?} | channels-last {} | threads {threads} | rounds {} × ({} warm-up + {} timed + {} phase-timed steps)",
        device_name(args.device),
        args.precision,
        args.layout.channels_last(device(args.device)),
        args.rounds,
        args.warmup,
        args.steps,
        args.phase_steps
    );
    let mut results = Vec::new();
    let mut checks_ok = true;
    for &recipe in &args.config {
        let case = Case::new(recipe, &args);
        let mut s = setup(&case, &args, threads)?;
        let mut result = BTreeMap::new();
        result.insert("config", json!(case.label()));
        result.insert("batch", json!(case.batch));
        if args.check || args.check_only {
            let report = check(&case, &args, &s)?;
            checks_ok &= report["ok"].as_bool() == Some(true);
            result.insert("check", report);
            // The check stepped the model: start the timing from the written state again.
            drop(s);
            s = setup(&case, &args, threads)?;
        }
        if args.check_only {
            results.push(result);
            continue;
        }
        let mut sgd = Sgd::new(s.moco.trainable(), SGD);
        let keys = KeyEncoder::new(&s.moco, device(args.device))?;
        let (mut rust, mut python) = (Vec::new(), Vec::new());
        let (mut rust_phases, mut python_phases) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let (per_step, phases) = rust_round(&args, &mut s, &mut sgd, &keys)?;
            let reference = run_python(&args, s.dir.path(), "time")?;
            let py_step = reference
                .get("step_s")
                .and_then(Value::as_f64)
                .context("the reference reported no step time")?;
            eprintln!(
                "{}: round {round}: Rust {per_step:.4} s/step, Python {py_step:.4} s/step",
                case.label()
            );
            rust.push(per_step);
            python.push(py_step);
            rust_phases.push(phases);
            python_phases.push(phases_of(&reference)?);
        }
        let rust_s = median(&rust);
        let python_s = median(&python);
        let phase_medians = |all: &[[f64; PHASES.len()]]| -> BTreeMap<&str, f64> {
            PHASES
                .iter()
                .enumerate()
                .map(|(i, name)| (*name, median(&all.iter().map(|p| p[i]).collect::<Vec<_>>())))
                .collect()
        };
        result.insert("rust_s_per_step", json!(rust_s));
        result.insert("python_s_per_step", json!(python_s));
        result.insert("ratio", json!(rust_s / python_s));
        result.insert("rust_images_per_s", json!(case.batch as f64 / rust_s));
        result.insert("python_images_per_s", json!(case.batch as f64 / python_s));
        result.insert("rust_rounds", json!(rust));
        result.insert("python_rounds", json!(python));
        result.insert("rust_phases", json!(phase_medians(&rust_phases)));
        result.insert("python_phases", json!(phase_medians(&python_phases)));
        results.push(result);
    }

    if !args.check_only {
        println!();
        println!(
            "| config | Rust s/step | Python s/step | ratio (Rust/Python) | Rust img/s | Python img/s |"
        );
        println!("|---|---:|---:|---:|---:|---:|");
        for r in &results {
            println!(
                "| {} | {:.4} | {:.4} | {:.2} | {:.1} | {:.1} |",
                r["config"].as_str().unwrap_or_default(),
                r["rust_s_per_step"].as_f64().unwrap_or(f64::NAN),
                r["python_s_per_step"].as_f64().unwrap_or(f64::NAN),
                r["ratio"].as_f64().unwrap_or(f64::NAN),
                r["rust_images_per_s"].as_f64().unwrap_or(f64::NAN),
                r["python_images_per_s"].as_f64().unwrap_or(f64::NAN),
            );
        }
        println!();
        println!("Per phase, seconds per step (phase-timed steps; Rust / Python):");
        println!();
        print!("| config |");
        for name in PHASES {
            print!(" {name} |");
        }
        println!();
        print!("|---|");
        for _ in PHASES {
            print!("---:|");
        }
        println!();
        for r in &results {
            print!("| {} |", r["config"].as_str().unwrap_or_default());
            for name in PHASES {
                print!(
                    " {:.4} / {:.4} |",
                    r["rust_phases"][name].as_f64().unwrap_or(f64::NAN),
                    r["python_phases"][name].as_f64().unwrap_or(f64::NAN)
                );
            }
            println!();
        }
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "device": device_name(args.device),
            "precision": format!("{:?}", args.precision),
            "channels_last": args.layout.channels_last(device(args.device)),
            "threads": threads,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "steps": args.steps,
            "phase_steps": args.phase_steps,
            "shuffle_keys": args.shuffle_keys,
            "results": results,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    if !checks_ok {
        bail!("the first-step losses disagree with the reference (see the check lines above)");
    }
    Ok(())
}
