//! Every stable rejection code finmesh answers with, declared once.
//!
//! Each layer declares its codes in one enum (`AuthCode`, `TenantCode`,
//! `RbacCode`, …), next to the layer, with the [`RejectionKind`] that fixes
//! its HTTP status and gRPC code. Layers refuse only through these enums
//! ([`RejectionCode::reject`]), so a code cannot be misspelt in one place
//! and a table of codes cannot drift from the code: [`all`] lists every
//! code of the layers compiled in, and a test checks the README's and the
//! module docs' tables against it.
//!
//! ```
//! use finmesh::codes::{self, RejectionCode};
//!
//! // Every code is a dotted string whose first part names its layer.
//! for code in codes::all() {
//!     assert!(code.as_str().starts_with(code.layer()));
//! }
//! # #[cfg(feature = "tenant")]
//! # {
//! use finmesh::tenant::TenantCode;
//! let rejection = TenantCode::Suspended.reject("tenant \"acme\" is suspended");
//! assert_eq!(rejection.code(), "tenant.suspended");
//! assert_eq!(rejection.http_status(), 403);
//! # }
//! ```

use std::borrow::Cow;
use std::fmt;

use crate::reject::{Rejection, RejectionKind};

/// A stable rejection code of one layer: its dotted string and its kind.
pub trait RejectionCode: Copy + fmt::Debug + Send + Sync + 'static {
    /// The stable dotted string, e.g. `tenant.suspended`.
    fn as_str(self) -> &'static str;

    /// The kind, which fixes the HTTP status and the gRPC code.
    fn kind(self) -> RejectionKind;

    /// A rejection with this code and a human `detail`.
    fn reject(self, detail: impl Into<Cow<'static, str>>) -> Rejection {
        Rejection::new(self.kind(), self.as_str(), detail)
    }
}

/// One declared code, as [`all`] lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CodeInfo {
    code: &'static str,
    kind: RejectionKind,
}

impl CodeInfo {
    /// The stable dotted string.
    pub fn as_str(self) -> &'static str {
        self.code
    }

    /// The kind, which fixes the HTTP status and the gRPC code.
    pub fn kind(self) -> RejectionKind {
        self.kind
    }

    /// The layer: the part of the code before the first dot.
    pub fn layer(self) -> &'static str {
        self.code.split('.').next().unwrap_or_default()
    }
}

impl<C: RejectionCode> From<C> for CodeInfo {
    fn from(code: C) -> Self {
        Self {
            code: code.as_str(),
            kind: code.kind(),
        }
    }
}

impl fmt::Display for CodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code)
    }
}

/// Declares a layer's codes: an enum whose variants carry their dotted
/// string and their [`RejectionKind`], with `ALL`, `as_str` and `kind`.
macro_rules! rejection_codes {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = ($code:literal, $kind:ident),
            )+
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        $vis enum $name {
            $(
                #[doc = concat!("`", $code, "` (", stringify!($kind), ").")]
                #[doc = ""]
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Every code of this layer, in declaration order.
            pub const ALL: &'static [Self] = &[$(Self::$variant),+];

            /// The stable dotted string.
            pub const fn as_str(self) -> &'static str {
                match self {
                    $(Self::$variant => $code,)+
                }
            }

            /// The kind, which fixes the HTTP status and the gRPC code.
            pub const fn kind(self) -> $crate::RejectionKind {
                match self {
                    $(Self::$variant => $crate::RejectionKind::$kind,)+
                }
            }
        }

        impl $crate::codes::RejectionCode for $name {
            fn as_str(self) -> &'static str {
                $name::as_str(self)
            }

            fn kind(self) -> $crate::RejectionKind {
                $name::kind(self)
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}
pub(crate) use rejection_codes;

