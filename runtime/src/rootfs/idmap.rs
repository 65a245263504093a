//! Id-mapped bind mounts: a mount's `uidMappings`/`gidMappings` and the `idmap`/`ridmap`
//! options. The source is cloned as a detached mount (open_tree), given the id mapping of a user
//! namespace made for the purpose (mount_setattr with MOUNT_ATTR_IDMAP), and attached in the
//! container (move_mount).
//!
//! The kernel lets only a holder of CAP_SYS_ADMIN over the filesystem's superblock (host root,
//! for the host's filesystems) idmap a mount, and only while it is detached. So stage one makes
//! the clones before it enters the container's user namespace, and keeps them here: they cross
//! the fork and the namespace switches to the init, which attaches each in place of the bind
//! mount it would otherwise make.
use super::mount::{MountAttr, MountEntry};
use super::RootfsError;
use nix::sys::wait::waitpid;
use nix::unistd::{fork, ForkResult, Pid};
use oci_spec::runtime::{Linux, LinuxIdMapping, Mount};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

// From linux/mount.h; libc does not have them all.
const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;
const MOVE_MOUNT_T_EMPTY_PATH: libc::c_uint = 0x40;
const MOUNT_ATTR_IDMAP: u64 = 0x100000;

/// One line of a uid_map or gid_map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdRange {
    pub container_id: u32,
    pub host_id: u32,
    pub size: u32,
}

/// How one mount is to be id-mapped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdmapRequest {
    /// Empty when the mount gives none: the container's own mappings are used (see
    /// [`inherit_container_mappings`]).
    pub uid_mappings: Vec<IdRange>,
    pub gid_mappings: Vec<IdRange>,
    /// `ridmap`: the submounts an `rbind` brings along are id-mapped too.
    pub recursive: bool,
}

fn ranges(maps: Option<&Vec<LinuxIdMapping>>) -> Vec<IdRange> {
    maps.into_iter()
        .flatten()
        .map(|m| IdRange {
            container_id: m.container_id(),
            host_id: m.host_id(),
            size: m.size(),
        })
        .collect()
}

impl IdmapRequest {
    /// None for a mount that is not id-mapped. `option` is Some(recursive) when `idmap` or
    /// `ridmap` was among the options.
    pub fn from_mount(m: &Mount, option: Option<bool>) -> Option<Self> {
        let uid_mappings = ranges(m.uid_mappings().as_ref());
        let gid_mappings = ranges(m.gid_mappings().as_ref());
        if option.is_none() && uid_mappings.is_empty() && gid_mappings.is_empty() {
            return None;
        }
        Some(IdmapRequest {
            uid_mappings,
            gid_mappings,
            recursive: option.unwrap_or(false),
        })
    }
}

/// Checks, before anything is created, what the kernel would otherwise refuse halfway through
/// the set-up: an id-mapped mount is a bind mount, has both mappings (or none, to take the
/// container's), and lives in a container with a user namespace.
pub fn check_spec(m: &Mount, has_userns: bool) -> Result<(), String> {
    let option = m
        .options()
        .iter()
        .flatten()
        .any(|o| o == "idmap" || o == "ridmap");
    let uids = m.uid_mappings().as_ref().is_some_and(|v| !v.is_empty());
    let gids = m.gid_mappings().as_ref().is_some_and(|v| !v.is_empty());
    if !option && !uids && !gids && m.uid_mappings().is_none() && m.gid_mappings().is_none() {
        return Ok(());
    }
    let dest = m.destination().display();
    if uids != gids {
        return Err(format!(
            "id-mapped mount on {dest} needs both uidMappings and gidMappings"
        ));
    }
    let bind = m.typ().as_deref() == Some("bind")
        || m.options()
            .iter()
            .flatten()
            .any(|o| o == "bind" || o == "rbind");
    if !bind {
        return Err(format!("id-mapped mount on {dest} must be a bind mount"));
    }
    if !has_userns {
        return Err(format!(
            "id-mapped mount on {dest} needs the container to have a user namespace"
        ));
    }
    let all = m
        .uid_mappings()
        .iter()
        .chain(m.gid_mappings().iter())
        .flatten();
    for r in all {
        if r.size() == 0 || r.host_id().checked_add(r.size()).is_none() {
            return Err(format!(
                "id-mapped mount on {dest}: mapping {}:{}:{} is empty or overflows",
                r.container_id(),
                r.host_id(),
                r.size()
            ));
        }
    }
    Ok(())
}

