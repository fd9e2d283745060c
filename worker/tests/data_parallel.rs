//! Data-parallel training over Gloo on 127.0.0.1 with real processes.
//!
//! The model-level tests re-execute this test binary into `rank_process` (ignored in normal
//! runs), which dispatches on `KONTRAST_TEST_DP_ROLE`: a rank of a two-process gang (real
//! `ProcessGroup`, `broadcast_parameters`, `GradReducer`, `train_step`), or a single process
//! without a gang. Every process writes `Moco::params()` after its steps to a safetensors file
//! for the parent to compare. The failure tests run the `kontrast` binary itself.
//!
//! Tolerance: the model runs in float64 (`Moco::set_float_kind`), so two computations of the
//! same update that differ only in summation order agree to about 1e-15; every tensor must
//! agree within 1e-9 relative to its largest element — except BN's `running_var`, see
//! [`running_var_bound`].
mod common;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use common::{Proc, assert_same_tensors, free_port, read_tensors, relative_difference, within};
use kontrast_api::config::Arch;
use kontrast_worker::dist::{Backend, ProcessGroup, Rendezvous, broadcast_parameters};
use kontrast_worker::model::{Moco, MocoSpec, Views};
use kontrast_worker::train::collectives::GradientAverager;
use kontrast_worker::train::sgd::{Sgd, SgdConfig};
use kontrast_worker::train::step::train_step;
use tch::{Device, Kind, Tensor};

const ROLE_ENV: &str = "KONTRAST_TEST_DP_ROLE";
const OUT_ENV: &str = "KONTRAST_TEST_OUT";

/// Images per rank and step.
const PER_RANK: i64 = 4;
const WORLD: usize = 2;
const STEPS: usize = 2;
const LARGE: i64 = 16;
const SMALL: i64 = 8;
const SMALL_CROPS: i64 = 2;
/// A multiple of the global batch (8): two steps fill it exactly once.
const QUEUE: i64 = 16;
const LR: f64 = 0.05;
const INIT_SEED: i64 = 5;
const DATA_SEED: i64 = 9;
const TOLERANCE: f64 = 1e-9;
/// PyTorch's BN momentum, which the model keeps.
const BN_MOMENTUM: f64 = 0.1;

const SGD: SgdConfig = SgdConfig {
    momentum: 0.9,
    weight_decay: 1e-4,
};

fn spec(shuffle_keys: bool) -> MocoSpec {
    MocoSpec {
        arch: Arch::Resnet18,
        cifar_stem: true,
        width: 64,
        dim: 128,
        queue_size: QUEUE,
        mlp: true,
        momentum: 0.99,
        temperature: 0.2,
        knn: Some((3, 0.4)),
        shuffle_keys,
    }
}

/// The role of a re-executed process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// A rank of the gang; both ranks get the same half batch; keys not shuffled.
    Halves,
    /// A rank of the gang with its own data and shuffle BN on.
    Shuffle,
    /// One process, no gang, the batch of both `Halves` ranks concatenated.
    Single,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Halves => "halves",
            Role::Shuffle => "shuffle",
            Role::Single => "single",
        }
    }

    fn parse(name: &str) -> Role {
        match name {
            "halves" => Role::Halves,
            "shuffle" => Role::Shuffle,
            "single" => Role::Single,
            other => panic!("unknown role {other}"),
        }
    }
}

/// One rank's inputs of one step, float64.
fn views(query: Tensor, key: Tensor, small: Tensor) -> Views {
    Views {
        query,
        key,
        small: Some(small),
    }
}

/// The inputs of every step and rank, `[step][rank]`, the same in every process (seeded).
/// With `same_halves`, rank 1 gets rank 0's images: then both ranks' BN batches equal the
/// single process's `[x; x]` in mean and biased variance.
fn batches(same_halves: bool) -> Vec<Vec<Views>> {
    tch::manual_seed(DATA_SEED);
    let opts = (Kind::Double, Device::Cpu);
    (0..STEPS)
        .map(|_| {
            let mut ranks: Vec<Views> = Vec::new();
            for rank in 0..WORLD {
                let mut v = views(
                    Tensor::randn([PER_RANK, 3, LARGE, LARGE], opts),
                    Tensor::randn([PER_RANK, 3, LARGE, LARGE], opts),
                    Tensor::randn([PER_RANK * SMALL_CROPS, 3, SMALL, SMALL], opts),
                );
                if same_halves && rank > 0 {
                    let first = &ranks[0];
                    v = views(
                        first.query.shallow_clone(),
                        first.key.shallow_clone(),
                        first.small.as_ref().expect("small crops").shallow_clone(),
                    );
                }
                ranks.push(v);
            }
            ranks
        })
        .collect()
}

