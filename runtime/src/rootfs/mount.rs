//! One `mounts[]` entry: its options parsed into flags once, up front, then mounted inside
//! the rootfs.
use super::path::{create_mount_point, fd_path, open_inside, secure_join};
use super::RootfsError;
use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Mount;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

/// A mount with its options already understood.
#[derive(Debug, Clone)]
pub struct MountEntry {
    /// Absolute path inside the container.
    pub destination: PathBuf,
    pub source: Option<PathBuf>,
    pub fstype: String,
    pub flags: MsFlags,
    pub data: String,
    pub propagation: Vec<MsFlags>,
    /// Attributes applied to the mount and every mount below it (`rro`, `rnosuid`...).
    pub recursive: MountAttr,
    /// Set for an id-mapped bind mount (see idmap.rs).
    pub idmap: Option<super::idmap::IdmapRequest>,
}

/// Every option name [`MountEntry::from_spec`] understands (for `rcrun features`).
pub const KNOWN_OPTIONS: &[&str] = &[
    "defaults",
    "ro",
    "rw",
    "suid",
    "nosuid",
    "dev",
    "nodev",
    "exec",
    "noexec",
    "sync",
    "async",
    "dirsync",
    "remount",
    "mand",
    "nomand",
    "atime",
    "noatime",
    "diratime",
    "nodiratime",
    "bind",
    "rbind",
    "relatime",
    "norelatime",
    "strictatime",
    "nostrictatime",
    "lazytime",
    "nolazytime",
    "silent",
    "loud",
    "private",
    "rprivate",
    "shared",
    "rshared",
    "slave",
    "rslave",
    "unbindable",
    "runbindable",
];

/// The recursive options (runc 1.1+, crun): mount_setattr(2) with AT_RECURSIVE, so that they
/// reach the submounts a `rbind` brings along, which a plain remount never touches. `ratime`,
/// `rnorelatime` and `rnostrictatime` are left out: the kernel only sets one atime mode at a
/// time, and "clear this one" does not say which to use instead.
const RECURSIVE_OPTIONS: &[&str] = &[
    "rro",
    "rrw",
    "rnosuid",
    "rsuid",
    "rnodev",
    "rdev",
    "rnoexec",
    "rexec",
    "rnodiratime",
    "rdiratime",
    "rnoatime",
    "rrelatime",
    "rstrictatime",
    "rnosymfollow",
    "rsymfollow",
];

enum Opt {
    Set(MsFlags),
    Clear(MsFlags),
}

fn flag_option(name: &str) -> Option<Opt> {
    use MsFlags as F;
    use Opt::{Clear, Set};
    Some(match name {
        "defaults" => Clear(F::empty()),
        "ro" => Set(F::MS_RDONLY),
        "rw" => Clear(F::MS_RDONLY),
        "suid" => Clear(F::MS_NOSUID),
        "nosuid" => Set(F::MS_NOSUID),
        "dev" => Clear(F::MS_NODEV),
        "nodev" => Set(F::MS_NODEV),
        "exec" => Clear(F::MS_NOEXEC),
        "noexec" => Set(F::MS_NOEXEC),
        "sync" => Set(F::MS_SYNCHRONOUS),
        "async" => Clear(F::MS_SYNCHRONOUS),
        "dirsync" => Set(F::MS_DIRSYNC),
        "remount" => Set(F::MS_REMOUNT),
        "mand" => Set(F::MS_MANDLOCK),
        "nomand" => Clear(F::MS_MANDLOCK),
        "atime" => Clear(F::MS_NOATIME),
        "noatime" => Set(F::MS_NOATIME),
        "diratime" => Clear(F::MS_NODIRATIME),
        "nodiratime" => Set(F::MS_NODIRATIME),
        "bind" => Set(F::MS_BIND),
        "rbind" => Set(F::MS_BIND | F::MS_REC),
        "relatime" => Set(F::MS_RELATIME),
        "norelatime" => Clear(F::MS_RELATIME),
        "strictatime" => Set(F::MS_STRICTATIME),
        "nostrictatime" => Clear(F::MS_STRICTATIME),
        "lazytime" => Set(F::MS_LAZYTIME),
        "nolazytime" => Clear(F::MS_LAZYTIME),
        "silent" => Set(F::MS_SILENT),
        "loud" => Clear(F::MS_SILENT),
        _ => return None,
    })
}

