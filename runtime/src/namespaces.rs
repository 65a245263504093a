//! Namespaces from `linux.namespaces`: which to create, which to join by path, and the
//! user-namespace id maps.
use nix::sched::{setns, unshare, CloneFlags};
use nix::unistd::Pid;
use oci_spec::runtime::{Linux, LinuxIdMapping, LinuxNamespaceType};
use std::os::fd::OwnedFd;
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("failed to open namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to join namespace {path}")]
    Join {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to create namespaces ({flags:?})")]
    Unshare {
        flags: CloneFlags,
        #[source]
        source: nix::Error,
    },
    #[error("failed to write {path}")]
    IdMap {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

pub fn clone_flag(t: LinuxNamespaceType) -> CloneFlags {
    match t {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        // nix has no constant for CLONE_NEWTIME.
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// What the container's init does with namespaces, decided before any fork.
#[derive(Debug, Clone)]
pub struct NamespacePlan {
    /// Namespaces joined by path, user namespace first.
    pub join: Vec<(CloneFlags, PathBuf)>,
    /// Namespaces created new, except the user namespace (see `new_user`).
    pub new: CloneFlags,
    pub new_user: bool,
    pub uid_mappings: Vec<LinuxIdMapping>,
    pub gid_mappings: Vec<LinuxIdMapping>,
    /// `linux.timeOffsets` as /proc/self/timens_offsets lines ("monotonic 5 0").
    pub time_offsets: Vec<String>,
}

impl NamespacePlan {
    pub fn from_spec(linux: Option<&Linux>) -> Self {
        let mut plan = NamespacePlan {
            join: Vec::new(),
            new: CloneFlags::empty(),
            new_user: false,
            uid_mappings: Vec::new(),
            gid_mappings: Vec::new(),
            time_offsets: Vec::new(),
        };
        let Some(linux) = linux else {
            return plan;
        };
        for ns in linux.namespaces().iter().flatten() {
            let flag = clone_flag(ns.typ());
            match ns.path() {
                Some(p) => plan.join.push((flag, p.clone())),
                None if ns.typ() == LinuxNamespaceType::User => plan.new_user = true,
                None => plan.new |= flag,
            }
        }
        // Joining the user namespace first gives us its capabilities for the joins after it.
        plan.join
            .sort_by_key(|(f, _)| !f.contains(CloneFlags::CLONE_NEWUSER));
        plan.uid_mappings = linux.uid_mappings().clone().unwrap_or_default();
        plan.gid_mappings = linux.gid_mappings().clone().unwrap_or_default();
        let mut offsets: Vec<String> = linux
            .time_offsets()
            .iter()
            .flatten()
            .map(|(clock, o)| {
                format!(
                    "{clock} {} {}",
                    o.secs().unwrap_or(0),
                    o.nanosecs().unwrap_or(0)
                )
            })
            .collect();
        offsets.sort();
        plan.time_offsets = offsets;
        plan
    }

    fn touches(&self, flag: CloneFlags) -> bool {
        self.new.contains(flag) || self.join.iter().any(|(f, _)| f.contains(flag))
    }

    /// pid and time namespaces apply to children only, so the init must be forked after them.
    pub fn needs_fork(&self) -> bool {
        self.touches(CloneFlags::CLONE_NEWPID)
            || self.touches(CloneFlags::from_bits_retain(libc::CLONE_NEWTIME))
    }

    /// The namespaces the container's first process can be born into by clone3 itself, which
    /// spares the second fork a new pid namespace otherwise needs: all those to create, when
    /// nothing is joined and no user namespace is made (those come first, step by step).
    /// Not the cgroup namespace, which must be rooted at the container's cgroup and so is
    /// made after entering it, and nothing with a time namespace, whose offsets must be set
    /// before any process lives in it.
    pub fn born_with(&self) -> CloneFlags {
        let time = CloneFlags::from_bits_retain(libc::CLONE_NEWTIME);
        if !self.join.is_empty() || self.new_user || self.new.contains(time) {
            return CloneFlags::empty();
        }
        self.new - CloneFlags::CLONE_NEWCGROUP
    }

    pub fn private_pid(&self) -> bool {
        self.touches(CloneFlags::CLONE_NEWPID)
    }

    pub fn has_new(&self, flag: CloneFlags) -> bool {
        self.new.contains(flag)
    }

    pub fn joins_user(&self) -> bool {
        self.join
            .iter()
            .any(|(f, _)| f.contains(CloneFlags::CLONE_NEWUSER))
    }

    /// Opens every namespace to join before joining any, since joining a mount namespace
    /// changes how later paths resolve.
    pub fn open_joins(&self) -> Result<Vec<(CloneFlags, PathBuf, OwnedFd)>, NamespaceError> {
        self.join
            .iter()
            .map(|(flag, path)| {
                nix::fcntl::open(
                    path,
                    nix::fcntl::OFlag::O_RDONLY | nix::fcntl::OFlag::O_CLOEXEC,
                    nix::sys::stat::Mode::empty(),
                )
                .map(|fd| (*flag, path.clone(), fd))
                .map_err(|source| NamespaceError::Open {
                    path: path.clone(),
                    source,
                })
            })
            .collect()
    }
}

/// Joins the user namespace in the middle: every other namespace is first tried with the
/// caller's own privileges, since a namespace owned by an outer user namespace (a pod's network
/// namespace, made by the host) can no longer be joined from inside the inner one; those only
/// the user namespace's privileges open (EPERM before) are joined after it, as runc does.
pub fn join(fds: Vec<(CloneFlags, PathBuf, OwnedFd)>) -> Result<(), NamespaceError> {
    let (user, rest): (Vec<_>, Vec<_>) = fds
        .into_iter()
        .partition(|(f, _, _)| f.contains(CloneFlags::CLONE_NEWUSER));
    let mut later = Vec::new();
    for (flag, path, fd) in rest {
        match setns(&fd, flag) {
            Ok(()) => {}
            Err(nix::Error::EPERM) if !user.is_empty() => later.push((flag, path, fd)),
            Err(source) => return Err(NamespaceError::Join { path, source }),
        }
    }
    for (flag, path, fd) in user.into_iter().chain(later) {
        setns(&fd, flag).map_err(|source| NamespaceError::Join { path, source })?;
    }
    Ok(())
}

pub fn unshare_flags(flags: CloneFlags) -> Result<(), NamespaceError> {
    if flags.is_empty() {
        return Ok(());
    }
    unshare(flags).map_err(|source| NamespaceError::Unshare { flags, source })
}

/// Sets the clocks of a time namespace we just unshared; the kernel accepts this only before
/// the first process enters it, i.e. before the init is forked.
pub fn write_time_offsets(plan: &NamespacePlan) -> Result<(), NamespaceError> {
    if plan.time_offsets.is_empty() {
        return Ok(());
    }
    let path = PathBuf::from("/proc/self/timens_offsets");
    std::fs::write(&path, plan.time_offsets.join("\n"))
        .map_err(|source| NamespaceError::IdMap { path, source })
}

/// Writes uid_map and gid_map of `pid` (run by the parent, which holds the privileges).
pub fn write_id_maps(pid: Pid, plan: &NamespacePlan) -> Result<(), NamespaceError> {
    fn render(maps: &[LinuxIdMapping]) -> String {
        maps.iter()
            .map(|m| format!("{} {} {}\n", m.container_id(), m.host_id(), m.size()))
            .collect()
    }
    for (file, maps) in [
        ("uid_map", &plan.uid_mappings),
        ("gid_map", &plan.gid_mappings),
    ] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, render(maps))
            .map_err(|source| NamespaceError::IdMap { path, source })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(namespaces: serde_json::Value) -> NamespacePlan {
        let linux: Linux =
            serde_json::from_value(serde_json::json!({ "namespaces": namespaces })).unwrap();
        NamespacePlan::from_spec(Some(&linux))
    }

    #[test]
    fn clone3_makes_the_new_namespaces_but_the_cgroup_one() {
        let p = plan(serde_json::json!([
            {"type": "pid"}, {"type": "mount"}, {"type": "network"}, {"type": "cgroup"}
        ]));
        assert_eq!(
            p.born_with(),
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWNET
        );
    }

    #[test]
    fn joins_user_and_time_namespaces_keep_the_step_by_step_way() {
        for namespaces in [
            serde_json::json!([{"type": "pid"}, {"type": "network", "path": "/proc/1/ns/net"}]),
            serde_json::json!([{"type": "pid"}, {"type": "user"}]),
            serde_json::json!([{"type": "pid"}, {"type": "time"}]),
        ] {
            assert_eq!(
                plan(namespaces.clone()).born_with(),
                CloneFlags::empty(),
                "{namespaces}"
            );
        }
    }
}
