use super::*;
use crate::kubelet::manifest::{parse_objects, Object};

fn pod(yaml: &str) -> Pod {
    let (objects, _) = parse_objects(yaml, "test.yaml").unwrap();
    match objects.into_iter().next() {
        Some(Object::Pod(p)) => *p,
        _ => panic!("no pod"),
    }
}

fn with_resources(resources: &[&str]) -> Pod {
    let mut text =
        String::from("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers:\n");
    for (i, r) in resources.iter().enumerate() {
        text.push_str(&format!(
            "  - name: c{i}\n    image: busybox\n    resources: {r}\n"
        ));
    }
    let mut p = pod(&text);
    apply_defaults(&mut p);
    p
}

const GI: i64 = 1 << 30;

#[test]
fn defaults_are_the_api_servers() {
    let mut p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: web}\nspec:\n  containers:\n  - {name: a, image: busybox}\n  - {name: b, image: 'busybox:1.36', ports: [{containerPort: 80}], resources: {limits: {cpu: '1'}}}\n  - {name: c, image: 'reg:5000/busybox'}\n  - {name: d, image: 'busybox:latest'}\n  - {name: e, image: 'busybox@sha256:abcd'}\n  volumes: [{name: v, configMap: {name: x}}]\n");
    apply_defaults(&mut p);
    assert_eq!(p.metadata.namespace, "default");
    let uid = &p.metadata.uid;
    let parts: Vec<usize> = uid.split('-').map(|s| s.len()).collect();
    assert_eq!(parts, [8, 4, 4, 4, 12], "{uid}");
    assert!(uid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()));
    assert!(p
        .metadata
        .creation_timestamp
        .as_deref()
        .unwrap()
        .ends_with('Z'));
    assert_eq!(p.spec.restart_policy, Some(RestartPolicy::Always));
    assert_eq!(p.spec.termination_grace_period_seconds, Some(30));
    assert_eq!(p.spec.dns_policy, Some(DnsPolicy::ClusterFirst));
    let policies: Vec<_> = p
        .spec
        .containers
        .iter()
        .map(|c| c.image_pull_policy.unwrap())
        .collect();
    use PullPolicy::*;
    assert_eq!(
        policies,
        [Always, IfNotPresent, Always, Always, IfNotPresent]
    );
    let b = &p.spec.containers[1];
    assert_eq!(b.ports[0].protocol.as_deref(), Some("TCP"));
    assert_eq!(b.resources.requests["cpu"].0, "1");
    assert_eq!(
        b.termination_message_path.as_deref(),
        Some("/dev/termination-log")
    );
    assert_eq!(
        p.spec.volumes[0].config_map.as_ref().unwrap().default_mode,
        Some(0o644)
    );
    // Applying defaults again changes nothing (uid and timestamp are kept).
    let again = {
        let mut q = p.clone();
        apply_defaults(&mut q);
        q
    };
    assert_eq!(again, p);
}

use crate::kubelet::manifest::{DnsPolicy, RestartPolicy};

#[test]
fn kubelets_cpu_numbers() {
    assert_eq!(milli_cpu_to_shares(0), 2);
    assert_eq!(milli_cpu_to_shares(1), 2);
    assert_eq!(milli_cpu_to_shares(100), 102);
    assert_eq!(milli_cpu_to_shares(500), 512);
    assert_eq!(milli_cpu_to_shares(1000), 1024);
    assert_eq!(milli_cpu_to_shares(1_000_000), 262_144);
    assert_eq!(milli_cpu_to_quota(0), 0);
    assert_eq!(milli_cpu_to_quota(5), 1000);
    assert_eq!(milli_cpu_to_quota(250), 25_000);
    assert_eq!(milli_cpu_to_quota(1500), 150_000);
}

