//! The reader task: parses the peer's frames and routes them — data to the stream's receiver
//! (within its budget), replies to the waiting opener, window changes to the senders.

use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncReadExt, BufReader};
use tokio::sync::{mpsc, watch};

use super::{
    mark_dead, new_recv, IncomingStream, Out, RecvEvent, RecvHalf, Role, SendHalf, SessionError,
    Shared, Stream, MAX_CHUNK, MAX_CONTROL_PAYLOAD, MAX_STREAMS, MAX_WINDOW,
};
use crate::streaming::spdy::frame::{
    self, decode_control, goaway, parse_head, rst, Frame, FrameError, Head, Headers, FLAG_FIN,
    FLAG_UNIDIRECTIONAL, SETTINGS_INITIAL_WINDOW_SIZE,
};
use crate::streaming::spdy::zlib::HeaderDecompressor;

/// Why the reader stopped: the connection's end, for the log.
#[derive(Debug, thiserror::Error)]
enum ReadError {
    #[error("reading from the peer")]
    Io(#[source] std::io::Error),
    #[error("malformed frame from the peer")]
    Frame(#[source] FrameError),
    #[error("control frame of {0} bytes is over the {MAX_CONTROL_PAYLOAD}-byte limit")]
    ControlTooLarge(usize),
    #[error("the peer floods this side with frames needing an answer")]
    Flood,
}

pub(super) struct Reader<R> {
    pub(super) r: BufReader<R>,
    pub(super) z: HeaderDecompressor,
    pub(super) shared: Arc<Shared>,
    pub(super) incoming: mpsc::Sender<IncomingStream>,
}

impl<R: AsyncRead + Unpin> Reader<R> {
    pub(super) async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let shared = self.shared.clone();
        let res = tokio::select! {
            _ = stop.wait_for(|s| *s) => Ok(()),
            res = self.read_all() => res,
        };
        match res {
            Ok(()) => {}
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {}
            Err(ReadError::Io(e)) => tracing::debug!(error = %e, "spdy: connection read failed"),
            Err(e) => {
                tracing::warn!(error = %e, source = ?std::error::Error::source(&e), "spdy: protocol error, closing the connection");
                let last = shared.lock().last_peer_id;
                let _ = shared.out.try_send(Out::Frame(Frame::GoAway {
                    last_good_stream_id: last,
                    status: goaway::PROTOCOL_ERROR,
                }));
                let _ = shared.out.try_send(Out::Shutdown);
            }
        }
        mark_dead(&shared);
    }

    async fn read_all(&mut self) -> Result<(), ReadError> {
        loop {
            let mut head = [0u8; 8];
            match self.r.read_exact(&mut head).await {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Err(e) => return Err(ReadError::Io(e)),
            }
            match parse_head(head) {
                Head::Data {
                    stream_id,
                    flags,
                    len,
                } => self.data(stream_id, flags, len).await?,
                Head::Control {
                    version,
                    kind,
                    flags,
                    len,
                } => {
                    if version != frame::VERSION {
                        return Err(ReadError::Frame(FrameError::UnsupportedVersion(version)));
                    }
                    if len > MAX_CONTROL_PAYLOAD {
                        return Err(ReadError::ControlTooLarge(len));
                    }
                    let mut payload = vec![0u8; len];
                    self.r
                        .read_exact(&mut payload)
                        .await
                        .map_err(ReadError::Io)?;
                    match decode_control(kind, flags, &payload, &mut self.z)
                        .map_err(ReadError::Frame)?
                    {
                        Some(f) => self.control(f).await?,
                        None => {
                            tracing::debug!(kind, "spdy: ignoring a control frame of unknown type")
                        }
                    }
                }
            }
        }
    }

    fn ctrl(&self, f: Frame) -> Result<(), ReadError> {
        if self.shared.send_ctrl(f) {
            Ok(())
        } else {
            Err(ReadError::Flood)
        }
    }

    async fn data(&mut self, id: u32, flags: u8, len: usize) -> Result<(), ReadError> {
        let target = {
            let st = self.shared.lock();
            st.streams
                .get(&id)
                .and_then(|e| e.recv.as_ref())
                .map(|r| (r.tx.clone(), r.budget.clone()))
        };
        if target.is_none() && len > 0 {
            tracing::debug!(
                stream = id,
                len,
                "spdy: discarding data for a stream nobody reads"
            );
        }
        let mut left = len;
        while left > 0 {
            let n = left.min(MAX_CHUNK);
            let mut chunk = BytesMut::zeroed(n);
            self.r.read_exact(&mut chunk).await.map_err(ReadError::Io)?;
            left -= n;
            let delivered = match &target {
                Some((tx, budget)) => match budget.clone().acquire_many_owned(n as u32).await {
                    Ok(permit) => {
                        permit.forget();
                        tx.send(RecvEvent::Data(chunk.freeze())).is_ok()
                    }
                    Err(_) => false,
                },
                None => false,
            };
            if !delivered {
                if let Some(f) = self.shared.credit_session(n) {
                    self.ctrl(f)?;
                }
            }
        }
        if flags & FLAG_FIN != 0 {
            self.remote_fin(id);
        }
        Ok(())
    }

    fn remote_fin(&self, id: u32) {
        let mut st = self.shared.lock();
        if let Some(e) = st.streams.get_mut(&id) {
            e.remote_fin = true;
            if let Some(r) = e.recv.take() {
                let _ = r.tx.send(RecvEvent::Fin);
            }
            if e.local_fin {
                st.streams.remove(&id);
            }
        }
    }

    async fn control(&mut self, f: Frame) -> Result<(), ReadError> {
        match f {
            Frame::SynStream {
                stream_id,
                flags,
                headers,
                ..
            } => self.syn_stream(stream_id, flags, headers).await?,
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let waiter = self
                    .shared
                    .lock()
                    .streams
                    .get_mut(&stream_id)
                    .and_then(|e| e.reply.take());
                if let Some(w) = waiter {
                    let _ = w.send(Ok(headers));
                }
                if fin {
                    self.remote_fin(stream_id);
                }
            }
            Frame::Headers { stream_id, fin, .. } => {
                if fin {
                    self.remote_fin(stream_id);
                }
            }
            Frame::RstStream { stream_id, status } => {
                let entry = self.shared.lock().streams.remove(&stream_id);
                if let Some(mut e) = entry {
                    if let Some(r) = e.recv.take() {
                        let _ = r.tx.send(RecvEvent::Reset(status));
                    }
                    if let Some(w) = e.reply.take() {
                        let _ = w.send(Err(SessionError::Reset {
                            id: stream_id,
                            status,
                        }));
                    }
                }
                self.shared.window_changed.notify_waiters();
            }
            Frame::Settings { settings, .. } => {
                let mut st = self.shared.lock();
                for s in settings {
                    if s.id == SETTINGS_INITIAL_WINDOW_SIZE {
                        let value = i64::from(s.value.min(MAX_WINDOW as u32));
                        let delta = value - st.peer_initial_window;
                        st.peer_initial_window = value;
                        for e in st.streams.values_mut() {
                            e.send_window += delta;
                        }
                        st.enforce = true;
                    }
                }
                drop(st);
                self.shared.window_changed.notify_waiters();
            }
            Frame::WindowUpdate { stream_id, delta } => self.window_update(stream_id, delta)?,
            Frame::Ping { id } => {
                // Odd ids are the client's: answer the peer's pings, ignore answers to ours.
                let peers = (id % 2 == 1) == (self.shared.role == Role::Server);
                if peers {
                    self.ctrl(Frame::Ping { id })?;
                }
            }
            Frame::GoAway { .. } => {
                self.shared.lock().peer_goaway = true;
            }
            Frame::Data { .. } => {}
        }
        Ok(())
    }

