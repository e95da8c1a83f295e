//! The internal CA of the split server: the core (private tier) makes it on first start, signs its
//! own listener's certificate with it, and issues each gateway (public tier) a client certificate.
//! Gateway and core then speak mutual TLS 1.3 to each other and to no one else.
//!
//! Three checks stand between a connection and the core: the chain (only this CA's certificates),
//! the extended key usage (a gateway's certificate is clientAuth only, the core's serverAuth only,
//! so neither can pose as the other), and the allow-list ([`GatewayRegistry`]): a certificate is
//! admitted only while its fingerprint is recorded and not revoked. Revocation is a line in that
//! list, read at the gateway's next connection; no CRL, no X.509 parsing.
//!
//! The CA's and the core's private keys are wrapped by the crypto device, as the TLS key is; a
//! gateway's key never touches the core's disk: it is written once, into the credentials
//! directory handed to the gateway's operator.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, PKCS_ECDSA_P256_SHA256, SerialNumber,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde::{Deserialize, Serialize};
use stampline_https::pem;
use stampline_https::pem_blocks;
use stampline_https::serve::{tls13_server_config, write_file};
use stampline_psd::Psd;
use zeroize::Zeroizing;

/// The DNS name in the core's internal certificate; gateways check the core's certificate against
/// it whatever address they dial.
pub const CORE_SERVER_NAME: &str = "core.stampline.internal";
/// ALPN of the internal channel.
pub const INTERNAL_ALPN: &[u8] = b"stampline-internal/1";

/// The wrapping context of the CA's private key (one context per key: a wrapped key cannot be
/// unwrapped as another).
const CA_KEY_CONTEXT: &[u8] = b"stampline/v1/internal-ca-key";
/// The wrapping context of the core's private key.
const CORE_KEY_CONTEXT: &[u8] = b"stampline/v1/internal-core-key";

/// The CA's common name (its subject is rebuilt when it signs: see [`ca_params`]).
const CA_COMMON_NAME: &str = "Stampline internal CA";
/// The directory under the data dir.
const INTERNAL_DIR: &str = "internal";
const CA_CERT_FILE: &str = "ca.der";
const CA_KEY_FILE: &str = "ca-key.wrapped";
const CORE_CERT_FILE: &str = "core.der";
const CORE_KEY_FILE: &str = "core-key.wrapped";
const REGISTRY_FILE: &str = "gateways.json";
/// Held (an advisory lock) while the CA is made or the registry is rewritten: `stampline admin`
/// and the server may run at once on the core's machine.
const LOCK_FILE: &str = "lock";

/// How long the CA and the core's certificate are valid. Long: the CA lives as long as the
/// installation (a new one means new credentials for every gateway).
const CA_VALIDITY_DAYS: i64 = 20 * 365;
/// How long a gateway's certificate is valid: two years, then it is issued again.
const GATEWAY_VALIDITY_DAYS: i64 = 2 * 365;
/// Longest gateway name.
pub const MAX_GATEWAY_NAME: usize = 64;

/// The files of a gateway's credentials directory.
pub const CA_PEM: &str = "ca.pem";
pub const GATEWAY_PEM: &str = "gateway.pem";
pub const GATEWAY_KEY_PEM: &str = "gateway-key.pem";
pub const PUBLIC_CERT_DER: &str = "public-cert.der";
pub const PUBLIC_KEY_P8: &str = "public-key.p8";
pub const TRUST_PEM: &str = "trust.pem";
pub const GATEWAY_JSON: &str = "gateway.json";
const CREDENTIAL_FILES: [&str; 7] = [
    CA_PEM,
    GATEWAY_PEM,
    GATEWAY_KEY_PEM,
    PUBLIC_CERT_DER,
    PUBLIC_KEY_P8,
    TRUST_PEM,
    GATEWAY_JSON,
];

/// What an operator got wrong; the CLI turns each into its error code.
#[derive(Debug, thiserror::Error)]
pub enum InternalCaError {
    #[error("bad gateway name {0:?}: 1 to {MAX_GATEWAY_NAME} characters of a-z, 0-9 and '-'")]
    BadName(String),
    #[error("gateway {0} already has a certificate that is not revoked (revoke it first)")]
    GatewayExists(String),
    #[error("gateway {0} has no certificate that is not revoked")]
    NoSuchGateway(String),
    #[error("{0} already holds gateway credentials")]
    CredentialsExist(String),
    #[error("{0} is not empty: give a new directory for the credentials")]
    OutNotEmpty(String),
}

