//! The host side of a pod's volumes, and the CRI mounts each container gets from them.
//!
//! Layout: `<pod_dir>/volumes/<volume name>` for every volume but hostPath (which is the host
//! path itself). emptyDir is a directory (medium Memory: a tmpfs); secret and projected
//! volumes are tmpfs too, so passwords never reach a disk, as kubelet does. Files of
//! configMap/secret/projected/downwardAPI volumes are written the way kubelet's AtomicWriter
//! writes them: into a fresh `..<timestamp>` directory, published by renaming the `..data`
//! symlink, with one `<key> -> ..data/<key>` symlink per top-level entry, so a refresh is seen
//! whole by a running container.
use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};
use std::time::SystemTime;

use anyhow::{bail, Context};
use k8s_cri::v1 as cri;
use nix::mount::{MntFlags, MsFlags};

use super::convert::{field_ref_value, resource_field_value};
use super::manifest::{Container, DownwardApiVolumeFile, KeyToPath, Pod, Volume};
use super::quantity;
use super::sources::ConfigSources;

/// How a volume reaches containers.
#[derive(Debug, Clone)]
struct Prepared {
    host_path: PathBuf,
    /// configMap, secret, projected and downwardAPI: always read-only, as Kubernetes mounts them.
    read_only: bool,
}

/// The volumes of one pod as set up on the host.
#[derive(Debug, Clone, Default)]
pub struct PodVolumes {
    volumes_dir: PathBuf,
    volumes: BTreeMap<String, Prepared>,
}

/// A file of a projected volume: its bytes and mode.
type Files = BTreeMap<String, (Vec<u8>, u32)>;

/// kubelet's permission masks for volume ownership with fsGroup (SetVolumeOwnership).
const RW_MASK: u32 = 0o660;
const RO_MASK: u32 = 0o440;

fn volumes_dir(pod_dir: &Path) -> PathBuf {
    pod_dir.join("volumes")
}

/// Mount points listed in /proc/self/mountinfo (field 5, octal escapes undone).
fn mount_points() -> anyhow::Result<Vec<PathBuf>> {
    let text =
        fs::read_to_string("/proc/self/mountinfo").context("reading /proc/self/mountinfo")?;
    Ok(text
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|p| PathBuf::from(unescape_mountinfo(p)))
        .collect())
}

fn unescape_mountinfo(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn is_mount_point(path: &Path) -> anyhow::Result<bool> {
    Ok(mount_points()?.iter().any(|m| m == path))
}

fn mount_tmpfs(dir: &Path, size: Option<i64>) -> anyhow::Result<()> {
    if is_mount_point(dir)? {
        return Ok(());
    }
    let data = size.map(|s| format!("size={s}"));
    nix::mount::mount(
        Some("tmpfs"),
        dir,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        data.as_deref(),
    )
    .with_context(|| format!("mounting tmpfs on {}", dir.display()))
}

fn set_mode(path: &Path, mode: u32) -> anyhow::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {:o} {}", mode, path.display()))
}

/// fsGroup ownership as kubelet applies it: group-owned, mode | mask, setgid on directories.
fn apply_fs_group(path: &Path, fs_group: Option<i64>, mask: u32) -> anyhow::Result<()> {
    let Some(gid) = fs_group else { return Ok(()) };
    let gid = u32::try_from(gid).with_context(|| format!("fsGroup {gid} is out of range"))?;
    let meta = fs::symlink_metadata(path).with_context(|| format!("stat {}", path.display()))?;
    if meta.file_type().is_symlink() {
        return Ok(());
    }
    nix::unistd::chown(path, None, Some(nix::unistd::Gid::from_raw(gid)))
        .with_context(|| format!("chown :{gid} {}", path.display()))?;
    let mut mode = (meta.permissions().mode() & 0o7777) | mask;
    if meta.is_dir() {
        mode |= 0o2000;
    }
    set_mode(path, mode)
}

/// A projected path must stay below the volume: relative, no `..`, not starting with `..`
/// (kubelet's AtomicWriter reserves those names).
fn check_file_path(path: &str) -> anyhow::Result<()> {
    if path.is_empty() || path.starts_with('/') {
        bail!("path {path:?} must be relative");
    }
    if path.starts_with("..") || path.split('/').any(|c| c == "..") {
        bail!("path {path:?} must not contain '..' or start with '..'");
    }
    Ok(())
}

