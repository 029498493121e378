//! Table-driven authorizer tests: shouldPass / shouldFail rows, mirroring
//! Kubernetes' `plugin/pkg/auth/authorizer/rbac/rbac_test.go`
//! (`TestAuthorizer`, `TestRuleMatches`) and the semantics of
//! `pkg/registry/rbac/validation/rule.go` (`appliesToUser`).

use std::sync::Arc;

use super::*;

/// One request: who, where, what.
struct Req {
    user: &'static str,
    groups: Vec<Arc<str>>,
    namespace: Option<&'static str>,
    action: Action,
}

fn groups(list: &str) -> Vec<Arc<str>> {
    list.split(',')
        .filter(|g| !g.is_empty())
        .map(Arc::from)
        .collect()
}

/// A resource request (`resource` may be `res/sub`) in the core group.
fn res(user: &'static str, g: &str, verb: &str, resource: &str, ns: &'static str) -> Req {
    Req {
        user,
        groups: groups(g),
        namespace: (!ns.is_empty()).then_some(ns),
        action: Action::Resource(ResourceAction::new(verb, "", resource)),
    }
}

/// A non-resource request.
fn url(user: &'static str, g: &str, verb: &str, path: &str) -> Req {
    Req {
        user,
        groups: groups(g),
        namespace: None,
        action: Action::non_resource(verb, path),
    }
}

impl Req {
    fn api_group(mut self, group: &str) -> Self {
        let Action::Resource(r) = &self.action else {
            unreachable!()
        };
        let mut a = ResourceAction::new(r.verb(), group, r.combined_resource());
        if let Some(n) = r.name() {
            a = a.with_name(n);
        }
        self.action = Action::Resource(a);
        self
    }

    fn name(mut self, name: &str) -> Self {
        let Action::Resource(r) = &self.action else {
            unreachable!()
        };
        self.action = Action::Resource(r.clone().with_name(name));
        self
    }

    /// A non-resource request that nonetheless carries a namespace (the
    /// tenant layer ran): RoleBindings still must not grant it.
    fn in_ns(mut self, ns: &'static str) -> Self {
        self.namespace = Some(ns);
        self
    }

    fn decide(&self, p: &CompiledPolicy) -> Decision {
        p.authorize(&Attributes::new(
            self.user,
            &self.groups,
            self.namespace,
            &self.action,
        ))
    }
}

impl std::fmt::Display for Req {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "user={} groups={:?} ns={:?} {}",
            self.user, self.groups, self.namespace, self.action
        )
    }
}

struct Case {
    name: &'static str,
    policy: Policy,
    should_pass: Vec<Req>,
    should_fail: Vec<Req>,
}

/// `newRule(verbs, apiGroups, resources, nonResourceURLs)` of rbac_test.go:
/// comma-separated lists, set as-is (also the mixed shapes the loader
/// refuses, as the Go test builds them in code).
fn rule(verbs: &str, api_groups: &str, resources: &str, urls: &str) -> PolicyRule {
    let split = |s: &str| s.split(',').map(str::to_owned).collect::<Vec<_>>();
    PolicyRule {
        verbs: split(verbs),
        api_groups: split(api_groups),
        resources: split(resources),
        resource_names: Vec::new(),
        non_resource_urls: split(urls),
    }
}

fn subjects(list: &[&str]) -> Vec<Subject> {
    list.iter()
        .map(|s| {
            let (kind, name) = s.split_once(':').unwrap();
            match kind {
                "User" => Subject::user(name),
                "Group" => Subject::group(name),
                // ServiceAccount:ns/name, or ServiceAccount:name (no namespace)
                "ServiceAccount" => match name.split_once('/') {
                    Some((ns, n)) => Subject::service_account(Some(ns), n),
                    None => Subject::service_account(None, name),
                },
                _ => panic!("kind {kind}"),
            }
        })
        .collect()
}

fn crb(name: &str, role: &str, subs: &[&str]) -> ClusterRoleBinding {
    ClusterRoleBinding::new(name, role, subjects(subs))
}