impl InternalCaError {
    /// The snake_case code the CLI reports.
    pub fn code(&self) -> &'static str {
        match self {
            InternalCaError::BadName(_) => "bad_name",
            InternalCaError::GatewayExists(_) => "gateway_exists",
            InternalCaError::NoSuchGateway(_) => "no_such_gateway",
            InternalCaError::CredentialsExist(_) => "credentials_exist",
            InternalCaError::OutNotEmpty(_) => "out_not_empty",
        }
    }
}

/// Whether `name` may name a gateway: 1–64 characters of a-z, 0-9 and '-' (it becomes a
/// certificate's CN and a directory's worth of files an operator copies around).
pub fn valid_gateway_name(name: &str) -> bool {
    (1..=MAX_GATEWAY_NAME).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}

/// Hex SHA-256 of a certificate's DER: how the registry knows a certificate.
pub fn fingerprint(cert_der: &[u8]) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        cert_der,
    ))
}

/// The core's internal CA and its own certificate, from `DIR/internal/`.
pub struct InternalCa {
    data_dir: PathBuf,
    ca_cert_der: Vec<u8>,
    ca_key_der: Zeroizing<Vec<u8>>,
    core_cert_der: Vec<u8>,
    core_key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for InternalCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InternalCa")
            .field("data_dir", &self.data_dir)
            .field("ca", &fingerprint(&self.ca_cert_der))
            .field("core", &fingerprint(&self.core_cert_der))
            .finish_non_exhaustive()
    }
}

impl InternalCa {
    /// `DIR/internal/` (0700): `ca.der`, `ca-key.wrapped`, `core.der`, `core-key.wrapped`.
    /// The private keys are wrapped by the crypto device, never in the clear on disk. Made on
    /// first call (ECDSA P-256), loaded afterwards. A missing core certificate is issued again
    /// (gateways trust the CA, not the core's certificate); a CA certificate without its key is
    /// an error, never silently replaced (every gateway's credentials hang on it).
    pub fn load_or_create(data_dir: &Path, psd: &dyn Psd) -> anyhow::Result<InternalCa> {
        let dir = data_dir.join(INTERNAL_DIR);
        crate::data_dir::private_dir(&dir)?;
        let _lock = lock(&dir)?;
        let ca_cert_path = dir.join(CA_CERT_FILE);
        let ca_key_path = dir.join(CA_KEY_FILE);
        if !ca_cert_path.exists() {
            let key = new_key()?;
            let mut params = ca_params(&key);
            let now = time::OffsetDateTime::now_utc();
            params.not_before = now - time::Duration::hours(1);
            params.not_after = now + time::Duration::days(CA_VALIDITY_DAYS);
            params.serial_number = Some(serial()?);
            let cert = params.self_signed(&key)?;
            let key_der = Zeroizing::new(key.serialize_der());
            // The key first: a crash between the two leaves a key without a certificate, made
            // again next time; never a certificate without its key.
            write_file(
                &ca_key_path,
                &psd.wrap_secret(&key_der, CA_KEY_CONTEXT)?,
                true,
            )?;
            write_file(&ca_cert_path, cert.der(), true)?;
            tracing::info!(path = %dir.display(), "made the internal CA");
        }
        if !ca_key_path.exists() {
            anyhow::bail!(
                "{} has no key ({} is missing): restore it from a backup, or move {} away to \
                 make a new CA (and issue every gateway new credentials)",
                ca_cert_path.display(),
                ca_key_path.display(),
                dir.display()
            );
        }
        let ca_cert_der = fs::read(&ca_cert_path)?;
        let ca_key_der = unwrap_key(psd, &ca_key_path, CA_KEY_CONTEXT)?;
        let ca_key = key_pair(&ca_key_der)?;
        if !holds_public_key(&ca_cert_der, &ca_key) {
            anyhow::bail!(
                "{} does not hold the public key of {}",
                ca_cert_path.display(),
                ca_key_path.display()
            );
        }

        let core_cert_path = dir.join(CORE_CERT_FILE);
        let core_key_path = dir.join(CORE_KEY_FILE);
        if !core_cert_path.exists() || !core_key_path.exists() {
            let key = new_key()?;
            let mut params = CertificateParams::new(vec![CORE_SERVER_NAME.to_string()])?;
            params
                .distinguished_name
                .push(DnType::CommonName, CORE_SERVER_NAME);
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            leaf(&mut params, CA_VALIDITY_DAYS)?;
            let cert = params.signed_by(&key, &Issuer::new(ca_params(&ca_key), &ca_key))?;
            let key_der = Zeroizing::new(key.serialize_der());
            write_file(
                &core_key_path,
                &psd.wrap_secret(&key_der, CORE_KEY_CONTEXT)?,
                true,
            )?;
            write_file(&core_cert_path, cert.der(), true)?;
        }
        let core_cert_der = fs::read(&core_cert_path)?;
        let core_key_der = unwrap_key(psd, &core_key_path, CORE_KEY_CONTEXT)?;
        if !holds_public_key(&core_cert_der, &key_pair(&core_key_der)?) {
            anyhow::bail!(
                "{} does not hold the public key of {}",
                core_cert_path.display(),
                core_key_path.display()
            );
        }
        Ok(InternalCa {
            data_dir: data_dir.to_path_buf(),
            ca_cert_der,
            ca_key_der,
            core_cert_der,
            core_key_der,
        })
    }

