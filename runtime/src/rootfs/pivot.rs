//! Switching the root: pivot_root, or the MS_MOVE + chroot fallback for `--no-pivot`.
use super::RootfsError;
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::unistd::{chdir, chroot, fchdir, pivot_root};
use std::path::Path;

fn sys(action: &'static str, path: &Path) -> impl FnOnce(nix::Error) -> RootfsError {
    let path = path.to_path_buf();
    move |source| RootfsError::Sys {
        action,
        path,
        source,
    }
}

/// pivot_root(".", ".") stacks the old root on top of the new one, so no directory for it is
/// needed inside the rootfs; it is then detached.
pub fn pivot(rootfs: &Path) -> Result<(), RootfsError> {
    let open_dir = |p: &Path| {
        nix::fcntl::open(
            p,
            nix::fcntl::OFlag::O_DIRECTORY
                | nix::fcntl::OFlag::O_RDONLY
                | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("open", p))
    };
    let old_root = open_dir(Path::new("/"))?;
    let new_root = open_dir(rootfs)?;
    fchdir(&new_root).map_err(sys("chdir to", rootfs))?;
    pivot_root(".", ".").map_err(sys("pivot_root to", rootfs))?;
    drop(new_root);
    fchdir(&old_root).map_err(sys("chdir to old root", Path::new("/")))?;
    // Both fds name host directories; none may survive into the container (CVE-2024-21626).
    drop(old_root);
    // Without this the detach below would propagate to the host's mounts.
    mount(
        None::<&str>,
        ".",
        None::<&str>,
        MsFlags::MS_SLAVE | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(sys("make old root rslave", Path::new("/")))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(sys("detach old root", Path::new("/")))?;
    chdir("/").map_err(sys("chdir to", Path::new("/")))
}

/// For `--no-pivot` (e.g. a rootfs on a ramfs, where pivot_root is refused).
pub fn move_root(rootfs: &Path) -> Result<(), RootfsError> {
    chdir(rootfs).map_err(sys("chdir to", rootfs))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(sys("move rootfs onto /", rootfs))?;
    chroot(".").map_err(sys("chroot to", rootfs))?;
    chdir("/").map_err(sys("chdir to", Path::new("/")))
}
