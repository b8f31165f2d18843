//! The GGUF metadata reader against files written here, corrupt and absurd
//! files, and (when `FREEHOLD_TEST_MODELS` names a folder holding it) a real
//! SmolLM2 model.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::path::PathBuf;

use freehold_engine::gguf::Array;
use freehold_engine::gguf::GgmlType;
use freehold_engine::gguf::GgufError;
use freehold_engine::gguf::GgufErrorKind;
use freehold_engine::gguf::Summary;
use freehold_engine::gguf::TensorInfo;
use freehold_engine::gguf::Value;
use freehold_engine::gguf::describe;
use freehold_engine::gguf::human_count;
use freehold_engine::gguf::read_metadata;
use freehold_engine::gguf::read_metadata_from;

/// Counts the bytes the current thread allocates, so that tests can show a
/// corrupt header was refused without allocating what it declared.
mod alloc_probe {
    #![allow(unsafe_code)]

    use std::alloc::GlobalAlloc;
    use std::alloc::Layout;
    use std::alloc::System;
    use std::cell::Cell;

    thread_local! {
        static LARGEST: Cell<usize> = const { Cell::new(0) };
    }

    pub(crate) struct Probe;

    // SAFETY: every call is forwarded unchanged to the system allocator; the
    // thread-local bookkeeping allocates nothing.
    unsafe impl GlobalAlloc for Probe {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            note(layout.size());
            // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract.
            unsafe { System.alloc(layout) }
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` came from `System` with this layout.
            unsafe { System.dealloc(ptr, layout) }
        }

        unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
            note(new_size);
            // SAFETY: the caller upholds `GlobalAlloc::realloc`'s contract.
            unsafe { System.realloc(ptr, layout, new_size) }
        }
    }

    fn note(size: usize) {
        let _ = LARGEST.try_with(|largest| largest.set(largest.get().max(size)));
    }

    /// Runs `f` and returns its result with the largest single allocation
    /// this thread made meanwhile.
    pub(crate) fn largest_allocation<T>(f: impl FnOnce() -> T) -> (T, usize) {
        LARGEST.with(|largest| largest.set(0));
        let out = f();
        (out, LARGEST.with(Cell::get))
    }
}

#[global_allocator]
static PROBE: alloc_probe::Probe = alloc_probe::Probe;

// ---------------------------------------------------------------------------
// A GGUF writer for the tests.

fn tag(value: &Value) -> u32 {
    value.value_type().tag()
}

#[derive(Default)]
struct Writer {
    buf: Vec<u8>,
}

impl Writer {
    fn header(version: u32, tensors: u64, keys: u64) -> Self {
        let mut w = Self::default();
        w.buf.extend_from_slice(b"GGUF");
        w.u32(version);
        w.u64(tensors);
        w.u64(keys);
        w
    }

    fn u32(&mut self, v: u32) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn u64(&mut self, v: u64) -> &mut Self {
        self.buf.extend_from_slice(&v.to_le_bytes());
        self
    }

    fn string(&mut self, s: &str) -> &mut Self {
        self.u64(s.len() as u64);
        self.buf.extend_from_slice(s.as_bytes());
        self
    }

    fn key_value(&mut self, key: &str, value: &Value) -> &mut Self {
        self.string(key);
        self.u32(tag(value));
        self.payload(value);
        self
    }

    fn payload(&mut self, value: &Value) {
        match value {
            Value::U8(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::I8(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::U16(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::I16(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::U32(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::I32(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::F32(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::Bool(v) => self.buf.push(u8::from(*v)),
            Value::String(s) => {
                self.string(s);
            }
            Value::Array(array) => self.array(array),
            Value::U64(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::I64(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
            Value::F64(v) => self.buf.extend_from_slice(&v.to_le_bytes()),
        }
    }

    fn array(&mut self, array: &Array) {
        self.u32(array.element_type().tag());
        self.u64(array.len() as u64);
        for index in 0..array.len() {
            let element = array.get(index).expect("index is in range");
            self.payload(&element);
        }
    }

    fn tensor(&mut self, tensor: &TensorInfo) -> &mut Self {
        self.string(&tensor.name);
        self.u32(tensor.dims.len() as u32);
        for &d in &tensor.dims {
            self.u64(d);
        }
        self.u32(tensor.ggml_type.0);
        self.u64(tensor.offset);
        self
    }
}

/// A GGUF file holding `metadata` and `tensors`.
fn gguf_bytes(version: u32, metadata: &[(String, Value)], tensors: &[TensorInfo]) -> Vec<u8> {
    let mut w = Writer::header(version, tensors.len() as u64, metadata.len() as u64);
    for (key, value) in metadata {
        w.key_value(key, value);
    }
    for tensor in tensors {
        w.tensor(tensor);
    }
    w.buf
}

/// A fresh path under Cargo's temporary folder for integration tests.
fn temp_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("gguf-{}-{name}", std::process::id()))
}

fn write_temp(name: &str, bytes: &[u8]) -> PathBuf {
    let path = temp_path(name);
    std::fs::write(&path, bytes).expect("write the test file");
    path
}

const TEMPLATE: &str = "{% for message in messages %}\n\
    {{ '<|im_start|>' + message['role'] + '\\n' }}\n\
    {{ message['content'] }}\n\
    {{ '<|im_end|>' + '\\n' }}\n\
    {% endfor %}\n\
    {% if add_generation_prompt %}\n\
    {{ '<|im_start|>assistant\\n' }}\n\
    {% endif %}\n\
    {# line nine #}\n\
    {# line ten #}";

fn s(v: &str) -> Value {
    Value::String(v.to_owned())
}

/// Metadata with every value type, nested arrays and the well-known keys.
fn sample_metadata() -> Vec<(String, Value)> {
    let tokens: Vec<String> = (0..50).map(|i| format!("tok{i}")).collect();
    let entries: Vec<(&str, Value)> = vec![
        ("general.architecture", s("llama")),
        ("general.name", s("Tiny Test")),
        ("general.file_type", Value::U32(15)),
        ("general.alignment", Value::U32(64)),
        ("llama.context_length", Value::U32(4096)),
        ("llama.embedding_length", Value::U64(64)),
        ("llama.block_count", Value::U16(2)),
        ("tokenizer.chat_template", s(TEMPLATE)),
        ("tokenizer.ggml.tokens", Value::Array(Array::String(tokens))),
        ("test.u8", Value::U8(200)),
        ("test.i8", Value::I8(-5)),
        ("test.u16", Value::U16(60_000)),
        ("test.i16", Value::I16(-30_000)),
        ("test.u32", Value::U32(4_000_000_000)),
        ("test.i32", Value::I32(-70_000)),
        ("test.f32", Value::F32(1.5)),
        ("test.bool", Value::Bool(true)),
        ("test.string", s("héllo ✓")),
        ("test.empty_string", s("")),
        ("test.u64", Value::U64(u64::MAX)),
        ("test.i64", Value::I64(i64::MIN)),
        ("test.f64", Value::F64(std::f64::consts::PI)),
        ("test.array.u8", Value::Array(Array::U8(vec![1, 2, 255]))),
        ("test.array.i8", Value::Array(Array::I8(vec![-1, 0, 1]))),
        ("test.array.u16", Value::Array(Array::U16(vec![7, 65_535]))),
        ("test.array.i16", Value::Array(Array::I16(vec![-7]))),
        ("test.array.u32", Value::Array(Array::U32(vec![1, 2, 3]))),
        ("test.array.i32", Value::Array(Array::I32(vec![-2, 2]))),
        ("test.array.f32", Value::Array(Array::F32(vec![0.25, -1.0]))),
        (
            "test.array.bool",
            Value::Array(Array::Bool(vec![true, false])),
        ),
        (
            "test.array.string",
            Value::Array(Array::String(vec!["a".into(), "".into()])),
        ),
        ("test.array.u64", Value::Array(Array::U64(vec![u64::MAX]))),
        (
            "test.array.i64",
            Value::Array(Array::I64(vec![i64::MIN, 0])),
        ),
        ("test.array.f64", Value::Array(Array::F64(vec![2.5]))),
        ("test.array.empty", Value::Array(Array::U32(vec![]))),
        (
            "test.array.nested",
            Value::Array(Array::Array(vec![
                Array::I32(vec![1, 2]),
                Array::String(vec!["x".into()]),
                Array::Array(vec![Array::Bool(vec![]), Array::F64(vec![1.0])]),
            ])),
        ),
    ];
    entries
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect()
}

fn sample_tensors() -> Vec<TensorInfo> {
    let tensor = |name: &str, dims: &[u64], ty: u32, offset: u64| TensorInfo {
        name: name.to_owned(),
        dims: dims.to_vec(),
        ggml_type: GgmlType(ty),
        offset,
    };
    vec![
        tensor("token_embd.weight", &[64, 100], 3, 0),
        tensor("blk.0.attn_norm.weight", &[64], 0, 3_840),
        tensor("output.weight", &[64, 100], 1, 4_096),
    ]
}

fn sample_file() -> Vec<u8> {
    gguf_bytes(3, &sample_metadata(), &sample_tensors())
}

/// The error from reading `bytes`, with its message checked for sense.
fn read_error(bytes: &[u8]) -> GgufError {
    match read_metadata_from(bytes) {
        Ok(gguf) => panic!("expected an error, read {gguf:?}"),
        Err(e) => {
            assert!(!e.to_string().is_empty());
            e
        }
    }
}

// ---------------------------------------------------------------------------
// Round trips.

#[test]
fn every_value_type_and_tensor_round_trips() {
    let bytes = sample_file();
    let path = write_temp("round-trip.gguf", &bytes);
    let gguf = read_metadata(&path).expect("read the sample");

    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.metadata, sample_metadata());
    assert_eq!(gguf.tensors, sample_tensors());
    assert_eq!(gguf.alignment, 64);
    assert_eq!(gguf.data_offset, (bytes.len() as u64).next_multiple_of(64));
    assert!(gguf.data_offset > 0);
}

#[test]
fn version_2_reads_like_version_3() {
    let gguf = read_metadata_from(&gguf_bytes(2, &sample_metadata(), &sample_tensors())[..])
        .expect("read a v2 file");
    assert_eq!(gguf.version, 2);
    assert_eq!(gguf.metadata, sample_metadata());
    assert_eq!(gguf.tensors, sample_tensors());
}

#[test]
fn accessors_read_the_well_known_keys() {
    let gguf = read_metadata_from(&sample_file()[..]).expect("read the sample");

    assert_eq!(gguf.architecture(), Some("llama"));
    assert_eq!(gguf.name(), Some("Tiny Test"));
    assert_eq!(gguf.context_length(), Some(4096));
    assert_eq!(gguf.embedding_length(), Some(64));
    // Stored as a u16: integers of any width are widened.
    assert_eq!(gguf.block_count(), Some(2));
    assert_eq!(gguf.chat_template(), Some(TEMPLATE));
    assert_eq!(gguf.file_type().as_deref(), Some("Q4_K_M"));
    assert_eq!(gguf.parameter_count(), 64 * 100 + 64 + 64 * 100);
    assert!(!gguf.is_embedding_model());

    assert_eq!(gguf.get("test.f32"), Some(&Value::F32(1.5)));
    assert_eq!(gguf.get("no.such.key"), None);
    assert_eq!(gguf.get_str("test.string"), Some("héllo ✓"));
    assert_eq!(gguf.get_str("test.u8"), None);
    assert_eq!(gguf.get_u64("test.u8"), Some(200));
    assert_eq!(gguf.get_u64("test.u64"), Some(u64::MAX));
    assert_eq!(
        gguf.get_u64("test.i8"),
        None,
        "negative integers do not widen to u64"
    );
    assert_eq!(gguf.get_u64("test.f64"), None);
    assert_eq!(gguf.get("test.i64").and_then(Value::as_i64), Some(i64::MIN));
    assert_eq!(gguf.get("test.u16").and_then(Value::as_f64), Some(60_000.0));

    let tokens = gguf
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .expect("the tokens are an array");
    assert_eq!(tokens.len(), 50);
    assert_eq!(tokens.as_strings().map(|t| t[49].as_str()), Some("tok49"));

    assert_eq!(
        gguf.summary(),
        Summary {
            architecture: Some("llama".into()),
            name: Some("Tiny Test".into()),
            parameters: 12_864,
            quantization: Some("Q4_K_M".into()),
            context_length: Some(4096),
        }
    );
}

#[test]
fn file_types_are_named_and_unknown_ones_numbered() {
    let with_file_type = |n: u32| {
        let metadata = vec![("general.file_type".to_owned(), Value::U32(n))];
        read_metadata_from(&gguf_bytes(3, &metadata, &[])[..])
            .expect("read")
            .file_type()
    };
    assert_eq!(with_file_type(0).as_deref(), Some("F32"));
    assert_eq!(with_file_type(3).as_deref(), Some("Q4_1"));
    assert_eq!(with_file_type(7).as_deref(), Some("Q8_0"));
    assert_eq!(with_file_type(18).as_deref(), Some("Q6_K"));
    assert_eq!(with_file_type(20).as_deref(), Some("IQ2_XS"));
    assert_eq!(with_file_type(32).as_deref(), Some("BF16"));
    assert_eq!(with_file_type(999).as_deref(), Some("type 999"));
}

#[test]
fn quantization_falls_back_to_the_main_tensor_type() {
    let metadata = vec![("general.architecture".to_owned(), s("llama"))];
    let mut tensors = sample_tensors();
    tensors[2].dims = vec![64, 10];
    let gguf = read_metadata_from(&gguf_bytes(3, &metadata, &tensors)[..]).expect("read");
    assert_eq!(gguf.file_type(), None);
    // Q4_1 holds 6400 elements, F16 640 and F32 64.
    assert_eq!(gguf.summary().quantization.as_deref(), Some("Q4_1"));
    assert_eq!(gguf.summary().context_length, None);
}

#[test]
fn embedding_models_are_recognised() {
    let read = |metadata: Vec<(&str, Value)>| {
        let metadata: Vec<(String, Value)> = metadata
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        read_metadata_from(&gguf_bytes(3, &metadata, &[])[..]).expect("read")
    };
    assert!(read(vec![("general.architecture", s("bert"))]).is_embedding_model());
    assert!(read(vec![("general.architecture", s("nomic-bert"))]).is_embedding_model());
    assert!(
        read(vec![
            ("general.architecture", s("qwen3")),
            ("qwen3.pooling_type", Value::U32(3)),
        ])
        .is_embedding_model()
    );
    assert!(!read(vec![("general.architecture", s("qwen3"))]).is_embedding_model());
    assert!(!read(vec![]).is_embedding_model());
}

// ---------------------------------------------------------------------------
// The human description.

#[test]
fn describe_lists_sorted_keys_and_summarises_long_values() {
    let gguf = read_metadata_from(&sample_file()[..]).expect("read the sample");
    let text = describe(&gguf);

    assert!(text.contains("Tiny Test"), "{text}");
    assert!(text.contains("13K (12864)"), "{text}");
    assert!(text.contains("Q4_K_M"), "{text}");
    assert!(text.contains("4096"), "{text}");
    assert!(text.contains("general.file_type = 15 (Q4_K_M)"), "{text}");
    assert!(
        text.contains("tokenizer.ggml.tokens = [50 strings]"),
        "{text}"
    );
    assert!(text.contains("test.array.u8 = [1, 2, 255]"), "{text}");
    assert!(text.contains("test.array.string = [\"a\", \"\"]"), "{text}");
    assert!(text.contains("test.array.empty = []"), "{text}");
    assert!(
        text.contains("test.array.nested = [[1, 2], [\"x\"], [[], [1 f64]]]"),
        "{text}"
    );
    assert!(text.contains("test.string = \"héllo ✓\""), "{text}");

    // The template shows its first lines and counts the rest.
    assert!(
        text.contains("tokenizer.chat_template = (10 lines"),
        "{text}"
    );
    assert!(text.contains("| {% for message in messages %}"), "{text}");
    assert!(text.contains("| … 4 more lines"), "{text}");
    assert!(!text.contains("line ten"), "{text}");

    // Keys are sorted.
    let keys: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("  ")?.split_once(" = ").map(|(k, _)| k))
        .collect();
    let mut sorted = keys.clone();
    sorted.sort_unstable();
    assert_eq!(keys, sorted);
    assert_eq!(keys.len(), sample_metadata().len());
}

#[test]
fn describe_cuts_long_strings() {
    let long = "x".repeat(5_000);
    let metadata = vec![("general.description".to_owned(), s(&long))];
    let text = describe(&read_metadata_from(&gguf_bytes(3, &metadata, &[])[..]).expect("read"));
    let line = text
        .lines()
        .find(|line| line.contains("general.description"))
        .expect("the key is listed");
    assert!(line.len() < 200, "{line}");
    assert!(line.ends_with('…'), "{line}");
}

#[test]
fn describe_escapes_control_characters() {
    let metadata = vec![
        ("general.name".to_owned(), s("evil\u{1b}[2Jname")),
        (
            "tokenizer.chat_template".to_owned(),
            s("a\u{1b}]0;title\u{7}\n\tb"),
        ),
    ];
    let text = describe(&read_metadata_from(&gguf_bytes(3, &metadata, &[])[..]).expect("read"));
    assert!(!text.contains('\u{1b}'), "{text:?}");
    assert!(!text.contains('\u{7}'), "{text:?}");
    assert!(text.contains("evil\\u{1b}[2Jname"), "{text}");
    assert!(text.contains("| \tb"), "{text}");
}

#[test]
fn human_counts() {
    let cases = [
        (0, "0"),
        (999, "999"),
        (1_000, "1K"),
        (12_864, "13K"),
        (134_515_008, "135M"),
        (999_600_000, "1B"),
        (1_543_714_304, "1.5B"),
        (7_000_000_000, "7B"),
        (70_553_706_496, "71B"),
        (1_000_000_000_000, "1T"),
    ];
    for (n, expected) in cases {
        assert_eq!(human_count(n), expected, "{n}");
    }
}

// ---------------------------------------------------------------------------
// Broken and hostile files.

#[test]
fn every_truncation_is_an_error_not_a_panic() {
    let bytes = sample_file();
    let path = temp_path("truncated.gguf");
    for len in 0..bytes.len() {
        std::fs::write(&path, &bytes[..len]).expect("write the truncated file");
        let err = read_metadata(&path).expect_err("a truncated header must not read");
        let message = err.to_string();
        assert!(
            message.contains(&*path.to_string_lossy()),
            "the message names the file: {message}"
        );
        match err.kind() {
            GgufErrorKind::Truncated { offset, .. } => assert!(*offset <= len as u64),
            other => panic!("length {len}: expected Truncated, got {other:?}"),
        }
    }
    std::fs::write(&path, &bytes).expect("write the whole file");
    assert!(read_metadata(&path).is_ok());
}

#[test]
fn wrong_magic_is_not_a_gguf_file() {
    let mut bytes = sample_file();
    bytes[..4].copy_from_slice(b"GGML");
    let err = read_error(&bytes);
    assert!(
        matches!(err.kind(), GgufErrorKind::NotGguf { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("not a GGUF file"), "{err}");

    let path = write_temp("not-gguf.txt", b"hello, this is text\n");
    let err = read_metadata(&path).expect_err("text is not GGUF");
    assert!(err.to_string().contains("not a GGUF file"), "{err}");
    assert!(err.to_string().contains("not-gguf.txt"), "{err}");
}

#[test]
fn a_missing_file_names_its_path() {
    let path = temp_path("does-not-exist.gguf");
    let err = read_metadata(&path).expect_err("the file is missing");
    assert!(matches!(err.kind(), GgufErrorKind::Open(_)), "{err:?}");
    assert_eq!(err.path(), Some(path.as_path()));
    assert!(err.to_string().contains("does-not-exist.gguf"), "{err}");
}

#[test]
fn unsupported_versions_are_refused() {
    for version in [0, 1, 4, 0xdead_beef] {
        let err = read_error(&Writer::header(version, 0, 0).buf);
        assert!(
            matches!(err.kind(), GgufErrorKind::UnsupportedVersion(v) if *v == version),
            "{err:?}"
        );
        assert!(err.to_string().contains("versions 2 and 3"), "{err}");
    }
    let err = read_error(&Writer::header(3u32.swap_bytes(), 0, 0).buf);
    assert!(matches!(err.kind(), GgufErrorKind::BigEndian(3)), "{err:?}");
    assert!(err.to_string().contains("big-endian"), "{err}");
}

/// Asserts reading `bytes` fails with `LimitExceeded` for `value`, whose
/// message names `limit`, while allocating less than 1 MiB at once.
fn assert_refused_cheaply(bytes: &[u8], value: u64, limit: &str) {
    let (result, largest) = alloc_probe::largest_allocation(|| read_metadata_from(bytes));
    let err = result.expect_err("the absurd header must not read");
    match err.kind() {
        GgufErrorKind::LimitExceeded { value: v, .. } => assert_eq!(*v, value, "{err}"),
        other => panic!("expected LimitExceeded, got {other:?}"),
    }
    let message = err.to_string();
    assert!(
        message.contains(limit),
        "the message names the limit: {message}"
    );
    assert!(message.contains(&value.to_string()), "{message}");
    assert!(largest < 1 << 20, "allocated {largest} bytes at once");
}

#[test]
fn absurd_lengths_are_refused_without_allocating() {
    // A key 2^60 bytes long.
    let mut w = Writer::header(3, 0, 1);
    w.u64(1 << 60);
    assert_refused_cheaply(&w.buf, 1 << 60, "1 MiB");

    // A string value 2^60 bytes long.
    let mut w = Writer::header(3, 0, 1);
    w.string("general.name").u32(8).u64(1 << 60);
    assert_refused_cheaply(&w.buf, 1 << 60, "1 MiB");

    // Just over the string limit.
    let mut w = Writer::header(3, 0, 1);
    w.string("general.name").u32(8).u64((1 << 20) + 1);
    assert_refused_cheaply(&w.buf, (1 << 20) + 1, "1 MiB");

    // An array of 2^40 u64s.
    let mut w = Writer::header(3, 0, 1);
    w.string("tokenizer.ggml.scores")
        .u32(9)
        .u32(10)
        .u64(1 << 40);
    assert_refused_cheaply(&w.buf, 1 << 40, "10000000 elements");

    // An array of 2^40 strings, nested in an array.
    let mut w = Writer::header(3, 0, 1);
    w.string("test.nested")
        .u32(9)
        .u32(9)
        .u64(1)
        .u32(8)
        .u64(1 << 40);
    assert_refused_cheaply(&w.buf, 1 << 40, "10000000 elements");

    // 2^40 tensors and u64::MAX keys.
    assert_refused_cheaply(&Writer::header(3, 1 << 40, 0).buf, 1 << 40, "1000000");
    assert_refused_cheaply(&Writer::header(3, 0, u64::MAX).buf, u64::MAX, "1000000");

    // A tensor name 2^60 bytes long.
    let mut w = Writer::header(3, 1, 0);
    w.u64(1 << 60);
    assert_refused_cheaply(&w.buf, 1 << 60, "1 MiB");
}

#[test]
fn deep_array_nesting_is_refused() {
    let mut w = Writer::header(3, 0, 1);
    w.string("test.deep").u32(9);
    for _ in 0..100 {
        w.u32(9).u64(1);
    }
    let err = read_error(&w.buf);
    assert!(
        matches!(err.kind(), GgufErrorKind::LimitExceeded { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("16 levels"), "{err}");

    // Sixteen levels are fine.
    let mut nested = Array::U8(vec![7]);
    for _ in 1..16 {
        nested = Array::Array(vec![nested]);
    }
    let metadata = vec![("test.deep".to_owned(), Value::Array(nested))];
    let gguf = read_metadata_from(&gguf_bytes(3, &metadata, &[])[..]).expect("16 levels read");
    assert_eq!(gguf.metadata, metadata);
}

#[test]
fn corrupt_values_are_refused() {
    // An unknown value type.
    let mut w = Writer::header(3, 0, 1);
    w.string("test.odd").u32(13);
    let err = read_error(&w.buf);
    assert!(
        matches!(err.kind(), GgufErrorKind::UnknownValueType { tag: 13, .. }),
        "{err:?}"
    );

    // A bool that is neither 0 nor 1.
    let mut w = Writer::header(3, 0, 1);
    w.string("test.bool").u32(7);
    w.buf.push(2);
    let err = read_error(&w.buf);
    assert!(
        matches!(err.kind(), GgufErrorKind::InvalidBool { byte: 2, .. }),
        "{err:?}"
    );

    // A key given twice.
    let metadata = vec![
        ("general.name".to_owned(), s("a")),
        ("general.name".to_owned(), s("b")),
    ];
    let err = read_error(&gguf_bytes(3, &metadata, &[]));
    assert!(
        matches!(err.kind(), GgufErrorKind::DuplicateKey(k) if k == "general.name"),
        "{err:?}"
    );

    // A tensor given twice.
    let mut tensors = sample_tensors();
    tensors[2].name = tensors[0].name.clone();
    let err = read_error(&gguf_bytes(3, &[], &tensors));
    assert!(
        matches!(err.kind(), GgufErrorKind::DuplicateTensor(_)),
        "{err:?}"
    );

    // A tensor with five dimensions.
    let mut tensors = sample_tensors();
    tensors[1].dims = vec![1, 2, 3, 4, 5];
    let err = read_error(&gguf_bytes(3, &[], &tensors));
    assert!(
        matches!(err.kind(), GgufErrorKind::TooManyDimensions { dims: 5, .. }),
        "{err:?}"
    );

    // Alignments that are not powers of two, or not integers.
    for alignment in [Value::U32(0), Value::U32(48), s("32")] {
        let metadata = vec![("general.alignment".to_owned(), alignment)];
        let err = read_error(&gguf_bytes(3, &metadata, &[]));
        assert!(
            matches!(err.kind(), GgufErrorKind::InvalidAlignment(_)),
            "{err:?}"
        );
    }
}

#[test]
fn absurd_dimensions_saturate_the_parameter_count() {
    let mut tensors = sample_tensors();
    tensors[0].dims = vec![u64::MAX, u64::MAX];
    let gguf = read_metadata_from(&gguf_bytes(3, &[], &tensors)[..]).expect("read");
    assert_eq!(gguf.parameter_count(), u64::MAX);
    let _ = describe(&gguf);
}

#[test]
fn invalid_utf8_is_replaced_not_refused() {
    let mut w = Writer::header(3, 0, 1);
    w.string("general.name").u32(8).u64(3);
    w.buf.extend_from_slice(&[b'a', 0xff, b'b']);
    let gguf = read_metadata_from(&w.buf[..]).expect("read");
    assert_eq!(gguf.name(), Some("a\u{fffd}b"));
}

// ---------------------------------------------------------------------------
// A real model, when one is at hand.

#[test]
fn real_smollm2_model() {
    let Some(path) = freehold_test_support::test_model("SmolLM2-135M-Instruct.Q4_1.gguf") else {
        return;
    };

    let gguf = read_metadata(&path).expect("read the SmolLM2 header");
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.architecture(), Some("llama"));
    assert_eq!(gguf.context_length(), Some(8192));
    assert_eq!(gguf.embedding_length(), Some(576));
    assert_eq!(gguf.block_count(), Some(30));
    assert!(
        gguf.chat_template()
            .is_some_and(|t| t.contains("<|im_start|>")),
        "a chat template is present"
    );
    let parameters = gguf.parameter_count();
    assert!(
        (120_000_000..150_000_000).contains(&parameters),
        "about 135M parameters, got {parameters}"
    );
    assert_eq!(gguf.file_type().as_deref(), Some("Q4_1"));
    assert!(!gguf.is_embedding_model());

    let tokens = gguf
        .get("tokenizer.ggml.tokens")
        .and_then(Value::as_array)
        .expect("a token list");
    assert!(tokens.len() > 40_000, "{} tokens", tokens.len());

    let file_len = std::fs::metadata(&path).expect("stat").len();
    assert!(gguf.data_offset < file_len);
    for tensor in &gguf.tensors {
        assert!(
            gguf.data_offset + tensor.offset < file_len,
            "{} starts inside the file",
            tensor.name
        );
    }

    let summary = gguf.summary();
    assert_eq!(summary.quantization.as_deref(), Some("Q4_1"));
    let text = describe(&gguf);
    assert!(text.contains("135M"), "{text}");
    assert!(text.contains(&format!(
        "tokenizer.ggml.tokens = [{} strings]",
        tokens.len()
    )));
    eprintln!("{text}");
}

#[test]
fn the_allocation_probe_sees_large_allocations() {
    let (buf, largest) = alloc_probe::largest_allocation(|| Vec::<u8>::with_capacity(3 << 20));
    assert!(buf.capacity() >= 3 << 20);
    assert!(largest >= 3 << 20, "saw {largest}");
}
