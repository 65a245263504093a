//! The wire format of a container's attach socket (`<bundle>/attach`, a SOCK_SEQPACKET unix
//! socket the monitor listens on). SEQPACKET keeps message boundaries, so one message is one
//! frame and needs no length prefix: a tag byte, then the payload.
//!
//! | tag | direction        | payload                                                   |
//! |-----|------------------|-----------------------------------------------------------|
//! | 1   | monitor → client | stdout bytes (a terminal's output is stdout)               |
//! | 2   | monitor → client | stderr bytes                                              |
//! | 3   | client → monitor | stdin bytes; an empty one announces "this session has stdin" |
//! | 4   | client → monitor | stdin closed by the client (no payload)                   |
//! | 5   | client → monitor | resize: width, height as big-endian u16                   |
//!
//! A payload is at most [`MAX_PAYLOAD`] bytes; a longer message is a protocol error. The
//! container's exit is not a frame: the monitor writes the exit file, then closes every
//! session, so a client that reads end-of-stream looks at the exit file.

/// The largest payload of one frame: the monitor's read size, so an output frame is one read.
pub const MAX_PAYLOAD: usize = 16 * 1024;
/// The largest message on the socket.
pub const MAX_FRAME: usize = MAX_PAYLOAD + 1;

pub const TAG_STDOUT: u8 = 1;
pub const TAG_STDERR: u8 = 2;
pub const TAG_STDIN: u8 = 3;
pub const TAG_STDIN_CLOSE: u8 = 4;
pub const TAG_RESIZE: u8 = 5;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Frame<'a> {
    Stdout(&'a [u8]),
    Stderr(&'a [u8]),
    Stdin(&'a [u8]),
    StdinClose,
    Resize { width: u16, height: u16 },
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("empty attach frame")]
    Empty,
    #[error("unknown attach frame tag {0}")]
    UnknownTag(u8),
    #[error("a resize frame carries 4 bytes, not {0}")]
    BadResize(usize),
    #[error("an attach frame payload of {0} bytes is over the limit of {MAX_PAYLOAD}")]
    TooLong(usize),
    #[error("a stdin-close frame carries no payload, not {0} bytes")]
    BadClose(usize),
}

impl<'a> Frame<'a> {
    /// Parses one message as received from the socket.
    pub fn decode(msg: &'a [u8]) -> Result<Frame<'a>, FrameError> {
        let (&tag, payload) = msg.split_first().ok_or(FrameError::Empty)?;
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLong(payload.len()));
        }
        match tag {
            TAG_STDOUT => Ok(Frame::Stdout(payload)),
            TAG_STDERR => Ok(Frame::Stderr(payload)),
            TAG_STDIN => Ok(Frame::Stdin(payload)),
            TAG_STDIN_CLOSE if payload.is_empty() => Ok(Frame::StdinClose),
            TAG_STDIN_CLOSE => Err(FrameError::BadClose(payload.len())),
            TAG_RESIZE => match payload {
                [w0, w1, h0, h1] => Ok(Frame::Resize {
                    width: u16::from_be_bytes([*w0, *w1]),
                    height: u16::from_be_bytes([*h0, *h1]),
                }),
                _ => Err(FrameError::BadResize(payload.len())),
            },
            other => Err(FrameError::UnknownTag(other)),
        }
    }

    /// Writes the frame as one message into `out` (cleared first).
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.clear();
        let (tag, payload): (u8, &[u8]) = match self {
            Frame::Stdout(p) => (TAG_STDOUT, p),
            Frame::Stderr(p) => (TAG_STDERR, p),
            Frame::Stdin(p) => (TAG_STDIN, p),
            Frame::StdinClose => (TAG_STDIN_CLOSE, &[]),
            Frame::Resize { width, height } => {
                out.push(TAG_RESIZE);
                out.extend_from_slice(&width.to_be_bytes());
                out.extend_from_slice(&height.to_be_bytes());
                return Ok(());
            }
        };
        if payload.len() > MAX_PAYLOAD {
            return Err(FrameError::TooLong(payload.len()));
        }
        out.push(tag);
        out.extend_from_slice(payload);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(frame: Frame<'_>) {
        let mut buf = Vec::new();
        frame.encode(&mut buf).unwrap();
        assert_eq!(Frame::decode(&buf).unwrap(), frame);
    }

    #[test]
    fn every_frame_round_trips() {
        round_trip(Frame::Stdout(b"hello\n"));
        round_trip(Frame::Stderr(b"oops"));
        round_trip(Frame::Stdin(b"echo hi\n"));
        round_trip(Frame::Stdin(b""));
        round_trip(Frame::StdinClose);
        round_trip(Frame::Resize {
            width: 132,
            height: 43,
        });
        round_trip(Frame::Resize {
            width: u16::MAX,
            height: 0,
        });
        let full = vec![b'x'; MAX_PAYLOAD];
        round_trip(Frame::Stdout(&full));
    }

    #[test]
    fn resize_is_big_endian_width_then_height() {
        let mut buf = Vec::new();
        Frame::Resize {
            width: 0x0102,
            height: 0x0304,
        }
        .encode(&mut buf)
        .unwrap();
        assert_eq!(buf, [TAG_RESIZE, 1, 2, 3, 4]);
    }

    #[test]
    fn malformed_messages_are_refused() {
        assert_eq!(Frame::decode(&[]), Err(FrameError::Empty));
        assert_eq!(Frame::decode(&[9, 1]), Err(FrameError::UnknownTag(9)));
        assert_eq!(Frame::decode(&[0]), Err(FrameError::UnknownTag(0)));
        assert_eq!(
            Frame::decode(&[TAG_RESIZE, 1, 2, 3]),
            Err(FrameError::BadResize(3))
        );
        assert_eq!(
            Frame::decode(&[TAG_STDIN_CLOSE, 1]),
            Err(FrameError::BadClose(1))
        );
        let mut long = vec![TAG_STDIN];
        long.extend(std::iter::repeat_n(b'x', MAX_PAYLOAD + 1));
        assert_eq!(
            Frame::decode(&long),
            Err(FrameError::TooLong(MAX_PAYLOAD + 1))
        );
        let mut buf = Vec::new();
        let too_big = vec![0u8; MAX_PAYLOAD + 1];
        assert_eq!(
            Frame::Stdin(&too_big).encode(&mut buf),
            Err(FrameError::TooLong(MAX_PAYLOAD + 1))
        );
    }
}
