//! Running a probe's checks and building its [`HealthReport`]; the built-in
//! `ping` and `shutdown` checks.

use std::sync::Arc;

use futures_util::future::join_all;

use super::registry::HealthRegistry;

/// Name of the built-in check present in both liveness and readiness; it
/// always passes (the process answers, so it is alive).
pub const PING_CHECK: &str = "ping";

/// Name of the built-in readiness check that fails from
/// [`HealthRegistry::begin_shutdown`] on.
pub const SHUTDOWN_CHECK: &str = "shutdown";

/// Which probe a check belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProbeKind {
    /// Is the process alive? A failure makes Kubernetes restart the pod, so
    /// liveness checks must only cover what a restart can fix.
    Liveness,
    /// Should the process receive traffic? A failure takes the pod out of
    /// the load balancer; it includes the built-in `shutdown` check.
    Readiness,
}

impl ProbeKind {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            ProbeKind::Liveness => "liveness",
            ProbeKind::Readiness => "readiness",
        }
    }
}

/// What one check reported in one probe.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckStatus {
    /// The check passed.
    Passed,
    /// The check failed, timed out or panicked. The reason is for logs and
    /// for code holding the registry, never for the probe response.
    Failed(Arc<str>),
    /// The probe asked to skip the check (`?exclude=`).
    Excluded,
}

/// One line of a [`HealthReport`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct CheckReport {
    /// The check's name.
    pub name: Arc<str>,
    /// What it reported.
    pub status: CheckStatus,
}

/// The result of one liveness or readiness probe.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct HealthReport {
    /// Every check in order: `ping`, the registered checks in registration
    /// order, then (readiness) `shutdown`.
    pub checks: Vec<CheckReport>,
    /// Excluded names that matched no check, sorted and deduplicated.
    pub unknown_excludes: Vec<String>,
    /// Readiness warnings raised now (see
    /// [`HealthRegistry::add_readiness_warning`]): they do not fail the
    /// probe.
    pub warnings: Vec<Arc<str>>,
}

impl HealthReport {
    /// True when no check failed.
    pub fn is_healthy(&self) -> bool {
        !self
            .checks
            .iter()
            .any(|c| matches!(c.status, CheckStatus::Failed(_)))
    }
}

/// The checks every registry has. Everything that treats them specially —
/// name reservation, lookup, single runs and reports — goes through here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Builtin {
    /// First in both probes; always passes.
    Ping,
    /// Last in readiness; fails while draining.
    Shutdown,
}

impl Builtin {
    pub(crate) const ALL: [Builtin; 2] = [Builtin::Ping, Builtin::Shutdown];

    pub(crate) fn name(self) -> &'static str {
        match self {
            Builtin::Ping => PING_CHECK,
            Builtin::Shutdown => SHUTDOWN_CHECK,
        }
    }

    fn belongs_to(self, kind: ProbeKind) -> bool {
        match self {
            Builtin::Ping => true,
            Builtin::Shutdown => kind == ProbeKind::Readiness,
        }
    }

    /// Reported before the registered checks (else after them).
    fn leads(self) -> bool {
        self == Builtin::Ping
    }

    /// The built-in check of `kind` called `name`, if any.
    pub(crate) fn of(kind: ProbeKind, name: &str) -> Option<Builtin> {
        Self::ALL
            .into_iter()
            .find(|b| b.belongs_to(kind) && b.name() == name)
    }

    fn status(self, registry: &HealthRegistry) -> CheckStatus {
        match self {
            Builtin::Shutdown if registry.is_shutting_down() => {
                CheckStatus::Failed("process is shutting down".into())
            }
            Builtin::Ping | Builtin::Shutdown => CheckStatus::Passed,
        }
    }
}

impl HealthRegistry {
    /// Whether `name` is a check of this probe (built-ins included).
    pub fn has_check(&self, kind: ProbeKind, name: &str) -> bool {
        Builtin::of(kind, name).is_some()
            || self.checks(kind).load().iter().any(|c| &*c.name == name)
    }

    /// Runs every liveness check (concurrently, each within its timeout).
    pub async fn liveness(&self) -> HealthReport {
        self.evaluate(ProbeKind::Liveness, &[]).await
    }

    /// Runs every readiness check (concurrently, each within its timeout).
    pub async fn readiness(&self) -> HealthReport {
        self.evaluate(ProbeKind::Readiness, &[]).await
    }

