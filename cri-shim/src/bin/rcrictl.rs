//! rcrictl: a crictl-like client for any CRI v1 runtime on a unix socket (rcri by default).
//!
//! It takes crictl's pod and container config files (JSON or YAML, CRI field names in
//! snake_case or camelCase, fields left out meaning their defaults) and prints crictl's shapes:
//! tables for pods/ps/images, JSON for inspect/inspectp/info.
use std::collections::{BTreeMap, HashMap};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use hyper_util::rt::TokioIo;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use serde_json::{json, Map, Value};
use tonic::transport::{Channel, Endpoint, Uri};

#[path = "rcrictl/streaming.rs"]
mod streaming;

#[path = "rcrictl/kubelet_cmd.rs"]
mod kubelet_cmd;

const DEFAULT_ENDPOINT: &str = "unix:///run/rcri/rcri.sock";

#[derive(Parser, Debug)]
#[command(
    name = "rcrictl",
    version,
    about = "a crictl-like client for CRI runtimes"
)]
struct Cli {
    /// The runtime's CRI socket (unix:///path or a plain path); default
    /// $CONTAINER_RUNTIME_ENDPOINT, else unix:///run/rcri/rcri.sock.
    #[arg(short = 'r', long = "runtime-endpoint", global = true)]
    runtime_endpoint: Option<String>,
    /// The image service socket; default $IMAGE_SERVICE_ENDPOINT, else the runtime endpoint.
    /// (Before the command, as in crictl: `exec -i` is --interactive.)
    #[arg(short = 'i', long = "image-endpoint")]
    image_endpoint: Option<String>,
    /// Seconds to wait for each call (and for connecting). Given before the command:
    /// `stop` and `exec` have a --timeout of their own.
    #[arg(
        short = 't',
        long = "timeout",
        id = "call_timeout",
        default_value_t = 60
    )]
    timeout: u64,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell).
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Show the runtime's name and versions.
    Version,
    /// Show the runtime's status conditions and verbose info as JSON.
    Info,
    /// Run a pod sandbox from a pod config file; prints its id.
    Runp {
        pod_config: PathBuf,
        /// The runtime handler (RuntimeClass).
        #[arg(long)]
        runtime: Option<String>,
    },
    /// Create a container in a pod; prints its id.
    Create {
        pod_id: String,
        container_config: PathBuf,
        pod_config: PathBuf,
        /// Do not pull the image first when it is missing.
        #[arg(long)]
        no_pull: bool,
    },
    /// Start created containers.
    Start { ids: Vec<String> },
    /// Stop running containers.
    Stop {
        /// Seconds to wait before killing.
        #[arg(short, long, default_value_t = 0)]
        timeout: i64,
        ids: Vec<String>,
    },
    /// Remove containers.
    Rm {
        /// Stop running containers first.
        #[arg(short, long)]
        force: bool,
        ids: Vec<String>,
    },
    /// Stop pod sandboxes.
    Stopp { ids: Vec<String> },
    /// Remove pod sandboxes.
    Rmp {
        /// Stop them first.
        #[arg(short, long)]
        force: bool,
        ids: Vec<String>,
    },
    /// List pod sandboxes.
    Pods {
        #[arg(long)]
        id: Option<String>,
        #[arg(long)]
        name: Option<String>,
        #[arg(long)]
        namespace: Option<String>,
        /// ready or notready
        #[arg(short, long)]
        state: Option<String>,
        /// key=value, repeatable
        #[arg(long)]
        label: Vec<String>,
        #[arg(short, long)]
        quiet: bool,
        /// table or json
        #[arg(short, long, default_value = "table")]
        output: String,
        /// Show the full ids.
        #[arg(long)]
        no_trunc: bool,
    },
    /// List containers (running ones unless -a).
    Ps {
        #[arg(short, long)]
        all: bool,
        #[arg(long)]
        id: Option<String>,
        #[arg(short, long)]
        pod: Option<String>,
        #[arg(long)]
        name: Option<String>,
        /// created, running, exited or unknown
        #[arg(short, long)]
        state: Option<String>,
        #[arg(long)]
        label: Vec<String>,
        #[arg(short, long)]
        quiet: bool,
        #[arg(short, long, default_value = "table")]
        output: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show a container's status (verbose) as JSON.
    Inspect { ids: Vec<String> },
    /// Show a pod sandbox's status (verbose) as JSON.
    Inspectp { ids: Vec<String> },
    /// Run a command in a container; exits with its code. Without -i/-t it runs through
    /// ExecSync, with them it streams (Exec).
    Exec {
        /// Accepted for crictl compatibility: an exec without -i/-t is synchronous.
        #[arg(short, long)]
        sync: bool,
        /// Stream stdin to the command.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// Give the command a terminal (raw mode locally when stdin is one).
        #[arg(short = 't', long)]
        tty: bool,
        /// Streaming protocol.
        #[arg(long, value_enum, default_value = "spdy")]
        transport: streaming::Transport,
        /// With -t and a stdin that is not a terminal: the size to announce (WIDTHxHEIGHT).
        #[arg(long, value_parser = streaming::parse_size)]
        term_size: Option<rcri::streaming::TermSize>,
        /// Seconds before the runtime kills the command (0: none).
        #[arg(long, default_value_t = 0)]
        timeout: i64,
        id: String,
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, required = true)]
        cmd: Vec<String>,
    },
    /// Attach to a running container's stdio.
    Attach {
        /// Stream stdin to the container.
        #[arg(short = 'i', long)]
        interactive: bool,
        /// The container has a terminal (raw mode locally when stdin is one).
        #[arg(short = 't', long)]
        tty: bool,
        /// Streaming protocol.
        #[arg(long, value_enum, default_value = "spdy")]
        transport: streaming::Transport,
        id: String,
    },
    /// Forward a local port (on 127.0.0.1) to a port of a pod, until interrupted.
    PortForward {
        /// Streaming protocol.
        #[arg(long, value_enum, default_value = "spdy")]
        transport: streaming::Transport,
        pod: String,
        /// LOCAL:REMOTE, or REMOTE for the same port locally (LOCAL 0: any free port).
        ports: String,
    },
    /// Print a container's logs (from its CRI log file).
    Logs {
        #[arg(short, long)]
        follow: bool,
        /// Only the last N lines (-1: all).
        #[arg(long, default_value_t = -1)]
        tail: i64,
        /// Show each line's timestamp.
        #[arg(long)]
        timestamps: bool,
        id: String,
    },
    /// Pull an image.
    Pull {
        image: String,
        /// user[:password]
        #[arg(long)]
        creds: Option<String>,
        /// A pod config to pass along with the pull.
        #[arg(long)]
        pod_config: Option<PathBuf>,
    },
    /// List images.
    Images {
        image: Option<String>,
        #[arg(short, long)]
        quiet: bool,
        #[arg(long)]
        digests: bool,
        #[arg(short, long, default_value = "table")]
        output: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Remove images.
    Rmi { images: Vec<String> },
    /// Show the image file system usage as JSON.
    Imagefsinfo,
    /// Show containers' resource usage (ContainerStats / ListContainerStats).
    Stats {
        /// A container id (or prefix); all containers if none.
        id: Option<String>,
        #[arg(short, long)]
        pod: Option<String>,
        #[arg(short, long)]
        label: Vec<String>,
        /// table or json
        #[arg(short, long, default_value = "table")]
        output: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Show pods' resource usage (PodSandboxStats / ListPodSandboxStats).
    Statsp {
        /// A pod id (or prefix); all pods if none.
        id: Option<String>,
        #[arg(short, long)]
        label: Vec<String>,
        /// table or json
        #[arg(short, long, default_value = "table")]
        output: String,
        #[arg(long)]
        no_trunc: bool,
    },
    /// Change running containers' resources (UpdateContainerResources).
    Update {
        /// Memory limit in bytes (suffixes k, m, g accepted).
        #[arg(long)]
        memory: Option<String>,
        #[arg(long = "cpu-share", alias = "cpu-shares")]
        cpu_shares: Option<i64>,
        #[arg(long = "cpu-quota", allow_hyphen_values = true)]
        cpu_quota: Option<i64>,
        #[arg(long = "cpu-period")]
        cpu_period: Option<i64>,
        #[arg(long = "cpuset-cpus")]
        cpuset_cpus: Option<String>,
        #[arg(long = "cpuset-mems")]
        cpuset_mems: Option<String>,
        ids: Vec<String>,
    },
    /// Follow container events (GetContainerEvents), a line each (or JSON with -o json).
    Events {
        #[arg(short, long, default_value = "table")]
        output: String,
    },
    /// Run Kubernetes v1 Pod manifests through the runtime, as kubelet would.
    Run(kubelet_cmd::RunArgs),
    /// Show the pods `rcrictl run` runs (kubectl's table, or -o yaml/json).
    Get(kubelet_cmd::GetArgs),
    /// Delete a pod `rcrictl run` runs, gracefully.
    Delete(kubelet_cmd::DeleteArgs),
}

fn main() {
    // Die quietly on a closed pipe (`rcrictl images | head`), as C tools and crictl do,
    // instead of panicking in println!.
    // SAFETY: resetting a signal disposition before any thread exists.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = Cli::parse();
    if let Cmd::Completion { shell } = cli.cmd {
        std::process::exit(completion(shell));
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("rcrictl: cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            eprintln!("rcrictl: {e:#}");
            std::process::exit(1);
        }
    }
}

fn completion(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory;
    // Into a buffer first: clap_complete panics when its writer fails (a closed pipe).
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "rcrictl", &mut script);
    match std::io::Write::write_all(&mut std::io::stdout(), &script) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("rcrictl: failed to write the completion script: {e}");
            1
        }
    }
}

