//! The run-once work of the control plane, done by the replica that holds the leader Lease:
//! patching the webhook's `caBundle` and publishing the root-certificate ConfigMaps, at
//! once when leadership is gained and then every `resync`. The Lease is renewed while the
//! work runs (the work is a separate task), and released at shutdown so the other replica
//! takes over without waiting for the Lease to expire.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::watch;
use tokio::time::Instant;
use tracing::{info, warn};

use super::leader::{Leadership, LeaseConfig, LeaseLock};
use super::{root_cert, webhook_ca};

/// What the leader maintains.
#[derive(Clone)]
pub struct Duties {
    /// The API client.
    pub client: kube::Client,
    /// The Lease.
    pub lease: LeaseConfig,
    /// Name of Ferry's MutatingWebhookConfiguration.
    pub webhook_config: String,
    /// The CA bundle the API server must trust for the webhook (PEM).
    pub ca_bundle_pem: String,
    /// The mesh's root certificate for the proxies (PEM).
    pub root_pem: String,
    /// How often the work is redone while leading.
    pub resync: Duration,
}

/// What one round of work did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Round {
    /// The webhook configuration's check.
    pub ca_bundle: webhook_ca::BundleOutcome,
    /// Per namespace, the root-certificate ConfigMap.
    pub root_certs: std::collections::BTreeMap<String, root_cert::Published>,
}

/// One round of the work, whoever leads (tests and `ferry` tooling call it directly).
pub async fn run_once(duties: &Duties) -> Result<Round, kube::Error> {
    let ca_bundle = webhook_ca::ensure_ca_bundle(
        &duties.client,
        &duties.webhook_config,
        duties.ca_bundle_pem.as_bytes(),
    )
    .await?;
    let root_certs = root_cert::reconcile(&duties.client, &duties.root_pem).await?;
    Ok(Round {
        ca_bundle,
        root_certs,
    })
}

/// Campaigns for the Lease until `shutdown`, doing the work while leading; `leading`
/// follows whether this replica leads (for `/ready` details and metrics).
pub async fn run(duties: Duties, leading: watch::Sender<bool>, shutdown: impl Future<Output = ()>) {
    let lock = LeaseLock::new(duties.client.clone(), duties.lease.clone());
    let retry = duties.lease.retry_period;
    let lease_duration = duties.lease.lease_duration;
    tokio::pin!(shutdown);
    let mut is_leader = false;
    let mut last_renewal: Option<Instant> = None;
    let mut next_work = Instant::now();
    let mut work: Option<tokio::task::JoinHandle<()>> = None;
    loop {
        let now = Instant::now();
        let attempt = lock.try_acquire_or_renew(Timestamp::now()).await;
        let leads = match attempt {
            Ok(Leadership::Leader) => {
                last_renewal = Some(now);
                true
            }
            Ok(Leadership::Follower(_)) => false,
            Err(e) => {
                warn!(error = %e, "leader lease: cannot reach the API");
                // Keep leading only while the Lease we hold is surely still valid.
                is_leader && last_renewal.is_some_and(|t| now < t + lease_duration - retry)
            }
        };
        if leads != is_leader {
            is_leader = leads;
            let _ = leading.send(leads);
            if leads {
                info!(identity = %duties.lease.identity, "leading: patching the webhook CA bundle and publishing root certificates");
                next_work = now;
            } else {
                warn!("no longer leading");
                if let Some(task) = work.take() {
                    task.abort();
                }
            }
        }
        if is_leader && now >= next_work && work.as_ref().is_none_or(|t| t.is_finished()) {
            next_work = now + duties.resync;
            let d = duties.clone();
            work = Some(tokio::spawn(async move {
                match run_once(&d).await {
                    Ok(round) => {
                        info!(ca_bundle = ?round.ca_bundle, namespaces = round.root_certs.len(), "leader work done")
                    }
                    Err(e) => warn!(error = %e, "leader work failed; retrying at the next resync"),
                }
            }));
        }
        tokio::select! {
            _ = &mut shutdown => break,
            _ = tokio::time::sleep(retry) => {}
        }
    }
    if let Some(task) = work.take() {
        task.abort();
    }
    if is_leader {
        let _ = leading.send(false);
        if let Err(e) = lock.release().await {
            warn!(error = %e, "releasing the leader lease");
        }
    }
}
