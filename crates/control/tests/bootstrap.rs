//! The control plane's cluster bootstrap (`ferry_control::bootstrap`) and `ferry install
//! --apply` (`ferry_control::install::apply`) against the fake API server
//! (tests/support/kube_api) with the real `kube::Client`: the webhook `caBundle` is patched in
//! and repaired, the root-certificate ConfigMap appears in the namespaces that need it, the
//! leader Lease is held by one replica at a time and handed over, the mesh ConfigMap shapes
//! injection, the CA Secret is created once, and installing twice keeps the patched bundle.

#[path = "support/kube_api/mod.rs"]
mod kube_api;

use std::time::Duration;

use ferry_control::bootstrap::duties::{self, Duties};
use ferry_control::bootstrap::leader::{Leadership, LeaseConfig, LeaseLock};
use ferry_control::bootstrap::root_cert::{self, Published};
use ferry_control::bootstrap::webhook_ca::{self, BundleOutcome};
use ferry_control::bootstrap::{LEADER_LEASE, ROOT_CERT_CONFIGMAP, mesh};
use ferry_control::install::{self, Manifest, Values, apply};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube_api::FakeApi;
use serde_json::{Value, json};

const CONFIG: &str = "ferry-sidecar-injector";

async fn client(api: &FakeApi) -> kube::Client {
    let config = kube::Config::new(api.url().parse().expect("url"));
    kube::Client::try_from(config).expect("client")
}

fn installed() -> Vec<Manifest> {
    install::render(&Values::default(), install::DEFAULT_NAMESPACE)
}

fn manifest(kind: &str) -> Value {
    installed()
        .into_iter()
        .find(|m| m.kind() == kind)
        .map(|m| m.0)
        .unwrap_or_else(|| panic!("{kind} is installed"))
}

fn ca_pem(name: &str) -> String {
    let key = rcgen::KeyPair::generate().unwrap();
    let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    params.self_signed(&key).unwrap().pem()
}

fn bundle_of(api: &FakeApi) -> Vec<Option<String>> {
    api.get("MutatingWebhookConfiguration", "", CONFIG)
        .expect("configuration")["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["clientConfig"]["caBundle"].as_str().map(str::to_string))
        .collect()
}

fn b64(pem: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(pem)
}

#[tokio::test]
async fn ca_bundle_is_patched_in_and_repaired() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    let pem = ca_pem("root");
    assert_eq!(
        webhook_ca::ensure_ca_bundle(&client, CONFIG, pem.as_bytes())
            .await
            .unwrap(),
        BundleOutcome::Missing
    );
    api.apply(manifest("MutatingWebhookConfiguration"));
    let hooks = bundle_of(&api).len();
    assert!(bundle_of(&api).iter().all(Option::is_none));
    let BundleOutcome::Patched(names) =
        webhook_ca::ensure_ca_bundle(&client, CONFIG, pem.as_bytes())
            .await
            .unwrap()
    else {
        panic!("not patched")
    };
    assert_eq!(names.len(), hooks);
    assert_eq!(bundle_of(&api), vec![Some(b64(&pem)); hooks]);
    // Selectors and everything else are untouched.
    let after = api.get("MutatingWebhookConfiguration", "", CONFIG).unwrap();
    let before = manifest("MutatingWebhookConfiguration");
    for (a, b) in after["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .zip(before["webhooks"].as_array().unwrap())
    {
        assert_eq!(a["namespaceSelector"], b["namespaceSelector"]);
        assert_eq!(a["objectSelector"], b["objectSelector"]);
        assert_eq!(a["failurePolicy"], "Fail");
    }
    assert_eq!(
        webhook_ca::ensure_ca_bundle(&client, CONFIG, pem.as_bytes())
            .await
            .unwrap(),
        BundleOutcome::Unchanged
    );
    // Someone breaks one entry: only that one is patched back.
    let mut edited = after.clone();
    edited["webhooks"][1]["clientConfig"]["caBundle"] = b64(&ca_pem("other")).into();
    api.apply(edited);
    let outcome = webhook_ca::ensure_ca_bundle(&client, CONFIG, pem.as_bytes())
        .await
        .unwrap();
    assert_eq!(
        outcome,
        BundleOutcome::Patched(vec![after["webhooks"][1]["name"].as_str().unwrap().into()])
    );
    assert_eq!(bundle_of(&api), vec![Some(b64(&pem)); hooks]);
    assert!(
        api.requests()
            .iter()
            .any(|r| r.starts_with("PATCH /apis/admissionregistration.k8s.io/v1/mutatingwebhookconfigurations/ferry-sidecar-injector")),
        "{:?}",
        api.requests()
    );
}

fn namespace(name: &str, labels: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}})
}