/// Writes `files` into `dir` the AtomicWriter way (see the module doc).
fn write_projection(dir: &Path, files: &Files, fs_group: Option<i64>) -> anyhow::Result<()> {
    for path in files.keys() {
        check_file_path(path)?;
    }
    let stamp = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let ts_name = format!("..{stamp}_{}", std::process::id());
    let ts_dir = dir.join(&ts_name);
    fs::create_dir(&ts_dir).with_context(|| format!("creating {}", ts_dir.display()))?;
    for (path, (bytes, mode)) in files {
        let target = ts_dir.join(path);
        if let Some(parent) = target.parent() {
            fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        fs::write(&target, bytes).with_context(|| format!("writing {}", target.display()))?;
        set_mode(&target, *mode)?;
        apply_fs_group(&target, fs_group, RO_MASK)?;
    }
    // Sub-directories and the timestamped one itself: 0755 (+ fsGroup), as AtomicWriter.
    let mut dirs: BTreeSet<PathBuf> = BTreeSet::from([ts_dir.clone()]);
    for path in files.keys() {
        let mut p = ts_dir.join(path);
        while p.pop() && p != ts_dir {
            dirs.insert(p.clone());
        }
    }
    for d in &dirs {
        set_mode(d, 0o755)?;
        apply_fs_group(d, fs_group, RO_MASK)?;
    }
    let tmp_link = dir.join("..data_tmp");
    let _ = fs::remove_file(&tmp_link);
    std::os::unix::fs::symlink(&ts_name, &tmp_link)
        .with_context(|| format!("creating {}", tmp_link.display()))?;
    fs::rename(&tmp_link, dir.join("..data"))
        .with_context(|| format!("publishing {}/..data", dir.display()))?;
    let top: BTreeSet<&str> = files.keys().filter_map(|p| p.split('/').next()).collect();
    for name in &top {
        let link = dir.join(name);
        if fs::symlink_metadata(&link).is_err() {
            std::os::unix::fs::symlink(Path::new("..data").join(name), &link)
                .with_context(|| format!("creating {}", link.display()))?;
        }
    }
    // Remove what the previous version had and this one does not.
    for entry in fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry.with_context(|| format!("reading {}", dir.display()))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        if name == "..data" || name == ts_name {
            continue;
        }
        if name.starts_with("..") {
            fs::remove_dir_all(&path).with_context(|| format!("removing {}", path.display()))?;
        } else if !top.contains(name.as_str()) {
            fs::remove_file(&path).with_context(|| format!("removing {}", path.display()))?;
        }
    }
    Ok(())
}

fn mode_of(item: Option<i32>, default: Option<i32>) -> u32 {
    item.or(default).unwrap_or(0o644) as u32 & 0o777
}

/// The files of a configMap/secret source: every key, or the listed items.
fn key_files(
    kind: &str,
    name: &str,
    data: Option<&BTreeMap<String, Vec<u8>>>,
    items: &[KeyToPath],
    optional: bool,
    default_mode: Option<i32>,
    out: &mut Files,
) -> anyhow::Result<()> {
    let Some(data) = data else {
        if optional {
            return Ok(());
        }
        bail!("{kind} {name:?} not found");
    };
    if items.is_empty() {
        for (key, bytes) in data {
            out.insert(key.clone(), (bytes.clone(), mode_of(None, default_mode)));
        }
        return Ok(());
    }
    for item in items {
        match data.get(&item.key) {
            Some(bytes) => {
                out.insert(
                    item.path.clone(),
                    (bytes.clone(), mode_of(item.mode, default_mode)),
                );
            }
            None if optional => {}
            None => bail!("{kind} {name:?} has no key {:?}", item.key),
        }
    }
    Ok(())
}