    /// Runs the checks of `kind` except those named in `exclude`.
    pub async fn evaluate(&self, kind: ProbeKind, exclude: &[&str]) -> HealthReport {
        let checks = self.checks(kind).load_full();
        let excluded = |name: &str| exclude.contains(&name);

        let runs = checks
            .iter()
            .filter(|c| !excluded(&c.name))
            .map(|c| Arc::clone(c).outcome(self.cache_interval()));
        let mut outcomes = join_all(runs).await.into_iter();

        let builtins = |leading: bool| {
            Builtin::ALL
                .into_iter()
                .filter(move |b| b.belongs_to(kind) && b.leads() == leading)
                .map(|b| CheckReport {
                    name: b.name().into(),
                    status: if excluded(b.name()) {
                        CheckStatus::Excluded
                    } else {
                        b.status(self)
                    },
                })
        };
        let mut report = HealthReport {
            checks: Vec::with_capacity(checks.len() + Builtin::ALL.len()),
            unknown_excludes: Vec::new(),
            warnings: if kind == ProbeKind::Readiness {
                self.raised_warnings()
            } else {
                Vec::new()
            },
        };
        report.checks.extend(builtins(true));
        for check in checks.iter() {
            let status = if excluded(&check.name) {
                CheckStatus::Excluded
            } else {
                match outcomes.next() {
                    Some(Ok(())) => CheckStatus::Passed,
                    Some(Err(reason)) => CheckStatus::Failed(reason),
                    // join_all yields one outcome per check it was given.
                    None => CheckStatus::Failed("check did not run".into()),
                }
            };
            report.checks.push(CheckReport {
                name: Arc::clone(&check.name),
                status,
            });
        }
        report.checks.extend(builtins(false));

        let mut unknown: Vec<String> = exclude
            .iter()
            .filter(|name| !report.checks.iter().any(|c| &*c.name == **name))
            .map(|name| (*name).to_owned())
            .collect();
        unknown.sort_unstable();
        unknown.dedup();
        report.unknown_excludes = unknown;

        if kind == ProbeKind::Readiness && exclude.is_empty() {
            self.record_readiness(report.is_healthy());
        }
        report
    }

    /// Runs one check of `kind` by name; `None` when there is no such check.
    pub async fn check(&self, kind: ProbeKind, name: &str) -> Option<CheckStatus> {
        if let Some(builtin) = Builtin::of(kind, name) {
            return Some(builtin.status(self));
        }
        let check = self
            .checks(kind)
            .load()
            .iter()
            .find(|c| &*c.name == name)
            .cloned()?;
        Some(match check.outcome(self.cache_interval()).await {
            Ok(()) => CheckStatus::Passed,
            Err(reason) => CheckStatus::Failed(reason),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn shutdown_fails_readiness_only() {
        let r = HealthRegistry::new();
        assert!(r.readiness().await.is_healthy());
        r.begin_shutdown();
        let ready = r.readiness().await;
        assert!(!ready.is_healthy());
        assert_eq!(ready.checks.last().unwrap().name.as_ref(), SHUTDOWN_CHECK);
        assert!(r.liveness().await.is_healthy());
    }

    #[tokio::test]
    async fn excludes_skip_checks_and_unknown_ones_are_reported() {
        let r = HealthRegistry::new();
        r.add_readiness_check("db", Duration::from_secs(1), || async {
            Err("down".to_owned())
        })
        .unwrap();
        let report = r
            .evaluate(ProbeKind::Readiness, &["db", "zz", "aa", "zz"])
            .await;
        assert!(report.is_healthy());
        assert_eq!(report.checks[1].status, CheckStatus::Excluded);
        assert_eq!(report.unknown_excludes, ["aa", "zz"]);
    }

    /// Every place a built-in is special agrees on which exist where.
    #[tokio::test]
    async fn builtins_agree_across_lookup_single_runs_and_reports() {
        let r = HealthRegistry::new();
        r.begin_shutdown();
        let table: &[(ProbeKind, &str, Option<CheckStatus>)] = &[
            (ProbeKind::Liveness, PING_CHECK, Some(CheckStatus::Passed)),
            (ProbeKind::Readiness, PING_CHECK, Some(CheckStatus::Passed)),
            (ProbeKind::Liveness, SHUTDOWN_CHECK, None),
            (
                ProbeKind::Readiness,
                SHUTDOWN_CHECK,
                Some(CheckStatus::Failed("process is shutting down".into())),
            ),
        ];
        for (kind, name, want) in table {
            assert_eq!(r.has_check(*kind, name), want.is_some(), "{kind:?} {name}");
            assert_eq!(&r.check(*kind, name).await, want, "{kind:?} {name}");
            let report = r.evaluate(*kind, &[]).await;
            let line = report.checks.iter().find(|c| &*c.name == *name);
            assert_eq!(line.map(|c| &c.status), want.as_ref(), "{kind:?} {name}");
        }
        let names = |report: HealthReport| {
            report
                .checks
                .iter()
                .map(|c| c.name.to_string())
                .collect::<Vec<_>>()
        };
        r.add_readiness_check("db", Duration::from_secs(1), || async { Ok(()) })
            .unwrap();
        assert_eq!(names(r.readiness().await), ["ping", "db", "shutdown"]);
        assert_eq!(names(r.liveness().await), ["ping"]);
        let excluded = r.evaluate(ProbeKind::Readiness, &["shutdown"]).await;
        assert!(excluded.is_healthy());
        assert_eq!(excluded.checks[2].status, CheckStatus::Excluded);
    }
}