fn pod(ns: &str, name: &str, annotations: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "Pod",
           "metadata": {"name": name, "namespace": ns, "annotations": annotations},
           "spec": {"containers": [{"name": "app", "image": "busybox"}]}})
}

#[tokio::test]
async fn root_certificate_is_published_where_pods_need_it() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    api.apply(namespace("shop", json!({"istio-injection": "enabled"})));
    api.apply(namespace("canary", json!({"istio.io/rev": "default"})));
    api.apply(namespace("plain", json!({})));
    api.apply(namespace("quiet", json!({})));
    api.apply(namespace(
        "kube-system",
        json!({"istio-injection": "enabled"}),
    ));
    api.apply(pod("plain", "injected", json!({"ferry.dev/status": "{}"})));
    api.apply(pod("quiet", "bare", json!({})));
    let root = ca_pem("root");
    let round = root_cert::reconcile(&client, &root).await.unwrap();
    let created: Vec<&str> = round.keys().map(String::as_str).collect();
    assert_eq!(created, ["canary", "plain", "shop"]);
    assert!(round.values().all(|p| *p == Published::Created));
    let cm = api.get("ConfigMap", "shop", ROOT_CERT_CONFIGMAP).unwrap();
    assert_eq!(cm["data"]["root-cert.pem"], root.as_str());
    assert_eq!(
        cm["metadata"]["labels"]["app.kubernetes.io/part-of"],
        "ferry"
    );
    assert!(api.get("ConfigMap", "quiet", ROOT_CERT_CONFIGMAP).is_none());
    assert!(
        api.get("ConfigMap", "kube-system", ROOT_CERT_CONFIGMAP)
            .is_none()
    );

    let again = root_cert::reconcile(&client, &root).await.unwrap();
    assert!(
        again.values().all(|p| *p == Published::Unchanged),
        "{again:?}"
    );
    // A new root (rotation) updates every copy; a deleted copy comes back.
    api.delete("ConfigMap", "canary", ROOT_CERT_CONFIGMAP);
    let rotated = ca_pem("root-2");
    let round = root_cert::reconcile(&client, &rotated).await.unwrap();
    assert_eq!(round["canary"], Published::Created);
    assert_eq!(round["shop"], Published::Updated);
    assert_eq!(
        api.get("ConfigMap", "plain", ROOT_CERT_CONFIGMAP).unwrap()["data"]["root-cert.pem"],
        rotated.as_str()
    );
}

fn lease(identity: &str, seconds: u64) -> LeaseConfig {
    LeaseConfig {
        lease_duration: Duration::from_secs(seconds),
        retry_period: Duration::from_millis(100),
        ..LeaseConfig::new("ferry-system", identity)
    }
}

#[tokio::test]
async fn one_leader_at_a_time_and_takeover_after_expiry() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    let a = LeaseLock::new(client.clone(), lease("ferry-control-a", 15));
    let b = LeaseLock::new(client.clone(), lease("ferry-control-b", 15));
    let t0 = Timestamp::now();
    let at = |s: i64| t0.checked_add(SignedDuration::from_secs(s)).unwrap();
    assert_eq!(
        a.try_acquire_or_renew(t0).await.unwrap(),
        Leadership::Leader
    );
    assert_eq!(
        b.try_acquire_or_renew(at(1)).await.unwrap(),
        Leadership::Follower("ferry-control-a".into())
    );
    assert_eq!(
        a.try_acquire_or_renew(at(10)).await.unwrap(),
        Leadership::Leader
    );
    // Renewed at 10 s, valid until 25 s.
    assert_eq!(
        b.try_acquire_or_renew(at(20)).await.unwrap(),
        Leadership::Follower("ferry-control-a".into())
    );
    assert_eq!(
        b.try_acquire_or_renew(at(26)).await.unwrap(),
        Leadership::Leader
    );
    assert_eq!(
        a.try_acquire_or_renew(at(27)).await.unwrap(),
        Leadership::Follower("ferry-control-b".into())
    );
    let stored = api.get("Lease", "ferry-system", LEADER_LEASE).unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "ferry-control-b");
    assert_eq!(stored["spec"]["leaseTransitions"], 1);
    // Releasing hands over at once.
    b.release().await.unwrap();
    assert_eq!(
        a.try_acquire_or_renew(at(28)).await.unwrap(),
        Leadership::Leader
    );
    // A stale write loses: the API server answers 409 and the loser follows.
    let stale = api.get("Lease", "ferry-system", LEADER_LEASE).unwrap();
    assert_eq!(
        a.try_acquire_or_renew(at(29)).await.unwrap(),
        Leadership::Leader
    );
    let mut racing = stale;
    racing["spec"]["holderIdentity"] = "ferry-control-b".into();
    let lease_api: kube::Api<k8s_openapi::api::coordination::v1::Lease> =
        kube::Api::namespaced(client.clone(), "ferry-system");
    let typed = serde_json::from_value(racing).unwrap();
    let err = lease_api
        .replace(LEADER_LEASE, &Default::default(), &typed)
        .await
        .unwrap_err();
    assert!(matches!(err, kube::Error::Api(s) if s.code == 409));
}

