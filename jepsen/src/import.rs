//! Parsers for histories recorded by Jepsen itself, so they can be checked here: the
//! `jepsen.util` log lines of Jepsen's etcd tests, and histories written as one EDN map per line.
//! Events get their line number (counting only events) as time, which keeps real-time order.

use serde_json::Value;

use crate::history::{History, Op, OpType, Process};
use crate::Error;

/// Parses log lines such as `INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]` (fields separated by
/// tabs or runs of spaces). Values: `nil`, integers, `[a b]`; a keyword value such as
/// `:timed-out` becomes the entry's error. Lines without ` - ` and blank lines are skipped.
pub fn parse_jepsen_log(text: &str) -> Result<History, Error> {
    let mut history = History::new();
    for (i, line) in text.lines().enumerate() {
        let Some((_, event)) = line.split_once(" - ") else {
            continue;
        };
        let op = parse_log_event(event, history.len() as u64)
            .map_err(|message| Error::Parse { line: i + 1, message })?;
        history.push(op);
    }
    Ok(history)
}

fn parse_log_event(event: &str, time: u64) -> Result<Op, String> {
    let mut fields = event.split_whitespace();
    let mut next = |what: &str| {
        fields
            .next()
            .ok_or_else(|| format!("missing {what} in {event:?}"))
    };
    let process = next("process")?
        .parse::<u64>()
        .map_err(|e| format!("bad process: {e}"))?;
    let kind = op_type(keyword(next("type")?)?)?;
    let f = keyword(next("function")?)?.to_string();
    let rest: Vec<&str> = fields.collect();
    let mut op = Op::new(Process::Client(process), kind, &f, Value::Null, time);
    match rest.join(" ").as_str() {
        "" => return Err(format!("missing value in {event:?}")),
        text if text.starts_with(':') => op.error = Some(text[1..].to_string()),
        text => op.value = log_value(text)?,
    }
    Ok(op)
}

/// `nil`, an integer, or a vector of values such as `[3 0]`.
fn log_value(text: &str) -> Result<Value, String> {
    if text == "nil" {
        return Ok(Value::Null);
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .split_whitespace()
            .map(log_value)
            .collect::<Result<Vec<_>, _>>()
            .map(Value::Array);
    }
    text.parse::<i64>()
        .map(Value::from)
        .map_err(|_| format!("unsupported value {text:?}"))
}

fn keyword(token: &str) -> Result<&str, String> {
    token
        .strip_prefix(':')
        .ok_or_else(|| format!("expected a keyword, got {token:?}"))
}

fn op_type(name: &str) -> Result<OpType, String> {
    match name {
        "invoke" => Ok(OpType::Invoke),
        "ok" => Ok(OpType::Ok),
        "fail" => Ok(OpType::Fail),
        "info" => Ok(OpType::Info),
        other => Err(format!("unknown operation type :{other}")),
    }
}

/// Parses one EDN map per line, such as
/// `{:process 0, :type :ok, :f :get, :key "5", :value ""}`. Supported values: strings, `nil`,
/// integers and keywords; `:process`, `:type` and `:f` are required.
pub fn parse_edn_lines(text: &str) -> Result<History, Error> {
    let mut history = History::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let op = parse_edn_op(line, history.len() as u64)
            .map_err(|message| Error::Parse { line: i + 1, message })?;
        history.push(op);
    }
    Ok(history)
}

fn parse_edn_op(line: &str, time: u64) -> Result<Op, String> {
    let mut op = Op::new(Process::Client(0), OpType::Invoke, "", Value::Null, time);
    let (mut has_process, mut has_type) = (false, false);
    for (name, value) in edn_map(line)? {
        match (name.as_str(), value) {
            ("process", Edn::Int(p)) => {
                op.process = Process::Client(u64::try_from(p).map_err(|_| "negative process".to_string())?);
                has_process = true;
            }
            ("type", Edn::Keyword(t)) => {
                op.kind = op_type(&t)?;
                has_type = true;
            }
            ("f", Edn::Keyword(f)) => op.f = f,
            ("key", value) => op.key = Some(value.into_string()),
            ("value", value) => op.value = value.into_json(),
            ("error", value) => op.error = Some(value.into_string()),
            (name, _) => return Err(format!("unsupported field :{name} (or its value type)")),
        }
    }
    if !has_process || !has_type || op.f.is_empty() {
        return Err("an entry needs :process, :type and :f".to_string());
    }
    Ok(op)
}

/// An EDN scalar.
#[derive(Debug, Clone, PartialEq)]
enum Edn {
    Nil,
    Int(i64),
    Str(String),
    Keyword(String),
}

