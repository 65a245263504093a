//! What `rcrictl run` tells its user: one line per event (`default/web: pulled image ...`).
//! On a terminal the step in progress (a pull, a sandbox start) also gets a live spinner line
//! that events scroll above; on a pipe only the plain lines are written, each flushed at once
//! so that a reader sees them as they happen.
use std::io::{IsTerminal, Write};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const SPINNER: [char; 10] = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];

#[derive(Debug)]
struct Step {
    id: u64,
    text: String,
    since: Instant,
}

#[derive(Debug, Default)]
struct State {
    steps: Vec<Step>,
    next_id: u64,
    frame: usize,
    /// Whether a spinner line is on screen (to be erased before the next event line).
    drawn: bool,
}

#[derive(Debug)]
pub struct Progress {
    tty: bool,
    state: Mutex<State>,
}

/// A step shown on the spinner line until dropped.
pub struct StepGuard {
    progress: Arc<Progress>,
    id: u64,
}

impl Drop for StepGuard {
    fn drop(&mut self) {
        let mut st = self.progress.lock();
        st.steps.retain(|s| s.id != self.id);
        self.progress.redraw(&mut st);
    }
}

impl Progress {
    /// Spinner lines when stdout is a terminal.
    pub fn new() -> Arc<Progress> {
        Self::with_tty(std::io::stdout().is_terminal())
    }

    pub fn with_tty(tty: bool) -> Arc<Progress> {
        Arc::new(Progress {
            tty,
            state: Mutex::new(State::default()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn is_tty(&self) -> bool {
        self.tty
    }

    /// An event line for pod `pod` ("namespace/name").
    pub fn event(&self, pod: &str, msg: impl std::fmt::Display) {
        let mut st = self.lock();
        let mut out = std::io::stdout().lock();
        if st.drawn {
            let _ = write!(out, "\r\x1b[2K");
            st.drawn = false;
        }
        let _ = writeln!(out, "{pod}: {msg}");
        let _ = out.flush();
        drop(out);
        self.redraw(&mut st);
    }

    /// A step in progress: an event line on a pipe; the spinner line on a terminal.
    pub fn step(self: &Arc<Self>, pod: &str, msg: impl std::fmt::Display) -> StepGuard {
        let text = format!("{pod}: {msg}");
        let mut st = self.lock();
        let id = st.next_id;
        st.next_id += 1;
        if self.tty {
            st.steps.push(Step {
                id,
                text,
                since: Instant::now(),
            });
            self.redraw(&mut st);
        } else {
            let mut out = std::io::stdout().lock();
            let _ = writeln!(out, "{text}");
            let _ = out.flush();
        }
        StepGuard {
            progress: self.clone(),
            id,
        }
    }

    fn redraw(&self, st: &mut State) {
        if !self.tty {
            return;
        }
        let mut out = std::io::stdout().lock();
        let _ = write!(out, "\r\x1b[2K");
        st.drawn = false;
        if let Some(step) = st.steps.last() {
            let more = match st.steps.len() {
                1 => String::new(),
                n => format!(" (+{} more)", n - 1),
            };
            let _ = write!(
                out,
                "{} {} ({}s){more}",
                SPINNER[st.frame % SPINNER.len()],
                step.text,
                step.since.elapsed().as_secs()
            );
            st.drawn = true;
        }
        let _ = out.flush();
    }

    /// Turns the spinner while steps are in progress; a no-op on a pipe. Runs until the
    /// returned task is aborted.
    pub fn spawn_ticker(self: &Arc<Self>) -> Option<tokio::task::JoinHandle<()>> {
        if !self.tty {
            return None;
        }
        let me = self.clone();
        Some(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(120));
            loop {
                tick.tick().await;
                let mut st = me.lock();
                if !st.steps.is_empty() {
                    st.frame = st.frame.wrapping_add(1);
                    me.redraw(&mut st);
                }
            }
        }))
    }

    /// Erases the spinner line (at exit).
    pub fn finish(&self) {
        let mut st = self.lock();
        st.steps.clear();
        self.redraw(&mut st);
    }
}
