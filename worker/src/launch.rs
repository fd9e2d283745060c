//! `kontrast launch`: one process per local rank, fail-fast.
//!
//! The pod's command. It starts `NPROC_PER_NODE` copies of `kontrast train` (or what follows
//! `--`), each with `RANK = NODE_RANK × NPROC_PER_NODE + LOCAL_RANK`, `LOCAL_RANK`,
//! `LOCAL_WORLD_SIZE`, `WORLD_SIZE` and the rendezvous variables, then supervises them:
//!
//! - SIGTERM/SIGINT are forwarded to every rank; after the grace period the ranks get SIGKILL.
//!   A second signal skips the rest of the grace period.
//! - As soon as one rank fails (non-zero exit or killed by a signal), the others get SIGTERM,
//!   then SIGKILL after the grace period: a rank blocked in a collective never outlives its job.
//! - Every rank runs in its own process group, so a signal reaches everything it started, and
//!   (on Linux) dies with the launcher if the launcher itself is killed outright.
//!
//! Exit codes: 0 when every rank exited 0; the first failing rank's own code otherwise (78, the
//! permanent-error code, stays 78); 128 + N for a rank killed by signal N (134 SIGABRT, 137
//! SIGKILL, 139 SIGSEGV; all retryable for the operator); 128 + N when the launcher itself
//! received signal N and no rank failed on its own; 78 for an impossible process layout
//! (`WORLD_SIZE` ≠ `NNODES × NPROC_PER_NODE`, `NODE_RANK` ≥ `NNODES`, a zero count).
//!
//! When the job fails and no rank left a termination message, the launcher writes one naming
//! the failed local rank and its exit code or signal, which the operator shows in the run's
//! status.
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{Child, Command, ExitCode, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use std::os::unix::process::{CommandExt, ExitStatusExt};

use crate::telemetry::{TERMINATION_LOG_ENV, TerminationLog};

mod signals;

/// The exit code of a permanent error: the operator fails the run instead of restarting it.
pub const PERMANENT_EXIT_CODE: u8 = 78;

/// How often the supervisor looks at its ranks and at pending signals.
const POLL: Duration = Duration::from_millis(20);
/// How long to wait for ranks to disappear after SIGKILL before giving up on them (a process
/// stuck in uninterruptible I/O cannot be reaped; the pod's own teardown takes over).
const REAP_AFTER_KILL: Duration = Duration::from_secs(5);

/// `kontrast launch`: start and supervise the local ranks of this node.
#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Nodes (pods) in the job.
    #[arg(long, env = "NNODES", default_value_t = 1)]
    pub nnodes: u32,
    /// This node's index, 0-based.
    #[arg(long, env = "NODE_RANK", default_value_t = 0)]
    pub node_rank: u32,
    /// Ranks to start on this node (one per GPU, one on CPU).
    #[arg(long, env = "NPROC_PER_NODE", default_value_t = 1)]
    pub nproc_per_node: u32,
    /// Ranks in the whole job; must equal nnodes × nproc-per-node when given.
    #[arg(long, env = "WORLD_SIZE")]
    pub world_size: Option<u32>,
    /// Rendezvous host (rank 0's node).
    #[arg(long, env = "MASTER_ADDR", default_value = "127.0.0.1")]
    pub master_addr: String,
    /// Rendezvous port.
    #[arg(long, env = "MASTER_PORT", default_value_t = 29500)]
    pub master_port: u16,
    /// Seconds ranks get to exit after SIGTERM before SIGKILL (below the pod's own grace period).
    #[arg(long, env = "KONTRAST_LAUNCH_GRACE_SECONDS", default_value_t = 20.0)]
    pub grace_seconds: f64,
    /// Termination-message file; default /dev/termination-log when Kubernetes provides it.
    #[arg(long, env = "KONTRAST_TERMINATION_LOG")]
    pub termination_log: Option<PathBuf>,
    /// Program each rank runs instead of this executable (tests, debugging).
    #[arg(long, hide = true)]
    pub program: Option<PathBuf>,
    /// Arguments of each rank, after `--` (default: `train`).
    #[arg(last = true)]
    pub rank_args: Vec<OsString>,
}

