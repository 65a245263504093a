//! Container lifecycle events for GetContainerEvents (kubelet's evented PLEG): CREATED, STARTED,
//! STOPPED and DELETED for every container and, as containerd sends them, for every pod sandbox
//! (under the sandbox id).
//!
//! Each event carries a snapshot of the pod's records taken when it happened; the gRPC layer
//! turns them into CRI statuses. Subscribers get the events sent after they subscribed, through
//! a broadcast channel: a subscriber that falls behind by more than its capacity loses the
//! oldest (kubelet relists periodically and catches up).

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::sync::broadcast;

use crate::monitor;
use crate::store::{ContainerRecord, ContainerState, SandboxRecord, SandboxState};
use crate::Context;

/// Events buffered per subscriber.
const CAPACITY: usize = 1024;
/// How often exits are looked for while someone listens: a container that ends by itself is
/// noticed only through its monitor's exit file.
const EXIT_POLL: Duration = Duration::from_millis(500);
/// How long the exit watcher waits for an object's lock before leaving it to the next round.
const LOCK_WAIT: Duration = Duration::from_millis(50);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Created,
    Started,
    Stopped,
    Deleted,
}

#[derive(Debug, Clone)]
pub struct ContainerEvent {
    pub container_id: String,
    pub kind: EventKind,
    pub created_at: i64,
    /// The pod as it was when the event happened (None once the pod is gone).
    pub sandbox: Option<SandboxRecord>,
    /// The pod's containers as they were.
    pub containers: Vec<ContainerRecord>,
}

pub struct EventHub {
    sender: broadcast::Sender<ContainerEvent>,
    /// Ids whose STOPPED event was sent: an exit can be noticed by several callers (StopContainer,
    /// any status or list call reading the exit file, the exit watcher), and is told once.
    stopped: Mutex<HashSet<String>>,
    watching: AtomicBool,
}

impl Default for EventHub {
    fn default() -> Self {
        Self::new()
    }
}

impl EventHub {
    pub fn new() -> EventHub {
        let (sender, _) = broadcast::channel(CAPACITY);
        EventHub {
            sender,
            stopped: Mutex::new(HashSet::new()),
            watching: AtomicBool::new(false),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<ContainerEvent> {
        self.sender.subscribe()
    }

    /// Whether this event is news: false for a second STOPPED of the same object.
    fn first_time(&self, id: &str, kind: EventKind) -> bool {
        let mut stopped = self.stopped.lock().unwrap_or_else(|p| p.into_inner());
        match kind {
            EventKind::Stopped => stopped.insert(id.to_string()),
            EventKind::Deleted | EventKind::Created | EventKind::Started => {
                stopped.remove(id);
                true
            }
        }
    }
}

/// Tells subscribers that container (or sandbox) `id` of pod `sandbox_id` was created, started,
/// stopped or deleted. Cheap when nobody listens.
pub fn emit(ctx: &Context, id: &str, sandbox_id: &str, kind: EventKind) {
    let hub = &ctx.events;
    if !hub.first_time(id, kind) || hub.sender.receiver_count() == 0 {
        return;
    }
    let event = ContainerEvent {
        container_id: id.to_string(),
        kind,
        created_at: crate::monitor::now_nanos(),
        sandbox: ctx.store.sandbox(sandbox_id),
        containers: ctx.store.containers_of(sandbox_id),
    };
    // An error only means every subscriber left since the check.
    let _ = hub.sender.send(event);
}

/// An event of a pod's container.
pub fn container(ctx: &Context, record: &ContainerRecord, kind: EventKind) {
    emit(ctx, &record.id, &record.sandbox_id, kind);
}

/// An event of a pod sandbox, told under the sandbox id as if it were a container.
pub fn sandbox(ctx: &Context, id: &str, kind: EventKind) {
    emit(ctx, id, id, kind);
}

/// Starts (once) the task that looks for exits while the daemon runs, so that a container or
/// pod that ends on its own gets its STOPPED event without anyone asking for its status. It
/// holds the context weakly and ends with it.
pub fn watch_exits(ctx: &Arc<Context>) {
    if ctx.events.watching.swap(true, Ordering::SeqCst) {
        return;
    }
    let weak: Weak<Context> = Arc::downgrade(ctx);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(EXIT_POLL).await;
            let Some(ctx) = weak.upgrade() else { break };
            fold_in_exits(&ctx).await;
        }
    });
}

/// Folds every recorded-but-unseen exit into its record, under the object's lock: a refresh
/// racing StopContainer/RemoveContainer could otherwise write back a record just removed.
async fn fold_in_exits(ctx: &Context) {
    for record in ctx.store.sandboxes() {
        if record.state == SandboxState::Ready
            && monitor::read_exit_file(&monitor::default_exit_file(&record.dir)).is_some()
        {
            // A busy object is being stopped or removed by a call that tells its exit itself.
            let Ok(_guard) = tokio::time::timeout(LOCK_WAIT, ctx.lock(&record.id)).await else {
                continue;
            };
            if crate::sandbox::get(ctx, &record.id).is_err() {
                ctx.forget_lock(&record.id);
            }
        }
    }
    for record in ctx.store.containers() {
        if record.state == ContainerState::Running
            && monitor::read_exit_file(&monitor::default_exit_file(&record.bundle)).is_some()
        {
            let Ok(_guard) = tokio::time::timeout(LOCK_WAIT, ctx.lock(&record.id)).await else {
                continue;
            };
            if crate::container::get(ctx, &record.id).is_err() {
                ctx.forget_lock(&record.id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stop_is_told_once_until_the_object_is_gone() {
        let hub = EventHub::new();
        assert!(hub.first_time("a", EventKind::Created));
        assert!(hub.first_time("a", EventKind::Stopped));
        assert!(!hub.first_time("a", EventKind::Stopped));
        assert!(hub.first_time("b", EventKind::Stopped));
        assert!(hub.first_time("a", EventKind::Deleted));
        assert!(hub.first_time("a", EventKind::Stopped));
    }
}
