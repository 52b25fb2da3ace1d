//! The Prometheus text exposition format (0.0.4) and OpenMetrics 1.0 text, parsed into
//! samples for `scrape`.
//!
//! Written by hand: it is the hot path of every scrape (a node_exporter answer is ~1,000
//! lines, a scrape job runs hundreds of them a minute), the crates that exist either build a
//! map of families per line (prometheus-parse, with a regex per line) or a PEG tree
//! (openmetrics-parser) before we copy it again into WIT records; this reads each line once
//! and writes the sample directly. Malformed input is an error naming the line, never a
//! panic: an exposition is network input.
//!
//! What it reads: `# HELP`/`# TYPE` (types kept for the guest), comments, samples
//! `name{label="value",...} value [timestamp]` with `\\`, `\"`, `\n` escapes in label values,
//! `NaN`, `+Inf`, `-Inf`; timestamps in milliseconds (text format) or seconds
//! (OpenMetrics, which also ends with `# EOF` and may carry ` # {...}` exemplars, skipped).

/// Label name/value pairs, in the exposition's order.
pub type Labels = Vec<(String, String)>;

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub name: String,
    pub labels: Labels,
    pub value: f64,
    pub timestamp_ms: Option<i64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("line {line}: {reason}")]
pub struct ParseError {
    pub line: usize,
    pub reason: String,
}

/// Parse a whole exposition; `openmetrics` when the content type says so.
pub fn parse(text: &str, openmetrics: bool, max_samples: usize) -> Result<Vec<Sample>, ParseError> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = |reason: String| ParseError {
            line: i + 1,
            reason,
        };
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() {
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if openmetrics && comment.trim() == "EOF" {
                break;
            }
            continue;
        }
        if out.len() >= max_samples {
            return Err(at(format!("more than {max_samples} samples")));
        }
        out.push(sample(line, openmetrics).map_err(at)?);
    }
    Ok(out)
}

fn sample(line: &str, openmetrics: bool) -> Result<Sample, String> {
    let line = line.trim_start();
    let name_end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(line.len());
    let name = &line[..name_end];
    if name.is_empty() || name.as_bytes()[0].is_ascii_digit() {
        return Err(format!("`{}` does not start with a metric name", cut(line)));
    }
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(inner) = rest.strip_prefix('{') {
        let (parsed, after) = label_set(inner)?;
        labels = parsed;
        rest = after;
    }
    let mut fields = rest.split_ascii_whitespace();
    let value = fields
        .next()
        .ok_or_else(|| format!("`{name}` has no value"))?;
    let value = parse_value(value).ok_or_else(|| format!("`{value}` is not a number"))?;
    let timestamp_ms = match fields.next() {
        None | Some("#") => None,
        Some(ts) if openmetrics => Some(
            ts.parse::<f64>()
                .map(|s| (s * 1000.0).round() as i64)
                .map_err(|_| format!("`{ts}` is not a timestamp"))?,
        ),
        Some(ts) => Some(
            ts.parse::<i64>()
                .map_err(|_| format!("`{ts}` is not a timestamp in milliseconds"))?,
        ),
    };
    if let Some(extra) = fields.next()
        && !(openmetrics && extra == "#")
    {
        return Err(format!("unexpected `{}` after the value", cut(extra)));
    }
    Ok(Sample {
        name: name.to_string(),
        labels,
        value,
        timestamp_ms,
    })
}

/// `label="value",...}` → the labels and what follows the `}`.
fn label_set(mut s: &str) -> Result<(Labels, &str), String> {
    let mut labels = Vec::new();
    loop {
        s = s.trim_start();
        if let Some(after) = s.strip_prefix('}') {
            return Ok((labels, after));
        }
        let name_end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .ok_or("an unterminated label set")?;
        let name = &s[..name_end];
        if name.is_empty() {
            return Err(format!("a label name is expected at `{}`", cut(s)));
        }
        s = s[name_end..].trim_start();
        s = s
            .strip_prefix('=')
            .ok_or_else(|| format!("`=` expected after label `{name}`"))?
            .trim_start();
        s = s
            .strip_prefix('"')
            .ok_or_else(|| format!("the value of label `{name}` is not quoted"))?;
        let mut value = String::new();
        let mut chars = s.char_indices();
        let end = loop {
            match chars.next() {
                None => return Err(format!("the value of label `{name}` is not terminated")),
                Some((i, '"')) => break i,
                Some((_, '\\')) => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c @ ('\\' | '"'))) => value.push(c),
                    Some((_, c)) => {
                        value.push('\\');
                        value.push(c);
                    }
                    None => return Err(format!("the value of label `{name}` is not terminated")),
                },
                Some((_, c)) => value.push(c),
            }
        };
        labels.push((name.to_string(), value));
        s = s[end + 1..].trim_start();
        if let Some(after) = s.strip_prefix(',') {
            s = after;
        } else if !s.starts_with('}') {
            return Err(format!("`,` or `}}` expected at `{}`", cut(s)));
        }
    }
}

fn parse_value(v: &str) -> Option<f64> {
    match v {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => v.parse().ok(),
    }
}

fn cut(s: &str) -> &str {
    let end = s.char_indices().nth(40).map(|(i, _)| i).unwrap_or(s.len());
    &s[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_exporter_lines_parse() {
        let text = "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n\
# TYPE node_cpu_seconds_total counter\n\
node_cpu_seconds_total{cpu=\"0\",mode=\"idle\"} 12345.67\n\
node_memory_MemAvailable_bytes 8.123e+09\n\
node_filesystem_avail_bytes{device=\"/dev/sda1\",fstype=\"ext4\",mountpoint=\"/\"} 1.2e+10 1700000000000\n\
weird{path=\"C:\\\\dir\",msg=\"say \\\"hi\\\"\\n\",} NaN\n\
up_inf{le=\"+Inf\"} +Inf\n";
        let s = parse(text, false, 100).unwrap();
        assert_eq!(s.len(), 5);
        assert_eq!(s[0].name, "node_cpu_seconds_total");
        assert_eq!(
            s[0].labels,
            vec![("cpu".into(), "0".into()), ("mode".into(), "idle".into())]
        );
        assert_eq!(s[0].value, 12345.67);
        assert_eq!(s[1].value, 8.123e9);
        assert_eq!(s[2].timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(s[3].labels[0].1, "C:\\dir");
        assert_eq!(s[3].labels[1].1, "say \"hi\"\n");
        assert!(s[3].value.is_nan());
        assert_eq!(s[4].value, f64::INFINITY);
    }

    #[test]
    fn openmetrics_timestamps_exemplars_and_eof() {
        let text = "# TYPE c counter\nc_total{a=\"b\"} 3 1700000000.5 # {trace_id=\"x\"} 1\n# EOF\nignored 1\n";
        let s = parse(text, true, 100).unwrap();
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].timestamp_ms, Some(1_700_000_000_500));
    }

    #[test]
    fn malformed_lines_name_themselves() {
        for (text, want) in [
            ("x{a=\"b\" 1\n", "expected"),
            ("x{a=b} 1\n", "not quoted"),
            ("x 1 2 3\n", "unexpected"),
            ("x abc\n", "not a number"),
            ("{a=\"b\"} 1\n", "metric name"),
            ("x{a=\"b} 1\n", "not terminated"),
            ("x\n", "no value"),
        ] {
            let err = parse(text, false, 10).unwrap_err();
            assert_eq!(err.line, 1, "{text}");
            assert!(err.reason.contains(want), "{text}: {err}");
        }
        let err = parse("a 1\nb 2\nc 3\n", false, 2).unwrap_err();
        assert_eq!(err.line, 3);
    }
}