/// Propagation option names as mount(8) spells them.
pub fn parse_propagation(name: &str) -> Option<MsFlags> {
    use MsFlags as F;
    Some(match name {
        "private" => F::MS_PRIVATE,
        "rprivate" => F::MS_PRIVATE | F::MS_REC,
        "shared" => F::MS_SHARED,
        "rshared" => F::MS_SHARED | F::MS_REC,
        "slave" => F::MS_SLAVE,
        "rslave" => F::MS_SLAVE | F::MS_REC,
        "unbindable" => F::MS_UNBINDABLE,
        "runbindable" => F::MS_UNBINDABLE | F::MS_REC,
        _ => return None,
    })
}

/// The `struct mount_attr` of mount_setattr(2): libc does not define it.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MountAttr {
    pub attr_set: u64,
    pub attr_clr: u64,
    pub propagation: u64,
    pub userns_fd: u64,
}

// From linux/mount.h.
const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const MOUNT_ATTR_ATIME_MASK: u64 = 0x70;
const MOUNT_ATTR_RELATIME: u64 = 0x0;
const MOUNT_ATTR_NOATIME: u64 = 0x10;
const MOUNT_ATTR_STRICTATIME: u64 = 0x20;
const MOUNT_ATTR_NODIRATIME: u64 = 0x80;
const MOUNT_ATTR_NOSYMFOLLOW: u64 = 0x200000;

impl MountAttr {
    /// Folds one recursive option in; a later option overrides an earlier one, as with flags.
    /// None if `name` is not one of [`RECURSIVE_OPTIONS`].
    fn apply(&mut self, name: &str) -> Option<()> {
        let (set, attr) = match name {
            "rro" => (true, MOUNT_ATTR_RDONLY),
            "rrw" => (false, MOUNT_ATTR_RDONLY),
            "rnosuid" => (true, MOUNT_ATTR_NOSUID),
            "rsuid" => (false, MOUNT_ATTR_NOSUID),
            "rnodev" => (true, MOUNT_ATTR_NODEV),
            "rdev" => (false, MOUNT_ATTR_NODEV),
            "rnoexec" => (true, MOUNT_ATTR_NOEXEC),
            "rexec" => (false, MOUNT_ATTR_NOEXEC),
            "rnodiratime" => (true, MOUNT_ATTR_NODIRATIME),
            "rdiratime" => (false, MOUNT_ATTR_NODIRATIME),
            "rnosymfollow" => (true, MOUNT_ATTR_NOSYMFOLLOW),
            "rsymfollow" => (false, MOUNT_ATTR_NOSYMFOLLOW),
            // The atime mode is a field, not a bit: the kernel wants it cleared whole and
            // exactly one mode set.
            "rnoatime" | "rrelatime" | "rstrictatime" => {
                let mode = match name {
                    "rnoatime" => MOUNT_ATTR_NOATIME,
                    "rstrictatime" => MOUNT_ATTR_STRICTATIME,
                    _ => MOUNT_ATTR_RELATIME,
                };
                self.attr_set = (self.attr_set & !MOUNT_ATTR_ATIME_MASK) | mode;
                self.attr_clr |= MOUNT_ATTR_ATIME_MASK;
                return Some(());
            }
            _ => return None,
        };
        if set {
            self.attr_set |= attr;
            self.attr_clr &= !attr;
        } else {
            self.attr_clr |= attr;
            self.attr_set &= !attr;
        }
        Some(())
    }

