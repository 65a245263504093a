//! SPDY/3.1 frames: their wire form and back (SPDY Protocol draft 3.1, section 2.2 and 2.6).
//! Every frame starts with 8 bytes; a control frame has the high bit set and carries version,
//! type, flags and a 24-bit length, a DATA frame carries the stream id, flags and length.

use bytes::Bytes;

use super::zlib::{HeaderCompressor, HeaderDecompressor, ZlibError};

pub const VERSION: u16 = 3;
pub const FLAG_FIN: u8 = 0x01;
/// SYN_STREAM only: the sender will not receive on this stream.
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;
/// SETTINGS only: forget persisted settings.
pub const FLAG_CLEAR_SETTINGS: u8 = 0x01;
/// The 24-bit length field's limit.
pub const MAX_FRAME_PAYLOAD: usize = 0xff_ffff;
/// The largest header block (after decompression) this side accepts.
pub const MAX_HEADER_BLOCK: usize = 256 * 1024;

pub const SETTINGS_MAX_CONCURRENT_STREAMS: u32 = 4;
pub const SETTINGS_INITIAL_WINDOW_SIZE: u32 = 7;

/// RST_STREAM status codes.
pub mod rst {
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INVALID_STREAM: u32 = 2;
    pub const REFUSED_STREAM: u32 = 3;
    pub const CANCEL: u32 = 5;
    pub const INTERNAL_ERROR: u32 = 6;
    pub const FLOW_CONTROL_ERROR: u32 = 7;
    pub const STREAM_IN_USE: u32 = 8;
}

/// GOAWAY status codes.
pub mod goaway {
    pub const OK: u32 = 0;
    pub const PROTOCOL_ERROR: u32 = 1;
    pub const INTERNAL_ERROR: u32 = 2;
}

const TYPE_SYN_STREAM: u16 = 1;
const TYPE_SYN_REPLY: u16 = 2;
const TYPE_RST_STREAM: u16 = 3;
const TYPE_SETTINGS: u16 = 4;
const TYPE_PING: u16 = 6;
const TYPE_GOAWAY: u16 = 7;
const TYPE_HEADERS: u16 = 8;
const TYPE_WINDOW_UPDATE: u16 = 9;

/// Name/value pairs, names in lower case. A name given twice is sent once with its values
/// joined by NUL, as the spec requires, and split again on receipt.
pub type Headers = Vec<(String, String)>;

