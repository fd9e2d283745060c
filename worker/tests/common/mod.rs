//! Helpers shared by the multi-process training tests: a small real data set, run configs,
//! spawned processes whose output goes to files, and tensor comparison.
// Each test binary compiles this module and uses only a part of it.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use kontrast_api::config::{Arch, KnnLossConfig, RunConfig};
use kontrast_api::v1alpha1::PAPER_KNN_LOSS;
use kontrast_worker::model::{Moco, MocoSpec};
use kontrast_worker::train::config::{self, Overrides};
use tch::{Device, Kind, Tensor};

/// Variables of the rank contract and `kontrast train`'s environment-backed flags: none may leak
/// in from the environment the tests run in.
const INHERITED: &[&str] = &[
    "RANK",
    "WORLD_SIZE",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "POD_IP",
    "KONTRAST_CONFIG",
    "KONTRAST_CHECKPOINT_DIR",
    "KONTRAST_RESUME",
    "KONTRAST_SEED",
    "KONTRAST_DATA_THREADS",
    "KONTRAST_LOG_EVERY",
    "KONTRAST_METRICS_PORT",
    "KONTRAST_COLLECTIVE_TIMEOUT_SECONDS",
    "KONTRAST_RUN",
    "KONTRAST_LAUNCH_GRACE_SECONDS",
];

/// A port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// Writes the first `n` training images and labels of the system's Fashion-MNIST (the embedded
/// run's data set) as uncompressed IDX files into `dir`: real images, but few enough that an
/// epoch takes seconds.
pub fn fashion_mnist_subset(dir: &Path, n: usize) -> PathBuf {
    let source = config::standalone(&Overrides::default())
        .expect("the embedded run resolves")
        .dataset
        .path;
    let full = kontrast_data::Dataset::open(
        kontrast_data::DatasetFormat::FashionMnist,
        Path::new(&source),
    )
    .unwrap_or_else(|e| panic!("Fashion-MNIST at {source} (dataset-fashion-mnist): {e}"));
    assert!(full.len() >= n, "only {} images", full.len());
    let first = full.load(0).expect("image 0");
    let (width, height) = (first.width, first.height);

    let mut images = Vec::with_capacity(16 + n * width * height);
    images.extend_from_slice(&0x0803u32.to_be_bytes());
    for d in [n, height, width] {
        images.extend_from_slice(&(d as u32).to_be_bytes());
    }
    let mut labels = Vec::with_capacity(8 + n);
    labels.extend_from_slice(&0x0801u32.to_be_bytes());
    labels.extend_from_slice(&(n as u32).to_be_bytes());
    for i in 0..n {
        let image = full.load(i).expect("image");
        // Grey images come back as RGB with three equal channels.
        images.extend(image.data.chunks_exact(3).map(|px| px[0]));
        labels.push(full.label(i).expect("label") as u8);
    }
    std::fs::create_dir_all(dir).expect("data directory");
    std::fs::write(dir.join("train-images-idx3-ubyte"), images).expect("write images");
    std::fs::write(dir.join("train-labels-idx1-ubyte"), labels).expect("write labels");
    dir.to_path_buf()
}

/// The embedded quickstart run on `dataset` with every part of the Revisiting recipe switched on
/// (constrained small crops, AutoAugment, the kNN loss and its second queue), made small enough
/// for tests: 16-pixel large crops, two 8-pixel small crops, a checkpoint every epoch;
/// `world_size` CPU processes on one node sharing the global `batch_size`.
pub fn small_run(
    dataset: &Path,
    world_size: u32,
    epochs: u32,
    batch_size: u32,
    queue_size: u32,
) -> RunConfig {
    let mut config = config::standalone(&Overrides {
        dataset: Some(dataset.display().to_string()),
        dataset_format: Some("fashionMnist".into()),
        epochs: Some(epochs),
        batch_size: Some(batch_size),
        lr: Some(0.06),
        queue_size: Some(queue_size),
    })
    .expect("the test run resolves");
    config.recipe.crops.large.size = 16;
    config.recipe.crops.small.size = 8;
    config.recipe.crops.small.count = 2;
    config.recipe.crops.constrained = true;
    config.recipe.auto_augment_crops = vec![0, 2, 3];
    config.recipe.knn_loss = Some(KnnLossConfig {
        // The queue must hold at least k entries.
        top_k: PAPER_KNN_LOSS.top_k.min(queue_size / 2),
        ..PAPER_KNN_LOSS
    });
    config.checkpoint.every_epochs = 1;
    config.world.nodes = 1;
    config.world.gpus_per_node = 0;
    config.world.procs_per_node = world_size;
    config.world.world_size = world_size;
    config.world.batch_size_per_rank = batch_size / world_size;
    config
}