    fn is_empty(&self) -> bool {
        self.attr_set == 0 && self.attr_clr == 0
    }

    /// mount_setattr(2) with AT_RECURSIVE on the mount at `path` (an O_PATH fd of its root,
    /// opened after mounting, so that the mount itself and not the one under it is changed).
    fn apply_recursively(&self, fd: &OwnedFd, path: &Path) -> Result<(), RootfsError> {
        // SAFETY: the path is a NUL-terminated static string, `self` a live, properly laid
        // out struct mount_attr whose size is passed along.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_mount_setattr,
                fd.as_raw_fd(),
                c"".as_ptr(),
                libc::AT_EMPTY_PATH | libc::AT_RECURSIVE,
                self as *const MountAttr,
                std::mem::size_of::<MountAttr>(),
            )
        };
        if rc < 0 {
            return Err(RootfsError::Sys {
                action: "set recursive mount attributes (mount_setattr) on",
                path: path.to_path_buf(),
                source: nix::Error::last(),
            });
        }
        Ok(())
    }
}

/// Whether this kernel has mount_setattr(2) (5.12+): without it neither the recursive options
/// nor id-mapped mounts can be honoured, and they are not advertised. An invalid fd makes the
/// probe fail harmlessly with EBADF, or with ENOSYS when the call does not exist.
pub fn mount_setattr_supported() -> bool {
    let attr = MountAttr::default();
    // SAFETY: as in apply_recursively; fd -1 is never dereferenced by the kernel.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            -1,
            c"".as_ptr(),
            libc::AT_EMPTY_PATH,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    !(rc < 0 && nix::Error::last() == nix::Error::ENOSYS)
}

/// Options that mean something to runc or to newer kernels but that this build does not do.
fn unsupported_option(name: &str) -> bool {
    matches!(name, "tmpcopyup")
        || (name.len() > 1
            && name.starts_with('r')
            && !matches!(
                name,
                "rbind" | "relatime" | "rprivate" | "rshared" | "rslave" | "runbindable"
            )
            && flag_option(&name[1..]).is_some())
}