/// The socket path of `unix:///path` (or a plain path).
fn socket_path(endpoint: &str) -> Result<PathBuf> {
    if let Some(p) = endpoint.strip_prefix("unix://") {
        if p.is_empty() {
            bail!("empty socket path in {endpoint:?}");
        }
        return Ok(PathBuf::from(p));
    }
    if endpoint.contains("://") {
        bail!("unsupported endpoint {endpoint:?}: only unix:// sockets");
    }
    Ok(PathBuf::from(endpoint))
}

async fn connect(endpoint: &str, timeout: Duration) -> Result<Channel> {
    let path = socket_path(endpoint)?;
    // The URI is required by tonic but unused: the connector below dials the socket.
    let ep = Endpoint::try_from("http://[::1]:50051")?
        .connect_timeout(timeout)
        .timeout(timeout);
    let p = path.clone();
    ep.connect_with_connector(tower::service_fn(move |_: Uri| {
        let p = p.clone();
        async move {
            Ok::<_, std::io::Error>(TokioIo::new(tokio::net::UnixStream::connect(p).await?))
        }
    }))
    .await
    .with_context(|| format!("cannot connect to {}", path.display()))
}

struct Clients {
    rt: RuntimeServiceClient<Channel>,
    img: ImageServiceClient<Channel>,
}

