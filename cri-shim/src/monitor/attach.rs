//! The monitor's side of attach: a SOCK_SEQPACKET listener at `<bundle>/attach` (the path
//! follows from the bundle alone, so a restarted rcri finds it), the sessions connected to it,
//! and the container's stdin (a pipe, or the pty master when the container has a terminal).
//!
//! Output fans out to every session from the moment it connected. Nothing here may block the
//! monitor: sends are MSG_DONTWAIT and a session whose socket buffer is full is dropped (a
//! stalled client must not stall the log); stdin is written non-blocking and, while the
//! container does not read it, input from the sessions is left unread in their sockets rather
//! than buffered here. Frames are described in [`super::frame`].

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::sys::socket::{
    accept4, bind, listen, recv, send, setsockopt, socket, sockopt, AddressFamily, Backlog,
    MsgFlags, SockFlag, SockType, UnixAddr,
};

use super::console::{bind_in, open_dir};
use super::frame::{Frame, MAX_FRAME};
use super::{sys_err, MonitorError};

/// Sessions beyond this are refused (closed at once): each costs an fd and socket memory.
const MAX_SESSIONS: usize = 16;
/// Send buffer asked for per session (SO_SNDBUFFORCE, as root; best effort): every small frame
/// costs several hundred bytes of it, and a burst of output must not drop a reader that is
/// merely a little behind.
const SESSION_SNDBUF: usize = 512 * 1024;

struct Session {
    fd: OwnedFd,
    /// Sent stdin (or announced it): its end closes the container's stdin under stdin_once.
    had_stdin: bool,
    /// False after the client shut down its sending side (read end-of-stream).
    reading: bool,
}

/// The container's stdin as the monitor holds it.
struct StdinSink {
    fd: OwnedFd,
    /// Input accepted from a session but not yet taken by the container.
    pending: Vec<u8>,
    close_when_flushed: bool,
    /// A pty master: closing our copy would not end the container's input, so "close" sends
    /// the terminal's end-of-file character instead (a canonical-mode reader sees EOF).
    terminal: bool,
}

pub struct Attach {
    listener: OwnedFd,
    path: PathBuf,
    sessions: Vec<Session>,
    stdin: Option<StdinSink>,
    stdin_once: bool,
    /// The pty master, for resizes.
    terminal: Option<OwnedFd>,
}

/// Where the pollfds of one [`Attach::poll_fds`] call start, to hand back their revents.
pub struct PollSlots {
    start: usize,
    sessions: usize,
    stdin: bool,
}

