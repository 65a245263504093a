//! Unpacking one layer (a tar "diff", gzip, zstd or uncompressed) into a snapshot dir in the
//! form overlayfs reads as a lower layer: OCI whiteouts `.wh.<name>` become overlay whiteouts
//! (0/0 character devices), opaque markers `.wh..wh..opq` become the `trusted.overlay.opaque`
//! xattr on their directory.
//!
//! The archive is hostile input. Nothing is ever written through a symlink: every parent
//! directory is checked with lstat, files are created with O_EXCL|O_NOFOLLOW, paths with `..`
//! are refused, and hard links may only point at entries of the same layer.
use std::ffi::{CString, OsStr};
use std::fs::{self, OpenOptions};
use std::io::{self, BufRead, BufReader, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use sha2::{Digest, Sha256};
use tar::EntryType;

const WHITEOUT_PREFIX: &str = ".wh.";
const WHITEOUT_OPAQUE: &str = ".wh..wh..opq";
const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

#[derive(Debug, thiserror::Error)]
pub enum UnpackError {
    #[error("layer entry {path:?}: {reason}")]
    Unsafe { path: String, reason: &'static str },
    #[error("layer entry {path:?}: {source}")]
    Entry {
        path: String,
        #[source]
        source: io::Error,
    },
    #[error("reading the layer: {0}")]
    Read(#[source] io::Error),
}

/// What unpacking measured: the digest and size of the uncompressed tar (the layer's DiffID).
#[derive(Debug, Clone)]
pub struct Unpacked {
    pub diff_id: String,
    pub size: u64,
}

/// A reader that hashes (sha256) and counts what passes through it.
pub struct HashingReader<R> {
    inner: R,
    hasher: Sha256,
    count: u64,
}

impl<R: Read> HashingReader<R> {
    pub fn new(inner: R) -> Self {
        HashingReader {
            inner,
            hasher: Sha256::new(),
            count: 0,
        }
    }
    /// `sha256:<hex>` and byte count of everything read so far.
    pub fn finish(self) -> (String, u64) {
        (hex_digest(self.hasher.finalize().as_slice()), self.count)
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.count += n as u64;
        Ok(n)
    }
}

pub fn hex_digest(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(7 + bytes.len() * 2);
    s.push_str("sha256:");
    for b in bytes {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

/// Unpacks the layer read from `blob` into the empty directory `dest`. Compression is
/// recognised by its magic bytes, whatever the media type claims.
pub fn unpack_layer<R: Read>(blob: R, dest: &Path) -> Result<Unpacked, UnpackError> {
    let mut buffered = BufReader::with_capacity(256 * 1024, blob);
    let head = buffered.fill_buf().map_err(UnpackError::Read)?;
    let decompressed: Box<dyn Read + '_> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::bufread::MultiGzDecoder::new(buffered))
    } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        Box::new(zstd::stream::read::Decoder::with_buffer(buffered).map_err(UnpackError::Read)?)
    } else {
        Box::new(buffered)
    };
    let mut hashing = HashingReader::new(decompressed);
    {
        let mut archive = tar::Archive::new(&mut hashing);
        let mut dir_times = Vec::new();
        let entries = archive.entries().map_err(UnpackError::Read)?;
        for entry in entries {
            let mut entry = entry.map_err(UnpackError::Read)?;
            unpack_entry(&mut entry, dest, &mut dir_times)?;
        }
        // Directory times last: creating their children changed them.
        for (path, mtime) in dir_times.iter().rev() {
            set_mtime(path, *mtime);
        }
    }
    // The DiffID covers the whole uncompressed stream, including the end-of-archive blocks
    // and any padding after them, which the tar reader leaves unread.
    io::copy(&mut hashing, &mut io::sink()).map_err(UnpackError::Read)?;
    let (diff_id, size) = hashing.finish();
    Ok(Unpacked { diff_id, size })
}

/// The entry's path made relative and clean, or an error for `..` (path traversal).
fn clean_path(raw: &Path, display: &str) -> Result<PathBuf, UnpackError> {
    let mut out = PathBuf::new();
    for c in raw.components() {
        match c {
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => {
                return Err(UnpackError::Unsafe {
                    path: display.to_string(),
                    reason: "path with \"..\"",
                })
            }
            Component::Normal(p) => out.push(p),
        }
    }
    Ok(out)
}

/// Makes sure every directory from `dest` down to `dest/rel` exists and none of them is a
/// symlink (which could lead the write outside the snapshot).
fn ensure_dirs(dest: &Path, rel: &Path, display: &str) -> Result<(), UnpackError> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            Ok(m) if m.file_type().is_symlink() => {
                return Err(UnpackError::Unsafe {
                    path: display.to_string(),
                    reason: "a parent directory is a symlink",
                })
            }
            Ok(_) => {
                // A file where the layer needs a directory: the layer replaces it.
                fs::remove_file(&cur).map_err(entry_err(display))?;
                mkdir(&cur, 0o755).map_err(entry_err(display))?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                mkdir(&cur, 0o755).map_err(entry_err(display))?;
            }
            Err(e) => return Err(entry_err(display)(e)),
        }
    }
    Ok(())
}

