//! Defence against CVE-2019-5736: a container must never get a writable handle on the rcrun
//! binary through /proc/<pid>/exe. Instead of copying the binary on every start (runc's old
//! memfd clone, slow and memory-hungry), rcrun re-executes itself once from a read-only,
//! detached overlayfs view of its own directory: the file is the same inode's data through a
//! mount that cannot be written, and the mount has no path anyone can reach afterwards.
//! When the binary already lives on a read-only mount, nothing is done at all.
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use std::ffi::CString;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// Set in the re-executed process so it does not loop.
const SEALED_ENV: &str = "_RCRUN_SEALED";

#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("failed to {action} {path}")]
    Sys {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to {action} {path}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

fn exe_is_read_only() -> bool {
    nix::sys::statvfs::statvfs("/proc/self/exe")
        .map(|s| s.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY))
        .unwrap_or(false)
}

/// Returns only if the running binary is already safe; otherwise re-executes it sealed.
pub fn ensure_sealed() -> Result<(), SealError> {
    if std::env::var_os(SEALED_ENV).is_some() {
        // SAFETY: single-threaded at this point (called first thing in main).
        unsafe { std::env::remove_var(SEALED_ENV) };
        return Ok(());
    }
    if exe_is_read_only() {
        return Ok(());
    }
    let exe = std::fs::read_link("/proc/self/exe").map_err(|source| SealError::Io {
        action: "read",
        path: PathBuf::from("/proc/self/exe"),
        source,
    })?;
    // Without overlayfs (or mounts: e.g. inside a user namespace) fall back to a sealed
    // in-memory copy, as runc does: slower and costs memory, but never unprotected.
    let fd = match open_sealed(&exe) {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("sealing through overlayfs failed ({e}); copying into a sealed memfd");
            sealed_copy(&exe)?
        }
    };
    let args: Vec<CString> = std::env::args_os()
        .filter_map(|a| CString::new(a.into_encoded_bytes()).ok())
        .collect();
    let mut env: Vec<CString> = std::env::vars_os()
        .filter_map(|(k, v)| {
            let mut kv = k.into_encoded_bytes();
            kv.push(b'=');
            kv.extend(v.into_encoded_bytes());
            CString::new(kv).ok()
        })
        .collect();
    env.push(
        CString::new(format!("{SEALED_ENV}=1")).map_err(|_| SealError::Sys {
            action: "build environment for",
            path: exe.clone(),
            source: nix::Error::EINVAL,
        })?,
    );
    let Err(err) = nix::unistd::execveat(&fd, c"", &args, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
    Err(SealError::Sys {
        action: "re-execute sealed",
        path: exe,
        source: err,
    })
}

