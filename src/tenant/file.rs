//! [`FileTenants`]: a registry loaded from a YAML or JSON file and reloaded
//! when the file changes.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use super::{Tenant, TenantNamespace, TenantRegistry};
use crate::config::{ConfigError, WatchOptions, Watched, parse_yaml_or_json};

/// Tenants read from a file, swapped atomically when a new version of the
/// file parses and validates.
///
/// Built on [`Watched`](crate::config::Watched): the file's directory is
/// watched, so in-place writes, rename-into-place and Kubernetes ConfigMap
/// `..data` symlink swaps are all seen; a new version replaces the tenants
/// only once all of it is valid, and an invalid version (bad syntax, an
/// invalid namespace, an unknown field, the same namespace twice) leaves
/// the last good one in force — logged, counted and kept in
/// [`last_error`](Self::last_error).
///
/// Lookups are an atomic load and one hash probe; they never wait for a
/// reload. Cloning is cheap and every clone sees the same tenants.
///
/// # File format
///
/// YAML, or JSON when the file name ends in `.json`: either a list of
/// tenants, or a mapping with one key, `tenants`, holding that list. Each
/// tenant has a `namespace` (a DNS-1123 label, required), a `status`
/// (`Active`, the default, or `Suspended`), an optional `displayName` and
/// optional string `labels`. Unknown fields are errors, so a typo such as
/// `stauts: Suspended` cannot silently leave a tenant active.
///
/// ```yaml
/// tenants:
///   - namespace: tenant-a
///     displayName: Tenant A
///     labels:
///       region: eu-west-1
///       plan: enterprise
///   - namespace: tenant-b
///     status: Suspended
/// ```
///
/// `examples/tenants.yaml` in the repository is a complete example.
///
/// An empty file is invalid rather than "no tenants", so that a truncated
/// write cannot lock every tenant out; write `tenants: []` to mean none.
/// The file is re-read only once its change events have been quiet for the
/// debounce window, but replacing it by renaming a complete temporary file
/// over it (what editors, `kubectl` and the kubelet do) is the way to be
/// sure a half-written version is never seen.
///
/// ```
/// use finmesh::tenant::{FileTenants, TenantRegistry};
///
/// # fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("tenants.json");
/// std::fs::write(&path, r#"[{"namespace": "tenant-a"}, {"namespace": "tenant-b", "status": "Suspended"}]"#)?;
///
/// let tenants = FileTenants::watch(&path)?;
/// assert!(tenants.lookup_str("tenant-a").unwrap().is_active());
/// assert!(!tenants.lookup_str("tenant-b").unwrap().is_active());
///
/// // An invalid version is refused; the last good tenants stay in force.
/// std::fs::write(&path, r#"[{"namespace": "Tenant-A"}]"#)?;
/// assert!(tenants.reload().is_err());
/// assert!(tenants.lookup_str("tenant-a").is_some());
/// assert!(tenants.last_error().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct FileTenants {
    watched: Watched<TenantIndex>,
}

/// The tenants of one version of the file, by namespace.
type TenantIndex = HashMap<TenantNamespace, Tenant>;

impl FileTenants {
    /// Loads `path` and reloads it whenever it changes, with the default
    /// [`WatchOptions`].
    ///
    /// Fails if the file cannot be read or is invalid, so a service does
    /// not start without its tenants, or if the watcher cannot start.
    pub fn watch(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::watch_with(WatchOptions::new(), path)
    }

    /// Loads `path` and reloads it whenever it changes, with `options`
    /// (debounce, polling fallback, size limit).
    pub fn watch_with(options: WatchOptions, path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let watched = options.watch(path, parser(path.to_path_buf()))?;
        Ok(Self { watched })
    }

    /// Loads `path` once, without watching it; [`reload`](Self::reload)
    /// re-reads it on demand.
    pub fn load(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        let path = path.as_ref();
        let watched = WatchOptions::new().load(path, parser(path.to_path_buf()))?;
        Ok(Self { watched })
    }

