//! The WebSocket protocol layer (k8s.io/apiserver's wsstream, as kubelet serves it): every
//! message is one channel's data, prefixed by the channel number — a byte in binary protocols,
//! an ASCII digit before base64 text in the `base64.` ones.
//!
//! remotecommand: 0 stdin, 1 stdout, 2 stderr, 3 error (the final status), 4 resize (JSON
//! `TermSize`); v5 adds 255 CLOSE (`[255, channel]`) so the client can end stdin without ending
//! the connection. Right after the upgrade the server writes one empty frame on the first
//! writable of stdout, stderr, error, telling the client the session is set up.
//!
//! portforward: port i (from the `port` query parameters) gets data channel 2i and error
//! channel 2i+1; the first frame the server writes on each is the port, 2 bytes little-endian.

use std::collections::HashMap;

use base64::Engine as _;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use super::{
    error_stream_payload, CommandHandler, CommandOutcome, CommandStreams, PortConnector, Protocol,
    StreamOptions, TermSize, PORT_FORWARD_PROTOCOL,
};

pub const STDIN: u8 = 0;
pub const STDOUT: u8 = 1;
pub const STDERR: u8 = 2;
pub const ERROR: u8 = 3;
pub const RESIZE: u8 = 4;
/// v5: `[CLOSE, channel]` half-closes that channel.
pub const CLOSE: u8 = 255;

/// One WebSocket subprotocol: its name, the remotecommand semantics it has and its framing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WsProtocol {
    /// As in Sec-WebSocket-Protocol; empty when the client offered none (binary, like v1).
    pub name: &'static str,
    pub version: Protocol,
    pub base64: bool,
}

const fn p(name: &'static str, version: Protocol, base64: bool) -> WsProtocol {
    WsProtocol {
        name,
        version,
        base64,
    }
}

/// What kubelet's remotecommand WebSocket server accepts. The pre-v4 names all behave alike
/// there (resize channel included, plain-text error), so they map to V3.
pub const REMOTE_COMMAND: &[WsProtocol] = &[
    p("v5.channel.k8s.io", Protocol::V5, false),
    p("v4.channel.k8s.io", Protocol::V4, false),
    p("v4.base64.channel.k8s.io", Protocol::V4, true),
    p("channel.k8s.io", Protocol::V3, false),
    p("base64.channel.k8s.io", Protocol::V3, true),
    p("", Protocol::V3, false),
];

/// client-go's (and crictl's `--transport websocket`) port-forward: SPDY/3.1 framed inside
/// binary WebSocket messages, as the apiserver's tunneling handler accepts it; the ports come
/// in the SPDY streams' headers, not in the URL.
pub const SPDY_TUNNEL_PORT_FORWARD: &str = "SPDY/3.1+portforward.k8s.io";

/// What kubelet's portforward WebSocket server accepts, plus the SPDY tunnel.
pub const PORT_FORWARD: &[WsProtocol] = &[
    p(SPDY_TUNNEL_PORT_FORWARD, Protocol::V4, false),
    p("v4.channel.k8s.io", Protocol::V4, false),
    p("v4.base64.channel.k8s.io", Protocol::V4, true),
    p(PORT_FORWARD_PROTOCOL, Protocol::V4, false),
    p("channel.k8s.io", Protocol::V4, false),
    p("base64.channel.k8s.io", Protocol::V4, true),
    p("", Protocol::V4, false),
];

/// The first protocol in the client's order that `table` has (wsstream's rule); no offer at
/// all means the unnamed binary protocol.
pub fn negotiate(offered: &[String], table: &[WsProtocol]) -> Option<WsProtocol> {
    if offered.is_empty() {
        return table.iter().find(|p| p.name.is_empty()).copied();
    }
    offered
        .iter()
        .find_map(|o| {
            table
                .iter()
                .find(|p| !p.name.is_empty() && p.name == o.trim())
        })
        .copied()
}

