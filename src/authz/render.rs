//! An allow's identity part (its headers and dynamic-metadata fields),
//! written straight from the [`Identity`] into the answer's bytes.
//!
//! Nothing is kept per identity: a cached JWT used to carry its answer
//! pre-encoded (~490 bytes, every value twice: once as a header, once as a
//! metadata field), the largest part of its memory (benches/BENCHMARKS.md,
//! stop 26). Instead each configuration compiles a [`Template`] once (the
//! constant segments: header names and metadata keys with their protobuf
//! keys and lengths), and every allow interleaves those segments with the
//! identity's own values in a per-thread scratch buffer: a few hundred
//! bytes of copying, no allocation once the buffer has grown. The bytes are
//! exactly what prost writes for the same `HeaderValueOption`s (built by
//! `response::overwrite`) and metadata `Struct` fields, so the answer
//! decodes as before (tests below check it against that reference
//! rendering, byte for byte for the headers).

use std::cell::RefCell;
use std::sync::Arc;

use prost::encoding::encoded_len_varint;

use super::headers::IdentityField;
use crate::identity::Identity;

/// `OkHttpResponse.headers` (field 2, length-delimited).
const OK_HEADERS: u8 = 0x12;
/// `HeaderValueOption.header` (field 1, length-delimited).
const HVO_HEADER: u8 = 0x0A;
/// `HeaderValue.key` (1) and `HeaderValue.value` (2).
const HV_KEY: u8 = 0x0A;
const HV_VALUE: u8 = 0x12;
/// `append: Some(BoolValue { value: false })` (field 2, empty message) and
/// `append_action: OVERWRITE_IF_EXISTS_OR_ADD` (field 3, value 2): the
/// tail of every header `response::overwrite` builds.
const HVO_TAIL: [u8; 4] = [0x12, 0x00, 0x18, 0x02];
/// `Struct.fields` map entry (field 1), its key (1) and value (2).
const STRUCT_FIELD: u8 = 0x0A;
const ENTRY_KEY: u8 = 0x0A;
const ENTRY_VALUE: u8 = 0x12;
/// `Value.string_value` (3) and `Value.struct_value` (5).
const VALUE_STRING: u8 = 0x1A;
const VALUE_STRUCT: u8 = 0x2A;

/// Scratch buffers kept above this size are dropped after use, so one huge
/// identity does not pin its size on a worker thread for good.
const SCRATCH_KEEP: usize = 64 * 1024;

thread_local! {
    static SCRATCH: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
}

/// The constant part of one configuration's identity headers and metadata.
#[derive(Debug, PartialEq, Eq)]
pub struct Template {
    /// Built-in headers in output order, each with its encoded name
    /// (`key` tag, length, name).
    fields: Box<[(IdentityField, Box<[u8]>)]>,
    /// Mapped claims in output order.
    claims: Box<[MappedClaim]>,
}

/// A mapped claim (`identity_headers.claims`).
#[derive(Debug, PartialEq, Eq)]
struct MappedClaim {
    claim: Arc<str>,
    /// Its header name, encoded (`key` tag, length, name).
    header: Box<[u8]>,
    /// Its metadata key under `claims`, encoded the same way.
    key: Box<[u8]>,
}

/// Sizes of one identity's part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Measured {
    /// Bytes of the header entries (inside `OkHttpResponse`).
    pub ok: usize,
    /// Bytes of the metadata entries (inside the metadata `Struct`).
    pub metadata: usize,
}

