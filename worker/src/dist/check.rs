//! `kontrast collectives`: joins the gang from the environment contract and checks it end to end,
//! like nccl-tests: all-reduce, all-gather, broadcast and barrier on known values, a data-parallel
//! gradient check (bucketed reduction versus the full batch), then an all-reduce bandwidth
//! measurement. Every rank prints one JSON line on stdout and exits 1 if a check failed.
use std::process::ExitCode;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::nn::{self, Module};
use tch::{Device, Kind, Tensor};

use super::{
    Backend, DistError, GradReducer, ProcessGroup, ReduceOp, Rendezvous, broadcast_parameters,
    ordered_variables, verify_gloo_layout,
};

/// Which backend `kontrast collectives` uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum BackendChoice {
    /// NCCL when built with it and a CUDA device is visible, Gloo otherwise.
    Auto,
    /// Gloo on CPU tensors.
    Gloo,
    /// NCCL on the CUDA device `LOCAL_RANK`.
    Nccl,
}

/// Arguments of `kontrast collectives`.
#[derive(Clone, Debug, clap::Args)]
pub struct Args {
    /// Backend to check.
    #[arg(long, value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,
    /// This process's rank.
    #[arg(long, env = "RANK")]
    pub rank: usize,
    /// Number of ranks.
    #[arg(long, env = "WORLD_SIZE")]
    pub world_size: usize,
    /// Host of rank 0, which serves the rendezvous store.
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Port of the rendezvous store on rank 0.
    #[arg(long, env = "MASTER_PORT", default_value_t = 29500)]
    pub master_port: u16,
    /// CUDA device of this rank (NCCL).
    #[arg(long, env = "LOCAL_RANK", default_value_t = 0)]
    pub local_rank: usize,
    /// Address Gloo binds to and advertises (default: this machine's hostname).
    #[arg(long, env = "POD_IP")]
    pub local_address: Option<String>,
    /// Limit in seconds for the rendezvous and for each collective.
    #[arg(long, default_value_t = 60.0)]
    pub timeout_secs: f64,
    /// Size of the bandwidth all-reduce buffer in MiB.
    #[arg(long, default_value_t = 64.0)]
    pub size_mib: f64,
    /// Timed all-reduce iterations.
    #[arg(long, default_value_t = 20)]
    pub iterations: usize,
    /// Untimed all-reduce iterations before them.
    #[arg(long, default_value_t = 2)]
    pub warmup: usize,
}

/// One rank's result, printed as JSON.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Whether every check passed.
    pub ok: bool,
    /// This rank.
    pub rank: usize,
    /// Number of ranks.
    pub world_size: usize,
    /// `gloo` or `nccl`.
    pub backend: String,
    /// Device of the tensors (`cpu`, `cuda:0`, …).
    pub device: String,
    /// Seconds to join the group.
    pub join_seconds: f64,
    /// The checks, in order.
    pub checks: Vec<Check>,
    /// The all-reduce bandwidth measurement.
    pub bandwidth: Bandwidth,
}

/// One check's outcome.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// What was checked.
    pub name: &'static str,
    /// Whether the result was as expected.
    pub ok: bool,
    /// What differed, when not ok.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
}

/// All-reduce (sum) timing, with nccl-tests' bandwidth conventions.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Bandwidth {
    /// Bytes per all-reduce.
    pub bytes: usize,
    /// Timed iterations.
    pub iterations: usize,
    /// Mean seconds per all-reduce.
    pub mean_seconds: f64,
    /// bytes / time, in GB/s.
    pub alg_bandwidth_gbps: f64,
    /// Algorithm bandwidth × 2(n−1)/n: what each link carried, in GB/s.
    pub bus_bandwidth_gbps: f64,
}

