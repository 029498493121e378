//! The `grpc-timeout` request header, parsed strictly.
//!
//! The gRPC over HTTP/2 spec defines `Timeout → TimeoutValue TimeoutUnit`,
//! where `TimeoutValue` is at most eight ASCII digits and `TimeoutUnit` one
//! of `H` (hours), `M` (minutes), `S` (seconds), `m` (milliseconds), `u`
//! (microseconds) or `n` (nanoseconds). Nothing else is accepted: no sign,
//! no whitespace, no empty value, no ninth digit. The input is bounded
//! (nine bytes at most) before any arithmetic, so no value can overflow.

use std::fmt;
use std::time::Duration;

/// The longest valid header value: eight digits and a unit.
const MAX_LEN: usize = 9;

/// A `grpc-timeout` value that does not follow the spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InvalidGrpcTimeout(());

impl fmt::Display for InvalidGrpcTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("grpc-timeout must be 1 to 8 ASCII digits followed by one of H M S m u n")
    }
}

impl std::error::Error for InvalidGrpcTimeout {}

/// Parses a `grpc-timeout` header value (`"100m"`, `"5S"`, `"1H"`).
///
/// ```
/// use std::time::Duration;
/// use finmesh::deadline::parse_grpc_timeout;
///
/// assert_eq!(parse_grpc_timeout(b"250m"), Ok(Duration::from_millis(250)));
/// assert!(parse_grpc_timeout(b"+1S").is_err());
/// assert!(parse_grpc_timeout(b"123456789n").is_err());
/// ```
pub fn parse_grpc_timeout(value: &[u8]) -> Result<Duration, InvalidGrpcTimeout> {
    if value.len() < 2 || value.len() > MAX_LEN {
        return Err(InvalidGrpcTimeout(()));
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let mut n: u64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return Err(InvalidGrpcTimeout(()));
        }
        // At most 8 digits: n < 10^8, so this cannot overflow.
        n = n * 10 + u64::from(d - b'0');
    }
    Ok(match unit[0] {
        b'H' => Duration::from_secs(n * 3600),
        b'M' => Duration::from_secs(n * 60),
        b'S' => Duration::from_secs(n),
        b'm' => Duration::from_millis(n),
        b'u' => Duration::from_micros(n),
        b'n' => Duration::from_nanos(n),
        _ => return Err(InvalidGrpcTimeout(())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_table() {
        let ok = |d: Duration| Some(d);
        let rows: &[(&str, Option<Duration>)] = &[
            // valid
            ("1H", ok(Duration::from_secs(3600))),
            ("2M", ok(Duration::from_secs(120))),
            ("30S", ok(Duration::from_secs(30))),
            ("100m", ok(Duration::from_millis(100))),
            ("1m", ok(Duration::from_millis(1))),
            ("250u", ok(Duration::from_micros(250))),
            ("999n", ok(Duration::from_nanos(999))),
            ("0n", ok(Duration::ZERO)),
            ("00000001S", ok(Duration::from_secs(1))),
            ("99999999H", ok(Duration::from_secs(99_999_999 * 3600))),
            ("12345678m", ok(Duration::from_millis(12_345_678))),
            // invalid
            ("", None),
            ("S", None),
            ("1", None),
            ("123456789S", None),
            ("+1S", None),
            ("-1S", None),
            (" 1S", None),
            ("1S ", None),
            ("1 S", None),
            ("1s", None),
            ("1h", None),
            ("1ms", None),
            ("1.5S", None),
            ("0x10m", None),
            ("１S", None),
            ("10", None),
            ("m100", None),
        ];
        assert!(rows.len() >= 15);
        for (input, want) in rows {
            let got = parse_grpc_timeout(input.as_bytes()).ok();
            assert_eq!(got, *want, "grpc-timeout {input:?}");
        }
    }
}
