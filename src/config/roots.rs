//! The certificates outbound HTTPS (connectors and `reply_to` webhooks) trusts: the bundled
//! Mozilla roots, or the PEM bundle a `ca_file` setting names. Read when the configuration
//! is validated, so a bad bundle stops the start, and again when the agents are built.

use std::path::Path;

use ureq::tls::{Certificate, PemItem, RootCerts};

use super::error::Error;

/// The certificates an outbound HTTPS call trusts.
#[derive(Debug, Clone)]
pub struct Roots(RootCerts);

impl Roots {
    /// The Mozilla roots compiled into the binary (webpki-roots).
    pub fn bundled() -> Roots {
        Roots(RootCerts::WebPki)
    }

    /// The certificates, for an agent's TLS configuration.
    pub fn certs(&self) -> &RootCerts {
        &self.0
    }

    /// The certificates of the PEM bundle `ca_file` if given, else the bundled roots.
    /// `key` is the setting's name (`connectors.ca_file`), which every error starts with.
    pub fn load(ca_file: Option<&Path>, key: &str) -> Result<Roots, Error> {
        let Some(path) = ca_file else {
            return Ok(Roots::bundled());
        };
        let invalid = |message: String| Error::Invalid {
            origin: key.to_string(),
            message,
        };
        let pem = std::fs::read(path)
            .map_err(|e| invalid(format!("cannot read {}: {e}", path.display())))?;
        let mut certs: Vec<Certificate<'static>> = Vec::new();
        for item in ureq::tls::parse_pem(&pem) {
            match item {
                Ok(PemItem::Certificate(c)) => certs.push(c),
                // A key has no business in a trust bundle, but it does no harm either.
                Ok(_) => {}
                Err(e) => return Err(invalid(format!("{} is not PEM: {e}", path.display()))),
            }
        }
        if certs.is_empty() {
            return Err(invalid(format!(
                "{} holds no PEM certificate",
                path.display()
            )));
        }
        // ureq skips certificates it cannot parse; checked here so that a damaged bundle
        // stops the start instead of failing every call later.
        let mut store = tokio_rustls::rustls::RootCertStore::empty();
        for (i, c) in certs.iter().enumerate() {
            let der = tokio_rustls::rustls::pki_types::CertificateDer::from(c.der());
            store.add(der).map_err(|e| {
                invalid(format!(
                    "certificate {} of {} is not usable as a root: {e}",
                    i + 1,
                    path.display()
                ))
            })?;
        }
        Ok(Roots(RootCerts::new_with_certs(&certs)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pem: &[u8]) -> Result<Roots, Error> {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, pem).expect("write");
        Roots::load(Some(&path), "connectors.ca_file")
    }

    #[test]
    fn a_ca_file_must_hold_usable_certificates() {
        let cert = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls/cert.pem");
        let roots = Roots::load(Some(Path::new(cert)), "connectors.ca_file").expect("the test CA");
        assert!(matches!(roots.0, RootCerts::Specific(ref c) if c.len() == 1));
        assert!(matches!(
            Roots::load(None, "connectors.ca_file").expect("bundled").0,
            RootCerts::WebPki
        ));
        for (pem, says) in [
            (&b""[..], "holds no PEM certificate"),
            (b"just text\n", "holds no PEM certificate"),
            (
                b"-----BEGIN CERTIFICATE-----\n!!!\n-----END CERTIFICATE-----\n",
                "is not PEM",
            ),
            (
                b"-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
                "not usable as a root",
            ),
        ] {
            let e = load(pem).expect_err("refused");
            let e = e.to_string();
            assert!(e.starts_with("connectors.ca_file: "), "{e}");
            assert!(e.contains(says), "{e}");
        }
    }
}