/// What failed in `kontrast launch`.
#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    /// The process layout is impossible: a permanent error.
    #[error("invalid process layout: {0}")]
    Layout(String),
    /// The grace period is not a usable duration: a permanent error.
    #[error("invalid grace period {0} s")]
    Grace(f64),
    /// The path of this executable could not be found.
    #[error("finding this executable: {0}")]
    CurrentExe(#[source] std::io::Error),
    /// Signal handlers could not be installed.
    #[error("installing signal handlers: {0}")]
    Signals(#[source] std::io::Error),
    /// A rank could not be started.
    #[error("starting local rank {local_rank} ({program}): {source}")]
    Spawn {
        /// The rank that did not start.
        local_rank: u32,
        /// The program.
        program: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
    /// The state of a rank could not be read.
    #[error("waiting for local rank {local_rank}: {source}")]
    Wait {
        /// The rank.
        local_rank: u32,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },
}

impl LaunchError {
    /// Whether restarting cannot help (the operator fails the run at once).
    pub fn is_permanent(&self) -> bool {
        matches!(self, LaunchError::Layout(_) | LaunchError::Grace(_))
    }
}

/// The validated layout of this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    nnodes: u32,
    node_rank: u32,
    nproc: u32,
    world_size: u32,
}

impl Layout {
    fn new(args: &Args) -> Result<Self, LaunchError> {
        let (nnodes, node_rank, nproc) = (args.nnodes, args.node_rank, args.nproc_per_node);
        if nnodes == 0 || nproc == 0 {
            return Err(LaunchError::Layout(format!(
                "NNODES={nnodes} and NPROC_PER_NODE={nproc} must both be at least 1"
            )));
        }
        if node_rank >= nnodes {
            return Err(LaunchError::Layout(format!(
                "NODE_RANK={node_rank} is not below NNODES={nnodes}"
            )));
        }
        let world_size = nnodes.checked_mul(nproc).ok_or_else(|| {
            LaunchError::Layout(format!(
                "NNODES={nnodes} × NPROC_PER_NODE={nproc} overflows"
            ))
        })?;
        if let Some(w) = args.world_size
            && w != world_size
        {
            return Err(LaunchError::Layout(format!(
                "WORLD_SIZE={w} but NNODES={nnodes} × NPROC_PER_NODE={nproc} = {world_size}"
            )));
        }
        Ok(Self {
            nnodes,
            node_rank,
            nproc,
            world_size,
        })
    }

    fn global_rank(&self, local: u32) -> u32 {
        self.node_rank * self.nproc + local
    }
}

/// Runs `kontrast launch` to the end and returns the exit code to leave with (see the module
/// documentation). A permanent error (an impossible layout) is logged, left as the termination
/// message and returned as `Ok(78)`; `Err` is left for failures worth a retry.
pub fn run(args: Args) -> Result<ExitCode, LaunchError> {
    let log = match &args.termination_log {
        Some(path) => TerminationLog::at(path),
        None => TerminationLog::kubernetes_default(),
    };
    // A stale message from an earlier local run must not stand in for this one's.
    if let Err(e) = log.clear() {
        tracing::debug!(error = %e, "cannot clear the termination message");
    }
    let result = launch(&args, &log);
    match result {
        Ok(outcome) => {
            if let Some(message) = &outcome.message
                && !log.has_message()
                && let Err(e) = log.write(message)
            {
                tracing::debug!(error = %e, "cannot write the termination message");
            }
            Ok(ExitCode::from(outcome.code))
        }
        Err(e) => {
            tracing::error!(error = %e, "kontrast launch failed");
            if let Err(w) = log.write(&format!("kontrast launch: {e}")) {
                tracing::debug!(error = %w, "cannot write the termination message");
            }
            if e.is_permanent() {
                Ok(ExitCode::from(PERMANENT_EXIT_CODE))
            } else {
                Err(e)
            }
        }
    }
}

/// How the job ended.
struct Outcome {
    code: u8,
    /// The termination message to leave if no rank left one.
    message: Option<String>,
}

/// One started rank.
struct Rank {
    local: u32,
    rank: u32,
    child: Child,
    status: Option<ExitStatus>,
}

/// The exit code a rank's status stands for: its own code, or 128 + the signal that killed it.
fn exit_code(status: ExitStatus) -> u8 {
    match (status.code(), status.signal()) {
        (Some(code), _) => u8::try_from(code).unwrap_or(1),
        (None, Some(signal)) => u8::try_from(128 + signal).unwrap_or(1),
        (None, None) => 1,
    }
}

fn describe(status: ExitStatus) -> String {
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exited with code {code}"),
        (None, Some(signal)) => format!(
            "was killed by {} (exit code {})",
            signals::name(signal),
            exit_code(status)
        ),
        (None, None) => format!("ended with {status}"),
    }
}

