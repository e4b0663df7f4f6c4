//! The certificate API over real TLS on loopback, with the proxy's own client: a token
//! proves a service account and gets a certificate for exactly that identity; a request for
//! another identity, a forged token or no credential at all is refused; a proxy renews with
//! its current certificate when it has no token. The CA's root persists in its directory.
//! TokenReview is checked against a fake API server.

use ferry_control::ca::token_review::TokenReviewAuthenticator;
use ferry_control::ca::{
    Authenticator, CaService, CertificateAuthority, FileStore, LocalTokens, RootStore, SecureServer,
};
use ferry_proto::config::SpiffeId;
use ferry_proxy::identity::IdentityState;
use ferry_proxy::identity::manager::{Manager, SystemClock};
use ferry_proxy::identity::source::CaClient;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

struct Ca {
    addr: SocketAddr,
    root: PathBuf,
    tokens: LocalTokens,
    dir: tempfile::TempDir,
    _task: tokio::task::JoinHandle<()>,
}

async fn start_ca() -> Ca {
    let dir = tempfile::tempdir().expect("tmp");
    let store = FileStore::new(dir.path().join("ca"));
    let (ca, created) =
        CertificateAuthority::load_or_create(&store, "cluster.local", SystemTime::now())
            .await
            .expect("ca");
    assert!(created);
    let ca = Arc::new(ca);
    let tokens = LocalTokens::new(b"0123456789abcdef0123456789abcdef");
    let service = CaService::new(ca.clone(), Arc::new(tokens.clone()));
    let server = SecureServer::new(ca.clone(), vec!["localhost".into()], vec![]).expect("server");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let root = dir.path().join("root.pem");
    std::fs::write(&root, ca.root_pem()).expect("root");
    let task = tokio::spawn(async move {
        let _ = server
            .serve(listener, service.routes(), std::future::pending())
            .await;
    });
    Ca {
        addr,
        root,
        tokens,
        dir,
        _task: task,
    }
}

impl Ca {
    fn client(&self, token: Option<&str>) -> CaClient {
        let token_file = token.map(|t| {
            let p = self.dir.path().join(format!("token-{}", t.len()));
            std::fs::write(&p, t).expect("token");
            p
        });
        CaClient {
            addr: self.addr.to_string(),
            server_name: "localhost".into(),
            root_cert: self.root.clone(),
            token_file,
        }
    }

