//! Patches of an object's JSON form (Kubernetes field names): JSON merge patch (RFC 7386) and
//! JSON Patch (RFC 6902, with RFC 6901 pointers). Pure functions over `serde_json::Value`; the
//! Resources service reads the object, applies a patch here, then defaults, validates and
//! writes it with a compare-and-swap.

use serde_json::Value;

/// Most operations one JSON Patch may carry (a bound on the work one request can ask for).
pub const JSON_PATCH_OPS_MAX: usize = 10_000;

/// Why a patch cannot be applied; `path` names where (`patch[2].path`, `/spec/replicas`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PatchError {
    pub path: String,
    pub reason: String,
}

fn err(path: impl Into<String>, reason: impl Into<String>) -> PatchError {
    PatchError {
        path: path.into(),
        reason: reason.into(),
    }
}

/// A parsed patch.
#[derive(Debug, Clone)]
pub enum Patch {
    /// RFC 7386: objects merge recursively, `null` removes, anything else replaces.
    Merge(Value),
    /// RFC 6902: a list of operations.
    Json(Vec<Op>),
    /// Kubernetes' strategic merge patch: a merge patch whose lists of objects with a merge key
    /// (containers by `name`, ports by `containerPort`/`port`, ...) merge item by item, with the
    /// `$patch: delete|replace|merge` and `$deleteFromPrimitiveList/<field>` directives.
    Strategic(Value),
}

/// One RFC 6902 operation.
#[derive(Debug, Clone, PartialEq)]
pub enum Op {
    Add { path: String, value: Value },
    Remove { path: String },
    Replace { path: String, value: Value },
    Move { from: String, path: String },
    Copy { from: String, path: String },
    Test { path: String, value: Value },
}

impl Patch {
    /// A merge patch from its JSON text; it must be a JSON object.
    pub fn merge(bytes: &[u8]) -> Result<Patch, PatchError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| err("patch", format!("not JSON: {e}")))?;
        if !v.is_object() {
            return Err(err("patch", "a merge patch must be a JSON object"));
        }
        Ok(Patch::Merge(v))
    }

    /// A strategic merge patch from its JSON text; it must be a JSON object.
    pub fn strategic(bytes: &[u8]) -> Result<Patch, PatchError> {
        match Patch::merge(bytes)? {
            Patch::Merge(v) => Ok(Patch::Strategic(v)),
            _ => unreachable!("merge() returns a merge patch"),
        }
    }

    /// A JSON Patch from its JSON text: a list of operations.
    pub fn json(bytes: &[u8]) -> Result<Patch, PatchError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| err("patch", format!("not JSON: {e}")))?;
        let Value::Array(items) = v else {
            return Err(err("patch", "a JSON Patch must be a list of operations"));
        };
        if items.len() > JSON_PATCH_OPS_MAX {
            return Err(err(
                "patch",
                format!("{} operations; at most {JSON_PATCH_OPS_MAX}", items.len()),
            ));
        }
        let ops = items
            .iter()
            .enumerate()
            .map(|(i, item)| parse_op(i, item))
            .collect::<Result<_, _>>()?;
        Ok(Patch::Json(ops))
    }

    /// Applies the patch to `target`.
    pub fn apply(&self, target: Value) -> Result<Value, PatchError> {
        match self {
            Patch::Merge(p) => Ok(merge_patch(target, p)),
            Patch::Strategic(p) => strategic_merge(target, p, ""),
            Patch::Json(ops) => {
                let mut doc = target;
                for (i, op) in ops.iter().enumerate() {
                    apply_op(&mut doc, op).map_err(|e| err(format!("patch[{i}]"), e.to_string()))?;
                }
                Ok(doc)
            }
        }
    }

    /// Whether the patch states `metadata.resourceVersion` (then a precondition: a lost race
    /// is reported, not retried).
    pub fn sets_resource_version(&self) -> bool {
        match self {
            Patch::Merge(p) | Patch::Strategic(p) => p
                .get("metadata")
                .and_then(|m| m.get("resourceVersion"))
                .is_some_and(|rv| !rv.is_null()),
            Patch::Json(ops) => ops.iter().any(|op| match op {
                Op::Add { path, .. }
                | Op::Replace { path, .. }
                | Op::Test { path, .. }
                | Op::Copy { path, .. }
                | Op::Move { path, .. } => path == "/metadata/resourceVersion",
                Op::Remove { .. } => false,
            }),
        }
    }
}

