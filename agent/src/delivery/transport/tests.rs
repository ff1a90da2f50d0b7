use super::*;
use crate::Failure;

#[test]
fn compression_parses_and_defaults_to_gzip() -> crate::TestResult {
    assert_eq!("ZSTD".parse(), Ok(Compression::Zstd));
    assert_eq!("gzip".parse(), Ok(Compression::Gzip));
    assert_eq!("none".parse(), Ok(Compression::None));
    assert!("brotli".parse::<Compression>().is_err());
    let t = TransportSettings::default().resolve(None)?;
    assert_eq!(t.compression, Compression::Gzip);
    Ok(())
}

#[test]
fn a_token_goes_out_as_a_bearer_header_and_stays_out_of_logs() -> crate::TestResult {
    let t = TransportSettings {
        token: Some("s3cret".to_owned()),
        compression: Some(Compression::None),
        ..Default::default()
    }
    .resolve(Some("http://h:1"))?;
    assert_eq!(t.compression, Compression::None);
    assert!(!format!("{t:?}").contains("s3cret"));
    let req = t.request(());
    assert_eq!(
        req.metadata()
            .get("authorization")
            .ok_or("no authorization header")?,
        "Bearer s3cret"
    );
    Ok(())
}

#[test]
fn tokens_must_fit_a_header() -> crate::TestResult {
    for bad in ["", "two words", "tab\there", "é"] {
        let s = TransportSettings {
            token: Some(bad.to_owned()),
            ..Default::default()
        };
        let err = s.resolve(None).failure()?;
        assert_eq!(err, TransportError::BadToken);
        assert!(!err.to_string().contains(bad) || bad.is_empty(), "{err}");
    }
    Ok(())
}

#[cfg(not(feature = "tls"))]
#[test]
fn https_needs_the_tls_feature() -> crate::TestResult {
    let err = TransportSettings::default()
        .resolve(Some("https://h:1"))
        .failure()?;
    assert!(err.to_string().contains("`tls` feature"), "{err}");
    Ok(())
}

#[cfg(feature = "tls")]
#[test]
fn an_unreadable_ca_file_is_named() -> crate::TestResult {
    let s = TransportSettings {
        tls_ca_file: Some(PathBuf::from("/nonexistent/ca.pem")),
        ..Default::default()
    };
    let err = s.resolve(Some("https://h:1")).failure()?;
    assert!(err.to_string().contains("/nonexistent/ca.pem"), "{err}");
    Ok(())
}
