//! The operator as a Pod on a real node (`hack/cluster.sh up --with-node`): the chart and the
//! kustomize base installed for real, the image `hack/image.sh` built, the container's actual
//! security settings read from its `/proc` entry, the simulator reached over TLS on the node's
//! bridge through the chart's CA bundle, leader election with a force-deleted leader, a rolling
//! `helm upgrade` with requests in flight, and RRSA with the Pod's projected token.
//!
//! Every fault test counts, per request, the ResetDtsJob calls the simulator executed and the
//! most in flight at once, and waits until every request ended. Figures (install to Ready,
//! takeover, hand-over, rotation) are printed as `figure:` lines, never asserted.
//!
//! Each test installs into its own namespace, with the operator watching only that namespace,
//! and starts its own simulator: they run side by side on the one node.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine as _;
use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, OidcProvider, Simulator};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::{Pod, ServiceAccount};
use kube::api::{Api, PostParams};
use serde_json::{Value, json};

use crate::support::cluster::{cluster, repo_root, unique_name};
use crate::support::node::{
    Node, all_logs, container_id, delete_namespace, eventually, exec, helm, kubectl, leader_gauge,
    lease_holder, node, pod_name, pod_ready, pods,
};
use crate::support::operator::{AK_SECRET, create, create_default_secret, phase, spec};

const CHART: &str = "deploy/helm/dts-operator";
const LEASE: &str = "dts-operator";
const CA_CONFIGMAP: &str = "dts-gateway-ca";

fn selector(release: &str) -> String {
    format!("app.kubernetes.io/name=dts-operator,app.kubernetes.io/instance={release}")
}

fn terminal(o: &DtsJobReset) -> bool {
    matches!(phase(o).as_str(), "Succeeded" | "Failed" | "Unknown")
}

/// Values every install here shares: the imported image (never pulled), one namespace watched,
/// every DTS call to the simulator on the bridge, trusted through the CA bundle.
fn base_values(ns: &str, sim: &Simulator) -> Vec<String> {
    vec![
        "image.pullPolicy=Never".into(),
        format!("watchNamespace={ns}"),
        format!("dtsEndpoint={}", sim.url()),
        format!("caBundle.configMapName={CA_CONFIGMAP}"),
        "backoffInitial=200ms".into(),
        "backoffMax=1s".into(),
    ]
}

/// `helm install --wait`; returns how long it took until the Deployment was Ready.
async fn helm_install(ns: &str, release: &str, values: &[String]) -> Duration {
    let mut args = vec![
        "install",
        release,
        CHART,
        "--namespace",
        ns,
        "--wait",
        "--timeout",
        "180s",
    ];
    for v in values {
        args.push("--set");
        args.push(v);
    }
    let start = Instant::now();
    helm(&args).await.expect_ok("helm install");
    start.elapsed()
}

async fn ready_pods(ns: &str, sel: &str, n: usize) -> Vec<Pod> {
    eventually(
        &format!("{n} Ready Pods of {sel}"),
        Duration::from_secs(120),
        || async {
            let ps: Vec<Pod> = pods(ns, sel).await.into_iter().filter(pod_ready).collect();
            (ps.len() == n).then_some(ps)
        },
    )
    .await
}

