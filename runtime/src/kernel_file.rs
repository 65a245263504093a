//! Reading the kernel's pseudo-files (procfs, cgroupfs), which rcrun does a dozen times per
//! container start.
use std::io::Read;
use std::path::Path;

/// The whole text of a procfs or cgroupfs file. They report a size of 0, so
/// `fs::read_to_string` stats them for a size hint it does not get and then reads in steps
/// growing from 32 bytes (eight read calls for /proc/self/mountinfo); one page-sized buffer
/// takes most of them in a single read.
pub fn read(path: impl AsRef<Path>) -> std::io::Result<String> {
    let mut text = String::with_capacity(4096);
    std::fs::File::open(path)?.read_to_string(&mut text)?;
    Ok(text)
}

#[cfg(test)]
mod tests {
    #[test]
    fn reads_a_whole_proc_file_longer_than_the_first_buffer() {
        let ours = super::read("/proc/self/maps").expect("maps");
        assert!(ours.lines().count() > 3, "{ours}");
        // Longer than one buffer: all of it comes back.
        let long = super::read("/proc/self/smaps").expect("smaps");
        assert!(long.len() > 4096);
        assert!(long.ends_with('\n'));
        assert!(super::read("/proc/self/no-such-file").is_err());
    }
}
