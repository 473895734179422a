//! What ships: the Helm chart and the kustomize base (deploy/), every copy of the CRD, the Argo CD
//! health check, and the newcomer demo (hack/demo.sh), checked for real.
//!
//! - Both installs render, are applied server-side to the real control plane, and grant exactly
//!   the RBAC the operator uses: a SubjectAccessReview matrix of what must be allowed and what
//!   must not (Secrets list/write, Pods, wildcards, cluster-scoped writes).
//! - The operator binary then runs on a real token of the installed ServiceAccount (TokenRequest
//!   API) and completes resets end to end — retries, a terminal failure, TTL deletion, events,
//!   and leader election on a Lease — with no "forbidden" anywhere in its log.
//! - The demo runs to completion in non-interactive mode without touching the control plane it
//!   did not start.
//!
//! The control plane has no controller-manager: nothing here runs Pods, and the install
//! namespaces are never deleted (re-applying is idempotent).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, Simulator};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, PostParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::cluster::{cluster, local_bin, repo_root, unique_name};
use crate::support::operator::{
    condition, create, create_secret, free_port, http_get, phase, wait_event, wait_phase,
};
use crate::support::{docs, kind};

const BIN: &str = env!("CARGO_BIN_EXE_dts-operator");
const T: Duration = Duration::from_secs(30);
const CMD_TIMEOUT: Duration = Duration::from_secs(120);
/// Field manager of the objects these tests apply.
const FIELD_MANAGER: &str = "dts-operator-it-deploy";
const CRD_NAME: &str = "dtsjobresets.dtsops.io";

/// Every committed copy of the CRD; each must be exactly `dts-operator crd`.
const CRD_COPIES: [&str; 3] = [
    "crds/dtsops.io_dtsjobresets.yaml",
    "deploy/helm/dts-operator/crds/dtsops.io_dtsjobresets.yaml",
    "deploy/kustomize/crds/dtsops.io_dtsjobresets.yaml",
];
const CHART: &str = "deploy/helm/dts-operator";
const KUSTOMIZE: &str = "deploy/kustomize";
/// The kustomize base's fixed namespace and names.
const KUSTOMIZE_NS: &str = "dts-operator-system";
const KUSTOMIZE_SA: &str = "dts-operator";
const LEASE: &str = "dts-operator";

const AK_ID: &str = "LTAI5tDeployTest";
const AK_SECRET: &str = "deploy-secret-5e8d1c";

// --- processes ----------------------------------------------------------------------------

struct Out {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Out {
    fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout, or a panic that shows what failed.
    fn expect_ok(self, what: &str) -> String {
        assert!(
            self.ok(),
            "{what} failed ({:?})\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self.stdout
    }
}

/// Runs `program` in the repository root with optional stdin, bounded by `timeout`.
async fn exec_with(
    program: &Path,
    args: &[&str],
    stdin: Option<&str>,
    env: &[(&str, &str)],
    timeout: Duration,
) -> Out {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_owned();
        tokio::spawn(async move {
            let _ = pipe.write_all(input.as_bytes()).await;
        });
    }
    let out = tokio::time::timeout(timeout, child.wait_with_output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} did not finish within {timeout:?}",
                program.display()
            )
        })
        .expect("waiting for the child");
    Out {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

async fn helm(args: &[&str]) -> Out {
    exec_with(&local_bin("helm"), args, None, &[], CMD_TIMEOUT).await
}

/// The built kubectl (v1.36.3) with the admin kubeconfig.
async fn kubectl(args: &[&str], stdin: Option<&str>) -> Out {
    let c = cluster().await;
    let kubeconfig = c.kubeconfig_path().to_str().expect("UTF-8 path").to_owned();
    let mut all = vec!["--kubeconfig", kubeconfig.as_str()];
    all.extend_from_slice(args);
    exec_with(&local_bin("kubectl"), &all, stdin, &[], CMD_TIMEOUT).await
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

// --- manifests ----------------------------------------------------------------------------

fn name(v: &Value) -> &str {
    v["metadata"]["name"].as_str().unwrap_or_default()
}

fn find<'a>(docs: &'a [Value], k: &str, n: &str) -> &'a Value {
    docs.iter()
        .find(|d| kind(d) == k && name(d) == n)
        .unwrap_or_else(|| {
            panic!(
                "no {k} {n} among {:?}",
                docs.iter().map(|d| (kind(d), name(d))).collect::<Vec<_>>()
            )
        })
}

fn to_yaml_stream(docs: &[&Value]) -> String {
    docs.iter()
        .map(|d| serde_saphyr::to_string(d).expect("serializable"))
        .collect::<Vec<_>>()
        .join("---\n")
}

/// `helm template` of the chart (CRDs included), or the failed run.
async fn helm_template(release: &str, ns: &str, sets: &[&str]) -> Out {
    let mut args = vec![
        "template",
        release,
        CHART,
        "--namespace",
        ns,
        "--include-crds",
    ];
    for s in sets {
        args.push("--set");
        args.push(s);
    }
    helm(&args).await
}

async fn render_chart(release: &str, ns: &str, sets: &[&str]) -> Vec<Value> {
    docs(
        &helm_template(release, ns, sets)
            .await
            .expect_ok("helm template"),
    )
}

async fn render_kustomize() -> Vec<Value> {
    docs(
        &kubectl(&["kustomize", KUSTOMIZE], None)
            .await
            .expect_ok("kubectl kustomize deploy/kustomize"),
    )
}

/// Server-side apply: the CRD with --force-conflicts (shared with other tests and the demo,
/// identical content), then everything else without forcing.
async fn apply(docs: &[Value]) {
    let (crds, rest): (Vec<&Value>, Vec<&Value>) = docs
        .iter()
        .partition(|d| kind(d) == "CustomResourceDefinition");
    assert_eq!(crds.len(), 1, "exactly one CRD in the install");
    kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            "-",
        ],
        Some(&to_yaml_stream(&crds)),
    )
    .await
    .expect_ok("server-side apply of the CRD");
    kubectl(
        &[
            "wait",
            "--for=condition=Established",
            "--timeout=60s",
            &format!("crd/{CRD_NAME}"),
        ],
        None,
    )
    .await
    .expect_ok("waiting for the CRD");
    kubectl(
        &[
            "apply",
            "--server-side",
            "--field-manager",
            FIELD_MANAGER,
            "-f",
            "-",
        ],
        Some(&to_yaml_stream(&rest)),
    )
    .await
    .expect_ok("server-side apply of the install");
}

fn main_rules() -> Value {
    json!([
        {"apiGroups": ["dtsops.io"], "resources": ["dtsjobresets"], "verbs": ["get", "list", "watch", "delete"]},
        {"apiGroups": ["dtsops.io"], "resources": ["dtsjobresets/status"], "verbs": ["update"]},
        {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]},
        {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["create", "patch"]},
    ])
}