pub fn encode(base64: bool, channel: u8, data: &[u8]) -> Message {
    if base64 {
        let mut text = String::with_capacity(1 + data.len() * 4 / 3 + 4);
        text.push(char::from(b'0'.wrapping_add(channel)));
        text.push_str(&base64::engine::general_purpose::STANDARD.encode(data));
        Message::Text(text.into())
    } else {
        let mut frame = Vec::with_capacity(data.len() + 1);
        frame.push(channel);
        frame.extend_from_slice(data);
        Message::Binary(frame.into())
    }
}

/// A data message as (channel, payload); None for control frames and malformed messages.
pub fn decode(base64: bool, msg: &Message) -> Option<(u8, Vec<u8>)> {
    match msg {
        Message::Binary(b) if !base64 => {
            let (&ch, rest) = b.split_first()?;
            Some((ch, rest.to_vec()))
        }
        Message::Text(t) if base64 => {
            let (&ch, rest) = t.as_bytes().split_first()?;
            let data = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            Some((ch.wrapping_sub(b'0'), data))
        }
        // Binary frames on a base64 connection (and vice versa) are what kubelet's reader
        // accepts too: take them by their own framing.
        Message::Binary(b) => {
            let (&ch, rest) = b.split_first()?;
            Some((ch, rest.to_vec()))
        }
        _ => None,
    }
}

type Sink<S> = SplitSink<WebSocketStream<S>, Message>;
type Source<S> = SplitStream<WebSocketStream<S>>;

/// Ends a session with a Close frame carrying 1000 (normal closure): client-go (kubectl,
/// crictl) treats a Close without a status code (1005) as an error and loses the exit code.
async fn normal_close<S>(sink: &mut Sink<S>) -> Result<(), tokio_tungstenite::tungstenite::Error>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, CloseFrame};
    sink.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    })))
    .await?;
    sink.close().await
}

/// The single writer of a connection: frames from every pump, then a Close frame once all
/// senders are gone.
fn spawn_writer<S>(
    mut sink: Sink<S>,
    mut rx: mpsc::Receiver<Message>,
) -> tokio::task::JoinHandle<()>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        while let Some(m) = rx.recv().await {
            if sink.send(m).await.is_err() {
                return;
            }
        }
        let _ = normal_close(&mut sink).await;
    })
}

