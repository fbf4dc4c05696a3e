//! HTTPS for `socle serve` (rustls), with optional client certificates for mutual-TLS client authentication
//! (RFC 8705: `tls_client_auth`, `self_signed_tls_client_auth`, certificate-bound access tokens).
//!
//! When client certificate authorities are configured, every connection is offered client authentication but
//! none is required (browsers, patients and most software connect without one). A presented certificate is
//! accepted at the handshake once its possession is proven (the handshake signature); whether its chain
//! leads to a configured authority — validity dates and revocation lists included — is established when a
//! client authenticates with it (`/token`, `/introspect`, `/revoke`: with the lists in force at that moment,
//! on a blocking thread), and the identity provider alone decides what it proves. The revocation lists are
//! read again when their files change (looked at every minute); an expired list refuses the certificates of
//! its authority until a fresh one is installed. The authorities themselves are read at start.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use axum::extract::connect_info::Connected;
use axum::serve::IncomingStream;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, UnixTime};
use rustls::server::WebPkiClientVerifier;
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, DistinguishedName, SignatureScheme};
use socle_auth::mtls::{self, ClientCertificate};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// A slow or silent client may not hold a connection slot longer than this before its handshake completes.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; further connections wait in the kernel's backlog.
const MAX_HANDSHAKES: usize = 512;
/// Longest client chain examined (leaf and intermediates): a longer one is not verified.
const MAX_CHAIN: usize = 6;

/// The files `socle serve` is given for HTTPS.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    /// The server's certificate chain (PEM, leaf first).
    pub cert: PathBuf,
    /// Its private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// Authorities whose client certificates are recognised (PEM); none: no client certificates requested.
    pub client_ca: Option<PathBuf>,
    /// Certificate revocation lists of those authorities (PEM).
    pub client_crl: Vec<PathBuf>,
    /// How often the lists' files are looked at.
    pub reload_every: Duration,
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate presented in the TLS handshake.
    pub certificate: Option<Arc<PresentedCertificate>>,
}

/// A certificate presented in a TLS handshake (its possession proven).
#[derive(Debug)]
pub struct PresentedCertificate {
    /// `x5t#S256` of the leaf.
    pub thumbprint: String,
    /// The leaf's subject, most significant attribute first.
    pub subject: Vec<(String, String)>,
    chain: Vec<CertificateDer<'static>>,
    verifier: Option<Arc<ChainVerifier>>,
}

impl PresentedCertificate {
    /// What the certificate proves now: its chain verified against the configured authorities with the
    /// revocation lists in force (signatures checked: call it on a blocking thread).
    pub fn facts(&self) -> ClientCertificate {
        let verified = match &self.verifier {
            Some(v) => match v.verify(&self.chain) {
                Ok(()) => true,
                Err(e) => {
                    tracing::info!(thumbprint = %self.thumbprint, reason = %e, "certificat client non reconnu");
                    false
                }
            },
            None => false,
        };
        ClientCertificate {
            thumbprint: self.thumbprint.clone(),
            subject: self.subject.clone(),
            chain_verified: verified,
        }
    }
}

/// Verifies client chains against the configured authorities and their revocation lists, re-reading the
/// lists when their files change.
pub struct ChainVerifier {
    roots: Arc<rustls::RootCertStore>,
    provider: Arc<rustls::crypto::CryptoProvider>,
    crl_files: Vec<PathBuf>,
    /// The verifier in force and the lists' modification times it was built from.
    current: RwLock<(Arc<dyn ClientCertVerifier>, Stamps)>,
}

/// Modification times of the revocation lists' files.
type Stamps = Vec<Option<SystemTime>>;

impl std::fmt::Debug for ChainVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainVerifier")
            .field("crl_files", &self.crl_files)
            .finish_non_exhaustive()
    }
}

impl ChainVerifier {
    fn new(
        roots: Arc<rustls::RootCertStore>,
        provider: Arc<rustls::crypto::CryptoProvider>,
        crl_files: Vec<PathBuf>,
    ) -> anyhow::Result<ChainVerifier> {
        let stamps = stamps(&crl_files);
        let verifier = build_verifier(&roots, &provider, &crl_files)?;
        Ok(ChainVerifier {
            roots,
            provider,
            crl_files,
            current: RwLock::new((verifier, stamps)),
        })
    }

