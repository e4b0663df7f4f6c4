//! The manifest-directory source end to end: the seed example as a registry, injection by
//! namespace label and pod opt-out, scaling, invalid edits and broken files keeping the last
//! valid versions, a watched directory picking up changes, and errors reading the directory
//! counted (`ferry_control_files_read_errors`) while what was read stays.

#[path = "support/plane.rs"]
mod test_plane;

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ferry_control::registry::Registry;
use ferry_control::source::{
    FileSource, FilesMetrics, Loaded, WatchOptions, watch_counted, watch_with,
};
use ferry_control::store::{Kind, ObjectKey, Store};

fn example_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/redis-statefulset")
}

fn fixture(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/mesh")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A temp directory holding a copy of the seed example.
fn example_copy() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    for name in ["namespace.yaml", "redis.yaml", "client.yaml"] {
        std::fs::copy(example_dir().join(name), dir.path().join(name)).expect("copy example");
    }
    dir
}

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::write(dir.join(name), text).expect("write");
}

/// Loads `dir` into `store`, gives pods addresses from 198.18.0.0/16, returns the registry.
fn reload(store: &mut Store, dir: &Path) -> (Loaded, Registry) {
    let loaded = FileSource::load(dir);
    store.apply(loaded.update.clone());
    let used: std::collections::BTreeSet<IpAddr> = store.assigned_ips().values().copied().collect();
    let mut free = (1u32..)
        .map(|n| IpAddr::V4(Ipv4Addr::from(u32::from(Ipv4Addr::new(198, 18, 0, 0)) + n)))
        .filter(move |ip| !used.contains(ip));
    store.assign_ips(|_| free.next());
    (loaded, store.registry("cluster.local", "istio-system"))
}

fn pod_names(registry: &Registry) -> Vec<String> {
    registry.pods.iter().map(|p| p.name.clone()).collect()
}

fn redis_pods(registry: &Registry) -> Vec<String> {
    pod_names(registry)
        .into_iter()
        .filter(|n| n.starts_with("redis-"))
        .collect()
}

#[test]
fn seed_example_is_a_complete_mesh() {
    let mut store = Store::default();
    let (loaded, registry) = reload(&mut store, &example_dir());
    assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);

    let redis = registry
        .services
        .iter()
        .find(|s| s.name == "redis")
        .expect("service redis");
    assert_eq!(redis.fqdn, "redis.default.svc.cluster.local");
    assert_eq!(redis.cluster_ip, None, "headless");
    assert_eq!(redis.ports.len(), 1);
    assert_eq!(
        (
            redis.ports[0].name.as_str(),
            redis.ports[0].port,
            redis.ports[0].target_port
        ),
        ("tcp-redis", 6379, 6379)
    );
    let endpoints: Vec<_> = redis.endpoints.iter().map(|e| e.pod.as_str()).collect();
    assert_eq!(endpoints, ["redis-0", "redis-1", "redis-2"]);
    let hostnames: Vec<_> = redis
        .endpoints
        .iter()
        .map(|e| e.hostname.as_deref().unwrap_or_default())
        .collect();
    assert_eq!(
        hostnames,
        [
            "redis-0.redis.default.svc.cluster.local",
            "redis-1.redis.default.svc.cluster.local",
            "redis-2.redis.default.svc.cluster.local"
        ]
    );
    assert!(redis.endpoints.iter().all(|e| e.has_sidecar && e.ready));
    assert!(redis.endpoints.iter().all(|e| e.workload == "redis"));

    let client = registry
        .pods
        .iter()
        .find(|p| p.workload == "client")
        .expect("client pod");
    assert_eq!(client.workload_kind, "Deployment");
    assert!(client.name.starts_with("client-"));
    assert!(client.labels.contains_key("pod-template-hash"));
    assert!(client.has_sidecar);
    assert!(client.ip.is_some());
    assert_eq!(
        registry.namespaces["default"]
            .get("istio-injection")
            .map(String::as_str),
        Some("enabled")
    );
    let redis0 = registry
        .pods
        .iter()
        .find(|p| p.name == "redis-0")
        .expect("redis-0");
    assert_eq!(redis0.hostname.as_deref(), Some("redis-0"));
    assert_eq!(redis0.subdomain.as_deref(), Some("redis"));
    // The injected pod carries Ferry's sidecar.
    let pods = store.pods();
    let injected = pods
        .iter()
        .find(|p| p.entry.name == "redis-0")
        .expect("pod");
    assert!(injected.pod.to_string().contains("ferry-proxy"));
}

