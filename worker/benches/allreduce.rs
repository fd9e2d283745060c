//! Gradient all-reduce over Gloo, two processes on 127.0.0.1: our c10d shim (`dist::GradReducer`,
//! `ProcessGroup::all_reduce`) against `torch.distributed` (`tests/reference/allreduce_bench.py`),
//! plus the cost of reducing after backward instead of overlapping it as PyTorch's DDP does.
//!
//! `cargo bench -p kontrast-worker --bench allreduce -- [--rounds 5] [--warmup 2] [--iters 3]
//! [--batch 8] [--size 64] [--threads 1] [--json FILE]`
//!
//! Every round starts a fresh pair of Rust ranks (this binary, re-executed) and a fresh pair of
//! Python ranks, alternating which side goes first, so that load from other processes hits both
//! alike; the table shows the median over rounds of each rank 0's median over iterations. Both
//! ranks enter a barrier before every timed iteration.
//!
//! Each rank holds torchvision's ResNet-50 parameters (the backbone plus the 1000-way classifier,
//! 25.6 M fp32 values, about 100 MB) and times:
//! - the bucketed reduction: `GradReducer::reduce` (25 MiB buckets in reverse parameter order,
//!   one asynchronous all-reduce each, averaged and copied back); Python does the same steps
//!   with `dist.all_reduce(..., async_op=True)` per bucket;
//! - one all-reduce (average) of a flat tensor of all 25.6 M values;
//! - a training step's forward and backward on a small batch, alone and followed by the
//!   bucketed reduction; Python also runs it under `DistributedDataParallel` (gloo,
//!   `bucket_cap_mb=25`), whose backward overlaps the reduction with the gradient computation.
mod common;

use std::fs::File;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use clap::Parser;
use kontrast_api::config::Arch;
use kontrast_worker::dist::{Backend, GradReducer, ProcessGroup, ReduceOp, Rendezvous};
use kontrast_worker::model::params::Params;
use kontrast_worker::model::resnet::ResNet;
use serde_json::{Value, json};
use tch::{Device, Kind, Tensor};

use common::{median, python};

/// Set in the re-executed ranks: where rank 0 writes its results.
const OUT_ENV: &str = "KONTRAST_ALLREDUCE_BENCH_OUT";
const WORLD: usize = 2;
/// torchvision's classifier, which the backbone alone lacks: with it the parameter count is
/// ResNet-50's 25.6 M.
const CLASSES: i64 = 1000;