fn rb_cluster_role(ns: &str, name: &str, role: &str, subs: &[&str]) -> RoleBinding {
    RoleBinding::new(ns, name, RoleRef::cluster_role(role), subjects(subs))
}

fn rb_role(ns: &str, name: &str, role: &str, subs: &[&str]) -> RoleBinding {
    RoleBinding::new(ns, name, RoleRef::role(role), subjects(subs))
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            // TestAuthorizer case 0: a ClusterRole of everything, granted
            // through a RoleBinding, stays in the binding's namespace.
            name: "cluster role through a role binding stays in its namespace",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new("admin", vec![rule("*", "*", "*", "*")]))
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "admin",
                    "admin",
                    &["User:admin", "Group:admins"],
                )),
            should_pass: vec![
                res("admin", "", "get", "Pods", "ns1"),
                res("admin", "", "watch", "Pods", "ns1"),
                res("admin", "group1", "watch", "Foobar", "ns1"),
                res("joe", "admins", "watch", "Foobar", "ns1"),
                res("joe", "group1,admins", "watch", "Foobar", "ns1"),
            ],
            should_fail: vec![
                res("admin", "", "GET", "Pods", "ns2"),
                res("admin", "", "GET", "Nodes", ""),
                res("admin", "admins", "GET", "Pods", "ns2"),
                res("admin", "admins", "GET", "Nodes", ""),
                res("admin", "", "get", "Pods", "ns2"),
                res("admin", "", "get", "Nodes", ""),
                // Non-resource URLs are never granted by a RoleBinding.
                url("admin", "", "get", "/apis").in_ns("ns1"),
            ],
        },
        Case {
            // TestAuthorizer case 1: non-resource URLs.
            name: "non-resource urls: exact, star and prefix",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "non-resource-url-getter",
                    vec![rule("get", "", "", "/apis")],
                ))
                .with_cluster_role(ClusterRole::new(
                    "non-resource-url",
                    vec![rule("*", "", "", "/apis")],
                ))
                .with_cluster_role(ClusterRole::new(
                    "non-resource-url-prefix",
                    vec![rule("get", "", "", "/apis/*")],
                ))
                .with_cluster_role(ClusterRole::new(
                    "health",
                    vec![PolicyRule::non_resource_urls(["get"], ["/healthz/*"])],
                ))
                .with_cluster_role_binding(crb(
                    "getter",
                    "non-resource-url-getter",
                    &["User:foo", "Group:bar"],
                ))
                .with_cluster_role_binding(crb(
                    "all",
                    "non-resource-url",
                    &["User:admin", "Group:admin"],
                ))
                .with_cluster_role_binding(crb(
                    "prefix",
                    "non-resource-url-prefix",
                    &["User:prefixed", "Group:prefixed"],
                ))
                .with_cluster_role_binding(crb("health", "health", &["User:probe"])),
            should_pass: vec![
                url("foo", "", "get", "/apis"),
                url("", "bar", "get", "/apis"),
                url("admin", "", "get", "/apis"),
                url("", "admin", "get", "/apis"),
                url("admin", "", "watch", "/apis"),
                url("", "admin", "watch", "/apis"),
                url("prefixed", "", "get", "/apis/v1"),
                url("", "prefixed", "get", "/apis/v1"),
                url("prefixed", "", "get", "/apis/v1/foobar"),
                url("", "prefixed", "get", "/apis/v1/foorbar"),
                url("probe", "", "get", "/healthz/live"),
                url("probe", "", "get", "/healthz/ready/verbose"),
                // A ClusterRoleBinding grants whatever the tenant.
                url("probe", "", "get", "/healthz/live").in_ns("tenant-a"),
            ],
            should_fail: vec![
                // wrong verb
                url("foo", "", "watch", "/apis"),
                url("", "bar", "watch", "/apis"),
                // wrong path
                url("foo", "", "get", "/api/v1"),
                url("", "bar", "get", "/api/v1"),
                url("admin", "", "get", "/api/v1"),
                url("", "admin", "get", "/api/v1"),
                // not covered by the prefix
                url("prefixed", "", "get", "/api/v1"),
                url("", "prefixed", "get", "/api/v1"),
                url("prefixed", "", "get", "/apis"),
                url("probe", "", "get", "/healthz"),
                url("probe", "", "get", "/healthzz"),
                // a non-resource rule grants no resource
                res("foo", "", "get", "apis", ""),
            ],
        },
        Case {
            // TestAuthorizer case 2: a rule on a resource does not cover
            // its subresources.
            name: "resource rule does not cover subresources",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new("admin", vec![rule("*", "*", "pods", "*")]))
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "admin",
                    "admin",
                    &["User:admin", "Group:admins"],
                )),
            should_pass: vec![res("admin", "", "get", "pods", "ns1")],
            should_fail: vec![
                res("admin", "", "get", "pods/status", "ns1"),
                res("", "admins", "get", "pods/log", "ns1"),
            ],
        },
        Case {
            // TestAuthorizer case 3: and the other way round.
            name: "subresource rule does not cover the resource",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "admin",
                    vec![rule("*", "*", "pods/status", "*")],
                ))
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "admin",
                    "admin",
                    &["User:admin", "Group:admins"],
                )),
            should_pass: vec![res("admin", "", "get", "pods/status", "ns1")],
            should_fail: vec![
                res("admin", "", "get", "pods", "ns1"),
                res("admin", "", "get", "pods/log", "ns1"),
                res("admin", "", "get", "nodes/status", "ns1"),
            ],
        },
        Case {
            name: "star-slash-subresource matches that subresource of every resource",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "status-reader",
                    vec![PolicyRule::resources(["get"], [""], ["*/status"])],
                ))
                .with_cluster_role_binding(crb("status", "status-reader", &["User:sre"])),
            should_pass: vec![
                res("sre", "", "get", "pods/status", "ns1"),
                res("sre", "", "get", "accounts/status", ""),
            ],
            should_fail: vec![
                res("sre", "", "get", "pods", "ns1"),
                res("sre", "", "get", "pods/statuses", "ns1"),
                res("sre", "", "get", "pods/log", "ns1"),
            ],
        },
        Case {
            // TestRuleMatches: "star verb", "star group", "star resource",
            // "tuple expansion", "subresource expansion".
            name: "wildcard and tuple expansion",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "star-verb",
                    vec![PolicyRule::resources(["*"], ["group1"], ["resource1"])],
                ))
                .with_cluster_role(ClusterRole::new(
                    "star-group",
                    vec![PolicyRule::resources(["verb1"], ["*"], ["resource1"])],
                ))
                .with_cluster_role(ClusterRole::new(
                    "star-resource",
                    vec![PolicyRule::resources(["verb1"], ["group1"], ["*"])],
                ))
                .with_cluster_role(ClusterRole::new(
                    "tuple",
                    vec![PolicyRule::resources(
                        ["verb1", "verb2"],
                        ["group1", "group2"],
                        ["resource1", "resource2"],
                    )],
                ))
                .with_cluster_role(ClusterRole::new(
                    "sub",
                    vec![PolicyRule::resources(
                        ["*"],
                        ["*"],
                        ["resource1/subresource1"],
                    )],
                ))
                .with_cluster_role_binding(crb("a", "star-verb", &["User:star-verb"]))
                .with_cluster_role_binding(crb("b", "star-group", &["User:star-group"]))
                .with_cluster_role_binding(crb("c", "star-resource", &["User:star-resource"]))
                .with_cluster_role_binding(crb("d", "tuple", &["User:tuple"]))
                .with_cluster_role_binding(crb("e", "sub", &["User:sub"])),
            should_pass: vec![
                res("star-verb", "", "verb1", "resource1", "").api_group("group1"),
                res("star-verb", "", "verb2", "resource1", "").api_group("group1"),
                res("star-group", "", "verb1", "resource1", "").api_group("group1"),
                res("star-group", "", "verb1", "resource1", "").api_group("group2"),
                res("star-resource", "", "verb1", "resource1", "").api_group("group1"),
                res("star-resource", "", "verb1", "resource2", "").api_group("group1"),
                res("star-resource", "", "verb1", "resource2/sub", "").api_group("group1"),
                res("tuple", "", "verb1", "resource1", "").api_group("group1"),
                res("tuple", "", "verb2", "resource2", "").api_group("group2"),
                res("tuple", "", "verb1", "resource2", "").api_group("group2"),
                res("sub", "", "verb1", "resource1/subresource1", "").api_group("group1"),
                res("sub", "", "verb2", "resource1/subresource1", "").api_group("group2"),
            ],
            should_fail: vec![
                res("star-verb", "", "verb1", "resource1", "").api_group("group2"),
                res("star-verb", "", "verb1", "resource2", "").api_group("group1"),
                res("star-group", "", "verb2", "resource1", "").api_group("group1"),
                res("star-group", "", "verb1", "resource2", "").api_group("group1"),
                res("star-resource", "", "verb2", "resource1", "").api_group("group1"),
                res("star-resource", "", "verb1", "resource1", "").api_group("group2"),
                res("tuple", "", "verb3", "resource1", "").api_group("group1"),
                res("tuple", "", "verb1", "resource3", "").api_group("group1"),
                res("tuple", "", "verb1", "resource1", "").api_group("group3"),
                res("sub", "", "verb1", "resource1/subresource2", "").api_group("group1"),
                res("sub", "", "verb1", "resource2/subresource1", "").api_group("group1"),
                res("sub", "", "verb1", "resource1", "").api_group("group1"),
            ],
        },
        Case {
            name: "resourceNames: exact names, never create/list/watch/deletecollection",
            policy: Policy::new()
                .with_role(Role::new(
                    "tenant-a",
                    "one-account",
                    vec![
                        PolicyRule::resources(
                            [
                                "get",
                                "update",
                                "delete",
                                "create",
                                "list",
                                "watch",
                                "deletecollection",
                            ],
                            [""],
                            ["accounts"],
                        )
                        .with_resource_names(["acc-1"]),
                    ],
                ))
                .with_role_binding(rb_role("tenant-a", "one", "one-account", &["User:alice"])),
            should_pass: vec![
                res("alice", "", "get", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "update", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "delete", "accounts", "tenant-a").name("acc-1"),
            ],
            should_fail: vec![
                res("alice", "", "get", "accounts", "tenant-a").name("acc-2"),
                res("alice", "", "get", "accounts", "tenant-a"),
                res("alice", "", "list", "accounts", "tenant-a"),
                res("alice", "", "watch", "accounts", "tenant-a"),
                res("alice", "", "create", "accounts", "tenant-a"),
                res("alice", "", "deletecollection", "accounts", "tenant-a"),
                // even when a mapper names an object for them
                res("alice", "", "create", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "list", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "watch", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "deletecollection", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "get", "accounts/balance", "tenant-a").name("acc-1"),
            ],
        },
        Case {
            name: "service account subjects and namespace defaulting",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "reader",
                    vec![PolicyRule::resources(["get"], [""], ["accounts"])],
                ))
                // no namespace: defaults to the binding's (ns1)
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "local",
                    "reader",
                    &["ServiceAccount:sa-local"],
                ))
                // explicit namespace other than the binding's
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "remote",
                    "reader",
                    &["ServiceAccount:other/sa-remote"],
                ))
                .with_cluster_role_binding(crb(
                    "monitoring",
                    "reader",
                    &["ServiceAccount:monitoring/prom"],
                ))
                // a cluster binding's ServiceAccount without namespace matches nobody
                .with_cluster_role_binding(crb("nowhere", "reader", &["ServiceAccount:sa-local"])),
            should_pass: vec![
                res(
                    "system:serviceaccount:ns1:sa-local",
                    "",
                    "get",
                    "accounts",
                    "ns1",
                ),
                res(
                    "system:serviceaccount:other:sa-remote",
                    "",
                    "get",
                    "accounts",
                    "ns1",
                ),
                res(
                    "system:serviceaccount:monitoring:prom",
                    "",
                    "get",
                    "accounts",
                    "ns7",
                ),
                res(
                    "system:serviceaccount:monitoring:prom",
                    "",
                    "get",
                    "accounts",
                    "",
                ),
            ],
            should_fail: vec![
                res(
                    "system:serviceaccount:ns2:sa-local",
                    "",
                    "get",
                    "accounts",
                    "ns1",
                ),
                res(
                    "system:serviceaccount:ns1:sa-local",
                    "",
                    "get",
                    "accounts",
                    "ns2",
                ),
                res(
                    "system:serviceaccount:ns1:sa-local",
                    "",
                    "get",
                    "accounts",
                    "",
                ),
                res(
                    "system:serviceaccount:other:sa-remote",
                    "",
                    "get",
                    "accounts",
                    "other",
                ),
                res("sa-local", "", "get", "accounts", "ns1"),
                res(
                    "system:serviceaccount:ns1:sa-local:x",
                    "",
                    "get",
                    "accounts",
                    "ns1",
                ),
                res(
                    "system:serviceaccount::sa-local",
                    "",
                    "get",
                    "accounts",
                    "ns1",
                ),
                res(
                    "",
                    "system:serviceaccount:ns1:sa-local",
                    "get",
                    "accounts",
                    "ns1",
                ),
            ],
        },
        Case {
            name: "dangling roleRefs grant nothing",
            policy: Policy::new()
                .with_role(Role::new(
                    "ns2",
                    "reader",
                    vec![PolicyRule::resources(["*"], ["*"], ["*"])],
                ))
                .with_role_binding(rb_role("ns1", "missing-role", "nope", &["User:alice"]))
                // a Role of the same name in another namespace does not count
                .with_role_binding(rb_role("ns1", "other-ns-role", "reader", &["User:alice"]))
                .with_role_binding(rb_cluster_role(
                    "ns1",
                    "missing-cluster-role",
                    "nope",
                    &["User:alice"],
                ))
                .with_cluster_role_binding(crb("missing", "nope", &["User:alice"])),
            should_pass: vec![],
            should_fail: vec![
                res("alice", "", "get", "accounts", "ns1"),
                res("alice", "", "get", "accounts", "ns2"),
                res("alice", "", "get", "accounts", ""),
                url("alice", "", "get", "/healthz"),
            ],
        },
        Case {
            name: "roles are namespaced: cross-namespace denial",
            policy: Policy::new()
                .with_role(Role::new(
                    "tenant-a",
                    "editor",
                    vec![PolicyRule::resources(["*"], [""], ["accounts"])],
                ))
                .with_role_binding(rb_role(
                    "tenant-a",
                    "alice-edits",
                    "editor",
                    &["User:alice"],
                )),
            should_pass: vec![
                res("alice", "", "delete", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "create", "accounts", "tenant-a"),
            ],
            should_fail: vec![
                res("alice", "", "delete", "accounts", "tenant-b").name("acc-1"),
                res("alice", "", "delete", "accounts", "").name("acc-1"),
                res("bob", "", "delete", "accounts", "tenant-a").name("acc-1"),
                res("alice", "", "delete", "accounts", "tenant-a").api_group("apps"),
                res("alice", "", "delete", "transfers", "tenant-a"),
            ],
        },
        Case {
            name: "group subjects",
            policy: Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "reader",
                    vec![PolicyRule::resources(["get", "list"], [""], ["accounts"])],
                ))
                .with_cluster_role_binding(crb("auditors", "reader", &["Group:auditors"]))
                .with_role_binding(rb_cluster_role(
                    "tenant-a",
                    "tellers",
                    "reader",
                    &["Group:tellers"],
                )),
            should_pass: vec![
                res("erin", "auditors", "list", "accounts", "tenant-a"),
                res("erin", "staff,auditors", "get", "accounts", "tenant-z"),
                res("erin", "auditors", "get", "accounts", ""),
                res("tom", "tellers", "get", "accounts", "tenant-a"),
            ],
            should_fail: vec![
                // a user named like the group is not in it
                res("auditors", "", "get", "accounts", "tenant-a"),
                res("tom", "tellers", "get", "accounts", "tenant-b"),
                res("erin", "Auditors", "get", "accounts", "tenant-a"),
                res("erin", "auditors", "delete", "accounts", "tenant-a"),
            ],
        },
        Case {
            name: "empty policy denies everything",
            policy: Policy::new(),
            should_pass: vec![],
            should_fail: vec![
                res("alice", "", "get", "accounts", "tenant-a"),
                url("alice", "", "get", "/"),
            ],
        },
    ]
}