/// Runs `kontrast collectives`. Errors are failed collectives or rendezvous (a dead or
/// unreachable peer); wrong results are reported in the JSON and give exit status 1.
pub fn run(args: Args) -> Result<ExitCode, DistError> {
    let backend = match args.backend {
        BackendChoice::Gloo => Backend::Gloo,
        BackendChoice::Nccl => Backend::Nccl,
        BackendChoice::Auto if Backend::nccl_built() && tch::Cuda::is_available() => Backend::Nccl,
        BackendChoice::Auto => Backend::Gloo,
    };
    if !(args.timeout_secs.is_finite() && args.timeout_secs > 0.0) {
        return Err(DistError::InvalidRendezvous(format!(
            "timeout {} s is not a positive number",
            args.timeout_secs
        )));
    }
    let rv = Rendezvous {
        master_addr: args.master_addr.clone(),
        master_port: args.master_port,
        rank: args.rank,
        world_size: args.world_size,
        timeout: Duration::from_secs_f64(args.timeout_secs),
        local_address: args.local_address.clone().filter(|s| !s.is_empty()),
        cuda_device: Some(args.local_rank),
    };
    let device = match backend {
        Backend::Gloo => Device::Cpu,
        Backend::Nccl => Device::Cuda(args.local_rank),
    };

    let mut checks = Vec::new();
    checks.push(outcome(
        "gloo_layout",
        verify_gloo_layout().map_err(|e| e.to_string()),
    ));

    let start = Instant::now();
    let pg = ProcessGroup::new(backend, &rv)?;
    let join_seconds = start.elapsed().as_secs_f64();
    tracing::info!(
        rank = pg.rank(),
        world_size = pg.world_size(),
        %backend,
        join_seconds,
        "joined the process group"
    );

    checks.push(outcome(
        "all_reduce_sum",
        check_all_reduce(&pg, device, ReduceOp::Sum)?,
    ));
    checks.push(outcome(
        "all_reduce_avg",
        check_all_reduce(&pg, device, ReduceOp::Avg)?,
    ));
    checks.push(outcome(
        "all_reduce_max",
        check_all_reduce(&pg, device, ReduceOp::Max)?,
    ));
    checks.push(outcome("all_gather", check_all_gather(&pg, device)?));
    checks.push(outcome("broadcast", check_broadcast(&pg, device)?));
    pg.barrier()?;
    checks.push(outcome("barrier", Ok(())));
    checks.push(outcome("grad_reducer", check_grad_reducer(&pg, device)?));
    let bandwidth = measure_bandwidth(&pg, device, &args)?;

    let report = Report {
        ok: checks.iter().all(|c| c.ok),
        rank: pg.rank(),
        world_size: pg.world_size(),
        backend: backend.to_string(),
        device: format!("{device:?}").to_lowercase(),
        join_seconds,
        checks,
        bandwidth,
    };
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => tracing::error!(error = %e, "cannot serialise the report"),
    }
    if !report.ok {
        for c in report.checks.iter().filter(|c| !c.ok) {
            tracing::error!(
                check = c.name,
                detail = c.detail.as_deref().unwrap_or(""),
                "check failed"
            );
        }
    }
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

fn outcome(name: &'static str, result: Result<(), String>) -> Check {
    Check {
        name,
        ok: result.is_ok(),
        detail: result.err(),
    }
}

type Checked = Result<Result<(), String>, DistError>;

/// Compares exactly (the checks use small integers in floating point, so sums are exact).
fn expect_equal(got: &Tensor, want: &Tensor) -> Result<(), String> {
    let got = got.to_device(Device::Cpu);
    if got.size() == want.size() && got.equal(want) {
        Ok(())
    } else {
        let values = |t: &Tensor| {
            Vec::<f64>::try_from(t.flatten(0, -1).to_kind(Kind::Double)).unwrap_or_default()
        };
        Err(format!("got {:?}, want {:?}", values(&got), values(want)))
    }
}

fn check_all_reduce(pg: &ProcessGroup, device: Device, op: ReduceOp) -> Checked {
    let (r, w) = (pg.rank() as f64, pg.world_size() as f64);
    let base = Tensor::arange(5, (Kind::Float, Device::Cpu));
    let mut t = (&base + r).to_device(device);
    pg.all_reduce(&mut t, op)?;
    // Rank r contributes base + r.
    let want = match op {
        ReduceOp::Sum => &base * w + w * (w - 1.0) / 2.0,
        ReduceOp::Avg => &base + (w - 1.0) / 2.0,
        ReduceOp::Max => &base + (w - 1.0),
        ReduceOp::Min => base.shallow_clone(),
        ReduceOp::Product => return Ok(Err("not checked".into())),
    };
    Ok(expect_equal(&t, &want))
}

fn check_all_gather(pg: &ProcessGroup, device: Device) -> Checked {
    let t = Tensor::full([2, 3], pg.rank() as f64, (Kind::Float, device));
    let got = pg.all_gather(&t)?;
    let parts: Vec<Tensor> = (0..pg.world_size())
        .map(|r| Tensor::full([2, 3], r as f64, (Kind::Float, Device::Cpu)))
        .collect();
    let want = Tensor::cat(&parts, 0);
    Ok(expect_equal(&got, &want))
}

fn check_broadcast(pg: &ProcessGroup, device: Device) -> Checked {
    let want = Tensor::arange(4, (Kind::Float, Device::Cpu)) * 7.0 + 1.0;
    let mut t = if pg.rank() == 0 {
        want.to_device(device)
    } else {
        Tensor::full([4], -1.0, (Kind::Float, device))
    };
    pg.broadcast(&mut t, 0)?;
    Ok(expect_equal(&t, &want))
}

