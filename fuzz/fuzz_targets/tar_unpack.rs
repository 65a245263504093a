//! rcri's layer unpacker (cri-shim/src/image/unpack.rs) on hostile layers: plain, gzip or zstd
//! tars with `..` paths, absolute paths, symlinks and hard links pointing out, devices, huge
//! sizes. Each input is unpacked into an empty `dest` inside a dedicated jail directory.
//! Properties: no panic; afterwards the jail holds nothing but `dest` (whatever the layer
//! tried, nothing was created next to or above the target); the regular files unpacked hold
//! no more bytes than the uncompressed tar stream carried (a few hundred bytes of header must
//! not become gigabytes on disk: GNU sparse entries, size fields). RLIMIT_FSIZE caps any one
//! file at 64 MiB so that such a layer fails fast (EFBIG) instead of filling the disk; EFBIG
//! is then the finding.
//! Uncompressed inputs get their header checksums fixed before the unpack, so that mutations
//! reach the unpacker instead of stopping at the tar reader's checksum test.
//! As root the unpack runs chrooted into the jail, so that an escape the unpacker failed to
//! stop lands in the jail (and is reported) instead of damaging the host; the real root and
//! working directory are restored right after, and before a panic is reported (libFuzzer then
//! writes the crash file outside the jail).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

struct Jail {
    dir: PathBuf,
    /// The real root and cwd, to return to after each chrooted unpack; None when not root.
    escape: Option<(File, File)>,
}

fn jail() -> &'static Jail {
    static JAIL: OnceLock<Jail> = OnceLock::new();
    JAIL.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rcrun-fuzz-tar.{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let escape = nix::unistd::geteuid()
            .is_root()
            .then(|| (File::open("/").unwrap(), File::open(".").unwrap()));
        let limit = libc::rlimit {
            rlim_cur: FILE_SIZE_LIMIT,
            rlim_max: FILE_SIZE_LIMIT,
        };
        // SAFETY: plain syscalls; SIGXFSZ ignored makes an oversized write fail with EFBIG.
        unsafe {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            assert_eq!(libc::setrlimit(libc::RLIMIT_FSIZE, &limit), 0);
        }
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            leave_jail();
            prev(info)
        }));
        Jail { dir, escape }
    })
}

fn enter_jail(j: &Jail) -> PathBuf {
    if j.escape.is_some() {
        std::os::unix::fs::chroot(&j.dir).unwrap();
        PathBuf::from("/dest")
    } else {
        j.dir.join("dest")
    }
}

fn leave_jail() {
    let Some((root, cwd)) = JAIL_ESCAPE.get() else {
        return;
    };
    // SAFETY: fchdir on descriptors this process owns for its whole life.
    unsafe {
        if libc::fchdir(*root) == 0 {
            let _ = std::os::unix::fs::chroot(".");
        }
        libc::fchdir(*cwd);
    }
}

const FILE_SIZE_LIMIT: u64 = 64 << 20;

static JAIL_ESCAPE: OnceLock<(i32, i32)> = OnceLock::new();

/// Rewrites each ustar header's checksum (the sum of its bytes, the checksum field counted as
/// spaces), following the headers by their size fields until one does not parse.
fn fix_checksums(tar: &mut [u8]) {
    let mut at = 0;
    while at + 512 <= tar.len() {
        let header = &mut tar[at..at + 512];
        if header.iter().all(|&b| b == 0) {
            break;
        }
        header[148..156].fill(b' ');
        let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
        header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
        let size_field = std::str::from_utf8(&header[124..136]).unwrap_or("");
        let size_field = size_field.trim_matches(|c: char| c == '\0' || c == ' ');
        let Ok(size) = u64::from_str_radix(size_field, 8) else {
            break;
        };
        let Some(next) = usize::try_from(size.div_ceil(512) * 512)
            .ok()
            .and_then(|n| (at + 512).checked_add(n))
        else {
            break;
        };
        at = next;
    }
}

/// The bytes in regular files under `dir`, each inode counted once.
fn file_bytes(dir: &Path, seen: &mut std::collections::HashSet<u64>) -> u64 {
    let mut total = 0;
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let meta = std::fs::symlink_metadata(e.path()).unwrap();
        if meta.is_dir() {
            total += file_bytes(&e.path(), seen);
        } else if meta.is_file() && seen.insert(meta.ino()) {
            total += meta.len();
        }
    }
    total
}

/// Whether the error (or one of its sources) is EFBIG: a file outgrew FILE_SIZE_LIMIT.
fn too_big(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(e);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EFBIG) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

fn entries(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fuzz_target!(|data: &[u8]| {
    let j = jail();
    if let Some((root, cwd)) = &j.escape {
        let _ = JAIL_ESCAPE.set((root.as_raw_fd(), cwd.as_raw_fd()));
    }
    let host_dest = j.dir.join("dest");
    std::fs::create_dir(&host_dest).unwrap();
    let dest = enter_jail(j);
    let compressed = data.starts_with(&[0x1f, 0x8b]) || data.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]);
    let mut layer = data.to_vec();
    if !compressed {
        fix_checksums(&mut layer);
    }
    let result = rcri::image::unpack::unpack_layer(&layer[..], &dest);
    leave_jail();
    if std::env::var_os("FUZZ_VERBOSE").is_some() {
        eprintln!("unpack: {result:?}");
    }
    let found = entries(&j.dir);
    assert_eq!(
        found,
        ["dest"],
        "the layer created something outside its target (unpack result: {result:?})"
    );
    match &result {
        Ok(unpacked) => {
            let bytes = file_bytes(&host_dest, &mut Default::default());
            assert!(
                bytes <= unpacked.size,
                "a tar stream of {} bytes unpacked to {bytes} bytes of files",
                unpacked.size
            );
        }
        Err(e) => assert!(
            !too_big(e),
            "a layer of {} bytes made a file larger than {FILE_SIZE_LIMIT} bytes: {e}",
            data.len()
        ),
    }
    std::fs::remove_dir_all(&host_dest).unwrap();
});