impl MountEntry {
    /// Every option name [`MountEntry::from_spec`] accepts here, on this kernel (for
    /// `rcrun features`).
    pub fn supported_options() -> Vec<&'static str> {
        let mut all = KNOWN_OPTIONS.to_vec();
        if mount_setattr_supported() {
            all.extend_from_slice(RECURSIVE_OPTIONS);
        }
        if super::idmap::supported() {
            all.extend_from_slice(&["idmap", "ridmap"]);
        }
        all
    }

    pub fn from_spec(m: &Mount) -> Result<Self, RootfsError> {
        let destination = Path::new("/").join(m.destination());
        let mut flags = MsFlags::empty();
        let mut data = Vec::new();
        let mut propagation = Vec::new();
        let mut recursive = MountAttr::default();
        let mut idmap_option = None;
        for opt in m.options().iter().flatten() {
            if recursive.apply(opt).is_some() {
                continue;
            }
            if opt == "idmap" || opt == "ridmap" {
                idmap_option = Some(opt == "ridmap");
                continue;
            }
            if unsupported_option(opt) {
                return Err(RootfsError::NotImplemented(format!(
                    "mount option {opt:?} (on {})",
                    destination.display()
                )));
            }
            if let Some(p) = parse_propagation(opt) {
                propagation.push(p);
            } else if let Some(o) = flag_option(opt) {
                match o {
                    Opt::Set(f) => flags |= f,
                    Opt::Clear(f) => flags &= !f,
                }
            } else {
                data.push(opt.as_str());
            }
        }
        let fstype = m.typ().clone().unwrap_or_default();
        if fstype == "bind" {
            flags |= MsFlags::MS_BIND;
        }
        if fstype.is_empty() && !flags.contains(MsFlags::MS_BIND) {
            return Err(RootfsError::Spec(format!(
                "mount on {} has no type and is not a bind mount",
                destination.display()
            )));
        }
        Ok(MountEntry {
            destination,
            source: m.source().clone(),
            fstype,
            flags,
            data: data.join(","),
            propagation,
            recursive,
            idmap: super::idmap::IdmapRequest::from_mount(m, idmap_option),
        })
    }

    pub fn is_bind(&self) -> bool {
        self.flags.contains(MsFlags::MS_BIND)
    }

    /// Mounts this entry inside `rootfs` (before pivot_root, in the container's mount namespace).
    pub fn mount_in(&self, rootfs: &Path, cgroup_dirs: &[PathBuf]) -> Result<(), RootfsError> {
        let dest = secure_join(rootfs, &self.destination)?;
        self.check_proc_destination(rootfs, &dest)?;
        if self.fstype == "cgroup" || self.fstype == "cgroup2" {
            return self.mount_cgroup(rootfs, &dest, cgroup_dirs);
        }
        let source = self
            .source
            .clone()
            .unwrap_or_else(|| PathBuf::from(&self.fstype));
        // An id-mapped source was opened with the host's privileges; the user namespace we are
        // in now may not even be allowed to look it up.
        let idmapped = self
            .idmap
            .as_ref()
            .and_then(|_| super::idmap::take(&self.destination));
        let as_file = if let Some(tree) = &idmapped {
            !super::idmap::is_dir(tree, &source)?
        } else {
            self.is_bind()
                && std::fs::metadata(&source)
                    .map(|m| !m.is_dir())
                    .map_err(|source_err| RootfsError::Io {
                        action: "stat bind mount source",
                        path: source.clone(),
                        source: source_err,
                    })?
        };
        create_mount_point(&dest, as_file)?;
        let fd = open_inside(rootfs, &dest)?;
        let target = fd_path(&fd);
        let sys = |action: &'static str| {
            let dest = dest.clone();
            move |source| RootfsError::Sys {
                action,
                path: dest,
                source,
            }
        };
        if self.is_bind() {
            let bind = self.flags & (MsFlags::MS_BIND | MsFlags::MS_REC);
            if let Some(tree) = idmapped {
                super::idmap::attach(tree, &fd, &dest)?;
            } else {
                mount(Some(&source), &target, None::<&str>, bind, None::<&str>)
                    .map_err(sys("bind mount"))?;
            }
            // A bind mount ignores every other flag; they only take effect on a remount.
            let rest = self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC | MsFlags::MS_REMOUNT);
            if !rest.is_empty() {
                remount_bind(&dest, rest)?;
            }
        } else {
            let data = (!self.data.is_empty()).then_some(self.data.as_str());
            match mount(
                Some(&source),
                &target,
                Some(self.fstype.as_str()),
                self.flags,
                data,
            ) {
                Ok(()) => {}
                // sysfs can only be mounted by the owner of the network namespace; a container
                // that shares the host's gets the host's /sys bound in instead, as runc does.
                Err(nix::Error::EPERM) if self.fstype == "sysfs" => {
                    mount(
                        Some("/sys"),
                        &target,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REC,
                        None::<&str>,
                    )
                    .map_err(sys("bind mount /sys"))?;
                    remount_bind(&dest, self.flags)?;
                }
                Err(e) => return Err(sys("mount")(e)),
            }
        }
        drop(fd);
        if !self.recursive.is_empty() {
            let mounted = open_inside(rootfs, &dest)?;
            self.recursive.apply_recursively(&mounted, &dest)?;
        }
        for p in &self.propagation {
            mount(None::<&str>, &dest, None::<&str>, *p, None::<&str>)
                .map_err(sys("set mount propagation on"))?;
        }
        Ok(())
    }

    /// Only procfs itself may be mounted on /proc, and only the few files lxcfs-style tools
    /// replace may be mounted under it: anything else over /proc (reached directly or through
    /// a symlink in the image, CVE-2019-19921) would hide masked paths and redirect the writes
    /// the runtime and the kernel make there. The same rule as runc's.
    fn check_proc_destination(&self, rootfs: &Path, dest: &Path) -> Result<(), RootfsError> {
        const ALLOWED: &[&str] = &[
            "/proc/cpuinfo",
            "/proc/diskstats",
            "/proc/meminfo",
            "/proc/stat",
            "/proc/swaps",
            "/proc/uptime",
            "/proc/loadavg",
            "/proc/slabinfo",
            "/proc/net/dev",
            "/proc/sys/kernel/ns_last_pid",
        ];
        let inside = Path::new("/").join(dest.strip_prefix(rootfs).unwrap_or(dest));
        if !inside.starts_with("/proc") {
            return Ok(());
        }
        let ok = if inside == Path::new("/proc") {
            self.fstype == "proc"
        } else {
            ALLOWED.iter().any(|a| inside == Path::new(a))
        };
        if ok {
            Ok(())
        } else {
            Err(RootfsError::Path {
                path: self.destination.clone(),
                reason: format!(
                    "resolves to {} in the container: only procfs may be mounted on /proc",
                    inside.display()
                ),
            })
        }
    }

    /// `type: cgroup` on a v1 host: a tmpfs with the container's own directory of every
    /// hierarchy bound in; on a v2 host: cgroup2 itself.
    fn mount_cgroup(
        &self,
        rootfs: &Path,
        dest: &Path,
        cgroup_dirs: &[PathBuf],
    ) -> Result<(), RootfsError> {
        create_mount_point(dest, false)?;
        let fd = open_inside(rootfs, dest)?;
        let target = fd_path(&fd);
        let sys = |action: &'static str, p: &Path| {
            let p = p.to_path_buf();
            move |source| RootfsError::Sys {
                action,
                path: p,
                source,
            }
        };
        let flags = self.flags & !(MsFlags::MS_BIND | MsFlags::MS_REC);
        let v1: Vec<&PathBuf> = cgroup_dirs.iter().filter(|d| !is_cgroup2(d)).collect();
        if v1.is_empty() {
            return mount(
                Some("cgroup2"),
                &target,
                Some("cgroup2"),
                flags,
                None::<&str>,
            )
            .map_err(sys("mount cgroup2 on", dest));
        }
        mount(
            Some("tmpfs"),
            &target,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            Some("mode=755"),
        )
        .map_err(sys("mount tmpfs on", dest))?;
        drop(fd);
        for dir in v1 {
            let Some(name) = hierarchy_name(dir) else {
                continue;
            };
            let sub = dest.join(&name);
            create_mount_point(&sub, false)?;
            mount(
                Some(dir.as_path()),
                &sub,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )
            .map_err(sys("bind mount cgroup on", &sub))?;
            remount_bind(&sub, flags)?;
        }
        if flags.contains(MsFlags::MS_RDONLY) {
            remount_bind(dest, flags)?;
        }
        Ok(())
    }
}

