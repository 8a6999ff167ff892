//! TLS client settings for the directory: system roots plus the admin's CA
//! files, or (only when the admin says so) no verification at all.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// What went into the trust store, for diagnostics.
#[derive(Debug, Clone, Default)]
pub struct TrustSummary {
    pub system_roots: usize,
    pub ca_file_certs: Vec<(PathBuf, usize)>,
    pub verify: bool,
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Read every certificate of a PEM bundle.
pub fn read_pem_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let data = std::fs::read(path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
    let certs: Result<Vec<_>, _> = rustls_pemfile::certs(&mut data.as_slice()).collect();
    let certs = certs.map_err(|e| format!("CA file {}: not PEM: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "CA file {}: no certificate found (PEM expected)",
            path.display()
        ));
    }
    Ok(certs)
}

/// Build the client configuration. `verify = false` accepts any certificate
/// (the handshake signature is still checked), for `ignore_ssl_errors`.
pub fn client_config(
    ca_files: &[PathBuf],
    verify: bool,
) -> Result<(Arc<ClientConfig>, TrustSummary), String> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?;
    let mut summary = TrustSummary {
        verify,
        ..Default::default()
    };
    if !verify {
        let config = builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AcceptAnyCert(provider())))
            .with_no_client_auth();
        return Ok((Arc::new(config), summary));
    }
    let mut roots = RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        if roots.add(cert).is_ok() {
            summary.system_roots += 1;
        }
    }
    for file in ca_files {
        let certs = read_pem_certs(file)?;
        let mut added = 0;
        for c in certs {
            roots
                .add(c)
                .map_err(|e| format!("CA file {}: unusable certificate: {e}", file.display()))?;
            added += 1;
        }
        summary.ca_file_certs.push((file.clone(), added));
    }
    if roots.is_empty() {
        return Err(
            "no trusted CA certificates: install ca-certificates or set ldap.ca_file".to_owned(),
        );
    }
    let config = builder.with_root_certificates(roots).with_no_client_auth();
    Ok((Arc::new(config), summary))
}

/// Accepts every server certificate. Used only with `ignore_ssl_errors = true`.
#[derive(Debug)]
struct AcceptAnyCert(Arc<CryptoProvider>);

impl ServerCertVerifier for AcceptAnyCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// Subject, issuer and validity of a DER certificate, for the connection test.
pub fn describe_certificate(der: &[u8]) -> String {
    match x509_parser::parse_x509_certificate(der) {
        Ok((_, cert)) => {
            let not_after = cert.validity().not_after;
            let expired = !cert.validity().is_valid();
            format!(
                "subject \"{}\", issuer \"{}\", valid until {}{}",
                cert.subject(),
                cert.issuer(),
                not_after,
                if expired {
                    " (EXPIRED or not yet valid)"
                } else {
                    ""
                }
            )
        }
        Err(e) => format!("unparsable certificate: {e}"),
    }
}
