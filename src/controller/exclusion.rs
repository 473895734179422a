//! Exclusion per job: two resources naming the same (region, job) never have calls in flight
//! together. Inside this process a map of reservations decides; across replicas that share a
//! cache, another resource's live claim seen in the cache does.
//!
//! No I/O: the map is in memory and the cache is the controller's reflector store.

use std::collections::HashMap;
use std::sync::Mutex;

use jiff::Timestamp;
use kube::ResourceExt;
use kube::runtime::reflector::Store;

use crate::crd::{DtsJobReset, Phase};

/// One DTS job: (region, job ID).
pub type JobKey = (String, String);

/// The reservations of this process: job → UID of the resource whose call is in flight.
#[derive(Debug, Default)]
pub struct Reservations {
    held: Mutex<HashMap<JobKey, String>>,
}

/// A reservation, released when dropped.
#[derive(Debug)]
pub struct Reservation<'a> {
    reservations: &'a Reservations,
    key: JobKey,
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.reservations.held.lock() {
            m.remove(&self.key);
        }
    }
}

impl Reservations {
    /// Reserves `key` for the resource `uid`, or names the UID that holds it.
    pub fn reserve(&self, key: JobKey, uid: &str) -> Result<Reservation<'_>, String> {
        let mut m = self.held.lock().expect("reservations lock");
        match m.get(&key) {
            Some(holder) if holder != uid => Err(holder.clone()),
            _ => {
                m.insert(key.clone(), uid.to_string());
                Ok(Reservation {
                    reservations: self,
                    key,
                })
            }
        }
    }
}

/// `namespace/name` of a cached resource.
fn display_name(o: &DtsJobReset) -> String {
    format!("{}/{}", o.namespace().unwrap_or_default(), o.name_any())
}

/// Another resource in the cache holding a live claim for the same job (other replicas).
pub fn claimed_elsewhere(
    store: &Store<DtsJobReset>,
    key: &JobKey,
    uid: &str,
    now: Timestamp,
) -> Option<String> {
    store.state().iter().find_map(|o| {
        let s = o.status.as_ref()?;
        let r = s.request.as_ref()?;
        let live =
            s.phase == Some(Phase::Running) && s.claim_deadline.as_ref().is_some_and(|d| d.0 > now);
        (live
            && o.uid().as_deref() != Some(uid)
            && (&r.region_id, &r.dts_job_id) == (&key.0, &key.1))
            .then(|| display_name(o))
    })
}

/// Takes the job for `uid`: reserved in this process and claimed by no other cached resource.
/// Otherwise names the resource that has it (`namespace/name` when the cache knows it).
pub fn acquire<'a>(
    reservations: &'a Reservations,
    store: Option<&Store<DtsJobReset>>,
    key: &JobKey,
    uid: &str,
    now: Timestamp,
) -> Result<Reservation<'a>, String> {
    match reservations.reserve(key.clone(), uid) {
        Ok(reservation) => match store.and_then(|s| claimed_elsewhere(s, key, uid, now)) {
            None => Ok(reservation),
            Some(other) => Err(other),
        },
        Err(holder_uid) => Err(store
            .and_then(|s| {
                s.state()
                    .iter()
                    .find(|o| o.uid().as_deref() == Some(holder_uid.as_str()))
                    .map(|o| display_name(o))
            })
            .unwrap_or(holder_uid)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(job: &str) -> JobKey {
        ("cn-hangzhou".into(), job.into())
    }

    #[test]
    fn one_reservation_per_job_released_on_drop() {
        let r = Reservations::default();
        let a = r.reserve(key("j"), "uid-a").unwrap();
        assert_eq!(r.reserve(key("j"), "uid-b").unwrap_err(), "uid-a");
        assert!(
            r.reserve(key("other"), "uid-b").is_ok(),
            "another job is free"
        );
        drop(a);
        assert!(r.reserve(key("j"), "uid-b").is_ok());
    }
}