#[test]
fn qos_classes_and_oom_score_adj() {
    let guaranteed = with_resources(&["{limits: {cpu: 500m, memory: 1Gi}}"]);
    assert_eq!(qos_class(&guaranteed), QosClass::Guaranteed);
    let c = &guaranteed.spec.containers[0];
    let r = container_resources(&guaranteed, c, 8 * GI).unwrap();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (512, 50_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, GI);
    assert_eq!(r.oom_score_adj, -997);

    let best_effort = with_resources(&["{}"]);
    assert_eq!(qos_class(&best_effort), QosClass::BestEffort);
    let r = container_resources(&best_effort, &best_effort.spec.containers[0], 8 * GI).unwrap();
    assert_eq!(
        (
            r.cpu_shares,
            r.cpu_quota,
            r.cpu_period,
            r.memory_limit_in_bytes
        ),
        (2, 0, 100_000, 0)
    );
    assert_eq!(r.oom_score_adj, 1000);

    // Burstable: 1000 - 1000 * 2Gi / 8Gi = 750.
    let burstable = with_resources(&[
        "{requests: {cpu: 250m, memory: 2Gi}, limits: {memory: 4Gi}}",
        "{}",
    ]);
    assert_eq!(qos_class(&burstable), QosClass::Burstable);
    let r = container_resources(&burstable, &burstable.spec.containers[0], 8 * GI).unwrap();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.memory_limit_in_bytes),
        (256, 0, 4 * GI)
    );
    assert_eq!(r.oom_score_adj, 750);
    // No memory request in a Burstable pod: 999, never BestEffort's 1000.
    let r = container_resources(&burstable, &burstable.spec.containers[1], 8 * GI).unwrap();
    assert_eq!(r.oom_score_adj, 999);
    // A request of (nearly) all memory: at least 3 (1000 + guaranteed's -997).
    let big = with_resources(&["{requests: {memory: 8Gi}}"]);
    assert_eq!(
        container_resources(&big, &big.spec.containers[0], 8 * GI)
            .unwrap()
            .oom_score_adj,
        3
    );
    // Limits on only one resource: Burstable; shares from the limit when there is no request.
    let cpu_only = with_resources(&["{limits: {cpu: '2'}}"]);
    assert_eq!(qos_class(&cpu_only), QosClass::Burstable);
    let r = container_resources(&cpu_only, &cpu_only.spec.containers[0], 8 * GI).unwrap();
    assert_eq!((r.cpu_shares, r.cpu_quota), (2048, 200_000));
}

const FULL: &str = r#"
apiVersion: v1
kind: Pod
metadata:
  name: web
  namespace: shop
  uid: 11111111-2222-3333-4444-555555555555
  labels: {app: web}
  annotations: {team: blue}
spec:
  hostname: frontend
  dnsPolicy: None
  dnsConfig: {nameservers: [10.9.9.9], searches: [shop.local], options: [{name: ndots, value: "2"}]}
  shareProcessNamespace: true
  terminationGracePeriodSeconds: 7
  securityContext:
    runAsUser: 1000
    runAsGroup: 3000
    fsGroup: 2000
    supplementalGroups: [4000]
    sysctls: [{name: net.ipv4.ping_group_range, value: "0 2147483647"}]
  initContainers:
  - name: init
    image: busybox
    resources: {limits: {cpu: "3", memory: 64Mi}}
  containers:
  - name: app
    image: busybox:1.36
    command: ["sh", "-c", "echo $(GREETING) $$(GREETING) $(MISSING)"]
    args: ["$(POD_NAME)"]
    workingDir: /srv
    ports:
    - {containerPort: 8080, hostPort: 18080, protocol: TCP}
    - {containerPort: 53, protocol: UDP, name: dns}
    env:
    - {name: GREETING, value: hello}
    - {name: MSG, value: "$(GREETING) from $(POD_NAME)"}
    - name: POD_NAME
      valueFrom: {fieldRef: {fieldPath: metadata.name}}
    - name: POD_IP
      valueFrom: {fieldRef: {fieldPath: status.podIP}}
    - name: APP_LABEL
      valueFrom: {fieldRef: {fieldPath: "metadata.labels['app']"}}
    - name: MEM_MI
      valueFrom: {resourceFieldRef: {resource: limits.memory, divisor: 1Mi}}
    - name: CPU_M
      valueFrom: {resourceFieldRef: {resource: requests.cpu, divisor: 1m}}
    - name: MODE
      valueFrom: {configMapKeyRef: {name: cfg, key: mode}}
    - name: PW
      valueFrom: {secretKeyRef: {name: pw, key: password}}
    - name: OPT
      valueFrom: {secretKeyRef: {name: pw, key: nope, optional: true}}
    envFrom:
    - {configMapRef: {name: cfg}, prefix: CFG_}
    resources:
      requests: {cpu: 250m, memory: 128Mi}
      limits: {cpu: 500m, memory: 256Mi}
    securityContext:
      runAsUser: 1001
      allowPrivilegeEscalation: false
      readOnlyRootFilesystem: true
      capabilities: {add: [NET_ADMIN], drop: [ALL]}
      seccompProfile: {type: RuntimeDefault}
    lifecycle:
      preStop: {exec: {command: [sh, -c, "sleep 1"]}}
    stdin: true
    tty: true
  - name: side
    image: busybox