async fn run(cli: Cli) -> Result<i32> {
    let timeout = Duration::from_secs(cli.timeout.max(1));
    // ExecSync with a timeout must be allowed to outlast it.
    let call_timeout = match &cli.cmd {
        Cmd::Exec { timeout: t, .. } if *t > 0 => timeout.max(Duration::from_secs(*t as u64 + 10)),
        Cmd::Exec { .. } => Duration::from_secs(24 * 3600),
        Cmd::Events { .. } => Duration::from_secs(365 * 24 * 3600),
        _ => timeout,
    };
    let runtime_endpoint = cli
        .runtime_endpoint
        .clone()
        .or_else(|| std::env::var("CONTAINER_RUNTIME_ENDPOINT").ok())
        .filter(|e| !e.is_empty())
        .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string());
    let image_endpoint = cli
        .image_endpoint
        .clone()
        .or_else(|| std::env::var("IMAGE_SERVICE_ENDPOINT").ok())
        .filter(|e| !e.is_empty());
    // The kubelet commands connect when they need to (`get` never does).
    match cli.cmd {
        Cmd::Run(args) => {
            return kubelet_cmd::run(args, &runtime_endpoint, image_endpoint.as_deref()).await
        }
        Cmd::Get(args) => return kubelet_cmd::get(args),
        Cmd::Delete(args) => return kubelet_cmd::delete(args, &runtime_endpoint).await,
        _ => {}
    }
    let rt_ch = connect(&runtime_endpoint, call_timeout).await?;
    let img_ch = match &image_endpoint {
        Some(e) if e != &runtime_endpoint => connect(e, call_timeout).await?,
        _ => rt_ch.clone(),
    };
    let mut c = Clients {
        rt: RuntimeServiceClient::new(rt_ch),
        img: ImageServiceClient::new(img_ch),
    };
    match cli.cmd {
        // Handled in main, before any connection.
        Cmd::Completion { .. } => {}
        Cmd::Run(_) | Cmd::Get(_) | Cmd::Delete(_) => {}
        Cmd::Version => {
            let v =
                c.rt.version(cri::VersionRequest {
                    version: "v1".into(),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("Version:  {}", v.version);
            println!("RuntimeName:  {}", v.runtime_name);
            println!("RuntimeVersion:  {}", v.runtime_version);
            println!("RuntimeApiVersion:  {}", v.runtime_api_version);
        }
        Cmd::Info => {
            let s =
                c.rt.status(cri::StatusRequest { verbose: true })
                    .await
                    .map_err(status_err)?
                    .into_inner();
            let mut out = Map::new();
            out.insert("status".into(), to_json(&s.status)?);
            if !s.runtime_handlers.is_empty() {
                out.insert(
                    "runtimeHandlers".into(),
                    keys_to_camel(to_json(&s.runtime_handlers)?, false),
                );
            }
            if let Some(f) = &s.features {
                out.insert("features".into(), keys_to_camel(to_json(f)?, false));
            }
            merge_info(&mut out, &s.info);
            print_json(&Value::Object(out))?;
        }
        Cmd::Runp {
            pod_config,
            runtime,
        } => {
            let config: cri::PodSandboxConfig = load_config(&pod_config)?;
            let r =
                c.rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                    config: Some(config),
                    runtime_handler: runtime.unwrap_or_default(),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("{}", r.pod_sandbox_id);
        }
        Cmd::Create {
            pod_id,
            container_config,
            pod_config,
            no_pull,
        } => {
            let config: cri::ContainerConfig = load_config(&container_config)?;
            let sandbox: cri::PodSandboxConfig = load_config(&pod_config)?;
            let image = config.image.clone().unwrap_or_default();
            if image.image.is_empty() {
                bail!("{}: no image.image", container_config.display());
            }
            if !no_pull {
                let st = c
                    .img
                    .image_status(cri::ImageStatusRequest {
                        image: Some(image.clone()),
                        verbose: false,
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                if st.image.is_none() {
                    c.img
                        .pull_image(cri::PullImageRequest {
                            image: Some(image.clone()),
                            auth: None,
                            sandbox_config: Some(sandbox.clone()),
                        })
                        .await
                        .map_err(status_err)?;
                }
            }
            let r =
                c.rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod_id,
                    config: Some(config),
                    sandbox_config: Some(sandbox),
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("{}", r.container_id);
        }
        Cmd::Start { ids } => {
            need_ids(&ids)?;
            for id in ids {
                c.rt.start_container(cri::StartContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(status_err)?;
                println!("{id}");
            }
        }
        Cmd::Stop { timeout, ids } => {
            need_ids(&ids)?;
            for id in ids {
                c.rt.stop_container(cri::StopContainerRequest {
                    container_id: id.clone(),
                    timeout,
                })
                .await
                .map_err(status_err)?;
                println!("{id}");
            }
        }
        Cmd::Rm { force, ids } => {
            need_ids(&ids)?;
            for id in ids {
                if force {
                    c.rt.stop_container(cri::StopContainerRequest {
                        container_id: id.clone(),
                        timeout: 0,
                    })
                    .await
                    .map_err(status_err)?;
                }
                c.rt.remove_container(cri::RemoveContainerRequest {
                    container_id: id.clone(),
                })
                .await
                .map_err(status_err)?;
                println!("{id}");
            }
        }
        Cmd::Stopp { ids } => {
            need_ids(&ids)?;
            for id in ids {
                c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map_err(status_err)?;
                println!("Stopped sandbox {id}");
            }
        }
        Cmd::Rmp { force, ids } => {
            need_ids(&ids)?;
            for id in ids {
                if force {
                    c.rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: id.clone(),
                    })
                    .await
                    .map_err(status_err)?;
                }
                c.rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                    pod_sandbox_id: id.clone(),
                })
                .await
                .map_err(status_err)?;
                println!("Removed sandbox {id}");
            }
        }
        Cmd::Pods {
            id,
            name,
            namespace,
            state,
            label,
            quiet,
            output,
            no_trunc,
        } => {
            let filter = cri::PodSandboxFilter {
                id: id.unwrap_or_default(),
                state: match state.as_deref() {
                    None => None,
                    Some(s) => Some(cri::PodSandboxStateValue {
                        state: pod_state_from_str(s)?,
                    }),
                },
                label_selector: parse_labels(&label)?,
            };
            let mut items =
                c.rt.list_pod_sandbox(cri::ListPodSandboxRequest {
                    filter: Some(filter),
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .items;
            items.retain(|p| {
                let md = p.metadata.clone().unwrap_or_default();
                name.as_deref().is_none_or(|n| md.name.contains(n))
                    && namespace
                        .as_deref()
                        .is_none_or(|n| md.namespace.contains(n))
            });
            // Newest first, as crictl shows them.
            items.sort_by_key(|i| std::cmp::Reverse(i.created_at));
            if quiet {
                for p in &items {
                    println!("{}", p.id);
                }
            } else if output == "json" {
                let v: Vec<Value> = items.iter().map(pod_json).collect::<Result<_>>()?;
                print_json(&json!({ "items": v }))?;
            } else {
                let now = now_nanos();
                let mut t = vec![row(&[
                    "POD ID",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "NAMESPACE",
                    "ATTEMPT",
                    "RUNTIME",
                ])];
                for p in &items {
                    let md = p.metadata.clone().unwrap_or_default();
                    t.push(vec![
                        trunc(&p.id, no_trunc),
                        ago(now, p.created_at),
                        pod_state_name(p.state).to_string(),
                        md.name,
                        md.namespace,
                        md.attempt.to_string(),
                        if p.runtime_handler.is_empty() {
                            "(default)".to_string()
                        } else {
                            p.runtime_handler.clone()
                        },
                    ]);
                }
                print_table(&t);
            }
        }
        Cmd::Ps {
            all,
            id,
            pod,
            name,
            state,
            label,
            quiet,
            output,
            no_trunc,
        } => {
            let state = match state.as_deref() {
                Some(s) => Some(container_state_from_str(s)?),
                None if all => None,
                None => Some(1), // CONTAINER_RUNNING
            };
            let filter = cri::ContainerFilter {
                id: id.unwrap_or_default(),
                state: state.map(|state| cri::ContainerStateValue { state }),
                pod_sandbox_id: pod.unwrap_or_default(),
                label_selector: parse_labels(&label)?,
            };
            let mut items =
                c.rt.list_containers(cri::ListContainersRequest {
                    filter: Some(filter),
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .containers;
            items.retain(|ct| {
                name.as_deref()
                    .is_none_or(|n| ct.metadata.as_ref().is_some_and(|m| m.name.contains(n)))
            });
            items.sort_by_key(|i| std::cmp::Reverse(i.created_at));
            if quiet {
                for ct in &items {
                    println!("{}", ct.id);
                }
            } else if output == "json" {
                let v: Vec<Value> = items.iter().map(container_json).collect::<Result<_>>()?;
                print_json(&json!({ "containers": v }))?;
            } else {
                let now = now_nanos();
                let mut t = vec![row(&[
                    "CONTAINER",
                    "IMAGE",
                    "CREATED",
                    "STATE",
                    "NAME",
                    "ATTEMPT",
                    "POD ID",
                    "POD",
                    "NAMESPACE",
                ])];
                for ct in &items {
                    let md = ct.metadata.clone().unwrap_or_default();
                    let image = ct
                        .image
                        .as_ref()
                        .map(|i| i.image.clone())
                        .filter(|i| !i.is_empty())
                        .unwrap_or_else(|| ct.image_ref.clone());
                    let label = |k: &str| ct.labels.get(k).cloned().unwrap_or_default();
                    t.push(vec![
                        trunc(&ct.id, no_trunc),
                        trunc_image(&image, no_trunc),
                        ago(now, ct.created_at),
                        container_state_name(ct.state).to_string(),
                        md.name,
                        md.attempt.to_string(),
                        trunc(&ct.pod_sandbox_id, no_trunc),
                        label("io.kubernetes.pod.name"),
                        label("io.kubernetes.pod.namespace"),
                    ]);
                }
                print_table(&t);
            }
        }
        Cmd::Inspect { ids } => {
            need_ids(&ids)?;
            for id in ids {
                let r =
                    c.rt.container_status(cri::ContainerStatusRequest {
                        container_id: id,
                        verbose: true,
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let mut out = Map::new();
                let mut st = to_json(&r.status)?;
                fix_container_status(&mut st);
                out.insert("status".into(), st);
                merge_info(&mut out, &r.info);
                print_json(&Value::Object(out))?;
            }
        }
        Cmd::Inspectp { ids } => {
            need_ids(&ids)?;
            for id in ids {
                let r =
                    c.rt.pod_sandbox_status(cri::PodSandboxStatusRequest {
                        pod_sandbox_id: id,
                        verbose: true,
                    })
                    .await
                    .map_err(status_err)?
                    .into_inner();
                let mut out = Map::new();
                let mut st = to_json(&r.status)?;
                if let Some(o) = st.as_object_mut() {
                    name_enum(o, "state", pod_state_name);
                    time_field(o, "created_at");
                }
                out.insert("status".into(), st);
                merge_info(&mut out, &r.info);
                print_json(&Value::Object(out))?;
            }
        }
        Cmd::Exec {
            interactive,
            tty,
            transport,
            term_size,
            id,
            cmd,
            ..
        } if interactive || tty => {
            let url =
                c.rt.exec(cri::ExecRequest {
                    container_id: id,
                    cmd,
                    tty,
                    stdin: interactive,
                    stdout: true,
                    stderr: !tty,
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .url;
            let local = streaming::Local {
                stdin: interactive,
                tty,
                size: term_size,
            };
            return streaming::remotecommand(&url, transport, local).await;
        }
        Cmd::Attach {
            interactive,
            tty,
            transport,
            id,
        } => {
            let url =
                c.rt.attach(cri::AttachRequest {
                    container_id: id,
                    tty,
                    stdin: interactive,
                    stdout: true,
                    stderr: !tty,
                })
                .await
                .map_err(status_err)?
                .into_inner()
                .url;
            let local = streaming::Local {
                stdin: interactive,
                tty,
                size: None,
            };
            return streaming::remotecommand(&url, transport, local).await;
        }
        Cmd::PortForward {
            transport,
            pod,
            ports,
        } => {
            let (local, remote) = match ports.split_once(':') {
                Some((l, r)) => (l.parse::<u16>(), r.parse::<u16>()),
                None => (ports.parse::<u16>(), ports.parse::<u16>()),
            };
            let (Ok(local), Ok(remote)) = (local, remote) else {
                bail!("bad port spec {ports:?}: want LOCAL:REMOTE or PORT");
            };
            if remote == 0 {
                bail!("the remote port cannot be 0");
            }
            return streaming::port_forward(c.rt.clone(), &pod, transport, local, remote).await;
        }
        Cmd::Exec {
            timeout, id, cmd, ..
        } => {
            let r =
                c.rt.exec_sync(cri::ExecSyncRequest {
                    container_id: id,
                    cmd,
                    timeout,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            let mut out = std::io::stdout();
            out.write_all(&r.stdout)?;
            out.flush()?;
            let mut err = std::io::stderr();
            err.write_all(&r.stderr)?;
            err.flush()?;
            return Ok(r.exit_code);
        }
        Cmd::Logs {
            follow,
            tail,
            timestamps,
            id,
        } => {
            let log_path = container_log_path(&mut c, &id).await?;
            let opts = LogOptions { tail, timestamps };
            print_logs(&mut c, &id, &log_path, &opts, follow).await?;
        }
        Cmd::Pull {
            image,
            creds,
            pod_config,
        } => {
            let auth = match creds {
                Some(cr) => {
                    let (u, p) = cr.split_once(':').unwrap_or((cr.as_str(), ""));
                    Some(cri::AuthConfig {
                        username: u.to_string(),
                        password: p.to_string(),
                        ..Default::default()
                    })
                }
                None => None,
            };
            let sandbox_config = match pod_config {
                Some(p) => Some(load_config::<cri::PodSandboxConfig>(&p)?),
                None => None,
            };
            let r = c
                .img
                .pull_image(cri::PullImageRequest {
                    image: Some(cri::ImageSpec {
                        image: image.clone(),
                        ..Default::default()
                    }),
                    auth,
                    sandbox_config,
                })
                .await
                .map_err(status_err)?
                .into_inner();
            println!("Image is up to date for {}", r.image_ref);
        }
        Cmd::Images {
            image,
            quiet,
            digests,
            output,
            no_trunc,
        } => {
            let filter = image.map(|i| cri::ImageFilter {
                image: Some(cri::ImageSpec {
                    image: i,
                    ..Default::default()
                }),
            });
            let mut images = c
                .img
                .list_images(cri::ListImagesRequest { filter })
                .await
                .map_err(status_err)?
                .into_inner()
                .images;
            images.sort_by(|a, b| a.repo_tags.cmp(&b.repo_tags).then(a.id.cmp(&b.id)));
            if quiet {
                for i in &images {
                    println!("{}", i.id);
                }
            } else if output == "json" {
                print_json(&json!({ "images": keys_to_camel(to_json(&images)?, false) }))?;
            } else {
                let mut head = vec!["IMAGE", "TAG"];
                if digests {
                    head.push("DIGEST");
                }
                head.extend(["IMAGE ID", "SIZE"]);
                let mut t = vec![row(&head)];
                for i in &images {
                    for (repo, tag, digest) in image_rows(i) {
                        let mut r = vec![repo, tag];
                        if digests {
                            r.push(trunc(
                                digest.strip_prefix("sha256:").unwrap_or(&digest),
                                no_trunc,
                            ));
                        }
                        r.push(trunc(
                            i.id.strip_prefix("sha256:").unwrap_or(&i.id),
                            no_trunc,
                        ));
                        r.push(human_size(i.size));
                        t.push(r);
                    }
                }
                print_table(&t);
            }
        }
        Cmd::Rmi { images } => {
            need_ids(&images)?;
            for i in images {
                c.img
                    .remove_image(cri::RemoveImageRequest {
                        image: Some(cri::ImageSpec {
                            image: i.clone(),
                            ..Default::default()
                        }),
                    })
                    .await
                    .map_err(status_err)?;
                println!("Deleted: {i}");
            }
        }
        Cmd::Stats {
            id,
            pod,
            label,
            output,
            no_trunc,
        } => {
            let filter = cri::ContainerStatsFilter {
                id: id.unwrap_or_default(),
                pod_sandbox_id: pod.unwrap_or_default(),
                label_selector: parse_labels(&label)?,
            };
            let stats = container_stats_twice(&mut c, filter).await?;
            if output == "json" {
                print_json(&json!({ "stats": keys_to_camel(to_json(&stats)?, false) }))?;
            } else {
                let mut t = vec![row(&[
                    "CONTAINER",
                    "NAME",
                    "CPU %",
                    "MEM",
                    "DISK",
                    "INODES",
                ])];
                for s in &stats {
                    let attrs = s.attributes.clone().unwrap_or_default();
                    let layer = s.writable_layer.clone().unwrap_or_default();
                    t.push(vec![
                        trunc(&attrs.id, no_trunc),
                        attrs.metadata.map(|m| m.name).unwrap_or_default(),
                        cpu_percent(s.cpu.as_ref()),
                        mem_text(s.memory.as_ref()),
                        human_size(layer.used_bytes.map(|v| v.value).unwrap_or(0)),
                        layer.inodes_used.map(|v| v.value).unwrap_or(0).to_string(),
                    ]);
                }
                print_table(&t);
            }
        }
        Cmd::Statsp {
            id,
            label,
            output,
            no_trunc,
        } => {
            let filter = cri::PodSandboxStatsFilter {
                id: id.unwrap_or_default(),
                label_selector: parse_labels(&label)?,
            };
            let stats = pod_stats_twice(&mut c, filter).await?;
            if output == "json" {
                print_json(&json!({ "stats": keys_to_camel(to_json(&stats)?, false) }))?;
            } else {
                let mut t = vec![row(&[
                    "POD",
                    "NAME",
                    "CPU %",
                    "MEM",
                    "PROCESSES",
                    "RX",
                    "TX",
                ])];
                for s in &stats {
                    let attrs = s.attributes.clone().unwrap_or_default();
                    let linux = s.linux.clone().unwrap_or_default();
                    let net = linux.network.unwrap_or_default();
                    let (rx, tx) = net.interfaces.iter().fold((0, 0), |(rx, tx), i| {
                        (
                            rx + i.rx_bytes.map(|v| v.value).unwrap_or(0),
                            tx + i.tx_bytes.map(|v| v.value).unwrap_or(0),
                        )
                    });
                    t.push(vec![
                        trunc(&attrs.id, no_trunc),
                        attrs.metadata.map(|m| m.name).unwrap_or_default(),
                        cpu_percent(linux.cpu.as_ref()),
                        mem_text(linux.memory.as_ref()),
                        linux
                            .process
                            .and_then(|p| p.process_count)
                            .map(|v| v.value.to_string())
                            .unwrap_or_default(),
                        human_size(rx),
                        human_size(tx),
                    ]);
                }
                print_table(&t);
            }
        }
        Cmd::Update {
            memory,
            cpu_shares,
            cpu_quota,
            cpu_period,
            cpuset_cpus,
            cpuset_mems,
            ids,
        } => {
            need_ids(&ids)?;
            let linux = cri::LinuxContainerResources {
                memory_limit_in_bytes: memory.as_deref().map(parse_bytes).transpose()?.unwrap_or(0),
                cpu_shares: cpu_shares.unwrap_or(0),
                cpu_quota: cpu_quota.unwrap_or(0),
                cpu_period: cpu_period.unwrap_or(0),
                cpuset_cpus: cpuset_cpus.unwrap_or_default(),
                cpuset_mems: cpuset_mems.unwrap_or_default(),
                ..Default::default()
            };
            for id in ids {
                c.rt.update_container_resources(cri::UpdateContainerResourcesRequest {
                    container_id: id.clone(),
                    linux: Some(linux.clone()),
                    windows: None,
                    annotations: HashMap::new(),
                })
                .await
                .map_err(status_err)?;
                println!("{id}");
            }
        }
        Cmd::Events { output } => {
            let mut events =
                c.rt.get_container_events(cri::GetEventsRequest {})
                    .await
                    .map_err(status_err)?
                    .into_inner();
            while let Some(e) = events.message().await.map_err(status_err)? {
                if output == "json" {
                    println!("{}", keys_to_camel(to_json(&e)?, false));
                } else {
                    println!("{}", event_line(&e));
                }
                std::io::stdout().flush()?;
            }
        }
        Cmd::Imagefsinfo => {
            let r = c
                .img
                .image_fs_info(cri::ImageFsInfoRequest {})
                .await
                .map_err(status_err)?
                .into_inner();
            print_json(&keys_to_camel(to_json(&r)?, false))?;
        }
    }
    Ok(0)
}

fn need_ids(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        bail!("give at least one id");
    }
    Ok(())
}

/// A gRPC status as an error message that names its code, as crictl prints them.
fn status_err(s: tonic::Status) -> anyhow::Error {
    anyhow!("rpc error: code = {:?} desc = {}", s.code(), s.message())
}

// ---- config files -------------------------------------------------------------------------

/// Loads a CRI message from a crictl-style JSON or YAML file.
fn load_config<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    parse_config(&text).with_context(|| format!("bad config file {}", path.display()))
}

fn parse_config<T: serde::de::DeserializeOwned>(text: &str) -> Result<T> {
    // JSON first (it is also YAML, but serde_json's errors are the clearer ones for it).
    let value: Value = match serde_json::from_str(text) {
        Ok(v) => v,
        Err(json_err) => match serde_yaml_ng::from_str::<Value>(text) {
            Ok(v) => v,
            Err(yaml_err) => bail!("neither JSON ({json_err}) nor YAML ({yaml_err})"),
        },
    };
    Ok(T::deserialize(lenient::De(value))?)
}

/// A serde Deserializer over a JSON value that reads CRI messages the way Go's crictl does:
/// fields may be left out (their zero value), keys match in snake_case or camelCase, and enum
/// fields may be given by name ("TCP", "NODE", "RuntimeDefault", ...).
mod lenient {
    use serde::de::{self, DeserializeSeed, IntoDeserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Error, Map, Value};

    pub struct De(pub Value);

    /// CRI enum value names, all distinct across the enums a config can hold.
    fn enum_value(name: &str) -> Option<i64> {
        let n = name.to_ascii_uppercase();
        Some(match n.as_str() {
            "TCP" | "POD" | "PROPAGATION_PRIVATE" | "RUNTIMEDEFAULT" | "RUNTIME_DEFAULT" => 0,
            "UDP" | "CONTAINER" | "PROPAGATION_HOST_TO_CONTAINER" | "UNCONFINED" => 1,
            "SCTP" | "NODE" | "PROPAGATION_BIDIRECTIONAL" | "LOCALHOST" => 2,
            "TARGET" => 3,
            "CONTAINER_CREATED" | "SANDBOX_READY" => 0,
            "CONTAINER_RUNNING" | "SANDBOX_NOTREADY" => 1,
            "CONTAINER_EXITED" => 2,
            "CONTAINER_UNKNOWN" => 3,
            _ => return None,
        })
    }

    fn squash(k: &str) -> String {
        k.chars()
            .filter(|c| *c != '_' && *c != '-')
            .map(|c| c.to_ascii_lowercase())
            .collect()
    }

    fn int(v: &Value) -> Result<i64, Error> {
        match v {
            Value::Null => Ok(0),
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_u64().and_then(|u| i64::try_from(u).ok()))
                .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64))
                .ok_or_else(|| de::Error::custom(format!("{n} is not an integer"))),
            Value::String(s) => s.parse().ok().or_else(|| enum_value(s)).ok_or_else(|| {
                de::Error::custom(format!("{s:?} is not a number or known enum name"))
            }),
            Value::Bool(b) => Ok(i64::from(*b)),
            other => Err(de::Error::custom(format!("expected a number, got {other}"))),
        }
    }

    macro_rules! ints {
        ($($m:ident => $v:ident as $t:ty),*) => {$(
            fn $m<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                let i = int(&self.0)?;
                let x = <$t>::try_from(i).map_err(|_| de::Error::custom(format!("{i} out of range")))?;
                visitor.$v(x)
            }
        )*};
    }

    impl<'de> de::Deserializer<'de> for De {
        type Error = Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
                Value::Object(o) => visitor.visit_map(Obj::plain(o)),
                other => de::Deserializer::deserialize_any(other, visitor),
            }
        }

        ints!(deserialize_i8 => visit_i8 as i8, deserialize_i16 => visit_i16 as i16,
              deserialize_i32 => visit_i32 as i32, deserialize_i64 => visit_i64 as i64,
              deserialize_u8 => visit_u8 as u8, deserialize_u16 => visit_u16 as u16,
              deserialize_u32 => visit_u32 as u32, deserialize_u64 => visit_u64 as u64);

        fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_f64(visitor)
        }
        fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_f64(0.0),
                Value::String(s) => visitor.visit_f64(
                    s.parse()
                        .map_err(|_| de::Error::custom(format!("{s:?} is not a number")))?,
                ),
                other => de::Deserializer::deserialize_f64(other, visitor),
            }
        }
        fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_bool(false),
                Value::String(s) if s.eq_ignore_ascii_case("true") => visitor.visit_bool(true),
                Value::String(s) if s.eq_ignore_ascii_case("false") => visitor.visit_bool(false),
                other => de::Deserializer::deserialize_bool(other, visitor),
            }
        }
        fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_string(String::new()),
                Value::String(s) => visitor.visit_string(s),
                Value::Number(n) => visitor.visit_string(n.to_string()),
                Value::Bool(b) => visitor.visit_string(b.to_string()),
                other => Err(de::Error::custom(format!("expected a string, got {other}"))),
            }
        }
        fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_string(visitor)
        }
        fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_string(visitor)
        }
        fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_none(),
                v => visitor.visit_some(De(v)),
            }
        }
        fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_seq(Seq(Vec::new().into_iter())),
                Value::Array(a) => visitor.visit_seq(Seq(a.into_iter())),
                // Proto3 JSON bytes are base64 strings; CRI configs have none worth decoding.
                other => Err(de::Error::custom(format!("expected a list, got {other}"))),
            }
        }
        fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_seq(visitor)
        }
        fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_seq(visitor)
        }
        fn deserialize_tuple<V: Visitor<'de>>(
            self,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.deserialize_seq(visitor)
        }
        fn deserialize_tuple_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            _len: usize,
            visitor: V,
        ) -> Result<V::Value, Error> {
            self.deserialize_seq(visitor)
        }
        fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            match self.0 {
                Value::Null => visitor.visit_map(Obj::plain(Map::new())),
                Value::Object(o) => visitor.visit_map(Obj::plain(o)),
                other => Err(de::Error::custom(format!("expected a map, got {other}"))),
            }
        }
        fn deserialize_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            fields: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            let obj = match self.0 {
                Value::Null => Map::new(),
                Value::Object(o) => o,
                other => {
                    return Err(de::Error::custom(format!(
                        "expected an object, got {other}"
                    )))
                }
            };
            // Every field of the message, from the file when given (in either spelling),
            // else null, which each field type reads as its zero value.
            let mut by_squashed: std::collections::HashMap<String, Value> =
                obj.into_iter().map(|(k, v)| (squash(&k), v)).collect();
            let entries: Vec<(String, Value)> = fields
                .iter()
                .map(|f| {
                    let v = by_squashed.remove(&squash(f)).unwrap_or(Value::Null);
                    (f.to_string(), v)
                })
                .collect();
            visitor.visit_map(Obj {
                it: entries.into_iter(),
                pending: None,
            })
        }
        fn deserialize_newtype_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_newtype_struct(self)
        }
        fn deserialize_enum<V: Visitor<'de>>(
            self,
            name: &'static str,
            variants: &'static [&'static str],
            visitor: V,
        ) -> Result<V::Value, Error> {
            de::Deserializer::deserialize_enum(self.0, name, variants, visitor)
        }
        fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_unit()
        }
        fn deserialize_unit_struct<V: Visitor<'de>>(
            self,
            _name: &'static str,
            visitor: V,
        ) -> Result<V::Value, Error> {
            visitor.visit_unit()
        }
        fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            self.deserialize_string(visitor)
        }
        fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
            visitor.visit_unit()
        }
    }

    struct Seq(std::vec::IntoIter<Value>);

    impl<'de> SeqAccess<'de> for Seq {
        type Error = Error;
        fn next_element_seed<T: DeserializeSeed<'de>>(
            &mut self,
            seed: T,
        ) -> Result<Option<T::Value>, Error> {
            self.0.next().map(|v| seed.deserialize(De(v))).transpose()
        }
    }

    struct Obj {
        it: std::vec::IntoIter<(String, Value)>,
        pending: Option<Value>,
    }

    impl Obj {
        fn plain(o: Map<String, Value>) -> Obj {
            Obj {
                it: o.into_iter().collect::<Vec<_>>().into_iter(),
                pending: None,
            }
        }
    }

    impl<'de> MapAccess<'de> for Obj {
        type Error = Error;
        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Error> {
            match self.it.next() {
                Some((k, v)) => {
                    self.pending = Some(v);
                    seed.deserialize(k.into_deserializer()).map(Some)
                }
                None => Ok(None),
            }
        }
        fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
            let v = self.pending.take().unwrap_or(Value::Null);
            seed.deserialize(De(v))
        }
    }
}

