//! The local control plane itself (hack/cluster.sh, tests/it/support/cluster.rs): a real
//! kube-apiserver v1.36.3 that serves CRDs with a status subresource and enforces RBAC.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::api::{ApiResource, DynamicObject, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, CustomResource, CustomResourceExt, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::cluster::{self, is_forbidden};

/// A small test-only custom resource (not part of the product).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "test.dtsops.io",
    version = "v1",
    kind = "Widget",
    plural = "widgets",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    pub size: i32,
    pub color: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    pub ready: bool,
    pub observed_size: Option<i32>,
}

const CRD_TIMEOUT: Duration = Duration::from_secs(60);

fn widget(name: &str, size: i32) -> Widget {
    Widget::new(
        name,
        WidgetSpec {
            size,
            color: "blue".into(),
        },
    )
}

async fn install_widget_crd(client: &kube::Client) {
    let crd = Widget::crd();
    assert_eq!(crd.metadata.name.as_deref(), Some("widgets.test.dtsops.io"));
    cluster::apply_crd(client, &crd, CRD_TIMEOUT).await;
}

#[tokio::test]
async fn serves_kubernetes_v1_36_3() {
    let client = cluster::admin_client().await;
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, "v1.36.3", "{info:?}");
    assert_eq!((info.major.as_str(), info.minor.as_str()), ("1", "36"));

    // The kubectl of the same release talks to it through the admin kubeconfig.
    let kubeconfig = cluster::cluster().await.kubeconfig_path().to_owned();
    let kubectl = cluster::local_bin("kubectl");
    let out = tokio::process::Command::new(&kubectl)
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .args(["get", "--raw", "/readyz"])
        .output()
        .await
        .unwrap_or_else(|e| panic!("running {}: {e}", kubectl.display()));
    assert!(out.status.success(), "kubectl failed: {out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "ok");
}

#[tokio::test]
async fn crd_custom_resource_and_status_subresource() {
    let c = cluster::cluster().await;
    let client = c.admin_client();
    install_widget_crd(&client).await;
    let ns = c.fresh_namespace("crd").await;
    let widgets: Api<Widget> = Api::namespaced(client.clone(), &ns);

    let created = widgets
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .expect("create widget");
    assert_eq!(created.spec, widget("w1", 3).spec);
    assert_eq!(created.status, None);
    assert_eq!(created.metadata.generation, Some(1));

    let read = widgets.get("w1").await.expect("get widget");
    assert_eq!(read.spec.size, 3);
    assert_eq!(read.uid(), created.uid());

    // The schema is enforced: a wrong type is refused (422) with the field named.
    let untyped: Api<DynamicObject> =
        Api::namespaced_with(client.clone(), &ns, &ApiResource::erase::<Widget>(&()));
    let bad: DynamicObject = serde_json::from_value(json!({
        "apiVersion": "test.dtsops.io/v1", "kind": "Widget",
        "metadata": {"name": "bad"}, "spec": {"size": "three", "color": "red"}
    }))
    .expect("a DynamicObject");
    let err = untyped
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("a string where the schema says integer must be refused");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 422 && s.message.contains("spec.size")),
        "{err:?}"
    );

    // Status goes through the status subresource only ...
    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true, "observedSize": 3}})),
        )
        .await
        .expect("patch status");
    assert_eq!(
        patched.status,
        Some(WidgetStatus {
            ready: true,
            observed_size: Some(3)
        })
    );
    // ... and does not bump the generation (spec unchanged).
    assert_eq!(patched.metadata.generation, Some(1));
    assert_eq!(patched.spec, created.spec);

    // A write to the main resource ignores status, and a spec change bumps the generation.
    let main = widgets
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 5}, "status": {"ready": false}})),
        )
        .await
        .expect("patch spec");
    assert_eq!(main.spec.size, 5);
    assert_eq!(main.metadata.generation, Some(2));
    assert_eq!(main.status.as_ref().map(|s| s.ready), Some(true));

    let status = widgets.get_status("w1").await.expect("get status");
    assert_eq!(status.status.and_then(|s| s.observed_size), Some(3));
}

#[tokio::test]
async fn rbac_is_enforced_for_service_accounts() {
    let c = cluster::cluster().await;
    let admin = c.admin_client();
    install_widget_crd(&admin).await;
    let ns = c.fresh_namespace("rbac").await;
    let other_ns = c.fresh_namespace("rbac-other").await;
    c.create_service_account(&ns, "reader").await;
    for n in [&ns, &other_ns] {
        Api::<Widget>::namespaced(admin.clone(), n)
            .create(&PostParams::default(), &widget("w1", 1))
            .await
            .expect("create widget as admin");
    }

    let as_sa: Api<Widget> = Api::namespaced(c.service_account_client(&ns, "reader"), &ns);

    // No binding: forbidden.
    let err = as_sa
        .get("w1")
        .await
        .expect_err("a ServiceAccount without a binding must not read widgets");
    assert!(is_forbidden(&err), "expected 403, got {err:?}");
    assert!(
        err.to_string()
            .contains(&format!("system:serviceaccount:{ns}:reader")),
        "the refusal names the impersonated ServiceAccount: {err}"
    );

    // Grant get/list on widgets in this namespace.
    let role = Role {
        metadata: ObjectMeta {
            name: Some("widget-reader".into()),
            ..Default::default()
        },
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["test.dtsops.io".into()]),
            resources: Some(vec!["widgets".into()]),
            verbs: vec!["get".into(), "list".into()],
            ..Default::default()
        }]),
    };
    Api::<Role>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &role)
        .await
        .expect("create Role");
    let binding = RoleBinding {
        metadata: ObjectMeta {
            name: Some("widget-reader".into()),
            ..Default::default()
        },
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: "widget-reader".into(),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: "reader".into(),
            namespace: Some(ns.clone()),
            ..Default::default()
        }]),
    };
    Api::<RoleBinding>::namespaced(admin.clone(), &ns)
        .create(&PostParams::default(), &binding)
        .await
        .expect("create RoleBinding");

    // The RBAC authorizer reads bindings from an informer: allow it a moment to see the new one.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        match as_sa.get("w1").await {
            Ok(w) => break w,
            Err(e) if is_forbidden(&e) && tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("reading with the Role bound: {e:?}"),
        }
    };
    assert_eq!(got.spec.size, 1);
    assert_eq!(
        as_sa
            .list(&Default::default())
            .await
            .expect("list")
            .items
            .len(),
        1
    );

    // Only what was granted: no writes, no status writes, nothing in other namespaces.
    let err = as_sa
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"size": 2}})),
        )
        .await
        .expect_err("patch must be forbidden");
    assert!(is_forbidden(&err), "expected 403, got {err:?}");
    let err = as_sa
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"ready": true}})),
        )
        .await
        .expect_err("status patch must be forbidden");
    assert!(is_forbidden(&err), "expected 403, got {err:?}");
    let elsewhere: Api<Widget> =
        Api::namespaced(c.service_account_client(&ns, "reader"), &other_ns);
    let err = elsewhere
        .get("w1")
        .await
        .expect_err("another namespace must be forbidden");
    assert!(is_forbidden(&err), "expected 403, got {err:?}");
}