/// Waits until `name` ends (Succeeded, Failed or Unknown). When it does not within `timeout`,
/// panics with what explains it: the Pods, the operator's log, every call the simulator
/// received (time, action, outcome) and whether the simulator still answers now.
async fn ended(
    client: &kube::Client,
    ns: &str,
    name: &str,
    timeout: Duration,
    node: &Node,
    sim: &Simulator,
) -> DtsJobReset {
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    let mut last = None;
    while start.elapsed() < timeout {
        match api.get_opt(name).await {
            Ok(Some(o)) if terminal(&o) => return o,
            Ok(o) => last = o,
            Err(e) => eprintln!("get {ns}/{name}: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let pods = kubectl(&["get", "pods", "-n", ns, "-o", "wide"]).await;
    let logs = kubectl(&[
        "logs",
        "-n",
        ns,
        "-l",
        "app.kubernetes.io/name=dts-operator",
        "--all-containers",
        "--prefix",
        "--tail=80",
    ])
    .await;
    let received: Vec<String> = sim
        .calls()
        .iter()
        .map(|c| {
            format!(
                "{} {} {} {}",
                c.received_at,
                c.action.as_deref().unwrap_or("-"),
                c.dts_job_id.as_deref().unwrap_or("-"),
                c.outcome
            )
        })
        .collect();
    let probe = tokio::time::timeout(Duration::from_secs(5), sts_post(node, sim, "not-a-token"))
        .await
        .map(|(status, _)| format!("answers now (HTTP {status})"))
        .unwrap_or_else(|_| "does not answer within 5 s".to_owned());
    panic!(
        "{ns}/{name} did not end within {timeout:?}; last: {}\npods:\n{}{}\noperator log (last 80 lines):\n{}{}\nsimulator {probe}; received:\n{}",
        serde_json::to_string(&last.and_then(|o| o.status)).unwrap(),
        pods.stdout,
        pods.stderr,
        logs.stdout,
        logs.stderr,
        received.join("\n")
    );
}

/// The calls the simulator executed for `job`, and the most in flight at once.
fn calls(sim: &Simulator, job: &str) -> (usize, usize) {
    (
        sim.executed_calls(job).len(),
        sim.max_in_flight("cn-hangzhou", job),
    )
}

/// The container as it really runs, read from its `/proc/<pid>` on the host (the same files as
/// `/proc/1/...` inside it): the image's entrypoint as PID 1, uid/gid 65532, no capability in
/// any set, no-new-privileges, a seccomp filter (RuntimeDefault), and a root filesystem that
/// refuses writes — even root's, through the container's root.
async fn assert_hardened(node: &Node, pod: &Pod) {
    let pid = node.container_pid(&container_id(pod)).await;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/PID/status");
    let field = |name: &str| -> String {
        status
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .map(|v| v.trim().to_owned())
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status:\n{status}"))
    };
    for id in ["Uid", "Gid"] {
        let ids: Vec<String> = field(id).split_whitespace().map(str::to_owned).collect();
        assert_eq!(ids, ["65532"; 4], "{id} (real, effective, saved, fs)");
    }
    for cap in ["CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert_eq!(field(cap), "0000000000000000", "{cap}");
    }
    assert_eq!(field("NoNewPrivs"), "1");
    assert_eq!(
        field("Seccomp"),
        "2",
        "seccomp filter mode (RuntimeDefault)"
    );
    assert_eq!(
        field("NSpid").split_whitespace().last(),
        Some("1"),
        "PID 1 in its PID namespace"
    );
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap();
    let argv: Vec<String> = cmdline
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    assert_eq!(
        argv.first().map(String::as_str),
        Some("/dts-operator"),
        "{argv:?}"
    );
    assert_eq!(argv.get(1).map(String::as_str), Some("run"), "{argv:?}");

    let mountinfo = std::fs::read_to_string(format!("/proc/{pid}/mountinfo")).unwrap();
    let root = mountinfo
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.get(4) == Some(&"/"))
        .expect("a root mount");
    assert!(
        root[5].split(',').any(|o| o == "ro"),
        "root filesystem mounted {}",
        root[5]
    );
    let probe = format!("/proc/{pid}/root/.dts-operator-write-probe");
    let err = std::fs::write(&probe, b"x").expect_err("the root filesystem is read-only");
    assert_eq!(err.raw_os_error(), Some(30), "EROFS expected, got {err}");
}

fn assert_clean_logs(logs: &str) {
    assert!(!logs.is_empty(), "no logs");
    assert!(
        !logs.to_ascii_lowercase().contains("forbidden"),
        "the operator's log mentions forbidden:\n{logs}"
    );
    assert!(
        !logs.contains(AK_SECRET),
        "the AccessKey secret is in the log"
    );
}

// --- helm install ------------------------------------------------------------------------

#[tokio::test]
async fn helm_install_runs_a_hardened_pod_that_resets_over_tls() {
    tokio::time::timeout(Duration::from_secs(420), async {
        let node = node().await;
        let c = cluster().await;
        let client = c.admin_client();
        let ns = c.fresh_namespace("node-helm").await;
        let sim = node.simulator().await;
        node.create_ca_configmap(&ns, CA_CONFIGMAP).await;
        create_default_secret(&client, &ns).await;
        let release = "dts-operator-helm";
        let took = helm_install(&ns, release, &base_values(&ns, &sim)).await;
        eprintln!("figure: helm install --wait to a Ready Pod: {took:.1?}");
        let pod = ready_pods(&ns, &selector(release), 1).await.remove(0);
        let spec_ = pod.spec.as_ref().unwrap();
        assert_eq!(spec_.node_name.as_deref(), Some(node.name.as_str()));
        assert_eq!(
            spec_.containers[0].image.as_deref(),
            Some("dts-operator:0.1.0"),
            "the chart's image, resolved to {}",
            node.image
        );

        // Over TLS to the simulator on the bridge, trusted only through --ca-bundle.
        create(&client, &ns, "r1", spec("node-helm-job")).await;
        let done = ended(&client, &ns, "r1", Duration::from_secs(90), node, &sim).await;
        assert_eq!(phase(&done), "Succeeded", "{:?}", done.status);
        assert_eq!(calls(&sim, "node-helm-job"), (1, 1));
        let call = &sim.executed_calls("node-helm-job")[0];
        assert_eq!(
            call.host.as_deref(),
            Some(sim.addr().to_string().as_str()),
            "signed for the gateway's address"
        );
        assert!(sim.url().starts_with("https://"));

        assert_hardened(node, &pod).await;
        assert_eq!(leader_gauge(&pod).await, Some(1), "the only replica leads");
        assert_clean_logs(&all_logs(&ns, &selector(release)).await);

        helm(&["uninstall", release, "--namespace", &ns, "--wait"])
            .await
            .expect_ok("helm uninstall");
        delete_namespace(&ns).await;
    })
    .await
    .expect("the test finishes within its bound");
}

// --- kustomize -----------------------------------------------------------------------------

fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut out = PathBuf::new();
    for _ in common..from.len() {
        out.push("..");
    }
    for c in &to[common..] {
        out.push(c);
    }
    out
}

#[tokio::test]
async fn kustomize_base_runs_a_hardened_pod_that_resets_over_tls() {
    tokio::time::timeout(Duration::from_secs(420), async {
        let node = node().await;
        let c = cluster().await;
        let client = c.admin_client();
        let sim = node.simulator().await;
        // An overlay of deploy/kustomize as the README shows one: its own namespace and name
        // prefix (the base's ClusterRole is cluster-wide), the local image never pulled, the
        // gateway and its CA, and one namespace watched.
        let ns = unique_name("it-node-kust");
        let dir = repo_root().join(".local/test-node-kustomize").join(&ns);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("ca.crt"), node.ca_pem()).unwrap();
        let base = relative_to(&dir, &repo_root().join("deploy/kustomize"));
        let kustomization = format!(
            r#"apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - {base}
namespace: {ns}
namePrefix: {ns}-
configMapGenerator:
  - name: {CA_CONFIGMAP}
    files: [ca.crt]
patches:
  - target: {{kind: Deployment, name: dts-operator}}
    patch: |
      - op: replace
        path: /spec/template/spec/containers/0/imagePullPolicy
        value: Never
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --namespace={ns}
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --dts-endpoint={url}
      - op: add
        path: /spec/template/spec/containers/0/args/-
        value: --ca-bundle=/etc/dts-operator/ca/ca.crt
      - op: add
        path: /spec/template/spec/containers/0/volumeMounts
        value: [{{name: gateway-ca, mountPath: /etc/dts-operator/ca, readOnly: true}}]
      - op: add
        path: /spec/template/spec/volumes
        value: [{{name: gateway-ca, configMap: {{name: {CA_CONFIGMAP}}}}}]
"#,
            base = base.display(),
            url = sim.url(),
        );
        std::fs::write(dir.join("kustomization.yaml"), kustomization).unwrap();
        let start = Instant::now();
        kubectl(&["apply", "--server-side", "-k", &dir.display().to_string()])
            .await
            .expect_ok("kubectl apply -k");
        let deployment = format!("deployment/{ns}-dts-operator");
        kubectl(&[
            "-n",
            &ns,
            "rollout",
            "status",
            &deployment,
            "--timeout=180s",
        ])
        .await
        .expect_ok("rollout status");
        eprintln!(
            "figure: kubectl apply -k to a Ready Pod: {:.1?}",
            start.elapsed()
        );
        // The base's namespace label enforces the restricted Pod Security Standard: the Pod
        // was admitted under it.
        let labels = kubectl(&["get", "namespace", &ns, "-o", "jsonpath={.metadata.labels}"])
            .await
            .expect_ok("namespace labels");
        assert!(
            labels.contains(r#""pod-security.kubernetes.io/enforce":"restricted""#),
            "{labels}"
        );
        let pod = ready_pods(&ns, "app.kubernetes.io/name=dts-operator", 1)
            .await
            .remove(0);

        create_default_secret(&client, &ns).await;
        create(&client, &ns, "r1", spec("node-kust-job")).await;
        let done = ended(&client, &ns, "r1", Duration::from_secs(90), node, &sim).await;
        assert_eq!(phase(&done), "Succeeded", "{:?}", done.status);
        assert_eq!(calls(&sim, "node-kust-job"), (1, 1));

        assert_hardened(node, &pod).await;
        assert_eq!(leader_gauge(&pod).await, Some(1));
        assert_clean_logs(&all_logs(&ns, "app.kubernetes.io/name=dts-operator").await);

        // Not `kubectl delete -k`: that deletes the CRD, and every DtsJobReset with it.
        let _ = kubectl(&[
            "delete",
            "--ignore-not-found",
            &format!("clusterrolebinding/{ns}-dts-operator"),
            &format!("clusterrole/{ns}-dts-operator"),
        ])
        .await;
        delete_namespace(&ns).await;
        let _ = std::fs::remove_dir_all(&dir);
    })
    .await
    .expect("the test finishes within its bound");
}

// --- leader election: a force-deleted leader -------------------------------------------------

/// The Pod whose name the Lease holder starts with (identities are `<pod>-<random>`).
fn holder_pod<'a>(pods: &'a [Pod], holder: &str) -> Option<&'a Pod> {
    pods.iter()
        .find(|p| holder.starts_with(&format!("{}-", pod_name(p))))
}