// ---- JSON output --------------------------------------------------------------------------

fn to_json<T: serde::Serialize>(v: &T) -> Result<Value> {
    Ok(serde_json::to_value(v)?)
}

fn print_json(v: &Value) -> Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Map-typed CRI fields: their keys are data, not field names, and keep their spelling.
const MAP_FIELDS: &[&str] = &[
    "labels",
    "annotations",
    "info",
    "sysctls",
    "unified",
    "label_selector",
    "labelSelector",
    "extra",
];

fn snake_to_camel(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut up = false;
    for ch in s.chars() {
        if ch == '_' {
            up = true;
        } else if up {
            out.extend(ch.to_uppercase());
            up = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// Renames message keys to protobuf-JSON's lowerCamelCase, as crictl's output has them.
fn keys_to_camel(v: Value, is_map: bool) -> Value {
    match v {
        Value::Object(o) => Value::Object(
            o.into_iter()
                .map(|(k, v)| {
                    let child_is_map = !is_map && MAP_FIELDS.contains(&k.as_str());
                    let k = if is_map { k } else { snake_to_camel(&k) };
                    (k, keys_to_camel(v, child_is_map))
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.into_iter().map(|v| keys_to_camel(v, false)).collect()),
        other => other,
    }
}

/// Verbose info: each value is a JSON document of its own (plain text when it is not).
fn merge_info(out: &mut Map<String, Value>, info: &HashMap<String, String>) {
    let sorted: BTreeMap<_, _> = info.iter().collect();
    for (k, v) in sorted {
        let parsed = serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone()));
        out.insert(k.clone(), parsed);
    }
    if let Some(s) = out.remove("status") {
        out.insert("status".into(), keys_to_camel(s, false));
    }
}

fn name_enum(o: &mut Map<String, Value>, key: &str, names: fn(i32) -> &'static str) {
    if let Some(v) = o.get(key).and_then(Value::as_i64) {
        o.insert(key.into(), Value::from(names(v as i32)));
    }
}

/// Nanoseconds since the epoch → RFC 3339, as crictl shows times (0 stays 0: never).
fn time_field(o: &mut Map<String, Value>, key: &str) {
    if let Some(ns) = o.get(key).and_then(Value::as_i64) {
        if ns > 0 {
            let t = UNIX_EPOCH + Duration::from_nanos(ns as u64);
            o.insert(
                key.into(),
                Value::from(humantime::format_rfc3339_nanos(t).to_string()),
            );
        }
    }
}

fn fix_container_status(st: &mut Value) {
    if let Some(o) = st.as_object_mut() {
        name_enum(o, "state", container_state_name);
        for k in ["created_at", "started_at", "finished_at"] {
            time_field(o, k);
        }
    }
}

fn pod_json(p: &cri::PodSandbox) -> Result<Value> {
    let mut v = to_json(p)?;
    if let Some(o) = v.as_object_mut() {
        name_enum(o, "state", pod_state_name);
        o.insert("created_at".into(), Value::from(p.created_at.to_string()));
    }
    Ok(keys_to_camel(v, false))
}

fn container_json(c: &cri::Container) -> Result<Value> {
    let mut v = to_json(c)?;
    if let Some(o) = v.as_object_mut() {
        name_enum(o, "state", container_state_name);
        o.insert("created_at".into(), Value::from(c.created_at.to_string()));
    }
    Ok(keys_to_camel(v, false))
}

fn pod_state_name(s: i32) -> &'static str {
    match s {
        0 => "SANDBOX_READY",
        1 => "SANDBOX_NOTREADY",
        _ => "SANDBOX_UNKNOWN",
    }
}

fn container_state_name(s: i32) -> &'static str {
    match s {
        0 => "CONTAINER_CREATED",
        1 => "CONTAINER_RUNNING",
        2 => "CONTAINER_EXITED",
        _ => "CONTAINER_UNKNOWN",
    }
}

fn pod_state_from_str(s: &str) -> Result<i32> {
    match s.to_ascii_lowercase().as_str() {
        "ready" | "sandbox_ready" => Ok(0),
        "notready" | "sandbox_notready" => Ok(1),
        _ => bail!("unknown pod state {s:?} (ready, notready)"),
    }
}

fn container_state_from_str(s: &str) -> Result<i32> {
    match s.to_ascii_lowercase().trim_start_matches("container_") {
        "created" => Ok(0),
        "running" => Ok(1),
        "exited" => Ok(2),
        "unknown" => Ok(3),
        _ => bail!("unknown container state {s:?} (created, running, exited, unknown)"),
    }
}

fn parse_labels(labels: &[String]) -> Result<HashMap<String, String>> {
    labels
        .iter()
        .map(|l| {
            l.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .ok_or_else(|| anyhow!("bad label {l:?}: want key=value"))
        })
        .collect()
}

// ---- tables -------------------------------------------------------------------------------

fn row(cells: &[&str]) -> Vec<String> {
    cells.iter().map(|s| s.to_string()).collect()
}

/// Columns as Go's tabwriter lays out crictl's tables (min width 20, padding 3).
fn format_table(rows: &[Vec<String>]) -> String {
    rcri::kubelet::status::tabwriter(rows, 20)
}

fn print_table(rows: &[Vec<String>]) {
    print!("{}", format_table(rows));
}

fn trunc(id: &str, no_trunc: bool) -> String {
    if no_trunc {
        id.to_string()
    } else {
        id.chars().take(13).collect()
    }
}

/// Image ids (sha256:...) are shortened like ids; names stay whole.
fn trunc_image(image: &str, no_trunc: bool) -> String {
    match image.strip_prefix("sha256:") {
        Some(hex) => trunc(hex, no_trunc),
        None => image.to_string(),
    }
}

/// (repository, tag, digest) rows for an image: one per tag, `<none>` when it has none.
fn image_rows(i: &cri::Image) -> Vec<(String, String, String)> {
    let digest = i
        .repo_digests
        .first()
        .and_then(|d| d.split_once('@'))
        .map(|(_, d)| d.to_string())
        .unwrap_or_default();
    if i.repo_tags.is_empty() {
        let repo = i
            .repo_digests
            .first()
            .and_then(|d| d.split_once('@'))
            .map(|(r, _)| r.to_string())
            .unwrap_or_else(|| "<none>".to_string());
        return vec![(repo, "<none>".to_string(), digest)];
    }
    i.repo_tags
        .iter()
        .map(|t| {
            // The tag is after the last ':' following the last '/' (a ':' before is a port).
            let slash = t.rfind('/').map(|p| p + 1).unwrap_or(0);
            match t[slash..].rfind(':') {
                Some(c) => (
                    t[..slash + c].to_string(),
                    t[slash + c + 1..].to_string(),
                    digest.clone(),
                ),
                None => (t.clone(), "<none>".to_string(), digest.clone()),
            }
        })
        .collect()
}

/// Sizes as docker/go-units HumanSizeWithPrecision(size, 3) prints them: "4.27MB".
fn human_size(size: u64) -> String {
    let units = ["B", "kB", "MB", "GB", "TB", "PB"];
    let mut v = size as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < units.len() {
        v /= 1000.0;
        u += 1;
    }
    // %.3g: three significant digits, trailing zeros dropped.
    let decimals = if v >= 100.0 {
        0
    } else if v >= 10.0 {
        1
    } else {
        2
    };
    let mut s = format!("{v:.decimals$}");
    if s.contains('.') {
        s = s.trim_end_matches('0').trim_end_matches('.').to_string();
    }
    format!("{s}{}", units[u])
}

fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as i64)
        .unwrap_or(0)
}

