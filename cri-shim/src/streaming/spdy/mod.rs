//! SPDY/3.1, the protocol kubelet, kubectl and crictl speak by default for exec, attach and
//! port-forward: framing (`frame`), header compression (`zlib`), one connection's streams and
//! flow control (`session`), and on top the two Kubernetes uses of it — remotecommand
//! (`remotecommand`) and port forwarding (`portforward`) — plus a client (`client`) for rcrictl
//! and the tests.

pub mod client;
pub mod frame;
mod portforward;
mod remotecommand;
pub mod session;
pub mod zlib;

pub use portforward::serve_portforward;
pub use remotecommand::serve_remotecommand;

/// The `Upgrade` token of the HTTP/1.1 request that starts a SPDY connection.
pub const UPGRADE_TOKEN: &str = "SPDY/3.1";
/// The header naming each stream's role (remotecommand and port-forward).
pub const STREAM_TYPE_HEADER: &str = "streamtype";
pub const PORT_HEADER: &str = "port";
pub const REQUEST_ID_HEADER: &str = "requestid";

#[cfg(test)]
mod tests;