/// Writes `config` as the JSON document `kontrast train --config` reads.
pub fn write_config(dir: &Path, config: &RunConfig) -> PathBuf {
    let path = dir.join("run.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(config).expect("serialise the run config"),
    )
    .expect("write the run config");
    path
}

/// `kontrast <args>` with a clean environment: one libtorch thread (so results do not depend on
/// how busy the machine is and two ranks do not oversubscribe two cores), info logs without
/// colour codes (tests search them for `field=value`), and a termination message in `dir`.
pub fn kontrast(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kontrast"));
    for name in INHERITED {
        cmd.env_remove(name);
    }
    cmd.args(args)
        .env("OMP_NUM_THREADS", "1")
        .env("MKL_NUM_THREADS", "1")
        .env("RUST_LOG", "info")
        .env("NO_COLOR", "1")
        .env("RUST_BACKTRACE", "0")
        .env("KONTRAST_TERMINATION_LOG", dir.join("termination-log"));
    cmd
}

/// Adds the rendezvous variables of rank `rank` of `world` on 127.0.0.1.
pub fn rank_env(cmd: &mut Command, rank: usize, world: usize, port: u16) {
    cmd.env("RANK", rank.to_string())
        .env("WORLD_SIZE", world.to_string())
        .env("LOCAL_RANK", rank.to_string())
        .env("MASTER_ADDR", "127.0.0.1")
        .env("MASTER_PORT", port.to_string())
        .env("POD_IP", "127.0.0.1");
}

/// A spawned process whose stdout and stderr go to files (pipes could fill up and block it);
/// killed when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
    stdout: PathBuf,
    stderr: PathBuf,
    pub started: Instant,
}

