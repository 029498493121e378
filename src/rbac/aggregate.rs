//! ClusterRole aggregation (`aggregationRule`), resolved at compile time.

use super::compile::{HashMap, HashSet};
use super::model::{ClusterRole, PolicyRule};

/// The rules of each aggregated ClusterRole (by index), as Kubernetes'
/// ClusterRole aggregation controller fills them in: the union, without
/// duplicates, of the rules of every ClusterRole of another name that a
/// selector matches, in name order. An aggregated role's own `rules` are
/// replaced, and aggregated roles feed each other (`admin` ⊇ `edit` ⊇
/// `view`).
///
/// Aggregated roles start empty and only grow, so repeating until nothing
/// changes ends after at most one round per aggregated role, with the
/// smallest consistent answer. Where roles select each other in a cycle
/// this differs from the live controller deliberately: there, rules an
/// aggregated role's manifest listed can survive by going round the cycle;
/// here they never count.
pub(super) fn aggregate(roles: &[ClusterRole]) -> HashMap<usize, Vec<&PolicyRule>> {
    let sources: Vec<(usize, Vec<usize>)> = roles
        .iter()
        .enumerate()
        .filter_map(|(i, role)| {
            let selectors = &role.aggregation_rule.as_ref()?.cluster_role_selectors;
            let name = role.metadata.name.as_str();
            let mut matched: Vec<usize> = (0..roles.len())
                .filter(|&j| {
                    roles[j].metadata.name != name
                        && selectors
                            .iter()
                            .any(|s| s.matches(&roles[j].metadata.labels))
                })
                .collect();
            matched.sort_by(|&a, &b| roles[a].metadata.name.cmp(&roles[b].metadata.name));
            Some((i, matched))
        })
        .collect();
    let mut current: HashMap<usize, Vec<&PolicyRule>> =
        sources.iter().map(|(i, _)| (*i, Vec::new())).collect();
    let mut seen: HashSet<&PolicyRule> = HashSet::default();
    for _ in 0..=sources.len() {
        let mut next = Vec::with_capacity(sources.len());
        for (i, matched) in &sources {
            seen.clear();
            let mut rules: Vec<&PolicyRule> = Vec::new();
            for j in matched {
                let mut add = |rule| {
                    if seen.insert(rule) {
                        rules.push(rule);
                    }
                };
                match current.get(j) {
                    Some(aggregated) => aggregated.iter().copied().for_each(&mut add),
                    None => roles[*j].rules.iter().for_each(&mut add),
                }
            }
            next.push((*i, rules));
        }
        let mut changed = false;
        for (i, rules) in next {
            if current.get(&i) != Some(&rules) {
                current.insert(i, rules);
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    current
}