/// Copies `from` to the wire as frames of `channel` until EOF.
fn spawn_pump<R>(
    mut from: R,
    channel: u8,
    base64: bool,
    tx: mpsc::Sender<Message>,
) -> tokio::task::JoinHandle<()>
where
    R: AsyncRead + Unpin + Send + 'static,
{
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(encode(base64, channel, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}

/// Serves one exec/attach session on an upgraded WebSocket until the command ends (then the
/// status goes on the error channel and the connection is closed) or the client goes away
/// (then the handler's future is dropped, which is the backend's cue to stop the process).
pub async fn serve_remotecommand<S>(
    ws: WebSocketStream<S>,
    proto: WsProtocol,
    opts: StreamOptions,
    handler: CommandHandler,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, source) = ws.split();
    let (tx, rx) = mpsc::channel::<Message>(64);
    let writer = spawn_writer(sink, rx);
    let first = if opts.stdout {
        STDOUT
    } else if opts.stderr && !opts.tty {
        STDERR
    } else {
        ERROR
    };
    let _ = tx.send(encode(proto.base64, first, &[])).await;

    let mut pumps = Vec::new();
    let mut streams = CommandStreams {
        stdin: None,
        stdout: None,
        stderr: None,
        resize: None,
    };
    let mut stdin_writer = None;
    if opts.stdin {
        let (backend, ours) = tokio::io::duplex(64 * 1024);
        streams.stdin = Some(backend);
        stdin_writer = Some(ours);
    }
    for (wanted, channel) in [(opts.stdout, STDOUT), (opts.stderr && !opts.tty, STDERR)] {
        if !wanted {
            continue;
        }
        let (backend, ours) = tokio::io::duplex(64 * 1024);
        pumps.push(spawn_pump(ours, channel, proto.base64, tx.clone()));
        if channel == STDOUT {
            streams.stdout = Some(backend);
        } else {
            streams.stderr = Some(backend);
        }
    }
    let mut resize_tx = None;
    if opts.tty {
        let (rtx, rrx) = mpsc::channel(16);
        streams.resize = Some(rrx);
        resize_tx = Some(rtx);
    }
    let reader = tokio::spawn(read_remotecommand(source, proto, stdin_writer, resize_tx));
    let command = handler(streams);
    tokio::pin!(command);
    let mut reader = reader;
    let outcome = tokio::select! {
        outcome = &mut command => outcome,
        _ = &mut reader => {
            // The client went away: dropping the command stops it.
            tracing::debug!("WebSocket client went away before the command ended");
            for p in &pumps { p.abort(); }
            writer.abort();
            return;
        }
    };
    // Everything the process wrote goes out before the status.
    for p in pumps {
        let _ = p.await;
    }
    if let Some(payload) = error_stream_payload(proto.version, &outcome) {
        let _ = tx.send(encode(proto.base64, ERROR, &payload)).await;
    }
    drop(tx);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
    reader.abort();
    if let CommandOutcome::Failed(msg) = &outcome {
        tracing::info!(error = %msg, "streaming command failed");
    }
}

/// Routes the client's frames: stdin data, resizes, v5 CLOSE. Returns when the client closes
/// the connection or it breaks.
async fn read_remotecommand<S>(
    mut source: Source<S>,
    proto: WsProtocol,
    mut stdin: Option<tokio::io::DuplexStream>,
    resize: Option<mpsc::Sender<TermSize>>,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    while let Some(Ok(msg)) = source.next().await {
        if matches!(msg, Message::Close(_)) {
            return;
        }
        let Some((channel, data)) = decode(proto.base64, &msg) else {
            continue;
        };
        match channel {
            STDIN => {
                if let Some(w) = stdin.as_mut() {
                    if w.write_all(&data).await.is_err() {
                        // The backend stopped reading stdin; the rest is dropped.
                        stdin = None;
                    }
                }
            }
            RESIZE => {
                if let (Some(tx), Ok(size)) = (&resize, serde_json::from_slice::<TermSize>(&data)) {
                    let _ = tx.try_send(size);
                }
            }
            CLOSE if proto.version >= Protocol::V5 && data.first() == Some(&STDIN) => {
                if let Some(mut w) = stdin.take() {
                    let _ = w.shutdown().await;
                }
            }
            _ => {}
        }
    }
}

/// Serves a WebSocket port-forward: one connection into the pod per requested port, made
/// right away, relayed until the pod's side ends (or the client closes the connection).
pub async fn serve_portforward<S>(
    ws: WebSocketStream<S>,
    proto: WsProtocol,
    ports: Vec<u16>,
    connector: PortConnector,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (sink, mut source) = ws.split();
    let (tx, rx) = mpsc::channel::<Message>(64);
    let writer = spawn_writer(sink, rx);
    for (i, port) in ports.iter().enumerate() {
        let data = (2 * i) as u8;
        let _ = tx
            .send(encode(proto.base64, data, &port.to_le_bytes()))
            .await;
        let _ = tx
            .send(encode(proto.base64, data + 1, &port.to_le_bytes()))
            .await;
    }
    let mut inbound: HashMap<u8, mpsc::Sender<Vec<u8>>> = HashMap::new();
    let mut forwards = tokio::task::JoinSet::new();
    for (i, &port) in ports.iter().enumerate() {
        let data_ch = (2 * i) as u8;
        let (in_tx, in_rx) = mpsc::channel::<Vec<u8>>(32);
        inbound.insert(data_ch, in_tx);
        let tx = tx.clone();
        let connector = connector.clone();
        let base64 = proto.base64;
        forwards.spawn(async move {
            match connector(port).await {
                Ok(conn) => relay_port(conn, data_ch, base64, in_rx, tx).await,
                Err(e) => {
                    let msg = format!("error forwarding port {port} to pod: {e}");
                    tracing::info!(error = %msg, "port-forward failed");
                    let _ = tx.send(encode(base64, data_ch + 1, msg.as_bytes())).await;
                }
            }
        });
    }
    drop(tx);
    loop {
        tokio::select! {
            msg = source.next() => {
                let Some(Ok(msg)) = msg else { break };
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                if let Some((ch, data)) = decode(proto.base64, &msg) {
                    if let Some(tx) = inbound.get(&ch) {
                        if tx.send(data).await.is_err() {
                            inbound.remove(&ch);
                        }
                    }
                }
            }
            done = forwards.join_next() => {
                if done.is_none() {
                    // Every port's connection ended: so does the session.
                    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), writer).await;
                    return;
                }
            }
        }
    }
    forwards.abort_all();
    writer.abort();
}

