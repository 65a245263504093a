//! `rcrun spec`: the default config.json, the same one runc writes.
//!
//! The document is built from small private structs rather than `oci_spec::runtime::Spec` so
//! that the output is byte-for-byte what `runc spec` (1.1) prints — same key order, tab
//! indentation, no trailing newline — except for `ociVersion` and `hostname`. oci-spec keeps
//! capabilities in hash sets, which would make the output order change from run to run.
use nix::unistd::{getegid, geteuid};
use serde::Serialize;
use std::fs::OpenOptions;
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};

/// The spec version written into `ociVersion`: everything in the default config is 1.0.2.
pub const OCI_VERSION: &str = "1.0.2";

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("failed to access bundle directory {path}")]
    Bundle {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("bundle {path} is not a directory")]
    NotADirectory { path: PathBuf },
    #[error("config.json already exists in {}", bundle.display())]
    AlreadyExists { bundle: PathBuf },
    #[error("failed to write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to serialize the default spec")]
    Serialize(#[source] serde_json::Error),
}

/// Writes `<bundle>/config.json`; refuses to overwrite an existing one.
pub fn write_default(bundle: &Path, rootless: bool) -> Result<(), SpecError> {
    let meta = std::fs::metadata(bundle).map_err(|source| SpecError::Bundle {
        path: bundle.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SpecError::NotADirectory {
            path: bundle.to_path_buf(),
        });
    }
    let text = default_config(rootless)?;
    let path = bundle.join("config.json");
    // O_EXCL makes "refuse to overwrite" atomic and also refuses a (dangling) symlink planted
    // at config.json, which a check-then-create would follow.
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|source| match source.kind() {
            ErrorKind::AlreadyExists => SpecError::AlreadyExists {
                bundle: bundle.to_path_buf(),
            },
            _ => SpecError::Write {
                path: path.clone(),
                source,
            },
        })?;
    if let Err(source) = file.write_all(text.as_bytes()) {
        // A half-written config.json would make the next `spec` refuse and `create` fail
        // with a parse error; better leave nothing.
        let _ = std::fs::remove_file(&path);
        return Err(SpecError::Write { path, source });
    }
    Ok(())
}

/// The default config.json text; `rootless` maps the caller's effective uid/gid to root in
/// a new user namespace, as `runc spec --rootless` does.
pub fn default_config(rootless: bool) -> Result<String, SpecError> {
    let spec = if rootless {
        Spec::rootless(geteuid().as_raw(), getegid().as_raw())
    } else {
        Spec::default_root()
    };
    let mut out = Vec::new();
    let formatter = serde_json::ser::PrettyFormatter::with_indent(b"\t");
    let mut ser = serde_json::Serializer::with_formatter(&mut out, formatter);
    spec.serialize(&mut ser).map_err(SpecError::Serialize)?;
    String::from_utf8(out).map_err(|e| SpecError::Serialize(serde::ser::Error::custom(e)))
}

