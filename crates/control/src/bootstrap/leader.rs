//! Leader election with a `coordination.k8s.io/v1` Lease, as client-go's `leaderelection`
//! does it: the holder renews `renewTime` every few seconds; another replica takes the Lease
//! over only once `renewTime + leaseDurationSeconds` has passed. Every write carries the
//! `resourceVersion` it read, so two replicas racing for the Lease cannot both win (the
//! API server answers `409 Conflict` to the loser).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Api;
use kube::api::PostParams;

/// How a Lease is held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Namespace of the Lease.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// This replica's identity (its pod name).
    pub identity: String,
    /// How long a Lease stays valid without renewal (client-go: 15 s).
    pub lease_duration: Duration,
    /// How often the holder renews, and others retry (client-go: 2 s).
    pub retry_period: Duration,
}

impl LeaseConfig {
    /// Ferry's Lease in `namespace` for `identity`, with client-go's timings.
    pub fn new(namespace: &str, identity: &str) -> Self {
        LeaseConfig {
            namespace: namespace.into(),
            name: super::LEADER_LEASE.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            retry_period: Duration::from_secs(2),
        }
    }
}

/// Who holds the Lease after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Leadership {
    /// This replica holds it.
    Leader,
    /// Another replica holds a valid Lease (its identity).
    Follower(String),
}

/// Attempts on one Lease.
#[derive(Clone)]
pub struct LeaseLock {
    api: Api<Lease>,
    config: LeaseConfig,
}

fn is_status(e: &kube::Error, code: u16) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == code)
}

impl LeaseLock {
    /// A lock on the Lease `config` names.
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        LeaseLock {
            api: Api::namespaced(client, &config.namespace),
            config,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    fn spec(&self, now: Timestamp, acquired: Timestamp, transitions: i32) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(
                i32::try_from(self.config.lease_duration.as_secs()).unwrap_or(i32::MAX),
            ),
            acquire_time: Some(MicroTime(acquired)),
            renew_time: Some(MicroTime(now)),
            lease_transitions: Some(transitions),
            ..Default::default()
        }
    }

    /// One attempt at `now`: create the Lease, renew it, or take over an expired one. A
    /// lost race (`409`) is reported as following, whoever won.
    pub async fn try_acquire_or_renew(&self, now: Timestamp) -> Result<Leadership, kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    namespace: Some(self.config.namespace.clone()),
                    ..Default::default()
                },
                spec: Some(self.spec(now, now, 0)),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(Leadership::Leader),
                Err(e) if is_status(&e, 409) => Ok(Leadership::Follower(String::new())),
                Err(e) => Err(e),
            };
        };
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.clone().unwrap_or_default();
        let transitions = spec.lease_transitions.unwrap_or(0);
        let new_spec = if holder == self.config.identity {
            let acquired = spec.acquire_time.map(|t| t.0).unwrap_or(now);
            self.spec(now, acquired, transitions)
        } else {
            let duration = SignedDuration::from_secs(i64::from(
                spec.lease_duration_seconds.unwrap_or(0).max(0),
            ));
            let valid_until = spec
                .renew_time
                .as_ref()
                .or(spec.acquire_time.as_ref())
                .and_then(|t| t.0.checked_add(duration).ok());
            let expired = holder.is_empty() || valid_until.is_none_or(|until| until <= now);
            if !expired {
                return Ok(Leadership::Follower(holder));
            }
            self.spec(now, now, transitions + 1)
        };
        lease.spec = Some(new_spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(Leadership::Leader),
            Err(e) if is_status(&e, 409) => Ok(Leadership::Follower(holder)),
            Err(e) => Err(e),
        }
    }

    /// Gives the Lease up (at shutdown) so another replica takes over at once instead of
    /// after the lease duration. Does nothing if another replica holds it.
    pub async fn release(&self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let mut spec = lease.spec.clone().unwrap_or_default();
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        lease.spec = Some(spec);
        match self
            .api
            .replace(&self.config.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_status(&e, 409) => Ok(()),
            Err(e) => Err(e),
        }
    }
}