    fn verify(&self, chain: &[CertificateDer<'static>]) -> Result<(), String> {
        let Some(leaf) = chain.first() else {
            return Err("aucun certificat".into());
        };
        if chain.len() > MAX_CHAIN {
            return Err(format!("chaîne de plus de {MAX_CHAIN} certificats"));
        }
        let v = self
            .current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .0
            .clone();
        v.verify_client_cert(leaf, &chain[1..], UnixTime::now())
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    /// Re-reads the revocation lists if one of their files changed; lists that cannot be read leave the
    /// previous ones in force (and say so).
    fn reload_if_changed(&self) {
        let now = stamps(&self.crl_files);
        let changed = self.current.read().map(|c| c.1 != now).unwrap_or(true);
        if !changed {
            return;
        }
        match build_verifier(&self.roots, &self.provider, &self.crl_files) {
            Ok(v) => {
                *self.current.write().unwrap_or_else(|p| p.into_inner()) = (v, now);
                tracing::info!("listes de révocation des certificats clients relues");
            }
            Err(e) => {
                tracing::warn!(error = %e, "listes de révocation illisibles : les précédentes restent en vigueur");
            }
        }
    }
}

fn stamps(files: &[PathBuf]) -> Stamps {
    files
        .iter()
        .map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok())
        .collect()
}

/// A verifier of client chains for `roots`, with the revocation lists of `crl_files` (their expiry
/// enforced); without lists, no revocation check.
fn build_verifier(
    roots: &Arc<rustls::RootCertStore>,
    provider: &Arc<rustls::crypto::CryptoProvider>,
    crl_files: &[PathBuf],
) -> anyhow::Result<Arc<dyn ClientCertVerifier>> {
    let mut crls = Vec::new();
    for f in crl_files {
        let list: Vec<CertificateRevocationListDer<'static>> =
            CertificateRevocationListDer::pem_file_iter(f)
                .and_then(|i| i.collect::<Result<_, _>>())
                .map_err(|e| {
                    anyhow::anyhow!("liste de révocation {} illisible : {e}", f.display())
                })?;
        if list.is_empty() {
            anyhow::bail!(
                "liste de révocation {} : aucune liste PEM (X509 CRL)",
                f.display()
            );
        }
        crls.extend(list);
    }
    let mut b = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .allow_unauthenticated();
    if !crls.is_empty() {
        b = b.with_crls(crls).enforce_revocation_expiration();
    }
    b.build()
        .map_err(|e| anyhow::anyhow!("vérification des certificats clients : {e}"))
}

/// Plain HTTP connections, with `TCP_NODELAY` set as the TLS listener sets it (axum's own `TcpListener` does
/// not): a response's last short segment is sent without waiting for the client to acknowledge the ones before
/// it. Measured on loopback with the Annuaire's 230 KB postal code pages: no difference (p99 27–35 ms with and
/// without); it matters across real networks, where an acknowledgement can be held back 40 ms.
pub struct PlainListener(pub TcpListener);

impl axum::serve::Listener for PlainListener {
    type Io = TcpStream;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        // Tokio's listener, through axum's impl, waits and retries on accept errors (out of descriptors).
        let (stream, addr) = axum::serve::Listener::accept(&mut self.0).await;
        let _ = stream.set_nodelay(true);
        (
            stream,
            Peer {
                addr,
                certificate: None,
            },
        )
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.0.local_addr()?,
            certificate: None,
        })
    }
}

impl Connected<IncomingStream<'_, PlainListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, PlainListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

impl Connected<IncomingStream<'_, TlsListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TlsListener>) -> Peer {
        stream.remote_addr().clone()
    }
}

/// The loaded TLS configuration.
pub struct Tls {
    config: Arc<rustls::ServerConfig>,
    /// Verifies a client chain against the configured authorities (and their revocation lists).
    chain: Option<Arc<ChainVerifier>>,
    reload_every: Duration,
}

impl Tls {
    pub fn load(files: &TlsFiles) -> anyhow::Result<Tls> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certs = read_certs(&files.cert)?;
        let key = PrivateKeyDer::from_pem_file(&files.key).map_err(|e| {
            anyhow::anyhow!("clé privée TLS {} illisible : {e}", files.key.display())
        })?;
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| anyhow::anyhow!("TLS : {e}"))?;
        let (builder, chain) = match &files.client_ca {
            None => (builder.with_no_client_auth(), None),
            Some(ca) => {
                let mut roots = rustls::RootCertStore::empty();
                for c in read_certs(ca)? {
                    roots.add(c).map_err(|e| {
                        anyhow::anyhow!("autorité de certification {} refusée : {e}", ca.display())
                    })?;
                }
                let chain =
                    ChainVerifier::new(Arc::new(roots), provider, files.client_crl.clone())?;
                // The handshake's own checks (signatures, hints) need no revocation list.
                let offer = Arc::new(OfferClientAuth {
                    inner: build_verifier(&chain.roots, &chain.provider, &[])?,
                });
                (
                    builder.with_client_cert_verifier(offer),
                    Some(Arc::new(chain)),
                )
            }
        };
        let mut config = builder.with_single_cert(certs, key).map_err(|e| {
            anyhow::anyhow!(
                "certificat TLS {} et clé {} : {e}",
                files.cert.display(),
                files.key.display()
            )
        })?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Tls {
            config: Arc::new(config),
            chain,
            reload_every: files.reload_every,
        })
    }

    /// Whether client certificates are requested.
    pub fn mutual(&self) -> bool {
        self.chain.is_some()
    }

    /// A presented certificate (leaf first); its chain is judged when used ([`PresentedCertificate::facts`]).
    fn presented(&self, chain: &[CertificateDer<'static>]) -> Option<PresentedCertificate> {
        let leaf = chain.first()?;
        Some(PresentedCertificate {
            thumbprint: mtls::thumbprint(leaf),
            subject: subject_of(leaf).unwrap_or_default(),
            chain: chain.iter().take(MAX_CHAIN + 1).cloned().collect(),
            verifier: self.chain.clone(),
        })
    }
}

