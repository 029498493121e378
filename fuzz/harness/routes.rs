//! RBAC's HTTP route templates (`HttpRoutes`): which template a request
//! path reaches.
//!
//! The input drives a small generator: up to eight templates (literals,
//! `{name}`, `{param}`, some with a custom verb, up to 24 segments, so
//! past the 16 the matcher holds on its stack) and up to sixteen request
//! paths over the same literals plus empty, encoded and hostile segments,
//! with trailing slashes and queries.
//!
//! Property: the template `HttpRoutes` picks, the resource it maps to and
//! the decoded name are those of a naive reference written out here from
//! the documented rules (same segment count, literals equal, parameters
//! non-empty; a custom verb for the method first, then literals in the
//! earliest positions, then the first registered; a trailing `/`
//! ignored; a `{name}` that is not UTF-8 once decoded matches nothing).

use finmesh::rbac::{Action, HttpRoutes, RequestMapper};
use http::{Method, Request};

const LITERALS: [&str; 4] = ["v1", "a", "b", "acc"];
const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// The input, a byte at a time (zeros once it runs out).
struct Bytes<'a>(std::slice::Iter<'a, u8>);

impl Bytes<'_> {
    fn next(&mut self) -> usize {
        usize::from(self.0.next().copied().unwrap_or(0))
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Seg {
    Literal(&'static str),
    Name,
    Param,
}

#[derive(Debug)]
struct Template {
    text: String,
    segments: Vec<Seg>,
    custom: Option<Method>,
    resource: String,
}

pub fn rbac_routes(data: &[u8]) {
    let mut input = Bytes(data.iter());
    let mut templates = Vec::new();
    for t in 0..input.next() % 9 {
        let mut segments = Vec::new();
        for _ in 0..1 + input.next() % 24 {
            segments.push(match input.next() % 7 {
                k @ 0..=3 => Seg::Literal(LITERALS[k]),
                4 if !segments.contains(&Seg::Name) => Seg::Name,
                _ => Seg::Param,
            });
        }
        let text: String = segments
            .iter()
            .enumerate()
            .map(|(i, s)| match s {
                Seg::Literal(l) => format!("/{l}"),
                Seg::Name => "/{name}".to_owned(),
                Seg::Param => format!("/{{p{i}}}"),
            })
            .collect();
        let custom = (input.next() % 4 == 0).then(|| METHODS[input.next() % METHODS.len()].clone());
        templates.push(Template {
            text,
            segments,
            custom,
            resource: format!("r{t}"),
        });
    }
    let mut routes = HttpRoutes::new();
    for t in &templates {
        routes = match &t.custom {
            Some(m) => routes.custom_verb(m.clone(), &t.text, "approve", &t.resource),
            None => routes.route(&t.text, &t.resource),
        };
    }

    for _ in 0..1 + input.next() % 16 {
        let method = METHODS[input.next() % METHODS.len()].clone();
        let mut path = String::new();
        for _ in 0..input.next() % 40 {
            path.push('/');
            path.push_str(match input.next() % 11 {
                k @ 0..=3 => LITERALS[k],
                4 => "",
                5 => "obj",
                6 => "%FF",
                7 => "a%2Fb",
                8 => "%41cc",
                9 => "%",
                _ => "x~y",
            });
        }
        if path.is_empty() || input.next() % 3 == 0 {
            path.push('/');
        }
        if input.next() % 4 == 0 {
            path.push_str("?watch=true");
        }
        let Ok(req) = Request::builder()
            .method(method.clone())
            .uri(&path)
            .body(())
        else {
            continue;
        };
        let want = reference(&templates, &method, req.uri().path());
        let got = routes.matched_template(&req);
        assert_eq!(
            got,
            want.as_ref().map(|(t, _)| t.text.as_str()),
            "{method} {path} over {templates:#?}"
        );
        match (routes.map(&req), want) {
            (Some(Action::Resource(r)), Some((t, name))) => {
                assert_eq!(r.combined_resource(), t.resource, "{method} {path}");
                assert_eq!(r.name(), name.as_deref(), "{method} {path}");
            }
            // Matched, but no verb for this method in the table.
            (None, Some((t, _))) => assert!(
                t.custom.is_none()
                    && !matches!(
                        method,
                        Method::GET
                            | Method::HEAD
                            | Method::POST
                            | Method::PUT
                            | Method::PATCH
                            | Method::DELETE
                    ),
                "{method} {path}: unmapped"
            ),
            (None, None) => {}
            (got, want) => panic!("{method} {path}: {got:?}, reference {want:?}"),
        }
    }
}

/// The template a path reaches, and its decoded `{name}`.
fn reference<'t>(
    templates: &'t [Template],
    method: &Method,
    path: &str,
) -> Option<(&'t Template, Option<String>)> {
    let path = match path.strip_suffix('/') {
        Some(p) if !p.is_empty() => p,
        _ => path,
    };
    let segments: Vec<&str> = path.strip_prefix('/')?.split('/').collect();
    let mut best: Option<(&Template, (bool, Vec<bool>))> = None;
    for t in templates {
        if t.segments.len() != segments.len() || t.custom.as_ref().is_some_and(|m| m != method) {
            continue;
        }
        let fits = t.segments.iter().zip(&segments).all(|(seg, s)| match seg {
            Seg::Literal(l) => l == s,
            Seg::Name | Seg::Param => !s.is_empty(),
        });
        if !fits {
            continue;
        }
        // Literals in earlier positions weigh more (the first 64).
        let literals: Vec<bool> = (0..64)
            .map(|i| matches!(t.segments.get(i), Some(Seg::Literal(_))))
            .collect();
        let rank = (t.custom.is_some(), literals);
        if best.as_ref().is_none_or(|(_, r)| rank > *r) {
            best = Some((t, rank));
        }
    }
    let (t, _) = best?;
    let name = match t.segments.iter().position(|s| *s == Seg::Name) {
        Some(i) => Some(String::from_utf8(percent_decode(segments[i])).ok()?),
        None => None,
    };
    Some((t, name))
}

/// `%XX` decoded; a `%` not followed by two hex digits stays as it is.
fn percent_decode(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let hex = |c: u8| (c as char).to_digit(16);
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && let (Some(h), Some(l)) = (
                b.get(i + 1).and_then(|&c| hex(c)),
                b.get(i + 2).and_then(|&c| hex(c)),
            )
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}
