//! `medic output NAME [--json]` and `medic output set NAME key=value… | --json -`: the
//! arguments, the JSON shape of outputs, and how they are printed.

use std::io::Read;

use medic_kernel::outputs::limits;
use medic_kernel::{Outputs, Value};
use serde_json::Value as Json;

use super::Failure;

/// What the command line asks for.
#[derive(Debug, PartialEq)]
pub enum Asked {
    /// Print the outputs of this service.
    Show(String),
    /// Replace the outputs of this service.
    Set(String, Outputs),
}

/// stdin is read up to this (a map that fits a control request is far smaller).
const MAX_STDIN_BYTES: u64 = 1 << 20;

/// Reads `NAME`, `set NAME key=value…` or `set NAME -` (with `json`, reading `stdin`).
pub fn parse_args(args: &[String], json: bool, stdin: &mut impl Read) -> Result<Asked, Failure> {
    match args {
        [name] => Ok(Asked::Show(name.clone())),
        [set, name, rest @ ..] if set == "set" => {
            let outputs = if json {
                if rest != ["-"] {
                    return Err(Failure::usage(
                        "with --json, `output set NAME -` reads one JSON object from stdin",
                    ));
                }
                let mut text = String::new();
                stdin
                    .take(MAX_STDIN_BYTES)
                    .read_to_string(&mut text)
                    .map_err(|e| Failure::usage(format!("cannot read stdin: {e}")))?;
                from_json_text(&text)?
            } else {
                from_pairs(rest)?
            };
            // Checked here too, so that a map over a bound is named as such (the bounds keep a
            // whole map within one control request), not as a frame too large.
            medic_kernel::outputs::validate(&outputs)
                .map_err(|e| Failure::failed(format!("{e}; nothing changed")))?;
            Ok(Asked::Set(name.clone(), outputs))
        }
        _ => Err(Failure::usage(
            "write `medic output NAME` or `medic output set NAME key=value…`",
        )),
    }
}

/// `key=value` pairs; a key given twice makes a list, in order.
pub fn from_pairs(pairs: &[String]) -> Result<Outputs, Failure> {
    let mut outputs = Outputs::new();
    for pair in pairs {
        let Some((key, value)) = pair.split_once('=') else {
            return Err(Failure::usage(format!(
                "`{pair}` is not key=value (to read JSON from stdin: --json -)"
            )));
        };
        let value = Value::String(value.to_string());
        match outputs.get_mut(key) {
            None => {
                outputs.insert(key.to_string(), value);
            }
            Some(Value::List(items)) => items.push(value),
            Some(first) => {
                let first = std::mem::replace(first, Value::List(Vec::new()));
                outputs.insert(key.to_string(), Value::List(vec![first, value]));
            }
        }
    }
    Ok(outputs)
}

/// One JSON object: strings, arrays and objects; numbers and booleans as their text.
pub fn from_json_text(text: &str) -> Result<Outputs, Failure> {
    let json: Json = serde_json::from_str(text)
        .map_err(|e| Failure::usage(format!("the outputs are not JSON: {e}")))?;
    from_json_value(json)
}

/// Outputs from one JSON object (numbers and booleans as text; null refused).
pub fn from_json_value(json: Json) -> Result<Outputs, Failure> {
    let Json::Object(map) = json else {
        return Err(Failure::usage(
            "the outputs must be one JSON object, like {\"prefix\": \"2001:db8::/56\"}",
        ));
    };
    map.into_iter()
        .map(|(k, v)| Ok((k.clone(), from_json(&v, &k, 1)?)))
        .collect()
}

