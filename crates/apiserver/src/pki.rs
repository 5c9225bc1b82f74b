//! The cluster's certificates: a CA, the serving certificate and the admin's client certificate
//! and bearer token, kept in `DIR/pki/` so that restarts keep every kubeconfig valid; the TLS
//! configuration that verifies client certificates; and the admin kubeconfig.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use rand::Rng;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

/// Why the certificates could not be prepared.
#[derive(Debug, thiserror::Error)]
pub enum PkiError {
    /// Reading or writing a file under `pki/` failed.
    #[error("cannot access {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Generating or signing a certificate failed.
    #[error("certificate generation failed")]
    Generate(#[from] rcgen::Error),
    /// A stored PEM file is unreadable.
    #[error("invalid PEM in {0}")]
    BadPem(PathBuf),
    /// rustls rejected the configuration.
    #[error("TLS configuration rejected")]
    Tls(#[from] rustls::Error),
    /// The client verifier could not be built.
    #[error("client certificate verifier rejected")]
    Verifier(#[from] rustls::server::VerifierBuilderError),
}

/// The certificate material of one API server.
#[derive(Clone, Debug)]
pub struct Pki {
    /// CA certificate (PEM).
    pub ca_cert: String,
    /// Serving certificate (PEM).
    pub server_cert: String,
    /// Serving key (PEM).
    pub server_key: String,
    /// Admin client certificate (PEM), CN=admin O=system:masters.
    pub admin_cert: String,
    /// Admin client key (PEM).
    pub admin_key: String,
    /// Admin bearer token.
    pub admin_token: String,
    /// The key service account tokens are signed with (PKCS#8 DER, P-256).
    pub service_account_key: Vec<u8>,
    /// The front proxy's CA (PEM): extension API servers trust requests proxied by the aggregator
    /// with a certificate it signed (`requestheader-client-ca-file`).
    pub front_proxy_ca: String,
    /// The aggregator's client certificate (PEM), CN=front-proxy-client.
    pub front_proxy_cert: String,
    /// Its key (PEM).
    pub front_proxy_key: String,
    /// CA key (PEM), to sign further client certificates.
    ca_key: String,
}

/// The common name extension API servers allow the front proxy (`requestheader-allowed-names`).
pub const FRONT_PROXY_CLIENT: &str = "front-proxy-client";

fn read(path: &Path) -> Result<Option<String>, PkiError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(PkiError::Io { path: path.into(), source }),
    }
}

/// Writes a file atomically (temp file, fsync, rename) with owner-only permissions.
pub fn write_private(path: &Path, contents: &str) -> Result<(), PkiError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| PkiError::Io { path: path.into(), source };
    let tmp = path.with_extension("tmp");
    let mut file =
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).mode(0o600).open(&tmp).map_err(io)?;
    file.write_all(contents.as_bytes()).map_err(io)?;
    file.sync_all().map_err(io)?;
    std::fs::rename(&tmp, path).map_err(io)
}

fn ca_params() -> Result<CertificateParams, PkiError> {
    named_ca_params("vkube-ca")
}

fn named_ca_params(common_name: &str) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(Vec::<String>::new())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

fn leaf(
    common_name: &str,
    organization: Option<&str>,
    sans: &[String],
    server: bool,
) -> Result<CertificateParams, PkiError> {
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut dn = DistinguishedName::new();
    dn.push(DnType::CommonName, common_name);
    if let Some(org) = organization {
        dn.push(DnType::OrganizationName, org);
    }
    params.distinguished_name = dn;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature, KeyUsagePurpose::KeyEncipherment];
    params.extended_key_usages =
        vec![if server { ExtendedKeyUsagePurpose::ServerAuth } else { ExtendedKeyUsagePurpose::ClientAuth }];
    params.not_before = rcgen::date_time_ymd(2024, 1, 1);
    params.not_after = rcgen::date_time_ymd(2124, 1, 1);
    Ok(params)
}