/// "5 seconds ago", as go-units HumanDuration says it.
fn ago(now: i64, then: i64) -> String {
    let secs = (now - then).max(0) / 1_000_000_000;
    let d = match secs {
        s if s < 1 => "Less than a second".to_string(),
        1 => "1 second".to_string(),
        s if s < 60 => format!("{s} seconds"),
        s if s / 60 == 1 => "About a minute".to_string(),
        s if s < 3600 => format!("{} minutes", s / 60),
        s if (s as f64 / 3600.0).round() as i64 == 1 => "About an hour".to_string(),
        s if s < 48 * 3600 => format!("{} hours", (s as f64 / 3600.0).round() as i64),
        s if s < 7 * 24 * 3600 * 2 => format!("{} days", s / (24 * 3600)),
        s if s < 30 * 24 * 3600 * 2 => format!("{} weeks", s / (7 * 24 * 3600)),
        s if s < 365 * 24 * 3600 * 2 => format!("{} months", s / (30 * 24 * 3600)),
        s => format!("{} years", s / (365 * 24 * 3600)),
    };
    format!("{d} ago")
}

// ---- logs ---------------------------------------------------------------------------------

struct LogOptions {
    tail: i64,
    timestamps: bool,
}

async fn container_log_path(c: &mut Clients, id: &str) -> Result<PathBuf> {
    let st =
        c.rt.container_status(cri::ContainerStatusRequest {
            container_id: id.to_string(),
            verbose: false,
        })
        .await
        .map_err(status_err)?
        .into_inner()
        .status
        .ok_or_else(|| anyhow!("no status for container {id}"))?;
    if st.log_path.is_empty() {
        bail!("container {id} has no log file");
    }
    Ok(PathBuf::from(st.log_path))
}

