//! `freehold usage`: what the gateway's requests cost, from its ledger.

use std::process::ExitCode;

use anyhow::bail;
use clap::{Args, ValueEnum};
use freehold_gateway::store::{GroupBy, unix_now};

use crate::keys::{DatabaseArg, parse_date, parse_duration, print_table};

/// Arguments of `freehold usage`.
#[derive(Debug, Args)]
pub(crate) struct UsageArgs {
    /// Group requests by virtual key, by model asked for, by UTC day, or by
    /// the end user the client named (`metadata.user_id`,
    /// `safety_identifier`, `user`).
    #[arg(long, value_enum, default_value_t = By::Key)]
    by: By,

    /// Only requests since then: a duration back from now (7d, 24h) or a
    /// date (2026-01-31, from its start, UTC).
    #[arg(long, value_name = "WHEN")]
    since: Option<String>,

    /// List the latest N requests, one a line (time, key, end user, model,
    /// what answered, status, tokens, cost, latency, privacy decision),
    /// instead of totals.
    #[arg(long, value_name = "N")]
    requests: Option<u32>,

    /// List the request whose id is ID (the `request-id` or `x-request-id`
    /// header its client got back, `req_…`), as `--requests` lists lines.
    #[arg(long, value_name = "ID", conflicts_with = "requests")]
    request_id: Option<String>,

    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,

    #[command(flatten)]
    database: DatabaseArg,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum By {
    Key,
    Model,
    Day,
    User,
}

pub(crate) async fn run(
    args: UsageArgs,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let since_ms = args
        .since
        .as_deref()
        .map(|when| parse_since(when, unix_now()))
        .transpose()?;
    if args.requests.is_some() || args.request_id.is_some() {
        return list_requests(&args, since_ms, config).await;
    }
    let (by, title) = match args.by {
        By::Key => (GroupBy::Key, "KEY"),
        By::Model => (GroupBy::Model, "MODEL"),
        By::Day => (GroupBy::Day, "DAY"),
        By::User => (GroupBy::User, "END USER"),
    };
    let store = args.database.open(config).await?;
    let rows = store.usage(by, since_ms).await;
    store.close().await;
    let rows = rows?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(ExitCode::SUCCESS);
    }
    if rows.is_empty() {
        match &args.since {
            Some(since) => println!("no requests recorded since {since}"),
            None => println!("no requests recorded yet (`freehold serve` records them)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let header = [title, "REQUESTS", "ERRORS", "INPUT", "OUTPUT", "COST"].map(str::to_owned);
    let mut table: Vec<[String; 6]> = rows
        .iter()
        .map(|row| {
            [
                row.group.clone(),
                row.requests.to_string(),
                row.errors.to_string(),
                row.input_tokens.to_string(),
                row.output_tokens.to_string(),
                format!("${:.4}", row.cost_usd),
            ]
        })
        .collect();
    if rows.len() > 1 {
        let total = |f: fn(&freehold_gateway::store::UsageRow) -> u64| {
            rows.iter().map(f).sum::<u64>().to_string()
        };
        table.push([
            "total".to_owned(),
            total(|r| r.requests),
            total(|r| r.errors),
            total(|r| r.input_tokens),
            total(|r| r.output_tokens),
            format!("${:.4}", rows.iter().map(|r| r.cost_usd).sum::<f64>()),
        ]);
    }
    print_table(&header, &table, &[1, 2, 3, 4, 5]);
    Ok(ExitCode::SUCCESS)
}

/// How many lines `--request-id` lists at most: a client may have sent the
/// same `x-request-id` with several requests (its retries, say).
const LINES_PER_REQUEST_ID: u32 = 100;

/// `freehold usage --requests N` (the latest lines of the ledger) and
/// `--request-id ID` (one request's).
async fn list_requests(
    args: &UsageArgs,
    since_ms: Option<i64>,
    config: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let store = args.database.open(config).await?;
    let lines = match (&args.request_id, args.requests) {
        (Some(id), _) => {
            store
                .requests_with_id(id.trim(), since_ms, LINES_PER_REQUEST_ID)
                .await
        }
        (None, limit) => store.requests(since_ms, limit.unwrap_or(0)).await,
    };
    store.close().await;
    let lines = lines?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&lines)?);
        return Ok(ExitCode::SUCCESS);
    }
    if lines.is_empty() {
        match &args.request_id {
            Some(id) => println!(
                "no request {id} in the ledger{} (a request refused before its key was accepted, \
                 or sent to no endpoint, is not recorded; lines written before freehold kept \
                 request ids have none)",
                args.since
                    .as_ref()
                    .map(|since| format!(" since {since}"))
                    .unwrap_or_default()
            ),
            None => println!("no requests recorded yet (`freehold serve` records them)"),
        }
        return Ok(ExitCode::SUCCESS);
    }
    let header = [
        "TIME (UTC)",
        "KEY",
        "END USER",
        "MODEL",
        "ANSWERED BY",
        "STATUS",
        "IN",
        "OUT",
        "COST",
        "MS",
        "PRIVACY",
        "REQUEST ID",
    ]
    .map(str::to_owned);
    let table: Vec<[String; 12]> = lines
        .iter()
        .map(|line| {
            let r = &line.record;
            let key = match (&line.key_name, &r.key_id) {
                (Some(name), _) => name.clone(),
                (None, Some(id)) => id.clone(),
                (None, None) => "(no key)".to_owned(),
            };
            let answered = if r.provider.is_empty() {
                "-".to_owned()
            } else {
                format!("{}:{}", r.provider, r.provider_model)
            };
            let status = match &r.error {
                Some(error) => format!("{} {error}", r.status),
                None => r.status.to_string(),
            };
            [
                timestamp(r.at_ms),
                key,
                r.end_user
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), shortened_end_user),
                r.model.clone(),
                answered,
                status,
                r.input_tokens.to_string(),
                r.output_tokens.to_string(),
                r.cost_usd
                    .map_or("-".to_owned(), |usd| format!("${usd:.4}")),
                r.latency_ms.to_string(),
                r.privacy.clone().unwrap_or_default(),
                r.request_id.clone().unwrap_or_else(|| "-".to_owned()),
            ]
        })
        .collect();
    print_table(&header, &table, &[6, 7, 8, 9]);
    Ok(ExitCode::SUCCESS)
}