const CAPS: [&str; 3] = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"];
const NOSUID_NOEXEC_NODEV: [&str; 3] = ["nosuid", "noexec", "nodev"];
const MASKED_PATHS: [&str; 10] = [
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
];
const READONLY_PATHS: [&str; 5] = [
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Spec {
    oci_version: &'static str,
    process: Process,
    root: Root,
    hostname: &'static str,
    mounts: Vec<Mount>,
    linux: Linux,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Process {
    terminal: bool,
    user: User,
    args: Vec<&'static str>,
    env: Vec<&'static str>,
    cwd: &'static str,
    capabilities: Capabilities,
    rlimits: Vec<Rlimit>,
    no_new_privileges: bool,
}

#[derive(Serialize)]
struct User {
    uid: u32,
    gid: u32,
}

#[derive(Serialize)]
struct Capabilities {
    bounding: Vec<&'static str>,
    effective: Vec<&'static str>,
    permitted: Vec<&'static str>,
    ambient: Vec<&'static str>,
}

#[derive(Serialize)]
struct Rlimit {
    #[serde(rename = "type")]
    typ: &'static str,
    hard: u64,
    soft: u64,
}

#[derive(Serialize)]
struct Root {
    path: &'static str,
    readonly: bool,
}

#[derive(Serialize)]
struct Mount {
    destination: &'static str,
    #[serde(rename = "type")]
    typ: &'static str,
    source: &'static str,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    options: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Linux {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    uid_mappings: Vec<IdMapping>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    gid_mappings: Vec<IdMapping>,
    #[serde(skip_serializing_if = "Option::is_none")]
    resources: Option<Resources>,
    namespaces: Vec<Namespace>,
    masked_paths: Vec<&'static str>,
    readonly_paths: Vec<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct IdMapping {
    #[serde(rename = "containerID")]
    container_id: u32,
    #[serde(rename = "hostID")]
    host_id: u32,
    size: u32,
}

#[derive(Serialize)]
struct Resources {
    devices: Vec<DeviceRule>,
}

#[derive(Serialize)]
struct DeviceRule {
    allow: bool,
    access: &'static str,
}

#[derive(Serialize)]
struct Namespace {
    #[serde(rename = "type")]
    typ: &'static str,
}

fn mount(
    destination: &'static str,
    typ: &'static str,
    source: &'static str,
    options: &[&'static str],
) -> Mount {
    Mount {
        destination,
        typ,
        source,
        options: options.to_vec(),
    }
}

fn namespaces(types: &[&'static str]) -> Vec<Namespace> {
    types.iter().map(|&typ| Namespace { typ }).collect()
}

impl Spec {
    fn default_root() -> Self {
        Spec {
            oci_version: OCI_VERSION,
            process: Process {
                terminal: true,
                user: User { uid: 0, gid: 0 },
                args: vec!["sh"],
                env: vec![
                    "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm",
                ],
                cwd: "/",
                capabilities: Capabilities {
                    bounding: CAPS.to_vec(),
                    effective: CAPS.to_vec(),
                    permitted: CAPS.to_vec(),
                    ambient: CAPS.to_vec(),
                },
                rlimits: vec![Rlimit {
                    typ: "RLIMIT_NOFILE",
                    hard: 1024,
                    soft: 1024,
                }],
                no_new_privileges: true,
            },
            root: Root {
                path: "rootfs",
                readonly: true,
            },
            hostname: "rcrun",
            mounts: vec![
                mount("/proc", "proc", "proc", &[]),
                mount(
                    "/dev",
                    "tmpfs",
                    "tmpfs",
                    &["nosuid", "strictatime", "mode=755", "size=65536k"],
                ),
                mount(
                    "/dev/pts",
                    "devpts",
                    "devpts",
                    &[
                        "nosuid",
                        "noexec",
                        "newinstance",
                        "ptmxmode=0666",
                        "mode=0620",
                        "gid=5",
                    ],
                ),
                mount(
                    "/dev/shm",
                    "tmpfs",
                    "shm",
                    &["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"],
                ),
                mount("/dev/mqueue", "mqueue", "mqueue", &NOSUID_NOEXEC_NODEV),
                mount(
                    "/sys",
                    "sysfs",
                    "sysfs",
                    &["nosuid", "noexec", "nodev", "ro"],
                ),
                mount(
                    "/sys/fs/cgroup",
                    "cgroup",
                    "cgroup",
                    &["nosuid", "noexec", "nodev", "relatime", "ro"],
                ),
            ],
            linux: Linux {
                uid_mappings: Vec::new(),
                gid_mappings: Vec::new(),
                resources: Some(Resources {
                    devices: vec![DeviceRule {
                        allow: false,
                        access: "rwm",
                    }],
                }),
                namespaces: namespaces(&["pid", "network", "ipc", "uts", "mount"]),
                masked_paths: MASKED_PATHS.to_vec(),
                readonly_paths: READONLY_PATHS.to_vec(),
            },
        }
    }

    /// runc's rootless variant of the default.
    fn rootless(uid: u32, gid: u32) -> Self {
        let mut spec = Spec::default_root();
        spec.linux.uid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: uid,
            size: 1,
        }];
        spec.linux.gid_mappings = vec![IdMapping {
            container_id: 0,
            host_id: gid,
            size: 1,
        }];
        // Without privileges on the host there is no network to configure, and creating a
        // user namespace is what makes the other namespaces possible at all.
        spec.linux.namespaces = namespaces(&["pid", "ipc", "uts", "mount", "user"]);
        // An unprivileged user cannot write cgroup device rules.
        spec.linux.resources = None;
        for m in &mut spec.mounts {
            match m.destination {
                // Only host gid 'gid' is mapped: gid=5 (tty) would not exist in the namespace.
                "/dev/pts" => m.options.retain(|o| *o != "gid=5"),
                // A fresh sysfs needs CAP_SYS_ADMIN in the network namespace's owning user
                // namespace, which the host's network namespace is not; bind the host's /sys.
                "/sys" => {
                    *m = mount(
                        "/sys",
                        "none",
                        "/sys",
                        &["rbind", "nosuid", "noexec", "nodev", "ro"],
                    )
                }
                _ => {}
            }
        }
        spec
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::{LinuxNamespaceType, Spec as OciSpec};

    fn temp_bundle(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("rcrun-spec-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp bundle");
        dir
    }

    fn parse(text: &str) -> OciSpec {
        serde_json::from_str(text).expect("config.json deserializes into oci_spec Spec")
    }

    #[test]
    fn default_is_a_valid_spec_with_runc_contents() {
        let text = default_config(false).expect("default spec");
        let spec = parse(&text);
        assert_eq!(spec.version(), OCI_VERSION);
        assert_eq!(spec.hostname().as_deref(), Some("rcrun"));
        let process = spec.process().as_ref().expect("process");
        assert_eq!(process.terminal(), Some(true));
        assert_eq!(process.args().as_deref(), Some(&["sh".to_string()][..]));
        assert_eq!(process.no_new_privileges(), Some(true));
        let root = spec.root().as_ref().expect("root");
        assert_eq!(root.path(), Path::new("rootfs"));
        assert_eq!(root.readonly(), Some(true));
        let linux = spec.linux().as_ref().expect("linux");
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(types.contains(&LinuxNamespaceType::Network));
        assert!(!types.contains(&LinuxNamespaceType::User));
        let devices = linux
            .resources()
            .as_ref()
            .and_then(|r| r.devices().clone())
            .expect("device rules");
        assert_eq!(devices.len(), 1);
        assert!(!devices[0].allow());
        assert_eq!(devices[0].access().as_deref(), Some("rwm"));
        assert_eq!(linux.masked_paths().as_ref().map(Vec::len), Some(10));
        assert_eq!(linux.readonly_paths().as_ref().map(Vec::len), Some(5));
        assert_eq!(spec.mounts().as_ref().map(Vec::len), Some(7));
    }

    #[test]
    fn default_text_matches_runc_layout() {
        let text = default_config(false).expect("default spec");
        assert!(text.starts_with("{\n\t\"ociVersion\": \"1.0.2\",\n\t\"process\": {\n"));
        assert!(text.contains("\n\t\t\t\"ambient\": [\n\t\t\t\t\"CAP_AUDIT_WRITE\",\n"));
        assert!(text.contains("\"gid=5\""));
        assert!(text.ends_with("\t\t]\n\t}\n}"));
    }

    #[test]
    fn rootless_maps_the_caller_and_drops_network() {
        let text = default_config(true).expect("rootless spec");
        let spec = parse(&text);
        let linux = spec.linux().as_ref().expect("linux");
        let uid_map = linux.uid_mappings().as_ref().expect("uid mappings");
        assert_eq!(uid_map.len(), 1);
        assert_eq!(uid_map[0].container_id(), 0);
        assert_eq!(uid_map[0].host_id(), geteuid().as_raw());
        assert_eq!(uid_map[0].size(), 1);
        let gid_map = linux.gid_mappings().as_ref().expect("gid mappings");
        assert_eq!(gid_map[0].host_id(), getegid().as_raw());
        let types: Vec<_> = linux
            .namespaces()
            .as_ref()
            .expect("namespaces")
            .iter()
            .map(|n| n.typ())
            .collect();
        assert!(types.contains(&LinuxNamespaceType::User));
        assert!(!types.contains(&LinuxNamespaceType::Network));
        assert!(linux.resources().is_none());
        let mounts = spec.mounts().as_ref().expect("mounts");
        let sys = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/sys"))
            .expect("/sys mount");
        assert_eq!(sys.typ().as_deref(), Some("none"));
        assert_eq!(sys.source().as_deref(), Some(Path::new("/sys")));
        assert!(sys
            .options()
            .as_ref()
            .is_some_and(|o| o.contains(&"rbind".to_string())));
        let pts = mounts
            .iter()
            .find(|m| m.destination() == Path::new("/dev/pts"))
            .expect("/dev/pts mount");
        assert!(pts
            .options()
            .as_ref()
            .is_some_and(|o| !o.contains(&"gid=5".to_string())));
    }

    #[test]
    fn writes_once_and_refuses_to_overwrite() {
        let bundle = temp_bundle("write");
        write_default(&bundle, false).expect("first write");
        let written = std::fs::read_to_string(bundle.join("config.json")).expect("read back");
        parse(&written);
        let err = write_default(&bundle, false).expect_err("second write must fail");
        assert!(matches!(err, SpecError::AlreadyExists { .. }));
        assert_eq!(
            err.to_string(),
            format!("config.json already exists in {}", bundle.display())
        );
        assert_eq!(
            std::fs::read_to_string(bundle.join("config.json")).ok(),
            Some(written)
        );
        let _ = std::fs::remove_dir_all(&bundle);
    }

    #[test]
    fn missing_bundle_is_a_clear_error() {
        let bundle = temp_bundle("missing").join("nope");
        let err = write_default(&bundle, false).expect_err("must fail");
        assert!(matches!(err, SpecError::Bundle { .. }));
        assert!(err.to_string().contains(&bundle.display().to_string()));
        let file = temp_bundle("file").join("plain");
        std::fs::write(&file, "").expect("plain file");
        assert!(matches!(
            write_default(&file, false),
            Err(SpecError::NotADirectory { .. })
        ));
        for dir in [bundle.parent(), file.parent()].into_iter().flatten() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