impl Pki {
    /// Loads `dir/pki/*`, generating whatever is missing. `sans` are extra names or IPs of the
    /// serving certificate (localhost and 127.0.0.1 are always included).
    pub fn load_or_create(dir: &Path, sans: &[String]) -> Result<Pki, PkiError> {
        let pki = dir.join("pki");
        std::fs::create_dir_all(&pki).map_err(|source| PkiError::Io { path: pki.clone(), source })?;
        let path = |name: &str| pki.join(name);
        let (ca_cert, ca_key) = match (read(&path("ca.crt"))?, read(&path("ca.key"))?) {
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                let key = KeyPair::generate()?;
                let cert = ca_params()?.self_signed(&key)?;
                write_private(&path("ca.key"), &key.serialize_pem())?;
                write_private(&path("ca.crt"), &cert.pem())?;
                // A new CA invalidates every certificate it did not sign.
                for stale in ["server.crt", "server.key", "admin.crt", "admin.key"] {
                    let _ = std::fs::remove_file(path(stale));
                }
                (cert.pem(), key.serialize_pem())
            }
        };
        let ca_signing_key = KeyPair::from_pem(&ca_key).map_err(|_| PkiError::BadPem(path("ca.key")))?;
        let issuer = Issuer::new(ca_params()?, ca_signing_key);
        let mut all_sans = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
        for san in sans {
            if !all_sans.contains(san) {
                all_sans.push(san.clone());
            }
        }
        let sans_file = path("server.sans");
        let sans_text = all_sans.join("\n");
        let sans_changed = read(&sans_file)?.as_deref() != Some(sans_text.as_str());
        let (server_cert, server_key) = match (read(&path("server.crt"))?, read(&path("server.key"))?) {
            (Some(cert), Some(key)) if !sans_changed => (cert, key),
            _ => {
                let key = KeyPair::generate()?;
                let cert = leaf("vkube-apiserver", None, &all_sans, true)?.signed_by(&key, &issuer)?;
                write_private(&path("server.key"), &key.serialize_pem())?;
                write_private(&path("server.crt"), &cert.pem())?;
                write_private(&sans_file, &sans_text)?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let (admin_cert, admin_key) = match (read(&path("admin.crt"))?, read(&path("admin.key"))?) {
            (Some(cert), Some(key)) => (cert, key),
            _ => {
                let key = KeyPair::generate()?;
                let cert = leaf("admin", Some("system:masters"), &[], false)?.signed_by(&key, &issuer)?;
                write_private(&path("admin.key"), &key.serialize_pem())?;
                write_private(&path("admin.crt"), &cert.pem())?;
                (cert.pem(), key.serialize_pem())
            }
        };
        let admin_token = match read(&path("admin.token"))? {
            Some(token) if !token.trim().is_empty() => token.trim().to_string(),
            _ => {
                let mut bytes = [0u8; 32];
                rand::rng().fill(&mut bytes);
                let token = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
                write_private(&path("admin.token"), &token)?;
                token
            }
        };
        let sa_key_pem = match read(&path("sa.key"))? {
            Some(pem) => pem,
            None => {
                let key = KeyPair::generate()?;
                write_private(&path("sa.key"), &key.serialize_pem())?;
                key.serialize_pem()
            }
        };
        let service_account_key =
            KeyPair::from_pem(&sa_key_pem).map_err(|_| PkiError::BadPem(path("sa.key")))?.serialize_der();
        let (front_proxy_ca, front_proxy_cert, front_proxy_key) = match (
            read(&path("front-proxy-ca.crt"))?,
            read(&path("front-proxy-client.crt"))?,
            read(&path("front-proxy-client.key"))?,
        ) {
            (Some(ca), Some(cert), Some(key)) => (ca, cert, key),
            _ => {
                // A CA of its own, as kubeadm makes it: a client certificate of the cluster CA
                // must not pass for the front proxy.
                let ca_key = KeyPair::generate()?;
                let ca = named_ca_params("vkube-front-proxy-ca")?.self_signed(&ca_key)?;
                let issuer = Issuer::new(named_ca_params("vkube-front-proxy-ca")?, ca_key);
                let key = KeyPair::generate()?;
                let cert = leaf(FRONT_PROXY_CLIENT, None, &[], false)?.signed_by(&key, &issuer)?;
                write_private(&path("front-proxy-client.key"), &key.serialize_pem())?;
                write_private(&path("front-proxy-client.crt"), &cert.pem())?;
                write_private(&path("front-proxy-ca.crt"), &ca.pem())?;
                (ca.pem(), cert.pem(), key.serialize_pem())
            }
        };
        Ok(Pki {
            ca_cert,
            server_cert,
            server_key,
            admin_cert,
            admin_key,
            admin_token,
            service_account_key,
            front_proxy_ca,
            front_proxy_cert,
            front_proxy_key,
            ca_key,
        })
    }

    /// Signs a client certificate for `user` in `groups`; returns (cert PEM, key PEM).
    pub fn client_certificate(&self, user: &str, groups: &[&str]) -> Result<(String, String), PkiError> {
        let ca_signing_key = KeyPair::from_pem(&self.ca_key).map_err(|_| PkiError::BadPem("ca.key".into()))?;
        let issuer = Issuer::new(ca_params()?, ca_signing_key);
        let key = KeyPair::generate()?;
        let mut params = leaf(user, None, &[], false)?;
        for group in groups {
            params.distinguished_name.push(DnType::OrganizationName, *group);
        }
        let cert = params.signed_by(&key, &issuer)?;
        Ok((cert.pem(), key.serialize_pem()))
    }

    /// Signs a PEM certificate signing request as a client certificate valid for `seconds`
    /// (what the `kubernetes.io/kube-apiserver-client` signer issues); returns the PEM.
    pub fn sign_client_request(&self, request_pem: &str, seconds: u64) -> Result<String, PkiError> {
        let ca_signing_key = KeyPair::from_pem(&self.ca_key).map_err(|_| PkiError::BadPem("ca.key".into()))?;
        let issuer = Issuer::new(ca_params()?, ca_signing_key);
        let mut request = rcgen::CertificateSigningRequestParams::from_pem(request_pem)?;
        let now = time::OffsetDateTime::now_utc();
        request.params.not_before = now - time::Duration::minutes(5);
        request.params.not_after = now + time::Duration::seconds(seconds as i64);
        request.params.is_ca = IsCa::ExplicitNoCa;
        request.params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        request.params.subject_alt_names.clear();
        Ok(request.signed_by(&issuer)?.pem())
    }

    /// The rustls server configuration: our serving certificate, ALPN h2 and http/1.1, client
    /// certificates requested (verified against our CA) but optional so token clients connect.
    pub fn server_config(&self) -> Result<rustls::ServerConfig, PkiError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        for cert in certs(&self.ca_cert)? {
            roots.add(cert)?;
        }
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
            .allow_unauthenticated()
            .build()?;
        let key = rustls_pemfile::private_key(&mut self.server_key.as_bytes())
            .ok()
            .flatten()
            .ok_or_else(|| PkiError::BadPem("server.key".into()))?;
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_single_cert(certs(&self.server_cert)?, key)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        Ok(config)
    }

