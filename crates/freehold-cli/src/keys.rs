//! `freehold keys`: the gateway's virtual keys (create, list, revoke), and
//! the `--database` option shared with `freehold usage`.

use std::path::Path;
use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, Subcommand};
use freehold_gateway::store::{KeyRecord, KeyState, NewKey, Store, unix_now};
use serde::Serialize;

/// Where the gateway keeps keys and usage.
#[derive(Debug, Args)]
pub(crate) struct DatabaseArg {
    /// The gateway's database: sqlite:PATH, a file path, or
    /// postgres://USER:PASSWORD@HOST/DB [default: gateway.db in the data
    /// directory].
    #[arg(
        long,
        global = true,
        env = "FREEHOLD_DATABASE",
        hide_env_values = true,
        value_name = "URL"
    )]
    database: Option<String>,
}

impl DatabaseArg {
    /// Opens the database (creating it, and its tables, when missing):
    /// `--database`, else the configuration's `[gateway] database`, else
    /// `gateway.db` in the data directory — the one `freehold serve` uses.
    pub(crate) async fn open(&self, config: Option<&Path>) -> anyhow::Result<Store> {
        let url = match &self.database {
            Some(url) => url.clone(),
            None => {
                let loaded = crate::config::load(config)?;
                crate::serve::database_url(&loaded.config.gateway)?
            }
        };
        Ok(Store::open(&url).await?)
    }
}

/// Arguments of `freehold keys`.
#[derive(Debug, Args)]
pub(crate) struct KeysArgs {
    #[command(flatten)]
    database: DatabaseArg,

    #[command(subcommand)]
    command: KeysCommand,
}

#[derive(Debug, Subcommand)]
enum KeysCommand {
    /// Create a key and print its secret (shown this once only).
    Create(CreateArgs),
    /// List the keys: state, limits and spend (never the secrets).
    List(ListArgs),
    /// Revoke a key, named by its id, name or prefix.
    Revoke(RevokeArgs),
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// A name to recognise the key by (`ci`, `alice`).
    #[arg(long)]
    name: String,

    /// When the key stops working: a duration from now (30d, 12h, 2w) or a
    /// date (2026-12-31: valid through that day, UTC).
    #[arg(long, value_name = "WHEN")]
    expires: Option<String>,

    /// The only models the key may use (as clients name them), comma
    /// separated [default: all].
    #[arg(long, value_delimiter = ',', value_name = "MODELS")]
    models: Vec<String>,

    /// Requests per minute at most.
    #[arg(long, value_name = "N")]
    rpm: Option<u32>,

    /// Tokens (input + output) per minute at most.
    #[arg(long, value_name = "N")]
    tpm: Option<u32>,

    /// Spend cap in USD over the key's life.
    #[arg(long, value_name = "USD")]
    budget: Option<f64>,

    /// Requests with this key never leave the machine (local providers only).
    #[arg(long)]
    local_only: bool,

    /// Print the key and its secret as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct RevokeArgs {
    /// The key's id, name or prefix (`freehold keys list` shows them).
    #[arg(value_name = "ID|NAME|PREFIX")]
    key: String,
}

/// A key with its state, as `--json` prints it.
#[derive(Serialize)]
struct KeyJson<'a> {
    #[serde(flatten)]
    key: &'a KeyRecord,
    state: KeyState,
}

pub(crate) async fn run(args: KeysArgs, config: Option<&Path>) -> anyhow::Result<ExitCode> {
    // Validate before touching the database.
    let expires_at = match &args.command {
        KeysCommand::Create(create) => create
            .expires
            .as_deref()
            .map(|when| parse_expiry(when, unix_now()))
            .transpose()?,
        _ => None,
    };
    let store = args.database.open(config).await?;
    let result = match args.command {
        KeysCommand::Create(create) => create_key(&store, create, expires_at).await,
        KeysCommand::List(list) => list_keys(&store, list.json).await,
        KeysCommand::Revoke(revoke) => {
            let key = store.revoke_key(&revoke.key).await?;
            println!(
                "revoked {} ({}, {}); requests with it are refused from now on",
                key.id, key.name, key.prefix
            );
            Ok(())
        }
    };
    store.close().await;
    result.map(|()| ExitCode::SUCCESS)
}