/// One line of the CRI log format: `<RFC3339Nano> <stdout|stderr> <P|F> <msg>`.
#[derive(Debug, PartialEq)]
struct LogLine<'a> {
    time: &'a str,
    stderr: bool,
    partial: bool,
    msg: &'a str,
}

fn parse_log_line(line: &str) -> Option<LogLine<'_>> {
    let mut it = line.splitn(4, ' ');
    let time = it.next()?;
    let stream = it.next()?;
    let tag = it.next()?;
    let msg = it.next().unwrap_or("");
    let stderr = match stream {
        "stdout" => false,
        "stderr" => true,
        _ => return None,
    };
    // Tags may carry more flags after the first, separated by ':'.
    let partial = tag.split(':').next() == Some("P");
    Some(LogLine {
        time,
        stderr,
        partial,
        msg,
    })
}

/// Renders complete log lines; returns (stdout bytes, stderr bytes) in order as a list.
fn render_lines(text: &str, opts: &LogOptions, at_line_start: &mut bool) -> Vec<(bool, String)> {
    let mut out = Vec::new();
    for line in text.split_inclusive('\n') {
        let line = line.strip_suffix('\n').unwrap_or(line);
        let Some(l) = parse_log_line(line) else {
            continue;
        };
        let mut s = String::new();
        if opts.timestamps && *at_line_start {
            s.push_str(l.time);
            s.push(' ');
        }
        s.push_str(l.msg);
        if !l.partial {
            s.push('\n');
        }
        *at_line_start = !l.partial;
        out.push((l.stderr, s));
    }
    out
}

