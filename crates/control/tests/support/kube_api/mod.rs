//! A fake Kubernetes API server for tests: plain HTTP on 127.0.0.1, speaking the list/watch
//! protocol the way kube-apiserver does for the collections Ferry watches.
//!
//! - Discovery as kube-apiserver serves it (unaggregated): `GET /api` (`APIVersions`),
//!   `/apis` (`APIGroupList`: each group with its served versions, highest priority first,
//!   and `preferredVersion`), `/apis/<group>` (`APIGroup`), and `/api/v1`,
//!   `/apis/<group>/<version>` (`APIResourceList`: name, singularName, namespaced, kind,
//!   verbs, and `<plural>/status` subresources). A custom kind is served at the versions
//!   [`FakeApi::serve_versions`] sets (by default its one version in [`collections`]), as a
//!   CRD's `served` flags do: its collections at other versions answer `404`, and its
//!   objects read at a version carry that `apiVersion` (conversion `None`, as Istio's CRDs
//!   have). [`FakeApi::unserve`] removes a kind altogether, as deleting its CRD does.
//! - `GET <collection>` lists: `{"kind":"<Kind>List","metadata":{"resourceVersion":"N"},
//!   "items":[...]}`; items of built-in kinds carry no `apiVersion`/`kind` (as the real server
//!   encodes typed lists), items of custom resources do.
//! - `GET <collection>?watch=true&resourceVersion=N` streams newline-delimited JSON events
//!   (`ADDED`, `MODIFIED`, `DELETED`, `BOOKMARK` when `allowWatchBookmarks=true`) newer than N;
//!   N older than the compaction point gets a `200` stream with one `ERROR` event carrying a
//!   `410 Expired` Status, as the real server sends.
//! - [`FakeApi::expire`] ends every open watch with that `ERROR 410` event (the watch cache
//!   fell behind) so clients must re-list; [`FakeApi::apply_silently`] changes objects without
//!   any event, which only a re-list can reveal.
//! - Every request is logged ([`FakeApi::requests`]); paths that are not a known collection are
//!   answered `404` and kept in [`FakeApi::unknown_paths`].
//! - Single objects (`<collection>/<name>`) answer `GET` (`404 NotFound` when absent), `PUT`
//!   (replace; `409 Conflict` when the body's `resourceVersion` is stale), `PATCH` (JSON patch,
//!   merge patch, strategic merge patch merging lists of objects by `name`, and server-side
//!   apply, which creates, merged like a strategic merge patch) and `DELETE`; `POST <collection>` creates (`409 AlreadyExists`).
//!   Lists honour `labelSelector` (`k=v`, `k`) and `fieldSelector=metadata.name=<name>`.
//!   Non-`GET` requests are logged as `METHOD path`.
//! - `POST /apis/authentication.k8s.io/v1/tokenreviews` reviews a token as kube-apiserver's
//!   service-account authenticator does, for the tokens [`FakeApi::issue_token`] made (a
//!   projected token of one pod): `201` with `status.authenticated`, the user
//!   `system:serviceaccount:<ns>:<sa>` with its groups and the `pod-name`/`pod-uid` extras,
//!   and the audiences asked for that the token carries; an unknown token, or one for none of
//!   the audiences asked (the server's own, `https://kubernetes.default.svc.cluster.local`,
//!   when none are), gets `authenticated: false` and an `error`. Every review is kept
//!   ([`FakeApi::token_reviews`]).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::{Value, json};
use tokio::sync::{broadcast, mpsc};
use tokio_stream::StreamExt;
use tokio_stream::wrappers::ReceiverStream;

/// A collection the server serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Collection {
    /// `/api/v1` or `/apis/<group>/<version>`.
    pub prefix: &'static str,
    /// `apiVersion` of its objects.
    pub api_version: &'static str,
    /// Kind of its objects.
    pub kind: &'static str,
    /// Plural resource name.
    pub plural: &'static str,
    /// Whether its objects live in namespaces.
    pub namespaced: bool,
    /// Whether it is a custom resource (list items keep `apiVersion`/`kind`).
    pub custom: bool,
}

impl Collection {
    /// The API group (empty for the core group).
    pub fn group(&self) -> &'static str {
        self.api_version.rsplit_once('/').map_or("", |(g, _)| g)
    }

    /// The version of [`Collection::api_version`].
    pub fn version(&self) -> &'static str {
        self.api_version
            .rsplit_once('/')
            .map_or(self.api_version, |(_, v)| v)
    }

    /// `apiVersion` at `version` of the collection's group.
    pub fn api_version_at(&self, version: &str) -> String {
        match self.group() {
            "" => version.to_string(),
            group => format!("{group}/{version}"),
        }
    }

    /// Whether the resource has a `status` subresource in discovery.
    fn has_status(&self) -> bool {
        self.custom
            || matches!(
                self.kind,
                "Pod"
                    | "Service"
                    | "Namespace"
                    | "Deployment"
                    | "PodDisruptionBudget"
                    | "CustomResourceDefinition"
            )
    }
}

