//! The probe endpoints: query parsing and the Kubernetes-style text answers.

use std::fmt::Write as _;

use bytes::Bytes;
use http::header::{
    CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, X_CONTENT_TYPE_OPTIONS,
};
use http::{Response, StatusCode};
use percent_encoding::percent_decode_str;

use super::registry::MAX_CHECK_NAME_LEN;
use super::report::{CheckStatus, HealthReport};

/// At most this many `exclude` values are honoured per probe; the rest are
/// ignored (the query comes from the network).
pub(crate) const MAX_EXCLUDES: usize = 32;

/// What a probe's query string asks for.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct ProbeQuery {
    /// `verbose` is present (with any value, as in the apiserver).
    pub(crate) verbose: bool,
    /// `exclude` values, trimmed, without empties, at most [`MAX_EXCLUDES`].
    pub(crate) exclude: Vec<String>,
}

impl ProbeQuery {
    /// Parses `a=b&c` the way Go's `url.ParseQuery` does for these keys
    /// (`+` is a space, percent escapes are decoded); bounded and total.
    pub(crate) fn parse(query: Option<&str>) -> Self {
        let mut out = ProbeQuery::default();
        let Some(query) = query else { return out };
        for pair in query.split('&') {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            // Neither key is longer than this even percent-encoded; skip
            // decoding anything else.
            if key.len() > 24 {
                continue;
            }
            match decode(key).as_str() {
                "verbose" => out.verbose = true,
                "exclude" if out.exclude.len() < MAX_EXCLUDES => {
                    // A name longer than any check can still be echoed back
                    // as unknown, but not at any length.
                    let value = decode(value);
                    let name = value.trim();
                    if !name.is_empty() {
                        let end = floor_char_boundary(name, MAX_CHECK_NAME_LEN + 1);
                        out.exclude.push(name[..end].to_owned());
                    }
                }
                _ => {}
            }
        }
        out
    }
}