/// The byte stream carried by a tunneling WebSocket: every binary message is the next chunk,
/// and what is written to the returned end goes out as binary messages. Ends (EOF) when the
/// peer closes the WebSocket.
pub fn tunnel<S>(ws: WebSocketStream<S>) -> tokio::io::DuplexStream
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (ours, theirs) = tokio::io::duplex(64 * 1024);
    let (mut from_user, mut to_user) = tokio::io::split(ours);
    let (mut sink, mut source) = ws.split();
    tokio::spawn(async move {
        while let Some(Ok(msg)) = source.next().await {
            match msg {
                Message::Binary(b) if to_user.write_all(&b).await.is_err() => break,
                Message::Close(_) => break,
                _ => {}
            }
        }
        let _ = to_user.shutdown().await;
    });
    tokio::spawn(async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match from_user.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if sink
                        .send(Message::Binary(buf[..n].to_vec().into()))
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
        let _ = normal_close(&mut sink).await;
    });
    theirs
}

/// One port's relay: the client's data into the connection, the pod's replies out.
async fn relay_port(
    conn: tokio::net::TcpStream,
    data_ch: u8,
    base64: bool,
    mut from_client: mpsc::Receiver<Vec<u8>>,
    tx: mpsc::Sender<Message>,
) {
    let (mut rd, mut wr) = conn.into_split();
    let upstream = async move {
        while let Some(data) = from_client.recv().await {
            if wr.write_all(&data).await.is_err() {
                return;
            }
        }
        let _ = wr.shutdown().await;
    };
    let downstream = async move {
        let mut buf = vec![0u8; 32 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(encode(base64, data_ch, &buf[..n])).await.is_err() {
                        return;
                    }
                }
            }
        }
    };
    // The pod closing its side ends the forward; the client's end of input alone does not
    // (a request is sent, then the reply read).
    tokio::pin!(upstream);
    tokio::select! {
        _ = downstream => {}
        _ = async { (&mut upstream).await; std::future::pending::<()>().await } => {}
    }
}

/// The client side, for rcrictl and the tests.
pub mod client {
    use super::*;
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;

    #[derive(Debug, thiserror::Error)]
    pub enum ClientError {
        #[error("bad streaming URL {0:?}")]
        Url(String),
        #[error("failed to connect to {addr}")]
        Connect {
            addr: String,
            #[source]
            source: std::io::Error,
        },
        #[error("WebSocket handshake with {url} failed")]
        Handshake {
            url: String,
            #[source]
            source: Box<tokio_tungstenite::tungstenite::Error>,
        },
        #[error("the server chose subprotocol {0:?}, which we did not offer")]
        Protocol(String),
        #[error("failed to accept a local connection")]
        Accept(#[source] std::io::Error),
    }

