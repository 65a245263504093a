//! Device rules on cgroup v2: there is no devices controller; the kernel instead runs a
//! BPF_PROG_TYPE_CGROUP_DEVICE program attached to the cgroup on every open/mknod of a device
//! node, and its return value (1 allow, 0 deny) decides. The program is emitted here from the
//! rules, then loaded and attached with bpf(2), the way runc and crun do it.
use super::CgroupError;
use oci_spec::runtime::{LinuxDeviceCgroup, LinuxDeviceType};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

// From include/uapi/linux/bpf.h.
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_DEVCG_DEV_BLOCK: i32 = 1;
const BPF_DEVCG_DEV_CHAR: i32 = 2;
const ACC_MKNOD: i32 = 1;
const ACC_READ: i32 = 2;
const ACC_WRITE: i32 = 4;
const ACC_ALL: i32 = ACC_MKNOD | ACC_READ | ACC_WRITE;

/// One eBPF instruction (struct bpf_insn).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn bytes(&self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.src << 4) | (self.dst & 0x0f);
        b[2..4].copy_from_slice(&self.off.to_ne_bytes());
        b[4..8].copy_from_slice(&self.imm.to_ne_bytes());
        b
    }
}

// Opcodes (class | op | source), as in the kernel's bpf_common.h / bpf.h.
const LDX_MEM_W: u8 = 0x61;
const ALU32_AND_K: u8 = 0x54;
const ALU32_RSH_K: u8 = 0x74;
const ALU32_MOV_X: u8 = 0xbc;
const ALU64_MOV_K: u8 = 0xb7;
const JMP_JNE_K: u8 = 0x55;
const JMP_JEQ_K: u8 = 0x15;
const JMP_EXIT: u8 = 0x95;

fn insn(code: u8, dst: u8, src: u8, off: i16, imm: i32) -> Insn {
    Insn {
        code,
        dst,
        src,
        off,
        imm,
    }
}

/// The program: registers r2 = device type, r3 = requested access, r4 = major, r5 = minor
/// (from struct bpf_cgroup_dev_ctx {u32 access_type; u32 major; u32 minor}); then one block
/// per rule, the last rule first, so that the last matching rule decides as with the v1
/// devices controller's lists; nothing matching means deny.
pub(super) fn program(rules: &[LinuxDeviceCgroup]) -> Result<Vec<Insn>, CgroupError> {
    let mut out = vec![
        insn(LDX_MEM_W, 2, 1, 0, 0),
        insn(ALU32_AND_K, 2, 0, 0, 0xffff),
        insn(LDX_MEM_W, 3, 1, 0, 0),
        insn(ALU32_RSH_K, 3, 0, 0, 16),
        insn(LDX_MEM_W, 4, 1, 4, 0),
        insn(LDX_MEM_W, 5, 1, 8, 0),
    ];
    for rule in rules.iter().rev() {
        let block = rule_block(rule)?;
        let unconditional = block.len() == 2;
        out.extend(block);
        // Rules before an unconditional one can never decide, and the verifier rejects a
        // program with unreachable instructions.
        if unconditional {
            return Ok(out);
        }
    }
    out.push(insn(ALU64_MOV_K, 0, 0, 0, 0));
    out.push(insn(JMP_EXIT, 0, 0, 0, 0));
    Ok(out)
}