fn launch(args: &Args, log: &TerminationLog) -> Result<Outcome, LaunchError> {
    let layout = Layout::new(args)?;
    let grace = Duration::try_from_secs_f64(args.grace_seconds)
        .map_err(|_| LaunchError::Grace(args.grace_seconds))?;
    let program = match &args.program {
        Some(p) => p.clone(),
        None => std::env::current_exe().map_err(LaunchError::CurrentExe)?,
    };
    let rank_args = if args.rank_args.is_empty() {
        vec![OsString::from("train")]
    } else {
        args.rank_args.clone()
    };
    // Before the first child exists, so no signal can slip between spawning and catching.
    signals::install(&[libc::SIGTERM, libc::SIGINT]).map_err(LaunchError::Signals)?;

    let parent = libc::pid_t::try_from(std::process::id()).unwrap_or(0);
    let mut ranks = Vec::new();
    let mut spawn_error = None;
    for local in 0..layout.nproc {
        let rank = layout.global_rank(local);
        let mut cmd = Command::new(&program);
        cmd.args(&rank_args)
            .env("RANK", rank.to_string())
            .env("LOCAL_RANK", local.to_string())
            .env("LOCAL_WORLD_SIZE", layout.nproc.to_string())
            .env("WORLD_SIZE", layout.world_size.to_string())
            .env("NNODES", layout.nnodes.to_string())
            .env("NODE_RANK", layout.node_rank.to_string())
            .env("NPROC_PER_NODE", layout.nproc.to_string())
            .env("MASTER_ADDR", &args.master_addr)
            .env("MASTER_PORT", args.master_port.to_string())
            // Ranks never read input; in a process group of their own, reading the terminal
            // would stop them (SIGTTIN).
            .stdin(Stdio::null())
            .process_group(0);
        if log.is_explicit() {
            cmd.env(TERMINATION_LOG_ENV, log.path());
        }
        // SAFETY: the closure runs between fork and exec and only makes async-signal-safe calls.
        unsafe {
            cmd.pre_exec(move || signals::die_with_parent(parent));
        }
        match cmd.spawn() {
            Ok(child) => {
                tracing::info!(local_rank = local, rank, pid = child.id(), "started rank");
                ranks.push(Rank {
                    local,
                    rank,
                    child,
                    status: None,
                });
            }
            Err(source) => {
                spawn_error = Some(LaunchError::Spawn {
                    local_rank: local,
                    program: program.clone(),
                    source,
                });
                break;
            }
        }
    }
    let mut supervisor = Supervisor::new(ranks, grace);
    if let Some(e) = spawn_error {
        supervisor.stop(libc::SIGTERM);
        supervisor.wait()?;
        return Err(e);
    }
    supervisor.wait()
}

/// Watches the ranks and stops them all when one fails or a signal arrives.
struct Supervisor {
    ranks: Vec<Rank>,
    grace: Duration,
    /// When SIGKILL is due, once stopping.
    kill_at: Option<Instant>,
    /// When SIGKILL was sent.
    killed_at: Option<Instant>,
    /// The first rank to fail: (local rank, global rank, status).
    failure: Option<(u32, u32, ExitStatus)>,
    /// A signal the launcher itself received.
    received: Option<i32>,
}

impl Supervisor {
    fn new(ranks: Vec<Rank>, grace: Duration) -> Self {
        Self {
            ranks,
            grace,
            kill_at: None,
            killed_at: None,
            failure: None,
            received: None,
        }
    }

    /// Sends `signal` to every rank's process group (exited ones too: what they started may
    /// still run; a group id stays unused by others while any member lives).
    fn signal_all(&self, signal: i32) {
        for r in &self.ranks {
            if let Err(e) = signals::send_to_group(r.child.id(), signal) {
                tracing::warn!(local_rank = r.local, error = %e, "cannot signal rank");
            }
        }
    }

    /// Starts stopping: `signal` now, SIGKILL after the grace period.
    fn stop(&mut self, signal: i32) {
        if self.kill_at.is_none() {
            self.signal_all(signal);
            self.kill_at = Some(Instant::now() + self.grace);
        }
    }

    fn kill(&mut self) {
        if self.killed_at.is_none() {
            self.signal_all(libc::SIGKILL);
            self.killed_at = Some(Instant::now());
        }
    }