fn sys(action: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> SealError {
    let path = path.to_path_buf();
    move |source| SealError::Sys {
        action,
        path,
        source,
    }
}

/// Opens `exe` through a read-only overlayfs of its directory. All of it happens in a private
/// mount namespace that we leave again before returning, so the host sees nothing even if we
/// are killed halfway; the returned fd keeps the overlay alive once that namespace is gone.
fn open_sealed(exe: &Path) -> Result<OwnedFd, SealError> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let name = exe.file_name().unwrap_or_default();
    // We return to the caller's mount namespace afterwards (hooks and everything else must
    // run there, as with runc); the fd we return keeps the overlay alive on its own.
    let home = nix::fcntl::open(
        "/proc/self/ns/mnt",
        nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open", Path::new("/proc/self/ns/mnt")))?;
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(sys("unshare a mount namespace for", exe))?;
    let opened = overlay_open(exe, dir, name);
    // Whatever happened in there, we go home: the private namespace dies with its mounts.
    nix::sched::setns(&home, nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(sys("return to the caller's mount namespace from", exe))?;
    opened
}

/// In our private mount namespace: the read-only overlay view of `dir`, and `name` in it.
fn overlay_open(exe: &Path, dir: &Path, name: &std::ffi::OsStr) -> Result<OwnedFd, SealError> {
    // A scratch tmpfs for the overlay's mount point and its second, empty lower layer
    // (overlayfs without an upper layer needs two lower ones, and they must not overlap
    // the binary's directory).
    let scratch = ["/tmp", "/run", "/var/tmp", "/mnt", "/dev/shm"]
        .iter()
        .map(Path::new)
        .find(|d| d.is_dir() && !dir.starts_with(d) && !d.starts_with(dir))
        .ok_or_else(|| SealError::Sys {
            action: "find a scratch directory to seal",
            path: exe.to_path_buf(),
            source: nix::Error::ENOENT,
        })?;
    mount(
        Some("tmpfs"),
        scratch,
        Some("tmpfs"),
        MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
        Some("size=16k,mode=700"),
    )
    .map_err(sys("mount scratch tmpfs on", scratch))?;
    let opened = (|| {
        let mnt = scratch.join("m");
        let empty = scratch.join("e");
        for d in [&mnt, &empty] {
            std::fs::create_dir(d).map_err(|source| SealError::Io {
                action: "create",
                path: d.clone(),
                source,
            })?;
        }
        let data = format!("lowerdir={}:{}", escape(dir), escape(&empty));
        mount(
            Some("overlay"),
            &mnt,
            Some("overlay"),
            MsFlags::MS_RDONLY | MsFlags::MS_NODEV | MsFlags::MS_NOSUID,
            Some(data.as_str()),
        )
        .map_err(sys("mount sealing overlay on", &mnt))?;
        nix::fcntl::open(
            &mnt.join(name),
            nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("open sealed", exe))
    })();
    umount2(scratch, MntFlags::MNT_DETACH).map_err(sys("detach scratch tmpfs from", scratch))?;
    opened
}

/// A copy of `exe` in a memfd that can never be written again (F_SEAL_WRITE and friends).
fn sealed_copy(exe: &Path) -> Result<OwnedFd, SealError> {
    let io = |action: &'static str| {
        let path = exe.to_path_buf();
        move |source| SealError::Io {
            action,
            path,
            source,
        }
    };
    // SAFETY: a NUL-terminated name and flags; the kernel returns a new fd or -1.
    let raw = unsafe {
        libc::memfd_create(
            c"rcrun-sealed".as_ptr(),
            libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING,
        )
    };
    if raw < 0 {
        return Err(io("create a memfd for")(std::io::Error::last_os_error()));
    }
    // SAFETY: memfd_create just returned this fd; nothing else owns it.
    let fd = unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(raw) };
    let mut src = std::fs::File::open("/proc/self/exe").map_err(io("open"))?;
    let mut dst = std::fs::File::from(fd);
    std::io::copy(&mut src, &mut dst).map_err(io("copy"))?;
    let seals = libc::F_SEAL_SEAL | libc::F_SEAL_SHRINK | libc::F_SEAL_GROW | libc::F_SEAL_WRITE;
    // SAFETY: fcntl on an fd we own.
    if unsafe {
        libc::fcntl(
            std::os::fd::AsRawFd::as_raw_fd(&dst),
            libc::F_ADD_SEALS,
            seals,
        )
    } < 0
    {
        return Err(io("seal the copy of")(std::io::Error::last_os_error()));
    }
    Ok(OwnedFd::from(dst))
}

/// overlayfs option values treat ',' and ':' as separators.
fn escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(',', "\\,")
        .replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_memfd_fallback_is_a_sealed_copy() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let fd = sealed_copy(&exe).unwrap();
        let seals = unsafe { libc::fcntl(std::os::fd::AsRawFd::as_raw_fd(&fd), libc::F_GET_SEALS) };
        assert_ne!(seals & libc::F_SEAL_WRITE, 0);
        let len = std::fs::metadata(format!(
            "/proc/self/fd/{}",
            std::os::fd::AsRawFd::as_raw_fd(&fd)
        ))
        .unwrap()
        .len();
        assert_eq!(len, std::fs::metadata(&exe).unwrap().len());
        let mut f = std::fs::File::from(fd);
        assert!(
            f.write_all(b"x").is_err(),
            "a sealed copy must refuse writes"
        );
    }
}
