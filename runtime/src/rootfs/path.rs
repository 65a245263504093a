//! Resolving a container path inside the rootfs: symlinks are followed as if the rootfs were
//! `/`, so `/evil -> /etc` in the image means `<rootfs>/etc`, never the host's /etc.
use super::RootfsError;
use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};

const MAX_SYMLINKS: usize = 255;

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect()
}

/// `root` joined with `unsafe_path`, every existing symlink resolved within `root`.
/// Components that do not exist yet are kept as they are.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, RootfsError> {
    let mut resolved = PathBuf::new();
    let mut pending = components(unsafe_path);
    let mut links = 0;
    while let Some(c) = pending.pop_front() {
        if c == ".." {
            resolved.pop();
            continue;
        }
        let candidate = resolved.join(&c);
        let full = root.join(&candidate);
        match std::fs::symlink_metadata(&full) {
            Ok(m) if m.file_type().is_symlink() => {
                links += 1;
                if links > MAX_SYMLINKS {
                    return Err(RootfsError::Path {
                        path: unsafe_path.to_path_buf(),
                        reason: "too many levels of symbolic links".into(),
                    });
                }
                let target = std::fs::read_link(&full).map_err(|source| RootfsError::Io {
                    action: "read symlink",
                    path: full.clone(),
                    source,
                })?;
                if target.is_absolute() {
                    resolved = PathBuf::new();
                }
                let mut next = components(&target);
                next.extend(pending);
                pending = next;
            }
            _ => resolved = candidate,
        }
    }
    Ok(root.join(resolved))
}

/// Opens `path` (already resolved by [`secure_join`]) without following a final symlink and
/// checks, through the kernel's own view of the fd, that it is still inside `root`. Mounting on
/// `/proc/self/fd/N` of that fd then cannot be redirected by a symlink swapped in meanwhile.
pub fn open_inside(root: &Path, path: &Path) -> Result<OwnedFd, RootfsError> {
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| RootfsError::Sys {
        action: "open mount point",
        path: path.to_path_buf(),
        source,
    })?;
    let real = std::fs::read_link(fd_path(&fd)).map_err(|source| RootfsError::Io {
        action: "read back mount point",
        path: path.to_path_buf(),
        source,
    })?;
    if !real.starts_with(root) {
        return Err(RootfsError::Path {
            path: path.to_path_buf(),
            reason: format!("resolves to {} outside the rootfs", real.display()),
        });
    }
    Ok(fd)
}

pub fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// Creates the mount point: a directory, or an empty file when a file is to be bind-mounted.
pub fn create_mount_point(path: &Path, as_file: bool) -> Result<(), RootfsError> {
    let io = |action: &'static str, p: &Path| {
        let p = p.to_path_buf();
        move |source| RootfsError::Io {
            action,
            path: p,
            source,
        }
    };
    if as_file {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io("create directory", parent))?;
        }
        match std::fs::symlink_metadata(path) {
            Ok(_) => Ok(()),
            Err(_) => std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .map(|_| ())
                .map_err(io("create mount point file", path)),
        }
    } else {
        std::fs::create_dir_all(path).map_err(io("create mount point", path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_resolve_inside_root() {
        let tmp = std::env::temp_dir().join(format!("rcrun-sj-{}", std::process::id()));
        let root = tmp.join("root");
        std::fs::create_dir_all(root.join("etc")).unwrap();
        std::os::unix::fs::symlink("/etc", root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../../../etc", root.join("rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert_eq!(
            secure_join(&root, Path::new("/abs/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(&root, Path::new("/rel/x")).unwrap(),
            root.join("etc/x")
        );
        assert_eq!(
            secure_join(&root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
        assert!(secure_join(&root, Path::new("/loop")).is_err());
        std::fs::remove_dir_all(&tmp).unwrap();
    }
}