/// The checks of one rule, each jumping past the block on mismatch, then `return allow`.
fn rule_block(rule: &LinuxDeviceCgroup) -> Result<Vec<Insn>, CgroupError> {
    let bad = |reason| CgroupError::InvalidDeviceRule {
        rule: rule.to_string(),
        reason,
    };
    let typ = match rule.typ().unwrap_or(LinuxDeviceType::A) {
        LinuxDeviceType::A => None,
        LinuxDeviceType::C | LinuxDeviceType::U => Some(BPF_DEVCG_DEV_CHAR),
        LinuxDeviceType::B => Some(BPF_DEVCG_DEV_BLOCK),
        // Opening a FIFO never consults the device cgroup.
        LinuxDeviceType::P => return Ok(Vec::new()),
    };
    let mut access = 0;
    for c in rule
        .access()
        .as_deref()
        .filter(|a| !a.is_empty())
        .unwrap_or("rwm")
        .chars()
    {
        access |= match c {
            'r' => ACC_READ,
            'w' => ACC_WRITE,
            'm' => ACC_MKNOD,
            _ => return Err(bad("access must be made of r, w and m")),
        };
    }
    let number = |n: Option<i64>| -> Result<Option<i32>, CgroupError> {
        match n {
            None => Ok(None),
            Some(n) if n < 0 => Ok(None),
            Some(n) => i32::try_from(n)
                .map(Some)
                .map_err(|_| bad("device number out of range")),
        }
    };
    let (major, minor) = (number(rule.major())?, number(rule.minor())?);

    // Conditions as (opcode, register, immediate), each meaning "skip the rule if true".
    let mut skips: Vec<Vec<Insn>> = Vec::new();
    if let Some(t) = typ {
        skips.push(vec![insn(JMP_JNE_K, 2, 0, 0, t)]);
    }
    if rule.allow() && access != ACC_ALL {
        // An allow rule matches when every requested access is allowed.
        skips.push(vec![
            insn(ALU32_MOV_X, 6, 3, 0, 0),
            insn(ALU32_AND_K, 6, 0, 0, !access & ACC_ALL),
            insn(JMP_JNE_K, 6, 0, 0, 0),
        ]);
    } else if !rule.allow() && access != ACC_ALL {
        // A deny rule matches when any requested access is denied.
        skips.push(vec![
            insn(ALU32_MOV_X, 6, 3, 0, 0),
            insn(ALU32_AND_K, 6, 0, 0, access),
            insn(JMP_JEQ_K, 6, 0, 0, 0),
        ]);
    }
    if let Some(m) = major {
        skips.push(vec![insn(JMP_JNE_K, 4, 0, 0, m)]);
    }
    if let Some(m) = minor {
        skips.push(vec![insn(JMP_JNE_K, 5, 0, 0, m)]);
    }
    let mut block: Vec<Insn> = skips.into_iter().flatten().collect();
    block.push(insn(ALU64_MOV_K, 0, 0, 0, i32::from(rule.allow())));
    block.push(insn(JMP_EXIT, 0, 0, 0, 0));
    // Each conditional jump lands just past this block's exit.
    let len = block.len();
    for (i, ins) in block.iter_mut().enumerate() {
        if ins.code == JMP_JNE_K || ins.code == JMP_JEQ_K {
            ins.off = i16::try_from(len - i - 1).map_err(|_| bad("rule too large"))?;
        }
    }
    Ok(block)
}

/// union bpf_attr for BPF_PROG_LOAD (the fields up to expected_attach_type).
#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

/// union bpf_attr for BPF_PROG_ATTACH.
#[repr(C)]
#[derive(Default)]
struct ProgAttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

fn bpf_error(what: &str, dir: &Path, source: std::io::Error) -> CgroupError {
    CgroupError::DeviceFilter {
        what: what.to_string(),
        dir: dir.to_path_buf(),
        source,
    }
}

