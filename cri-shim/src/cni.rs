//! CNI plugins per the CNI spec (owned by the CNI/netns/image helper).
use std::net::IpAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum CniError {
    #[error("not implemented yet: {0}")]
    NotImplemented(&'static str),
}

/// A port the pod asks the host to forward (CRI PortMapping → portmap plugin).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortMapping {
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: String,
    pub host_ip: String,
}

/// What the pod's network attachment gave it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct NetworkStatus {
    pub ips: Vec<IpAddr>,
}

#[derive(Debug, Clone)]
pub struct Cni {
    pub conf_dir: PathBuf,
    pub bin_dirs: Vec<PathBuf>,
}

impl Cni {
    /// Errors unless a usable network config and its plugins exist (for Status NetworkReady).
    pub fn check(&self) -> Result<(), CniError> {
        Err(CniError::NotImplemented("cni::check"))
    }
    /// CNI ADD of the default network for a pod sandbox.
    pub fn add(
        &self,
        _sandbox_id: &str,
        _netns: &Path,
        _pod_name: &str,
        _pod_namespace: &str,
        _ports: &[PortMapping],
    ) -> Result<NetworkStatus, CniError> {
        Err(CniError::NotImplemented("cni::add"))
    }
    /// CNI DEL; idempotent.
    pub fn del(
        &self,
        _sandbox_id: &str,
        _netns: &Path,
        _pod_name: &str,
        _pod_namespace: &str,
        _ports: &[PortMapping],
    ) -> Result<(), CniError> {
        Err(CniError::NotImplemented("cni::del"))
    }
}
