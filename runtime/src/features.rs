//! `rcrun features`: what this build and this kernel really support, in the runtime-spec's
//! features.md format. Each list is derived from the code that implements it.
use serde_json::{json, Value};

/// The newest runtime-spec version this runtime implements (`ociVersionMax`, and the `spec:`
/// line of `rcrun --version`).
pub const SPEC_VERSION: &str = "1.2.1";

pub fn features() -> Value {
    let mut caps: Vec<String> = caps::runtime::thread_all_supported()
        .iter()
        .map(|c| c.to_string())
        .collect();
    caps.sort();
    json!({
        "ociVersionMin": "1.0.0",
        "ociVersionMax": SPEC_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer", "poststart", "poststop"],
        "mountOptions": crate::rootfs::MountEntry::supported_options(),
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "user", "uts", "time"],
            "capabilities": caps,
            "cgroup": {
                "v1": true,
                "v2": true,
                "systemd": false,
                "systemdUser": false,
                "rdma": false,
            },
            "seccomp": seccomp(),
            "apparmor": {"enabled": false},
            "selinux": {"enabled": false},
            "intelRdt": {"enabled": false},
            "mountExtensions": {"idmap": {"enabled": crate::rootfs::idmap::supported()}},
        },
        "annotations": {
            "org.rcrun.version": env!("CARGO_PKG_VERSION"),
        },
    })
}

fn seccomp() -> Value {
    crate::seccomp::features()
}
