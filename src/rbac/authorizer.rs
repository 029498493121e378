//! [`Authorizer`]: the current compiled policy, swapped atomically.

use std::fmt;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use arc_swap::ArcSwap;

use super::attributes::Attributes;
use super::compile::CompiledPolicy;
use super::decision::Decision;
use super::load::PolicyError;
use super::model::Policy;
use crate::config::{ConfigError, WatchOptions, Watched};

/// Decides [`Attributes`] against the current policy.
///
/// A handle: cheap to clone, every clone sees the same policy. Reading the
/// policy takes no lock (an atomic load); a new policy — from
/// [`replace`](Self::replace), or from the watched file — is compiled first
/// and swapped in whole, so a decision sees either the old policy or the
/// new one, never a mix.
///
/// Usable without the layer, for a second check inside a handler:
///
/// ```
/// use finmesh::rbac::{Action, Attributes, Authorizer};
///
/// let authorizer = Authorizer::from_yaml(include_str!("../../examples/rbac.yaml")).unwrap();
///
/// let approve = Action::named("approve", "transfers", "tr-42");
/// let groups = ["payments-approvers".into()];
/// let decision = authorizer.authorize(&Attributes::new("carol", &groups, Some("tenant-a"), &approve));
/// assert!(decision.is_allowed());
/// assert_eq!(decision.binding().unwrap().as_ref(), "RoleBinding/tenant-a/transfer-approvers");
/// ```
#[derive(Clone)]
pub struct Authorizer {
    source: Source,
}

#[derive(Clone)]
enum Source {
    Fixed(Arc<Fixed>),
    File(Watched<CompiledPolicy>),
}

struct Fixed {
    current: ArcSwap<CompiledPolicy>,
    generation: AtomicU64,
}

impl Authorizer {
    /// An authorizer for the Kubernetes RBAC manifests in `yaml`, loaded
    /// (see [`Policy::from_yaml`]) and compiled now; bindings whose roleRef
    /// names no existing role are logged (they grant nothing).
    ///
    /// To reload the manifests when their file changes, use
    /// [`watch`](Self::watch) instead.
    pub fn from_yaml(yaml: impl AsRef<[u8]>) -> Result<Self, PolicyError> {
        CompiledPolicy::from_yaml(yaml).map(Self::from_compiled)
    }

    /// An authorizer for `policy`, compiled now.
    pub fn new(policy: &Policy) -> Self {
        Self::from_compiled(policy.compile())
    }

    /// An authorizer for an already compiled policy (from
    /// [`Policy::compile`] or [`CompiledPolicy::from_yaml`]).
    pub fn from_compiled(policy: CompiledPolicy) -> Self {
        Self {
            source: Source::Fixed(Arc::new(Fixed {
                current: ArcSwap::from_pointee(policy),
                generation: AtomicU64::new(1),
            })),
        }
    }

    /// An authorizer that loads the manifests in `path` (see
    /// [`Policy::from_yaml`]) and reloads them when the file changes, with
    /// the default [`WatchOptions`].
    ///
    /// A new version is parsed, validated and compiled on the watcher's
    /// thread, then swapped in; a version that fails to load is logged and
    /// counted, and the last good policy stays (see [`crate::config`]). The
    /// initial load's error is returned, so a service does not start
    /// without a policy.
    pub fn watch(path: impl AsRef<Path>) -> Result<Self, ConfigError> {
        Self::watch_with(path, WatchOptions::new())
    }

    /// [`watch`](Self::watch) with explicit [`WatchOptions`].
    pub fn watch_with(path: impl AsRef<Path>, options: WatchOptions) -> Result<Self, ConfigError> {
        let watched = options.watch(path, |bytes: &[u8]| CompiledPolicy::from_yaml(bytes))?;
        Ok(Self::from_watched(watched))
    }

    /// An authorizer backed by an existing watched policy file, whose parse
    /// function is `|bytes: &[u8]| CompiledPolicy::from_yaml(bytes)`.
    pub fn from_watched(watched: Watched<CompiledPolicy>) -> Self {
        Self {
            source: Source::File(watched),
        }
    }

    /// Decides `attrs` against the current policy. No lock, no I/O, no
    /// allocation beyond the reference counts of the returned
    /// [`Decision`].
    pub fn authorize(&self, attrs: &Attributes<'_>) -> Decision {
        match &self.source {
            Source::Fixed(fixed) => fixed.current.load().authorize(attrs),
            Source::File(watched) => watched.borrow().authorize(attrs),
        }
    }

    /// The current compiled policy.
    pub fn policy(&self) -> Arc<CompiledPolicy> {
        match &self.source {
            Source::Fixed(fixed) => fixed.current.load_full(),
            Source::File(watched) => watched.current(),
        }
    }

    /// Compiles `policy` and swaps it in atomically. Returns `false`, and
    /// changes nothing, on a file-backed authorizer: there the file is the
    /// source of truth.
    pub fn replace(&self, policy: &Policy) -> bool {
        match &self.source {
            Source::Fixed(fixed) => {
                fixed.current.store(Arc::new(policy.compile()));
                fixed.generation.fetch_add(1, Ordering::AcqRel);
                true
            }
            Source::File(_) => false,
        }
    }

    /// 1 for the initial policy, plus one per policy swapped in.
    pub fn generation(&self) -> u64 {
        match &self.source {
            Source::Fixed(fixed) => fixed.generation.load(Ordering::Acquire),
            Source::File(watched) => watched.generation(),
        }
    }

    /// The watched file behind this authorizer, if any: for
    /// [`reload`](Watched::reload), [`last_error`](Watched::last_error) and
    /// the error count.
    pub fn watched(&self) -> Option<&Watched<CompiledPolicy>> {
        match &self.source {
            Source::Fixed(_) => None,
            Source::File(watched) => Some(watched),
        }
    }
}

impl fmt::Debug for Authorizer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Authorizer");
        d.field("generation", &self.generation());
        if let Some(watched) = self.watched() {
            d.field("path", &watched.path());
        }
        d.finish_non_exhaustive()
    }
}
