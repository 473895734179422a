//! What a platform team imports on day one (deploy/monitoring/, the chart's PrometheusRule and
//! dashboard ConfigMap), checked with Prometheus's own code: promtool and its PromQL and
//! exposition parsers, built by hack/tools/prometheus/build.sh from the pinned module.
//!
//! - The rules pass `promtool check rules` and their unit tests (`promtool test rules`); every
//!   alert has a case that fires and one that must not, and silencing every alert fails the tests.
//! - Every alert has a summary, a description and a runbook_url whose anchor is a README heading.
//! - Every copy of the rules and of the dashboard (plain file, chart, kustomize) is the same; the
//!   chart renders them only when enabled, and stays `helm lint --strict` clean.
//! - Every metric, label and label value the rules and the dashboard query is one that a real
//!   operator, driven through success, throttling, failure, an unknown outcome and a reconcile
//!   error, really exposes: a rename cannot silently blank a panel or mute an alert.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use dts_operator::crd::DtsJobReset;
use dts_simulator::{Answer, Simulator};
use k8s_openapi::api::admissionregistration::v1::{
    ValidatingAdmissionPolicy, ValidatingAdmissionPolicyBinding,
};
use kube::api::{Api, PostParams};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::support::cluster::{cluster, local_bin, repo_root, unique_name};
use crate::support::operator::{
    AK_ID, AK_SECRET, Operator, OperatorOptions, create, create_default_secret, phase, setup, spec,
    wait_phase,
};
use crate::support::{docs, kind};

const RULES: &str = "deploy/monitoring/dts-operator-alerts.yaml";
const RULE_TESTS: &str = "deploy/monitoring/dts-operator-alerts.test.yaml";
const DASHBOARD: &str = "deploy/monitoring/dts-operator-dashboard.json";
const KUSTOMIZE_RULE: &str = "deploy/monitoring/prometheusrule.yaml";
const CHART: &str = "deploy/helm/dts-operator";
const CHART_RULES: &str = "deploy/helm/dts-operator/files/dts-operator-alerts.yaml";
const CHART_DASHBOARD: &str = "deploy/helm/dts-operator/files/dts-operator-dashboard.json";
/// The scrape job and runbook base the committed files use (the chart substitutes both).
const JOB: &str = "dts-operator-metrics";
const RUNBOOK_BASE: &str = "https://dts-operator.invalid/README.md";

/// Labels Prometheus itself puts on every scraped series (`job`, `instance`) and the ones a
/// ServiceMonitor's Kubernetes discovery adds (`namespace`, `pod`): queries may use them although
/// the operator never prints them.
const TARGET_LABELS: [&str; 4] = ["job", "instance", "namespace", "pod"];
/// Series Prometheus makes for each target, not the operator.
const SYNTHETIC_METRICS: [&str; 1] = ["up"];
/// Grafana's interval variables, replaced by a duration so the expressions parse as PromQL.
const GRAFANA_INTERVALS: [&str; 3] = ["$__rate_interval", "$__interval", "$__range"];

const T: Duration = Duration::from_secs(30);
const CMD_TIMEOUT: Duration = Duration::from_secs(120);

// --- tools --------------------------------------------------------------------------------

/// promtool and promql-inspect, built (or found in the cache and re-linked) once per process, so
/// the tests always run the binaries of the committed go.mod/go.sum.
fn prometheus_tool(name: &str) -> PathBuf {
    static BUILT: OnceLock<Result<(), String>> = OnceLock::new();
    let built = BUILT.get_or_init(|| {
        let script = repo_root().join("hack/tools/prometheus/build.sh");
        let out = Command::new(&script)
            .current_dir(repo_root())
            .stdin(Stdio::null())
            .stderr(Stdio::inherit())
            .output()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(format!("{} failed ({})", script.display(), out.status))
        }
    });
    if let Err(e) = built {
        panic!("the Prometheus tools are not available: {e}");
    }
    local_bin(name)
}

