//! What the benchmark examples share: the CRD installed, the resource they create, and a
//! namespace holding the credentials Secret the simulator accepts (`benchid` / `benchsecret`).

use dts_operator::crd::DtsJobResetSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::Client;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};

/// Applies the operator's CRD (server-side) and gives the API server a moment to serve it.
pub async fn install_crd(client: &Client) {
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            "dtsjobresets.dtsops.io",
            &PatchParams::apply("bench").force(),
            &Patch::Apply(dts_operator::crd::crd()),
        )
        .await
        .unwrap();
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
}

/// A request for `job`, with the Secret `creds`.
pub fn spec(job: &str) -> DtsJobResetSpec {
    serde_json::from_value(serde_json::json!({
        "dtsJobId": job,
        "regionId": "cn-hangzhou",
        "credentials": {"secretRef": {"name": "creds"}}
    }))
    .unwrap()
}

/// A fresh namespace `<prefix>-<random>` with the Secret `creds`; returns its name.
pub async fn namespace_with_secret(client: &Client, prefix: &str) -> String {
    let ns = format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    Api::<Namespace>::all(client.clone())
        .create(
            &PostParams::default(),
            &Namespace {
                metadata: ObjectMeta {
                    name: Some(ns.clone()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await
        .unwrap();
    Api::<Secret>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &Secret {
                metadata: ObjectMeta {
                    name: Some("creds".into()),
                    ..Default::default()
                },
                data: Some(
                    [
                        ("accessKeyId".to_string(), ByteString(b"benchid".to_vec())),
                        (
                            "accessKeySecret".to_string(),
                            ByteString(b"benchsecret".to_vec()),
                        ),
                    ]
                    .into(),
                ),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    ns
}