/// The certificates of a PEM file.
pub fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(path)
        .and_then(|i| i.collect::<Result<_, _>>())
        .map_err(|e| anyhow::anyhow!("certificats {} illisibles : {e}", path.display()))?;
    if certs.is_empty() {
        anyhow::bail!("{} : aucun certificat PEM", path.display());
    }
    Ok(certs)
}

/// The subject's attributes of a DER certificate, most significant first. Values of the directory string
/// types are read as text; any other value (or invalid text) as RFC 4514's `#` + hexadecimal, which no
/// written name matches by accident.
pub fn subject_of(der: &[u8]) -> Option<Vec<(String, String)>> {
    use x509_parser::asn1_rs::Tag;
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = Vec::new();
    for rdn in cert.subject().iter() {
        for a in rdn.iter() {
            let name = mtls::attribute_name(&a.attr_type().to_id_string());
            let data = a.attr_value().data;
            let text = match a.attr_value().tag() {
                Tag::BmpString if data.len() % 2 == 0 => char::decode_utf16(
                    data.chunks_exact(2)
                        .map(|c| u16::from_be_bytes([c[0], c[1]])),
                )
                .collect::<Result<String, _>>()
                .ok(),
                Tag::UniversalString if data.len() % 4 == 0 => data
                    .chunks_exact(4)
                    .map(|c| char::from_u32(u32::from_be_bytes([c[0], c[1], c[2], c[3]])))
                    .collect::<Option<String>>(),
                _ => a.as_str().ok().map(str::to_string),
            };
            let value = text.unwrap_or_else(|| {
                let hex: String = data.iter().map(|b| format!("{b:02x}")).collect();
                format!("#{hex}")
            });
            out.push((name, value));
        }
    }
    Some(out)
}

/// Offers client authentication without requiring it, and accepts any certificate whose possession the
/// handshake proves; the chain is judged afterwards ([`Tls::certificate`]), so that a self-signed certificate
/// registered by its thumbprint can be used too.
#[derive(Debug)]
struct OfferClientAuth {
    inner: Arc<dyn ClientCertVerifier>,
}

impl ClientCertVerifier for OfferClientAuth {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        self.inner.root_hint_subjects()
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// Accepts TCP connections and completes their TLS handshakes concurrently (a slow handshake never holds up
/// the others), handing axum the established streams.
pub struct TlsListener {
    ready: tokio::sync::mpsc::Receiver<(TlsStream<TcpStream>, Peer)>,
    local: SocketAddr,
}

impl TlsListener {
    pub fn new(tcp: TcpListener, tls: Tls) -> io::Result<TlsListener> {
        let local = tcp.local_addr()?;
        let (tx, ready) = tokio::sync::mpsc::channel(128);
        let tls = Arc::new(tls);
        let acceptor = TlsAcceptor::from(tls.config.clone());
        if let Some(chain) = tls.chain.clone() {
            let every = tls.reload_every;
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let c = chain.clone();
                    let _ = tokio::task::spawn_blocking(move || c.reload_if_changed()).await;
                }
            });
        }
        let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
        tokio::spawn(async move {
            loop {
                if tx.is_closed() {
                    return;
                }
                let Ok(slot) = slots.clone().acquire_owned().await else {
                    return;
                };
                let (stream, addr) = match tcp.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        // Out of descriptors and the like: wait rather than spin.
                        tracing::warn!(error = %e, "acceptation TCP impossible");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = stream.set_nodelay(true);
                let (acceptor, tls, tx) = (acceptor.clone(), tls.clone(), tx.clone());
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await;
                    drop(slot);
                    let s = match handshake {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(peer = %addr, error = %e, "poignée de main TLS refusée");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(peer = %addr, "poignée de main TLS trop lente");
                            return;
                        }
                    };
                    let certificate = s
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|c| tls.presented(c))
                        .map(Arc::new);
                    // axum takes connections as fast as they come: a queue full this long means it is
                    // shutting down.
                    let _ = tx
                        .send_timeout((s, Peer { addr, certificate }), HANDSHAKE_TIMEOUT)
                        .await;
                });
            }
        });
        Ok(TlsListener { ready, local })
    }
}

