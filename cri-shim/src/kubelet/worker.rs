//! One pod over time, as kubelet's pod worker drives it through the CRI (kuberuntime's
//! computePodActions / SyncPod, reduced to a single node and no API server): sandbox, init
//! containers in order, containers, restarts with back-off, probes, status, deletion.
//!
//! Each pod is a tokio task that loops: look at the runtime, decide, act, publish the status
//! (status.json) when it changed, and wait for the next tick, a probe result or a deletion
//! request. Nothing here ends a pod without tearing down what it made: a terminal pod loses its
//! sandbox and volumes (its record stays for `get`), a deleted pod loses its record too.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tokio::sync::{mpsc, watch};
use tonic::transport::Channel;

use super::backoff::{go_duration, Backoff, BackoffConfig};
use super::convert::{self, PodRuntimeInfo};
use super::etchosts;
use super::manifest::{Container, LifecycleHandler, Pod, Probe, PullPolicy, RestartPolicy};
use super::probe::{self, Target};
use super::progress::Progress;
use super::records::{self, OwnedRecord, Record, RuntimeInfo};
use super::sources::ConfigSources;
use super::status::{
    rfc3339, ContainerState, ContainerStatus, PodCondition, PodIp, PodStatus, StateRunning,
    StateTerminated,
};
use super::volumes::{self, PodVolumes};

/// How often a pod looks at the runtime (exits, sandbox death, deletion requests).
const TICK: Duration = Duration::from_millis(500);
/// kubelet's minimumGracePeriodInSeconds: StopContainer never gets less.
const MIN_GRACE: i64 = 2;
/// Default terminationGracePeriodSeconds.
const DEFAULT_GRACE: i64 = 30;

/// Everything the pods of one `rcrictl run` share.
pub struct Kubelet {
    pub rt: RuntimeServiceClient<Channel>,
    pub img: ImageServiceClient<Channel>,
    pub progress: Arc<Progress>,
    pub backoff: BackoffConfig,
    pub node_name: String,
    pub host_ip: String,
    /// The CRI Version's runtime_name, lowercased: the scheme of containerID.
    pub runtime_name: String,
    /// kubelet's --cluster-domain: the pods' FQDN in /etc/hosts ends with it.
    pub cluster_domain: String,
}

/// How a pod's worker ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Succeeded,
    Failed,
    Deleted,
}

/// A running pod worker.
pub struct PodHandle {
    pub key: String,
    stop: watch::Sender<Option<Option<i64>>>,
    join: tokio::task::JoinHandle<Outcome>,
}

impl PodHandle {
    /// Asks for graceful deletion (grace None: the pod's own).
    pub fn delete(&self, grace: Option<i64>) {
        let _ = self.stop.send(Some(grace));
    }

    pub fn is_finished(&self) -> bool {
        self.join.is_finished()
    }

    pub async fn wait(self) -> Outcome {
        match self.join.await {
            Ok(o) => o,
            // A panicked worker: report failure; its record shows the last status.
            Err(_) => Outcome::Failed,
        }
    }
}

/// Starts the worker of `pod` (defaulted and validated), whose record this process owns.
/// `previous` is a stale record of the same pod left by an owner that died: whatever it left in
/// the runtime is removed first.
pub fn spawn(
    kl: Arc<Kubelet>,
    pod: Pod,
    sources: Arc<ConfigSources>,
    record: OwnedRecord,
    previous: Option<Record>,
) -> PodHandle {
    let key = pod_key(&pod);
    let (stop_tx, stop_rx) = watch::channel(None);
    let worker = Worker::new(kl, pod, sources, record);
    let join = tokio::spawn(worker.run(stop_rx, previous));
    PodHandle {
        key,
        stop: stop_tx,
        join,
    }
}