"#;

fn sources() -> ConfigSources {
    let (objects, _) = parse_objects(
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cfg, namespace: shop}\ndata: {mode: fast, 'bad=key': x}\n---\n\
         apiVersion: v1\nkind: Secret\nmetadata: {name: pw, namespace: shop}\nstringData: {password: s3cret}\n",
        "cfg.yaml",
    )
    .unwrap();
    ConfigSources::load(None, &objects).unwrap()
}

fn info() -> PodRuntimeInfo {
    PodRuntimeInfo {
        pod_ip: "10.88.0.5".into(),
        pod_ips: vec!["10.88.0.5".into(), "fd00::5".into()],
        host_ip: "192.168.1.2".into(),
        node_name: "node1".into(),
    }
}

#[test]
fn sandbox_config_as_kubelet_builds_it() {
    let mut p = pod(FULL);
    apply_defaults(&mut p);
    validate(&p).unwrap();
    let c = sandbox_config_with(&p, 2, Path::new("/var/log/pods/x"), None).unwrap();
    let m = c.metadata.as_ref().unwrap();
    assert_eq!(
        (m.name.as_str(), m.namespace.as_str(), m.attempt),
        ("web", "shop", 2)
    );
    assert_eq!(m.uid, "11111111-2222-3333-4444-555555555555");
    assert_eq!(c.hostname, "frontend");
    assert_eq!(c.log_directory, "/var/log/pods/x");
    let dns = c.dns_config.as_ref().unwrap();
    assert_eq!(dns.servers, ["10.9.9.9"]);
    assert_eq!(dns.searches, ["shop.local"]);
    assert_eq!(dns.options, ["ndots:2"]);
    assert_eq!(c.port_mappings.len(), 2);
    assert_eq!(c.port_mappings[0].host_port, 18080);
    assert_eq!(c.port_mappings[1].protocol, cri::Protocol::Udp as i32);
    assert_eq!(c.labels["app"], "web");
    assert_eq!(c.labels[keys::POD_NAME], "web");
    assert_eq!(c.labels[keys::POD_NAMESPACE], "shop");
    assert_eq!(c.labels[keys::POD_UID], m.uid);
    assert_eq!(c.annotations["team"], "blue");
    let linux = c.linux.as_ref().unwrap();
    assert_eq!(linux.sysctls["net.ipv4.ping_group_range"], "0 2147483647");
    let sc = linux.security_context.as_ref().unwrap();
    let ns = sc.namespace_options.as_ref().unwrap();
    assert_eq!(ns.pid, cri::NamespaceMode::Pod as i32);
    assert_eq!(ns.network, cri::NamespaceMode::Pod as i32);
    assert!(ns.userns_options.is_none());
    assert_eq!(sc.run_as_user.as_ref().unwrap().value, 1000);
    assert_eq!(sc.run_as_group.as_ref().unwrap().value, 3000);
    assert_eq!(sc.supplemental_groups, [2000, 4000]);
    assert_eq!(
        sc.seccomp.as_ref().unwrap().profile_type,
        ProfileType::Unconfined as i32
    );
    // Pod resources: the init container's 3 CPUs (requests defaulted from its limits) exceed
    // the sum over the regular containers (250m requested, 500m limit).
    let r = linux.resources.as_ref().unwrap();
    assert_eq!(r.cpu_shares, 3072);
    assert_eq!(r.cpu_quota, 300_000);
    assert_eq!(r.memory_limit_in_bytes, 256 << 20);
}

