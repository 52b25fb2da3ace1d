//! A parser for the LogQL metric queries SOTP answers over flows. Hand-written: no maintained
//! Rust LogQL parser exists (Loki's grammar lives in Go), and the subset is small —
//!
//! ```text
//! query    := agg | range
//! agg      := ("sum" | "topk") [grouping] "(" [number ","] query ")" [grouping]
//! grouping := "by" "(" label {"," label} ")"
//! range    := ("rate" | "count_over_time" | "sum_over_time") "(" selector "[" duration "]" ")"
//! selector := [name] ["{" matcher {"," matcher} "}"] {"|" label "=" string}
//! matcher  := label ("=" | "!=" | "=~" | "!~") string
//! ```
//!
//! — so a parse error can name exactly what is not supported, which a general grammar
//! would only call a syntax error.

use super::LogqlError;
use std::time::Duration;

#[derive(Clone, Debug, PartialEq)]
pub enum Expr {
    /// `sum [by (labels)] (inner)`; `topk(k, inner)`.
    Aggregate {
        op: String,
        by: Option<Vec<String>>,
        k: Option<f64>,
        inner: Box<Expr>,
    },
    Range {
        function: String,
        selector: Selector,
        range: Duration,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct Selector {
    /// `flow_bytes`, `flow_packets`, `flows`, or none (`{...}`: flow records, as log lines).
    pub name: Option<String>,
    /// (label, op, value).
    pub matchers: Vec<(String, String, String)>,
}

struct Parser<'a> {
    text: &'a str,
    pos: usize,
}

pub fn parse(text: &str) -> Result<Expr, LogqlError> {
    let mut p = Parser { text, pos: 0 };
    let expr = p.query()?;
    p.skip_space();
    if p.pos < p.text.len() {
        return Err(p.error("unexpected text"));
    }
    Ok(expr)
}

impl Parser<'_> {
    fn rest(&self) -> &str {
        &self.text[self.pos..]
    }

    fn error(&self, what: &str) -> LogqlError {
        let near: String = self.rest().chars().take(24).collect();
        LogqlError::Invalid(format!(
            "parse error at {}: {what} near `{near}`",
            self.pos + 1
        ))
    }

