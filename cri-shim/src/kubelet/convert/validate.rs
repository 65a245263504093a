//! What the API server's validation would refuse, and what this kubelet cannot do, as errors
//! naming the field path (`spec.containers[0].livenessProbe.grpc: not supported`). Everything
//! is checked before anything is created, so a bad manifest leaves nothing behind.
use std::collections::HashSet;

use crate::kubelet::manifest::{
    Container, HttpGetAction, IntOrString, KeyToPath, LifecycleHandler, Pod, Probe,
    ResourceRequirements, SeccompProfile, TcpSocketAction,
};
use crate::kubelet::quantity;

/// Collects every problem; the error lists them all, one per line.
struct Errors(Vec<String>);

impl Errors {
    fn add(&mut self, path: impl std::fmt::Display, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }
}

fn is_dns1123_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

fn is_dns1123_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns1123_label)
}

fn check_label(e: &mut Errors, path: &str, value: &str) {
    if value.is_empty() {
        e.add(path, "required");
    } else if !is_dns1123_label(value) {
        e.add(
            path,
            format!("{value:?} must be a DNS-1123 label (at most 63 lowercase letters, digits or '-', starting and ending with a letter or digit)"),
        );
    }
}

/// A relative path that stays below its base: not absolute, no `..` component.
fn check_descending_path(e: &mut Errors, path: &str, value: &str) {
    if value.starts_with('/') {
        e.add(path, format!("{value:?} must be a relative path"));
    } else if value.split('/').any(|c| c == "..") {
        e.add(path, format!("{value:?} must not contain '..'"));
    }
}

fn check_mode(e: &mut Errors, path: &str, mode: Option<i32>) {
    if let Some(m) = mode {
        if !(0..=0o777).contains(&m) {
            e.add(path, format!("{m} must be between 0 and 0777 (511)"));
        }
    }
}

fn check_port(e: &mut Errors, path: &str, port: &IntOrString, container: &Container) {
    match port {
        IntOrString::Int(p) if !(1..=65535).contains(p) => {
            e.add(path, format!("{p} must be between 1 and 65535"))
        }
        IntOrString::Int(_) => {}
        IntOrString::String(name) => {
            if !container
                .ports
                .iter()
                .any(|p| p.name.as_deref() == Some(name))
            {
                e.add(path, format!("no container port named {name:?}"));
            }
        }
    }
}

fn check_http_tcp(
    e: &mut Errors,
    path: &str,
    http: Option<&HttpGetAction>,
    tcp: Option<&TcpSocketAction>,
    c: &Container,
) {
    if let Some(h) = http {
        check_port(e, &format!("{path}.httpGet.port"), &h.port, c);
        if let Some(s) = h.scheme.as_deref() {
            if s != "HTTP" && s != "HTTPS" {
                e.add(
                    format!("{path}.httpGet.scheme"),
                    format!("{s:?} must be HTTP or HTTPS"),
                );
            }
        }
    }
    if let Some(t) = tcp {
        check_port(e, &format!("{path}.tcpSocket.port"), &t.port, c);
    }
}

fn check_probe(e: &mut Errors, path: &str, p: &Probe, c: &Container, liveness_like: bool) {
    if p.grpc.is_some() {
        e.add(format!("{path}.grpc"), "not supported");
        return;
    }
    let handlers = [
        p.exec.is_some(),
        p.http_get.is_some(),
        p.tcp_socket.is_some(),
    ];
    match handlers.iter().filter(|h| **h).count() {
        0 => e.add(
            path,
            "must specify a handler type (exec, httpGet or tcpSocket)",
        ),
        1 => {}
        _ => e.add(path, "may not specify more than 1 handler type"),
    }
    if let Some(x) = &p.exec {
        if x.command.is_empty() {
            e.add(format!("{path}.exec.command"), "required");
        }
    }
    check_http_tcp(e, path, p.http_get.as_ref(), p.tcp_socket.as_ref(), c);
    for (field, v, min) in [
        ("initialDelaySeconds", p.initial_delay_seconds, 0),
        ("timeoutSeconds", p.timeout_seconds, 1),
        ("periodSeconds", p.period_seconds, 1),
        ("successThreshold", p.success_threshold, 1),
        ("failureThreshold", p.failure_threshold, 1),
    ] {
        if let Some(v) = v {
            if v < min {
                e.add(
                    format!("{path}.{field}"),
                    format!("{v} must be at least {min}"),
                );
            }
        }
    }
    if liveness_like && p.success_threshold.is_some_and(|s| s != 1) {
        e.add(format!("{path}.successThreshold"), "must be 1");
    }
}

