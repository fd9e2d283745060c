//! Each cluster claims its own loopback block `127.N.0.0/16`: its servers listen on `127.N.0.1`
//! with the usual fixed ports and its pods get `127.N.x.y`, so clusters of parallel test runs never
//! collide on a port. The claim is an exclusive `flock` on `N.lock`; the lock's file descriptor is
//! inherited by every process of the cluster, so the claim lasts exactly as long as any of them
//! runs and dies with the last one, even after a crash.
use std::fs::{File, OpenOptions};
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// The lowest and highest second octet handed out.
const FIRST: u8 = 10;
const LAST: u8 = 250;

/// A claimed `127.N.0.0/16`.
#[derive(Debug)]
pub struct LoopbackBlock {
    octet: u8,
    lock: File,
}

/// Where the lock files live.
pub fn lock_dir() -> PathBuf {
    std::env::temp_dir().join("kontrast-loopback")
}

impl LoopbackBlock {
    /// Claims the first free block, starting at a pid-dependent offset so parallel claimers rarely
    /// try the same block first.
    pub fn claim() -> Result<Self> {
        Self::claim_in(&lock_dir())
    }

    /// Claims a block using lock files in `dir`.
    pub fn claim_in(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).io("creating", dir)?;
        let span = u32::from(LAST - FIRST) + 1;
        let start = std::process::id() % span;
        for i in 0..span {
            let octet = FIRST + ((start + i) % span) as u8;
            let path = dir.join(format!("{octet}.lock"));
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(&path)
                .io("opening", &path)?;
            // SAFETY: flock on a valid descriptor we own.
            let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
            if rc == 0 {
                return Ok(Self { octet, lock: file });
            }
        }
        Err(Error::NoLoopbackBlock(dir.to_path_buf()))
    }

    /// The block's second octet `N`.
    pub fn octet(&self) -> u8 {
        self.octet
    }

    /// `127.N.0.1`, the address the cluster's servers listen on.
    pub fn host(&self) -> Ipv4Addr {
        host_address(self.octet)
    }

    /// Lets child processes inherit the lock, so the claim outlives this process while any
    /// cluster process runs.
    pub fn inherit_into_children(&self) -> Result<()> {
        let fd = self.lock.as_raw_fd();
        // SAFETY: fcntl on a valid descriptor we own.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags < 0 || unsafe { libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) } < 0 {
            return Err(std::io::Error::last_os_error())
                .io("clearing close-on-exec of", lock_dir());
        }
        Ok(())
    }
}

/// `127.N.0.1` for a block octet.
pub fn host_address(octet: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, octet, 0, 1)
}

/// The pod address with index `index` (0-based) in block `octet`: `127.N.1.1` onwards, skipping
/// `.0` and `.255` in the last octet. `None` when the block is exhausted.
pub fn pod_address(octet: u8, index: u32) -> Option<Ipv4Addr> {
    let per_row = 254u32;
    let row = 1 + index / per_row;
    if row > 255 {
        return None;
    }
    Some(Ipv4Addr::new(
        127,
        octet,
        row as u8,
        (1 + index % per_row) as u8,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn two_claims_get_different_blocks_and_a_dropped_claim_is_free_again() {
        let dir =
            std::env::temp_dir().join(format!("kontrast-loopback-test-{}", std::process::id()));
        let a = LoopbackBlock::claim_in(&dir).unwrap();
        let b = LoopbackBlock::claim_in(&dir).unwrap();
        assert_ne!(a.octet(), b.octet());
        let freed = a.octet();
        drop(a);
        let c = LoopbackBlock::claim_in(&dir).unwrap();
        assert_eq!(c.octet(), freed);
        drop((b, c));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn pod_addresses_skip_network_and_broadcast_octets() {
        assert_eq!(pod_address(12, 0), Some(Ipv4Addr::new(127, 12, 1, 1)));
        assert_eq!(pod_address(12, 253), Some(Ipv4Addr::new(127, 12, 1, 254)));
        assert_eq!(pod_address(12, 254), Some(Ipv4Addr::new(127, 12, 2, 1)));
        assert_eq!(pod_address(12, 254 * 255), None);
    }
}