/// Loads the program for `rules` and attaches it to the cgroup `dir`. Attached without
/// BPF_F_ALLOW_MULTI, a new program replaces the cgroup's previous one, so this can be called
/// again with more rules (the `linux.devices` nodes after the resource rules).
pub(super) fn apply(dir: &Path, rules: &[LinuxDeviceCgroup]) -> Result<(), CgroupError> {
    let insns = program(rules)?;
    let code: Vec<u8> = insns.iter().flat_map(Insn::bytes).collect();
    let license = c"Apache";
    let mut log = vec![0u8; 16 * 1024];
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: u32::try_from(insns.len()).unwrap_or(u32::MAX),
        insns: code.as_ptr() as u64,
        license: license.as_ptr() as u64,
        log_level: 1,
        log_size: u32::try_from(log.len()).unwrap_or(0),
        log_buf: log.as_mut_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    attr.prog_name[..6].copy_from_slice(b"rcrun\0");
    // SAFETY: attr points to valid, live memory of the size passed; the kernel reads the
    // instructions and the license and writes at most log_size bytes into log.
    let fd = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_LOAD,
            &mut attr as *mut ProgLoadAttr,
            std::mem::size_of::<ProgLoadAttr>(),
        )
    };
    if fd < 0 {
        let err = std::io::Error::last_os_error();
        let verifier = String::from_utf8_lossy(&log);
        let verifier = verifier.trim_end_matches('\0').trim();
        let what = if verifier.is_empty() {
            "load the device filter program for".to_string()
        } else {
            format!("load the device filter program (verifier: {verifier}) for")
        };
        return Err(bpf_error(&what, dir, err));
    }
    // SAFETY: the kernel just returned this new fd to us; nothing else owns it.
    let prog = unsafe { OwnedFd::from_raw_fd(fd as i32) };
    let cgroup = std::fs::File::open(dir).map_err(|e| bpf_error("open", dir, e))?;
    let attach = ProgAttachAttr {
        target_fd: u32::try_from(cgroup.as_raw_fd()).unwrap_or(u32::MAX),
        attach_bpf_fd: u32::try_from(prog.as_raw_fd()).unwrap_or(u32::MAX),
        attach_type: BPF_CGROUP_DEVICE,
        ..ProgAttachAttr::default()
    };
    // SAFETY: attach is valid for the size passed and only read by the kernel.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_PROG_ATTACH,
            &attach as *const ProgAttachAttr,
            std::mem::size_of::<ProgAttachAttr>(),
        )
    };
    if rc < 0 {
        return Err(bpf_error(
            "attach the device filter program to",
            dir,
            std::io::Error::last_os_error(),
        ));
    }
    // The attached program stays referenced by the cgroup; our fds can close.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(
        allow: bool,
        typ: Option<LinuxDeviceType>,
        major: Option<i64>,
        minor: Option<i64>,
        access: &str,
    ) -> LinuxDeviceCgroup {
        let mut r = LinuxDeviceCgroup::default();
        r.set_allow(allow);
        r.set_typ(typ);
        r.set_major(major);
        r.set_minor(minor);
        r.set_access(Some(access.to_string()));
        r
    }

    /// Runs the emitted program the way the kernel would, for one request.
    fn run(prog: &[Insn], typ: i32, access: i32, major: i32, minor: i32) -> i64 {
        let ctx = [
            ((access as u32) << 16) | typ as u32,
            major as u32,
            minor as u32,
        ];
        let mut r = [0u64; 11];
        let mut pc = 0usize;
        loop {
            let i = prog[pc];
            pc += 1;
            match i.code {
                LDX_MEM_W => r[i.dst as usize] = u64::from(ctx[i.off as usize / 4]),
                ALU32_AND_K => {
                    r[i.dst as usize] = u64::from((r[i.dst as usize] as u32) & i.imm as u32)
                }
                ALU32_RSH_K => r[i.dst as usize] = u64::from((r[i.dst as usize] as u32) >> i.imm),
                ALU32_MOV_X => r[i.dst as usize] = u64::from(r[i.src as usize] as u32),
                ALU64_MOV_K => r[i.dst as usize] = i.imm as i64 as u64,
                JMP_JNE_K => {
                    if r[i.dst as usize] != i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_JEQ_K => {
                    if r[i.dst as usize] == i.imm as i64 as u64 {
                        pc += i.off as usize;
                    }
                }
                JMP_EXIT => return r[0] as i64,
                other => panic!("unknown opcode {other:#x}"),
            }
        }
    }

    #[test]
    fn last_matching_rule_decides() {
        use LinuxDeviceType::{B, C};
        let rules = vec![
            rule(false, None, None, None, "rwm"),
            rule(true, Some(C), Some(1), Some(3), "rwm"),
            rule(true, Some(C), Some(1), Some(5), "r"),
            rule(true, Some(B), None, None, "m"),
            rule(false, Some(C), Some(1), Some(3), "w"),
        ];
        let p = program(&rules).expect("emits");
        let (blk, chr) = (BPF_DEVCG_DEV_BLOCK, BPF_DEVCG_DEV_CHAR);
        assert_eq!(run(&p, chr, ACC_READ, 1, 3), 1, "read /dev/null");
        assert_eq!(
            run(&p, chr, ACC_WRITE, 1, 3),
            0,
            "write denied by the last rule"
        );
        assert_eq!(run(&p, chr, ACC_READ | ACC_WRITE, 1, 3), 0);
        assert_eq!(run(&p, chr, ACC_READ, 1, 5), 1, "read /dev/zero");
        assert_eq!(
            run(&p, chr, ACC_READ | ACC_WRITE, 1, 5),
            0,
            "write not allowed"
        );
        assert_eq!(
            run(&p, blk, ACC_MKNOD, 8, 0),
            1,
            "mknod of any block device"
        );
        assert_eq!(run(&p, blk, ACC_READ, 8, 0), 0, "no reading /dev/sda");
        assert_eq!(run(&p, chr, ACC_READ, 10, 229), 0, "default deny");
        let allow_all = program(&[rule(true, None, None, None, "rwm")]).expect("emits");
        assert_eq!(run(&allow_all, blk, ACC_ALL, 8, 0), 1);
        assert_eq!(program(&[]).expect("emits").len(), 8, "prologue + deny");
    }

    #[test]
    fn bad_access_is_refused() {
        assert!(program(&[rule(true, None, None, None, "rx")]).is_err());
    }
}
