//! What the benchmark examples share: the resource they create and a namespace holding the
//! credentials Secret the simulator accepts (`benchid` / `benchsecret`).

use dts_operator::crd::DtsJobResetSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

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