fn lease_rules() -> Value {
    json!([
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create", "get", "update", "delete"]},
    ])
}

/// `v` with every integral number as an integer (`100.0` and `100` compare equal).
fn numbers_normalized(v: &Value) -> Value {
    match v {
        Value::Number(n) => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => json!(f as i64),
            _ => v.clone(),
        },
        Value::Array(a) => Value::Array(a.iter().map(numbers_normalized).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (k.clone(), numbers_normalized(v)))
                .collect(),
        ),
        _ => v.clone(),
    }
}

/// The rendered RBAC is exactly the expected rules, bound to the ServiceAccount the Deployment
/// runs as, with no wildcard anywhere.
fn assert_rbac_objects(docs: &[Value], fullname: &str, install_ns: &str, watch_ns: Option<&str>) {
    let (role_kind, binding_kind) = match watch_ns {
        None => ("ClusterRole", "ClusterRoleBinding"),
        Some(_) => ("Role", "RoleBinding"),
    };
    let role = find(docs, role_kind, fullname);
    assert_eq!(role["rules"], main_rules(), "{role_kind} {fullname}");
    assert_eq!(role["metadata"]["namespace"].as_str(), watch_ns);
    let binding = find(docs, binding_kind, fullname);
    assert_eq!(
        binding["roleRef"],
        json!({"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": fullname})
    );
    let sa = find(docs, "Deployment", fullname)["spec"]["template"]["spec"]["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName")
        .to_owned();
    find(docs, "ServiceAccount", &sa);
    let subjects = json!([{"kind": "ServiceAccount", "name": sa, "namespace": install_ns}]);
    assert_eq!(binding["subjects"], subjects);
    let lease_role = format!("{fullname}-leases");
    assert_eq!(find(docs, "Role", &lease_role)["rules"], lease_rules());
    assert_eq!(
        find(docs, "Role", &lease_role)["metadata"]["namespace"],
        json!(install_ns)
    );
    assert_eq!(find(docs, "RoleBinding", &lease_role)["subjects"], subjects);
    for d in docs
        .iter()
        .filter(|d| matches!(kind(d), "Role" | "ClusterRole"))
    {
        let text = d["rules"].to_string();
        assert!(
            !text.contains("\"*\""),
            "wildcard in {} {}: {text}",
            kind(d),
            name(d)
        );
    }
    let kinds: Vec<&str> = docs
        .iter()
        .map(kind)
        .filter(|k| k.contains("Role"))
        .collect();
    assert_eq!(
        kinds.len(),
        4,
        "two roles and two bindings, nothing more: {kinds:?}"
    );
}