fn downward_files(
    pod: &Pod,
    items: &[DownwardApiVolumeFile],
    default_mode: Option<i32>,
    out: &mut Files,
) -> anyhow::Result<()> {
    for item in items {
        let value = match (&item.field_ref, &item.resource_field_ref) {
            (Some(f), _) => field_ref_value(pod, None, f),
            (None, Some(r)) => resource_field_value(pod, None, r),
            (None, None) => bail!("item {:?}: no fieldRef or resourceFieldRef", item.path),
        }
        .with_context(|| format!("item {:?}", item.path))?;
        out.insert(
            item.path.clone(),
            (value.into_bytes(), mode_of(item.mode, default_mode)),
        );
    }
    Ok(())
}

/// Sum of the containers' memory limits when every container has one (the size kubelet gives
/// a memory-backed emptyDir without sizeLimit); else None (tmpfs's own default).
fn pod_memory_limit(pod: &Pod) -> Option<i64> {
    let mut sum = 0i64;
    for c in &pod.spec.containers {
        sum = sum.checked_add(quantity::value(c.resources.limits.get("memory")?).ok()?)?;
    }
    (sum > 0).then_some(sum)
}

fn check_host_path(path: &Path, type_: &str) -> anyhow::Result<()> {
    let meta = fs::metadata(path);
    let fail = |what: &str| -> anyhow::Result<()> {
        bail!(
            "hostPath type check failed: {} is not a {what}",
            path.display()
        )
    };
    match type_ {
        "" => Ok(()),
        "DirectoryOrCreate" => match meta {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::create_dir_all(path).with_context(|| format!("creating {}", path.display()))?;
                set_mode(path, 0o755)
            }
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "FileOrCreate" => match meta {
            Err(e) if e.kind() == ErrorKind::NotFound => {
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .open(path)
                    .with_context(|| format!("creating {}", path.display()))?;
                set_mode(path, 0o644)
            }
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Directory" => match meta {
            Ok(m) if m.is_dir() => Ok(()),
            _ => fail("directory"),
        },
        "File" => match meta {
            Ok(m) if m.is_file() => Ok(()),
            _ => fail("file"),
        },
        "Socket" => match meta {
            Ok(m) if m.file_type().is_socket() => Ok(()),
            _ => fail("socket file"),
        },
        "CharDevice" => match meta {
            Ok(m) if m.file_type().is_char_device() => Ok(()),
            _ => fail("character device"),
        },
        "BlockDevice" => match meta {
            Ok(m) if m.file_type().is_block_device() => Ok(()),
            _ => fail("block device"),
        },
        other => bail!("hostPath type {other:?} is not supported"),
    }
}