fn check_handler(e: &mut Errors, path: &str, h: &LifecycleHandler, c: &Container) {
    let n = [
        h.exec.is_some(),
        h.http_get.is_some(),
        h.tcp_socket.is_some(),
        h.sleep.is_some(),
    ]
    .iter()
    .filter(|x| **x)
    .count();
    match n {
        0 => e.add(path, "must specify a handler type (exec, httpGet or sleep)"),
        1 => {}
        _ => e.add(path, "may not specify more than 1 handler type"),
    }
    if let Some(x) = &h.exec {
        if x.command.is_empty() {
            e.add(format!("{path}.exec.command"), "required");
        }
    }
    if let Some(s) = &h.sleep {
        if s.seconds < 0 {
            e.add(format!("{path}.sleep.seconds"), "must be non-negative");
        }
    }
    check_http_tcp(e, path, h.http_get.as_ref(), None, c);
}

fn check_resources(e: &mut Errors, path: &str, r: &ResourceRequirements) {
    for (kind, map) in [("limits", &r.limits), ("requests", &r.requests)] {
        for (name, q) in map {
            let field = format!("{path}.{kind}[{name}]");
            if !matches!(name.as_str(), "cpu" | "memory" | "ephemeral-storage") {
                e.add(&field, format!("resource {name:?} is not supported (only cpu, memory and ephemeral-storage)"));
                continue;
            }
            match quantity::is_negative(q) {
                Err(err) => e.add(&field, err),
                Ok(true) => e.add(&field, "must be greater than or equal to 0"),
                Ok(false) => {}
            }
        }
    }
    for (name, request) in &r.requests {
        let Some(limit) = r.limits.get(name) else {
            continue;
        };
        if let (Ok(req), Ok(lim)) = (quantity::milli_value(request), quantity::milli_value(limit)) {
            if req > lim {
                e.add(
                    format!("{path}.requests[{name}]"),
                    format!(
                        "{:?} must be less than or equal to {name} limit of {:?}",
                        request.0, limit.0
                    ),
                );
            }
        }
    }
}

fn check_seccomp(e: &mut Errors, path: &str, p: Option<&SeccompProfile>) {
    let Some(p) = p else { return };
    match p.type_.as_str() {
        "RuntimeDefault" | "Unconfined" => {}
        "Localhost" => match p.localhost_profile.as_deref() {
            None | Some("") => e.add(
                format!("{path}.localhostProfile"),
                "required when type is Localhost",
            ),
            Some(lp) => check_descending_path(e, &format!("{path}.localhostProfile"), lp),
        },
        other => e.add(
            format!("{path}.type"),
            format!("{other:?} must be RuntimeDefault, Unconfined or Localhost"),
        ),
    }
}

