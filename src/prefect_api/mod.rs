//! Prefect's REST API, read by the bridge (I/O; `prefect/` stays pure):
//! events, by name and time or by id, a page at a time; block documents.
//! OSS answers at `http://host:4200/api`, Cloud at
//! `https://api.prefect.cloud/api/accounts/<A>/workspaces/<W>`
//! (docs/prefect.md §8).

pub(crate) mod check;
pub(crate) mod lookup;
pub(crate) mod reconcile;
pub(crate) mod setup;

use serde::Deserialize;
use serde_json::{Value, json};

use crate::secret::Secret;

/// Events per page: Prefect's cap.
const PAGE: usize = 50;
/// The largest answer read from Prefect: a page of 50 events is far less,
/// and an answer that never ends must not take the bridge's memory.
const MAX_ANSWER_BYTES: usize = 32 * 1024 * 1024;

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
    #[error("Prefect's API answered {status}: {detail}")]
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

    /// Sends `req`; the answer's body when it is a success.
    async fn send(&self, req: reqwest::RequestBuilder) -> Result<(u16, bytes::Bytes), Error> {
        let res = self
            .authorised(req)
            .send()
            .await
            .map_err(|e| Error::Unreachable(e.to_string()))?;
        let status = res.status().as_u16();
        Ok((status, read_capped(res).await?))
    }

    /// Sends `req`; its body when the answer is a 2xx.
    async fn change(&self, req: reqwest::RequestBuilder) -> Result<bytes::Bytes, Error> {
        let (status, body) = self.send(req).await?;
        if (200..300).contains(&status) {
            Ok(body)
        } else {
            Err(refused(status, &body))
        }
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

    /// Whether the API answers its health check.
    ///
    /// # Errors
    /// See [`Error`].
    pub(crate) async fn health(&self) -> Result<(), Error> {
        self.change(self.http.get(self.url("health"))).await.map(|_| ())
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