fn setup_volume(
    pod: &Pod,
    volume: &Volume,
    dir: &Path,
    sources: &ConfigSources,
) -> anyhow::Result<Prepared> {
    let ns = pod.metadata.namespace.as_str();
    let fs_group = pod.spec.security_context.as_ref().and_then(|s| s.fs_group);
    let make_dir = |mode: u32| -> anyhow::Result<()> {
        fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        set_mode(dir, mode)
    };
    let files_volume = |files: Files, tmpfs: bool| -> anyhow::Result<Prepared> {
        make_dir(0o755)?;
        if tmpfs {
            mount_tmpfs(dir, None)?;
            set_mode(dir, 0o755)?;
        }
        apply_fs_group(dir, fs_group, RO_MASK)?;
        write_projection(dir, &files, fs_group)?;
        Ok(Prepared {
            host_path: dir.to_path_buf(),
            read_only: true,
        })
    };
    if let Some(e) = &volume.empty_dir {
        if !dir.exists() {
            // kubelet's emptyDir: world-writable, so any container user can use it.
            make_dir(0o777)?;
        }
        if e.medium.as_deref() == Some("Memory") {
            // kubelet (SizeMemoryBackedVolumes): the smaller of sizeLimit and the pod's memory
            // limit, so a tmpfs cannot outgrow what the pod may use anyway.
            let limit = match &e.size_limit {
                Some(q) => Some(quantity::value(q).context("emptyDir.sizeLimit")?),
                None => None,
            };
            let size = match (limit, pod_memory_limit(pod)) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            };
            mount_tmpfs(dir, size)?;
        }
        apply_fs_group(dir, fs_group, RW_MASK)?;
        return Ok(Prepared {
            host_path: dir.to_path_buf(),
            read_only: false,
        });
    }
    if let Some(h) = &volume.host_path {
        let path = PathBuf::from(&h.path);
        check_host_path(&path, h.type_.as_deref().unwrap_or(""))?;
        return Ok(Prepared {
            host_path: path,
            read_only: false,
        });
    }
    if let Some(c) = &volume.config_map {
        let mut files = Files::new();
        key_files(
            "configmap",
            &c.name,
            sources.config_map(ns, &c.name),
            &c.items,
            c.optional.unwrap_or(false),
            c.default_mode,
            &mut files,
        )?;
        return files_volume(files, false);
    }
    if let Some(s) = &volume.secret {
        let mut files = Files::new();
        key_files(
            "secret",
            &s.secret_name,
            sources.secret(ns, &s.secret_name),
            &s.items,
            s.optional.unwrap_or(false),
            s.default_mode,
            &mut files,
        )?;
        return files_volume(files, true);
    }
    if let Some(d) = &volume.downward_api {
        let mut files = Files::new();
        downward_files(pod, &d.items, d.default_mode, &mut files)?;
        return files_volume(files, false);
    }
    if let Some(p) = &volume.projected {
        let mut files = Files::new();
        for (i, s) in p.sources.iter().enumerate() {
            let ctx = || format!("sources[{i}]");
            if let Some(c) = &s.config_map {
                let data = sources.config_map(ns, &c.name);
                key_files(
                    "configmap",
                    &c.name,
                    data,
                    &c.items,
                    c.optional.unwrap_or(false),
                    p.default_mode,
                    &mut files,
                )
                .with_context(ctx)?;
            }
            if let Some(c) = &s.secret {
                let data = sources.secret(ns, &c.name);
                key_files(
                    "secret",
                    &c.name,
                    data,
                    &c.items,
                    c.optional.unwrap_or(false),
                    p.default_mode,
                    &mut files,
                )
                .with_context(ctx)?;
            }
            if let Some(d) = &s.downward_api {
                downward_files(pod, &d.items, p.default_mode, &mut files).with_context(ctx)?;
            }
            if s.service_account_token.is_some() || s.cluster_trust_bundle.is_some() {
                bail!("sources[{i}]: not supported");
            }
        }
        return files_volume(files, true);
    }
    match volume.other.keys().next() {
        Some(kind) => bail!("volume type {kind:?} is not supported"),
        None => bail!("no volume type"),
    }
}

/// Makes the host side of every volume under `<pod_dir>/volumes/<volume name>` (see the module
/// doc). Idempotent: called again it refreshes configMap/secret/downwardAPI contents. A missing
/// non-optional source is an error naming the volume and the source; on error, what this call
/// created is torn down again (unless the pod already had volumes, which stay for the caller).
pub fn setup(pod: &Pod, pod_dir: &Path, sources: &ConfigSources) -> anyhow::Result<PodVolumes> {
    let dir = volumes_dir(pod_dir);
    let existed = dir.exists();
    let result = (|| {
        fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        // Canonical, so that mount points compare equal to /proc/self/mountinfo's.
        let dir = fs::canonicalize(&dir).with_context(|| format!("resolving {}", dir.display()))?;
        let mut volumes = BTreeMap::new();
        for (i, volume) in pod.spec.volumes.iter().enumerate() {
            check_file_path(&volume.name).with_context(|| format!("spec.volumes[{i}].name"))?;
            let prepared = setup_volume(pod, volume, &dir.join(&volume.name), sources)
                .with_context(|| format!("spec.volumes[{i}] ({:?})", volume.name))?;
            volumes.insert(volume.name.clone(), prepared);
        }
        Ok(PodVolumes {
            volumes_dir: dir.clone(),
            volumes,
        })
    })();
    if result.is_err() && !existed {
        let _ = teardown(pod_dir);
    }
    result
}

fn propagation(p: Option<&str>) -> i32 {
    match p {
        Some("HostToContainer") => cri::MountPropagation::PropagationHostToContainer as i32,
        Some("Bidirectional") => cri::MountPropagation::PropagationBidirectional as i32,
        _ => cri::MountPropagation::PropagationPrivate as i32,
    }
}