    /// A kubeconfig for `server` authenticating as the admin with its client certificate.
    pub fn admin_kubeconfig(&self, server: &str, cluster: &str) -> String {
        kubeconfig(server, cluster, &self.ca_cert, &self.admin_cert, &self.admin_key)
    }
}

fn certs(pem: &str) -> Result<Vec<rustls::pki_types::CertificateDer<'static>>, PkiError> {
    rustls_pemfile::certs(&mut pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|_| PkiError::BadPem("certificate".into()))
}

/// A kubeconfig with one cluster, one client-certificate user and one context named `cluster`.
pub fn kubeconfig(server: &str, cluster: &str, ca_pem: &str, cert_pem: &str, key_pem: &str) -> String {
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {cluster}\n  cluster:\n    server: {server}\n    certificate-authority-data: {ca}\nusers:\n- name: {cluster}-admin\n  user:\n    client-certificate-data: {cert}\n    client-key-data: {key}\ncontexts:\n- name: {cluster}\n  context:\n    cluster: {cluster}\n    user: {cluster}-admin\n    namespace: default\ncurrent-context: {cluster}\n",
        ca = b64(ca_pem),
        cert = b64(cert_pem),
        key = b64(key_pem),
    )
}

/// The user a verified client certificate names: (CN, [O...]).
pub fn certificate_identity(der: &[u8]) -> Option<(String, Vec<String>)> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let subject = cert.subject();
    let cn = subject.iter_common_name().next()?.as_str().ok()?.to_string();
    let groups = subject.iter_organization().filter_map(|o| o.as_str().ok().map(String::from)).collect();
    Some((cn, groups))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_persist_and_name_the_admin() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pki::load_or_create(dir.path(), &[]).unwrap();
        let second = Pki::load_or_create(dir.path(), &[]).unwrap();
        assert_eq!(first.ca_cert, second.ca_cert);
        assert_eq!(first.admin_token, second.admin_token);
        assert_eq!(first.server_cert, second.server_cert);
        let der = certs(&first.admin_cert).unwrap().remove(0);
        let (user, groups) = certificate_identity(&der).unwrap();
        assert_eq!(user, "admin");
        assert_eq!(groups, ["system:masters"]);
        first.server_config().unwrap();
        let third = Pki::load_or_create(dir.path(), &["vc.example.com".into()]).unwrap();
        assert_ne!(third.server_cert, first.server_cert, "a new SAN reissues the serving certificate");
        assert_eq!(third.ca_cert, first.ca_cert);
    }
}
