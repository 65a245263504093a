//! The command line itself: global flags, help, version, usage errors, logging.

use std::fs;

use anyhow::Result;
use e2e::*;

#[test]
fn version_and_help() -> Result<()> {
    let rt = Runtime::new()?;
    let version = rt.rcrun(&["--version"])?;
    assert!(version.success(), "{version}");
    assert!(!version.stdout.trim().is_empty(), "{version}");

    let help = rt.rcrun(&["--help"])?;
    assert!(help.success(), "{help}");
    for command in [
        "create", "start", "state", "kill", "delete", "run", "list", "spec",
    ] {
        assert!(
            help.stdout.contains(command),
            "{command} not in help: {help}"
        );
    }
    Ok(())
}

#[test]
fn usage_errors_fail() -> Result<()> {
    let rt = Runtime::new()?;
    for args in [
        vec!["no-such-command"],
        vec!["start"],
        vec!["state"],
        vec!["delete"],
        vec!["create", "--no-such-flag", "x"],
    ] {
        let out = rt.rcrun(&args)?;
        assert!(!out.success(), "{args:?} succeeded: {out}");
        assert!(!out.stderr.trim().is_empty(), "{args:?}: no message: {out}");
    }
    Ok(())
}

#[test]
fn list_of_an_empty_root() -> Result<()> {
    let rt = Runtime::new()?;
    let quiet = rt.rcrun(&["list", "-q"])?.ok()?;
    assert_eq!(quiet.stdout.trim(), "", "{quiet}");
    let json = rt.rcrun(&["list", "--format", "json"])?.ok()?;
    let value: Value = serde_json::from_str(json.stdout.trim())?;
    assert!(
        value.is_null() || value.as_array().is_some_and(|a| a.is_empty()),
        "{json}"
    );
    Ok(())
}

#[test]
fn global_flags_log_and_debug_are_accepted() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.sh("echo hi");
    bundle.write()?;
    let rt = Runtime::new()?;
    let id = unique_id("cli");
    rt.track(&id);
    let log = rt.root().join("text.log");
    let mut cmd = rt.command(&["--debug", "--log"]);
    cmd.arg(&log)
        .args(["--log-format", "text", "run", "--bundle"])
        .arg(bundle.path())
        .arg(&id);
    let out = rt.output(&mut cmd)?.ok()?;
    assert_eq!(out.stdout.trim(), "hi", "{out}");
    assert!(log.exists(), "no log file with --log");

    // A failing command writes its error to the text log too.
    let mut cmd = rt.command(&["--log"]);
    cmd.arg(&log).args(["start", "no-such-container"]);
    let out = rt.output(&mut cmd)?;
    assert!(!out.success(), "{out}");
    let text = fs::read_to_string(&log)?;
    assert!(
        text.lines()
            .any(|l| l.contains("level=error") && l.contains("does not exist")),
        "no level=error line in the log:\n{text}\n{out}"
    );
    Ok(())
}

#[test]
fn state_dir_lives_under_root() -> Result<()> {
    let mut bundle = Bundle::new()?;
    bundle.args(&["sleep", "60"]);
    let rt = Runtime::new()?;
    let id = unique_id("cli");
    rt.create(&bundle, &id)?.ok()?;
    assert!(
        rt.root().join(&id).is_dir(),
        "no {}/{id}",
        rt.root().display()
    );
    Ok(())
}