    /// The CA's certificate (DER).
    pub fn ca_cert_der(&self) -> &[u8] {
        &self.ca_cert_der
    }

    /// The core's internal certificate (DER).
    pub fn core_cert_der(&self) -> &[u8] {
        &self.core_cert_der
    }

    /// The core's listener: TLS 1.3 only, aws-lc-rs only, a client certificate required and
    /// verified against the CA (chain, validity, clientAuth), ALPN [`INTERNAL_ALPN`]. The
    /// allow-list is the caller's next step: [`GatewayRegistry::admit`] with the peer's
    /// certificate.
    pub fn core_server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let roots = Arc::new(roots(&self.ca_cert_der)?);
        let verifier =
            rustls::server::WebPkiClientVerifier::builder_with_provider(roots, provider.clone())
                .build()?;
        let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_client_cert_verifier(verifier)
            .with_single_cert(
                vec![CertificateDer::from(self.core_cert_der.clone())],
                pkcs8(&self.core_key_der),
            )?;
        cfg.alpn_protocols = vec![INTERNAL_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// Issue gateway `name` its credentials into `out` (made 0700 if missing; an existing `out`
    /// must be empty; every file 0600): a fresh P-256 key and a certificate signed by the CA
    /// (CN = name, clientAuth only, valid two years), recorded in the registry. `tls` is the
    /// public listener's identity (every gateway serves the certificate clients pin) and
    /// `trust_pem` the core's `DIR/trust.pem`, copied for the gateway to hand to clients.
    /// A name that already has a certificate that is not revoked is refused.
    pub fn issue_gateway(
        &self,
        tls: &crate::tls::TlsIdentity,
        trust_pem: &Path,
        name: &str,
        out: &Path,
    ) -> anyhow::Result<GatewayRecord> {
        if !valid_gateway_name(name) {
            return Err(InternalCaError::BadName(name.to_string()).into());
        }
        let dir = self.data_dir.join(INTERNAL_DIR);
        let _lock = lock(&dir)?;
        let mut registry = GatewayRegistry::load(&self.data_dir)?;
        if registry
            .records
            .iter()
            .any(|r| r.name == name && r.revoked_at_ms.is_none())
        {
            return Err(InternalCaError::GatewayExists(name.to_string()).into());
        }
        prepare_out(out)?;
        let trust = fs::read(trust_pem)
            .map_err(|e| anyhow::anyhow!("trust file {}: {e}", trust_pem.display()))?;

        let key = new_key()?;
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        let not_after = leaf(&mut params, GATEWAY_VALIDITY_DAYS)?;
        let ca_key = key_pair(&self.ca_key_der)?;
        let cert = params.signed_by(&key, &Issuer::new(ca_params(&ca_key), &ca_key))?;
        let key_pem = Zeroizing::new(key.serialize_pem());
        let tls_key = Zeroizing::new(tls.key_der().to_vec());

        let ca_pem = pem("CERTIFICATE", &self.ca_cert_der);
        let cert_pem = pem("CERTIFICATE", cert.der());
        let json = serde_json::to_vec_pretty(&GatewayFile {
            name: name.to_string(),
        })?;
        let files: [(&str, &[u8]); 7] = [
            (CA_PEM, ca_pem.as_bytes()),
            (GATEWAY_PEM, cert_pem.as_bytes()),
            (GATEWAY_KEY_PEM, key_pem.as_bytes()),
            (PUBLIC_CERT_DER, &tls.cert_der),
            (PUBLIC_KEY_P8, &tls_key),
            (TRUST_PEM, &trust),
            (GATEWAY_JSON, &json),
        ];
        for (file, bytes) in files {
            write_file(&out.join(file), bytes, true)
                .map_err(|e| anyhow::anyhow!("{}: {e}", out.join(file).display()))?;
        }
        let record = GatewayRecord {
            name: name.to_string(),
            fingerprint: fingerprint(cert.der()),
            issued_at_ms: crate::clock::now_ms(),
            not_after: not_after
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap_or_default(),
            revoked_at_ms: None,
        };
        // Recorded last: a failure before leaves a certificate no core admits.
        registry.records.push(record.clone());
        registry.save(&dir)?;
        Ok(record)
    }
}

/// The CA's parameters without its validity and serial: enough to rebuild its issuer name and key
/// usages when it signs (rcgen reads no certificates), byte for byte the subject it was made with.
/// Besides the common name the subject carries an id derived from the CA's public key, so two
/// installations' CAs never share a name: a certificate of the other one is then an unknown
/// issuer (a clear error), not a chain that fails on its signature.
fn ca_params(key: &KeyPair) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = rcgen::DistinguishedName::new();
    params
        .distinguished_name
        .push(DnType::CommonName, CA_COMMON_NAME);
    let id = fingerprint(key.public_key_raw());
    params
        .distinguished_name
        .push(DnType::OrganizationalUnitName, format!("ca-{}", &id[..16]));
    params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    params
}