#[tokio::test]
async fn two_replicas_one_leader_and_a_force_deleted_leader_is_replaced_within_the_lease() {
    tokio::time::timeout(Duration::from_secs(480), async {
        let node = node().await;
        let c = cluster().await;
        let client = c.admin_client();
        let ns = c.fresh_namespace("node-ha").await;
        let sim = node.simulator().await;
        node.create_ca_configmap(&ns, CA_CONFIGMAP).await;
        create_default_secret(&client, &ns).await;
        let release = "dts-operator-ha";
        let lease_duration = Duration::from_secs(10);
        let mut values = base_values(&ns, &sim);
        values.extend([
            "replicaCount=2".to_owned(),
            format!("leaderElection.leaseDuration={}s", lease_duration.as_secs()),
            "dtsTimeout=5s".to_owned(),
            "maxConcurrentResets=8".to_owned(),
            "dtsQps=50".to_owned(),
            "dtsBurst=50".to_owned(),
        ]);
        let took = helm_install(&ns, release, &values).await;
        eprintln!("figure: helm install --wait, 2 replicas Ready: {took:.1?}");
        let sel = selector(release);
        let both = ready_pods(&ns, &sel, 2).await;

        // Exactly one holds the Lease, and exactly that one says it leads.
        let holder = eventually("a Lease holder", Duration::from_secs(30), || {
            lease_holder(&ns, LEASE)
        })
        .await;
        let leader = holder_pod(&both, &holder)
            .unwrap_or_else(|| panic!("holder {holder} is none of the Pods"))
            .clone();
        let standby = both
            .iter()
            .find(|p| pod_name(p) != pod_name(&leader))
            .unwrap()
            .clone();
        eventually("leader gauges 1 and 0", Duration::from_secs(30), || async {
            (leader_gauge(&leader).await == Some(1) && leader_gauge(&standby).await == Some(0))
                .then_some(())
        })
        .await;

        // Ten requests; the leader sends eight at once (max concurrent), held at a gate.
        let jobs: Vec<String> = (0..10).map(|i| format!("node-ha-{i}")).collect();
        for j in &jobs {
            sim.script(j, [Answer::gate("failover", Answer::Success)]);
        }
        for (i, j) in jobs.iter().enumerate() {
            create(&client, &ns, &format!("r{i}"), spec(j)).await;
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            sim.wait_for_gate_waiters("failover", 8),
        )
        .await
        .expect("eight calls in flight");

        let killed = Instant::now();
        kubectl(&[
            "delete",
            "pod",
            "-n",
            &ns,
            &pod_name(&leader),
            "--grace-period=0",
            "--force",
        ])
        .await
        .expect_ok("kubectl delete pod --force");
        // The other replica — or the Pod the Deployment starts in the killed one's place, which
        // competes from its first second — takes the Lease once it runs out.
        let old_prefix = format!("{}-", pod_name(&leader));
        let new_holder = eventually("another Pod takes the Lease", lease_duration * 3, || async {
            lease_holder(&ns, LEASE)
                .await
                .filter(|h| !h.starts_with(&old_prefix))
        })
        .await;
        let takeover = killed.elapsed();
        let successor = eventually("the new holder's Pod", Duration::from_secs(30), || async {
            holder_pod(&pods(&ns, &sel).await, &new_holder).cloned()
        })
        .await;
        // Read the Pod afresh each time: a replacement that won may not have its IP in its
        // status yet.
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        eventually("the new leader's gauge", Duration::from_secs(30), || async {
            let p = api.get_opt(&pod_name(&successor)).await.ok().flatten()?;
            (leader_gauge(&p).await == Some(1)).then_some(())
        })
        .await;
        let who = if pod_name(&successor) == pod_name(&standby) {
            "the standby"
        } else {
            "the replacement Pod"
        };
        eprintln!(
            "figure: force-deleted leader -> {who} holds the Lease after {takeover:.1?} (lease {lease_duration:?})"
        );
        // It acquires at its first retry after the lease it last saw renewed runs out: within
        // the lease duration of the kill, plus one retry period (a fifth of it).
        assert!(
            takeover <= lease_duration + lease_duration / 5 + Duration::from_secs(2),
            "takeover took {takeover:?} ({new_holder})"
        );

        sim.open_gate("failover");
        for i in 0..jobs.len() {
            ended(&client, &ns, &format!("r{i}"), Duration::from_secs(120), node, &sim).await;
        }
        let mut phases = BTreeMap::new();
        for (i, j) in jobs.iter().enumerate() {
            let o: DtsJobReset = Api::namespaced(client.clone(), &ns)
                .get(&format!("r{i}"))
                .await
                .unwrap();
            let (n, max) = calls(&sim, j);
            assert!(n <= 1, "{j}: {n} ResetDtsJob calls");
            assert!(max <= 1, "{j}: {max} in flight at once");
            if phase(&o) == "Succeeded" {
                assert_eq!(n, 1, "{j} Succeeded without a call");
            }
            *phases.entry(phase(&o)).or_insert(0) += 1;
        }
        eprintln!("figure: after the failover, phases {phases:?}");
        // The cut calls end Unknown (never retried); the requests the old leader never sent
        // were sent once by the new one.
        assert!(phases.get("Succeeded").copied().unwrap_or(0) >= 2, "{phases:?}");

        // The Deployment replaced the Pod: one leader, one standby again.
        let now = ready_pods(&ns, &sel, 2).await;
        let mut gauges = Vec::new();
        for p in &now {
            gauges.push(leader_gauge(p).await);
        }
        gauges.sort();
        assert_eq!(gauges, [Some(0), Some(1)], "one leader among {:?}", now.iter().map(pod_name).collect::<Vec<_>>());
        assert_clean_logs(&all_logs(&ns, &sel).await);
        delete_namespace(&ns).await;
    })
    .await
    .expect("the test finishes within its bound");
}

