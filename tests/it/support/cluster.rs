//! A real Kubernetes control plane (kube-apiserver + etcd, v1.36.3) for the integration tests.
//!
//! - If `KUBECONFIG` is set (as `hack/test.sh` does after `hack/cluster.sh up`), the tests attach
//!   to that cluster. Its server must be on a loopback address, so a developer's real cluster is
//!   never touched by accident; `DTS_TEST_ALLOW_NON_LOOPBACK_CLUSTER=1` lifts that check.
//! - Otherwise the first test that asks runs `hack/cluster.sh up` once for the whole test
//!   process (the first run on a machine builds the binaries: minutes). The control plane keeps
//!   running after the tests, so the next run reuses it; `hack/cluster.sh down` stops it.
//!
//! There is no kube-controller-manager: no garbage collection, no namespace deletion, no default
//! ServiceAccounts. Every test takes a fresh namespace ([`Cluster::fresh_namespace`]) and never
//! relies on deletion.
//!
//! Each `#[tokio::test]` has its own runtime, and a [`kube::Client`] is bound to the runtime it
//! was made in, so only the configuration is shared: take a new client in each test.
#![allow(dead_code)] // a toolbox: not every test uses every helper

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Once;
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config};
use tokio::sync::OnceCell;

/// Field manager for the fixtures the tests write.
pub const FIELD_MANAGER: &str = "dts-operator-it";

/// Label put on every namespace made by [`Cluster::fresh_namespace`].
pub const TEST_NAMESPACE_LABEL: &str = "dtsops.io/integration-test";

/// The control plane the tests run against.
pub struct Cluster {
    kubeconfig_path: PathBuf,
    config: Config,
}

// The outcome, failure included: a failed `hack/cluster.sh up` is not retried by every test.
static CLUSTER: OnceCell<Result<Cluster, String>> = OnceCell::const_new();
static CRYPTO: Once = Once::new();

/// The shared control plane: attaches to `KUBECONFIG`, or starts `hack/cluster.sh up` once.
/// Panics (failing the test) when no control plane can be had.
pub async fn cluster() -> &'static Cluster {
    match CLUSTER.get_or_init(Cluster::init).await {
        Ok(cluster) => cluster,
        Err(e) => panic!("no Kubernetes control plane for the integration tests: {e}"),
    }
}

/// An admin client (`system:masters`, bypasses RBAC) for fixtures.
pub async fn admin_client() -> Client {
    cluster().await.admin_client()
}

/// The repository root (where `hack/` and `.local/` are).
///
/// `cargo test` sets `CARGO_MANIFEST_DIR` when it runs the tests; that is preferred over the
/// value compiled in, because a shared `CARGO_TARGET_DIR` may hand one checkout a test binary
/// that cargo compiled in another.
pub fn repo_root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

/// A program built by `hack/controlplane/build.sh` (`kubectl`, `helm`, `kube-apiserver`,
/// `etcd`), linked into `<repo>/.local/bin`.
pub fn local_bin(name: &str) -> PathBuf {
    repo_root().join(".local/bin").join(name)
}

/// Installs the rustls crypto provider (ring) once; kube's rustls client needs one.
pub fn install_crypto_provider() {
    CRYPTO.call_once(|| {
        // An error only means another provider was installed first: fine.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

impl Cluster {
    async fn init() -> Result<Self, String> {
        install_crypto_provider();
        let kubeconfig_path = match std::env::var_os("KUBECONFIG").filter(|v| !v.is_empty()) {
            Some(value) => {
                let mut paths = std::env::split_paths(&value);
                let first = paths.next().ok_or("KUBECONFIG is empty")?;
                if paths.next().is_some() {
                    return Err(format!(
                        "KUBECONFIG names several files ({value:?}); the tests need exactly one"
                    ));
                }
                first
            }
            None => tokio::task::spawn_blocking(cluster_up)
                .await
                .map_err(|e| format!("hack/cluster.sh up: {e}"))??,
        };
        let kubeconfig = Kubeconfig::read_from(&kubeconfig_path)
            .map_err(|e| format!("reading kubeconfig {}: {e}", kubeconfig_path.display()))?;
        let config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(|e| format!("loading kubeconfig {}: {e}", kubeconfig_path.display()))?;
        check_loopback(&config)?;
        Ok(Cluster {
            kubeconfig_path,
            config,
        })
    }

    /// The admin kubeconfig (`export KUBECONFIG=...` of `hack/cluster.sh up`), for
    /// `kubectl --kubeconfig`, `helm --kubeconfig` or the operator's `--kubeconfig`.
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig_path
    }

    /// The admin configuration (a copy to adjust).
    pub fn config(&self) -> Config {
        self.config.clone()
    }

    /// A new admin client (`system:masters`: bypasses RBAC), for fixtures.
    pub fn admin_client(&self) -> Client {
        client_from(self.config())
    }

    /// A new client that acts as the ServiceAccount `namespace/name`, through impersonation:
    /// user `system:serviceaccount:<ns>:<name>`, groups `system:serviceaccounts` and
    /// `system:serviceaccounts:<ns>` (what the API server gives a real ServiceAccount token).
    /// RBAC applies to it as to the real account.
    pub fn service_account_client(&self, namespace: &str, name: &str) -> Client {
        let mut config = self.config();
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{namespace}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{namespace}"),
        ]);
        client_from(config)
    }

    /// Creates a namespace with a new unique name `it-<prefix>-<random>` and returns the name.
    /// Nothing deletes it (no controller-manager would finish the deletion anyway).
    pub async fn fresh_namespace(&self, prefix: &str) -> String {
        let name = unique_name(&format!("it-{prefix}"));
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(self.admin_client())
            .create(&PostParams::default(), &ns)
            .await
            .unwrap_or_else(|e| panic!("creating namespace {name}: {e}"));
        name
    }

    /// Creates a ServiceAccount (no controller creates them here, not even `default`).
    pub async fn create_service_account(&self, namespace: &str, name: &str) -> ServiceAccount {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(namespace.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<ServiceAccount>::namespaced(self.admin_client(), namespace)
            .create(&PostParams::default(), &sa)
            .await
            .unwrap_or_else(|e| panic!("creating ServiceAccount {namespace}/{name}: {e}"))
    }

    /// A kubeconfig that authenticates with a fresh TokenRequest token of `ns/sa` (server and CA
    /// from the admin kubeconfig), written into `dir`.
    pub async fn token_kubeconfig(&self, dir: &Path, ns: &str, sa: &str) -> PathBuf {
        let token = Api::<ServiceAccount>::namespaced(self.admin_client(), ns)
            .create_token_request(
                sa,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        // None: the API server's own audience.
                        audiences: None,
                        expiration_seconds: Some(3600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .unwrap_or_else(|e| panic!("TokenRequest for {ns}/{sa}: {e}"))
            .status
            .expect("token in status")
            .token;
        let admin = Kubeconfig::read_from(self.kubeconfig_path()).expect("admin kubeconfig");
        let cluster_entry = admin.clusters[0].cluster.clone().expect("cluster entry");
        let config = serde_json::json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": "local", "cluster": {
                "server": cluster_entry.server,
                "certificate-authority-data": cluster_entry.certificate_authority_data,
            }}],
            "users": [{"name": sa, "user": {"token": token}}],
            "contexts": [{"name": "sa", "context": {"cluster": "local", "user": sa, "namespace": ns}}],
            "current-context": "sa",
        });
        let path = dir.join("kubeconfig");
        std::fs::write(&path, serde_saphyr::to_string(&config).unwrap()).unwrap();
        path
    }
}

