//! Where in a JSON document a serde_json error is, as a field path (`process.user.uid`,
//! `linux.namespaces[2].type`), so that a bad config.json names the field as runc does.
//!
//! serde_json only reports a line and column. Tracking the path while deserializing
//! (serde_path_to_error) doubles the monomorphized code of the whole runtime spec, about
//! 380 KB of rcrun's 3.6 MB, for the sake of the error path; re-reading the text up to the
//! error position gives the same answer only when there is an error.

/// One open container at the error position.
enum Frame {
    /// An object and the key whose value is being read (None between members).
    Object(Option<String>),
    /// An array and the index of the element being read.
    Array(usize),
}

/// The field path of `err` in `text` in serde_path_to_error's notation, "." for the top.
pub fn at(text: &[u8], err: &serde_json::Error) -> String {
    let end = offset(text, err.line(), err.column());
    let mut frames = scan(text, end);
    // serde reports a missing field when it meets the end of the object that lacks it: the
    // object itself is the place, not the member read last.
    if err.to_string().starts_with("missing field") {
        if let Some(Frame::Object(key)) = frames.last_mut() {
            *key = None;
        }
    }
    render(&frames)
}

/// The byte offset just past serde_json's (1-based) line and column.
fn offset(text: &[u8], line: usize, column: usize) -> usize {
    let mut start = 0;
    for _ in 1..line {
        match text[start..].iter().position(|&b| b == b'\n') {
            Some(nl) => start += nl + 1,
            None => return text.len(),
        }
    }
    (start + column).min(text.len())
}

/// The containers open after reading `text[..end]`.
fn scan(text: &[u8], end: usize) -> Vec<Frame> {
    let mut frames: Vec<Frame> = Vec::new();
    let mut i = 0;
    while i < end {
        match text[i] {
            b'{' => frames.push(Frame::Object(None)),
            b'[' => frames.push(Frame::Array(0)),
            b'}' | b']' => {
                frames.pop();
            }
            b',' => match frames.last_mut() {
                Some(Frame::Object(key)) => *key = None,
                Some(Frame::Array(index)) => *index += 1,
                None => {}
            },
            b'"' => {
                let (s, next) = string(text, i + 1);
                if let Some(Frame::Object(key @ None)) = frames.last_mut() {
                    *key = Some(s);
                }
                i = next;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    frames
}

/// The string whose contents start at `i` (escapes kept as written; keys of the runtime spec
/// have none) and the offset just past its closing quote.
fn string(text: &[u8], mut i: usize) -> (String, usize) {
    let start = i;
    while i < text.len() {
        match text[i] {
            b'\\' => i += 2,
            b'"' => return (String::from_utf8_lossy(&text[start..i]).into_owned(), i + 1),
            _ => i += 1,
        }
    }
    let end = text.len().min(i);
    (String::from_utf8_lossy(&text[start..end]).into_owned(), end)
}

fn render(frames: &[Frame]) -> String {
    let mut path = String::new();
    for frame in frames {
        match frame {
            Frame::Object(Some(key)) => {
                if !path.is_empty() {
                    path.push('.');
                }
                path.push_str(key);
            }
            Frame::Object(None) => break,
            Frame::Array(index) => {
                path.push('[');
                path.push_str(&index.to_string());
                path.push(']');
            }
        }
    }
    if path.is_empty() {
        path.push('.');
    }
    path
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_spec::runtime::Spec;

    /// The path serde_path_to_error finds, and ours, for the same broken document.
    fn both(doc: &str) -> (String, String) {
        let de = &mut serde_json::Deserializer::from_str(doc);
        let tracked = serde_path_to_error::deserialize::<_, Spec>(de)
            .map(|_| ())
            .expect_err(doc)
            .path()
            .to_string();
        let err = serde_json::from_str::<Spec>(doc).expect_err("invalid for serde_json too");
        (tracked, at(doc.as_bytes(), &err))
    }

    fn config(edit: &str) -> String {
        let base = r#"{
  "ociVersion": "1.0.2",
  "process": {
    "terminal": false,
    "user": { "uid": 0, "gid": 0 },
    "args": ["sh"],
    "env": ["PATH=/bin"],
    "cwd": "/"
  },
  "root": { "path": "rootfs" },
  "hostname": "box",
  "mounts": [ { "destination": "/proc", "type": "proc", "source": "proc" } ],
  "linux": {
    "namespaces": [ { "type": "pid" }, { "type": "mount" } ],
    "resources": { "memory": { "limit": 1000 } }
  }
}"#;
        let (from, to) = edit.split_once("=>").expect("edit is FROM=>TO");
        assert!(base.contains(from), "{from} not in the base config");
        base.replacen(from, to, 1)
    }

    #[test]
    fn names_the_same_field_as_path_tracking_deserialization() {
        for edit in [
            r#""hostname": "box"=>"hostname": 5"#,
            r#""uid": 0=>"uid": "root""#,
            r#"{ "type": "pid" }=>{ }"#,
            r#""args": ["sh"]=>"args": ["sh", 7]"#,
            r#"{ "type": "mount" }=>{ "type": "moon" }"#,
            r#""limit": 1000=>"limit": "lots""#,
            r#""destination": "/proc", =>"#,
            r#""terminal": false=>"terminal": "no""#,
            r#""path": "rootfs"=>"path": ["rootfs"]"#,
            r#""cwd": "/"=>"cwd": 1"#,
        ] {
            let (tracked, ours) = both(&config(edit));
            assert_eq!(ours, tracked, "for {edit}");
        }
    }

    #[test]
    fn a_broken_document_still_gets_a_place() {
        let doc = config(r#""hostname": "box"=>"hostname": "box" "#);
        let doc = doc.replacen("\"mounts\"", "mounts", 1);
        let err = serde_json::from_str::<Spec>(&doc).expect_err("not json");
        assert!(!at(doc.as_bytes(), &err).is_empty());
    }
}
