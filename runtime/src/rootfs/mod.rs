//! The container's filesystem view: mounts, /dev, pivot_root, masked and read-only paths.
mod dev;
pub mod idmap;
mod mount;
mod path;
mod pivot;

pub use dev::DeviceNode;
pub use mount::{parse_propagation, MountAttr, MountEntry, KNOWN_OPTIONS};
pub use path::secure_join;

use crate::bundle::Bundle;
use nix::mount::{mount as sys_mount, MsFlags};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
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
    #[error("unsafe path {path}: {reason}")]
    Path { path: PathBuf, reason: String },
    #[error("invalid config.json: {0}")]
    Spec(String),
    #[error("not implemented yet: {0}")]
    NotImplemented(String),
}

/// Everything the init needs to build the rootfs, decided and validated before any fork.
#[derive(Debug, Clone)]
pub struct RootfsPlan {
    pub rootfs: PathBuf,
    pub readonly: bool,
    pub propagation: Option<MsFlags>,
    pub mounts: Vec<MountEntry>,
    pub devices: Vec<DeviceNode>,
    /// False when /dev is a bind mount of the host's: its nodes are then already there.
    pub default_devices: bool,
    pub masked: Vec<PathBuf>,
    pub readonly_paths: Vec<PathBuf>,
    pub no_pivot: bool,
    /// mknod is refused in a user namespace; nodes are bind-mounted from the host instead.
    pub bind_devices: bool,
    /// The container's cgroup directories, bound in for `type: cgroup` mounts on v1.
    pub cgroup_dirs: Vec<PathBuf>,
}

impl RootfsPlan {
    pub fn from_bundle(
        bundle: &Bundle,
        no_pivot: bool,
        in_userns: bool,
    ) -> Result<Self, RootfsError> {
        let spec = &bundle.spec;
        let linux = spec.linux().as_ref();
        let mut mounts = spec
            .mounts()
            .iter()
            .flatten()
            .map(MountEntry::from_spec)
            .collect::<Result<Vec<_>, _>>()?;
        idmap::inherit_container_mappings(&mut mounts, linux)?;
        let default_devices = !mounts
            .iter()
            .any(|m| m.is_bind() && m.destination == Path::new("/dev"));
        let devices = linux
            .and_then(|l| l.devices().as_ref())
            .into_iter()
            .flatten()
            .map(DeviceNode::from_spec)
            .collect::<Result<Vec<_>, _>>()?;
        let paths = |v: Option<&Vec<String>>| -> Vec<PathBuf> {
            v.into_iter().flatten().map(PathBuf::from).collect()
        };
        let propagation = match linux.and_then(|l| l.rootfs_propagation().as_deref()) {
            None | Some("") => None,
            Some(p) => Some(
                parse_propagation(p)
                    .ok_or_else(|| RootfsError::Spec(format!("unknown rootfsPropagation {p:?}")))?,
            ),
        };
        Ok(RootfsPlan {
            rootfs: bundle.rootfs.clone(),
            readonly: spec
                .root()
                .as_ref()
                .and_then(|r| r.readonly())
                .unwrap_or(false),
            propagation,
            mounts,
            devices,
            default_devices,
            masked: paths(linux.and_then(|l| l.masked_paths().as_ref())),
            readonly_paths: paths(linux.and_then(|l| l.readonly_paths().as_ref())),
            no_pivot,
            bind_devices: in_userns,
            cgroup_dirs: Vec::new(),
        })
    }

    /// Runs in the init, in its new mount namespace: every mount and device, still seen from
    /// the host's root (createContainer hooks run after this, before [`Self::switch_root`]).
    pub fn prepare(&self) -> Result<(), RootfsError> {
        let root = Path::new("/");
        // rslave by default: the host's mount events still reach us, ours never reach the host.
        // An unbindable / would refuse the rootfs bind mount below (EINVAL); it is applied to
        // the new root in finalize() instead.
        let flag = match self.propagation {
            Some(p) if p.contains(MsFlags::MS_UNBINDABLE) => MsFlags::MS_SLAVE | MsFlags::MS_REC,
            Some(p) if !p.contains(MsFlags::MS_SHARED) => p | MsFlags::MS_REC,
            Some(p) => p,
            None => MsFlags::MS_SLAVE | MsFlags::MS_REC,
        };
        sys_mount(None::<&str>, root, None::<&str>, flag, None::<&str>).map_err(|source| {
            RootfsError::Sys {
                action: "set propagation of",
                path: root.to_path_buf(),
                source,
            }
        })?;
        // Only a shared propagation leaves a mount shared: after rslave or rprivate, none is.
        if flag.contains(MsFlags::MS_SHARED) {
            make_parent_mount_private(&self.rootfs)?;
        }
        // pivot_root needs the new root to be a mount point.
        sys_mount(
            Some(&self.rootfs),
            &self.rootfs,
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Sys {
            action: "bind mount rootfs",
            path: self.rootfs.clone(),
            source,
        })?;
        for m in &self.mounts {
            m.mount_in(&self.rootfs, &self.cgroup_dirs)?;
        }
        if self.default_devices {
            for node in dev::default_nodes() {
                dev::create_node(&self.rootfs, &node, self.bind_devices)?;
            }
        }
        for node in &self.devices {
            dev::create_node(&self.rootfs, node, self.bind_devices)?;
        }
        dev::create_links(&self.rootfs)
    }