#[test]
fn authorizer_table() {
    let mut rows = 0;
    for case in cases() {
        let compiled = case.policy.compile();
        for req in &case.should_pass {
            rows += 1;
            let d = req.decide(&compiled);
            assert!(
                d.is_allowed(),
                "[{}] incorrectly restricted: {req}",
                case.name
            );
        }
        for req in &case.should_fail {
            rows += 1;
            let d = req.decide(&compiled);
            assert!(
                !d.is_allowed(),
                "[{}] incorrectly passed: {req} ({d})",
                case.name
            );
        }
    }
    assert!(rows >= 40, "the table has {rows} rows");
}

#[test]
fn decision_names_the_binding_and_role() {
    let policy = Policy::new()
        .with_role(Role::new(
            "tenant-a",
            "editor",
            vec![PolicyRule::resources(["*"], [""], ["accounts"])],
        ))
        .with_role_binding(rb_role(
            "tenant-a",
            "alice-edits",
            "editor",
            &["User:alice"],
        ))
        .with_cluster_role(ClusterRole::new(
            "reader",
            vec![PolicyRule::resources(["get"], [""], ["accounts"])],
        ))
        .with_cluster_role_binding(crb("readers", "reader", &["Group:staff"]));
    let compiled = policy.compile();

    let d = res("alice", "", "delete", "accounts", "tenant-a").decide(&compiled);
    assert_eq!(
        d.binding().map(|b| &**b),
        Some("RoleBinding/tenant-a/alice-edits")
    );
    assert_eq!(d.role().map(|r| &**r), Some("Role/tenant-a/editor"));

    // Cluster bindings are consulted first, as in Kubernetes.
    let d = res("alice", "staff", "get", "accounts", "tenant-a").decide(&compiled);
    assert_eq!(
        d.binding().map(|b| &**b),
        Some("ClusterRoleBinding/readers")
    );
    assert_eq!(d.role().map(|r| &**r), Some("ClusterRole/reader"));
    assert_eq!(
        d.to_string(),
        "allowed by ClusterRoleBinding/readers of ClusterRole/reader"
    );

    let d = res("bob", "", "get", "accounts", "tenant-a").decide(&compiled);
    assert_eq!((d.binding(), d.role()), (None, None));
}

