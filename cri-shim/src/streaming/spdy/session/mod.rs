//! One SPDY/3.1 connection: a reader task that parses frames and routes them to streams, a
//! writer task that owns the header compressor and the socket's write half, and flow control.
//!
//! Flow control both ways, with one twist for interoperability: moby/spdystream (the SPDY of
//! kubelet, kubectl, crictl and containerd) neither sends nor honours SETTINGS or WINDOW_UPDATE,
//! so a sender that waited for its window to reopen would stall forever after 64 KiB. The send
//! windows are therefore tracked always but enforced only once the peer has shown it does flow
//! control (a SETTINGS INITIAL_WINDOW_SIZE or any WINDOW_UPDATE). On the receiving side every
//! stream has a byte budget the size of the window this side advertises; a peer that sends past
//! it (spdystream does) is slowed by the reader waiting for the budget, which stops reading the
//! socket — so memory stays bounded either way.

mod reader;
mod writer;

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite, BufReader};
use tokio::sync::{mpsc, oneshot, watch, Notify, Semaphore};

use super::frame::{self, goaway, rst, Frame, Headers};
use super::zlib::{HeaderCompressor, HeaderDecompressor, ZlibError};
use reader::Reader;
use writer::Writer;

/// The stream window SPDY/3 starts with, before any SETTINGS.
const DEFAULT_WINDOW: i64 = 64 * 1024;
/// The per-stream receive window this side advertises, and each stream's receive budget.
pub const RECV_WINDOW: u32 = 256 * 1024;
/// The session-wide receive window (SPDY/3.1) this side opens; memory is bounded per stream.
const SESSION_RECV_WINDOW: u32 = 4 * 1024 * 1024;
/// The largest DATA frame this side sends, and the pieces it reads DATA payloads in.
pub const MAX_CHUNK: usize = 16 * 1024;
/// Streams open at once; more from the peer are refused.
pub const MAX_STREAMS: usize = 1024;
/// The largest control frame payload accepted (compressed header blocks included).
const MAX_CONTROL_PAYLOAD: usize = 512 * 1024;
/// How long `close` waits for queued frames to reach a peer that reads slowly.
const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// Frames the reader may queue for the writer (PING replies, resets) before the peer is
/// considered to be flooding.
const MAX_QUEUED_CONTROL: usize = 1024;
const MAX_WINDOW: i64 = 0x7fff_ffff;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Client,
    Server,
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("the SPDY connection is closed")]
    Closed,
    #[error("stream {0} is closed")]
    StreamClosed(u32),
    #[error("stream {id} was reset by the peer (status {status})")]
    Reset { id: u32, status: u32 },
    #[error("the peer sent GOAWAY and accepts no new streams")]
    GoneAway,
    #[error("no reply to stream {0} within {1:?}")]
    ReplyTimeout(u32, Duration),
    #[error("stream ids exhausted on this connection")]
    IdsExhausted,
    #[error("failed to set up header compression")]
    Zlib(#[source] ZlibError),
}

pub enum RecvEvent {
    Data(Bytes),
    Fin,
    Reset(u32),
}

struct RecvSide {
    tx: mpsc::UnboundedSender<RecvEvent>,
    budget: Arc<Semaphore>,
}

struct StreamEntry {
    send_window: i64,
    recv: Option<RecvSide>,
    reply: Option<oneshot::Sender<Result<Headers, SessionError>>>,
    local_fin: bool,
    remote_fin: bool,
}

struct State {
    streams: HashMap<u32, StreamEntry>,
    next_id: u32,
    last_peer_id: u32,
    peer_initial_window: i64,
    session_send_window: i64,
    enforce: bool,
    dead: bool,
    peer_goaway: bool,
    session_unacked: u32,
}

enum Out {
    Frame(Frame),
    Shutdown,
}

struct Shared {
    role: Role,
    state: Mutex<State>,
    window_changed: Notify,
    out: mpsc::Sender<Out>,
    ctrl: mpsc::UnboundedSender<Frame>,
    ctrl_queued: Arc<AtomicUsize>,
    open_lock: tokio::sync::Mutex<()>,
    closed: watch::Sender<bool>,
    /// Its sender lives as long as the writer task: `changed()` fails once the writer is done.
    writer_alive: watch::Receiver<()>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves plain counters behind: keep going.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Queues a frame from a context that cannot wait (the reader, a Drop). Bounded by the
    /// caller's count; the reader treats overflow as a flood.
    fn send_ctrl(&self, f: Frame) -> bool {
        if self.ctrl_queued.fetch_add(1, Ordering::SeqCst) >= MAX_QUEUED_CONTROL {
            self.ctrl_queued.fetch_sub(1, Ordering::SeqCst);
            return false;
        }
        if self.ctrl.send(f).is_err() {
            self.ctrl_queued.fetch_sub(1, Ordering::SeqCst);
        }
        true
    }

