//! RBAC decisions stay flat as the policy grows; compiling stays fast.
//!
//! `cargo bench --bench rbac -- --warm-up-time 1 --measurement-time 3`
//!
//! - `rbac_decision/{allow,deny}/{10,1000,100000}`: one `authorize` for a
//!   principal with three groups, in a policy of that many bindings. The
//!   principal's own grants are the same at every size; the rest are other
//!   users' and groups' bindings spread over 1,000 namespaces (including
//!   the principal's). Target: 100,000 within 1.5× of 10.
//! - `rbac_compile/100000`: `Policy::compile` of the 100,000-binding policy.
//!   Target: ≤ 1 s.
//! - `rbac_compile_aggregation/chain/{100,400}`: `Policy::compile` of a
//!   chain of that many aggregated ClusterRoles, each selecting the next,
//!   over a plain role of 1,000 rules. Target: 400 under 100 ms, and within
//!   4× of 100 (it was roles² × rules: 1.2 s and 16 s).
//! - `rbac_compile_aggregation/wide/400`: one aggregated ClusterRole
//!   selecting 400 plain roles of 10 rules each.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use finmesh::rbac::{
    Action, Attributes, Authorizer, ClusterRole, ClusterRoleBinding, LabelSelector, Policy,
    PolicyRule, Role, RoleBinding, RoleRef, Subject,
};

const SIZES: [usize; 3] = [10, 1_000, 100_000];

fn policy(bindings: usize) -> Policy {
    let mut policy = Policy::new()
        .with_cluster_role(ClusterRole::new(
            "reader",
            vec![PolicyRule::resources(
                ["get", "list", "watch"],
                [""],
                ["accounts", "accounts/balance"],
            )],
        ))
        .with_cluster_role(ClusterRole::new(
            "writer",
            vec![
                PolicyRule::resources(["*"], [""], ["accounts"]),
                PolicyRule::resources(["approve"], [""], ["transfers"]),
            ],
        ))
        .with_role(Role::new(
            "tenant-a",
            "teller",
            vec![
                PolicyRule::resources(["get", "update"], [""], ["accounts"])
                    .with_resource_names(["acc-1"]),
            ],
        ))
        // The principal's grant: its group "tellers" reads in tenant-a.
        .with_role_binding(RoleBinding::new(
            "tenant-a",
            "tellers-read",
            RoleRef::cluster_role("reader"),
            vec![Subject::group("tellers")],
        ));
    for i in 1..bindings {
        let ns = if i % 1_000 == 0 {
            "tenant-a".to_owned()
        } else {
            format!("tenant-{}", i % 1_000)
        };
        let subjects = vec![
            Subject::user(format!("user-{i}")),
            Subject::group(format!("group-{}", i % 5_000)),
            Subject::service_account(None, format!("sa-{i}")),
        ];
        if i % 10 == 1 {
            policy = policy.with_cluster_role_binding(ClusterRoleBinding::new(
                &format!("crb-{i}"),
                "reader",
                subjects,
            ));
        } else {
            policy = policy.with_role_binding(RoleBinding::new(
                &ns,
                &format!("rb-{i}"),
                RoleRef::cluster_role("writer"),
                subjects,
            ));
        }
    }
    assert_eq!(
        policy.role_bindings.len() + policy.cluster_role_bindings.len(),
        bindings
    );
    policy
}

fn decision(c: &mut Criterion) {
    let groups: Vec<Arc<str>> = ["staff", "emea", "tellers"]
        .into_iter()
        .map(Arc::from)
        .collect();
    let allow = Action::named("get", "accounts/balance", "acc-7");
    let deny = Action::named("delete", "accounts", "acc-7");
    // Every authorizer is built before any is measured, so that no size is
    // measured on a fresher heap than another.
    let authorizers: Vec<(usize, Authorizer)> = SIZES
        .iter()
        .map(|&n| (n, Authorizer::new(&policy(n))))
        .collect();
    let mut group = c.benchmark_group("rbac_decision");
    for (size, authorizer) in &authorizers {
        let size = *size;
        let attrs = Attributes::new("alice", &groups, Some("tenant-a"), &allow);
        assert!(authorizer.authorize(&attrs).is_allowed());
        group.bench_with_input(BenchmarkId::new("allow", size), &attrs, |b, attrs| {
            b.iter(|| authorizer.authorize(black_box(attrs)))
        });
        let attrs = Attributes::new("alice", &groups, Some("tenant-a"), &deny);
        assert!(!authorizer.authorize(&attrs).is_allowed());
        group.bench_with_input(BenchmarkId::new("deny", size), &attrs, |b, attrs| {
            b.iter(|| authorizer.authorize(black_box(attrs)))
        });
    }
    group.finish();
}

fn compile(c: &mut Criterion) {
    let policy = policy(100_000);
    let mut group = c.benchmark_group("rbac_compile");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(5));
    group.bench_function(BenchmarkId::from_parameter(100_000), |b| {
        b.iter(|| black_box(&policy).compile())
    });
    group.finish();
}

/// A distinct rule per `i`.
fn numbered_rule(i: usize) -> PolicyRule {
    PolicyRule::resources(["get"], [""], [format!("res-{i}")])
}

/// `roles` aggregated ClusterRoles, `agg-k` selecting `agg-(k-1)`, over
/// `base` and its `rules` rules; the last one is bound to `u`.
fn aggregation_chain(roles: usize, rules: usize) -> Policy {
    let mut base = ClusterRole::new("base", (0..rules).map(numbered_rule).collect());
    base.metadata.labels.insert("to-1".into(), "yes".into());
    let mut policy = Policy::new().with_cluster_role(base);
    for k in 1..=roles {
        let mut role = ClusterRole::aggregated(
            &format!("agg-{k}"),
            vec![LabelSelector::labelled(&format!("to-{k}"), "yes")],
        );
        role.metadata
            .labels
            .insert(format!("to-{}", k + 1), "yes".into());
        policy = policy.with_cluster_role(role);
    }
    policy.with_cluster_role_binding(ClusterRoleBinding::new(
        "top",
        &format!("agg-{roles}"),
        vec![Subject::user("u")],
    ))
}

/// One aggregated ClusterRole selecting `roles` plain roles of `rules`
/// rules each, bound to `u`.
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
        "top",
        "top",
        vec![Subject::user("u")],
    ))
}

fn aggregation(c: &mut Criterion) {
    let last = Action::resource("get", "res-999");
    let rows = [
        ("chain", 100, aggregation_chain(100, 1_000)),
        ("chain", 400, aggregation_chain(400, 1_000)),
        ("wide", 400, wide_aggregation(400, 10)),
    ];
    let mut group = c.benchmark_group("rbac_compile_aggregation");
    group.sample_size(10);
    for (shape, roles, policy) in &rows {
        let compiled = policy.compile();
        assert!(
            compiled
                .authorize(&Attributes::new("u", &[], Some("ns"), &last))
                .is_allowed()
        );
        group.bench_with_input(BenchmarkId::new(*shape, roles), policy, |b, policy| {
            b.iter(|| black_box(policy).compile())
        });
    }
    group.finish();
}

criterion_group!(benches, decision, compile, aggregation);
criterion_main!(benches);
