//! Parsing the `Idempotency-Key` header.

use std::fmt;
use std::sync::Arc;

use http::HeaderMap;
use http::header::HeaderName;

/// The request header (and gRPC metadata key) that carries the key.
pub const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// The response header that marks a replayed response.
pub const IDEMPOTENCY_REPLAYED: HeaderName = HeaderName::from_static("idempotency-replayed");

/// The longest key accepted, in characters (after unquoting).
pub const MAX_KEY_LEN: usize = 255;

/// A raw header longer than this cannot hold a valid key (255 characters,
/// each possibly escaped, plus quotes and surrounding whitespace).
const MAX_RAW_LEN: usize = 2 * MAX_KEY_LEN + 2 + 16;

/// A validated idempotency key: 1–255 visible ASCII characters.
///
/// The draft's structured-field string (`"abc"`, with the escapes `\"` and
/// `\\`) and Stripe's bare token (`abc`) name the same key.
///
/// ```
/// use finmesh::idempotency::IdempotencyKey;
///
/// let quoted: IdempotencyKey = "\"8e03978e-40d5\"".parse().unwrap();
/// let bare: IdempotencyKey = "8e03978e-40d5".parse().unwrap();
/// assert_eq!(quoted, bare);
/// assert_eq!(quoted.as_str(), "8e03978e-40d5");
/// assert!("\"a b\"".parse::<IdempotencyKey>().is_err());
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IdempotencyKey(Arc<str>);

impl IdempotencyKey {
    /// The key, unquoted and unescaped.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The key as a shared string (cheap to clone).
    pub fn as_arc(&self) -> &Arc<str> {
        &self.0
    }

    /// Parses a header value: a structured-field string or a bare token.
    pub fn parse(raw: &[u8]) -> Result<Self, InvalidKey> {
        if raw.len() > MAX_RAW_LEN {
            return Err(InvalidKey::Malformed("longer than 255 characters"));
        }
        // Structured fields allow leading and trailing spaces (RFC 8941 §4.2).
        let raw = trim(raw);
        let key = match raw.first() {
            None => return Err(InvalidKey::Malformed("empty")),
            Some(b'"') => unquote(raw)?,
            Some(_) => {
                // A bare token: visible ASCII, and none of the characters that
                // would make it read as a quoted string or a list.
                if let Some(&b) = raw
                    .iter()
                    .find(|&&b| !is_visible(b) || b == b'"' || b == b',')
                {
                    return Err(InvalidKey::Malformed(if is_visible(b) {
                        "a bare key cannot contain '\"' or ','"
                    } else {
                        "not visible ASCII"
                    }));
                }
                // Checked above: every byte is ASCII.
                String::from_utf8_lossy(raw).into_owned()
            }
        };
        match key.len() {
            0 => Err(InvalidKey::Malformed("empty")),
            n if n > MAX_KEY_LEN => Err(InvalidKey::Malformed("longer than 255 characters")),
            _ => Ok(Self(key.into())),
        }
    }

    /// Reads the key from request headers (or gRPC metadata, which travels
    /// as headers).
    ///
    /// `Ok(None)` when the header is absent; a header sent more than once is
    /// an error, since two keys cannot both be honoured.
    pub fn from_headers(headers: &HeaderMap) -> Result<Option<Self>, InvalidKey> {
        let mut values = headers.get_all(IDEMPOTENCY_KEY).iter();
        let Some(first) = values.next() else {
            return Ok(None);
        };
        if values.next().is_some() {
            return Err(InvalidKey::Repeated);
        }
        Self::parse(first.as_bytes()).map(Some)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for IdempotencyKey {
    type Err = InvalidKey;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s.as_bytes())
    }
}

/// Why an `Idempotency-Key` header was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InvalidKey {
    /// The header was sent more than once.
    Repeated,
    /// The value is not a valid key; the reason is for humans.
    Malformed(&'static str),
}

