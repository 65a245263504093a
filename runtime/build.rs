//! Build facts for `rcrun --version`: the git commit (short hash, or "unknown" outside a git
//! checkout or without git) and the rustc that built it. Nothing here may fail the build.
use std::path::Path;
use std::process::Command;

fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(program)
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (!text.is_empty()).then_some(text)
}

fn main() {
    let commit =
        output("git", &["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RCRUN_COMMIT={commit}");

    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    // "rustc 1.85.0 (4d91de4e4 2025-02-17)" → "1.85.0"
    let rustc_version = output(&rustc, &["--version"])
        .and_then(|v| v.split_whitespace().nth(1).map(str::to_string))
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=RCRUN_RUSTC_VERSION={rustc_version}");

    // Rebuild when HEAD moves: HEAD itself (branch switches), the branch's ref file, and
    // packed-refs (where refs go after `git gc`).
    if let Some(git_dir) = output("git", &["rev-parse", "--absolute-git-dir"]) {
        let git_dir = Path::new(&git_dir);
        // (A path that does not exist would make cargo rerun this on every build.)
        let mut watch = vec![git_dir.join("HEAD"), git_dir.join("packed-refs")];
        if let Some(head_ref) = output("git", &["symbolic-ref", "-q", "HEAD"]) {
            watch.push(git_dir.join(head_ref));
        }
        for path in watch.iter().filter(|p| p.exists()) {
            println!("cargo:rerun-if-changed={}", path.display());
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
