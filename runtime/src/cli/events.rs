//! `events`: runc's JSON event stream, one object per line: stats every --interval and `oom`
//! when the kernel's OOM killer strikes, until the container stops; with --stats one stats
//! object and exit.
use std::io::Write;
use std::path::Path;
use std::time::Duration;

#[derive(clap::Args, Debug)]
pub struct EventsArgs {
    /// Print the container's stats once and exit
    #[arg(long)]
    pub stats: bool,
    /// How often to print stats (e.g. 5s, 500ms)
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    pub interval: Duration,
    /// Container id
    pub id: String,
}

pub fn run(root: &Path, a: &EventsArgs) -> anyhow::Result<()> {
    if a.interval.is_zero() {
        anyhow::bail!("--interval must be greater than 0");
    }
    let stdout = std::io::stdout();
    let mut emit = |event: &crate::container::Event| -> std::io::Result<()> {
        let mut out = stdout.lock();
        serde_json::to_writer(&mut out, event)?;
        out.write_all(b"\n")?;
        out.flush()
    };
    if a.stats {
        emit(&crate::container::stats(root, &a.id)?)?;
        return Ok(());
    }
    crate::container::events(root, &a.id, a.interval, &mut emit)?;
    Ok(())
}