struct Out {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// Runs `program` in the repository root, `stdin` fed in, bounded by [`CMD_TIMEOUT`].
fn run(program: &Path, args: &[&str], stdin: Option<&[u8]>) -> Out {
    use std::io::Write;
    let mut child = Command::new(program)
        .args(args)
        .current_dir(repo_root())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    if let Some(input) = stdin {
        let mut pipe = child.stdin.take().expect("stdin is piped");
        let input = input.to_vec();
        std::thread::spawn(move || {
            let _ = pipe.write_all(&input);
        });
    }
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    let out = match rx.recv_timeout(CMD_TIMEOUT) {
        Ok(out) => out.expect("waiting for the child"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!(
                "{} {args:?} did not finish within {CMD_TIMEOUT:?}",
                program.display()
            );
        }
    };
    Out {
        ok: out.status.success(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn expect_ok(out: Out, what: &str) -> String {
    assert!(
        out.ok,
        "{what} failed\nstdout:\n{}\nstderr:\n{}",
        out.stdout, out.stderr
    );
    out.stdout
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo_root().join(path))
        .unwrap_or_else(|e| panic!("reading {path}: {e}"))
}

fn yaml(text: &str) -> Value {
    serde_saphyr::from_str(text).expect("valid YAML")
}

// --- the rules ----------------------------------------------------------------------------

/// Every alerting rule of a `groups:` document.
fn alerts(groups: &Value) -> Vec<&Value> {
    groups["groups"]
        .as_array()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_array().expect("rules").iter())
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn alert_names(groups: &Value) -> BTreeSet<String> {
    alerts(groups)
        .iter()
        .map(|r| r["alert"].as_str().unwrap().to_owned())
        .collect()
}

/// The anchors GitHub (and most forges) give the README's headings: lower case, punctuation
/// dropped, spaces as hyphens. Fenced code is skipped (its `#` lines are shell comments).
fn readme_anchors() -> BTreeSet<String> {
    let mut anchors = BTreeSet::new();
    let mut fenced = false;
    for line in read("README.md").lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim();
        let slug: String = title
            .to_lowercase()
            .chars()
            .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
            .map(|c| if c == ' ' { '-' } else { c })
            .collect();
        anchors.insert(slug);
    }
    anchors
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    let promtool = prometheus_tool("promtool");
    let out = expect_ok(
        run(
            &promtool,
            &["check", "rules", "--lint=all", "--lint-fatal", RULES],
            None,
        ),
        "promtool check rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    let started = Instant::now();
    let out = expect_ok(
        run(&promtool, &["test", "rules", RULE_TESTS], None),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    eprintln!("promtool test rules: {:?}", started.elapsed());

    // Each alert has a case where it fires and one where it must not; none names a missing alert.
    let rules = yaml(&read(RULES));
    let names = alert_names(&rules);
    assert!(names.len() >= 6, "{names:?}");
    let tests = yaml(&read(RULE_TESTS));
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for group in tests["tests"].as_array().expect("tests") {
        for case in group["alert_rule_test"].as_array().into_iter().flatten() {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            assert!(names.contains(&name), "a test names no alert: {name}");
            if case["exp_alerts"].as_array().is_some_and(|a| !a.is_empty()) {
                fires.insert(name);
            } else {
                quiet.insert(name);
            }
        }
    }
    assert_eq!(fires, names, "alerts without a firing test case");
    assert_eq!(
        quiet, names,
        "alerts without a case where they must not fire"
    );

    // The tests are live: with every alert silenced, promtool fails, naming each alert.
    let dir = tempfile::tempdir().unwrap();
    let mut silenced = rules.clone();
    for group in silenced["groups"].as_array_mut().unwrap() {
        for rule in group["rules"].as_array_mut().unwrap() {
            if rule.get("alert").is_some() {
                rule["expr"] = json!("vector(0) > 1");
            }
        }
    }
    std::fs::write(
        dir.path().join("dts-operator-alerts.yaml"),
        serde_saphyr::to_string(&silenced).unwrap(),
    )
    .unwrap();
    let test_copy = dir.path().join("dts-operator-alerts.test.yaml");
    std::fs::write(&test_copy, read(RULE_TESTS)).unwrap();
    let out = run(
        &promtool,
        &["test", "rules", test_copy.to_str().unwrap()],
        None,
    );
    assert!(!out.ok, "silenced alerts passed the tests:\n{}", out.stdout);
    let report = format!("{}{}", out.stdout, out.stderr);
    for name in &names {
        assert!(
            report.contains(&format!("alertname: {name},")),
            "silencing {name} failed no test:\n{report}"
        );
    }
}

/// The README's runbook of one alert: from its heading to the next heading.
fn runbook(alert: &str) -> String {
    let readme = read("README.md");
    let heading = format!("\n#### {alert}\n");
    let start = readme
        .find(&heading)
        .unwrap_or_else(|| panic!("README.md has no runbook heading for {alert}"));
    let body = &readme[start + heading.len()..];
    body[..body.find("\n#").unwrap_or(body.len())].to_owned()
}

#[test]
fn every_alert_says_what_happened_and_links_its_runbook() {
    let rules = yaml(&read(RULES));
    let anchors = readme_anchors();
    for rule in alerts(&rules) {
        let name = rule["alert"].as_str().unwrap();
        assert!(
            name.starts_with("DtsOperator"),
            "{name}: alerts are named DtsOperator*"
        );
        let severity = rule["labels"]["severity"].as_str().unwrap_or_default();
        assert!(
            matches!(severity, "critical" | "warning"),
            "{name}: severity {severity:?}"
        );
        for key in ["summary", "description"] {
            let text = rule["annotations"][key].as_str().unwrap_or_default();
            assert!(text.len() > 20, "{name}: {key} missing or too short");
        }
        let url = rule["annotations"]["runbook_url"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: no runbook_url"));
        let anchor = url
            .strip_prefix(&format!("{RUNBOOK_BASE}#"))
            .unwrap_or_else(|| panic!("{name}: runbook_url {url} is not {RUNBOOK_BASE}#..."));
        assert_eq!(anchor, name.to_lowercase(), "{name}: runbook anchor");
        assert!(
            anchors.contains(anchor),
            "{name}: README.md has no heading for #{anchor}"
        );
        assert!(
            rule["expr"]
                .as_str()
                .unwrap()
                .contains(&format!("job=\"{JOB}\"")),
            "{name}: every selector names the scrape job, so the chart can scope it to a release"
        );
        assert!(
            runbook(name).len() > 100,
            "{name}: the runbook says what to do"
        );
    }
    // The reconcile-errors runbook explains every category the operator can report.
    let text = runbook("DtsOperatorReconcileErrors");
    for category in dts_operator::controller::Error::CATEGORIES {
        assert!(
            text.contains(&format!("`{category}`")),
            "the DtsOperatorReconcileErrors runbook does not explain category {category}"
        );
    }
}

// --- copies, chart, kustomize ---------------------------------------------------------------

async fn helm(args: &[&str]) -> Out {
    let helm = local_bin("helm");
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        run(&helm, &args, None)
    })
    .await
    .unwrap()
}

async fn helm_template(release: &str, ns: &str, sets: &[&str]) -> Out {
    let mut args = vec!["template", release, CHART, "--namespace", ns];
    for s in sets {
        args.extend(["--set", s]);
    }
    helm(&args).await
}

fn find<'a>(docs: &'a [Value], k: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| kind(d) == k).collect()
}

fn dashboard_configmaps(docs: &[Value]) -> Vec<&Value> {
    find(docs, "ConfigMap")
        .into_iter()
        .filter(|d| d["metadata"]["labels"].get("grafana_dashboard").is_some())
        .collect()
}

#[test]
fn chart_and_kustomize_copies_are_the_committed_files() {
    assert_eq!(
        read(CHART_RULES),
        read(RULES),
        "{CHART_RULES} must be a copy of {RULES}"
    );
    assert_eq!(
        read(CHART_DASHBOARD),
        read(DASHBOARD),
        "{CHART_DASHBOARD} must be a copy of {DASHBOARD}"
    );
    let rule = yaml(&read(KUSTOMIZE_RULE));
    assert_eq!(rule["kind"], json!("PrometheusRule"));
    assert_eq!(rule["apiVersion"], json!("monitoring.coreos.com/v1"));
    assert_eq!(
        rule["spec"]["groups"],
        yaml(&read(RULES))["groups"],
        "{KUSTOMIZE_RULE} must hold the groups of {RULES}"
    );
}

#[tokio::test]
async fn chart_renders_the_rules_and_the_dashboard_only_when_enabled() {
    let off = docs(&expect_ok(
        helm_template("dts-operator", "dts-operator-system", &[]).await,
        "helm template (defaults)",
    ));
    assert!(!off.is_empty());
    assert!(find(&off, "PrometheusRule").is_empty(), "off by default");
    assert!(dashboard_configmaps(&off).is_empty(), "off by default");
    assert!(
        off.iter().all(|d| !d["apiVersion"]
            .as_str()
            .unwrap_or_default()
            .starts_with("monitoring.coreos.com")),
        "nothing that needs the Prometheus Operator by default"
    );

    // Enabled, default release: exactly the committed rules and dashboard.
    let on = docs(&expect_ok(
        helm_template(
            "dts-operator",
            "dts-operator-system",
            &[
                "prometheusRule.enabled=true",
                "grafanaDashboard.enabled=true",
            ],
        )
        .await,
        "helm template (enabled)",
    ));
    let rules = find(&on, "PrometheusRule");
    assert_eq!(rules.len(), 1);
    assert_eq!(
        rules[0]["metadata"]["namespace"],
        json!("dts-operator-system")
    );
    assert_eq!(rules[0]["spec"]["groups"], yaml(&read(RULES))["groups"]);
    let cms = dashboard_configmaps(&on);
    assert_eq!(cms.len(), 1);
    assert_eq!(
        cms[0]["metadata"]["labels"]["grafana_dashboard"],
        json!("1")
    );
    let embedded: Value =
        serde_json::from_str(cms[0]["data"]["dts-operator.json"].as_str().unwrap()).unwrap();
    let committed: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    assert_eq!(embedded, committed);

    // Another release: its own scrape job and runbook location, rule labels, the dashboard's
    // namespace, labels and folder annotation.
    let other = docs(&expect_ok(
        helm_template(
            "ops",
            "ops-system",
            &[
                "prometheusRule.enabled=true",
                "prometheusRule.labels.release=prometheus",
                "prometheusRule.runbookBaseUrl=https://git.example.com/platform/dts-operator/README.md",
                "grafanaDashboard.enabled=true",
                "grafanaDashboard.namespace=monitoring",
                "grafanaDashboard.labels.grafana_dashboard=dts",
                "grafanaDashboard.annotations.grafana_folder=Operators",
            ],
        )
        .await,
        "helm template (release ops)",
    ));
    let rule = find(&other, "PrometheusRule")[0];
    assert_eq!(rule["metadata"]["labels"]["release"], json!("prometheus"));
    let groups = json!({"groups": rule["spec"]["groups"].clone()});
    for alert in alerts(&groups) {
        let name = alert["alert"].as_str().unwrap();
        let expr = alert["expr"].as_str().unwrap();
        assert!(
            expr.contains("job=\"ops-dts-operator-metrics\"")
                && !expr.contains(&format!("job=\"{JOB}\"")),
            "{name}: {expr}"
        );
        assert_eq!(
            alert["annotations"]["runbook_url"],
            json!(format!(
                "https://git.example.com/platform/dts-operator/README.md#{}",
                name.to_lowercase()
            ))
        );
    }
    let cm = dashboard_configmaps(&other)[0];
    assert_eq!(cm["metadata"]["namespace"], json!("monitoring"));
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], json!("dts"));
    assert_eq!(
        cm["metadata"]["annotations"]["grafana_folder"],
        json!("Operators")
    );
    // What the chart rendered is still valid for Prometheus.
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("rendered.yaml");
    std::fs::write(&file, serde_saphyr::to_string(&groups).unwrap()).unwrap();
    let out = expect_ok(
        run(
            &prometheus_tool("promtool"),
            &["check", "rules", "--lint-fatal", file.to_str().unwrap()],
            None,
        ),
        "promtool check rules (rendered by the chart)",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    // An explicit scrape job wins.
    let custom = docs(&expect_ok(
        helm_template(
            "dts-operator",
            "x",
            &["prometheusRule.enabled=true", "prometheusRule.job=dts"],
        )
        .await,
        "helm template (prometheusRule.job)",
    ));
    let text = serde_json::to_string(&find(&custom, "PrometheusRule")[0]["spec"]).unwrap();
    assert!(
        text.contains(r#"job=\"dts\""#) && !text.contains(JOB),
        "{text}"
    );

    // Lint stays clean with them on; the schema refuses what would break a rule.
    let out = helm(&[
        "lint",
        "--strict",
        CHART,
        "--set",
        "prometheusRule.enabled=true",
        "--set",
        "grafanaDashboard.enabled=true",
        "--set",
        "metrics.serviceMonitor.enabled=true",
    ])
    .await;
    assert!(out.ok, "helm lint:\n{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("0 chart(s) failed"), "{}", out.stdout);
    assert!(!out.stdout.contains("[WARNING]"), "{}", out.stdout);
    for (set, needle) in [
        ("prometheusRule.enabled=yes", "prometheusRule"),
        ("prometheusRule.job=a\"b", "prometheusRule"),
        ("prometheusRule.runbookBaseUrl=README.md", "prometheusRule"),
        ("prometheusRule.typo=1", "prometheusRule"),
        (
            "grafanaDashboard.namespace=Not_A_Namespace",
            "grafanaDashboard",
        ),
    ] {
        let out = helm_template("x", "default", &[set]).await;
        assert!(!out.ok, "--set {set} must be refused");
        assert!(out.stderr.contains(needle), "--set {set}: {}", out.stderr);
    }
}

#[tokio::test]
async fn kustomize_ships_them_apart_from_the_base() {
    let kubectl = local_bin("kubectl");
    let render = |dir: &'static str| {
        let kubectl = kubectl.clone();
        tokio::task::spawn_blocking(move || {
            docs(&expect_ok(
                run(&kubectl, &["kustomize", dir], None),
                "kubectl kustomize",
            ))
        })
    };
    let monitoring = render("deploy/monitoring").await.unwrap();
    let kinds: BTreeSet<&str> = monitoring.iter().map(kind).collect();
    assert_eq!(kinds, BTreeSet::from(["ConfigMap", "PrometheusRule"]));
    for d in &monitoring {
        assert_eq!(d["metadata"]["namespace"], json!("dts-operator-system"));
    }
    let rule = find(&monitoring, "PrometheusRule")[0];
    assert_eq!(rule["spec"]["groups"], yaml(&read(RULES))["groups"]);
    let cm = dashboard_configmaps(&monitoring)[0];
    assert_eq!(cm["metadata"]["name"], json!("dts-operator-dashboard"));
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], json!("1"));
    let embedded: Value =
        serde_json::from_str(cm["data"]["dts-operator.json"].as_str().unwrap()).unwrap();
    assert_eq!(
        embedded,
        serde_json::from_str::<Value>(&read(DASHBOARD)).unwrap()
    );

    let base = render("deploy/kustomize").await.unwrap();
    assert!(dashboard_configmaps(&base).is_empty());
    for d in &base {
        let api = d["apiVersion"].as_str().unwrap_or_default();
        assert!(
            !api.starts_with("monitoring.coreos.com"),
            "the base stays free of objects that need another CRD: {} {api}",
            kind(d)
        );
    }
}

