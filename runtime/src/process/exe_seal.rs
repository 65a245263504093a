//! Defence against CVE-2019-5736: a container must never get a writable handle on the rcrun
//! binary through /proc/<pid>/exe. Instead of copying the binary on every start (runc's old
//! memfd clone, slow and memory-hungry), rcrun re-executes itself once through a detached,
//! read-only bind mount of its own file (open_tree + mount_setattr, 5.12+; before that a
//! read-only overlayfs of its directory, made with fsopen/fsmount, 5.2+): the file is the same
//! inode's data through a mount that cannot be written, and the mount has no path anyone can
//! reach afterwards. When the binary already lives on a read-only mount, nothing is done at all.
use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Set in the re-executed process so it does not loop.
const SEALED_ENV: &str = "_RCRUN_SEALED";

/// Whether this process already knows its binary is safe (re-executed, or read-only), so a
/// second call (the CLI seals before parsing and again in the commands) costs nothing.
static SEALED: AtomicBool = AtomicBool::new(false);

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
    if SEALED.load(Ordering::Relaxed) {
        return Ok(());
    }
    if std::env::var_os(SEALED_ENV).is_some() {
        // SAFETY: single-threaded at this point (called first thing in main).
        unsafe { std::env::remove_var(SEALED_ENV) };
        SEALED.store(true, Ordering::Relaxed);
        return Ok(());
    }
    if exe_is_read_only() {
        SEALED.store(true, Ordering::Relaxed);
        return Ok(());
    }
    // The binary's path: only the fallbacks and error messages need it.
    let exe = || {
        std::fs::read_link("/proc/self/exe").map_err(|source| SealError::Io {
            action: "read",
            path: PathBuf::from("/proc/self/exe"),
            source,
        })
    };
    // Without the newer mount API (open_tree/mount_setattr: 5.12), try overlayfs; without that
    // either (kernels before 5.2; user namespaces before 5.11) fall back to a sealed in-memory
    // copy, as runc does: slower and costs memory, but never unprotected.
    let fd = match open_read_only_bind() {
        Ok(fd) => fd,
        Err(e) => {
            log::debug!("sealing through a read-only bind mount failed ({e}); trying overlayfs");
            let exe = exe()?;
            match open_sealed(&exe) {
                Ok(fd) => fd,
                Err(e) => {
                    log::debug!(
                        "sealing through overlayfs failed ({e}); copying into a sealed memfd"
                    );
                    sealed_copy(&exe)?
                }
            }
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
            path: PathBuf::from("/proc/self/exe"),
            source: nix::Error::EINVAL,
        })?,
    );
    let Err(err) = nix::unistd::execveat(&fd, c"", &args, &env, nix::fcntl::AtFlags::AT_EMPTY_PATH);
    Err(SealError::Sys {
        action: "re-execute sealed",
        path: exe().unwrap_or_else(|_| PathBuf::from("/proc/self/exe")),
        source: err,
    })
}

/// The running binary as the root of a detached, read-only bind mount of it alone: open_tree
/// clones the mount /proc/self/exe leads to (the very file, with no path to race on), and
/// mount_setattr makes the clone read-only before anything runs from it. A write through the
/// exe link of a process executed from it meets that mount and fails with EROFS; making the
/// mount writable again would take CAP_SYS_ADMIN over the host's mounts. Costs two syscalls
/// and no filesystem instance, unlike the overlay below.
fn open_read_only_bind() -> Result<OwnedFd, nix::Error> {
    read_only_bind(c"/proc/self/exe")
}

fn read_only_bind(path: &std::ffi::CStr) -> Result<OwnedFd, nix::Error> {
    // SAFETY: a NUL-terminated path and flags; the kernel returns a new fd or -1.
    let tree = cvt(unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            path.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    })?;
    let attr = crate::rootfs::MountAttr {
        attr_set: libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV,
        ..Default::default()
    };
    // SAFETY: an fd we own, a static empty path and a struct mount_attr whose size is passed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const crate::rootfs::MountAttr,
            std::mem::size_of::<crate::rootfs::MountAttr>(),
        )
    };
    nix::errno::Errno::result(r)?;
    Ok(tree)
}

/// From linux/mount.h: libc does not export it for glibc targets.
const OPEN_TREE_CLONE: libc::c_uint = 1;

