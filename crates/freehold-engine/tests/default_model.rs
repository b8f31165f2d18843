//! The default model against a real store and an HTTP server on 127.0.0.1:
//! what is installed is used, the recommended model is pulled, and when its
//! sources fail the fallback is pulled instead.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use freehold_engine::default_model::{
    DefaultModelError, FALLBACK_MODEL, How, Purpose, Resolved, Step, resolve,
};
use freehold_engine::hardware::Hardware;
use freehold_engine::store::{Catalog, PullOptions, Store};
use freehold_test_support::FileServer;

/// A directory removed when dropped.
struct TestDir(PathBuf);

impl TestDir {
    fn new() -> Self {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "freehold-default-model-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        Self(dir)
    }
}

impl Drop for TestDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal valid GGUF file: no tensors, an architecture and a context.
fn tiny_gguf() -> Vec<u8> {
    let mut bytes = b"GGUF".to_vec();
    bytes.extend(3u32.to_le_bytes());
    bytes.extend(0u64.to_le_bytes());
    bytes.extend(2u64.to_le_bytes());
    let string = |bytes: &mut Vec<u8>, text: &str| {
        bytes.extend((text.len() as u64).to_le_bytes());
        bytes.extend(text.as_bytes());
    };
    string(&mut bytes, "general.architecture");
    bytes.extend(8u32.to_le_bytes());
    string(&mut bytes, "llama");
    string(&mut bytes, "llama.context_length");
    bytes.extend(4u32.to_le_bytes());
    bytes.extend(4096u32.to_le_bytes());
    bytes
}

/// Serves `body` at `/present.gguf` and 404 everywhere else; records the
/// paths asked for.
async fn server(body: Vec<u8>) -> FileServer {
    FileServer::start(vec![("/present.gguf", body)]).await
}

/// A catalog of a "big" model (which fits a 4 GiB machine and is larger
/// than the fallback, so it is the recommended one) and the fallback.
fn catalog(big_url: &str, fallback_url: &str) -> Catalog {
    Catalog::from_toml(&format!(
        "[[model]]\nname = \"big-coder\"\ndescription = \"d\"\nfile = \"b.gguf\"\nparameters = \"1B\"\n\
         quantization = \"Q4_0\"\ncontext_length = 4096\napprox_size = 1000000\nsources = [\"{big_url}\"]\n\n\
         [[model]]\nname = \"{FALLBACK_MODEL}\"\ndescription = \"d\"\nfile = \"s.gguf\"\nparameters = \"1M\"\n\
         quantization = \"Q4_0\"\ncontext_length = 4096\napprox_size = 100\nsources = [\"{fallback_url}\"]\n"
    ))
    .unwrap()
}

fn machine() -> Hardware {
    Hardware {
        memory_total: 4 << 30,
        memory_available: 4 << 30,
        logical_cores: 2,
        physical_cores: 2,
        cpu_features: vec![],
        gpus: vec![],
    }
}

fn options() -> PullOptions {
    PullOptions {
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(10),
        retries: 0,
        ..PullOptions::default()
    }
}

async fn run(store: &Store) -> (Result<Resolved, DefaultModelError>, Vec<Step>) {
    let steps = Mutex::new(Vec::new());
    let report = |step: Step| steps.lock().unwrap().push(step);
    let result = tokio::time::timeout(
        Duration::from_secs(60),
        resolve(
            store,
            &machine(),
            Purpose::Chat,
            &options(),
            &report,
            &|_| {},
        ),
    )
    .await
    .expect("resolved within 60 s");
    (result, steps.into_inner().unwrap())
}

#[tokio::test]
async fn pulls_the_recommended_model_then_uses_it_installed() {
    let server = server(tiny_gguf()).await;
    let base = server.url();
    let dir = TestDir::new();
    let store = Store::open(&dir.0).unwrap().with_catalog(catalog(
        &format!("{base}/present.gguf"),
        &format!("{base}/missing.gguf"),
    ));
    let (result, steps) = run(&store).await;
    let resolved = result.unwrap();
    assert_eq!(resolved.name, "big-coder");
    assert!(matches!(resolved.how, How::Pulled { .. }), "{resolved:?}");
    assert_eq!(
        steps,
        vec![Step::Pulling {
            name: "big-coder".into(),
            size: 1_000_000
        }]
    );

    // The second time it is installed: nothing is fetched.
    let asked = server.paths().len();
    let (result, steps) = run(&store).await;
    assert_eq!(result.unwrap().how, How::Installed);
    assert_eq!(
        steps,
        vec![Step::UsingInstalled {
            name: "big-coder".into()
        }]
    );
    assert_eq!(server.paths().len(), asked);
}