#[test]
fn injection_follows_the_namespace_label_and_pod_opt_out() {
    let dir = example_copy();
    let redis = std::fs::read_to_string(dir.path().join("redis.yaml")).expect("read");
    let opted_out = redis.replace(
        "      labels:\n        app: redis\n",
        "      labels:\n        app: redis\n        sidecar.istio.io/inject: \"false\"\n",
    );
    assert_ne!(redis, opted_out);
    write(dir.path(), "redis.yaml", &opted_out);
    let mut store = Store::default();
    let (_, registry) = reload(&mut store, dir.path());
    for pod in &registry.pods {
        assert_eq!(pod.has_sidecar, pod.workload == "client", "{}", pod.name);
    }
    let svc = registry
        .services
        .iter()
        .find(|s| s.name == "redis")
        .expect("svc");
    assert!(svc.endpoints.iter().all(|e| !e.has_sidecar));

    // Without the Namespace manifest, the namespace has no labels: nobody is injected.
    std::fs::remove_file(dir.path().join("namespace.yaml")).expect("rm");
    let (_, registry) = reload(&mut store, dir.path());
    assert!(registry.pods.iter().all(|p| !p.has_sidecar));
    assert_eq!(registry.pods.len(), 4);
}

#[test]
fn scaling_changes_the_pods() {
    let dir = example_copy();
    let redis = std::fs::read_to_string(dir.path().join("redis.yaml")).expect("read");
    let mut store = Store::default();
    let (_, registry) = reload(&mut store, dir.path());
    assert_eq!(redis_pods(&registry), ["redis-0", "redis-1", "redis-2"]);
    let mut generation = store.generation();
    for (replicas, expected) in [
        (
            5,
            vec!["redis-0", "redis-1", "redis-2", "redis-3", "redis-4"],
        ),
        (2, vec!["redis-0", "redis-1"]),
    ] {
        let scaled = redis.replace("replicas: 3", &format!("replicas: {replicas}"));
        write(dir.path(), "redis.yaml", &scaled);
        let (_, registry) = reload(&mut store, dir.path());
        assert_eq!(redis_pods(&registry), expected);
        let svc = registry
            .services
            .iter()
            .find(|s| s.name == "redis")
            .expect("svc");
        let endpoints: Vec<_> = svc.endpoints.iter().map(|e| e.pod.as_str()).collect();
        assert_eq!(endpoints, expected);
        assert!(store.generation() > generation);
        generation = store.generation();
    }
    // Reloading unchanged files is not a change.
    reload(&mut store, dir.path());
    assert_eq!(store.generation(), generation);
}

#[test]
fn invalid_edit_keeps_the_previous_virtual_service() {
    let dir = example_copy();
    write(dir.path(), "vs.yaml", &fixture("redis-virtualservice.yaml"));
    let mut store = Store::default();
    let (loaded, before) = reload(&mut store, dir.path());
    assert_eq!(loaded.errors().count(), 0, "{:?}", loaded.diagnostics);
    assert_eq!(before.policies.virtual_services.len(), 1);
    let generation = store.generation();

    write(
        dir.path(),
        "vs.yaml",
        &fixture("redis-virtualservice-invalid.yaml"),
    );
    // Unrelated edits in the same update still apply.
    let client = std::fs::read_to_string(dir.path().join("client.yaml")).expect("read");
    write(
        dir.path(),
        "client.yaml",
        &client.replace("replicas: 1", "replicas: 2"),
    );
    let (loaded, after) = reload(&mut store, dir.path());
    assert_eq!(
        after.policies.virtual_services,
        before.policies.virtual_services
    );
    assert_eq!(
        after.pods.iter().filter(|p| p.workload == "client").count(),
        2
    );
    assert!(store.generation() > generation);

    let rejections: Vec<_> = store.rejections().collect();
    assert!(!rejections.is_empty());
    let r = rejections[0];
    assert_eq!(
        r.key,
        Some(ObjectKey::new(Kind::VirtualService, "default", "redis"))
    );
    assert!(r.diagnostic.source.ends_with("vs.yaml"));
    assert!(r.diagnostic.line > 0);
    assert_eq!(r.diagnostic.resource, "VirtualService/default/redis");
    assert!(r.diagnostic.field.contains("weight"), "{r}");
    // The same text `ferry validate` prints.
    assert!(loaded.errors().any(|d| d.to_string() == r.to_string()));

    // Fixing it applies the fix and clears the rejection; deleting it removes it.
    write(
        dir.path(),
        "vs.yaml",
        &fixture("redis-virtualservice.yaml").replace("redis-0.redis", "redis-1.redis"),
    );
    let (_, fixed) = reload(&mut store, dir.path());
    assert_ne!(
        fixed.policies.virtual_services,
        before.policies.virtual_services
    );
    assert_eq!(store.rejections().count(), 0);
    std::fs::remove_file(dir.path().join("vs.yaml")).expect("rm");
    let (_, gone) = reload(&mut store, dir.path());
    assert!(gone.policies.virtual_services.is_empty());
}