pub fn pod_key(pod: &Pod) -> String {
    format!("{}/{}", pod.metadata.namespace, pod.metadata.name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProbeKind {
    Startup,
    Liveness,
    Readiness,
}

impl ProbeKind {
    fn name(self) -> &'static str {
        match self {
            ProbeKind::Startup => "startup",
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

#[derive(Debug, Clone, Default)]
struct ProbeState {
    next: Option<Instant>,
    successes: i32,
    failures: i32,
    in_flight: bool,
}

struct ProbeDone {
    init: bool,
    index: usize,
    kind: ProbeKind,
    container_id: String,
    result: Result<(), String>,
}

/// A container exit as the back-off sees it.
#[derive(Debug, Clone, Copy)]
struct Exit {
    at: Instant,
    code: i32,
}

#[derive(Debug, Clone)]
struct Ctr {
    spec: Container,
    init: bool,
    /// CRI containers created so far: the next one's attempt number.
    attempts: u32,
    /// The container of the current attempt (running, or dead until replaced).
    id: Option<String>,
    running: bool,
    /// Dead containers of earlier attempts still in the runtime (kubelet keeps one).
    dead: Vec<String>,
    state: ContainerState,
    last_state: ContainerState,
    image: String,
    image_id: String,
    last_exit: Option<Exit>,
    /// A failed creation (config, CreateContainer, StartContainer) is retried no sooner.
    retry_at: Option<Instant>,
    ready: bool,
    started: bool,
    /// An init container that succeeded must run again (its sandbox was re-created).
    rerun: bool,
    /// Why we stopped it (liveness, startup probe, postStart hook), for the event line.
    killing: Option<String>,
    probes: [ProbeState; 3],
    /// The back-off window already announced, so that it is printed once.
    announced_backoff: Option<Instant>,
}

impl Ctr {
    fn new(spec: &Container, init: bool) -> Ctr {
        Ctr {
            image: spec.image.clone(),
            spec: spec.clone(),
            init,
            attempts: 0,
            id: None,
            running: false,
            dead: Vec::new(),
            state: ContainerState::waiting(
                if init {
                    "PodInitializing"
                } else {
                    "ContainerCreating"
                },
                None,
            ),
            last_state: ContainerState::default(),
            image_id: String::new(),
            last_exit: None,
            retry_at: None,
            ready: false,
            started: false,
            rerun: false,
            killing: None,
            probes: Default::default(),
            announced_backoff: None,
        }
    }

    fn backoff_key(&self) -> String {
        format!(
            "{}/{}",
            if self.init { "init" } else { "ctr" },
            self.spec.name
        )
    }

    fn succeeded(&self) -> bool {
        !self.rerun
            && !self.running
            && self
                .state
                .terminated
                .as_ref()
                .is_some_and(|t| t.exit_code == 0)
    }

    fn probe(&self, kind: ProbeKind) -> Option<&Probe> {
        match kind {
            ProbeKind::Startup => self.spec.startup_probe.as_ref(),
            ProbeKind::Liveness => self.spec.liveness_probe.as_ref(),
            ProbeKind::Readiness => self.spec.readiness_probe.as_ref(),
        }
    }
}

struct Sandbox {
    id: String,
    config: cri::PodSandboxConfig,
    target: Target,
    info: PodRuntimeInfo,
    /// `<record>/etc-hosts` once written for this sandbox (its IPs).
    etc_hosts: Option<PathBuf>,
}

struct Worker {
    kl: Arc<Kubelet>,
    pod: Pod,
    key: String,
    sources: Arc<ConfigSources>,
    record: Option<OwnedRecord>,
    backoff: Backoff,
    sandbox: Option<Sandbox>,
    sandbox_attempts: u32,
    sandbox_retry_at: Option<Instant>,
    volumes: Option<PodVolumes>,
    init: Vec<Ctr>,
    containers: Vec<Ctr>,
    runtime_info: RuntimeInfo,
    start_time: String,
    conditions: BTreeMap<&'static str, (bool, String)>,
    written: Option<PodStatus>,
    was_ready: bool,
    probe_tx: mpsc::UnboundedSender<ProbeDone>,
    probe_rx: mpsc::UnboundedReceiver<ProbeDone>,
}

fn restart_policy(pod: &Pod) -> RestartPolicy {
    pod.spec.restart_policy.unwrap_or_default()
}

fn ns_to_rfc3339(ns: i64) -> String {
    if ns <= 0 {
        return String::new();
    }
    rfc3339(UNIX_EPOCH + Duration::from_nanos(ns as u64))
}

/// The Instant of a wall-clock time in the past (for back-off from a container's finishedAt).
fn instant_of(ns: i64) -> Instant {
    let now_i = Instant::now();
    if ns <= 0 {
        return now_i;
    }
    let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
    let ago = SystemTime::now().duration_since(t).unwrap_or_default();
    now_i.checked_sub(ago).unwrap_or(now_i)
}

fn short(id: &str) -> &str {
    &id[..id.len().min(13)]
}

fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

impl Worker {
    fn new(kl: Arc<Kubelet>, pod: Pod, sources: Arc<ConfigSources>, record: OwnedRecord) -> Self {
        let (probe_tx, probe_rx) = mpsc::unbounded_channel();
        Worker {
            backoff: Backoff::new(kl.backoff),
            key: pod_key(&pod),
            init: pod
                .spec
                .init_containers
                .iter()
                .map(|c| Ctr::new(c, true))
                .collect(),
            containers: pod
                .spec
                .containers
                .iter()
                .map(|c| Ctr::new(c, false))
                .collect(),
            kl,
            pod,
            sources,
            record: Some(record),
            sandbox: None,
            sandbox_attempts: 0,
            sandbox_retry_at: None,
            volumes: None,
            runtime_info: RuntimeInfo::default(),
            start_time: rfc3339(SystemTime::now()),
            conditions: BTreeMap::new(),
            written: None,
            was_ready: false,
            probe_tx,
            probe_rx,
        }
    }

    fn event(&self, msg: impl std::fmt::Display) {
        self.kl.progress.event(&self.key, msg);
    }

    fn rt(&self) -> RuntimeServiceClient<Channel> {
        self.kl.rt.clone()
    }

    fn container_id_text(&self, id: &str) -> String {
        format!("{}://{}", self.kl.runtime_name, id)
    }

    fn record_dir(&self) -> Option<PathBuf> {
        self.record.as_ref().map(|r| r.dir().to_path_buf())
    }

    async fn run(
        mut self,
        mut stop: watch::Receiver<Option<Option<i64>>>,
        previous: Option<Record>,
    ) -> Outcome {
        if let Some(prev) = previous {
            if let Err(e) = remove_pod_from_runtime(&self.kl, &prev, Some(0)).await {
                self.event(format!(
                    "cannot clean up what an earlier run left of this pod: {e:#}"
                ));
            }
        }
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The handle was dropped: only the record's delete-requested marker can stop us now.
        let mut handle_gone = false;
        loop {
            let requested = stop
                .borrow()
                .to_owned()
                .or_else(|| self.record.as_ref().and_then(|r| r.delete_requested()));
            if let Some(grace) = requested {
                return self.delete(grace).await;
            }
            self.sync().await;
            self.publish();
            if let Some(outcome) = self.terminal() {
                self.finish(outcome).await;
                return outcome;
            }
            tokio::select! {
                _ = tick.tick() => {}
                Some(done) = self.probe_rx.recv() => self.on_probe(done).await,
                r = stop.changed(), if !handle_gone => handle_gone = r.is_err(),
            }
        }
    }

    // ---- the sync loop -----------------------------------------------------------------------

    async fn sync(&mut self) {
        self.refresh_containers().await;
        if !self.ensure_sandbox().await {
            return;
        }
        // Init containers strictly in order; containers only once all succeeded.
        let policy = restart_policy(&self.pod);
        for i in 0..self.init.len() {
            if self.init[i].succeeded() {
                continue;
            }
            if self.init[i].running {
                return;
            }
            let failed = self.init[i].last_exit.is_some_and(|e| e.code != 0)
                && self.init[i].state.terminated.is_some();
            if failed && policy == RestartPolicy::Never {
                return;
            }
            self.start_container(true, i).await;
            return;
        }
        for i in 0..self.containers.len() {
            let c = &self.containers[i];
            if c.running {
                continue;
            }
            let should_start = match c.last_exit {
                None => true,
                Some(exit) => match policy {
                    RestartPolicy::Always => true,
                    RestartPolicy::OnFailure => exit.code != 0,
                    RestartPolicy::Never => false,
                },
            };
            if should_start {
                self.start_container(false, i).await;
            }
        }
        self.schedule_probes();
    }

    /// How many init containers (`init`) or app containers the pod has.
    fn count(&self, init: bool) -> usize {
        if init {
            self.init.len()
        } else {
            self.containers.len()
        }
    }

    fn ctr(&mut self, init: bool, i: usize) -> &mut Ctr {
        if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        }
    }

    /// Notices containers that exited (or vanished) since the last look.
    async fn refresh_containers(&mut self) {
        let mut rt = self.rt();
        for init in [true, false] {
            let n = self.count(init);
            for i in 0..n {
                let (id, running) = {
                    let c = self.ctr(init, i);
                    (c.id.clone(), c.running)
                };
                let Some(id) = id.filter(|_| running) else {
                    continue;
                };
                let resp = rt
                    .container_status(cri::ContainerStatusRequest {
                        container_id: id.clone(),
                        verbose: false,
                    })
                    .await;
                match resp {
                    Ok(r) => {
                        let Some(st) = r.into_inner().status else {
                            continue;
                        };
                        if st.state == cri::ContainerState::ContainerExited as i32 {
                            self.on_exit(init, i, &id, Some(&st));
                        } else if !st.image_ref.is_empty() {
                            self.ctr(init, i).image_id = st.image_ref.clone();
                        }
                    }
                    Err(s) if s.code() == tonic::Code::NotFound => {
                        self.on_exit(init, i, &id, None);
                    }
                    Err(s) => {
                        let name = self.ctr(init, i).spec.name.clone();
                        self.event(format!(
                            "cannot get the status of container {name}: {}",
                            s.message()
                        ));
                    }
                }
            }
        }
    }

    fn on_exit(&mut self, init: bool, i: usize, id: &str, st: Option<&cri::ContainerStatus>) {
        let cid = self.container_id_text(id);
        let term = match st {
            Some(st) => StateTerminated {
                exit_code: st.exit_code,
                signal: None,
                reason: if !st.reason.is_empty() {
                    st.reason.clone()
                } else if st.exit_code == 0 {
                    "Completed".into()
                } else {
                    "Error".into()
                },
                message: Some(st.message.clone()).filter(|m| !m.is_empty()),
                started_at: ns_to_rfc3339(st.started_at),
                finished_at: ns_to_rfc3339(st.finished_at),
                container_id: Some(cid),
            },
            // kubelet's words for a container the runtime lost.
            None => StateTerminated {
                exit_code: 137,
                signal: None,
                reason: "ContainerStatusUnknown".into(),
                message: Some(
                    "The container could not be located when the pod was terminated".into(),
                ),
                started_at: String::new(),
                finished_at: rfc3339(SystemTime::now()),
                container_id: Some(cid),
            },
        };
        let at = st
            .map(|s| instant_of(s.finished_at))
            .unwrap_or_else(Instant::now);
        let code = term.exit_code;
        let name = {
            let c = self.ctr(init, i);
            c.running = false;
            c.ready = false;
            c.started = false;
            c.probes = Default::default();
            c.killing = None;
            c.last_exit = Some(Exit { at, code });
            c.state = ContainerState {
                terminated: Some(term),
                ..Default::default()
            };
            c.spec.name.clone()
        };
        self.event(format!("container {name} exited with {code}"));
    }

    /// Makes sure a ready sandbox exists; false while there is none yet.
    async fn ensure_sandbox(&mut self) -> bool {
        if let Some(sb) = &self.sandbox {
            let id = sb.id.clone();
            let st = self
                .rt()
                .pod_sandbox_status(cri::PodSandboxStatusRequest {
                    pod_sandbox_id: id.clone(),
                    verbose: false,
                })
                .await;
            let alive = match st {
                Ok(r) => r
                    .into_inner()
                    .status
                    .is_some_and(|s| s.state == cri::PodSandboxState::SandboxReady as i32),
                Err(s) if s.code() == tonic::Code::NotFound => false,
                // Cannot tell (the runtime restarting): assume it lives, look again later.
                Err(_) => true,
            };
            if alive {
                return true;
            }
            self.event(format!(
                "pod sandbox {} is gone: it will be killed and re-created",
                short(&id)
            ));
            self.sandbox_died().await;
            let any_ran = self
                .init
                .iter()
                .chain(self.containers.iter())
                .any(|c| c.attempts > 0);
            if restart_policy(&self.pod) == RestartPolicy::Never && any_ran {
                return false;
            }
        }
        if self.sandbox_retry_at.is_some_and(|t| Instant::now() < t) {
            return false;
        }
        match self.create_sandbox().await {
            Ok(()) => {
                self.sandbox_retry_at = None;
                true
            }
            Err(e) => {
                self.event(format!("failed to start the pod: {e:#}"));
                let now = Instant::now();
                self.backoff.next("sandbox", now, now);
                self.sandbox_retry_at = Some(now + self.backoff.get("sandbox"));
                false
            }
        }
    }

    /// The sandbox died under us: every container in it is dead; remove what is left.
    async fn sandbox_died(&mut self) {
        self.refresh_containers().await;
        for init in [true, false] {
            let n = self.count(init);
            for i in 0..n {
                let id = {
                    let c = self.ctr(init, i);
                    c.running.then(|| c.id.clone()).flatten()
                };
                if let Some(id) = id {
                    let _ = self
                        .rt()
                        .stop_container(cri::StopContainerRequest {
                            container_id: id.clone(),
                            timeout: 0,
                        })
                        .await;
                    self.on_exit(init, i, &id, None);
                }
                let c = self.ctr(init, i);
                c.dead.clear();
                if init && c.succeeded() {
                    c.rerun = true;
                }
            }
        }
        if let Some(sb) = self.sandbox.take() {
            if let Err(e) = stop_and_remove_sandbox(&self.kl, &sb.id).await {
                self.event(format!("{e:#}"));
            }
        }
    }

    async fn create_sandbox(&mut self) -> Result<()> {
        let dir = self.record_dir().context("the pod record is gone")?;
        let log_dir = dir.join("logs");
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("cannot create {}", log_dir.display()))?;
        let vols = volumes::setup(&self.pod, &dir, &self.sources)
            .context("cannot set up the pod's volumes")?;
        self.volumes = Some(vols);
        let attempt = self.sandbox_attempts;
        let config = convert::sandbox_config(&self.pod, attempt, &log_dir)?;
        let step = self.kl.progress.step(&self.key, "starting pod sandbox");
        let resp = self
            .rt()
            .run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
            .map_err(status_err)
            .context("RunPodSandbox")?;
        drop(step);
        self.sandbox_attempts += 1;
        let id = resp.into_inner().pod_sandbox_id;
        // Recorded before anything else can fail, so that a delete finds it.
        self.runtime_info.sandbox_id = id.clone();
        self.write_runtime();
        self.sandbox = Some(Sandbox {
            id: id.clone(),
            config,
            target: Target::default(),
            info: PodRuntimeInfo {
                host_ip: self.kl.host_ip.clone(),
                node_name: self.kl.node_name.clone(),
                ..Default::default()
            },
            etc_hosts: None,
        });
        let st = self
            .rt()
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: id.clone(),
                verbose: true,
            })
            .await
            .map_err(status_err)
            .context("PodSandboxStatus")?
            .into_inner();
        let mut ips = Vec::new();
        if let Some(net) = st.status.as_ref().and_then(|s| s.network.as_ref()) {
            if !net.ip.is_empty() {
                ips.push(net.ip.clone());
            }
            ips.extend(net.additional_ips.iter().map(|i| i.ip.clone()));
        }
        if ips.is_empty() && self.pod.spec.host_network && !self.kl.host_ip.is_empty() {
            ips.push(self.kl.host_ip.clone());
        }
        let netns = if self.pod.spec.host_network {
            None
        } else {
            probe::netns_from_info(&st.info)
        };
        let pod_ip = ips.first().cloned().unwrap_or_default();
        if let Some(sb) = &mut self.sandbox {
            sb.target = Target {
                netns,
                pod_ip: pod_ip.clone(),
            };
            sb.info.pod_ip = pod_ip.clone();
            sb.info.pod_ips = ips;
        }
        if pod_ip.is_empty() {
            self.event(format!("started pod sandbox {}", short(&id)));
        } else {
            self.event(format!("started pod sandbox {} (IP {pod_ip})", short(&id)));
        }
        // The sandbox is up whatever happens here: a failure is retried at the next container
        // start, which then waits (CreateContainerConfigError) until the file is there.
        if let Err(e) = self.ensure_etc_hosts() {
            self.event(format!("{e:#}"));
        }
        Ok(())
    }

    /// Writes the pod's /etc/hosts once per sandbox, when its IPs are known (kubelet rewrites
    /// it at every container start; once is enough here since the IPs only change with a new
    /// sandbox, and it leaves what a container added to it alone while the sandbox lives).
    fn ensure_etc_hosts(&mut self) -> Result<Option<PathBuf>> {
        let Some(sb) = &self.sandbox else {
            return Ok(None);
        };
        if let Some(path) = &sb.etc_hosts {
            return Ok(Some(path.clone()));
        }
        let dir = self.record_dir().context("the pod record is gone")?;
        let hostname = convert::pod_hostname(&self.pod);
        let written = etchosts::write(
            &self.pod,
            &hostname,
            &dir,
            &sb.info.pod_ips,
            &self.kl.cluster_domain,
        )
        .context("cannot write the pod's /etc/hosts")?;
        if let Some(sb) = &mut self.sandbox {
            sb.etc_hosts.clone_from(&written);
        }
        Ok(written)
    }

    /// Whether the back-off keeps container `i` from (re)starting now; sets its waiting state.
    fn held_by_backoff(&mut self, init: bool, i: usize) -> bool {
        let now = Instant::now();
        let pod_ref = format!(
            "{}_{}({})",
            self.pod.metadata.name, self.pod.metadata.namespace, self.pod.metadata.uid
        );
        let c = if init {
            &mut self.init[i]
        } else {
            &mut self.containers[i]
        };
        if let Some(t) = c.retry_at {
            if now < t {
                return true;
            }
            c.retry_at = None;
        }
        // kubelet's doBackOff: only a container that exited before can be in back-off, and the
        // first restart after a quiet period goes at once (see backoff.rs).
        let Some(exit) = c.last_exit else {
            return false;
        };
        let key = c.backoff_key();
        if self.backoff.in_backoff_since(&key, exit.at, now) {
            let window = self.backoff.get(&key);
            let msg = format!(
                "back-off {} restarting failed container={} pod={pod_ref}",
                go_duration(window),
                c.spec.name
            );
            if c.state.terminated.is_some() {
                c.last_state = std::mem::take(&mut c.state);
            }
            c.state = ContainerState::waiting("CrashLoopBackOff", Some(msg));
            let until = self.backoff.until(&key, exit.at);
            if c.announced_backoff != until {
                c.announced_backoff = until;
                let name = c.spec.name.clone();
                self.event(format!(
                    "back-off {} restarting failed container {name}",
                    go_duration(window)
                ));
            }
            return true;
        }
        self.backoff.next(&key, exit.at, now);
        false
    }

    fn set_waiting(&mut self, init: bool, i: usize, reason: &str, msg: String) {
        let c = self.ctr(init, i);
        if c.state.terminated.is_some() {
            c.last_state = std::mem::take(&mut c.state);
        }
        c.state = ContainerState::waiting(reason, Some(msg));
    }

    /// A creation step failed: wait as the back-off says before the next try.
    fn retry_later(&mut self, init: bool, i: usize) {
        let now = Instant::now();
        let key = format!("create/{}", self.ctr(init, i).backoff_key());
        self.backoff.next(&key, now, now);
        let d = self.backoff.get(&key);
        self.ctr(init, i).retry_at = Some(now + d);
    }

    /// PullImage per imagePullPolicy, with kubelet's pull back-off. Ok(None): not available
    /// yet (the waiting state says why).
    async fn ensure_image(&mut self, init: bool, i: usize) -> Option<String> {
        let spec = self.ctr(init, i).spec.clone();
        let image = convert::image_spec(&spec);
        let name = spec.image.clone();
        let policy = spec.image_pull_policy.unwrap_or_default();
        let mut img = self.kl.img.clone();
        if policy != PullPolicy::Always {
            let present = img
                .image_status(cri::ImageStatusRequest {
                    image: Some(image.clone()),
                    verbose: false,
                })
                .await
                .ok()
                .and_then(|r| r.into_inner().image);
            if let Some(found) = present {
                let c = self.ctr(init, i);
                if c.attempts == 0 && c.image_id.is_empty() {
                    self.event(format!("image {name} already present"));
                }
                return Some(found.id);
            }
            if policy == PullPolicy::Never {
                self.set_waiting(
                    init,
                    i,
                    "ErrImageNeverPull",
                    format!("Container image \"{name}\" is not present with pull policy of Never"),
                );
                return None;
            }
        }
        let key = format!("image/{name}");
        let now = Instant::now();
        if self.backoff.in_backoff_since_update(&key, now) {
            let msg = format!("Back-off pulling image \"{name}\"");
            let already = self
                .ctr(init, i)
                .state
                .waiting
                .as_ref()
                .is_some_and(|w| w.reason == "ImagePullBackOff");
            if !already {
                self.event(format!("back-off pulling image {name}"));
            }
            self.set_waiting(init, i, "ImagePullBackOff", msg);
            return None;
        }
        let started = Instant::now();
        let step = self
            .kl
            .progress
            .step(&self.key, format!("pulling image {name}"));
        let auth = None;
        let resp = img
            .pull_image(cri::PullImageRequest {
                image: Some(image),
                auth,
                sandbox_config: self.sandbox.as_ref().map(|s| s.config.clone()),
            })
            .await;
        drop(step);
        match resp {
            Ok(r) => {
                self.backoff.reset(&key);
                self.event(format!(
                    "pulled image {name} in {:.1}s",
                    started.elapsed().as_secs_f64()
                ));
                Some(r.into_inner().image_ref)
            }
            Err(s) => {
                let now = Instant::now();
                self.backoff.next(&key, now, now);
                self.event(format!("failed to pull image {name}: {}", s.message()));
                self.set_waiting(init, i, "ErrImagePull", s.message().to_string());
                None
            }
        }
    }

    async fn start_container(&mut self, init: bool, i: usize) {
        if self.sandbox.is_none() || self.held_by_backoff(init, i) {
            return;
        }
        let Some(image_ref) = self.ensure_image(init, i).await else {
            return;
        };
        let (spec, attempt) = {
            let c = self.ctr(init, i);
            (c.spec.clone(), c.attempts)
        };
        let mut mounts = match self.volumes.as_ref().map(|v| v.mounts(&spec)) {
            Some(Ok(m)) => m,
            Some(Err(e)) => {
                self.event(format!("cannot mount volumes into {}: {e:#}", spec.name));
                self.set_waiting(init, i, "CreateContainerConfigError", format!("{e:#}"));
                self.retry_later(init, i);
                return;
            }
            None => return,
        };
        if etchosts::wanted_by(&spec) {
            match self.ensure_etc_hosts() {
                Ok(Some(path)) => mounts.push(etchosts::mount(&path)),
                Ok(None) => {}
                Err(e) => {
                    self.event(format!("cannot mount /etc/hosts into {}: {e:#}", spec.name));
                    self.set_waiting(init, i, "CreateContainerConfigError", format!("{e:#}"));
                    self.retry_later(init, i);
                    return;
                }
            }
        }
        let (sandbox_id, sandbox_config, info, target) = match &self.sandbox {
            Some(sb) => (
                sb.id.clone(),
                sb.config.clone(),
                sb.info.clone(),
                sb.target.clone(),
            ),
            None => return,
        };
        let config = match convert::container_config(
            &self.pod,
            &spec,
            attempt,
            &info,
            &self.sources,
            mounts,
        ) {
            Ok(c) => c,
            Err(e) => {
                self.event(format!("cannot configure container {}: {e:#}", spec.name));
                self.set_waiting(init, i, "CreateContainerConfigError", format!("{e:#}"));
                self.retry_later(init, i);
                return;
            }
        };
        let mut rt = self.rt();
        let created = rt
            .create_container(cri::CreateContainerRequest {
                pod_sandbox_id: sandbox_id.clone(),
                config: Some(config),
                sandbox_config: Some(sandbox_config),
            })
            .await;
        let id = match created {
            Ok(r) => r.into_inner().container_id,
            Err(s) => {
                self.event(format!(
                    "cannot create container {}: {}",
                    spec.name,
                    s.message()
                ));
                self.set_waiting(init, i, "CreateContainerError", s.message().to_string());
                self.retry_later(init, i);
                return;
            }
        };
        // The dead container of the previous attempt is kept (lastState, logs); older go.
        let stale: Vec<String> = {
            let c = self.ctr(init, i);
            c.attempts += 1;
            if let Some(prev) = c.id.replace(id.clone()) {
                c.dead.push(prev);
            }
            let keep_from = c.dead.len().saturating_sub(1);
            c.dead.drain(..keep_from).collect()
        };
        for old in stale {
            let _ = rt
                .remove_container(cri::RemoveContainerRequest { container_id: old })
                .await;
        }
        if let Err(s) = rt
            .start_container(cri::StartContainerRequest {
                container_id: id.clone(),
            })
            .await
        {
            self.event(format!(
                "cannot start container {}: {}",
                spec.name,
                s.message()
            ));
            // A container that failed to start is exited in the runtime: it counts as a
            // crash (back-off and all), as in kubelet.
            let c = self.ctr(init, i);
            c.running = true;
            c.image_id = image_ref;
            self.refresh_containers().await;
            let c = self.ctr(init, i);
            if c.running {
                c.running = false;
                c.last_exit = Some(Exit {
                    at: Instant::now(),
                    code: 128,
                });
                self.set_waiting(init, i, "RunContainerError", s.message().to_string());
            }
            return;
        }
        let now = Instant::now();
        {
            let c = self.ctr(init, i);
            if c.state.terminated.is_some() {
                c.last_state = std::mem::take(&mut c.state);
            }
            c.state = ContainerState {
                running: Some(StateRunning {
                    started_at: rfc3339(SystemTime::now()),
                }),
                ..Default::default()
            };
            c.running = true;
            c.rerun = false;
            c.image_id = image_ref;
            c.started = c.spec.startup_probe.is_none();
            c.ready = false;
            c.probes = Default::default();
            for kind in [
                ProbeKind::Startup,
                ProbeKind::Liveness,
                ProbeKind::Readiness,
            ] {
                if let Some(p) = c.probe(kind) {
                    let delay = Duration::from_secs(p.initial_delay() as u64);
                    c.probes[kind.index()].next = Some(now + delay);
                }
            }
        }
        // Init containers too: the contract's line is "started container NAME (attempt N)".
        self.event(format!(
            "started container {} (attempt {attempt})",
            spec.name
        ));
        let post_start = spec.lifecycle.as_ref().and_then(|l| l.post_start.clone());
        if let Some(handler) = post_start {
            let grace = self.grace_for(None);
            let r = probe::run_handler(
                &self.kl.rt,
                &id,
                &spec,
                &handler,
                &target,
                Duration::from_secs(grace as u64),
            )
            .await;
            if let Err(e) = r {
                self.event(format!("postStart hook of {} failed: {e}", spec.name));
                self.kill(init, i, "FailedPostStartHook", None).await;
            }
        }
    }

    fn grace_for(&self, probe_grace: Option<i64>) -> i64 {
        probe_grace
            .or(self.pod.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE)
            .max(0)
    }

    /// Stops container `i` the way kubelet's killContainer does (preStop, then StopContainer
    /// with what is left of the grace period) and records its exit.
    async fn kill(&mut self, init: bool, i: usize, reason: &str, probe_grace: Option<i64>) {
        let grace = self.grace_for(probe_grace);
        let (id, spec) = {
            let c = self.ctr(init, i);
            (c.id.clone(), c.spec.clone())
        };
        let Some(id) = id else { return };
        self.event(format!("killing container {}: {reason}", spec.name));
        self.ctr(init, i).killing = Some(reason.to_string());
        let target = self
            .sandbox
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default();
        let pre_stop = spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
        kill_container(
            &self.kl,
            &self.key,
            &id,
            &spec,
            pre_stop.as_ref(),
            &target,
            grace,
        )
        .await;
        self.refresh_containers().await;
    }

    fn schedule_probes(&mut self) {
        let now = Instant::now();
        let target = match &self.sandbox {
            Some(sb) => sb.target.clone(),
            None => return,
        };
        for init in [true, false] {
            let n = self.count(init);
            for index in 0..n {
                for kind in [
                    ProbeKind::Startup,
                    ProbeKind::Liveness,
                    ProbeKind::Readiness,
                ] {
                    // Init containers have no probes kubelet runs (sidecars aside).
                    if init {
                        continue;
                    }
                    let c = &mut self.containers[index];
                    if !c.running || c.killing.is_some() {
                        continue;
                    }
                    let gated = match kind {
                        ProbeKind::Startup => c.started,
                        _ => !c.started,
                    };
                    let Some(p) = c.probe(kind).cloned() else {
                        continue;
                    };
                    let Some(id) = c.id.clone() else { continue };
                    let ps = &mut c.probes[kind.index()];
                    if gated || ps.in_flight || ps.next.is_none_or(|t| now < t) {
                        continue;
                    }
                    ps.in_flight = true;
                    ps.next = Some(now + Duration::from_secs(p.period() as u64));
                    let rt = self.kl.rt.clone();
                    let spec = c.spec.clone();
                    let tx = self.probe_tx.clone();
                    let target = target.clone();
                    tokio::spawn(async move {
                        let result = probe::run_probe(&rt, &id, &spec, &p, &target).await;
                        let _ = tx.send(ProbeDone {
                            init,
                            index,
                            kind,
                            container_id: id,
                            result,
                        });
                    });
                }
            }
        }
    }

    async fn on_probe(&mut self, done: ProbeDone) {
        let c = self.ctr(done.init, done.index);
        c.probes[done.kind.index()].in_flight = false;
        if c.id.as_deref() != Some(done.container_id.as_str()) || !c.running {
            return;
        }
        let Some(p) = c.probe(done.kind).cloned() else {
            return;
        };
        let name = c.spec.name.clone();
        let ps = &mut c.probes[done.kind.index()];
        match &done.result {
            Ok(()) => {
                ps.failures = 0;
                ps.successes += 1;
                if ps.successes >= p.success_threshold() {
                    match done.kind {
                        ProbeKind::Startup => c.started = true,
                        ProbeKind::Readiness => c.ready = true,
                        ProbeKind::Liveness => {}
                    }
                }
            }
            Err(msg) => {
                ps.successes = 0;
                ps.failures += 1;
                let failures = ps.failures;
                if done.kind == ProbeKind::Readiness && failures >= p.failure_threshold() {
                    c.ready = false;
                }
                let msg = msg.clone();
                self.event(format!(
                    "{} probe of {name} failed: {msg}",
                    done.kind.name()
                ));
                if done.kind != ProbeKind::Readiness && failures >= p.failure_threshold() {
                    let reason = format!("{} probe failed", done.kind.name());
                    self.kill(
                        done.init,
                        done.index,
                        &reason,
                        p.termination_grace_period_seconds,
                    )
                    .await;
                }
            }
        }
        self.publish();
    }

    // ---- status --------------------------------------------------------------------------------

    fn container_status(&self, c: &Ctr) -> ContainerStatus {
        let container_id = c.id.as_ref().map(|id| self.container_id_text(id));
        // A completed init container counts as ready, as kubelet reports it.
        let ready = if c.init {
            c.succeeded()
        } else {
            c.running && c.started && (c.ready || c.spec.readiness_probe.is_none())
        };
        ContainerStatus {
            name: c.spec.name.clone(),
            image: c.image.clone(),
            image_id: c.image_id.clone(),
            container_id,
            ready,
            started: Some(c.running && c.started),
            restart_count: c.attempts.saturating_sub(1),
            state: c.state.clone(),
            last_state: c.last_state.clone(),
        }
    }

    /// kubelet's getPhase.
    fn phase(&self) -> &'static str {
        let policy = restart_policy(&self.pod);
        if !self.init.iter().all(|c| c.succeeded()) {
            let init_failed = self.init.iter().any(|c| {
                !c.running
                    && c.state
                        .terminated
                        .as_ref()
                        .is_some_and(|t| t.exit_code != 0)
            });
            if init_failed && policy == RestartPolicy::Never {
                return "Failed";
            }
            return "Pending";
        }
        let (mut running, mut waiting, mut stopped, mut succeeded) = (0, 0, 0, 0);
        for c in &self.containers {
            if c.running {
                running += 1;
            } else if let Some(t) = &c.state.terminated {
                stopped += 1;
                if t.exit_code == 0 {
                    succeeded += 1;
                }
            } else if c.last_state.terminated.is_some() {
                stopped += 1;
            } else {
                waiting += 1;
            }
        }
        if waiting > 0 {
            "Pending"
        } else if running > 0 {
            "Running"
        } else if stopped > 0 {
            match policy {
                RestartPolicy::Always => "Running",
                _ if stopped == succeeded => "Succeeded",
                RestartPolicy::Never => "Failed",
                RestartPolicy::OnFailure => "Running",
            }
        } else {
            "Pending"
        }
    }

    fn condition(
        &mut self,
        type_: &'static str,
        ok: bool,
        reason: Option<String>,
        message: Option<String>,
    ) -> PodCondition {
        let now = rfc3339(SystemTime::now());
        let entry = self.conditions.entry(type_).or_insert((ok, now.clone()));
        if entry.0 != ok {
            *entry = (ok, now);
        }
        PodCondition {
            type_: type_.to_string(),
            status: if ok { "True" } else { "False" }.into(),
            last_probe_time: None,
            last_transition_time: Some(entry.1.clone()),
            reason: if ok { None } else { reason },
            message: if ok { None } else { message },
        }
    }

    fn build_status(&mut self) -> PodStatus {
        let phase = self.phase();
        let init_statuses: Vec<ContainerStatus> =
            self.init.iter().map(|c| self.container_status(c)).collect();
        let statuses: Vec<ContainerStatus> = self
            .containers
            .iter()
            .map(|c| self.container_status(c))
            .collect();
        let pending_init: Vec<String> = self
            .init
            .iter()
            .filter(|c| !c.succeeded())
            .map(|c| c.spec.name.clone())
            .collect();
        let unready: Vec<String> = statuses
            .iter()
            .filter(|s| !s.ready)
            .map(|s| s.name.clone())
            .collect();
        let terminal = phase == "Succeeded" || phase == "Failed";
        let (ready_reason, ready_msg) = if terminal {
            (Some("PodCompleted".to_string()), None)
        } else {
            (
                Some("ContainersNotReady".to_string()),
                Some(format!(
                    "containers with unready status: [{}]",
                    unready.join(" ")
                )),
            )
        };
        let conditions = vec![
            self.condition(
                "Initialized",
                pending_init.is_empty(),
                Some("ContainersNotInitialized".into()),
                Some(format!(
                    "containers with incomplete status: [{}]",
                    pending_init.join(" ")
                )),
            ),
            self.condition(
                "Ready",
                unready.is_empty() && !terminal,
                ready_reason.clone(),
                ready_msg.clone(),
            ),
            self.condition(
                "ContainersReady",
                unready.is_empty() && !terminal,
                ready_reason,
                ready_msg,
            ),
            self.condition("PodScheduled", true, None, None),
        ];
        let (pod_ip, pod_ips) = match &self.sandbox {
            Some(sb) if !sb.info.pod_ip.is_empty() => (
                Some(sb.info.pod_ip.clone()),
                sb.info
                    .pod_ips
                    .iter()
                    .map(|ip| PodIp { ip: ip.clone() })
                    .collect(),
            ),
            _ => match &self.written {
                // A terminal pod keeps showing the IP it had, as kubelet's status does.
                Some(w) if terminal => (w.pod_ip.clone(), w.pod_ips.clone()),
                _ => (None, Vec::new()),
            },
        };
        let host_ip = Some(self.kl.host_ip.clone()).filter(|h| !h.is_empty());
        PodStatus {
            phase: phase.to_string(),
            conditions,
            message: None,
            reason: None,
            host_ips: host_ip.iter().map(|ip| PodIp { ip: ip.clone() }).collect(),
            host_ip,
            pod_ip,
            pod_ips,
            start_time: Some(self.start_time.clone()),
            init_container_statuses: init_statuses,
            container_statuses: statuses,
            qos_class: None,
        }
    }

    /// Writes status.json when the status changed.
    fn publish(&mut self) {
        let status = self.build_status();
        if self.written.as_ref() == Some(&status) {
            return;
        }
        let ready = status
            .conditions
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready && !self.was_ready {
            self.event("pod ready");
        }
        self.was_ready = ready;
        if let Some(r) = &self.record {
            if let Err(e) = r.write_status(&status) {
                self.event(format!("{e:#}"));
            }
        }
        self.written = Some(status);
    }

    fn write_runtime(&self) {
        if let Some(r) = &self.record {
            if let Err(e) = r.write_runtime(&self.runtime_info) {
                self.event(format!("{e:#}"));
            }
        }
    }

    fn terminal(&self) -> Option<Outcome> {
        if self.sandbox.is_none()
            && self
                .init
                .iter()
                .chain(&self.containers)
                .all(|c| c.attempts == 0)
        {
            return None;
        }
        match self.phase() {
            "Succeeded" => Some(Outcome::Succeeded),
            "Failed" => Some(Outcome::Failed),
            _ => None,
        }
    }

    /// A terminal pod: its sandbox and volumes go, the record (status) stays.
    async fn finish(&mut self, outcome: Outcome) {
        if let Some(sb) = self.sandbox.take() {
            if let Err(e) = stop_and_remove_sandbox(&self.kl, &sb.id).await {
                self.event(format!("{e:#}"));
            }
        }
        self.teardown_volumes();
        self.publish();
        self.event(match outcome {
            Outcome::Succeeded => "pod succeeded",
            _ => "pod failed",
        });
    }

    fn teardown_volumes(&mut self) {
        if let Some(dir) = self.record_dir() {
            if let Err(e) = volumes::teardown(&dir) {
                self.event(format!("cannot tear down the volumes: {e:#}"));
            }
        }
        self.volumes = None;
    }

    /// Graceful deletion: preStop hooks and StopContainer within the grace period, then the
    /// sandbox, the volumes and the record.
    async fn delete(mut self, grace: Option<i64>) -> Outcome {
        let grace = grace
            .or(self.pod.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE)
            .max(0);
        self.runtime_info.deletion_timestamp = Some(rfc3339(SystemTime::now()));
        self.runtime_info.deletion_grace_period_seconds = Some(grace);
        self.write_runtime();
        self.event(format!("deleting pod (grace period {grace}s)"));
        let target = self
            .sandbox
            .as_ref()
            .map(|s| s.target.clone())
            .unwrap_or_default();
        let mut kills = Vec::new();
        for c in self.init.iter().chain(self.containers.iter()) {
            if let (true, Some(id)) = (c.running, c.id.clone()) {
                let pre_stop = c.spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone());
                let spec = c.spec.clone();
                let kl = self.kl.clone();
                let key = self.key.clone();
                let target = target.clone();
                kills.push(async move {
                    kill_container(&kl, &key, &id, &spec, pre_stop.as_ref(), &target, grace).await
                });
            }
        }
        futures_util::future::join_all(kills).await;
        let mut ok = true;
        if let Some(sb) = self.sandbox.take() {
            if let Err(e) = stop_and_remove_sandbox(&self.kl, &sb.id).await {
                self.event(format!("{e:#}"));
                ok = false;
            }
        }
        self.teardown_volumes();
        if ok {
            if let Some(r) = self.record.take() {
                if let Err(e) = r.remove() {
                    self.event(format!("{e:#}"));
                }
            }
            self.event("pod deleted");
        } else {
            self.event("pod not fully deleted: `rcrictl delete` retries");
        }
        Outcome::Deleted
    }
}

