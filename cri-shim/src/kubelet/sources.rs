//! ConfigMaps and Secrets a pod refers to, from its own file and from `--config-dir`. There is no
//! API server: these are the node's only sources of configuration and passwords.
//!
//! `config_dir` layout (every part optional):
//!   <dir>/*.yaml|*.yml|*.json                ConfigMap/Secret manifests (any number of documents)
//!   <dir>/configmaps/<name>/<key>            a directory of key files (file name = key)
//!   <dir>/secrets/<name>/<key>
//!   <dir>/namespaces/<ns>/configmaps|secrets/<name>/<key>   the same for namespace <ns>
//! Key-file sources without a namespaces/ prefix are in namespace "default".
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context};

use super::manifest::{self, Object};

type Contents = BTreeMap<String, Vec<u8>>;

/// ConfigMaps and Secrets by (namespace, name), contents decoded to bytes.
#[derive(Debug, Clone, Default)]
pub struct ConfigSources {
    config_maps: BTreeMap<(String, String), Contents>,
    secrets: BTreeMap<(String, String), Contents>,
}

fn namespace_of(meta: &manifest::ObjectMeta) -> String {
    if meta.namespace.is_empty() {
        "default".to_string()
    } else {
        meta.namespace.clone()
    }
}

impl ConfigSources {
    /// Reads `config_dir` (if given) and takes the ConfigMap/Secret documents among `objects`
    /// (Pods are skipped). The same object defined twice is an error naming both places, as
    /// kubectl create would refuse the second one.
    pub fn load(config_dir: Option<&Path>, objects: &[Object]) -> anyhow::Result<ConfigSources> {
        let mut sources = ConfigSources::default();
        for object in objects {
            sources.add_object(object, "the pod's manifest")?;
        }
        if let Some(dir) = config_dir {
            sources
                .load_dir(dir)
                .with_context(|| format!("config dir {}", dir.display()))?;
        }
        Ok(sources)
    }

    pub fn config_map(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.config_maps
            .get(&(namespace.to_string(), name.to_string()))
    }

    pub fn secret(&self, namespace: &str, name: &str) -> Option<&BTreeMap<String, Vec<u8>>> {
        self.secrets.get(&(namespace.to_string(), name.to_string()))
    }

    fn add_object(&mut self, object: &Object, origin: &str) -> anyhow::Result<()> {
        let (map, contents) = match object {
            Object::Pod(_) => return Ok(()),
            Object::ConfigMap(cm) => (&mut self.config_maps, cm.contents()),
            Object::Secret(s) => (&mut self.secrets, s.contents()),
        };
        let meta = object.metadata();
        let kind = object.kind();
        let contents = contents.with_context(|| format!("{kind} {:?} in {origin}", meta.name))?;
        insert(map, kind, namespace_of(meta), &meta.name, contents, origin)
    }

    fn load_dir(&mut self, dir: &Path) -> anyhow::Result<()> {
        let mut entries: Vec<_> = fs::read_dir(dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .collect::<Result<_, _>>()
            .with_context(|| format!("reading {}", dir.display()))?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let path = entry.path();
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let is_manifest = [".yaml", ".yml", ".json"]
                .iter()
                .any(|ext| name.ends_with(ext));
            if is_manifest && path.is_file() {
                let (objects, _warnings) = manifest::load_file(&path)?;
                for object in &objects {
                    if let Object::Pod(p) = object {
                        bail!(
                            "{}: Pod {:?}: a config dir holds only ConfigMaps and Secrets",
                            path.display(),
                            p.metadata.name
                        );
                    }
                    self.add_object(object, &path.display().to_string())?;
                }
            }
        }
        self.load_key_dirs(dir, "default")?;
        let namespaces = dir.join("namespaces");
        if namespaces.is_dir() {
            for entry in sorted_dirs(&namespaces)? {
                let ns = entry.file_name().to_string_lossy().into_owned();
                self.load_key_dirs(&entry.path(), &ns)?;
            }
        }
        Ok(())
    }

    /// `<base>/configmaps/<name>/<key>` and `<base>/secrets/<name>/<key>`.
    fn load_key_dirs(&mut self, base: &Path, namespace: &str) -> anyhow::Result<()> {
        for (sub, kind) in [("configmaps", "ConfigMap"), ("secrets", "Secret")] {
            let dir = base.join(sub);
            if !dir.is_dir() {
                continue;
            }
            for entry in sorted_dirs(&dir)? {
                let name = entry.file_name().to_string_lossy().into_owned();
                let contents = read_key_files(&entry.path())?;
                let map = if kind == "ConfigMap" {
                    &mut self.config_maps
                } else {
                    &mut self.secrets
                };
                let origin = entry.path().display().to_string();
                insert(map, kind, namespace.to_string(), &name, contents, &origin)?;
            }
        }
        Ok(())
    }
}

