//! Rolling the mesh root without failing a request (Istio's plugged-in CA root rotation, done
//! by the control plane itself): the CA in force is a [`SharedCa`] that the certificate API,
//! the TLS port and the configuration stream all read, so that swapping it changes what is
//! signed, which client certificates 15012 accepts, and which roots every proxy is told to
//! trust ([`TrustPush`], sent on the configuration stream). Proxies answer with what they
//! trust and which root their certificate chains to ([`TrustReport`]), and [`rollover`]
//! waits on those answers between its phases:
//!
//! 1. [`Phase::TrustBoth`]: a new root is made; the bundle becomes old + new (the old root
//!    still signs); every proxy must trust both.
//! 2. [`Phase::SignNew`]: the new root signs; every proxy is told to renew at once and must
//!    hold a certificate from the new root (still trusting both).
//! 3. [`Phase::DropOld`]: the bundle becomes the new root alone; every proxy must trust only
//!    it.
//!
//! The store follows each phase (its root file lists the roots of the bundle, so a proxy
//! reading it trusts what the control plane publishes). A phase that times out leaves the
//! mesh trusting both roots and is resumed by the next [`rollover`] call. The pure parts
//! (bundle order, phase order, who is still pending) are functions with table tests.

use super::CaError;
use super::authority::{CertificateAuthority, der_to_pem, pem_to_ders};
use super::store::{CaMaterial, RootStore};
use ferry_proto::discovery::root_fingerprint;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::watch;

/// The fingerprints of the certificates of PEM texts, in order (unparsable text is skipped).
pub fn pem_fingerprints(pems: &[String]) -> Vec<String> {
    pems.iter()
        .filter_map(|p| pem_to_ders("roots", p).ok())
        .flatten()
        .map(|d| root_fingerprint(&d))
        .collect()
}

/// The first 12 hex digits of a fingerprint, for messages.
pub fn short(fp: &str) -> &str {
    fp.get(..12).unwrap_or(fp)
}

/// The roots to publish: `first` first, then `others` in their order, each certificate once
/// (compared by DER, so differently wrapped PEM texts of one root are one root).
pub fn merge_bundle(first: &[String], others: &[String]) -> Result<Vec<String>, CaError> {
    let mut seen = BTreeSet::new();
    let mut out = Vec::new();
    for pem in first.iter().chain(others) {
        for der in pem_to_ders("trust bundle", pem)? {
            if seen.insert(der.clone()) {
                out.push(der_to_pem(&der));
            }
        }
    }
    Ok(out)
}

/// What the control plane tells every proxy about trust.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TrustPush {
    /// Changes with every push; compare for equality.
    pub generation: u64,
    /// PEM roots to trust, the signing root first.
    pub roots: Vec<String>,
    /// Renewal request counter: a proxy renews at once when it changes.
    pub renew: u64,
}

/// What a proxy says it trusts and holds.
#[derive(Debug, Clone, PartialEq, Eq, Default, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustReport {
    /// The generation of the last [`TrustPush`] it applied.
    pub generation: u64,
    /// Fingerprints of the roots it trusts for peers.
    pub roots: Vec<String>,
    /// Fingerprint of the root its certificate chains to; empty without a certificate.
    pub cert_root: String,
    /// Its certificate's serial (hex).
    pub cert_serial: String,
    /// Why it could not apply the last push, if it could not.
    pub error: String,
}

/// One connected proxy and its last report.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ProxyTrust {
    /// Namespace of the pod.
    pub namespace: String,
    /// Pod name.
    pub pod: String,
    /// Its last report (`None` until the first).
    pub report: Option<TrustReport>,
}

struct Inner {
    ca: RwLock<Arc<CertificateAuthority>>,
    push: watch::Sender<TrustPush>,
    proxies: Mutex<BTreeMap<u64, ProxyTrust>>,
    next: AtomicU64,
    rollover: tokio::sync::Mutex<Option<InProgress>>,
}