    async fn send(&self, f: Frame) -> Result<(), SessionError> {
        if self.lock().dead {
            return Err(SessionError::Closed);
        }
        self.out
            .send(Out::Frame(f))
            .await
            .map_err(|_| SessionError::Closed)
    }

    /// Credits `n` consumed or discarded bytes to the session window; a WINDOW_UPDATE for
    /// stream 0 once enough has gathered.
    fn credit_session(&self, n: usize) -> Option<Frame> {
        let mut st = self.lock();
        st.session_unacked = st.session_unacked.saturating_add(n as u32);
        if st.session_unacked >= SESSION_RECV_WINDOW / 4 {
            let delta = std::mem::take(&mut st.session_unacked);
            return Some(Frame::WindowUpdate {
                stream_id: 0,
                delta,
            });
        }
        None
    }

    fn new_entry(&self, st: &State, recv: Option<RecvSide>) -> StreamEntry {
        StreamEntry {
            send_window: st.peer_initial_window,
            recv,
            reply: None,
            local_fin: false,
            remote_fin: false,
        }
    }

    fn finish_local(&self, id: u32) {
        let mut st = self.lock();
        if let Some(e) = st.streams.get_mut(&id) {
            e.local_fin = true;
            if e.remote_fin {
                st.streams.remove(&id);
            }
        }
    }
}

fn new_recv() -> (RecvSide, mpsc::UnboundedReceiver<RecvEvent>, Arc<Semaphore>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let budget = Arc::new(Semaphore::new(RECV_WINDOW as usize));
    (
        RecvSide {
            tx,
            budget: budget.clone(),
        },
        rx,
        budget,
    )
}

/// A stream's sending side.
pub struct SendHalf {
    id: u32,
    shared: Arc<Shared>,
    finished: bool,
}

impl SendHalf {
    pub fn id(&self) -> u32 {
        self.id
    }

    /// Sends `data`, in frames of at most [`MAX_CHUNK`], each when the peer's window allows.
    pub async fn send(&mut self, mut data: &[u8]) -> Result<(), SessionError> {
        while !data.is_empty() {
            let n = self.reserve(data.len()).await?;
            let (now, rest) = data.split_at(n);
            self.shared
                .send(Frame::Data {
                    stream_id: self.id,
                    fin: false,
                    data: Bytes::copy_from_slice(now),
                })
                .await?;
            data = rest;
        }
        Ok(())
    }

    async fn reserve(&self, want: usize) -> Result<usize, SessionError> {
        loop {
            let notified = self.shared.window_changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut st = self.shared.lock();
                if st.dead {
                    return Err(SessionError::Closed);
                }
                let enforce = st.enforce;
                let session = st.session_send_window;
                let Some(e) = st.streams.get_mut(&self.id) else {
                    return Err(SessionError::StreamClosed(self.id));
                };
                let avail = if enforce {
                    e.send_window.min(session)
                } else {
                    MAX_CHUNK as i64
                };
                if avail > 0 {
                    let n = want.min(MAX_CHUNK).min(avail as usize);
                    e.send_window -= n as i64;
                    st.session_send_window -= n as i64;
                    return Ok(n);
                }
            }
            notified.await;
        }
    }

    /// Half-closes the stream: an empty DATA frame with FIN.
    pub async fn finish(mut self) -> Result<(), SessionError> {
        self.finished = true;
        let res = self
            .shared
            .send(Frame::Data {
                stream_id: self.id,
                fin: true,
                data: Bytes::new(),
            })
            .await;
        self.shared.finish_local(self.id);
        res
    }

    /// Abandons the stream both ways (RST_STREAM).
    pub fn reset(mut self, status: u32) {
        self.finished = true;
        self.shared.lock().streams.remove(&self.id);
        self.shared.send_ctrl(Frame::RstStream {
            stream_id: self.id,
            status,
        });
    }
}

