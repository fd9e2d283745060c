//! Faults that hit `kontrast train` while it writes a checkpoint, with the real binary on a small
//! Fashion-MNIST subset: the process SIGKILLed in the middle of writing one, and a checkpoint
//! volume that runs out of space (a real size-limited tmpfs, so the kernel answers ENOSPC).
//! Either way the checkpoints written before stay valid and a resume uses the newest of them.
mod common;

use std::ffi::CString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::TrainSetup;
use kontrast_worker::checkpoint::CheckpointStore;

const IMAGES: usize = 64;
const BATCH: u32 = 16;
const QUEUE: u32 = 48;
const LIMIT: Duration = Duration::from_secs(180);

/// A run of `epochs` with a backbone of `width` (wider: larger checkpoints, longer writes).
fn setup(epochs: u32, width: u32) -> TrainSetup {
    TrainSetup::new(IMAGES, |data| {
        let mut config = common::small_run(data, 1, epochs, BATCH, QUEUE);
        config.recipe.width = width;
        config.checkpoint.keep = 3;
        config
    })
}

fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// The newest checkpoint the worker itself would resume from, and what it skipped.
fn newest_valid(dir: &Path) -> (u32, usize) {
    let loaded = CheckpointStore::new(dir, 3)
        .latest()
        .expect("the checkpoint directory is readable")
        .expect("a valid checkpoint is left");
    (loaded.manifest.epoch, loaded.skipped.len())
}

#[test]
fn a_rank_killed_while_writing_a_checkpoint_leaves_the_previous_one_to_resume_from() {
    // Width 64 (torchvision's): both encoders, SGD momentum and the queues make a checkpoint
    // of tens of megabytes, so the write lasts long enough to be caught in the act.
    let setup = setup(3, 64);
    let dir = setup.dir.path().join("checkpoints");
    let mut run = setup.train(&dir, "killed", &[]);
    let first = dir.join("epoch-0001.json");
    run.wait_until("the first checkpoint", LIMIT, |_| first.exists());
    // Poll for the second checkpoint's temporary file and kill the moment it appears.
    let tmp = dir.join("epoch-0002.safetensors.tmp");
    let deadline = Instant::now() + LIMIT;
    while !tmp.exists() {
        assert!(
            !dir.join("epoch-0002.json").exists(),
            "the second checkpoint was written before the test saw it: {:?}",
            names(&dir)
        );
        assert!(Instant::now() < deadline, "no second checkpoint started");
        std::thread::sleep(Duration::from_micros(200));
    }
    run.kill();
    let left = names(&dir);
    assert!(
        !left.contains(&"epoch-0002.json".to_string()),
        "killed after the write completed: {left:?}"
    );
    assert_eq!(
        newest_valid(&dir).0,
        1,
        "the half-written checkpoint must not be taken: {left:?}"
    );

    let mut resumed = setup.train(&dir, "resumed", &[]);
    resumed.assert_success(LIMIT);
    let log = resumed.stderr();
    assert!(log.contains("resumed epoch=1 "), "{log}");
    let after = names(&dir);
    assert!(
        !after.iter().any(|n| n.ends_with(".tmp")),
        "the next save cleans up the leftovers: {after:?}"
    );
    assert_eq!(newest_valid(&dir), (3, 0));
}

/// A tmpfs of `bytes` mounted at `dir` for the guard's life.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: &Path, bytes: u64) -> Self {
        std::fs::create_dir_all(dir).expect("mount point");
        let c = |s: &str| CString::new(s).expect("no NUL");
        let target = c(dir.to_str().expect("UTF-8 path"));
        let options = c(&format!("size={bytes},mode=0755"));
        // SAFETY: mount(2) with valid NUL-terminated strings.
        let rc = unsafe {
            libc::mount(
                c("tmpfs").as_ptr(),
                target.as_ptr(),
                c("tmpfs").as_ptr(),
                0,
                options.as_ptr().cast(),
            )
        };
        assert_eq!(
            rc,
            0,
            "mounting a {bytes}-byte tmpfs at {} (the test needs CAP_SYS_ADMIN, as the local \
             cluster's node does): {}",
            dir.display(),
            std::io::Error::last_os_error()
        );
        Self(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        if let Ok(target) = CString::new(self.0.to_string_lossy().as_bytes()) {
            // SAFETY: umount2(2) of the path this guard mounted.
            unsafe { libc::umount2(target.as_ptr(), libc::MNT_DETACH) };
        }
    }
}

#[test]
fn a_full_checkpoint_volume_fails_the_run_clearly_and_keeps_the_older_checkpoints() {
    let setup = setup(3, 8);
    // The size of one checkpoint, from a run on ordinary disk.
    let probe_dir = setup.dir.path().join("probe");
    let mut probe = setup.train(&probe_dir, "probe", &[]);
    let first = probe_dir.join("epoch-0001.json");
    probe.wait_until("the probe's first checkpoint", LIMIT, |_| first.exists());
    probe.kill();
    let size: u64 = ["epoch-0001.json", "epoch-0001.safetensors"]
        .iter()
        .map(|n| {
            std::fs::metadata(probe_dir.join(n))
                .expect("probe checkpoint")
                .len()
        })
        .sum();

    // Room for one and a half checkpoints: the first fits, the second does not.
    let dir = setup.dir.path().join("small-volume");
    let _volume = Tmpfs::mount(&dir, size * 3 / 2);
    let mut run = setup.train(&dir, "full", &[]);
    let status = run.wait(LIMIT);
    let log = run.stderr();
    assert_eq!(
        status.code(),
        Some(78),
        "a full volume is permanent, a retry would fill it again:\n{log}"
    );
    let error = log
        .lines()
        .find(|l| l.contains("ERROR"))
        .unwrap_or_else(|| panic!("no error line:\n{log}"));
    assert!(
        error.contains("No space left on device") && error.contains("epoch-0002"),
        "the error names the cause and the file: {error}"
    );
    let message = std::fs::read_to_string(setup.dir.path().join("full/termination-log"))
        .expect("termination message");
    assert!(
        message.contains("No space left on device"),
        "the operator's status shows the cause: {message}"
    );
    let left = names(&dir);
    assert!(
        !left.iter().any(|n| n.ends_with(".tmp")),
        "no partial file is left behind: {left:?}"
    );
    assert_eq!(newest_valid(&dir), (1, 0), "epoch 1 is intact: {left:?}");
}