/// kubelet's killContainer: the preStop hook within the grace period, then StopContainer with
/// what is left of it (never under 2 s).
pub async fn kill_container(
    kl: &Kubelet,
    key: &str,
    id: &str,
    spec: &Container,
    pre_stop: Option<&LifecycleHandler>,
    target: &Target,
    grace: i64,
) {
    let started = Instant::now();
    if let Some(handler) = pre_stop {
        kl.progress
            .event(key, format!("running preStop hook of {}", spec.name));
        let budget = Duration::from_secs(grace.max(0) as u64);
        let hook = probe::run_handler(&kl.rt, id, spec, handler, target, budget);
        match tokio::time::timeout(budget, hook).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => kl
                .progress
                .event(key, format!("preStop hook of {} failed: {e}", spec.name)),
            Err(_) => kl.progress.event(
                key,
                format!(
                    "preStop hook of {} did not finish within {grace}s",
                    spec.name
                ),
            ),
        }
    }
    let left = (grace - started.elapsed().as_secs() as i64).max(MIN_GRACE);
    let mut rt = kl.rt.clone();
    let call = rt.stop_container(cri::StopContainerRequest {
        container_id: id.to_string(),
        timeout: left,
    });
    match tokio::time::timeout(Duration::from_secs(left as u64 + 30), call).await {
        Ok(Ok(_)) => {}
        Ok(Err(s)) if s.code() == tonic::Code::NotFound => {}
        Ok(Err(s)) => kl.progress.event(
            key,
            format!("cannot stop container {}: {}", spec.name, s.message()),
        ),
        Err(_) => kl
            .progress
            .event(key, format!("StopContainer of {} timed out", spec.name)),
    }
}