#[test]
fn dangling_role_refs_are_reported() {
    let policy = Policy::new()
        .with_role_binding(rb_role("ns1", "b", "nope", &["User:alice"]))
        .with_cluster_role_binding(crb("c", "gone", &["User:alice"]));
    let compiled = policy.compile();
    assert_eq!(compiled.binding_count(), 2);
    assert_eq!(
        compiled.dangling_role_refs(),
        [
            "ClusterRoleBinding/c refers to missing ClusterRole \"gone\"",
            "RoleBinding/ns1/b refers to missing Role \"nope\"",
        ]
    );
}

#[test]
fn service_account_username_is_kubernetes_form() {
    assert_eq!(
        service_account_username("ns1", "sa"),
        "system:serviceaccount:ns1:sa"
    );
}

#[test]
fn authorizer_replace_swaps_the_policy() {
    let a = Authorizer::new(&Policy::new());
    let req = res("alice", "", "get", "accounts", "ns1");
    let decide = |a: &Authorizer| {
        a.authorize(&Attributes::new(
            req.user,
            &req.groups,
            req.namespace,
            &req.action,
        ))
    };
    assert!(!decide(&a).is_allowed());
    assert_eq!(a.generation(), 1);
    let clone = a.clone();
    assert!(
        a.replace(
            &Policy::new()
                .with_cluster_role(ClusterRole::new(
                    "r",
                    vec![PolicyRule::resources(["get"], [""], ["accounts"])]
                ))
                .with_cluster_role_binding(crb("b", "r", &["User:alice"]))
        )
    );
    assert!(decide(&clone).is_allowed());
    assert_eq!(clone.generation(), 2);
}

