//! Runs the subcommands: `serve` until a signal, `translate` once, offline.

use std::io::Read as _;

use anyhow::Context as _;
use serde_json::Value;

use crate::actions::Action;
use crate::app::App;
use crate::config::{self, ServeArgs, ServeConfig, TranslateArgs};
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

/// The events `serve` would send for one payload, as a JSON array.
///
/// Without `--action`, a placeholder action with severity `auto` is used.
///
/// # Errors
/// Invalid settings, or an input that cannot be read.
pub fn translate(args: &TranslateArgs) -> anyhow::Result<Value> {
    let actions = config::parse_actions(&args.common.actions)?;
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
    let t = translate::translate(&n, action, &options);
    Ok(Value::Array(vec![serde_json::to_value(&t.event)?]))
}

fn read_stdin() -> anyhow::Result<Vec<u8>> {
    let mut body = Vec::new();
    std::io::stdin()
        .read_to_end(&mut body)
        .context("reading standard input")?;
    Ok(body)
}