fn decode(s: &str) -> String {
    let s = s.replace('+', " ");
    percent_decode_str(&s).decode_utf8_lossy().into_owned()
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if s.len() <= max {
        return s.len();
    }
    (0..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

/// Renders a whole-probe answer: `ok`, or the per-check list (always on
/// failure, on success with `?verbose`) ending in `<endpoint> check passed`
/// or `<endpoint> check failed`. Failure reasons are never included.
pub(crate) fn render_report(
    report: &HealthReport,
    endpoint: &str,
    verbose: bool,
) -> (StatusCode, String) {
    let healthy = report.is_healthy();
    if healthy && !verbose {
        return (StatusCode::OK, "ok".to_owned());
    }
    let mut body = String::with_capacity(32 * (report.checks.len() + 2));
    for check in &report.checks {
        // Writing to a String cannot fail.
        let _ = match check.status {
            CheckStatus::Passed => writeln!(body, "[+]{} ok", check.name),
            CheckStatus::Excluded => writeln!(body, "[+]{} excluded: ok", check.name),
            // Security: the probe endpoints are unauthenticated,
            // so the reason goes to the log only.
            CheckStatus::Failed(_) => writeln!(body, "[-]{} failed: reason withheld", check.name),
        };
    }
    for warning in &report.warnings {
        let _ = writeln!(body, "warn: {warning} degraded: reason withheld");
    }
    if !report.unknown_excludes.is_empty() {
        let quoted: Vec<String> = report
            .unknown_excludes
            .iter()
            .map(|n| format!("{n:?}"))
            .collect();
        let _ = writeln!(
            body,
            "warn: some health checks cannot be excluded: no matches for {}",
            quoted.join(",")
        );
    }
    if healthy {
        let _ = writeln!(body, "{endpoint} check passed");
        (StatusCode::OK, body)
    } else {
        let _ = writeln!(body, "{endpoint} check failed");
        (StatusCode::SERVICE_UNAVAILABLE, body)
    }
}

/// Renders a single-check answer (`/livez/<check>`); `None` is an unknown
/// check (404).
pub(crate) fn render_single(name: &str, status: Option<&CheckStatus>) -> (StatusCode, String) {
    match status {
        None => (StatusCode::NOT_FOUND, "404 page not found\n".to_owned()),
        Some(CheckStatus::Failed(_)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("[-]{name} failed: reason withheld\n"),
        ),
        Some(CheckStatus::Passed | CheckStatus::Excluded) => (StatusCode::OK, "ok".to_owned()),
    }
}

/// The plain-text response; for HEAD the same status and headers without
/// the body.
pub(crate) fn text_response(status: StatusCode, body: String, head: bool) -> Response<Bytes> {
    let len = body.len();
    let mut res = Response::new(if head {
        Bytes::new()
    } else {
        Bytes::from(body)
    });
    *res.status_mut() = status;
    let headers = res.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    res
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::report::CheckReport;

    fn report(checks: &[(&str, CheckStatus)], unknown: &[&str]) -> HealthReport {
        HealthReport {
            checks: checks
                .iter()
                .map(|(n, s)| CheckReport {
                    name: (*n).into(),
                    status: s.clone(),
                })
                .collect(),
            unknown_excludes: unknown.iter().map(|s| (*s).to_owned()).collect(),
            warnings: Vec::new(),
        }
    }

    #[test]
    fn query_parsing() {
        let cases: &[(Option<&str>, bool, &[&str])] = &[
            (None, false, &[]),
            (Some(""), false, &[]),
            (Some("verbose"), true, &[]),
            (Some("verbose=false"), true, &[]),
            (Some("verbosex=1"), false, &[]),
            (Some("exclude=db&exclude=cache"), false, &["db", "cache"]),
            (Some("exclude=&exclude=+db+"), false, &["db"]),
            (Some("ex%63lude=a%2Fb&verbose=1"), true, &["a/b"]),
            (Some("exclude=%ff%fe"), false, &["\u{fffd}\u{fffd}"]),
        ];
        for (q, verbose, exclude) in cases {
            let got = ProbeQuery::parse(*q);
            assert_eq!(got.verbose, *verbose, "{q:?}");
            assert_eq!(got.exclude, *exclude, "{q:?}");
        }
        let many = vec!["exclude=x"; 1000].join("&");
        assert_eq!(ProbeQuery::parse(Some(&many)).exclude.len(), MAX_EXCLUDES);
        let long = format!("exclude={}", "é".repeat(500));
        let got = ProbeQuery::parse(Some(&long));
        assert!(got.exclude[0].len() <= MAX_CHECK_NAME_LEN + 1);
    }

    #[test]
    fn rendering_follows_the_apiserver() {
        let failed = CheckStatus::Failed("dial tcp: refused".into());
        let cases: Vec<(HealthReport, bool, StatusCode, &str)> = vec![
            (
                report(&[("ping", CheckStatus::Passed)], &[]),
                false,
                StatusCode::OK,
                "ok",
            ),
            (
                report(&[("ping", CheckStatus::Passed)], &[]),
                true,
                StatusCode::OK,
                "[+]ping ok\nlivez check passed\n",
            ),
            (
                report(
                    &[("ping", CheckStatus::Passed), ("db", failed.clone())],
                    &[],
                ),
                false,
                StatusCode::SERVICE_UNAVAILABLE,
                "[+]ping ok\n[-]db failed: reason withheld\nlivez check failed\n",
            ),
            (
                report(
                    &[("ping", CheckStatus::Passed), ("db", CheckStatus::Excluded)],
                    &["a", "b"],
                ),
                true,
                StatusCode::OK,
                "[+]ping ok\n[+]db excluded: ok\nwarn: some health checks cannot be excluded: no matches for \"a\",\"b\"\nlivez check passed\n",
            ),
            // Unknown excludes alone never turn a success verbose.
            (
                report(&[("ping", CheckStatus::Passed)], &["a"]),
                false,
                StatusCode::OK,
                "ok",
            ),
        ];
        for (r, verbose, status, body) in cases {
            let (got_status, got_body) = render_report(&r, "livez", verbose);
            assert_eq!((got_status, got_body.as_str()), (status, body));
            assert!(!got_body.contains("refused"));
        }
    }

    #[test]
    fn head_keeps_headers_and_drops_the_body() {
        let res = text_response(StatusCode::OK, "ok".into(), true);
        assert!(res.body().is_empty());
        assert_eq!(res.headers()[CONTENT_LENGTH], "2");
        assert_eq!(res.headers()[CACHE_CONTROL], "no-store");
    }
}
