//! Static pods: `--pod-manifest-dir` watched the way kubelet's file source does it, by polling
//! every `--file-check-frequency`. A new manifest file starts its pods, a changed one (content
//! hash) deletes and re-creates them, a removed one deletes them. A file that does not parse or
//! validate is reported once (until it changes) and skipped; the other pods are not affected.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

use super::manifest::{self, Object};
use super::records::{self, Records};
use super::sources::ConfigSources;
use super::worker::{self, Kubelet, PodHandle};

/// Manifest files of `dir` (*.yaml, *.yml, *.json; dot files ignored) with their content hash.
pub fn scan(dir: &Path) -> Result<BTreeMap<PathBuf, String>> {
    let mut out = BTreeMap::new();
    let entries =
        std::fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("cannot read {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') {
            continue;
        }
        let ext_ok = [".yaml", ".yml", ".json"].iter().any(|e| name.ends_with(e));
        if !ext_ok {
            continue;
        }
        let path = entry.path();
        if !path.is_file() {
            continue;
        }
        // A file that vanished between listing and reading is simply gone.
        let Ok(bytes) = std::fs::read(&path) else {
            continue;
        };
        let hash = Sha256::digest(&bytes);
        out.insert(path, hash.iter().map(|b| format!("{b:02x}")).collect());
    }
    Ok(out)
}

struct FilePods {
    hash: String,
    handles: Vec<PodHandle>,
    /// Records of the file's pods (namespace, name): removed with the file even once terminal.
    pods: Vec<(String, String)>,
}

pub struct StaticPods {
    dir: PathBuf,
    config_dir: Option<PathBuf>,
    files: BTreeMap<PathBuf, FilePods>,
    /// Pods run from FILE arguments, which a static pod must not take over.
    reserved: Vec<(String, String)>,
}

impl StaticPods {
    pub fn new(dir: &Path, config_dir: Option<&Path>, reserved: Vec<(String, String)>) -> Self {
        StaticPods {
            dir: dir.to_path_buf(),
            config_dir: config_dir.map(Path::to_path_buf),
            files: BTreeMap::new(),
            reserved,
        }
    }

    /// One look at the directory.
    pub async fn sync(&mut self, kl: &Arc<Kubelet>, records: &Records) {
        let seen = match scan(&self.dir) {
            Ok(s) => s,
            Err(e) => {
                kl.progress.event("static pods", format!("{e:#}"));
                return;
            }
        };
        let gone: Vec<PathBuf> = self
            .files
            .iter()
            .filter(|(p, f)| seen.get(*p) != Some(&f.hash))
            .map(|(p, _)| p.clone())
            .collect();
        for path in gone {
            if let Some(f) = self.files.remove(&path) {
                remove_pods(kl, records, f).await;
            }
        }
        for (path, hash) in seen {
            if self.files.contains_key(&path) {
                continue;
            }
            let mut entry = FilePods {
                hash,
                handles: Vec::new(),
                pods: Vec::new(),
            };
            if let Err(e) = self.start_file(kl, records, &path, &mut entry) {
                // The error names the file (and field); the pods of other files go on.
                eprintln!("error: {e:#} (file skipped until it changes)");
            }
            self.files.insert(path, entry);
        }
    }

    fn start_file(
        &self,
        kl: &Arc<Kubelet>,
        records: &Records,
        path: &Path,
        entry: &mut FilePods,
    ) -> Result<()> {
        let (objects, warnings) = manifest::load_file(path)?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        let source = path.display().to_string();
        let mut pods = Vec::new();
        for o in &objects {
            if let Object::Pod(p) = o {
                pods.push(worker::prepare((**p).clone(), &kl.node_name, &source)?);
            }
        }
        if pods.is_empty() {
            anyhow::bail!("no Pod in the file");
        }
        for p in &pods {
            let id = (p.metadata.namespace.clone(), p.metadata.name.clone());
            let taken =
                self.reserved.contains(&id) || self.files.values().any(|f| f.pods.contains(&id));
            if taken {
                anyhow::bail!("pod {}/{} is already defined elsewhere", id.0, id.1);
            }
        }
        let sources = Arc::new(ConfigSources::load(self.config_dir.as_deref(), &objects)?);
        for p in pods {
            let id = (p.metadata.namespace.clone(), p.metadata.name.clone());
            let handle = worker::start(kl, records, p, sources.clone())?;
            entry.handles.push(handle);
            entry.pods.push(id);
        }
        Ok(())
    }

    /// Deletes every static pod (at exit).
    pub async fn shutdown(&mut self, kl: &Arc<Kubelet>, records: &Records) {
        let files = std::mem::take(&mut self.files);
        let all = files.into_values().map(|f| remove_pods(kl, records, f));
        futures_util::future::join_all(all).await;
    }
}

/// Deletes the pods of a file: running ones through their worker, terminal ones (no worker
/// left) directly.
async fn remove_pods(kl: &Arc<Kubelet>, records: &Records, f: FilePods) {
    for h in &f.handles {
        h.delete(None);
    }
    for h in f.handles {
        h.wait().await;
    }
    for (ns, name) in f.pods {
        let dir = records.pod_dir(&ns, &name);
        if records::read_record(&dir).ok().flatten().is_none() {
            continue;
        }
        match worker::delete_unowned(kl, &dir, None).await {
            Ok(_) => kl.progress.event(&format!("{ns}/{name}"), "pod deleted"),
            Err(e) => kl
                .progress
                .event(&format!("{ns}/{name}"), format!("cannot delete: {e:#}")),
        }
    }
}
