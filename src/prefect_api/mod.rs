//! Prefect's REST API, read by the bridge (I/O; `prefect/` stays pure):
//! events, by name and time or by id, a page at a time; block documents.
//! OSS answers at `http://host:4200/api`, Cloud at
//! `https://api.prefect.cloud/api/accounts/<A>/workspaces/<W>`
//! (docs/prefect.md §8).

pub(crate) mod check;
mod csrf;
pub(crate) mod lookup;
pub(crate) mod reconcile;
pub(crate) mod setup;

use std::time::Duration;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::secret::Secret;

/// Events per page: Prefect's cap.
const PAGE: usize = 50;
/// The largest answer read from Prefect: a page of 50 events is far less,
/// and an answer that never ends must not take the bridge's memory.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;
/// Statuses Prefect's own client retries: its server answers 503 for
/// errors it calls retryable (a locked or saturated database), 429 when
/// Cloud limits a key, and 408 or 502 come from what stands in front of it.
const RETRYABLE: [u16; 4] = [408, 429, 502, 503];
/// Retries of one request after a retryable answer or a connection that
/// could not be made (Prefect's client makes five).
const RETRIES: u32 = 5;
/// The first wait; it doubles per retry (with jitter), so five retries
/// wait at most about 15 s in all.
const FIRST_WAIT: Duration = Duration::from_millis(500);
/// The longest single wait: a longer `Retry-After` is cut to this.
const MAX_WAIT: Duration = Duration::from_secs(30);

/// How to authenticate.
#[derive(Debug, Clone)]
pub(crate) enum Auth {
    /// Prefect Cloud: `Authorization: Bearer <key>`.
    ApiKey(Secret),
    /// OSS with `PREFECT_SERVER_API_AUTH_STRING`: HTTP basic, `user:pass`.
    AuthString(Secret),
}

/// Why a call failed.
#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum Error {
    /// No answer.
    #[error("Prefect's API did not answer: {0}")]
    Unreachable(String),
    /// An answer that was not a success.
    #[error("Prefect's API answered {status}: {detail}{}", hint(*status))]
    Status {
        /// HTTP status.
        status: u16,
        /// Start of the body.
        detail: String,
    },
    /// A success whose body did not read.
    #[error("Prefect's API answered something unreadable: {0}")]
    Unreadable(String),
}

/// What a status that is not a passing trouble most often means; where
/// the bridge expects a 404 (an object Prefect no longer has) it never
/// becomes an error.
fn hint(status: u16) -> &'static str {
    match status {
        401 => " (are --prefect-api-key or --prefect-auth-string right?)",
        403 => " (may the API key read and write automations, blocks and events?)",
        404 => {
            " (is --prefect-api-url the API's address? A self-hosted server's ends in /api, \
             Prefect Cloud's in /api/accounts/<account id>/workspaces/<workspace id>)"
        }
        _ => "",
    }
}

/// One page of events.
#[derive(Debug, Deserialize)]
pub(crate) struct Page {
    /// The events, as Prefect serialises them (what `{{ event | tojson }}` sends).
    pub(crate) events: Vec<Value>,
    /// The next page's URL, if any.
    #[serde(default)]
    pub(crate) next_page: Option<String>,
}

/// The error for an answer that is not a success.
fn refused(status: u16, body: &[u8]) -> Error {
    Error::Status {
        status,
        detail: crate::pagerduty::truncate_chars(String::from_utf8_lossy(body).trim(), 300),
    }
}

fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| Error::Unreadable(e.to_string()))
}

/// The action a Webhook block's URL names when it posts to this bridge's
/// intake (`/v1/prefect/<action>`, a trailing slash forgiven, as the
/// server's route table reads it); with `bridge`, only URLs of its origin.
pub(crate) fn intake_action(url: &str, bridge: Option<&url::Url>) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    if bridge.is_some_and(|b| b.origin() != u.origin()) {
        return None;
    }
    let rest = u.path().strip_prefix("/v1/prefect/")?;
    let name = rest.strip_suffix('/').unwrap_or(rest);
    (!name.is_empty() && !name.contains('/')).then(|| name.to_owned())
}