/// The collections Ferry watches.
pub fn collections() -> Vec<Collection> {
    let c = |prefix, api_version, kind, plural, namespaced, custom| Collection {
        prefix,
        api_version,
        kind,
        plural,
        namespaced,
        custom,
    };
    vec![
        c("/api/v1", "v1", "Namespace", "namespaces", false, false),
        c("/api/v1", "v1", "Pod", "pods", true, false),
        c("/api/v1", "v1", "Service", "services", true, false),
        c(
            "/apis/discovery.k8s.io/v1",
            "discovery.k8s.io/v1",
            "EndpointSlice",
            "endpointslices",
            true,
            false,
        ),
        c(
            "/apis/networking.istio.io/v1",
            "networking.istio.io/v1",
            "VirtualService",
            "virtualservices",
            true,
            true,
        ),
        c(
            "/apis/networking.istio.io/v1",
            "networking.istio.io/v1",
            "DestinationRule",
            "destinationrules",
            true,
            true,
        ),
        c(
            "/apis/security.istio.io/v1",
            "security.istio.io/v1",
            "PeerAuthentication",
            "peerauthentications",
            true,
            true,
        ),
        c(
            "/apis/ferry.dev/v1alpha1",
            "ferry.dev/v1alpha1",
            "RedisPolicy",
            "redispolicies",
            true,
            true,
        ),
        c(
            "/apis/telemetry.istio.io/v1",
            "telemetry.istio.io/v1",
            "Telemetry",
            "telemetries",
            true,
            true,
        ),
        // What the bootstrap and `ferry install --apply` read and write.
        c("/api/v1", "v1", "Secret", "secrets", true, false),
        c("/api/v1", "v1", "ConfigMap", "configmaps", true, false),
        c(
            "/api/v1",
            "v1",
            "ServiceAccount",
            "serviceaccounts",
            true,
            false,
        ),
        c(
            "/apis/coordination.k8s.io/v1",
            "coordination.k8s.io/v1",
            "Lease",
            "leases",
            true,
            false,
        ),
        c(
            "/apis/admissionregistration.k8s.io/v1",
            "admissionregistration.k8s.io/v1",
            "MutatingWebhookConfiguration",
            "mutatingwebhookconfigurations",
            false,
            false,
        ),
        c(
            "/apis/apiextensions.k8s.io/v1",
            "apiextensions.k8s.io/v1",
            "CustomResourceDefinition",
            "customresourcedefinitions",
            false,
            false,
        ),
        c(
            "/apis/rbac.authorization.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
            "ClusterRole",
            "clusterroles",
            false,
            false,
        ),
        c(
            "/apis/rbac.authorization.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
            "ClusterRoleBinding",
            "clusterrolebindings",
            false,
            false,
        ),
        c(
            "/apis/rbac.authorization.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
            "Role",
            "roles",
            true,
            false,
        ),
        c(
            "/apis/rbac.authorization.k8s.io/v1",
            "rbac.authorization.k8s.io/v1",
            "RoleBinding",
            "rolebindings",
            true,
            false,
        ),
        c(
            "/apis/apps/v1",
            "apps/v1",
            "Deployment",
            "deployments",
            true,
            false,
        ),
        c(
            "/apis/policy/v1",
            "policy/v1",
            "PodDisruptionBudget",
            "poddisruptionbudgets",
            true,
            false,
        ),
    ]
}

/// A group's served versions, highest priority first, each with the collections served at it.
type Versions = Vec<(String, Vec<Collection>)>;