fn from_json(json: &Json, key: &str, depth: usize) -> Result<Value, Failure> {
    if depth > limits::MAX_DEPTH {
        return Err(Failure::usage(format!(
            "`{key}` is nested deeper than {} levels",
            limits::MAX_DEPTH
        )));
    }
    Ok(match json {
        Json::String(s) => Value::String(s.clone()),
        Json::Number(n) => Value::String(n.to_string()),
        Json::Bool(b) => Value::String(b.to_string()),
        Json::Null => {
            return Err(Failure::usage(format!(
                "`{key}` is null: leave the key out instead"
            )))
        }
        Json::Array(items) => Value::List(
            items
                .iter()
                .map(|v| from_json(v, key, depth + 1))
                .collect::<Result<_, _>>()?,
        ),
        Json::Object(map) => Value::Map(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), from_json(v, k, depth + 1)?)))
                .collect::<Result<_, Failure>>()?,
        ),
    })
}

/// Outputs as one JSON object.
pub fn to_json(outputs: &Outputs) -> Json {
    Json::Object(
        outputs
            .iter()
            .map(|(k, v)| (k.clone(), value_json(v)))
            .collect(),
    )
}

fn value_json(value: &Value) -> Json {
    match value {
        Value::String(s) => Json::String(s.clone()),
        Value::List(items) => Json::Array(items.iter().map(value_json).collect()),
        Value::Map(map) => Json::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), value_json(v)))
                .collect(),
        ),
    }
}

/// `key = value` per line; a list or map as JSON. Control characters are escaped so that
/// what a service published cannot drive the terminal.
pub fn table(outputs: &Outputs) -> String {
    let mut text = String::new();
    for (key, value) in outputs {
        let shown = match value {
            Value::String(s) => s.escape_default().to_string(),
            other => value_json(other).to_string(),
        };
        text.push_str(&format!("{key} = {shown}\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(words: &[&str]) -> Vec<String> {
        words.iter().map(|w| w.to_string()).collect()
    }

    #[test]
    fn pairs_make_strings_and_a_repeated_key_a_list() {
        let asked = parse_args(
            &args(&["set", "dhcp6", "state=bound", "dns=a", "dns=b", "dns=c"]),
            false,
            &mut std::io::empty(),
        )
        .unwrap();
        let Asked::Set(name, outputs) = asked else {
            panic!("not a set")
        };
        assert_eq!(name, "dhcp6");
        assert_eq!(
            to_json(&outputs).to_string(),
            r#"{"dns":["a","b","c"],"state":"bound"}"#
        );
        assert!(parse_args(
            &args(&["set", "x", "novalue"]),
            false,
            &mut std::io::empty()
        )
        .is_err());
        assert_eq!(
            parse_args(&args(&["dhcp6"]), false, &mut std::io::empty()).unwrap(),
            Asked::Show("dhcp6".into())
        );
        assert!(parse_args(&args(&["a", "b"]), false, &mut std::io::empty()).is_err());
    }

    #[test]
    fn json_from_stdin_keeps_its_shape_and_refuses_null_and_non_objects() {
        let mut stdin =
            br#"{"prefixes":[{"address":"2001:db8::","length":56}],"up":true}"#.as_slice();
        let asked = parse_args(&args(&["set", "d", "-"]), true, &mut stdin).unwrap();
        let Asked::Set(_, outputs) = asked else {
            panic!("not a set")
        };
        assert_eq!(
            to_json(&outputs).to_string(),
            r#"{"prefixes":[{"address":"2001:db8::","length":"56"}],"up":"true"}"#
        );
        for bad in [
            r#"{"a":null}"#,
            "[1]",
            "{",
            r#"{"a":[[[[[[[[["x"]]]]]]]]]}"#,
        ] {
            let mut stdin = bad.as_bytes();
            assert!(
                parse_args(&args(&["set", "d", "-"]), true, &mut stdin).is_err(),
                "{bad}"
            );
        }
        assert!(parse_args(&args(&["set", "d", "a=b"]), true, &mut std::io::empty()).is_err());
    }

    #[test]
    fn the_table_escapes_control_characters() {
        let outputs: Outputs = [("a".to_string(), Value::String("x\u{1b}[31m".into()))].into();
        assert_eq!(table(&outputs), "a = x\\u{1b}[31m\n");
    }
}
