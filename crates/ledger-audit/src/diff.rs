//! Field-level differences between two JSON values (views of a token).
//!
//! Objects are compared key by key, recursively; anything else (strings,
//! numbers, arrays such as `permissionGroups`) is compared whole. Paths are
//! dotted camelCase field names (`trashItem.reason`). Views carry secrets
//! only as fingerprints, so a diff never shows one.

use serde::Serialize;
use serde_json::Value;

/// One field that differs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct FieldChange {
    /// Dotted path of the field.
    pub path: String,
    /// The old value; absent when the field is new.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<Value>,
    /// The new value; absent when the field is gone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub to: Option<Value>,
}

/// The fields that differ from `a` to `b` (either may be `None`: every field
/// is then added or removed), in path order.
pub fn diff(a: Option<&Value>, b: Option<&Value>) -> Vec<FieldChange> {
    let mut out = Vec::new();
    walk("", a, b, &mut out);
    out
}

fn walk(path: &str, a: Option<&Value>, b: Option<&Value>, out: &mut Vec<FieldChange>) {
    match (a, b) {
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            let mut keys: Vec<&String> = x.keys().chain(y.keys()).collect();
            keys.sort();
            keys.dedup();
            for k in keys {
                walk(&join(path, k), x.get(k), y.get(k), out);
            }
        }
        (Some(Value::Object(x)), None) => {
            for (k, v) in x {
                walk(&join(path, k), Some(v), None, out);
            }
        }
        (None, Some(Value::Object(y))) => {
            for (k, v) in y {
                walk(&join(path, k), None, Some(v), out);
            }
        }
        (None, None) => {}
        (x, y) if x == y => {}
        (x, y) => out.push(FieldChange {
            path: path.to_owned(),
            from: x.cloned(),
            to: y.cloned(),
        }),
    }
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A value for a one-line display: strings without quotes, the rest as compact JSON.
pub fn show(value: Option<&Value>) -> String {
    match value {
        None => "(none)".to_owned(),
        Some(Value::String(s)) => s.clone(),
        Some(v) => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn nested_fields_are_compared_one_by_one() {
        let a =
            json!({"name": "a", "trashItem": {"reason": "x", "trashedAt": "t"}, "groups": [1, 2]});
        let b = json!({"name": "b", "trashItem": {"reason": "y", "trashedAt": "t"}, "groups": [1], "new": true});
        let changes = diff(Some(&a), Some(&b));
        let paths: Vec<&str> = changes.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["groups", "name", "new", "trashItem.reason"]);
        assert_eq!(changes[2].from, None);
        assert_eq!(changes[2].to, Some(json!(true)));
    }

    #[test]
    fn creation_and_removal_list_every_field() {
        let v = json!({"name": "a", "trashItem": {"reason": "x"}});
        let added = diff(None, Some(&v));
        assert_eq!(added.len(), 2);
        assert!(added.iter().all(|c| c.from.is_none()));
        let removed = diff(Some(&v), None);
        assert_eq!(removed[1].path, "trashItem.reason");
        assert!(removed.iter().all(|c| c.to.is_none()));
    }
}