    /// Opens a WebSocket to a streaming URL (`http://` is taken as `ws://`) offering
    /// `protocols`, and returns it with the protocol the server chose.
    pub async fn connect(
        url: &str,
        protocols: &[&str],
    ) -> Result<(WebSocketStream<tokio::net::TcpStream>, String), ClientError> {
        let ws_url = if let Some(rest) = url.strip_prefix("http://") {
            format!("ws://{rest}")
        } else if url.starts_with("ws://") {
            url.to_string()
        } else {
            return Err(ClientError::Url(url.to_string()));
        };
        let authority = ws_url["ws://".len()..]
            .split('/')
            .next()
            .unwrap_or("")
            .to_string();
        if authority.is_empty() {
            return Err(ClientError::Url(url.to_string()));
        }
        let tcp = tokio::net::TcpStream::connect(&authority)
            .await
            .map_err(|source| ClientError::Connect {
                addr: authority.clone(),
                source,
            })?;
        let handshake_err = |source| ClientError::Handshake {
            url: url.to_string(),
            source: Box::new(source),
        };
        let mut request = ws_url
            .as_str()
            .into_client_request()
            .map_err(handshake_err)?;
        if !protocols.is_empty() {
            let v = HeaderValue::from_str(&protocols.join(", "))
                .map_err(|_| ClientError::Url(url.to_string()))?;
            request.headers_mut().insert("Sec-WebSocket-Protocol", v);
        }
        let (ws, resp) = tokio_tungstenite::client_async(request, tcp)
            .await
            .map_err(handshake_err)?;
        let chosen = resp
            .headers()
            .get("Sec-WebSocket-Protocol")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        if !chosen.is_empty() && !protocols.contains(&chosen.as_str()) {
            return Err(ClientError::Protocol(chosen));
        }
        Ok((ws, chosen))
    }

    /// The local ends of an exec/attach session.
    pub struct LocalStreams {
        pub stdin: Option<Box<dyn AsyncRead + Unpin + Send>>,
        pub stdout: Option<Box<dyn AsyncWrite + Unpin + Send>>,
        pub stderr: Option<Box<dyn AsyncWrite + Unpin + Send>>,
        pub resize: Option<mpsc::Receiver<TermSize>>,
    }

