//! The HTTP side of streaming: single-use tokens the CRI calls hand out, and the server that
//! redeems them at `/exec/{token}`, `/attach/{token}` and `/portforward/{token}` (the paths of
//! kubelet's reference server), negotiates SPDY/3.1 or WebSocket and the subprotocol, and hands
//! the upgraded connection to the protocol layer with the session's backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

use super::{
    CommandHandler, CommandOutcome, PortConnector, Protocol, StreamOptions, PORT_FORWARD_PROTOCOL,
};

/// How long a token stays valid: kubelet's default `StreamCreationTimeout`-independent cache TTL.
const TOKEN_TTL: Duration = Duration::from_secs(60);
/// kubelet refuses new tokens past this many unredeemed ones; so do we.
const MAX_IN_FLIGHT: usize = 1000;
/// The SPDY header naming the remotecommand/portforward subprotocols.
const PROTOCOL_HEADER: &str = "x-stream-protocol-version";
/// Sent back when negotiation fails: what we do accept.
const ACCEPTED_HEADER: &str = "x-accepted-stream-protocol-versions";
/// Remotecommand over SPDY: v5 exists only for WebSocket.
const SPDY_PROTOCOLS: [Protocol; 4] = [Protocol::V4, Protocol::V3, Protocol::V2, Protocol::V1];

#[derive(Debug, thiserror::Error)]
pub enum StreamingError {
    #[error("invalid streaming address {addr:?}")]
    Address {
        addr: String,
        #[source]
        source: std::net::AddrParseError,
    },
    #[error("failed to listen on {addr}")]
    Listen {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the streaming server is not running")]
    NotStarted,
    #[error("too many streaming requests in flight ({MAX_IN_FLIGHT}); try again later")]
    TooManyInFlight,
    #[error("failed to generate a streaming token")]
    Token(#[source] std::io::Error),
}

/// What a token is redeemed for: the session's streams and the backend that serves them.
pub enum Session {
    Exec {
        opts: StreamOptions,
        handler: CommandHandler,
    },
    Attach {
        opts: StreamOptions,
        handler: CommandHandler,
    },
    PortForward {
        connector: PortConnector,
    },
}

impl Session {
    fn path(&self) -> &'static str {
        match self {
            Session::Exec { .. } => "exec",
            Session::Attach { .. } => "attach",
            Session::PortForward { .. } => "portforward",
        }
    }
}

struct Pending {
    session: Session,
    expires: Instant,
}

/// The token cache, shared by the CRI handlers (which insert) and the HTTP server (which
/// consumes). A token is random, usable once, and forgotten a minute after it was made.
#[derive(Default)]
pub struct Streaming {
    pending: Mutex<HashMap<String, Pending>>,
    /// `http://127.0.0.1:PORT`, known once the listener is bound.
    base_url: OnceLock<String>,
}

impl Streaming {
    pub fn new() -> Streaming {
        Streaming::default()
    }

    /// Stores `session` under a new token and returns the URL that redeems it.
    pub fn insert(&self, session: Session) -> Result<String, StreamingError> {
        let base = self.base_url.get().ok_or(StreamingError::NotStarted)?;
        let token = crate::new_id().map_err(StreamingError::Token)?;
        let url = format!("{base}/{}/{token}", session.path());
        let now = Instant::now();
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        pending.retain(|_, p| p.expires > now);
        if pending.len() >= MAX_IN_FLIGHT {
            return Err(StreamingError::TooManyInFlight);
        }
        pending.insert(
            token,
            Pending {
                session,
                expires: now + TOKEN_TTL,
            },
        );
        Ok(url)
    }

    /// Takes the session of `token` if it exists, has not expired and was made for `path`.
    fn consume(&self, path: &str, token: &str) -> Option<Session> {
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        let entry = pending.remove(token)?;
        if entry.expires <= Instant::now() || entry.session.path() != path {
            return None;
        }
        Some(entry.session)
    }

