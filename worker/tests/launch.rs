//! `kontrast launch` with real processes: `/bin/sh` scripts stand in for the ranks.
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use tempfile::TempDir;

/// Variables of the environment contract that must not leak in from the test's own environment.
const CONTRACT: &[&str] = &[
    "NNODES",
    "NODE_RANK",
    "NPROC_PER_NODE",
    "WORLD_SIZE",
    "MASTER_ADDR",
    "MASTER_PORT",
    "RANK",
    "LOCAL_RANK",
    "KONTRAST_TERMINATION_LOG",
    "KONTRAST_LAUNCH_GRACE_SECONDS",
];

struct Launch {
    dir: TempDir,
    child: Child,
    started: Instant,
}

impl Launch {
    /// `kontrast launch <flags> --program /bin/sh -- -c <script>`; `$OUT` is a scratch directory.
    fn sh(flags: &[&str], env: &[(&str, &str)], script: &str) -> Self {
        let mut args: Vec<&str> = flags.to_vec();
        args.extend(["--program", "/bin/sh", "--", "-c", script]);
        Self::start(&args, env)
    }

    fn start(args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_kontrast"));
        for name in CONTRACT {
            cmd.env_remove(name);
        }
        cmd.arg("launch")
            .args(args)
            .env("OUT", dir.path())
            .env(
                "KONTRAST_TERMINATION_LOG",
                dir.path().join("termination-log"),
            )
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(dir.path().join("stdout")).unwrap())
            .stderr(std::fs::File::create(dir.path().join("stderr")).unwrap());
        let child = cmd.spawn().unwrap();
        Self {
            dir,
            child,
            started: Instant::now(),
        }
    }

    fn out(&self) -> &Path {
        self.dir.path()
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.out().join(name)).unwrap_or_default()
    }

    /// Waits for the launcher to exit; fails the test (and kills it) after `limit`.
    fn wait(&mut self, limit: Duration) -> (ExitStatus, Duration) {
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return (status, self.started.elapsed());
            }
            if self.started.elapsed() > limit {
                let _ = self.child.kill();
                panic!(
                    "kontrast launch still running after {limit:?}\nstderr:\n{}",
                    self.read("stderr")
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until every file in `names` exists under `$OUT`.
    fn wait_for_files(&mut self, names: &[&str], limit: Duration) {
        let deadline = Instant::now() + limit;
        while !names.iter().all(|n| self.out().join(n).exists()) {
            assert!(
                self.child.try_wait().unwrap().is_none(),
                "launch ended early\nstderr:\n{}",
                self.read("stderr")
            );
            assert!(Instant::now() < deadline, "ranks did not start in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

/// Whether a process is gone (or a zombie nobody reaped yet: it runs no more).
fn is_dead(pid: &str) -> bool {
    match std::fs::read_to_string(format!("/proc/{}/stat", pid.trim())) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

#[test]
fn each_rank_gets_its_rank_local_rank_and_the_rendezvous_variables() {
    let mut l = Launch::sh(
        &["--nnodes", "2", "--nproc-per-node", "3"],
        &[
            ("NODE_RANK", "1"),
            ("MASTER_ADDR", "rank-0.example"),
            ("WORLD_SIZE", "6"),
        ],
        r#"echo "$RANK $LOCAL_RANK $LOCAL_WORLD_SIZE $WORLD_SIZE $NODE_RANK $MASTER_ADDR $MASTER_PORT" > "$OUT/rank-$LOCAL_RANK""#,
    );
    let (status, _) = l.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0), "{}", l.read("stderr"));
    for (local, rank) in [(0, 3), (1, 4), (2, 5)] {
        assert_eq!(
            l.read(&format!("rank-{local}")).trim(),
            format!("{rank} {local} 3 6 1 rank-0.example 29500")
        );
    }
    assert_eq!(l.read("termination-log"), "", "a success leaves no message");
}

#[test]
fn without_arguments_each_rank_runs_train() {
    let mut l = Launch::start(&["--program", "/bin/echo"], &[]);
    let (status, _) = l.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(0));
    assert_eq!(l.read("stdout").trim(), "train");
}

#[test]
fn a_world_size_that_does_not_match_the_layout_is_a_permanent_error() {
    let mut l = Launch::sh(
        &[],
        &[
            ("NNODES", "2"),
            ("NPROC_PER_NODE", "1"),
            ("WORLD_SIZE", "5"),
        ],
        "touch \"$OUT/started\"",
    );
    let (status, _) = l.wait(Duration::from_secs(30));
    assert_eq!(status.code(), Some(78));
    assert!(!l.out().join("started").exists(), "no rank may start");
    assert!(
        l.read("termination-log").contains("WORLD_SIZE=5"),
        "{}",
        l.read("termination-log")
    );
}

#[test]
fn a_failing_rank_ends_the_launch_at_once_with_its_code_and_stops_its_siblings() {
    let mut l = Launch::sh(
        &["--nproc-per-node", "2", "--grace-seconds", "20"],
        &[],
        r#"if [ "$LOCAL_RANK" = 1 ]; then sleep 0.3; exit 3; fi
           sleep 1000 & echo $! > "$OUT/grandchild"; wait"#,
    );
    let (status, elapsed) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(3), "{}", l.read("stderr"));
    assert!(
        elapsed < Duration::from_secs(5),
        "took {elapsed:?}: the sibling was not stopped promptly"
    );
    let grandchild = l.read("grandchild");
    assert!(!grandchild.is_empty());
    assert!(
        is_dead(&grandchild),
        "a process started by the sibling survived"
    );
    let message = l.read("termination-log");
    assert!(
        message.contains("local rank 1 (rank 1) exited with code 3"),
        "{message}"
    );
}

#[test]
fn a_sibling_ignoring_sigterm_is_killed_after_the_grace_period() {
    let mut l = Launch::sh(
        &["--nproc-per-node", "2", "--grace-seconds", "0.5"],
        &[],
        r#"if [ "$LOCAL_RANK" = 1 ]; then sleep 0.2; exit 4; fi
           trap '' TERM; while :; do sleep 0.05; done"#,
    );
    let (status, elapsed) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(4), "{}", l.read("stderr"));
    assert!(elapsed >= Duration::from_millis(600), "{elapsed:?}");
    assert!(elapsed < Duration::from_secs(5), "{elapsed:?}");
}

#[test]
fn the_permanent_exit_code_78_is_preserved() {
    let mut l = Launch::sh(
        &["--nproc-per-node", "2"],
        &[],
        r#"if [ "$LOCAL_RANK" = 1 ]; then exit 78; fi; sleep 1000"#,
    );
    let (status, _) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(78));
}