#[test]
fn a_broken_file_affects_only_its_own_resources() {
    let dir = example_copy();
    write(dir.path(), "vs.yaml", &fixture("redis-virtualservice.yaml"));
    let mut store = Store::default();
    let (_, before) = reload(&mut store, dir.path());

    // redis.yaml gets a syntax error; the VirtualService changes in another file.
    write(
        dir.path(),
        "redis.yaml",
        "apiVersion: v1\nkind: [Service\n  oops: {\n",
    );
    write(
        dir.path(),
        "vs.yaml",
        &fixture("redis-virtualservice.yaml").replace("redis-0.redis", "redis-2.redis"),
    );
    write(dir.path(), "new-broken.yml", "metadata: {name: x\n");
    let (loaded, after) = reload(&mut store, dir.path());
    let broken: Vec<_> = loaded.update.broken_origins.iter().collect();
    assert_eq!(broken.len(), 2, "{broken:?}");
    assert_eq!(redis_pods(&after), ["redis-0", "redis-1", "redis-2"]);
    assert_eq!(after.services, before.services);
    assert_ne!(
        after.policies.virtual_services,
        before.policies.virtual_services
    );
    let messages: Vec<String> = store.rejections().map(ToString::to_string).collect();
    assert!(
        messages.iter().any(|m| m.contains("redis.yaml:")),
        "{messages:?}"
    );
}

/// Waits (bounded) until the watcher has delivered an update after which `check` holds.
async fn wait_for(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Loaded>,
    store: &mut Store,
    what: &str,
    check: impl Fn(&Store) -> bool,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check(store) {
        match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Some(loaded)) => {
                store.apply(loaded.update);
            }
            _ => panic!("timed out waiting for: {what}"),
        }
    }
}

fn namespace_label(store: &Store, ns: &str) -> Option<String> {
    let value = store
        .get(&ObjectKey::new(Kind::Namespace, "", ns))?
        .as_value()?;
    value["metadata"]["labels"]["team"]
        .as_str()
        .map(str::to_string)
}