/// Every code of the layers compiled in, layer by layer.
pub fn all() -> Vec<CodeInfo> {
    let mut all = Vec::new();
    fn extend<C: RejectionCode>(all: &mut Vec<CodeInfo>, codes: &[C]) {
        all.extend(codes.iter().map(|&c| CodeInfo::from(c)));
    }
    #[cfg(feature = "telemetry")]
    extend(&mut all, crate::telemetry::TelemetryCode::ALL);
    #[cfg(feature = "audit")]
    extend(&mut all, crate::audit::AuditCode::ALL);
    #[cfg(feature = "deadline")]
    extend(&mut all, crate::deadline::DeadlineCode::ALL);
    // Always: layers that need a principal refuse with `auth.missing`
    // whether or not the JWT layer is compiled in.
    extend(&mut all, crate::principal::AuthCode::ALL);
    #[cfg(feature = "tenant")]
    extend(&mut all, crate::tenant::TenantCode::ALL);
    #[cfg(feature = "rbac")]
    extend(&mut all, crate::rbac::RbacCode::ALL);
    #[cfg(feature = "ratelimit")]
    extend(&mut all, crate::ratelimit::RateLimitCode::ALL);
    #[cfg(feature = "idempotency")]
    extend(&mut all, crate::idempotency::IdempotencyCode::ALL);
    #[cfg(feature = "mtls")]
    extend(&mut all, crate::identity::IdentityCode::ALL);
    all
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_unique_dotted_and_name_their_layer() {
        let all = all();
        let mut seen = std::collections::HashSet::new();
        for code in &all {
            assert!(seen.insert(code.as_str()), "{code} declared twice");
            let (layer, rest) = code.as_str().split_once('.').expect("dotted");
            assert!(!layer.is_empty() && !rest.is_empty(), "{code}");
            assert!(
                code.as_str()
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b == b'.' || b == b'_'),
                "{code} is not lowercase dotted"
            );
        }
    }

    #[cfg(all(
        feature = "telemetry",
        feature = "audit",
        feature = "deadline",
        feature = "_jwt",
        feature = "rbac",
        feature = "idempotency"
    ))]
    mod documented {
        use super::*;

        /// Backticked `layer.word` tokens in `text` whose layer is one of
        /// `layers`: the codes a document names.
        fn codes_named_in<'a>(text: &'a str, layers: &[&str]) -> Vec<&'a str> {
            text.split('`')
                .skip(1)
                .step_by(2)
                .filter(|t| {
                    t.split_once('.').is_some_and(|(layer, rest)| {
                        layers.contains(&layer)
                            && !rest.is_empty()
                            // File names such as `rbac.yaml` and `audit.log`.
                            && !["yaml", "log", "json", "rs", "md"].contains(&rest)
                            && rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    })
                })
                .collect()
        }

        /// The doc comments (`//!` and `///` lines) of every source file.
        fn source_docs(dir: &std::path::Path, out: &mut Vec<(std::path::PathBuf, String)>) {
            for entry in std::fs::read_dir(dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    source_docs(&path, out);
                } else if path.extension().is_some_and(|e| e == "rs") {
                    let text = std::fs::read_to_string(&path).unwrap();
                    let docs = text
                        .lines()
                        .map(str::trim_start)
                        .filter(|l| l.starts_with("//!") || l.starts_with("///"))
                        .collect::<Vec<_>>()
                        .join("\n");
                    out.push((path, docs));
                }
            }
        }

        /// The README's and the module docs' tables cannot drift from the
        /// declared codes: every code they name exists, and every declared
        /// code is in the README and in its layer's module docs.
        #[test]
        fn documented_codes_are_the_declared_codes() {
            let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
            let all = all();
            let declared: std::collections::HashSet<&str> =
                all.iter().map(|c| c.as_str()).collect();
            let mut layers: Vec<&str> = all.iter().map(|c| c.layer()).collect();
            layers.dedup();

            let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
            let mut docs = vec![(root.join("README.md"), readme.clone())];
            source_docs(&root.join("src"), &mut docs);
            for (path, text) in &docs {
                for code in codes_named_in(text, &layers) {
                    assert!(
                        declared.contains(code),
                        "{} names `{code}`, which no layer declares",
                        path.display()
                    );
                }
            }

            let readme_codes = codes_named_in(&readme, &layers);
            for code in &all {
                assert!(
                    readme_codes.contains(&code.as_str()),
                    "`{code}` is not in the README's table of codes"
                );
                let module = root.join("src").join(code.layer()).join("mod.rs");
                let module_docs = &docs
                    .iter()
                    .find(|(p, _)| *p == module)
                    .unwrap_or_else(|| panic!("no {}", module.display()))
                    .1;
                assert!(
                    codes_named_in(module_docs, &layers).contains(&code.as_str()),
                    "`{code}` is not in the docs of {}",
                    module.display()
                );
            }
        }
    }
}