/// The CA in force, shared by the certificate API, the TLS port and the configuration
/// stream; cheap to clone (clones share it).
#[derive(Clone)]
pub struct SharedCa {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for SharedCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCa")
            .field("ca", &self.current())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl SharedCa {
    /// Shares `ca`; the first push carries its trust bundle.
    pub fn new(ca: impl Into<Arc<CertificateAuthority>>) -> Self {
        let ca: Arc<CertificateAuthority> = ca.into();
        let push = TrustPush {
            generation: 1,
            roots: ca.trust_bundle().to_vec(),
            renew: 0,
        };
        Self {
            inner: Arc::new(Inner {
                ca: RwLock::new(ca),
                push: watch::channel(push).0,
                proxies: Mutex::new(BTreeMap::new()),
                next: AtomicU64::new(1),
                rollover: tokio::sync::Mutex::new(None),
            }),
        }
    }

    /// The CA in force.
    pub fn current(&self) -> Arc<CertificateAuthority> {
        self.inner
            .ca
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Follows what proxies are told (the configuration stream sends each change).
    pub fn subscribe(&self) -> watch::Receiver<TrustPush> {
        self.inner.push.subscribe()
    }

    /// What proxies are told now.
    pub fn push(&self) -> TrustPush {
        self.inner.push.borrow().clone()
    }

    /// Puts `ca` in force: it signs from now on, and its trust bundle goes to every proxy.
    pub fn install(&self, ca: CertificateAuthority) {
        let roots = ca.trust_bundle().to_vec();
        *self.inner.ca.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ca);
        self.inner.push.send_modify(|p| {
            p.generation += 1;
            p.roots = roots;
        });
    }

    /// Tells every proxy to renew its certificate now.
    pub fn request_renewal(&self) {
        self.inner.push.send_modify(|p| {
            p.generation += 1;
            p.renew += 1;
        });
    }

    /// Records a connected proxy; its entry goes away when the slot drops.
    pub fn register(&self, namespace: &str, pod: &str) -> TrustSlot {
        let id = self.inner.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.proxies).insert(
            id,
            ProxyTrust {
                namespace: namespace.to_string(),
                pod: pod.to_string(),
                report: None,
            },
        );
        TrustSlot {
            shared: self.clone(),
            id,
        }
    }

    /// Every connected proxy with its last report.
    pub fn proxies(&self) -> Vec<ProxyTrust> {
        lock(&self.inner.proxies).values().cloned().collect()
    }
}

/// A connected proxy's entry in [`SharedCa::proxies`], removed on drop.
#[derive(Debug)]
pub struct TrustSlot {
    shared: SharedCa,
    id: u64,
}

impl TrustSlot {
    /// Stores the proxy's latest report.
    pub fn report(&self, report: TrustReport) {
        if let Some(entry) = lock(&self.shared.inner.proxies).get_mut(&self.id) {
            entry.report = Some(report);
        }
    }
}

impl Drop for TrustSlot {
    fn drop(&mut self) {
        lock(&self.shared.inner.proxies).remove(&self.id);
    }
}

/// The phases of a rollover, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// The old root signs; proxies trust old and new.
    TrustBoth,
    /// The new root signs; proxies renew and trust both.
    SignNew,
    /// The new root signs; proxies trust it alone.
    DropOld,
}

impl Phase {
    /// The phase after this one, `None` after the last.
    pub fn next(self) -> Option<Phase> {
        match self {
            Phase::TrustBoth => Some(Phase::SignNew),
            Phase::SignNew => Some(Phase::DropOld),
            Phase::DropOld => None,
        }
    }

    /// `n/3`.
    pub fn number(self) -> usize {
        match self {
            Phase::TrustBoth => 1,
            Phase::SignNew => 2,
            Phase::DropOld => 3,
        }
    }

    /// What the phase does, for progress lines.
    pub fn describe(self) -> &'static str {
        match self {
            Phase::TrustBoth => "publish old + new root, wait until every proxy trusts both",
            Phase::SignNew => {
                "sign with the new root, renew every proxy, wait until all hold a certificate from it"
            }
            Phase::DropOld => "drop the old root, wait until every proxy trusts the new root only",
        }
    }

    /// What every proxy must report once the phase is done, for roots `old` and `new`
    /// (fingerprints).
    pub fn expectation(self, old: &str, new: &str) -> Expectation {
        let both: BTreeSet<String> = [old.to_string(), new.to_string()].into();
        match self {
            Phase::TrustBoth => Expectation {
                roots: both,
                cert_root: None,
            },
            Phase::SignNew => Expectation {
                roots: both,
                cert_root: Some(new.to_string()),
            },
            Phase::DropOld => Expectation {
                roots: [new.to_string()].into(),
                cert_root: Some(new.to_string()),
            },
        }
    }
}

/// What a proxy must report for a phase to be done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Expectation {
    /// Exactly these roots trusted (fingerprints).
    pub roots: BTreeSet<String>,
    /// The root its certificate must chain to, if the phase requires one.
    pub cert_root: Option<String>,
}

