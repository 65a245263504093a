//! The streaming server whose URLs the CRI `Exec`, `Attach` and `PortForward` calls return.
//!
//! The shape, one arrow direction: `server` (HTTP, single-use tokens, protocol negotiation) hands
//! an upgraded connection to a protocol layer — `spdy` (SPDY/3.1, what kubelet and crictl speak by
//! default) or `ws` (WebSocket) — which turns the wire's channels into the protocol-neutral types
//! below and calls a backend (`backend`: exec through the OCI runtime, attach to the container's
//! monitor, connect into the pod's network namespace). Backends never see the wire protocol; the
//! protocol layers never see a container.

pub mod backend;
pub mod server;
pub mod spdy;
pub mod ws;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// A terminal size as the resize channel carries it: `{"Width":80,"Height":24}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct TermSize {
    #[serde(rename = "Width")]
    pub width: u16,
    #[serde(rename = "Height")]
    pub height: u16,
}

/// The remotecommand subprotocols (k8s.io/apimachinery/pkg/util/remotecommand), newest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Protocol {
    /// `channel.k8s.io`: stdin/stdout/stderr/error streams; the error stream carries plain text.
    V1,
    /// `v2.channel.k8s.io`: as V1, stdin and stdout/stderr set up before the command starts.
    V2,
    /// `v3.channel.k8s.io`: adds the resize stream.
    V3,
    /// `v4.channel.k8s.io`: the error stream carries a JSON `Status` with the exit code.
    V4,
    /// `v5.channel.k8s.io` (WebSocket only): adds closing stdin with a CLOSE signal.
    V5,
}

impl Protocol {
    pub fn name(self) -> &'static str {
        match self {
            Protocol::V1 => "channel.k8s.io",
            Protocol::V2 => "v2.channel.k8s.io",
            Protocol::V3 => "v3.channel.k8s.io",
            Protocol::V4 => "v4.channel.k8s.io",
            Protocol::V5 => "v5.channel.k8s.io",
        }
    }

    pub fn from_name(name: &str) -> Option<Protocol> {
        [
            Protocol::V5,
            Protocol::V4,
            Protocol::V3,
            Protocol::V2,
            Protocol::V1,
        ]
        .into_iter()
        .find(|p| p.name() == name.trim())
    }

    /// Whether the resize channel exists.
    pub fn has_resize(self) -> bool {
        self >= Protocol::V3
    }
}

/// The subprotocol name for port forwarding (SPDY, and WebSocket's v1 form).
pub const PORT_FORWARD_PROTOCOL: &str = "portforward.k8s.io";

/// Which streams a session has: from the CRI request the token was issued for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StreamOptions {
    pub stdin: bool,
    pub stdout: bool,
    pub stderr: bool,
    pub tty: bool,
}

/// The container side of a remotecommand session, handed to a backend. Each is one end of an
/// in-memory pipe whose other end the protocol layer pumps to and from the wire. A stream the
/// session does not have is `None`; with a tty, stderr is always `None` (merged into stdout).
/// The protocol layer shuts its end of `stdin` when the client closes stdin; the backend drops
/// (or shuts down) `stdout`/`stderr` when the process is done writing.
pub struct CommandStreams {
    /// The backend reads what the client types.
    pub stdin: Option<tokio::io::DuplexStream>,
    /// The backend writes the process's output.
    pub stdout: Option<tokio::io::DuplexStream>,
    pub stderr: Option<tokio::io::DuplexStream>,
    /// Terminal resizes from the client (only with a tty and protocol ≥ v3).
    pub resize: Option<tokio::sync::mpsc::Receiver<TermSize>>,
}

/// How a remotecommand session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    /// The process exited with this code (0 is success). A signal death is 128 + signal.
    Exited(i32),
    /// The command could not run or the session failed; the text tells the user why.
    Failed(String),
}

pub type CommandFuture = Pin<Box<dyn Future<Output = CommandOutcome> + Send>>;
/// A backend for exec or attach: given the streams, runs to completion.
pub type CommandHandler = Box<dyn FnOnce(CommandStreams) -> CommandFuture + Send>;

pub type ConnectFuture =
    Pin<Box<dyn Future<Output = std::io::Result<tokio::net::TcpStream>> + Send>>;
/// A backend for port forwarding: opens a connection to a port inside the pod.
pub type PortConnector = Arc<dyn Fn(u16) -> ConnectFuture + Send + Sync>;

/// What the error stream carries when a session ends, for the given protocol: nothing on
/// success before v4; the error text for v1–v3; for v4/v5 the JSON `metav1.Status` that
/// kubelet's reference server writes (an exit code goes in `details.causes` as reason
/// `ExitCode`, which kubectl turns into its own exit status).
pub fn error_stream_payload(protocol: Protocol, outcome: &CommandOutcome) -> Option<Vec<u8>> {
    let failure_text =
        |code: i32| format!("command terminated with non-zero exit code: exit status {code}");
    if protocol < Protocol::V4 {
        return match outcome {
            CommandOutcome::Exited(0) => None,
            CommandOutcome::Exited(code) => Some(failure_text(*code).into_bytes()),
            CommandOutcome::Failed(msg) => Some(msg.clone().into_bytes()),
        };
    }
    let status = match outcome {
        CommandOutcome::Exited(0) => serde_json::json!({"metadata": {}, "status": "Success"}),
        CommandOutcome::Exited(code) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": failure_text(*code),
            "reason": "NonZeroExitCode",
            "details": {"causes": [{"reason": "ExitCode", "message": code.to_string()}]},
        }),
        CommandOutcome::Failed(msg) => serde_json::json!({
            "metadata": {},
            "status": "Failure",
            "message": msg,
        }),
    };
    Some(status.to_string().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocols_round_trip_and_order() {
        for p in [
            Protocol::V1,
            Protocol::V2,
            Protocol::V3,
            Protocol::V4,
            Protocol::V5,
        ] {
            assert_eq!(Protocol::from_name(p.name()), Some(p));
        }
        assert_eq!(Protocol::from_name("v9.channel.k8s.io"), None);
        assert!(
            Protocol::V4 > Protocol::V3 && Protocol::V3.has_resize() && !Protocol::V2.has_resize()
        );
    }

    #[test]
    fn v4_status_carries_the_exit_code_as_a_cause() {
        let bytes =
            error_stream_payload(Protocol::V4, &CommandOutcome::Exited(7)).unwrap_or_default();
        let v: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
        assert_eq!(v["status"], "Failure");
        assert_eq!(v["reason"], "NonZeroExitCode");
        assert_eq!(v["details"]["causes"][0]["reason"], "ExitCode");
        assert_eq!(v["details"]["causes"][0]["message"], "7");
        let ok = error_stream_payload(Protocol::V4, &CommandOutcome::Exited(0)).unwrap_or_default();
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&ok).unwrap_or_default()["status"],
            "Success"
        );
        assert_eq!(
            error_stream_payload(Protocol::V2, &CommandOutcome::Exited(0)),
            None
        );
    }
}
