//! Metadata filters, checked once when a query arrives and then evaluated per record while the
//! candidate set is built (so both channels search only records that pass).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::error::MemoryError;
use crate::types::Filter;

/// Fields every record has, filterable like metadata.
pub const BUILTIN_FIELDS: [&str; 4] = ["createdAtMs", "updatedAtMs", "expiresAtMs", "importance"];

/// What a filter sees of a record.
pub struct Fields<'a> {
    pub metadata: &'a BTreeMap<String, Value>,
    pub created_at_ms: u64,
    pub updated_at_ms: u64,
    pub expires_at_ms: Option<u64>,
    pub importance: f32,
}

impl Fields<'_> {
    fn get(&self, field: &str) -> Option<Value> {
        match field {
            "createdAtMs" => Some(self.created_at_ms.into()),
            "updatedAtMs" => Some(self.updated_at_ms.into()),
            "expiresAtMs" => self.expires_at_ms.map(Into::into),
            "importance" => Some(Value::from(self.importance as f64)),
            _ => self.metadata.get(field).cloned(),
        }
    }
}

#[derive(Debug, Clone)]
enum Cond {
    All(Vec<Cond>),
    Any(Vec<Cond>),
    Not(Box<Cond>),
    Eq(String, Value),
    In(String, Vec<Value>),
    Range { field: String, lo: Option<(f64, bool)>, hi: Option<(f64, bool)> },
}

/// A checked filter.
#[derive(Debug, Clone)]
pub struct Compiled(Cond);

fn bad(detail: impl Into<String>) -> MemoryError {
    MemoryError::BadFilter { detail: detail.into() }
}

impl Compiled {
    /// Checks `filter` against the fields the collection's records have (`known`, plus the
    /// built-in ones): a field no record has is refused (it is most likely a typo, and would
    /// silently match nothing).
    pub fn new(filter: &Filter, known: &HashSet<String>) -> Result<Compiled, MemoryError> {
        Ok(Compiled(compile_map(&filter.0, known, 0)?))
    }

    pub fn is_empty(&self) -> bool {
        matches!(&self.0, Cond::All(c) if c.is_empty())
    }

    pub fn matches(&self, f: &Fields) -> bool {
        eval(&self.0, f)
    }
}