    /// pivot_root (or MS_MOVE + chroot): afterwards `/` is the container's rootfs.
    pub fn switch_root(&self) -> Result<(), RootfsError> {
        if self.no_pivot {
            pivot::move_root(&self.rootfs)
        } else {
            pivot::pivot(&self.rootfs)
        }
    }

    /// Runs after the switch of root (and after sysctls): masked and read-only paths, then
    /// the read-only root.
    pub fn finalize(&self) -> Result<(), RootfsError> {
        for p in &self.masked {
            mask(p)?;
        }
        for p in &self.readonly_paths {
            make_readonly(p)?;
        }
        if let Some(p) = self.propagation {
            let p = if p.contains(MsFlags::MS_SHARED) {
                p
            } else {
                p | MsFlags::MS_REC
            };
            sys_mount(None::<&str>, "/", None::<&str>, p, None::<&str>).map_err(|source| {
                RootfsError::Sys {
                    action: "set rootfsPropagation on",
                    path: PathBuf::from("/"),
                    source,
                }
            })?;
        }
        if self.readonly {
            mount::remount_bind(Path::new("/"), MsFlags::MS_RDONLY)?;
        }
        Ok(())
    }
}

/// pivot_root refuses a new root whose parent mount is shared (EINVAL); runc makes that
/// parent private, and so do we. Only our namespace's copy changes.
fn make_parent_mount_private(rootfs: &Path) -> Result<(), RootfsError> {
    let info =
        crate::kernel_file::read("/proc/self/mountinfo").map_err(|source| RootfsError::Io {
            action: "read",
            path: PathBuf::from("/proc/self/mountinfo"),
            source,
        })?;
    let mut best: Option<(&str, bool)> = None;
    for line in info.lines() {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(point) = fields.get(4) else { continue };
        if rootfs.starts_with(point) && best.is_none_or(|(b, _)| point.len() >= b.len()) {
            let shared = fields
                .iter()
                .skip(6)
                .take_while(|f| **f != "-")
                .any(|f| f.starts_with("shared:"));
            best = Some((point, shared));
        }
    }
    if let Some((point, true)) = best {
        sys_mount(
            None::<&str>,
            point,
            None::<&str>,
            MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .map_err(|source| RootfsError::Sys {
            action: "make private",
            path: PathBuf::from(point),
            source,
        })?;
    }
    Ok(())
}

fn is_missing(e: &nix::Error) -> bool {
    matches!(e, nix::Error::ENOENT | nix::Error::ENOTDIR)
}

/// The container's /dev/null, checked to really be the null device (1:3) and not, say, a
/// file an image or a volume put there: masking binds it over host-sensitive files
/// (CVE-2025-31133).
fn null_device() -> Result<std::os::fd::OwnedFd, RootfsError> {
    let path = Path::new("/dev/null");
    let fd = nix::fcntl::open(
        path,
        nix::fcntl::OFlag::O_PATH | nix::fcntl::OFlag::O_NOFOLLOW | nix::fcntl::OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| RootfsError::Sys {
        action: "open",
        path: path.to_path_buf(),
        source,
    })?;
    let st = nix::sys::stat::fstat(&fd).map_err(|source| RootfsError::Sys {
        action: "stat",
        path: path.to_path_buf(),
        source,
    })?;
    let is_char = st.st_mode & libc::S_IFMT == libc::S_IFCHR;
    if !is_char || st.st_rdev != nix::sys::stat::makedev(1, 3) {
        return Err(RootfsError::Path {
            path: path.to_path_buf(),
            reason: "is not the null device; refusing to mask with it".into(),
        });
    }
    Ok(fd)
}

/// A masked directory becomes an empty read-only tmpfs; a masked file becomes /dev/null.
fn mask(p: &Path) -> Result<(), RootfsError> {
    let meta = match std::fs::metadata(p) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(RootfsError::Io {
                action: "stat masked path",
                path: p.to_path_buf(),
                source,
            })
        }
    };
    let r = if meta.is_dir() {
        sys_mount(
            Some("tmpfs"),
            p,
            Some("tmpfs"),
            MsFlags::MS_RDONLY,
            Some("size=0k"),
        )
    } else {
        let null = null_device()?;
        sys_mount(
            Some(&path::fd_path(&null)),
            p,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    };
    match r {
        Ok(()) => Ok(()),
        Err(e) if is_missing(&e) => Ok(()),
        Err(source) => Err(RootfsError::Sys {
            action: "mask",
            path: p.to_path_buf(),
            source,
        }),
    }
}

fn make_readonly(p: &Path) -> Result<(), RootfsError> {
    match sys_mount(
        Some(p),
        p,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    ) {
        Ok(()) => mount::remount_bind(p, MsFlags::MS_RDONLY),
        Err(e) if is_missing(&e) => Ok(()),
        Err(source) => Err(RootfsError::Sys {
            action: "bind mount read-only path",
            path: p.to_path_buf(),
            source,
        }),
    }
}
