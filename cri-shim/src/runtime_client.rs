//! The OCI runtime (rcrun, runc or crun) driven through runc's command line, and nothing else:
//! `--root R [--log F --log-format json] <create|start|state|kill|delete|exec> ...`.
//! `create` is run by the monitor (which must own the container's stdio), so here it only
//! contributes its argument list.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde::Deserialize;
use tokio::process::Command;

/// How long a runtime command other than exec may take before it is killed: a wedged runtime
/// must not wedge the CRI call (kubelet retries).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("container {0} does not exist in the OCI runtime")]
    NotFound(String),
    #[error("failed to run {binary}")]
    Spawn {
        binary: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("`{command}` timed out after {timeout:?}")]
    Timeout { command: String, timeout: Duration },
    #[error("`{command}` failed: {message}")]
    Failed { command: String, message: String },
    #[error("failed to parse the output of `{command}`")]
    Parse {
        command: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The OCI state (`runtime state ID`), the fields rcri uses.
#[derive(Debug, Clone, Deserialize)]
pub struct OciState {
    pub id: String,
    /// creating, created, running, stopped (or paused).
    pub status: String,
    #[serde(default)]
    pub pid: i32,
    #[serde(default)]
    pub bundle: PathBuf,
}

#[derive(Debug, Clone)]
pub struct RuntimeClient {
    pub binary: PathBuf,
    pub root: PathBuf,
}

/// What a finished runtime command printed.
struct Finished {
    success: bool,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
}

impl RuntimeClient {
    pub fn new(binary: PathBuf, root: PathBuf) -> RuntimeClient {
        RuntimeClient { binary, root }
    }

    fn global_args(&self) -> Vec<OsString> {
        vec!["--root".into(), self.root.clone().into_os_string()]
    }

    /// argv (without the binary) of `create`, for the monitor to run with the container's stdio.
    /// Runtime errors go to `log` as JSON lines, not to stderr, which is the container's.
    /// `console_socket`: where the init sends its pty master (process.terminal).
    pub fn create_args(
        &self,
        id: &str,
        bundle: &Path,
        pid_file: &Path,
        log: &Path,
        console_socket: Option<&Path>,
    ) -> Vec<OsString> {
        let mut args = self.global_args();
        args.extend([
            "--log".into(),
            log.as_os_str().to_owned(),
            "--log-format".into(),
            "json".into(),
            "create".into(),
            "--bundle".into(),
            bundle.as_os_str().to_owned(),
            "--pid-file".into(),
            pid_file.as_os_str().to_owned(),
        ]);
        if let Some(socket) = console_socket {
            args.extend(["--console-socket".into(), socket.as_os_str().to_owned()]);
        }
        args.push(id.into());
        args
    }

    /// A `exec --process <file> --pid-file <file> ID` command, not yet spawned: ExecSync owns its
    /// stdio and timeout.
    pub fn exec_command(&self, id: &str, process_json: &Path, pid_file: &Path) -> Command {
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.global_args())
            .arg("exec")
            .arg("--process")
            .arg(process_json)
            .arg("--pid-file")
            .arg(pid_file)
            .arg(id);
        cmd
    }

    async fn run(&self, args: &[&str]) -> Result<Finished, RuntimeError> {
        let command = format!("{} {}", self.binary.display(), args.join(" "));
        let mut cmd = Command::new(&self.binary);
        cmd.args(self.global_args())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        match tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output()).await {
            Err(_) => Err(RuntimeError::Timeout {
                command,
                timeout: COMMAND_TIMEOUT,
            }),
            Ok(Err(source)) => Err(RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            }),
            Ok(Ok(out)) => Ok(Finished {
                success: out.status.success(),
                stdout: out.stdout,
                stderr: out.stderr,
            }),
        }
    }

    /// Runs a command that prints nothing useful; maps "does not exist" to NotFound.
    async fn run_simple(&self, id: &str, args: &[&str]) -> Result<(), RuntimeError> {
        let out = self.run(args).await?;
        if out.success {
            return Ok(());
        }
        Err(failure(id, args, &out.stderr, &self.binary))
    }

    pub async fn start(&self, id: &str) -> Result<(), RuntimeError> {
        self.run_simple(id, &["start", id]).await
    }

    /// The container's OCI state, None when the runtime does not know it.
    pub async fn state(&self, id: &str) -> Result<Option<OciState>, RuntimeError> {
        let out = self.run(&["state", id]).await?;
        if !out.success {
            return match failure(id, &["state", id], &out.stderr, &self.binary) {
                RuntimeError::NotFound(_) => Ok(None),
                other => Err(other),
            };
        }
        serde_json::from_slice(&out.stdout)
            .map(Some)
            .map_err(|source| RuntimeError::Parse {
                command: format!("{} state {id}", self.binary.display()),
                source,
            })
    }

    /// Sends `signal` (a name such as SIGTERM, or a number) to the init, or with `all` to every
    /// process of the container (needed when the container shares the pod's PID namespace: its
    /// init's death does not take the other processes with it).
    pub async fn kill(&self, id: &str, signal: &str, all: bool) -> Result<(), RuntimeError> {
        if all {
            self.run_simple(id, &["kill", "--all", id, signal]).await
        } else {
            self.run_simple(id, &["kill", id, signal]).await
        }
    }

    /// `update --resources FILE ID`: applies an OCI LinuxResources JSON to the running
    /// container's cgroup (fields left out keep their values).
    pub async fn update(&self, id: &str, resources_json: &Path) -> Result<(), RuntimeError> {
        let file = resources_json.to_string_lossy();
        self.run_simple(id, &["update", "--resources", &file, id])
            .await
    }

    /// Deletes the container; a container the runtime does not know is already deleted.
    pub async fn delete(&self, id: &str, force: bool) -> Result<(), RuntimeError> {
        let result = if force {
            self.run_simple(id, &["delete", "--force", id]).await
        } else {
            self.run_simple(id, &["delete", id]).await
        };
        match result {
            Err(RuntimeError::NotFound(_)) => Ok(()),
            other => other,
        }
    }

    /// `runtime --version`, proving the binary runs (for Status RuntimeReady).
    pub async fn version(&self) -> Result<String, RuntimeError> {
        let mut cmd = Command::new(&self.binary);
        cmd.arg("--version")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let command = format!("{} --version", self.binary.display());
        let child = cmd.spawn().map_err(|source| RuntimeError::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        let out = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .map_err(|_| RuntimeError::Timeout {
                command: command.clone(),
                timeout: COMMAND_TIMEOUT,
            })?
            .map_err(|source| RuntimeError::Spawn {
                binary: self.binary.clone(),
                source,
            })?;
        if !out.status.success() {
            return Err(RuntimeError::Failed {
                command,
                message: last_message(&out.stderr),
            });
        }
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }
}