    fn skip_space(&mut self) {
        let trimmed = self.rest().trim_start();
        self.pos = self.text.len() - trimmed.len();
    }

    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        if self.rest().starts_with(token) {
            self.pos += token.len();
            true
        } else {
            false
        }
    }

    fn expect(&mut self, token: &str) -> Result<(), LogqlError> {
        if self.eat(token) {
            Ok(())
        } else {
            Err(self.error(&format!("expected `{token}`")))
        }
    }

    fn ident(&mut self) -> Result<String, LogqlError> {
        self.skip_space();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(self.rest().len());
        if len == 0 {
            return Err(self.error("expected a name"));
        }
        let id = self.rest()[..len].to_string();
        self.pos += len;
        Ok(id)
    }

    fn string(&mut self) -> Result<String, LogqlError> {
        self.skip_space();
        let quote = self.rest().chars().next();
        if !matches!(quote, Some('"') | Some('`')) {
            return Err(self.error("expected a quoted string"));
        }
        let quote = quote.unwrap();
        self.pos += 1;
        let mut out = String::new();
        let mut chars = self.rest().char_indices();
        while let Some((i, c)) = chars.next() {
            match c {
                c if c == quote => {
                    self.pos += i + 1;
                    return Ok(out);
                }
                '\\' if quote == '"' => match chars.next() {
                    Some((_, 'n')) => out.push('\n'),
                    Some((_, e)) => out.push(e),
                    None => break,
                },
                c => out.push(c),
            }
        }
        Err(self.error("unterminated string"))
    }

    fn number(&mut self) -> Result<f64, LogqlError> {
        self.skip_space();
        let len = self
            .rest()
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(self.rest().len());
        let n = self.rest()[..len]
            .parse()
            .map_err(|_| self.error("expected a number"))?;
        self.pos += len;
        Ok(n)
    }

    fn grouping(&mut self) -> Result<Option<Vec<String>>, LogqlError> {
        let save = self.pos;
        let Ok(word) = self.ident() else {
            self.pos = save;
            return Ok(None);
        };
        match word.as_str() {
            "by" => {}
            "without" => {
                return Err(LogqlError::Unsupported(
                    "`without` is not supported over flows: name the labels with `by`".into(),
                ));
            }
            _ => {
                self.pos = save;
                return Ok(None);
            }
        }
        self.expect("(")?;
        let mut labels = Vec::new();
        if !self.eat(")") {
            loop {
                labels.push(self.ident()?);
                if self.eat(")") {
                    break;
                }
                self.expect(",")?;
            }
        }
        Ok(Some(labels))
    }

    fn query(&mut self) -> Result<Expr, LogqlError> {
        self.skip_space();
        if self.rest().starts_with('{') {
            return Err(LogqlError::Unsupported(
                "log queries are not supported over flows: ask for a metric, e.g. sum by (src_ip) (rate(flow_bytes[5m]))".into(),
            ));
        }
        let start = self.pos;
        let word = self.ident()?;
        match word.as_str() {
            "sum" | "topk" => {
                let mut by = self.grouping()?;
                self.expect("(")?;
                let k = if word == "topk" {
                    let k = self.number()?;
                    self.expect(",")?;
                    Some(k)
                } else {
                    None
                };
                let inner = self.query()?;
                self.expect(")")?;
                if by.is_none() {
                    by = self.grouping()?;
                }
                Ok(Expr::Aggregate {
                    op: word,
                    by,
                    k,
                    inner: Box::new(inner),
                })
            }
            "rate" | "count_over_time" | "sum_over_time" => {
                self.expect("(")?;
                let selector = self.selector()?;
                self.expect("[")?;
                self.skip_space();
                let end = self
                    .rest()
                    .find(']')
                    .ok_or_else(|| self.error("expected `]`"))?;
                let text = self.rest()[..end].trim().to_string();
                let range = humantime::parse_duration(&text)
                    .map_err(|_| self.error(&format!("`{text}` is not a duration")))?;
                self.pos += end + 1;
                self.expect(")")?;
                Ok(Expr::Range {
                    function: word,
                    selector,
                    range,
                })
            }
            "avg" | "min" | "max" | "count" | "stddev" | "stdvar" | "bottomk" | "sort"
            | "sort_desc" => {
                self.pos = start;
                Err(LogqlError::Unsupported(format!(
                    "the aggregation `{word}` is not supported over flows (supported: sum, topk): a flow has no finer stream to aggregate"
                )))
            }
            other => {
                self.pos = start;
                Err(LogqlError::Unsupported(format!(
                    "`{other}` is not supported over flows (supported: sum, topk, rate, count_over_time, sum_over_time)"
                )))
            }
        }
    }

    fn selector(&mut self) -> Result<Selector, LogqlError> {
        self.skip_space();
        let name = if self.rest().starts_with('{') {
            None
        } else {
            Some(self.ident()?)
        };
        let mut matchers = Vec::new();
        if self.eat("{") && !self.eat("}") {
            loop {
                let label = self.ident()?;
                self.skip_space();
                let op = ["=~", "!~", "!=", "="]
                    .into_iter()
                    .find(|op| self.rest().starts_with(op))
                    .ok_or_else(|| self.error("expected =, !=, =~ or !~"))?;
                self.pos += op.len();
                let value = self.string()?;
                matchers.push((label, op.to_string(), value));
                if self.eat("}") {
                    break;
                }
                self.expect(",")?;
            }
        }
        // Label filter stages: `| label = "value"`.
        while self.eat("|") {
            let label = self.ident()?;
            self.skip_space();
            let op = ["!=", "=~", "!~", "=="]
                .into_iter()
                .find(|op| self.rest().starts_with(op))
                .map(str::to_string)
                .or_else(|| self.rest().starts_with('=').then(|| "=".to_string()))
                .ok_or_else(|| {
                    self.error("expected a label filter such as | src_ip = \"10.0.0.1\"")
                })?;
            self.pos += op.len();
            let value = self.string()?;
            let op = if op == "==" { "=".to_string() } else { op };
            matchers.push((label, op, value));
        }
        Ok(Selector { name, matchers })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_seeds_query_parses_as_written() {
        let e = parse("sum by (src_ip, app_protocol) (rate(flow_bytes[5m]))").unwrap();
        let Expr::Aggregate { op, by, inner, .. } = e else {
            panic!()
        };
        assert_eq!(op, "sum");
        assert_eq!(by, Some(vec!["src_ip".into(), "app_protocol".into()]));
        assert_eq!(
            *inner,
            Expr::Range {
                function: "rate".into(),
                selector: Selector {
                    name: Some("flow_bytes".into()),
                    matchers: vec![]
                },
                range: Duration::from_secs(300),
            }
        );
        let e = parse(r#"topk(5, sum(count_over_time({exporter="10.0.0.1"} | app_protocol="https" [1m])) by (dst_ip))"#).unwrap();
        let Expr::Aggregate { k, inner, .. } = e else {
            panic!()
        };
        assert_eq!(k, Some(5.0));
        let Expr::Aggregate { by, inner, .. } = *inner else {
            panic!()
        };
        assert_eq!(by, Some(vec!["dst_ip".into()]));
        let Expr::Range { selector, .. } = *inner else {
            panic!()
        };
        assert_eq!(selector.matchers.len(), 2);
    }

    #[test]
    fn what_is_not_supported_is_named() {
        let e = |q: &str| parse(q).unwrap_err().to_string();
        assert!(e("avg by (src_ip) (rate(flow_bytes[5m]))").contains("`avg`"));
        assert!(e(r#"{exporter="x"} |= "tcp""#).contains("log queries"));
        assert!(e("bytes_over_time(flow_bytes[5m])").contains("bytes_over_time"));
        assert!(e("sum without (a) (rate(flow_bytes[5m]))").contains("without"));
        assert!(e("sum(rate(flow_bytes[5q]))").contains("duration"));
        assert!(e("sum(rate(flow_bytes[5m])) extra").contains("unexpected"));
    }
}
