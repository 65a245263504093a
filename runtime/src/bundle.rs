//! The OCI bundle: config.json parsed with oci-spec and validated up front, so that a bad
//! config fails before anything is created on the host.
use crate::cgroups::{self, CgroupError};
use oci_spec::runtime::{LinuxNamespaceType, Spec};
use std::collections::HashSet;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("failed to resolve bundle directory {path}")]
    BundleDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to open {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid {path}: field {field}")]
    Parse {
        path: PathBuf,
        /// Where in the document the error is, e.g. `process.user.uid` (runc names it too).
        field: String,
        #[source]
        source: serde_json::Error,
    },
    #[error("invalid config.json: {0}")]
    Invalid(String),
    #[error("rootfs {path} is not a directory")]
    Rootfs {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("not implemented yet: {0}")]
    NotImplemented(String),
    #[error(transparent)]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
}

/// A loaded and validated bundle.
#[derive(Debug)]
pub struct Bundle {
    /// Absolute bundle directory.
    pub dir: PathBuf,
    /// Absolute rootfs directory.
    pub rootfs: PathBuf,
    pub spec: Spec,
}

impl Bundle {
    /// Loads `<dir>/config.json` and checks everything that can be checked without side effects.
    pub fn load(dir: &Path) -> Result<Self, BundleError> {
        let dir = std::fs::canonicalize(dir).map_err(|source| BundleError::BundleDir {
            path: dir.to_path_buf(),
            source,
        })?;
        let path = dir.join("config.json");
        let data = std::fs::read(&path).map_err(|source| BundleError::Open {
            path: path.clone(),
            source,
        })?;
        let spec: Spec = serde_json::from_slice(&data).map_err(|source| BundleError::Parse {
            path,
            field: crate::json_path::at(&data, &source),
            source,
        })?;
        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| BundleError::Invalid("root is missing".into()))?;
        let rootfs = dir.join(root.path());
        let meta = std::fs::metadata(&rootfs).map_err(|source| BundleError::Rootfs {
            path: rootfs.clone(),
            source,
        })?;
        if !meta.is_dir() {
            return Err(BundleError::Rootfs {
                path: rootfs,
                source: std::io::Error::from_raw_os_error(libc::ENOTDIR),
            });
        }
        let rootfs = std::fs::canonicalize(&rootfs).map_err(|source| BundleError::Rootfs {
            path: rootfs.clone(),
            source,
        })?;
        validate(&spec)?;
        Ok(Bundle { dir, rootfs, spec })
    }
}

fn invalid(msg: impl Into<String>) -> BundleError {
    BundleError::Invalid(msg.into())
}

