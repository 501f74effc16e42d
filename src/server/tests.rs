//! Every route × every kind of credential, through a real listener.

use std::time::Duration;

use std::sync::Arc;

use http::Method;
use tokio_util::sync::CancellationToken;

use super::auth::{Role, Tokens};
use super::routes::{Route, tests::ALL, tests::example};
use super::{Listen, State};
use crate::actions::{Action, Actions};
use crate::rotation::Rotating;
use crate::secret::Secret;
use crate::spool::Spool;

const WEBHOOK: &str = "webhook-token-1234";
const VIEWER: &str = "viewer-token-1234";
const USER: &str = "user-token-12345";
const ADMIN: &str = "admin-token-1234";
const KEY: &str = "R0UTINGKEYAAAAAAAAAAAAAAAAAAAAAA";

/// Who sends a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Caller {
    Nobody,
    Webhook,
    Viewer,
    User,
    Admin,
}

impl Caller {
    fn token(self) -> Option<&'static str> {
        match self {
            Self::Nobody => None,
            Self::Webhook => Some(WEBHOOK),
            Self::Viewer => Some(VIEWER),
            Self::User => Some(USER),
            Self::Admin => Some(ADMIN),
        }
    }
}

/// The status each route must answer each caller, written out by hand
/// (not derived from `Route::access`, which is what is under test).
fn expected(route: &Route<'_>, caller: Caller) -> u16 {
    use Caller::*;
    let api = |least: Caller, ok: u16| match caller {
        Nobody | Webhook => 401,
        c if c < least => 403,
        _ => ok,
    };
    match route {
        Route::Intake { .. } => {
            if caller == Webhook {
                202
            } else {
                401
            }
        }
        Route::Health | Route::Ready => 200,
        Route::ListActions | Route::SpoolStats | Route::ListDeadLetters | Route::Metrics => api(Viewer, 200),
        Route::CreateAction => api(User, 201),
        Route::DeleteAction { .. } => api(User, 404),
        Route::TestAction { .. } => api(User, 202),
        Route::RetryDeadLetter { .. } => api(User, 404),
        Route::PurgeDeadLetter { .. } => api(Admin, 404),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_caller_as_its_access_says() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let dir = tempfile::tempdir().expect("tempdir");
    let spool = Spool::open(&dir.path().join("s.redb"), 1000).expect("spool");
    let action = Action {
        name: "oncall".into(),
        routing_key: Secret::new(KEY),
        severity: None,
    };
    let state = Arc::new(State {
        actions: Arc::new(std::sync::RwLock::new(
            Actions::try_new(vec![action]).expect("actions"),
        )),
        fixed_actions: ["oncall".to_owned()].into(),
        options: crate::translate::Options::default(),
        spool,
        max_body: 1 << 20,
        body_budget: super::budget::BodyBudget::new(4 << 20),
        tokens: Tokens {
            webhook: vec![Rotating::fixed(Secret::new(WEBHOOK))],
            api: vec![
                (Role::Viewer, Rotating::fixed(Secret::new(VIEWER))),
                (Role::User, Rotating::fixed(Secret::new(USER))),
                (Role::Admin, Rotating::fixed(Secret::new(ADMIN))),
            ],
        },
        request_timeout: Duration::from_secs(10),
        keys: crate::deliver::Keys::default(),
        metrics: crate::metrics::Metrics::shared(),
        reconcile: None,
        lookups: None,
        action_keys: crate::rotation::ActionKeys::default(),
        ingress: None,
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(super::run(
        Listen {
            listener,
            tls: None,
            max_connections: 64,
            max_connections_per_ip: 64,
            idle_timeout: Duration::from_secs(10),
            metrics_only: false,
        },
        state,
        shutdown.clone(),
    ));
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .expect("client");
    let failed = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/examples/flow-run-failed.json"
    ))
    .expect("fixture");
    let callers = [
        Caller::Nobody,
        Caller::Webhook,
        Caller::Viewer,
        Caller::User,
        Caller::Admin,
    ];
    let mut checked = 0;
    for route in ALL {
        let (method, path) = example(&route);
        for (n, caller) in callers.into_iter().enumerate() {
            let mut req = http.request(method.clone(), format!("{base}{path}"));
            if let Some(t) = caller.token() {
                req = req.bearer_auth(t);
            }
            req = match route {
                // A new action per caller, so each create can succeed.
                Route::CreateAction => {
                    req.json(&serde_json::json!({"name": format!("new-{n}"), "routing_key": KEY}))
                }
                // A new event id per caller, so none is a duplicate.
                Route::Intake { .. } => req.body(String::from_utf8_lossy(&failed).replace(
                    "01a2214c-827e-7f4d-8af1-2c04918bd893",
                    &format!("01a2214c-827e-7f4d-8af1-2c04918bd89{n}"),
                )),
                _ => req,
            };
            let res = req.send().await.expect("request");
            let status = res.status().as_u16();
            let want = expected(&route, caller);
            let body: serde_json::Value =
                if method == Method::HEAD || (route == Route::Metrics && status == 200) {
                    serde_json::Value::Null
                } else {
                    res.json().await.expect("a JSON body")
                };
            assert_eq!(status, want, "{method} {path} as {caller:?}: {body}");
            if status >= 400 {
                assert!(body["error"].is_string(), "{method} {path} as {caller:?}: {body}");
            }
            if status == 401 || status == 403 {
                assert_eq!(
                    body["error"],
                    if status == 401 {
                        "unauthorized"
                    } else {
                        "forbidden"
                    }
                );
            }
            checked += 1;
        }
    }
    assert_eq!(checked, ALL.len() * callers.len());
    shutdown.cancel();
    server.await.expect("the server stops");
}