/// A leaf's validity (from an hour ago, for clocks a little behind), random serial and authority
/// key identifier; its `not_after`.
fn leaf(params: &mut CertificateParams, days: i64) -> anyhow::Result<time::OffsetDateTime> {
    let now = time::OffsetDateTime::now_utc().replace_nanosecond(0)?;
    params.not_before = now - time::Duration::hours(1);
    params.not_after = now + time::Duration::days(days);
    params.serial_number = Some(serial()?);
    params.use_authority_key_identifier_extension = true;
    Ok(params.not_after)
}

/// 16 random bytes, positive (high bit clear).
fn serial() -> anyhow::Result<SerialNumber> {
    let mut bytes = [0u8; 16];
    aws_lc_rs::rand::fill(&mut bytes).map_err(|_| anyhow::anyhow!("no random bytes"))?;
    bytes[0] &= 0x7f;
    bytes[0] |= 0x01;
    Ok(SerialNumber::from_slice(&bytes))
}

fn new_key() -> anyhow::Result<KeyPair> {
    Ok(KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256)?)
}

fn key_pair(pkcs8_der: &[u8]) -> anyhow::Result<KeyPair> {
    Ok(KeyPair::from_pkcs8_der_and_sign_algo(
        &PrivatePkcs8KeyDer::from(pkcs8_der),
        &PKCS_ECDSA_P256_SHA256,
    )?)
}

/// Whether `cert_der` carries `key`'s public key (a CA or core certificate left beside another
/// key would otherwise fail only at the first handshake).
fn holds_public_key(cert_der: &[u8], key: &KeyPair) -> bool {
    let public = key.public_key_raw();
    cert_der.windows(public.len()).any(|w| w == public)
}

fn unwrap_key(psd: &dyn Psd, path: &Path, context: &[u8]) -> anyhow::Result<Zeroizing<Vec<u8>>> {
    let wrapped = fs::read(path).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    psd.unwrap_secret(&wrapped, context)
        .map_err(|e| anyhow::anyhow!("{} (another crypto device?): {e}", path.display()))
}

fn pkcs8(der: &[u8]) -> PrivateKeyDer<'static> {
    PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(der.to_vec()))
}

fn roots(ca_der: &[u8]) -> anyhow::Result<rustls::RootCertStore> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(CertificateDer::from(ca_der.to_vec()))?;
    Ok(roots)
}

