//! OTLP attribute values as tallyd tag text.
//!
//! A tag is `key:value` and tags are separated by `,` in a context, so a key may contain neither
//! `,` nor `:` and a value may not contain `,`: each becomes `_`.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};

/// A tag key: `,` separates tags and `:` separates key from value, so both become `_`.
pub fn clean_key(k: &str) -> String {
    k.replace([',', ':'], "_")
}

/// A tag value: `,` separates tags, so it becomes `_`.
pub fn clean_value(v: &str) -> String {
    v.replace(',', "_")
}

/// Renders an attribute value as tag text: strings as they are, numbers and booleans in their
/// usual form, bytes as hex, arrays and maps as compact JSON (commas then become `_`).
pub fn render_value(v: Option<&AnyValue>) -> String {
    let mut s = String::new();
    if let Some(v) = v.and_then(|v| v.value.as_ref()) {
        render_any(v, &mut s);
    }
    clean_value(&s)
}

fn render_any(v: &any_value::Value, out: &mut String) {
    use std::fmt::Write as _;
    match v {
        any_value::Value::StringValue(s) => out.push_str(s),
        any_value::Value::BoolValue(b) => out.push_str(if *b { "true" } else { "false" }),
        // A string-table index (profiles, in development) has no table to look up in metrics.
        any_value::Value::StringValueStrindex(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::IntValue(i) => {
            let _ = write!(out, "{i}");
        }
        any_value::Value::DoubleValue(d) => {
            let _ = write!(out, "{d}");
        }
        any_value::Value::BytesValue(b) => {
            for byte in b {
                let _ = write!(out, "{byte:02x}");
            }
        }
        any_value::Value::ArrayValue(a) => {
            out.push('[');
            for (i, x) in a.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                render_json(x.value.as_ref(), out);
            }
            out.push(']');
        }
        any_value::Value::KvlistValue(kv) => {
            out.push('{');
            for (i, x) in kv.values.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&serde_json::Value::String(x.key.clone()).to_string());
                out.push(':');
                render_json(x.value.as_ref().and_then(|v| v.value.as_ref()), out);
            }
            out.push('}');
        }
    }
}

fn render_json(v: Option<&any_value::Value>, out: &mut String) {
    match v {
        None => out.push_str("null"),
        Some(any_value::Value::StringValue(s)) => {
            out.push_str(&serde_json::Value::String(s.clone()).to_string())
        }
        Some(other) => render_any(other, out),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{self as common, KeyValue, KeyValueList};

    fn any(v: any_value::Value) -> AnyValue {
        AnyValue { value: Some(v) }
    }

    #[test]
    fn values_render_as_tag_text() {
        use any_value::Value::*;
        assert_eq!(
            render_value(Some(&any(StringValue("a,b:c".into())))),
            "a_b:c"
        );
        assert_eq!(render_value(Some(&any(IntValue(-3)))), "-3");
        assert_eq!(render_value(Some(&any(DoubleValue(1.5)))), "1.5");
        assert_eq!(render_value(Some(&any(BoolValue(true)))), "true");
        assert_eq!(render_value(Some(&any(BytesValue(vec![0, 255])))), "00ff");
        let arr = common::ArrayValue {
            values: vec![any(StringValue("x".into())), any(IntValue(2))],
        };
        assert_eq!(render_value(Some(&any(ArrayValue(arr)))), "[\"x\"_2]");
        let kv = KeyValueList {
            values: vec![KeyValue {
                key: "k".into(),
                value: Some(any(StringValue("v".into()))),
                ..Default::default()
            }],
        };
        assert_eq!(render_value(Some(&any(KvlistValue(kv)))), "{\"k\":\"v\"}");
        assert_eq!(render_value(None), "");
        assert_eq!(clean_key("a:b,c"), "a_b_c");
    }
}