/// RFC 7386 MergePatch(target, patch).
pub fn merge_patch(target: Value, patch: &Value) -> Value {
    let Value::Object(p) = patch else {
        return patch.clone();
    };
    let mut t = match target {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in p {
        if v.is_null() {
            t.remove(k);
        } else {
            let old = t.remove(k).unwrap_or(Value::Null);
            t.insert(k.clone(), merge_patch(old, v));
        }
    }
    Value::Object(t)
}

/// The merge key of a list field's items (Kubernetes' `patchMergeKey`), or None for lists that
/// a patch replaces. `ports` merge by `containerPort` in containers, by `port` in Services.
fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    Some(match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets"
        | "resourceClaims" => "name",
        "ports" => {
            if items.iter().any(|i| i.get("containerPort").is_some()) {
                "containerPort"
            } else {
                "port"
            }
        }
        "volumeMounts" => "mountPath",
        "volumeDevices" => "devicePath",
        "hostAliases" => "ip",
        "ownerReferences" => "uid",
        "conditions" | "addresses" => "type",
        "topologySpreadConstraints" => "topologyKey",
        _ => return None,
    })
}

/// Lists of scalars that a strategic patch merges (set union) instead of replacing.
const MERGED_SCALAR_LISTS: [&str; 1] = ["finalizers"];

const DELETE_FROM_PRIMITIVE_LIST: &str = "$deleteFromPrimitiveList/";
const SET_ELEMENT_ORDER: &str = "$setElementOrder/";

/// Kubernetes' strategic merge of `patch` into `target`; `path` names where (for errors).
fn strategic_merge(target: Value, patch: &Value, path: &str) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Ok(patch.clone());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut m = p.clone();
            m.remove("$patch");
            return Ok(Value::Object(m));
        }
        Some("delete") => return Ok(Value::Null),
        Some("merge") | None => {}
        Some(other) => {
            return Err(err(
                format!("{path}.$patch"),
                format!("unknown directive {other:?}"),
            ))
        }
    }
    let mut t = match target {
        Value::Object(m) => m,
        _ => serde_json::Map::new(),
    };
    for (k, v) in p {
        let here = if path.is_empty() {
            k.clone()
        } else {
            format!("{path}.{k}")
        };
        if k == "$patch" || k.starts_with(SET_ELEMENT_ORDER) || k == "$retainKeys" {
            continue;
        }
        if let Some(field) = k.strip_prefix(DELETE_FROM_PRIMITIVE_LIST) {
            let Value::Array(gone) = v else {
                return Err(err(here, "must be a list"));
            };
            if let Some(Value::Array(items)) = t.get_mut(field) {
                items.retain(|i| !gone.contains(i));
            }
            continue;
        }
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let old = t.remove(k).unwrap_or(Value::Null);
        let merged = match (old, v) {
            (Value::Array(old), Value::Array(new)) => merge_list(k, old, new, &here)?,
            (old, v) => strategic_merge(old, v, &here)?,
        };
        if !merged.is_null() {
            t.insert(k.clone(), merged);
        }
    }
    Ok(Value::Object(t))
}

/// A list under a strategic patch: merged by key, unioned (scalar lists that merge), or
/// replaced.
fn merge_list(field: &str, old: Vec<Value>, new: &[Value], path: &str) -> Result<Value, PatchError> {
    if MERGED_SCALAR_LISTS.contains(&field) {
        let mut out = old;
        for v in new {
            if !out.contains(v) {
                out.push(v.clone());
            }
        }
        return Ok(Value::Array(out));
    }
    if new
        .iter()
        .any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace"))
    {
        let items = new
            .iter()
            .filter(|i| i.get("$patch").is_none())
            .cloned()
            .collect();
        return Ok(Value::Array(items));
    }
    let all: Vec<Value> = old.iter().chain(new).cloned().collect();
    let Some(key) = merge_key(field, &all) else {
        return Ok(Value::Array(new.to_vec()));
    };
    let mut out = old;
    for (i, item) in new.iter().enumerate() {
        let here = format!("{path}[{i}]");
        let Some(id) = item.get(key) else {
            return Err(err(
                here,
                format!("an item of a list merged by {key:?} must have {key:?}"),
            ));
        };
        let pos = out.iter().position(|o| o.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(at), true) => {
                out.remove(at);
            }
            (None, true) => {}
            (Some(at), false) => {
                let merged = strategic_merge(out[at].take(), item, &here)?;
                out[at] = merged;
            }
            (None, false) => out.push(strategic_merge(Value::Null, item, &here)?),
        }
    }
    Ok(Value::Array(out))
}