#[test]
fn host_namespaces_and_user_namespaces() {
    let mut p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: h}\nspec:\n  hostNetwork: true\n  hostPID: true\n  hostIPC: true\n  containers: [{name: a, image: busybox}]\n");
    apply_defaults(&mut p);
    let c = sandbox_config_with(&p, 0, Path::new("/l"), Some("nameserver 1.2.3.4\n")).unwrap();
    assert_eq!(c.hostname, "");
    assert_eq!(c.dns_config.as_ref().unwrap().servers, ["1.2.3.4"]);
    let ns = c
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    let node = cri::NamespaceMode::Node as i32;
    assert_eq!((ns.network, ns.pid, ns.ipc), (node, node, node));

    let mut p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: u}\nspec:\n  hostUsers: false\n  containers: [{name: a, image: busybox}]\n");
    apply_defaults(&mut p);
    let c = sandbox_config_with(&p, 0, Path::new("/l"), Some("")).unwrap();
    let ns = c
        .linux
        .unwrap()
        .security_context
        .unwrap()
        .namespace_options
        .unwrap();
    assert_eq!(ns.pid, cri::NamespaceMode::Container as i32);
    let u = ns.userns_options.unwrap();
    assert_eq!(u.mode, cri::NamespaceMode::Pod as i32);
    assert_eq!((u.uids[0].container_id, u.uids[0].length), (0, 65536));
    assert!(u.uids[0].host_id >= 65536 && u.uids[0].host_id % 65536 == 0);
    assert_eq!(u.uids, u.gids);
    // A long name is cut to 63 characters without a trailing '-'.
    let mut long = p.clone();
    long.metadata.name = format!("{}-{}", "a".repeat(62), "b".repeat(10));
    long.spec.host_users = None;
    assert_eq!(
        sandbox_config_with(&long, 0, Path::new("/l"), Some(""))
            .unwrap()
            .hostname,
        "a".repeat(62)
    );
}

#[test]
fn container_config_as_kubelet_builds_it() {
    let mut p = pod(FULL);
    apply_defaults(&mut p);
    let c = &p.spec.containers[0];
    let mount = cri::Mount {
        container_path: "/data".into(),
        host_path: "/tmp/x".into(),
        ..Default::default()
    };
    let cfg =
        container_config_with(&p, c, 3, &info(), &sources(), vec![mount.clone()], 8 * GI).unwrap();
    let meta = cfg.metadata.as_ref().unwrap();
    assert_eq!((meta.name.as_str(), meta.attempt), ("app", 3));
    assert_eq!(cfg.image.as_ref().unwrap().image, "busybox:1.36");
    assert_eq!(
        cfg.command,
        ["sh", "-c", "echo hello $(GREETING) $(MISSING)"]
    );
    assert_eq!(cfg.args, ["web"]);
    assert_eq!(cfg.working_dir, "/srv");
    let env: Vec<(&str, &str)> = cfg
        .envs
        .iter()
        .map(|kv| (kv.key.as_str(), kv.value.as_str()))
        .collect();
    assert_eq!(
        env,
        [
            ("CFG_mode", "fast"),
            ("GREETING", "hello"),
            // POD_NAME is defined after MSG, so it is not expanded (kubelet's order rule).
            ("MSG", "hello from $(POD_NAME)"),
            ("POD_NAME", "web"),
            ("POD_IP", "10.88.0.5"),
            ("APP_LABEL", "web"),
            ("MEM_MI", "256"),
            ("CPU_M", "250"),
            ("MODE", "fast"),
            ("PW", "s3cret"),
        ]
    );
    assert_eq!(cfg.mounts, [mount]);
    assert_eq!(cfg.log_path, "app/3.log");
    assert!(cfg.stdin && cfg.tty && !cfg.stdin_once);
    assert_eq!(cfg.labels[keys::CONTAINER_NAME], "app");
    assert_eq!(cfg.labels[keys::POD_NAMESPACE], "shop");
    assert!(
        !cfg.labels.contains_key("app"),
        "pod labels are not container labels"
    );
    let a = &cfg.annotations;
    assert_eq!(a[keys::RESTART_COUNT], "3");
    assert_eq!(a[keys::TERMINATION_GRACE_PERIOD], "7");
    assert_eq!(a[keys::TERMINATION_MESSAGE_PATH], "/dev/termination-log");
    assert_eq!(a[keys::CONTAINER_HASH], container_hash(c));
    let pre_stop: crate::kubelet::manifest::LifecycleHandler =
        serde_json::from_str(&a[keys::PRE_STOP_HANDLER]).unwrap();
    assert_eq!(pre_stop.exec.unwrap().command, ["sh", "-c", "sleep 1"]);
    let ports: Vec<crate::kubelet::manifest::ContainerPort> =
        serde_json::from_str(&a[keys::CONTAINER_PORTS]).unwrap();
    assert_eq!(ports[1].name.as_deref(), Some("dns"));

    let linux = cfg.linux.as_ref().unwrap();
    let r = linux.resources.as_ref().unwrap();
    assert_eq!(
        (r.cpu_shares, r.cpu_quota, r.cpu_period),
        (256, 50_000, 100_000)
    );
    assert_eq!(r.memory_limit_in_bytes, 256 << 20);
    // Burstable: 1000 - 1000 * 128Mi / 8Gi = 985 (integer division as kubelet's).
    assert_eq!(r.oom_score_adj, 985);
    let sc = linux.security_context.as_ref().unwrap();
    assert_eq!(sc.run_as_user.as_ref().unwrap().value, 1001);
    assert_eq!(sc.run_as_group.as_ref().unwrap().value, 3000);
    assert_eq!(sc.supplemental_groups, [2000, 4000]);
    assert!(sc.no_new_privs && sc.readonly_rootfs && !sc.privileged);
    let caps = sc.capabilities.as_ref().unwrap();
    assert_eq!(
        (
            caps.add_capabilities.as_slice(),
            caps.drop_capabilities.as_slice()
        ),
        (&["NET_ADMIN".to_string()][..], &["ALL".to_string()][..])
    );
    assert_eq!(
        sc.seccomp.as_ref().unwrap().profile_type,
        ProfileType::RuntimeDefault as i32
    );
    assert!(sc.masked_paths.contains(&"/proc/kcore".to_string()));
    assert!(sc.readonly_paths.contains(&"/proc/sys".to_string()));
    assert_eq!(
        sc.namespace_options.as_ref().unwrap().pid,
        cri::NamespaceMode::Pod as i32
    );

    // The second container: defaults everywhere, no preStop/ports annotations, pod's user.
    let cfg = container_config_with(
        &p,
        &p.spec.containers[1],
        0,
        &info(),
        &sources(),
        vec![],
        8 * GI,
    )
    .unwrap();
    assert!(!cfg.annotations.contains_key(keys::PRE_STOP_HANDLER));
    assert!(!cfg.annotations.contains_key(keys::CONTAINER_PORTS));
    let sc = cfg.linux.unwrap().security_context.unwrap();
    assert_eq!(sc.run_as_user.unwrap().value, 1000);
    assert!(!sc.no_new_privs);
    assert_eq!(
        sc.seccomp.unwrap().profile_type,
        ProfileType::Unconfined as i32
    );
}

