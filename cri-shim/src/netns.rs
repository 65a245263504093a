//! Pinned network namespaces under /run/rcri/netns.
//!
//! A pod's network namespace must outlive every process in it (CNI configures it before the
//! infra process exists, and rcri may restart while pods run), so it is pinned the way
//! `ip netns add` does: a bind mount of `/proc/<tid>/ns/net` onto a file. The pinning
//! directory is itself made a shared mount point, so that the pin propagates into mount
//! namespaces created later (an OCI runtime's container namespaces then still see it as a
//! mount, and the unmount here propagates to them instead of keeping the namespace alive).
use std::fs::{self, OpenOptions};
use std::io;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("invalid network namespace name {0:?}")]
    InvalidName(String),
    #[error("network namespace {0} already exists")]
    Exists(PathBuf),
    #[error("{what} {path}: {source}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{what} {path}: {source}")]
    Sys {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: Errno,
    },
    #[error("the namespace thread panicked")]
    ThreadPanicked,
}

fn io_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> NetnsError + 'a {
    move |source| NetnsError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

fn sys_err<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> NetnsError + 'a {
    move |source| NetnsError::Sys {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// Makes `dir` a shared mount point, binding it onto itself first when it is not a mount
/// point yet (what iproute2 does for /run/netns).
fn make_shared_mount_point(dir: &Path) -> Result<(), NetnsError> {
    let shared = || {
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
    };
    match shared() {
        Ok(()) => Ok(()),
        // EINVAL: not a mount point yet.
        Err(Errno::EINVAL) => {
            mount(
                Some(dir),
                dir,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys_err("bind-mount onto itself", dir))?;
            shared().map_err(sys_err("make shared", dir))
        }
        Err(e) => Err(sys_err("make shared", dir)(e)),
    }
}

/// Whether `dir` is already a mount point (listed as one in /proc/self/mountinfo).
fn is_mount_point(dir: &Path) -> bool {
    let Ok(info) = fs::read_to_string("/proc/self/mountinfo") else {
        return false;
    };
    let Ok(canon) = fs::canonicalize(dir) else {
        return false;
    };
    let want = canon.to_string_lossy();
    info.lines().any(|l| {
        l.split(' ')
            .nth(4)
            .map(|m| unescape_mountinfo(m) == want)
            .unwrap_or(false)
    })
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 4 <= b.len() {
            let oct = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|o| u8::from_str_radix(o, 8).ok());
            if let Some(v) = oct {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Creates a new network namespace pinned by a bind mount at `<dir>/<name>`; returns the path.
///
/// The namespace has only a loopback interface, still down: CNI's loopback plugin (or the
/// caller) brings it up.
pub fn create(dir: &Path, name: &str) -> Result<PathBuf, NetnsError> {
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return Err(NetnsError::InvalidName(name.to_string()));
    }
    fs::create_dir_all(dir).map_err(io_err("create", dir))?;
    if !is_mount_point(dir) {
        make_shared_mount_point(dir)?;
    } else {
        // Already a mount point (ours from an earlier run, or a tmpfs): only make sure the
        // pins propagate.
        mount(
            None::<&str>,
            dir,
            None::<&str>,
            MsFlags::MS_SHARED | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(sys_err("make shared", dir))?;
    }

    let path = dir.join(name);
    // The mount target; O_EXCL so that two sandboxes can never share one pin.
    match OpenOptions::new().write(true).create_new(true).open(&path) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(NetnsError::Exists(path));
        }
        Err(e) => return Err(io_err("create", &path)(e)),
    }

    // A short-lived thread unshares its own network namespace (unshare(CLONE_NEWNET) affects
    // only the calling thread) and pins it; the rest of the process, async runtime included,
    // keeps its namespace. A thread rather than fork: fork in a multi-threaded process may
    // only call async-signal-safe functions.
    let target = path.clone();
    let pinned = std::thread::spawn(move || -> Result<(), NetnsError> {
        unshare(CloneFlags::CLONE_NEWNET).map_err(sys_err("unshare(CLONE_NEWNET) for", &target))?;
        let tid = nix::unistd::gettid();
        let src = PathBuf::from(format!("/proc/self/task/{tid}/ns/net"));
        mount(
            Some(&src),
            &target,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys_err("bind-mount the namespace onto", &target))
    })
    .join()
    .unwrap_or(Err(NetnsError::ThreadPanicked));

    if let Err(e) = pinned {
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok(path)
}

/// Unmounts and removes a pinned namespace; a missing one is not an error.
pub fn remove(path: &Path) -> Result<(), NetnsError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        // EINVAL: not a mount point (pin already gone, file left by a crash); ENOENT: gone.
        Ok(()) | Err(Errno::EINVAL) | Err(Errno::ENOENT) => {}
        Err(e) => return Err(sys_err("unmount", path)(e)),
    }
    match fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("remove", path)(e)),
    }
}

/// Runs `f` on a thread that has joined the network namespace at `path`, and returns its
/// result. Processes spawned from `f` inherit that namespace (they are forked from the
/// thread), which is how CNI plugins are run "from" a namespace in tests.
pub fn run_in<T, F>(path: &Path, f: F) -> Result<T, NetnsError>
where
    T: Send,
    F: FnOnce() -> T + Send,
{
    let ns = fs::File::open(path).map_err(io_err("open", path))?;
    std::thread::scope(|s| {
        s.spawn(|| -> Result<T, NetnsError> {
            setns(ns.as_fd(), CloneFlags::CLONE_NEWNET).map_err(sys_err("setns to", path))?;
            Ok(f())
        })
        .join()
        .unwrap_or(Err(NetnsError::ThreadPanicked))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn test_dir(tag: &str) -> PathBuf {
        PathBuf::from(format!("/run/rcri-test-netns-{}-{tag}", std::process::id()))
    }

    fn cleanup_dir(dir: &Path) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
        let _ = fs::remove_dir_all(dir);
    }

    fn ns_inode(path: &Path) -> u64 {
        fs::metadata(path).map(|m| m.ino()).unwrap_or(0)
    }

    #[test]
    fn create_pins_a_fresh_namespace_and_remove_cleans_up() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        let dir = test_dir("a");
        let p = create(&dir, "pod1").unwrap();
        assert_eq!(p, dir.join("pod1"));
        // A different namespace than ours, and it only has a loopback interface.
        let own = ns_inode(Path::new("/proc/self/ns/net"));
        assert_ne!(ns_inode(&p), own);
        let inside = run_in(&p, || {
            std::process::Command::new("ip")
                .args(["-o", "link"])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        })
        .unwrap()
        .unwrap();
        assert_eq!(inside.lines().count(), 1, "{inside}");
        assert!(inside.contains("lo:"), "{inside}");

        // A second create under the same name is refused.
        assert!(matches!(create(&dir, "pod1"), Err(NetnsError::Exists(_))));
        // A second namespace is a different one.
        let p2 = create(&dir, "pod2").unwrap();
        assert_ne!(ns_inode(&p2), ns_inode(&p));

        remove(&p).unwrap();
        remove(&p2).unwrap();
        assert!(!p.exists());
        // Removing again is fine.
        remove(&p).unwrap();
        cleanup_dir(&dir);
    }

    #[test]
    fn bad_names_are_refused() {
        let dir = test_dir("b");
        for n in ["", "a/b", "..", "."] {
            assert!(matches!(create(&dir, n), Err(NetnsError::InvalidName(_))));
        }
        let _ = fs::remove_dir(&dir);
    }
}
