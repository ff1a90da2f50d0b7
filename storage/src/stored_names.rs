//! The names reasons and metrics are stored under, the same in every backend.

use holmes_proto::{ProfileFormat, ProfileKind, TriggerReason};

use crate::StoreError;

/// The reason a stored name stands for; `what` names the column in the error.
pub(crate) fn reason_from_name(
    what: &'static str,
    name: &str,
) -> Result<TriggerReason, StoreError> {
    TriggerReason::from_name(name).ok_or_else(|| StoreError::Corrupt {
        what,
        value: name.to_owned(),
    })
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

/// The profile format a stored name ([`ProfileFormat::as_str`]) stands for; `what`
/// names the column in the error.
pub(crate) fn format_from_name(
    what: &'static str,
    name: &str,
) -> Result<ProfileFormat, StoreError> {
    [
        ProfileFormat::PprofGzip,
        ProfileFormat::Native,
        ProfileFormat::NativeStream,
    ]
    .into_iter()
    .find(|f| f.as_str() == name)
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
        for r in TriggerReason::ALL {
            assert_eq!(reason_from_name("t", r.as_str()).unwrap(), r);
        }
        for k in [
            ProfileKind::Cpu,
            ProfileKind::Heap,
            ProfileKind::Threads,
            ProfileKind::Tasks,
        ] {
            assert_eq!(kind_from_name("p", k.as_str()).unwrap(), k);
        }
        for f in [
            ProfileFormat::PprofGzip,
            ProfileFormat::Native,
            ProfileFormat::NativeStream,
        ] {
            assert_eq!(format_from_name("p", f.as_str()).unwrap(), f);
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