    /// Runs until every rank has exited (or stays unkillable) and says how the job ended.
    fn wait(&mut self) -> Result<Outcome, LaunchError> {
        loop {
            if let Some(signal) = signals::take_pending() {
                if self.kill_at.is_some() {
                    tracing::warn!(signal = %signals::name(signal), "second signal: killing the ranks now");
                    self.kill();
                } else {
                    tracing::info!(signal = %signals::name(signal), "forwarding to the ranks");
                    self.received = Some(signal);
                    self.stop(signal);
                }
            }
            let mut newly_failed = None;
            for r in self.ranks.iter_mut().filter(|r| r.status.is_none()) {
                let status = r.child.try_wait().map_err(|source| LaunchError::Wait {
                    local_rank: r.local,
                    source,
                })?;
                let Some(status) = status else { continue };
                r.status = Some(status);
                if status.success() {
                    tracing::info!(local_rank = r.local, rank = r.rank, "rank finished");
                } else {
                    tracing::warn!(
                        local_rank = r.local,
                        rank = r.rank,
                        "rank {}",
                        describe(status)
                    );
                    if self.failure.is_none() {
                        self.failure = Some((r.local, r.rank, status));
                        newly_failed = Some(r.local);
                    }
                }
            }
            if let Some(local) = newly_failed
                && self.kill_at.is_none()
            {
                tracing::error!(local_rank = local, "a rank failed: stopping the others");
                self.stop(libc::SIGTERM);
            }
            if self.ranks.iter().all(|r| r.status.is_some()) {
                break;
            }
            let now = Instant::now();
            if self.kill_at.is_some_and(|t| now >= t) && self.killed_at.is_none() {
                tracing::warn!(grace = ?self.grace, "ranks still running after the grace period: killing them");
                self.kill();
            }
            if self.killed_at.is_some_and(|t| now >= t + REAP_AFTER_KILL) {
                tracing::error!("ranks did not exit after SIGKILL; leaving them");
                break;
            }
            std::thread::sleep(POLL);
        }
        if self.kill_at.is_some() {
            // Whatever the ranks started must not outlive the job either.
            self.signal_all(libc::SIGKILL);
        }
        Ok(self.outcome())
    }

    fn outcome(&self) -> Outcome {
        match (self.failure, self.received) {
            (Some((local, rank, status)), received) => {
                let mut message = format!("local rank {local} (rank {rank}) {}", describe(status));
                if let Some(signal) = received {
                    message = format!(
                        "kontrast launch received {}; {message}",
                        signals::name(signal)
                    );
                }
                Outcome {
                    code: exit_code(status),
                    message: Some(message),
                }
            }
            (None, Some(signal)) => Outcome {
                code: u8::try_from(128 + signal).unwrap_or(1),
                message: Some(format!(
                    "kontrast launch received {}; every rank stopped",
                    signals::name(signal)
                )),
            },
            (None, None) => Outcome {
                code: 0,
                message: None,
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(nnodes: u32, node_rank: u32, nproc: u32, world: Option<u32>) -> Args {
        Args {
            nnodes,
            node_rank,
            nproc_per_node: nproc,
            world_size: world,
            master_addr: "127.0.0.1".into(),
            master_port: 29500,
            grace_seconds: 1.0,
            termination_log: None,
            program: None,
            rank_args: vec![],
        }
    }

    #[test]
    fn ranks_are_numbered_node_major() {
        let l = Layout::new(&args(3, 2, 4, Some(12))).unwrap();
        assert_eq!(
            (0..4).map(|i| l.global_rank(i)).collect::<Vec<_>>(),
            [8, 9, 10, 11]
        );
    }

    #[test]
    fn an_impossible_layout_is_a_permanent_error() {
        for a in [
            args(2, 0, 1, Some(3)),
            args(2, 2, 1, None),
            args(0, 0, 1, None),
            args(1, 0, 0, None),
        ] {
            let e = Layout::new(&a).unwrap_err();
            assert!(e.is_permanent(), "{e}");
        }
        let e = Layout::new(&args(2, 0, 1, Some(3))).unwrap_err();
        assert!(e.to_string().contains("WORLD_SIZE=3"), "{e}");
    }

    #[test]
    fn a_signal_death_maps_to_128_plus_the_signal() {
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGKILL)), 137);
        assert_eq!(exit_code(ExitStatus::from_raw(libc::SIGABRT)), 134);
        assert_eq!(exit_code(ExitStatus::from_raw(78 << 8)), 78);
    }
}