/// Both ranks' views as one batch (image-major order is kept: rank 1's images follow rank 0's).
fn concatenated(ranks: &[Views]) -> Views {
    let cat =
        |f: &dyn Fn(&Views) -> Tensor| Tensor::cat(&ranks.iter().map(f).collect::<Vec<_>>(), 0);
    views(
        cat(&|v| v.query.shallow_clone()),
        cat(&|v| v.key.shallow_clone()),
        cat(&|v| v.small.as_ref().expect("small crops").shallow_clone()),
    )
}

fn save(moco: &Moco, losses: &[f64], out: &Path, name: &str) {
    let tensors: Vec<(String, Tensor)> = moco
        .params()
        .entries()
        .iter()
        .map(|e| (e.name.clone(), e.tensor.detach()))
        .collect();
    Tensor::write_safetensors(&tensors, out.join(format!("{name}.safetensors")))
        .expect("write the parameters");
    std::fs::write(
        out.join(format!("{name}.losses.json")),
        serde_json::to_string(losses).expect("losses as JSON"),
    )
    .expect("write the losses");
}

/// Entry point of the re-executed processes; does nothing in a normal test run.
#[test]
#[ignore = "one process of a multi-process test, started by that test"]
fn rank_process() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let role = Role::parse(&role);
    let out = PathBuf::from(std::env::var(OUT_ENV).expect("output directory"));
    // One thread per process: the gang's processes share the test machine's cores.
    tch::set_num_threads(1);
    let data = batches(role != Role::Shuffle);

    if role == Role::Single {
        tch::manual_seed(INIT_SEED);
        let moco = Moco::new(spec(false), Device::Cpu);
        moco.set_float_kind(Kind::Double);
        let mut sgd = Sgd::new(moco.trainable(), SGD);
        let losses: Vec<f64> = data
            .iter()
            .map(|ranks| {
                train_step(&moco, &mut sgd, &concatenated(ranks), LR, true, None, None)
                    .expect("single-process step")
                    .losses
                    .total
            })
            .collect();
        save(&moco, &losses, &out, "single");
        return;
    }

    let rv = Rendezvous {
        local_address: Some("127.0.0.1".into()),
        ..Rendezvous::from_env(Duration::from_secs(30)).expect("rendezvous variables")
    };
    let pg = ProcessGroup::new(Backend::Gloo, &rv).expect("join the group");
    let rank = pg.rank();
    // Each rank draws its own initial weights and queues: only the broadcast makes them agree.
    tch::manual_seed(INIT_SEED + rank as i64);
    let moco = Moco::new(spec(role == Role::Shuffle), Device::Cpu);
    moco.set_float_kind(Kind::Double);
    let all: Vec<Tensor> = moco
        .params()
        .entries()
        .iter()
        .map(|e| e.tensor.shallow_clone())
        .collect();
    broadcast_parameters(&pg, &all, 0).expect("broadcast the initial state");
    let mut sgd = Sgd::new(moco.trainable(), SGD);
    let mut sync = GradientAverager::new(&pg, &moco.trainable()).expect("gradient reducer");
    let losses: Vec<f64> = data
        .iter()
        .map(|ranks| {
            train_step(
                &moco,
                &mut sgd,
                &ranks[rank],
                LR,
                true,
                Some(&pg),
                Some(&mut sync),
            )
            .expect("data-parallel step")
            .losses
            .total
        })
        .collect();
    save(&moco, &losses, &out, &format!("{}-{rank}", role.name()));
    pg.barrier().expect("final barrier");
}

/// This test binary as a process of `role` (a rank of a two-process gang unless `Single`).
fn spawn_role(role: Role, rank: usize, port: u16, out: &Path) -> Proc {
    let mut cmd = common::rank_process();
    cmd.env(ROLE_ENV, role.name())
        .env(OUT_ENV, out)
        .env("RUST_BACKTRACE", "0");
    if role != Role::Single {
        common::rank_env(&mut cmd, rank, WORLD, port);
    }
    Proc::spawn(cmd, out, &format!("{}-{rank}", role.name()))
}

fn losses(out: &Path, name: &str) -> Vec<f64> {
    let text = std::fs::read_to_string(out.join(format!("{name}.losses.json"))).expect("losses");
    serde_json::from_str(&text).expect("losses JSON")
}

