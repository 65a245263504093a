//! `--log`, `--log-format text|json`, `--debug`: runc-compatible log lines.
//!
//! The lines look like the ones runc writes through logrus, because callers parse them:
//! containerd's runc shim runs the runtime with `--log <bundle>/log.json --log-format json`
//! and, when a command fails, reports the `msg` of the last JSON line as the error.
//!
//! text: `time="2024-05-01T10:00:00.123456789Z" level=error msg="failed to ..."`
//! json: `{"level":"error","msg":"failed to ...","time":"2024-05-01T10:00:00.123456789Z"}`
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::SystemTime;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("failed to open log file {path}")]
    Open {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid log format {0:?} (expected text or json)")]
    Format(String),
    /// `log::SetLoggerError` only implements `Error` with the log crate's `std` feature.
    #[error("failed to install the logger: a logger is already installed")]
    AlreadyInstalled,
}

/// Whether `init` was given a log file, so the cli knows if `log::error!` reaches anything
/// besides the stderr line it prints itself.
static TO_FILE: AtomicBool = AtomicBool::new(false);

/// Parses the `--log-format` value.
pub fn parse_format(s: &str) -> Result<LogFormat, LoggingError> {
    match s {
        "text" => Ok(LogFormat::Text),
        "json" => Ok(LogFormat::Json),
        other => Err(LoggingError::Format(other.to_string())),
    }
}

/// Installs the process-wide logger: lines go to `file` (appended, created 0644) or, without
/// one, to stderr. Level is debug with `debug`, else info. Can only succeed once per process.
pub fn init(file: Option<&Path>, format: LogFormat, debug: bool) -> Result<(), LoggingError> {
    let sink = match file {
        Some(path) => Sink::File(open_log_file(path)?),
        None => Sink::Stderr,
    };
    let level = if debug {
        log::LevelFilter::Debug
    } else {
        log::LevelFilter::Info
    };
    let logger = Logger {
        sink: Mutex::new(sink),
        format,
        level,
    };
    // Leaked on purpose: the logger lives as long as the process, and `set_logger` (unlike
    // `set_boxed_logger`) needs no `std` feature of the log crate.
    log::set_logger(Box::leak(Box::new(logger))).map_err(|_| LoggingError::AlreadyInstalled)?;
    log::set_max_level(level);
    TO_FILE.store(file.is_some(), Ordering::Relaxed);
    Ok(())
}

/// True when log lines go to a `--log` file rather than stderr. When false, the cli's own
/// `rcrun: <error>` line on stderr is the only report needed; logging the error as well
/// would print it twice.
pub fn logs_to_file() -> bool {
    TO_FILE.load(Ordering::Relaxed)
}

/// Opens (creating, appending) a log file the way runc does.
pub fn open_log_file(path: &Path) -> Result<File, LoggingError> {
    // O_CLOEXEC: the fd is inherited across fork by the container's init but must never
    // survive its execve into the container (CVE-2024-21626 was exactly such a leaked fd).
    // std sets it anyway on Linux; it is stated here so nobody removes it by accident.
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o644)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| LoggingError::Open {
            path: PathBuf::from(path),
            source,
        })
}

/// One log line (with its trailing newline) in the given format.
pub fn format_line(format: LogFormat, level: log::Level, time: SystemTime, msg: &str) -> String {
    let time = humantime::format_rfc3339_nanos(time).to_string();
    let level = level_name(level);
    match format {
        LogFormat::Text => format!(
            "time={} level={} msg={}\n",
            logfmt_value(&time),
            logfmt_value(level),
            logfmt_value(msg)
        ),
        // Keys in logrus's (sorted) order; serde_json does the string escaping.
        LogFormat::Json => format!(
            "{{\"level\":{},\"msg\":{},\"time\":{}}}\n",
            json_string(level),
            json_string(msg),
            json_string(&time)
        ),
    }
}

/// logrus's level names (it says "warning", not "warn").
fn level_name(level: log::Level) -> &'static str {
    match level {
        log::Level::Error => "error",
        log::Level::Warn => "warning",
        log::Level::Info => "info",
        log::Level::Debug => "debug",
        log::Level::Trace => "trace",
    }
}

fn json_string(s: &str) -> String {
    // Serializing a &str cannot fail; the fallback keeps the line valid JSON regardless.
    serde_json::to_string(s).unwrap_or_else(|_| String::from("\"\""))
}