/// An answer's status and body.
async fn answer(res: reqwest::Response) -> Result<(u16, bytes::Bytes), Error> {
    let status = res.status().as_u16();
    Ok((status, read_capped(res).await?))
}

/// The body of a 2xx answer; any other answer is an error.
fn success((status, body): (u16, bytes::Bytes)) -> Result<bytes::Bytes, Error> {
    if (200..300).contains(&status) {
        Ok(body)
    } else {
        Err(refused(status, &body))
    }
}

/// A copy of `req` to send: every request here has its body in memory.
fn copy(req: &reqwest::Request) -> Result<reqwest::Request, Error> {
    req.try_clone()
        .ok_or_else(|| Error::Unreachable("a request that cannot be repeated".into()))
}

/// A `Retry-After` in seconds (Prefect sends no dates).
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let secs: f64 = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(MAX_WAIT.as_secs_f64())))
}

/// An answer's body, refused past [`MAX_ANSWER_BYTES`].
async fn read_capped(mut res: reqwest::Response) -> Result<bytes::Bytes, Error> {
    if res.content_length().is_some_and(|n| n > MAX_ANSWER_BYTES as u64) {
        return Err(Error::Unreadable(format!(
            "an answer of more than {MAX_ANSWER_BYTES} bytes"
        )));
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = res.chunk().await.map_err(|e| Error::Unreachable(e.to_string()))? {
        if body.len() + chunk.len() > MAX_ANSWER_BYTES {
            return Err(Error::Unreadable(format!(
                "an answer of more than {MAX_ANSWER_BYTES} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// A client for one Prefect API.
#[derive(Debug, Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    base: url::Url,
    auth: Option<Auth>,
    /// Shared by the clones, so one token serves them all.
    csrf: std::sync::Arc<csrf::Csrf>,
}

impl Client {
    /// A client for the API at `base`.
    ///
    /// # Errors
    /// When the HTTP client cannot be built.
    pub(crate) fn try_new(
        base: url::Url,
        auth: Option<Auth>,
        egress: &crate::outbound::Egress,
    ) -> Result<Self, crate::outbound::BuildError> {
        Ok(Self {
            http: crate::outbound::client(egress)?,
            base,
            auth,
            csrf: std::sync::Arc::new(csrf::Csrf::new()),
        })
    }

    /// The API's base URL (no credentials in it).
    pub(crate) fn base(&self) -> &url::Url {
        &self.base
    }

    fn url(&self, path: &str) -> String {
        format!("{}/{path}", self.base.as_str().trim_end_matches('/'))
    }

    fn authorised(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.auth {
            Some(Auth::ApiKey(key)) => req.bearer_auth(key.expose()),
            Some(Auth::AuthString(s)) => {
                let (user, pass) = s.expose().split_once(':').unwrap_or((s.expose(), ""));
                req.basic_auth(user, Some(pass))
            }
            None => req,
        }
    }

    /// `req` with this client's credentials, ready to send.
    fn request(&self, req: reqwest::RequestBuilder) -> Result<reqwest::Request, Error> {
        self.authorised(req)
            .build()
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// Sends `req`; the answer's status and body. A change the server's
    /// CSRF check refused is sent again once with a fresh token.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), Error> {
        let req = self.request(req)?;
        let mut renewed = false;
        loop {
            let mut this = copy(&req)?;
            let token = self.csrf.apply(&mut this).await;
            let (status, body) = answer(self.retrying(this).await?).await?;
            if renewed || !csrf::needs_token(req.method()) || !csrf::is_refusal(status, &body) {
                return Ok((status, body));
            }
            renewed = true;
            self.csrf.renew(token.as_ref(), self.csrf_token()).await?;
        }
    }

    /// Sends `req`, again after a back-off or the answer's `Retry-After`
    /// while the answer is a retryable status or no connection could be
    /// made (so nothing was sent); the last try gives what it gets.
    async fn retrying(&self, req: reqwest::Request) -> Result<reqwest::Response, Error> {
        use crate::backoff::{backoff, jitter};
        for retry in 1..=RETRIES {
            let wait = match self.http.execute(copy(&req)?).await {
                Ok(res) if RETRYABLE.contains(&res.status().as_u16()) => retry_after(res.headers()),
                Ok(res) => return Ok(res),
                Err(e) if e.is_connect() => None,
                Err(e) => return Err(Error::Unreachable(e.to_string())),
            };
            let wait = wait.unwrap_or_else(|| backoff(retry, FIRST_WAIT, MAX_WAIT, jitter()));
            tracing::debug!(
                retry,
                wait_ms = wait.as_millis() as u64,
                "Prefect's API was busy or out of reach; trying again"
            );
            tokio::time::sleep(wait.min(MAX_WAIT)).await;
        }
        self.http
            .execute(req)
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))
    }

    /// A CSRF token issued to this client (asked for again while Prefect
    /// is busy, like any call).
    async fn csrf_token(&self) -> Result<Secret, Error> {
        #[derive(Deserialize)]
        struct Issued {
            token: String,
        }
        let url = format!("{}?client={}", self.url("csrf-token"), self.csrf.client());
        let req = self.request(self.http.get(url))?;
        let issued: Issued = decode(&success(answer(self.retrying(req).await?).await?)?)?;
        Ok(Secret::new(issued.token))
    }

    /// Sends `req`; its body when the answer is a 2xx.
    async fn change(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, Error> {
        success(self.send(req).await?)
    }

    /// The block document of type `slug` named `name`, with its secrets; `None` when there is none.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn block_document(&self, slug: &str, name: &str) -> Result<Option<Value>, Error> {
        let url = self.url(&format!(
            "block_types/slug/{slug}/block_documents/name/{name}?include_secrets=true"
        ));
        let (status, body) = self.send(self.http.get(url)).await?;
        match status {
            404 => Ok(None),
            200..=299 => decode(&body).map(Some),
            _ => Err(refused(status, &body)),
        }
    }

    /// Creates a block document of type `slug`; returns its id.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn create_block_document(
        &self,
        slug: &str,
        name: &str,
        data: &Value,
    ) -> Result<String, Error> {
        let block_type: Value = self
            .call(self.http.get(self.url(&format!("block_types/slug/{slug}"))))
            .await?;
        let type_id = block_type["id"].clone();
        let schemas: Vec<Value> = self
            .call(self.http.post(self.url("block_schemas/filter")).json(&json!({
                "block_schemas": {"block_type_id": {"any_": [type_id]}},
                "limit": 1,
            })))
            .await?;
        let schema_id = schemas
            .first()
            .map(|s| s["id"].clone())
            .ok_or_else(|| Error::Unreadable(format!("Prefect has no block schema for {slug}")))?;
        let body = json!({
            "name": name,
            "data": data,
            "block_type_id": type_id,
            "block_schema_id": schema_id,
            "is_anonymous": false,
        });
        let created: Value = self
            .call(self.http.post(self.url("block_documents/")).json(&body))
            .await?;
        Ok(created["id"].as_str().unwrap_or_default().to_owned())
    }

    /// Replaces a block document's data.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn update_block_document(&self, id: &str, data: &Value) -> Result<(), Error> {
        let body = json!({"data": data, "merge_existing_data": false});
        self.change(
            self.http
                .patch(self.url(&format!("block_documents/{id}")))
                .json(&body),
        )
        .await
        .map(|_| ())
    }

    /// Creates an automation.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn create_automation(&self, body: &Value) -> Result<(), Error> {
        self.change(self.http.post(self.url("automations/")).json(body))
            .await
            .map(|_| ())
    }

    /// Replaces an automation.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn update_automation(&self, id: &str, body: &Value) -> Result<(), Error> {
        self.change(self.http.put(self.url(&format!("automations/{id}"))).json(body))
            .await
            .map(|_| ())
    }

    /// Deletes what `path` names.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn delete(&self, path: &str) -> Result<(), Error> {
        self.change(self.http.delete(self.url(path))).await.map(|_| ())
    }

    /// Sends `req`; its 2xx body, decoded.
    async fn call<T: serde::de::DeserializeOwned>(&self, req: reqwest::RequestBuilder) -> Result<T, Error> {
        decode(&self.change(req).await?)
    }

    /// Events named one of `names` that occurred in `[since, until)`, oldest
    /// first: the first page.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn events(
        &self,
        names: &[&str],
        since: jiff::Timestamp,
        until: jiff::Timestamp,
    ) -> Result<Page, Error> {
        let body = json!({
            "filter": {
                "event": {"name": names},
                "occurred": {"since": since.to_string(), "until": until.to_string()},
                "order": "ASC",
            },
            "limit": PAGE,
        });
        self.call(self.http.post(self.url("events/filter")).json(&body))
            .await
    }

    /// The page after one whose `next_page` is `url`. Only a URL under the
    /// configured API is followed: credentials go nowhere else.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn next(&self, url: &str) -> Result<Page, Error> {
        let next = self
            .base
            .join(url)
            .map_err(|e| Error::Unreadable(e.to_string()))?;
        if next.origin() != self.base.origin()
            || !next.path().starts_with(self.base.path().trim_end_matches('/'))
        {
            return Err(Error::Unreadable(format!(
                "next_page {next} is not under {}",
                self.base
            )));
        }
        self.call(self.http.get(next)).await
    }

    /// The event with `id`, if Prefect still has it (looked for since `since`).
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn event(&self, id: &str, since: jiff::Timestamp) -> Result<Option<Value>, Error> {
        let body = json!({
            "filter": {"id": {"id": [id]}, "occurred": {"since": since.to_string()}},
            "limit": 1,
        });
        let page: Page = self
            .call(self.http.post(self.url("events/filter")).json(&body))
            .await?;
        Ok(page.events.into_iter().next())
    }

    /// Whether the API answers its health check, in one try: a caller that
    /// waits for Prefect to start polls it, and must see it up at once.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn health(&self) -> Result<(), Error> {
        let res = self
            .http
            .execute(self.request(self.http.get(self.url("health")))?)
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        success(answer(res).await?).map(|_| ())
    }

    /// The object at `path` (`flow_runs/<id>`, …); `None` when Prefect has
    /// no such object.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn object(&self, path: &str) -> Result<Option<Value>, Error> {
        let (status, body) = self.send(self.http.get(self.url(path))).await?;
        match status {
            404 => Ok(None),
            200..=299 => decode(&body).map(Some),
            _ => Err(refused(status, &body)),
        }
    }

    /// The work pool with `id` (Prefect reads work pools by name; by id only
    /// through a filter).
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn work_pool(&self, id: &str) -> Result<Option<Value>, Error> {
        let pools: Vec<Value> = self
            .call(self.http.post(self.url("work_pools/filter")).json(&json!({
                "work_pools": {"id": {"any_": [id]}},
                "limit": 1,
            })))
            .await?;
        Ok(pools.into_iter().next())
    }

    /// Every automation, as Prefect serialises them.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn automations(&self) -> Result<Vec<Value>, Error> {
        self.call(self.http.post(self.url("automations/filter")).json(&json!({})))
            .await
    }

    /// The URL a Webhook block document posts to (`None` for other blocks,
    /// or when there is no such block).
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn webhook_url(&self, block_document_id: &str) -> Result<Option<String>, Error> {
        let doc = self
            .object(&format!(
                "block_documents/{block_document_id}?include_secrets=true"
            ))
            .await?;
        Ok(doc.and_then(|d| d["data"]["url"].as_str().map(str::to_owned)))
    }
}