impl axum::serve::Listener for TlsListener {
    type Io = TlsStream<TcpStream>;
    type Addr = Peer;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        match self.ready.recv().await {
            Some(x) => x,
            // The accepting task only ends with the runtime.
            None => std::future::pending().await,
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        Ok(Peer {
            addr: self.local,
            certificate: None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A self-signed certificate for 127.0.0.1 and its key, as PEM.
    fn self_signed() -> (String, String) {
        let key = rcgen::KeyPair::generate().expect("clé");
        let cert = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("paramètres")
            .self_signed(&key)
            .expect("certificat");
        (cert.pem(), key.serialize_pem())
    }

    fn files(dir: &Path, cert: &str, key: &str) -> TlsFiles {
        TlsFiles {
            cert: dir.join(cert),
            key: dir.join(key),
            client_ca: None,
            client_crl: Vec::new(),
            reload_every: Duration::from_secs(60),
        }
    }

    /// The start-up error for these files (the server must not start).
    fn refused(f: &TlsFiles) -> String {
        match Tls::load(f) {
            Ok(_) => panic!("fichiers TLS acceptés : {f:?}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn unusable_files_are_named_in_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let (cert, key) = self_signed();
        let (_, other_key) = self_signed();
        std::fs::write(d.join("cert.pem"), &cert).unwrap();
        std::fs::write(d.join("key.pem"), &key).unwrap();
        std::fs::write(d.join("other.key"), &other_key).unwrap();
        std::fs::write(d.join("text.pem"), "pas un certificat\n").unwrap();
        std::fs::write(d.join("crl.pem"), &cert).unwrap();
        // The good pair loads, without and with client authorities and a (missing, then wrong) list.
        let ok = files(d, "cert.pem", "key.pem");
        assert!(!Tls::load(&ok).unwrap().mutual());
        let with_ca = TlsFiles {
            client_ca: Some(d.join("cert.pem")),
            ..files(d, "cert.pem", "key.pem")
        };
        assert!(Tls::load(&with_ca).unwrap().mutual());

        let e = refused(&files(d, "absent.pem", "key.pem"));
        assert!(e.contains("absent.pem") && e.contains("illisibles"), "{e}");
        let e = refused(&files(d, "text.pem", "key.pem"));
        assert!(
            e.contains("text.pem") && e.contains("aucun certificat"),
            "{e}"
        );
        let e = refused(&files(d, "cert.pem", "absent.key"));
        assert!(e.contains("absent.key") && e.contains("clé privée"), "{e}");
        let e = refused(&files(d, "cert.pem", "cert.pem"));
        assert!(
            e.contains("clé privée TLS") && e.contains("cert.pem"),
            "{e}"
        );
        // A key that is not the certificate's.
        let e = refused(&files(d, "cert.pem", "other.key"));
        assert!(e.contains("cert.pem") && e.contains("other.key"), "{e}");
        let e = refused(&TlsFiles {
            client_ca: Some(d.join("absent-ca.pem")),
            ..files(d, "cert.pem", "key.pem")
        });
        assert!(e.contains("absent-ca.pem"), "{e}");
        let e = refused(&TlsFiles {
            client_ca: Some(d.join("text.pem")),
            ..files(d, "cert.pem", "key.pem")
        });
        assert!(
            e.contains("text.pem") && e.contains("aucun certificat"),
            "{e}"
        );
        for (crl, words) in [("absent.crl", "illisible"), ("crl.pem", "aucune liste PEM")] {
            let e = refused(&TlsFiles {
                client_ca: Some(d.join("cert.pem")),
                client_crl: vec![d.join(crl)],
                ..files(d, "cert.pem", "key.pem")
            });
            assert!(e.contains(crl) && e.contains(words), "{crl}: {e}");
        }
    }

    /// Plain connections are accepted with `TCP_NODELAY` (a mutation dropping `set_nodelay` fails this) and
    /// with the client's address.
    #[test]
    fn plain_connections_send_without_delay() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let tcp = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = tcp.local_addr().unwrap();
            let mut l = PlainListener(tcp);
            let client = TcpStream::connect(addr).await.unwrap();
            let (stream, peer) = axum::serve::Listener::accept(&mut l).await;
            assert!(stream.nodelay().unwrap(), "TCP_NODELAY absent");
            assert_eq!(peer.addr, client.local_addr().unwrap());
            assert!(peer.certificate.is_none());
            let local = axum::serve::Listener::local_addr(&l).unwrap();
            assert_eq!(local.addr, addr);
        });
    }
}
