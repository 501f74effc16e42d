//! Prefect's CSRF protection, which a self-hosted server turns on with
//! `PREFECT_SERVER_CSRF_PROTECTION_ENABLED` (its docs recommend it where the
//! API is exposed): every POST, PUT, PATCH and DELETE, reads by filter
//! included, must then carry `Prefect-Csrf-Token` and `Prefect-Csrf-Client`,
//! a token the server issues to a client id at `GET /csrf-token?client=<id>`
//! (docs/prefect.md §8). The bridge learns that a server wants them from
//! its 403, as Prefect's own client does, so a server without the
//! protection, and Cloud, never see a token request.

use reqwest::Method;
use reqwest::header::HeaderValue;

use crate::secret::Secret;

/// The header that carries the token.
const TOKEN: &str = "prefect-csrf-token";
/// The header that names the client the token was issued to.
const CLIENT: &str = "prefect-csrf-client";

/// This process's client id and, once a server asked for one, its token.
#[derive(Debug)]
pub(super) struct Csrf {
    client: String,
    /// Held across a renewal, so that requests refused together fetch one
    /// token: each fetch replaces the one before it on the server.
    token: tokio::sync::Mutex<Option<Secret>>,
}

impl Csrf {
    pub(super) fn new() -> Self {
        Self {
            client: client_id(),
            token: tokio::sync::Mutex::new(None),
        }
    }

    /// The id the server issues tokens to.
    pub(super) fn client(&self) -> &str {
        &self.client
    }

    /// Adds the token (if any) to `req` when its method needs one; the
    /// token it added.
    pub(super) async fn apply(&self, req: &mut reqwest::Request) -> Option<Secret> {
        if !needs_token(req.method()) {
            return None;
        }
        let token = self.token.lock().await.clone()?;
        let (Ok(value), Ok(client)) = (
            HeaderValue::from_str(token.expose()),
            HeaderValue::from_str(&self.client),
        ) else {
            return None;
        };
        req.headers_mut().insert(TOKEN, value);
        req.headers_mut().insert(CLIENT, client);
        Some(token)
    }

    /// Replaces `used` (the token a refused request carried) with what
    /// `fetch` gets, unless another request renewed it meanwhile.
    ///
    /// # Errors
    /// What `fetch` fails with.
    pub(super) async fn renew<F, E>(&self, used: Option<&Secret>, fetch: F) -> Result<(), E>
    where
        F: Future<Output = Result<Secret, E>>,
    {
        let mut token = self.token.lock().await;
        if token.as_ref().map(Secret::expose) != used.map(Secret::expose) {
            return Ok(());
        }
        *token = Some(fetch.await?);
        Ok(())
    }
}

/// Whether the server checks a token on `method`.
pub(super) fn needs_token(method: &Method) -> bool {
    [Method::POST, Method::PUT, Method::PATCH, Method::DELETE].contains(method)
}

/// Whether an answer is the CSRF check refusing a request: 403 with one of
/// the server's three messages ("Missing CSRF token.", "Missing client
/// identifier.", "Invalid CSRF token or client identifier.").
pub(super) fn is_refusal(status: u16, body: &[u8]) -> bool {
    let body = String::from_utf8_lossy(body);
    status == 403 && (body.contains("CSRF token") || body.contains("client identifier"))
}

/// A client id unique to this process.
fn client_id() -> String {
    use ring::rand::SecureRandom;
    let mut bytes = [0u8; 16];
    // A fixed id would still work, one token per process at a time; the
    // random one keeps two bridges on one server from replacing each
    // other's token.
    let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("prefect-pagerduty-bridge-{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_csrf_check_is_a_refusal() {
        for body in [
            r#"{"detail":"Missing CSRF token."}"#,
            r#"{"detail":"Missing client identifier."}"#,
            r#"{"detail":"Invalid CSRF token or client identifier."}"#,
        ] {
            assert!(is_refusal(403, body.as_bytes()), "{body}");
            assert!(!is_refusal(401, body.as_bytes()), "{body}");
        }
        assert!(!is_refusal(403, br#"{"detail":"Forbidden"}"#));
    }

    #[test]
    fn only_changes_carry_a_token() {
        assert!(needs_token(&Method::POST) && needs_token(&Method::DELETE));
        assert!(!needs_token(&Method::GET) && !needs_token(&Method::HEAD));
    }

    #[test]
    fn client_ids_differ_between_processes() {
        assert_ne!(client_id(), client_id());
        assert!(client_id().starts_with("prefect-pagerduty-bridge-"));
    }

    #[tokio::test]
    async fn requests_refused_together_fetch_one_token() {
        let csrf = Csrf::new();
        let mut fetched = 0;
        for _ in 0..3 {
            // Each of three refused requests carried no token.
            csrf.renew(None, async {
                fetched += 1;
                Ok::<_, ()>(Secret::new("t1"))
            })
            .await
            .expect("renewed");
        }
        assert_eq!(fetched, 1);
        let mut req = reqwest::Request::new(Method::POST, "http://x/api/events/filter".parse().expect("url"));
        assert_eq!(
            csrf.apply(&mut req).await.map(|t| t.expose().to_owned()),
            Some("t1".into())
        );
        assert_eq!(req.headers()[TOKEN], "t1");
        assert_eq!(req.headers()[CLIENT], csrf.client());
        let mut get = reqwest::Request::new(Method::GET, "http://x/api/health".parse().expect("url"));
        assert!(csrf.apply(&mut get).await.is_none());
        assert!(get.headers().get(TOKEN).is_none());
    }
}