fn compile_map(m: &serde_json::Map<String, Value>, known: &HashSet<String>, depth: usize) -> Result<Cond, MemoryError> {
    if depth > 16 {
        return Err(bad("nested more than 16 levels deep"));
    }
    let mut all = Vec::new();
    for (k, v) in m {
        all.push(match k.as_str() {
            "and" | "or" => {
                let Value::Array(items) = v else { return Err(bad(format!("{k} takes a list of filters"))) };
                let parts = items
                    .iter()
                    .map(|i| match i {
                        Value::Object(o) => compile_map(o, known, depth + 1),
                        _ => Err(bad(format!("{k} takes a list of filters (objects)"))),
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                if k == "and" {
                    Cond::All(parts)
                } else {
                    Cond::Any(parts)
                }
            }
            "not" => match v {
                Value::Object(o) => Cond::Not(Box::new(compile_map(o, known, depth + 1)?)),
                _ => return Err(bad("not takes a filter (an object)")),
            },
            field => {
                if !known.contains(field) && !BUILTIN_FIELDS.contains(&field) {
                    let mut names: Vec<&str> = known.iter().map(String::as_str).chain(BUILTIN_FIELDS).collect();
                    names.sort_unstable();
                    return Err(bad(format!("no record has the field {field:?}; fields: {}", names.join(", "))));
                }
                compile_field(field, v)?
            }
        });
    }
    Ok(Cond::All(all))
}

fn number(field: &str, op: &str, v: &Value) -> Result<f64, MemoryError> {
    v.as_f64().ok_or_else(|| bad(format!("{field}: {op} takes a number (times are milliseconds since the epoch)")))
}

fn compile_field(field: &str, v: &Value) -> Result<Cond, MemoryError> {
    let scalar = |v: &Value| matches!(v, Value::String(_) | Value::Number(_) | Value::Bool(_));
    match v {
        v if scalar(v) => Ok(Cond::Eq(field.into(), v.clone())),
        Value::Object(ops) if !ops.is_empty() => {
            let mut all = Vec::new();
            let (mut lo, mut hi) = (None, None);
            for (op, arg) in ops {
                match op.as_str() {
                    "eq" | "ne" if scalar(arg) => {
                        let eq = Cond::Eq(field.into(), arg.clone());
                        all.push(if op == "eq" { eq } else { Cond::Not(Box::new(eq)) });
                    }
                    "in" | "nin" => {
                        let Value::Array(items) = arg else { return Err(bad(format!("{field}: {op} takes a list"))) };
                        if !items.iter().all(scalar) {
                            return Err(bad(format!("{field}: {op} takes a list of strings, numbers or booleans")));
                        }
                        let c = Cond::In(field.into(), items.clone());
                        all.push(if op == "in" { c } else { Cond::Not(Box::new(c)) });
                    }
                    "gt" => lo = Some((number(field, op, arg)?, false)),
                    "gte" => lo = Some((number(field, op, arg)?, true)),
                    "lt" => hi = Some((number(field, op, arg)?, false)),
                    "lte" => hi = Some((number(field, op, arg)?, true)),
                    "eq" | "ne" => return Err(bad(format!("{field}: {op} takes a string, number or boolean"))),
                    other => {
                        return Err(bad(format!(
                            "{field}: unknown operator {other:?} (use eq, ne, in, nin, gt, gte, lt, lte)"
                        )))
                    }
                }
            }
            if lo.is_some() || hi.is_some() {
                all.push(Cond::Range { field: field.into(), lo, hi });
            }
            Ok(Cond::All(all))
        }
        _ => Err(bad(format!("{field}: give a value, or an object of operators such as {{\"in\": [...]}}"))),
    }
}

fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

/// A field holding a list matches when one of its items does.
fn any_item(v: &Value, pred: impl Fn(&Value) -> bool) -> bool {
    match v {
        Value::Array(items) => items.iter().any(pred),
        v => pred(v),
    }
}

fn eval(c: &Cond, f: &Fields) -> bool {
    match c {
        Cond::All(cs) => cs.iter().all(|c| eval(c, f)),
        Cond::Any(cs) => cs.iter().any(|c| eval(c, f)),
        Cond::Not(c) => !eval(c, f),
        Cond::Eq(field, want) => f.get(field).is_some_and(|v| any_item(&v, |x| same(x, want))),
        Cond::In(field, set) => f.get(field).is_some_and(|v| any_item(&v, |x| set.iter().any(|w| same(x, w)))),
        Cond::Range { field, lo, hi } => f.get(field).is_some_and(|v| {
            any_item(&v, |x| {
                let Some(n) = x.as_f64() else { return false };
                lo.is_none_or(|(l, inc)| if inc { n >= l } else { n > l })
                    && hi.is_none_or(|(h, inc)| if inc { n <= h } else { n < h })
            })
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn filter(v: Value) -> Filter {
        Filter(v.as_object().unwrap().clone())
    }

    fn known() -> HashSet<String> {
        ["kind", "n", "tags"].into_iter().map(String::from).collect()
    }

    fn check(f: Value, meta: Value) -> bool {
        let meta: BTreeMap<String, Value> = serde_json::from_value(meta).unwrap();
        let fields =
            Fields { metadata: &meta, created_at_ms: 1000, updated_at_ms: 2000, expires_at_ms: None, importance: 0.5 };
        Compiled::new(&filter(f), &known()).unwrap().matches(&fields)
    }

    #[test]
    fn equality_sets_ranges_and_logic() {
        let m = json!({"kind": "note", "n": 5, "tags": ["a", "b"]});
        assert!(check(json!({}), m.clone()));
        assert!(check(json!({"kind": "note"}), m.clone()));
        assert!(!check(json!({"kind": "fact"}), m.clone()));
        assert!(check(json!({"tags": "b"}), m.clone()), "a list matches by item");
        assert!(check(json!({"kind": {"in": ["fact", "note"]}}), m.clone()));
        assert!(!check(json!({"kind": {"nin": ["note"]}}), m.clone()));
        assert!(check(json!({"n": {"gte": 5, "lt": 6}}), m.clone()));
        assert!(!check(json!({"n": {"gt": 5}}), m.clone()));
        assert!(check(json!({"n": 5.0}), m.clone()), "numbers compare by value");
        assert!(check(json!({"or": [{"kind": "fact"}, {"n": {"lte": 5}}]}), m.clone()));
        assert!(!check(json!({"not": {"kind": "note"}}), m.clone()));
        assert!(check(json!({"createdAtMs": {"lt": 1500}, "importance": {"gte": 0.5}}), m.clone()));
        assert!(!check(json!({"expiresAtMs": {"gt": 0}}), m.clone()), "an absent field matches no condition");
        assert!(!check(json!({"kind": {"ne": "note"}}), m));
    }

    #[test]
    fn bad_filters_say_what_is_wrong() {
        let err = |v: Value| Compiled::new(&filter(v), &known()).unwrap_err().to_string();
        assert!(err(json!({"knd": "x"})).contains("no record has the field \"knd\""));
        assert!(err(json!({"n": {"between": [1, 2]}})).contains("unknown operator"));
        assert!(err(json!({"n": {"gt": "x"}})).contains("takes a number"));
        assert!(err(json!({"and": {"n": 1}})).contains("list of filters"));
        assert!(err(json!({"kind": null})).contains("give a value"));
        assert!(err(json!({"kind": {"in": [{"a": 1}]}})).contains("list of strings"));
        let mut deep = json!({"n": 1});
        for _ in 0..20 {
            deep = json!({"not": deep});
        }
        assert!(err(deep).contains("16 levels"));
    }
}