fn failure(id: &str, args: &[&str], stderr: &[u8], binary: &Path) -> RuntimeError {
    let message = last_message(stderr);
    if is_not_found(&message) {
        return RuntimeError::NotFound(id.to_string());
    }
    RuntimeError::Failed {
        command: format!("{} {}", binary.display(), args.join(" ")),
        message,
    }
}

/// runc: `container does not exist`; crun: `... No such file or directory` for the state dir;
/// rcrun: `container "x" does not exist`.
pub fn is_not_found(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    m.contains("does not exist") || m.contains("not found") || m.contains("no such file")
}

/// The runtime's error: the `msg` of the last JSON log line at level error, else the last
/// non-empty line of text.
pub fn last_message(output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output);
    let mut fallback = "";
    for line in text.lines().rev() {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if let Ok(value) = serde_json::from_str::<serde_json::Value>(line) {
            if let Some(msg) = value.get("msg").and_then(|m| m.as_str()) {
                let level = value.get("level").and_then(|l| l.as_str()).unwrap_or("");
                if level == "error" || level == "fatal" || fallback.is_empty() {
                    return msg.to_string();
                }
            }
        }
        if fallback.is_empty() {
            fallback = line;
        }
    }
    if fallback.is_empty() {
        "no error message".to_string()
    } else {
        fallback.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_log_errors_win_over_text() {
        let log = b"{\"level\":\"info\",\"msg\":\"hi\"}\n{\"level\":\"error\",\"msg\":\"boom\"}\n";
        assert_eq!(last_message(log), "boom");
        assert_eq!(last_message(b"rcrun: oops\n\n"), "rcrun: oops");
        assert_eq!(last_message(b""), "no error message");
    }

    #[test]
    fn not_found_messages_of_runc_crun_and_rcrun() {
        assert!(is_not_found("container does not exist"));
        assert!(is_not_found("rcrun: container \"x\" does not exist"));
        assert!(is_not_found(
            "error opening file `/run/crun/x/status`: No such file or directory"
        ));
        assert!(!is_not_found("permission denied"));
    }
}
