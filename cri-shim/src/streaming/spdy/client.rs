//! A SPDY/3.1 client for remotecommand and port forwarding, for rcrictl and the tests: the
//! HTTP/1.1 upgrade, then streams opened as client-go opens them. Every channel is handed out as
//! one end of an in-memory pipe (or a channel, for resizes) pumped to and from the wire.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, DuplexStream};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};

use super::remotecommand::{pump_in, pump_out};
use super::session::{Connection, RecvHalf, Role, SendHalf, SessionError, Stream};
use super::{PORT_HEADER, REQUEST_ID_HEADER, STREAM_TYPE_HEADER, UPGRADE_TOKEN};
use crate::streaming::{CommandOutcome, Protocol, StreamOptions, TermSize, PORT_FORWARD_PROTOCOL};

/// How long the server has to answer each stream (client-go's createStreamResponseTimeout).
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);
const PIPE_SIZE: usize = 64 * 1024;
const MAX_RESPONSE_HEAD: usize = 16 * 1024;
/// The most of an error stream (or a refused upgrade's body) kept.
const MAX_ERROR_TEXT: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("unsupported streaming URL {0:?} (want http://host:port/path)")]
    Url(String),
    #[error("https streaming URLs are not implemented: {0}")]
    TlsNotImplemented(String),
    #[error("failed to connect to {addr}")]
    Connect {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("HTTP upgrade to SPDY/3.1 with {addr}")]
    Io {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server refused the upgrade: HTTP {status}: {body}")]
    Refused { status: u16, body: String },
    #[error("malformed upgrade response: {0}")]
    BadResponse(String),
    #[error("the server chose protocol {0:?}, which was not offered")]
    UnexpectedProtocol(String),
    #[error("failed to open the {kind} stream")]
    Open {
        kind: &'static str,
        #[source]
        source: SessionError,
    },
    #[error("the SPDY session")]
    Session(#[source] SessionError),
    #[error("the connection ended before the command's outcome arrived")]
    NoOutcome,
}

/// An `http://host:port/path?query` URL, split.
struct Target {
    addr: String,
    path: String,
}

fn parse_url(url: &str) -> Result<Target, ClientError> {
    if url.starts_with("https://") {
        return Err(ClientError::TlsNotImplemented(url.to_string()));
    }
    let rest = url
        .strip_prefix("http://")
        .ok_or_else(|| ClientError::Url(url.to_string()))?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() || authority.contains('@') {
        return Err(ClientError::Url(url.to_string()));
    }
    let has_port = match authority.rfind(']') {
        Some(close) => authority[close..].contains(':'),
        None => authority.contains(':'),
    };
    let addr = if has_port {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        addr,
        path: path.to_string(),
    })
}

/// Connects and upgrades to SPDY/3.1 offering `protocols`; the socket and the protocol the
/// server chose (its `X-Stream-Protocol-Version`, if it sent one).
pub async fn upgrade(
    url: &str,
    protocols: &[&str],
) -> Result<(TcpStream, Option<String>), ClientError> {
    let target = parse_url(url)?;
    let addr = target.addr.clone();
    let io_err = |source| ClientError::Io {
        addr: addr.clone(),
        source,
    };
    let mut sock =
        TcpStream::connect(&target.addr)
            .await
            .map_err(|source| ClientError::Connect {
                addr: target.addr.clone(),
                source,
            })?;
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: rcrictl\r\nContent-Length: 0\r\nConnection: Upgrade\r\nUpgrade: {UPGRADE_TOKEN}\r\n",
        target.path, target.addr
    );
    for p in protocols {
        req.push_str(&format!("X-Stream-Protocol-Version: {p}\r\n"));
    }
    req.push_str("\r\n");
    sock.write_all(req.as_bytes()).await.map_err(io_err)?;

    // Byte by byte: whatever follows the head is already SPDY and must stay in the socket.
    let mut head = Vec::with_capacity(512);
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() >= MAX_RESPONSE_HEAD {
            return Err(ClientError::BadResponse("response head too long".into()));
        }
        let b = sock.read_u8().await.map_err(io_err)?;
        head.push(b);
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ClientError::BadResponse(format!("status line {status_line:?}")))?;
    let headers: Vec<(String, String)> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    let get = |name: &str| {
        headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
    };
    if status != 101 {
        let len = get("content-length")
            .and_then(|l| l.parse::<usize>().ok())
            .unwrap_or(MAX_ERROR_TEXT)
            .min(MAX_ERROR_TEXT);
        let mut body = Vec::new();
        let mut limited = (&mut sock).take(len as u64);
        let _ = tokio::time::timeout(Duration::from_secs(5), limited.read_to_end(&mut body)).await;
        return Err(ClientError::Refused {
            status,
            body: String::from_utf8_lossy(&body).trim().to_string(),
        });
    }
    if !get("upgrade").is_some_and(|u| u.eq_ignore_ascii_case(UPGRADE_TOKEN)) {
        return Err(ClientError::BadResponse(format!(
            "101 without Upgrade: {UPGRADE_TOKEN}"
        )));
    }
    Ok((sock, get("x-stream-protocol-version")))
}

