//! rcri's configuration: a TOML file (every key optional) that command-line flags override.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("failed to read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("failed to parse config file {path}")]
    Parse {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// Everything rcri needs to know about its host. Field names are the TOML keys.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "snake_case")]
pub struct Config {
    /// The unix socket the CRI services listen on.
    pub listen: PathBuf,
    /// Persistent metadata (the store) and images.
    pub root_dir: PathBuf,
    /// Volatile state: bundles, pinned network namespaces, exit files (tmpfs in production).
    pub state_dir: PathBuf,
    /// The OCI runtime binary speaking runc's command line (rcrun, runc, crun).
    pub runtime: PathBuf,
    /// The OCI runtime's `--root`.
    pub runtime_root: PathBuf,
    pub cni_conf_dir: PathBuf,
    pub cni_bin_dirs: Vec<PathBuf>,
    /// Where the streaming server (exec/attach/port-forward URLs) will listen; loopback only.
    pub streaming_addr: String,
    /// tracing filter, e.g. `info` or `rcri=debug`.
    pub log_level: String,
    /// `text` (human-readable) or `json` (one object per line, for log shippers).
    pub log_format: String,
    /// OCI image layouts imported into the image store at start (a stop-gap until registry pulls).
    pub import_layouts: Vec<PathBuf>,
    /// When an image is not in the store, copy this directory as the container's rootfs instead of
    /// failing. Meant for tests and bring-up only, while the image store is being written.
    pub fallback_rootfs: Option<PathBuf>,
    // ---- images (owned by the image module) ----
    /// `[registry]`: mirrors, plain-http registries and timeouts for PullImage.
    pub registry: crate::image::RegistryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: PathBuf::from("/run/rcri/rcri.sock"),
            root_dir: PathBuf::from("/var/lib/rcri"),
            state_dir: PathBuf::from("/run/rcri"),
            runtime: default_runtime(),
            runtime_root: PathBuf::from("/run/rcri/runtime"),
            cni_conf_dir: PathBuf::from("/etc/cni/net.d"),
            cni_bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
            streaming_addr: "127.0.0.1:0".to_string(),
            log_level: "info".to_string(),
            log_format: "text".to_string(),
            import_layouts: Vec::new(),
            fallback_rootfs: None,
            registry: crate::image::RegistryConfig::default(),
        }
    }
}

/// `rcrun` next to our own binary (how the workspace builds and installs them), else on PATH.
fn default_runtime() -> PathBuf {
    let sibling = std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.join("rcrun")));
    match sibling {
        Some(path) if path.is_file() => path,
        _ => PathBuf::from("rcrun"),
    }
}

impl Config {
    /// Reads `path` if given, else the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let Some(path) = path else {
            return Ok(Config::default());
        };
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_path_buf(),
            source,
        })
    }

    /// Checks what can be checked without side effects; relative paths would silently depend on
    /// the daemon's working directory, so they are refused.
    pub fn validate(&self) -> Result<(), ConfigError> {
        for (name, path) in [
            ("listen", &self.listen),
            ("root_dir", &self.root_dir),
            ("state_dir", &self.state_dir),
            ("runtime_root", &self.runtime_root),
            ("cni_conf_dir", &self.cni_conf_dir),
        ] {
            if !path.is_absolute() {
                return Err(ConfigError::Invalid(format!(
                    "{name} must be an absolute path, got {}",
                    path.display()
                )));
            }
        }
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            )));
        }
        self.registry
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        Ok(())
    }

    /// The runtime binary as an absolute path: a bare name is looked up on PATH now, so that a
    /// later change of PATH or cwd cannot change which runtime runs containers.
    pub fn resolved_runtime(&self) -> Result<PathBuf, ConfigError> {
        if self.runtime.components().count() > 1 {
            return Ok(self.runtime.clone());
        }
        let path = std::env::var_os("PATH").unwrap_or_default();
        std::env::split_paths(&path)
            .map(|dir| dir.join(&self.runtime))
            .find(|candidate| candidate.is_file())
            .ok_or_else(|| {
                ConfigError::Invalid(format!(
                    "OCI runtime {} not found on PATH",
                    self.runtime.display()
                ))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_overrides_defaults() {
        let config: Config = toml::from_str(
            "runtime = \"/usr/sbin/runc\"\ncni_bin_dirs = [\"/x\"]\nlog_level = \"debug\"\n",
        )
        .unwrap();
        assert_eq!(config.runtime, PathBuf::from("/usr/sbin/runc"));
        assert_eq!(config.cni_bin_dirs, vec![PathBuf::from("/x")]);
        assert_eq!(config.root_dir, PathBuf::from("/var/lib/rcri"));
    }

    #[test]
    fn unknown_keys_are_refused() {
        assert!(toml::from_str::<Config>("nope = 1\n").is_err());
    }

    #[test]
    fn relative_paths_are_refused() {
        let config = Config {
            root_dir: PathBuf::from("var/lib"),
            ..Config::default()
        };
        assert!(config.validate().is_err());
    }
}