    /// How many tokens wait to be redeemed (expired ones included until the next insert).
    pub fn pending(&self) -> usize {
        self.pending.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

/// Binds `addr` (loopback expected), records the base URL and serves in the background.
/// Returns the bound address (the port is chosen by the kernel for `:0`).
pub async fn start(streaming: Arc<Streaming>, addr: &str) -> Result<SocketAddr, StreamingError> {
    let wanted: SocketAddr = addr.parse().map_err(|source| StreamingError::Address {
        addr: addr.to_string(),
        source,
    })?;
    if !wanted.ip().is_loopback() {
        // The token is the only credential: a routable address exposes exec to the network.
        tracing::warn!(addr = %wanted, "the streaming server listens on a non-loopback address");
    }
    let listener = tokio::net::TcpListener::bind(wanted)
        .await
        .map_err(|source| StreamingError::Listen {
            addr: wanted,
            source,
        })?;
    let bound = listener
        .local_addr()
        .map_err(|source| StreamingError::Listen {
            addr: wanted,
            source,
        })?;
    let _ = streaming.base_url.set(format!("http://{bound}"));
    tracing::info!(addr = %bound, "serving streaming (exec, attach, port-forward)");
    tokio::spawn(async move {
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    // EMFILE and friends: back off instead of spinning.
                    tracing::warn!(error = %e, "streaming server: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let streaming = streaming.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req| {
                    let streaming = streaming.clone();
                    async move { Ok::<_, std::convert::Infallible>(handle(&streaming, req)) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .with_upgrades()
                    .await
                {
                    tracing::debug!(peer = %peer, error = %e, "streaming connection ended");
                }
            });
        }
    });
    Ok(bound)
}

type Reply = Response<Full<Bytes>>;

fn reply(code: StatusCode, text: impl Into<String>) -> Reply {
    let mut body = text.into();
    body.push('\n');
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn handle(streaming: &Streaming, req: Request<Incoming>) -> Reply {
    if req.method() != Method::GET && req.method() != Method::POST {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "method not allowed");
    }
    let path = req.uri().path().to_string();
    let mut parts = path.trim_start_matches('/').splitn(2, '/');
    let (kind, token) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
    if !matches!(kind, "exec" | "attach" | "portforward") || token.is_empty() {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    }
    // Consumed before negotiating, as kubelet does: a failed upgrade burns the token too.
    let Some(session) = streaming.consume(kind, token) else {
        return reply(StatusCode::NOT_FOUND, "404 page not found");
    };
    let headers = req.headers().clone();
    if is_upgrade_to(&headers, "websocket") {
        return websocket(req, session);
    }
    if !is_upgrade_to(&headers, "SPDY/3.1") {
        return reply(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: missing upgrade headers in request (want Upgrade: SPDY/3.1 or websocket)",
        );
    }
    spdy(req, session)
}

/// `Connection: upgrade` (among others) and `Upgrade: <what>`.
fn is_upgrade_to(headers: &HeaderMap, what: &str) -> bool {
    let connection = header_values(headers, header::CONNECTION.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case("upgrade"));
    let upgrade = header_values(headers, header::UPGRADE.as_str())
        .iter()
        .any(|v| v.eq_ignore_ascii_case(what));
    connection && upgrade
}

/// Every value of a header, comma-separated lists split, in order.
fn header_values(headers: &HeaderMap, name: &str) -> Vec<String> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
        .collect()
}

fn spdy(req: Request<Incoming>, session: Session) -> Reply {
    let offered = header_values(req.headers(), PROTOCOL_HEADER);
    if offered.is_empty() {
        return reply(
            StatusCode::BAD_REQUEST,
            "unable to upgrade: X-Stream-Protocol-Version is required",
        );
    }
    let accepted: Vec<&str> = match &session {
        Session::PortForward { .. } => vec![PORT_FORWARD_PROTOCOL],
        _ => SPDY_PROTOCOLS.iter().map(|p| p.name()).collect(),
    };
    let chosen = match &session {
        Session::PortForward { .. } => offered
            .iter()
            .any(|o| o == PORT_FORWARD_PROTOCOL)
            .then_some(PORT_FORWARD_PROTOCOL),
        _ => offered
            .iter()
            .filter_map(|o| Protocol::from_name(o))
            .filter(|p| SPDY_PROTOCOLS.contains(p))
            .max()
            .map(Protocol::name),
    };
    let Some(chosen) = chosen else {
        let mut resp = reply(
            StatusCode::FORBIDDEN,
            format!(
                "unable to upgrade: unable to negotiate protocol: client supports {offered:?}, server accepts {accepted:?}"
            ),
        );
        for a in accepted {
            resp.headers_mut()
                .append(ACCEPTED_HEADER, HeaderValue::from_static(a));
        }
        return resp;
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(error = %e, "SPDY upgrade failed");
                return;
            }
        };
        match session {
            Session::Exec { opts, handler } | Session::Attach { opts, handler } => {
                let protocol = Protocol::from_name(chosen).unwrap_or(Protocol::V1);
                let (closed_tx, closed) = tokio::sync::oneshot::channel();
                let io = WatchClose {
                    inner: io,
                    closed: Some(closed_tx),
                };
                let handler = stop_when_closed(handler, closed);
                super::spdy::serve_remotecommand(io, protocol, opts, handler).await;
            }
            Session::PortForward { connector } => {
                super::spdy::serve_portforward(io, connector).await;
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("SPDY/3.1"));
    h.insert(PROTOCOL_HEADER, HeaderValue::from_static(chosen));
    resp
}

/// An upgraded connection that reports when the client's side ends (EOF or error on read):
/// a client killed mid-session must stop the command even if it was printing nothing.
struct WatchClose<IO> {
    inner: IO,
    closed: Option<tokio::sync::oneshot::Sender<()>>,
}

impl<IO: AsyncRead + Unpin> AsyncRead for WatchClose<IO> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        let ended = match &result {
            Poll::Ready(Ok(())) => buf.filled().len() == before && buf.remaining() > 0,
            Poll::Ready(Err(_)) => true,
            Poll::Pending => false,
        };
        if ended {
            if let Some(tx) = self.closed.take() {
                let _ = tx.send(());
            }
        }
        result
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for WatchClose<IO> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// The command stops (its future is dropped, which the backends take as "kill it") when the
/// client's connection ends before it did.
fn stop_when_closed(
    handler: CommandHandler,
    closed: tokio::sync::oneshot::Receiver<()>,
) -> CommandHandler {
    Box::new(move |streams| {
        Box::pin(async move {
            let run = handler(streams);
            tokio::select! {
                outcome = run => outcome,
                Ok(()) = closed => CommandOutcome::Failed("the client went away".into()),
            }
        })
    })
}

fn websocket(req: Request<Incoming>, session: Session) -> Reply {
    let headers = req.headers();
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return reply(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key");
    };
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .and_then(|v| v.to_str().ok())
        != Some("13")
    {
        let mut resp = reply(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported Sec-WebSocket-Version (want 13)",
        );
        resp.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return resp;
    }
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let offered = header_values(headers, header::SEC_WEBSOCKET_PROTOCOL.as_str());
    let chosen = match &session {
        Session::PortForward { .. } => super::ws::negotiate(&offered, super::ws::PORT_FORWARD),
        _ => super::ws::negotiate(&offered, super::ws::REMOTE_COMMAND),
    };
    let Some(chosen) = chosen else {
        let table = match &session {
            Session::PortForward { .. } => super::ws::PORT_FORWARD,
            _ => super::ws::REMOTE_COMMAND,
        };
        let accepted: Vec<&str> = table.iter().map(|p| p.name).collect();
        return reply(
            StatusCode::FORBIDDEN,
            format!("requested protocol(s) are not supported: {offered:?}; supports {accepted:?}"),
        );
    };
    let tunneled = chosen.name == super::ws::SPDY_TUNNEL_PORT_FORWARD;
    let ports = match &session {
        Session::PortForward { .. } if tunneled => Vec::new(),
        Session::PortForward { .. } => match ports_of(req.uri().query().unwrap_or("")) {
            Ok(p) => p,
            Err(msg) => return reply(StatusCode::BAD_REQUEST, msg),
        },
        _ => Vec::new(),
    };
    let upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let io = match upgrade.await {
            Ok(u) => TokioIo::new(u),
            Err(e) => {
                tracing::warn!(error = %e, "WebSocket upgrade failed");
                return;
            }
        };
        let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            io,
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        match session {
            Session::Exec { opts, handler } | Session::Attach { opts, handler } => {
                super::ws::serve_remotecommand(ws, chosen, opts, handler).await
            }
            Session::PortForward { connector } if tunneled => {
                super::spdy::serve_portforward(super::ws::tunnel(ws), connector).await
            }
            Session::PortForward { connector } => {
                super::ws::serve_portforward(ws, chosen, ports, connector).await
            }
        }
    });
    let mut resp = Response::new(Full::new(Bytes::new()));
    *resp.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = resp.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    if !chosen.name.is_empty() {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(chosen.name),
        );
    }
    resp
}