// --- helm upgrade with 20 requests in flight --------------------------------------------------

#[tokio::test]
async fn helm_upgrade_rolls_the_pod_with_twenty_requests_in_flight_and_hands_the_lease_over() {
    tokio::time::timeout(Duration::from_secs(480), async {
        let node = node().await;
        let c = cluster().await;
        let client = c.admin_client();
        let ns = c.fresh_namespace("node-upgrade").await;
        let sim = node.simulator().await;
        node.create_ca_configmap(&ns, CA_CONFIGMAP).await;
        create_default_secret(&client, &ns).await;
        let release = "dts-operator-upgrade";
        let mut values = base_values(&ns, &sim);
        values.extend([
            "leaderElection.leaseDuration=10s".to_owned(),
            // The leader sends only while its lease outlasts the call: 10 s needs a short call.
            "dtsTimeout=5s".to_owned(),
            "maxConcurrentResets=20".to_owned(),
            "dtsQps=100".to_owned(),
            "dtsBurst=100".to_owned(),
        ]);
        helm_install(&ns, release, &values).await;
        let sel = selector(release);
        let old = ready_pods(&ns, &sel, 1).await.remove(0);
        let old_holder = eventually("a Lease holder", Duration::from_secs(30), || {
            lease_holder(&ns, LEASE)
        })
        .await;
        assert!(old_holder.starts_with(&format!("{}-", pod_name(&old))));

        let jobs: Vec<String> = (0..20).map(|i| format!("node-up-{i}")).collect();
        for j in &jobs {
            sim.script(j, [Answer::gate("upgrade", Answer::Success)]);
        }
        for (i, j) in jobs.iter().enumerate() {
            create(&client, &ns, &format!("r{i}"), spec(j)).await;
        }
        tokio::time::timeout(
            Duration::from_secs(60),
            sim.wait_for_gate_waiters("upgrade", 20),
        )
        .await
        .expect("twenty calls in flight");

        // A changed value that rolls the Deployment.
        let upgrade = helm(&[
            "upgrade",
            release,
            CHART,
            "--namespace",
            &ns,
            "--reuse-values",
            "--set-string",
            "podAnnotations.dtsops\\.io/rolled=1",
        ])
        .await;
        upgrade.expect_ok("helm upgrade");
        // The new Pod stands by (Ready); then the old one gets SIGTERM: it stops claiming and
        // lets its twenty calls finish. They finish now.
        let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        eventually(
            "the old Pod terminating",
            Duration::from_secs(120),
            || async {
                match api.get_opt(&pod_name(&old)).await.ok().flatten() {
                    Some(p) if p.metadata.deletion_timestamp.is_some() => Some(()),
                    None => Some(()),
                    _ => None,
                }
            },
        )
        .await;
        let sigterm = Instant::now();
        sim.open_gate("upgrade");

        let new_holder = eventually(
            "the Lease handed to the new Pod",
            Duration::from_secs(90),
            || async {
                lease_holder(&ns, LEASE)
                    .await
                    .filter(|h| *h != old_holder && !h.starts_with(&format!("{}-", pod_name(&old))))
            },
        )
        .await;
        let handover = sigterm.elapsed();
        eprintln!("figure: helm upgrade: old Pod's SIGTERM -> new holder after {handover:.1?}");
        for i in 0..jobs.len() {
            ended(
                &client,
                &ns,
                &format!("r{i}"),
                Duration::from_secs(90),
                node,
                &sim,
            )
            .await;
        }
        for (i, j) in jobs.iter().enumerate() {
            let o: DtsJobReset = Api::namespaced(client.clone(), &ns)
                .get(&format!("r{i}"))
                .await
                .unwrap();
            assert_eq!(phase(&o), "Succeeded", "r{i}: {:?}", o.status);
            assert_eq!(calls(&sim, j), (1, 1), "{j}: calls, most in flight");
        }
        let new = ready_pods(&ns, &sel, 1).await.remove(0);
        assert_ne!(pod_name(&new), pod_name(&old));
        assert!(
            new_holder.starts_with(&format!("{}-", pod_name(&new))),
            "{new_holder}"
        );
        assert_eq!(
            new.metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("dtsops.io/rolled"))
                .map(String::as_str),
            Some("1")
        );
        eventually("the new Pod leads", Duration::from_secs(30), || async {
            (leader_gauge(&new).await == Some(1)).then_some(())
        })
        .await;
        // And it acts.
        create(&client, &ns, "after", spec("node-up-after")).await;
        let done = ended(&client, &ns, "after", Duration::from_secs(60), node, &sim).await;
        assert_eq!(phase(&done), "Succeeded");
        assert_eq!(calls(&sim, "node-up-after"), (1, 1));
        assert_clean_logs(&all_logs(&ns, &sel).await);
        delete_namespace(&ns).await;
    })
    .await
    .expect("the test finishes within its bound");
}

