//! Kubernetes audit policies (issue 19): `AuditPolicy::from_yaml`.

use std::sync::Arc;

use finmesh::audit::{AuditAttributes, AuditPolicy, Level};

/// `AuditPolicy::from_yaml` on arbitrary bytes: never panics; a policy
/// that loads decides a level for requests of every shape, and that level
/// is the first matching rule's (so at most the highest level of any rule
/// — checked here against `Level::RequestResponse`, the top).
pub fn audit_policy(data: &[u8]) {
    let Ok(policy) = AuditPolicy::from_yaml(data) else {
        return;
    };
    assert!(AuditPolicy::from_yaml(data).is_ok());
    let groups: [Arc<str>; 2] = [Arc::from("system:authenticated"), Arc::from("traders")];
    let requests = [
        (
            "alice",
            "get",
            Some(""),
            "accounts",
            None,
            "tenant-a",
            "/v1/accounts",
        ),
        (
            "bob",
            "create",
            Some(""),
            "transfers",
            Some("t1"),
            "tenant-b",
            "/v1/transfer",
        ),
        ("", "get", None, "", None, "", "/healthz"),
        (
            "system:serviceaccount:a:b",
            "watch",
            Some("apps"),
            "pods",
            None,
            "",
            "/x",
        ),
    ];
    for (user, verb, api_group, resource, name, namespace, path) in requests {
        let mut attrs = AuditAttributes::default();
        attrs.user = (!user.is_empty()).then_some(user);
        attrs.groups = &groups;
        attrs.verb = verb;
        attrs.api_group = api_group;
        attrs.resource = resource;
        attrs.name = name;
        attrs.namespace = namespace;
        attrs.path = path;
        let decision = policy.decide(&attrs);
        assert_eq!(policy.level(&attrs), decision.level);
        assert!(decision.level <= Level::RequestResponse);
        if policy.rule_count() == 0 {
            assert_eq!(decision.level, Level::None);
        }
    }
}