#[tokio::test]
async fn two_replicas_share_the_duties_and_hand_them_over() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    api.apply(manifest("MutatingWebhookConfiguration"));
    api.apply(namespace("shop", json!({"istio-injection": "enabled"})));
    let root = ca_pem("root");
    let replica = |identity: &str| Duties {
        client: client.clone(),
        lease: lease(identity, 3),
        webhook_config: CONFIG.into(),
        ca_bundle_pem: root.clone(),
        root_pem: root.clone(),
        resync: Duration::from_millis(300),
    };
    let (a_tx, mut a_rx) = tokio::sync::watch::channel(false);
    let (b_tx, b_rx) = tokio::sync::watch::channel(false);
    let (stop_a, stop_a_rx) = tokio::sync::oneshot::channel::<()>();
    let (stop_b, stop_b_rx) = tokio::sync::oneshot::channel::<()>();
    let a = tokio::spawn(duties::run(replica("a"), a_tx, async move {
        let _ = stop_a_rx.await;
    }));
    tokio::time::timeout(Duration::from_secs(5), a_rx.wait_for(|l| *l))
        .await
        .expect("a leads")
        .unwrap();
    let b = tokio::spawn(duties::run(replica("b"), b_tx, async move {
        let _ = stop_b_rx.await;
    }));
    // The leader does the work; the follower does not lead.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while api.get("ConfigMap", "shop", ROOT_CERT_CONFIGMAP).is_none()
        || bundle_of(&api).iter().any(Option::is_none)
    {
        assert!(tokio::time::Instant::now() < deadline, "no work done");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!*b_rx.borrow());
    // The leader stops (a rollout): it releases the Lease and b takes over well before
    // the 3 s lease would have expired.
    let _ = stop_a.send(());
    a.await.unwrap();
    let mut b_rx = b_rx;
    tokio::time::timeout(Duration::from_secs(2), b_rx.wait_for(|l| *l))
        .await
        .expect("b takes over")
        .unwrap();
    // b repairs what a re-install removed.
    api.apply(manifest("MutatingWebhookConfiguration"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while bundle_of(&api).iter().any(Option::is_none) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "bundle not repaired"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_b.send(());
    b.await.unwrap();
}

#[tokio::test]
async fn mesh_settings_come_from_the_installed_configmap() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    let defaults = mesh::load(&client, "ferry-system", "ferry-mesh")
        .await
        .unwrap();
    assert_eq!(defaults, mesh::MeshSettings::default());
    let values = install::ValuesBuilder::new()
        .set("mesh.nativeSidecars=false")
        .unwrap()
        .set("mesh.trustDomain=example.org")
        .unwrap()
        .build()
        .unwrap();
    let cm = install::render(&values, "ferry-system")
        .into_iter()
        .find(|m| m.kind() == "ConfigMap")
        .unwrap();
    api.apply(cm.0);
    let settings = mesh::load(&client, "ferry-system", "ferry-mesh")
        .await
        .unwrap();
    assert!(!settings.native_sidecars);
    assert_eq!(settings.trust_domain, "example.org");
    let inject = settings.inject_config(ferry_inject::InjectConfig::default());
    assert!(!inject.native_sidecars);
    assert_eq!(inject.trust_domain, "example.org");
}