/// A value of the identity: a string, or the scopes joined by spaces
/// (written piece by piece, so no joined copy is made).
#[derive(Clone, Copy)]
enum Val<'a> {
    Str(&'a str),
    Scopes(&'a [String]),
}

impl Val<'_> {
    fn raw_len(self) -> usize {
        match self {
            Val::Str(s) => s.len(),
            Val::Scopes(v) => v.iter().map(String::len).sum::<usize>() + v.len().saturating_sub(1),
        }
    }

    /// Length as a header value (`response::header_safe`: each control
    /// character becomes one space).
    fn header_len(self, clean: bool) -> usize {
        match (self, clean) {
            (_, true) => self.raw_len(),
            (Val::Str(s), false) => safe_len(s),
            (Val::Scopes(v), false) => {
                v.iter().map(|s| safe_len(s)).sum::<usize>() + v.len().saturating_sub(1)
            }
        }
    }

    /// Writes the value as it is (metadata, and clean header values).
    fn write_raw(self, out: &mut Vec<u8>) {
        match self {
            Val::Str(s) => out.extend_from_slice(s.as_bytes()),
            Val::Scopes(v) => {
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    out.extend_from_slice(s.as_bytes());
                }
            }
        }
    }

    /// Writes the value as a header value (`response::header_safe`).
    fn write_header(self, out: &mut Vec<u8>, clean: bool) {
        if clean {
            return self.write_raw(out);
        }
        match self {
            Val::Str(s) => put_safe(out, s),
            Val::Scopes(v) => {
                for (i, s) in v.iter().enumerate() {
                    if i > 0 {
                        out.push(b' ');
                    }
                    put_safe(out, s);
                }
            }
        }
    }
}

/// Does `s` need no replacement as a header value? True unless it holds
/// an ASCII control byte or the lead byte of U+0080..U+00BF (where the C1
/// controls are); those take the exact, slower path. Branch-free over the
/// bytes so it compiles to a vector loop.
fn clean(s: &str) -> bool {
    s.bytes().fold(0u8, |acc, b| {
        acc | u8::from(b < 0x20 || b == 0x7f || b == 0xc2)
    }) == 0
}

/// `response::header_safe`'s length for `s`.
fn safe_len(s: &str) -> usize {
    s.chars()
        .map(|c| if c.is_control() { 1 } else { c.len_utf8() })
        .sum()
}

/// `response::header_safe`, written into `out` without a copy of `s`.
fn put_safe(out: &mut Vec<u8>, s: &str) {
    let mut b = [0u8; 4];
    for c in s.chars() {
        let c = if c.is_control() { ' ' } else { c };
        out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
    }
}

fn put_varint(out: &mut Vec<u8>, mut v: usize) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `tag`, the length of `s`, `s`: one length-delimited field.
fn field(tag: u8, s: &str) -> Box<[u8]> {
    let mut v = Vec::with_capacity(s.len() + 3);
    v.push(tag);
    put_varint(&mut v, s.len());
    v.extend_from_slice(s.as_bytes());
    v.into_boxed_slice()
}

/// Bytes of a length-delimited field with `inner` bytes (one-byte tag).
fn delimited(inner: usize) -> usize {
    1 + encoded_len_varint(inner as u64) + inner
}

/// (`HeaderValue` length, `HeaderValueOption` length) of a header whose
/// encoded name takes `name` bytes and whose value `v` bytes. An empty
/// value is not written (proto3 default), as prost does.
fn header_lens(name: usize, v: usize) -> (usize, usize) {
    let hv = name + if v == 0 { 0 } else { delimited(v) };
    (hv, delimited(hv) + HVO_TAIL.len())
}

/// (`Value` length, entry length) of a string metadata field.
fn string_entry_lens(key: usize, v: usize) -> (usize, usize) {
    let value = delimited(v);
    (value, key + delimited(value))
}

impl Template {
    /// Compiles the names of one configuration (lower-cased by the caller).
    pub fn new(fields: &[(IdentityField, Box<str>)], claims: &[(Arc<str>, Box<str>)]) -> Self {
        Template {
            fields: fields.iter().map(|(f, n)| (*f, field(HV_KEY, n))).collect(),
            claims: claims
                .iter()
                .map(|(c, h)| MappedClaim {
                    claim: c.clone(),
                    header: field(HV_KEY, h),
                    key: field(ENTRY_KEY, c),
                })
                .collect(),
        }
    }