async fn create_key(
    store: &Store,
    args: CreateArgs,
    expires_at: Option<i64>,
) -> anyhow::Result<()> {
    let (key, secret) = store
        .create_key(NewKey {
            name: args.name,
            expires_at,
            allowed_models: args.models,
            rpm: args.rpm,
            tpm: args.tpm,
            budget_usd: args.budget,
            local_only: args.local_only,
        })
        .await?;
    if args.json {
        #[derive(Serialize)]
        struct Created<'a> {
            #[serde(flatten)]
            key: KeyJson<'a>,
            secret: &'a str,
        }
        let state = key.state(unix_now());
        let created = Created {
            key: KeyJson { key: &key, state },
            secret: &secret,
        };
        println!("{}", serde_json::to_string_pretty(&created)?);
    } else {
        println!("created {} ({})", key.id, key.name);
        println!("{secret}");
    }
    eprintln!("Keep the secret now: it cannot be shown again (only its hash is stored).");
    Ok(())
}

async fn list_keys(store: &Store, json: bool) -> anyhow::Result<()> {
    let keys = store.list_keys().await?;
    let now = unix_now();
    if json {
        let keys: Vec<_> = keys
            .iter()
            .map(|key| KeyJson {
                key,
                state: key.state(now),
            })
            .collect();
        println!("{}", serde_json::to_string_pretty(&keys)?);
        return Ok(());
    }
    if keys.is_empty() {
        println!("no keys; create one with `freehold keys create --name NAME`");
        return Ok(());
    }
    let header = [
        "ID",
        "NAME",
        "PREFIX",
        "CREATED",
        "EXPIRES",
        "STATE",
        "MODELS",
        "LIMITS",
        "SPENT/BUDGET",
    ]
    .map(str::to_owned);
    let rows: Vec<[String; 9]> = keys
        .iter()
        .map(|key| {
            let mut limits = Vec::new();
            if let Some(rpm) = key.rpm {
                limits.push(format!("{rpm} rpm"));
            }
            if let Some(tpm) = key.tpm {
                limits.push(format!("{tpm} tpm"));
            }
            if key.local_only {
                limits.push("local-only".to_owned());
            }
            // Spend is kept against a budget only: a key without one is not
            // charged request by request (`freehold usage --by key` sums
            // every key's spend from the ledger).
            let spent = match key.budget_usd {
                None => "unlimited".to_owned(),
                Some(budget) if key.reserved_usd > 0.0 => format!(
                    "${:.2} / ${budget:.2} (${:.2} held)",
                    key.spent_usd, key.reserved_usd
                ),
                Some(budget) => format!("${:.2} / ${budget:.2}", key.spent_usd),
            };
            [
                key.id.clone(),
                key.name.clone(),
                key.prefix.clone(),
                date(key.created_at),
                key.expires_at.map_or_else(|| "never".to_owned(), date),
                key.state(now).to_string(),
                if key.allowed_models.is_empty() {
                    "all".to_owned()
                } else {
                    key.allowed_models.join(",")
                },
                if limits.is_empty() {
                    "-".to_owned()
                } else {
                    limits.join(", ")
                },
                spent,
            ]
        })
        .collect();
    print_table(&header, &rows, &[]);
    Ok(())
}