#[tokio::test]
async fn ca_secret_is_created_once_and_reloaded() {
    use ferry_control::ca::RootStore;
    use ferry_control::ca::store::SecretStore;
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    let first = SecretStore::new(client.clone(), "ferry-system", install::CA_SECRET);
    let second = SecretStore::new(client.clone(), "ferry-system", install::CA_SECRET);
    assert!(first.load().await.unwrap().is_none());
    let material = ferry_control::ca::authority::CertificateAuthority::generate_root(
        "cluster.local",
        std::time::SystemTime::now(),
    )
    .unwrap();
    first.save(&material).await.unwrap();
    // A second replica starting at the same time cannot overwrite it...
    let other = ferry_control::ca::authority::CertificateAuthority::generate_root(
        "cluster.local",
        std::time::SystemTime::now(),
    )
    .unwrap();
    assert!(second.save(&other).await.is_err());
    // ...and loads the winner's root.
    assert_eq!(second.load().await.unwrap(), Some(material));
    let secret = api
        .get("Secret", "ferry-system", install::CA_SECRET)
        .unwrap();
    assert!(secret["data"]["ca-key.pem"].is_string());
}

#[tokio::test]
async fn install_apply_is_idempotent_keeps_the_bundle_and_istio_crds() {
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    // Istio is installed: its VirtualService CRD has no Ferry label.
    let istio_crd = json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                           "metadata": {"name": "virtualservices.networking.istio.io",
                                        "labels": {"app": "istio-pilot"}},
                           "spec": {"group": "networking.istio.io"}});
    api.apply(istio_crd.clone());
    let objects = installed();
    let outcomes = apply::apply_all(&client, &objects, |_, _| {})
        .await
        .unwrap();
    assert_eq!(outcomes.len(), objects.len());
    for (what, outcome) in &outcomes {
        let expected = if what == "CustomResourceDefinition/virtualservices.networking.istio.io" {
            apply::Outcome::KeptIstioCrd
        } else {
            apply::Outcome::Applied
        };
        assert_eq!(outcome, &expected, "{what}");
    }
    assert_eq!(
        api.get(
            "CustomResourceDefinition",
            "",
            "virtualservices.networking.istio.io"
        )
        .unwrap()["spec"],
        istio_crd["spec"]
    );
    assert!(
        api.get("Deployment", "ferry-system", "ferry-control")
            .is_some()
    );
    assert!(
        api.get("CustomResourceDefinition", "", "redispolicies.ferry.dev")
            .is_some()
    );
    // The control plane patches the bundle; installing again (an upgrade) keeps it.
    let pem = ca_pem("root");
    webhook_ca::ensure_ca_bundle(&client, CONFIG, pem.as_bytes())
        .await
        .unwrap();
    apply::apply_all(&client, &objects, |_, _| {})
        .await
        .unwrap();
    assert!(
        bundle_of(&api)
            .iter()
            .all(|b| b.as_deref() == Some(b64(&pem).as_str()))
    );
    assert!(
        api.requests().iter().any(|r| r
            .starts_with("PATCH /apis/apps/v1/namespaces/ferry-system/deployments/ferry-control?")
            && r.contains("fieldManager=ferry-install")),
        "{:?}",
        api.requests()
    );

    // Uninstall: the webhook first, CRDs kept, root-certificate ConfigMaps only on purge.
    api.apply(namespace("shop", json!({"istio-injection": "enabled"})));
    root_cert::reconcile(&client, &pem).await.unwrap();
    let plan = apply::uninstall_plan(&objects, false);
    apply::delete_all(&client, &plan, false, |_, _| {})
        .await
        .unwrap();
    assert!(
        api.get("MutatingWebhookConfiguration", "", CONFIG)
            .is_none()
    );
    assert!(
        api.get("Deployment", "ferry-system", "ferry-control")
            .is_none()
    );
    assert!(api.get("ClusterRole", "", "ferry-control").is_none());
    assert!(
        api.get("CustomResourceDefinition", "", "redispolicies.ferry.dev")
            .is_some()
    );
    assert!(api.get("ConfigMap", "shop", ROOT_CERT_CONFIGMAP).is_some());
    let plan = apply::uninstall_plan(&objects, true);
    let outcomes = apply::delete_all(&client, &plan, true, |_, _| {})
        .await
        .unwrap();
    assert!(
        api.get("CustomResourceDefinition", "", "redispolicies.ferry.dev")
            .is_none()
    );
    assert!(api.get("ConfigMap", "shop", ROOT_CERT_CONFIGMAP).is_none());
    // Istio's own CRD survives even a purge.
    assert!(
        api.get(
            "CustomResourceDefinition",
            "",
            "virtualservices.networking.istio.io"
        )
        .is_some()
    );
    assert!(outcomes.iter().any(|(w, o)| w
        == "CustomResourceDefinition/virtualservices.networking.istio.io"
        && *o == apply::Outcome::KeptIstioCrd));
}

