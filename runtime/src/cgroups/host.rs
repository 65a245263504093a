//! How this host mounts its cgroup hierarchies and where the calling process sits in them,
//! worked out from the text of /proc/self/mountinfo and /proc/self/cgroup (so it is testable
//! without touching the kernel).
use super::{CgroupError, CgroupVersion};
use std::path::{Component, Path, PathBuf};

pub(super) const MOUNTINFO: &str = "/proc/self/mountinfo";
pub(super) const PROC_CGROUP: &str = "/proc/self/cgroup";

/// One cgroup or cgroup2 line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct CgroupMount {
    /// The cgroup shown at the mount point, relative to the hierarchy's (namespace's) root.
    pub root: PathBuf,
    pub mount_point: PathBuf,
    pub v2: bool,
    pub super_options: Vec<String>,
}

/// One line of /proc/self/cgroup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Membership {
    /// Empty for the v2 line (`0::/path`).
    pub controllers: Vec<String>,
    pub path: PathBuf,
}

/// A hierarchy the container is placed in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Hierarchy {
    pub mount_point: PathBuf,
    pub root: PathBuf,
    /// v1 controllers (including `name=systemd`-style names); empty on v2.
    pub controllers: Vec<String>,
    /// The calling process's cgroup in this hierarchy, as /proc/self/cgroup shows it.
    pub own: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Host {
    pub version: CgroupVersion,
    pub hierarchies: Vec<Hierarchy>,
}

/// Where the container's cgroup goes, relative to what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Target {
    /// A cgroup path from the hierarchy's root (`/a/b`), normalised, never the root itself.
    Absolute(PathBuf),
    /// A path below the calling process's own cgroup, normalised, never empty.
    Relative(PathBuf),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Absolute(p) | Target::Relative(p) => write!(f, "{}", p.display()),
        }
    }
}

impl Host {
    /// Reads the calling process's view of the host.
    pub fn probe() -> Result<Host, CgroupError> {
        let mountinfo = read_proc(MOUNTINFO)?;
        let proc_cgroup = read_proc(PROC_CGROUP)?;
        Host::from_texts(&mountinfo, &proc_cgroup)
    }

    /// Any v1 hierarchy mounted → v1 over all of them (a hybrid host's cgroup2 `unified` mount
    /// carries no controllers and is ignored); only cgroup2 → v2.
    pub fn from_texts(mountinfo: &str, proc_cgroup: &str) -> Result<Host, CgroupError> {
        let mounts = parse_mountinfo(mountinfo)?;
        let memberships = parse_proc_cgroup(proc_cgroup)?;
        let (v1, v2): (Vec<_>, Vec<_>) = mounts.into_iter().partition(|m| !m.v2);

        if !v1.is_empty() {
            let mut hierarchies = Vec::new();
            for member in memberships.iter().filter(|m| !m.controllers.is_empty()) {
                let candidates: Vec<&CgroupMount> = v1
                    .iter()
                    .filter(|m| {
                        member
                            .controllers
                            .iter()
                            .all(|c| m.super_options.iter().any(|o| o == c))
                    })
                    .collect();
                // A controller the process belongs to but nobody mounted (e.g. net_cls) is
                // simply not a place we can put the container.
                let Some(mount) = pick_mount(&candidates, &member.path) else {
                    continue;
                };
                hierarchies.push(Hierarchy {
                    mount_point: mount.mount_point.clone(),
                    root: mount.root.clone(),
                    controllers: member.controllers.clone(),
                    own: member.path.clone(),
                });
            }
            if hierarchies.is_empty() {
                return Err(CgroupError::NoHierarchy(
                    "cgroup v1 is mounted but none of the hierarchies in /proc/self/cgroup is"
                        .to_string(),
                ));
            }
            return Ok(Host {
                version: CgroupVersion::V1,
                hierarchies,
            });
        }

        if !v2.is_empty() {
            let member = memberships
                .iter()
                .find(|m| m.controllers.is_empty())
                .ok_or_else(|| {
                    CgroupError::NoHierarchy(
                        "cgroup2 is mounted but /proc/self/cgroup has no 0:: line".to_string(),
                    )
                })?;
            let mut candidates: Vec<&CgroupMount> = v2.iter().collect();
            // The conventional mount point first, so that a stray second cgroup2 mount
            // elsewhere does not become the container's home.
            candidates.sort_by_key(|m| m.mount_point != Path::new("/sys/fs/cgroup"));
            let mount = pick_mount(&candidates, &member.path).ok_or_else(|| {
                CgroupError::NoHierarchy("no cgroup2 mount is usable".to_string())
            })?;
            return Ok(Host {
                version: CgroupVersion::V2,
                hierarchies: vec![Hierarchy {
                    mount_point: mount.mount_point.clone(),
                    root: mount.root.clone(),
                    controllers: Vec::new(),
                    own: member.path.clone(),
                }],
            });
        }

        Err(CgroupError::NoHierarchy(
            "no cgroup filesystem is mounted".to_string(),
        ))
    }

