//! Resuming `kontrast train` from its checkpoints, with the real binary on a small
//! Fashion-MNIST subset.
//!
//! Training is deterministic on the CPU for a fixed thread count: the trainer reseeds libtorch
//! from (seed, epoch) at every epoch, the data pipeline draws from (seed, epoch, index), and a
//! checkpoint holds everything else that carries over (both encoders with their BN statistics,
//! the queues, SGD's momentum buffers, the step). So a run interrupted after a checkpoint and
//! resumed must end with the same tensors as an uninterrupted one. Every process runs with one
//! libtorch thread (`common::kontrast`) and data loading on the training thread.
mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Proc, TrainSetup, assert_same_tensors, read_tensors, within};
use kontrast_worker::checkpoint::Manifest;
use tch::Tensor;

/// Images in the data set: 4 steps of 16 per epoch, a few seconds each.
const IMAGES: usize = 64;
const BATCH: u32 = 16;
/// Not a divisor of the epoch's 64 keys, so the checkpoint of epoch 1 has the queue pointer in
/// the middle of the ring.
const QUEUE: u32 = 48;
const EPOCHS: u32 = 2;
const STEPS_PER_EPOCH: u64 = IMAGES as u64 / BATCH as u64;
/// Float32 throughout; identical computations give identical bits, so this only allows for a
/// difference nobody has seen.
const TOLERANCE: f64 = 1e-6;
const LIMIT: Duration = Duration::from_secs(120);

/// A test's data set and run config, and how the tests run `kontrast train` on them.
struct Setup(TrainSetup);

impl Setup {
    fn new() -> Self {
        Self(TrainSetup::new(IMAGES, |data| {
            common::small_run(data, 1, EPOCHS, BATCH, QUEUE)
        }))
    }

    /// `kontrast train` resuming from the newest checkpoint in `checkpoints`, with a fixed seed
    /// and a log line per step, its output under `name`.
    fn train(&self, checkpoints: &Path, name: &str) -> Proc {
        self.0
            .train(checkpoints, name, &["--seed", "3", "--log-every", "1"])
    }

    fn checkpoints(&self, name: &str) -> PathBuf {
        self.0.dir.path().join(name)
    }

    /// The final progress report the run left as its termination message.
    fn report(&self, name: &str) -> serde_json::Value {
        let path = self.0.dir.path().join(name).join("termination-log");
        let text = std::fs::read_to_string(&path).expect("termination message");
        serde_json::from_str(&text).expect("the termination message is the JSON report")
    }
}

fn manifest(checkpoints: &Path, epoch: u32) -> Manifest {
    let path = checkpoints.join(format!("epoch-{epoch:04}.json"));
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    serde_json::from_str(&text).expect("manifest JSON")
}

fn tensors(checkpoints: &Path, epoch: u32) -> BTreeMap<String, Tensor> {
    read_tensors(&checkpoints.join(format!("epoch-{epoch:04}.safetensors")))
}

#[test]
fn a_run_killed_after_its_first_checkpoint_and_resumed_ends_with_the_uninterrupted_runs_parameters()
{
    let setup = Setup::new();
    let (a, b) = (setup.checkpoints("a"), setup.checkpoints("b"));
    let mut uninterrupted = setup.train(&a, "a");
    let mut interrupted = setup.train(&b, "b-killed");

    let first = b.join("epoch-0001.json");
    interrupted.wait_until("the first checkpoint", LIMIT, |_| first.exists());
    interrupted.kill();
    assert!(
        !b.join("epoch-0002.json").exists(),
        "the run finished before it could be killed: make an epoch longer"
    );
    let killed_log = interrupted.stderr();
    assert!(!killed_log.contains("training finished"), "{killed_log}");

    let mut resumed = setup.train(&b, "b-resumed");
    resumed.assert_success(LIMIT);
    uninterrupted.assert_success(LIMIT);

    // The resumed run started at epoch 1 with the checkpoint's step count and trained only the
    // second epoch.
    let log = resumed.stderr();
    assert!(
        log.contains(&format!("resumed epoch=1 step={STEPS_PER_EPOCH}")),
        "{log}"
    );
    assert!(
        log.contains(&format!("epoch=1 step={} ", STEPS_PER_EPOCH + 1)),
        "{log}"
    );
    assert!(
        !log.contains("epoch=0 step=1 "),
        "epoch 0 retrained:\n{log}"
    );

    let total = u64::from(EPOCHS) * STEPS_PER_EPOCH;
    let ptr = |m: &BTreeMap<String, Tensor>| m["queue_ptr"].int64_value(&[0]);
    assert_eq!(
        ptr(&tensors(&b, 1)),
        (STEPS_PER_EPOCH * u64::from(BATCH) % u64::from(QUEUE)) as i64
    );
    let (ma, mb) = (manifest(&a, EPOCHS), manifest(&b, EPOCHS));
    assert_eq!((ma.epoch, ma.step), (EPOCHS, total));
    assert_eq!((mb.epoch, mb.step), (EPOCHS, total));
    assert_eq!(ma.config_hash, mb.config_hash);
    let report = setup.report("b-resumed");
    assert_eq!(report["step"], total, "{report}");
    assert_eq!(report["epoch"], EPOCHS, "{report}");

    // Before the kill both runs were the same; after the resume they still are.
    for epoch in 1..=EPOCHS {
        let want = tensors(&a, epoch);
        assert!(want.contains_key("queue") && want.contains_key("queue_ptr"));
        assert!(
            want.keys()
                .any(|n| n.starts_with("optimizer.momentum_buffer."))
        );
        assert!(want.keys().any(|n| n.starts_with("encoder_k.")));
        assert_same_tensors(
            &format!("epoch {epoch}: resumed run against the uninterrupted one"),
            &tensors(&b, epoch),
            &want,
            within(TOLERANCE),
        );
    }
}

#[test]
fn a_corrupted_newest_checkpoint_is_skipped_with_a_warning_and_training_resumes_from_the_one_before()
 {
    let setup = Setup::new();
    let dir = setup.checkpoints("c");
    setup.train(&dir, "first").assert_success(LIMIT);
    let finished = tensors(&dir, EPOCHS);

    // One flipped bit in the middle of the newest tensors file: it still parses as safetensors
    // (the header is intact) but fails its checksum.
    let newest = dir.join(format!("epoch-{EPOCHS:04}.safetensors"));
    let mut bytes = std::fs::read(&newest).expect("read the newest checkpoint");
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x10;
    std::fs::write(&newest, bytes).expect("corrupt the newest checkpoint");

    let mut rerun = setup.train(&dir, "rerun");
    rerun.assert_success(LIMIT);
    let log = rerun.stderr();
    let warnings: Vec<&str> = log.lines().filter(|l| l.contains("WARN")).collect();
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("skipping") && l.contains(&format!("epoch-{EPOCHS:04}"))),
        "no warning naming the skipped checkpoint:\n{log}"
    );
    assert!(
        log.contains(&format!(
            "resumed epoch={} step={STEPS_PER_EPOCH}",
            EPOCHS - 1
        )),
        "{log}"
    );

    // The rerun wrote a good checkpoint of the last epoch again, and (training being
    // deterministic) the same one.
    let m = manifest(&dir, EPOCHS);
    assert_eq!(
        (m.epoch, m.step),
        (EPOCHS, u64::from(EPOCHS) * STEPS_PER_EPOCH)
    );
    assert_same_tensors(
        "the retrained last epoch against the original",
        &tensors(&dir, EPOCHS),
        &finished,
        within(TOLERANCE),
    );
}