// ---------------------------------------------------------------------------
// Aggregation: the smallest consistent rule sets, in linear work
// ---------------------------------------------------------------------------

/// A distinct rule per `i`.
fn numbered_rule(i: usize) -> PolicyRule {
    PolicyRule::resources(["get"], [""], [format!("res-{i}")])
}

/// `top` ⊇ … ⊇ `agg-1` ⊇ `base`: `roles` aggregated ClusterRoles, each
/// selecting the next one down, over a plain role of `rules` rules.
fn aggregation_chain(roles: usize, rules: usize) -> Policy {
    let mut base = ClusterRole::new("base", (0..rules).map(numbered_rule).collect());
    base.metadata.labels.insert("to-1".into(), "yes".into());
    let mut policy = Policy::new().with_cluster_role(base);
    for k in 1..=roles {
        let name = if k == roles {
            "top".to_owned()
        } else {
            format!("agg-{k}")
        };
        let mut role = ClusterRole::aggregated(
            &name,
            vec![LabelSelector::labelled(&format!("to-{k}"), "yes")],
        );
        role.metadata
            .labels
            .insert(format!("to-{}", k + 1), "yes".into());
        policy = policy.with_cluster_role(role);
    }
    policy.with_cluster_role_binding(ClusterRoleBinding::new(
        "top-to-u",
        "top",
        vec![Subject::user("u")],
    ))
}

