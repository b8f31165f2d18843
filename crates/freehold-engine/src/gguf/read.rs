//! The header parser.
//!
//! Everything read here is untrusted: every length and count is checked
//! against a limit before anything is allocated for it, vectors grow only as
//! elements actually arrive, and the decoded size of the whole header is
//! charged against [`MAX_HEADER_BYTES`].

use std::io;
use std::io::Read;
use std::mem::size_of;

use super::Array;
use super::DEFAULT_ALIGNMENT;
use super::GgmlType;
use super::GgufErrorKind;
use super::GgufFile;
use super::MAX_ARRAY_DEPTH;
use super::MAX_ARRAY_LEN;
use super::MAX_DIMS;
use super::MAX_HEADER_BYTES;
use super::MAX_METADATA_KEYS;
use super::MAX_STRING_LEN;
use super::MAX_TENSORS;
use super::TensorInfo;
use super::Value;
use super::ValueType;

type Result<T> = std::result::Result<T, GgufErrorKind>;

/// The most elements reserved ahead of reading them; vectors grow past this
/// only as elements arrive.
const MAX_PREALLOCATE: usize = 1 << 16;

const MAGIC: &[u8; 4] = b"GGUF";

/// Parses a GGUF header from `inner`, which is left just past the tensor
/// infos.
pub(super) fn read_header<R: Read>(inner: R) -> Result<GgufFile> {
    let mut r = Reader {
        inner,
        pos: 0,
        charged: 0,
        context: String::from("the file header"),
    };

    let mut magic = Vec::with_capacity(MAGIC.len());
    let got = r.read_up_to(MAGIC.len() as u64, &mut magic)?;
    if magic[..] != MAGIC[..got] {
        return Err(GgufErrorKind::NotGguf {
            found: String::from_utf8_lossy(&magic).into_owned(),
        });
    }
    if got < MAGIC.len() {
        return Err(r.truncated("the magic bytes"));
    }

    let version = r.u32("the version")?;
    if version != 2 && version != 3 {
        let swapped = version.swap_bytes();
        if (1..=3).contains(&swapped) {
            return Err(GgufErrorKind::BigEndian(swapped));
        }
        return Err(GgufErrorKind::UnsupportedVersion(version));
    }

    let tensor_count = r.count("tensor count", MAX_TENSORS)?;
    let kv_count = r.count("metadata key count", MAX_METADATA_KEYS)?;

    let mut metadata = Vec::with_capacity(kv_count.min(MAX_PREALLOCATE));
    for index in 0..kv_count {
        r.context = format!("metadata key {index}");
        let offset = r.pos;
        r.charge(size_of::<(String, Value)>(), offset)?;
        let key = r.string("the key")?;
        r.context = format!("metadata key {key:?}");
        let ty = r.value_type()?;
        let value = r.value(ty, 0)?;
        metadata.push((key, value));
    }
    if let Some(key) = first_duplicate(metadata.iter().map(|(key, _)| key.as_str())) {
        return Err(GgufErrorKind::DuplicateKey(key.to_owned()));
    }

    let alignment = alignment(&metadata)?;

    let mut tensors = Vec::with_capacity(tensor_count.min(MAX_PREALLOCATE));
    for index in 0..tensor_count {
        r.context = format!("tensor info {index}");
        let offset = r.pos;
        r.charge(size_of::<TensorInfo>(), offset)?;
        let name = r.string("the tensor name")?;
        r.context = format!("tensor {name:?}");
        let n_dims = r.u32("the number of dimensions")?;
        if n_dims > MAX_DIMS {
            return Err(GgufErrorKind::TooManyDimensions {
                name,
                dims: n_dims,
                max: MAX_DIMS,
            });
        }
        let mut dims = Vec::with_capacity(MAX_DIMS as usize);
        for _ in 0..n_dims {
            dims.push(r.u64("a dimension")?);
        }
        let ggml_type = GgmlType(r.u32("the tensor type")?);
        let offset = r.u64("the tensor data offset")?;
        tensors.push(TensorInfo {
            name,
            dims,
            ggml_type,
            offset,
        });
    }
    if let Some(name) = first_duplicate(tensors.iter().map(|t| t.name.as_str())) {
        return Err(GgufErrorKind::DuplicateTensor(name.to_owned()));
    }

    let data_offset = r
        .pos
        .checked_next_multiple_of(alignment)
        .ok_or_else(|| GgufErrorKind::InvalidAlignment(alignment.to_string()))?;

    Ok(GgufFile {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// `general.alignment`, checked, or the default.
fn alignment(metadata: &[(String, Value)]) -> Result<u64> {
    let Some((_, value)) = metadata.iter().find(|(key, _)| key == "general.alignment") else {
        return Ok(DEFAULT_ALIGNMENT);
    };
    match value.as_u64() {
        Some(n) if n.is_power_of_two() => Ok(n),
        Some(n) => Err(GgufErrorKind::InvalidAlignment(n.to_string())),
        None => Err(GgufErrorKind::InvalidAlignment(format!(
            "a {} value, not an integer",
            value.value_type()
        ))),
    }
}

/// The first name that occurs twice, without copying any name.
fn first_duplicate<'a>(names: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let mut names: Vec<&str> = names.collect();
    names.sort_unstable();
    names
        .windows(2)
        .find(|pair| pair[0] == pair[1])
        .map(|pair| pair[0])
}

/// A reader that knows its offset, what it is reading (for messages) and
/// how much decoded header it has accepted.
struct Reader<R> {
    inner: R,
    pos: u64,
    charged: u64,
    /// Where in the header the reader is (`metadata key "general.name"`).
    context: String,
}

impl<R: Read> Reader<R> {
    fn truncated(&self, what: &str) -> GgufErrorKind {
        GgufErrorKind::Truncated {
            offset: self.pos,
            what: format!("{what} in {}", self.context),
        }
    }

    fn too_large(&self, what: &str, value: u64, limit: String, offset: u64) -> GgufErrorKind {
        GgufErrorKind::LimitExceeded {
            what: format!("{what} in {}", self.context),
            value,
            limit,
            offset,
        }
    }

    /// Accepts `bytes` more of decoded header, or fails past the limit.
    fn charge(&mut self, bytes: usize, offset: u64) -> Result<()> {
        let total = self
            .charged
            .saturating_add(u64::try_from(bytes).unwrap_or(u64::MAX));
        if total > MAX_HEADER_BYTES {
            return Err(self.too_large(
                "the decoded header size",
                total,
                format!("{} MiB", MAX_HEADER_BYTES >> 20),
                offset,
            ));
        }
        self.charged = total;
        Ok(())
    }

    fn fill(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        match self.inner.read_exact(buf) {
            Ok(()) => {
                self.pos += buf.len() as u64;
                Ok(())
            }
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Err(self.truncated(what)),
            Err(error) => Err(GgufErrorKind::Read {
                offset: self.pos,
                error,
            }),
        }
    }

    /// Appends up to `len` bytes to `buf`, growing it only as bytes arrive;
    /// returns how many were read (fewer at the end of the file).
    fn read_up_to(&mut self, len: u64, buf: &mut Vec<u8>) -> Result<usize> {
        match (&mut self.inner).take(len).read_to_end(buf) {
            Ok(n) => {
                self.pos += n as u64;
                Ok(n)
            }
            Err(error) => Err(GgufErrorKind::Read {
                offset: self.pos,
                error,
            }),
        }
    }

    fn bytes<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut buf = [0; N];
        self.fill(&mut buf, what)?;
        Ok(buf)
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        self.bytes(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        self.bytes(what).map(u64::from_le_bytes)
    }

    /// A `u64` count, checked against `max` before anything is allocated.
    fn count(&mut self, what: &str, max: u64) -> Result<usize> {
        let offset = self.pos;
        let n = self.u64(what)?;
        match usize::try_from(n) {
            Ok(count) if n <= max => Ok(count),
            _ => Err(self.too_large(what, n, max.to_string(), offset)),
        }
    }

    fn bool(&mut self) -> Result<bool> {
        let offset = self.pos;
        match self.bytes::<1>("a bool")? {
            [0] => Ok(false),
            [1] => Ok(true),
            [byte] => Err(GgufErrorKind::InvalidBool { byte, offset }),
        }
    }

    fn string(&mut self, what: &str) -> Result<String> {
        let offset = self.pos;
        let len = self.u64(&format!("the length of {what}"))?;
        if len > MAX_STRING_LEN {
            let limit = format!("{} MiB", MAX_STRING_LEN >> 20);
            return Err(self.too_large(&format!("the length of {what}"), len, limit, offset));
        }
        // At most 1 MiB, so this fits in usize.
        let len_usize = usize::try_from(len).unwrap_or(usize::MAX);
        self.charge(size_of::<String>().saturating_add(len_usize), offset)?;
        let mut buf = Vec::new();
        if (self.read_up_to(len, &mut buf)? as u64) < len {
            return Err(self.truncated(what));
        }
        // GGUF strings are UTF-8; a stray invalid byte should not make a
        // whole model unreadable, so it is replaced rather than refused.
        Ok(match String::from_utf8(buf) {
            Ok(s) => s,
            Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
        })
    }

    fn value_type(&mut self) -> Result<ValueType> {
        let offset = self.pos;
        let tag = self.u32("the value type")?;
        ValueType::from_tag(tag).ok_or(GgufErrorKind::UnknownValueType { tag, offset })
    }

    fn value(&mut self, ty: ValueType, depth: usize) -> Result<Value> {
        Ok(match ty {
            ValueType::U8 => Value::U8(u8::from_le_bytes(self.bytes("a u8")?)),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.bytes("an i8")?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.bytes("a u16")?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.bytes("an i16")?)),
            ValueType::U32 => Value::U32(u32::from_le_bytes(self.bytes("a u32")?)),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.bytes("an i32")?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.bytes("an f32")?)),
            ValueType::Bool => Value::Bool(self.bool()?),
            ValueType::String => Value::String(self.string("a string")?),
            ValueType::Array => Value::Array(self.array(depth + 1)?),
            ValueType::U64 => Value::U64(u64::from_le_bytes(self.bytes("a u64")?)),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.bytes("an i64")?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.bytes("an f64")?)),
        })
    }

    /// An array at nesting `depth` (1 for an array that is a value).
    fn array(&mut self, depth: usize) -> Result<Array> {
        let offset = self.pos;
        if depth > MAX_ARRAY_DEPTH {
            return Err(self.too_large(
                "the array nesting depth",
                depth as u64,
                format!("{MAX_ARRAY_DEPTH} levels"),
                offset,
            ));
        }
        self.charge(size_of::<Array>(), offset)?;
        let ty = self.value_type()?;
        let offset = self.pos;
        let len = self.u64("the array length")?;
        if len > MAX_ARRAY_LEN {
            return Err(self.too_large(
                "the array length",
                len,
                format!("{MAX_ARRAY_LEN} elements"),
                offset,
            ));
        }
        // At most MAX_ARRAY_LEN, so this fits in usize.
        let n = usize::try_from(len).unwrap_or(usize::MAX);
        Ok(match ty {
            ValueType::U8 => Array::U8(self.numbers(n, offset, "a u8", u8::from_le_bytes)?),
            ValueType::I8 => Array::I8(self.numbers(n, offset, "an i8", i8::from_le_bytes)?),
            ValueType::U16 => Array::U16(self.numbers(n, offset, "a u16", u16::from_le_bytes)?),
            ValueType::I16 => Array::I16(self.numbers(n, offset, "an i16", i16::from_le_bytes)?),
            ValueType::U32 => Array::U32(self.numbers(n, offset, "a u32", u32::from_le_bytes)?),
            ValueType::I32 => Array::I32(self.numbers(n, offset, "an i32", i32::from_le_bytes)?),
            ValueType::F32 => Array::F32(self.numbers(n, offset, "an f32", f32::from_le_bytes)?),
            ValueType::U64 => Array::U64(self.numbers(n, offset, "a u64", u64::from_le_bytes)?),
            ValueType::I64 => Array::I64(self.numbers(n, offset, "an i64", i64::from_le_bytes)?),
            ValueType::F64 => Array::F64(self.numbers(n, offset, "an f64", f64::from_le_bytes)?),
            ValueType::Bool => {
                self.charge(n, offset)?;
                Array::Bool(self.elements(n, Self::bool)?)
            }
            // Each string and inner array charges for itself.
            ValueType::String => Array::String(self.elements(n, |r| r.string("a string"))?),
            ValueType::Array => Array::Array(self.elements(n, |r| r.array(depth + 1))?),
        })
    }

    /// `n` fixed-size numbers, charged before any is read.
    fn numbers<T, const N: usize>(
        &mut self,
        n: usize,
        offset: u64,
        what: &str,
        decode: fn([u8; N]) -> T,
    ) -> Result<Vec<T>> {
        self.charge(n.saturating_mul(size_of::<T>()), offset)?;
        self.elements(n, |r| r.bytes(what).map(decode))
    }

    fn elements<T>(
        &mut self,
        n: usize,
        mut read: impl FnMut(&mut Self) -> Result<T>,
    ) -> Result<Vec<T>> {
        let mut out = Vec::with_capacity(n.min(MAX_PREALLOCATE));
        for _ in 0..n {
            out.push(read(self)?);
        }
        Ok(out)
    }
}