fn emit(chunks: Vec<(bool, String)>) -> Result<()> {
    let mut so = std::io::stdout();
    let mut se = std::io::stderr();
    for (is_err, s) in chunks {
        if is_err {
            so.flush()?;
            se.write_all(s.as_bytes())?;
        } else {
            so.write_all(s.as_bytes())?;
        }
    }
    so.flush()?;
    Ok(())
}

async fn print_logs(
    c: &mut Clients,
    id: &str,
    path: &Path,
    opts: &LogOptions,
    follow: bool,
) -> Result<()> {
    let mut f =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut text = String::new();
    f.read_to_string(&mut text)?;
    // Only whole lines are printed; a line still being written waits for its newline.
    let cut = text.rfind('\n').map(|i| i + 1).unwrap_or(0);
    let mut pending = text[cut..].to_string();
    let mut body = &text[..cut];
    if opts.tail >= 0 {
        let lines: Vec<&str> = body.split_inclusive('\n').collect();
        let skip = lines.len().saturating_sub(opts.tail as usize);
        let start: usize = lines[..skip].iter().map(|l| l.len()).sum();
        body = &body[start..];
    }
    let mut at_start = true;
    emit(render_lines(body, opts, &mut at_start))?;
    if !follow {
        return Ok(());
    }
    let mut pos = f.stream_position()?;
    let mut exited_polls = 0;
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let len = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        if len < pos {
            // Rotated or truncated: start over from the top of the new file.
            f = std::fs::File::open(path)?;
            pos = 0;
            pending.clear();
        }
        f.seek(SeekFrom::Start(pos))?;
        let mut chunk = String::new();
        f.read_to_string(&mut chunk)?;
        pos = f.stream_position()?;
        pending.push_str(&chunk);
        if let Some(i) = pending.rfind('\n') {
            let whole: String = pending.drain(..=i).collect();
            emit(render_lines(&whole, opts, &mut at_start))?;
        }
        // Stop following once the container has exited and its log is drained (a few polls
        // after, for the monitor's last writes).
        let st =
            c.rt.container_status(cri::ContainerStatusRequest {
                container_id: id.to_string(),
                verbose: false,
            })
            .await
            .map_err(status_err)?
            .into_inner();
        if st.status.is_none_or(|s| s.state == 2 || s.state == 3) {
            exited_polls += 1;
            if exited_polls > 2 {
                return Ok(());
            }
        }
    }
}

// -- stats, update, events --------------------------------------------------------------------

/// ListContainerStats; asked again after a second when some CPU rate is still missing (the
/// runtime computes it between two samples, as crictl's own two-sample CPU % does).
async fn container_stats_twice(
    c: &mut Clients,
    filter: cri::ContainerStatsFilter,
) -> Result<Vec<cri::ContainerStats>> {
    let mut stats = Vec::new();
    for round in 0..2 {
        stats =
            c.rt.list_container_stats(cri::ListContainerStatsRequest {
                filter: Some(filter.clone()),
            })
            .await
            .map_err(status_err)?
            .into_inner()
            .stats;
        let missing = stats
            .iter()
            .any(|s| s.cpu.as_ref().is_some_and(|c| c.usage_nano_cores.is_none()));
        if !missing || round == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    Ok(stats)
}

async fn pod_stats_twice(
    c: &mut Clients,
    filter: cri::PodSandboxStatsFilter,
) -> Result<Vec<cri::PodSandboxStats>> {
    let mut stats = Vec::new();
    for round in 0..2 {
        stats =
            c.rt.list_pod_sandbox_stats(cri::ListPodSandboxStatsRequest {
                filter: Some(filter.clone()),
            })
            .await
            .map_err(status_err)?
            .into_inner()
            .stats;
        let missing = stats.iter().any(|s| {
            s.linux
                .as_ref()
                .and_then(|l| l.cpu.as_ref())
                .is_some_and(|c| c.usage_nano_cores.is_none())
        });
        if !missing || round == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(1100)).await;
    }
    Ok(stats)
}

fn cpu_percent(cpu: Option<&cri::CpuUsage>) -> String {
    match cpu.and_then(|c| c.usage_nano_cores.as_ref()) {
        Some(n) => format!("{:.2}", n.value as f64 / 1e7),
        None => "-".into(),
    }
}

fn mem_text(memory: Option<&cri::MemoryUsage>) -> String {
    match memory.and_then(|m| m.working_set_bytes.as_ref()) {
        Some(w) => human_size(w.value),
        None => "-".into(),
    }
}