impl Drop for SendHalf {
    /// A sending side dropped without `finish` is a cancelled stream: tell the peer so it does
    /// not wait for a FIN that never comes.
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let removed = {
            let mut st = self.shared.lock();
            match st.streams.get(&self.id) {
                Some(e) if !e.local_fin => st.streams.remove(&self.id).is_some() && !st.dead,
                _ => false,
            }
        };
        if removed {
            self.shared.send_ctrl(Frame::RstStream {
                stream_id: self.id,
                status: rst::CANCEL,
            });
        }
    }
}

/// A stream's receiving side.
pub struct RecvHalf {
    id: u32,
    shared: Arc<Shared>,
    rx: mpsc::UnboundedReceiver<RecvEvent>,
    budget: Arc<Semaphore>,
    unacked: u32,
    done: bool,
}

impl RecvHalf {
    /// The next piece of data; `Ok(None)` once the peer has half-closed the stream.
    pub async fn read(&mut self) -> Result<Option<Bytes>, SessionError> {
        if self.done {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(RecvEvent::Data(b)) => {
                self.consumed(b.len()).await;
                Ok(Some(b))
            }
            Some(RecvEvent::Fin) => {
                self.done = true;
                Ok(None)
            }
            Some(RecvEvent::Reset(status)) => Err(SessionError::Reset {
                id: self.id,
                status,
            }),
            None => Err(SessionError::Closed),
        }
    }

    async fn consumed(&mut self, n: usize) {
        self.budget.add_permits(n);
        self.unacked += n as u32;
        if self.unacked >= RECV_WINDOW / 2 {
            let delta = std::mem::take(&mut self.unacked);
            // Best effort: a closed connection needs no window.
            let _ = self
                .shared
                .send(Frame::WindowUpdate {
                    stream_id: self.id,
                    delta,
                })
                .await;
        }
        if let Some(f) = self.shared.credit_session(n) {
            let _ = self.shared.send(f).await;
        }
    }
}

impl Drop for RecvHalf {
    fn drop(&mut self) {
        // The reader discards (and credits) whatever still arrives for this stream.
        self.budget.close();
    }
}

/// A stream, either side's.
pub struct Stream {
    pub id: u32,
    pub headers: Headers,
    pub send: SendHalf,
    pub recv: RecvHalf,
}

/// A stream the peer opened, not yet answered.
pub struct IncomingStream {
    pub id: u32,
    pub headers: Headers,
    stream: Stream,
}

impl IncomingStream {
    pub fn header(&self, name: &str) -> Option<&str> {
        frame::header(&self.headers, name)
    }

    /// Answers with SYN_REPLY (no headers, as kubelet's server does).
    pub async fn accept(self) -> Result<Stream, SessionError> {
        self.stream
            .send
            .shared
            .send(Frame::SynReply {
                stream_id: self.id,
                fin: false,
                headers: Headers::new(),
            })
            .await?;
        Ok(self.stream)
    }

    pub fn refuse(self, status: u32) {
        self.stream.send.reset(status);
    }
}

/// The handle on a connection; dropping the last clone stops its reader.
#[derive(Clone)]
pub struct Connection {
    shared: Arc<Shared>,
    _stop: Arc<StopOnDrop>,
}

struct StopOnDrop(watch::Sender<bool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.send_replace(true);
    }
}

