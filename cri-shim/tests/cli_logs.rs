//! rcri's command line as an operator meets it: JSON logs for a log shipper, shell completions.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn rcri() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rcri"))
}

#[test]
fn log_format_json_writes_one_json_object_per_line() {
    let dir = std::env::temp_dir().join(format!("rcri-logs-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    let mut child = rcri()
        .arg("--log-format")
        .arg("json")
        .arg("--listen")
        .arg(dir.join("rcri.sock"))
        .arg("--root")
        .arg(dir.join("root"))
        .arg("--state")
        .arg(dir.join("state"))
        .arg("--runtime-root")
        .arg(dir.join("state/runtime"))
        .arg("--cni-conf-dir")
        .arg(dir.join("cni"))
        .arg("--runtime")
        .arg("/bin/true")
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start rcri");
    let stderr = child.stderr.take().expect("piped stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut serving = None;
    while Instant::now() < deadline {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let v: serde_json::Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
                assert!(
                    v["timestamp"].is_string() && v["level"].is_string(),
                    "{line}"
                );
                if v["fields"]["message"] == "serving CRI" {
                    serving = Some(v);
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => continue,
            Err(_) => break,
        }
    }
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    );
    let status = child.wait().expect("wait for rcri");
    let _ = std::fs::remove_dir_all(&dir);
    let serving = serving.expect("rcri logged `serving CRI` as JSON");
    assert_eq!(serving["level"], "INFO");
    assert!(serving["fields"]["socket"]
        .as_str()
        .unwrap_or("")
        .ends_with("rcri.sock"));
    assert!(status.success(), "rcri exits 0 on SIGTERM: {status:?}");
}

#[test]
fn a_bad_log_format_is_refused() {
    let out = rcri()
        .args(["--log-format", "xml"])
        .output()
        .expect("run rcri");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("xml"));
}

#[test]
fn completions_name_the_subcommands() {
    for (bin, expect) in [
        (env!("CARGO_BIN_EXE_rcri"), "pause"),
        (env!("CARGO_BIN_EXE_rcrictl"), "inspectp"),
    ] {
        let out = Command::new(bin)
            .args(["completion", "bash"])
            .output()
            .expect("run completion");
        assert!(out.status.success(), "{bin}: {out:?}");
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(
            script.contains("complete -F") && script.contains(expect),
            "{bin}"
        );
    }
}