fn insert(
    map: &mut BTreeMap<(String, String), Contents>,
    kind: &str,
    namespace: String,
    name: &str,
    contents: Contents,
    origin: &str,
) -> anyhow::Result<()> {
    if name.is_empty() {
        bail!("{origin}: {kind} without metadata.name");
    }
    let key = (namespace, name.to_string());
    if map.contains_key(&key) {
        bail!(
            "{origin}: {kind} {}/{} is defined more than once",
            key.0,
            key.1
        );
    }
    map.insert(key, contents);
    Ok(())
}

fn sorted_dirs(dir: &Path) -> anyhow::Result<Vec<fs::DirEntry>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if !hidden && entry.path().is_dir() {
            out.push(entry);
        }
    }
    out.sort_by_key(|e| e.file_name());
    Ok(out)
}

/// A directory of key files: each regular file is a key (its name) with its bytes. Hidden
/// files are skipped (editors' swap files, and kubelet's own `..data` links when a real
/// volume directory is copied here).
fn read_key_files(dir: &Path) -> anyhow::Result<Contents> {
    let mut out = Contents::new();
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let key = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if key.starts_with('.') || !path.is_file() {
            continue;
        }
        let bytes = fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
        out.insert(key, bytes);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    struct TempDir(PathBuf);
    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let p = PathBuf::from(format!(
                "/tmp/rcri-sources-{tag}-{}-{:?}",
                std::process::id(),
                std::thread::current().id()
            ));
            let _ = fs::remove_dir_all(&p);
            fs::create_dir_all(&p).unwrap();
            TempDir(p)
        }
    }
    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn manifests_key_dirs_and_namespaces() {
        let t = TempDir::new("load");
        let d = &t.0;
        fs::write(
            d.join("cfg.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\ndata: {mode: fast}\n---\n\
             apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: prod}\ndata: {pw: aHVudGVyMg==}\n",
        )
        .unwrap();
        fs::write(d.join("notes.txt"), "ignored").unwrap();
        fs::create_dir_all(d.join("configmaps/files")).unwrap();
        fs::write(d.join("configmaps/files/index.html"), "<h1>hi</h1>").unwrap();
        fs::write(d.join("configmaps/files/.swp"), "x").unwrap();
        fs::create_dir_all(d.join("secrets/tls")).unwrap();
        fs::write(d.join("secrets/tls/key"), [0u8, 255]).unwrap();
        fs::create_dir_all(d.join("namespaces/prod/configmaps/app")).unwrap();
        fs::write(d.join("namespaces/prod/configmaps/app/mode"), "safe").unwrap();

        let (pod_objects, _) = manifest::parse_objects(
            "apiVersion: v1\nkind: Secret\nmetadata: {name: inline}\nstringData: {a: b}\n",
            "pod.yaml",
        )
        .unwrap();
        let s = ConfigSources::load(Some(d), &pod_objects).unwrap();
        assert_eq!(s.config_map("default", "app").unwrap()["mode"], b"fast");
        assert_eq!(s.config_map("prod", "app").unwrap()["mode"], b"safe");
        assert_eq!(s.secret("prod", "db").unwrap()["pw"], b"hunter2");
        assert!(s.secret("default", "db").is_none());
        let files = s.config_map("default", "files").unwrap();
        assert_eq!(files.keys().collect::<Vec<_>>(), vec!["index.html"]);
        assert_eq!(s.secret("default", "tls").unwrap()["key"], vec![0u8, 255]);
        assert_eq!(s.secret("default", "inline").unwrap()["a"], b"b");
    }

    #[test]
    fn duplicates_and_bad_dirs_are_errors() {
        let t = TempDir::new("dup");
        let d = &t.0;
        fs::write(
            d.join("a.yaml"),
            "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: app}\n",
        )
        .unwrap();
        fs::create_dir_all(d.join("configmaps/app")).unwrap();
        let err = format!("{:#}", ConfigSources::load(Some(d), &[]).unwrap_err());
        assert!(
            err.contains("ConfigMap default/app is defined more than once"),
            "{err}"
        );

        let err = format!(
            "{:#}",
            ConfigSources::load(Some(Path::new("/nonexistent/rcri-cfg")), &[]).unwrap_err()
        );
        assert!(err.contains("/nonexistent/rcri-cfg"), "{err}");
        assert!(ConfigSources::load(None, &[])
            .unwrap()
            .config_map("default", "x")
            .is_none());
    }
}
