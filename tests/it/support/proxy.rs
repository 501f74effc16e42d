//! An egress proxy as clusters have them: it takes `CONNECT host:443` only
//! with the right `Proxy-Authorization: Basic` credentials, and intercepts
//! TLS: it answers the client's handshake with a certificate for the host
//! signed by its own CA (made at test time), then passes the plain HTTP to
//! an upstream on loopback (the PagerDuty double). A client that does not
//! trust the proxy's CA fails the handshake, as it would behind a real one.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

#[derive(Debug, Default)]
struct Seen {
    /// `host:port` of each CONNECT let through.
    tunnels: Mutex<Vec<String>>,
    /// Requests refused for their credentials.
    refused: AtomicUsize,
    /// Requests that were not CONNECT.
    plain: AtomicUsize,
    /// TLS handshakes the client broke off (it did not trust the CA).
    failed_handshakes: AtomicUsize,
}

/// The proxy; it stops with the test's runtime.
#[derive(Debug, Clone)]
pub struct Proxy {
    addr: SocketAddr,
    seen: Arc<Seen>,
    /// The proxy CA's certificate, PEM.
    pub ca_pem: String,
}

impl Proxy {
    /// A proxy taking `user:password`, passing tunnels to `upstream`.
    pub async fn start(upstream: SocketAddr, credentials: &str) -> Self {
        let ca_key = KeyPair::generate().expect("ca key");
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_pem = ca_params.self_signed(&ca_key).expect("ca").pem();
        let issuer = Arc::new(Issuer::new(ca_params, ca_key));
        let expected = format!("Basic {}", base64(credentials.as_bytes()));
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Seen::default());
        let s = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (s, issuer, expected) = (s.clone(), issuer.clone(), expected.clone());
                tokio::spawn(async move {
                    let _ = tunnel(stream, upstream, &s, &issuer, &expected).await;
                });
            }
        });
        Self { addr, seen, ca_pem }
    }

    /// `http://user:password@127.0.0.1:<port>`.
    pub fn url(&self, credentials: &str) -> String {
        format!("http://{credentials}@{}", self.addr)
    }

    /// The CONNECT targets let through.
    pub fn tunnels(&self) -> Vec<String> {
        self.seen.tunnels.lock().expect("lock").clone()
    }

    /// Requests refused for their credentials.
    pub fn refused(&self) -> usize {
        self.seen.refused.load(Ordering::SeqCst)
    }

    /// Requests that were not CONNECT.
    pub fn plain(&self) -> usize {
        self.seen.plain.load(Ordering::SeqCst)
    }

    /// Handshakes the client broke off.
    pub fn failed_handshakes(&self) -> usize {
        self.seen.failed_handshakes.load(Ordering::SeqCst)
    }
}

async fn tunnel(
    mut client: TcpStream,
    upstream: SocketAddr,
    seen: &Seen,
    issuer: &Issuer<'static, KeyPair>,
    expected: &str,
) -> std::io::Result<()> {
    let head = read_head(&mut client).await?;
    let mut lines = head.split("\r\n");
    let request = lines.next().unwrap_or_default().to_owned();
    let mut parts = request.split_whitespace();
    let (method, target) = (parts.next().unwrap_or_default(), parts.next().unwrap_or_default());
    if method != "CONNECT" {
        seen.plain.fetch_add(1, Ordering::SeqCst);
        return client
            .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
            .await;
    }
    let authorised = lines.any(|l| {
        l.split_once(':').is_some_and(|(name, value)| {
            name.trim().eq_ignore_ascii_case("proxy-authorization") && value.trim() == expected
        })
    });
    if !authorised {
        seen.refused.fetch_add(1, Ordering::SeqCst);
        return client
            .write_all(
                b"HTTP/1.1 407 Proxy Authentication Required\r\n\
                  Proxy-Authenticate: Basic realm=\"egress\"\r\nContent-Length: 0\r\n\r\n",
            )
            .await;
    }
    seen.tunnels.lock().expect("lock").push(target.to_owned());
    client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await?;

    let host = target.rsplit_once(':').map_or(target, |(h, _)| h).to_owned();
    let leaf_key = KeyPair::generate().expect("leaf key");
    let leaf = CertificateParams::new(vec![host])
        .expect("leaf params")
        .signed_by(&leaf_key, issuer)
        .expect("leaf");
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into());
    let mut config =
        rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let Ok(mut tls) = tokio_rustls::TlsAcceptor::from(Arc::new(config))
        .accept(client)
        .await
    else {
        seen.failed_handshakes.fetch_add(1, Ordering::SeqCst);
        return Ok(());
    };
    let mut up = TcpStream::connect(upstream).await?;
    tokio::io::copy_bidirectional(&mut tls, &mut up).await.map(|_| ())
}

/// Reads a request head, byte by byte so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> std::io::Result<String> {
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        if head.len() > 16 * 1024 {
            return Err(std::io::Error::other("head too long"));
        }
        head.push(stream.read_u8().await?);
    }
    Ok(String::from_utf8_lossy(&head).into_owned())
}

fn base64(input: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in input.chunks(3) {
        let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[test]
fn base64_matches_the_rfc_examples() {
    assert_eq!(base64(b"f"), "Zg==");
    assert_eq!(base64(b"fo"), "Zm8=");
    assert_eq!(base64(b"foo"), "Zm9v");
    assert_eq!(base64(b"foobar"), "Zm9vYmFy");
}