// --- RRSA ------------------------------------------------------------------------------------

fn jwt_claims(token: &str) -> Value {
    let payload = token.split('.').nth(1).expect("a JWT");
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .expect("base64url claims");
    serde_json::from_slice(&bytes).expect("JSON claims")
}

/// `iat` of the OIDC tokens STS accepted, in call order.
fn accepted_token_iats(sim: &Simulator) -> Vec<i64> {
    sim.sts_calls()
        .iter()
        .filter(|c| c.outcome == "ok")
        .filter_map(|c| c.oidc_token.as_deref())
        .map(|t| jwt_claims(t)["iat"].as_i64().expect("iat"))
        .collect()
}

#[tokio::test]
async fn rrsa_in_a_pod_assumes_the_role_with_its_projected_token_and_rereads_it_after_rotation() {
    // The kubelet rotates a projected token at 80% of its lifetime, and 600 s is the shortest
    // the API server issues: this test waits about eight minutes for a real rotation.
    tokio::time::timeout(Duration::from_secs(900), async {
        let node = node().await;
        let c = cluster().await;
        let client = c.admin_client();
        let ns = c.fresh_namespace("node-rrsa").await;
        let release = "dts-operator-rrsa";
        let sa = release;
        let audience = "sts.aliyuncs.com";

        // STS trusts the cluster's ServiceAccount issuer, as RAM trusts an ACK cluster's.
        let discovery: Value = serde_json::from_str(
            &kubectl(&["get", "--raw", "/.well-known/openid-configuration"])
                .await
                .expect_ok("OIDC discovery"),
        )
        .unwrap();
        let issuer = discovery["issuer"].as_str().expect("issuer").to_owned();
        let jwks = kubectl(&["get", "--raw", "/openid/v1/jwks"])
            .await
            .expect_ok("JWKS");
        let sim = node.simulator().await;
        sim.set_oidc_provider(OidcProvider::new(audience, Some(&issuer), &jwks).expect("JWKS"));
        // Short-lived STS credentials: the operator refreshes them (and re-reads the token
        // file) every half minute.
        sim.set_sts_validity(60);
        node.create_ca_configmap(&ns, CA_CONFIGMAP).await;

        let role = "acs:ram::1234567890123456:role/dts-operator-reset";
        let provider = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-local";
        let mut values = base_values(&ns, &sim);
        values.extend([
            "rrsa.enabled=true".to_owned(),
            format!("rrsa.roleArn={role}"),
            format!("rrsa.oidcProviderArn={provider}"),
            "rrsa.tokenExpirationSeconds=600".to_owned(),
            "extraEnv[0].name=ALIBABA_CLOUD_STS_ENDPOINT".to_owned(),
            format!("extraEnv[0].value={}", sim.url()),
        ]);
        helm_install(&ns, release, &values).await;
        let pod = ready_pods(&ns, &selector(release), 1).await.remove(0);
        let started = Instant::now();
        let env: BTreeMap<String, String> = pod.spec.as_ref().unwrap().containers[0]
            .env
            .iter()
            .flatten()
            .filter_map(|e| Some((e.name.clone(), e.value.clone()?)))
            .collect();
        assert_eq!(env["ALIBABA_CLOUD_ROLE_ARN"], role);
        assert_eq!(env["ALIBABA_CLOUD_OIDC_PROVIDER_ARN"], provider);
        let token_file = &env["ALIBABA_CLOUD_OIDC_TOKEN_FILE"];
        assert_eq!(token_file, "/var/run/secrets/ack.alibabacloud.com/rrsa-tokens/token");

        // The projected token, as the container sees it: for STS, for this ServiceAccount.
        let pid = node.container_pid(&container_id(&pod)).await;
        let token = std::fs::read_to_string(format!("/proc/{pid}/root{token_file}"))
            .expect("the token file in the container");
        let claims = jwt_claims(token.trim());
        assert_eq!(claims["aud"], json!([audience]));
        assert_eq!(claims["iss"], json!(issuer));
        assert_eq!(claims["sub"], json!(format!("system:serviceaccount:{ns}:{sa}")));
        let first_iat = claims["iat"].as_i64().unwrap();

        // STS really checks: the same account's token for another audience is refused.
        let sa_api: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let other = sa_api
            .create_token_request(
                sa,
                &PostParams::default(),
                &TokenRequest {
                    spec: Some(TokenRequestSpec {
                        audiences: Some(vec!["https://kubernetes.default.svc".into()]),
                        expiration_seconds: Some(600),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            )
            .await
            .expect("TokenRequest")
            .status
            .expect("a token")
            .token
            .expect("a token");
        let refused = sts_post(node, &sim, &other).await;
        assert_eq!(refused.0, 401, "{}", refused.1);
        assert!(refused.1.contains("AuthenticationFail.OIDCToken.Invalid"), "{}", refused.1);

        // A resource with no Secret: the operator's default credentials, i.e. RRSA.
        create(&client, &ns, "r0", rrsa_spec("node-rrsa-0")).await;
        let done = ended(&client, &ns, "r0", Duration::from_secs(90), node, &sim).await;
        assert_eq!(phase(&done), "Succeeded", "{:?}", done.status);
        assert_eq!(calls(&sim, "node-rrsa-0"), (1, 1));
        let call = &sim.executed_calls("node-rrsa-0")[0];
        assert!(
            call.access_key_id.as_deref().is_some_and(|k| k.starts_with("STS.")),
            "signed with STS credentials: {:?}",
            call.access_key_id
        );
        assert!(call.has_security_token);
        let iats = accepted_token_iats(&sim);
        assert!(!iats.is_empty(), "no accepted AssumeRoleWithOIDC");
        assert!(iats.iter().all(|i| *i == first_iat), "{iats:?}");

        // Until the kubelet rotates the file, and the operator sends the new token: a reset
        // every 20 s, each through freshly assumed credentials once the old ones are stale.
        let mut n = 1;
        let rotated = loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            let name = format!("r{n}");
            let job = format!("node-rrsa-{n}");
            create(&client, &ns, &name, rrsa_spec(&job)).await;
            let done = ended(&client, &ns, &name, Duration::from_secs(90), node, &sim).await;
            assert_eq!(phase(&done), "Succeeded", "{name}: {:?}", done.status);
            assert_eq!(calls(&sim, &job), (1, 1));
            n += 1;
            let iats = accepted_token_iats(&sim);
            if let Some(newer) = iats.iter().find(|i| **i > first_iat) {
                break *newer;
            }
            assert!(
                started.elapsed() < Duration::from_secs(700),
                "no rotated token sent after {:?} (token issued at {first_iat}, STS saw {iats:?})",
                started.elapsed()
            );
        };
        eprintln!(
            "figure: RRSA token rotated by the kubelet {}s after issue; the operator sent it {:.0?} after the Pod was Ready ({} resets, {} STS calls)",
            rotated - first_iat,
            started.elapsed(),
            n,
            sim.sts_calls().len()
        );
        let logs = all_logs(&ns, &selector(release)).await;
        assert_clean_logs(&logs);
        assert!(!logs.contains(token.trim()), "the OIDC token is in the log");
        delete_namespace(&ns).await;
    })
    .await
    .expect("the test finishes within its bound");
}

fn rrsa_spec(job: &str) -> dts_operator::crd::DtsJobResetSpec {
    serde_json::from_value(json!({"dtsJobId": job, "regionId": "cn-hangzhou"})).unwrap()
}

/// An anonymous AssumeRoleWithOIDC with `token` (form body), as a client of the gateway:
/// status and body.
async fn sts_post(node: &Node, sim: &Simulator, token: &str) -> (u16, String) {
    crate::support::cluster::install_crypto_provider();
    let ca = reqwest::Certificate::from_pem(node.ca_pem().as_bytes()).unwrap();
    let http = reqwest::Client::builder()
        .tls_certs_only([ca])
        .build()
        .unwrap();
    let form = [
        (
            "RoleArn",
            "acs:ram::1234567890123456:role/dts-operator-reset",
        ),
        (
            "OIDCProviderArn",
            "acs:ram::1234567890123456:oidc-provider/ack-rrsa-local",
        ),
        ("RoleSessionName", "it-refused"),
        ("OIDCToken", token),
    ];
    let body = form
        .iter()
        .map(|(k, v)| format!("{k}={}", dts_operator::aliyun::encoding::pct(v)))
        .collect::<Vec<_>>()
        .join("&");
    let resp = http
        .post(format!(
            "{}/?Action=AssumeRoleWithOIDC&Version=2015-04-01&Format=JSON",
            sim.url()
        ))
        .header("content-type", "application/x-www-form-urlencoded")
        .body(body)
        .send()
        .await
        .expect("STS answers");
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap_or_default())
}

// --- the image -------------------------------------------------------------------------------

/// `INSTRUCTION args` of the Dockerfile's last stage.
fn runtime_stage(dockerfile: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = dockerfile
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    let last_from = lines
        .iter()
        .rposition(|l| l.starts_with("FROM "))
        .expect("a FROM");
    lines[last_from..]
        .iter()
        .filter_map(|l| l.split_once(' '))
        .map(|(i, a)| (i.to_owned(), a.trim().to_owned()))
        .collect()
}

fn json_array(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("{s} is not an exec-form JSON array: {e}"))
}

