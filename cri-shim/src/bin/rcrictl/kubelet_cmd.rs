//! `rcrictl run`, `get` and `delete`: the command-line side of the home-grown kubelet
//! (`rcri::kubelet`). Parsing arguments and printing; the work is in the library.
use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{bail, Context, Result};
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use rcri::kubelet::backoff::BackoffConfig;
use rcri::kubelet::manifest::{self, Object};
use rcri::kubelet::progress::Progress;
use rcri::kubelet::records::{self, Records};
use rcri::kubelet::sources::ConfigSources;
use rcri::kubelet::staticpods::StaticPods;
use rcri::kubelet::status::{self, PodView};
use rcri::kubelet::worker::{self, Kubelet, Outcome};
use tokio::signal::unix::{signal, SignalKind};

/// Long enough for a pull or a StopContainer with a long grace period; the calls that must be
/// short (probes) carry their own timeouts.
const CALL_TIMEOUT: Duration = Duration::from_secs(1800);

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Manifests (YAML or JSON) with Pods, and the ConfigMaps and Secrets they use.
    files: Vec<PathBuf>,
    /// Static pods: every *.yaml/*.yml/*.json file here is run, re-created when it changes and
    /// deleted when it goes.
    #[arg(long)]
    pod_manifest_dir: Option<PathBuf>,
    /// ConfigMaps and Secrets: manifests, or configmaps/<name>/<key> and secrets/<name>/<key>.
    #[arg(long)]
    config_dir: Option<PathBuf>,
    /// Where pod records (status, volumes, logs) live.
    #[arg(long, default_value = "/var/lib/rcrictl")]
    root_dir: PathBuf,
    /// The node name pods see (spec.nodeName); default: the host name.
    #[arg(long)]
    node_name: Option<String>,
    /// First restart back-off of a failed container.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    restart_backoff: Duration,
    /// Longest restart back-off.
    #[arg(long, default_value = "5m", value_parser = humantime::parse_duration)]
    max_backoff: Duration,
    /// A container that ran this long before exiting restarts without back-off.
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    backoff_reset: Duration,
    /// How often --pod-manifest-dir is looked at.
    #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
    file_check_frequency: Duration,
    /// The cluster's DNS domain: a pod with a subdomain finds its FQDN
    /// `<hostname>.<subdomain>.<namespace>.svc.<domain>` in its /etc/hosts.
    #[arg(long, default_value = rcri::kubelet::etchosts::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
}

#[derive(clap::Args, Debug)]
pub struct GetArgs {
    /// pod, pods or po.
    resource: String,
    name: Option<String>,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Pods of every namespace.
    #[arg(short = 'A', long)]
    all_namespaces: bool,
    /// table, wide, yaml or json.
    #[arg(short = 'o', long, default_value = "table")]
    output: String,
    #[arg(long, default_value = "/var/lib/rcrictl")]
    root_dir: PathBuf,
}