fn is_cgroup2(dir: &Path) -> bool {
    nix::sys::statfs::statfs(dir)
        .map(|s| s.filesystem_type() == nix::sys::statfs::CGROUP2_SUPER_MAGIC)
        .unwrap_or(false)
}

/// `/sys/fs/cgroup/<name>/...` → `<name>` (e.g. `memory`, `cpu,cpuacct`, `systemd`).
fn hierarchy_name(dir: &Path) -> Option<String> {
    dir.strip_prefix("/sys/fs/cgroup")
        .ok()?
        .components()
        .next()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
}

/// Re-applies flags to a bind mount. Flags the kernel has locked on it (nosuid, nodev, noexec
/// and the atime ones, e.g. inherited in a user namespace) are kept, or the remount fails.
pub fn remount_bind(path: &Path, flags: MsFlags) -> Result<(), RootfsError> {
    let locked = nix::sys::statvfs::statvfs(path)
        .map(|s| {
            use nix::sys::statvfs::FsFlags as V;
            let f = s.flags();
            let mut m = MsFlags::empty();
            for (v, ms) in [
                (V::ST_NOSUID, MsFlags::MS_NOSUID),
                (V::ST_NODEV, MsFlags::MS_NODEV),
                (V::ST_NOEXEC, MsFlags::MS_NOEXEC),
                (V::ST_NOATIME, MsFlags::MS_NOATIME),
                (V::ST_NODIRATIME, MsFlags::MS_NODIRATIME),
                (V::ST_RELATIME, MsFlags::MS_RELATIME),
            ] {
                if f.contains(v) {
                    m |= ms;
                }
            }
            m
        })
        .unwrap_or(MsFlags::empty());
    let propagation =
        MsFlags::MS_SHARED | MsFlags::MS_PRIVATE | MsFlags::MS_SLAVE | MsFlags::MS_UNBINDABLE;
    let flags = (flags | locked) & !propagation;
    mount(
        None::<&str>,
        path,
        None::<&str>,
        MsFlags::MS_REMOUNT | MsFlags::MS_BIND | flags,
        None::<&str>,
    )
    .map_err(|source| RootfsError::Sys {
        action: "remount",
        path: path.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::MountBuilder;

    fn entry(typ: &str, opts: &[&str]) -> Result<MountEntry, RootfsError> {
        let m = MountBuilder::default()
            .destination("/x")
            .typ(typ)
            .source("src")
            .options(opts.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap();
        MountEntry::from_spec(&m)
    }

    #[test]
    fn options_become_flags_data_and_propagation() {
        let e = entry(
            "tmpfs",
            &["nosuid", "noexec", "size=64k", "mode=755", "rslave", "ro"],
        )
        .unwrap();
        assert_eq!(
            e.flags,
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC | MsFlags::MS_RDONLY
        );
        assert_eq!(e.data, "size=64k,mode=755");
        assert_eq!(e.propagation, vec![MsFlags::MS_SLAVE | MsFlags::MS_REC]);
        let b = entry("none", &["rbind", "rw"]).unwrap();
        assert!(b.is_bind() && b.flags.contains(MsFlags::MS_REC));
        assert!(entry("bind", &[]).unwrap().is_bind());
    }

    #[test]
    fn every_advertised_option_is_understood() {
        for o in KNOWN_OPTIONS {
            assert!(
                flag_option(o).is_some() || parse_propagation(o).is_some(),
                "{o}"
            );
        }
        for o in RECURSIVE_OPTIONS {
            assert!(MountAttr::default().apply(o).is_some(), "{o}");
            assert!(entry("tmpfs", &[o]).is_ok(), "{o}");
        }
    }

    #[test]
    fn recursive_options_become_mount_attributes_last_one_winning() {
        let e = entry("bind", &["rbind", "rro", "rnosuid", "rnoatime", "ro"]).unwrap();
        assert_eq!(
            e.recursive.attr_set,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOATIME
        );
        assert_eq!(e.recursive.attr_clr, MOUNT_ATTR_ATIME_MASK);
        assert!(e.flags.contains(MsFlags::MS_RDONLY));
        let e = entry("bind", &["rro", "rrw", "rstrictatime"]).unwrap();
        assert_eq!(e.recursive.attr_set, MOUNT_ATTR_STRICTATIME);
        assert_eq!(
            e.recursive.attr_clr,
            MOUNT_ATTR_RDONLY | MOUNT_ATTR_ATIME_MASK
        );
        assert!(entry("bind", &["rbind"]).unwrap().recursive.is_empty());
    }

    #[test]
    fn options_we_do_not_implement_are_refused() {
        for o in ["tmpcopyup", "ratime", "rnorelatime", "rsync"] {
            assert!(
                matches!(entry("tmpfs", &[o]), Err(RootfsError::NotImplemented(_))),
                "{o}"
            );
        }
    }
}