    fn manager(&self, sa: &str, client: CaClient, state: Arc<IdentityState>) -> Manager {
        Manager {
            id: SpiffeId::new("cluster.local", "default", sa).expect("id"),
            ttl: Some(Duration::from_secs(600)),
            root_cert: Some(self.root.clone()),
            source: Arc::new(client),
            state,
            metrics: Default::default(),
            clock: Arc::new(SystemClock),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn issues_the_proven_identity_and_refuses_everything_else() {
    let ca = start_ca().await;
    let token = ca.tokens.issue("default", "redis", "redis-0");
    let state = Arc::new(IdentityState::new());

    let ok = ca.manager("redis", ca.client(Some(&token)), state.clone());
    let cert = ok.renew_once().await.expect("issued");
    assert_eq!(cert.id.uri(), "spiffe://cluster.local/ns/default/sa/redis");
    let lifetime = cert
        .not_after
        .duration_since(cert.not_before)
        .expect("valid");
    assert_eq!(
        lifetime,
        Duration::from_secs(600 + 60),
        "asked 600 s, backdated 60 s"
    );
    assert_eq!(cert.chain_pem.len(), 2, "workload certificate and root");
    state.publish(cert);

    // A valid token for redis, a request for admin.
    let foreign = ca.manager(
        "admin",
        ca.client(Some(&token)),
        Arc::new(IdentityState::new()),
    );
    let err = foreign.renew_once().await.expect_err("refused");
    assert!(err.contains("PermissionDenied"), "{err}");

    // A token signed with another key.
    let forged =
        LocalTokens::new(b"not the control plane's key at all").issue("default", "admin", "");
    let err = ca
        .manager(
            "admin",
            ca.client(Some(&forged)),
            Arc::new(IdentityState::new()),
        )
        .renew_once()
        .await
        .expect_err("refused");
    assert!(err.contains("Unauthenticated"), "{err}");

    // No token and no certificate: nothing to prove identity with.
    let err = ca
        .manager("redis", ca.client(None), Arc::new(IdentityState::new()))
        .renew_once()
        .await
        .expect_err("refused");
    assert!(err.contains("no token"), "{err}");

    // No token, but a valid mesh certificate: renewed with it.
    let renewed = ca
        .manager("redis", ca.client(None), state.clone())
        .renew_once()
        .await
        .expect("renewed with the client certificate");
    assert_eq!(
        renewed.id.uri(),
        "spiffe://cluster.local/ns/default/sa/redis"
    );
    // ... but not into another identity.
    let err = ca
        .manager("admin", ca.client(None), state.clone())
        .renew_once()
        .await
        .expect_err("refused");
    assert!(err.contains("PermissionDenied"), "{err}");
}

#[tokio::test]
async fn the_root_persists_in_its_directory() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let store = FileStore::new(dir.path());
    let now = SystemTime::now();
    let (first, created) = CertificateAuthority::load_or_create(&store, "cluster.local", now)
        .await
        .expect("first start");
    assert!(created);
    let (second, created) = CertificateAuthority::load_or_create(&store, "cluster.local", now)
        .await
        .expect("second start");
    assert!(!created);
    assert_eq!(first.root_pem(), second.root_pem());
    let key = std::fs::metadata(dir.path().join("ca-key.pem")).expect("key file");
    assert_eq!(key.permissions().mode() & 0o777, 0o600);
    for f in ["ca-cert.pem", "root-cert.pem", "cert-chain.pem"] {
        assert!(dir.path().join(f).exists(), "{f}");
    }
    assert!(store.load().await.expect("load").is_some());
}

/// A fake API server answering TokenReviews: `good-token` is redis's, anything else is not
/// authenticated. Records the audiences asked for.
async fn fake_api() -> (String, Arc<std::sync::Mutex<Vec<serde_json::Value>>>) {
    use http_body_util::{BodyExt, Full};
    use hyper::body::Incoming;
    use hyper_util::rt::{TokioExecutor, TokioIo};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let seen = Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let record = record.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<Incoming>| {
                    let record = record.clone();
                    async move {
                        let path = req.uri().path().to_string();
                        let body = req
                            .into_body()
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let review: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        record.lock().expect("lock").push(review.clone());
                        let token = review["spec"]["token"].as_str().unwrap_or_default();
                        let status = if path != "/apis/authentication.k8s.io/v1/tokenreviews" {
                            serde_json::json!({})
                        } else if token == "good-token" {
                            serde_json::json!({
                                "authenticated": true,
                                "audiences": ["istio-ca"],
                                "user": {
                                    "username": "system:serviceaccount:default:redis",
                                    "extra": {"authentication.kubernetes.io/pod-name": ["redis-0"]}
                                }
                            })
                        } else {
                            serde_json::json!({"authenticated": false, "error": "invalid bearer token"})
                        };
                        let answer = serde_json::json!({
                            "apiVersion": "authentication.k8s.io/v1",
                            "kind": "TokenReview",
                            "metadata": {},
                            "spec": review["spec"],
                            "status": status,
                        });
                        Ok::<_, std::convert::Infallible>(
                            hyper::Response::builder()
                                .status(201)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes::Bytes::from(answer.to_string())))
                                .expect("response"),
                        )
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (url, seen)
}

#[tokio::test]
async fn token_review_with_the_istio_ca_audience() {
    let (url, seen) = fake_api().await;
    let config = kube::Config::new(url.parse().expect("url"));
    let client = kube::Client::try_from(config).expect("client");
    let authn = TokenReviewAuthenticator::new(client);
    let caller = authn
        .authenticate("good-token")
        .await
        .expect("authenticated");
    assert_eq!(
        (
            caller.namespace.as_str(),
            caller.service_account.as_str(),
            caller.pod.as_deref()
        ),
        ("default", "redis", Some("redis-0"))
    );
    assert!(authn.authenticate("stolen-token").await.is_err());
    let reviews = seen.lock().expect("lock").clone();
    assert_eq!(reviews.len(), 2);
    assert_eq!(
        reviews[0]["spec"]["audiences"],
        serde_json::json!(["istio-ca"])
    );
}
