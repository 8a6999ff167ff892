//! TLS client settings for the directory: system roots plus the admin's CA
//! files, or (only when the admin says so) no verification at all.

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::pki_types::pem::PemObject;
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
    // rustls-pki-types' PEM reader (rustls-pemfile is unmaintained: RUSTSEC-2025-0134).
    let certs: Result<Vec<_>, _> = CertificateDer::pem_slice_iter(&data).collect();
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
    ca_only: bool,
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
    // With `ca_only` the admin's bundle replaces the system roots, as
    // libldap's TLS_CACERT does; they are then not even read.
    if !ca_only {
        let native = rustls_native_certs::load_native_certs();
        for cert in native.certs {
            if roots.add(cert).is_ok() {
                summary.system_roots += 1;
            }
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
    let webpki =
        rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
            .build()
            .map_err(|e| format!("TLS setup: {e}"))?;
    let config = builder
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(CnFallback(webpki)))
        .with_no_client_auth();
    Ok((Arc::new(config), summary))
}

/// The names a certificate carries, for matching and for hints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CertNames {
    /// DNS names and IP addresses of the subjectAltName; `None` when the
    /// certificate has no subjectAltName extension at all.
    pub san: Option<Vec<String>>,
    /// The subject's common names.
    pub cn: Vec<String>,
}

impl CertNames {
    pub fn of(der: &[u8]) -> Option<CertNames> {
        use x509_parser::extensions::GeneralName;
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let san = match cert.subject_alternative_name() {
            Ok(Some(ext)) => Some(
                ext.value
                    .general_names
                    .iter()
                    .filter_map(|n| match n {
                        GeneralName::DNSName(d) => Some((*d).to_owned()),
                        GeneralName::IPAddress(b) => match b.len() {
                            4 => Some(std::net::Ipv4Addr::new(b[0], b[1], b[2], b[3]).to_string()),
                            16 => <[u8; 16]>::try_from(*b)
                                .ok()
                                .map(|a| std::net::Ipv6Addr::from(a).to_string()),
                            _ => None,
                        },
                        _ => None,
                    })
                    .collect(),
            ),
            Ok(None) => None,
            // A subjectAltName that does not parse is still a subjectAltName: no CN fallback.
            Err(_) => Some(Vec::new()),
        };
        let cn = cert
            .subject()
            .iter_common_name()
            .filter_map(|a| a.as_str().ok().map(str::to_owned))
            .collect();
        Some(CertNames { san, cn })
    }

    /// The names to show an admin: the subjectAltName's, or the CN's when it has none.
    pub fn shown(&self) -> String {
        match &self.san {
            Some(s) if s.is_empty() => "a subjectAltName with no DNS name or address".to_owned(),
            Some(s) => format!("subjectAltName {}", s.join(", ")),
            None if self.cn.is_empty() => "no subjectAltName and no CN".to_owned(),
            None => format!("no subjectAltName; CN {}", self.cn.join(", ")),
        }
    }
}

/// Which name of the certificate matched the host.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameMatch {
    SubjectAltName,
    /// The certificate has no subjectAltName; its subject CN matched (libldap's rule).
    CommonName,
    None,
}

impl std::fmt::Display for NameMatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            NameMatch::SubjectAltName => "host name matched by subjectAltName",
            NameMatch::CommonName => {
                "host name matched by CN (the certificate has no subjectAltName)"
            }
            NameMatch::None => "host name not in the certificate",
        })
    }
}

/// Whether `pattern` (a name from a certificate) names `host`: equal without
/// regard to ASCII case, or a wildcard `*` as the whole leftmost label that
/// stands for exactly one label of the host.
pub fn dns_name_matches(pattern: &str, host: &str) -> bool {
    let pattern = pattern.trim_end_matches('.');
    let host = host.trim_end_matches('.');
    if host.is_empty() || pattern.is_empty() {
        return false;
    }
    match pattern.strip_prefix("*.") {
        Some(rest) if !rest.contains('*') => match host.split_once('.') {
            Some((first, host_rest)) => !first.is_empty() && host_rest.eq_ignore_ascii_case(rest),
            None => false,
        },
        Some(_) => false,
        None => !pattern.contains('*') && pattern.eq_ignore_ascii_case(host),
    }
}