/// The first value of a header.
pub fn header<'a>(headers: &'a Headers, name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("{kind} frame: payload of {len} bytes is malformed")]
    BadLength { kind: &'static str, len: usize },
    #[error("{kind} frame on stream 0")]
    ZeroStreamId { kind: &'static str },
    #[error("control frame of version {0}, only SPDY/3 is spoken")]
    UnsupportedVersion(u16),
    #[error("header block: {0}")]
    HeaderBlock(&'static str),
    #[error("header block compression")]
    Zlib(#[source] ZlibError),
    #[error("a {kind} frame of {len} bytes exceeds the 24-bit length field")]
    TooLarge { kind: &'static str, len: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Setting {
    pub flags: u8,
    pub id: u32,
    pub value: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        clear: bool,
        settings: Vec<Setting>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        fin: bool,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        fin: bool,
        data: Bytes,
    },
}

/// The 8 bytes every frame starts with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Head {
    Control {
        version: u16,
        kind: u16,
        flags: u8,
        len: usize,
    },
    Data {
        stream_id: u32,
        flags: u8,
        len: usize,
    },
}

pub fn parse_head(b: [u8; 8]) -> Head {
    let first = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    let flags = b[4];
    let len = u32::from_be_bytes([0, b[5], b[6], b[7]]) as usize;
    if first & 0x8000_0000 != 0 {
        Head::Control {
            version: ((first >> 16) & 0x7fff) as u16,
            kind: (first & 0xffff) as u16,
            flags,
            len,
        }
    } else {
        Head::Data {
            stream_id: first,
            flags,
            len,
        }
    }
}

impl Frame {
    /// Appends the wire form; header blocks go through `z`, the connection's one compressor,
    /// so frames must be encoded in the order they are written.
    pub fn encode(&self, z: &mut HeaderCompressor, out: &mut Vec<u8>) -> Result<(), FrameError> {
        match self {
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                flags,
                headers,
            } => {
                let block = compress(z, headers)?;
                control_head(out, TYPE_SYN_STREAM, *flags, 10 + block.len(), "SYN_STREAM")?;
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(associated_to & 0x7fff_ffff).to_be_bytes());
                out.push((priority & 0x7) << 5);
                out.push(0); // credential slot, unused
                out.extend_from_slice(&block);
            }
            Frame::SynReply {
                stream_id,
                fin,
                headers,
            } => {
                let block = compress(z, headers)?;
                control_head(
                    out,
                    TYPE_SYN_REPLY,
                    fin_flag(*fin),
                    4 + block.len(),
                    "SYN_REPLY",
                )?;
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::RstStream { stream_id, status } => {
                control_head(out, TYPE_RST_STREAM, 0, 8, "RST_STREAM")?;
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Settings { clear, settings } => {
                let flags = if *clear { FLAG_CLEAR_SETTINGS } else { 0 };
                control_head(
                    out,
                    TYPE_SETTINGS,
                    flags,
                    4 + 8 * settings.len(),
                    "SETTINGS",
                )?;
                out.extend_from_slice(&(settings.len() as u32).to_be_bytes());
                for s in settings {
                    out.extend_from_slice(
                        &((u32::from(s.flags) << 24) | (s.id & 0xff_ffff)).to_be_bytes(),
                    );
                    out.extend_from_slice(&s.value.to_be_bytes());
                }
            }
            Frame::Ping { id } => {
                control_head(out, TYPE_PING, 0, 4, "PING")?;
                out.extend_from_slice(&id.to_be_bytes());
            }
            Frame::GoAway {
                last_good_stream_id,
                status,
            } => {
                control_head(out, TYPE_GOAWAY, 0, 8, "GOAWAY")?;
                out.extend_from_slice(&(last_good_stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&status.to_be_bytes());
            }
            Frame::Headers {
                stream_id,
                fin,
                headers,
            } => {
                let block = compress(z, headers)?;
                control_head(
                    out,
                    TYPE_HEADERS,
                    fin_flag(*fin),
                    4 + block.len(),
                    "HEADERS",
                )?;
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&block);
            }
            Frame::WindowUpdate { stream_id, delta } => {
                control_head(out, TYPE_WINDOW_UPDATE, 0, 8, "WINDOW_UPDATE")?;
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(&(delta & 0x7fff_ffff).to_be_bytes());
            }
            Frame::Data {
                stream_id,
                fin,
                data,
            } => {
                if data.len() > MAX_FRAME_PAYLOAD {
                    return Err(FrameError::TooLarge {
                        kind: "DATA",
                        len: data.len(),
                    });
                }
                out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
                out.extend_from_slice(
                    &((u32::from(fin_flag(*fin)) << 24) | data.len() as u32).to_be_bytes(),
                );
                out.extend_from_slice(data);
            }
        }
        Ok(())
    }
}

fn fin_flag(fin: bool) -> u8 {
    if fin {
        FLAG_FIN
    } else {
        0
    }
}

fn control_head(
    out: &mut Vec<u8>,
    kind: u16,
    flags: u8,
    len: usize,
    name: &'static str,
) -> Result<(), FrameError> {
    if len > MAX_FRAME_PAYLOAD {
        return Err(FrameError::TooLarge { kind: name, len });
    }
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&kind.to_be_bytes());
    out.extend_from_slice(&((u32::from(flags) << 24) | len as u32).to_be_bytes());
    Ok(())
}

fn compress(z: &mut HeaderCompressor, headers: &Headers) -> Result<Vec<u8>, FrameError> {
    z.compress(&encode_header_block(headers))
        .map_err(FrameError::Zlib)
}

/// The uncompressed name/value block: a count, then length-prefixed names and values (all
/// lengths 32-bit in SPDY/3).
pub fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut merged: Vec<(String, String)> = Vec::with_capacity(headers.len());
    for (name, value) in headers {
        let name = name.to_ascii_lowercase();
        match merged.iter_mut().find(|(n, _)| *n == name) {
            Some((_, v)) => {
                v.push('\0');
                v.push_str(value);
            }
            None => merged.push((name, value.clone())),
        }
    }
    let mut out = Vec::new();
    out.extend_from_slice(&(merged.len() as u32).to_be_bytes());
    for (name, value) in &merged {
        out.extend_from_slice(&(name.len() as u32).to_be_bytes());
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(&(value.len() as u32).to_be_bytes());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

pub fn decode_header_block(block: &[u8]) -> Result<Headers, FrameError> {
    let mut r = Reader(block);
    let count = r
        .u32()
        .ok_or(FrameError::HeaderBlock("truncated pair count"))? as usize;
    // Each pair takes at least 8 bytes: a bound on the count before trusting it.
    if count > block.len() / 8 {
        return Err(FrameError::HeaderBlock("pair count exceeds the block"));
    }
    let mut headers = Headers::with_capacity(count);
    for _ in 0..count {
        let name = r
            .prefixed()
            .ok_or(FrameError::HeaderBlock("truncated name"))?;
        if name.is_empty() {
            return Err(FrameError::HeaderBlock("empty header name"));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = r
            .prefixed()
            .ok_or(FrameError::HeaderBlock("truncated value"))?;
        for v in value.split(|&b| b == 0) {
            headers.push((name.clone(), String::from_utf8_lossy(v).into_owned()));
        }
    }
    if !r.0.is_empty() {
        return Err(FrameError::HeaderBlock(
            "trailing bytes after the last pair",
        ));
    }
    Ok(headers)
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn prefixed(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()? as usize;
        self.take(n)
    }
}

/// Decodes a control frame's payload. `Ok(None)` is a type this side does not know, which the
/// spec says to ignore. Header blocks are always decompressed, even for frames the caller will
/// drop, because the peer's compression context spans the whole connection.
pub fn decode_control(
    kind: u16,
    flags: u8,
    payload: &[u8],
    z: &mut HeaderDecompressor,
) -> Result<Option<Frame>, FrameError> {
    let len = payload.len();
    let fixed = |want: usize, name: &'static str| {
        if len == want {
            Ok(())
        } else {
            Err(FrameError::BadLength { kind: name, len })
        }
    };
    let word = |at: usize| {
        u32::from_be_bytes([
            payload[at],
            payload[at + 1],
            payload[at + 2],
            payload[at + 3],
        ])
    };
    let headers = |at: usize, z: &mut HeaderDecompressor| -> Result<Headers, FrameError> {
        let block = z
            .decompress(&payload[at..], MAX_HEADER_BLOCK)
            .map_err(FrameError::Zlib)?;
        decode_header_block(&block)
    };
    let nonzero = |id: u32, kind: &'static str| {
        if id == 0 {
            Err(FrameError::ZeroStreamId { kind })
        } else {
            Ok(id)
        }
    };
    let frame = match kind {
        TYPE_SYN_STREAM => {
            if len < 10 {
                return Err(FrameError::BadLength {
                    kind: "SYN_STREAM",
                    len,
                });
            }
            Frame::SynStream {
                stream_id: nonzero(word(0) & 0x7fff_ffff, "SYN_STREAM")?,
                associated_to: word(4) & 0x7fff_ffff,
                priority: payload[8] >> 5,
                flags,
                headers: headers(10, z)?,
            }
        }
        TYPE_SYN_REPLY => {
            if len < 4 {
                return Err(FrameError::BadLength {
                    kind: "SYN_REPLY",
                    len,
                });
            }
            Frame::SynReply {
                stream_id: nonzero(word(0) & 0x7fff_ffff, "SYN_REPLY")?,
                fin: flags & FLAG_FIN != 0,
                headers: headers(4, z)?,
            }
        }
        TYPE_HEADERS => {
            if len < 4 {
                return Err(FrameError::BadLength {
                    kind: "HEADERS",
                    len,
                });
            }
            Frame::Headers {
                stream_id: nonzero(word(0) & 0x7fff_ffff, "HEADERS")?,
                fin: flags & FLAG_FIN != 0,
                headers: headers(4, z)?,
            }
        }
        TYPE_RST_STREAM => {
            fixed(8, "RST_STREAM")?;
            Frame::RstStream {
                stream_id: nonzero(word(0) & 0x7fff_ffff, "RST_STREAM")?,
                status: word(4),
            }
        }
        TYPE_SETTINGS => {
            if len < 4 {
                return Err(FrameError::BadLength {
                    kind: "SETTINGS",
                    len,
                });
            }
            let n = word(0) as usize;
            if n.checked_mul(8).and_then(|b| b.checked_add(4)) != Some(len) {
                return Err(FrameError::BadLength {
                    kind: "SETTINGS",
                    len,
                });
            }
            let settings = (0..n)
                .map(|i| {
                    let id = word(4 + 8 * i);
                    Setting {
                        flags: (id >> 24) as u8,
                        id: id & 0xff_ffff,
                        value: word(8 + 8 * i),
                    }
                })
                .collect();
            Frame::Settings {
                clear: flags & FLAG_CLEAR_SETTINGS != 0,
                settings,
            }
        }
        TYPE_PING => {
            fixed(4, "PING")?;
            Frame::Ping { id: word(0) }
        }
        TYPE_GOAWAY => {
            fixed(8, "GOAWAY")?;
            Frame::GoAway {
                last_good_stream_id: word(0) & 0x7fff_ffff,
                status: word(4),
            }
        }
        TYPE_WINDOW_UPDATE => {
            fixed(8, "WINDOW_UPDATE")?;
            Frame::WindowUpdate {
                stream_id: word(0) & 0x7fff_ffff,
                delta: word(4) & 0x7fff_ffff,
            }
        }
        _ => return Ok(None),
    };
    Ok(Some(frame))
}

#[cfg(test)]
pub(crate) fn decode(buf: &[u8], z: &mut HeaderDecompressor) -> Result<(Frame, usize), FrameError> {
    let mut head = [0u8; 8];
    head.copy_from_slice(&buf[..8]);
    match parse_head(head) {
        Head::Control {
            version,
            kind,
            flags,
            len,
        } => {
            if version != VERSION {
                return Err(FrameError::UnsupportedVersion(version));
            }
            let frame = decode_control(kind, flags, &buf[8..8 + len], z)?;
            Ok((
                frame.ok_or(FrameError::HeaderBlock("unknown type"))?,
                8 + len,
            ))
        }
        Head::Data {
            stream_id,
            flags,
            len,
        } => Ok((
            Frame::Data {
                stream_id,
                fin: flags & FLAG_FIN != 0,
                data: Bytes::copy_from_slice(&buf[8..8 + len]),
            },
            8 + len,
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(n, v)| (n.to_string(), v.to_string()))
            .collect()
    }

    fn every_frame() -> Vec<Frame> {
        vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 3,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: hdrs(&[("streamtype", "stdin"), ("port", "80")]),
            },
            Frame::SynReply {
                stream_id: 1,
                fin: false,
                headers: vec![],
            },
            Frame::RstStream {
                stream_id: 3,
                status: rst::CANCEL,
            },
            Frame::Settings {
                clear: false,
                settings: vec![Setting {
                    flags: 0,
                    id: SETTINGS_INITIAL_WINDOW_SIZE,
                    value: 1 << 20,
                }],
            },
            Frame::Ping { id: 7 },
            Frame::GoAway {
                last_good_stream_id: 5,
                status: goaway::OK,
            },
            Frame::Headers {
                stream_id: 5,
                fin: true,
                headers: hdrs(&[("x", "a"), ("x", "b")]),
            },
            Frame::WindowUpdate {
                stream_id: 0,
                delta: 65536,
            },
            Frame::Data {
                stream_id: 9,
                fin: true,
                data: Bytes::from_static(b"hello"),
            },
            Frame::Data {
                stream_id: 11,
                fin: false,
                data: Bytes::new(),
            },
        ]
    }

    #[test]
    fn every_frame_type_round_trips_through_one_pair_of_contexts() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut d = HeaderDecompressor::default();
        let mut wire = Vec::new();
        for f in every_frame() {
            f.encode(&mut c, &mut wire).unwrap();
        }
        let mut at = 0;
        for want in every_frame() {
            let (got, used) = decode(&wire[at..], &mut d).unwrap();
            assert_eq!(got, want);
            at += used;
        }
        assert_eq!(at, wire.len());
    }

    #[test]
    fn fixed_frames_have_the_spec_layout() {
        let mut c = HeaderCompressor::new().unwrap();
        let mut out = Vec::new();
        Frame::RstStream {
            stream_id: 3,
            status: 5,
        }
        .encode(&mut c, &mut out)
        .unwrap();
        assert_eq!(out, [0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 3, 0, 0, 0, 5]);
        out.clear();
        Frame::Data {
            stream_id: 1,
            fin: true,
            data: Bytes::from_static(b"ab"),
        }
        .encode(&mut c, &mut out)
        .unwrap();
        assert_eq!(out, [0, 0, 0, 1, 1, 0, 0, 2, b'a', b'b']);
        out.clear();
        Frame::WindowUpdate {
            stream_id: 1,
            delta: 0x10000,
        }
        .encode(&mut c, &mut out)
        .unwrap();
        assert_eq!(out, [0x80, 3, 0, 9, 0, 0, 0, 8, 0, 0, 0, 1, 0, 1, 0, 0]);
        out.clear();
        Frame::Settings {
            clear: false,
            settings: vec![Setting {
                flags: 0,
                id: 7,
                value: 0x40000,
            }],
        }
        .encode(&mut c, &mut out)
        .unwrap();
        assert_eq!(
            out,
            [0x80, 3, 0, 4, 0, 0, 0, 12, 0, 0, 0, 1, 0, 0, 0, 7, 0, 4, 0, 0]
        );
    }

    #[test]
    fn header_values_with_one_name_are_joined_by_nul() {
        let block = encode_header_block(&hdrs(&[("A", "1"), ("a", "2")]));
        assert_eq!(block, b"\0\0\0\x01\0\0\0\x01a\0\0\0\x031\x002");
        assert_eq!(
            decode_header_block(&block).unwrap(),
            hdrs(&[("a", "1"), ("a", "2")])
        );
    }

    #[test]
    fn malformed_frames_are_errors_not_panics() {
        let mut d = HeaderDecompressor::default();
        assert!(decode_control(TYPE_RST_STREAM, 0, &[0, 0, 0, 1], &mut d).is_err());
        assert!(decode_control(TYPE_RST_STREAM, 0, &[0, 0, 0, 0, 0, 0, 0, 1], &mut d).is_err());
        assert!(decode_control(TYPE_PING, 0, &[], &mut d).is_err());
        assert!(decode_control(TYPE_SETTINGS, 0, &[0xff, 0xff, 0xff, 0xff], &mut d).is_err());
        assert!(decode_control(
            TYPE_SYN_STREAM,
            0,
            &[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 1, 2, 3],
            &mut d
        )
        .is_err());
        assert!(decode_control(
            TYPE_SYN_REPLY,
            0,
            &[0, 0],
            &mut HeaderDecompressor::default()
        )
        .is_err());
        assert!(matches!(
            decode_control(0x55, 0, &[1, 2, 3], &mut d),
            Ok(None)
        ));
        assert!(decode_header_block(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 9, b'a']).is_err());
        assert!(decode_header_block(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]).is_err());
    }
}
