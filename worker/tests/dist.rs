//! Multi-process tests of the c10d process groups over Gloo on 127.0.0.1.
//!
//! Ranks are real processes: either the `kontrast collectives` binary or this test binary
//! re-executed into `rank_process` (ignored in normal runs), which dispatches on
//! `KONTRAST_TEST_RANK_ROLE`. Every test picks its own free port, so tests run in parallel.
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

mod common;

use common::{free_port, rank_env};
use kontrast_worker::dist::{
    Backend, DistError, GradReducer, ProcessGroup, ReduceOp, Rendezvous, broadcast_parameters,
    ordered_variables, verify_gloo_layout,
};
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

const ROLE_ENV: &str = "KONTRAST_TEST_RANK_ROLE";
const OUT_ENV: &str = "KONTRAST_TEST_OUT";

/// A spawned rank whose stdout and stderr go to files (pipes could fill up and block it).
struct Rank {
    child: Child,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Rank {
    fn spawn(mut cmd: Command, dir: &Path, name: &str) -> Rank {
        let stdout = dir.join(format!("{name}.out"));
        let stderr = dir.join(format!("{name}.err"));
        cmd.stdin(Stdio::null())
            .stdout(File::create(&stdout).expect("stdout file"))
            .stderr(File::create(&stderr).expect("stderr file"))
            .env_remove("POD_IP")
            .env("RUST_BACKTRACE", "0");
        let child = cmd.spawn().expect("spawn a rank");
        Rank {
            child,
            stdout,
            stderr,
        }
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Waits for exit, killing the rank and failing the test after `limit`.
    fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("poll a rank") {
                return status;
            }
            if start.elapsed() > limit {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "rank still running after {limit:?}\n--- stdout\n{}\n--- stderr\n{}",
                    self.stdout(),
                    self.stderr()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits until `needle` appears on stderr.
    fn wait_for_stderr(&mut self, needle: &str, limit: Duration) {
        let start = Instant::now();
        while !self.stderr().contains(needle) {
            if let Some(status) = self.child.try_wait().expect("poll a rank") {
                panic!(
                    "rank exited ({status}) before {needle:?}:\n{}",
                    self.stderr()
                );
            }
            assert!(
                start.elapsed() < limit,
                "no {needle:?} after {limit:?}:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn assert_success(&mut self, limit: Duration) {
        let status = self.wait(limit);
        assert!(
            status.success(),
            "rank failed ({status})\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout(),
            self.stderr()
        );
    }
}

impl Drop for Rank {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `kontrast collectives` as one rank of a gang on 127.0.0.1.
fn collectives_command(rank: usize, world: usize, port: u16, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_kontrast"));
    cmd.args([
        "collectives",
        "--backend",
        "gloo",
        "--local-address",
        "127.0.0.1",
    ])
    .args(args);
    rank_env(&mut cmd, rank, world, port);
    cmd
}

/// This test binary as one rank running `role` (see `rank_process`).
fn rank_process_command(role: &str, rank: usize, world: usize, port: u16, out: &Path) -> Command {
    let mut cmd = common::rank_process();
    cmd.env(ROLE_ENV, role).env(OUT_ENV, out);
    rank_env(&mut cmd, rank, world, port);
    cmd
}

fn run_ranks(role: &str, world: usize, out: &Path) {
    let port = free_port();
    let mut ranks: Vec<Rank> = (0..world)
        .map(|r| {
            Rank::spawn(
                rank_process_command(role, r, world, port, out),
                out,
                &format!("{role}-{r}"),
            )
        })
        .collect();
    for (r, rank) in ranks.iter_mut().enumerate() {
        rank.assert_success(Duration::from_secs(60));
        assert!(
            out.join(format!("done-{r}")).exists(),
            "rank {r} did not run {role}:\n{}",
            rank.stdout()
        );
    }
}

/// Entry point of the re-executed ranks; does nothing in a normal test run.
#[test]
#[ignore = "one rank of a multi-process test, started by that test"]
fn rank_process() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    let rv = Rendezvous {
        local_address: Some("127.0.0.1".into()),
        ..Rendezvous::from_env(Duration::from_secs(20)).expect("rendezvous variables")
    };
    let pg = ProcessGroup::new(Backend::Gloo, &rv).expect("join the group");
    assert_eq!((pg.rank(), pg.world_size()), (rv.rank, rv.world_size));
    match role.as_str() {
        "collectives" => collectives_role(&pg),
        "grads" => grads_role(&pg),
        other => panic!("unknown role {other}"),
    }
    let out = PathBuf::from(std::env::var(OUT_ENV).expect("output directory"));
    std::fs::write(out.join(format!("done-{}", pg.rank())), "").expect("completion marker");
}

fn values(t: &Tensor) -> Vec<f64> {
    Vec::<f64>::try_from(&t.flatten(0, -1)).expect("tensor values")
}

fn collectives_role(pg: &ProcessGroup) {
    assert_eq!(pg.world_size(), 2, "written for two ranks");
    let rank = pg.rank() as f64;
    let base = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);

    let mut t = &base * (rank + 1.0);
    pg.all_reduce(&mut t, ReduceOp::Sum).expect("sum");
    assert_eq!(values(&t), [3.0, 6.0, 9.0]);

    let mut t = &base * (rank + 1.0);
    pg.all_reduce(&mut t, ReduceOp::Avg).expect("avg");
    assert_eq!(values(&t), [1.5, 3.0, 4.5]);

    let mut t = Tensor::full([2], rank, (Kind::Float, Device::Cpu));
    pg.all_reduce(&mut t, ReduceOp::Max).expect("max");
    assert_eq!(values(&t), [1.0, 1.0]);
    let mut t = Tensor::full([2], rank, (Kind::Float, Device::Cpu));
    pg.all_reduce(&mut t, ReduceOp::Min).expect("min");
    assert_eq!(values(&t), [0.0, 0.0]);

    let mut t = Tensor::from_slice(&[10i64 + rank as i64]);
    pg.all_reduce(&mut t, ReduceOp::Sum).expect("integer sum");
    assert_eq!(values(&t), [21.0]);
    let err = pg
        .all_reduce(&mut t, ReduceOp::Avg)
        .expect_err("integer average");
    assert!(
        matches!(
            err,
            DistError::InvalidTensor {
                op: "all_reduce",
                ..
            }
        ),
        "{err}"
    );

    // Two reductions in flight at once.
    let mut a = Tensor::full([4], rank + 1.0, (Kind::Float, Device::Cpu));
    let mut b = Tensor::full([4], 10.0 * (rank + 1.0), (Kind::Float, Device::Cpu));
    let wa = pg.all_reduce_async(&mut a, ReduceOp::Sum).expect("start a");
    let wb = pg.all_reduce_async(&mut b, ReduceOp::Avg).expect("start b");
    wb.wait().expect("wait b");
    wa.wait().expect("wait a");
    assert_eq!(values(&a), [3.0; 4]);
    assert_eq!(values(&b), [15.0; 4]);

    let t = Tensor::from_slice(&[10.0 * rank, 10.0 * rank + 1.0]).reshape([1, 2]);
    let gathered = pg.all_gather(&t).expect("all_gather");
    assert_eq!(gathered.size(), [2, 2]);
    assert_eq!(values(&gathered), [0.0, 1.0, 10.0, 11.0]);
    let gathered = pg
        .all_gather(&Tensor::from(rank))
        .expect("all_gather of a scalar");
    assert_eq!(values(&gathered), [0.0, 1.0]);

    let mut t = if pg.rank() == 0 {
        Tensor::from_slice(&[5.0f32, 6.0, 7.0])
    } else {
        Tensor::zeros([3], (Kind::Float, Device::Cpu))
    };
    pg.broadcast(&mut t, 0).expect("broadcast from 0");
    assert_eq!(values(&t), [5.0, 6.0, 7.0]);
    let mut t = Tensor::full([2], rank, (Kind::Float, Device::Cpu));
    pg.broadcast(&mut t, 1).expect("broadcast from 1");
    assert_eq!(values(&t), [1.0, 1.0]);

    pg.barrier().expect("barrier");

    let mut t = Tensor::zeros([3, 2], (Kind::Float, Device::Cpu)).transpose(0, 1);
    let err = pg
        .all_reduce(&mut t, ReduceOp::Sum)
        .expect_err("non-contiguous");
    assert!(err.to_string().contains("not contiguous"), "{err}");

    // A parameter without a gradient on rank 1 contributes zeros and still receives the mean.
    let p = Tensor::zeros([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    if pg.rank() == 0 {
        (&p * &base).sum(Kind::Float).backward();
    }
    let mut reducer = GradReducer::new(std::slice::from_ref(&p)).expect("reducer");
    reducer.reduce(pg).expect("reduce");
    assert_eq!(values(&p.grad()), [0.5, 1.0, 1.5]);

    pg.barrier().expect("final barrier");
}

const PER_RANK: i64 = 6;

/// Two Linear layers in double precision; `seed` picks the initial weights.
fn model(seed: i64) -> (nn::VarStore, nn::Sequential) {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(Device::Cpu);
    let root = vs.root();
    let net = nn::seq()
        .add(nn::linear(&root / "fc1", 10, 32, Default::default()))
        .add_fn(|x| x.relu())
        .add(nn::linear(&root / "fc2", 32, 3, Default::default()));
    vs.double();
    (vs, net)
}

fn batch(world: i64) -> (Tensor, Tensor) {
    tch::manual_seed(7);
    let x = Tensor::randn([PER_RANK * world, 10], (Kind::Double, Device::Cpu));
    let y = Tensor::randn([PER_RANK * world, 3], (Kind::Double, Device::Cpu));
    (x, y)
}

/// Starts from rank-specific weights, takes rank 0's by broadcast, computes gradients on this
/// rank's share of the batch, reduces them and saves them for the parent test to compare.
fn grads_role(pg: &ProcessGroup) {
    let (rank, world) = (pg.rank() as i64, pg.world_size() as i64);
    let (x, y) = batch(world);
    let (vs, net) = model(1000 + rank);
    let vars = ordered_variables(&vs);
    let tensors: Vec<Tensor> = vars.iter().map(|(_, t)| t.shallow_clone()).collect();
    broadcast_parameters(pg, &tensors, 0).expect("broadcast_parameters");

    // 1 KiB buckets, so that several all-reduces are in flight.
    let mut reducer = GradReducer::with_bucket_bytes(&tensors, 1024).expect("reducer");
    let xs = x.narrow(0, rank * PER_RANK, PER_RANK);
    let ys = y.narrow(0, rank * PER_RANK, PER_RANK);
    net.forward(&xs)
        .mse_loss(&ys, tch::Reduction::Mean)
        .backward();
    let stats = reducer.reduce(pg).expect("reduce");
    assert!(stats.buckets >= 3, "{stats:?}");
    assert_eq!(stats.bytes, (10 * 32 + 32 + 32 * 3 + 3) * 8);
    assert!(stats.all_reduce > Duration::ZERO);

    let grads: Vec<(String, Tensor)> = vars.iter().map(|(n, t)| (n.clone(), t.grad())).collect();
    let out = PathBuf::from(std::env::var(OUT_ENV).expect("output directory"));
    Tensor::save_multi(&grads, out.join(format!("grads-{rank}.ot"))).expect("save gradients");
}

#[test]
fn gloo_collectives_over_two_ranks_give_the_exact_expected_values() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ranks("collectives", 2, dir.path());
}

#[test]
fn reduced_gradients_of_two_ranks_match_one_process_on_the_full_batch() {
    let dir = tempfile::tempdir().expect("tempdir");
    run_ranks("grads", 2, dir.path());

    let (x, y) = batch(2);
    let (vs, net) = model(1000);
    net.forward(&x)
        .mse_loss(&y, tch::Reduction::Mean)
        .backward();
    let want = ordered_variables(&vs);
    for rank in 0..2 {
        let got = Tensor::load_multi(dir.path().join(format!("grads-{rank}.ot"))).expect("load");
        assert_eq!(got.len(), want.len());
        for (name, w) in &want {
            let g = &got
                .iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("rank {rank} saved no gradient for {name}"))
                .1;
            let w = w.grad();
            let rel = (g - &w).norm().double_value(&[]) / w.norm().double_value(&[]);
            assert!(rel <= 1e-6, "rank {rank}, {name}: relative error {rel:e}");
        }
    }
}

#[test]
fn the_collectives_command_checks_a_two_rank_gang_and_reports_json() {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let args = [
        "--size-mib",
        "1",
        "--iterations",
        "3",
        "--timeout-secs",
        "20",
    ];
    let mut ranks: Vec<Rank> = (0..2)
        .map(|r| {
            Rank::spawn(
                collectives_command(r, 2, port, &args),
                dir.path(),
                &format!("rank{r}"),
            )
        })
        .collect();
    for (r, rank) in ranks.iter_mut().enumerate() {
        rank.assert_success(Duration::from_secs(60));
        let report: serde_json::Value =
            serde_json::from_str(rank.stdout().trim()).expect("one JSON line on stdout");
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["rank"], r);
        assert_eq!(report["worldSize"], 2);
        assert_eq!(report["backend"], "gloo");
        let checks = report["checks"].as_array().expect("checks");
        let names: Vec<&str> = checks.iter().filter_map(|c| c["name"].as_str()).collect();
        for name in [
            "gloo_layout",
            "all_reduce_sum",
            "all_reduce_avg",
            "all_reduce_max",
            "all_gather",
            "broadcast",
            "barrier",
            "grad_reducer",
        ] {
            assert!(names.contains(&name), "no {name} check in {report}");
        }
        assert!(checks.iter().all(|c| c["ok"] == true), "{report}");
        assert_eq!(report["bandwidth"]["bytes"], 1024 * 1024);
        assert_eq!(report["bandwidth"]["iterations"], 3);
        assert!(
            report["bandwidth"]["busBandwidthGbps"].as_f64() > Some(0.0),
            "{report}"
        );
    }
}

/// Starts a long-running two-rank gang, lets `disrupt` act on rank 1 once it has joined, and
/// returns rank 0's exit status, its stderr and how long it took to fail.
fn gang_with_disrupted_rank(
    timeout_secs: u64,
    disrupt: impl FnOnce(u32),
) -> (ExitStatus, String, Duration) {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let timeout = timeout_secs.to_string();
    let args = [
        "--size-mib",
        "1",
        "--iterations",
        "100000000",
        "--timeout-secs",
        &timeout,
    ];
    let mut rank0 = Rank::spawn(collectives_command(0, 2, port, &args), dir.path(), "rank0");
    let mut rank1 = Rank::spawn(collectives_command(1, 2, port, &args), dir.path(), "rank1");
    rank0.wait_for_stderr("joined the process group", Duration::from_secs(30));
    rank1.wait_for_stderr("joined the process group", Duration::from_secs(30));
    // Both are now in the timed all-reduce loop.
    std::thread::sleep(Duration::from_millis(300));
    let start = Instant::now();
    disrupt(rank1.child.id());
    let status = rank0.wait(Duration::from_secs(timeout_secs + 20));
    let elapsed = start.elapsed();
    let stderr = rank0.stderr();
    drop(rank1);
    (status, stderr, elapsed)
}

#[test]
fn a_killed_rank_makes_the_other_fail_within_the_timeout() {
    let (status, stderr, elapsed) = gang_with_disrupted_rank(5, |pid| {
        // SAFETY: signalling a child process this test spawned and still owns.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    });
    assert!(!status.success(), "rank 0 succeeded:\n{stderr}");
    assert!(
        elapsed < Duration::from_secs(5 + 5),
        "took {elapsed:?}:\n{stderr}"
    );
    // Either a Rust error naming the collective or Gloo's abort from its own thread.
    assert!(
        stderr.contains("all_reduce failed") || status.signal() == Some(libc::SIGABRT),
        "{status}:\n{stderr}"
    );
}

#[test]
fn a_hung_rank_makes_the_other_time_out_instead_of_waiting_forever() {
    let (status, stderr, elapsed) = gang_with_disrupted_rank(3, |pid| {
        // SAFETY: signalling a child process this test spawned and still owns (killed on drop).
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGSTOP) };
    });
    assert!(!status.success(), "rank 0 succeeded:\n{stderr}");
    assert!(
        elapsed < Duration::from_secs(3 + 5),
        "took {elapsed:?}:\n{stderr}"
    );
    assert!(stderr.contains("all_reduce failed"), "{stderr}");
}

#[test]
fn a_rank_that_cannot_reach_the_store_fails_naming_master_addr_and_port() {
    let dir = tempfile::tempdir().expect("tempdir");
    // Nobody listens there: rank 0 never starts.
    let port = free_port();
    let start = Instant::now();
    let mut rank1 = Rank::spawn(
        collectives_command(1, 2, port, &["--timeout-secs", "2"]),
        dir.path(),
        "rank1",
    );
    let status = rank1.wait(Duration::from_secs(30));
    let elapsed = start.elapsed();
    let stderr = rank1.stderr();
    assert!(!status.success(), "{stderr}");
    assert!(
        elapsed < Duration::from_secs(2 + 6),
        "took {elapsed:?}:\n{stderr}"
    );
    let endpoint = format!("rendezvous with the store at 127.0.0.1:{port} failed");
    assert!(stderr.contains(&endpoint), "no {endpoint:?} in:\n{stderr}");
}

#[test]
fn the_gloo_stand_in_headers_agree_with_libtorchs_class_layout() {
    verify_gloo_layout().expect("layout check");
}

#[test]
fn nccl_without_the_feature_or_a_gpu_is_a_clean_error() {
    if Backend::nccl_built() && tch::Cuda::is_available() {
        return;
    }
    let rv = Rendezvous {
        master_addr: "127.0.0.1".into(),
        master_port: free_port(),
        rank: 0,
        world_size: 2,
        timeout: Duration::from_secs(30),
        local_address: None,
        cuda_device: Some(0),
    };
    let start = Instant::now();
    let err = ProcessGroup::new(Backend::Nccl, &rv).expect_err("no NCCL here");
    // Refused before the rendezvous, which would otherwise wait for the missing rank.
    assert!(start.elapsed() < Duration::from_secs(5));
    if Backend::nccl_built() {
        assert!(
            matches!(
                err,
                DistError::Init {
                    backend: Backend::Nccl,
                    ..
                }
            ),
            "{err}"
        );
        assert!(
            err.to_string().contains("CUDA device 0 is not available"),
            "{err}"
        );
    } else {
        assert!(matches!(err, DistError::NcclNotBuilt), "{err}");
        assert!(
            err.to_string().contains("built without the nccl feature"),
            "{err}"
        );
    }
}