#[test]
fn missing_config_is_a_create_container_config_error() {
    let mut p = pod(FULL);
    apply_defaults(&mut p);
    let c = &p.spec.containers[0];
    let err = container_config_with(&p, c, 0, &info(), &ConfigSources::default(), vec![], GI)
        .unwrap_err();
    let msg = format!("{err:#}");
    assert!(msg.contains("container \"app\""), "{msg}");
    assert!(
        msg.contains("envFrom[0]: configmap \"cfg\" not found"),
        "{msg}"
    );

    let mut no_key = p.clone();
    no_key.spec.containers[0].env_from.clear();
    no_key.spec.containers[0].env[7]
        .value_from
        .as_mut()
        .unwrap()
        .config_map_key_ref
        .as_mut()
        .unwrap()
        .key = "absent".into();
    let err = container_config_with(
        &no_key,
        &no_key.spec.containers[0],
        0,
        &info(),
        &sources(),
        vec![],
        GI,
    )
    .unwrap_err();
    assert!(
        format!("{err:#}").contains("env \"MODE\": couldn't find key absent in ConfigMap shop/cfg"),
        "{err:#}"
    );

    let mut root = p.clone();
    let sc = root.spec.containers[0].security_context.as_mut().unwrap();
    sc.run_as_user = Some(0);
    sc.run_as_non_root = Some(true);
    let err = container_config_with(
        &root,
        &root.spec.containers[0],
        0,
        &info(),
        &sources(),
        vec![],
        GI,
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("runAsUser breaks non-root policy"),
        "{err}"
    );
}

