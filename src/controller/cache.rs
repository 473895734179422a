//! What the controller's cache (kube-runtime's reflector store) keeps of each resource: only
//! what the controller reads. Everything else the API server sends — `managedFields` above all
//! (a tree of JSON values per field manager, several KiB per object), other annotations such as
//! `kubectl.kubernetes.io/last-applied-configuration`, owner references — is dropped from
//! every watched object before it is stored or reconciled, so memory follows the number of
//! resources held, not the size of what users and tools attach to them.
//!
//! The controller reads, of the metadata: name and namespace (the API paths), UID and
//! `resourceVersion` (preconditions, event references, claim bookkeeping), generation
//! (`observedGeneration`), `deletionTimestamp`, the labels (`--selector`: a shard leaves a
//! resource relabelled into another shard alone), and the `dtsops.io/requested-at` annotation
//! (part of a request's identity). Spec and status are kept whole. Every read that must see the object
//! as stored (a claim found in the cache, the record after a conflict) is a fresh `get`, never
//! the cache.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::crd::{DtsJobReset, REQUESTED_AT_ANNOTATION};

/// Reduces `obj`'s metadata to the fields the controller reads (see the module doc).
pub fn keep_read_fields(obj: &mut DtsJobReset) {
    let meta = std::mem::take(&mut obj.metadata);
    let annotations = meta
        .annotations
        .and_then(|mut a| a.remove_entry(REQUESTED_AT_ANNOTATION))
        .map(|kv| [kv].into());
    obj.metadata = ObjectMeta {
        name: meta.name,
        namespace: meta.namespace,
        uid: meta.uid,
        resource_version: meta.resource_version,
        generation: meta.generation,
        deletion_timestamp: meta.deletion_timestamp,
        labels: meta.labels,
        annotations,
        ..ObjectMeta::default()
    };
}

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
        FieldsV1, ManagedFieldsEntry, OwnerReference, Time,
    };
    use kube::{Resource, ResourceExt};

    use super::*;
    use crate::crd::{DtsJobResetSpec, DtsJobResetStatus, Phase, RequestIdentity};

    /// An object as the API server sends it after `kubectl apply` and a few status writes.
    fn as_served() -> DtsJobReset {
        let spec: DtsJobResetSpec = serde_json::from_value(serde_json::json!({
            "dtsJobId": "j1",
            "regionId": "cn-hangzhou",
            "credentials": {"secretRef": {"name": "creds"}},
            "backoffLimit": 3,
            "ttlSecondsAfterFinished": 60
        }))
        .unwrap();
        let mut obj = DtsJobReset::new("r1", spec);
        obj.metadata = ObjectMeta {
            name: Some("r1".into()),
            namespace: Some("team-a".into()),
            uid: Some("uid-1".into()),
            resource_version: Some("42".into()),
            generation: Some(3),
            deletion_timestamp: Some(Time("2026-01-01T00:00:00Z".parse().unwrap())),
            creation_timestamp: Some(Time("2025-12-31T00:00:00Z".parse().unwrap())),
            labels: Some([("team".to_string(), "a".to_string())].into()),
            annotations: Some(
                [
                    (
                        REQUESTED_AT_ANNOTATION.to_string(),
                        "2026-01-01".to_string(),
                    ),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                        "{\"apiVersion\":\"dtsops.io/v1alpha1\"}".to_string(),
                    ),
                ]
                .into(),
            ),
            managed_fields: Some(vec![ManagedFieldsEntry {
                manager: Some("kubectl".into()),
                operation: Some("Apply".into()),
                fields_v1: Some(FieldsV1(serde_json::json!({"f:spec": {"f:dtsJobId": {}}}))),
                ..Default::default()
            }]),
            owner_references: Some(vec![OwnerReference {
                name: "owner".into(),
                ..Default::default()
            }]),
            finalizers: Some(vec!["example.com/keep".into()]),
            ..Default::default()
        };
        obj.status = Some(DtsJobResetStatus {
            phase: Some(Phase::Succeeded),
            request_id: Some("req-1".into()),
            attempts: Some(1),
            ..Default::default()
        });
        obj
    }

    #[test]
    fn keeps_every_field_the_controller_reads() {
        let full = as_served();
        let mut kept = full.clone();
        keep_read_fields(&mut kept);
        assert_eq!(kept.name_any(), "r1");
        assert_eq!(kept.namespace(), full.namespace());
        assert_eq!(kept.uid(), full.uid());
        assert_eq!(kept.resource_version(), full.resource_version());
        assert_eq!(kept.meta().generation, Some(3));
        assert_eq!(
            kept.meta().deletion_timestamp,
            full.meta().deletion_timestamp
        );
        assert_eq!(
            kept.labels(),
            full.labels(),
            "--selector's guard reads them"
        );
        assert_eq!(kept.spec, full.spec);
        assert_eq!(kept.status, full.status);
        // What the controller derives from an object is the same from the kept one.
        assert_eq!(RequestIdentity::of(&kept), RequestIdentity::of(&full));
        assert_eq!(
            RequestIdentity::of(&kept).requested_at.as_deref(),
            Some("2026-01-01")
        );
        assert_eq!(kept.object_ref(&()), full.object_ref(&()));
    }

    #[test]
    fn drops_what_the_controller_never_reads() {
        let mut kept = as_served();
        keep_read_fields(&mut kept);
        let m = &kept.metadata;
        assert_eq!(m.managed_fields, None);
        assert_eq!(m.owner_references, None);
        assert_eq!(m.finalizers, None);
        assert_eq!(m.creation_timestamp, None);
        assert_eq!(
            kept.annotations().keys().collect::<Vec<_>>(),
            [REQUESTED_AT_ANNOTATION]
        );
    }

    #[test]
    fn an_object_without_the_annotation_keeps_none() {
        let mut obj = as_served();
        obj.metadata.annotations = Some(
            [(
                "kubectl.kubernetes.io/last-applied-configuration".to_string(),
                "{}".to_string(),
            )]
            .into(),
        );
        keep_read_fields(&mut obj);
        assert_eq!(obj.metadata.annotations, None);
        assert_eq!(RequestIdentity::of(&obj).requested_at, None);
    }
}