fn stream_headers(kind: &str) -> Vec<(String, String)> {
    vec![(STREAM_TYPE_HEADER.to_string(), kind.to_string())]
}

/// A running exec or attach session. Read `stdout`/`stderr` to their end (the server ends them
/// before it sends the outcome); write `stdin`, and drop or shut it down to close it.
pub struct RemoteCommandClient {
    pub protocol: Protocol,
    pub stdin: Option<DuplexStream>,
    pub stdout: Option<DuplexStream>,
    pub stderr: Option<DuplexStream>,
    /// Terminal sizes to send (with a tty, from protocol v3 on).
    pub resize: Option<mpsc::Sender<TermSize>>,
    outcome: oneshot::Receiver<Result<CommandOutcome, ClientError>>,
}

impl RemoteCommandClient {
    /// Upgrades `url` offering `protocols` (newest first, as clients list them) and opens the
    /// streams `opts` asks for.
    pub async fn connect(
        url: &str,
        opts: StreamOptions,
        protocols: &[Protocol],
    ) -> Result<Self, ClientError> {
        let names: Vec<&str> = protocols.iter().map(|p| p.name()).collect();
        let (sock, chosen) = upgrade(url, &names).await?;
        // No header means a server that predates negotiation: v1, as client-go assumes.
        let protocol = match chosen {
            None => Protocol::V1,
            Some(name) => Protocol::from_name(&name)
                .filter(|p| protocols.contains(p))
                .ok_or(ClientError::UnexpectedProtocol(name))?,
        };
        Self::start(sock, protocol, opts).await
    }

    /// Runs the session on an already upgraded connection.
    pub async fn start<IO>(
        io: IO,
        protocol: Protocol,
        opts: StreamOptions,
    ) -> Result<Self, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (conn, _incoming) =
            Connection::start(io, Role::Client).map_err(ClientError::Session)?;
        let open = |kind: &'static str| {
            let conn = conn.clone();
            async move {
                conn.open(stream_headers(kind), REPLY_TIMEOUT)
                    .await
                    .map_err(|source| ClientError::Open { kind, source })
            }
        };
        // The order client-go uses: error first, then the data channels.
        let error = open("error").await?;
        let stdin = if opts.stdin {
            Some(open("stdin").await?)
        } else {
            None
        };
        let stdout = if opts.stdout {
            Some(open("stdout").await?)
        } else {
            None
        };
        let stderr = if opts.stderr && !opts.tty {
            Some(open("stderr").await?)
        } else {
            None
        };
        let resize = if opts.tty && protocol.has_resize() {
            Some(open("resize").await?)
        } else {
            None
        };

        let mut readers = Vec::new();
        let mut output = |s: Option<Stream>| {
            s.map(|s| {
                let (user, ours) = tokio::io::duplex(PIPE_SIZE);
                readers.push(tokio::spawn(finish_then(s.send, pump_in(s.recv, ours))));
                user
            })
        };
        let stdout = output(stdout);
        let stderr = output(stderr);
        let stdin = stdin.map(|s| {
            let (user, ours) = tokio::io::duplex(PIPE_SIZE);
            drop(s.recv);
            tokio::spawn(pump_out(ours, s.send));
            user
        });
        let resize = resize.map(|s| {
            let (tx, rx) = mpsc::channel(16);
            drop(s.recv);
            tokio::spawn(send_resizes(rx, s.send));
            tx
        });
        let (outcome_tx, outcome) = oneshot::channel();
        tokio::spawn(async move {
            let text = finish_then(error.send, read_all(error.recv)).await;
            let result = match text {
                Some(text) => Ok(decode_outcome(protocol, &text)),
                None => Err(ClientError::NoOutcome),
            };
            let _ = outcome_tx.send(result);
            // The server ends the output before it sends the outcome; what is still in flight
            // is delivered before the connection is closed.
            for r in readers {
                let _ = r.await;
            }
            conn.close(Duration::from_secs(2)).await;
        });
        Ok(RemoteCommandClient {
            protocol,
            stdin,
            stdout,
            stderr,
            resize,
            outcome,
        })
    }

    /// Waits for the command's outcome, which the server sends once the output has ended.
    pub async fn outcome(self) -> Result<CommandOutcome, ClientError> {
        self.outcome.await.unwrap_or(Err(ClientError::NoOutcome))
    }
}

/// Half-closes this side of a stream it never writes to, then runs `f`.
async fn finish_then<T>(send: SendHalf, f: impl std::future::Future<Output = T>) -> T {
    let _ = send.finish().await;
    f.await
}

async fn send_resizes(mut rx: mpsc::Receiver<TermSize>, mut send: SendHalf) {
    while let Some(size) = rx.recv().await {
        let mut msg = serde_json::to_vec(&size).unwrap_or_default();
        msg.push(b'\n');
        if send.send(&msg).await.is_err() {
            return;
        }
    }
    let _ = send.finish().await;
}

