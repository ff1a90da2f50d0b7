//! The names reasons and metrics are stored under, the same in every backend.

use holmes_proto::{ProfileKind, TriggerReason};

use crate::StoreError;

/// `abs`, `diff` or `requested`.
pub(crate) fn reason_name(reason: TriggerReason) -> &'static str {
    match reason {
        TriggerReason::Abs => "abs",
        TriggerReason::Diff => "diff",
        TriggerReason::Requested => "requested",
    }
}

/// The reason a stored name stands for; `what` names the column in the error.
pub(crate) fn reason_from_name(
    what: &'static str,
    name: &str,
) -> Result<TriggerReason, StoreError> {
    match name {
        "abs" => Ok(TriggerReason::Abs),
        "diff" => Ok(TriggerReason::Diff),
        "requested" => Ok(TriggerReason::Requested),
        _ => Err(StoreError::Corrupt {
            what,
            value: name.to_owned(),
        }),
    }
}

/// The metric a stored name stands for; `what` names the column in the error.
pub(crate) fn metric_from_name(
    what: &'static str,
    name: &str,
) -> Result<holmes_proto::Metric, StoreError> {
    name.parse().map_err(|_| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
}

/// The profile kind a stored name ([`ProfileKind::as_str`]) stands for; `what` names
/// the column in the error.
pub(crate) fn kind_from_name(what: &'static str, name: &str) -> Result<ProfileKind, StoreError> {
    [
        ProfileKind::Cpu,
        ProfileKind::Heap,
        ProfileKind::Threads,
        ProfileKind::Tasks,
    ]
    .into_iter()
    .find(|k| k.as_str() == name)
    .ok_or_else(|| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_back() {
        for r in [
            TriggerReason::Abs,
            TriggerReason::Diff,
            TriggerReason::Requested,
        ] {
            assert_eq!(reason_from_name("t", reason_name(r)).unwrap(), r);
        }
        for k in [
            ProfileKind::Cpu,
            ProfileKind::Heap,
            ProfileKind::Threads,
            ProfileKind::Tasks,
        ] {
            assert_eq!(kind_from_name("p", k.as_str()).unwrap(), k);
        }
        let err = kind_from_name("profiles.kind", "CPU").unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt stored value in profiles.kind: \"CPU\""
        );
        let err = reason_from_name("triggers.reason", "ABS").unwrap_err();
        assert_eq!(
            err.to_string(),
            "corrupt stored value in triggers.reason: \"ABS\""
        );
    }
}
