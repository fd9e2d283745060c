//! The few POSIX signal operations `kontrast launch` needs, over libc.
use std::io;
use std::sync::atomic::{AtomicI32, Ordering};

use libc::c_int;

/// The last forwarded signal received and not yet handled; 0 for none. An atomic store is all
/// a handler may safely do; the supervising loop picks it up.
static PENDING: AtomicI32 = AtomicI32::new(0);

extern "C" fn on_signal(signal: c_int) {
    PENDING.store(signal, Ordering::SeqCst);
}

/// Catches `signals` so they are recorded for [`take_pending`] instead of ending the process.
pub(super) fn install(signals: &[c_int]) -> io::Result<()> {
    for &signal in signals {
        // SAFETY: a zeroed `sigaction` is a valid "no flags, empty mask" value; the handler only
        // stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_signal as extern "C" fn(c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut action.sa_mask);
            // Restart interrupted system calls: the loop polls, nothing waits to be interrupted.
            action.sa_flags = libc::SA_RESTART;
            libc::sigaction(signal, &action, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

/// The signal received since the last call, if any.
pub(super) fn take_pending() -> Option<c_int> {
    match PENDING.swap(0, Ordering::SeqCst) {
        0 => None,
        s => Some(s),
    }
}

/// Sends `signal` to the process group `pgid`. A group that is already gone is not an error.
pub(super) fn send_to_group(pgid: u32, signal: c_int) -> io::Result<()> {
    let Ok(pgid) = libc::pid_t::try_from(pgid) else {
        return Ok(());
    };
    // SAFETY: plain system call; a positive pgid never addresses "every process" (-1).
    if pgid > 0 && unsafe { libc::killpg(pgid, signal) } != 0 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() != Some(libc::ESRCH) {
            return Err(e);
        }
    }
    Ok(())
}

/// Run in a forked child before `exec`: SIGKILL this child when `parent` dies, so a launcher
/// killed outright (OOM, SIGKILL) leaves no orphaned ranks. Async-signal-safe calls only.
#[cfg(target_os = "linux")]
pub(super) fn die_with_parent(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: prctl, getppid and raise are async-signal-safe system calls.
    unsafe {
        if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
            return Err(io::Error::last_os_error());
        }
        // The parent may have died before prctl took effect.
        if libc::getppid() != parent {
            libc::raise(libc::SIGKILL);
        }
    }
    Ok(())
}

/// Elsewhere there is no parent-death signal; ranks are still stopped by the launcher itself.
#[cfg(not(target_os = "linux"))]
pub(super) fn die_with_parent(_parent: libc::pid_t) -> io::Result<()> {
    Ok(())
}

/// A readable name for the usual signals.
pub(super) fn name(signal: c_int) -> String {
    let name = match signal {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGTERM => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    name.to_string()
}
