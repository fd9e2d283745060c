//! Starting the cluster's processes and stopping them again by pid.
//!
//! Every process gets its own session (so a Ctrl-C in the terminal reaches only `kontrast-dev`,
//! which then stops them in order) and its output in a log file. A [`ProcessRecord`] keeps the pid
//! together with the process's kernel start time, so `down` never signals an unrelated process
//! that happens to reuse a pid.
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::error::{Error, IoContext, Result};

/// A started process, as stored in the cluster's state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcessRecord {
    /// Component name (`etcd`, `kube-apiserver`, …).
    pub name: String,
    /// Process id.
    pub pid: u32,
    /// Start time in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
    pub start_ticks: u64,
    /// Its log file.
    pub log: PathBuf,
}

/// How a process is tied to the one that starts it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lifetime {
    /// Dies with the starting thread (tests: nothing outlives a crashed test).
    Attached,
    /// Outlives the starter (`kontrast-dev cluster up` returns, `down` stops it later).
    Detached,
}

/// A process this harness started.
#[derive(Debug)]
pub struct Supervised {
    /// Its record.
    pub record: ProcessRecord,
    child: Option<Child>,
    /// How it was started, to start it again the same way.
    launch: Launch,
}

#[derive(Debug, Clone)]
struct Launch {
    program: PathBuf,
    args: Vec<String>,
    envs: Vec<(String, String)>,
    lifetime: Lifetime,
}

/// Starts `program` with `args`, output appended to `log`.
pub fn spawn(
    name: &str,
    program: &Path,
    args: &[String],
    envs: &[(String, String)],
    log: &Path,
    lifetime: Lifetime,
) -> Result<Supervised> {
    let out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .io("opening", log)?;
    let err = out.try_clone().io("duplicating", log)?;
    let mut cmd = Command::new(program);
    cmd.args(args)
        .envs(envs.iter().cloned())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            if lifetime == Lifetime::Attached {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            Ok(())
        });
    }
    let child = cmd.spawn().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            Error::MissingProgram {
                program: program.display().to_string(),
                hint: "run `make setup`".into(),
            }
        } else {
            Error::Io {
                action: "starting",
                path: program.to_path_buf(),
                source: e,
            }
        }
    })?;
    let pid = child.id();
    let start_ticks = start_ticks(pid).unwrap_or(0);
    Ok(Supervised {
        record: ProcessRecord {
            name: name.to_string(),
            pid,
            start_ticks,
            log: log.to_path_buf(),
        },
        child: Some(child),
        launch: Launch {
            program: program.to_path_buf(),
            args: args.to_vec(),
            envs: envs.to_vec(),
            lifetime,
        },
    })
}

impl Supervised {
    /// `Some(status)` once the process has exited (reaping it), `None` while it runs.
    pub fn exited(&mut self) -> Option<String> {
        match self.child.as_mut().map(|c| c.try_wait()) {
            Some(Ok(Some(status))) => Some(status.to_string()),
            Some(Err(e)) => Some(format!("unknown ({e})")),
            _ => None,
        }
    }

    /// Lets the process outlive this handle (no reaping, no signal on drop).
    pub fn detach(mut self) -> ProcessRecord {
        self.child.take();
        self.record.clone()
    }

    /// Starts the process again with the program, arguments and log of its first start (after
    /// [`Supervised::stop`]; a running one is stopped first).
    pub fn start_again(&mut self) -> Result<()> {
        if self.child.is_some() {
            self.stop(Duration::from_secs(10));
        }
        let l = self.launch.clone();
        *self = spawn(
            &self.record.name,
            &l.program,
            &l.args,
            &l.envs,
            &self.record.log,
            l.lifetime,
        )?;
        Ok(())
    }

    /// SIGTERM, then SIGKILL after `grace`; waits until it is gone.
    pub fn stop(&mut self, grace: Duration) {
        if let Some(mut child) = self.child.take() {
            signal_group(self.record.pid, libc::SIGTERM);
            let deadline = Instant::now() + grace;
            loop {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => return,
                    Ok(None) if Instant::now() >= deadline => {
                        signal_group(self.record.pid, libc::SIGKILL);
                        let _ = child.wait();
                        return;
                    }
                    Ok(None) => std::thread::sleep(Duration::from_millis(50)),
                }
            }
        } else {
            stop_record(&self.record, grace);
        }
    }
}

impl Drop for Supervised {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.stop(Duration::from_secs(5));
        }
    }
}

/// Field 22 of `/proc/<pid>/stat`: the process start time in clock ticks.
pub fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces; fields after it follow the last ')'.
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the recorded process still runs (a zombie counts as gone).
pub fn is_running(record: &ProcessRecord) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", record.pid)) {
        Ok(stat) => {
            let state = stat.rfind(')').and_then(|i| stat[i + 2..].chars().next());
            state != Some('Z') && start_ticks(record.pid) == Some(record.start_ticks)
        }
        Err(_) => false,
    }
}

fn signal_group(pid: u32, sig: libc::c_int) {
    // Each process leads its own session and group, so this reaches its children too.
    // SAFETY: kill(2) with a negative pid signals the process group.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// Stops a recorded process that is not our child: SIGTERM, SIGKILL after `grace`.
/// Does nothing when the pid now belongs to another process.
pub fn stop_record(record: &ProcessRecord, grace: Duration) {
    if !is_running(record) {
        return;
    }
    signal_group(record.pid, libc::SIGTERM);
    let deadline = Instant::now() + grace;
    while is_running(record) {
        if Instant::now() >= deadline {
            signal_group(record.pid, libc::SIGKILL);
            let until = Instant::now() + Duration::from_secs(5);
            while is_running(record) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50));
            }
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The last `lines` lines of a log file, for error messages.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
