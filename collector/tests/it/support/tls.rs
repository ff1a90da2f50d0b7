//! Certificates for the TLS tests, made fresh by each test: a CA and a server
//! certificate it signs for `localhost` and `127.0.0.1`.

use std::path::{Path, PathBuf};

use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};

/// The files of one test PKI.
pub(crate) struct TestPki {
    /// The CA certificate clients trust (PEM).
    pub(crate) ca_file: PathBuf,
    /// The server's certificate chain (PEM).
    pub(crate) cert_file: PathBuf,
    /// The server's private key (PEM).
    pub(crate) key_file: PathBuf,
}

/// Writes a CA named `name` and a server certificate it signs into `dir`.
pub(crate) fn test_pki(dir: &Path, name: &str) -> TestPki {
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, format!("holmes test CA {name}"));
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().unwrap()).unwrap();
    let server_key = KeyPair::generate().unwrap();
    let server = CertificateParams::new(vec!["localhost".to_owned(), "127.0.0.1".to_owned()])
        .unwrap()
        .signed_by(&server_key, &ca)
        .unwrap();
    let pki = TestPki {
        ca_file: dir.join(format!("{name}-ca.pem")),
        cert_file: dir.join(format!("{name}-server.pem")),
        key_file: dir.join(format!("{name}-server-key.pem")),
    };
    std::fs::write(&pki.ca_file, ca.pem()).unwrap();
    std::fs::write(&pki.cert_file, server.pem()).unwrap();
    std::fs::write(&pki.key_file, server_key.serialize_pem()).unwrap();
    pki
}
