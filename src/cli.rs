//! Runs the subcommands: `serve` until a signal; `translate` and `spool`
//! once, offline.

use std::io::Read as _;

use anyhow::Context as _;
use serde_json::Value;

use crate::actions::Action;
use crate::app::App;
use crate::config::{
    self, HealthcheckArgs, PrefectArgs, PrefectOp, ServeArgs, ServeConfig, SpoolArgs, SpoolOp, TranslateArgs,
};
use crate::secret::Secret;
use crate::{prefect, shutdown, translate};

/// Serves until SIGINT or SIGTERM.
///
/// # Errors
/// Invalid settings, or a listener or client that cannot be set up.
pub async fn serve(args: &ServeArgs) -> anyhow::Result<()> {
    let config = ServeConfig::from_args(args)?;
    let app = App::start(config).await?;
    shutdown::signal().await;
    app.shutdown().await;
    Ok(())
}

/// The runtime of a subcommand that makes a few requests and ends.
fn one_shot_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting a runtime")
}

/// Asks a running bridge whether it is alive; `Ok` with what it answered
/// when it answered 200.
///
/// # Errors
/// No answer in time, or another status.
pub fn healthcheck(args: &HealthcheckArgs) -> anyhow::Result<String> {
    let url = match &args.url {
        Some(u) => u.clone(),
        None => {
            let ip = match args.listen.ip() {
                std::net::IpAddr::V4(v4) if v4.is_unspecified() => std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::IpAddr::V6(v6) if v6.is_unspecified() => std::net::Ipv6Addr::LOCALHOST.into(),
                ip => ip,
            };
            let scheme = if args.tls_cert.is_some() { "https" } else { "http" };
            let addr = std::net::SocketAddr::new(ip, args.listen.port());
            url::Url::parse(&format!("{scheme}://{addr}/healthz")).context("building the health URL")?
        }
    };
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(d)) => d == "localhost",
        None => false,
    };
    let egress = config::egress(&args.egress)?;
    let rt = one_shot_runtime()?;
    rt.block_on(async {
        let client = crate::outbound::health_client(&egress, loopback)?;
        let res = client
            .get(url.clone())
            .timeout(args.timeout.0)
            .send()
            .await
            .with_context(|| format!("{url} did not answer"))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        anyhow::ensure!(status.is_success(), "{url} answered {status}: {}", body.trim());
        Ok(format!("{url}: {status} {}", body.trim()))
    })
}

/// The events `serve` would send for one payload, as a JSON array.
///
/// Without `--action`, a placeholder action with severity `auto` is used.
///
/// # Errors
/// Invalid settings, or an input that cannot be read.
pub fn translate(args: &TranslateArgs) -> anyhow::Result<Value> {
    let actions = config::actions(&args.common.actions)?;
    let options = config::translate_options(&args.common)?;
    let placeholder = Action {
        name: "default".to_owned(),
        routing_key: Secret::new("ROUTING_KEY"),
        severity: None,
    };
    let action = match &args.for_action {
        Some(name) => actions.get(name).with_context(|| {
            format!(
                "--for-action {name}: no such --action (have: {})",
                actions.names().join(", ")
            )
        })?,
        None => actions.iter().next().unwrap_or(&placeholder),
    };
    let body = match args.input.as_deref() {
        None => read_stdin()?,
        Some(p) if p.as_os_str() == "-" => read_stdin()?,
        Some(p) => std::fs::read(p).with_context(|| format!("reading {}", p.display()))?,
    };
    let n = prefect::parse(&body, args.event_id.as_deref());
    let t = translate::translate(n, action, &options);
    Ok(Value::Array(vec![serde_json::to_value(&t.event)?]))
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading standard input")?;
    Ok(body)
}

/// Runs a `spool` operation on a spool file; returns what to print.
///
/// # Errors
/// When the file is missing, in use by a running bridge, or unreadable, or
/// the id names no dead letter.
pub fn spool(args: &SpoolArgs) -> anyhow::Result<Value> {
    use crate::spool::{DeadLetter, offline};
    let store =
        offline::open(&args.spool).with_context(|| format!("opening the spool {}", args.spool.display()))?;
    Ok(match &args.op {
        SpoolOp::Stats => serde_json::to_value(offline::stats(&*store)?)?,
        SpoolOp::DeadLetters => {
            let list: Vec<DeadLetter> = store
                .dead_letters()?
                .iter()
                .map(DeadLetter::from_record)
                .collect();
            serde_json::json!({ "dead_letters": list })
        }
        SpoolOp::Retry { id } => match offline::retry(store, *id)? {
            Some(new_id) => serde_json::json!({"status": "queued", "id": new_id, "was": id,
                "detail": "it is sent when the bridge next starts on this spool"}),
            None => anyhow::bail!("no dead letter {id}"),
        },
        SpoolOp::Purge { id } => {
            let purged = offline::purge(store, *id)?;
            if id.is_some() && purged == 0 {
                anyhow::bail!("no dead letter {}", id.unwrap_or_default());
            }
            serde_json::json!({"status": "purged", "count": purged})
        }
        SpoolOp::Check => serde_json::to_value(offline::check(&*store)?)?,
        SpoolOp::Drop { id } => match store.drop_record(id)? {
            Some(table) => serde_json::json!({"status": "dropped", "id": id, "table": table}),
            None => anyhow::bail!("no record {id} in the queue, the dead letters or the quarantine"),
        },
    })
}

