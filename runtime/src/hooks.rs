//! OCI hooks: prestart, createRuntime, createContainer, startContainer, poststart, poststop.
//! Each gets the container's state JSON on stdin; the ones before start fail the container,
//! poststart and poststop only warn (runtime-spec "Lifecycle").
use oci_spec::runtime::{Hook, Hooks};
use std::io::Write;
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("invalid {kind} hook {path}: {reason}")]
    Invalid {
        kind: &'static str,
        path: PathBuf,
        reason: String,
    },
    #[error("failed to run {kind} hook {path}")]
    Spawn {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{kind} hook {path} {outcome}")]
    Failed {
        kind: &'static str,
        path: PathBuf,
        outcome: String,
    },
    #[error("{kind} hook {path} timed out after {secs} s")]
    Timeout {
        kind: &'static str,
        path: PathBuf,
        secs: i64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    Prestart,
    CreateRuntime,
    CreateContainer,
    StartContainer,
    Poststart,
    Poststop,
}

impl HookKind {
    pub fn name(self) -> &'static str {
        match self {
            HookKind::Prestart => "prestart",
            HookKind::CreateRuntime => "createRuntime",
            HookKind::CreateContainer => "createContainer",
            HookKind::StartContainer => "startContainer",
            HookKind::Poststart => "poststart",
            HookKind::Poststop => "poststop",
        }
    }
}

/// The spec's hooks, checked once up front.
#[derive(Debug, Clone, Default)]
pub struct HookSet {
    prestart: Vec<Hook>,
    create_runtime: Vec<Hook>,
    create_container: Vec<Hook>,
    start_container: Vec<Hook>,
    poststart: Vec<Hook>,
    poststop: Vec<Hook>,
}

impl HookSet {
    #[allow(deprecated)] // prestart is deprecated in the spec but still honoured, as runc does.
    pub fn from_spec(h: Option<&Hooks>) -> Result<Self, HookError> {
        let Some(h) = h else {
            return Ok(HookSet::default());
        };
        let set = HookSet {
            prestart: h.prestart().clone().unwrap_or_default(),
            create_runtime: h.create_runtime().clone().unwrap_or_default(),
            create_container: h.create_container().clone().unwrap_or_default(),
            start_container: h.start_container().clone().unwrap_or_default(),
            poststart: h.poststart().clone().unwrap_or_default(),
            poststop: h.poststop().clone().unwrap_or_default(),
        };
        for kind in [
            HookKind::Prestart,
            HookKind::CreateRuntime,
            HookKind::CreateContainer,
            HookKind::StartContainer,
            HookKind::Poststart,
            HookKind::Poststop,
        ] {
            for hook in set.get(kind) {
                let invalid = |reason: &str| HookError::Invalid {
                    kind: kind.name(),
                    path: hook.path().clone(),
                    reason: reason.into(),
                };
                if !hook.path().is_absolute() {
                    return Err(invalid("path must be absolute"));
                }
                if hook.timeout().is_some_and(|t| t <= 0) {
                    return Err(invalid("timeout must be positive"));
                }
                if hook.env().iter().flatten().any(|e| !e.contains('=')) {
                    return Err(invalid("env entries must be KEY=VALUE"));
                }
            }
        }
        Ok(set)
    }

    pub fn get(&self, kind: HookKind) -> &[Hook] {
        match kind {
            HookKind::Prestart => &self.prestart,
            HookKind::CreateRuntime => &self.create_runtime,
            HookKind::CreateContainer => &self.create_container,
            HookKind::StartContainer => &self.start_container,
            HookKind::Poststart => &self.poststart,
            HookKind::Poststop => &self.poststop,
        }
    }

    /// Whether the init must stop before its switch of root for the runtime-side hooks.
    pub fn needs_create_sync(&self) -> bool {
        !(self.prestart.is_empty()
            && self.create_runtime.is_empty()
            && self.create_container.is_empty()
            && self.start_container.is_empty())
    }

    /// Runs the hooks of one kind in order; the first failure stops the rest.
    pub fn run(&self, kind: HookKind, state: &[u8]) -> Result<(), HookError> {
        for hook in self.get(kind) {
            run_one(kind, hook, state)?;
        }
        Ok(())
    }

    /// For poststart and poststop: every hook runs, failures are logged.
    pub fn run_warn(&self, kind: HookKind, state: &[u8]) {
        for hook in self.get(kind) {
            if let Err(e) = run_one(kind, hook, state) {
                log::warn!("{}", crate::process::chain(&e));
            }
        }
    }
}

fn outcome(
    kind: HookKind,
    path: PathBuf,
    status: std::process::ExitStatus,
) -> Result<(), HookError> {
    if status.success() {
        return Ok(());
    }
    Err(HookError::Failed {
        kind: kind.name(),
        path,
        outcome: match status.code() {
            Some(c) => format!("exited with status {c}"),
            None => format!("was killed ({status})"),
        },
    })
}

/// The state document a hook reads on stdin (runtime-spec "State").
#[derive(Debug, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HookState<'a> {
    pub oci_version: &'a str,
    pub id: &'a str,
    pub status: &'a str,
    pub pid: i32,
    pub bundle: &'a std::path::Path,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<&'a std::collections::HashMap<String, String>>,
}

impl HookState<'_> {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }
}

fn run_one(kind: HookKind, hook: &Hook, state: &[u8]) -> Result<(), HookError> {
    let path = hook.path().clone();
    let mut cmd = Command::new(&path);
    if let Some(args) = hook.args() {
        if let Some((argv0, rest)) = args.split_first() {
            cmd.arg0(argv0).args(rest);
        }
    }
    cmd.env_clear();
    for kv in hook.env().iter().flatten() {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    cmd.stdin(Stdio::piped());
    let mut child = cmd.spawn().map_err(|source| HookError::Spawn {
        kind: kind.name(),
        path: path.clone(),
        source,
    })?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook that does not read its stdin closes the pipe: that is its right, not an
        // error (and we ignore SIGPIPE, so it cannot kill us either).
        let _ = stdin.write_all(state);
    }
    let deadline = hook
        .timeout()
        .map(|t| Instant::now() + Duration::from_secs(t.unsigned_abs()));
    if deadline.is_none() {
        let status = child.wait().map_err(|source| HookError::Spawn {
            kind: kind.name(),
            path: path.clone(),
            source,
        })?;
        return outcome(kind, path, status);
    }
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return outcome(kind, path, status),
            Ok(None) => {}
            Err(source) => {
                return Err(HookError::Spawn {
                    kind: kind.name(),
                    path,
                    source,
                })
            }
        }
        if deadline.is_some_and(|d| Instant::now() > d) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(HookError::Timeout {
                kind: kind.name(),
                path,
                secs: hook.timeout().unwrap_or(0),
            });
        }
        std::thread::sleep(Duration::from_millis(2));
    }
}