impl Edn {
    fn into_json(self) -> Value {
        match self {
            Edn::Nil => Value::Null,
            Edn::Int(i) => Value::from(i),
            Edn::Str(s) | Edn::Keyword(s) => Value::String(s),
        }
    }

    fn into_string(self) -> String {
        match self {
            Edn::Nil => String::new(),
            Edn::Int(i) => i.to_string(),
            Edn::Str(s) | Edn::Keyword(s) => s,
        }
    }
}

/// `{:k v, :k v}` with scalar values, as (name, value) pairs in order.
fn edn_map(line: &str) -> Result<Vec<(String, Edn)>, String> {
    let body = line
        .trim()
        .strip_prefix('{')
        .and_then(|l| l.strip_suffix('}'))
        .ok_or("expected {...}")?;
    let mut rest = body;
    let mut fields = Vec::new();
    loop {
        rest = rest.trim_start_matches(|c: char| c.is_whitespace() || c == ',');
        if rest.is_empty() {
            return Ok(fields);
        }
        let (name, after_name) = edn_scalar(rest)?;
        let Edn::Keyword(name) = name else {
            return Err(format!("expected a keyword at {rest:?}"));
        };
        let (value, after_value) = edn_scalar(after_name.trim_start())?;
        fields.push((name, value));
        rest = after_value;
    }
}

/// One scalar at the start of `text`, and what follows it.
fn edn_scalar(text: &str) -> Result<(Edn, &str), String> {
    if let Some(quoted) = text.strip_prefix('"') {
        return edn_string(quoted);
    }
    let end = text
        .find(|c: char| c.is_whitespace() || c == ',' || c == '}')
        .unwrap_or(text.len());
    let (token, rest) = text.split_at(end);
    let value = match token {
        "" => return Err("missing value".to_string()),
        "nil" => Edn::Nil,
        _ if token.starts_with(':') => Edn::Keyword(token[1..].to_string()),
        _ => Edn::Int(
            token
                .parse()
                .map_err(|_| format!("unsupported value {token:?}"))?,
        ),
    };
    Ok((value, rest))
}

/// The rest of a string literal whose opening quote was consumed.
fn edn_string(text: &str) -> Result<(Edn, &str), String> {
    let mut out = String::new();
    let mut chars = text.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((Edn::Str(out), &text[i + 1..])),
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, escaped)) => out.push(escaped),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err("unterminated string".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn jepsen_log_lines_with_tabs_or_spaces() {
        let text = "INFO  jepsen.util - 2\t:invoke\t:cas\t[3 0]\n\
                    INFO  jepsen.util - 3   :info   :write  :timed-out\n\
                    some other line\n\
                    INFO  jepsen.util - 0\t:ok\t:read\tnil\n";
        let h = parse_jepsen_log(text).unwrap();
        let ops = h.ops();
        assert_eq!(ops.len(), 3);
        assert_eq!(
            (ops[0].kind, ops[0].f.as_str(), &ops[0].value),
            (OpType::Invoke, "cas", &json!([3, 0]))
        );
        assert_eq!(
            (ops[1].kind, ops[1].error.as_deref(), ops[1].time),
            (OpType::Info, Some("timed-out"), 1)
        );
        assert_eq!(
            (ops[2].process.clone(), &ops[2].value),
            (Process::Client(0), &Value::Null)
        );
    }

    #[test]
    fn jepsen_log_errors_name_the_line() {
        let err = parse_jepsen_log("x - 1\t:invoke\t:read\tnil\nx - 1\t:weird\t:read\tnil\n").unwrap_err();
        assert!(matches!(err, Error::Parse { line: 2, .. }), "{err}");
    }

    #[test]
    fn edn_lines() {
        let text = "{:process 9, :type :invoke, :f :append, :key \"0\", :value \"x 9 0 y\"}\n\
                    {:process 1, :type :ok, :f :get, :key \"9\", :value \"\"}\n\
                    {:process 1, :type :invoke, :f :get, :key \"9\", :value nil}\n";
        let h = parse_edn_lines(text).unwrap();
        let ops = h.ops();
        assert_eq!(
            (ops[0].key.as_deref(), &ops[0].value),
            (Some("0"), &json!("x 9 0 y"))
        );
        assert_eq!((ops[1].kind, &ops[1].value), (OpType::Ok, &json!("")));
        assert_eq!(ops[2].value, Value::Null);
        assert!(parse_edn_lines("{:process 1, :f :get}").is_err());
        assert!(parse_edn_lines("{:process 1, :type :ok, :f :get, :value \"open}").is_err());
    }
}