/// One aggregated `top` selecting `roles` plain roles of `rules` rules each.
fn wide_aggregation(roles: usize, rules: usize) -> Policy {
    let mut policy = Policy::new().with_cluster_role(ClusterRole::aggregated(
        "top",
        vec![LabelSelector::labelled("to-top", "yes")],
    ));
    for k in 0..roles {
        let mut role = ClusterRole::new(
            &format!("part-{k}"),
            (k * rules..(k + 1) * rules).map(numbered_rule).collect(),
        );
        role.metadata.labels.insert("to-top".into(), "yes".into());
        policy = policy.with_cluster_role(role);
    }
    policy.with_cluster_role_binding(ClusterRoleBinding::new(
        "top-to-u",
        "top",
        vec![Subject::user("u")],
    ))
}

/// Compiles `policy`, returning the work counted on this thread.
fn compile_work(policy: &Policy) -> (CompiledPolicy, u64) {
    aggregate::WORK.with(|w| w.set(0));
    let compiled = policy.compile();
    (compiled, aggregate::WORK.with(|w| w.get()))
}

fn allows_res(compiled: &CompiledPolicy, i: usize) -> bool {
    let resource = format!("res-{i}");
    let action = Action::resource("get", resource);
    compiled
        .authorize(&Attributes::new("u", &[], Some("ns"), &action))
        .is_allowed()
}

