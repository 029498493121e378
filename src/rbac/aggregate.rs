//! ClusterRole aggregation (`aggregationRule`), resolved at compile time.
//!
//! Linear in the policy: the selection graph is built through an index of
//! labels, resolved once in topological order (Tarjan's strongly connected
//! components, which come out dependencies first), and a role whose rules
//! are exactly another's shares that role's rule set instead of copying it.

use std::sync::Arc;

use super::compile::{HashMap, HashSet};
use super::model::{ClusterRole, PolicyRule};

/// A role's rules, shared between the roles that have exactly these rules.
pub(super) type RuleSet<'p> = Arc<[&'p PolicyRule]>;

/// The rules of every ClusterRole (by index), as Kubernetes' ClusterRole
/// aggregation controller fills them in: a plain role keeps its own rules;
/// an aggregated role gets the union, without duplicates, of the rules of
/// every ClusterRole of another name that a selector matches. An
/// aggregated role's own `rules` are replaced, and aggregated roles feed
/// each other (`admin` ⊇ `edit` ⊇ `view`).
///
/// Aggregated roles that select each other give the smallest consistent
/// rule set: every role of such a cycle gets the union of what the cycle
/// selects outside itself. This differs from the live controller
/// deliberately: there, rules an aggregated role's manifest listed can
/// survive by going round the cycle; here they never count.
///
/// The order of a set's rules is unspecified (a decision only asks whether
/// any rule allows).
pub(super) fn aggregate(roles: &[ClusterRole]) -> Vec<RuleSet<'_>> {
    let selected = selection_graph(roles);
    let mut sets: Vec<Option<RuleSet<'_>>> = roles
        .iter()
        .zip(&selected)
        .map(|(role, selects)| {
            selects.is_none().then(|| {
                work(role.rules.len());
                role.rules.iter().collect()
            })
        })
        .collect();
    let mut in_component = vec![false; roles.len()];
    for component in components(&selected) {
        component.iter().for_each(|&m| in_component[m] = true);
        // Every role the component selects outside itself is resolved:
        // components come out dependencies first.
        let inputs = component
            .iter()
            .flat_map(|&m| selected[m].as_deref().unwrap_or_default())
            .filter(|&&j| !in_component[j])
            .filter_map(|&j| sets[j].as_ref());
        let set = union(inputs);
        component.iter().for_each(|&m| in_component[m] = false);
        for m in component {
            sets[m] = Some(Arc::clone(&set));
        }
    }
    sets.into_iter()
        .map(|set| set.unwrap_or_else(|| Arc::from([])))
        .collect()
}

/// For each ClusterRole, `None` when it is plain, or the roles its
/// selectors match (another name), in name order.
fn selection_graph(roles: &[ClusterRole]) -> Vec<Option<Vec<usize>>> {
    // A selector with `matchLabels` only looks at the roles carrying its
    // first label, so a chain of roles selecting the next costs one lookup
    // per link rather than a scan of every role.
    let mut by_label: HashMap<(&str, &str), Vec<usize>> = HashMap::default();
    for (j, role) in roles.iter().enumerate() {
        for (k, v) in &role.metadata.labels {
            by_label.entry((k, v)).or_default().push(j);
        }
    }
    let all: Vec<usize> = (0..roles.len()).collect();
    roles
        .iter()
        .map(|role| {
            let selectors = &role.aggregation_rule.as_ref()?.cluster_role_selectors;
            let name = role.metadata.name.as_str();
            let mut matched: Vec<usize> = Vec::new();
            for s in selectors {
                let candidates = match s.match_labels.iter().next() {
                    Some((k, v)) => by_label
                        .get(&(k.as_str(), v.as_str()))
                        .map_or(&[][..], Vec::as_slice),
                    None => &all,
                };
                work(candidates.len());
                matched.extend(candidates.iter().copied().filter(|&j| {
                    roles[j].metadata.name != name && s.matches(&roles[j].metadata.labels)
                }));
            }
            matched.sort_unstable_by(|&a, &b| {
                roles[a]
                    .metadata
                    .name
                    .cmp(&roles[b].metadata.name)
                    .then(a.cmp(&b))
            });
            matched.dedup();
            Some(matched)
        })
        .collect()
}

/// The strongly connected components of the aggregated roles (Tarjan,
/// without recursion: a long chain must not exhaust the stack), each
/// after every component it selects.
fn components(selected: &[Option<Vec<usize>>]) -> Vec<Vec<usize>> {
    const UNSEEN: usize = usize::MAX;
    let n = selected.len();
    let mut index = vec![UNSEEN; n];
    let mut low = vec![0; n];
    let mut on_stack = vec![false; n];
    let mut stack: Vec<usize> = Vec::new();
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut next = 0;
    let edges = |v: usize| selected[v].as_deref().unwrap_or_default();
    for root in 0..n {
        if selected[root].is_none() || index[root] != UNSEEN {
            continue;
        }
        // (role, next edge to follow)
        let mut calls: Vec<(usize, usize)> = vec![(root, 0)];
        index[root] = next;
        low[root] = next;
        next += 1;
        stack.push(root);
        on_stack[root] = true;
        while let Some(&(v, i)) = calls.last() {
            if let Some(&w) = edges(v).get(i) {
                if let Some(top) = calls.last_mut() {
                    top.1 += 1;
                }
                // Plain roles are leaves, resolved already.
                if selected[w].is_none() {
                    continue;
                }
                if index[w] == UNSEEN {
                    index[w] = next;
                    low[w] = next;
                    next += 1;
                    stack.push(w);
                    on_stack[w] = true;
                    calls.push((w, 0));
                } else if on_stack[w] {
                    low[v] = low[v].min(index[w]);
                }
                continue;
            }
            calls.pop();
            if let Some(&(u, _)) = calls.last() {
                low[u] = low[u].min(low[v]);
            }
            if low[v] == index[v] {
                let mut component = Vec::new();
                while let Some(w) = stack.pop() {
                    on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                out.push(component);
            }
        }
    }
    out
}

/// The union of `inputs` without duplicates. When it is one of them (one
/// input, or the others add nothing), that set is shared, not copied.
fn union<'a, 'p: 'a>(inputs: impl Iterator<Item = &'a RuleSet<'p>>) -> RuleSet<'p> {
    let mut seen_sets: HashSet<*const ()> = HashSet::default();
    let distinct: Vec<&RuleSet<'p>> = inputs
        .filter(|set| !set.is_empty() && seen_sets.insert(Arc::as_ptr(set).cast::<()>()))
        .collect();
    let largest = match distinct.as_slice() {
        [] => return Arc::from([]),
        [one] => return Arc::clone(one),
        many => many.iter().copied().max_by_key(|set| set.len()),
    };
    let mut seen: HashSet<&PolicyRule> = HashSet::default();
    let mut rules: Vec<&PolicyRule> = Vec::new();
    for set in &distinct {
        work(set.len());
        rules.extend(set.iter().copied().filter(|&rule| seen.insert(rule)));
    }
    match largest {
        Some(largest) if largest.len() == rules.len() => Arc::clone(largest),
        _ => rules.into(),
    }
}

#[cfg(test)]
thread_local! {
    /// Rules and selector candidates visited while compiling on this
    /// thread: tests assert it grows linearly with the policy.
    pub(super) static WORK: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

/// Counts `n` units of compile work (tests only).
#[cfg(test)]
pub(super) fn work(n: usize) {
    WORK.with(|w| w.set(w.get() + n as u64));
}

#[cfg(not(test))]
#[inline(always)]
pub(super) fn work(_: usize) {}