fn check_container(
    e: &mut Errors,
    pod: &Pod,
    path: &str,
    c: &Container,
    init: bool,
    volumes: &HashSet<&str>,
) {
    check_label(e, &format!("{path}.name"), &c.name);
    if c.image.trim().is_empty() {
        e.add(format!("{path}.image"), "required");
    }
    if init {
        match c.restart_policy.as_deref() {
            None => {}
            Some("Always") => e.add(
                format!("{path}.restartPolicy"),
                "sidecar init containers (restartPolicy: Always) are not supported",
            ),
            Some(other) => e.add(
                format!("{path}.restartPolicy"),
                format!("{other:?}: only Always is allowed"),
            ),
        }
        for (field, set) in [
            ("livenessProbe", c.liveness_probe.is_some()),
            ("readinessProbe", c.readiness_probe.is_some()),
            ("startupProbe", c.startup_probe.is_some()),
            ("lifecycle", c.lifecycle.is_some()),
        ] {
            if set {
                e.add(
                    format!("{path}.{field}"),
                    "may not be set for init containers",
                );
            }
        }
    } else if let Some(rp) = &c.restart_policy {
        e.add(
            format!("{path}.restartPolicy"),
            format!("{rp:?}: only allowed for init containers"),
        );
    }
    for (i, p) in c.ports.iter().enumerate() {
        let pp = format!("{path}.ports[{i}]");
        if !(1..=65535).contains(&p.container_port) {
            e.add(
                format!("{pp}.containerPort"),
                format!("{} must be between 1 and 65535", p.container_port),
            );
        }
        if let Some(h) = p.host_port {
            if !(0..=65535).contains(&h) {
                e.add(
                    format!("{pp}.hostPort"),
                    format!("{h} must be between 0 and 65535"),
                );
            } else if pod.spec.host_network && h != 0 && h != p.container_port {
                e.add(
                    format!("{pp}.hostPort"),
                    "must match containerPort when hostNetwork is true",
                );
            }
        }
        if let Some(proto) = p.protocol.as_deref() {
            if !matches!(proto, "TCP" | "UDP" | "SCTP") {
                e.add(
                    format!("{pp}.protocol"),
                    format!("{proto:?} must be TCP, UDP or SCTP"),
                );
            }
        }
    }
    for (i, v) in c.env.iter().enumerate() {
        let ep = format!("{path}.env[{i}]");
        if v.name.is_empty() {
            e.add(format!("{ep}.name"), "required");
        } else if v.name.contains('=') || v.name.chars().any(|ch| !(' '..='~').contains(&ch)) {
            e.add(
                format!("{ep}.name"),
                format!("{:?} must be printable ASCII without '='", v.name),
            );
        }
        if let Some(from) = &v.value_from {
            if v.value.as_deref().is_some_and(|x| !x.is_empty()) {
                e.add(
                    format!("{ep}.valueFrom"),
                    "may not be specified when `value` is not empty",
                );
            }
            let n = [
                from.field_ref.is_some(),
                from.resource_field_ref.is_some(),
                from.config_map_key_ref.is_some(),
                from.secret_key_ref.is_some(),
            ]
            .iter()
            .filter(|x| **x)
            .count();
            if n != 1 {
                e.add(format!("{ep}.valueFrom"), "must specify exactly one of fieldRef, resourceFieldRef, configMapKeyRef or secretKeyRef");
            }
            if let Some(f) = &from.field_ref {
                let ok = matches!(
                    f.field_path.as_str(),
                    "metadata.name"
                        | "metadata.namespace"
                        | "metadata.uid"
                        | "spec.nodeName"
                        | "spec.serviceAccountName"
                        | "status.hostIP"
                        | "status.hostIPs"
                        | "status.podIP"
                        | "status.podIPs"
                ) || f.field_path.starts_with("metadata.labels[")
                    || f.field_path.starts_with("metadata.annotations[");
                if !ok {
                    e.add(
                        format!("{ep}.valueFrom.fieldRef.fieldPath"),
                        format!("{:?} is not supported", f.field_path),
                    );
                }
            }
            if let Some(r) = &from.resource_field_ref {
                check_resource_field(e, &format!("{ep}.valueFrom.resourceFieldRef"), &r.resource);
            }
            for (field, k) in [
                ("configMapKeyRef", &from.config_map_key_ref),
                ("secretKeyRef", &from.secret_key_ref),
            ] {
                if let Some(k) = k {
                    if k.name.is_empty() {
                        e.add(format!("{ep}.valueFrom.{field}.name"), "required");
                    }
                    if k.key.is_empty() {
                        e.add(format!("{ep}.valueFrom.{field}.key"), "required");
                    }
                }
            }
        }
    }
    for (i, f) in c.env_from.iter().enumerate() {
        let n = usize::from(f.config_map_ref.is_some()) + usize::from(f.secret_ref.is_some());
        if n != 1 {
            e.add(
                format!("{path}.envFrom[{i}]"),
                "must specify exactly one of configMapRef or secretRef",
            );
        }
    }
    check_resources(e, &format!("{path}.resources"), &c.resources);
    let mut mount_paths = HashSet::new();
    for (i, m) in c.volume_mounts.iter().enumerate() {
        let mp = format!("{path}.volumeMounts[{i}]");
        if !volumes.contains(m.name.as_str()) {
            e.add(
                format!("{mp}.name"),
                format!("volume {:?} not found in spec.volumes", m.name),
            );
        }
        if m.mount_path.is_empty() {
            e.add(format!("{mp}.mountPath"), "required");
        } else if !mount_paths.insert(m.mount_path.trim_end_matches('/')) {
            e.add(
                format!("{mp}.mountPath"),
                format!("{:?} must be unique", m.mount_path),
            );
        }
        if let Some(sp) = &m.sub_path {
            check_descending_path(e, &format!("{mp}.subPath"), sp);
        }
        match m.mount_propagation.as_deref() {
            None | Some("None") | Some("HostToContainer") => {}
            Some("Bidirectional") => {
                if !c
                    .security_context
                    .as_ref()
                    .and_then(|s| s.privileged)
                    .unwrap_or(false)
                {
                    e.add(
                        format!("{mp}.mountPropagation"),
                        "Bidirectional is only allowed for privileged containers",
                    );
                }
            }
            Some(other) => e.add(
                format!("{mp}.mountPropagation"),
                format!("{other:?} must be None, HostToContainer or Bidirectional"),
            ),
        }
        match m.recursive_read_only.as_deref() {
            None | Some("Disabled") => {}
            Some("IfPossible") | Some("Enabled") => {
                if !m.read_only {
                    e.add(
                        format!("{mp}.recursiveReadOnly"),
                        "may only be specified when readOnly is true",
                    );
                }
                if m.mount_propagation.as_deref().is_some_and(|p| p != "None") {
                    e.add(
                        format!("{mp}.recursiveReadOnly"),
                        "requires mountPropagation None",
                    );
                }
            }
            Some(other) => e.add(
                format!("{mp}.recursiveReadOnly"),
                format!("{other:?} must be Disabled, IfPossible or Enabled"),
            ),
        }
    }
    for (field, probe) in [
        ("livenessProbe", &c.liveness_probe),
        ("readinessProbe", &c.readiness_probe),
        ("startupProbe", &c.startup_probe),
    ] {
        if let Some(p) = probe {
            check_probe(
                e,
                &format!("{path}.{field}"),
                p,
                c,
                field != "readinessProbe",
            );
        }
    }
    if let Some(l) = &c.lifecycle {
        for (field, h) in [("postStart", &l.post_start), ("preStop", &l.pre_stop)] {
            if let Some(h) = h {
                check_handler(e, &format!("{path}.lifecycle.{field}"), h, c);
            }
        }
        if l.stop_signal.is_some() {
            e.add(format!("{path}.lifecycle.stopSignal"), "not supported");
        }
    }
    if let Some(sc) = &c.security_context {
        let sp = format!("{path}.securityContext");
        if sc.se_linux_options.is_some() {
            e.add(format!("{sp}.seLinuxOptions"), "not supported");
        }
        if sc.app_armor_profile.is_some() {
            e.add(format!("{sp}.appArmorProfile"), "not supported");
        }
        check_seccomp(
            e,
            &format!("{sp}.seccompProfile"),
            sc.seccomp_profile.as_ref(),
        );
        match sc.proc_mount.as_deref() {
            None | Some("Default") => {}
            Some("Unmasked") => {
                if pod.spec.host_users != Some(false) {
                    e.add(
                        format!("{sp}.procMount"),
                        "Unmasked requires hostUsers: false",
                    );
                }
            }
            Some(other) => e.add(
                format!("{sp}.procMount"),
                format!("{other:?} must be Default or Unmasked"),
            ),
        }
        if sc.privileged == Some(true) && sc.allow_privilege_escalation == Some(false) {
            e.add(
                format!("{sp}.allowPrivilegeEscalation"),
                "cannot be false when privileged is true",
            );
        }
        if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
            e.add(format!("{sp}.runAsUser"), "0 breaks runAsNonRoot");
        }
    }
}