/// Why `proxy` does not meet `expect` yet; `None` when it does.
pub fn lagging(proxy: &ProxyTrust, expect: &Expectation) -> Option<String> {
    let who = format!("{}/{}", proxy.namespace, proxy.pod);
    let Some(report) = &proxy.report else {
        return Some(format!("{who}: no trust report yet"));
    };
    if !report.error.is_empty() {
        return Some(format!("{who}: {}", report.error));
    }
    let roots: BTreeSet<String> = report.roots.iter().cloned().collect();
    if roots != expect.roots {
        let names: Vec<&str> = report.roots.iter().map(|r| short(r)).collect();
        return Some(format!("{who}: trusts roots [{}]", names.join(", ")));
    }
    if let Some(want) = &expect.cert_root
        && report.cert_root != *want
    {
        return Some(if report.cert_root.is_empty() {
            format!("{who}: no certificate yet")
        } else {
            format!(
                "{who}: its certificate (serial {}) is from root {}",
                report.cert_serial,
                short(&report.cert_root)
            )
        });
    }
    None
}

/// The proxies that do not meet `expect` yet, with why.
pub fn pending(proxies: &[ProxyTrust], expect: &Expectation) -> Vec<String> {
    proxies.iter().filter_map(|p| lagging(p, expect)).collect()
}

/// A rollover started and not finished: the two CAs and the phase to (re)do.
#[derive(Clone)]
struct InProgress {
    old: CaMaterial,
    new: CaMaterial,
    phase: Phase,
}

/// How long to wait.
#[derive(Debug, Clone, Copy)]
pub struct RolloverOptions {
    /// Longest wait for the proxies in each phase.
    pub phase_timeout: Duration,
    /// How often the proxies' reports are looked at.
    pub poll: Duration,
}

impl Default for RolloverOptions {
    fn default() -> Self {
        Self {
            phase_timeout: Duration::from_secs(60),
            poll: Duration::from_millis(200),
        }
    }
}

/// Why a rollover stopped.
#[derive(Debug, thiserror::Error)]
pub enum RolloverError {
    /// Another rollover runs.
    #[error("another root rollover is in progress")]
    Busy,
    /// The CA material could not be read, made or written.
    #[error("{0}")]
    Ca(#[from] CaError),
    /// Nothing stored to roll.
    #[error("no CA stored in {0}")]
    NoCa(String),
    /// Proxies did not get there in time.
    #[error(
        "phase {phase}/3 timed out after {secs} s; still pending: {pending}. The mesh stays trusting both roots (old {old}, new {new}); run the rollover again to resume"
    )]
    Timeout {
        /// The phase number.
        phase: usize,
        /// How long it waited.
        secs: u64,
        /// The proxies behind, with why.
        pending: String,
        /// The old root (short fingerprint).
        old: String,
        /// The new root (short fingerprint).
        new: String,
    },
}

fn first_root(m: &CaMaterial) -> Result<String, CaError> {
    let der = pem_to_ders("root certificate", &m.root_pem)?
        .into_iter()
        .next()
        .ok_or_else(|| CaError::Material("no root certificate".into()))?;
    Ok(der_to_pem(&der))
}

/// `material` with its root file listing `roots` (the first is its own root).
fn with_roots(material: &CaMaterial, roots: &[String]) -> CaMaterial {
    CaMaterial {
        root_pem: roots.concat(),
        ..material.clone()
    }
}

/// The CA of `material` with the lifetimes of `like` and `extra` roots in its bundle.
fn build(
    material: &CaMaterial,
    like: &CertificateAuthority,
    extra: &[String],
) -> Result<CertificateAuthority, CaError> {
    let mut ca =
        CertificateAuthority::from_material(material, like.trust_domain(), SystemTime::now())?
            .with_ttl(like.default_ttl(), like.max_ttl());
    for pem in extra {
        ca = ca.with_extra_roots(pem)?;
    }
    Ok(ca)
}