impl fmt::Display for InvalidKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Repeated => f.write_str("Idempotency-Key was sent more than once"),
            Self::Malformed(why) => write!(f, "Idempotency-Key is malformed: {why}"),
        }
    }
}

impl std::error::Error for InvalidKey {}

fn is_visible(b: u8) -> bool {
    (0x21..=0x7e).contains(&b)
}

fn trim(mut raw: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = raw {
        raw = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = raw {
        raw = rest;
    }
    raw
}

/// RFC 8941 §4.2.5 sf-string, then our own rule: visible ASCII only (so no
/// spaces inside the key). Parameters after the string are refused.
fn unquote(raw: &[u8]) -> Result<String, InvalidKey> {
    let mut out = String::with_capacity(raw.len());
    let mut bytes = raw[1..].iter();
    loop {
        match bytes.next() {
            None => return Err(InvalidKey::Malformed("unterminated quoted string")),
            Some(b'\\') => match bytes.next() {
                Some(&c @ (b'"' | b'\\')) => out.push(char::from(c)),
                _ => return Err(InvalidKey::Malformed("only \\\" and \\\\ may be escaped")),
            },
            Some(b'"') => break,
            Some(&c) if is_visible(c) => out.push(char::from(c)),
            Some(_) => return Err(InvalidKey::Malformed("not visible ASCII")),
        }
    }
    if bytes.next().is_some() {
        return Err(InvalidKey::Malformed("text after the quoted string"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn should_pass() {
        let long = "k".repeat(255);
        let long_quoted = format!("\"{long}\"");
        let rows: &[(&str, &str)] = &[
            ("abc", "abc"),
            ("\"abc\"", "abc"),
            ("  \"abc\"\t", "abc"),
            ("  abc ", "abc"),
            (
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
            ),
            ("\"a\\\"b\"", "a\"b"),
            ("\"a\\\\b\"", "a\\b"),
            ("\"a,b\"", "a,b"),
            ("k;v=1", "k;v=1"),
            (
                "~!#$%&'()*+-./:;<=>?@[]^_`{|}",
                "~!#$%&'()*+-./:;<=>?@[]^_`{|}",
            ),
            (&long, &long),
            (&long_quoted, &long),
        ];
        for (raw, want) in rows {
            let key = IdempotencyKey::parse(raw.as_bytes())
                .unwrap_or_else(|e| panic!("{raw:?} should pass: {e}"));
            assert_eq!(key.as_str(), *want, "{raw:?}");
        }
    }

    #[test]
    fn should_fail() {
        let too_long = "k".repeat(256);
        let too_long_quoted = format!("\"{too_long}\"");
        let way_too_long = "k".repeat(10_000);
        let rows: &[&str] = &[
            "",
            "   ",
            "\"\"",
            "\"abc",
            "\"abc\"x",
            "\"abc\";p=1",
            "\"a b\"",
            "a b",
            "\"a\\nb\"",
            "\"a\\",
            "ab\"c",
            "a,b",
            "a\tb",
            "\"é\"",
            "é",
            &too_long,
            &too_long_quoted,
            &way_too_long,
        ];
        for raw in rows {
            assert!(
                IdempotencyKey::parse(raw.as_bytes()).is_err(),
                "{raw:?} should fail"
            );
        }
        assert!(IdempotencyKey::parse(b"a\x00b").is_err());
        assert!(IdempotencyKey::parse(b"\"a\x7fb\"").is_err());
        assert!(IdempotencyKey::parse(b"\xff").is_err());
    }

    #[test]
    fn header_sent_twice_is_refused() {
        let mut headers = HeaderMap::new();
        assert_eq!(IdempotencyKey::from_headers(&headers), Ok(None));
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers)
                .unwrap()
                .unwrap()
                .as_str(),
            "a"
        );
        headers.append(IDEMPOTENCY_KEY, HeaderValue::from_static("a"));
        assert_eq!(
            IdempotencyKey::from_headers(&headers),
            Err(InvalidKey::Repeated)
        );
    }
}