/// StopPodSandbox then RemovePodSandbox (which removes its containers); NotFound is success.
pub async fn stop_and_remove_sandbox(kl: &Kubelet, id: &str) -> Result<()> {
    let mut rt = kl.rt.clone();
    match rt
        .stop_pod_sandbox(cri::StopPodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
    {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::NotFound => return Ok(()),
        Err(s) => {
            return Err(status_err(s)).with_context(|| format!("StopPodSandbox {}", short(id)))
        }
    }
    match rt
        .remove_pod_sandbox(cri::RemovePodSandboxRequest {
            pod_sandbox_id: id.to_string(),
        })
        .await
    {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::NotFound => Ok(()),
        Err(s) => Err(status_err(s)).with_context(|| format!("RemovePodSandbox {}", short(id))),
    }
}

/// Deletes what a pod whose owner is gone has in the runtime: its sandboxes (the recorded one
/// and any labelled with its uid), each running container stopped the way kubelet does (preStop
/// from the container's annotation, else from the recorded manifest). `grace` None: the pod's.
pub async fn remove_pod_from_runtime(
    kl: &Kubelet,
    record: &Record,
    grace: Option<i64>,
) -> Result<()> {
    let key = pod_key(&record.pod);
    let mut rt = kl.rt.clone();
    let mut ids: Vec<String> = Vec::new();
    if !record.runtime.sandbox_id.is_empty() {
        ids.push(record.runtime.sandbox_id.clone());
    }
    if !record.pod.metadata.uid.is_empty() {
        let mut labels = std::collections::HashMap::new();
        labels.insert(
            "io.kubernetes.pod.uid".to_string(),
            record.pod.metadata.uid.clone(),
        );
        let listed = rt
            .list_pod_sandbox(cri::ListPodSandboxRequest {
                filter: Some(cri::PodSandboxFilter {
                    label_selector: labels,
                    ..Default::default()
                }),
            })
            .await
            .map_err(status_err)
            .context("ListPodSandbox")?;
        for sb in listed.into_inner().items {
            if !ids.contains(&sb.id) {
                ids.push(sb.id);
            }
        }
    }
    for sandbox_id in ids {
        let status = rt
            .pod_sandbox_status(cri::PodSandboxStatusRequest {
                pod_sandbox_id: sandbox_id.clone(),
                verbose: true,
            })
            .await;
        let st = match status {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::NotFound => continue,
            Err(s) => return Err(status_err(s)).context("PodSandboxStatus"),
        };
        let ready = st
            .status
            .as_ref()
            .is_some_and(|s| s.state == cri::PodSandboxState::SandboxReady as i32);
        let annotations = st
            .status
            .as_ref()
            .map(|s| s.annotations.clone())
            .unwrap_or_default();
        let target = Target {
            netns: if record.pod.spec.host_network {
                None
            } else {
                probe::netns_from_info(&st.info)
            },
            pod_ip: st
                .status
                .as_ref()
                .and_then(|s| s.network.as_ref())
                .map(|n| n.ip.clone())
                .unwrap_or_default(),
        };
        let containers = rt
            .list_containers(cri::ListContainersRequest {
                filter: Some(cri::ContainerFilter {
                    pod_sandbox_id: sandbox_id.clone(),
                    state: Some(cri::ContainerStateValue {
                        state: cri::ContainerState::ContainerRunning as i32,
                    }),
                    ..Default::default()
                }),
            })
            .await
            .map_err(status_err)
            .context("ListContainers")?
            .into_inner()
            .containers;
        let pod_grace = grace
            .or_else(|| {
                annotations
                    .get("io.kubernetes.pod.terminationGracePeriod")
                    .and_then(|g| g.parse().ok())
            })
            .or(record.pod.spec.termination_grace_period_seconds)
            .unwrap_or(DEFAULT_GRACE);
        let mut kills = Vec::new();
        if ready {
            for c in containers {
                let name = c
                    .labels
                    .get("io.kubernetes.container.name")
                    .cloned()
                    .or_else(|| c.metadata.as_ref().map(|m| m.name.clone()))
                    .unwrap_or_default();
                let spec = record
                    .pod
                    .spec
                    .containers
                    .iter()
                    .chain(record.pod.spec.init_containers.iter())
                    .find(|s| s.name == name)
                    .cloned()
                    .unwrap_or_else(|| Container {
                        name: name.clone(),
                        ..Default::default()
                    });
                let pre_stop: Option<LifecycleHandler> = c
                    .annotations
                    .get("io.kubernetes.container.preStopHandler")
                    .and_then(|j| serde_json::from_str(j).ok())
                    .or_else(|| spec.lifecycle.as_ref().and_then(|l| l.pre_stop.clone()));
                let target = target.clone();
                let key = key.clone();
                kills.push(async move {
                    kill_container(
                        kl,
                        &key,
                        &c.id,
                        &spec,
                        pre_stop.as_ref(),
                        &target,
                        pod_grace,
                    )
                    .await
                });
            }
        }
        futures_util::future::join_all(kills).await;
        stop_and_remove_sandbox(kl, &sandbox_id).await?;
    }
    volumes::teardown(&record.dir)
        .with_context(|| format!("cannot tear down the volumes of {key}"))?;
    Ok(())
}

/// `rcrictl delete` of a pod no `rcrictl run` owns: takes the record's lock (so no run starts
/// it meanwhile), removes the pod from the runtime, then the record.
pub async fn delete_unowned(kl: &Kubelet, dir: &Path, grace: Option<i64>) -> Result<bool> {
    let Some(_lock) = records::OwnerLock::try_acquire(dir)? else {
        return Ok(false);
    };
    let Some(record) = records::read_record(dir)? else {
        records::remove_dir(dir)?;
        return Ok(true);
    };
    let mut info = record.runtime.clone();
    if info.deletion_timestamp.is_none() {
        info.deletion_timestamp = Some(rfc3339(SystemTime::now()));
        info.deletion_grace_period_seconds =
            grace.or(record.pod.spec.termination_grace_period_seconds);
        let _ = records::write_atomic(
            &dir.join(records::RUNTIME_FILE),
            &serde_json::to_vec_pretty(&info)?,
        );
    }
    remove_pod_from_runtime(kl, &record, grace).await?;
    records::remove_dir(dir)?;
    Ok(true)
}

/// A pod as read from a manifest, made ready to run: API defaults, this node's name, and every
/// check that can fail without side effects (validation, the sandbox config).
pub fn prepare(mut pod: Pod, node_name: &str, source: &str) -> Result<Pod> {
    convert::apply_defaults(&mut pod);
    if pod.spec.node_name.as_deref().unwrap_or("").is_empty() {
        pod.spec.node_name = Some(node_name.to_string());
    }
    let what = format!("{source}: pod {}", pod_key(&pod));
    convert::validate(&pod).with_context(|| what.clone())?;
    convert::sandbox_config(&pod, 0, Path::new("/nonexistent")).with_context(|| what.clone())?;
    Ok(pod)
}

/// Creates the record of a prepared pod and starts its worker.
pub fn start(
    kl: &Arc<Kubelet>,
    records: &records::Records,
    pod: Pod,
    sources: Arc<ConfigSources>,
) -> Result<PodHandle> {
    let (record, previous) = records.create(&pod)?;
    Ok(spawn(kl.clone(), pod, sources, record, previous))
}