/// Rolls the root of `shared`, whose material `store` keeps, in three phases (see the
/// module's documentation), calling `progress` with a line per step. Resumes a rollover
/// that timed out earlier from the phase it stopped in.
pub async fn rollover(
    shared: &SharedCa,
    store: &dyn RootStore,
    options: RolloverOptions,
    progress: &mut (dyn FnMut(String) + Send),
) -> Result<(), RolloverError> {
    let Ok(mut slot) = shared.inner.rollover.try_lock() else {
        return Err(RolloverError::Busy);
    };
    let mut state = match slot.clone() {
        Some(resumed) => {
            progress(format!(
                "resuming the rollover at phase {}/3",
                resumed.phase.number()
            ));
            resumed
        }
        None => {
            let old = store
                .load()
                .await?
                .ok_or_else(|| RolloverError::NoCa(store.describe()))?;
            let current = shared.current();
            let old_root = first_root(&old)?;
            if merge_bundle(&[current.root_pem().to_string()], &[])? != [old_root.clone()] {
                return Err(CaError::Material(format!(
                    "the CA in {} is not the one in force (was it changed by hand?)",
                    store.describe()
                ))
                .into());
            }
            let new =
                CertificateAuthority::generate_root(current.trust_domain(), SystemTime::now())?;
            InProgress {
                old,
                new,
                phase: Phase::TrustBoth,
            }
        }
    };
    let old_root = first_root(&state.old)?;
    let new_root = first_root(&state.new)?;
    let old_fp = pem_fingerprints(std::slice::from_ref(&old_root)).concat();
    let new_fp = pem_fingerprints(std::slice::from_ref(&new_root)).concat();
    progress(format!(
        "rolling the root: old {} -> new {} ({} proxies connected)",
        short(&old_fp),
        short(&new_fp),
        shared.proxies().len()
    ));
    let mut phase = Some(state.phase);
    while let Some(current_phase) = phase {
        state.phase = current_phase;
        *slot = Some(state.clone());
        progress(format!(
            "phase {}/3: {}",
            current_phase.number(),
            current_phase.describe()
        ));
        let like = shared.current();
        match current_phase {
            Phase::TrustBoth => {
                let both = merge_bundle(
                    std::slice::from_ref(&old_root),
                    std::slice::from_ref(&new_root),
                )?;
                store.save(&with_roots(&state.old, &both)).await?;
                shared.install(build(&state.old, &like, std::slice::from_ref(&new_root))?);
            }
            Phase::SignNew => {
                let both = merge_bundle(
                    std::slice::from_ref(&new_root),
                    std::slice::from_ref(&old_root),
                )?;
                store.save(&with_roots(&state.new, &both)).await?;
                shared.install(build(&state.new, &like, std::slice::from_ref(&old_root))?);
                shared.request_renewal();
            }
            Phase::DropOld => {
                store.save(&state.new).await?;
                shared.install(build(&state.new, &like, &[])?);
            }
        }
        let expect = current_phase.expectation(&old_fp, &new_fp);
        let started = Instant::now();
        loop {
            let proxies = shared.proxies();
            let behind = pending(&proxies, &expect);
            if behind.is_empty() {
                progress(format!(
                    "phase {}/3 done: {} proxies ready ({:.1} s)",
                    current_phase.number(),
                    proxies.len(),
                    started.elapsed().as_secs_f64()
                ));
                break;
            }
            if started.elapsed() >= options.phase_timeout {
                if current_phase == Phase::DropOld {
                    // Back to trusting both: the proxies that dropped the old root hold
                    // certificates of the new one, so nothing breaks either way.
                    let both = merge_bundle(
                        std::slice::from_ref(&new_root),
                        std::slice::from_ref(&old_root),
                    )?;
                    store.save(&with_roots(&state.new, &both)).await?;
                    shared.install(build(&state.new, &like, std::slice::from_ref(&old_root))?);
                }
                return Err(RolloverError::Timeout {
                    phase: current_phase.number(),
                    secs: options.phase_timeout.as_secs(),
                    pending: behind.join("; "),
                    old: short(&old_fp).to_string(),
                    new: short(&new_fp).to_string(),
                });
            }
            tokio::time::sleep(options.poll).await;
        }
        phase = current_phase.next();
    }
    *slot = None;
    progress(format!(
        "root rolled: the mesh trusts and signs with {} only; saved in {}",
        short(&new_fp),
        store.describe()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn root() -> String {
        CertificateAuthority::generate_root("cluster.local", SystemTime::now())
            .expect("root")
            .root_pem
    }

    #[test]
    fn bundles_put_the_first_root_first_and_each_root_once() {
        let (a, b, c) = (root(), root(), root());
        // The same root wrapped differently (no trailing newline) is the same root.
        let a2 = a.trim_end().to_string();
        // (what, first roots, other roots, the bundle wanted)
        type Row<'a> = (&'a str, Vec<String>, Vec<String>, Vec<&'a String>);
        let rows: Vec<Row> = vec![
            ("one", vec![a.clone()], vec![], vec![&a]),
            (
                "old then new",
                vec![a.clone()],
                vec![b.clone()],
                vec![&a, &b],
            ),
            (
                "new then old",
                vec![b.clone()],
                vec![a.clone()],
                vec![&b, &a],
            ),
            (
                "repeats dropped",
                vec![a.clone()],
                vec![a2.clone(), b.clone(), a.clone()],
                vec![&a, &b],
            ),
            (
                "a PEM text holding two roots",
                vec![format!("{a}{c}")],
                vec![b.clone()],
                vec![&a, &c, &b],
            ),
        ];
        for (what, first, others, want) in rows {
            let got = merge_bundle(&first, &others).expect(what);
            let want: Vec<String> = want.into_iter().cloned().collect();
            assert_eq!(got, want, "{what}");
        }
        assert!(merge_bundle(&["-----BEGIN CERTIFICATE-----\n!!\n".into()], &[]).is_err());
    }

    #[test]
    fn phases_run_in_order() {
        let mut seen = vec![Phase::TrustBoth];
        while let Some(next) = seen.last().and_then(|p| p.next()) {
            seen.push(next);
        }
        assert_eq!(seen, [Phase::TrustBoth, Phase::SignNew, Phase::DropOld]);
        let numbers: Vec<usize> = seen.iter().map(|p| p.number()).collect();
        assert_eq!(numbers, [1, 2, 3]);
    }

    fn proxy(pod: &str, report: Option<(&[&str], &str)>) -> ProxyTrust {
        ProxyTrust {
            namespace: "default".into(),
            pod: pod.into(),
            report: report.map(|(roots, cert_root)| TrustReport {
                generation: 1,
                roots: roots.iter().map(|r| r.to_string()).collect(),
                cert_root: cert_root.into(),
                cert_serial: "0a".into(),
                error: String::new(),
            }),
        }
    }

    #[test]
    fn who_is_pending_in_each_phase() {
        let (old, new) = ("o".repeat(64), "n".repeat(64));
        let (o, n) = (old.as_str(), new.as_str());
        // (phase, the proxy's report, pending reason or None)
        let (only_old, only_new, both, both_reversed) = ([o], [n], [o, n], [n, o]);
        type Row<'a> = (Phase, Option<(&'a [&'a str], &'a str)>, Option<&'a str>);
        let rows: Vec<Row> = vec![
            (Phase::TrustBoth, None, Some("no trust report yet")),
            (
                Phase::TrustBoth,
                Some((&only_old, o)),
                Some("trusts roots [oooooooooooo]"),
            ),
            (Phase::TrustBoth, Some((&both, o)), None),
            (Phase::TrustBoth, Some((&both_reversed, o)), None),
            (
                Phase::SignNew,
                Some((&both, o)),
                Some("is from root oooooooooooo"),
            ),
            (
                Phase::SignNew,
                Some((&both, "")),
                Some("no certificate yet"),
            ),
            (Phase::SignNew, Some((&both, n)), None),
            (
                Phase::SignNew,
                Some((&only_new, n)),
                Some("trusts roots [nnnnnnnnnnnn]"),
            ),
            (Phase::DropOld, Some((&both, n)), Some("trusts roots")),
            (Phase::DropOld, Some((&only_new, n)), None),
        ];
        for (phase, report, want) in rows {
            let p = proxy("redis-0", report);
            let got = lagging(&p, &phase.expectation(o, n));
            match (got, want) {
                (None, None) => {}
                (Some(got), Some(want)) => {
                    assert!(got.starts_with("default/redis-0: "), "{got}");
                    assert!(got.contains(want), "{phase:?} {report:?}: {got}");
                }
                (got, want) => panic!("{phase:?} {report:?}: got {got:?}, want {want:?}"),
            }
        }
        let mut broken = proxy("redis-1", Some((&[o, n], n)));
        if let Some(r) = broken.report.as_mut() {
            r.error = "bad root".into();
        }
        let all = [proxy("redis-0", Some((&[o, n], n))), broken];
        assert_eq!(
            pending(&all, &Phase::SignNew.expectation(o, n)),
            ["default/redis-1: bad root"]
        );
    }

    /// A store in memory.
    #[derive(Default)]
    struct Memory(Mutex<Option<CaMaterial>>);

    #[tonic::async_trait]
    impl RootStore for Memory {
        async fn load(&self) -> Result<Option<CaMaterial>, CaError> {
            Ok(lock(&self.0).clone())
        }
        async fn save(&self, m: &CaMaterial) -> Result<(), CaError> {
            *lock(&self.0) = Some(m.clone());
            Ok(())
        }
        fn describe(&self) -> String {
            "memory".into()
        }
    }

    /// A proxy that reports what it is told, signing nothing itself: its certificate root
    /// follows the CA in force when a renewal is asked for. Returns the moments trust was
    /// broken: a bundle pushed without the root of the certificate the proxy holds (its
    /// peers, told the same, would refuse it).
    async fn follow(shared: SharedCa, slot: TrustSlot, stop: watch::Receiver<bool>) -> Vec<String> {
        let mut rx = shared.subscribe();
        let mut stop = stop;
        let root_of =
            |ca: &CertificateAuthority| pem_fingerprints(&[ca.root_pem().to_string()]).concat();
        let mut cert_root = root_of(&shared.current());
        let mut renew_seen = rx.borrow().renew;
        let mut broken = Vec::new();
        loop {
            let push = rx.borrow_and_update().clone();
            let roots = pem_fingerprints(&push.roots);
            if !roots.contains(&cert_root) {
                broken.push(format!(
                    "generation {}: {roots:?} without {cert_root}",
                    push.generation
                ));
            }
            if push.renew != renew_seen {
                renew_seen = push.renew;
                cert_root = root_of(&shared.current());
            }
            slot.report(TrustReport {
                generation: push.generation,
                roots,
                cert_root: cert_root.clone(),
                cert_serial: "01".into(),
                error: String::new(),
            });
            tokio::select! {
                r = rx.changed() => {
                    if r.is_err() {
                        return broken;
                    }
                }
                _ = stop.changed() => return broken,
            }
        }
    }

    #[tokio::test]
    async fn a_rollover_ends_on_the_new_root_and_resumes_after_a_timeout() {
        let m =
            CertificateAuthority::generate_root("cluster.local", SystemTime::now()).expect("root");
        let store = Memory(Mutex::new(Some(m.clone())));
        let ca = CertificateAuthority::from_material(&m, "cluster.local", SystemTime::now())
            .expect("ca");
        let shared = SharedCa::new(ca);
        let old_fp = pem_fingerprints(std::slice::from_ref(&m.root_pem)).concat();
        let options = RolloverOptions {
            phase_timeout: Duration::from_millis(300),
            poll: Duration::from_millis(10),
        };
        // A proxy that never reports: phase 1 times out, the mesh trusts both roots.
        let silent = shared.register("default", "silent");
        let mut lines = Vec::new();
        let err = rollover(&shared, &store, options, &mut |l| lines.push(l))
            .await
            .expect_err("times out");
        assert!(
            err.to_string().contains("phase 1/3 timed out")
                && err
                    .to_string()
                    .contains("default/silent: no trust report yet"),
            "{err}"
        );
        assert_eq!(shared.current().trust_bundle().len(), 2, "trusting both");
        assert_eq!(
            pem_fingerprints(&[shared.current().root_pem().to_string()]).concat(),
            old_fp,
            "the old root still signs"
        );
        drop(silent);
        // A following proxy: resumed, all phases pass.
        let (stop_tx, stop_rx) = watch::channel(false);
        let slot = shared.register("default", "redis-0");
        let task = tokio::spawn(follow(shared.clone(), slot, stop_rx));
        let mut lines = Vec::new();
        rollover(&shared, &store, options, &mut |l| lines.push(l))
            .await
            .expect("rolled");
        // What the proxy reported last: the new root only.
        let shown: Vec<Vec<String>> = shared
            .proxies()
            .iter()
            .filter_map(|p| p.report.as_ref().map(|r| r.roots.clone()))
            .collect();
        let _ = stop_tx.send(true);
        let broken = task.await.expect("follower");
        assert!(broken.is_empty(), "trust broken: {broken:?}");
        assert!(
            lines[0].contains("resuming the rollover at phase 1/3"),
            "{lines:?}"
        );
        let ca = shared.current();
        let new_fp = pem_fingerprints(&[ca.root_pem().to_string()]).concat();
        assert_ne!(new_fp, old_fp);
        assert_eq!(pem_fingerprints(ca.trust_bundle()), vec![new_fp.clone()]);
        let saved = store.load().await.expect("load").expect("saved");
        assert_eq!(pem_fingerprints(&[saved.root_pem]), vec![new_fp.clone()]);
        assert_eq!(shown, [vec![new_fp]]);
    }
}