#[derive(Debug, Parser)]
#[command(about = "Gloo all-reduce, two processes: the Rust c10d shim versus torch.distributed")]
struct Args {
    /// Rounds (each: a Rust pair and a Python pair of ranks); the median is reported.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Untimed iterations of each measurement per round.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Timed iterations of each measurement per round.
    #[arg(long, default_value_t = 3)]
    iters: usize,
    /// Images per rank in the forward/backward measurements.
    #[arg(long, default_value_t = 8)]
    batch: i64,
    /// Side of those images in pixels (standard 7×7/2 stem and max-pool).
    #[arg(long, default_value_t = 64)]
    size: i64,
    /// Intra-op threads per rank on both sides; the two ranks share the machine's cores.
    #[arg(long, default_value_t = 1)]
    threads: usize,
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

/// The quantities each side's rank 0 reports, in seconds (JSON keys of both sides).
const KEYS: [&str; 10] = [
    "bucketed_s",
    "bucketed_comm_s",
    "flat_s",
    "step_s",
    "backward_s",
    "step_reduce_s",
    "ddp_step_s",
    "ddp_backward_s",
    "reduce_added_s",
    "ddp_added_s",
];

/// Runs `f` `warmup` times, then `iters` times with a timer; a barrier precedes each call so
/// that both ranks start together. Returns the median seconds.
fn timed(
    pg: &ProcessGroup,
    warmup: usize,
    iters: usize,
    mut f: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<f64> {
    for _ in 0..warmup {
        pg.barrier()?;
        f()?;
    }
    let mut times = Vec::with_capacity(iters);
    for _ in 0..iters {
        pg.barrier()?;
        let start = Instant::now();
        f()?;
        times.push(start.elapsed().as_secs_f64());
    }
    Ok(median(&times))
}

/// One Rust rank: joins the group, times everything and (rank 0) writes the medians to `out`.
fn rank_main(args: &Args, out: &Path) -> anyhow::Result<()> {
    tch::set_num_threads(args.threads as i32);
    let rv = Rendezvous {
        local_address: Some("127.0.0.1".into()),
        ..Rendezvous::from_env(Duration::from_secs(120))?
    };
    let pg = ProcessGroup::new(Backend::Gloo, &rv)?;
    ensure!(pg.world_size() == WORLD, "written for {WORLD} ranks");
    tch::manual_seed(pg.rank() as i64);

    let mut params = Params::default();
    let backbone = ResNet::new(
        params.scope("", Device::Cpu, true),
        Arch::Resnet50,
        false,
        64,
    );
    let fc_w = (Tensor::randn(
        [CLASSES, backbone.feature_dim()],
        (Kind::Float, Device::Cpu),
    ) * 0.01)
        .set_requires_grad(true);
    let fc_b = Tensor::zeros([CLASSES], (Kind::Float, Device::Cpu)).set_requires_grad(true);
    // torchvision's parameter order: the backbone's, then fc.weight and fc.bias.
    let mut tensors: Vec<Tensor> = params
        .parameters()
        .map(|e| e.tensor.shallow_clone())
        .collect();
    tensors.push(fc_w.shallow_clone());
    tensors.push(fc_b.shallow_clone());
    let numel: i64 = tensors.iter().map(|t| t.numel() as i64).sum();

    let x = Tensor::randn(
        [args.batch, 3, args.size, args.size],
        (Kind::Float, Device::Cpu),
    );
    let y = Tensor::randint(CLASSES, [args.batch], (Kind::Int64, Device::Cpu));
    let forward = || {
        backbone
            .forward_t(&x, true)
            .linear(&fc_w, Some(&fc_b))
            .cross_entropy_for_logits(&y)
    };
    let zero_grads = |tensors: &mut [Tensor]| tensors.iter_mut().for_each(Tensor::zero_grad);

    // Gradients to reduce: one backward gives every parameter one.
    forward().backward();
    let mut reducer = GradReducer::new(&tensors)?;

    // A correctness check of what is timed: the average of rank values.
    let mut flat = Tensor::full([numel], pg.rank() as f64, (Kind::Float, Device::Cpu));
    pg.all_reduce(&mut flat, ReduceOp::Avg)?;
    let (lo, hi) = (flat.min().double_value(&[]), flat.max().double_value(&[]));
    ensure!(
        lo == 0.5 && hi == 0.5,
        "the flat average is in [{lo}, {hi}], not 0.5"
    );

    let mut comm = Vec::new();
    let bucketed_s = timed(&pg, args.warmup, args.iters, || {
        comm.push(reducer.reduce(&pg)?.all_reduce.as_secs_f64());
        Ok(())
    })?;
    let flat_s = timed(&pg, args.warmup, args.iters, || {
        pg.all_reduce(&mut flat, ReduceOp::Avg)?;
        Ok(())
    })?;

    // Forward + backward alone and followed by the reduction, alternating per iteration so that
    // load changes hit both alike; the cost of the reduction is the per-iteration difference.
    let (mut step, mut backward, mut step_reduce) = (Vec::new(), Vec::new(), Vec::new());
    let mut added = Vec::new();
    for i in 0..args.warmup + args.iters {
        for reduce in [false, true] {
            zero_grads(&mut tensors);
            pg.barrier()?;
            let start = Instant::now();
            let loss = forward();
            let mid = Instant::now();
            loss.backward();
            let bwd = mid.elapsed().as_secs_f64();
            if reduce {
                reducer.reduce(&pg)?;
            }
            let total = start.elapsed().as_secs_f64();
            if i >= args.warmup {
                if reduce {
                    added.push(total - step.last().copied().unwrap_or(f64::NAN));
                    step_reduce.push(total);
                } else {
                    step.push(total);
                    backward.push(bwd);
                }
            }
        }
    }

    if pg.rank() == 0 {
        let result = json!({
            "params": numel,
            "tensors": tensors.len(),
            "buckets": reducer.bucket_count(),
            "bucketed_s": bucketed_s,
            "bucketed_comm_s": median(&comm[args.warmup..]),
            "flat_s": flat_s,
            "step_s": median(&step),
            "backward_s": median(&backward),
            "step_reduce_s": median(&step_reduce),
            "reduce_added_s": median(&added),
        });
        std::fs::write(out, serde_json::to_vec_pretty(&result)?)?;
    }
    pg.barrier()?;
    Ok(())
}

/// A port nobody listens on right now.
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// Starts both ranks of one side (`make(rank)` builds a rank's command), waits for them and
/// returns rank 0's results.
fn run_pair(
    side: &str,
    dir: &Path,
    round: usize,
    make: impl Fn(usize) -> Command,
) -> anyhow::Result<Value> {
    let port = free_port()?;
    let out = dir.join(format!("{side}-{round}.json"));
    let mut children: Vec<(Child, PathBuf)> = Vec::new();
    for rank in 0..WORLD {
        let log = dir.join(format!("{side}-{round}-{rank}.log"));
        let file = File::create(&log)?;
        let mut cmd = make(rank);
        cmd.env("RANK", rank.to_string())
            .env("WORLD_SIZE", WORLD.to_string())
            .env("MASTER_ADDR", "127.0.0.1")
            .env("MASTER_PORT", port.to_string())
            // Both sides get one OpenMP thread per rank unless --threads says otherwise.
            .env("OMP_NUM_THREADS", "1")
            // Python's Gloo binds to the interface of the hostname by default; ours to 127.0.0.1.
            .env("GLOO_SOCKET_IFNAME", "lo")
            .env(OUT_ENV, &out)
            .env_remove("POD_IP")
            .env_remove("LOCAL_RANK")
            .stdin(Stdio::null())
            // One file for both streams, shared offset, so neither overwrites the other.
            .stdout(file.try_clone()?)
            .stderr(file);
        children.push((
            cmd.spawn()
                .with_context(|| format!("start {side} rank {rank}"))?,
            log,
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut failed = Vec::new();
    for (child, log) in &mut children {
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        if status.is_none_or(|s| !s.success()) {
            failed.push(format!(
                "{side} rank exited with {status:?}:\n{}",
                std::fs::read_to_string(&*log).unwrap_or_default()
            ));
        }
    }
    if !failed.is_empty() {
        bail!("{}", failed.join("\n"));
    }
    Ok(serde_json::from_slice(&std::fs::read(&out).with_context(
        || format!("{side} rank 0 wrote no results"),
    )?)?)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Ok(out) = std::env::var(OUT_ENV) {
        return rank_main(&args, Path::new(&out));
    }
    ensure!(
        args.rounds > 0 && args.iters > 0,
        "--rounds and --iters must be positive"
    );
    let dir = tempfile::tempdir()?;
    let exe = std::env::current_exe()?;
    let passed: Vec<String> = std::env::args().skip(1).collect();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/reference/allreduce_bench.py");
    let python = python(args.python.as_deref());
    let rust_rank = |_rank: usize| {
        let mut cmd = Command::new(&exe);
        cmd.args(&passed);
        cmd
    };
    let python_rank = |_rank: usize| {
        let mut cmd = Command::new(&python);
        cmd.arg(&script).args([
            "--warmup".to_string(),
            args.warmup.to_string(),
            "--iters".into(),
            args.iters.to_string(),
            "--batch".into(),
            args.batch.to_string(),
            "--size".into(),
            args.size.to_string(),
            "--threads".into(),
            args.threads.to_string(),
        ]);
        cmd
    };
    println!(
        "2 ranks on 127.0.0.1, Gloo | threads {} per rank | {} rounds × ({} warm-up + {} timed) | forward/backward: ResNet-50, batch {} at {} px",
        args.threads, args.rounds, args.warmup, args.iters, args.batch, args.size
    );

    let (mut rust, mut py) = (Vec::new(), Vec::new());
    for round in 0..args.rounds {
        // The side that goes first alternates.
        let (r, p) = if round % 2 == 0 {
            let r = run_pair("rust", dir.path(), round, rust_rank)?;
            (r, run_pair("python", dir.path(), round, python_rank)?)
        } else {
            let p = run_pair("python", dir.path(), round, python_rank)?;
            (run_pair("rust", dir.path(), round, rust_rank)?, p)
        };
        ensure!(
            r["params"] == p["params"] && r["tensors"] == p["tensors"],
            "the two sides reduce different tensors: Rust {} in {}, Python {} in {}",
            r["params"],
            r["tensors"],
            p["params"],
            p["tensors"]
        );
        eprintln!(
            "round {round}: bucketed Rust {:.1} ms / Python {:.1} ms, step+reduce Rust {:.1} ms / Python DDP {:.1} ms",
            r["bucketed_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            p["bucketed_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            r["step_reduce_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
            p["ddp_step_s"].as_f64().unwrap_or(f64::NAN) * 1e3,
        );
        rust.push(r);
        py.push(p);
    }
    let med = |runs: &[Value], key: &str| -> f64 {
        median(
            &runs
                .iter()
                .filter_map(|v| v.get(key).and_then(Value::as_f64))
                .collect::<Vec<_>>(),
        ) * 1e3
    };
    let numel = rust[0]["params"].as_i64().unwrap_or(0);
    let mb = numel as f64 * 4.0 / 1e6;
    let fb = format!("batch {} × {} px", args.batch, args.size);
    let buckets = format!(
        "{:.1} MB, {} buckets (Rust) / {} (Python)",
        mb, rust[0]["buckets"], py[0]["buckets"]
    );
    // (operation, size, Rust key, Python key)
    let rows: [(&str, String, Option<&str>, &str); 8] = [
        (
            "bucketed gradient all-reduce (pack, reduce, copy back)",
            buckets.clone(),
            Some("bucketed_s"),
            "bucketed_s",
        ),
        (
            "  of which first launch to last wait",
            buckets,
            Some("bucketed_comm_s"),
            "bucketed_comm_s",
        ),
        (
            "one flat all-reduce (average)",
            format!("{mb:.1} MB"),
            Some("flat_s"),
            "flat_s",
        ),
        (
            "ResNet-50 forward + backward, no communication",
            fb.clone(),
            Some("step_s"),
            "step_s",
        ),
        (
            "  of which backward",
            fb.clone(),
            Some("backward_s"),
            "backward_s",
        ),
        (
            "forward + backward, then bucketed reduce",
            fb.clone(),
            Some("step_reduce_s"),
            "step_reduce_s",
        ),
        (
            "forward + backward under DDP (reduce overlaps backward)",
            fb.clone(),
            None,
            "ddp_step_s",
        ),
        (
            "  of which backward (with the overlapped reduce)",
            fb,
            None,
            "ddp_backward_s",
        ),
    ];
    println!();
    println!("| operation | size | Rust ms | Python ms | ratio (Python/Rust) |");
    println!("|---|---|---:|---:|---:|");
    for (name, size, rust_key, py_key) in &rows {
        let p = med(&py, py_key);
        match rust_key {
            Some(key) => {
                let r = med(&rust, key);
                println!("| {name} | {size} | {r:.1} | {p:.1} | {:.2} |", p / r);
            }
            None => println!("| {name} | {size} | — | {p:.1} | — |"),
        }
    }
    // Differences paired within each iteration, so that slow load changes cancel.
    let (rust_step, py_step) = (med(&rust, "step_s"), med(&py, "step_s"));
    let added = [
        (
            "Rust, bucketed reduce after backward",
            med(&rust, "reduce_added_s"),
            rust_step,
        ),
        (
            "Python, bucketed reduce after backward",
            med(&py, "reduce_added_s"),
            py_step,
        ),
        (
            "Python DDP, reduce overlapping backward",
            med(&py, "ddp_added_s"),
            py_step,
        ),
    ];
    println!();
    println!(
        "Time the reduction adds to forward + backward (median of per-iteration differences):"
    );
    println!();
    println!("| reduction | added ms | % of forward + backward |");
    println!("|---|---:|---:|");
    for (name, ms, base) in added {
        println!("| {name} | {ms:.1} | {:.0}% |", 100.0 * ms / base);
    }
    if let Some(path) = &args.json {
        let doc = json!({
            "threads": args.threads,
            "rounds": args.rounds,
            "warmup": args.warmup,
            "iters": args.iters,
            "batch": args.batch,
            "size": args.size,
            "keys": KEYS,
            "rust": rust,
            "python": py,
        });
        std::fs::write(path, serde_json::to_string_pretty(&doc)?)
            .with_context(|| format!("write {}", path.display()))?;
    }
    Ok(())
}
