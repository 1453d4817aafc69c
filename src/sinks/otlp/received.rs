//! Resource and scope of points that came in through tallyd's OTLP receiver, put back on
//! export from the tags the receiver made of them.
//!
//! The aggregator keeps a series' name and tags only. The receiver turned resource and scope
//! attributes into tags through `otlp.attribute_tags` (and the scope name into
//! `otlp.scope_name_tag`), so a tag whose key is one of those renames goes back into the
//! Resource under the attribute's name (the first rename listed for a tag), and the scope tag
//! becomes the InstrumentationScope name. Tags do not say where they came from: a StatsD tag
//! with such a key (`service:web`) moves too, which means the same thing in both worlds.
//! Attributes that became tags under their own names (`otlp.resource_attributes = "all"`)
//! cannot be told from point attributes and stay on the points.

use opentelemetry_proto::tonic::common::v1::KeyValue;

/// The receiver's renames, as plain data (the sinks do not import the OTLP source).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Received {
    /// (tag, attribute): the first rename listed for each tag.
    tags: Vec<(String, String)>,
    /// The tag carrying the scope name.
    scope_tag: Option<String>,
}

/// A series' received resource attributes, sorted by key, and its scope name.
pub type Origin = (Vec<(String, String)>, Option<String>);

impl Received {
    /// From the receiver's (attribute, tag) renames and scope tag (empty = none).
    pub fn new(renames: &[(String, String)], scope_tag: &str) -> Received {
        let mut tags: Vec<(String, String)> = Vec::new();
        for (attr, tag) in renames {
            if !tags.iter().any(|(t, _)| t == tag) && tag != scope_tag {
                tags.push((tag.clone(), attr.clone()));
            }
        }
        Received {
            tags,
            scope_tag: (!scope_tag.is_empty()).then(|| scope_tag.to_string()),
        }
    }

    /// Splits `key:value` tags into point attributes and the origin. The first of two tags
    /// with one key wins (OTLP keys must be unique); an empty value stays on the point.
    pub fn split<'a>(
        &self,
        tags: impl Iterator<Item = &'a str>,
        kv: impl Fn(&str, &str) -> KeyValue,
    ) -> (Vec<KeyValue>, Origin) {
        let mut attrs: Vec<KeyValue> = Vec::new();
        let mut resource: Vec<(String, String)> = Vec::new();
        let mut scope = None;
        let mut seen: Vec<&str> = Vec::new();
        for tag in tags {
            let (k, v) = tag.split_once(':').unwrap_or((tag, ""));
            if k.is_empty() || seen.contains(&k) {
                continue;
            }
            seen.push(k);
            if !v.is_empty() {
                if self.scope_tag.as_deref() == Some(k) {
                    scope = Some(v.to_string());
                    continue;
                }
                if let Some((_, attr)) = self.tags.iter().find(|(t, _)| t == k) {
                    resource.push((attr.clone(), v.to_string()));
                    continue;
                }
            }
            attrs.push(kv(k, v));
        }
        resource.sort_unstable();
        (attrs, (resource, scope))
    }
}
