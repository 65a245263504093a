//! The rootfs of a container in a user namespace (a pod with hostUsers: false): the image's
//! layers are id-mapped with the pod's user namespace before overlayfs stacks them, so that
//! files owned by uid 0 in the image belong to the pod's root. The snapshots stay shared with
//! every other container; nothing in them is chowned.
//!
//! overlayfs itself cannot be id-mapped (mount_setattr answers EINVAL) but, since Linux 5.19,
//! accepts id-mapped lower layers. Each is cloned as a detached mount (open_tree), id-mapped
//! (mount_setattr MOUNT_ATTR_IDMAP) and attached under the container's dir only for as long as
//! the overlay mount needs its path: overlayfs keeps private clones of its layers, so they are
//! detached right after.
//!
//! The upper dir is not id-mapped: overlayfs creates its work files there with the mounter's
//! (host root's) ids, which an id-mapped upper could not represent, and the overlay would fall
//! back to read-only. It starts empty, so it is simply owned by the pod's root on the host;
//! what the pod writes is stored with its host ids (copy-ups take the owner the id-mapped lower
//! shows, i.e. the pod's). containerd 2.x does the same.
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::mount::{umount2, MntFlags};

use super::ImageError;

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOUNT_ATTR_IDMAP: u64 = 0x100000;

/// `struct mount_attr` of mount_setattr(2); libc does not define it.
#[repr(C)]
#[derive(Default)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// Where the id-mapped layers of a container are attached while its overlay is mounted.
fn layers_dir(container_dir: &Path) -> PathBuf {
    container_dir.join("idmapped")
}

fn sys<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(Errno) -> ImageError + 'a {
    move |source| ImageError::Sys {
        what,
        path: path.to_path_buf(),
        source,
    }
}

/// The user namespace a container's rootfs is made for.
#[derive(Debug, Clone, Copy)]
pub struct PodUserns<'a> {
    /// A user namespace file with the pod's mappings (the infra's /proc/<pid>/ns/user).
    pub ns: &'a Path,
    /// The host uid and gid of the pod's root.
    pub root_uid: u32,
    pub root_gid: u32,
}

/// The id-mapped lower layers of one overlay mount; dropping it detaches them (the overlay,
/// once mounted, holds its own clones).
pub(super) struct IdmappedLayers {
    container_dir: PathBuf,
    /// Lower dirs, top first, as overlayfs is to use them.
    pub lowers: Vec<PathBuf>,
}

impl IdmappedLayers {
    /// `lowers` are the snapshot dirs, top first; `upper` the container's (empty) upper dir
    /// in `container_dir`, given to the pod's root.
    pub fn attach(
        container_dir: &Path,
        lowers: &[PathBuf],
        upper: &Path,
        userns: PodUserns<'_>,
    ) -> Result<Self, ImageError> {
        std::os::unix::fs::chown(upper, Some(userns.root_uid), Some(userns.root_gid)).map_err(
            |e| sys("chown", upper)(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))),
        )?;
        let ns = nix::fcntl::open(
            userns.ns,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(sys("open the pod's user namespace", userns.ns))?;
        let dir = layers_dir(container_dir);
        // Leftovers of an interrupted attempt would otherwise be stacked under the new mounts.
        detach_all(container_dir)?;
        let mut layers = IdmappedLayers {
            container_dir: container_dir.to_path_buf(),
            lowers: Vec::new(),
        };
        for (i, lower) in lowers.iter().enumerate() {
            let at = dir.join(i.to_string());
            attach_one(lower, &at, &ns)?;
            layers.lowers.push(at);
        }
        Ok(layers)
    }
}

impl Drop for IdmappedLayers {
    fn drop(&mut self) {
        if let Err(e) = detach_all(&self.container_dir) {
            tracing::warn!(error = %e, "failed to detach id-mapped layers");
        }
    }
}

/// Clones `source` as a detached mount, id-maps it with `userns` and attaches it at `at`.
fn attach_one(source: &Path, at: &Path, userns: &OwnedFd) -> Result<(), ImageError> {
    fs::create_dir_all(at).map_err(|e| ImageError::Sys {
        what: "create",
        path: at.to_path_buf(),
        source: Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)),
    })?;
    let c = |p: &Path| {
        std::ffi::CString::new(p.as_os_str().as_encoded_bytes())
            .map_err(|_| ImageError::UnmountablePath(p.to_path_buf()))
    };
    let (src, dst) = (c(source)?, c(at)?);
    // SAFETY: `src` is a live NUL-terminated string.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            src.as_ptr(),
            OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
        )
    };
    if fd < 0 {
        return Err(sys("clone the mount (open_tree) of", source)(Errno::last()));
    }
    // SAFETY: open_tree returned a new fd nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..MountAttr::default()
    };
    // SAFETY: a live fd, a static empty path and a struct mount_attr whose size is passed.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(sys("id-map (mount_setattr) the mount of", source)(
            Errno::last(),
        ));
    }
    // SAFETY: a live fd and two live NUL-terminated strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            libc::AT_FDCWD,
            dst.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(sys("attach the id-mapped layer on", at)(Errno::last()));
    }
    Ok(())
}

/// Detaches whatever is attached under the container's id-mapped layers dir and removes it.
/// Must run before the container's dir is deleted: a layer still attached there is a view of
/// a shared image snapshot, which remove_dir_all would empty.
pub(super) fn detach_all(container_dir: &Path) -> Result<(), ImageError> {
    let dir = layers_dir(container_dir);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(sys("list", &dir)(Errno::from_raw(
                e.raw_os_error().unwrap_or(libc::EIO),
            )))
        }
    };
    for entry in entries.flatten() {
        let p = entry.path();
        loop {
            match umount2(&p, MntFlags::MNT_DETACH) {
                Ok(()) => continue,
                Err(Errno::EINVAL) | Err(Errno::ENOENT) => break,
                Err(e) => return Err(sys("detach the id-mapped layer", &p)(e)),
            }
        }
        // Only an empty mount point is left; rmdir (not remove_dir_all) cannot reach further.
        fs::remove_dir(&p).map_err(|e| {
            sys("remove", &p)(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO)))
        })?;
    }
    fs::remove_dir(&dir)
        .map_err(|e| sys("remove", &dir)(Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))))
}