fn mkdir(p: &Path, mode: u32) -> io::Result<()> {
    fs::create_dir(p)?;
    fs::set_permissions(p, fs::Permissions::from_mode(mode))
}

fn entry_err(display: &str) -> impl FnOnce(io::Error) -> UnpackError + '_ {
    move |source| UnpackError::Entry {
        path: display.to_string(),
        source,
    }
}

/// Removes whatever is at `p` (not following a symlink), so that an entry can take its place.
fn remove_existing(p: &Path) -> io::Result<()> {
    match fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => fs::remove_dir_all(p),
        Ok(_) => fs::remove_file(p),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
}

fn unpack_entry<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    dir_times: &mut Vec<(PathBuf, u64)>,
) -> Result<(), UnpackError> {
    let kind = entry.header().entry_type();
    if matches!(
        kind,
        EntryType::XGlobalHeader
            | EntryType::XHeader
            | EntryType::GNULongName
            | EntryType::GNULongLink
    ) {
        return Ok(());
    }
    let raw = entry.path().map_err(UnpackError::Read)?.into_owned();
    let display = raw.to_string_lossy().into_owned();
    if kind == EntryType::GNUSparse {
        // A sparse entry may declare any size as holes with no data behind them: the tar
        // reader hands the holes back as zeros, so a 95-byte layer could fill the image store's
        // disk (found by fuzzing). Image builders write no sparse entries; refuse them.
        return Err(UnpackError::Unsafe {
            path: display,
            reason: "GNU sparse files are not supported in image layers",
        });
    }
    let rel = clean_path(&raw, &display)?;
    let Some(name) = rel.file_name().map(OsStr::to_os_string) else {
        // The layer's root ("./"): the snapshot dir itself stays as made.
        return Ok(());
    };
    let parent_rel = rel.parent().unwrap_or(Path::new(""));
    ensure_dirs(dest, parent_rel, &display)?;
    let parent = dest.join(parent_rel);
    let name_str = name.to_string_lossy();

    // Whiteouts, translated to overlayfs' own format.
    if name_str == WHITEOUT_OPAQUE {
        set_xattr(&parent, OVERLAY_OPAQUE_XATTR, b"y").map_err(entry_err(&display))?;
        return Ok(());
    }
    if let Some(hidden) = name_str.strip_prefix(WHITEOUT_PREFIX) {
        // `.wh..wh.*` other than the opaque marker are aufs bookkeeping (hard link dirs).
        if hidden.starts_with(".wh.") || hidden.is_empty() {
            return Ok(());
        }
        let target = parent.join(hidden);
        remove_existing(&target).map_err(entry_err(&display))?;
        mknod(&target, SFlag::S_IFCHR, Mode::empty(), makedev(0, 0))
            .map_err(|e| entry_err(&display)(io::Error::from(e)))?;
        return Ok(());
    }

    let path = parent.join(&name);
    let header = entry.header();
    let mode = header.mode().map_err(UnpackError::Read)? & 0o7777;
    let uid = header.uid().map_err(UnpackError::Read)?;
    let gid = header.gid().map_err(UnpackError::Read)?;
    let mtime = header.mtime().unwrap_or(0);

    match kind {
        EntryType::Directory => {
            match fs::symlink_metadata(&path) {
                Ok(m) if m.is_dir() => {}
                Ok(_) => {
                    fs::remove_file(&path).map_err(entry_err(&display))?;
                    fs::create_dir(&path).map_err(entry_err(&display))?;
                }
                Err(_) => fs::create_dir(&path).map_err(entry_err(&display))?,
            }
            dir_times.push((path.clone(), mtime));
        }
        EntryType::Symlink => {
            let target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or(UnpackError::Unsafe {
                    path: display.clone(),
                    reason: "symlink without a target",
                })?
                .into_owned();
            remove_existing(&path).map_err(entry_err(&display))?;
            // The target is stored as is: it is resolved inside the container's rootfs at
            // run time, never by this unpacker.
            std::os::unix::fs::symlink(&target, &path).map_err(entry_err(&display))?;
        }
        EntryType::Link => {
            let raw_target = entry
                .link_name()
                .map_err(UnpackError::Read)?
                .ok_or(UnpackError::Unsafe {
                    path: display.clone(),
                    reason: "hard link without a target",
                })?
                .into_owned();
            let target_rel = clean_path(&raw_target, &display)?;
            let target_parent = target_rel.parent().unwrap_or(Path::new(""));
            // The target must already be in this layer, reached without symlinks.
            ensure_no_symlink_parents(dest, target_parent, &display)?;
            let target = dest.join(&target_rel);
            match fs::symlink_metadata(&target) {
                Ok(m) if !m.is_dir() => {}
                _ => {
                    return Err(UnpackError::Unsafe {
                        path: display,
                        reason: "hard link to something not in this layer",
                    })
                }
            }
            if target == path {
                return Ok(());
            }
            remove_existing(&path).map_err(entry_err(&display))?;
            // linkat without AT_SYMLINK_FOLLOW: a link to a symlink links the symlink.
            fs::hard_link(&target, &path).map_err(entry_err(&display))?;
            // A hard link shares its target's inode: ownership and mode are already right.
            return Ok(());
        }
        EntryType::Char | EntryType::Block | EntryType::Fifo => {
            remove_existing(&path).map_err(entry_err(&display))?;
            let (kind_flag, dev) = match kind {
                EntryType::Char | EntryType::Block => {
                    let major = header
                        .device_major()
                        .map_err(UnpackError::Read)?
                        .unwrap_or(0);
                    let minor = header
                        .device_minor()
                        .map_err(UnpackError::Read)?
                        .unwrap_or(0);
                    let f = if kind == EntryType::Char {
                        SFlag::S_IFCHR
                    } else {
                        SFlag::S_IFBLK
                    };
                    (f, makedev(u64::from(major), u64::from(minor)))
                }
                _ => (SFlag::S_IFIFO, 0),
            };
            mknod(&path, kind_flag, Mode::empty(), dev)
                .map_err(|e| entry_err(&display)(io::Error::from(e)))?;
        }
        // Regular files, and (as POSIX asks) any type not known.
        _ => {
            remove_existing(&path).map_err(entry_err(&display))?;
            let mut f = OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(entry_err(&display))?;
            io::copy(entry, &mut f).map_err(entry_err(&display))?;
            start_writeback(&f);
        }
    }

    // Ownership before mode: chown clears set-id bits.
    lchown(&path, uid, gid).map_err(entry_err(&display))?;
    if kind != EntryType::Symlink {
        fs::set_permissions(&path, fs::Permissions::from_mode(mode))
            .map_err(entry_err(&display))?;
    }
    apply_xattrs(entry, &path, &display)?;
    if kind != EntryType::Directory {
        set_mtime(&path, mtime);
    }
    Ok(())
}