/// Connects to `addr` over TLS trusting only `bundle_pem` for `server_name`, and asks for
/// `/healthz`; returns the status line.
async fn healthz_over_tls(
    addr: std::net::SocketAddr,
    server_name: &str,
    bundle_pem: &[u8],
) -> Result<String, String> {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(bundle_pem) {
        roots
            .add(cert.map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())?;
    }
    let config = rustls::ClientConfig::builder_with_provider(
        rustls::crypto::aws_lc_rs::default_provider().into(),
    )
    .with_safe_default_protocol_versions()
    .map_err(|e| e.to_string())?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| e.to_string())?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())
        .map_err(|e| e.to_string())?;
    let mut tls = connector
        .connect(name, tcp)
        .await
        .map_err(|e| e.to_string())?;
    tls.write_all(
        format!("GET /healthz HTTP/1.1\r\nHost: {server_name}\r\nConnection: close\r\n\r\n")
            .as_bytes(),
    )
    .await
    .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let _ = tls.read_to_end(&mut answer).await;
    let text = String::from_utf8_lossy(&answer);
    Ok(text.lines().next().unwrap_or_default().to_string())
}

#[tokio::test]
async fn the_patched_bundle_verifies_the_webhook_served_with_the_cas_certificate() {
    use ferry_control::ca::CertificateAuthority;
    use ferry_control::ca::store::SecretStore;
    use ferry_control::webhook::{WebhookServer, WebhookSettings};
    let api = FakeApi::start().await.unwrap();
    let client = client(&api).await;
    // The CA, created in its Secret on first start.
    let store = SecretStore::new(client.clone(), "ferry-system", install::CA_SECRET);
    let now = std::time::SystemTime::now();
    let (ca, created) = CertificateAuthority::load_or_create(&store, "cluster.local", now)
        .await
        .unwrap();
    assert!(created);
    assert!(
        api.get("Secret", "ferry-system", install::CA_SECRET)
            .is_some()
    );
    // Its serving certificate for the webhook Service, on a real HTTPS listener.
    let service = "ferry-control.ferry-system.svc".to_string();
    let (issued, key) = ca
        .issue_serving(
            std::slice::from_ref(&service),
            &[],
            Duration::from_secs(3600),
            now,
        )
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("tls.crt"), issued.chain.concat()).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    let server = WebhookServer::bind(WebhookSettings::new(
        "127.0.0.1:0".parse().unwrap(),
        dir.path().join("tls.crt"),
        dir.path().join("tls.key"),
    ))
    .await
    .unwrap();
    let addr = server.local_addr();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(server.serve(async move {
        let _ = stopped.await;
    }));
    // The leader's work with the CA's root.
    api.apply(manifest("MutatingWebhookConfiguration"));
    api.apply(namespace("shop", json!({"istio-injection": "enabled"})));
    let d = Duties {
        client: client.clone(),
        lease: lease("a", 15),
        webhook_config: CONFIG.into(),
        ca_bundle_pem: ca.root_pem().to_string(),
        root_pem: ca.root_pem().to_string(),
        resync: Duration::from_secs(60),
    };
    let round = duties::run_once(&d).await.unwrap();
    assert!(matches!(round.ca_bundle, BundleOutcome::Patched(_)));
    // What the API server would do: trust exactly the patched caBundle.
    let bundles = webhook_ca::current_bundles(&client, CONFIG).await.unwrap();
    for (name, bundle) in &bundles {
        let bundle = bundle
            .as_ref()
            .unwrap_or_else(|| panic!("{name} has no bundle"));
        let status = healthz_over_tls(addr, &service, bundle).await.unwrap();
        assert!(status.contains(" 200 "), "{name}: {status}");
    }
    // A wrong bundle fails the handshake, as it would for the API server.
    let wrong = ca_pem("someone else");
    assert!(
        healthz_over_tls(addr, &service, wrong.as_bytes())
            .await
            .is_err()
    );
    // The proxies' root ConfigMap holds the same root.
    assert_eq!(
        api.get("ConfigMap", "shop", ROOT_CERT_CONFIGMAP).unwrap()["data"]["root-cert.pem"],
        ca.root_pem()
    );
    let _ = stop.send(());
    serving.await.unwrap();
}