impl Proc {
    pub fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Proc {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"));
        let child = cmd.spawn().expect("spawn a process");
        Proc {
            child,
            name: name.into(),
            stdout,
            stderr,
            started: Instant::now(),
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn output(&self) -> String {
        format!(
            "--- {} stdout\n{}\n--- {} stderr\n{}",
            self.name,
            self.stdout(),
            self.name,
            self.stderr()
        )
    }

    /// Waits for exit; kills the process and fails the test after `limit`.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a process") {
                return status;
            }
            if start.elapsed() > limit {
                self.kill();
                panic!("still running after {limit:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a successful exit.
    pub fn assert_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(status.success(), "failed ({status})\n{}", self.output());
    }

    /// Polls until `done` holds; fails the test if the process exits first or `limit` passes.
    pub fn wait_until(&mut self, what: &str, limit: Duration, mut done: impl FnMut(&Proc) -> bool) {
        let start = Instant::now();
        while !done(self) {
            if let Some(status) = self.child.try_wait().expect("poll a process") {
                panic!("exited ({status}) before {what}\n{}", self.output());
            }
            if start.elapsed() > limit {
                self.kill();
                panic!("no {what} after {limit:?}\n{}", self.output());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until `needle` appears on stderr (where the logs go).
    pub fn wait_for_stderr(&mut self, needle: &str, limit: Duration) {
        self.wait_until(&format!("{needle:?} on stderr"), limit, |p| {
            p.stderr().contains(needle)
        });
    }

    /// SIGKILL, and reaps the process.
    pub fn kill(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Every tensor of a safetensors file, by name.
pub fn read_tensors(path: &Path) -> BTreeMap<String, Tensor> {
    Tensor::read_safetensors(path)
        .unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
        .into_iter()
        .collect()
}

/// ‖a − b‖∞ / ‖b‖∞ (the absolute difference when b is all zeros), in float64.
pub fn relative_difference(a: &Tensor, b: &Tensor) -> f64 {
    assert_eq!(a.size(), b.size(), "shapes differ");
    let a = a.to_kind(Kind::Double);
    let b = b.to_kind(Kind::Double);
    if a.numel() == 0 {
        return 0.0;
    }
    let diff = (&a - &b).abs().max().double_value(&[]);
    let scale = b.abs().max().double_value(&[]);
    if scale > 0.0 { diff / scale } else { diff }
}

/// Asserts that `got` and `want` hold the same names and that every tensor satisfies
/// `close(name, got, want)`; reports every failing tensor at once.
pub fn assert_same_tensors(
    what: &str,
    got: &BTreeMap<String, Tensor>,
    want: &BTreeMap<String, Tensor>,
    mut close: impl FnMut(&str, &Tensor, &Tensor) -> Result<(), String>,
) {
    let got_names: Vec<&String> = got.keys().collect();
    let want_names: Vec<&String> = want.keys().collect();
    assert_eq!(got_names, want_names, "{what}: different tensor names");
    let failures: Vec<String> = want
        .iter()
        .filter_map(|(name, w)| {
            close(name, &got[name], w)
                .err()
                .map(|e| format!("{name}: {e}"))
        })
        .collect();
    assert!(
        failures.is_empty(),
        "{what}: {} of {} tensors differ:\n{}",
        failures.len(),
        want.len(),
        failures.join("\n")
    );
}

/// A closeness check for [`assert_same_tensors`]: relative difference at most `tolerance`.
pub fn within(tolerance: f64) -> impl FnMut(&str, &Tensor, &Tensor) -> Result<(), String> {
    move |_, got, want| {
        let d = relative_difference(got, want);
        if d <= tolerance {
            Ok(())
        } else {
            Err(format!("relative difference {d:e} > {tolerance:e}"))
        }
    }
}

/// This test binary re-executed to run only its ignored `rank_process` entry: how the
/// multi-process tests start their ranks (the caller adds the role and rank environment).
pub fn rank_process() -> Command {
    let exe = std::env::current_exe().expect("test binary path");
    let mut cmd = Command::new(exe);
    cmd.args([
        "rank_process",
        "--exact",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ]);
    cmd
}

/// A run config trained by `kontrast train` (one process) into `<dir>/checkpoints`: what the
/// evaluation tests evaluate.
pub struct TrainedRun {
    dir: PathBuf,
    /// The run config's path, as an argument.
    pub config: String,
    /// The checkpoint directory, as an argument.
    pub checkpoints: String,
}

/// Writes `config` into `dir` and trains it to completion (no metrics port, images loaded on the
/// training thread).
pub fn train_for_eval(dir: &Path, config: &RunConfig) -> TrainedRun {
    let run = TrainedRun {
        dir: dir.to_path_buf(),
        config: write_config(dir, config).display().to_string(),
        checkpoints: dir.join("checkpoints").display().to_string(),
    };
    let train = kontrast(
        dir,
        &[
            "train",
            "--config",
            &run.config,
            "--checkpoint-dir",
            &run.checkpoints,
            "--metrics-port",
            "0",
            "--data-threads",
            "0",
        ],
    );
    Proc::spawn(train, dir, "train").assert_success(Duration::from_secs(120));
    run
}

impl TrainedRun {
    /// `kontrast eval --evaluation <evaluation>` of the run's newest checkpoint, then `extra`.
    pub fn eval(&self, evaluation: &str, extra: &[&str]) -> Command {
        let mut args = vec![
            "eval",
            "--evaluation",
            evaluation,
            "--config",
            &self.config,
            "--checkpoint-dir",
            &self.checkpoints,
        ];
        args.extend_from_slice(extra);
        kontrast(&self.dir, &args)
    }
}

/// A ResNet whose batch-norm statistics and affine parameters are away from their initial 0/1,
/// so the evaluation-mode normalisation is exercised; its `encoder_q.` tensors.
pub fn perturbed_moco(arch: Arch) -> (Moco, Vec<(String, Tensor)>) {
    tch::manual_seed(3);
    let moco = Moco::new(
        MocoSpec {
            arch,
            cifar_stem: false,
            width: 64,
            dim: 16,
            queue_size: 32,
            mlp: false,
            momentum: 0.99,
            temperature: 0.2,
            knn: None,
            shuffle_keys: false,
        },
        Device::Cpu,
    );
    let mut tensors = Vec::new();
    tch::no_grad(|| {
        for e in moco.params().entries() {
            if !e.name.starts_with("encoder_q.") {
                continue;
            }
            let leaf = e.name.rsplit('.').next().unwrap_or_default();
            let mut t = e.tensor.shallow_clone();
            if e.name.contains(".bn") || e.name.contains("downsample.1") {
                match leaf {
                    "running_var" | "weight" => {
                        t.copy_(&(Tensor::rand_like(&t) + 0.5));
                    }
                    "running_mean" | "bias" => {
                        t.copy_(&(Tensor::randn_like(&t) * 0.1));
                    }
                    _ => {}
                }
            }
            tensors.push((e.name.clone(), e.tensor.detach().copy()));
        }
    });
    (moco, tensors)
}

/// The project virtualenv's Python (`make setup` creates it), which runs the references.
pub fn python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python")
}

/// A script of `tests/reference/`.
pub fn reference_script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../tests/reference")
        .join(name)
}

/// Runs `tests/reference/<script> <command> <Fashion-MNIST dir> <root> <extra…>`: the reference
/// scripts' fixture writers, which build data sets in the exact on-disk formats from the system's
/// real Fashion-MNIST images. Returns `root`.
pub fn write_fixture(script: &str, command: &str, root: &Path, extra: &[String]) -> PathBuf {
    let fashion = config::standalone(&Overrides::default())
        .expect("the embedded run resolves")
        .dataset
        .path;
    let status = Command::new(python())
        .arg(reference_script(script))
        .arg(command)
        .arg(&fashion)
        .arg(root)
        .args(extra)
        .status()
        .expect("run the Python reference (`make setup` installs the venv)");
    assert!(
        status.success(),
        "{script} {command} could not write its fixture: {status}"
    );
    root.to_path_buf()
}

/// A temporary directory holding the first `images` Fashion-MNIST images and a run config made
/// for them, for tests that run `kontrast train` as a process and resume it.
pub struct TrainSetup {
    /// The directory (data set, config, logs, checkpoint directories).
    pub dir: tempfile::TempDir,
    /// The run config written there.
    pub config: PathBuf,
}

impl TrainSetup {
    /// The data set and the config `make` builds for the data set's directory.
    pub fn new(images: usize, make: impl FnOnce(&Path) -> RunConfig) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = fashion_mnist_subset(&dir.path().join("data"), images);
        let config = write_config(dir.path(), &make(&data));
        Self { dir, config }
    }

    /// `kontrast train` resuming from the newest checkpoint in `checkpoints`, single-threaded
    /// data loading, no metrics port, with `extra` flags; its output under `name` (which also
    /// names its own log directory).
    pub fn train(&self, checkpoints: &Path, name: &str, extra: &[&str]) -> Proc {
        let logs = self.dir.path().join(name);
        std::fs::create_dir_all(&logs).expect("log directory");
        let mut args = vec![
            "train",
            "--config",
            self.config.to_str().expect("UTF-8 path"),
            "--checkpoint-dir",
            checkpoints.to_str().expect("UTF-8 path"),
            "--resume",
            "latest",
            "--data-threads",
            "0",
            "--metrics-port",
            "0",
        ];
        args.extend_from_slice(extra);
        Proc::spawn(kontrast(&logs, &args), &logs, "train")
    }
}