/// What open watches are told.
#[derive(Debug, Clone)]
enum Signal {
    /// An event of one collection at one resource version.
    Event {
        kind: &'static str,
        rv: u64,
        event: &'static str,
        object: Arc<Value>,
    },
    /// A bookmark at the current resource version, for every collection.
    Bookmark(u64),
    /// The watch cache fell behind: send `ERROR 410` and end.
    Expire,
    /// End the stream cleanly (as a watch timeout does).
    Close,
    /// End the streams of one kind cleanly (its CRD changed).
    CloseKind(&'static str),
}

/// One logged event.
#[derive(Debug, Clone)]
struct Logged {
    kind: &'static str,
    rv: u64,
    event: &'static str,
    object: Arc<Value>,
}

#[derive(Debug, Default)]
struct Inner {
    rv: u64,
    /// (kind, namespace, name) -> object (with apiVersion and kind).
    objects: BTreeMap<(String, String, String), Value>,
    events: Vec<Logged>,
    /// Watches from resource versions below this get `410 Gone`.
    compacted: u64,
    requests: Vec<String>,
    unknown: Vec<String>,
    uid: u64,
    /// Kinds answered `404`, as when their CRD is not installed.
    unserved: Vec<String>,
    /// The versions custom kinds are served at, where not their one version.
    versions: BTreeMap<String, Vec<String>>,
    /// Tokens [`FakeApi::issue_token`] made, by token.
    tokens: BTreeMap<String, IssuedToken>,
    /// The tokens reviewed so far, with whether they were authenticated.
    reviews: Vec<(String, bool)>,
}

/// A projected service-account token of one pod.
#[derive(Debug, Clone)]
struct IssuedToken {
    namespace: String,
    service_account: String,
    pod: String,
    audiences: Vec<String>,
}

/// The audience kube-apiserver checks when a TokenReview asks for none.
pub const API_SERVER_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl Inner {
    /// The versions `collection` is served at, highest priority first.
    fn served(&self, collection: &Collection) -> Vec<String> {
        if self.unserved.iter().any(|k| k == collection.kind) {
            return Vec::new();
        }
        let mut versions = (self.versions.get(collection.kind).cloned())
            .unwrap_or_else(|| vec![collection.version().to_string()]);
        by_priority(&mut versions);
        versions
    }
}

/// Sorts versions as the API server orders them in discovery: GA before beta before alpha,
/// higher numbers first.
fn by_priority(versions: &mut Vec<String>) {
    versions.sort_by_cached_key(|v| std::cmp::Reverse(kube::core::Version::parse(v).priority()));
    versions.dedup();
}

/// The fake API server: a mutable store the test edits, served over HTTP.
#[derive(Clone)]
pub struct FakeApi {
    inner: Arc<Mutex<Inner>>,
    signals: broadcast::Sender<Signal>,
    addr: SocketAddr,
}

impl FakeApi {
    /// Starts a server on an ephemeral loopback port.
    pub async fn start() -> std::io::Result<FakeApi> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let api = FakeApi {
            inner: Arc::new(Mutex::new(Inner {
                rv: 100,
                ..Inner::default()
            })),
            signals: broadcast::channel(4096).0,
            addr,
        };
        let server = api.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let server = server.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                        let server = server.clone();
                        async move { Ok::<_, Infallible>(server.serve(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(api)
    }

    /// Answers `404` for `kind`'s collection from now on, and leaves it out of discovery, as
    /// a server without its CRD does; open watches of it end.
    pub fn unserve(&self, kind: &str) {
        let collection = known(kind);
        self.lock().unserved.push(kind.to_string());
        let _ = self.signals.send(Signal::CloseKind(collection.kind));
    }

    /// The versions `kind` is served at now, highest priority first.
    pub fn served_versions(&self, kind: &str) -> Vec<String> {
        let collection = known(kind);
        self.lock().served(&collection)
    }

    /// Serves the custom `kind` at exactly `versions` from now on (installing it if it was
    /// not served), as editing its CRD's `served` flags does; open watches of it end, and
    /// clients resume at a version still served or find `404`.
    pub fn serve_versions(&self, kind: &str, versions: &[&str]) {
        let collection = known(kind);
        assert!(collection.custom, "{kind} is not a custom resource");
        let mut inner = self.lock();
        inner.unserved.retain(|k| k != kind);
        let versions = versions.iter().map(|v| v.to_string()).collect();
        inner.versions.insert(kind.to_string(), versions);
        drop(inner);
        let _ = self.signals.send(Signal::CloseKind(collection.kind));
    }

    /// A projected service-account token of `namespace/pod`, running as `service_account`,
    /// for `audiences` (what the kubelet writes into a `serviceAccountToken` volume): the
    /// TokenReview authenticates it from now on.
    pub fn issue_token(
        &self,
        namespace: &str,
        service_account: &str,
        pod: &str,
        audiences: &[&str],
    ) -> String {
        let mut inner = self.lock();
        inner.uid += 1;
        let token = format!(
            "fake-projected-token.{}.{namespace}.{pod}",
            inner.uid + 7_000_000
        );
        inner.tokens.insert(
            token.clone(),
            IssuedToken {
                namespace: namespace.to_string(),
                service_account: service_account.to_string(),
                pod: pod.to_string(),
                audiences: audiences.iter().map(|a| a.to_string()).collect(),
            },
        );
        token
    }

    /// Every TokenReview so far: the token and whether it was authenticated.
    pub fn token_reviews(&self) -> Vec<(String, bool)> {
        self.lock().reviews.clone()
    }

    /// Answers a TokenReview as kube-apiserver does (`201` with the review and its status).
    fn review_token(&self, body: &[u8]) -> Response<BoxBody<Bytes, Infallible>> {
        let Ok(mut review) = serde_json::from_slice::<Value>(body) else {
            return status(
                StatusCode::BAD_REQUEST,
                "BadRequest",
                "the body is not a TokenReview",
            );
        };
        let token = review["spec"]["token"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let mut wanted: Vec<String> = review["spec"]["audiences"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str().map(String::from))
            .collect();
        if wanted.is_empty() {
            wanted.push(API_SERVER_AUDIENCE.to_string());
        }
        let issued = self.lock().tokens.get(&token).cloned();
        let verdict = match issued {
            None => Err(
                "[invalid bearer token, square/go-jose: error in cryptographic primitive]"
                    .to_string(),
            ),
            Some(t) => {
                let common: Vec<String> = wanted
                    .iter()
                    .filter(|a| t.audiences.contains(a))
                    .cloned()
                    .collect();
                if common.is_empty() {
                    Err(format!(
                        "[invalid bearer token, token audiences {:?} is invalid for the target audiences {:?}]",
                        t.audiences, wanted
                    ))
                } else {
                    Ok((t, common))
                }
            }
        };
        self.lock().reviews.push((token, verdict.is_ok()));
        review["status"] = match verdict {
            Ok((t, audiences)) => json!({
                "authenticated": true,
                "user": {
                    "username": format!("system:serviceaccount:{}:{}", t.namespace, t.service_account),
                    "uid": format!("uid-sa-{}-{}", t.namespace, t.service_account),
                    "groups": [
                        "system:serviceaccounts",
                        format!("system:serviceaccounts:{}", t.namespace),
                        "system:authenticated"
                    ],
                    "extra": {
                        "authentication.kubernetes.io/pod-name": [t.pod],
                        "authentication.kubernetes.io/pod-uid": [format!("uid-pod-{}-{}", t.namespace, t.pod)]
                    }
                },
                "audiences": audiences
            }),
            Err(error) => json!({ "user": {}, "error": error }),
        };
        review["metadata"] = json!({ "creationTimestamp": null });
        json_response(StatusCode::CREATED, review.to_string())
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// Every request so far, as `path?query`.
    pub fn requests(&self) -> Vec<String> {
        self.lock().requests.clone()
    }

    /// Requests for paths the server does not know.
    pub fn unknown_paths(&self) -> Vec<String> {
        self.lock().unknown.clone()
    }

    /// The stored object, if any (as the server holds it, with `apiVersion` and `kind`).
    pub fn get(&self, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let collection = collections().into_iter().find(|c| c.kind == kind)?;
        let namespace = if collection.namespaced { namespace } else { "" };
        self.lock()
            .objects
            .get(&(kind.to_string(), namespace.to_string(), name.to_string()))
            .cloned()
    }

    /// Every stored object of `kind`, by (namespace, name).
    pub fn objects(&self, kind: &str) -> BTreeMap<(String, String), Value> {
        self.lock()
            .objects
            .iter()
            .filter(|((k, _, _), _)| k == kind)
            .map(|((_, ns, name), v)| ((ns.clone(), name.clone()), v.clone()))
            .collect()
    }

    /// The current resource version.
    pub fn resource_version(&self) -> u64 {
        self.lock().rv
    }

    /// Creates or replaces an object (sends `ADDED` or `MODIFIED`); returns its resource
    /// version. The server sets `resourceVersion`, `uid`, `creationTimestamp` and adds
    /// `managedFields`, as the real one does.
    pub fn apply(&self, object: Value) -> u64 {
        self.change(object, true)
    }

    /// Creates or replaces an object without telling any watch (the event is lost, as if
    /// compacted away): only a re-list shows it.
    pub fn apply_silently(&self, object: Value) -> u64 {
        self.change(object, false)
    }

    fn change(&self, mut object: Value, notify: bool) -> u64 {
        let mut inner = self.lock();
        inner.rv += 1;
        inner.uid += 1;
        let rv = inner.rv;
        let uid = inner.uid;
        let kind = object["kind"].as_str().unwrap_or_default().to_string();
        let Some(collection) = collections().into_iter().find(|c| c.kind == kind) else {
            panic!("the fake API server does not serve {kind}");
        };
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let namespace = if collection.namespaced {
            object["metadata"]["namespace"]
                .as_str()
                .unwrap_or("default")
                .to_string()
        } else {
            String::new()
        };
        let key = (kind.clone(), namespace.clone(), name);
        let existed = inner.objects.get(&key).cloned();
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.insert("resourceVersion".into(), rv.to_string().into());
            let uid = existed
                .as_ref()
                .and_then(|o| o["metadata"]["uid"].as_str().map(str::to_string))
                .unwrap_or_else(|| format!("00000000-0000-0000-0000-{uid:012}"));
            meta.insert("uid".into(), uid.into());
            meta.insert("creationTimestamp".into(), "2026-01-01T00:00:00Z".into());
            if collection.namespaced {
                meta.insert("namespace".into(), namespace.into());
            }
            meta.insert(
                "managedFields".into(),
                json!([{"manager": "kubectl", "operation": "Update", "apiVersion": collection.api_version,
                        "fieldsType": "FieldsV1", "fieldsV1": {"f:metadata": {}}}]),
            );
        }
        // Stored at the version it was written at, if served; else the first one served.
        let served = inner.served(&collection);
        let written = object["apiVersion"].as_str().unwrap_or_default();
        let stored = (served.iter())
            .map(|v| collection.api_version_at(v))
            .find(|v| v == written)
            .or_else(|| served.first().map(|v| collection.api_version_at(v)))
            .unwrap_or_else(|| collection.api_version.to_string());
        if let Some(map) = object.as_object_mut() {
            map.insert("apiVersion".into(), stored.into());
        }
        inner.objects.insert(key, object.clone());
        if notify {
            let kind = if existed.is_some() {
                "MODIFIED"
            } else {
                "ADDED"
            };
            self.emit(&mut inner, collection.kind, rv, kind, object);
        } else {
            inner.compacted = rv;
        }
        rv
    }

    /// Deletes an object (sends `DELETED`); returns whether it existed.
    pub fn delete(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.remove(kind, namespace, name, true)
    }

    /// Deletes an object without telling any watch.
    pub fn delete_silently(&self, kind: &str, namespace: &str, name: &str) -> bool {
        self.remove(kind, namespace, name, false)
    }

    fn remove(&self, kind: &str, namespace: &str, name: &str, notify: bool) -> bool {
        let mut inner = self.lock();
        let Some(collection) = collections().into_iter().find(|c| c.kind == kind) else {
            return false;
        };
        let namespace = if collection.namespaced { namespace } else { "" };
        let key = (kind.to_string(), namespace.to_string(), name.to_string());
        let Some(mut object) = inner.objects.remove(&key) else {
            return false;
        };
        inner.rv += 1;
        let rv = inner.rv;
        object["metadata"]["resourceVersion"] = rv.to_string().into();
        if notify {
            self.emit(&mut inner, collection.kind, rv, "DELETED", object);
        } else {
            inner.compacted = rv;
        }
        true
    }

    fn emit(
        &self,
        inner: &mut Inner,
        kind: &'static str,
        rv: u64,
        event: &'static str,
        object: Value,
    ) {
        let object = Arc::new(object);
        inner.events.push(Logged {
            kind,
            rv,
            event,
            object: object.clone(),
        });
        let _ = self.signals.send(Signal::Event {
            kind,
            rv,
            event,
            object,
        });
    }

    /// Sends a `BOOKMARK` at the current resource version on every open watch that asked
    /// for bookmarks; returns that version.
    pub fn bookmark(&self) -> u64 {
        let rv = self.lock().rv;
        let _ = self.signals.send(Signal::Bookmark(rv));
        rv
    }

    /// Ends every open watch with an `ERROR` event of code 410 and compacts the history, so
    /// clients must re-list.
    pub fn expire(&self) {
        let mut inner = self.lock();
        inner.compacted = inner.rv;
        inner.events.clear();
        let _ = self.signals.send(Signal::Expire);
    }

    /// Ends every open watch cleanly (as `timeoutSeconds` does); clients resume from the
    /// last resource version they saw.
    pub fn close_watches(&self) {
        let _ = self.signals.send(Signal::Close);
    }

    /// The discovery documents as served now: `(group, versions highest priority first,
    /// the collections served at each version)`, core group first, then the others in the
    /// order of [`collections`]; groups that serve nothing are left out.
    fn served_groups(&self) -> Vec<(&'static str, Versions)> {
        let inner = self.lock();
        let mut groups: Vec<(&'static str, Versions)> = Vec::new();
        for c in collections() {
            let served = inner.served(&c);
            let index = match groups.iter().position(|(g, _)| *g == c.group()) {
                Some(i) => i,
                None => {
                    groups.push((c.group(), Vec::new()));
                    groups.len() - 1
                }
            };
            let versions = &mut groups[index].1;
            for version in served {
                match versions.iter_mut().find(|(v, _)| *v == version) {
                    Some((_, members)) => members.push(c.clone()),
                    None => versions.push((version, vec![c.clone()])),
                }
            }
        }
        groups.retain(|(_, versions)| !versions.is_empty());
        for (_, versions) in &mut groups {
            let mut order: Vec<String> = versions.iter().map(|(v, _)| v.clone()).collect();
            by_priority(&mut order);
            versions.sort_by_key(|(v, _)| order.iter().position(|o| o == v));
        }
        groups
    }

    /// Answers a discovery request (`/api`, `/api/v1`, `/apis`, `/apis/<group>`,
    /// `/apis/<group>/<version>`), or `None` for any other path.
    fn discovery(&self, path: &str) -> Option<Response<BoxBody<Bytes, Infallible>>> {
        let path = path.trim_end_matches('/');
        let groups = self.served_groups();
        let group_doc = |name: &str, versions: &[(String, Vec<Collection>)]| {
            let gv = |v: &str| json!({"groupVersion": format!("{name}/{v}"), "version": v});
            json!({
                "name": name,
                "versions": versions.iter().map(|(v, _)| gv(v)).collect::<Vec<_>>(),
                "preferredVersion": versions.first().map(|(v, _)| gv(v)),
            })
        };
        let not_found = || {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            )
        };
        let ok = |body: Value| Some(json_response(StatusCode::OK, body.to_string()));
        match path {
            "/api" => ok(json!({
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.addr.to_string()}
                ],
            })),
            "/apis" => ok(json!({
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": (groups.iter())
                    .filter(|(name, _)| !name.is_empty())
                    .map(|(name, versions)| group_doc(name, versions))
                    .collect::<Vec<_>>(),
            })),
            _ => {
                let (group, version) = if let Some(version) = path.strip_prefix("/api/") {
                    ("", Some(version))
                } else {
                    let rest = path.strip_prefix("/apis/")?;
                    match rest.split_once('/') {
                        Some((group, version)) => (group, Some(version)),
                        None => (rest, None),
                    }
                };
                if version.is_some_and(|v| v.contains('/')) {
                    return None;
                }
                let Some((name, versions)) = groups.iter().find(|(g, _)| *g == group) else {
                    return Some(not_found());
                };
                let Some(version) = version else {
                    let mut doc = group_doc(name, versions);
                    doc["kind"] = "APIGroup".into();
                    doc["apiVersion"] = "v1".into();
                    return ok(doc);
                };
                let Some((_, members)) = versions.iter().find(|(v, _)| v == version) else {
                    return Some(not_found());
                };
                let verbs = json!([
                    "create",
                    "delete",
                    "deletecollection",
                    "get",
                    "list",
                    "patch",
                    "update",
                    "watch"
                ]);
                let mut resources = Vec::new();
                for c in members {
                    resources.push(json!({
                        "name": c.plural, "singularName": c.kind.to_lowercase(),
                        "namespaced": c.namespaced, "kind": c.kind, "verbs": verbs,
                    }));
                    if c.has_status() {
                        resources.push(json!({
                            "name": format!("{}/status", c.plural), "singularName": "",
                            "namespaced": c.namespaced, "kind": c.kind,
                            "verbs": ["get", "patch", "update"],
                        }));
                    }
                }
                let group_version = members
                    .first()
                    .map(|c| c.api_version_at(version))
                    .unwrap_or_default();
                ok(json!({
                    "kind": "APIResourceList",
                    "apiVersion": "v1",
                    "groupVersion": group_version,
                    "resources": resources,
                }))
            }
        }
    }

    async fn serve(&self, req: Request<Incoming>) -> Response<BoxBody<Bytes, Infallible>> {
        let path = req.uri().path().to_string();
        let query: BTreeMap<String, String> = req
            .uri()
            .query()
            .unwrap_or_default()
            .split('&')
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        {
            let mut inner = self.lock();
            let mut logged = match req.uri().query() {
                Some(q) => format!("{path}?{q}"),
                None => path.clone(),
            };
            if req.method() != hyper::Method::GET {
                logged = format!("{} {logged}", req.method());
            }
            inner.requests.push(logged);
        }
        if req.method() == hyper::Method::GET
            && let Some(document) = self.discovery(&path)
        {
            return document;
        }
        if path == "/apis/authentication.k8s.io/v1/tokenreviews" {
            if req.method() != hyper::Method::POST {
                return status(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "MethodNotAllowed",
                    "only POST is served on tokenreviews",
                );
            }
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            return self.review_token(&body);
        }
        let serves = |collection: &Collection, version: &str| {
            self.lock().served(collection).iter().any(|v| v == version)
        };
        if let Some((collection, version, namespace, name)) = route_object(&path)
            && serves(&collection, &version)
        {
            let method = req.method().clone();
            let content_type = req
                .headers()
                .get(hyper::header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string();
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            return self.serve_object(
                (&collection, &version),
                &namespace,
                &name,
                &method,
                &content_type,
                &body,
            );
        }
        let route = route(&path).filter(|(c, version, _)| serves(c, version));
        let Some((collection, version, namespace)) = route else {
            self.lock().unknown.push(path.clone());
            return status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("the server could not find the requested resource ({path})"),
            );
        };
        if req.method() == hyper::Method::POST {
            let body = match req.into_body().collect().await {
                Ok(b) => b.to_bytes(),
                Err(_) => Bytes::new(),
            };
            return self.create(&collection, namespace.as_deref(), &body);
        }
        if req.method() != hyper::Method::GET {
            return status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "only GET and POST are served on collections",
            );
        }
        let watch = matches!(query.get("watch").map(String::as_str), Some("true" | "1"));
        if watch {
            let from = query
                .get("resourceVersion")
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0);
            let bookmarks = query.get("allowWatchBookmarks").map(String::as_str) == Some("true");
            self.watch(collection, version, namespace, from, bookmarks)
        } else {
            self.list(&collection, &version, namespace.as_deref(), &query)
        }
    }