/// An `idmap` option without mappings of its own takes the container's (runc does the same).
pub fn inherit_container_mappings(
    mounts: &mut [MountEntry],
    linux: Option<&Linux>,
) -> Result<(), RootfsError> {
    let uids = ranges(linux.and_then(|l| l.uid_mappings().as_ref()));
    let gids = ranges(linux.and_then(|l| l.gid_mappings().as_ref()));
    for m in mounts.iter_mut() {
        let Some(req) = m.idmap.as_mut() else {
            continue;
        };
        if req.uid_mappings.is_empty() {
            if uids.is_empty() || gids.is_empty() {
                return Err(RootfsError::Spec(format!(
                    "id-mapped mount on {} has no mappings and the container has none to lend",
                    m.destination.display()
                )));
            }
            req.uid_mappings = uids.clone();
            req.gid_mappings = gids.clone();
        }
    }
    Ok(())
}

/// Detached, id-mapped clones made by [`prepare`], by destination, in mount order. A process
/// global because they must outlive stage one's borrow of the (shared, read-only) plan and
/// reach the forked init.
static PREPARED: Mutex<Vec<(PathBuf, OwnedFd)>> = Mutex::new(Vec::new());

/// In stage one, before entering the container's user namespace: clones and id-maps the
/// source of every id-mapped mount.
pub fn prepare(mounts: &[MountEntry]) -> Result<(), RootfsError> {
    let mut userns: Vec<(&IdmapRequest, HelperUserns)> = Vec::new();
    let mut made = Vec::new();
    for m in mounts {
        let Some(req) = &m.idmap else {
            continue;
        };
        let source = m.source.clone().unwrap_or_default();
        let tree = open_tree(&source, m.flags.contains(nix::mount::MsFlags::MS_REC))?;
        let pos = userns.iter().position(|(r, _)| {
            r.uid_mappings == req.uid_mappings && r.gid_mappings == req.gid_mappings
        });
        let ns = match pos {
            Some(i) => &userns[i].1,
            None => {
                userns.push((req, HelperUserns::new(req)?));
                &userns[userns.len() - 1].1
            }
        };
        set_idmap(&tree, &ns.fd, req.recursive, &source)?;
        made.push((m.destination.clone(), tree));
    }
    if !made.is_empty() {
        PREPARED
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(made);
    }
    Ok(())
}

/// The clone [`prepare`] made for the next mount on `dest`.
pub(super) fn take(dest: &Path) -> Option<OwnedFd> {
    let mut prepared = PREPARED.lock().unwrap_or_else(|p| p.into_inner());
    let i = prepared.iter().position(|(d, _)| d == dest)?;
    Some(prepared.remove(i).1)
}

/// Attaches a prepared clone on the mount point `target` (an O_PATH fd inside the rootfs, so
/// nothing is resolved again).
pub(super) fn attach(tree: OwnedFd, target: &OwnedFd, dest: &Path) -> Result<(), RootfsError> {
    // SAFETY: both fds are live; the paths are NUL-terminated static strings.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH | MOVE_MOUNT_T_EMPTY_PATH,
        )
    };
    if rc < 0 {
        return Err(RootfsError::Sys {
            action: "attach the id-mapped mount (move_mount) on",
            path: dest.to_path_buf(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// Whether a prepared clone is of a directory (else a file is its mount point).
pub(super) fn is_dir(tree: &OwnedFd, source: &Path) -> Result<bool, RootfsError> {
    let st = nix::sys::stat::fstat(tree).map_err(|e| RootfsError::Sys {
        action: "stat the id-mapped mount of",
        path: source.to_path_buf(),
        source: e,
    })?;
    Ok(
        nix::sys::stat::SFlag::from_bits_truncate(st.st_mode) & nix::sys::stat::SFlag::S_IFMT
            == nix::sys::stat::SFlag::S_IFDIR,
    )
}

fn open_tree(source: &Path, recursive: bool) -> Result<OwnedFd, RootfsError> {
    let c = std::ffi::CString::new(source.as_os_str().as_encoded_bytes()).map_err(|_| {
        RootfsError::Spec(format!("mount source {} contains NUL", source.display()))
    })?;
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `c` is a live NUL-terminated string.
    let fd = unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, c.as_ptr(), flags) };
    if fd < 0 {
        return Err(RootfsError::Sys {
            action: "clone the mount (open_tree) of",
            path: source.to_path_buf(),
            source: nix::Error::last(),
        });
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as i32) })
}

fn set_idmap(
    tree: &OwnedFd,
    userns: &OwnedFd,
    recursive: bool,
    source: &Path,
) -> Result<(), RootfsError> {
    let attr = MountAttr {
        attr_set: MOUNT_ATTR_IDMAP,
        userns_fd: userns.as_raw_fd() as u64,
        ..MountAttr::default()
    };
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    // SAFETY: a live fd, a static NUL-terminated path and a properly laid out struct
    // mount_attr whose size is passed along.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            std::mem::size_of::<MountAttr>(),
        )
    };
    if rc < 0 {
        return Err(RootfsError::Sys {
            action: "id-map (mount_setattr MOUNT_ATTR_IDMAP) the mount of",
            path: source.to_path_buf(),
            source: nix::Error::last(),
        });
    }
    Ok(())
}

