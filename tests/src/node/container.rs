//! Starting one container as a local process: its own session (so the whole process tree can be
//! signalled), its own UTS namespace with the pod's host name, its own mount namespace with the pod's `/etc/hosts`, termination-message file and
//! volumes bind-mounted at their real paths, a clean environment, output to a log file.
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::volumes::Mount;

/// Everything needed to start a container process.
#[derive(Debug, Clone)]
pub struct Launch {
    /// Absolute path of the program.
    pub program: PathBuf,
    /// Arguments after the program.
    pub args: Vec<String>,
    /// The full environment.
    pub env: Vec<(String, String)>,
    /// Working directory (`workingDir`), if any.
    pub cwd: Option<PathBuf>,
    /// Bind mounts, applied in order.
    pub mounts: Vec<Mount>,
    /// Log file for stdout and stderr.
    pub log: PathBuf,
    /// Host name the process sees (its own UTS namespace), as in a pod.
    pub hostname: String,
}

/// Finds `name` like `execvp` would, but in `dirs` first and then in the container's `PATH`.
pub fn resolve_program(
    name: &str,
    first: Option<&Path>,
    path_var: Option<&str>,
) -> Option<PathBuf> {
    if name.contains('/') {
        let p = PathBuf::from(name);
        return p.is_file().then_some(p);
    }
    let mut dirs: Vec<PathBuf> = first.map(Path::to_path_buf).into_iter().collect();
    dirs.extend(std::env::split_paths(
        path_var.unwrap_or("/usr/local/bin:/usr/bin:/bin"),
    ));
    dirs.into_iter()
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Drops the mounts that would hide the program from itself: pods share the host's file system,
/// so an emptyDir at `/tmp` would cover a build under `/tmp` (a real container has its own root
/// instead). The container then sees the host's directory there; the node logs it.
pub fn keep_program_visible(mounts: Vec<Mount>, program: &Path, pod: &str) -> Vec<Mount> {
    let real = std::fs::canonicalize(program).unwrap_or_else(|_| program.to_path_buf());
    mounts
        .into_iter()
        .filter(|m| {
            let hides = program.starts_with(&m.target) || real.starts_with(&m.target);
            if hides {
                tracing::warn!(pod, target = %m.target.display(), program = %real.display(),
                    "not mounting a volume over the directory holding the program; the pod sees the host's directory");
            }
            !hides
        })
        .collect()
}

/// Makes sure a mount target exists (bind mounts need one): a file for file sources, a
/// directory otherwise.
fn ensure_target(m: &Mount) -> std::io::Result<()> {
    if m.target.exists() {
        return Ok(());
    }
    if m.source.is_dir() {
        std::fs::create_dir_all(&m.target)
    } else {
        if let Some(parent) = m.target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&m.target)
            .map(|_| ())
    }
}

fn cstr(p: &Path) -> std::io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| std::io::Error::other(format!("path {} contains NUL", p.display())))
}

/// Starts the container. The returned child leads its own process group.
pub fn spawn(l: &Launch) -> std::io::Result<tokio::process::Child> {
    for m in &l.mounts {
        ensure_target(m)?;
    }
    let mounts: Vec<(CString, CString, bool)> = l
        .mounts
        .iter()
        .map(|m| Ok((cstr(&m.source)?, cstr(&m.target)?, m.read_only)))
        .collect::<std::io::Result<_>>()?;
    let cwd = l.cwd.as_deref().map(cstr).transpose()?;
    let hostname = CString::new(l.hostname.as_bytes())
        .map_err(|_| std::io::Error::other("hostname contains NUL"))?;
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&l.log)?;
    let mut cmd = tokio::process::Command::new(&l.program);
    cmd.args(&l.args)
        .env_clear()
        .envs(l.env.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .kill_on_drop(false);
    let root = c"/";
    // SAFETY: between fork and exec only raw syscalls on memory prepared before the fork.
    unsafe {
        cmd.pre_exec(move || {
            let check = |rc: libc::c_int| {
                if rc < 0 {
                    Err(std::io::Error::last_os_error())
                } else {
                    Ok(())
                }
            };
            check(libc::setsid())?;
            check(libc::unshare(libc::CLONE_NEWNS | libc::CLONE_NEWUTS))?;
            check(libc::sethostname(
                hostname.as_ptr(),
                hostname.as_bytes().len(),
            ))?;
            // Private propagation: the pod's mounts never show up on the host.
            check(libc::mount(
                std::ptr::null(),
                root.as_ptr(),
                std::ptr::null(),
                libc::MS_REC | libc::MS_PRIVATE,
                std::ptr::null(),
            ))?;
            for (src, dst, ro) in &mounts {
                check(libc::mount(
                    src.as_ptr(),
                    dst.as_ptr(),
                    std::ptr::null(),
                    libc::MS_BIND | libc::MS_REC,
                    std::ptr::null(),
                ))?;
                if *ro {
                    check(libc::mount(
                        std::ptr::null(),
                        dst.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ))?;
                }
            }
            if let Some(dir) = &cwd {
                check(libc::chdir(dir.as_ptr()))?;
            }
            Ok(())
        });
    }
    cmd.spawn()
}

/// Sends `sig` to the container's whole process group.
pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2); a negative pid addresses the process group the container leads.
    unsafe {
        libc::kill(-(pid as libc::pid_t), sig);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_over_the_programs_directory_are_dropped_and_others_kept() {
        let m = |t: &str| Mount {
            source: "/s".into(),
            target: t.into(),
            read_only: false,
        };
        let kept = keep_program_visible(
            vec![m("/tmp"), m("/etc/kontrast"), m("/tmp/other")],
            Path::new("/tmp/build/kontrast"),
            "p",
        );
        assert_eq!(kept, vec![m("/etc/kontrast"), m("/tmp/other")]);
    }

    #[test]
    fn programs_are_found_in_the_image_directory_first_then_on_path() {
        let sh = resolve_program("sh", None, Some("/usr/bin:/bin")).unwrap();
        assert!(sh.ends_with("sh"));
        assert_eq!(
            resolve_program("definitely-not-a-program", None, Some("/bin")),
            None
        );
        let dir = std::env::temp_dir().join(format!("kontrast-image-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prog = dir.join("sh");
        std::fs::write(&prog, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&prog, std::fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(resolve_program("sh", Some(&dir), Some("/bin")), Some(prog));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