fn check_resource_field(e: &mut Errors, path: &str, resource: &str) {
    if !matches!(
        resource,
        "limits.cpu"
            | "limits.memory"
            | "limits.ephemeral-storage"
            | "requests.cpu"
            | "requests.memory"
            | "requests.ephemeral-storage"
    ) {
        e.add(
            format!("{path}.resource"),
            format!("{resource:?} is not supported"),
        );
    }
}

fn check_items(e: &mut Errors, path: &str, items: &[KeyToPath]) {
    for (i, item) in items.iter().enumerate() {
        let ip = format!("{path}.items[{i}]");
        if item.key.is_empty() {
            e.add(format!("{ip}.key"), "required");
        }
        if item.path.is_empty() {
            e.add(format!("{ip}.path"), "required");
        } else {
            check_descending_path(e, &format!("{ip}.path"), &item.path);
        }
        check_mode(e, &format!("{ip}.mode"), item.mode);
    }
}

fn check_downward_items(
    e: &mut Errors,
    path: &str,
    items: &[crate::kubelet::manifest::DownwardApiVolumeFile],
) {
    for (i, f) in items.iter().enumerate() {
        let ip = format!("{path}.items[{i}]");
        if f.path.is_empty() {
            e.add(format!("{ip}.path"), "required");
        } else {
            check_descending_path(e, &format!("{ip}.path"), &f.path);
        }
        check_mode(e, &format!("{ip}.mode"), f.mode);
        match (&f.field_ref, &f.resource_field_ref) {
            (Some(r), None) => {
                let ok = matches!(
                    r.field_path.as_str(),
                    "metadata.name"
                        | "metadata.namespace"
                        | "metadata.uid"
                        | "metadata.labels"
                        | "metadata.annotations"
                ) || r.field_path.starts_with("metadata.labels[")
                    || r.field_path.starts_with("metadata.annotations[");
                if !ok {
                    e.add(
                        format!("{ip}.fieldRef.fieldPath"),
                        format!("{:?} is not supported in a volume", r.field_path),
                    );
                }
            }
            (None, Some(r)) => {
                check_resource_field(e, &format!("{ip}.resourceFieldRef"), &r.resource);
                if r.container_name.as_deref().unwrap_or("").is_empty() {
                    e.add(format!("{ip}.resourceFieldRef.containerName"), "required");
                }
            }
            _ => e.add(
                &ip,
                "must specify exactly one of fieldRef or resourceFieldRef",
            ),
        }
    }
}