    fn list(
        &self,
        collection: &Collection,
        version: &str,
        namespace: Option<&str>,
        query: &BTreeMap<String, String>,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let decode = |v: &String| {
            v.replace("%3D", "=")
                .replace("%2C", ",")
                .replace("%2F", "/")
        };
        let labels = query.get("labelSelector").map(decode).unwrap_or_default();
        let fields = query.get("fieldSelector").map(decode).unwrap_or_default();
        let inner = self.lock();
        let items: Vec<Value> = inner
            .objects
            .iter()
            .filter(|((kind, ns, _), _)| {
                kind == collection.kind && namespace.is_none_or(|n| n == ns)
            })
            .filter(|(_, object)| selects(&labels, &object["metadata"]["labels"]))
            .filter(|((_, _, name), _)| {
                fields
                    .strip_prefix("metadata.name=")
                    .is_none_or(|wanted| wanted == name)
            })
            .map(|(_, object)| {
                let mut item = served_as(collection, version, object);
                if !collection.custom
                    && let Some(map) = item.as_object_mut()
                {
                    map.remove("apiVersion");
                    map.remove("kind");
                }
                item
            })
            .collect();
        let body = json!({
            "kind": format!("{}List", collection.kind),
            "apiVersion": collection.api_version_at(version),
            "metadata": {"resourceVersion": inner.rv.to_string()},
            "items": items,
        });
        json_response(StatusCode::OK, body.to_string())
    }