#[test]
fn compiling_an_aggregation_chain_is_linear_in_its_length() {
    let (short, short_work) = compile_work(&aggregation_chain(100, 1_000));
    let (long, long_work) = compile_work(&aggregation_chain(400, 1_000));
    for compiled in [&short, &long] {
        assert!(allows_res(compiled, 0) && allows_res(compiled, 999));
        assert!(!allows_res(compiled, 1_000));
    }
    // Re-inserting every role's rules every round was roles² × rules:
    // 16× from 100 to 400 roles.
    assert!(
        long_work * 10 <= short_work * 45,
        "100 roles: {short_work}, 400 roles: {long_work}"
    );
}

#[test]
fn compiling_a_wide_aggregation_is_linear_in_its_width() {
    let (narrow, narrow_work) = compile_work(&wide_aggregation(100, 10));
    let (wide, wide_work) = compile_work(&wide_aggregation(400, 10));
    assert!(allows_res(&narrow, 999) && !allows_res(&narrow, 1_000));
    assert!(allows_res(&wide, 3_999) && !allows_res(&wide, 4_000));
    assert!(
        wide_work * 10 <= narrow_work * 45,
        "100 roles: {narrow_work}, 400 roles: {wide_work}"
    );
}

/// The rule sets the fixed point this crate used to iterate gives (rounds
/// of every role's union until nothing changes, from empty), as sets.
fn reference_aggregation(roles: &[ClusterRole]) -> Vec<std::collections::HashSet<&PolicyRule>> {
    let selects = |i: usize, j: usize| {
        roles[j].metadata.name != roles[i].metadata.name
            && roles[i].aggregation_rule.as_ref().is_some_and(|a| {
                a.cluster_role_selectors
                    .iter()
                    .any(|s| s.matches(&roles[j].metadata.labels))
            })
    };
    let mut sets: Vec<std::collections::HashSet<&PolicyRule>> = roles
        .iter()
        .map(|r| match r.aggregation_rule {
            Some(_) => Default::default(),
            None => r.rules.iter().collect(),
        })
        .collect();
    loop {
        let next: Vec<_> = (0..roles.len())
            .map(|i| match roles[i].aggregation_rule {
                None => sets[i].clone(),
                Some(_) => (0..roles.len())
                    .filter(|&j| selects(i, j))
                    .flat_map(|j| sets[j].iter().copied())
                    .collect(),
            })
            .collect();
        if next == sets {
            return sets;
        }
        sets = next;
    }
}

