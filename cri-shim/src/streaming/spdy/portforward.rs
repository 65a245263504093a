//! The server side of `portforward.k8s.io` over SPDY, as kubelet's `portforward/httpstream.go`
//! runs it: for every forwarded connection the client opens an error stream and a data stream
//! sharing a `requestID`; once both are there the pod's port is dialled and bytes flow both
//! ways on the data stream, and a failure is told as text on the error stream. Any number of
//! requests run at once on one connection.

use std::collections::HashMap;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::frame::rst;
use super::remotecommand::{CLOSE_LINGER, STREAM_CREATION_TIMEOUT};
use super::session::{Connection, IncomingStream, Role, Stream, MAX_CHUNK, MAX_STREAMS};
use super::{PORT_HEADER, REQUEST_ID_HEADER, STREAM_TYPE_HEADER};
use crate::streaming::PortConnector;

struct Pair {
    error: Option<Stream>,
    data: Option<Stream>,
    deadline: Instant,
}

/// Serves port forwarding on a connection already upgraded to SPDY/3.1, dialling each
/// requested port with `connector`. Returns when the client has closed the connection and
/// every forwarded connection has ended.
pub async fn serve_portforward<IO>(io: IO, connector: PortConnector)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let (conn, mut incoming) = match Connection::start(io, Role::Server) {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "spdy portforward: cannot start the session");
            return;
        }
    };
    let mut pending: HashMap<String, Pair> = HashMap::new();
    let mut forwards = JoinSet::new();
    loop {
        let next_deadline = pending.values().map(|p| p.deadline).min();
        tokio::select! {
            s = incoming.recv() => match s {
                Some(s) => {
                    if let Some((id, pair)) = add_stream(&mut pending, s).await {
                        pending.remove(&id);
                        if let (Some(error), Some(data)) = (pair.error, pair.data) {
                            forwards.spawn(forward(id, error, data, connector.clone(), conn.clone()));
                        }
                    }
                }
                None => break,
            },
            _ = tokio::time::sleep_until(next_deadline.unwrap_or_else(Instant::now)), if next_deadline.is_some() => {
                let now = Instant::now();
                let expired: Vec<String> = pending.iter().filter(|(_, p)| p.deadline <= now).map(|(k, _)| k.clone()).collect();
                for id in expired {
                    if let Some(p) = pending.remove(&id) {
                        tracing::warn!(request = id, "spdy portforward: timed out waiting for the request's second stream");
                        if let Some(e) = p.error {
                            let mut send = e.send;
                            let _ = send.send(format!("timed out waiting for streams of request {id}").as_bytes()).await;
                            let _ = send.finish().await;
                        }
                    }
                }
            },
            Some(_) = forwards.join_next(), if !forwards.is_empty() => {}
        }
    }
    // The connection is gone; each forward notices it and ends.
    while forwards.join_next().await.is_some() {}
    conn.close(CLOSE_LINGER).await;
}

/// Takes a new stream into its request's pair; returns the pair once it is complete.
async fn add_stream(
    pending: &mut HashMap<String, Pair>,
    s: IncomingStream,
) -> Option<(String, Pair)> {
    let kind = s.header(STREAM_TYPE_HEADER).unwrap_or_default().to_string();
    let port_ok = s
        .header(PORT_HEADER)
        .and_then(|p| p.trim().parse::<u16>().ok())
        .is_some_and(|p| p > 0);
    if !port_ok || (kind != "error" && kind != "data") {
        tracing::warn!(stream = s.id, kind, port = ?s.header(PORT_HEADER), "spdy portforward: rejecting a stream without a valid port and type");
        s.refuse(rst::PROTOCOL_ERROR);
        return None;
    }
    // Clients before the requestID header opened error then data with consecutive ids.
    let id = match s.header(REQUEST_ID_HEADER) {
        Some(id) if !id.is_empty() => id.to_string(),
        _ if kind == "error" => s.id.to_string(),
        _ => s.id.saturating_sub(2).to_string(),
    };
    let taken = pending.get(&id).is_some_and(|p| {
        if kind == "error" {
            p.error.is_some()
        } else {
            p.data.is_some()
        }
    });
    if taken || (!pending.contains_key(&id) && pending.len() >= MAX_STREAMS / 2) {
        tracing::warn!(
            stream = s.id,
            request = id,
            kind,
            "spdy portforward: rejecting a duplicate or excess stream"
        );
        s.refuse(rst::REFUSED_STREAM);
        return None;
    }
    let stream = match s.accept().await {
        Ok(stream) => stream,
        Err(e) => {
            tracing::info!(error = %e, "spdy portforward: cannot reply to a stream");
            return None;
        }
    };
    let pair = pending.entry(id.clone()).or_insert_with(|| Pair {
        error: None,
        data: None,
        deadline: Instant::now() + STREAM_CREATION_TIMEOUT,
    });
    if kind == "error" {
        pair.error = Some(stream);
    } else {
        pair.data = Some(stream);
    }
    if pair.error.is_some() && pair.data.is_some() {
        return pending.remove(&id).map(|p| (id, p));
    }
    None
}

async fn forward(
    request: String,
    error: Stream,
    data: Stream,
    connector: PortConnector,
    conn: Connection,
) {
    let port = data
        .headers
        .iter()
        .find(|(n, _)| n == PORT_HEADER)
        .and_then(|(_, v)| v.trim().parse::<u16>().ok())
        .unwrap_or_default();
    let Stream {
        send: mut err_send, ..
    } = error;
    let Stream {
        send: mut data_send,
        recv: mut data_recv,
        ..
    } = data;
    let target = tokio::select! {
        t = connector(port) => t,
        _ = conn.closed() => return,
    };
    let target = match target {
        Ok(t) => t,
        Err(e) => {
            let msg = format!("error forwarding port {port}: {e}");
            tracing::info!(request, "spdy portforward: {msg}");
            let _ = err_send.send(msg.as_bytes()).await;
            let _ = err_send.finish().await;
            let _ = data_send.finish().await;
            return;
        }
    };
    let (mut from_pod, mut to_pod) = target.into_split();
    // Client → pod until the client half-closes (then the pod sees EOF) or resets.
    let up = async {
        loop {
            match data_recv.read().await {
                Ok(Some(b)) => {
                    if to_pod.write_all(&b).await.is_err() {
                        return false;
                    }
                }
                Ok(None) => {
                    let _ = to_pod.shutdown().await;
                    return true;
                }
                Err(_) => return false,
            }
        }
    };
    // Pod → client until the pod closes; then both streams are half-closed, which is what the
    // client waits for before it closes its side.
    let down = async {
        let mut buf = vec![0u8; MAX_CHUNK];
        loop {
            match from_pod.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if data_send.send(&buf[..n]).await.is_err() {
                        return;
                    }
                }
            }
        }
        let _ = data_send.finish().await;
        let _ = err_send.finish().await;
    };
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    while !(up_done && down_done) {
        tokio::select! {
            _ = conn.closed() => return,
            clean = &mut up, if !up_done => {
                up_done = true;
                if !clean {
                    // The client reset the stream: nobody reads what the pod says any more.
                    return;
                }
            }
            _ = &mut down, if !down_done => down_done = true,
        }
    }
}