#[test]
fn validation_names_the_field() {
    let cases: &[(&str, &str)] = &[
        (
            "spec:\n  containers: [{name: a, image: busybox}]\n  volumes:\n  - {name: ok, emptyDir: {}}\n  - {name: data, persistentVolumeClaim: {claimName: x}}\n",
            "spec.volumes[1] (\"data\"): volume type \"persistentVolumeClaim\" is not supported",
        ),
        (
            "spec:\n  containers: [{name: a, image: busybox, livenessProbe: {grpc: {port: 1}}}]\n",
            "spec.containers[0].livenessProbe.grpc: not supported",
        ),
        ("spec:\n  containers: [{name: a}]\n", "spec.containers[0].image: required"),
        ("spec:\n  containers: []\n", "spec.containers: required"),
        (
            "spec:\n  containers: [{name: a, image: b}, {name: a, image: b}]\n",
            "spec.containers[1].name: \"a\" is duplicated",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, volumeMounts: [{name: nope, mountPath: /x}]}]\n",
            "spec.containers[0].volumeMounts[0].name: volume \"nope\" not found in spec.volumes",
        ),
        (
            "spec:\n  initContainers: [{name: s, image: b, restartPolicy: Always}]\n  containers: [{name: a, image: b}]\n",
            "spec.initContainers[0].restartPolicy: sidecar init containers (restartPolicy: Always) are not supported",
        ),
        (
            "spec:\n  containers: [{name: My_App, image: b}]\n",
            "spec.containers[0].name: \"My_App\" must be a DNS-1123 label",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, resources: {requests: {cpu: lots}}}]\n",
            "spec.containers[0].resources.requests[cpu]: quantity \"lots\"",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, resources: {requests: {cpu: '2'}, limits: {cpu: '1'}}}]\n",
            "spec.containers[0].resources.requests[cpu]: \"2\" must be less than or equal to cpu limit of \"1\"",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, resources: {limits: {nvidia.com/gpu: '1'}}}]\n",
            "resource \"nvidia.com/gpu\" is not supported",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, volumeMounts: [{name: v, mountPath: /x, subPath: ../../etc}]}]\n  volumes: [{name: v, emptyDir: {}}]\n",
            "spec.containers[0].volumeMounts[0].subPath: \"../../etc\" must not contain '..'",
        ),
        (
            "spec:\n  containers: [{name: a, image: b}]\n  volumes: [{name: v, hostPath: {path: /x, type: Weird}}]\n",
            "spec.volumes[0] (\"v\").hostPath.type: \"Weird\" is not a hostPath type",
        ),
        (
            "spec:\n  containers: [{name: a, image: b}]\n  volumes: [{name: v, projected: {sources: [{serviceAccountToken: {path: t}}]}}]\n",
            "projected.sources[0].serviceAccountToken: not supported",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, readinessProbe: {httpGet: {port: web}}}]\n",
            "spec.containers[0].readinessProbe.httpGet.port: no container port named \"web\"",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, livenessProbe: {}}]\n",
            "spec.containers[0].livenessProbe: must specify a handler type",
        ),
        (
            "spec:\n  dnsPolicy: None\n  containers: [{name: a, image: b}]\n",
            "spec.dnsConfig: must provide `dnsConfig` when `dnsPolicy` is None",
        ),
        (
            "spec:\n  containers: [{name: a, image: b, env: [{name: X, valueFrom: {fieldRef: {fieldPath: spec.foo}}}]}]\n",
            "spec.containers[0].env[0].valueFrom.fieldRef.fieldPath: \"spec.foo\" is not supported",
        ),
        (
            "spec:\n  hostAliases: [{ip: 10.0.0.300, hostnames: [a]}]\n  containers: [{name: a, image: b}]\n",
            "spec.hostAliases[0].ip: \"10.0.0.300\" must be a valid IP address",
        ),
        (
            "spec:\n  hostAliases: [{ip: \"::1\", hostnames: [ok.example, Not_OK]}]\n  containers: [{name: a, image: b}]\n",
            "spec.hostAliases[0].hostnames[1]: \"Not_OK\" must be a DNS-1123 subdomain",
        ),
        (
            "spec:\n  subdomain: a.b\n  containers: [{name: a, image: b}]\n",
            "spec.subdomain: \"a.b\" must be a DNS-1123 label",
        ),
    ];
    for (spec, want) in cases {
        let p = pod(&format!(
            "apiVersion: v1\nkind: Pod\nmetadata: {{name: p}}\n{spec}"
        ));
        let err = validate(&p).unwrap_err().to_string();
        assert!(err.starts_with("pod \"p\" is invalid: "), "{err}");
        assert!(err.contains(want), "want {want:?} in {err:?}");
    }
    let p = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: Bad_Name}\nspec: {containers: [{name: a, image: b}]}\n");
    assert!(validate(&p)
        .unwrap_err()
        .to_string()
        .contains("metadata.name: \"Bad_Name\" must be a DNS-1123 subdomain"));
    let mut full = pod(FULL);
    apply_defaults(&mut full);
    validate(&full).unwrap();
    let aliases = pod("apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  hostAliases: [{ip: 10.1.2.3, hostnames: [foo.local, bar]}, {ip: \"fd00::1\"}]\n  containers: [{name: a, image: b}]\n");
    validate(&aliases).unwrap();
}