/// Everything we cannot or will not do, as errors naming the field path, all at once.
pub fn validate(pod: &Pod) -> anyhow::Result<()> {
    let mut e = Errors(Vec::new());
    let meta = &pod.metadata;
    let spec = &pod.spec;
    if meta.name.is_empty() {
        e.add("metadata.name", "required");
    } else if !is_dns1123_subdomain(&meta.name) {
        e.add(
            "metadata.name",
            format!(
                "{:?} must be a DNS-1123 subdomain (lowercase letters, digits, '-' and '.')",
                meta.name
            ),
        );
    }
    if !meta.namespace.is_empty() {
        check_label(&mut e, "metadata.namespace", &meta.namespace);
    }
    if spec.containers.is_empty() {
        e.add("spec.containers", "required (at least one container)");
    }
    let mut volume_names = HashSet::new();
    for (i, v) in spec.volumes.iter().enumerate() {
        let vp = format!("spec.volumes[{i}] ({:?})", v.name);
        check_label(&mut e, &format!("spec.volumes[{i}].name"), &v.name);
        if !volume_names.insert(v.name.as_str()) {
            e.add(
                format!("spec.volumes[{i}].name"),
                format!("{:?} is duplicated", v.name),
            );
        }
        if let Some(kind) = v.other.keys().next() {
            e.add(&vp, format!("volume type {kind:?} is not supported (only emptyDir, hostPath, configMap, secret, projected and downwardAPI)"));
            continue;
        }
        let n = [
            v.empty_dir.is_some(),
            v.host_path.is_some(),
            v.config_map.is_some(),
            v.secret.is_some(),
            v.projected.is_some(),
            v.downward_api.is_some(),
        ]
        .iter()
        .filter(|x| **x)
        .count();
        match n {
            0 => e.add(&vp, "must specify a volume type"),
            1 => {}
            _ => e.add(&vp, "may not specify more than 1 volume type"),
        }
        if let Some(d) = &v.empty_dir {
            match d.medium.as_deref() {
                None | Some("") | Some("Memory") => {}
                Some(m) => e.add(
                    format!("{vp}.emptyDir.medium"),
                    format!("{m:?} is not supported (only \"\" and Memory)"),
                ),
            }
            if let Some(q) = &d.size_limit {
                if let Err(err) = quantity::check(q) {
                    e.add(format!("{vp}.emptyDir.sizeLimit"), err);
                }
            }
        }
        if let Some(h) = &v.host_path {
            if !h.path.starts_with('/') {
                e.add(
                    format!("{vp}.hostPath.path"),
                    format!("{:?} must be an absolute path", h.path),
                );
            }
            let t = h.type_.as_deref().unwrap_or("");
            if !matches!(
                t,
                "" | "DirectoryOrCreate"
                    | "Directory"
                    | "FileOrCreate"
                    | "File"
                    | "Socket"
                    | "CharDevice"
                    | "BlockDevice"
            ) {
                e.add(
                    format!("{vp}.hostPath.type"),
                    format!("{t:?} is not a hostPath type"),
                );
            }
        }
        if let Some(c) = &v.config_map {
            if c.name.is_empty() {
                e.add(format!("{vp}.configMap.name"), "required");
            }
            check_items(&mut e, &format!("{vp}.configMap"), &c.items);
            check_mode(
                &mut e,
                &format!("{vp}.configMap.defaultMode"),
                c.default_mode,
            );
        }
        if let Some(s) = &v.secret {
            if s.secret_name.is_empty() {
                e.add(format!("{vp}.secret.secretName"), "required");
            }
            check_items(&mut e, &format!("{vp}.secret"), &s.items);
            check_mode(&mut e, &format!("{vp}.secret.defaultMode"), s.default_mode);
        }
        if let Some(d) = &v.downward_api {
            check_downward_items(&mut e, &format!("{vp}.downwardAPI"), &d.items);
            check_mode(
                &mut e,
                &format!("{vp}.downwardAPI.defaultMode"),
                d.default_mode,
            );
        }
        if let Some(p) = &v.projected {
            check_mode(
                &mut e,
                &format!("{vp}.projected.defaultMode"),
                p.default_mode,
            );
            for (j, s) in p.sources.iter().enumerate() {
                let sp = format!("{vp}.projected.sources[{j}]");
                if s.service_account_token.is_some() {
                    e.add(
                        format!("{sp}.serviceAccountToken"),
                        "not supported (there is no API server to issue tokens)",
                    );
                }
                if s.cluster_trust_bundle.is_some() {
                    e.add(format!("{sp}.clusterTrustBundle"), "not supported");
                }
                let n = [
                    s.config_map.is_some(),
                    s.secret.is_some(),
                    s.downward_api.is_some(),
                ]
                .iter()
                .filter(|x| **x)
                .count();
                if n > 1 {
                    e.add(&sp, "may not specify more than 1 source type");
                }
                for (field, src) in [("configMap", &s.config_map), ("secret", &s.secret)] {
                    if let Some(src) = src {
                        if src.name.is_empty() {
                            e.add(format!("{sp}.{field}.name"), "required");
                        }
                        check_items(&mut e, &format!("{sp}.{field}"), &src.items);
                    }
                }
                if let Some(d) = &s.downward_api {
                    check_downward_items(&mut e, &format!("{sp}.downwardAPI"), &d.items);
                }
            }
        }
    }
    let mut names = HashSet::new();
    for (kind, list, init) in [
        ("initContainers", &spec.init_containers, true),
        ("containers", &spec.containers, false),
    ] {
        for (i, c) in list.iter().enumerate() {
            let path = format!("spec.{kind}[{i}]");
            if !c.name.is_empty() && !names.insert(c.name.as_str()) {
                e.add(
                    format!("{path}.name"),
                    format!("{:?} is duplicated", c.name),
                );
            }
            check_container(&mut e, pod, &path, c, init, &volume_names);
        }
    }
    if let Some(g) = spec.termination_grace_period_seconds {
        if g < 0 {
            e.add("spec.terminationGracePeriodSeconds", "must be non-negative");
        }
    }
    if let Some(d) = spec.active_deadline_seconds {
        if d <= 0 {
            e.add("spec.activeDeadlineSeconds", "must be positive");
        }
    }
    if spec.dns_policy == Some(crate::kubelet::manifest::DnsPolicy::None)
        && spec.dns_config.is_none()
    {
        e.add(
            "spec.dnsConfig",
            "must provide `dnsConfig` when `dnsPolicy` is None",
        );
    }
    if let Some(h) = &spec.hostname {
        if !h.is_empty() && !is_dns1123_label(h) {
            e.add("spec.hostname", format!("{h:?} must be a DNS-1123 label"));
        }
    }
    if let Some(sub) = spec.subdomain.as_deref().filter(|s| !s.is_empty()) {
        if !is_dns1123_label(sub) {
            e.add(
                "spec.subdomain",
                format!("{sub:?} must be a DNS-1123 label"),
            );
        }
    }
    // As the API server's ValidateHostAliases: an IP address, DNS-1123 subdomain hostnames.
    for (i, alias) in spec.host_aliases.iter().enumerate() {
        if alias.ip.parse::<std::net::IpAddr>().is_err() {
            e.add(
                format!("spec.hostAliases[{i}].ip"),
                format!("{:?} must be a valid IP address", alias.ip),
            );
        }
        for (j, name) in alias.hostnames.iter().enumerate() {
            if !is_dns1123_subdomain(name) {
                e.add(
                    format!("spec.hostAliases[{i}].hostnames[{j}]"),
                    format!("{name:?} must be a DNS-1123 subdomain"),
                );
            }
        }
    }
    if !spec.image_pull_secrets.is_empty() {
        e.add(
            "spec.imagePullSecrets",
            "not supported (configure registry credentials in the runtime)",
        );
    }
    if spec.share_process_namespace == Some(true) && spec.host_pid {
        e.add(
            "spec.shareProcessNamespace",
            "ShareProcessNamespace and HostPID cannot both be enabled",
        );
    }
    if spec.host_users == Some(false) {
        for (field, set) in [
            ("hostNetwork", spec.host_network),
            ("hostPID", spec.host_pid),
            ("hostIPC", spec.host_ipc),
        ] {
            if set {
                e.add(
                    format!("spec.{field}"),
                    "cannot be true when hostUsers is false",
                );
            }
        }
    }
    if let Some(sc) = &spec.security_context {
        if sc.se_linux_options.is_some() {
            e.add("spec.securityContext.seLinuxOptions", "not supported");
        }
        if sc.app_armor_profile.is_some() {
            e.add("spec.securityContext.appArmorProfile", "not supported");
        }
        check_seccomp(
            &mut e,
            "spec.securityContext.seccompProfile",
            sc.seccomp_profile.as_ref(),
        );
        if let Some(p) = sc.supplemental_groups_policy.as_deref() {
            if p != "Merge" && p != "Strict" {
                e.add(
                    "spec.securityContext.supplementalGroupsPolicy",
                    format!("{p:?} must be Merge or Strict"),
                );
            }
        }
        for (i, s) in sc.sysctls.iter().enumerate() {
            if s.name.is_empty() {
                e.add(
                    format!("spec.securityContext.sysctls[{i}].name"),
                    "required",
                );
            }
        }
        if sc.run_as_non_root == Some(true) && sc.run_as_user == Some(0) {
            e.add("spec.securityContext.runAsUser", "0 breaks runAsNonRoot");
        }
    }
    if e.0.is_empty() {
        return Ok(());
    }
    let who = if meta.name.is_empty() {
        "pod".to_string()
    } else {
        format!("pod {:?}", meta.name)
    };
    anyhow::bail!("{who} is invalid: {}", e.0.join("; "))
}