/// Bytes as a number with an optional binary unit (k, m, g, t).
fn parse_bytes(text: &str) -> Result<i64> {
    let t = text.trim().to_ascii_lowercase();
    let t = t.strip_suffix('b').unwrap_or(&t);
    let (digits, shift) = match t.chars().last() {
        Some('k') => (&t[..t.len() - 1], 10),
        Some('m') => (&t[..t.len() - 1], 20),
        Some('g') => (&t[..t.len() - 1], 30),
        Some('t') => (&t[..t.len() - 1], 40),
        _ => (t, 0),
    };
    let n: i64 = digits
        .trim()
        .parse()
        .with_context(|| format!("invalid size {text:?}"))?;
    n.checked_mul(1 << shift)
        .ok_or_else(|| anyhow!("size {text:?} is too large"))
}

fn event_line(e: &cri::ContainerEventResponse) -> String {
    let kind = cri::ContainerEventType::try_from(e.container_event_type)
        .map(|k| k.as_str_name())
        .unwrap_or("UNKNOWN");
    let pod = e
        .pod_sandbox_status
        .as_ref()
        .map(|p| p.id.as_str())
        .unwrap_or("-");
    let secs = e.created_at / 1_000_000_000;
    let nanos = (e.created_at % 1_000_000_000) as u32;
    let at = humantime::format_rfc3339_nanos(UNIX_EPOCH + Duration::new(secs.max(0) as u64, nanos));
    format!("{at} {kind} {} pod={pod}", e.container_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crictl_pod_config_json_and_yaml_parse() {
        // cri-tools' docs/examples sandbox-config.json shape.
        let json = r#"{
            "metadata": {"name": "nginx-sandbox", "namespace": "default", "attempt": 1, "uid": "hdishd83djaidwnduwk28bcsb"},
            "log_directory": "/tmp",
            "port_mappings": [{"protocol": "TCP", "container_port": 80, "host_port": 8080}],
            "linux": {"security_context": {"namespace_options": {"network": "NODE"}}},
            "labels": {"app_name": "x"}
        }"#;
        let p: cri::PodSandboxConfig = parse_config(json).unwrap();
        let md = p.metadata.unwrap();
        assert_eq!((md.name.as_str(), md.attempt), ("nginx-sandbox", 1));
        assert_eq!(p.log_directory, "/tmp");
        assert_eq!(p.port_mappings[0].host_port, 8080);
        assert_eq!(p.port_mappings[0].protocol, 0);
        let ns = p
            .linux
            .unwrap()
            .security_context
            .unwrap()
            .namespace_options
            .unwrap();
        assert_eq!(ns.network, 2);
        assert_eq!(p.labels["app_name"], "x");

        let yaml = "metadata:\n  name: web\n  namespace: ns1\n  uid: u1\nlogDirectory: /var/log/pods/x\ndnsConfig:\n  servers: [10.0.0.10]\nportMappings:\n- protocol: UDP\n  containerPort: 53\n  hostPort: 5353\n";
        let p: cri::PodSandboxConfig = parse_config(yaml).unwrap();
        assert_eq!(p.metadata.unwrap().namespace, "ns1");
        assert_eq!(p.log_directory, "/var/log/pods/x");
        assert_eq!(p.dns_config.unwrap().servers, ["10.0.0.10"]);
        assert_eq!(p.port_mappings[0].protocol, 1);
        assert_eq!(p.port_mappings[0].container_port, 53);
    }

    #[test]
    fn crictl_container_config_parses() {
        let json = r#"{
          "metadata": {"name": "busybox"},
          "image": {"image": "busybox"},
          "command": ["top"],
          "args": [],
          "envs": [{"key": "A", "value": "1"}],
          "mounts": [{"container_path": "/data", "host_path": "/tmp", "readonly": true, "propagation": "PROPAGATION_BIDIRECTIONAL"}],
          "log_path": "busybox.0.log",
          "linux": {"resources": {"memory_limit_in_bytes": 104857600, "cpu_shares": "512"},
                    "security_context": {"run_as_user": {"value": 1000}, "privileged": false,
                       "capabilities": {"add_capabilities": ["NET_ADMIN"]},
                       "seccomp": {"profile_type": "RuntimeDefault"}}}
        }"#;
        let c: cri::ContainerConfig = parse_config(json).unwrap();
        assert_eq!(c.metadata.unwrap().name, "busybox");
        assert_eq!(c.image.unwrap().image, "busybox");
        assert_eq!(c.command, ["top"]);
        assert_eq!(c.envs[0].value, "1");
        assert_eq!(c.mounts[0].propagation, 2);
        assert!(c.mounts[0].readonly);
        let l = c.linux.unwrap();
        let r = l.resources.unwrap();
        assert_eq!(r.memory_limit_in_bytes, 104857600);
        assert_eq!(r.cpu_shares, 512);
        let sc = l.security_context.unwrap();
        assert_eq!(sc.run_as_user.unwrap().value, 1000);
        assert_eq!(sc.capabilities.unwrap().add_capabilities, ["NET_ADMIN"]);
        assert_eq!(sc.seccomp.unwrap().profile_type, 0);
        // Wrong types are errors, not silent zeros.
        assert!(parse_config::<cri::ContainerConfig>(r#"{"command": "top"}"#).is_err());
        assert!(parse_config::<cri::ContainerConfig>("{not json: [").is_err());
    }

    #[test]
    fn output_helpers_match_crictl() {
        assert_eq!(human_size(4_270_000), "4.27MB");
        assert_eq!(human_size(1_000_000), "1MB");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(12_340), "12.3kB");
        let s = 1_000_000_000;
        assert_eq!(ago(10 * s, 5 * s), "5 seconds ago");
        assert_eq!(ago(100 * s, 30 * s), "About a minute ago");
        assert_eq!(ago(3 * 3600 * s, 0), "3 hours ago");
        let t = format_table(&[row(&["A", "B"]), row(&["xx", "y"])]);
        assert_eq!(t, format!("A{}B\nxx{}y\n", " ".repeat(19), " ".repeat(18)));
        let img = cri::Image {
            id: "sha256:abc".into(),
            repo_tags: vec![
                "localhost:5000/a/b:1".into(),
                "docker.io/library/busybox:latest".into(),
            ],
            repo_digests: vec!["docker.io/library/busybox@sha256:def".into()],
            ..Default::default()
        };
        let rows = image_rows(&img);
        assert_eq!(rows[0].0, "localhost:5000/a/b");
        assert_eq!(rows[0].1, "1");
        assert_eq!(rows[1].1, "latest");
        assert_eq!(rows[1].2, "sha256:def");
        assert_eq!(
            keys_to_camel(
                json!({"created_at": 1, "labels": {"a_b": "c"}, "linux": {"pod_cidr": 1}}),
                false
            ),
            json!({"createdAt": 1, "labels": {"a_b": "c"}, "linux": {"podCidr": 1}})
        );
        assert_eq!(
            socket_path("unix:///run/x.sock").unwrap(),
            Path::new("/run/x.sock")
        );
        assert_eq!(
            socket_path("/run/x.sock").unwrap(),
            Path::new("/run/x.sock")
        );
        assert!(socket_path("tcp://1.2.3.4:5").is_err());
    }

    #[test]
    fn cri_log_lines_render() {
        let log = "2016-10-06T00:17:09.669794202Z stdout P hel\n\
                   2016-10-06T00:17:09.669794203Z stdout F lo\n\
                   2016-10-06T00:17:10.000000000Z stderr F oops\n\
                   garbage\n";
        let mut at = true;
        let opts = LogOptions {
            tail: -1,
            timestamps: false,
        };
        let out = render_lines(log, &opts, &mut at);
        let so: String = out.iter().filter(|c| !c.0).map(|c| c.1.as_str()).collect();
        let se: String = out.iter().filter(|c| c.0).map(|c| c.1.as_str()).collect();
        assert_eq!(so, "hello\n");
        assert_eq!(se, "oops\n");
        let opts = LogOptions {
            tail: -1,
            timestamps: true,
        };
        let mut at = true;
        let out = render_lines(log, &opts, &mut at);
        assert_eq!(out[0].1, "2016-10-06T00:17:09.669794202Z hel");
        assert_eq!(out[1].1, "lo\n");
        assert_eq!(
            parse_log_line("t stdout F "),
            Some(LogLine {
                time: "t",
                stderr: false,
                partial: false,
                msg: ""
            })
        );
    }
}