    /// Runs an exec/attach session to its end: how the command ended as the server reported
    /// it (a v4+ status carries the exit code; older protocols only a message).
    pub async fn remotecommand(
        url: &str,
        local: LocalStreams,
    ) -> Result<CommandOutcome, ClientError> {
        let offered = ["v5.channel.k8s.io", "v4.channel.k8s.io", "channel.k8s.io"];
        let (ws, chosen) = connect(url, &offered).await?;
        let proto = negotiate(&[chosen], REMOTE_COMMAND).unwrap_or(p("", Protocol::V3, false));
        let (mut sink, mut source) = ws.split();
        let (tx, mut rx) = mpsc::channel::<Message>(64);
        let LocalStreams {
            stdin,
            mut stdout,
            mut stderr,
            resize,
        } = local;
        let mut senders = Vec::new();
        if let Some(mut input) = stdin {
            let tx = tx.clone();
            senders.push(tokio::spawn(async move {
                let mut buf = vec![0u8; 32 * 1024];
                loop {
                    match input.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if tx
                                .send(encode(proto.base64, STDIN, &buf[..n]))
                                .await
                                .is_err()
                            {
                                return;
                            }
                        }
                    }
                }
                if proto.version >= Protocol::V5 {
                    let _ = tx.send(Message::Binary(vec![CLOSE, STDIN].into())).await;
                }
            }));
        }
        if let Some(mut sizes) = resize {
            let tx = tx.clone();
            senders.push(tokio::spawn(async move {
                while let Some(size) = sizes.recv().await {
                    let json = serde_json::to_vec(&size).unwrap_or_default();
                    if tx.send(encode(proto.base64, RESIZE, &json)).await.is_err() {
                        return;
                    }
                }
            }));
        }
        drop(tx);
        let writer = tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    return;
                }
            }
        });
        let mut error = Vec::new();
        while let Some(Ok(msg)) = source.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
            let Some((ch, data)) = decode(proto.base64, &msg) else {
                continue;
            };
            let out = match ch {
                STDOUT => stdout.as_mut(),
                STDERR => stderr.as_mut(),
                ERROR => {
                    error.extend_from_slice(&data);
                    None
                }
                _ => None,
            };
            if let Some(out) = out {
                let _ = out.write_all(&data).await;
                let _ = out.flush().await;
            }
        }
        for s in senders {
            s.abort();
        }
        writer.abort();
        Ok(outcome_of(proto.version, &error))
    }

    /// Reads the error channel's final message the way kubectl does.
    pub fn outcome_of(version: Protocol, error: &[u8]) -> CommandOutcome {
        if error.is_empty() {
            return CommandOutcome::Exited(0);
        }
        if version >= Protocol::V4 {
            let Ok(status) = serde_json::from_slice::<serde_json::Value>(error) else {
                return CommandOutcome::Failed(String::from_utf8_lossy(error).into_owned());
            };
            if status["status"] == "Success" {
                return CommandOutcome::Exited(0);
            }
            if status["reason"] == "NonZeroExitCode" {
                if let Some(code) = status["details"]["causes"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .find(|c| c["reason"] == "ExitCode")
                    .and_then(|c| c["message"].as_str())
                    .and_then(|m| m.parse::<i32>().ok())
                {
                    return CommandOutcome::Exited(code);
                }
            }
            return CommandOutcome::Failed(
                status["message"]
                    .as_str()
                    .unwrap_or("unknown error")
                    .to_string(),
            );
        }
        let text = String::from_utf8_lossy(error).into_owned();
        match text
            .rsplit("exit status ")
            .next()
            .and_then(|c| c.trim().parse::<i32>().ok())
        {
            Some(code) if text.contains("non-zero exit code") => CommandOutcome::Exited(code),
            _ => CommandOutcome::Failed(text),
        }
    }

    /// A SPDY/3.1 byte stream to a port-forward URL, tunneled through a WebSocket (client-go's
    /// `NewSPDYOverWebsocketDialer`): hand it to the SPDY port-forward client.
    pub async fn spdy_tunnel(url: &str) -> Result<tokio::io::DuplexStream, ClientError> {
        let (ws, chosen) = connect(url, &[SPDY_TUNNEL_PORT_FORWARD]).await?;
        if chosen != SPDY_TUNNEL_PORT_FORWARD {
            return Err(ClientError::Protocol(chosen));
        }
        Ok(tunnel(ws))
    }

    /// Relays one local connection to `port` in the pod over its own WebSocket (one per
    /// connection, as kubectl's WebSocket port-forward does).
    pub async fn forward_connection(
        url: &str,
        port: u16,
        local: tokio::net::TcpStream,
    ) -> Result<(), ClientError> {
        let base = url.split('?').next().unwrap_or(url);
        let url = format!("{base}?port={port}");
        let (ws, chosen) = connect(&url, &["v4.channel.k8s.io", PORT_FORWARD_PROTOCOL]).await?;
        let proto = negotiate(&[chosen], PORT_FORWARD).unwrap_or(p("", Protocol::V4, false));
        let (mut sink, mut source) = ws.split();
        let (mut rd, mut wr) = local.into_split();
        let upstream = async move {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                match rd.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        if sink.send(encode(proto.base64, 0, &buf[..n])).await.is_err() {
                            return;
                        }
                    }
                }
            }
            // Keep the connection open for the reply; the pod's side ends the session.
            std::future::pending::<()>().await;
        };
        let downstream = async move {
            // The first frame of each channel is the port number, not data.
            let mut seen_port = [false; 2];
            while let Some(Ok(msg)) = source.next().await {
                if matches!(msg, Message::Close(_)) {
                    break;
                }
                let Some((ch, data)) = decode(proto.base64, &msg) else {
                    continue;
                };
                if ch > 1 {
                    continue;
                }
                if !seen_port[ch as usize] {
                    seen_port[ch as usize] = true;
                    continue;
                }
                if ch == 0 {
                    if wr.write_all(&data).await.is_err() {
                        break;
                    }
                } else if !data.is_empty() {
                    eprintln!("port-forward: {}", String::from_utf8_lossy(&data));
                }
            }
            let _ = wr.shutdown().await;
        };
        tokio::select! {
            _ = upstream => {}
            _ = downstream => {}
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negotiation_follows_the_client_order() {
        let offer = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let got = negotiate(
            &offer(&["v4.channel.k8s.io", "v5.channel.k8s.io"]),
            REMOTE_COMMAND,
        );
        assert_eq!(got.map(|p| p.version), Some(Protocol::V4));
        assert_eq!(
            negotiate(&offer(&[]), REMOTE_COMMAND).map(|p| p.name),
            Some("")
        );
        assert_eq!(negotiate(&offer(&["v9.x"]), REMOTE_COMMAND), None);
        let b = negotiate(&offer(&["base64.channel.k8s.io"]), REMOTE_COMMAND).unwrap();
        assert!(b.base64);
    }

    /// client-go reads a Close without a status code (1005) as an error and then loses the
    /// exit code that came before it: a session must end with 1000.
    #[tokio::test]
    async fn a_session_ends_with_a_normal_close_after_the_status() {
        use tokio_tungstenite::tungstenite::protocol::{frame::coding::CloseCode, Role};
        let (server_io, client_io) = tokio::io::duplex(64 * 1024);
        let server_ws = WebSocketStream::from_raw_socket(server_io, Role::Server, None).await;
        let mut client = WebSocketStream::from_raw_socket(client_io, Role::Client, None).await;
        let proto =
            negotiate(&["v4.channel.k8s.io".to_string()], REMOTE_COMMAND).expect("v4 is offered");
        let opts = StreamOptions {
            stdout: true,
            ..Default::default()
        };
        let handler: CommandHandler = Box::new(|streams: super::super::CommandStreams| {
            Box::pin(async move {
                if let Some(mut out) = streams.stdout {
                    let _ = out.write_all(b"hi").await;
                }
                CommandOutcome::Exited(5)
            })
        });
        let server = tokio::spawn(serve_remotecommand(server_ws, proto, opts, handler));
        let mut status = Vec::new();
        let mut close = None;
        while let Some(Ok(msg)) = client.next().await {
            match msg {
                Message::Close(frame) => {
                    close = Some(frame);
                    break;
                }
                other => {
                    if let Some((ERROR, data)) = decode(false, &other) {
                        status.extend(data);
                    }
                }
            }
        }
        let _ = client.close(None).await;
        let _ = server.await;
        assert_eq!(
            client::outcome_of(Protocol::V4, &status),
            CommandOutcome::Exited(5)
        );
        let frame = close.flatten().expect("a close frame with a status code");
        assert_eq!(frame.code, CloseCode::Normal);
    }

    #[test]
    fn framing_round_trips() {
        for b64 in [false, true] {
            let m = encode(b64, STDERR, b"hi\0there");
            assert_eq!(decode(b64, &m), Some((STDERR, b"hi\0there".to_vec())));
        }
        assert_eq!(encode(true, STDOUT, b"a"), Message::Text("1YQ==".into()));
        assert_eq!(encode(false, ERROR, b""), Message::Binary(vec![3].into()));
    }

    #[test]
    fn client_reads_statuses() {
        let v4 = error_stream_payload(Protocol::V4, &CommandOutcome::Exited(7)).unwrap();
        assert_eq!(
            client::outcome_of(Protocol::V4, &v4),
            CommandOutcome::Exited(7)
        );
        let v3 = error_stream_payload(Protocol::V3, &CommandOutcome::Exited(3)).unwrap();
        assert_eq!(
            client::outcome_of(Protocol::V3, &v3),
            CommandOutcome::Exited(3)
        );
        assert_eq!(
            client::outcome_of(Protocol::V3, b""),
            CommandOutcome::Exited(0)
        );
        let failed =
            error_stream_payload(Protocol::V5, &CommandOutcome::Failed("x".into())).unwrap();
        assert_eq!(
            client::outcome_of(Protocol::V5, &failed),
            CommandOutcome::Failed("x".into())
        );
    }
}
