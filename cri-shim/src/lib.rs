//! rcri: a CRI v1 server (RuntimeService + ImageService) that runs pods through an OCI runtime
//! driven by the runc command-line contract. See shared/DESIGN.md, "cri-shim/".

pub mod cni;
pub mod config;
pub mod container;
pub mod events;
pub mod image;
pub mod kubelet;
pub mod monitor;
pub mod netns;
pub mod resources;
pub mod runtime_client;
pub mod sandbox;
pub mod seccomp_default;
pub mod server;
pub mod stats;
pub mod store;
pub mod streaming;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

/// What every CRI call works with: the daemon's configuration and its collaborators. Built once
/// by `rcri serve`, shared by the tonic services; the domain modules (`sandbox`, `container`)
/// take it by reference.
pub struct Context {
    pub config: config::Config,
    pub store: store::Store,
    pub runtime: runtime_client::RuntimeClient,
    pub cni: cni::Cni,
    pub images: image::ImageStore,
    /// Our own binary: the monitor and the pause process are subcommands of it.
    pub rcri_exe: PathBuf,
    /// The pod CIDR kubelet last gave in UpdateRuntimeConfig.
    pub pod_cidr: Mutex<String>,
    /// The streaming server's tokens: Exec/Attach/PortForward put sessions in, its URLs redeem them.
    pub streaming: Arc<streaming::server::Streaming>,
    /// Container lifecycle events for GetContainerEvents subscribers.
    pub events: events::EventHub,
    /// The previous CPU sample of each container and pod, for usage_nano_cores.
    pub cpu_samples: stats::CpuSampler,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Context {
    pub fn new(
        config: config::Config,
        store: store::Store,
        runtime: runtime_client::RuntimeClient,
        cni: cni::Cni,
        images: image::ImageStore,
        rcri_exe: PathBuf,
    ) -> Context {
        Context {
            config,
            store,
            runtime,
            cni,
            images,
            rcri_exe,
            pod_cidr: Mutex::new(String::new()),
            streaming: Arc::new(streaming::server::Streaming::new()),
            events: events::EventHub::new(),
            cpu_samples: stats::CpuSampler::default(),
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Serialises the operations on one sandbox or container (stop vs remove vs start of the
    /// same id), while calls on different objects run in parallel.
    pub async fn lock(&self, id: &str) -> tokio::sync::OwnedMutexGuard<()> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
            locks.entry(id.to_string()).or_default().clone()
        };
        lock.lock_owned().await
    }

    /// Forgets the lock of an object that was removed.
    pub fn forget_lock(&self, id: &str) {
        let mut locks = self.locks.lock().unwrap_or_else(|p| p.into_inner());
        locks.remove(id);
    }
}

/// A new 64-hex-digit id, like containerd's and CRI-O's: long enough that prefixes are unique.
pub fn new_id() -> std::io::Result<String> {
    use std::io::Read;
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")?.read_exact(&mut bytes)?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// An error with its chain of causes, `outer: inner: root`, for logs and gRPC messages.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}