    /// The container's directory in every hierarchy, in the order of `hierarchies`.
    pub fn dirs(&self, target: &Target) -> Result<Vec<PathBuf>, CgroupError> {
        self.hierarchies
            .iter()
            .map(|h| {
                let dir = match target {
                    Target::Absolute(path) => h.dir_of_absolute(path),
                    Target::Relative(rel) => h.own_dir()?.join(rel),
                };
                // `/docker/abc` when the mount shows exactly that cgroup: the container
                // would share (and destroy would try to remove) the mounted root.
                if dir == h.mount_point {
                    return Err(CgroupError::InvalidPath {
                        path: target.to_string(),
                        reason: "it names the cgroup at a hierarchy's mount point",
                    });
                }
                Ok(dir)
            })
            .collect()
    }

    /// The hierarchy a directory (from state.json) belongs to: the one with the longest
    /// mount point that contains it.
    pub fn hierarchy_of(&self, dir: &Path) -> Option<&Hierarchy> {
        self.hierarchies
            .iter()
            .filter(|h| dir.starts_with(&h.mount_point))
            .max_by_key(|h| h.mount_point.components().count())
    }
}

impl Hierarchy {
    /// The calling process's own cgroup directory. It must be visible through the mount:
    /// a process in `/a` looking at a mount of `/b` cannot nest below itself.
    pub fn own_dir(&self) -> Result<PathBuf, CgroupError> {
        let rel = self
            .own
            .strip_prefix(&self.root)
            .map_err(|_| CgroupError::NotVisible {
                cgroup: self.own.clone(),
                mount_point: self.mount_point.clone(),
                root: self.root.clone(),
            })?;
        Ok(self.mount_point.join(rel))
    }

    /// An absolute cgroup path. When the mount shows a sub-tree (a container without a cgroup
    /// namespace sees `/docker/<id>` at /sys/fs/cgroup/<ctrl>) a path spelled from the real
    /// root is mapped through it; any other path is taken as seen from the mount, as runc
    /// does, so that a nested manager treating the mount as its root keeps working.
    pub fn dir_of_absolute(&self, path: &Path) -> PathBuf {
        let rel = match path.strip_prefix(&self.root) {
            Ok(rel) if self.root != Path::new("/") => rel,
            _ => path.strip_prefix("/").unwrap_or(path),
        };
        self.mount_point.join(rel)
    }
}

/// Among mounts of the same hierarchy prefer one whose root contains our own cgroup.
fn pick_mount<'a>(candidates: &[&'a CgroupMount], own: &Path) -> Option<&'a CgroupMount> {
    candidates
        .iter()
        .find(|m| own.starts_with(&m.root))
        .or_else(|| candidates.first())
        .copied()
}