/// An exclusive advisory lock on `DIR/internal/lock`, released when dropped.
fn lock(dir: &Path) -> anyhow::Result<fs::File> {
    let path = dir.join(LOCK_FILE);
    let mut opts = fs::OpenOptions::new();
    opts.read(true).write(true).create(true).truncate(false);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        opts.mode(crate::data_dir::FILE_MODE);
    }
    let file = opts
        .open(&path)
        .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    file.lock()
        .map_err(|e| anyhow::anyhow!("lock {}: {e}", path.display()))?;
    Ok(file)
}

/// Make `out` (0700) for new credentials, or accept an existing empty directory (set to 0700);
/// a directory already holding credentials, or anything else, is refused: an operator's
/// directory never has its mode changed, and no credentials are overwritten.
fn prepare_out(out: &Path) -> anyhow::Result<()> {
    if out.exists() {
        if CREDENTIAL_FILES.iter().any(|f| out.join(f).exists()) {
            return Err(InternalCaError::CredentialsExist(out.display().to_string()).into());
        }
        let mut entries =
            fs::read_dir(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
        if entries.next().is_some() {
            return Err(InternalCaError::OutNotEmpty(out.display().to_string()).into());
        }
    }
    crate::data_dir::private_dir(out).map_err(|e| anyhow::anyhow!("{}: {e}", out.display()))?;
    Ok(())
}

/// `gateway.json` in a credentials directory.
#[derive(Debug, Serialize, Deserialize)]
struct GatewayFile {
    name: String,
}

/// One certificate the CA issued a gateway.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GatewayRecord {
    pub name: String,
    /// Hex SHA-256 of the certificate's DER.
    pub fingerprint: String,
    pub issued_at_ms: i64,
    /// RFC 3339.
    pub not_after: String,
    pub revoked_at_ms: Option<i64>,
}

/// `DIR/internal/gateways.json` as stored.
#[derive(Debug, Default, Serialize, Deserialize)]
struct RegistryFile {
    gateways: Vec<GatewayRecord>,
}

/// Why the core refuses a gateway's certificate that the CA signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GatewayRefusal {
    #[error("unknown certificate")]
    Unknown,
    #[error("revoked (gateway {name})")]
    Revoked { name: String },
}

/// `DIR/internal/gateways.json`: every certificate ever issued. The core admits a gateway
/// connection only if its certificate's fingerprint is in it and not revoked: an allow-list on
/// top of the CA check, so a revoked or unknown certificate is refused at its next connection.
#[derive(Debug, Clone, Default)]
pub struct GatewayRegistry {
    records: Vec<GatewayRecord>,
}

impl GatewayRegistry {
    /// Read the registry of `data_dir`; a missing file is an empty registry (no gateway issued
    /// yet). Cheap: the core may read it at every gateway connection.
    pub fn load(data_dir: &Path) -> anyhow::Result<GatewayRegistry> {
        let path = data_dir.join(INTERNAL_DIR).join(REGISTRY_FILE);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(GatewayRegistry::default());
            }
            Err(e) => anyhow::bail!("{}: {e}", path.display()),
        };
        let file: RegistryFile = serde_json::from_slice(&bytes)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(GatewayRegistry {
            records: file.gateways,
        })
    }

    /// Every certificate issued, oldest first.
    pub fn list(&self) -> &[GatewayRecord] {
        &self.records
    }

    /// The gateway's name, or why it is refused.
    pub fn admit(&self, cert_der: &[u8]) -> Result<String, GatewayRefusal> {
        let fp = fingerprint(cert_der);
        match self.records.iter().find(|r| r.fingerprint == fp) {
            None => Err(GatewayRefusal::Unknown),
            Some(r) if r.revoked_at_ms.is_some() => Err(GatewayRefusal::Revoked {
                name: r.name.clone(),
            }),
            Some(r) => Ok(r.name.clone()),
        }
    }

    /// Revoke every certificate of `name` that is not revoked yet; the records revoked. An error
    /// if there is none. Written atomically (temporary file beside, fsync, rename, fsync dir).
    pub fn revoke(data_dir: &Path, name: &str, now_ms: i64) -> anyhow::Result<Vec<GatewayRecord>> {
        let dir = data_dir.join(INTERNAL_DIR);
        if !dir.is_dir() {
            return Err(InternalCaError::NoSuchGateway(name.to_string()).into());
        }
        let _lock = lock(&dir)?;
        let mut registry = GatewayRegistry::load(data_dir)?;
        let mut revoked = Vec::new();
        for r in registry
            .records
            .iter_mut()
            .filter(|r| r.name == name && r.revoked_at_ms.is_none())
        {
            r.revoked_at_ms = Some(now_ms);
            revoked.push(r.clone());
        }
        if revoked.is_empty() {
            return Err(InternalCaError::NoSuchGateway(name.to_string()).into());
        }
        registry.save(&dir)?;
        Ok(revoked)
    }

    /// Write to `dir/gateways.json` (the caller holds the lock).
    fn save(&self, dir: &Path) -> anyhow::Result<()> {
        let file = RegistryFile {
            gateways: self.records.clone(),
        };
        let path = dir.join(REGISTRY_FILE);
        write_file(&path, &serde_json::to_vec_pretty(&file)?, true)
            .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        Ok(())
    }
}