fn is_bn_statistic(name: &str) -> bool {
    name.ends_with(".running_mean")
        || name.ends_with(".running_var")
        || name.ends_with(".num_batches_tracked")
}

/// How far a rank's `running_var` may be from the single process's.
///
/// Both see the same biased batch variance v (their BN batches are x and [x; x]), but the
/// running variance is updated with the *unbiased* one, v·n/(n−1), and n (values per channel)
/// is halved on a rank. After U updates from the initial 1, running_var = 0.9^U + Σ wᵤ·cᵤ·vᵤ
/// with wᵤ ≥ 0 and cᵤ = n/(n−1); the rank's cᵤ exceeds the single process's c(2n) by a factor
/// of at most 1 + 1/(2(n−1)), n the smallest per-rank count of that layer. Hence
/// |rank − single| ≤ (running_var_single − 0.9^U) / (2(n−1)), element-wise.
fn running_var_bound(name: &str, single: &Tensor) -> Tensor {
    // Spatial down-sampling at that layer with the CIFAR stem (no stride before layer2).
    let stride = ["layer2", "layer3", "layer4"]
        .iter()
        .zip([2, 4, 8])
        .find(|(layer, _)| name.contains(&format!(".{layer}.")))
        .map_or(1, |(_, s)| s);
    let side = |image: i64| (image / stride).max(1);
    let large = PER_RANK * side(LARGE) * side(LARGE);
    let (n, updates) = if name.starts_with("encoder_q.") {
        // The large crops and the small crops are separate passes: two updates per step.
        let small = PER_RANK * SMALL_CROPS * side(SMALL) * side(SMALL);
        (large.min(small), 2 * STEPS)
    } else {
        (large, STEPS)
    };
    let initial = (1.0 - BN_MOMENTUM).powi(updates as i32);
    (single.to_kind(Kind::Double) - initial) / (2.0 * (n - 1) as f64)
}

fn assert_losses_equal(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), STEPS, "{what}");
    for (step, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(g.is_finite(), "{what}: step {step} loss {g}");
        let d = ((g - w) / w).abs();
        assert!(d <= TOLERANCE, "{what}: step {step}: {g} vs {w} ({d:e})");
    }
}

#[test]
fn two_ranks_with_half_the_batch_each_give_the_same_update_as_one_rank_with_the_full_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let port = free_port();
    let mut procs: Vec<Proc> = (0..WORLD)
        .map(|r| spawn_role(Role::Halves, r, port, out))
        .collect();
    procs.push(spawn_role(Role::Single, 0, port, out));
    for p in &mut procs {
        p.assert_success(Duration::from_secs(120));
    }

    let single = read_tensors(&out.join("single.safetensors"));
    let ranks: Vec<BTreeMap<String, Tensor>> = (0..WORLD)
        .map(|r| read_tensors(&out.join(format!("halves-{r}.safetensors"))))
        .collect();
    // Every tensor of the model: both encoders (parameters, BN statistics), the queues, the
    // queue pointer.
    assert!(single.contains_key("queue") && single.contains_key("queue_ptr"));
    assert!(single.contains_key("queue_backbone"));
    assert!(single.keys().any(|n| n.starts_with("encoder_k.")));
    assert!(single.keys().any(|n| n.ends_with("running_var")));

    // The two ranks did the same computation on the same data.
    assert_same_tensors("rank 1 against rank 0", &ranks[1], &ranks[0], within(0.0));
    for (r, rank) in ranks.iter().enumerate() {
        assert_same_tensors(
            &format!("rank {r} against the single process"),
            rank,
            &single,
            |name, got, want| {
                if name.ends_with(".running_var") {
                    let bound = running_var_bound(name, want);
                    let excess = ((got.to_kind(Kind::Double) - want.to_kind(Kind::Double)).abs()
                        - bound
                        - TOLERANCE)
                        .max()
                        .double_value(&[]);
                    return if excess <= 0.0 {
                        Ok(())
                    } else {
                        Err(format!("exceeds Bessel's correction bound by {excess:e}"))
                    };
                }
                within(TOLERANCE)(name, got, want)
            },
        );
        assert_losses_equal(
            &losses(out, &format!("halves-{r}")),
            &losses(out, "single"),
            &format!("rank {r}'s losses against the single process's"),
        );
    }

    // The steps did something: the query encoder moved away from the key encoder it was copied
    // to (the key encoder follows at momentum 0.99), and the queue holds the new keys.
    let q = &single["encoder_q.layer4.1.conv2.weight"];
    let k = &single["encoder_k.layer4.1.conv2.weight"];
    assert!(
        relative_difference(q, k) > 1e-6,
        "the query encoder did not move"
    );
    assert_eq!(single["queue_ptr"].int64_value(&[0]), (2 * 8) % QUEUE);
}

