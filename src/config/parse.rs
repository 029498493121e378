//! [`parse_yaml_or_json`]: the usual parse step of a watched policy file.

use std::path::Path;

use serde::de::DeserializeOwned;

use super::options::DEFAULT_MAX_BYTES;

/// Deserializes `bytes` as JSON when `path` ends in `.json` (any case), as
/// YAML otherwise.
///
/// Input larger than [`DEFAULT_MAX_BYTES`] is refused without being parsed.
/// The error is the parser's message, which carries the line and column.
///
/// ```
/// use finmesh::config::parse_yaml_or_json;
/// use std::collections::BTreeMap;
/// use std::path::Path;
///
/// let yaml: BTreeMap<String, u32> =
///     parse_yaml_or_json(Path::new("limits.yaml"), b"orders: 10\n").unwrap();
/// let json: BTreeMap<String, u32> =
///     parse_yaml_or_json(Path::new("limits.json"), br#"{"orders": 10}"#).unwrap();
/// assert_eq!(yaml, json);
/// ```
pub fn parse_yaml_or_json<D: DeserializeOwned>(path: &Path, bytes: &[u8]) -> Result<D, String> {
    if bytes.len() as u64 > DEFAULT_MAX_BYTES {
        return Err(format!(
            "input is {} bytes, more than the {DEFAULT_MAX_BYTES}-byte limit",
            bytes.len()
        ));
    }
    let is_json = path
        .extension()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("json"));
    if is_json {
        serde_json::from_slice(bytes).map_err(|e| e.to_string())
    } else {
        serde_yaml_ng::from_slice(bytes).map_err(|e| e.to_string())
    }
}

/// The path of the first YAML-tagged value in `value` (`spec.rules[2]`),
/// if any: the policy loaders refuse tags, since serde reads through a tag
/// as if it were not there and a document would say more than it means.
#[cfg(feature = "rbac")]
pub(crate) fn tagged_at(value: &serde_yaml_ng::Value) -> Option<String> {
    use serde_yaml_ng::Value;
    match value {
        Value::Tagged(_) => Some(String::new()),
        Value::Sequence(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, item)| tagged_at(item).map(|rest| format!("[{i}]{}", dotted(&rest)))),
        Value::Mapping(map) => map.iter().find_map(|(key, item)| {
            if matches!(key, Value::Tagged(_)) {
                return Some(String::new());
            }
            let key = key.as_str().unwrap_or("?");
            tagged_at(item).map(|rest| format!("{key}{}", dotted(&rest)))
        }),
        _ => None,
    }
}

/// `rest` of a path as it follows a parent segment.
#[cfg(feature = "rbac")]
fn dotted(rest: &str) -> String {
    if rest.is_empty() || rest.starts_with('[') {
        rest.to_owned()
    } else {
        format!(".{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_or_json_is_chosen_by_extension() {
        let json: Result<Vec<u32>, _> = parse_yaml_or_json(Path::new("a.JSON"), b"- 1\n");
        assert!(json.is_err(), "YAML syntax must not pass as JSON");
        let yaml: Vec<u32> = parse_yaml_or_json(Path::new("a.yaml"), b"- 1\n- 2\n").unwrap();
        assert_eq!(yaml, [1, 2]);
        let no_ext: Vec<u32> = parse_yaml_or_json(Path::new("a"), b"[3]").unwrap();
        assert_eq!(no_ext, [3]);
    }

    #[test]
    fn yaml_or_json_refuses_oversized_input() {
        let big = vec![b' '; DEFAULT_MAX_BYTES as usize + 1];
        let err = parse_yaml_or_json::<Vec<u32>>(Path::new("a.yaml"), &big).unwrap_err();
        assert!(err.contains("limit"), "{err}");
    }
}