/// The gateway's side: its credentials directory, as `stampline admin gateway-credentials` wrote
/// it.
pub struct GatewayCredentials {
    pub name: String,
    dir: PathBuf,
    ca_cert_der: Vec<u8>,
    cert_der: Vec<u8>,
    key_der: Zeroizing<Vec<u8>>,
    public_cert_der: Vec<u8>,
    public_key_der: Zeroizing<Vec<u8>>,
}

impl std::fmt::Debug for GatewayCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GatewayCredentials")
            .field("name", &self.name)
            .field("dir", &self.dir)
            .field("fingerprint", &fingerprint(&self.cert_der))
            .finish_non_exhaustive()
    }
}

impl GatewayCredentials {
    /// Read a credentials directory; an error names the file that is missing or bad.
    pub fn load(dir: &Path) -> anyhow::Result<GatewayCredentials> {
        let read = |file: &str| -> anyhow::Result<Vec<u8>> {
            let path = dir.join(file);
            fs::read(&path)
                .map_err(|e| anyhow::anyhow!("gateway credentials: {}: {e}", path.display()))
        };
        let pem_block = |file: &str, label: &str| -> anyhow::Result<Zeroizing<Vec<u8>>> {
            let text = Zeroizing::new(read(file)?);
            let text = std::str::from_utf8(&text).map_err(|_| {
                anyhow::anyhow!(
                    "gateway credentials: {} is not PEM text",
                    dir.join(file).display()
                )
            })?;
            pem_blocks(text)
                .into_iter()
                .find(|(l, _)| l == label)
                .map(|(_, der)| Zeroizing::new(der))
                .ok_or_else(|| {
                    anyhow::anyhow!(
                        "gateway credentials: {} holds no {label} block",
                        dir.join(file).display()
                    )
                })
        };
        let file: GatewayFile = serde_json::from_slice(&read(GATEWAY_JSON)?).map_err(|e| {
            anyhow::anyhow!(
                "gateway credentials: {}: {e}",
                dir.join(GATEWAY_JSON).display()
            )
        })?;
        if !valid_gateway_name(&file.name) {
            anyhow::bail!(
                "gateway credentials: {}: {}",
                dir.join(GATEWAY_JSON).display(),
                InternalCaError::BadName(file.name)
            );
        }
        let ca_cert_der = pem_block(CA_PEM, "CERTIFICATE")?.to_vec();
        let cert_der = pem_block(GATEWAY_PEM, "CERTIFICATE")?.to_vec();
        let key_der = pem_block(GATEWAY_KEY_PEM, "PRIVATE KEY")?;
        key_pair(&key_der).map_err(|e| {
            anyhow::anyhow!(
                "gateway credentials: {}: {e}",
                dir.join(GATEWAY_KEY_PEM).display()
            )
        })?;
        let public_cert_der = read(PUBLIC_CERT_DER)?;
        let public_key_der = Zeroizing::new(read(PUBLIC_KEY_P8)?);
        let trust = dir.join(TRUST_PEM);
        if !trust.is_file() {
            anyhow::bail!("gateway credentials: {} is missing", trust.display());
        }
        Ok(GatewayCredentials {
            name: file.name,
            dir: dir.to_path_buf(),
            ca_cert_der,
            cert_der,
            key_der,
            public_cert_der,
            public_key_der,
        })
    }