/// How `host` matches the certificate `der`, judging a certificate with a
/// subjectAltName by it alone and one without by its CN.
pub fn name_match(der: &[u8], host: &str) -> NameMatch {
    let Some(names) = CertNames::of(der) else {
        return NameMatch::None;
    };
    let is_ip = host.parse::<std::net::IpAddr>().is_ok();
    match &names.san {
        Some(san) => {
            let hit = san.iter().any(|n| {
                if is_ip {
                    n.parse::<std::net::IpAddr>().ok() == host.parse().ok()
                } else {
                    dns_name_matches(n, host)
                }
            });
            if hit {
                NameMatch::SubjectAltName
            } else {
                NameMatch::None
            }
        }
        None if !is_ip && names.cn.iter().any(|cn| dns_name_matches(cn, host)) => {
            NameMatch::CommonName
        }
        None => NameMatch::None,
    }
}

/// webpki's verification, plus libldap's fallback for a certificate without
/// any subjectAltName: when the chain verifies but the name check fails, the
/// subject CN may name the host (as OpenLDAP's client, and so PHP and
/// mailcow, accept). A certificate with a subjectAltName is judged by it alone.
#[derive(Debug)]
struct CnFallback(Arc<rustls::client::WebPkiServerVerifier>);

static CN_WARNING: std::sync::Once = std::sync::Once::new();

/// Where one-shot processes remember that the CN warning was given for a
/// certificate (their `state_dir`), so that it is given once, not at every
/// login. Set once per process; a long-running process warns once anyway.
static WARNED_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Remember warnings about certificates in `dir` (see [`WARNED_DIR`]).
pub fn remember_warnings_in(dir: &Path) {
    let _ = WARNED_DIR.set(dir.to_owned());
}

/// Whether this certificate's CN warning is still to be given: true once per
/// process, and (with a state folder) once per certificate across processes.
fn first_cn_warning(der: &[u8]) -> bool {
    let mut first = false;
    CN_WARNING.call_once(|| first = true);
    if !first {
        return false;
    }
    let Some(dir) = WARNED_DIR.get() else {
        return true;
    };
    use sha1::Digest;
    let digest: String = sha1::Sha1::digest(der)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    // create_new: an existing file (or link) means it was said already; a
    // folder we cannot write means we say it again rather than never.
    !matches!(
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(dir.join(format!("tls-cn-warned-{digest}"))),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists
    )
}

impl ServerCertVerifier for CnFallback {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        use rustls::CertificateError::{NotValidForName, NotValidForNameContext};
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp, now)
        {
            // webpki checks the chain first: a name error means the chain verified.
            Err(rustls::Error::InvalidCertificate(
                ref e @ (NotValidForName | NotValidForNameContext { .. }),
            )) => {
                let host = match server_name {
                    ServerName::DnsName(d) => d.as_ref().to_owned(),
                    _ => return Err(rustls::Error::InvalidCertificate(e.clone())),
                };
                if name_match(end_entity.as_ref(), &host) == NameMatch::CommonName {
                    if first_cn_warning(end_entity.as_ref()) {
                        crate::log::warn(&format!(
                            "the TLS certificate of {} has no subjectAltName; accepted because its CN names the host (as libldap does): it should carry a subjectAltName",
                            crate::log::clean(&host)
                        ))
                    }
                    Ok(ServerCertVerified::assertion())
                } else {
                    Err(rustls::Error::InvalidCertificate(e.clone()))
                }
            }
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
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
            let names = CertNames::of(der).map(|n| n.shown()).unwrap_or_default();
            format!(
                "subject \"{}\", issuer \"{}\", names: {names}, valid until {}{}",
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cn_and_san_name_rules() {
        assert!(dns_name_matches(
            "DC1.corp.example.org",
            "dc1.corp.example.org"
        ));
        assert!(dns_name_matches(
            "*.corp.example.org",
            "dc1.corp.example.org"
        ));
        assert!(!dns_name_matches(
            "*.corp.example.org",
            "a.dc1.corp.example.org"
        ));
        assert!(!dns_name_matches("*.corp.example.org", "corp.example.org"));
        assert!(!dns_name_matches(
            "d*.corp.example.org",
            "dc1.corp.example.org"
        ));
        assert!(!dns_name_matches("*.*.example.org", "a.b.example.org"));
        assert!(!dns_name_matches(
            "dc1.corp.example.org",
            "dc2.corp.example.org"
        ));
        assert!(!dns_name_matches("", "x"));
    }
}