// --- the dashboard ------------------------------------------------------------------------

/// Every panel, rows' nested panels included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    fn walk<'a>(list: &'a Value, out: &mut Vec<&'a Value>) {
        for p in list.as_array().into_iter().flatten() {
            out.push(p);
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

#[test]
fn dashboard_is_well_formed() {
    let d: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    assert_eq!(d["uid"], json!("dts-operator"));
    assert_eq!(d["title"], json!("dts-operator"));
    assert!(
        d["id"].is_null(),
        "no instance id: imports must not overwrite a dashboard by id"
    );
    let vars: Vec<&str> = d["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap())
        .collect();
    assert_eq!(vars, ["datasource", "job"]);
    let mut ids = BTreeSet::new();
    let mut titles = BTreeSet::new();
    for p in panels(&d) {
        let title = p["title"].as_str().unwrap();
        assert!(
            ids.insert(p["id"].as_i64().unwrap()),
            "duplicate id: {title}"
        );
        let g = &p["gridPos"];
        let (x, w) = (g["x"].as_i64().unwrap(), g["w"].as_i64().unwrap());
        assert!(
            x >= 0 && w > 0 && x + w <= 24,
            "{title}: outside the 24 columns"
        );
        if p["type"] == json!("row") {
            continue;
        }
        titles.insert(title.to_owned());
        assert_eq!(
            p["datasource"]["uid"],
            json!("${datasource}"),
            "{title}: uses the datasource variable"
        );
        let targets = p["targets"].as_array().unwrap();
        assert!(!targets.is_empty(), "{title}: no query");
        for t in targets {
            assert!(
                t["expr"].as_str().unwrap().contains("job=~\"$job\""),
                "{title}: every query follows the job variable"
            );
        }
    }
    // What the issue asks to see.
    for want in [
        "Resources by phase",
        "DTS calls by outcome",
        "DTS errors by code",
        "DTS call latency",
        "Retries by reason",
        "Leader",
    ] {
        assert!(titles.contains(want), "no panel {want:?}: {titles:?}");
    }
}

// --- what the rules and the dashboard query, against what the operator exposes -------------

#[derive(Debug, Deserialize)]
struct Matcher {
    label: String,
    #[serde(rename = "type")]
    op: String,
    value: String,
}

#[derive(Debug, Deserialize)]
struct Selector {
    metric: String,
    matchers: Vec<Matcher>,
}

#[derive(Debug, Deserialize)]
struct ExprInfo {
    expr: String,
    #[serde(default)]
    error: Option<String>,
    selectors: Vec<Selector>,
    labels: Vec<String>,
}

#[derive(Debug, Deserialize)]
struct Sample {
    metric: String,
    labels: BTreeMap<String, String>,
}

/// metric → label → values seen.
type Exposed = BTreeMap<String, BTreeMap<String, BTreeSet<String>>>;

/// One query to check: where it comes from, the PromQL, and the labels its output is shown by
/// (`$labels.x` in annotations, `{{x}}` in legends).
struct Query {
    source: String,
    expr: String,
    shown_labels: Vec<String>,
}

/// `{{ name }}` / `$labels.name` references in a template.
fn template_labels(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(i) = rest.find("$labels.") {
        rest = &rest[i + "$labels.".len()..];
        out.push(
            rest.chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect(),
        );
    }
    let mut rest = text;
    while let Some(i) = rest.find("{{") {
        rest = &rest[i + 2..];
        let end = rest.find("}}").unwrap_or(rest.len());
        let inner = rest[..end].trim();
        if !inner.is_empty() && inner.chars().all(|c| c.is_alphanumeric() || c == '_') {
            out.push(inner.to_owned());
        }
        rest = &rest[end..];
    }
    out
}

fn rule_queries(rules: &Value) -> Vec<Query> {
    alerts(rules)
        .into_iter()
        .map(|r| {
            let annotations = serde_json::to_string(&r["annotations"]).unwrap();
            Query {
                source: format!("alert {}", r["alert"].as_str().unwrap()),
                expr: r["expr"].as_str().unwrap().to_owned(),
                shown_labels: template_labels(&annotations),
            }
        })
        .collect()
}

fn dashboard_queries(dashboard: &Value) -> Vec<Query> {
    let grafana = |expr: &str| {
        GRAFANA_INTERVALS
            .iter()
            .fold(expr.to_owned(), |e, v| e.replace(v, "5m"))
    };
    let mut out = Vec::new();
    for p in panels(dashboard) {
        for t in p["targets"].as_array().into_iter().flatten() {
            out.push(Query {
                source: format!("panel {:?}", p["title"].as_str().unwrap_or_default()),
                expr: grafana(t["expr"].as_str().expect("expr")),
                shown_labels: template_labels(t["legendFormat"].as_str().unwrap_or_default()),
            });
        }
    }
    // Variables: label_values(<selector>, <label>).
    for v in dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let q = v["query"]["query"]
            .as_str()
            .or_else(|| v["query"].as_str())
            .unwrap_or_default();
        if let Some(args) = q
            .strip_prefix("label_values(")
            .and_then(|a| a.strip_suffix(')'))
        {
            let (selector, label) = args
                .rsplit_once(',')
                .expect("label_values(selector, label)");
            out.push(Query {
                source: format!("variable {}", v["name"].as_str().unwrap_or_default()),
                expr: selector.trim().to_owned(),
                shown_labels: vec![label.trim().to_owned()],
            });
        }
    }
    out
}

fn inspect_exprs(exprs: &[String]) -> Vec<ExprInfo> {
    let input = serde_json::to_vec(exprs).unwrap();
    let out = expect_ok(
        run(&prometheus_tool("promql-inspect"), &["exprs"], Some(&input)),
        "promql-inspect exprs",
    );
    serde_json::from_str(&out).expect("promql-inspect prints JSON")
}

fn exposed(body: &str, content_type: &str) -> Exposed {
    let media_type = content_type.split(';').next().unwrap().trim();
    let out = expect_ok(
        run(
            &prometheus_tool("promql-inspect"),
            &["exposition", media_type],
            Some(body.as_bytes()),
        ),
        "promql-inspect exposition",
    );
    let samples: Vec<Sample> = serde_json::from_str(&out).expect("promql-inspect prints JSON");
    let mut map = Exposed::new();
    for s in samples {
        let labels = map.entry(s.metric).or_default();
        for (k, v) in s.labels {
            labels.entry(k).or_default().insert(v);
        }
    }
    map
}

/// What in `queries` the operator does not expose: one line per problem.
fn problems(queries: &[Query], exposed: &Exposed) -> Vec<String> {
    let infos = inspect_exprs(&queries.iter().map(|q| q.expr.clone()).collect::<Vec<_>>());
    assert_eq!(infos.len(), queries.len());
    let mut problems = Vec::new();
    for (q, info) in queries.iter().zip(&infos) {
        assert_eq!(q.expr, info.expr);
        let mut say = |what: String| problems.push(format!("{}: {what}   [{}]", q.source, q.expr));
        if let Some(e) = &info.error {
            say(format!("does not parse: {e}"));
            continue;
        }
        // Labels the selected series can carry.
        let mut available: BTreeSet<&str> = TARGET_LABELS.into();
        for s in &info.selectors {
            if SYNTHETIC_METRICS.contains(&s.metric.as_str()) {
                continue;
            }
            let Some(labels) = exposed.get(&s.metric) else {
                say(format!("metric {} is not exposed", s.metric));
                continue;
            };
            available.extend(labels.keys().map(String::as_str));
            for m in &s.matchers {
                if TARGET_LABELS.contains(&m.label.as_str()) {
                    continue;
                }
                let Some(values) = labels.get(&m.label) else {
                    say(format!("{} has no label {}", s.metric, m.label));
                    continue;
                };
                // The values an equality or an alternation names must each be seen; a typo in
                // one would match nothing.
                let wanted: Vec<&str> = match m.op.as_str() {
                    "=" => vec![m.value.as_str()],
                    "=~" => {
                        if !m
                            .value
                            .chars()
                            .all(|c| c.is_alphanumeric() || matches!(c, '|' | '_' | '.' | '-'))
                            || m.value.contains(".*")
                        {
                            say(format!(
                                "{}=~{:?}: only alternations of literal values can be checked",
                                m.label, m.value
                            ));
                            continue;
                        }
                        m.value.split('|').collect()
                    }
                    _ => vec![],
                };
                for w in wanted {
                    if !values.contains(w) {
                        say(format!(
                            "{}{{{}=\"{w}\"}} is never exposed (seen: {values:?})",
                            s.metric, m.label
                        ));
                    }
                }
            }
        }
        for l in info.labels.iter().chain(&q.shown_labels) {
            if !available.contains(l.as_str()) {
                say(format!("label {l} is on none of the series it selects"));
            }
        }
    }
    problems
}

/// GET returning the status, the Content-Type and the body.
async fn get_with_type(port: u16, path: &str) -> (u16, String, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .expect("admin server answers");
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP answer");
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let content_type = head
        .lines()
        .filter_map(|l| l.split_once(':'))
        .find(|(k, _)| k.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    (status, content_type, body.to_owned())
}

/// A ValidatingAdmissionPolicy refusing status writes of the resources labelled
/// [`DENY_LABEL`] in one namespace: the operator's status write fails for real, which is a
/// reconcile error. Deleted on drop (cluster-scoped; nothing else would remove it).
struct DenyStatusWrites {
    name: String,
    kubeconfig: PathBuf,
}

const DENY_LABEL: &str = "dtsops.io/it-deny-status-writes";

impl DenyStatusWrites {
    async fn install(ns: &str) -> DenyStatusWrites {
        let c = cluster().await;
        let client = c.admin_client();
        let name = unique_name("it-monitoring-deny-status");
        let policy: ValidatingAdmissionPolicy = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {"resourceRules": [{
                    "apiGroups": ["dtsops.io"], "apiVersions": ["*"],
                    "operations": ["UPDATE"], "resources": ["dtsjobresets/status"],
                }]},
                "validations": [{
                    "expression": "false",
                    "message": "status writes refused by the monitoring test: a reconcile error on purpose",
                }],
            },
        }))
        .unwrap();
        let binding: ValidatingAdmissionPolicyBinding = serde_json::from_value(json!({
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}},
                    "objectSelector": {"matchLabels": {DENY_LABEL: "true"}},
                },
            },
        }))
        .unwrap();
        let guard = DenyStatusWrites {
            name: name.clone(),
            kubeconfig: c.kubeconfig_path().to_owned(),
        };
        Api::<ValidatingAdmissionPolicy>::all(client.clone())
            .create(&PostParams::default(), &policy)
            .await
            .expect("create ValidatingAdmissionPolicy");
        Api::<ValidatingAdmissionPolicyBinding>::all(client)
            .create(&PostParams::default(), &binding)
            .await
            .expect("create ValidatingAdmissionPolicyBinding");
        guard
    }
}