/// Applies a CustomResourceDefinition (server-side apply, forced) and waits until it is
/// Established, i.e. its resources are served. Safe to call from several tests at once.
pub async fn apply_crd(client: &Client, crd: &CustomResourceDefinition, timeout: Duration) {
    let name = crd.metadata.name.clone().expect("the CRD has a name");
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    crds.patch(
        &name,
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(crd),
    )
    .await
    .unwrap_or_else(|e| panic!("applying CRD {name}: {e}"));
    match tokio::time::timeout(
        timeout,
        await_condition(crds, &name, conditions::is_crd_established()),
    )
    .await
    {
        Ok(Ok(_)) => {}
        Ok(Err(e)) => panic!("waiting for CRD {name} to be Established: {e}"),
        Err(_) => panic!("CRD {name} not Established after {timeout:?}"),
    }
}

/// True when the error is the API server's 403 Forbidden.
pub fn is_forbidden(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 403)
}

/// True when the error is the API server's 404 Not Found.
pub fn is_not_found(err: &kube::Error) -> bool {
    matches!(err, kube::Error::Api(status) if status.code == 404)
}

/// `<prefix>-<8 random hex>`, lowercased and cut to a valid DNS label (at most 63 chars).
pub fn unique_name(prefix: &str) -> String {
    let mut base: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    base.truncate(63 - 9);
    let base = base.trim_matches('-');
    let suffix = &uuid::Uuid::new_v4().simple().to_string()[..8];
    if base.is_empty() {
        format!("x-{suffix}")
    } else {
        format!("{base}-{suffix}")
    }
}

fn client_from(config: Config) -> Client {
    install_crypto_provider();
    Client::try_from(config).expect("building a kube client from the test kubeconfig")
}

/// Runs `hack/cluster.sh up` and returns the kubeconfig path from its last stdout line.
fn cluster_up() -> Result<PathBuf, String> {
    let script = repo_root().join("hack/cluster.sh");
    eprintln!(
        "KUBECONFIG is not set: starting the local control plane with {} up \
         (the first run on a machine builds it: minutes; `hack/cluster.sh down` stops it)",
        script.display()
    );
    let out = Command::new(&script)
        .arg("up")
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("running {}: {e}", script.display()))?;
    if !out.status.success() {
        return Err(format!(
            "{} up failed ({}); see the messages above and .local/cluster/*.log",
            script.display(),
            out.status
        ));
    }
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    let path = last
        .strip_prefix("export KUBECONFIG=")
        .ok_or_else(|| format!("unexpected last line from hack/cluster.sh up: {last:?}"))?;
    Ok(PathBuf::from(path.trim()))
}

fn check_loopback(config: &Config) -> Result<(), String> {
    if std::env::var("DTS_TEST_ALLOW_NON_LOOPBACK_CLUSTER").as_deref() == Ok("1") {
        return Ok(());
    }
    let host = config.cluster_url.host().unwrap_or_default();
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let loopback = host == "localhost" || host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback());
    if loopback {
        Ok(())
    } else {
        Err(format!(
            "the kubeconfig's server {} is not on a loopback address; the integration tests \
             create namespaces and CRDs, so they only attach to a local test cluster \
             (hack/cluster.sh up). Set DTS_TEST_ALLOW_NON_LOOPBACK_CLUSTER=1 to override",
            config.cluster_url
        ))
    }
}