#[derive(clap::Args, Debug)]
pub struct DeleteArgs {
    /// pod or po.
    resource: String,
    name: String,
    #[arg(short = 'n', long, default_value = "default")]
    namespace: String,
    /// Seconds the containers get to stop (default: the pod's terminationGracePeriodSeconds).
    #[arg(long)]
    grace_period: Option<i64>,
    #[arg(long, default_value = "/var/lib/rcrictl")]
    root_dir: PathBuf,
    /// How long to wait for the pod to be gone.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

fn check_resource(resource: &str, plural_ok: bool) -> Result<()> {
    match resource {
        "pod" | "po" => Ok(()),
        "pods" if plural_ok => Ok(()),
        other => bail!("the server doesn't have a resource type \"{other}\" (only pods)"),
    }
}

fn not_found(name: &str) -> i32 {
    eprintln!("Error from server (NotFound): pods \"{name}\" not found");
    1
}

/// This host's primary IPv4 address (status.hostIP): the source address the kernel picks for
/// the default route. Connecting a UDP socket sends nothing.
fn host_ip() -> String {
    let probe = || -> std::io::Result<std::net::IpAddr> {
        let s = std::net::UdpSocket::bind("0.0.0.0:0")?;
        s.connect("192.0.2.1:9")?;
        Ok(s.local_addr()?.ip())
    };
    match probe() {
        Ok(ip) if !ip.is_unspecified() => ip.to_string(),
        _ => String::new(),
    }
}

fn host_name() -> String {
    nix::unistd::gethostname()
        .ok()
        .map(|h| h.to_string_lossy().to_lowercase())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

async fn connect_kubelet(
    endpoint: &str,
    image_endpoint: Option<&str>,
    progress: Arc<Progress>,
    backoff: BackoffConfig,
    node_name: String,
) -> Result<Kubelet> {
    let rt_ch = super::connect(endpoint, CALL_TIMEOUT).await?;
    let img_ch = match image_endpoint {
        Some(e) if e != endpoint => super::connect(e, CALL_TIMEOUT).await?,
        _ => rt_ch.clone(),
    };
    let mut rt = RuntimeServiceClient::new(rt_ch);
    let version = tokio::time::timeout(
        Duration::from_secs(30),
        rt.version(cri::VersionRequest {
            version: "v1".into(),
        }),
    )
    .await
    .context("the runtime did not answer Version")?
    .map_err(super::status_err)
    .context("Version")?
    .into_inner();
    Ok(Kubelet {
        rt,
        img: ImageServiceClient::new(img_ch),
        progress,
        backoff,
        node_name,
        host_ip: host_ip(),
        runtime_name: version.runtime_name.to_lowercase(),
        // Only `run` starts containers, and sets its --cluster-domain over this.
        cluster_domain: rcri::kubelet::etchosts::DEFAULT_CLUSTER_DOMAIN.into(),
    })
}

pub async fn run(args: RunArgs, endpoint: &str, image_endpoint: Option<&str>) -> Result<i32> {
    if args.files.is_empty() && args.pod_manifest_dir.is_none() {
        bail!("nothing to run: give manifest files or --pod-manifest-dir");
    }
    if let Some(dir) = &args.pod_manifest_dir {
        if !dir.is_dir() {
            bail!("--pod-manifest-dir {}: not a directory", dir.display());
        }
    }
    let node_name = args.node_name.clone().unwrap_or_else(host_name);
    // Everything that can be wrong with the input is found before anything is created.
    let mut objects = Vec::new();
    let mut pods = Vec::new();
    for file in &args.files {
        let (objs, warnings) = manifest::load_file(file)?;
        for w in warnings {
            eprintln!("warning: {w}");
        }
        for o in &objs {
            if let Object::Pod(p) = o {
                pods.push(worker::prepare(
                    (**p).clone(),
                    &node_name,
                    &file.display().to_string(),
                )?);
            }
        }
        objects.extend(objs);
    }
    let mut seen = BTreeSet::new();
    for p in &pods {
        if !seen.insert((p.metadata.namespace.clone(), p.metadata.name.clone())) {
            bail!("pod {} is given twice", worker::pod_key(p));
        }
    }
    let sources = Arc::new(ConfigSources::load(args.config_dir.as_deref(), &objects)?);
    let records = Records::new(&args.root_dir);
    for p in &pods {
        let dir = records.pod_dir(&p.metadata.namespace, &p.metadata.name);
        if dir.is_dir() && records::owner_alive(&dir)? {
            bail!(
                "pod {} is already run by another rcrictl (its record {} is locked)",
                worker::pod_key(p),
                dir.display()
            );
        }
    }

    let progress = Progress::new();
    let backoff = BackoffConfig {
        base: args.restart_backoff,
        max: args.max_backoff,
        reset: args.backoff_reset,
    };
    let mut kl = connect_kubelet(
        endpoint,
        image_endpoint,
        progress.clone(),
        backoff,
        node_name,
    )
    .await?;
    kl.cluster_domain.clone_from(&args.cluster_domain);
    let kl = Arc::new(kl);
    let ticker = progress.spawn_ticker();
    let mut sigint = signal(SignalKind::interrupt()).context("cannot catch SIGINT")?;
    let mut sigterm = signal(SignalKind::terminate()).context("cannot catch SIGTERM")?;
    // A closed terminal must not leave pods running without an owner.
    let mut sighup = signal(SignalKind::hangup()).context("cannot catch SIGHUP")?;

    let reserved = pods
        .iter()
        .map(|p| (p.metadata.namespace.clone(), p.metadata.name.clone()))
        .collect();
    let mut handles = Vec::new();
    let mut start_error = None;
    for p in pods {
        match worker::start(&kl, &records, p, sources.clone()) {
            Ok(h) => handles.push(h),
            Err(e) => {
                start_error = Some(e);
                break;
            }
        }
    }
    let mut statics = args
        .pod_manifest_dir
        .as_deref()
        .map(|d| StaticPods::new(d, args.config_dir.as_deref(), reserved));
    let mut interrupted = start_error.is_some();
    let mut outcomes = Vec::new();
    let mut next_scan = Instant::now();
    while !interrupted {
        if let Some(s) = &mut statics {
            if Instant::now() >= next_scan {
                s.sync(&kl, &records).await;
                next_scan = Instant::now() + args.file_check_frequency;
            }
        }
        // Foreground pods that finished are collected; without static pods, the run ends
        // with the last of them.
        let mut i = 0;
        while i < handles.len() {
            if handles[i].is_finished() {
                outcomes.push(handles.remove(i).wait().await);
            } else {
                i += 1;
            }
        }
        if statics.is_none() && handles.is_empty() {
            break;
        }
        tokio::select! {
            _ = sigint.recv() => interrupted = true,
            _ = sigterm.recv() => interrupted = true,
            _ = sighup.recv() => interrupted = true,
            _ = tokio::time::sleep(Duration::from_millis(200)) => {}
        }
    }
    if interrupted {
        for h in &handles {
            h.delete(None);
        }
        if let Some(s) = &mut statics {
            s.shutdown(&kl, &records).await;
        }
        for h in handles {
            h.wait().await;
        }
    }
    progress.finish();
    if let Some(t) = ticker {
        t.abort();
    }
    if let Some(e) = start_error {
        return Err(e);
    }
    if interrupted {
        return Ok(0);
    }
    let ok = outcomes
        .iter()
        .all(|o| matches!(o, Outcome::Succeeded | Outcome::Deleted));
    Ok(if ok { 0 } else { 1 })
}

pub fn get(args: GetArgs) -> Result<i32> {
    check_resource(&args.resource, true)?;
    let records = Records::new(&args.root_dir);
    let mut list = records.list()?;
    if let Some(name) = &args.name {
        list.retain(|r| &r.pod.metadata.name == name);
    }
    if !args.all_namespaces {
        list.retain(|r| r.pod.metadata.namespace == args.namespace);
    }
    if list.is_empty() {
        if let Some(name) = &args.name {
            return Ok(not_found(name));
        }
    }
    let views: Vec<PodView> = list
        .iter()
        .map(|r| PodView {
            pod: &r.pod,
            status: &r.status,
            runtime: &r.runtime,
        })
        .collect();
    let out = match args.output.as_str() {
        "table" | "wide" => {
            if views.is_empty() {
                if args.all_namespaces {
                    eprintln!("No resources found");
                } else {
                    eprintln!("No resources found in {} namespace.", args.namespace);
                }
                return Ok(0);
            }
            status::table(
                &views,
                args.output == "wide",
                args.all_namespaces,
                SystemTime::now(),
            )
        }
        "json" | "yaml" => {
            let value = if args.name.is_some() && views.len() == 1 {
                status::pod_object(&views[0])?
            } else {
                let items = views
                    .iter()
                    .map(status::pod_object)
                    .collect::<Result<Vec<_>>>()?;
                status::list_object(items)
            };
            if args.output == "json" {
                status::to_json(&value)?
            } else {
                status::to_yaml(&value)?
            }
        }
        other => bail!("unknown output format {other:?}: table, wide, yaml or json"),
    };
    print!("{out}");
    Ok(0)
}

pub async fn delete(args: DeleteArgs, endpoint: &str) -> Result<i32> {
    check_resource(&args.resource, false)?;
    let records = Records::new(&args.root_dir);
    let dir = records.pod_dir(&args.namespace, &args.name);
    if records::read_record(&dir)?.is_none() {
        return Ok(not_found(&args.name));
    }
    let deadline = Instant::now() + args.timeout;
    // Without a live owner the deletion is ours: through the CRI, with the record's preStop
    // hooks and grace period. Returns whether it was done (false: an owner appeared meanwhile).
    let (dir_ref, name, grace) = (&dir, &args.name, args.grace_period);
    let delete_ourselves = |left: Duration| async move {
        let kl = connect_kubelet(
            endpoint,
            None,
            Progress::with_tty(false),
            BackoffConfig::default(),
            host_name(),
        )
        .await?;
        tokio::time::timeout(left, worker::delete_unowned(&kl, dir_ref, grace))
            .await
            .with_context(|| format!("timed out deleting pod {name:?}"))?
    };
    // When an owner appears meanwhile, delete_ourselves says false: then ask it instead.
    if !records::owner_alive(&dir)? && delete_ourselves(args.timeout).await? {
        println!("pod \"{}\" deleted", args.name);
        return Ok(0);
    }
    if let Err(e) = records::request_delete(&dir, args.grace_period) {
        // Gone meanwhile: its owner finished deleting it (or it ended on its own).
        if dir.exists() {
            return Err(e);
        }
    }
    while dir.exists() {
        if Instant::now() >= deadline {
            bail!(
                "timed out waiting for pod {:?} to be deleted (its owner was asked: {})",
                args.name,
                dir.join(records::DELETE_FILE).display()
            );
        }
        // The owner may have died after the request: then it is ours to do.
        if !records::owner_alive(&dir)? && records::read_record(&dir).ok().flatten().is_some() {
            delete_ourselves(deadline.saturating_duration_since(Instant::now())).await?;
            continue;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!("pod \"{}\" deleted", args.name);
    Ok(0)
}
