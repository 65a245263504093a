//! Interface counters of a pod's network namespace, read from `/proc/thread-self/net/dev` by a
//! short-lived thread that joins the namespace with setns(2): a namespace is a property of the
//! thread, so no tokio worker (or blocking-pool thread, which is reused) may ever enter one.

use std::fs::File;
use std::path::{Path, PathBuf};

use nix::sched::CloneFlags;

#[derive(Debug, thiserror::Error)]
pub enum NetdevError {
    #[error("failed to open the network namespace {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to enter the network namespace {path}")]
    Setns {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("failed to read the interface counters in {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to start a thread to read {path}")]
    Thread {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread reading {0} panicked")]
    Panicked(PathBuf),
}

#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Interface {
    pub name: String,
    pub rx_bytes: u64,
    pub rx_packets: u64,
    pub rx_errors: u64,
    pub rx_dropped: u64,
    pub tx_bytes: u64,
    pub tx_packets: u64,
    pub tx_errors: u64,
    pub tx_dropped: u64,
}

/// The interfaces of the network namespace pinned at `netns` (loopback left out, as kubelet
/// and cadvisor leave it out).
pub fn read(netns: &Path) -> Result<Vec<Interface>, NetdevError> {
    let file = File::open(netns).map_err(|source| NetdevError::Open {
        path: netns.to_path_buf(),
        source,
    })?;
    let path = netns.to_path_buf();
    let thread = std::thread::Builder::new()
        .name("rcri-netdev".into())
        .spawn(move || {
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|source| {
                NetdevError::Setns {
                    path: path.clone(),
                    source,
                }
            })?;
            // /proc/self/net would show the namespace of the process's main thread.
            std::fs::read_to_string("/proc/thread-self/net/dev")
                .map_err(|source| NetdevError::Read { path, source })
        })
        .map_err(|source| NetdevError::Thread {
            path: netns.to_path_buf(),
            source,
        })?;
    let text = thread
        .join()
        .map_err(|_| NetdevError::Panicked(netns.to_path_buf()))??;
    Ok(parse(&text)
        .into_iter()
        .filter(|i| i.name != "lo")
        .collect())
}

/// `/proc/net/dev`: two header lines, then `name: rx bytes packets errs drop fifo frame
/// compressed multicast tx bytes packets errs drop fifo colls carrier compressed`.
pub fn parse(text: &str) -> Vec<Interface> {
    text.lines()
        .skip(2)
        .filter_map(|line| {
            let (name, counters) = line.split_once(':')?;
            let n: Vec<u64> = counters
                .split_whitespace()
                .map(|v| v.parse().unwrap_or(0))
                .collect();
            if n.len() < 16 {
                return None;
            }
            Some(Interface {
                name: name.trim().to_string(),
                rx_bytes: n[0],
                rx_packets: n[1],
                rx_errors: n[2],
                rx_dropped: n[3],
                tx_bytes: n[8],
                tx_packets: n[9],
                tx_errors: n[10],
                tx_dropped: n[11],
            })
        })
        .collect()
}