fn parse_op(i: usize, item: &Value) -> Result<Op, PatchError> {
    let here = |field: &str| format!("patch[{i}].{field}");
    let Value::Object(m) = item else {
        return Err(err(format!("patch[{i}]"), "an operation must be a JSON object"));
    };
    let string = |field: &str| -> Result<String, PatchError> {
        match m.get(field) {
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(err(here(field), "must be a string")),
            None => Err(err(here(field), "required")),
        }
    };
    let value = || {
        m.get("value")
            .cloned()
            .ok_or_else(|| err(here("value"), "required"))
    };
    let path = string("path")?;
    check_pointer(&path).map_err(|r| err(here("path"), r))?;
    let op = string("op")?;
    Ok(match op.as_str() {
        "add" => Op::Add {
            path,
            value: value()?,
        },
        "remove" => Op::Remove { path },
        "replace" => Op::Replace {
            path,
            value: value()?,
        },
        "test" => Op::Test {
            path,
            value: value()?,
        },
        "move" | "copy" => {
            let from = string("from")?;
            check_pointer(&from).map_err(|r| err(here("from"), r))?;
            if op == "move" {
                Op::Move { from, path }
            } else {
                Op::Copy { from, path }
            }
        }
        other => {
            return Err(err(
                here("op"),
                format!("{other:?}: must be add, remove, replace, move, copy or test"),
            ))
        }
    })
}

fn check_pointer(p: &str) -> Result<(), String> {
    if p.is_empty() || p.starts_with('/') {
        Ok(())
    } else {
        Err(format!("{p:?} is not a JSON pointer (must start with '/')"))
    }
}

/// The reference tokens of a JSON pointer, unescaped (`~1` is `/`, `~0` is `~`).
fn tokens(pointer: &str) -> Vec<String> {
    if pointer.is_empty() {
        return Vec::new();
    }
    pointer[1..]
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect()
}

fn index(token: &str, len: usize, allow_end: bool, path: &str) -> Result<usize, PatchError> {
    if allow_end && token == "-" {
        return Ok(len);
    }
    let bad = || err(path, format!("{token:?} is not an index of a list of {len}"));
    if token.is_empty() || (token.len() > 1 && token.starts_with('0')) {
        return Err(bad());
    }
    let i: usize = token.parse().map_err(|_| bad())?;
    let limit = if allow_end { len } else { len.saturating_sub(1) };
    if i > limit || (!allow_end && len == 0) {
        return Err(bad());
    }
    Ok(i)
}

/// The value `pointer` names, mutably.
fn resolve_mut<'a>(doc: &'a mut Value, pointer: &str) -> Result<&'a mut Value, PatchError> {
    let mut cur = doc;
    for t in tokens(pointer) {
        cur = match cur {
            Value::Object(m) => m.get_mut(&t).ok_or_else(|| err(pointer, "no such field"))?,
            Value::Array(a) => {
                let i = index(&t, a.len(), false, pointer)?;
                &mut a[i]
            }
            _ => return Err(err(pointer, "no such field")),
        };
    }
    Ok(cur)
}

/// Splits a pointer into its parent and last token; the root has no parent.
fn split_last(pointer: &str) -> Result<(String, String), PatchError> {
    let mut ts = tokens(pointer);
    let last = ts
        .pop()
        .ok_or_else(|| err(pointer, "the whole object cannot be the target"))?;
    let parent = ts
        .iter()
        .map(|t| format!("/{}", t.replace('~', "~0").replace('/', "~1")))
        .collect();
    Ok((parent, last))
}

fn add(doc: &mut Value, pointer: &str, value: Value) -> Result<(), PatchError> {
    let (parent, last) = split_last(pointer)?;
    match resolve_mut(doc, &parent)? {
        Value::Object(m) => {
            m.insert(last, value);
        }
        Value::Array(a) => {
            let i = index(&last, a.len(), true, pointer)?;
            a.insert(i, value);
        }
        _ => return Err(err(pointer, "parent is neither an object nor a list")),
    }
    Ok(())
}

fn remove(doc: &mut Value, pointer: &str) -> Result<Value, PatchError> {
    let (parent, last) = split_last(pointer)?;
    match resolve_mut(doc, &parent)? {
        Value::Object(m) => m.remove(&last).ok_or_else(|| err(pointer, "no such field")),
        Value::Array(a) => {
            let i = index(&last, a.len(), false, pointer)?;
            Ok(a.remove(i))
        }
        _ => Err(err(pointer, "no such field")),
    }
}