fn namespace_yaml(name: &str, team: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels:\n    team: {team}\n"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_follows_changes() {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = dir.path().to_path_buf();
    std::fs::create_dir(root.join("sub")).expect("mkdir");
    write(&root, "a.yaml", &namespace_yaml("a", "one"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = WatchOptions {
        poll: Duration::from_millis(50),
        debounce: Duration::from_millis(50),
        max_settle: Duration::from_secs(1),
    };
    let watcher = tokio::spawn(watch_with(root.clone(), options, move |loaded| {
        let _ = tx.send(loaded);
    }));
    let mut store = Store::default();
    wait_for(&mut rx, &mut store, "initial load", |s| {
        namespace_label(s, "a").as_deref() == Some("one")
    })
    .await;

    // Create, in a subdirectory.
    write(&root.join("sub"), "b.yml", &namespace_yaml("b", "two"));
    wait_for(&mut rx, &mut store, "create", |s| {
        namespace_label(s, "b").as_deref() == Some("two")
    })
    .await;

    // Edit in place.
    write(&root, "a.yaml", &namespace_yaml("a", "edited"));
    wait_for(&mut rx, &mut store, "edit", |s| {
        namespace_label(s, "a").as_deref() == Some("edited")
    })
    .await;

    // An editor writing a hidden temp file and renaming it over the original.
    write(&root, ".a.yaml.tmp", &namespace_yaml("a", "renamed-over"));
    std::fs::rename(root.join(".a.yaml.tmp"), root.join("a.yaml")).expect("rename");
    wait_for(&mut rx, &mut store, "temp file renamed over", |s| {
        namespace_label(s, "a").as_deref() == Some("renamed-over")
    })
    .await;

    // Rename to a name that is not a manifest: the resource goes away; and back.
    std::fs::rename(root.join("a.yaml"), root.join("a.yaml.bak")).expect("rename");
    wait_for(&mut rx, &mut store, "rename away", |s| {
        namespace_label(s, "a").is_none()
    })
    .await;
    std::fs::rename(root.join("a.yaml.bak"), root.join("c.json")).expect("rename");
    write(
        &root,
        "c.json",
        r#"{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "a", "labels": {"team": "json"}}}"#,
    );
    wait_for(&mut rx, &mut store, "rename back as JSON", |s| {
        namespace_label(s, "a").as_deref() == Some("json")
    })
    .await;

    // A syntax error keeps the last valid version; delete removes.
    write(&root.join("sub"), "b.yml", "kind: [\n");
    wait_for(&mut rx, &mut store, "broken file rejected", |s| {
        s.rejections().count() > 0
    })
    .await;
    assert_eq!(namespace_label(&store, "b").as_deref(), Some("two"));
    std::fs::remove_file(root.join("sub/b.yml")).expect("rm");
    wait_for(&mut rx, &mut store, "delete", |s| {
        namespace_label(s, "b").is_none()
    })
    .await;
    watcher.abort();
}

#[test]
fn services_without_cluster_ip_get_stable_vips_and_garbage_never_panics() {
    let dir = example_copy();
    let svc = |name: &str| {
        format!(
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector:\n    app: client\n  ports:\n  - name: http\n    port: 80\n    targetPort: 8080\n"
        )
    };
    write(dir.path(), "web.yaml", &svc("web"));
    write(
        dir.path(),
        "fixed.yaml",
        &svc("fixed").replace("spec:\n", "spec:\n  clusterIP: 10.96.0.9\n"),
    );
    // Garbage of every sort: not UTF-8, not a mapping, no kind, a List of junk.
    std::fs::write(dir.path().join("binary.yaml"), [0xff, 0xfe, 0x00, 0x01]).expect("write");
    write(dir.path(), "scalar.yaml", "42\n---\n- a\n- b\n");
    write(dir.path(), "nokind.json", r#"{"metadata": {"name": "x"}}"#);
    write(
        dir.path(),
        "list.yaml",
        "apiVersion: v1\nkind: List\nitems: [1, {kind: Pod}]\n",
    );
    let mut store = Store::default();
    let (loaded, registry) = reload(&mut store, dir.path());
    assert!(loaded.errors().count() >= 4, "{:?}", loaded.diagnostics);
    let web = registry
        .services
        .iter()
        .find(|s| s.name == "web")
        .expect("web");
    assert_eq!(web.cluster_ip, Some(IpAddr::from([198, 19, 0, 1])));
    assert_eq!(web.ports[0].target_port, 8080);
    assert_eq!(web.endpoints.len(), 1);
    assert!(web.endpoints[0].hostname.is_none());
    let fixed = registry
        .services
        .iter()
        .find(|s| s.name == "fixed")
        .expect("fixed");
    assert_eq!(fixed.cluster_ip, Some(IpAddr::from([10, 96, 0, 9])));

    // A service sorting before `web` does not take its address.
    write(dir.path(), "api.yaml", &svc("api"));
    let (_, registry) = reload(&mut store, dir.path());
    let ip = |name: &str| {
        registry
            .services
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.cluster_ip)
    };
    assert_eq!(ip("web"), Some(IpAddr::from([198, 19, 0, 1])));
    assert_eq!(ip("api"), Some(IpAddr::from([198, 19, 0, 2])));
}

/// Waits for an update whose errors include one about `path` containing `message`, applying
/// every update on the way; returns that error's text.
async fn wait_for_error(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<Loaded>,
    store: &mut Store,
    path: &Path,
    message: &str,
) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let Ok(Some(loaded)) = tokio::time::timeout_at(deadline, rx.recv()).await else {
            panic!("timed out waiting for an error about {}", path.display());
        };
        let found = (loaded.errors())
            .find(|d| Path::new(&d.source) == path && d.message.contains(message))
            .map(ToString::to_string);
        store.apply(loaded.update);
        if let Some(error) = found {
            return error;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_reading_the_directory_are_counted_and_keep_what_was_read() {
    let parent = tempfile::tempdir().expect("temp dir");
    let root = parent.path().join("mesh");
    std::fs::create_dir(&root).expect("mkdir");
    write(&root, "a.yaml", &namespace_yaml("a", "one"));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let options = WatchOptions {
        poll: Duration::from_millis(50),
        debounce: Duration::from_millis(50),
        max_settle: Duration::from_secs(1),
    };
    let metrics = FilesMetrics::default();
    let watcher = tokio::spawn(watch_counted(
        root.clone(),
        options,
        metrics.clone(),
        move |loaded| {
            let _ = tx.send(loaded);
        },
    ));
    let mut store = Store::default();
    wait_for(&mut rx, &mut store, "initial load", |s| {
        namespace_label(s, "a").as_deref() == Some("one")
    })
    .await;
    assert_eq!(metrics.read_errors.get(), 0);

    // A symlink to itself cannot be read, whoever runs this (root included).
    let looped = root.join("loop.yaml");
    std::os::unix::fs::symlink(&looped, &looped).expect("symlink");
    let error = wait_for_error(&mut rx, &mut store, &looped, "cannot read").await;
    assert!(error.contains("keep their last valid versions"), "{error}");
    assert_eq!(metrics.read_errors.get(), 1);
    assert_eq!(namespace_label(&store, "a").as_deref(), Some("one"));

    // Another file changes: it goes through; the error is met (and counted) again.
    write(&root, "a.yaml", &namespace_yaml("a", "two"));
    wait_for(&mut rx, &mut store, "the edit beside the error", |s| {
        namespace_label(s, "a").as_deref() == Some("two")
    })
    .await;
    assert_eq!(metrics.read_errors.get(), 2);

    // The directory replaced by a file: nothing can be listed, everything read stays.
    std::fs::remove_dir_all(&root).expect("rm -r");
    std::fs::write(&root, "not a directory").expect("write");
    let error = wait_for_error(&mut rx, &mut store, &root, "cannot list directory").await;
    assert!(error.starts_with(&root.display().to_string()), "{error}");
    assert_eq!(metrics.read_errors.get(), 3);
    assert_eq!(namespace_label(&store, "a").as_deref(), Some("two"));

    // Back to a readable directory: no error, and its content is in force.
    std::fs::remove_file(&root).expect("rm");
    std::fs::create_dir(&root).expect("mkdir");
    write(&root, "a.yaml", &namespace_yaml("a", "three"));
    wait_for(&mut rx, &mut store, "the directory back", |s| {
        namespace_label(s, "a").as_deref() == Some("three")
    })
    .await;
    assert_eq!(metrics.read_errors.get(), 3);
    assert_eq!(store.rejections().count(), 0);
    watcher.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_control_plane_exposes_the_read_errors_of_its_directory() {
    use ferry_control::plane::PlaneOptions;
    use test_plane::{RunningPlane, get};
    let dir = tempfile::tempdir().expect("temp dir");
    write(dir.path(), "a.yaml", &namespace_yaml("a", "one"));
    let looped = dir.path().join("loop.yaml");
    std::os::unix::fs::symlink(&looped, &looped).expect("symlink");
    let options = PlaneOptions {
        config_dir: dir.path().to_path_buf(),
        grpc: "127.0.0.1:0".parse().expect("addr"),
        monitoring: Some("127.0.0.1:0".parse().expect("addr")),
        ..PlaneOptions::default()
    };
    let plane = RunningPlane::start(options).await;
    let base = plane.monitoring_url();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let metrics = loop {
        if let Some((200, text)) = get(&format!("{base}/metrics")).await
            && text.contains("ferry_control_files_read_errors_total 1")
        {
            break text;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no read error counted: {:?}",
            get(&format!("{base}/metrics")).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        !metrics.contains("ferry_control_kube_watch_errors"),
        "{metrics}"
    );
    plane.stop().await;
}
