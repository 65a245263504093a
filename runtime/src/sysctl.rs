//! `linux.sysctl`: written under /proc/sys inside the container, and only for namespaced
//! keys whose namespace the container owns (runc's rule), so a container cannot change the host.
use oci_spec::runtime::LinuxNamespaceType;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum SysctlError {
    #[error("failed to set sysctl {key}={value} ({path})")]
    Write {
        key: String,
        value: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

const IPC_KEYS: &[&str] = &[
    "kernel.msgmax",
    "kernel.msgmnb",
    "kernel.msgmni",
    "kernel.sem",
    "kernel.shmall",
    "kernel.shmmax",
    "kernel.shmmni",
    "kernel.shm_rmid_forced",
];

/// Which namespace a sysctl belongs to, or an error if it is not namespaced at all.
pub fn check_namespaced(key: &str, namespaces: &HashSet<LinuxNamespaceType>) -> Result<(), String> {
    let (needs, what) = if IPC_KEYS.contains(&key) || key.starts_with("fs.mqueue.") {
        (LinuxNamespaceType::Ipc, "an IPC namespace")
    } else if key.starts_with("net.") {
        (LinuxNamespaceType::Network, "a network namespace")
    } else if key == "kernel.hostname" || key == "kernel.domainname" {
        (LinuxNamespaceType::Uts, "a UTS namespace")
    } else {
        return Err("not a namespaced sysctl: it would change the host".into());
    };
    if namespaces.contains(&needs) {
        Ok(())
    } else {
        Err(format!("requires the container to have {what}"))
    }
}

fn proc_path(key: &str) -> PathBuf {
    PathBuf::from("/proc/sys").join(key.replace('.', "/"))
}

/// Runs inside the container after its /proc is mounted.
pub fn apply(sysctl: &HashMap<String, String>) -> Result<(), SysctlError> {
    for (key, value) in sysctl {
        let path = proc_path(key);
        std::fs::write(&path, value).map_err(|source| SysctlError::Write {
            key: key.clone(),
            value: value.clone(),
            path,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_keys_of_owned_namespaces_pass() {
        let net: HashSet<_> = [LinuxNamespaceType::Network].into();
        assert!(check_namespaced("net.ipv4.ip_forward", &net).is_ok());
        assert!(check_namespaced("kernel.shmmax", &net).is_err());
        assert!(check_namespaced("vm.swappiness", &net).is_err());
        assert_eq!(
            proc_path("net.ipv4.ip_forward"),
            PathBuf::from("/proc/sys/net/ipv4/ip_forward")
        );
    }
}