fn apply_op(doc: &mut Value, op: &Op) -> Result<(), PatchError> {
    match op {
        Op::Add { path, value } => add(doc, path, value.clone()),
        Op::Remove { path } => remove(doc, path).map(drop),
        Op::Replace { path, value } => {
            *resolve_mut(doc, path)? = value.clone();
            Ok(())
        }
        Op::Move { from, path } => {
            if path.starts_with(&format!("{from}/")) {
                return Err(err(path.as_str(), format!("cannot move {from} into itself")));
            }
            let v = remove(doc, from)?;
            add(doc, path, v)
        }
        Op::Copy { from, path } => {
            let v = resolve_mut(doc, from)?.clone();
            add(doc, path, v)
        }
        Op::Test { path, value } => {
            let v = resolve_mut(doc, path)?;
            if v == value {
                Ok(())
            } else {
                Err(err(path.as_str(), format!("test failed: is {v}, not {value}")))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// The examples of RFC 7386, appendix A.
    #[test]
    fn merge_patch_rfc7386_examples() {
        let cases = [
            (json!({"a":"b"}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"b"}), json!({"b":"c"}), json!({"a":"b","b":"c"})),
            (json!({"a":"b"}), json!({"a":null}), json!({})),
            (json!({"a":"b","b":"c"}), json!({"a":null}), json!({"b":"c"})),
            (json!({"a":["b"]}), json!({"a":"c"}), json!({"a":"c"})),
            (json!({"a":"c"}), json!({"a":["b"]}), json!({"a":["b"]})),
            (
                json!({"a":{"b":"c"}}),
                json!({"a":{"b":"d","c":null}}),
                json!({"a":{"b":"d"}}),
            ),
            (json!({"a":[{"b":"c"}]}), json!({"a":[1]}), json!({"a":[1]})),
            (json!(["a", "b"]), json!(["c", "d"]), json!(["c", "d"])),
            (json!({"a":"b"}), json!(["c"]), json!(["c"])),
            (json!({"a":"foo"}), json!(null), json!(null)),
            (json!({"a":"foo"}), json!("bar"), json!("bar")),
            (json!({"e":null}), json!({"a":1}), json!({"e":null,"a":1})),
            (json!([1, 2]), json!({"a":"b","c":null}), json!({"a":"b"})),
            (
                json!({}),
                json!({"a":{"bb":{"ccc":null}}}),
                json!({"a":{"bb":{}}}),
            ),
        ];
        for (target, patch, want) in cases {
            assert_eq!(merge_patch(target.clone(), &patch), want, "{target} + {patch}");
        }
    }

    fn json_patch(doc: Value, ops: Value) -> Result<Value, PatchError> {
        Patch::json(ops.to_string().as_bytes())?.apply(doc)
    }

    /// A selection of RFC 6902's appendix A.
    #[test]
    fn json_patch_rfc6902_examples() {
        let ok = |doc: Value, ops: Value, want: Value| assert_eq!(json_patch(doc, ops).unwrap(), want);
        ok(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz","value":"qux"}]),
            json!({"baz":"qux","foo":"bar"}),
        );
        ok(
            json!({"foo":["bar","baz"]}),
            json!([{"op":"add","path":"/foo/1","value":"qux"}]),
            json!({"foo":["bar","qux","baz"]}),
        );
        ok(
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"remove","path":"/baz"}]),
            json!({"foo":"bar"}),
        );
        ok(
            json!({"foo":["bar","qux","baz"]}),
            json!([{"op":"remove","path":"/foo/1"}]),
            json!({"foo":["bar","baz"]}),
        );
        ok(
            json!({"baz":"qux","foo":"bar"}),
            json!([{"op":"replace","path":"/baz","value":"boo"}]),
            json!({"baz":"boo","foo":"bar"}),
        );
        ok(
            json!({"foo":{"bar":"baz","waldo":"fred"},"qux":{"corge":"grault"}}),
            json!([{"op":"move","from":"/foo/waldo","path":"/qux/thud"}]),
            json!({"foo":{"bar":"baz"},"qux":{"corge":"grault","thud":"fred"}}),
        );
        ok(
            json!({"foo":["all","grass","cows","eat"]}),
            json!([{"op":"move","from":"/foo/1","path":"/foo/3"}]),
            json!({"foo":["all","cows","eat","grass"]}),
        );
        ok(
            json!({"foo":["bar"]}),
            json!([{"op":"add","path":"/foo/-","value":["abc","def"]}]),
            json!({"foo":["bar",["abc","def"]]}),
        );
        ok(
            json!({"/":9,"~1":10}),
            json!([{"op":"test","path":"/~01","value":10}]),
            json!({"/":9,"~1":10}),
        );
        ok(
            json!({"a":{"b":1}}),
            json!([{"op":"copy","from":"/a/b","path":"/c"}]),
            json!({"a":{"b":1},"c":1}),
        );
        let e = json_patch(
            json!({"baz":"qux"}),
            json!([{"op":"test","path":"/baz","value":"bar"}]),
        );
        assert_eq!(e.unwrap_err().path, "patch[0]");
        let e = json_patch(
            json!({"foo":"bar"}),
            json!([{"op":"add","path":"/baz/bat","value":"qux"}]),
        );
        assert!(e.unwrap_err().reason.contains("/baz"));
        let e = json_patch(
            json!({"foo":[1]}),
            json!([{"op":"add","path":"/foo/01","value":2}]),
        );
        assert!(e.is_err());
        let e = Patch::json(br#"[{"op":"frob","path":"/a"}]"#).unwrap_err();
        assert_eq!(e.path, "patch[0].op");
        let e = Patch::json(br#"[{"op":"add","path":"a","value":1}]"#).unwrap_err();
        assert_eq!(e.path, "patch[0].path");
        assert!(Patch::merge(b"[1]").is_err());
        assert!(Patch::merge(b"{").is_err());
    }

    #[test]
    fn strategic_merge_merges_lists_by_key() {
        let pod = json!({"spec":{"containers":[
            {"name":"app","image":"a:1","ports":[{"containerPort":80}],"env":[{"name":"A","value":"1"}]},
            {"name":"side","image":"s:1"}
        ]},"metadata":{"finalizers":["x"]}});
        let sm = |p: Value| {
            Patch::strategic(p.to_string().as_bytes())
                .unwrap()
                .apply(pod.clone())
                .unwrap()
        };
        // An image change of one container keeps the other and the rest of this one.
        let got = sm(json!({"spec":{"containers":[{"name":"app","image":"a:2"}]}}));
        assert_eq!(got["spec"]["containers"][0]["image"], "a:2");
        assert_eq!(got["spec"]["containers"][0]["ports"][0]["containerPort"], 80);
        assert_eq!(got["spec"]["containers"][1]["name"], "side");
        // New items append; env merges by name.
        let got = sm(
            json!({"spec":{"containers":[{"name":"app","env":[{"name":"B","value":"2"}]},{"name":"new","image":"n"}]}}),
        );
        assert_eq!(got["spec"]["containers"][0]["env"].as_array().unwrap().len(), 2);
        assert_eq!(got["spec"]["containers"][2]["name"], "new");
        // $patch: delete removes an item; replace replaces the list.
        let got = sm(json!({"spec":{"containers":[{"name":"side","$patch":"delete"}]}}));
        assert_eq!(got["spec"]["containers"].as_array().unwrap().len(), 1);
        let got = sm(json!({"spec":{"containers":[{"name":"only","image":"o"},{"$patch":"replace"}]}}));
        assert_eq!(got["spec"]["containers"], json!([{"name":"only","image":"o"}]));
        // Finalizers are a set; $deleteFromPrimitiveList removes.
        let got = sm(json!({"metadata":{"finalizers":["y","x"]}}));
        assert_eq!(got["metadata"]["finalizers"], json!(["x", "y"]));
        let got = sm(json!({"metadata":{"$deleteFromPrimitiveList/finalizers":["x"]}}));
        assert_eq!(got["metadata"]["finalizers"], json!([]));
        // Lists without a merge key are replaced, maps merge, null deletes.
        let svc = json!({"spec":{"ports":[{"port":80,"name":"http"}],"selector":{"a":"1"}}});
        let p = json!({"spec":{"ports":[{"port":80,"targetPort":8080}],"selector":{"b":"2","a":null}}});
        let got = Patch::strategic(p.to_string().as_bytes())
            .unwrap()
            .apply(svc)
            .unwrap();
        assert_eq!(
            got["spec"]["ports"],
            json!([{"port":80,"name":"http","targetPort":8080}])
        );
        assert_eq!(got["spec"]["selector"], json!({"b":"2"}));
        let e = Patch::strategic(br#"{"spec":{"containers":[{"image":"x"}]}}"#)
            .unwrap()
            .apply(pod.clone())
            .unwrap_err();
        assert_eq!(e.path, "spec.containers[0]");
    }

    #[test]
    fn resource_version_preconditions_are_recognised() {
        assert!(Patch::merge(br#"{"metadata":{"resourceVersion":"5"}}"#)
            .unwrap()
            .sets_resource_version());
        assert!(!Patch::merge(br#"{"metadata":{"resourceVersion":null}}"#)
            .unwrap()
            .sets_resource_version());
        assert!(!Patch::merge(br#"{"spec":{}}"#).unwrap().sets_resource_version());
        assert!(
            Patch::json(br#"[{"op":"test","path":"/metadata/resourceVersion","value":"5"}]"#)
                .unwrap()
                .sets_resource_version()
        );
    }
}