    fn window_update(&mut self, id: u32, delta: u32) -> Result<(), ReadError> {
        let mut overflow = false;
        {
            let mut st = self.shared.lock();
            st.enforce = true;
            if id == 0 {
                st.session_send_window =
                    (st.session_send_window + i64::from(delta)).min(MAX_WINDOW);
            } else if let Some(e) = st.streams.get_mut(&id) {
                e.send_window += i64::from(delta);
                if e.send_window > MAX_WINDOW {
                    overflow = true;
                    st.streams.remove(&id);
                }
            }
        }
        self.shared.window_changed.notify_waiters();
        if overflow {
            tracing::warn!(
                stream = id,
                "spdy: the peer's window update overflows the window; resetting the stream"
            );
            self.ctrl(Frame::RstStream {
                stream_id: id,
                status: rst::FLOW_CONTROL_ERROR,
            })?;
        }
        Ok(())
    }

    async fn syn_stream(&mut self, id: u32, flags: u8, headers: Headers) -> Result<(), ReadError> {
        let peer_parity = if self.shared.role == Role::Server {
            1
        } else {
            0
        };
        let refuse = {
            let mut st = self.shared.lock();
            if id % 2 != peer_parity || id <= st.last_peer_id {
                Some(rst::PROTOCOL_ERROR)
            } else {
                st.last_peer_id = id;
                if self.shared.role == Role::Client || st.streams.len() >= MAX_STREAMS {
                    Some(rst::REFUSED_STREAM)
                } else {
                    None
                }
            }
        };
        if let Some(status) = refuse {
            tracing::debug!(
                stream = id,
                status,
                "spdy: refusing a stream the peer opened"
            );
            return self.ctrl(Frame::RstStream {
                stream_id: id,
                status,
            });
        }
        let (recv, rx, budget) = new_recv();
        {
            let mut st = self.shared.lock();
            let mut e = self.shared.new_entry(&st, Some(recv));
            e.local_fin = flags & FLAG_UNIDIRECTIONAL != 0;
            st.streams.insert(id, e);
        }
        if flags & FLAG_FIN != 0 {
            self.remote_fin(id);
        }
        let stream = Stream {
            id,
            headers: headers.clone(),
            send: SendHalf {
                id,
                shared: self.shared.clone(),
                finished: flags & FLAG_UNIDIRECTIONAL != 0,
            },
            recv: RecvHalf {
                id,
                shared: self.shared.clone(),
                rx,
                budget,
                unacked: 0,
                done: false,
            },
        };
        // Nobody taking streams any more (the session is winding down) drops it, which resets it.
        let _ = self
            .incoming
            .send(IncomingStream {
                id,
                headers,
                stream,
            })
            .await;
        Ok(())
    }
}
