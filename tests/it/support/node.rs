//! The local node (`hack/node.sh`, through `hack/cluster.sh up --with-node`) for the tests that
//! run the operator as a Pod: the node's facts, the operator's image in its containerd
//! (`hack/image.sh import`), a CA and server certificate for the simulator on the node's bridge
//! address (the Pod's private gateway), and helpers to look at Pods from the host — their
//! metrics on the Pod IP, and the container's own `/proc/<pid>` files.
//!
//! The node is not started here: it needs root and changes the host's network, so it is
//! `hack/test.sh`'s decision (or yours: `hack/cluster.sh up --with-node`). Without one these
//! tests fail, saying so.
#![allow(dead_code)] // a toolbox: not every test uses every helper

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use dts_simulator::{SimConfig, Simulator, TlsIdentity};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use tokio::sync::OnceCell;

use super::cluster::{cluster, local_bin, repo_root};
use super::operator::{AK_ID, AK_SECRET, ensure_crd, http_get};

/// The node's facts, from `hack/node.sh env`.
pub struct Node {
    /// Node name.
    pub name: String,
    /// The bridge address: the node's IP, and where test servers for Pods listen.
    pub ip: IpAddr,
    /// containerd's socket.
    pub containerd: PathBuf,
    /// The operator's image as the chart names it, imported into the node.
    pub image: String,
    /// The image archive `hack/image.sh` built.
    pub image_archive: PathBuf,
    pki: PathBuf,
}

static NODE: OnceCell<Result<Node, String>> = OnceCell::const_new();

/// The node; panics (failing the test) when there is none.
pub async fn node() -> &'static Node {
    match NODE.get_or_init(Node::init).await {
        Ok(node) => node,
        Err(e) => panic!("no local node for this test: {e}"),
    }
}

/// Output of a command: exit code, stdout, stderr.
pub struct Out {
    /// Exit code (`None`: killed by a signal).
    pub code: Option<i32>,
    /// stdout.
    pub stdout: String,
    /// stderr.
    pub stderr: String,
}

impl Out {
    /// Exit code 0.
    pub fn ok(&self) -> bool {
        self.code == Some(0)
    }

    /// stdout, or a panic that shows what failed.
    pub fn expect_ok(self, what: &str) -> String {
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

/// Runs `program args` in the repository root, bounded by `timeout`.
pub async fn exec(program: &Path, args: &[&str], env: &[(&str, &str)], timeout: Duration) -> Out {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
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

/// The built `kubectl` (v1.36.3) with the admin kubeconfig.
pub async fn kubectl(args: &[&str]) -> Out {
    let kc = cluster().await.kubeconfig_path().display().to_string();
    let mut all = vec!["--kubeconfig", &kc];
    all.extend_from_slice(args);
    exec(&local_bin("kubectl"), &all, &[], Duration::from_secs(120)).await
}

/// The built `helm` (v3.22.0) with the admin kubeconfig.
pub async fn helm(args: &[&str]) -> Out {
    let kc = cluster().await.kubeconfig_path().display().to_string();
    let mut all = vec!["--kubeconfig", &kc];
    all.extend_from_slice(args);
    exec(&local_bin("helm"), &all, &[], Duration::from_secs(300)).await
}

fn parse_env(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect()
}

impl Node {
    async fn init() -> Result<Node, String> {
        let c = cluster().await;
        let status = exec(
            &repo_root().join("hack/node.sh"),
            &["env"],
            &[],
            Duration::from_secs(30),
        )
        .await;
        if !status.ok() {
            return Err(format!(
                "hack/node.sh env: {} — start one with `hack/cluster.sh up --with-node` (root; \
                 hack/test.sh does it for the node tests)",
                status.stderr.trim()
            ));
        }
        let env = parse_env(&status.stdout);
        let get = |k: &str| {
            env.get(k)
                .cloned()
                .ok_or_else(|| format!("hack/node.sh env has no {k}"))
        };
        // The node must belong to the control plane these tests use.
        let kubeconfig = get("KUBECONFIG")?;
        if Path::new(&kubeconfig) != c.kubeconfig_path() {
            return Err(format!(
                "the node belongs to {kubeconfig}, the tests use {}",
                c.kubeconfig_path().display()
            ));
        }
        let ready = kubectl(&[
            "get",
            "node",
            &get("NODE_NAME")?,
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
        ])
        .await;
        if ready.stdout.trim() != "True" {
            return Err(format!(
                "the node is not Ready: {} {}",
                ready.stdout, ready.stderr
            ));
        }
        // The image of these sources, built once (cached by input hash) and imported.
        let import = exec(
            &repo_root().join("hack/image.sh"),
            &["import"],
            &[],
            Duration::from_secs(3600),
        )
        .await;
        if !import.ok() {
            return Err(format!("hack/image.sh import failed:\n{}", import.stderr));
        }
        let image = import.stdout.lines().last().unwrap_or_default().to_owned();
        let archive = exec(
            &repo_root().join("hack/image.sh"),
            &["archive-if-built"],
            &[],
            Duration::from_secs(60),
        )
        .await;
        let image_archive = PathBuf::from(archive.stdout.lines().last().unwrap_or_default());
        let ip: IpAddr = get("NODE_IP")?
            .parse()
            .map_err(|e| format!("NODE_IP: {e}"))?;
        let pki = make_pki(ip)?;
        ensure_crd().await;
        Ok(Node {
            name: get("NODE_NAME")?,
            ip,
            containerd: PathBuf::from(get("CONTAINERD_ADDRESS")?),
            image,
            image_archive,
            pki,
        })
    }

    /// The PEM of the CA that signed the simulator's certificate (for the chart's caBundle).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.pki.join("ca.crt")).expect("the test CA")
    }

    /// A simulator serving https on the node's bridge address (a free port), with the test
    /// AccessKey registered: what an operator Pod reaches as its private DTS gateway.
    pub async fn simulator(&self) -> Simulator {
        let identity =
            TlsIdentity::from_files(&self.pki.join("server.crt"), &self.pki.join("server.key"))
                .expect("the test server identity");
        let sim = Simulator::start_with(SimConfig {
            bind: (self.ip, 0).into(),
            tls: Some(identity),
            allow_non_loopback: true,
            ..SimConfig::default()
        })
        .await;
        sim.add_access_key(AK_ID, AK_SECRET);
        sim
    }

    /// Creates the ConfigMap `name` with the test CA under `ca.crt`, in `ns`.
    pub async fn create_ca_configmap(&self, ns: &str, name: &str) {
        let cm = ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                ..Default::default()
            },
            data: Some([("ca.crt".to_owned(), self.ca_pem())].into()),
            ..Default::default()
        };
        Api::<ConfigMap>::namespaced(cluster().await.admin_client(), ns)
            .create(&PostParams::default(), &cm)
            .await
            .expect("create the CA ConfigMap");
    }