impl Attach {
    /// Listens on `<bundle>/attach`, replacing a stale socket of an earlier start.
    pub fn listen(bundle: &Path) -> Result<Attach, MonitorError> {
        let path = super::attach_socket(bundle);
        let _ = std::fs::remove_file(&path);
        let listener = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            None,
        )
        .map_err(sys_err("create the attach socket"))?;
        bind_in(&open_dir(bundle)?, bundle, "attach", |short| {
            let addr = UnixAddr::new(short).map_err(sys_err("build the attach address"))?;
            bind(listener.as_raw_fd(), &addr).map_err(sys_err(format!("bind {}", path.display())))
        })?;
        let backlog = Backlog::new(MAX_SESSIONS as i32).unwrap_or(Backlog::MAXCONN);
        listen(&listener, backlog).map_err(sys_err(format!("listen on {}", path.display())))?;
        Ok(Attach {
            listener,
            path,
            sessions: Vec::new(),
            stdin: None,
            stdin_once: false,
            terminal: None,
        })
    }

    /// The container's stdin: a pipe's write end, or (with `terminal`) a copy of the pty master.
    pub fn set_stdin(&mut self, fd: OwnedFd, terminal: bool, once: bool) {
        set_nonblocking(fd.as_raw_fd());
        self.stdin = Some(StdinSink {
            fd,
            pending: Vec::new(),
            close_when_flushed: false,
            terminal,
        });
        self.stdin_once = once;
    }

    pub fn set_terminal(&mut self, master: OwnedFd) {
        self.terminal = Some(master);
    }

    /// Appends the fds to poll: the listener, each session, and stdin while input waits.
    pub fn poll_fds(&self, fds: &mut Vec<libc::pollfd>) -> PollSlots {
        let start = fds.len();
        let blocked = self.stdin.as_ref().is_some_and(|s| !s.pending.is_empty());
        fds.push(pollfd(self.listener.as_raw_fd(), libc::POLLIN));
        for s in &self.sessions {
            // Unread input stays in the socket while the container is not taking stdin;
            // hang-ups and errors are reported whatever the events.
            let events = if s.reading && !blocked {
                libc::POLLIN
            } else {
                0
            };
            fds.push(pollfd(s.fd.as_raw_fd(), events));
        }
        if let Some(sink) = self.stdin.as_ref().filter(|s| !s.pending.is_empty()) {
            fds.push(pollfd(sink.fd.as_raw_fd(), libc::POLLOUT));
        }
        PollSlots {
            start,
            sessions: self.sessions.len(),
            stdin: blocked,
        }
    }

    /// Acts on what poll reported for the fds of `slots`. `buf` is scratch for one frame.
    pub fn handle(&mut self, fds: &[libc::pollfd], slots: PollSlots, buf: &mut [u8]) {
        let mut at = slots.start;
        let listener_ready = fds[at].revents & libc::POLLIN != 0;
        at += 1;
        let session_slots = &fds[at..at + slots.sessions];
        at += slots.sessions;
        if slots.stdin && fds[at].revents != 0 {
            self.flush_stdin();
        }
        // From the last: removing session i (swap_remove) only moves one already visited.
        for (i, p) in session_slots.iter().enumerate().rev() {
            if p.revents & libc::POLLIN != 0 {
                self.read_session(i, buf);
            } else if p.revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                self.end_session(i);
            }
        }
        if listener_ready {
            self.accept();
        }
    }

    /// Sends one output frame (already encoded in `frame`) to every session.
    pub fn broadcast(&mut self, frame: &[u8]) {
        let mut i = self.sessions.len();
        while i > 0 {
            i -= 1;
            let sent = send(
                self.sessions[i].fd.as_raw_fd(),
                frame,
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
            );
            if sent.is_err() {
                // EAGAIN: the client fell a socket buffer behind; anything else: it is gone.
                self.end_session(i);
            }
        }
    }

    fn accept(&mut self) {
        loop {
            let fd = match accept4(
                self.listener.as_raw_fd(),
                SockFlag::SOCK_NONBLOCK | SockFlag::SOCK_CLOEXEC,
            ) {
                // SAFETY: accept4 returned a new fd that nothing else owns.
                Ok(fd) => unsafe { <OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) },
                Err(Errno::EINTR) | Err(Errno::ECONNABORTED) => continue,
                Err(_) => return,
            };
            if self.sessions.len() >= MAX_SESSIONS {
                eprintln!("attach: refusing a session beyond {MAX_SESSIONS}");
                continue;
            }
            if setsockopt(&fd, sockopt::SndBufForce, &SESSION_SNDBUF).is_err() {
                let _ = setsockopt(&fd, sockopt::SndBuf, &SESSION_SNDBUF);
            }
            self.sessions.push(Session {
                fd,
                had_stdin: false,
                reading: true,
            });
        }
    }

    fn read_session(&mut self, i: usize, buf: &mut [u8]) {
        let n = match recv(
            self.sessions[i].fd.as_raw_fd(),
            buf,
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_TRUNC,
        ) {
            Ok(n) => n,
            Err(Errno::EAGAIN) | Err(Errno::EINTR) => return,
            Err(_) => return self.end_session(i),
        };
        if n == 0 {
            // The client shut down its sending side: its input is over, its output goes on.
            self.sessions[i].reading = false;
            return self.input_ended(i);
        }
        if n > buf.len().min(MAX_FRAME) {
            eprintln!("attach: dropping a session that sent a {n}-byte frame");
            return self.end_session(i);
        }
        match Frame::decode(&buf[..n]) {
            Ok(Frame::Stdin(data)) => {
                self.sessions[i].had_stdin = true;
                self.write_stdin(data);
            }
            Ok(Frame::StdinClose) => {
                self.sessions[i].had_stdin = true;
                self.input_ended(i);
            }
            Ok(Frame::Resize { width, height }) => self.resize(width, height),
            Ok(Frame::Stdout(_)) | Ok(Frame::Stderr(_)) => {}
            Err(e) => {
                eprintln!("attach: dropping a session: {e}");
                self.end_session(i);
            }
        }
    }

    /// A session is over: its socket is closed, and under stdin_once the container's stdin too
    /// if the session had stdin.
    fn end_session(&mut self, i: usize) {
        let session = self.sessions.swap_remove(i);
        if session.had_stdin {
            self.stdin_session_over();
        }
    }

    fn input_ended(&mut self, i: usize) {
        if self.sessions[i].had_stdin {
            self.sessions[i].had_stdin = false;
            self.stdin_session_over();
        }
    }

    fn stdin_session_over(&mut self) {
        if !self.stdin_once {
            return;
        }
        if let Some(sink) = self.stdin.as_mut() {
            sink.close_when_flushed = true;
            if sink.pending.is_empty() {
                self.close_stdin();
            }
        }
    }

    fn close_stdin(&mut self) {
        let Some(sink) = self.stdin.take() else {
            return;
        };
        if sink.terminal {
            // SAFETY: termios is plain data that tcgetattr fills in.
            let mut t: libc::termios = unsafe { std::mem::zeroed() };
            // On a pty master, TCGETS reads the slave's settings.
            let veof = if unsafe { libc::tcgetattr(sink.fd.as_raw_fd(), &mut t) } == 0 {
                t.c_cc[libc::VEOF]
            } else {
                4
            };
            let _ = nix::unistd::write(sink.fd.as_fd(), &[veof]);
        }
    }

    fn write_stdin(&mut self, data: &[u8]) {
        let Some(sink) = self.stdin.as_mut() else {
            return;
        };
        if sink.close_when_flushed || data.is_empty() {
            return;
        }
        if !sink.pending.is_empty() {
            sink.pending.extend_from_slice(data);
            return;
        }
        match write_some(sink.fd.as_raw_fd(), data) {
            Ok(n) if n == data.len() => {}
            Ok(n) => sink.pending.extend_from_slice(&data[n..]),
            Err(_) => self.stdin = None,
        }
    }

    fn flush_stdin(&mut self) {
        let Some(sink) = self.stdin.as_mut() else {
            return;
        };
        match write_some(sink.fd.as_raw_fd(), &sink.pending) {
            Ok(n) => {
                sink.pending.drain(..n);
                if sink.pending.is_empty() {
                    // Back to its idle size: a burst must not stay in the monitor's RSS.
                    sink.pending = Vec::new();
                    if sink.close_when_flushed {
                        self.close_stdin();
                    }
                }
            }
            // The container closed its stdin (EPIPE) or its terminal is gone (EIO).
            Err(_) => self.stdin = None,
        }
    }

    fn resize(&self, width: u16, height: u16) {
        let Some(master) = &self.terminal else { return };
        let ws = libc::winsize {
            ws_row: height,
            ws_col: width,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from the pointer, which outlives the call. On a
        // pty master it sets the slave's size and signals SIGWINCH to its foreground group.
        let r = unsafe { libc::ioctl(master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        if r != 0 {
            eprintln!(
                "attach: failed to resize the terminal: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

impl Drop for Attach {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn pollfd(fd: RawFd, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

fn set_nonblocking(fd: RawFd) {
    // SAFETY: F_GETFL/F_SETFL on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
        }
    }
}

/// One non-blocking write: how much the fd took (0 when it would block).
fn write_some(fd: RawFd, data: &[u8]) -> Result<usize, Errno> {
    loop {
        // SAFETY: data is a valid slice for the call's duration.
        let n = unsafe { libc::write(fd, data.as_ptr().cast(), data.len()) };
        if n >= 0 {
            return Ok(n as usize);
        }
        match Errno::last() {
            Errno::EINTR => continue,
            Errno::EAGAIN => return Ok(0),
            e => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::monitor::frame::{MAX_FRAME, TAG_STDOUT};
    use std::io::Read;

    fn client(bundle: &Path) -> OwnedFd {
        let fd = socket(
            AddressFamily::Unix,
            SockType::SeqPacket,
            SockFlag::SOCK_CLOEXEC,
            None,
        )
        .unwrap();
        let dir = open_dir(bundle).unwrap();
        let addr =
            UnixAddr::new(format!("/proc/self/fd/{}/attach", dir.as_raw_fd()).as_str()).unwrap();
        nix::sys::socket::connect(fd.as_raw_fd(), &addr).unwrap();
        fd
    }

    /// One round of the monitor's loop, as far as attach is concerned.
    fn turn(attach: &mut Attach) {
        let mut fds = Vec::new();
        let slots = attach.poll_fds(&mut fds);
        // SAFETY: a valid pollfd array for the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, 200) };
        let mut buf = vec![0u8; MAX_FRAME];
        attach.handle(&fds, slots, &mut buf);
    }

    fn send_frame(fd: &OwnedFd, frame: Frame<'_>) {
        let mut buf = Vec::new();
        frame.encode(&mut buf).unwrap();
        send(fd.as_raw_fd(), &buf, MsgFlags::empty()).unwrap();
    }

    fn bundle() -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "rcri-attach-{}-{}",
            std::process::id(),
            super::super::now_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn output_fans_out_and_stdin_once_closes_after_the_first_stdin_session() {
        let dir = bundle();
        let mut attach = Attach::listen(&dir).unwrap();
        let (stdin_r, stdin_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
        attach.set_stdin(stdin_w, false, true);
        let a = client(&dir);
        let b = client(&dir);
        turn(&mut attach);
        assert_eq!(attach.sessions.len(), 2);

        attach.broadcast(&[TAG_STDOUT, b'h', b'i']);
        for c in [&a, &b] {
            let mut buf = [0u8; 16];
            let n = recv(c.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
            assert_eq!(Frame::decode(&buf[..n]), Ok(Frame::Stdout(b"hi")));
        }

        // b never had stdin: its end changes nothing. (One turn reads its end-of-stream, the
        // next its hang-up.)
        drop(b);
        turn(&mut attach);
        turn(&mut attach);
        assert_eq!(attach.sessions.len(), 1);
        assert!(attach.stdin.is_some());

        send_frame(&a, Frame::Stdin(b"typed\n"));
        send_frame(&a, Frame::StdinClose);
        turn(&mut attach);
        turn(&mut attach);
        let mut got = String::new();
        std::fs::File::from(stdin_r)
            .read_to_string(&mut got)
            .unwrap();
        // read_to_string returned: the write end is closed, the container sees EOF.
        assert_eq!(got, "typed\n");
        assert!(attach.stdin.is_none());
        // The session goes on for output.
        assert_eq!(attach.sessions.len(), 1);
        drop(attach);
        assert!(!dir.join("attach").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_session_that_does_not_read_is_dropped_not_waited_for() {
        let dir = bundle();
        let mut attach = Attach::listen(&dir).unwrap();
        let _stalled = client(&dir);
        turn(&mut attach);
        assert_eq!(attach.sessions.len(), 1);
        let mut frame = vec![b'x'; MAX_FRAME];
        frame[0] = TAG_STDOUT;
        // Far more than any socket buffer; every send returns at once.
        for _ in 0..4096 {
            attach.broadcast(&frame);
            if attach.sessions.is_empty() {
                break;
            }
        }
        assert!(attach.sessions.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn malformed_input_drops_the_session() {
        let dir = bundle();
        let mut attach = Attach::listen(&dir).unwrap();
        let c = client(&dir);
        turn(&mut attach);
        send(c.as_raw_fd(), &[42, 1, 2], MsgFlags::empty()).unwrap();
        turn(&mut attach);
        assert!(attach.sessions.is_empty());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
