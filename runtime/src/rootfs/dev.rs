//! /dev: the default device nodes every container gets, the links runc makes, and
//! `linux.devices`.
use super::path::{create_mount_point, fd_path, open_inside, secure_join};
use super::RootfsError;
use nix::mount::{mount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{LinuxDevice, LinuxDeviceType};
use std::path::{Path, PathBuf};

/// A device node to create, validated from the spec.
#[derive(Debug, Clone)]
pub struct DeviceNode {
    pub path: PathBuf,
    pub kind: SFlag,
    pub major: u64,
    pub minor: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
}

impl DeviceNode {
    pub fn from_spec(d: &LinuxDevice) -> Result<Self, RootfsError> {
        let kind = match d.typ() {
            LinuxDeviceType::C | LinuxDeviceType::U => SFlag::S_IFCHR,
            LinuxDeviceType::B => SFlag::S_IFBLK,
            LinuxDeviceType::P => SFlag::S_IFIFO,
            LinuxDeviceType::A => {
                return Err(RootfsError::Spec(format!(
                    "device {} has type \"a\", which only cgroup rules may use",
                    d.path().display()
                )))
            }
        };
        if !d.path().is_absolute() {
            return Err(RootfsError::Spec(format!(
                "device path {} must be absolute",
                d.path().display()
            )));
        }
        let num = |n: i64, what: &str| {
            u64::try_from(n).map_err(|_| {
                RootfsError::Spec(format!("device {}: bad {what} {n}", d.path().display()))
            })
        };
        Ok(DeviceNode {
            path: d.path().clone(),
            kind,
            major: num(d.major(), "major")?,
            minor: num(d.minor(), "minor")?,
            mode: d.file_mode().unwrap_or(0o666) & 0o7777,
            uid: d.uid().unwrap_or(0),
            gid: d.gid().unwrap_or(0),
        })
    }
}

fn default_node(name: &str, major: u64, minor: u64) -> DeviceNode {
    DeviceNode {
        path: PathBuf::from("/dev").join(name),
        kind: SFlag::S_IFCHR,
        major,
        minor,
        mode: 0o666,
        uid: 0,
        gid: 0,
    }
}

/// The nodes runc creates in every container's /dev.
pub fn default_nodes() -> Vec<DeviceNode> {
    vec![
        default_node("null", 1, 3),
        default_node("zero", 1, 5),
        default_node("full", 1, 7),
        default_node("random", 1, 8),
        default_node("urandom", 1, 9),
        default_node("tty", 5, 0),
    ]
}

/// Creates `node` inside `rootfs`. In a user namespace mknod is not allowed, so the host's
/// node is bind-mounted instead, as runc does.
pub fn create_node(rootfs: &Path, node: &DeviceNode, bind: bool) -> Result<(), RootfsError> {
    // Only the parent is resolved: whatever the image has at the node's own path (a symlink to
    // a file on a volume, say) is replaced, never followed (CVE-2025-31133).
    let dest = resolve_leaf(rootfs, &node.path)?;
    replace_leaf(&dest)?;
    let sys = |action: &'static str| {
        let dest = dest.clone();
        move |source| RootfsError::Sys {
            action,
            path: dest,
            source,
        }
    };
    if bind {
        create_mount_point(&dest, true)?;
        let fd = open_inside(rootfs, &dest)?;
        return mount(
            Some(&node.path),
            &fd_path(&fd),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(sys("bind mount device"));
    }
    mknod(
        &dest,
        node.kind,
        Mode::from_bits_truncate(node.mode),
        makedev(node.major, node.minor),
    )
    .map_err(sys("mknod"))?;
    // mknod applies the umask; the spec's mode is exact. Neither call may follow a link.
    nix::sys::stat::fchmodat(
        nix::fcntl::AT_FDCWD,
        &dest,
        Mode::from_bits_truncate(node.mode),
        nix::sys::stat::FchmodatFlags::FollowSymlink,
    )
    .map_err(sys("chmod"))?;
    nix::unistd::fchownat(
        nix::fcntl::AT_FDCWD,
        &dest,
        Some(Uid::from_raw(node.uid)),
        Some(Gid::from_raw(node.gid)),
        nix::fcntl::AtFlags::AT_SYMLINK_NOFOLLOW,
    )
    .map_err(sys("chown"))
}

/// `path` inside `rootfs` with its parent resolved (and created) but its last component kept
/// as it is, so that it can be replaced rather than followed.
pub fn resolve_leaf(rootfs: &Path, path: &Path) -> Result<std::path::PathBuf, RootfsError> {
    let name = path.file_name().ok_or_else(|| RootfsError::Path {
        path: path.to_path_buf(),
        reason: "has no file name".into(),
    })?;
    let parent = secure_join(rootfs, path.parent().unwrap_or(Path::new("/")))?;
    std::fs::create_dir_all(&parent).map_err(|source| RootfsError::Io {
        action: "create directory",
        path: parent.clone(),
        source,
    })?;
    Ok(parent.join(name))
}

/// Removes whatever is at `path` (a link itself, not its target); directories are refused.
pub fn replace_leaf(path: &Path) -> Result<(), RootfsError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => Err(RootfsError::Path {
            path: path.to_path_buf(),
            reason: "is a directory where a device node belongs".into(),
        }),
        Ok(_) => std::fs::remove_file(path).map_err(|source| RootfsError::Io {
            action: "replace",
            path: path.to_path_buf(),
            source,
        }),
        Err(_) => Ok(()),
    }
}

/// /dev/fd, stdin/stdout/stderr, core and ptmx links.
pub fn create_links(rootfs: &Path) -> Result<(), RootfsError> {
    let dev = secure_join(rootfs, Path::new("/dev"))?;
    let links = [
        ("/proc/self/fd", "fd"),
        ("/proc/self/fd/0", "stdin"),
        ("/proc/self/fd/1", "stdout"),
        ("/proc/self/fd/2", "stderr"),
        ("/proc/kcore", "core"),
    ];
    for (target, name) in links {
        symlink_if_missing(target, &dev.join(name))?;
    }
    // The devpts instance mounted with newinstance has its own ptmx; /dev/ptmx must be it.
    let ptmx = dev.join("ptmx");
    if dev.join("pts/ptmx").exists() {
        match std::fs::symlink_metadata(&ptmx) {
            Ok(m) if m.file_type().is_symlink() => {}
            Ok(_) => std::fs::remove_file(&ptmx).map_err(|source| RootfsError::Io {
                action: "remove",
                path: ptmx.clone(),
                source,
            })?,
            Err(_) => {}
        }
        symlink_if_missing("pts/ptmx", &ptmx)?;
    }
    Ok(())
}

fn symlink_if_missing(target: &str, link: &Path) -> Result<(), RootfsError> {
    match std::os::unix::fs::symlink(target, link) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(source) => Err(RootfsError::Io {
            action: "create symlink",
            path: link.to_path_buf(),
            source,
        }),
    }
}