    /// Re-reads the file now: `Ok(true)` if a new version was applied,
    /// `Ok(false)` if it was unchanged, an error (and the old tenants kept)
    /// if it is invalid.
    pub fn reload(&self) -> Result<bool, ConfigError> {
        self.watched.reload()
    }

    /// Why the latest reload failed, until one succeeds. A readiness check
    /// may report it.
    pub fn last_error(&self) -> Option<ConfigError> {
        self.watched.last_error()
    }

    /// How many distinct reload failures there have been.
    pub fn error_count(&self) -> u64 {
        self.watched.error_count()
    }

    /// How many versions have been applied (1 after the initial load).
    pub fn generation(&self) -> u64 {
        self.watched.generation()
    }

    /// The file being watched.
    pub fn path(&self) -> &Path {
        self.watched.path()
    }

    /// How many tenants the current version has.
    pub fn len(&self) -> usize {
        self.watched.borrow().len()
    }

    /// Whether the current version has no tenants.
    pub fn is_empty(&self) -> bool {
        self.watched.borrow().is_empty()
    }

    /// A copy of every tenant of the current version, sorted by namespace.
    pub fn tenants(&self) -> Vec<Tenant> {
        let mut tenants: Vec<Tenant> = self.watched.borrow().values().cloned().collect();
        tenants.sort_by_key(|t| t.namespace);
        tenants
    }
}

impl TenantRegistry for FileTenants {
    fn lookup(&self, namespace: &TenantNamespace) -> Option<Tenant> {
        // An atomic load, no reference-count traffic on the fast path; the
        // guard is dropped before returning.
        self.watched.borrow().get(namespace).cloned()
    }

    fn lookup_str(&self, namespace: &str) -> Option<Tenant> {
        self.watched.borrow().get(namespace).cloned()
    }
}

impl fmt::Debug for FileTenants {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FileTenants")
            .field("path", &self.watched.path())
            .field("len", &self.len())
            .field("generation", &self.generation())
            .finish()
    }
}

fn parser(path: PathBuf) -> impl Fn(&[u8]) -> Result<TenantIndex, String> + Send + Sync + 'static {
    move |bytes| parse_tenants(&path, bytes)
}

/// Parses and validates a tenants file: the syntax is chosen by `path`'s
/// extension, every namespace must be valid, and no namespace may appear
/// twice (which would leave it ambiguous whether the tenant is suspended).
pub(crate) fn parse_tenants(path: &Path, bytes: &[u8]) -> Result<TenantIndex, String> {
    let TenantList(tenants) = parse_yaml_or_json(path, bytes)?;
    let mut index = HashMap::with_capacity(tenants.len());
    for (at, tenant) in tenants.into_iter().enumerate() {
        match index.entry(tenant.namespace) {
            Entry::Occupied(entry) => {
                return Err(format!(
                    "tenants[{at}]: namespace {:?} is listed more than once",
                    entry.key().as_str()
                ));
            }
            Entry::Vacant(entry) => {
                entry.insert(tenant);
            }
        }
    }
    Ok(index)
}

/// The file's document: a bare list of tenants, or `{tenants: [...]}`.
///
/// Written by hand rather than as an untagged enum so that an error inside
/// a tenant keeps the parser's message with its line and column.
struct TenantList(Vec<Tenant>);