/// A user namespace with a mount's mappings, held by a child that waits to be released: a
/// namespace needs a process in it until its fd is open, and a process cannot give itself a
/// mapping of ids it does not own.
struct HelperUserns {
    fd: OwnedFd,
}

impl HelperUserns {
    fn new(req: &IdmapRequest) -> Result<Self, RootfsError> {
        let sys = |action: &'static str| {
            move |source| RootfsError::Sys {
                action,
                path: PathBuf::from("/proc/self/ns/user"),
                source,
            }
        };
        let (ready_r, ready_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(sys("make a pipe for the id-mapping helper of"))?;
        let (release_r, release_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .map_err(sys("make a pipe for the id-mapping helper of"))?;
        // SAFETY: stage one is single-threaded; the child only makes raw syscalls and _exits.
        match unsafe { fork() }.map_err(sys("fork the id-mapping helper for"))? {
            ForkResult::Child => {
                drop(ready_r);
                drop(release_w);
                let ok = nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWUSER).is_ok();
                let _ = nix::unistd::write(&ready_w, &[ok as u8]);
                let mut b = [0u8; 1];
                // Returns at EOF: when the parent has its fd or gave up.
                let _ = nix::unistd::read(&release_r, &mut b);
                // SAFETY: _exit skips the parent's atexit handlers and buffers.
                unsafe { libc::_exit(0) }
            }
            ForkResult::Parent { child } => {
                drop(ready_w);
                drop(release_r);
                let r = Self::map(child, &ready_r, req);
                drop(release_w);
                let _ = waitpid(child, None);
                r
            }
        }
    }

    fn map(child: Pid, ready: &OwnedFd, req: &IdmapRequest) -> Result<Self, RootfsError> {
        let proc_dir = PathBuf::from(format!("/proc/{child}"));
        let mut b = [0u8; 1];
        match nix::unistd::read(ready, &mut b) {
            Ok(1) if b[0] == 1 => {}
            _ => {
                return Err(RootfsError::Sys {
                    action: "make a user namespace (helper for id-mapped mounts) at",
                    path: proc_dir,
                    source: nix::Error::EPERM,
                })
            }
        }
        for (file, maps) in [
            ("uid_map", &req.uid_mappings),
            ("gid_map", &req.gid_mappings),
        ] {
            let text: String = maps
                .iter()
                .map(|r| format!("{} {} {}\n", r.container_id, r.host_id, r.size))
                .collect();
            let path = proc_dir.join(file);
            std::fs::write(&path, text).map_err(|source| RootfsError::Io {
                action: "write the id-mapped mount's mapping to",
                path: path.clone(),
                source,
            })?;
        }
        let path = proc_dir.join("ns/user");
        let fd = nix::fcntl::open(
            &path,
            nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
            nix::sys::stat::Mode::empty(),
        )
        .map_err(|source| RootfsError::Sys {
            action: "open",
            path,
            source,
        })?;
        Ok(HelperUserns { fd })
    }
}

/// Whether this kernel has the calls id-mapped mounts need (mount_setattr, 5.12+), for
/// `rcrun features`. Whether a given filesystem supports them is only known when mounting.
pub fn supported() -> bool {
    super::mount::mount_setattr_supported()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Through serde, as config.json is read: the builder would refuse half a mapping.
    fn mount(typ: &str, opts: &[&str], uids: bool, gids: bool) -> Mount {
        let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
        let mut m = serde_json::json!({
            "destination": "/x", "type": typ, "source": "/src", "options": opts,
        });
        if uids {
            m["uidMappings"] = map.clone();
        }
        if gids {
            m["gidMappings"] = map;
        }
        serde_json::from_value(m).unwrap()
    }

    #[test]
    fn id_mapped_mounts_are_checked_up_front() {
        assert!(check_spec(&mount("tmpfs", &[], false, false), false).is_ok());
        assert!(check_spec(&mount("bind", &["rbind"], true, true), true).is_ok());
        assert!(check_spec(&mount("none", &["bind", "idmap"], false, false), true).is_ok());
        let no_userns = check_spec(&mount("bind", &["rbind"], true, true), false).unwrap_err();
        assert!(no_userns.contains("user namespace"), "{no_userns}");
        let half = check_spec(&mount("bind", &["rbind"], true, false), true).unwrap_err();
        assert!(half.contains("both"), "{half}");
        let not_bind = check_spec(&mount("tmpfs", &[], true, true), true).unwrap_err();
        assert!(not_bind.contains("bind"), "{not_bind}");
    }

    #[test]
    fn the_option_alone_asks_for_the_containers_mappings() {
        let r = IdmapRequest::from_mount(&mount("bind", &["ridmap"], false, false), Some(true));
        assert_eq!(
            r,
            Some(IdmapRequest {
                uid_mappings: vec![],
                gid_mappings: vec![],
                recursive: true
            })
        );
        assert_eq!(
            IdmapRequest::from_mount(&mount("bind", &[], false, false), None),
            None
        );
    }
}
