//! Port-forward: a connection to a port on the pod's loopback, made inside the pod's network
//! namespace. A socket belongs to the namespace it was created in, so the connect happens on a
//! short-lived thread that joined the namespace (`netns::run_in`); the connected socket then
//! works from any thread. No tokio worker ever changes namespace. Host-network pods are simply
//! connected to from here.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::streaming::{ConnectFuture, PortConnector};

/// Loopback connects answer at once; this only bounds a wedged namespace.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A connector for the pod `sandbox_id` whose network namespace is pinned at `netns` (None
/// for a host-network pod).
pub fn connector(sandbox_id: String, netns: Option<PathBuf>) -> PortConnector {
    Arc::new(move |port: u16| -> ConnectFuture {
        let netns = netns.clone();
        let sandbox_id = sandbox_id.clone();
        Box::pin(async move {
            let connected = tokio::task::spawn_blocking(move || match &netns {
                Some(path) => {
                    crate::netns::run_in(path, move || connect_loopback(port)).map_err(|e| {
                        std::io::Error::other(format!(
                            "failed to enter the network namespace of pod {sandbox_id}: {}",
                            crate::error_chain(&e)
                        ))
                    })?
                }
                None => connect_loopback(port),
            })
            .await
            .map_err(|e| std::io::Error::other(format!("connect thread failed: {e}")))??;
            connected.set_nonblocking(true)?;
            tokio::net::TcpStream::from_std(connected)
        })
    })
}

/// 127.0.0.1 first, then ::1 (a server may listen on either, as containerd tries both).
fn connect_loopback(port: u16) -> std::io::Result<TcpStream> {
    let v4 = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let v6 = SocketAddr::from((Ipv6Addr::LOCALHOST, port));
    match TcpStream::connect_timeout(&v4, CONNECT_TIMEOUT) {
        Ok(s) => Ok(s),
        Err(e4) => TcpStream::connect_timeout(&v6, CONNECT_TIMEOUT).map_err(|_| {
            std::io::Error::new(
                e4.kind(),
                format!("failed to connect to localhost:{port} inside the pod: {e4}"),
            )
        }),
    }
}