/// Checks the parts of the spec that the runtime acts on. Parts this build cannot honour fail
/// with "not implemented yet" rather than being silently ignored.
pub fn validate(spec: &Spec) -> Result<(), BundleError> {
    let version = spec.version();
    if !version.starts_with("1.") {
        return Err(invalid(format!(
            "unsupported ociVersion {version:?}: rcrun implements runtime-spec 1.x"
        )));
    }
    let process = spec
        .process()
        .as_ref()
        .ok_or_else(|| invalid("process is missing"))?;
    match process.args() {
        Some(args) if !args.is_empty() && !args[0].is_empty() => {}
        _ => return Err(invalid("process.args must name the program to run")),
    }
    if !process.cwd().is_absolute() {
        return Err(invalid(format!(
            "process.cwd {:?} must be an absolute path",
            process.cwd()
        )));
    }
    if let Some(env) = process.env() {
        if let Some(bad) = env.iter().find(|e| !e.contains('=')) {
            return Err(invalid(format!(
                "process.env entry {bad:?} is not KEY=VALUE"
            )));
        }
    }
    if process
        .apparmor_profile()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(BundleError::NotImplemented(
            "process.apparmorProfile (AppArmor is not enabled on this host)".into(),
        ));
    }
    if process
        .selinux_label()
        .as_deref()
        .is_some_and(|p| !p.is_empty())
    {
        return Err(BundleError::NotImplemented("process.selinuxLabel".into()));
    }
    if process.io_priority().is_some() {
        return Err(BundleError::NotImplemented("process.ioPriority".into()));
    }
    if process.scheduler().is_some() {
        return Err(BundleError::NotImplemented("process.scheduler".into()));
    }
    if process.exec_cpu_affinity().is_some() {
        return Err(BundleError::NotImplemented(
            "process.execCPUAffinity".into(),
        ));
    }
    if let Some(rlimits) = process.rlimits() {
        let mut seen = HashSet::new();
        for r in rlimits {
            if !seen.insert(r.typ().to_string()) {
                return Err(invalid(format!("rlimit {} is given twice", r.typ())));
            }
            if r.soft() > r.hard() {
                return Err(invalid(format!(
                    "rlimit {}: soft limit {} is above hard limit {}",
                    r.typ(),
                    r.soft(),
                    r.hard()
                )));
            }
        }
    }
    crate::hooks::HookSet::from_spec(spec.hooks().as_ref())?;
    for m in spec.mounts().iter().flatten() {
        if m.destination().as_os_str().is_empty() {
            return Err(invalid("a mount has an empty destination"));
        }
    }
    let Some(linux) = spec.linux() else {
        for m in spec.mounts().iter().flatten() {
            crate::rootfs::idmap::check_spec(m, false).map_err(invalid)?;
        }
        return Ok(());
    };
    let mut types = HashSet::new();
    for ns in linux.namespaces().iter().flatten() {
        if !types.insert(ns.typ()) {
            return Err(invalid(format!("namespace {:?} is given twice", ns.typ())));
        }
        if let Some(p) = ns.path() {
            if !p.is_absolute() {
                return Err(invalid(format!(
                    "namespace path {} must be absolute",
                    p.display()
                )));
            }
        }
    }
    let has_new = |t: LinuxNamespaceType| types.contains(&t);
    let maps = linux.uid_mappings().as_ref().is_some_and(|m| !m.is_empty())
        || linux.gid_mappings().as_ref().is_some_and(|m| !m.is_empty());
    let new_userns = linux
        .namespaces()
        .iter()
        .flatten()
        .any(|n| n.typ() == LinuxNamespaceType::User && n.path().is_none());
    for m in spec.mounts().iter().flatten() {
        crate::rootfs::idmap::check_spec(m, has_new(LinuxNamespaceType::User)).map_err(invalid)?;
    }
    if maps && !has_new(LinuxNamespaceType::User) {
        return Err(invalid("uid/gid mappings require a user namespace"));
    }
    if new_userns && !maps {
        return Err(invalid(
            "a new user namespace needs uidMappings and gidMappings",
        ));
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "cannot set hostname without a private UTS namespace",
        ));
    }
    if spec.domainname().as_deref().is_some_and(|h| !h.is_empty())
        && !has_new(LinuxNamespaceType::Uts)
    {
        return Err(invalid(
            "cannot set domainname without a private UTS namespace",
        ));
    }
    if let Some(offsets) = linux.time_offsets() {
        let new_time = linux
            .namespaces()
            .iter()
            .flatten()
            .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
        if !offsets.is_empty() && !new_time {
            return Err(invalid("linux.timeOffsets need a new time namespace"));
        }
        if let Some(clock) = offsets
            .keys()
            .find(|k| !matches!(k.as_str(), "monotonic" | "boottime"))
        {
            return Err(invalid(format!(
                "linux.timeOffsets: unknown clock {clock:?} (monotonic or boottime)"
            )));
        }
    }
    // linux.seccomp is checked by compiling it (seccomp::SeccompPlan::from_spec), which
    // container::init_config does before anything is created.
    if linux.intel_rdt().is_some() {
        return Err(BundleError::NotImplemented("linux.intelRdt".into()));
    }
    if linux.personality().is_some() {
        return Err(BundleError::NotImplemented("linux.personality".into()));
    }
    if linux.memory_policy().is_some() {
        return Err(BundleError::NotImplemented("linux.memoryPolicy".into()));
    }
    if linux.net_devices().as_ref().is_some_and(|d| !d.is_empty()) {
        return Err(BundleError::NotImplemented("linux.netDevices".into()));
    }
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(BundleError::NotImplemented(
            "linux.mountLabel (SELinux)".into(),
        ));
    }
    if let Some(propagation) = linux.rootfs_propagation() {
        if !propagation.is_empty() && crate::rootfs::parse_propagation(propagation).is_none() {
            return Err(invalid(format!(
                "unknown rootfsPropagation {propagation:?}"
            )));
        }
    }
    for key in linux.sysctl().iter().flat_map(|s| s.keys()) {
        crate::sysctl::check_namespaced(key, &types)
            .map_err(|e| invalid(format!("sysctl {key:?}: {e}")))?;
    }
    cgroups::check_supported(linux.resources().as_ref())?;
    Ok(())
}