    /// The gateway's own certificate (DER).
    pub fn cert_der(&self) -> &[u8] {
        &self.cert_der
    }

    /// The mTLS client configuration for the core: TLS 1.3 only, aws-lc-rs, trusting only the
    /// internal CA (the caller's `ServerName` is [`CORE_SERVER_NAME`], whatever address it
    /// dials), presenting the gateway's certificate, ALPN [`INTERNAL_ALPN`].
    pub fn core_client_config(&self) -> anyhow::Result<Arc<rustls::ClientConfig>> {
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_root_certificates(roots(&self.ca_cert_der)?)
            .with_client_auth_cert(
                vec![CertificateDer::from(self.cert_der.clone())],
                pkcs8(&self.key_der),
            )?;
        cfg.alpn_protocols = vec![INTERNAL_ALPN.to_vec()];
        Ok(Arc::new(cfg))
    }

    /// The public listener's configuration: the certificate clients pin (TLS 1.3, ALPN
    /// http/1.1, as the one-process server's).
    pub fn public_server_config(&self) -> anyhow::Result<Arc<rustls::ServerConfig>> {
        Ok(tls13_server_config(
            &self.public_cert_der,
            &self.public_key_der,
        )?)
    }

    /// `DIR/trust.pem`, for clients.
    pub fn trust_path(&self) -> PathBuf {
        self.dir.join(TRUST_PEM)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use stampline_psd::{Passphrase, SoftwarePsd};

    use super::*;

    /// Every file under `dir`, recursively.
    fn files(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for e in fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                out.extend(files(&p));
            } else {
                out.push(p);
            }
        }
        out
    }

    #[test]
    fn no_private_key_is_in_the_clear_under_the_internal_dir() {
        let tmp = tempfile::tempdir().unwrap();
        let data = tmp.path().join("data");
        crate::data_dir::prepare(&data).unwrap();
        let psd = SoftwarePsd::open(&data, Passphrase::Dev, 1).unwrap();
        let tls = crate::tls::TlsIdentity::load_or_create(&data, &[], &psd).unwrap();
        let ca = InternalCa::load_or_create(&data, &psd).unwrap();
        ca.issue_gateway(&tls, &tls.trust_path, "edge-1", &tmp.path().join("gw"))
            .unwrap();
        let secrets = [&ca.ca_key_der[..], &ca.core_key_der[..]];
        // The private scalar inside the PKCS#8 DER: ECPrivateKey's `02 01 01 04 20` then 32 bytes.
        let scalar = |der: &[u8]| -> Vec<u8> {
            let at = der
                .windows(5)
                .position(|w| w == [0x02, 0x01, 0x01, 0x04, 0x20])
                .unwrap();
            der[at + 5..at + 37].to_vec()
        };
        // The key pairs themselves (PKCS#8 DER), and their private scalars in any other
        // encoding that keeps their bytes.
        let found = files(&data.join(INTERNAL_DIR));
        assert!(found.len() >= 5, "{found:?}");
        for path in found {
            let bytes = fs::read(&path).unwrap();
            for secret in secrets {
                assert!(
                    !bytes.windows(secret.len()).any(|w| w == secret),
                    "{} holds a private key in the clear",
                    path.display()
                );
                let scalar = scalar(secret);
                assert!(
                    !bytes.windows(32).any(|w| w == scalar),
                    "{} holds a private scalar",
                    path.display()
                );
            }
        }
        // And the wrapped keys unwrap to them (the device, not the disk, holds the secret).
        let wrapped = fs::read(data.join(INTERNAL_DIR).join(CA_KEY_FILE)).unwrap();
        assert_eq!(
            &psd.unwrap_secret(&wrapped, CA_KEY_CONTEXT).unwrap()[..],
            &ca.ca_key_der[..]
        );
        assert!(psd.unwrap_secret(&wrapped, CORE_KEY_CONTEXT).is_err());
    }

    #[test]
    fn gateway_names() {
        for ok in ["a", "edge-1", "0", &"z".repeat(64)] {
            assert!(valid_gateway_name(ok), "{ok}");
        }
        for bad in ["", "A", "a_b", "a b", "é", "a/b", &"z".repeat(65)] {
            assert!(!valid_gateway_name(bad), "{bad}");
        }
    }
}