/// A small model in double precision (so the comparison is about the reduction, not rounding).
fn small_model(seed: i64, device: Device) -> (nn::VarStore, nn::Sequential) {
    tch::manual_seed(seed);
    let mut vs = nn::VarStore::new(device);
    let root = vs.root();
    let model = nn::seq()
        .add(nn::linear(&root / "fc1", 8, 16, Default::default()))
        .add_fn(|x| x.tanh())
        .add(nn::linear(&root / "fc2", 16, 4, Default::default()));
    vs.double();
    (vs, model)
}

/// Every rank takes its share of one fixed batch; the averaged gradients must match what one
/// process computes on the whole batch (relative error ≤ 1e-6 per parameter). Also checks that
/// `broadcast_parameters` gives every rank rank 0's weights.
fn check_grad_reducer(pg: &ProcessGroup, device: Device) -> Checked {
    let (rank, world) = (pg.rank() as i64, pg.world_size() as i64);
    let per_rank = 4;
    tch::manual_seed(1234);
    let x = Tensor::randn([per_rank * world, 8], (Kind::Double, device));
    let y = Tensor::randn([per_rank * world, 4], (Kind::Double, device));

    // Different weights on every rank until broadcast_parameters.
    let (vs, model) = small_model(100 + rank, device);
    let vars: Vec<Tensor> = ordered_variables(&vs).into_iter().map(|(_, t)| t).collect();
    broadcast_parameters(pg, &vars, 0)?;
    let (ref_vs, ref_model) = small_model(100, device);
    let ref_vars = ordered_variables(&ref_vs);
    for ((name, want), got) in ref_vars.iter().zip(&vars) {
        if !got.equal(want) {
            return Ok(Err(format!(
                "after broadcast_parameters, {name} differs from rank 0's"
            )));
        }
    }

    // Small buckets so that several all-reduces run.
    let mut reducer = GradReducer::with_bucket_bytes(&vars, 512)?;
    let xs = x.narrow(0, rank * per_rank, per_rank);
    let ys = y.narrow(0, rank * per_rank, per_rank);
    model
        .forward(&xs)
        .mse_loss(&ys, tch::Reduction::Mean)
        .backward();
    let stats = reducer.reduce(pg)?;
    ref_model
        .forward(&x)
        .mse_loss(&y, tch::Reduction::Mean)
        .backward();
    if stats.buckets < 2 {
        return Ok(Err(format!(
            "expected several buckets, got {}",
            stats.buckets
        )));
    }
    for ((name, want), got) in ref_vars.iter().zip(&vars) {
        let (want, got) = (want.grad(), got.grad());
        let scale = want.norm().double_value(&[]).max(f64::MIN_POSITIVE);
        let rel = (&got - &want).norm().double_value(&[]) / scale;
        if rel.is_nan() || rel > 1e-6 {
            return Ok(Err(format!("gradient of {name}: relative error {rel:e}")));
        }
    }
    Ok(Ok(()))
}

fn measure_bandwidth(
    pg: &ProcessGroup,
    device: Device,
    args: &Args,
) -> Result<Bandwidth, DistError> {
    let numel = ((args.size_mib * 1024.0 * 1024.0) / 4.0).max(1.0) as i64;
    // Zeros stay zeros under repeated sums: no overflow however many iterations run.
    let mut t = Tensor::zeros([numel], (Kind::Float, device));
    let sync = || {
        if let Device::Cuda(i) = device {
            tch::Cuda::synchronize(i as i64);
        }
    };
    for _ in 0..args.warmup {
        pg.all_reduce(&mut t, ReduceOp::Sum)?;
    }
    sync();
    let start = Instant::now();
    for _ in 0..args.iterations {
        pg.all_reduce(&mut t, ReduceOp::Sum)?;
    }
    sync();
    let bytes = numel as usize * 4;
    let mut b = Bandwidth {
        bytes,
        iterations: args.iterations,
        ..Bandwidth::default()
    };
    if args.iterations > 0 {
        b.mean_seconds = start.elapsed().as_secs_f64() / args.iterations as f64;
        if b.mean_seconds > 0.0 {
            let w = pg.world_size() as f64;
            b.alg_bandwidth_gbps = bytes as f64 / b.mean_seconds / 1e9;
            b.bus_bandwidth_gbps = b.alg_bandwidth_gbps * 2.0 * (w - 1.0) / w;
        }
    }
    Ok(b)
}