/// The operator's pod: hardened, probed, sized, with its identity from the downward API.
fn assert_pod_spec(pod: &Value, leader_elect: bool) {
    let psc = &pod["securityContext"];
    assert_eq!(psc["runAsNonRoot"], json!(true));
    assert_eq!(psc["seccompProfile"]["type"], json!("RuntimeDefault"));
    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false));
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true));
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]));
    assert_eq!(
        c["ports"],
        json!([{"name": "http-metrics", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(
        c["livenessProbe"]["httpGet"],
        json!({"path": "/healthz", "port": "http-metrics"})
    );
    assert_eq!(
        c["readinessProbe"]["httpGet"],
        json!({"path": "/readyz", "port": "http-metrics"})
    );
    assert!(
        c["resources"]["requests"]["cpu"].is_string(),
        "{}",
        c["resources"]
    );
    assert!(
        c["resources"]["requests"]["memory"].is_string(),
        "{}",
        c["resources"]
    );
    assert!(
        c["resources"]["limits"]["memory"].is_string(),
        "{}",
        c["resources"]
    );
    let env = c["env"].as_array().expect("env");
    for (var, field) in [
        ("POD_NAMESPACE", "metadata.namespace"),
        ("POD_NAME", "metadata.name"),
    ] {
        assert!(
            env.iter()
                .any(|e| e["name"] == var && e["valueFrom"]["fieldRef"]["fieldPath"] == field),
            "{var} from {field}: {env:?}"
        );
    }
    let args: Vec<&str> = c["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    assert_eq!(args[0], "run");
    assert!(args.contains(&"--metrics-addr=0.0.0.0:8080"), "{args:?}");
    assert_eq!(args.contains(&"--leader-elect"), leader_elect, "{args:?}");
    // Graceful shutdown gets its full bound before SIGKILL.
    let grace = pod["terminationGracePeriodSeconds"]
        .as_i64()
        .expect("grace period");
    assert!(
        grace > 30,
        "terminationGracePeriodSeconds {grace} <= --shutdown-timeout 30s"
    );
}

// --- access reviews -----------------------------------------------------------------------

/// One request attribute set for a SubjectAccessReview.
#[derive(Clone, Debug)]
struct Access {
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    subresource: Option<&'static str>,
    namespace: Option<String>,
    name: Option<&'static str>,
}

fn access(
    verb: &'static str,
    group: &'static str,
    resource: &'static str,
    ns: Option<&str>,
) -> Access {
    Access {
        verb,
        group,
        resource,
        subresource: None,
        namespace: ns.map(str::to_owned),
        name: None,
    }
}

impl Access {
    fn sub(mut self, s: &'static str) -> Self {
        self.subresource = Some(s);
        self
    }

    fn named(mut self, n: &'static str) -> Self {
        self.name = Some(n);
        self
    }
}

/// Asks the API server whether the ServiceAccount may do `a` (as its token would: user and
/// groups).
async fn sar(client: &kube::Client, sa_ns: &str, sa: &str, a: &Access) -> bool {
    let review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: Some(format!("system:serviceaccount:{sa_ns}:{sa}")),
            groups: Some(vec![
                "system:serviceaccounts".into(),
                format!("system:serviceaccounts:{sa_ns}"),
                "system:authenticated".into(),
            ]),
            resource_attributes: Some(ResourceAttributes {
                verb: Some(a.verb.into()),
                group: Some(a.group.into()),
                resource: Some(a.resource.into()),
                subresource: a.subresource.map(Into::into),
                namespace: a.namespace.clone(),
                name: a.name.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<SubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), &review)
        .await
        .expect("SubjectAccessReview")
        .status
        .map(|s| s.allowed)
        .unwrap_or(false)
}

/// The matrix: what the operator's account must be allowed, and what it must not.
/// `watch`: a namespace the operator serves; `other`: one it must not touch in single-namespace
/// mode (None: cluster-wide install).
fn matrix(install: &str, watch: &str, other: Option<&str>) -> Vec<(Access, bool)> {
    let w = Some(watch);
    let i = Some(install);
    let mut m = vec![
        // The resource: watch/cache, GET before a claim, TTL delete.
        (access("get", "dtsops.io", "dtsjobresets", w), true),
        (access("list", "dtsops.io", "dtsjobresets", w), true),
        (access("watch", "dtsops.io", "dtsjobresets", w), true),
        (access("delete", "dtsops.io", "dtsjobresets", w), true),
        (
            access("update", "dtsops.io", "dtsjobresets", w).sub("status"),
            true,
        ),
        // Secrets: get by name only.
        (access("get", "", "secrets", w).named("creds"), true),
        // Events (events.k8s.io).
        (access("create", "events.k8s.io", "events", w), true),
        (access("patch", "events.k8s.io", "events", w), true),
        // Its Leases (the leader's, one per job in flight), in its own namespace.
        (access("create", "coordination.k8s.io", "leases", i), true),
        (
            access("get", "coordination.k8s.io", "leases", i).named(LEASE),
            true,
        ),
        (
            access("update", "coordination.k8s.io", "leases", i).named(LEASE),
            true,
        ),
        (
            access("delete", "coordination.k8s.io", "leases", i).named("dts-job-0123abcd"),
            true,
        ),
        // The spec is the user's.
        (access("create", "dtsops.io", "dtsjobresets", w), false),
        (access("update", "dtsops.io", "dtsjobresets", w), false),
        (access("patch", "dtsops.io", "dtsjobresets", w), false),
        (
            access("patch", "dtsops.io", "dtsjobresets", w).sub("status"),
            false,
        ),
        // Secrets: no listing, no writing.
        (access("list", "", "secrets", w), false),
        (access("watch", "", "secrets", w), false),
        (access("list", "", "secrets", None), false),
        (access("create", "", "secrets", w), false),
        (access("update", "", "secrets", w).named("creds"), false),
        (access("patch", "", "secrets", w).named("creds"), false),
        (access("delete", "", "secrets", w).named("creds"), false),
        (
            access("get", "", "secrets", i).named("creds"),
            other.is_none(),
        ),
        // Nothing else in a namespace.
        (access("create", "", "pods", w), false),
        (access("create", "", "pods", i), false),
        (access("create", "", "pods", w).sub("exec"), false),
        (access("get", "", "configmaps", w), false),
        (access("create", "", "events", w), false),
        (access("delete", "events.k8s.io", "events", w), false),
        (access("create", "apps", "deployments", i), false),
        (
            access("create", "", "serviceaccounts", i).sub("token"),
            false,
        ),
        // Leases: only in its namespace, never listed or watched.
        (access("list", "coordination.k8s.io", "leases", i), false),
        (access("watch", "coordination.k8s.io", "leases", i), false),
        (access("list", "coordination.k8s.io", "leases", None), false),
        (
            access(
                "update",
                "coordination.k8s.io",
                "leases",
                Some("kube-system"),
            )
            .named("kube-scheduler"),
            false,
        ),
        (
            access("create", "coordination.k8s.io", "leases", w),
            watch == install,
        ),
        (
            access("delete", "coordination.k8s.io", "leases", w).named("dts-job-0123abcd"),
            watch == install,
        ),
        // Wildcards.
        (access("*", "*", "*", w), false),
        (access("*", "*", "*", None), false),
        (access("*", "dtsops.io", "dtsjobresets", w), false),
        // Cluster-scoped writes.
        (access("create", "", "namespaces", None), false),
        (access("delete", "", "namespaces", None), false),
        (
            access(
                "update",
                "apiextensions.k8s.io",
                "customresourcedefinitions",
                None,
            ),
            false,
        ),
        (
            access("create", "rbac.authorization.k8s.io", "clusterroles", None),
            false,
        ),
        (
            access(
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
                None,
            ),
            false,
        ),
        (
            access(
                "escalate",
                "rbac.authorization.k8s.io",
                "clusterroles",
                None,
            ),
            false,
        ),
        (
            access("bind", "rbac.authorization.k8s.io", "clusterroles", None),
            false,
        ),
        (access("impersonate", "", "users", None), false),
        (access("update", "", "nodes", None), false),
        (
            access(
                "create",
                "admissionregistration.k8s.io",
                "mutatingwebhookconfigurations",
                None,
            ),
            false,
        ),
    ];
    match other {
        // Cluster-wide: the watch spans every namespace.
        None => m.extend([
            (access("list", "dtsops.io", "dtsjobresets", None), true),
            (access("watch", "dtsops.io", "dtsjobresets", None), true),
        ]),
        // One namespace: nothing anywhere else.
        Some(o) => m.extend([
            (access("list", "dtsops.io", "dtsjobresets", None), false),
            (access("watch", "dtsops.io", "dtsjobresets", None), false),
            (access("list", "dtsops.io", "dtsjobresets", Some(o)), false),
            (access("get", "dtsops.io", "dtsjobresets", Some(o)), false),
            (
                access("update", "dtsops.io", "dtsjobresets", Some(o)).sub("status"),
                false,
            ),
            (access("get", "", "secrets", Some(o)).named("creds"), false),
            (access("create", "events.k8s.io", "events", Some(o)), false),
        ]),
    }
    m
}

/// Checks the whole matrix. An allowed entry is polled for up to 30 s (a new binding takes a
/// moment to reach the authorizer); a denied one is checked only after every allowed one holds.
async fn assert_matrix(sa_ns: &str, sa: &str, m: &[(Access, bool)]) {
    let client = cluster().await.admin_client();
    let mut wrong = Vec::new();
    for (a, _) in m.iter().filter(|(_, want)| *want) {
        let start = Instant::now();
        while !sar(&client, sa_ns, sa, a).await {
            if start.elapsed() > T {
                wrong.push(format!("DENIED but needed: {a:?}"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    for (a, _) in m.iter().filter(|(_, want)| !*want) {
        if sar(&client, sa_ns, sa, a).await {
            wrong.push(format!("ALLOWED but must not be: {a:?}"));
        }
    }
    assert!(
        wrong.is_empty(),
        "RBAC of system:serviceaccount:{sa_ns}:{sa}:\n{}",
        wrong.join("\n")
    );
}

// --- the operator on the installed account's token ------------------------------------------

/// `dts-operator run` as a child process, its output captured.
struct Process {
    child: tokio::process::Child,
    log: Arc<Mutex<String>>,
    metrics_port: u16,
}

impl Process {
    fn spawn(args: &[String], env: &[(&str, &str)]) -> Process {
        let metrics_port = free_port();
        let mut cmd = tokio::process::Command::new(BIN);
        cmd.arg("run")
            .args(args)
            .arg("--metrics-addr")
            .arg(format!("127.0.0.1:{metrics_port}"))
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let mut child = cmd.spawn().expect("dts-operator starts");
        let log = Arc::new(Mutex::new(String::new()));
        let pipes: [Box<dyn tokio::io::AsyncRead + Unpin + Send>; 2] = [
            Box::new(child.stdout.take().unwrap()),
            Box::new(child.stderr.take().unwrap()),
        ];
        for mut pipe in pipes {
            let log = log.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                while let Ok(n) = pipe.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                    log.lock()
                        .unwrap()
                        .push_str(&String::from_utf8_lossy(&buf[..n]));
                }
            });
        }
        Process {
            child,
            log,
            metrics_port,
        }
    }

    fn logs(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    async fn get(&self, path: &str) -> (u16, String) {
        http_get(&format!("http://127.0.0.1:{}{path}", self.metrics_port))
            .await
            .unwrap_or((0, String::new()))
    }

    async fn wait_ready(&mut self) {
        let start = Instant::now();
        while self.get("/readyz").await.0 != 200 {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("the operator exited ({status}); log:\n{}", self.logs());
            }
            if start.elapsed() > T {
                panic!(
                    "the operator is not ready after {T:?}; log:\n{}",
                    self.logs()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// SIGTERM; the exit code.
    async fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().expect("running");
        let _ = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status();
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("exits within 40 s of SIGTERM")
            .expect("wait");
        // Let the readers drain the pipes.
        tokio::time::sleep(Duration::from_millis(100)).await;
        (status.code(), self.logs())
    }
}

fn reset(job: &str, extra: Value) -> dts_operator::crd::DtsJobResetSpec {
    let mut spec = json!({
        "dtsJobId": job,
        "regionId": "cn-hangzhou",
        "credentials": {"secretRef": {"name": "creds"}},
    });
    spec.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    serde_json::from_value(spec).unwrap()
}

/// Runs the operator on a token of the installed ServiceAccount `install_ns/sa`, watching
/// `watch_ns` only, with leader election in `install_ns`: a throttled-then-successful reset, a
/// terminal failure and a TTL deletion must complete without any "forbidden" in its log.
async fn operator_on_installed_account(install_ns: &str, sa: &str, watch_ns: &str) {
    let c = cluster().await;
    let admin = c.admin_client();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = cluster()
        .await
        .token_kubeconfig(dir.path(), install_ns, sa)
        .await;
    let kubeconfig = kubeconfig.to_str().unwrap();

    // The kubeconfig really is the ServiceAccount, not the admin.
    let whoami = exec_with(
        &local_bin("kubectl"),
        &[
            "--kubeconfig",
            kubeconfig,
            "auth",
            "whoami",
            "-o",
            "jsonpath={.status.userInfo.username}",
        ],
        None,
        &[],
        CMD_TIMEOUT,
    )
    .await
    .expect_ok("kubectl auth whoami");
    assert_eq!(whoami, format!("system:serviceaccount:{install_ns}:{sa}"));

    let sim = Simulator::start().await;
    sim.add_access_key(AK_ID, AK_SECRET);
    sim.script("job-ok", [Answer::throttling(), Answer::Success]);
    sim.script(
        "job-bad",
        [Answer::dts_error(
            "InvalidParameter",
            "The Value of Input Parameter %s is not valid.",
            Some("DtsJobId"),
        )],
    );
    create_secret(
        &admin,
        watch_ns,
        "creds",
        &[("accessKeyId", AK_ID), ("accessKeySecret", AK_SECRET)],
    )
    .await;

    let args: Vec<String> = [
        "--kubeconfig",
        kubeconfig,
        "--namespace",
        watch_ns,
        "--dts-endpoint",
        &sim.url(),
        "--leader-elect",
        "--leader-election-namespace",
        install_ns,
        "--leader-election-lease-name",
        LEASE,
        "--backoff-initial",
        "200ms",
        "--backoff-max",
        "1s",
        "--shutdown-timeout",
        "10s",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let mut op = Process::spawn(
        &args,
        &[
            ("RUST_LOG", "info,dts_operator=debug"),
            ("POD_NAMESPACE", install_ns),
            ("POD_NAME", "it-deploy-operator"),
        ],
    );
    op.wait_ready().await;

    create(&admin, watch_ns, "ok", reset("job-ok", json!({}))).await;
    create(&admin, watch_ns, "bad", reset("job-bad", json!({}))).await;
    create(
        &admin,
        watch_ns,
        "ttl",
        reset("job-ttl", json!({"ttlSecondsAfterFinished": 1})),
    )
    .await;

    let ok = wait_phase(&admin, watch_ns, "ok", "Succeeded", T).await;
    assert_eq!(
        ok.status.as_ref().unwrap().attempts,
        Some(2),
        "{:?}\n{}",
        ok.status,
        op.logs()
    );
    let bad = wait_phase(&admin, watch_ns, "bad", "Failed", T).await;
    assert_eq!(
        condition(&bad, "Stalled").map(|c| c.reason.as_str()),
        Some("ResetFailed")
    );
    // TTL: deleted by the operator.
    let api: Api<DtsJobReset> = Api::namespaced(admin.clone(), watch_ns);
    let start = Instant::now();
    while api.get_opt("ttl").await.unwrap().is_some() {
        assert!(
            start.elapsed() < T,
            "ttl not deleted after {T:?}; log:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(sim.executed_calls("job-ttl").len(), 1);
    assert_eq!(sim.executed_calls("job-ok").len(), 2);
    assert_eq!(sim.executed_calls("job-bad").len(), 1);
    // Events were written (create, and patch for the repeated ResetRequested).
    // Events are published after the status write: wait for them (bounded).
    let evs = wait_event(&admin, watch_ns, "ok", "ResetSucceeded", T).await;
    assert!(evs.iter().any(|(_, r, _)| r == "ResetRetrying"), "{evs:?}");
    // It leads through the Lease in its own namespace.
    let lease = Api::<Lease>::namespaced(admin.clone(), install_ns)
        .get(LEASE)
        .await
        .expect("the Lease exists");
    let holder = lease
        .spec
        .and_then(|s| s.holder_identity)
        .unwrap_or_default();
    assert!(
        holder.starts_with("it-deploy-operator-"),
        "holder {holder:?}"
    );
    let (_, metrics) = op.get("/metrics").await;
    assert!(metrics.contains("dts_operator_leader 1"), "{metrics}");

    // The Argo CD health check on the real objects.
    if let Some(lua) = lua() {
        let ok_json = serde_json::to_value(&ok).unwrap();
        let bad_json = serde_json::to_value(&bad).unwrap();
        assert_eq!(argocd_health(&lua, &ok_json).0, "Healthy");
        let (status, message) = argocd_health(&lua, &bad_json);
        assert_eq!(status, "Degraded");
        assert!(
            message.contains("The Value of Input Parameter DtsJobId is not valid."),
            "{message}"
        );
    }

    let (code, log) = op.terminate().await;
    assert_eq!(code, Some(0), "log:\n{log}");
    // The Lease was released on the way out (an update).
    let lease = Api::<Lease>::namespaced(admin.clone(), install_ns)
        .get(LEASE)
        .await
        .expect("the Lease");
    assert_eq!(
        lease.spec.and_then(|s| s.holder_identity),
        None,
        "log:\n{log}"
    );
    assert!(
        !log.to_lowercase().contains("forbidden"),
        "the operator was refused something on its installed account:\n{log}"
    );
    assert!(log.contains("acquired the leader lease"), "{log}");
}

// --- the tests: artefacts ------------------------------------------------------------------

#[tokio::test]
async fn crd_copies_match_the_binary() {
    let out = exec_with(Path::new(BIN), &["crd"], None, &[], CMD_TIMEOUT)
        .await
        .expect_ok("dts-operator crd");
    assert!(out.contains(&format!("name: {CRD_NAME}")), "{out}");
    for copy in CRD_COPIES {
        assert!(
            read(copy) == out,
            "{copy} differs from `dts-operator crd`: run hack/update-crds.sh and commit the result"
        );
    }
}

#[test]
fn versions_agree() {
    let chart: Value = serde_saphyr::from_str(&read(&format!("{CHART}/Chart.yaml"))).unwrap();
    assert_eq!(
        chart["appVersion"],
        json!(env!("CARGO_PKG_VERSION")),
        "Chart.yaml appVersion"
    );
    let kustomization: Value =
        serde_saphyr::from_str(&read(&format!("{KUSTOMIZE}/kustomization.yaml"))).unwrap();
    assert_eq!(
        kustomization["images"][0]["newTag"],
        json!(env!("CARGO_PKG_VERSION")),
        "kustomization.yaml image tag"
    );
}

#[tokio::test]
async fn helm_lint_is_clean_and_the_schema_refuses_bad_values() {
    for sets in [
        vec![],
        vec!["watchNamespace=team-a"],
        vec!["replicaCount=3", "metrics.serviceMonitor.enabled=true"],
        vec![
            "leaderElection.enabled=false",
            "defaultCredentials.secretName=dts-creds",
        ],
    ] {
        let mut args = vec!["lint", "--strict", CHART];
        for s in &sets {
            args.push("--set");
            args.push(s);
        }
        let out = helm(&args).await;
        assert!(
            out.ok(),
            "helm lint {sets:?}:\n{}{}",
            out.stdout,
            out.stderr
        );
        assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.stdout);
        assert!(!out.stdout.contains("[WARNING]"), "{}", out.stdout);
    }
    for (set, needle) in [
        ("logFormat=xml", "logFormat"),
        ("maxConcurrentResets=0", "maxConcurrentResets"),
        ("dtsTimeout=soon", "dtsTimeout"),
        ("watchNamespace=Not_A_Namespace", "watchNamespace"),
        ("wachNamespace=typo", "wachNamespace"),
        ("replicaCount=0", "replicaCount"),
        ("dtsQps=fast", "dtsQps"),
        ("dtsAdaptiveRate=sometimes", "dtsAdaptiveRate"),
    ] {
        let out = helm_template("x", "default", &[set]).await;
        assert!(!out.ok(), "--set {set} must be refused");
        assert!(out.stderr.contains(needle), "--set {set}: {}", out.stderr);
    }
    let out = helm_template(
        "x",
        "default",
        &["replicaCount=2", "leaderElection.enabled=false"],
    )
    .await;
    assert!(
        !out.ok() && out.stderr.contains("leaderElection.enabled"),
        "{}",
        out.stderr
    );
}

#[tokio::test]
async fn chart_and_kustomize_render_the_same_core_objects() {
    let chart = render_chart("dts-operator", KUSTOMIZE_NS, &[]).await;
    let kust = render_kustomize().await;
    let ids = |docs: &[Value]| -> BTreeSet<(String, String, String)> {
        docs.iter()
            .filter(|d| kind(d) != "Namespace")
            .map(|d| {
                (
                    kind(d).to_owned(),
                    name(d).to_owned(),
                    d["metadata"]["namespace"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned(),
                )
            })
            .collect()
    };
    assert_eq!(ids(&chart), ids(&kust));
    // kustomize: exactly the core objects, nothing that needs another CRD.
    let kinds: BTreeSet<&str> = kust.iter().map(kind).collect();
    let core: BTreeSet<&str> = [
        "Namespace",
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
        "Deployment",
        "Service",
    ]
    .into();
    assert_eq!(kinds, core);
    assert_eq!(
        find(&kust, "Namespace", KUSTOMIZE_NS)["apiVersion"],
        json!("v1")
    );
    assert!(
        chart.iter().all(|d| kind(d) != "ServiceMonitor"),
        "the ServiceMonitor is off by default"
    );

    // The CRD as `dts-operator crd` prints it. kustomize re-serializes numbers (`100.0` becomes
    // `100`), so values are compared as numbers.
    let crd = exec_with(Path::new(BIN), &["crd"], None, &[], CMD_TIMEOUT)
        .await
        .expect_ok("dts-operator crd");
    let crd = numbers_normalized(&docs(&crd)[0]);
    for (what, rendered) in [("chart", &chart), ("kustomize", &kust)] {
        assert!(
            numbers_normalized(find(rendered, "CustomResourceDefinition", CRD_NAME)) == crd,
            "the {what}'s CRD differs from `dts-operator crd`"
        );
    }

    for d in [&chart, &kust] {
        assert_rbac_objects(d, "dts-operator", KUSTOMIZE_NS, None);
        let deploy = find(d, "Deployment", "dts-operator");
        assert_pod_spec(&deploy["spec"]["template"]["spec"], true);
    }
    // The same pod, replicas, strategy, Service and RBAC.
    let (cd, kd) = (
        find(&chart, "Deployment", "dts-operator"),
        find(&kust, "Deployment", "dts-operator"),
    );
    for field in ["replicas", "strategy", "selector"] {
        assert_eq!(
            cd["spec"][field], kd["spec"][field],
            "Deployment spec.{field}"
        );
    }
    assert_eq!(
        cd["spec"]["template"]["spec"], kd["spec"]["template"]["spec"],
        "the pod spec of the chart (default values) and of kustomize differ"
    );
    assert_eq!(
        find(&chart, "Service", "dts-operator-metrics")["spec"],
        find(&kust, "Service", "dts-operator-metrics")["spec"]
    );
    for (k, n) in [
        ("ClusterRole", "dts-operator"),
        ("ClusterRoleBinding", "dts-operator"),
        ("Role", "dts-operator-leases"),
        ("RoleBinding", "dts-operator-leases"),
    ] {
        let (a, b) = (find(&chart, k, n), find(&kust, k, n));
        assert_eq!(
            (&a["rules"], &a["subjects"], &a["roleRef"]),
            (&b["rules"], &b["subjects"], &b["roleRef"]),
            "{k} {n}"
        );
    }
    // The Service selects the Deployment's pods.
    let selector = find(&kust, "Service", "dts-operator-metrics")["spec"]["selector"].clone();
    let labels = &kd["spec"]["template"]["metadata"]["labels"];
    for (k, v) in selector.as_object().unwrap() {
        assert_eq!(&labels[k], v, "pod label {k}");
    }
}

#[tokio::test]
async fn chart_values_render_as_documented() {
    // One namespace: a Role and RoleBinding there, and --namespace.
    let d = render_chart("ops", "ops-system", &["watchNamespace=team-a"]).await;
    assert_rbac_objects(&d, "ops-dts-operator", "ops-system", Some("team-a"));
    let pod = &find(&d, "Deployment", "ops-dts-operator")["spec"]["template"]["spec"];
    let args = pod["containers"][0]["args"].as_array().unwrap();
    assert!(args.contains(&json!("--namespace=team-a")));
    // No selector by default: every resource.
    assert!(
        !args
            .iter()
            .any(|a| a.as_str().is_some_and(|a| a.starts_with("--selector"))),
        "{args:?}"
    );

    // Leader election off: no flag, never two pods at once; the Lease Role stays (the job
    // Leases keep calls for one job apart whatever the replicas).
    let d = render_chart("dts-operator", "x", &["leaderElection.enabled=false"]).await;
    let deploy = find(&d, "Deployment", "dts-operator");
    assert_pod_spec(&deploy["spec"]["template"]["spec"], false);
    assert_eq!(deploy["spec"]["strategy"], json!({"type": "Recreate"}));
    assert_eq!(
        find(&d, "Role", "dts-operator-leases")["rules"],
        lease_rules()
    );

    // Several replicas: leader election.
    let d = render_chart("dts-operator", "x", &["replicaCount=3"]).await;
    let deploy = find(&d, "Deployment", "dts-operator");
    assert_eq!(deploy["spec"]["replicas"], json!(3));
    assert_pod_spec(&deploy["spec"]["template"]["spec"], true);

    // Every flag value lands on the command line; credentials, RRSA, CA bundle, ServiceMonitor.
    let d = render_chart(
        "dts-operator",
        "x",
        &[
            "defaultRegion=cn-shanghai",
            "dtsEndpoint=https://dts-gw.internal.example",
            "endpointAllowlist={dts.aliyuncs.com,dts-gw.*.example}",
            "defaultCredentials.namespaces={team-a,team-b}",
            "defaultCredentials.secretName=dts-operator-credentials",
            "maxConcurrentResets=4",
            "dtsQps=2.5",
            "dtsBurst=7",
            "dtsAdaptiveRate=false",
            "logFormat=text",
            "caBundle.configMapName=private-ca",
            "serviceAccount.annotations.pod-identity\\.alibabacloud\\.com/role-name=dts-reset",
            "metrics.serviceMonitor.enabled=true",
            "image.repository=registry.example.com/dts-operator",
            "image.tag=1.2.3",
            "selector=shard=a",
        ],
    )
    .await;
    let c = &find(&d, "Deployment", "dts-operator")["spec"]["template"]["spec"]["containers"][0];
    let args = c["args"].as_array().unwrap();
    for want in [
        "--default-region=cn-shanghai",
        "--dts-endpoint=https://dts-gw.internal.example",
        "--endpoint-allowlist=dts.aliyuncs.com,dts-gw.*.example",
        "--default-credentials-namespaces=team-a,team-b",
        "--max-concurrent-resets=4",
        "--dts-qps=2.5",
        "--dts-burst=7",
        "--dts-adaptive-rate=false",
        "--log-format=text",
        "--ca-bundle=/etc/dts-operator/ca/ca.crt",
        "--selector=shard=a",
    ] {
        assert!(args.contains(&json!(want)), "{want} missing: {args:?}");
    }
    assert_eq!(
        c["envFrom"],
        json!([{"secretRef": {"name": "dts-operator-credentials"}}])
    );
    assert_eq!(c["image"], json!("registry.example.com/dts-operator:1.2.3"));
    assert_eq!(
        find(&d, "ServiceAccount", "dts-operator")["metadata"]["annotations"],
        json!({"pod-identity.alibabacloud.com/role-name": "dts-reset"})
    );
    let sm = find(&d, "ServiceMonitor", "dts-operator");
    assert_eq!(sm["spec"]["endpoints"][0]["port"], json!("http-metrics"));
    assert_eq!(sm["spec"]["endpoints"][0]["path"], json!("/metrics"));

    // Every `run` flag the chart sets is one the binary accepts.
    let help = exec_with(Path::new(BIN), &["run", "--help"], None, &[], CMD_TIMEOUT)
        .await
        .expect_ok("dts-operator run --help");
    let known: BTreeSet<&str> = help
        .lines()
        .map(str::trim_start)
        .filter(|l| l.starts_with('-'))
        .flat_map(|l| l.split_whitespace())
        .map(|w| w.trim_end_matches(','))
        .filter(|w| w.starts_with("--"))
        .collect();
    assert!(known.contains("--leader-elect"), "{known:?}");
    for a in args
        .iter()
        .filter_map(|a| a.as_str())
        .filter(|a| a.starts_with("--"))
    {
        let flag = a.split('=').next().unwrap();
        assert!(
            known.contains(flag),
            "{flag} is not a `run` flag: {known:?}"
        );
    }
}

// --- the tests: installs on the real control plane ------------------------------------------

#[tokio::test]
async fn kustomize_install_is_least_privilege_and_runs_the_operator() {
    let rendered = render_kustomize().await;
    apply(&rendered).await;

    // Objects exist as rendered, in the fixed namespace.
    let out = kubectl(
        &[
            "get",
            "-n",
            KUSTOMIZE_NS,
            "deployment/dts-operator",
            "serviceaccount/dts-operator",
            "service/dts-operator-metrics",
            "role/dts-operator-leases",
            "-o",
            "name",
        ],
        None,
    )
    .await
    .expect_ok("kubectl get the installed objects");
    assert_eq!(out.lines().count(), 4, "{out}");

    // The pod passes the namespace's `restricted` Pod Security Standard (a server-side dry run
    // through PodSecurity admission) — and a privileged variant does not, so the check is live.
    let pod_spec =
        find(&rendered, "Deployment", "dts-operator")["spec"]["template"]["spec"].clone();
    let pod = |spec: Value| {
        json!({"apiVersion": "v1", "kind": "Pod",
               "metadata": {"name": "dts-operator-psa-check", "namespace": KUSTOMIZE_NS}, "spec": spec})
        .to_string()
    };
    let out = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod(pod_spec.clone())),
    )
    .await;
    assert!(
        out.ok(),
        "restricted PSS refused the operator's pod: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("Warning"), "{}", out.stderr);
    let mut privileged = pod_spec;
    privileged["containers"][0]["securityContext"]["capabilities"]["add"] = json!(["SYS_ADMIN"]);
    let out = kubectl(
        &["create", "--dry-run=server", "-f", "-"],
        Some(&pod(privileged)),
    )
    .await;
    assert!(
        !out.ok() && out.stderr.contains("PodSecurity"),
        "{}",
        out.stderr
    );

    let c = cluster().await;
    let watch = c.fresh_namespace("deploy-kust").await;
    assert_matrix(
        KUSTOMIZE_NS,
        KUSTOMIZE_SA,
        &matrix(KUSTOMIZE_NS, &watch, None),
    )
    .await;
    operator_on_installed_account(KUSTOMIZE_NS, KUSTOMIZE_SA, &watch).await;
}

/// Deletes the cluster-scoped objects of a chart release (no garbage collector here).
async fn delete_cluster_scoped(fullname: &str) {
    let _ = kubectl(
        &[
            "delete",
            "--ignore-not-found",
            &format!("clusterrolebinding/{fullname}"),
            &format!("clusterrole/{fullname}"),
        ],
        None,
    )
    .await;
}

#[tokio::test]
async fn helm_install_is_least_privilege_and_runs_the_operator() {
    let c = cluster().await;
    let install = c.fresh_namespace("deploy-helm").await;
    // A release name unique to this run: the ClusterRole's name is cluster-wide.
    let release = install.clone();
    let fullname = format!("{release}-dts-operator");
    let rendered = render_chart(&release, &install, &[]).await;
    assert_rbac_objects(&rendered, &fullname, &install, None);
    apply(&rendered).await;
    let watch = c.fresh_namespace("deploy-helm-w").await;
    assert_matrix(&install, &fullname, &matrix(&install, &watch, None)).await;
    operator_on_installed_account(&install, &fullname, &watch).await;
    delete_cluster_scoped(&fullname).await;
}

#[tokio::test]
async fn helm_single_namespace_install_is_confined_to_it() {
    let c = cluster().await;
    let install = c.fresh_namespace("deploy-one").await;
    let watch = c.fresh_namespace("deploy-one-w").await;
    let other = c.fresh_namespace("deploy-one-o").await;
    let release = install.clone();
    let fullname = format!("{release}-dts-operator");
    let rendered = render_chart(&release, &install, &[&format!("watchNamespace={watch}")]).await;
    assert_rbac_objects(&rendered, &fullname, &install, Some(&watch));
    assert!(rendered.iter().all(|d| !kind(d).starts_with("Cluster")));
    apply(&rendered).await;
    assert_matrix(&install, &fullname, &matrix(&install, &watch, Some(&other))).await;
    operator_on_installed_account(&install, &fullname, &watch).await;
}

// --- Argo CD health check ---------------------------------------------------------------------

#[test]
fn argocd_cm_embeds_health_lua_verbatim() {
    let cm: Value = serde_saphyr::from_str(&read("deploy/argocd/argocd-cm.yaml")).unwrap();
    assert_eq!(cm["kind"], json!("ConfigMap"));
    assert_eq!(
        cm["data"]["resource.customizations.health.dtsops.io_DtsJobReset"],
        json!(read("deploy/argocd/health.lua")),
        "deploy/argocd/argocd-cm.yaml must embed deploy/argocd/health.lua verbatim"
    );
}

/// A Lua interpreter: 5.1 first (Argo CD runs gopher-lua, a Lua 5.1), else 5.4 or `lua`.
fn lua() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    for name in ["lua5.1", "lua5.4", "lua"] {
        for dir in std::env::split_paths(&path) {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return Some(candidate);
            }
        }
    }
    None
}

/// A Lua string literal holding exactly the bytes of `s` (non-ASCII and control bytes as `\ddd`).
fn lua_string(s: &str) -> String {
    let mut out = String::from("\"");
    for b in s.bytes() {
        match b {
            b'\\' => out.push_str("\\\\"),
            b'"' => out.push_str("\\\""),
            0x20..=0x7e => out.push(b as char),
            _ => out.push_str(&format!("\\{b:03}")),
        }
    }
    out.push('"');
    out
}

/// A JSON value as a Lua table constructor (what Argo CD hands the script as `obj`).
fn lua_literal(v: &Value) -> String {
    match v {
        Value::Null => "nil".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => lua_string(s),
        Value::Array(a) => format!(
            "{{{}}}",
            a.iter().map(lua_literal).collect::<Vec<_>>().join(",")
        ),
        Value::Object(o) => format!(
            "{{{}}}",
            o.iter()
                .map(|(k, v)| format!("[{}]={}", lua_string(k), lua_literal(v)))
                .collect::<Vec<_>>()
                .join(",")
        ),
    }
}

/// Runs deploy/argocd/health.lua on `obj` as Argo CD does; (status, message).
fn argocd_health(lua: &Path, obj: &Value) -> (String, String) {
    let dir = tempfile::tempdir().unwrap();
    let driver = dir.path().join("driver.lua");
    std::fs::write(
        &driver,
        format!(
            "obj = {}\nlocal hs = dofile({})\nio.write(tostring(hs.status), \"\\n\", tostring(hs.message))\n",
            lua_literal(obj),
            lua_string(repo_root().join("deploy/argocd/health.lua").to_str().unwrap())
        ),
    )
    .unwrap();
    let out = std::process::Command::new(lua)
        .arg(&driver)
        .output()
        .expect("lua runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let (status, message) = text.split_once('\n').expect("two lines");
    (status.to_owned(), message.to_owned())
}

fn cond(type_: &str, status: &str, reason: &str, message: &str) -> Value {
    json!({"type": type_, "status": status, "reason": reason, "message": message,
           "lastTransitionTime": "2026-11-28T00:00:00Z", "observedGeneration": 1})
}

#[test]
fn argocd_health_check_follows_the_kstatus_conditions() {
    let Some(lua) = lua() else {
        eprintln!(
            "SKIPPED argocd_health_check_follows_the_kstatus_conditions: no Lua interpreter on PATH \
             (apt-get install lua5.1); the argocd-cm drift check still runs"
        );
        return;
    };
    let meta = json!({"name": "r", "namespace": "n", "generation": 1});
    let with = |status: Value| json!({"apiVersion": "dtsops.io/v1alpha1", "kind": "DtsJobReset", "metadata": meta, "spec": {"dtsJobId": "j"}, "status": status});
    let cases = [
        (
            json!({"apiVersion": "dtsops.io/v1alpha1", "kind": "DtsJobReset", "metadata": meta, "spec": {"dtsJobId": "j"}}),
            "Progressing",
            "Waiting for the operator to pick up the reset",
        ),
        (
            with(json!({"phase": "Pending"})),
            "Progressing",
            "Waiting for the operator",
        ),
        (
            with(
                json!({"phase": "Retrying", "observedGeneration": 1, "conditions": [
                    cond("Ready", "False", "Throttled", "throttled, next attempt soon"),
                    cond("Reconciling", "True", "Throttled", "throttled, next attempt soon"),
                    cond("Stalled", "False", "Throttled", "throttled, next attempt soon"),
                ]}),
            ),
            "Progressing",
            "throttled, next attempt soon",
        ),
        (
            with(
                json!({"phase": "Succeeded", "observedGeneration": 1, "conditions": [
                    cond("Ready", "True", "ResetSucceeded", "DTS reset job j"),
                    cond("Reconciling", "False", "ResetSucceeded", "DTS reset job j"),
                    cond("Stalled", "False", "ResetSucceeded", "DTS reset job j"),
                ]}),
            ),
            "Healthy",
            "DTS reset job j",
        ),
        (
            with(
                json!({"phase": "Failed", "observedGeneration": 1, "conditions": [
                    cond("Ready", "False", "ResetFailed", "DTS refused: InvalidParameter \"x\"\nsecond line"),
                    cond("Reconciling", "False", "ResetFailed", "DTS refused"),
                    cond("Stalled", "True", "ResetFailed", "DTS refused: InvalidParameter \"x\"\nsecond line"),
                ]}),
            ),
            "Degraded",
            "DTS refused: InvalidParameter \"x\"\nsecond line",
        ),
        // Pending but stalled (credentials not permitted): a human must act.
        (
            with(
                json!({"phase": "Pending", "observedGeneration": 1, "conditions": [
                    cond("Reconciling", "True", "CredentialsUnavailable", "not permitted"),
                    cond("Stalled", "True", "CredentialsUnavailable", "not permitted here"),
                ]}),
            ),
            "Degraded",
            "not permitted here",
        ),
        // Stalled without a message: the reason.
        (
            with(
                json!({"phase": "Unknown", "observedGeneration": 1, "conditions": [
                    {"type": "Stalled", "status": "True", "reason": "OutcomeUnknown", "message": ""},
                ]}),
            ),
            "Degraded",
            "OutcomeUnknown",
        ),
        // A spec change not yet observed: whatever the old conditions say.
        (
            json!({"metadata": {"name": "r", "generation": 2}, "status": {"observedGeneration": 1, "conditions": [
                cond("Ready", "True", "ResetSucceeded", "old"),
            ]}}),
            "Progressing",
            "Waiting for the operator to observe generation 2",
        ),
        // No condition set yet, unicode in the message.
        (
            with(
                json!({"conditions": [cond("Reconciling", "True", "Running", "réinitialisation 重置")]}),
            ),
            "Progressing",
            "réinitialisation 重置",
        ),
    ];
    for (obj, status, message) in cases {
        let (s, m) = argocd_health(&lua, &obj);
        assert_eq!((s.as_str(), m.as_str()), (status, message), "for {obj}");
    }
}

// --- the demo ---------------------------------------------------------------------------------

#[tokio::test]
async fn demo_runs_to_completion_in_ci_mode() {
    let c = cluster().await;
    // The demo's simulator binary. Built alone so no binary other tests run is replaced while
    // they run (the operator is this test binary's own CARGO_BIN_EXE).
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    exec_with(
        Path::new(&cargo),
        &[
            "build",
            "--locked",
            "-p",
            "dts-simulator",
            "--bin",
            "dts-simulator",
        ],
        None,
        &[],
        Duration::from_secs(900),
    )
    .await
    .expect_ok("cargo build -p dts-simulator");
    let simulator = Path::new(BIN).with_file_name("dts-simulator");
    assert!(simulator.is_file(), "{} missing", simulator.display());

    let ns = unique_name("it-demo");
    let script = repo_root().join("hack/demo.sh");
    let mut cmd = tokio::process::Command::new(&script);
    cmd.arg("--ci")
        .current_dir(repo_root())
        .env("DEMO_NAMESPACE", &ns)
        .env("DEMO_KEEP_CLUSTER", "1")
        .env("DEMO_SKIP_BUILD", "1")
        .env("DEMO_OPERATOR_BIN", BIN)
        .env("DEMO_SIMULATOR_BIN", &simulator)
        .env("DEMO_TIMEOUT", "90")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn().expect("hack/demo.sh runs");
    let pid = child.id().expect("pid");
    let out = match tokio::time::timeout(Duration::from_secs(300), child.wait_with_output()).await {
        Ok(out) => out.expect("demo output"),
        Err(_) => {
            // Let its EXIT trap stop what it started.
            let _ = std::process::Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status();
            panic!("hack/demo.sh --ci did not finish within 300 s (sent SIGTERM)");
        }
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "hack/demo.sh --ci failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        out.status
    );
    assert!(stdout.contains("The demo ended as expected"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.matches("  ok    ").count(), 6, "{stdout}");
    assert!(
        stdout.contains("DTS SIMULATOR"),
        "the simulator is labelled as such"
    );

    // It stopped what it started, and only that.
    for what in ["operator", "DTS simulator"] {
        let marker = format!("stopping the {what} (pid ");
        let pid: u32 = stdout
            .split(&marker)
            .nth(1)
            .and_then(|rest| rest.split(')').next())
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("no '{marker}' line:\n{stdout}"));
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        assert!(
            !cmdline.contains("dts-operator") && !cmdline.contains("dts-simulator"),
            "the demo's {what} (pid {pid}) is still running: {cmdline}"
        );
    }
    assert!(
        stdout.contains("leaving the control plane running"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("stopping the local control plane"),
        "{stdout}"
    );
    c.admin_client()
        .apiserver_version()
        .await
        .expect("the control plane still answers after the demo");
    // Its objects are gone; its namespace stays (namespaces never finish deleting here).
    let api: Api<DtsJobReset> = Api::namespaced(c.admin_client(), &ns);
    let left = api.list(&Default::default()).await.expect("list");
    assert!(
        left.items.is_empty(),
        "demo resources left in {ns}: {:?}",
        left.items.iter().map(phase).collect::<Vec<_>>()
    );
}