impl Drop for DenyStatusWrites {
    fn drop(&mut self) {
        // Synchronous, so it also runs while a failed test unwinds.
        let _ = Command::new(local_bin("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args([
                "delete",
                "--ignore-not-found",
                "--wait=false",
                &format!("validatingadmissionpolicybinding/{}", self.name),
                &format!("validatingadmissionpolicy/{}", self.name),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Waits until the API server enforces the policy: an admin's status write of a labelled
/// resource is refused.
async fn wait_denied(client: &kube::Client, ns: &str, name: &str) {
    let api: Api<DtsJobReset> = Api::namespaced(client.clone(), ns);
    let start = Instant::now();
    loop {
        let obj = api.get(name).await.expect("get");
        match api.replace_status(name, &PostParams::default(), &obj).await {
            Err(kube::Error::Api(s)) if s.message.contains("monitoring test") => return,
            other => {
                assert!(
                    start.elapsed() < T,
                    "the admission policy is not enforced after {T:?}: {other:?}"
                );
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

#[tokio::test]
async fn rules_and_dashboard_query_only_what_the_operator_exposes() {
    let (client, ns) = setup("monitoring").await;
    create_default_secret(&client, &ns).await;
    let sim = Simulator::start().await;
    sim.add_access_key(AK_ID, AK_SECRET);
    sim.script("job-ok", [Answer::Success]);
    sim.script("job-throttled", [Answer::throttling(), Answer::Success]);
    sim.script(
        "job-refused",
        [Answer::dts_error(
            "Forbidden.InstanceNotFound",
            "The job %s does not exist.",
            Some("job-refused"),
        )],
    );
    sim.script("job-unknown", [Answer::internal_error()]);

    // One resource the operator cannot write status for: a real reconcile error.
    let _deny = DenyStatusWrites::install(&ns).await;
    let mut denied = DtsJobReset::new("denied", spec("job-denied"));
    denied.metadata.labels = Some([(DENY_LABEL.to_owned(), "true".to_owned())].into());
    Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .create(&PostParams::default(), &denied)
        .await
        .expect("create");
    wait_denied(&client, &ns, "denied").await;

    let op = Operator::start(OperatorOptions::new(&ns, &sim.url())).await;
    for (name, job) in [
        ("ok", "job-ok"),
        ("throttled", "job-throttled"),
        ("refused", "job-refused"),
        ("unknown", "job-unknown"),
    ] {
        create(&client, &ns, name, spec(job)).await;
    }
    for (name, want) in [
        ("ok", "Succeeded"),
        ("throttled", "Succeeded"),
        ("refused", "Failed"),
        ("unknown", "Unknown"),
    ] {
        wait_phase(&client, &ns, name, want, T).await;
    }

    // The reconcile error lands within the first reconcile of `denied`.
    let start = Instant::now();
    let (content_type, body) = loop {
        let (code, content_type, body) = get_with_type(op.metrics_port, "/metrics").await;
        assert_eq!(code, 200);
        if body.contains("dts_operator_reconciles_total{result=\"error\"") {
            break (content_type, body);
        }
        assert!(
            start.elapsed() < T,
            "no reconcile error counted after {T:?}:\n{body}\noperator log:\n{}",
            op.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let status = Api::<DtsJobReset>::namespaced(client.clone(), &ns)
        .get("denied")
        .await
        .unwrap();
    assert_eq!(phase(&status), "", "the denied resource never got a status");
    assert!(sim.executed_calls("job-denied").is_empty());

    let exposed = exposed(&body, &content_type);
    // The scenario produced what it is for: the refused status write is counted by category.
    assert!(
        exposed["dts_operator_reconciles_total"]["category"].contains("status_write"),
        "{exposed:#?}"
    );
    let rules = yaml(&read(RULES));
    let dashboard: Value = serde_json::from_str(&read(DASHBOARD)).unwrap();
    let mut queries = rule_queries(&rules);
    let alert_count = queries.len();
    queries.extend(dashboard_queries(&dashboard));
    assert!(
        alert_count >= 6 && queries.len() >= alert_count + 12,
        "too few queries found: {}",
        queries.len()
    );
    let found = problems(&queries, &exposed);
    assert!(
        found.is_empty(),
        "the rules or the dashboard query what the operator does not expose:\n  {}\n\nexposed: {exposed:#?}",
        found.join("\n  ")
    );

    // The check is live: each of these near misses is reported.
    let near_misses = [
        r#"dts_operator_resource{phase="Unknown"} > 0"#,
        r#"dts_operator_resources{phase="Unkown"} > 0"#,
        r#"dts_operator_resources{phase=~"Unknown|Faild"} > 0"#,
        r#"rate(dts_operator_retries_total{reason="Throttling"}[5m])"#,
        r#"sum by (categroy) (rate(dts_operator_reconciles_total[5m]))"#,
        r#"rate(dts_operator_dts_requests_total{errCode="Throttling.User"}[5m])"#,
        r#"histogram_quantile(0.9, rate(dts_operator_dts_request_duration_bucket[5m]))"#,
        r#"dts_operator_leader{phase="Unknown"}"#,
        r#"dts_operator_dts_rate_limits"#,
        r#"sum(rate(dts_operator_reconciles_total[5m]"#,
    ];
    let misses: Vec<Query> = near_misses
        .iter()
        .map(|e| Query {
            source: "near miss".into(),
            expr: e.to_string(),
            shown_labels: vec![],
        })
        .collect();
    for (q, p) in misses.iter().zip(
        misses
            .iter()
            .map(|q| problems(std::slice::from_ref(q), &exposed)),
    ) {
        assert!(!p.is_empty(), "not reported: {}", q.expr);
    }
    let shown = Query {
        source: "near miss".into(),
        expr: "sum by (reason) (dts_operator_retries_total)".into(),
        shown_labels: vec!["reasons".into()],
    };
    assert!(!problems(&[shown], &exposed).is_empty());

    op.terminate().await;
}

// --- the README's picture of the phases ---------------------------------------------------

/// The README's Mermaid state diagram.
fn readme_state_diagram() -> String {
    let readme = read("README.md");
    let start = readme
        .find("```mermaid\nstateDiagram-v2\n")
        .expect("README.md has a Mermaid state diagram");
    let body = &readme[start + "```mermaid\n".len()..];
    body[..body.find("\n```").expect("closed")].to_owned()
}

#[test]
fn readme_diagram_shows_every_phase_with_its_conditions_and_reasons() {
    use dts_operator::crd::{Phase, reason};
    let diagram = readme_state_diagram();
    // `State : text` lines describe a state; `A --> B : text` are transitions.
    let mut described: BTreeMap<&str, String> = BTreeMap::new();
    let mut edges = BTreeSet::new();
    for line in diagram.lines().map(str::trim) {
        let (head, text) = line.split_once(" : ").unwrap_or((line, ""));
        match head.split_once(" --> ") {
            Some((from, to)) => {
                edges.insert((from.to_owned(), to.to_owned()));
            }
            None if !text.is_empty() => {
                let d = described.entry(head).or_default();
                d.push_str(text);
                d.push('\n');
            }
            None => {}
        }
    }
    let phases: BTreeSet<&str> = Phase::ALL.iter().map(|p| p.as_str()).collect();
    assert_eq!(
        described.keys().copied().collect::<BTreeSet<_>>(),
        phases,
        "every phase, and nothing else, is described"
    );
    let condition = |p: &str| match p {
        "Succeeded" => "Ready=True",
        "Failed" | "Unknown" => "Stalled=True",
        _ => "Reconciling=True",
    };
    for (phase, text) in &described {
        assert!(text.contains(condition(phase)), "{phase}: {text}");
    }
    for r in [
        reason::RESET_SUCCEEDED,
        reason::PENDING,
        reason::RUNNING,
        reason::THROTTLED,
        reason::SERVICE_UNAVAILABLE,
        reason::WAITING_FOR_SECRET,
        reason::CONCURRENT_REQUEST,
        reason::RESET_FAILED,
        reason::RETRIES_EXHAUSTED,
        reason::OUTCOME_UNKNOWN,
        reason::INVALID_SPEC,
        reason::CREDENTIALS_UNAVAILABLE,
        reason::VERIFYING_OUTCOME,
        reason::RESET_VERIFIED,
    ] {
        assert!(
            described.values().any(|t| t.contains(r)),
            "reason {r} is in no phase of the diagram"
        );
    }
    let edge = |a: &str, b: &str| edges.contains(&(a.to_owned(), b.to_owned()));
    for (from, to) in [
        ("[*]", "Pending"),
        ("Pending", "Running"),
        ("Running", "Retrying"),
        ("Retrying", "Running"),
        ("Running", "Succeeded"),
        ("Running", "Failed"),
        ("Running", "Unknown"),
        ("Unknown", "Succeeded"),
    ] {
        assert!(edge(from, to), "no transition {from} --> {to}");
    }
    for finished in ["Succeeded", "Failed", "Unknown"] {
        assert!(edge(finished, "Pending"), "{finished}: no new request");
    }
    assert!(
        diagram.contains("Unknown --> Succeeded : ResetVerified"),
        "the verified transition names its reason"
    );
}

#[test]
fn readme_request_table_names_what_starts_a_reset_and_what_never_does() {
    let readme = read("README.md");
    let start = readme
        .find("### What starts a new request")
        .expect("the request-identity section");
    let section = &readme[start..];
    let section = &section[..section[4..].find("\n#").map_or(section.len(), |i| i + 4)];
    let rows: Vec<(&str, &str)> = section
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| change") && !l.starts_with("| ---"))
        .map(|l| {
            let (what, answer) = l.trim_end_matches(" |").rsplit_once(" | ").unwrap();
            (what, answer)
        })
        .collect();
    let yes: String = rows
        .iter()
        .filter(|(_, a)| a.contains("yes"))
        .map(|(w, _)| *w)
        .collect();
    let no: String = rows
        .iter()
        .filter(|(_, a)| *a == "no")
        .map(|(w, _)| *w)
        .collect();
    assert_eq!(rows.len(), 6, "{rows:?}");
    for field in [
        "dtsJobId",
        "dtsInstanceId",
        "synchronizationDirection",
        "regionId",
        "dtsops.io/requested-at",
    ] {
        assert!(yes.contains(field), "{field} must start a new request");
    }
    for never in [
        "backoffLimit",
        "ttlSecondsAfterFinished",
        "credentials",
        "signatureVersion",
        "endpoint",
        "labels",
        "--default-region",
        "upgrade",
    ] {
        assert!(no.contains(never), "{never} must never start a new request");
    }
    // Every spec field of the CRD is in the table, one way or the other.
    let crd = serde_json::to_value(<DtsJobReset as kube::CustomResourceExt>::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    for field in spec["properties"].as_object().unwrap().keys() {
        assert!(
            yes.contains(field.as_str()) || no.contains(field.as_str()),
            "spec.{field} is missing from the table"
        );
    }
}