#[cfg(test)]
mod tests {
    use std::convert::Infallible;
    use std::sync::{Arc, Mutex};

    use bytes::Bytes;
    use http_body_util::Full;
    use hyper::service::service_fn;

    use super::*;

    /// Serves `respond` (a status and body for each request) on loopback,
    /// every answer with `Retry-After: 0` so that a retry does not wait;
    /// the API's URL.
    async fn serve<F>(respond: F) -> url::Url
    where
        F: Fn(&hyper::Request<hyper::body::Incoming>) -> (u16, String) + Send + Sync + 'static,
    {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url =
            url::Url::parse(&format!("http://{}/api", listener.local_addr().expect("addr"))).expect("url");
        let respond = Arc::new(respond);
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let respond = respond.clone();
                tokio::spawn(async move {
                    let svc = service_fn(move |req| {
                        let (status, body) = respond(&req);
                        let res = hyper::Response::builder()
                            .status(status)
                            .header("retry-after", "0")
                            .body(Full::new(Bytes::from(body)));
                        async move { Ok::<_, Infallible>(res.expect("response")) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        url
    }

    /// A loopback server that answers each request with the next status of
    /// `script` (the last one repeats); its URL and the count of requests.
    async fn scripted(script: Vec<u16>) -> (url::Url, Arc<Mutex<usize>>) {
        let seen = Arc::new(Mutex::new(0));
        let counter = seen.clone();
        let url = serve(move |_| {
            let mut n = counter.lock().expect("lock");
            *n += 1;
            (script[(*n - 1).min(script.len() - 1)], "[]".to_owned())
        })
        .await;
        (url, seen)
    }

    fn client(base: url::Url) -> Client {
        let _ = rustls::crypto::ring::default_provider().install_default();
        Client::try_new(base, None, &crate::outbound::Egress::default()).expect("client")
    }

    #[tokio::test]
    async fn a_busy_prefect_is_asked_again_until_it_answers() {
        let (url, seen) = scripted(vec![503, 429, 502, 408, 200]).await;
        let automations = client(url).automations().await.expect("answered in the end");
        assert!(automations.is_empty());
        assert_eq!(*seen.lock().expect("lock"), 5);
    }

    #[tokio::test]
    async fn a_prefect_that_stays_busy_is_reported_after_the_last_retry() {
        let (url, seen) = scripted(vec![503]).await;
        let err = client(url).automations().await.expect_err("never answered");
        assert!(matches!(err, Error::Status { status: 503, .. }), "{err}");
        assert_eq!(*seen.lock().expect("lock"), 1 + RETRIES as usize);
    }

    #[tokio::test]
    async fn other_failures_are_not_retried() {
        for status in [400, 404, 409, 422, 500] {
            let (url, seen) = scripted(vec![status, 200]).await;
            let err = client(url).automations().await.expect_err("refused");
            assert!(
                matches!(err, Error::Status { status: s, .. } if s == status),
                "{err}"
            );
            assert_eq!(*seen.lock().expect("lock"), 1, "{status} was retried");
        }
    }

    /// A loopback server with CSRF protection: it issues token `t<n>` at
    /// `GET /api/csrf-token` (the n-th issue), takes a POST only with the
    /// newest token, and counts what it saw.
    #[derive(Debug, Default)]
    struct Protected {
        /// Token requests still to answer 503 (a busy server).
        busy: usize,
        issued: usize,
        accepted: usize,
        refused: usize,
    }

    async fn csrf_protected() -> (url::Url, Arc<Mutex<Protected>>) {
        let state = Arc::new(Mutex::new(Protected::default()));
        let shared = state.clone();
        let url = serve(move |req| {
            let mut s = shared.lock().expect("lock");
            if req.uri().path() == "/api/csrf-token" && s.busy > 0 {
                s.busy -= 1;
                return (503, r#"{"exception_message":"Service Unavailable"}"#.to_owned());
            }
            if req.uri().path() == "/api/csrf-token" {
                assert!(req.uri().query().is_some_and(|q| q.starts_with("client=")));
                s.issued += 1;
                let token = format!(
                    r#"{{"token":"t{}","client":"c","expiration":"2099-01-01T00:00:00Z"}}"#,
                    s.issued
                );
                return (200, token);
            }
            let token = req
                .headers()
                .get("prefect-csrf-token")
                .map(|v| v.to_str().unwrap_or_default().to_owned());
            let has_client = req.headers().contains_key("prefect-csrf-client");
            match token {
                Some(t) if has_client && t == format!("t{}", s.issued) => {
                    s.accepted += 1;
                    (200, "[]".to_owned())
                }
                Some(_) => {
                    s.refused += 1;
                    let detail = r#"{"detail":"Invalid CSRF token or client identifier."}"#;
                    (403, detail.to_owned())
                }
                None => {
                    s.refused += 1;
                    (403, r#"{"detail":"Missing CSRF token."}"#.to_owned())
                }
            }
        })
        .await;
        (url, state)
    }

    #[tokio::test]
    async fn a_csrf_protected_prefect_gets_its_token_once_and_again_when_it_changes() {
        let (url, state) = csrf_protected().await;
        // Busy when first asked for a token: asked again.
        state.lock().expect("lock").busy = 2;
        let client = client(url);
        client.automations().await.expect("sent with a token");
        client.automations().await.expect("sent with the same token");
        {
            let s = state.lock().expect("lock");
            assert_eq!((s.busy, s.issued, s.accepted, s.refused), (0, 1, 2, 1), "{s:?}");
        }
        // The server's token changes (it expired, or another client with
        // the same id took one): one refusal, one new token.
        state.lock().expect("lock").issued += 1;
        client.automations().await.expect("sent with a new token");
        let s = state.lock().expect("lock");
        assert_eq!((s.issued, s.accepted, s.refused), (3, 3, 2), "{s:?}");
    }

    #[tokio::test]
    async fn a_403_that_is_not_the_csrf_check_is_reported_as_it_is() {
        let (url, seen) = scripted(vec![403, 200]).await;
        let err = client(url).automations().await.expect_err("forbidden");
        assert!(matches!(err, Error::Status { status: 403, .. }), "{err}");
        assert_eq!(*seen.lock().expect("lock"), 1);
    }

    #[test]
    fn a_refusal_says_what_to_check() {
        let said = |status| {
            Error::Status {
                status,
                detail: "{}".into(),
            }
            .to_string()
        };
        assert!(said(404).contains("ends in /api"), "{}", said(404));
        assert!(said(401).contains("--prefect-api-key"), "{}", said(401));
        assert_eq!(said(500), "Prefect's API answered 500: {}");
    }

    #[test]
    fn retry_after_is_read_in_seconds_and_capped() {
        let header = |v: &str| {
            let mut h = reqwest::header::HeaderMap::new();
            h.insert(reqwest::header::RETRY_AFTER, v.parse().expect("value"));
            h
        };
        assert_eq!(retry_after(&header("2")), Some(Duration::from_secs(2)));
        assert_eq!(retry_after(&header("0.5")), Some(Duration::from_millis(500)));
        assert_eq!(retry_after(&header("86400")), Some(MAX_WAIT));
        assert_eq!(retry_after(&header("-1")), None);
        assert_eq!(retry_after(&header("Wed, 21 Oct 2015 07:28:00 GMT")), None);
        assert_eq!(retry_after(&reqwest::header::HeaderMap::new()), None);
    }
}