    /// Sizes of `id`'s part without writing it (`encoded_len`; the
    /// server's encode learns them from what it wrote).
    pub fn measure(&self, id: &Identity) -> Measured {
        let clean = clean_of(id);
        let mut ok = 0;
        for (f, name) in self.fields.iter() {
            if let Some(v) = field_value(id, *f) {
                ok += delimited(header_lens(name.len(), v.header_len(clean)).1);
            }
        }
        let mut claims = 0;
        for c in self.claims.iter() {
            if let Some(v) = claim_value(id, &c.claim) {
                ok += delimited(header_lens(c.header.len(), Val::Str(v).header_len(clean)).1);
                claims += delimited(string_entry_lens(c.key.len(), v.len()).1);
            }
        }
        let mut metadata = 0;
        for (i, v) in metadata_values(id).iter().enumerate() {
            if let Some(v) = v {
                metadata += delimited(string_entry_lens(METADATA_KEYS[i].len(), v.raw_len()).1);
            }
        }
        if claims > 0 {
            let value = delimited(claims);
            metadata += delimited(CLAIMS_KEY.len() + delimited(value));
        }
        Measured { ok, metadata }
    }

    /// Writes `id`'s header entries then its metadata entries at the end
    /// of `out`; returns the header entries' length.
    pub fn write(&self, id: &Identity, out: &mut Vec<u8>) -> usize {
        let clean = clean_of(id);
        let start = out.len();
        for (f, name) in self.fields.iter() {
            if let Some(v) = field_value(id, *f) {
                write_header(out, name, v, clean);
            }
        }
        let mut claims = 0;
        for c in self.claims.iter() {
            if let Some(v) = claim_value(id, &c.claim) {
                write_header(out, &c.header, Val::Str(v), clean);
                claims += delimited(string_entry_lens(c.key.len(), v.len()).1);
            }
        }
        let ok = out.len() - start;
        for (i, v) in metadata_values(id).iter().enumerate() {
            if let Some(v) = v {
                write_string_entry(out, METADATA_KEYS[i], *v);
            }
        }
        if claims > 0 {
            let value = delimited(claims);
            out.push(STRUCT_FIELD);
            put_varint(out, CLAIMS_KEY.len() + delimited(value));
            out.extend_from_slice(CLAIMS_KEY);
            out.push(ENTRY_VALUE);
            put_varint(out, value);
            out.push(VALUE_STRUCT);
            put_varint(out, claims);
            for c in self.claims.iter() {
                if let Some(v) = claim_value(id, &c.claim) {
                    write_string_entry(out, &c.key, Val::Str(v));
                }
            }
        }
        ok
    }

    /// Runs `f` on `id`'s part written into this thread's scratch buffer:
    /// (header entries, metadata entries).
    pub fn with_written<R>(&self, id: &Identity, f: impl FnOnce(&[u8], &[u8]) -> R) -> R {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut buf) => {
                buf.clear();
                let ok = self.write(id, &mut buf);
                let r = f(&buf[..ok], &buf[ok..]);
                if buf.capacity() > SCRATCH_KEEP {
                    *buf = Vec::new();
                }
                r
            }
            // Only if an encode ever ran inside another on one thread.
            Err(_) => {
                let mut buf = Vec::new();
                let ok = self.write(id, &mut buf);
                f(&buf[..ok], &buf[ok..])
            }
        })
    }
}

/// Encoded metadata keys (`key` tag, length, name): the fields of every
/// allow, in the order they are written (`claims` follows when a mapped
/// claim is present).
const METADATA_KEYS: [&[u8]; 7] = [
    b"\x0a\x07subject",
    b"\x0a\x06issuer",
    b"\x0a\x08username",
    b"\x0a\x06client",
    b"\x0a\x06method",
    b"\x0a\x08token_id",
    b"\x0a\x06scopes",
];
const CLAIMS_KEY: &[u8] = b"\x0a\x06claims";

