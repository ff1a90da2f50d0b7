//! Validation of the names an agent introduces itself with.
//!
//! They end up in storage keys, URLs and alert texts, so they are kept to a safe
//! alphabet and length: 1-128 characters of `[A-Za-z0-9._-]`. What only describes the
//! agent (its host name, its version) is looser, printable ASCII without spaces, but
//! bounded too ([`validate_text`]).

/// Longest service name, instance id or label key.
pub const MAX_NAME_LEN: usize = 128;
/// Longest label value.
pub const MAX_LABEL_VALUE_LEN: usize = 256;
/// Most labels one agent may carry.
pub const MAX_LABELS: usize = 32;
/// Longest host name (a DNS name's limit).
pub const MAX_HOST_LEN: usize = 253;
/// Longest agent version.
pub const MAX_VERSION_LEN: usize = 64;

/// A name that breaks the rules.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// The name is empty.
    #[error("{what} is empty")]
    Empty {
        /// What was being named ("service", "instance id", ...).
        what: &'static str,
    },
    /// The name is longer than allowed.
    #[error("{what} {value:?} is {len} characters long, the limit is {max}")]
    TooLong {
        /// What was being named.
        what: &'static str,
        /// The name, cut to the limit.
        value: String,
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name has a character outside `[A-Za-z0-9._-]`.
    #[error("{what} {value:?} has the character {bad:?}; use only A-Z a-z 0-9 . _ -")]
    BadChar {
        /// What was being named.
        what: &'static str,
        /// The name.
        value: String,
        /// The first offending character.
        bad: char,
    },
    /// The text has a character outside printable ASCII, or a space.
    #[error("{what} {value:?} has the character {bad:?}; use only printable ASCII without spaces")]
    NotPrintable {
        /// What was being described ("host", "agent version").
        what: &'static str,
        /// The text.
        value: String,
        /// The first offending character.
        bad: char,
    },
    /// Too many labels.
    #[error("{count} labels, the limit is {max}")]
    TooManyLabels {
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
}

/// Checks a service name, instance id or label key.
pub fn validate_name(what: &'static str, value: &str) -> Result<(), NameError> {
    if value.is_empty() {
        return Err(NameError::Empty { what });
    }
    let len = value.chars().count();
    if len > MAX_NAME_LEN {
        return Err(NameError::TooLong {
            what,
            value: value.chars().take(MAX_NAME_LEN).collect(),
            len,
            max: MAX_NAME_LEN,
        });
    }
    if let Some(bad) = value
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(NameError::BadChar {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// Checks text that describes an agent (its host name, its version): empty, or at most
/// `max` characters of printable ASCII other than space.
pub fn validate_text(what: &'static str, value: &str, max: usize) -> Result<(), NameError> {
    let len = value.chars().count();
    if len > max {
        return Err(NameError::TooLong {
            what,
            value: value.chars().take(max).collect(),
            len,
            max,
        });
    }
    if let Some(bad) = value.chars().find(|c| !c.is_ascii_graphic()) {
        return Err(NameError::NotPrintable {
            what,
            value: value.to_owned(),
            bad,
        });
    }
    Ok(())
}

/// Checks a set of labels: keys as names, values by length, and their number.
pub fn validate_labels<'a>(
    labels: impl IntoIterator<Item = (&'a String, &'a String)>,
) -> Result<(), NameError> {
    let mut count = 0;
    for (key, value) in labels {
        count += 1;
        validate_name("label key", key)?;
        let len = value.chars().count();
        if len > MAX_LABEL_VALUE_LEN {
            return Err(NameError::TooLong {
                what: "label value",
                value: value.chars().take(MAX_LABEL_VALUE_LEN).collect(),
                len,
                max: MAX_LABEL_VALUE_LEN,
            });
        }
    }
    if count > MAX_LABELS {
        return Err(NameError::TooManyLabels {
            count,
            max: MAX_LABELS,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_ordinary_names() {
        for ok in ["checkout", "checkout-7f9c.pod_1", "A", &"x".repeat(128)] {
            assert_eq!(validate_name("service", ok), Ok(()), "{ok}");
        }
    }

    #[test]
    fn rejects_bad_names_with_the_offending_value() {
        assert_eq!(
            validate_name("service", ""),
            Err(NameError::Empty { what: "service" })
        );
        let err = validate_name("service", "check out").unwrap_err();
        assert_eq!(
            err.to_string(),
            "service \"check out\" has the character ' '; use only A-Z a-z 0-9 . _ -"
        );
        let long = "y".repeat(129);
        assert!(matches!(
            validate_name("instance id", &long),
            Err(NameError::TooLong { len: 129, .. })
        ));
        assert!(matches!(
            validate_name("service", "a/../b"),
            Err(NameError::BadChar { bad: '/', .. })
        ));
    }

    #[test]
    fn checks_descriptive_text() {
        for ok in [
            "",
            "web-1.eu-west-1.compute.internal",
            "0.1.0+g1a2b3c",
            "pod_7:9",
        ] {
            assert_eq!(validate_text("host", ok, MAX_HOST_LEN), Ok(()), "{ok}");
        }
        let err = validate_text("host", "web 1", MAX_HOST_LEN).unwrap_err();
        assert_eq!(
            err.to_string(),
            "host \"web 1\" has the character ' '; use only printable ASCII without spaces"
        );
        assert!(matches!(
            validate_text("agent version", "1.0\u{1b}[2J", MAX_VERSION_LEN),
            Err(NameError::NotPrintable { bad: '\u{1b}', .. })
        ));
        let long = "h".repeat(MAX_HOST_LEN + 1);
        let Err(NameError::TooLong { value, len, .. }) = validate_text("host", &long, MAX_HOST_LEN)
        else {
            panic!("too long");
        };
        assert_eq!((value.len(), len), (MAX_HOST_LEN, MAX_HOST_LEN + 1));
    }

    #[test]
    fn checks_labels() {
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("region".to_owned(), "eu west 1".to_owned());
        assert_eq!(validate_labels(&labels), Ok(()));
        labels.insert("bad key".to_owned(), "v".to_owned());
        assert!(validate_labels(&labels).is_err());
        let many: std::collections::BTreeMap<String, String> =
            (0..33).map(|i| (format!("k{i}"), String::new())).collect();
        assert!(matches!(
            validate_labels(&many),
            Err(NameError::TooManyLabels { count: 33, .. })
        ));
    }
}