/// The `port` query parameters of a WebSocket port-forward (`?port=80&port=8080`, or
/// comma-separated as kubectl once sent them).
fn ports_of(query: &str) -> Result<Vec<u16>, String> {
    let mut ports = Vec::new();
    for pair in query.split('&') {
        let Some(value) = pair.strip_prefix("port=") else {
            continue;
        };
        for v in value.split("%2C").flat_map(|v| v.split(',')) {
            match v.trim().parse::<u16>() {
                Ok(p) if p > 0 => ports.push(p),
                _ => return Err(format!("unable to parse {v:?} as a port")),
            }
        }
    }
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".to_string());
    }
    Ok(ports)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dummy() -> Session {
        Session::PortForward {
            connector: Arc::new(|_| {
                Box::pin(async { Err(std::io::Error::other("unused")) })
                    as super::super::ConnectFuture
            }),
        }
    }

    #[test]
    fn tokens_are_single_use_and_bound_to_their_path() {
        let s = Streaming::new();
        assert!(matches!(s.insert(dummy()), Err(StreamingError::NotStarted)));
        let _ = s.base_url.set("http://127.0.0.1:1".into());
        let url = s.insert(dummy()).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(url.starts_with("http://127.0.0.1:1/portforward/"));
        assert!(
            s.consume("exec", &token).is_none(),
            "wrong path burns the token"
        );
        assert!(s.consume("portforward", &token).is_none());
        let url = s.insert(dummy()).unwrap();
        let token = url.rsplit('/').next().unwrap().to_string();
        assert!(s.consume("portforward", &token).is_some());
        assert!(s.consume("portforward", &token).is_none(), "used twice");
    }

    #[test]
    fn expired_tokens_are_refused() {
        let s = Streaming::new();
        let _ = s.base_url.set("http://127.0.0.1:1".into());
        s.pending.lock().unwrap().insert(
            "old".into(),
            Pending {
                session: dummy(),
                expires: Instant::now() - Duration::from_secs(1),
            },
        );
        assert!(s.consume("portforward", "old").is_none());
    }

    #[test]
    fn port_query() {
        assert_eq!(ports_of("port=80&port=8080").unwrap(), vec![80, 8080]);
        assert_eq!(ports_of("x=1&port=1,2").unwrap(), vec![1, 2]);
        assert!(ports_of("").is_err());
        assert!(ports_of("port=0").is_err());
        assert!(ports_of("port=http").is_err());
    }
}