/// Runs a `prefect` operation; returns what to print and whether all is well.
///
/// # Errors
/// Invalid flags, or Prefect (or the bridge) could not be read.
pub fn prefect(args: &PrefectArgs) -> anyhow::Result<(String, bool)> {
    let (conn, egress, bridge_token, json) = match &args.op {
        PrefectOp::Check {
            conn,
            egress,
            bridge_token,
            json,
        } => (conn, config::egress(egress)?, bridge_token, json),
        PrefectOp::Setup {
            conn,
            egress,
            actions,
            webhook_token,
            dry_run,
            remove,
            wait,
        } => {
            let how = SetupHow {
                wait: wait.0,
                egress: config::egress(egress)?,
                webhook_token: webhook_token.as_deref(),
                dry_run: *dry_run,
                remove: *remove,
            };
            return prefect_setup(conn, actions, &how);
        }
    };
    let ((api, auth), bridge) = config::prefect_client(conn)?
        .context("prefect check needs --prefect-api-url (or PPB_PREFECT_API_URL)")?;
    let token = bridge_token
        .as_deref()
        .map(|t| config::secret("--bridge-token", t))
        .transpose()?;
    let rt = one_shot_runtime()?;
    let report = rt.block_on(async {
        let client = crate::prefect_api::Client::try_new(api, auth, &egress)?;
        let known = match &bridge {
            Some(b) => Some(bridge_actions(b, token.as_ref(), &egress).await?),
            None => None,
        };
        crate::prefect_api::check::check(&client, bridge.as_ref(), known.as_deref())
            .await
            .context("reading Prefect's automations")
    })?;
    let text = if *json {
        serde_json::to_string_pretty(&report)?
    } else {
        let mut out = format!(
            "{} automation(s) call this bridge; {}\n",
            report.automations_calling_the_bridge,
            if report.ok {
                "no problems found".to_owned()
            } else {
                format!("{} problem(s):", report.problems.len())
            }
        );
        for p in &report.problems {
            out.push_str(&format!("- {} [{}]: {}\n", p.automation, p.kind, p.detail));
        }
        out.trim_end().to_owned()
    };
    Ok((text, report.ok))
}

/// The action names the bridge at `bridge` has (`GET /v1/actions`).
async fn bridge_actions(
    bridge: &url::Url,
    token: Option<&Secret>,
    egress: &crate::outbound::Egress,
) -> anyhow::Result<Vec<String>> {
    let url = format!("{}/v1/actions", bridge.as_str().trim_end_matches('/'));
    let mut req = crate::outbound::client(egress)?.get(&url);
    if let Some(t) = token {
        req = req.bearer_auth(t.expose());
    }
    let res = req
        .send()
        .await
        .with_context(|| format!("asking the bridge at {url}"))?;
    anyhow::ensure!(
        res.status().is_success(),
        "the bridge at {url} answered {} (give --bridge-token with a viewer token)",
        res.status()
    );
    let body: Value = res.json().await.context("reading the bridge's actions")?;
    Ok(body["actions"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|a| a["name"].as_str().map(str::to_owned))
        .collect())
}

/// How `prefect setup` runs, beside where Prefect is and which actions.
struct SetupHow<'a> {
    wait: std::time::Duration,
    egress: crate::outbound::Egress,
    webhook_token: Option<&'a str>,
    dry_run: bool,
    remove: bool,
}

fn prefect_setup(
    conn: &config::PrefectConnArgs,
    actions: &[String],
    how: &SetupHow<'_>,
) -> anyhow::Result<(String, bool)> {
    let (dry_run, remove) = (how.dry_run, how.remove);
    use crate::prefect_api::setup;
    for a in actions {
        crate::actions::check_name(a)?;
    }
    let ((api, auth), bridge) = config::prefect_client(conn)?
        .context("prefect setup needs --prefect-api-url (or PPB_PREFECT_API_URL)")?;
    let token = how
        .webhook_token
        .map(|t| config::secret("--webhook-token", t))
        .transpose()?;
    let rt = one_shot_runtime()?;
    let steps = rt.block_on(async {
        let client = crate::prefect_api::Client::try_new(api, auth, &how.egress)?;
        let deadline = tokio::time::Instant::now() + how.wait;
        while !how.wait.is_zero() {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let error = match tokio::time::timeout(left, client.health()).await {
                Ok(Ok(())) => break,
                Ok(Err(e)) => e.to_string(),
                Err(_) => "no answer before the deadline".to_owned(),
            };
            if tokio::time::Instant::now() >= deadline {
                anyhow::bail!("Prefect's API did not answer within {:?}: {error}", how.wait);
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
        let steps = if remove {
            setup::remove(&client, actions, dry_run).await?
        } else {
            let bridge = bridge
                .as_ref()
                .context("prefect setup needs --bridge-url: the address Prefect reaches the bridge at")?;
            let plan = setup::Plan {
                bridge,
                actions,
                webhook_token: token.as_ref(),
                dry_run,
            };
            setup::setup(&client, &plan).await?
        };
        anyhow::Ok(steps)
    })?;
    let mut out = String::new();
    for s in &steps {
        out.push_str(&format!("{} {}: {}\n", s.what, s.name, s.did));
        if let Some(request) = &s.request {
            out.push_str(&format!("  {request}\n"));
        }
    }
    let changed = steps.iter().any(|s| s.did != "unchanged");
    out.push_str(match (changed, remove) {
        (false, false) => "nothing changed: Prefect is wired as setup wants it",
        (false, true) => "nothing to remove",
        (true, _) if dry_run => "dry run: nothing was changed",
        (true, _) => "done",
    });
    Ok((out, true))
}