fn ensure_no_symlink_parents(dest: &Path, rel: &Path, display: &str) -> Result<(), UnpackError> {
    let mut cur = dest.to_path_buf();
    for c in rel.components() {
        cur.push(c);
        match fs::symlink_metadata(&cur) {
            Ok(m) if m.is_dir() => {}
            _ => {
                return Err(UnpackError::Unsafe {
                    path: display.to_string(),
                    reason: "hard link target outside this layer",
                })
            }
        }
    }
    Ok(())
}

/// PAX `SCHILY.xattr.<name>` records (how Docker, containerd and GNU tar store xattrs).
fn apply_xattrs<R: Read>(
    entry: &mut tar::Entry<'_, R>,
    path: &Path,
    display: &str,
) -> Result<(), UnpackError> {
    let Some(exts) = entry.pax_extensions().map_err(UnpackError::Read)? else {
        return Ok(());
    };
    let mut xattrs = Vec::new();
    for ext in exts {
        let ext = ext.map_err(UnpackError::Read)?;
        if let Ok(key) = ext.key() {
            if let Some(name) = key.strip_prefix("SCHILY.xattr.") {
                xattrs.push((name.to_string(), ext.value_bytes().to_vec()));
            }
        }
    }
    for (name, value) in xattrs {
        match set_xattr(path, &name, &value) {
            Ok(()) => {}
            // A file system (or LSM) that does not take this attribute: the file is still
            // usable, as with containerd, which ignores these too.
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(libc::ENOTSUP) | Some(libc::EPERM) | Some(libc::EACCES)
                ) => {}
            Err(e) => return Err(entry_err(display)(e)),
        }
    }
    Ok(())
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
}

fn set_xattr(path: &Path, name: &str, value: &[u8]) -> io::Result<()> {
    let p = cpath(path)?;
    let n = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: valid NUL-terminated strings and a buffer of the given length.
    let r = unsafe {
        libc::lsetxattr(
            p.as_ptr(),
            n.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

fn lchown(path: &Path, uid: u64, gid: u64) -> io::Result<()> {
    let uid = u32::try_from(uid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let gid = u32::try_from(gid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    std::os::unix::fs::lchown(path, Some(uid), Some(gid))
}

/// Starts writing a file's data to disk without waiting for it (sync_file_range(2) with
/// SYNC_FILE_RANGE_WRITE), so that the syncfs which makes the layer durable later finds the
/// I/O already done or under way rather than all of it still to do. A hint: errors are
/// ignored, the syncfs is what guarantees durability.
fn start_writeback(f: &impl std::os::fd::AsRawFd) {
    // SAFETY: a valid open fd; the call only schedules writeback of its pages.
    unsafe {
        libc::sync_file_range(f.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// Best effort: a wrong mtime never breaks a container.
fn set_mtime(path: &Path, mtime: u64) {
    let Ok(p) = cpath(path) else { return };
    let t = libc::timespec {
        tv_sec: mtime as libc::time_t,
        tv_nsec: 0,
    };
    let times = [t, t];
    // SAFETY: valid path and a two-element timespec array, as utimensat requires.
    unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            p.as_ptr(),
            times.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        );
    }
}
