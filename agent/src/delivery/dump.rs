//! Local dumps: what the agent writes to its dump folder when there is no collector (or
//! in addition to it). Each trigger becomes `<event-id>.json` with its context; each
//! capture (see the capture module) `<kind>.<event-id>.<timestamp>.pb.gz`, plain pprof
//! with no `.log` suffix to confuse tools.
//!
//! Files are written to a temporary name and renamed, so a reader never sees half a file.

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use holmes_proto::{rule_spec, TriggerEvent, TriggerReason};

/// Escapes a string for a JSON document.
fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A number for JSON (which has no infinity): non-finite values become `null`.
fn json_number(v: f64) -> String {
    if v.is_finite() {
        format!("{v}")
    } else {
        "null".to_owned()
    }
}

/// The trigger's context as a JSON document.
pub(crate) fn trigger_json(service: &str, instance: &str, event: &TriggerEvent) -> String {
    let reason = match event.reason {
        TriggerReason::Abs => "abs",
        TriggerReason::Diff => "diff",
        TriggerReason::Requested => "requested",
        TriggerReason::Baseline => "baseline",
    };
    let window: Vec<String> = event
        .window
        .iter()
        .map(|s| {
            format!(
                "{{\"unix_nanos\":{},\"value\":{}}}",
                s.unix_nanos,
                json_number(s.value)
            )
        })
        .collect();
    let rule = event
        .rule
        .as_ref()
        .map_or_else(|| "null".to_owned(), |r| json_string(&rule_spec::format(r)));
    let planned: Vec<String> = event
        .planned
        .iter()
        .map(|k| json_string(k.as_str()))
        .collect();
    format!(
        "{{\"event_id\":{},\"service\":{},\"instance\":{},\"pid\":{},\"metric\":{},\"reason\":\"{reason}\",\"current\":{},\"unix_nanos\":{},\"rule\":{rule},\"window\":[{}],\"planned\":[{}]}}\n",
        json_string(&event.event_id),
        json_string(service),
        json_string(instance),
        std::process::id(),
        event.metric.map_or_else(|| "null".to_owned(), |m| json_string(m.as_str())),
        json_number(event.current),
        event.unix_nanos,
        window.join(","),
        planned.join(","),
    )
}

/// Writes `bytes` to `dir/name` atomically, creating `dir` if needed.
pub(crate) fn write_file(dir: &Path, name: &str, bytes: &[u8]) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, &path)?;
    Ok(path)
}

/// Writes `<event-id>.json` for a trigger.
pub(crate) fn write_trigger(
    dir: &Path,
    service: &str,
    instance: &str,
    event: &TriggerEvent,
) -> std::io::Result<PathBuf> {
    write_file(
        dir,
        &format!("{}.json", event.event_id),
        trigger_json(service, instance, event).as_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use holmes_proto::{Metric, RuleConfig, Sample};
    use std::time::Duration;

    #[test]
    fn writes_the_trigger_context_as_json() {
        let dir = std::env::temp_dir().join(format!("holmes-dump-test-{}", std::process::id()));
        let event = TriggerEvent {
            event_id: "0123abcd".into(),
            metric: Some(Metric::CpuPercent),
            reason: TriggerReason::Diff,
            current: 88.5,
            window: vec![
                Sample {
                    unix_nanos: 1,
                    value: 10.0,
                },
                Sample {
                    unix_nanos: 2,
                    value: 88.5,
                },
            ],
            rule: Some(RuleConfig {
                metric: Metric::CpuPercent,
                enabled: true,
                min: 10.0,
                diff: 25.0,
                abs: f64::INFINITY,
                max: 0.0,
                cooldown: Duration::from_secs(60),
                window: 2,
            }),
            unix_nanos: 2,
            planned: vec![],
            request_id: None,
        };
        let path = write_trigger(&dir, "check\"out", "i-1", &event).unwrap();
        assert_eq!(path.file_name().unwrap(), "0123abcd.json");
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.contains("\"service\":\"check\\\"out\""), "{text}");
        assert!(text.contains("\"reason\":\"diff\""));
        assert!(text.contains(
            "\"window\":[{\"unix_nanos\":1,\"value\":10},{\"unix_nanos\":2,\"value\":88.5}]"
        ));
        assert!(text.contains("abs=off"), "{text}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
