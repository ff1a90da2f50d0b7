//! Labels a pod already knows about itself, from the variables Kubernetes' Downward API
//! (or an OpenTelemetry setup) puts in its environment, under the OpenTelemetry
//! semantic conventions' names: `k8s.namespace.name`, `k8s.pod.name`, `k8s.node.name`,
//! `k8s.deployment.name`, `service.version`.
//!
//! For each label, `OTEL_RESOURCE_ATTRIBUTES` (`key=value,…`, values percent-encoded)
//! wins, as it does in OpenTelemetry SDKs; else the first of the label's plain variables
//! that is set ([`SOURCES`]). `HOLMES_LABELS` and labels set in code win over both. A
//! detected value the collector would refuse (over 256 characters) is left out with a
//! warning rather than failing the start: the host did not write it for Holmes.

use std::collections::BTreeMap;

use holmes_proto::names;

/// Each detected label and the plain variables it is read from, in order.
pub(crate) const SOURCES: [(&str, &[&str]); 5] = [
    ("k8s.namespace.name", &["POD_NAMESPACE", "K8S_NAMESPACE"]),
    ("k8s.pod.name", &["POD_NAME", "K8S_POD_NAME"]),
    ("k8s.node.name", &["NODE_NAME", "K8S_NODE_NAME"]),
    (
        "k8s.deployment.name",
        &["DEPLOYMENT_NAME", "K8S_DEPLOYMENT_NAME"],
    ),
    ("service.version", &["SERVICE_VERSION"]),
];

/// The labels found through `get` (which treats empty variables as unset).
pub(crate) fn detect(get: &dyn Fn(&'static str) -> Option<String>) -> BTreeMap<String, String> {
    let otel = get("OTEL_RESOURCE_ATTRIBUTES")
        .map(|v| resource_attributes(&v))
        .unwrap_or_default();
    let mut labels = BTreeMap::new();
    for (label, vars) in SOURCES {
        let value = otel
            .get(label)
            .cloned()
            .or_else(|| vars.iter().find_map(|var| get(var)))
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty());
        if let Some(value) = value {
            labels.insert(label.to_owned(), value);
        }
    }
    labels
}

/// The detected labels the collector will accept; the others are logged and left out.
pub(crate) fn valid_labels(detected: BTreeMap<String, String>) -> BTreeMap<String, String> {
    detected
        .into_iter()
        .filter(|(key, value)| {
            let one = BTreeMap::from([(key.clone(), value.clone())]);
            match names::validate_labels(&one) {
                Ok(()) => true,
                Err(err) => {
                    tracing::warn!(target: "holmes", label = %key, error = %err, "leaving out a label detected from the environment");
                    false
                }
            }
        })
        .collect()
}

/// `OTEL_RESOURCE_ATTRIBUTES`'s pairs, percent-decoded. A malformed pair is skipped (the
/// variable belongs to the host's OpenTelemetry setup, not to Holmes).
fn resource_attributes(value: &str) -> BTreeMap<String, String> {
    value
        .split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((percent_decode(k.trim())?, percent_decode(v.trim())?))
        })
        .collect()
}

/// Decodes `%XX` escapes (W3C baggage encoding); `None` for a broken escape or bytes
/// that are not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        if b == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn detect_from(pairs: &[(&'static str, &str)]) -> BTreeMap<String, String> {
        let env: HashMap<&str, String> = pairs.iter().map(|(k, v)| (*k, v.to_string())).collect();
        detect(&|var| env.get(var).cloned().filter(|v| !v.is_empty()))
    }

    #[test]
    fn reads_the_downward_api_variables_under_opentelemetry_names() {
        let labels = detect_from(&[
            ("POD_NAMESPACE", "shop"),
            ("POD_NAME", "checkout-7f9c5d8b6-x2x4q"),
            ("K8S_NODE_NAME", "node-3"),
            ("DEPLOYMENT_NAME", "checkout"),
            ("SERVICE_VERSION", "1.4.2"),
        ]);
        let expected: BTreeMap<String, String> = [
            ("k8s.namespace.name", "shop"),
            ("k8s.pod.name", "checkout-7f9c5d8b6-x2x4q"),
            ("k8s.node.name", "node-3"),
            ("k8s.deployment.name", "checkout"),
            ("service.version", "1.4.2"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(labels, expected);
        // Every key passes the collector's label rules.
        assert_eq!(names::validate_labels(&labels), Ok(()));
        assert!(detect_from(&[("HOSTNAME", "x")]).is_empty());
    }

    #[test]
    fn opentelemetry_resource_attributes_win_and_are_decoded() {
        let labels = detect_from(&[
            ("POD_NAME", "from-downward-api"),
            ("NODE_NAME", "node-1"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "k8s.pod.name=from-otel, service.version=1.0%2Bbuild%2C7,host.name=h,broken,x=%zz",
            ),
        ]);
        assert_eq!(labels["k8s.pod.name"], "from-otel");
        assert_eq!(labels["service.version"], "1.0+build,7");
        assert_eq!(labels["k8s.node.name"], "node-1");
        assert!(!labels.contains_key("host.name"), "only the standard five");
    }

    #[test]
    fn a_value_the_collector_would_refuse_is_left_out() {
        let long = "v".repeat(names::MAX_LABEL_VALUE_LEN + 1);
        let labels = valid_labels(detect_from(&[
            ("POD_NAME", "p"),
            ("SERVICE_VERSION", &long),
        ]));
        assert_eq!(labels.keys().collect::<Vec<_>>(), ["k8s.pod.name"]);
    }
}
