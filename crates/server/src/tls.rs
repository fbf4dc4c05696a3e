//! HTTPS for `socle serve` (rustls), with optional client certificates for mutual-TLS client authentication
//! (RFC 8705: `tls_client_auth`, `self_signed_tls_client_auth`, certificate-bound access tokens).
//!
//! When client certificate authorities are configured, every connection is offered client authentication but
//! none is required (browsers, patients and most software connect without one). A presented certificate is
//! accepted at the handshake once its possession is proven (the handshake signature); whether its chain
//! leads to a configured authority — validity dates and revocation lists included — is established per
//! connection and handed to the identity provider, which alone decides what the certificate proves.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

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
}

/// Who is at the other end of a connection.
#[derive(Debug, Clone)]
pub struct Peer {
    pub addr: SocketAddr,
    /// The client certificate presented in the TLS handshake.
    pub certificate: Option<Arc<ClientCertificate>>,
}

impl Connected<IncomingStream<'_, TcpListener>> for Peer {
    fn connect_info(stream: IncomingStream<'_, TcpListener>) -> Peer {
        Peer {
            addr: *stream.remote_addr(),
            certificate: None,
        }
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
    chain: Option<Arc<dyn ClientCertVerifier>>,
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
                let mut crls = Vec::new();
                for f in &files.client_crl {
                    let list: Vec<CertificateRevocationListDer<'static>> =
                        CertificateRevocationListDer::pem_file_iter(f)
                            .and_then(|i| i.collect::<Result<_, _>>())
                            .map_err(|e| {
                                anyhow::anyhow!(
                                    "liste de révocation {} illisible : {e}",
                                    f.display()
                                )
                            })?;
                    if list.is_empty() {
                        anyhow::bail!(
                            "liste de révocation {} : aucune liste PEM (X509 CRL)",
                            f.display()
                        );
                    }
                    crls.extend(list);
                }
                let inner: Arc<dyn ClientCertVerifier> =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                        .with_crls(crls)
                        .allow_unauthenticated()
                        .build()
                        .map_err(|e| {
                            anyhow::anyhow!("vérification des certificats clients : {e}")
                        })?;
                let offer = Arc::new(OfferClientAuth {
                    inner: inner.clone(),
                });
                (builder.with_client_cert_verifier(offer), Some(inner))
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
        })
    }

    /// Whether client certificates are requested.
    pub fn mutual(&self) -> bool {
        self.chain.is_some()
    }

    /// What a presented certificate (leaf first) establishes.
    fn certificate(&self, chain: &[CertificateDer<'static>]) -> Option<ClientCertificate> {
        let leaf = chain.first()?;
        let verified = self.chain.as_ref().is_some_and(|v| {
            v.verify_client_cert(leaf, &chain[1..], UnixTime::now())
                .is_ok()
        });
        Some(ClientCertificate {
            thumbprint: mtls::thumbprint(leaf),
            subject: subject_of(leaf).unwrap_or_default(),
            chain_verified: verified,
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

/// The subject's attributes of a DER certificate, most significant first.
pub fn subject_of(der: &[u8]) -> Option<Vec<(String, String)>> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let mut out = Vec::new();
    for rdn in cert.subject().iter() {
        for a in rdn.iter() {
            let name = mtls::attribute_name(&a.attr_type().to_id_string());
            let value = match a.as_str() {
                Ok(s) => s.to_string(),
                Err(_) => String::from_utf8_lossy(a.attr_value().data).into_owned(),
            };
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
        tokio::spawn(async move {
            loop {
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
                    let s = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream))
                        .await
                    {
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
                        .and_then(|c| tls.certificate(c))
                        .map(Arc::new);
                    let _ = tx.send((s, Peer { addr, certificate })).await;
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