/// The most characters of an end user's id the `--requests` table shows.
const SHOWN_END_USER: usize = 32;

/// An end user's id as the `--requests` table shows it: whole when short,
/// else its start and its end around an ellipsis (Claude Code's ids, some
/// 120 characters, differ in their session at the end). `--json` and
/// `--by user` give it whole.
fn shortened_end_user(id: &str) -> String {
    let count = id.chars().count();
    if count <= SHOWN_END_USER {
        return id.to_owned();
    }
    let head: String = id.chars().take(SHOWN_END_USER / 2).collect();
    let tail: String = id.chars().skip(count - (SHOWN_END_USER / 2 - 1)).collect();
    format!("{head}…{tail}")
}

/// `YYYY-MM-DD HH:MM:SS` (UTC) of Unix milliseconds.
fn timestamp(at_ms: i64) -> String {
    freehold_protocol::time::utc_rfc3339(at_ms.div_euclid(1000))
        .replacen('T', " ", 1)
        .trim_end_matches('Z')
        .to_owned()
}

/// `--since` in Unix milliseconds.
fn parse_since(when: &str, now: i64) -> anyhow::Result<i64> {
    if let Some(seconds) = parse_duration(when) {
        Ok(now.saturating_sub(seconds).saturating_mul(1000))
    } else if let Some(day) = parse_date(when) {
        Ok(day * 86_400_000)
    } else {
        bail!(
            "invalid --since `{when}`: give a duration back from now (7d, 24h) or a date (2026-01-31)"
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since() {
        assert_eq!(parse_since("1d", 86_400 * 3).unwrap(), 86_400_000 * 2);
        assert_eq!(parse_since("1970-01-02", 0).unwrap(), 86_400_000);
        assert!(parse_since("yesterday", 0).is_err());
    }

    #[test]
    fn long_end_users_are_shortened_in_the_middle() {
        assert_eq!(shortened_end_user("user-7"), "user-7");
        let claude_code = format!(
            "user_{}_account__session_{}",
            "a1".repeat(32),
            "0f".repeat(16)
        );
        let shown = shortened_end_user(&claude_code);
        assert_eq!(shown.chars().count(), SHOWN_END_USER);
        assert!(shown.starts_with("user_a1a1a1"), "{shown}");
        assert!(shown.ends_with("0f0f0f0f"), "{shown}");
        assert!(shown.contains('…'), "{shown}");
        let exact = "x".repeat(SHOWN_END_USER);
        assert_eq!(shortened_end_user(&exact), exact);
    }

    #[test]
    fn timestamps() {
        assert_eq!(timestamp(0), "1970-01-01 00:00:00");
        assert_eq!(timestamp(951_827_696_789), "2000-02-29 12:34:56");
    }
}