impl Connection {
    /// Starts the reader and writer tasks on `io`; peer-opened streams arrive on the receiver
    /// (a client refuses them itself).
    pub fn start<IO>(
        io: IO,
        role: Role,
    ) -> Result<(Connection, mpsc::Receiver<IncomingStream>), SessionError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let compressor = HeaderCompressor::new().map_err(SessionError::Zlib)?;
        let (out_tx, out_rx) = mpsc::channel(32);
        let (ctrl_tx, ctrl_rx) = mpsc::unbounded_channel();
        let (closed, _) = watch::channel(false);
        let (alive_tx, writer_alive) = watch::channel(());
        let shared = Arc::new(Shared {
            role,
            state: Mutex::new(State {
                streams: HashMap::new(),
                next_id: if role == Role::Client { 1 } else { 2 },
                last_peer_id: 0,
                peer_initial_window: DEFAULT_WINDOW,
                session_send_window: DEFAULT_WINDOW,
                enforce: false,
                dead: false,
                peer_goaway: false,
                session_unacked: 0,
            }),
            window_changed: Notify::new(),
            out: out_tx,
            ctrl: ctrl_tx,
            ctrl_queued: Arc::new(AtomicUsize::new(0)),
            open_lock: tokio::sync::Mutex::new(()),
            closed,
            writer_alive,
        });
        let (r, w) = tokio::io::split(io);
        let (stop, stop_rx) = watch::channel(false);
        let (in_tx, in_rx) = mpsc::channel(64);
        let writer = Writer {
            w,
            z: compressor,
            out_rx,
            ctrl_rx,
            ctrl_queued: shared.ctrl_queued.clone(),
            shared: Arc::downgrade(&shared),
        };
        tokio::spawn(writer.run(stop_rx.clone(), alive_tx));
        let reader = Reader {
            r: BufReader::with_capacity(64 * 1024, r),
            z: HeaderDecompressor::default(),
            shared: shared.clone(),
            incoming: in_tx,
        };
        tokio::spawn(reader.run(stop_rx));
        Ok((
            Connection {
                shared,
                _stop: Arc::new(StopOnDrop(stop)),
            },
            in_rx,
        ))
    }

    /// Opens a stream and waits up to `timeout` for the peer's SYN_REPLY.
    pub async fn open(&self, headers: Headers, timeout: Duration) -> Result<Stream, SessionError> {
        let (reply_tx, reply_rx) = oneshot::channel();
        let (recv, rx, budget) = new_recv();
        let id = {
            let _order = self.shared.open_lock.lock().await;
            let id = {
                let mut st = self.shared.lock();
                if st.dead {
                    return Err(SessionError::Closed);
                }
                if st.peer_goaway {
                    return Err(SessionError::GoneAway);
                }
                let id = st.next_id;
                if id > 0x7fff_ffff {
                    return Err(SessionError::IdsExhausted);
                }
                st.next_id += 2;
                let mut e = self.shared.new_entry(&st, Some(recv));
                e.reply = Some(reply_tx);
                st.streams.insert(id, e);
                id
            };
            // Ids must rise on the wire: the frame is queued before the lock is let go.
            self.shared
                .send(Frame::SynStream {
                    stream_id: id,
                    associated_to: 0,
                    priority: 0,
                    flags: 0,
                    headers: headers.clone(),
                })
                .await?;
            id
        };
        let send = SendHalf {
            id,
            shared: self.shared.clone(),
            finished: false,
        };
        let recv = RecvHalf {
            id,
            shared: self.shared.clone(),
            rx,
            budget,
            unacked: 0,
            done: false,
        };
        match tokio::time::timeout(timeout, reply_rx).await {
            Ok(Ok(Ok(_reply_headers))) => Ok(Stream {
                id,
                headers,
                send,
                recv,
            }),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(SessionError::Closed),
            Err(_) => Err(SessionError::ReplyTimeout(id, timeout)),
        }
    }

    /// Says GOAWAY, flushes and half-closes the socket, then waits up to `linger` for the peer
    /// to close its side, so that nothing it still sends makes the kernel reset the connection
    /// before it has read everything this side wrote.
    pub async fn close(&self, linger: Duration) {
        let last = self.shared.lock().last_peer_id;
        let flush = async {
            let _ = self
                .shared
                .out
                .send(Out::Frame(Frame::GoAway {
                    last_good_stream_id: last,
                    status: goaway::OK,
                }))
                .await;
            let _ = self.shared.out.send(Out::Shutdown).await;
            let mut alive = self.shared.writer_alive.clone();
            while alive.changed().await.is_ok() {}
        };
        if tokio::time::timeout(FLUSH_TIMEOUT, flush).await.is_err() {
            tracing::warn!("spdy: the peer reads nothing; closing without flushing");
        }
        let _ = tokio::time::timeout(linger, self.closed()).await;
    }

    /// Resolves once the connection is gone (peer closed it, or a protocol or I/O error).
    pub async fn closed(&self) {
        let mut rx = self.shared.closed.subscribe();
        let _ = rx.wait_for(|c| *c).await;
    }

    pub fn is_closed(&self) -> bool {
        self.shared.lock().dead
    }
}

/// Fails everything waiting on the connection.
fn mark_dead(shared: &Shared) {
    let streams = {
        let mut st = shared.lock();
        st.dead = true;
        std::mem::take(&mut st.streams)
    };
    // Dropping the entries drops the receivers' senders (their reads end with Closed) and
    // the reply senders (their opens end with Closed).
    drop(streams);
    shared.window_changed.notify_waiters();
    shared.closed.send_replace(true);
}