#[test]
fn with_shuffle_bn_on_ranks_with_different_data_stay_in_sync() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = dir.path();
    let port = free_port();
    let mut procs: Vec<Proc> = (0..WORLD)
        .map(|r| spawn_role(Role::Shuffle, r, port, out))
        .collect();
    for p in &mut procs {
        p.assert_success(Duration::from_secs(120));
    }
    let rank0 = read_tensors(&out.join("shuffle-0.safetensors"));
    let rank1 = read_tensors(&out.join("shuffle-1.safetensors"));

    // What all-reduced gradients, the momentum update and the all-gathered keys make equal:
    // both encoders' parameters, the queues and the pointer. BN statistics are each rank's own
    // (MoCo's BN is per device): the query encoder's saw this rank's images, the key encoder's
    // this rank's slice of the shuffled gang batch.
    let shared = |m: &BTreeMap<String, Tensor>| -> BTreeMap<String, Tensor> {
        m.iter()
            .filter(|(name, _)| !is_bn_statistic(name))
            .map(|(name, t)| (name.clone(), t.shallow_clone()))
            .collect()
    };
    assert_same_tensors(
        "rank 1's parameters and queues against rank 0's",
        &shared(&rank1),
        &shared(&rank0),
        within(0.0),
    );
    for name in ["queue", "queue_backbone", "queue_ptr"] {
        assert!(rank0.contains_key(name), "no {name}");
    }
    assert!(
        rank0
            .keys()
            .any(|n| n.starts_with("encoder_k.") && n.ends_with(".weight"))
    );
    // Both ranks ran as many BN updates.
    for (name, t) in rank0
        .iter()
        .filter(|(n, _)| n.ends_with(".num_batches_tracked"))
    {
        assert_eq!(t.int64_value(&[]), rank1[name].int64_value(&[]), "{name}");
    }
    // The data really differed per rank (otherwise the test above proves little).
    let mean = "encoder_q.bn1.running_mean";
    assert!(
        relative_difference(&rank0[mean], &rank1[mean]) > 1e-6,
        "both ranks saw the same images"
    );

    let l0 = losses(out, "shuffle-0");
    let l1 = losses(out, "shuffle-1");
    assert_eq!((l0.len(), l1.len()), (STEPS, STEPS));
    assert!(
        l0.iter().chain(&l1).all(|l| l.is_finite() && *l > 0.0),
        "{l0:?} {l1:?}"
    );
}

/// Writes a small Fashion-MNIST subset and the run config of a two-rank CPU gang on it that
/// would train for many epochs into `dir`; returns the config's path.
fn train_gang_config(dir: &Path) -> PathBuf {
    let data = common::fashion_mnist_subset(&dir.join("data"), 128);
    // 50 epochs: far longer than the test, which kills a rank early on.
    let config = common::small_run(&data, 2, 50, 16, 64);
    common::write_config(dir, &config)
}

/// `kontrast train` flags of the gang's ranks: progress on every step, `timeout` seconds for
/// the rendezvous and each collective.
fn train_args<'a>(config: &'a str, timeout: &'a str) -> Vec<&'a str> {
    vec![
        "train",
        "--config",
        config,
        "--metrics-port",
        "0",
        "--data-threads",
        "0",
        "--log-every",
        "1",
        "--collective-timeout-seconds",
        timeout,
        "--resume",
        "none",
    ]
}

/// Starts a two-rank `kontrast train` gang, waits until rank 0 has finished a step (collectives
/// included), does `disrupt` to rank 1, and returns rank 0's exit status, its log and how long
/// it took to exit after the disruption.
fn train_gang_with_disrupted_rank(
    timeout_secs: u64,
    disrupt: impl FnOnce(&mut Proc),
) -> (ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = train_gang_config(dir.path());
    let config = config.to_str().expect("UTF-8 path");
    let timeout = timeout_secs.to_string();
    let port = free_port();
    let mut ranks: Vec<Proc> = (0..2)
        .map(|r| {
            let mut cmd = common::kontrast(dir.path(), &train_args(config, &timeout));
            common::rank_env(&mut cmd, r, 2, port);
            Proc::spawn(cmd, dir.path(), &format!("rank{r}"))
        })
        .collect();
    ranks[0].wait_for_stderr(" step=1 ", Duration::from_secs(60));
    let disrupted = Instant::now();
    disrupt(&mut ranks[1]);
    let status = ranks[0].wait(Duration::from_secs(timeout_secs + 30));
    (status, ranks[0].stderr(), disrupted.elapsed())
}