/// Prints rows under a header, columns padded to their widest cell; columns
/// listed in `right` are right-aligned (numbers).
pub(crate) fn print_table<const N: usize>(
    header: &[String; N],
    rows: &[[String; N]],
    right: &[usize],
) {
    let mut widths = header.each_ref().map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    for row in std::iter::once(header).chain(rows) {
        let cells: Vec<String> = row
            .iter()
            .enumerate()
            .map(|(i, cell)| {
                if right.contains(&i) {
                    format!("{cell:>w$}", w = widths[i])
                } else {
                    format!("{cell:<w$}", w = widths[i])
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
}

/// The latest expiry `--expires` takes: 9999-12-31 23:59:59 UTC.
const MAX_EXPIRY: i64 = 253_402_300_799;

/// `--expires`: a duration from `now` or a date (valid through its end, UTC).
fn parse_expiry(when: &str, now: i64) -> anyhow::Result<i64> {
    let at = if let Some(seconds) = parse_duration(when) {
        now.checked_add(seconds)
            .filter(|at| *at <= MAX_EXPIRY)
            .ok_or_else(|| anyhow::anyhow!("invalid --expires `{when}`: that is too far ahead"))?
    } else if let Some(day) = parse_date(when) {
        (day + 1) * 86_400 - 1
    } else {
        bail!(
            "invalid --expires `{when}`: give a duration from now (30d, 12h, 2w) \
             or a date (2026-12-31)"
        );
    };
    if at <= now {
        bail!("invalid --expires `{when}`: that is in the past");
    }
    Ok(at)
}

/// `30d`, `12h`, `2w`, `90m`, `45s` in seconds; `None` if it is not one.
pub(crate) fn parse_duration(text: &str) -> Option<i64> {
    let text = text.trim();
    let unit = text.chars().last()?;
    let count: i64 = text[..text.len() - unit.len_utf8()].parse().ok()?;
    let seconds = match unit {
        's' => 1,
        'm' => 60,
        'h' => 3_600,
        'd' => 86_400,
        'w' => 7 * 86_400,
        _ => return None,
    };
    if count < 0 {
        return None;
    }
    count.checked_mul(seconds)
}

/// `YYYY-MM-DD` as days since 1970-01-01; `None` if it is not a real date.
pub(crate) fn parse_date(text: &str) -> Option<i64> {
    let mut parts = text.trim().splitn(3, '-');
    let (y, m, d) = (parts.next()?, parts.next()?, parts.next()?);
    if y.len() != 4 || m.len() != 2 || d.len() != 2 {
        return None;
    }
    let (y, m, d): (i64, u32, u32) = (y.parse().ok()?, m.parse().ok()?, d.parse().ok()?);
    let days = freehold_protocol::time::days_from_civil(y, m, d);
    // Round-trips only for real dates (not 2026-02-30).
    (date(days * 86_400) == text.trim()).then_some(days)
}

/// `YYYY-MM-DD` (UTC) of a Unix time.
pub(crate) fn date(unix: i64) -> String {
    freehold_protocol::time::utc_date(unix)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates() {
        assert_eq!(parse_date("1970-01-01"), Some(0));
        assert_eq!(parse_date("2000-02-29"), Some(11_016));
        assert_eq!(parse_date("2026-01-01"), Some(20_454));
        assert_eq!(parse_date("2026-02-30"), None);
        assert_eq!(parse_date("2026-1-01"), None);
        assert_eq!(date(20_454 * 86_400 + 5), "2026-01-01");
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30d"), Some(30 * 86_400));
        assert_eq!(parse_duration("12h"), Some(12 * 3_600));
        assert_eq!(parse_duration("2w"), Some(14 * 86_400));
        assert_eq!(parse_duration("d"), None);
        assert_eq!(parse_duration("-1d"), None);
        assert_eq!(parse_duration("5y"), None);
    }

    #[test]
    fn expiry() {
        let now = 20_454 * 86_400;
        assert_eq!(parse_expiry("1d", now).unwrap(), now + 86_400);
        assert_eq!(
            parse_expiry("2026-01-31", now).unwrap(),
            (20_454 + 31) * 86_400 - 1
        );
        assert!(parse_expiry("2025-12-31", now).is_err());
        let err = parse_expiry("soon", now).unwrap_err().to_string();
        assert!(err.contains("--expires"), "{err}");
    }
}
