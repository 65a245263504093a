//! The CRI log writer of rcri-monitor (cri-shim/src/monitor.rs `Stream` + `Logger`): the
//! container's output, read from a pipe in chunks of arbitrary sizes, becomes
//! `<time> stdout <P|F> <msg>` records.
//! Input: byte 0 picks the chunk size, byte 1 how many times the rest is repeated (so that
//! lines longer than the 16 KiB record limit are reached with short inputs).
//! Properties: every record is well formed with a message of at most MAX_LOG_LINE bytes and no
//! newline; the messages, each F record followed by a newline, give back exactly the bytes
//! written (plus the newline an unterminated last line gets at EOF).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rcri::monitor::{Logger, Stream, MAX_LOG_LINE};
use std::io::Write;

fuzz_target!(|data: &[u8]| {
    let [size, repeat, rest @ ..] = data else {
        return;
    };
    let chunk_size = (*size as usize + 1) * 97;
    let input: Vec<u8> = rest.repeat(*repeat as usize % 8 + 1);

    let dir = std::env::temp_dir().join(format!("rcrun-fuzz-cri-log.{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("log");
    let _ = std::fs::remove_file(&path);
    let mut logger = Logger::open(Some(path.clone()));
    let (r, w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).unwrap();
    let mut w = std::fs::File::from(w);
    let mut stream = Stream::new(r, "stdout", 1);
    let mut buf = vec![0u8; chunk_size];
    // Pipe capacity is 64 KiB: write at most that much before the monitor side reads it.
    for piece in input.chunks(chunk_size) {
        w.write_all(piece).unwrap();
        let mut got = 0;
        while got < piece.len() {
            got += stream
                .pump(&mut buf, &mut logger)
                .expect("data is in the pipe");
        }
    }
    drop(w);
    assert_eq!(stream.pump(&mut buf, &mut logger), None);

    let text = std::fs::read(&path).unwrap();
    let mut back = Vec::new();
    let mut last_tag = None;
    for record in text.split_inclusive(|&b| b == b'\n') {
        let record = record
            .strip_suffix(b"\n")
            .expect("every record ends with a newline");
        let mut fields = record.splitn(4, |&b| b == b' ');
        let time = fields.next().unwrap();
        assert!(
            time.ends_with(b"Z") && time.contains(&b'T'),
            "bad time in {record:?}"
        );
        assert_eq!(fields.next(), Some(&b"stdout"[..]));
        let tag = fields.next().expect("a tag");
        let msg = fields.next().expect("a message");
        assert!(msg.len() <= MAX_LOG_LINE, "record of {} bytes", msg.len());
        back.extend_from_slice(msg);
        match tag {
            b"F" => back.push(b'\n'),
            b"P" => {}
            other => panic!("tag {other:?}"),
        }
        last_tag = Some(tag.to_vec());
    }
    let mut want = input.clone();
    if !want.is_empty() && !want.ends_with(b"\n") && last_tag.as_deref() == Some(b"F") {
        want.push(b'\n');
    }
    assert!(
        back == want,
        "{} bytes written, {} bytes logged",
        input.len(),
        back.len()
    );
});