fn write_header(out: &mut Vec<u8>, name: &[u8], v: Val<'_>, clean: bool) {
    let len = v.header_len(clean);
    let (hv, hvo) = header_lens(name.len(), len);
    if hvo < 0x80 {
        // The usual case: every length fits one byte.
        out.extend_from_slice(&[OK_HEADERS, hvo as u8, HVO_HEADER, hv as u8]);
    } else {
        out.push(OK_HEADERS);
        put_varint(out, hvo);
        out.push(HVO_HEADER);
        put_varint(out, hv);
    }
    out.extend_from_slice(name);
    if len > 0 {
        if len < 0x80 {
            out.extend_from_slice(&[HV_VALUE, len as u8]);
        } else {
            out.push(HV_VALUE);
            put_varint(out, len);
        }
        v.write_header(out, clean);
    }
    out.extend_from_slice(&HVO_TAIL);
}

fn write_string_entry(out: &mut Vec<u8>, key: &[u8], v: Val<'_>) {
    let len = v.raw_len();
    let (value, entry) = string_entry_lens(key.len(), len);
    if entry < 0x80 {
        // The usual case: every length fits one byte.
        out.extend_from_slice(&[STRUCT_FIELD, entry as u8]);
        out.extend_from_slice(key);
        out.extend_from_slice(&[ENTRY_VALUE, value as u8, VALUE_STRING, len as u8]);
    } else {
        out.push(STRUCT_FIELD);
        put_varint(out, entry);
        out.extend_from_slice(key);
        out.push(ENTRY_VALUE);
        put_varint(out, value);
        out.push(VALUE_STRING);
        put_varint(out, len);
    }
    v.write_raw(out);
}

/// Whether `id`'s header values can be copied as they are: scanned once
/// per identity (a cached JWT's values never change), then read back.
fn clean_of(id: &Identity) -> bool {
    match id.rendered.clean() {
        Some(c) => c,
        None => {
            let c = values_clean(id);
            id.rendered.set_clean(c);
            c
        }
    }
}

/// Are all of `id`'s header values free of anything `header_safe` replaces?
fn values_clean(id: &Identity) -> bool {
    let opt = |s: &Option<String>| s.as_deref().is_none_or(clean);
    clean(&id.subject)
        && opt(&id.username)
        && opt(&id.email)
        && opt(&id.client)
        && opt(&id.token_id)
        && id.issuer.as_deref().is_none_or(clean)
        && id.scopes.iter().all(|s| clean(s))
        && id.claims.iter().all(|(_, v)| clean(v))
}

/// An optional string field as a value.
fn opt(s: &Option<String>) -> Option<Val<'_>> {
    s.as_deref().map(Val::Str)
}

/// The value of a built-in header for `id`.
fn field_value(id: &Identity, f: IdentityField) -> Option<Val<'_>> {
    match f {
        IdentityField::Subject => Some(Val::Str(&id.subject)),
        IdentityField::Issuer => id.issuer.as_deref().map(Val::Str),
        IdentityField::Username => opt(&id.username),
        IdentityField::Email => opt(&id.email),
        IdentityField::Client => opt(&id.client),
        IdentityField::Scopes => Some(Val::Scopes(&id.scopes)),
        IdentityField::Method => Some(Val::Str(id.kind.as_str())),
        IdentityField::TokenId => opt(&id.token_id),
    }
}

/// The metadata values of `id`, in [`METADATA_KEYS`] order (`email` is not
/// among them: only headers carry it).
fn metadata_values(id: &Identity) -> [Option<Val<'_>>; 7] {
    [
        Some(Val::Str(&id.subject)),
        id.issuer.as_deref().map(Val::Str),
        opt(&id.username),
        opt(&id.client),
        Some(Val::Str(id.kind.as_str())),
        opt(&id.token_id),
        Some(Val::Scopes(&id.scopes)),
    ]
}

/// The value of a mapped claim for `id`, if the token carried it.
pub(super) fn claim_value<'a>(id: &'a Identity, claim: &Arc<str>) -> Option<&'a str> {
    id.claims
        .iter()
        .find(|(c, _)| c == claim)
        .map(|(_, v)| v.as_str())
}

/// Is the built-in header `f` set for `id`?
pub(super) fn field_present(id: &Identity, f: IdentityField) -> bool {
    field_value(id, f).is_some()
}

#[cfg(test)]
#[path = "tests/render.rs"]
pub(super) mod tests;