/// Asserts rank 0's failure: non-zero, and either the trainer's error naming a collective or
/// Gloo's abort from its own thread.
fn assert_failed_for_the_peer(status: ExitStatus, stderr: &str) {
    assert!(!status.success(), "rank 0 succeeded:\n{stderr}");
    assert!(
        stderr.contains("failed") || status.signal() == Some(libc::SIGABRT),
        "{status}:\n{stderr}"
    );
}

#[test]
fn a_killed_rank_makes_the_other_exit_non_zero_within_the_timeout() {
    let (status, stderr, elapsed) = train_gang_with_disrupted_rank(10, Proc::kill);
    assert_failed_for_the_peer(status, &stderr);
    // A dead peer's closed connections fail the collective at once; the timeout is the bound.
    assert!(
        elapsed < Duration::from_secs(10 + 5),
        "took {elapsed:?}:\n{stderr}"
    );
}

#[test]
fn a_hung_rank_makes_the_other_exit_non_zero_after_the_collective_timeout() {
    // Long enough that the ranks' start-up (rendezvous, first broadcast) never trips it on a
    // busy machine.
    let (status, stderr, elapsed) = train_gang_with_disrupted_rank(6, |rank| {
        // SAFETY: signalling a child this test spawned and still owns (killed when dropped).
        unsafe { libc::kill(rank.pid() as libc::pid_t, libc::SIGSTOP) };
    });
    assert_failed_for_the_peer(status, &stderr);
    // Rank 0 may finish the step it is in before it waits on the stopped peer.
    assert!(
        elapsed < Duration::from_secs(6 + 10),
        "took {elapsed:?}:\n{stderr}"
    );
}

/// The pid of `parent`'s child whose environment has `RANK=<rank>`.
fn child_with_rank(parent: u32, rank: usize) -> Option<u32> {
    let wanted = format!("RANK={rank}");
    std::fs::read_dir("/proc")
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            // "pid (comm) state ppid ...": the command name may hold spaces, so split after ')'.
            let ppid = stat
                .rsplit(')')
                .next()
                .and_then(|rest| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok());
            ppid == Some(parent)
                && std::fs::read(format!("/proc/{pid}/environ"))
                    .map(|env| env.split(|&b| b == 0).any(|v| v == wanted.as_bytes()))
                    .unwrap_or(false)
        })
}

#[test]
fn a_killed_rank_makes_kontrast_launch_exit_non_zero_promptly() {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = train_gang_config(dir.path());
    let config = config.to_str().expect("UTF-8 path");
    let port = free_port().to_string();
    let mut launch_args = vec![
        "launch",
        "--nproc-per-node",
        "2",
        "--master-addr",
        "127.0.0.1",
        "--master-port",
        &port,
        "--grace-seconds",
        "5",
        "--",
    ];
    launch_args.extend(train_args(config, "10"));
    let mut launch = Proc::spawn(
        common::kontrast(dir.path(), &launch_args),
        dir.path(),
        "launch",
    );
    // The ranks inherit the launcher's stderr.
    launch.wait_for_stderr(" step=1 ", Duration::from_secs(60));
    let pid = launch.pid();
    let rank0 = child_with_rank(pid, 0).expect("rank 0 is a child of the launcher");
    let rank1 = child_with_rank(pid, 1).expect("rank 1 is a child of the launcher");
    let killed = Instant::now();
    // SAFETY: signalling a process the launcher this test started has spawned and not reaped
    // (its parent is alive, so the pid cannot have been reused).
    unsafe { libc::kill(rank1 as libc::pid_t, libc::SIGKILL) };
    let status = launch.wait(Duration::from_secs(40));
    let elapsed = killed.elapsed();
    let stderr = launch.stderr();
    assert!(!status.success(), "launch succeeded:\n{stderr}");
    // The launcher stops the surviving rank at once instead of waiting for its collective
    // timeout.
    assert!(
        elapsed < Duration::from_secs(15),
        "took {elapsed:?}:\n{stderr}"
    );
    assert!(is_dead(rank0), "rank 0 outlived the launcher");
}

/// Whether a process is gone (or a zombie: it runs no more).
fn is_dead(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}