#[tokio::test]
async fn falls_back_when_no_source_of_the_recommended_model_answers() {
    let server = server(tiny_gguf()).await;
    let base = server.url();
    let dir = TestDir::new();
    let store = Store::open(&dir.0).unwrap().with_catalog(catalog(
        &format!("{base}/missing.gguf"),
        &format!("{base}/present.gguf"),
    ));
    let (result, steps) = run(&store).await;
    let resolved = result.unwrap();
    assert_eq!(resolved.name, FALLBACK_MODEL);
    assert_eq!(
        resolved.how,
        How::FellBack {
            wanted: "big-coder".into(),
            source: format!("{base}/present.gguf"),
        }
    );
    let [
        Step::Pulling { name, .. },
        Step::FallingBack {
            wanted,
            fallback,
            error,
        },
    ] = &steps[..]
    else {
        panic!("{steps:?}")
    };
    assert_eq!((name.as_str(), wanted.as_str()), ("big-coder", "big-coder"));
    assert_eq!(fallback, FALLBACK_MODEL);
    assert!(error.contains("404"), "{error}");
    assert_eq!(
        server.paths(),
        vec!["/missing.gguf".to_owned(), "/present.gguf".to_owned()]
    );
    assert!(store.get(FALLBACK_MODEL).unwrap().is_some());
}

#[tokio::test]
async fn a_model_pip_may_hold_comes_before_the_tiny_fallback() {
    // The recommended model has Hugging Face alone (missing here); a
    // smaller one has a pip source (which fails: pip gets no index) and a
    // file that answers; the fallback answers too but is never asked.
    let server = server(tiny_gguf()).await;
    let base = server.url();
    let dir = TestDir::new();
    let three = format!(
        "[[model]]\nname = \"big-coder\"\ndescription = \"d\"\nfile = \"b.gguf\"\nparameters = \"1B\"\n\
         quantization = \"Q4_0\"\ncontext_length = 4096\napprox_size = 1000000\nsources = [\"{base}/missing.gguf\"]\n\n\
         [[model]]\nname = \"mid-coder\"\ndescription = \"d\"\nfile = \"m.gguf\"\nparameters = \"100M\"\n\
         quantization = \"Q4_0\"\ncontext_length = 4096\napprox_size = 1000\n\
         sources = [\"pip:mid-coder==1.0#mid_coder/data/mid.gguf\", \"{base}/present.gguf\"]\n\n\
         [[model]]\nname = \"{FALLBACK_MODEL}\"\ndescription = \"d\"\nfile = \"s.gguf\"\nparameters = \"1M\"\n\
         quantization = \"Q4_0\"\ncontext_length = 4096\napprox_size = 100\nsources = [\"{base}/present.gguf\"]\n"
    );
    let store = Store::open(&dir.0)
        .unwrap()
        .with_catalog(Catalog::from_toml(&three).unwrap());
    let mut options = options();
    options.pip.extra_env = vec![("PIP_NO_INDEX".into(), "1".into())];
    let steps = Mutex::new(Vec::new());
    let report = |step: Step| steps.lock().unwrap().push(step);
    let resolved = tokio::time::timeout(
        Duration::from_secs(60),
        resolve(
            &store,
            &machine(),
            Purpose::Chat,
            &options,
            &report,
            &|_| {},
        ),
    )
    .await
    .expect("resolved within 60 s")
    .unwrap();
    assert_eq!(resolved.name, "mid-coder");
    assert_eq!(
        resolved.how,
        How::FellBack {
            wanted: "big-coder".into(),
            source: format!("{base}/present.gguf"),
        }
    );
    let steps = steps.into_inner().unwrap();
    let [
        Step::Pulling { name, .. },
        Step::FallingBack {
            wanted, fallback, ..
        },
    ] = &steps[..]
    else {
        panic!("{steps:?}")
    };
    assert_eq!(
        (name.as_str(), wanted.as_str(), fallback.as_str()),
        ("big-coder", "big-coder", "mid-coder")
    );
    assert!(store.get(FALLBACK_MODEL).unwrap().is_none());
}

#[tokio::test]
async fn says_how_to_get_a_model_when_nothing_answers() {
    // Port 9 (discard) refuses connections on loopback.
    let dir = TestDir::new();
    let store = Store::open(&dir.0).unwrap().with_catalog(catalog(
        "http://127.0.0.1:9/big.gguf",
        "http://127.0.0.1:9/small.gguf",
    ));
    let (result, steps) = run(&store).await;
    let error = result.unwrap_err();
    let DefaultModelError::Unavailable { attempts, .. } = &error else {
        panic!("{error}")
    };
    let tried: Vec<&str> = attempts.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(tried, vec!["big-coder", FALLBACK_MODEL]);
    assert_eq!(steps.len(), 2, "{steps:?}");
    let text = error.to_string();
    assert!(text.contains("freehold models pull smollm2-135m"), "{text}");
    assert!(text.contains("--model provider:model"), "{text}");
    assert!(store.list().unwrap().models.is_empty());
}
