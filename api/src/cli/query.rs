//! `sotp query METRIC ...`

use super::{Client, ClientArgs, s, time};
use clap::Args;

#[derive(Args)]
#[command(after_help = "Examples:\n  \
sotp query ticks --since 10m\n  \
sotp query temperature -m room=kitchen --since 1h --step 5m --agg avg\n  \
sotp query if_in_octets -m 'device=~core.*' --step 1m --agg rate --by device")]
pub struct QueryArgs {
    metric: String,
    /// Label matcher: name=value, name!=value, name=~regex, name!~regex (repeatable).
    #[arg(short = 'm', long = "match")]
    matchers: Vec<String>,
    /// How far back from now (default 1h), e.g. 15m.
    #[arg(long)]
    since: Option<String>,
    /// Start: ms since the epoch, RFC 3339, now-5m.
    #[arg(long, conflicts_with = "since")]
    start: Option<String>,
    #[arg(long)]
    end: Option<String>,
    /// Bucket width, e.g. 1m; without it raw points are returned.
    #[arg(long)]
    step: Option<String>,
    /// avg, sum, min, max, count or rate.
    #[arg(long)]
    agg: Option<String>,
    /// Group series by these labels (comma-separated; empty string = all together).
    #[arg(long)]
    by: Option<String>,
    #[command(flatten)]
    client: ClientArgs,
}

pub async fn exec(args: QueryArgs) -> anyhow::Result<()> {
    let c = Client::new(&args.client)?;
    let mut params: Vec<(&str, String)> = vec![("metric", args.metric.clone())];
    for m in &args.matchers {
        params.push(("match", m.clone()));
    }
    for (k, v) in [
        ("since", &args.since),
        ("start", &args.start),
        ("end", &args.end),
        ("step", &args.step),
        ("agg", &args.agg),
        ("by", &args.by),
    ] {
        if let Some(v) = v {
            params.push((k, v.clone()));
        }
    }
    let qs = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().map(|(k, v)| (*k, v.as_str())))
        .finish();
    let v = c.get(&format!("/query?{qs}")).await?;
    c.print(&v, |v| {
        let series = v["series"].as_array().cloned().unwrap_or_default();
        if series.is_empty() {
            println!("no samples match");
        }
        for sr in series {
            let labels: Vec<String> = sr["labels"]
                .as_object()
                .into_iter()
                .flatten()
                .map(|(k, v)| format!("{k}={}", s(v)))
                .collect();
            println!("{}{{{}}}", args.metric, labels.join(", "));
            for p in sr["points"].as_array().into_iter().flatten() {
                println!("  {}  {}", time(&p[0]), s(&p[1]));
            }
        }
    });
    Ok(())
}