/// A value as logrus's text formatter writes it: bare when it is made of "safe" characters,
/// otherwise double-quoted with Go-style escapes so that one record stays on one line.
fn logfmt_value(value: &str) -> String {
    let bare = value
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || "-._/@^+".contains(c));
    if bare {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

enum Sink {
    Stderr,
    File(File),
}

struct Logger {
    sink: Mutex<Sink>,
    format: LogFormat,
    level: log::LevelFilter,
}

impl log::Log for Logger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format_line(
            self.format,
            record.level(),
            SystemTime::now(),
            &record.args().to_string(),
        );
        // A poisoned lock only means another thread panicked mid-write; the sink is still fine.
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        // One write per line: with O_APPEND that keeps lines whole when the runtime and the
        // container's init (after fork) write to the same file. A failed log write has nowhere
        // to be reported, so it is dropped.
        let _ = match &mut *sink {
            Sink::Stderr => std::io::stderr().lock().write_all(line.as_bytes()),
            Sink::File(file) => file.write_all(line.as_bytes()),
        };
    }

    fn flush(&self) {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::{Duration, UNIX_EPOCH};

    fn t0() -> SystemTime {
        UNIX_EPOCH + Duration::new(1_700_000_000, 123_456_789)
    }

    #[test]
    fn text_line() {
        let line = format_line(
            LogFormat::Text,
            log::Level::Error,
            t0(),
            "container not found",
        );
        assert_eq!(
            line,
            "time=\"2023-11-14T22:13:20.123456789Z\" level=error msg=\"container not found\"\n"
        );
    }

    #[test]
    fn text_line_escapes_quotes_and_newlines() {
        let line = format_line(LogFormat::Text, log::Level::Warn, t0(), "a \"b\"\nc\\d");
        assert!(
            line.ends_with(" level=warning msg=\"a \\\"b\\\"\\nc\\\\d\"\n"),
            "{line}"
        );
        assert_eq!(line.matches('\n').count(), 1);
        let bare = format_line(LogFormat::Text, log::Level::Debug, t0(), "ok");
        assert!(bare.ends_with(" level=debug msg=ok\n"), "{bare}");
    }

    #[test]
    fn json_line_parses_and_escapes() {
        let msg = "failed to \"start\"\nline two\t\u{1}";
        let line = format_line(LogFormat::Json, log::Level::Error, t0(), msg);
        assert!(line.starts_with("{\"level\":\"error\",\"msg\":"), "{line}");
        assert!(line.ends_with("}\n"));
        assert_eq!(line.matches('\n').count(), 1);
        let value: serde_json::Value = serde_json::from_str(line.trim_end()).expect("valid json");
        assert_eq!(value["level"], "error");
        assert_eq!(value["msg"], msg);
        assert_eq!(value["time"], "2023-11-14T22:13:20.123456789Z");
        assert_eq!(value.as_object().map(|o| o.len()), Some(3));
    }

    #[test]
    fn formats() {
        assert_eq!(parse_format("text").ok(), Some(LogFormat::Text));
        assert_eq!(parse_format("json").ok(), Some(LogFormat::Json));
        assert!(matches!(parse_format("JSON"), Err(LoggingError::Format(_))));
        assert!(matches!(parse_format(""), Err(LoggingError::Format(_))));
    }

    #[test]
    fn log_file_is_appended_0644_and_cloexec() {
        let dir = std::env::temp_dir().join(format!("rcrun-logging-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.json");
        std::fs::write(&path, "first\n").expect("seed file");
        std::fs::remove_file(&path).expect("remove seed");

        let mut file = open_log_file(&path).expect("open log");
        file.write_all(b"one\n").expect("write");
        let mut again = open_log_file(&path).expect("reopen log");
        again.write_all(b"two\n").expect("write");
        assert_eq!(
            std::fs::read_to_string(&path).ok().as_deref(),
            Some("one\ntwo\n")
        );

        // Changing the umask here would race with other tests, so read it instead.
        let status = std::fs::read_to_string("/proc/self/status").expect("status");
        let umask = status
            .lines()
            .find_map(|l| l.strip_prefix("Umask:"))
            .and_then(|v| u32::from_str_radix(v.trim(), 8).ok())
            .expect("umask");
        let mode = std::fs::metadata(&path).expect("stat").permissions().mode();
        assert_eq!(mode & 0o777, 0o644 & !umask);
        let flags = nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFD).expect("F_GETFD");
        assert_ne!(flags & libc::FD_CLOEXEC, 0);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn logger_filters_by_level_and_writes_whole_lines() {
        use log::Log;
        let dir = std::env::temp_dir().join(format!("rcrun-logger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("log.json");
        let _ = std::fs::remove_file(&path);
        let logger = Logger {
            sink: Mutex::new(Sink::File(open_log_file(&path).expect("open"))),
            format: LogFormat::Json,
            level: log::LevelFilter::Info,
        };
        let record = |level, msg| {
            logger.log(
                &log::Record::builder()
                    .level(level)
                    .args(format_args!("{msg}"))
                    .build(),
            )
        };
        record(log::Level::Debug, "hidden");
        record(log::Level::Info, "shown");
        record(log::Level::Error, "failed to \"start\"");
        let text = std::fs::read_to_string(&path).expect("read log");
        let msgs: Vec<String> = text
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("json line");
                v["msg"].as_str().unwrap_or_default().to_string()
            })
            .collect();
        assert_eq!(msgs, ["shown", "failed to \"start\""]);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn open_failure_names_the_path() {
        let err =
            open_log_file(Path::new("/nonexistent-dir/rcrun/log.json")).expect_err("must fail");
        assert_eq!(
            err.to_string(),
            "failed to open log file /nonexistent-dir/rcrun/log.json"
        );
    }
}