    /// `POST <collection>`: creates, or `409 AlreadyExists`.
    fn create(
        &self,
        collection: &Collection,
        namespace: Option<&str>,
        body: &[u8],
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let Ok(mut object) = serde_json::from_slice::<Value>(body) else {
            return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
        };
        object["kind"] = collection.kind.into();
        if let Some(ns) = namespace {
            object["metadata"]["namespace"] = ns.into();
        }
        let name = object["metadata"]["name"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        if self
            .get(collection.kind, namespace.unwrap_or_default(), &name)
            .is_some()
        {
            return status(
                StatusCode::CONFLICT,
                "AlreadyExists",
                &format!("{} \"{name}\" already exists", collection.plural),
            );
        }
        if let Some(meta) = object["metadata"].as_object_mut() {
            meta.remove("resourceVersion");
        }
        self.apply(object);
        let stored = self
            .get(collection.kind, namespace.unwrap_or_default(), &name)
            .unwrap_or_default();
        json_response(StatusCode::CREATED, stored.to_string())
    }

    /// `GET`, `PUT`, `PATCH` and `DELETE` on one object of `collection`, read at `version`.
    fn serve_object(
        &self,
        (collection, version): (&Collection, &str),
        namespace: &str,
        name: &str,
        method: &hyper::Method,
        content_type: &str,
        body: &[u8],
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let not_found = || {
            status(
                StatusCode::NOT_FOUND,
                "NotFound",
                &format!("{} \"{name}\" not found", collection.plural),
            )
        };
        let existing = self.get(collection.kind, namespace, name);
        let input = || serde_json::from_slice::<Value>(body).ok();
        let stored = |api: &FakeApi| {
            api.get(collection.kind, namespace, name)
                .map(|o| {
                    let o = served_as(collection, version, &o);
                    json_response(StatusCode::OK, o.to_string())
                })
                .unwrap_or_else(not_found)
        };
        let with_identity = |mut object: Value| {
            object["kind"] = collection.kind.into();
            object["metadata"]["name"] = name.into();
            if collection.namespaced {
                object["metadata"]["namespace"] = namespace.into();
            }
            object
        };
        match *method {
            hyper::Method::GET => stored(self),
            hyper::Method::DELETE => {
                if self.delete(collection.kind, namespace, name) {
                    json_response(
                        StatusCode::OK,
                        json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
                            .to_string(),
                    )
                } else {
                    not_found()
                }
            }
            hyper::Method::PUT => {
                let Some(existing) = existing else {
                    return not_found();
                };
                let Some(object) = input() else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                if let Some(rv) = object["metadata"]["resourceVersion"].as_str()
                    && Some(rv) != existing["metadata"]["resourceVersion"].as_str()
                {
                    return conflict(collection, name);
                }
                self.apply(with_identity(object));
                stored(self)
            }
            hyper::Method::PATCH => {
                let Some(patch) = input() else {
                    return status(StatusCode::BAD_REQUEST, "BadRequest", "body is not JSON");
                };
                let apply = content_type.starts_with("application/apply-patch");
                let Some(mut object) = existing
                    .clone()
                    .or_else(|| apply.then(|| json!({"metadata": {}})))
                else {
                    return not_found();
                };
                let expected_rv = patch["metadata"]["resourceVersion"]
                    .as_str()
                    .map(str::to_string);
                if let (Some(rv), Some(existing)) = (&expected_rv, &existing)
                    && Some(rv.as_str()) != existing["metadata"]["resourceVersion"].as_str()
                {
                    return conflict(collection, name);
                }
                if content_type.starts_with("application/json-patch") {
                    let Ok(ops) = serde_json::from_value::<json_patch::Patch>(patch) else {
                        return status(StatusCode::BAD_REQUEST, "BadRequest", "not a JSON patch");
                    };
                    if let Err(e) = json_patch::patch(&mut object, &ops) {
                        return status(StatusCode::UNPROCESSABLE_ENTITY, "Invalid", &e.to_string());
                    }
                } else if content_type.starts_with("application/strategic-merge-patch") || apply {
                    // Server-side apply keeps other managers' fields; for the objects Ferry
                    // applies (lists keyed by name) a strategic merge does the same.
                    strategic_merge(&mut object, patch);
                } else {
                    json_patch::merge(&mut object, &patch);
                }
                if let Some(meta) = object["metadata"].as_object_mut() {
                    meta.remove("resourceVersion");
                }
                self.apply(with_identity(object));
                stored(self)
            }
            _ => status(
                StatusCode::METHOD_NOT_ALLOWED,
                "MethodNotAllowed",
                "method not served",
            ),
        }
    }

    fn watch(
        &self,
        collection: Collection,
        version: String,
        namespace: Option<String>,
        from: u64,
        bookmarks: bool,
    ) -> Response<BoxBody<Bytes, Infallible>> {
        let (tx, rx) = mpsc::channel::<Bytes>(1024);
        let mut signals = self.signals.subscribe();
        let inner = self.lock();
        let expired = from != 0 && from < inner.compacted;
        let replay: Vec<Logged> = inner
            .events
            .iter()
            .filter(|e| e.kind == collection.kind && e.rv > from)
            .cloned()
            .collect();
        drop(inner);
        let in_namespace = move |object: &Value| match &namespace {
            None => true,
            Some(ns) => object["metadata"]["namespace"].as_str() == Some(ns),
        };
        let api_version = collection.api_version_at(&version);
        let line = {
            let (collection, version) = (collection.clone(), version.clone());
            move |event: &str, object: &Value| {
                let object = served_as(&collection, &version, object);
                let mut line = json!({"type": event, "object": object}).to_string();
                line.push('\n');
                Bytes::from(line)
            }
        };
        tokio::spawn(async move {
            if expired {
                let _ = tx.send(gone_event(from)).await;
                return;
            }
            let mut sent = from;
            for e in replay {
                if in_namespace(&e.object) && tx.send(line(e.event, &e.object)).await.is_err() {
                    return;
                }
                sent = sent.max(e.rv);
            }
            loop {
                match signals.recv().await {
                    Ok(Signal::Event {
                        kind,
                        rv,
                        event,
                        object,
                    }) => {
                        if kind != collection.kind || rv <= sent || !in_namespace(&object) {
                            continue;
                        }
                        sent = rv;
                        if tx.send(line(event, &object)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Signal::Bookmark(rv)) => {
                        if !bookmarks {
                            continue;
                        }
                        let mut line = json!({"type": "BOOKMARK", "object": {
                            "kind": collection.kind, "apiVersion": api_version,
                            "metadata": {"resourceVersion": rv.to_string()}}})
                        .to_string();
                        line.push('\n');
                        if tx.send(Bytes::from(line)).await.is_err() {
                            return;
                        }
                    }
                    Ok(Signal::Expire) => {
                        let _ = tx.send(gone_event(sent)).await;
                        return;
                    }
                    Ok(Signal::CloseKind(kind)) if kind == collection.kind => return,
                    Ok(Signal::CloseKind(_)) => {}
                    Ok(Signal::Close) | Err(broadcast::error::RecvError::Closed) => return,
                    Err(broadcast::error::RecvError::Lagged(_)) => {
                        let _ = tx.send(gone_event(sent)).await;
                        return;
                    }
                }
            }
        });
        let body =
            StreamBody::new(ReceiverStream::new(rx).map(|b| Ok::<_, Infallible>(Frame::data(b))));
        let mut response = Response::new(BodyExt::boxed(body));
        response.headers_mut().insert(
            hyper::header::CONTENT_TYPE,
            hyper::header::HeaderValue::from_static("application/json"),
        );
        response
    }
}

/// The `ERROR` event the real API server sends for a resource version that is too old.
fn gone_event(rv: u64) -> Bytes {
    let mut line = json!({"type": "ERROR", "object": {
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {rv}"), "reason": "Expired", "code": 410}})
    .to_string();
    line.push('\n');
    Bytes::from(line)
}

/// The group, version and the rest of a resource path (`/api/v1/<rest>`,
/// `/apis/<group>/<version>/<rest>`).
fn split_path(path: &str) -> Option<(&str, &str, &str)> {
    if let Some(rest) = path.strip_prefix("/api/") {
        let (version, rest) = rest.split_once('/')?;
        return Some(("", version, rest));
    }
    let (group, rest) = path.strip_prefix("/apis/")?.split_once('/')?;
    let (version, rest) = rest.split_once('/')?;
    Some((group, version, rest))
}

/// The collection, the version asked for and the namespace a path names.
fn route(path: &str) -> Option<(Collection, String, Option<String>)> {
    let (group, version, rest) = split_path(path)?;
    collections().into_iter().find_map(|c| {
        if c.group() != group {
            return None;
        }
        if rest == c.plural {
            return Some((c, version.to_string(), None));
        }
        let rest = rest.strip_prefix("namespaces/")?;
        let (ns, plural) = rest.split_once('/')?;
        (c.namespaced && plural == c.plural).then(|| (c, version.to_string(), Some(ns.to_string())))
    })
}

/// The collection, version, namespace (empty for cluster objects) and name a single-object
/// path names.
fn route_object(path: &str) -> Option<(Collection, String, String, String)> {
    let (group, version, rest) = split_path(path)?;
    let version = version.to_string();
    collections().into_iter().find_map(|c| {
        if c.group() != group {
            return None;
        }
        if c.namespaced {
            let rest = rest.strip_prefix("namespaces/")?;
            let (ns, rest) = rest.split_once('/')?;
            let name = rest.strip_prefix(c.plural)?.strip_prefix('/')?;
            (!name.is_empty() && !name.contains('/'))
                .then(|| (c, version.clone(), ns.to_string(), name.to_string()))
        } else {
            let name = rest.strip_prefix(c.plural)?.strip_prefix('/')?;
            (!name.is_empty() && !name.contains('/'))
                .then(|| (c, version.clone(), String::new(), name.to_string()))
        }
    })
}

/// An object as read at `version`: a custom resource carries that `apiVersion` (its CRD
/// converts with strategy `None`), a built-in one is unchanged.
fn served_as(collection: &Collection, version: &str, object: &Value) -> Value {
    let mut object = object.clone();
    if collection.custom
        && let Some(map) = object.as_object_mut()
    {
        map.insert(
            "apiVersion".into(),
            collection.api_version_at(version).into(),
        );
    }
    object
}

/// The collection named `kind`; panics on a kind the server does not know (a test bug).
fn known(kind: &str) -> Collection {
    match collections().into_iter().find(|c| c.kind == kind) {
        Some(c) => c,
        None => panic!("the fake API server does not serve {kind}"),
    }
}

/// Whether a `labelSelector` of `k=v` and `k` terms (comma-separated) selects `labels`.
fn selects(selector: &str, labels: &Value) -> bool {
    selector
        .split(',')
        .filter(|t| !t.is_empty())
        .all(|term| match term.split_once('=') {
            Some((k, v)) => labels[k].as_str() == Some(v),
            None => labels.get(term).is_some(),
        })
}

/// A strategic merge patch as the API server applies it for the lists Ferry patches: maps
/// merge, `null` deletes, lists of objects with `name` merge by name, other lists replace.
fn strategic_merge(target: &mut Value, patch: Value) {
    match (target, patch) {
        (Value::Object(t), Value::Object(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(&k);
                } else if let Some(existing) = t.get_mut(&k) {
                    strategic_merge(existing, v);
                } else {
                    t.insert(k, v);
                }
            }
        }
        (Value::Array(t), Value::Array(p))
            if p.iter().all(|i| i.get("name").is_some())
                && t.iter().all(|i| i.get("name").is_some()) =>
        {
            for item in p {
                match t.iter_mut().find(|e| e["name"] == item["name"]) {
                    Some(existing) => strategic_merge(existing, item),
                    None => t.push(item),
                }
            }
        }
        (t, p) => *t = p,
    }
}

fn conflict(collection: &Collection, name: &str) -> Response<BoxBody<Bytes, Infallible>> {
    status(
        StatusCode::CONFLICT,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
            collection.plural
        ),
    )
}

fn json_response(code: StatusCode, body: String) -> Response<BoxBody<Bytes, Infallible>> {
    let mut response = Response::new(BodyExt::boxed(Full::new(Bytes::from(body))));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: StatusCode, reason: &str, message: &str) -> Response<BoxBody<Bytes, Infallible>> {
    let body = json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                      "message": message, "reason": reason, "code": code.as_u16()});
    json_response(code, body.to_string())
}