/// Turns `cgroupsPath` (or, without one, the container id) into a [`Target`], refusing what
/// this build cannot or must not place: systemd `slice:prefix:name` paths, paths that climb
/// out of their base with `..`, and paths that name the base cgroup itself.
pub(super) fn target(cgroups_path: Option<&str>, id: &str) -> Result<Target, CgroupError> {
    let raw = match cgroups_path {
        Some(p) if !p.is_empty() => p,
        _ => {
            return normalise(id, false)
                .map(Target::Relative)
                .map_err(|reason| CgroupError::InvalidPath {
                    path: id.to_string(),
                    reason,
                });
        }
    };
    if !raw.starts_with('/') && raw.split(':').count() == 3 {
        return Err(CgroupError::Systemd(raw.to_string()));
    }
    let absolute = raw.starts_with('/');
    let path = normalise(raw, absolute).map_err(|reason| CgroupError::InvalidPath {
        path: raw.to_string(),
        reason,
    })?;
    Ok(if absolute {
        Target::Absolute(Path::new("/").join(path))
    } else {
        Target::Relative(path)
    })
}

/// Lexically resolves `.` and `..`; the result is relative to the base (the hierarchy root
/// for absolute paths, the caller's cgroup otherwise) and must stay strictly below it.
fn normalise(raw: &str, absolute: bool) -> Result<PathBuf, &'static str> {
    let mut parts: Vec<&std::ffi::OsStr> = Vec::new();
    for component in Path::new(raw).components() {
        match component {
            Component::Normal(part) => parts.push(part),
            Component::CurDir | Component::RootDir => {}
            Component::ParentDir => {
                if parts.pop().is_none() {
                    return Err(if absolute {
                        "it climbs above the root cgroup with '..'"
                    } else {
                        "it climbs out of rcrun's own cgroup with '..'"
                    });
                }
            }
            Component::Prefix(_) => return Err("it has a path prefix"),
        }
    }
    if parts.is_empty() {
        return Err(if absolute {
            "it names the root cgroup"
        } else {
            "it names rcrun's own cgroup, not one below it"
        });
    }
    Ok(parts.iter().collect())
}

fn read_proc(path: &str) -> Result<String, CgroupError> {
    crate::kernel_file::read(path).map_err(|source| CgroupError::Read {
        path: PathBuf::from(path),
        source,
    })
}

fn parse_error(file: &str, line: &str, reason: &'static str) -> CgroupError {
    CgroupError::Parse {
        path: PathBuf::from(file),
        line: line.to_string(),
        reason,
    }
}

/// The cgroup and cgroup2 entries of a mountinfo text (proc(5)):
/// `36 35 98:0 /root /mnt opts [optional...] - fstype source superopts`.
pub(super) fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, CgroupError> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let sep = fields
            .iter()
            .skip(6)
            .position(|f| *f == "-")
            .map(|p| p + 6)
            .ok_or_else(|| parse_error(MOUNTINFO, line, "no '-' separator"))?;
        let (Some(fstype), Some(root), Some(mount_point)) =
            (fields.get(sep + 1), fields.get(3), fields.get(4))
        else {
            return Err(parse_error(MOUNTINFO, line, "too few fields"));
        };
        let v2 = match *fstype {
            "cgroup" => false,
            "cgroup2" => true,
            _ => continue,
        };
        let super_options = fields
            .get(sep + 3)
            .map(|o| o.split(',').map(str::to_string).collect())
            .unwrap_or_default();
        out.push(CgroupMount {
            root: PathBuf::from(unescape(root)),
            mount_point: PathBuf::from(unescape(mount_point)),
            v2,
            super_options,
        });
    }
    Ok(out)
}

/// Undoes the kernel's octal escaping of space, tab, newline and backslash in mountinfo.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `hierarchy-id:controller-list:cgroup-path` lines (cgroups(7)).
pub(super) fn parse_proc_cgroup(text: &str) -> Result<Vec<Membership>, CgroupError> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let mut fields = line.splitn(3, ':');
            let (Some(_id), Some(controllers), Some(path)) =
                (fields.next(), fields.next(), fields.next())
            else {
                return Err(parse_error(
                    PROC_CGROUP,
                    line,
                    "expected id:controllers:path",
                ));
            };
            if !path.starts_with('/') {
                return Err(parse_error(
                    PROC_CGROUP,
                    line,
                    "cgroup path is not absolute",
                ));
            }
            Ok(Membership {
                controllers: controllers
                    .split(',')
                    .filter(|c| !c.is_empty())
                    .map(str::to_string)
                    .collect(),
                path: PathBuf::from(path),
            })
        })
        .collect()
}