/// Everything the peer writes on a stream until it ends. A reset or a closed connection also
/// ends it — kubelet resets every stream as it closes — but `None` if the connection went away
/// before a FIN or reset told that the text was complete.
async fn read_all(mut recv: RecvHalf) -> Option<String> {
    let mut text = Vec::new();
    let complete = loop {
        match recv.read().await {
            Ok(Some(b)) => {
                let room = MAX_ERROR_TEXT.saturating_sub(text.len());
                text.extend_from_slice(&b[..b.len().min(room)]);
            }
            Ok(None) | Err(SessionError::Reset { .. }) => break true,
            Err(_) => break false,
        }
    };
    (complete || !text.is_empty()).then(|| String::from_utf8_lossy(&text).into_owned())
}

/// The error stream's text as an outcome: a v4 `Status`, or plain text before v4.
pub fn decode_outcome(protocol: Protocol, text: &str) -> CommandOutcome {
    if text.trim().is_empty() {
        return CommandOutcome::Exited(0);
    }
    if protocol >= Protocol::V4 {
        let Ok(status) = serde_json::from_str::<serde_json::Value>(text) else {
            return CommandOutcome::Failed(format!("error stream is not a Status: {text}"));
        };
        if status["status"] == "Success" {
            return CommandOutcome::Exited(0);
        }
        if status["reason"] == "NonZeroExitCode" {
            let code = status["details"]["causes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|c| c["reason"] == "ExitCode")
                .and_then(|c| c["message"].as_str())
                .and_then(|m| m.parse::<i32>().ok());
            if let Some(code) = code {
                return CommandOutcome::Exited(code);
            }
        }
        let message = status["message"].as_str().unwrap_or(text);
        return CommandOutcome::Failed(message.to_string());
    }
    let code = text
        .trim()
        .strip_prefix("command terminated with non-zero exit code: exit status ")
        .and_then(|c| c.parse::<i32>().ok());
    match code {
        Some(code) => CommandOutcome::Exited(code),
        None => CommandOutcome::Failed(text.to_string()),
    }
}

/// A port-forwarding connection: any number of forwarded connections at once. Dropping it ends
/// them all.
pub struct PortForwardClient {
    conn: Connection,
    next_request: AtomicU64,
}

/// One forwarded connection: `data` carries the bytes; `error` tells why the server failed.
pub struct ForwardedPort {
    pub data: DuplexStream,
    pub error: ForwardError,
}

pub struct ForwardError(oneshot::Receiver<String>);

impl ForwardError {
    /// The server's error text for this connection, or `None` if it ended without one.
    pub async fn text(self) -> Option<String> {
        self.0.await.ok().filter(|t| !t.is_empty())
    }
}

impl PortForwardClient {
    pub async fn connect(url: &str) -> Result<Self, ClientError> {
        let (sock, chosen) = upgrade(url, &[PORT_FORWARD_PROTOCOL]).await?;
        match chosen.as_deref() {
            Some(PORT_FORWARD_PROTOCOL) => Self::start(sock),
            other => Err(ClientError::UnexpectedProtocol(
                other.unwrap_or_default().to_string(),
            )),
        }
    }

    pub fn start<IO>(io: IO) -> Result<Self, ClientError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let (conn, _incoming) =
            Connection::start(io, Role::Client).map_err(ClientError::Session)?;
        Ok(PortForwardClient {
            conn,
            next_request: AtomicU64::new(0),
        })
    }

    /// Opens a connection to `port` in the pod: an error stream and a data stream, as
    /// client-go's port forwarder does.
    pub async fn forward(&self, port: u16) -> Result<ForwardedPort, ClientError> {
        let request = self.next_request.fetch_add(1, Ordering::SeqCst).to_string();
        let headers = |kind: &str| {
            vec![
                (STREAM_TYPE_HEADER.to_string(), kind.to_string()),
                (PORT_HEADER.to_string(), port.to_string()),
                (REQUEST_ID_HEADER.to_string(), request.clone()),
            ]
        };
        let error = self
            .conn
            .open(headers("error"), REPLY_TIMEOUT)
            .await
            .map_err(|source| ClientError::Open {
                kind: "error",
                source,
            })?;
        let data = self
            .conn
            .open(headers("data"), REPLY_TIMEOUT)
            .await
            .map_err(|source| ClientError::Open {
                kind: "data",
                source,
            })?;
        let (err_tx, err_rx) = oneshot::channel();
        tokio::spawn(async move {
            let text = finish_then(error.send, read_all(error.recv)).await;
            let _ = err_tx.send(text.unwrap_or_default());
        });
        let (user, ours) = tokio::io::duplex(PIPE_SIZE);
        let (from_wire, to_wire) = tokio::io::split(ours);
        tokio::spawn(pump_in(data.recv, to_wire));
        tokio::spawn(pump_out(from_wire, data.send));
        Ok(ForwardedPort {
            data: user,
            error: ForwardError(err_rx),
        })
    }

    /// Says GOAWAY and closes the connection.
    pub async fn close(self) {
        self.conn.close(Duration::from_secs(2)).await;
    }
}
