//! `rcri-monitor`: the per-container monitor as a binary of its own. The same code as
//! `rcri monitor`, but without the server's gRPC, TLS and async runtime linked in, so the one
//! process every container keeps costs less memory. rcri uses it when it sits next to the rcri
//! binary and falls back to `rcri monitor` otherwise.
//!
//! The arguments are the ones `MonitorArgs::to_argv` writes (a leading `monitor` is allowed);
//! they are parsed by hand: clap would double this binary's size for eight fixed flags.
use rcri::monitor::{self, MonitorArgs, StdioMode};
use std::ffi::OsString;
use std::path::PathBuf;

fn parse(mut argv: impl Iterator<Item = OsString>) -> Result<MonitorArgs, String> {
    let mut id = None;
    let mut bundle = None;
    let mut log_path = None;
    let mut exit_file = None;
    let mut runtime = None;
    let mut runtime_root = None;
    let mut sync_fd = 3;
    let mut stdio = StdioMode::default();
    while let Some(flag) = argv.next() {
        let flag = flag.to_string_lossy().into_owned();
        // The flags without a value.
        match flag.as_str() {
            "monitor" => continue,
            "--tty" => {
                stdio.tty = true;
                continue;
            }
            "--stdin" => {
                stdio.stdin = true;
                continue;
            }
            "--stdin-once" => {
                stdio.stdin_once = true;
                continue;
            }
            _ => {}
        }
        let value = argv.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--id" => id = Some(value.to_string_lossy().into_owned()),
            "--bundle" => bundle = Some(PathBuf::from(value)),
            "--log-path" => log_path = Some(PathBuf::from(value)),
            "--exit-file" => exit_file = Some(PathBuf::from(value)),
            "--runtime" => runtime = Some(PathBuf::from(value)),
            "--runtime-root" => runtime_root = Some(PathBuf::from(value)),
            "--sync-fd" => {
                sync_fd = value
                    .to_string_lossy()
                    .parse()
                    .map_err(|_| format!("bad --sync-fd {value:?}"))?
            }
            other => return Err(format!("unknown flag {other}")),
        }
    }
    fn need<T>(v: Option<T>, name: &str) -> Result<T, String> {
        v.ok_or_else(|| format!("{name} is required"))
    }
    Ok(MonitorArgs {
        id: need(id, "--id")?,
        bundle: need(bundle, "--bundle")?,
        log_path,
        exit_file: need(exit_file, "--exit-file")?,
        runtime: need(runtime, "--runtime")?,
        runtime_root: need(runtime_root, "--runtime-root")?,
        sync_fd,
        stdio,
    })
}

fn main() {
    let code = match parse(std::env::args_os().skip(1)) {
        Ok(args) => monitor::run(&args),
        Err(e) => {
            eprintln!("rcri-monitor: {e}");
            2
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_to_argv_writes() {
        let args = MonitorArgs {
            id: "c1".into(),
            bundle: "/b".into(),
            log_path: Some("/l".into()),
            exit_file: "/e".into(),
            runtime: "/r".into(),
            runtime_root: "/rr".into(),
            sync_fd: 3,
            stdio: StdioMode::default(),
        };
        let parsed = parse(args.to_argv().into_iter()).unwrap();
        assert_eq!(parsed.to_argv(), args.to_argv());
        assert_eq!(parsed.stdio, StdioMode::default());
        let tty = MonitorArgs {
            stdio: StdioMode {
                tty: true,
                stdin: true,
                stdin_once: true,
            },
            ..args.clone()
        };
        let parsed = parse(tty.to_argv().into_iter()).unwrap();
        assert_eq!(parsed.stdio, tty.stdio);
        assert_eq!(parsed.to_argv(), tty.to_argv());
        assert!(parse(["--id".into()].into_iter()).is_err());
        assert!(parse(["--bogus".into(), "x".into()].into_iter()).is_err());
    }
}
