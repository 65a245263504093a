//! `ps`: the container's processes, as a JSON list of host pids or as ps(1)'s table cut down
//! to the container's rows (runc's output, which containerd and docker parse).
use anyhow::Context;
use std::path::Path;

#[derive(clap::Args, Debug)]
pub struct PsArgs {
    /// Output format: table or json
    #[arg(short, long, default_value = "table")]
    pub format: String,
    /// Container id
    pub id: String,
    /// Options for ps(1) in table format (default -ef)
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub ps_args: Vec<String>,
}

pub fn run(root: &Path, a: &PsArgs) -> anyhow::Result<()> {
    let pids: Vec<i32> = crate::container::pids(root, &a.id)?
        .into_iter()
        .map(|p| p.as_raw())
        .collect();
    match a.format.as_str() {
        "json" => {
            println!("{}", serde_json::to_string(&pids)?);
            Ok(())
        }
        "table" => {
            let args: Vec<&str> = if a.ps_args.is_empty() {
                vec!["-ef"]
            } else {
                a.ps_args.iter().map(String::as_str).collect()
            };
            let out = std::process::Command::new("ps")
                .args(&args)
                .output()
                .context("failed to run ps")?;
            if !out.status.success() {
                anyhow::bail!(
                    "ps {} failed ({}): {}",
                    args.join(" "),
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                );
            }
            print!(
                "{}",
                filter_table(&String::from_utf8_lossy(&out.stdout), &pids)?
            );
            Ok(())
        }
        other => anyhow::bail!("invalid format {other:?}: use table or json"),
    }
}

/// The header and the rows whose PID column is one of `pids`.
fn filter_table(table: &str, pids: &[i32]) -> anyhow::Result<String> {
    let mut lines = table.lines();
    let header = lines.next().unwrap_or_default();
    let column = header
        .split_whitespace()
        .position(|h| h == "PID")
        .context("ps output has no PID column (the ps options must include it)")?;
    let mut out = format!("{header}\n");
    for line in lines {
        let pid = line
            .split_whitespace()
            .nth(column)
            .and_then(|p| p.parse::<i32>().ok());
        if pid.is_some_and(|p| pids.contains(&p)) {
            out.push_str(line);
            out.push('\n');
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_header_and_the_containers_rows() {
        let table = "UID PID PPID C STIME TTY TIME CMD\n\
                     root 1 0 0 10:00 ? 00:00:01 init\n\
                     root 42 1 0 10:00 ? 00:00:00 sleep 60\n";
        let got = filter_table(table, &[42]).expect("has PID");
        assert_eq!(
            got,
            "UID PID PPID C STIME TTY TIME CMD\nroot 42 1 0 10:00 ? 00:00:00 sleep 60\n"
        );
        assert!(filter_table("USER COMMAND\n", &[1]).is_err());
    }
}