/// Opens `exe` through a read-only overlayfs of its directory, made with the mount API
/// (fsopen/fsmount): the overlay is never attached anywhere, so nothing is mounted on the
/// host, no private mount namespace is needed, and nothing has to be unmounted afterwards (an
/// unshare + tmpfs + lazy umount per start cost up to a few milliseconds of RCU waiting). The
/// returned fd alone keeps the overlay alive.
fn open_sealed(exe: &Path) -> Result<OwnedFd, SealError> {
    let dir = exe.parent().unwrap_or(Path::new("/"));
    let name = exe.file_name().unwrap_or_default();
    // overlayfs without an upper layer needs two lower ones, and they must not overlap. The
    // second is any other directory: it lies below the binary's, so nothing in it can shadow
    // the binary, and nobody can reach the overlay to look at it.
    let filler = ["/run", "/tmp", "/var/tmp", "/mnt", "/dev/shm"]
        .iter()
        .map(Path::new)
        .find(|d| d.is_dir() && !dir.starts_with(d) && !d.starts_with(dir))
        .ok_or_else(|| SealError::Sys {
            action: "find a second overlay layer to seal",
            path: exe.to_path_buf(),
            source: nix::Error::ENOENT,
        })?;
    let sys = |action: &'static str| {
        let path = exe.to_path_buf();
        move |source| SealError::Sys {
            action,
            path,
            source,
        }
    };
    // SAFETY: a NUL-terminated fs name and flags; the kernel returns a new fd or -1.
    let ctx =
        cvt(unsafe { libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC) })
            .map_err(sys("open an overlayfs context to seal"))?;
    let lower = format!("{}:{}", escape(dir), escape(filler));
    fs_set(&ctx, c"lowerdir", &lower).map_err(sys("configure the sealing overlay for"))?;
    // Layers on different filesystems would make overlayfs log xino warnings; we need no
    // inode numbers from it. Older kernels without the option are fine as they are.
    let _ = fs_set(&ctx, c"xino", "off");
    // SAFETY: fsconfig(CMD_CREATE) on the context fd we own, no key or value. It returns 0, not
    // an fd: through cvt() it would become an OwnedFd of fd 0 and close our stdin on drop.
    nix::errno::Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_void>(),
            0,
        )
    })
    .map_err(sys("create the sealing overlay for"))?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID;
    // SAFETY: fsmount on the context fd we own; returns a new (detached) mount fd or -1.
    let mnt = cvt(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    })
    .map_err(sys("mount the sealing overlay for"))?;
    nix::fcntl::openat(
        &mnt,
        name,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(sys("open sealed"))
}

/// A syscall's fd result, or its errno.
fn cvt(r: libc::c_long) -> Result<OwnedFd, nix::Error> {
    if r < 0 {
        return Err(nix::Error::last());
    }
    let fd = i32::try_from(r).map_err(|_| nix::Error::EBADF)?;
    // SAFETY: the kernel just returned this fd to us; nothing else owns it.
    Ok(unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
}

/// fsconfig(FSCONFIG_SET_STRING, key, value) on a filesystem context.
fn fs_set(ctx: &OwnedFd, key: &std::ffi::CStr, value: &str) -> Result<(), nix::Error> {
    let value = CString::new(value).map_err(|_| nix::Error::EINVAL)?;
    // SAFETY: NUL-terminated key and value that outlive the call, on a context fd we own.
    let r = unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            key.as_ptr(),
            value.as_ptr(),
            0,
        )
    };
    nix::errno::Errno::result(r).map(|_| ())
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

/// overlayfs splits lowerdir on ':' (and takes '\\' as its escape); through fsconfig there is
/// no ',' splitting to escape.
fn escape(p: &Path) -> String {
    p.to_string_lossy()
        .replace('\\', "\\\\")
        .replace(':', "\\:")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn the_overlay_view_is_the_binary_and_refuses_writes() {
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let fd = open_sealed(&exe).expect("fsopen overlay (needs root and overlayfs)");
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let sealed = std::fs::metadata(&through).unwrap();
        assert_eq!(sealed.len(), std::fs::metadata(&exe).unwrap().len());
        assert_read_only_view(&through);
    }

    /// The view is on a read-only mount and opening it for writing fails with EROFS.
    fn assert_read_only_view(through: &str) {
        let vfs = nix::sys::statvfs::statvfs(through).unwrap();
        assert!(vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
        let err = std::fs::OpenOptions::new()
            .write(true)
            .open(through)
            .expect_err("a sealed view must refuse writes");
        assert_eq!(err.raw_os_error(), Some(libc::EROFS), "{err}");
    }

    #[test]
    fn the_bind_view_is_the_file_and_refuses_writes() {
        // A file nothing executes: a running one refuses writes anyway (ETXTBSY), which would
        // hide what the mount does once the process is gone.
        let dir = std::env::temp_dir().join(format!("rcrun-seal-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("binary");
        std::fs::write(&file, b"not running").unwrap();
        let c = CString::new(file.as_os_str().as_encoded_bytes()).unwrap();
        let fd = read_only_bind(&c).expect("open_tree + mount_setattr (needs root, 5.12+)");
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let sealed = std::fs::metadata(&through).unwrap();
        let original = std::fs::metadata(&file).unwrap();
        assert_eq!(
            (sealed.dev(), sealed.ino()),
            (original.dev(), original.ino()),
            "the view must be that very file"
        );
        assert_read_only_view(&through);
        drop(fd);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_running_binary_can_be_bound_read_only() {
        let fd = open_read_only_bind().expect("open_tree of /proc/self/exe");
        let through = format!("/proc/self/fd/{}", fd.as_raw_fd());
        let exe = std::fs::read_link("/proc/self/exe").unwrap();
        let (a, b) = (
            std::fs::metadata(&through).unwrap(),
            std::fs::metadata(&exe).unwrap(),
        );
        assert_eq!((a.dev(), a.ino()), (b.dev(), b.ino()));
        let vfs = nix::sys::statvfs::statvfs(through.as_str()).unwrap();
        assert!(vfs.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    }

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