/// Opens `path` (which must be `real_base` or below it, both canonical) one component at a
/// time without following symlinks, so what is opened is below `real_base` even if a
/// component was swapped for a symlink after `path` was resolved.
fn open_beneath(real_base: &Path, path: &Path) -> anyhow::Result<std::os::fd::OwnedFd> {
    use nix::fcntl::{open, openat, OFlag};
    use nix::sys::stat::Mode;
    let flags = OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let mut fd = open(real_base, flags | OFlag::O_DIRECTORY, Mode::empty())
        .with_context(|| format!("opening {}", real_base.display()))?;
    let rel = path
        .strip_prefix(real_base)
        .with_context(|| format!("{} is outside {}", path.display(), real_base.display()))?;
    for component in rel.components() {
        fd = openat(&fd, component.as_os_str(), flags, Mode::empty()).with_context(|| {
            format!(
                "{} changed while it was being opened (at {component:?})",
                path.display()
            )
        })?;
    }
    Ok(fd)
}

/// `base/sub`, resolved, refused if it leaves `base` (by `..`, an absolute path, or a
/// symlink pointing outside). Missing directories are created when `create` (as kubelet does
/// for writable volumes), only after the existing part was checked, and with mkdirat below
/// an fd opened without following symlinks, so creation cannot happen outside the volume.
fn sub_path(base: &Path, sub: &str, create: bool) -> anyhow::Result<PathBuf> {
    use nix::fcntl::{openat, OFlag};
    use nix::sys::stat::{mkdirat, Mode};
    let rel = Path::new(sub);
    if rel.is_absolute() {
        bail!("subPath {sub:?} must be a relative path");
    }
    if rel.components().any(|c| matches!(c, Component::ParentDir)) {
        bail!("subPath {sub:?} must not contain '..'");
    }
    let real_base =
        fs::canonicalize(base).with_context(|| format!("resolving {}", base.display()))?;
    let components: Vec<Component> = rel.components().collect();
    let prefix_of = |n: usize| -> PathBuf { components[..n].iter().collect() };
    let mut existing = components.len();
    while existing > 0 && fs::symlink_metadata(real_base.join(prefix_of(existing))).is_err() {
        existing -= 1;
    }
    let prefix = real_base.join(prefix_of(existing));
    let real_prefix =
        fs::canonicalize(&prefix).with_context(|| format!("resolving {}", prefix.display()))?;
    if !real_prefix.starts_with(&real_base) {
        bail!(
            "subPath {sub:?} resolves to {}, outside the volume",
            real_prefix.display()
        );
    }
    if existing == components.len() {
        return Ok(real_prefix);
    }
    if !create {
        bail!("subPath {sub:?} does not exist in the volume");
    }
    let mut fd = open_beneath(&real_base, &real_prefix)?;
    let mut created = real_prefix;
    for component in &components[existing..] {
        let name = component.as_os_str();
        match mkdirat(&fd, name, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
            Err(e) => bail!("creating {}: {e}", created.join(name).display()),
        }
        created.push(name);
        fd = openat(
            &fd,
            name,
            OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .with_context(|| format!("{} changed while it was being created", created.display()))?;
    }
    Ok(created)
}

/// Where subPath bind mounts live: inside the volumes directory (so teardown unmounts them),
/// under a name no volume can have (volume names are DNS labels).
const SUBPATHS_DIR: &str = ".subpaths";

/// A subPath as kubelet mounts it since CVE-2017-1002101: resolved and checked to be inside
/// the volume, then opened component by component without following symlinks and
/// bind-mounted from that open file descriptor onto `target`. A container that swaps a
/// directory of its volume for a symlink after the check cannot redirect the mount outside
/// the volume, since the runtime then mounts `target`, not the path it could change.
fn bind_sub_path(base: &Path, sub: &str, create: bool, target: &Path) -> anyhow::Result<PathBuf> {
    use nix::sys::stat::{fstat, SFlag};
    use std::os::fd::AsRawFd;

    let real = sub_path(base, sub, create)?;
    let real_base =
        fs::canonicalize(base).with_context(|| format!("resolving {}", base.display()))?;
    let fd = open_beneath(&real_base, &real).with_context(|| format!("subPath {sub:?}"))?;
    let st = fstat(&fd).with_context(|| format!("stat {}", real.display()))?;
    let kind = SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT;
    if kind == SFlag::S_IFLNK {
        bail!("subPath {sub:?} changed into a symlink while it was being opened");
    }
    let is_dir = kind == SFlag::S_IFDIR;
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
    }
    // A restarted container gets a fresh bind: the previous one may show an older source.
    if is_mount_point(target)? {
        nix::mount::umount2(target, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", target.display()))?;
    }
    match fs::symlink_metadata(target) {
        Ok(m) if m.is_dir() == is_dir => {}
        Ok(m) => {
            if m.is_dir() {
                fs::remove_dir(target)
            } else {
                fs::remove_file(target)
            }
            .with_context(|| format!("removing {}", target.display()))?;
        }
        Err(_) => {}
    }
    if fs::symlink_metadata(target).is_err() {
        if is_dir {
            fs::create_dir(target)
        } else {
            fs::File::create(target).map(drop)
        }
        .with_context(|| format!("creating {}", target.display()))?;
    }
    let source = format!("/proc/self/fd/{}", fd.as_raw_fd());
    nix::mount::mount(
        Some(source.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting subPath {sub:?} onto {}", target.display()))?;
    Ok(target.to_path_buf())
}

impl PodVolumes {
    /// The container's CRI mounts: configMap/secret/projected/downwardAPI always read-only (as
    /// Kubernetes mounts them), others per volumeMount.readOnly; subPath joined below the
    /// volume (checked not to escape it).
    pub fn mounts(&self, container: &Container) -> anyhow::Result<Vec<cri::Mount>> {
        let mut out = Vec::new();
        for (i, m) in container.volume_mounts.iter().enumerate() {
            let field = || format!("container {:?}: volumeMounts[{i}]", container.name);
            let Some(v) = self.volumes.get(&m.name) else {
                bail!("{}: volume {:?} not found", field(), m.name);
            };
            let host_path = match m.sub_path.as_deref().filter(|s| !s.is_empty()) {
                Some(sub) => {
                    let target = self
                        .volumes_dir
                        .join(SUBPATHS_DIR)
                        .join(&container.name)
                        .join(i.to_string());
                    // Read-only volumes are kubelet's to fill; a missing key is not created there.
                    bind_sub_path(&v.host_path, sub, !v.read_only, &target).with_context(field)?
                }
                None => v.host_path.clone(),
            };
            let readonly = v.read_only || m.read_only;
            out.push(cri::Mount {
                container_path: m.mount_path.clone(),
                host_path: host_path.display().to_string(),
                readonly,
                selinux_relabel: false,
                propagation: propagation(m.mount_propagation.as_deref()),
                recursive_read_only: readonly
                    && matches!(
                        m.recursive_read_only.as_deref(),
                        Some("Enabled" | "IfPossible")
                    ),
                ..Default::default()
            });
        }
        Ok(out)
    }

    /// Where a volume lives on the host (for tests and diagnostics).
    pub fn host_path(&self, name: &str) -> Option<&Path> {
        self.volumes.get(name).map(|v| v.host_path.as_path())
    }

    pub fn volumes_dir(&self) -> &Path {
        &self.volumes_dir
    }
}

/// Unmounts every mount under `<pod_dir>/volumes` (tmpfs of emptyDir Memory, secret and
/// projected volumes; detached, so a still-running process cannot keep it busy) and removes
/// the directory. Idempotent. Nothing is removed while a mount remains below it, so a
/// failure can never delete through a mount.
pub fn teardown(pod_dir: &Path) -> anyhow::Result<()> {
    let dir = match fs::canonicalize(volumes_dir(pod_dir)) {
        Ok(d) => d,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(e).with_context(|| format!("resolving {}", volumes_dir(pod_dir).display()))
        }
    };
    let mut below: Vec<PathBuf> = mount_points()?
        .into_iter()
        .filter(|m| m.starts_with(&dir) && m != &dir)
        .collect();
    // Deepest first; a path mounted twice is listed twice and unmounted twice.
    below.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    for m in &below {
        nix::mount::umount2(m, MntFlags::MNT_DETACH)
            .with_context(|| format!("unmounting {}", m.display()))?;
    }
    if mount_points()?.iter().any(|m| m.starts_with(&dir)) {
        bail!("{}: still has mounts after unmounting", dir.display());
    }
    fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))
}

#[cfg(test)]
mod tests;
