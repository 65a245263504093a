//! The files in contrib/ that hack/install.sh puts on a node must stay what rcri understands:
//! the documented config must parse and equal the built-in defaults, and document every key;
//! the default CNI config must load.

use std::path::{Path, PathBuf};

use rcri::cni::{self, Cni};
use rcri::config::Config;
use rcri::image::{Mirror, RegistryConfig};

fn contrib(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../contrib")
        .join(path)
}

fn config_text() -> String {
    std::fs::read_to_string(contrib("rcri/config.toml")).expect("contrib/rcri/config.toml")
}

#[test]
fn documented_config_is_the_default_config() {
    let path = contrib("rcri/config.toml");
    let parsed = Config::load(Some(&path)).expect("contrib/rcri/config.toml parses");
    // Config is not PartialEq (it need not be); its Debug form shows every field.
    assert_eq!(format!("{parsed:#?}"), format!("{:#?}", Config::default()));
    parsed.validate().expect("the default config validates");
}

/// Field names as `{:#?}` prints them, one per line (`name: value`).
fn debug_field_names(debug: &str) -> Vec<String> {
    debug
        .lines()
        .filter_map(|line| {
            let (name, _) = line.trim().split_once(": ")?;
            name.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
                .then(|| name.to_string())
        })
        .collect()
}

#[test]
fn documented_config_names_every_key() {
    let text = config_text();
    let mut names = debug_field_names(&format!("{:#?}", Config::default()));
    names.extend(debug_field_names(&format!("{:#?}", Mirror::default())));
    assert!(
        names.len() > 15,
        "field names not found in Debug output: {names:?}"
    );
    for name in names {
        // `key = ...` (set or commented out) or a table header `[key` / `.key`.
        let documented = text.lines().any(|line| {
            let line = line.trim_start_matches(['#', ' ']);
            line.starts_with(&format!("{name} ="))
                || line.starts_with(&format!("[{name}"))
                || line.contains(&format!(".{name}"))
        });
        assert!(
            documented,
            "config key {name} is not in contrib/rcri/config.toml"
        );
    }
}

#[test]
fn commented_out_examples_parse() {
    // Uncomment every `# key = value` / `# [table]` line (not prose) and parse again.
    let uncommented: String = config_text()
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.starts_with('[')
                    || rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| !k.is_empty() && !k.contains(' ')) =>
            {
                rest.to_string() + "\n"
            }
            _ => line.to_string() + "\n",
        })
        .collect();
    let config: Config = toml::from_str(&uncommented).expect("uncommented examples parse");
    assert_eq!(config.runtime, PathBuf::from("/usr/sbin/runc"));
    assert_eq!(
        config.fallback_rootfs,
        Some(PathBuf::from("/path/to/rootfs"))
    );
    let mirror = &config.registry.mirrors["docker.io"];
    assert_eq!(mirror.endpoints.len(), 2);
    assert!(mirror.fallback_to_upstream);
    assert_ne!(config.registry, RegistryConfig::default());
    config.validate().expect("the examples validate");
}

#[test]
fn default_cni_config_loads() {
    let cni = Cni {
        conf_dir: contrib("cni"),
        bin_dirs: vec![PathBuf::from("/opt/cni/bin"), PathBuf::from("/usr/lib/cni")],
    };
    let list = cni.load().expect("contrib/cni/10-rcri.conflist loads");
    assert_eq!(list.name, "rcri");
    assert_eq!(list.cni_version, "1.0.0");
    assert_eq!(cni::plugin_types(&list), ["bridge", "portmap"]);
    // Where the plugins are installed (hack/setup.sh installs Debian's), they are all found.
    if Path::new("/usr/lib/cni/bridge").exists() || Path::new("/opt/cni/bin/bridge").exists() {
        cni.check()
            .expect("every plugin of the default CNI config is installed");
    }
}