#[test]
fn a_rank_killed_by_a_signal_gives_128_plus_the_signal() {
    let mut l = Launch::sh(&[], &[], "kill -KILL $$");
    let (status, _) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(137));
    let message = l.read("termination-log");
    assert!(message.contains("killed by SIGKILL"), "{message}");
}

#[test]
fn a_message_left_by_a_rank_is_kept() {
    let mut l = Launch::sh(
        &[],
        &[],
        r#"echo "dataset missing" > "$KONTRAST_TERMINATION_LOG"; exit 78"#,
    );
    let (status, _) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(78));
    assert_eq!(l.read("termination-log").trim(), "dataset missing");
}

#[test]
fn sigterm_to_the_launcher_reaches_every_rank() {
    let mut l = Launch::sh(
        &["--nproc-per-node", "2"],
        &[],
        r#"trap 'echo term > "$OUT/term-$LOCAL_RANK"; exit 0' TERM
           touch "$OUT/up-$LOCAL_RANK"
           while :; do sleep 0.05; done"#,
    );
    l.wait_for_files(&["up-0", "up-1"], Duration::from_secs(15));
    let pid = libc::pid_t::try_from(l.child.id()).unwrap();
    // SAFETY: signalling our own child process.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
    let (status, _) = l.wait(Duration::from_secs(15));
    assert_eq!(status.code(), Some(128 + libc::SIGTERM));
    assert_eq!(l.read("term-0").trim(), "term");
    assert_eq!(l.read("term-1").trim(), "term");
    let message = l.read("termination-log");
    assert!(message.contains("received SIGTERM"), "{message}");
}