#[test]
fn aggregation_matches_the_smallest_fixed_point_on_random_graphs_with_cycles() {
    let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut below = |n: usize| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) as usize % n
    };
    for _ in 0..300 {
        let n = 1 + below(8);
        let roles: Vec<ClusterRole> = (0..n)
            .map(|i| {
                let name = format!("r{}", below(n + 2));
                let mut role = if below(3) == 0 {
                    // Distinct rules: a plain role's own list is kept as it is.
                    let rules: std::collections::BTreeSet<usize> =
                        (0..below(4)).map(|_| below(6)).collect();
                    ClusterRole::new(&name, rules.into_iter().map(numbered_rule).collect())
                } else {
                    let selectors = (0..1 + below(2))
                        .map(|_| LabelSelector::labelled(&format!("l{}", below(4)), "y"))
                        .collect();
                    let mut role = ClusterRole::aggregated(&name, selectors);
                    // Replaced by the aggregation: never counts.
                    role.rules = vec![numbered_rule(100 + i)];
                    role
                };
                for _ in 0..below(3) {
                    role.metadata
                        .labels
                        .insert(format!("l{}", below(4)), "y".into());
                }
                role
            })
            .collect();
        let got = aggregate::aggregate(&roles);
        let want = reference_aggregation(&roles);
        for (i, (got, want)) in got.iter().zip(&want).enumerate() {
            let got: std::collections::HashSet<&PolicyRule> = got.iter().copied().collect();
            assert_eq!(&got, want, "role {i} of {roles:#?}");
        }
        for set in &got {
            let distinct: std::collections::HashSet<_> = set.iter().collect();
            assert_eq!(distinct.len(), set.len(), "no duplicate rules");
        }
    }
}