#[tokio::test]
async fn the_image_has_the_runtime_layout_of_the_dockerfile() {
    let node = node().await;
    let stage =
        runtime_stage(&std::fs::read_to_string(repo_root().join("deploy/Dockerfile")).unwrap());
    let get = |i: &str| -> Vec<String> {
        stage
            .iter()
            .filter(|(k, _)| k == i)
            .map(|(_, v)| v.clone())
            .collect()
    };
    let user = get("USER").pop().expect("USER");
    let entrypoint = json_array(&get("ENTRYPOINT").pop().expect("ENTRYPOINT"));
    let cmd = json_array(&get("CMD").pop().expect("CMD"));
    let expose: Vec<String> = get("EXPOSE")
        .iter()
        .flat_map(|e| e.split_whitespace().map(str::to_owned).collect::<Vec<_>>())
        .collect();
    let copied: Vec<String> = get("COPY")
        .iter()
        .filter_map(|c| c.split_whitespace().last().map(str::to_owned))
        .collect();
    assert!(
        stage[0].1.contains("distroless"),
        "runtime base {}",
        stage[0].1
    );

    // The archive hack/image.sh built: an OCI layout, tarred.
    let dir = repo_root()
        .join(".local/test-node-image")
        .join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&dir).unwrap();
    let tar = |args: &[&str]| {
        let out = std::process::Command::new("tar")
            .args(args)
            .output()
            .expect("tar");
        assert!(
            out.status.success(),
            "tar {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    tar(&[
        "-xf",
        &node.image_archive.display().to_string(),
        "-C",
        &dir.display().to_string(),
    ]);
    let blob = |digest: &str| -> PathBuf {
        dir.join("blobs/sha256")
            .join(digest.strip_prefix("sha256:").expect("sha256"))
    };
    let index: Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let manifest: Value = serde_json::from_slice(
        &std::fs::read(blob(index["manifests"][0]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    let config: Value = serde_json::from_slice(
        &std::fs::read(blob(manifest["config"]["digest"].as_str().unwrap())).unwrap(),
    )
    .unwrap();
    let cfg = &config["config"];
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(cfg["User"], json!(user), "the same user as the Dockerfile");
    assert_eq!(cfg["Entrypoint"], json!(entrypoint), "the same entrypoint");
    assert_eq!(cfg["Cmd"], json!(cmd), "the same command");
    let ports: Vec<String> = cfg["ExposedPorts"]
        .as_object()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    let want_ports: Vec<String> = expose
        .iter()
        .map(|p| {
            if p.contains('/') {
                p.clone()
            } else {
                format!("{p}/tcp")
            }
        })
        .collect();
    assert_eq!(ports, want_ports, "the same exposed ports");

    // The one layer: the binary where the Dockerfile copies it (the entrypoint), executable by
    // anyone; the CA roots where distroless has them; nonroot's passwd entry.
    assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
    let layer = blob(manifest["layers"][0]["digest"].as_str().unwrap());
    let listing = tar(&["-tvzf", &layer.display().to_string(), "--numeric-owner"]);
    let entry = |path: &str| -> String {
        listing
            .lines()
            .find(|l| {
                l.trim_end_matches('/')
                    .ends_with(&format!(" .{}", path.trim_end_matches('/')))
            })
            .unwrap_or_else(|| panic!("{path} not in the image:\n{listing}"))
            .to_owned()
    };
    assert_eq!(
        copied,
        [entrypoint[0].clone()],
        "COPY destination = ENTRYPOINT"
    );
    assert!(
        entry(&entrypoint[0]).starts_with("-rwxr-xr-x 0/0 "),
        "{}",
        entry(&entrypoint[0])
    );
    assert!(entry("/etc/ssl/certs/ca-certificates.crt").starts_with("-rw-r--r-- 0/0 "));
    assert!(
        entry("/home/nonroot").starts_with("drwx------ 65532/65532 "),
        "{}",
        entry("/home/nonroot")
    );
    assert!(
        entry("/tmp").starts_with("drwxrwxrwt 0/0 "),
        "{}",
        entry("/tmp")
    );
    assert!(entry("/").starts_with("drwxr-xr-x 0/0 "), "{}", entry("/"));
    let passwd = tar(&["-xzOf", &layer.display().to_string(), "./etc/passwd"]);
    let uid = user.split(':').next().unwrap();
    assert!(
        passwd
            .lines()
            .any(|l| l.starts_with(&format!("nonroot:x:{uid}:"))),
        "{passwd}"
    );

    // The chart and kustomize run it as that user.
    let values: Value = serde_saphyr::from_str(
        &std::fs::read_to_string(repo_root().join(CHART).join("values.yaml")).unwrap(),
    )
    .unwrap();
    assert_eq!(values["podSecurityContext"]["runAsUser"].to_string(), uid);
    assert_eq!(
        values["podSecurityContext"]["runAsGroup"].to_string(),
        user.split(':').nth(1).unwrap()
    );
    // And the node has exactly this image under the chart's name.
    let images = exec(
        Path::new("ctr"),
        &[
            "--address",
            &node.containerd.display().to_string(),
            "--namespace",
            "k8s.io",
            "images",
            "ls",
        ],
        &[],
        Duration::from_secs(30),
    )
    .await
    .expect_ok("ctr images ls");
    assert!(
        images
            .lines()
            .any(|l| l.starts_with(&format!("{} ", node.image))),
        "{} not in the node's images:\n{images}",
        node.image
    );
    let _ = std::fs::remove_dir_all(&dir);
}

// --- the demo --------------------------------------------------------------------------------

#[tokio::test]
async fn demo_in_cluster_runs_to_completion_in_ci_mode() {
    let _ = node().await;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    exec(
        Path::new(&cargo),
        &[
            "build",
            "--locked",
            "-p",
            "dts-simulator",
            "--bin",
            "dts-simulator",
        ],
        &[],
        Duration::from_secs(900),
    )
    .await
    .expect_ok("cargo build -p dts-simulator");
    let bin = PathBuf::from(env!("CARGO_BIN_EXE_dts-operator"));
    let simulator = bin.with_file_name("dts-simulator");
    let ns = unique_name("it-demo-pod");
    let out = exec(
        &repo_root().join("hack/demo.sh"),
        &["--in-cluster", "--ci"],
        &[
            ("DEMO_NAMESPACE", &ns),
            ("DEMO_KEEP_CLUSTER", "1"),
            ("DEMO_SKIP_BUILD", "1"),
            ("DEMO_SIMULATOR_BIN", &simulator.display().to_string()),
            ("DEMO_TIMEOUT", "120"),
        ],
        Duration::from_secs(420),
    )
    .await;
    assert!(
        out.ok(),
        "hack/demo.sh --in-cluster --ci failed ({:?})\nstdout:\n{}\nstderr:\n{}",
        out.code,
        out.stdout,
        out.stderr
    );
    let stdout = &out.stdout;
    assert!(stdout.contains("The demo ended as expected"), "{stdout}");
    assert!(!stdout.contains("FAIL"), "{stdout}");
    assert_eq!(stdout.matches("  ok    ").count(), 8, "{stdout}");
    assert!(stdout.contains("helm install"), "{stdout}");
    assert!(
        stdout.contains("leaving the control plane running"),
        "{stdout}"
    );
    // It removed its release and namespace.
    let left = helm(&["list", "-n", &ns, "-q"])
        .await
        .expect_ok("helm list");
    assert!(left.trim().is_empty(), "releases left in {ns}: {left}");
}