impl<'de> Deserialize<'de> for TenantList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ListVisitor;

        impl<'de> Visitor<'de> for ListVisitor {
            type Value = TenantList;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of tenants, or a mapping with a `tenants` list")
            }

            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<Tenant>::deserialize(de::value::SeqAccessDeserializer::new(seq))
                    .map(TenantList)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                let mut tenants = None;
                while let Some(key) = map.next_key::<Key>()? {
                    match key {
                        Key::Tenants if tenants.is_some() => {
                            return Err(de::Error::duplicate_field("tenants"));
                        }
                        Key::Tenants => tenants = Some(map.next_value::<Vec<Tenant>>()?),
                    }
                }
                tenants
                    .map(TenantList)
                    .ok_or_else(|| de::Error::missing_field("tenants"))
            }
        }

        #[derive(Deserialize)]
        #[serde(field_identifier, rename_all = "lowercase")]
        enum Key {
            Tenants,
        }

        d.deserialize_any(ListVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tenant::TenantStatus;

    fn yaml(text: &str) -> Result<TenantIndex, String> {
        parse_tenants(Path::new("tenants.yaml"), text.as_bytes())
    }

    #[test]
    fn the_shipped_example_file_parses() {
        let index = parse_tenants(
            Path::new("tenants.yaml"),
            include_bytes!("../../examples/tenants.yaml"),
        )
        .unwrap();
        assert!(index.len() >= 3, "{index:?}");
        assert!(index.values().any(|t| t.status == TenantStatus::Suspended));
        assert!(index.values().any(|t| t.display_name.is_some()));
        assert!(index.values().any(|t| !t.labels.is_empty()));
    }

    #[test]
    fn list_and_mapping_forms_are_equivalent() {
        let list = yaml(
            "- namespace: tenant-a\n  displayName: Tenant A\n  labels: {region: eu}\n\
             - namespace: tenant-b\n  status: Suspended\n",
        )
        .unwrap();
        let doc = yaml(
            "tenants:\n- namespace: tenant-a\n  displayName: Tenant A\n  labels: {region: eu}\n\
             - namespace: tenant-b\n  status: Suspended\n",
        )
        .unwrap();
        assert_eq!(list, doc);
        let a = &list["tenant-a"];
        assert!(a.is_active());
        assert_eq!(a.display_name.as_deref(), Some("Tenant A"));
        assert_eq!(a.labels["region"], "eu");
        assert_eq!(list["tenant-b"].status, TenantStatus::Suspended);
    }

    #[test]
    fn json_is_chosen_by_extension() {
        let index = parse_tenants(
            Path::new("t.json"),
            br#"{"tenants": [{"namespace": "t1", "status": "Active", "labels": {"plan": "gold"}}]}"#,
        )
        .unwrap();
        assert_eq!(index["t1"].labels["plan"], "gold");
    }

    #[test]
    fn empty_files_are_refused_not_read_as_no_tenants() {
        for text in ["", "\n", "# only a comment\n", "~\n", "null\n"] {
            assert!(yaml(text).is_err(), "{text:?}");
        }
        assert!(parse_tenants(Path::new("t.json"), b"").is_err());
    }

    #[test]
    fn empty_lists_are_allowed() {
        assert!(yaml("[]").unwrap().is_empty());
        assert!(yaml("tenants: []").unwrap().is_empty());
    }

    #[test]
    fn invalid_files_are_refused_with_a_reason() {
        let cases: &[(&str, &str)] = &[
            ("- namespace: Tenant-A\n", "Tenant-A"),
            ("- namespace: tenant_a\n", "tenant_a"),
            ("- namespace: a\n- namespace: a\n", "more than once"),
            ("- namespace: a\n  stauts: Suspended\n", "stauts"),
            ("- namespace: a\n  status: suspended\n", "suspended"),
            ("- displayName: no namespace\n", "namespace"),
            ("tenant: []\n", "tenant"),
            ("tenants: []\ntenants: []\n", "tenants"),
            ("{}", "tenants"),
            ("just a string", "list of tenants"),
            ("- namespace: a\n  labels: [x]\n", "labels"),
            ("- [unclosed\n", ""),
        ];
        for (text, needle) in cases {
            let err = yaml(text).unwrap_err();
            assert!(err.contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn errors_inside_a_tenant_keep_their_position() {
        let err = yaml("tenants:\n  - namespace: ok\n  - namespace: Not-OK\n").unwrap_err();
        assert!(err.contains("line 3"), "{err}");
    }
}