    /// The task (PID on the host) of a container, from containerd.
    pub async fn container_pid(&self, container_id: &str) -> u32 {
        let out = exec(
            Path::new("ctr"),
            &[
                "--address",
                &self.containerd.display().to_string(),
                "--namespace",
                "k8s.io",
                "tasks",
                "ls",
            ],
            &[],
            Duration::from_secs(30),
        )
        .await
        .expect_ok("ctr tasks ls");
        out.lines()
            .filter_map(|l| {
                let mut f = l.split_whitespace();
                Some((f.next()?, f.next()?))
            })
            .find(|(id, _)| *id == container_id)
            .and_then(|(_, pid)| pid.parse().ok())
            .unwrap_or_else(|| panic!("no task {container_id} in:\n{out}"))
    }
}

fn openssl(dir: &Path, args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .map_err(|e| format!("openssl: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// A CA and a server certificate for `ip`, as someone running a private gateway would make.
fn make_pki(ip: IpAddr) -> Result<PathBuf, String> {
    let dir = repo_root()
        .join(".local/test-node-pki")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    openssl(
        &dir,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-days",
            "2",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-subj",
            "/CN=dts-operator node-test gateway CA",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=critical,keyCertSign,cRLSign",
        ],
    )?;
    openssl(
        &dir,
        &[
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-sha256",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
            "-subj",
            "/CN=dts-gateway.test",
        ],
    )?;
    std::fs::write(
        dir.join("server.ext"),
        format!(
            "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:{ip}\n"
        ),
    )
    .map_err(|e| e.to_string())?;
    openssl(
        &dir,
        &[
            "x509",
            "-req",
            "-sha256",
            "-days",
            "2",
            "-in",
            "server.csr",
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-extfile",
            "server.ext",
            "-out",
            "server.crt",
        ],
    )?;
    Ok(dir)
}

/// The operator Pods of a release (label selector), sorted by name.
pub async fn pods(ns: &str, selector: &str) -> Vec<Pod> {
    let api: Api<Pod> = Api::namespaced(cluster().await.admin_client(), ns);
    let mut list = api
        .list(&ListParams::default().labels(selector))
        .await
        .expect("list Pods")
        .items;
    list.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
    list
}

/// Name of a Pod.
pub fn pod_name(p: &Pod) -> String {
    p.metadata.name.clone().unwrap_or_default()
}

/// Whether a Pod is Ready (and not being deleted).
pub fn pod_ready(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_none()
        && p.status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The Pod's IP on the bridge.
pub fn pod_ip(p: &Pod) -> Option<String> {
    p.status.as_ref()?.pod_ip.clone()
}

/// containerd's ID of the Pod's first container.
pub fn container_id(p: &Pod) -> String {
    let id = p
        .status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.first())
        .and_then(|c| c.container_id.clone())
        .expect("a running container");
    id.strip_prefix("containerd://").unwrap_or(&id).to_owned()
}

/// `dts_operator_leader` scraped from the Pod's /metrics on its IP (`None`: no answer).
pub async fn leader_gauge(p: &Pod) -> Option<u8> {
    let ip = pod_ip(p)?;
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        http_get(&format!("http://{ip}:8080/metrics")),
    )
    .await
    .ok()?
    .ok()?;
    if status != 200 {
        return None;
    }
    body.lines()
        .find(|l| l.starts_with("dts_operator_leader "))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u8)
}

/// The Lease's holder, if any.
pub async fn lease_holder(ns: &str, name: &str) -> Option<String> {
    let api: Api<Lease> = Api::namespaced(cluster().await.admin_client(), ns);
    api.get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
        .filter(|h| !h.is_empty())
}

/// Polls `f` every 100 ms until it returns `Some`, at most `timeout`; panics saying `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < timeout, "{what}: not after {timeout:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `kubectl logs` of every container of the release's Pods (current and previous), joined.
pub async fn all_logs(ns: &str, selector: &str) -> String {
    let mut out = String::new();
    for p in pods(ns, selector).await {
        let name = pod_name(&p);
        let logs = kubectl(&["logs", "-n", ns, &name]).await;
        assert!(
            logs.ok(),
            "kubectl logs {ns}/{name} (through the kubelet): {}",
            logs.stderr
        );
        out.push_str(&logs.stdout);
    }
    out
}

/// Deletes a namespace and returns at once (the namespace controller finishes it).
pub async fn delete_namespace(ns: &str) {
    let _ = kubectl(&[
        "delete",
        "namespace",
        ns,
        "--wait=false",
        "--ignore-not-found",
    ])
    .await;
}
