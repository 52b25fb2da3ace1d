//! The evaluator: every expression is evaluated once for all the query's instants, each
//! node producing a scalar per instant or a set of series with an optional value per
//! instant — so a range query reads each selector's points once, not once per step.

use super::functions;
use super::{LOOKBACK_MS, MAX_SERIES, PromError};
use crate::telemetry::{MatchOp, Matcher};
use promql_parser::label::MatchOp as PMatchOp;
use promql_parser::parser::token::{self, TokenType};
use promql_parser::parser::{
    AggregateExpr, BinaryExpr, Call, Expr, LabelModifier, MatrixSelector, Offset,
    VectorMatchCardinality, VectorSelector,
};
use std::collections::{BTreeMap, HashMap};

pub type Labels = BTreeMap<String, String>;

/// One series' raw points, as a source hands them over.
pub struct RawSeries {
    pub labels: Labels,
    pub points: Vec<(i64, f64)>,
}

/// Where points come from (the telemetry store; a map in tests).
pub trait Source {
    /// Metric names of the tenant.
    fn metric_names(&self) -> Vec<String>;
    /// Raw points of `metric`'s series matching `matchers` in `[start_ms, end_ms)`, at most
    /// `max_points` in all (an error beyond).
    fn select(
        &self,
        metric: &str,
        matchers: &[Matcher],
        start_ms: i64,
        end_ms: i64,
        max_points: usize,
    ) -> Result<Vec<RawSeries>, PromError>;
}

/// What a query may read.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Raw points read over the whole query.
    pub max_points: usize,
}

/// A series with a value (or none) at each instant.
#[derive(Clone, Debug)]
pub struct Sample {
    pub labels: Labels,
    pub values: Vec<Option<f64>>,
}

/// An expression's value over the query's instants.
#[derive(Clone, Debug)]
pub enum Value {
    Scalar(Vec<f64>),
    Vector(Vec<Sample>),
}

struct Ctx<'a> {
    source: &'a dyn Source,
    steps: &'a [i64],
    points_left: usize,
}

/// Evaluate `expr` at each of `steps` (ms).
pub fn evaluate(
    expr: &Expr,
    steps: &[i64],
    source: &dyn Source,
    limits: Limits,
) -> Result<Value, PromError> {
    let mut ctx = Ctx {
        source,
        steps,
        points_left: limits.max_points,
    };
    let mut value = ctx.eval(expr)?;
    if let Value::Vector(series) = &mut value {
        series.retain(|s| s.values.iter().any(Option::is_some));
    }
    Ok(value)
}

fn unsupported(what: impl Into<String>) -> PromError {
    PromError::Unsupported(what.into())
}

impl Ctx<'_> {
    fn eval(&mut self, expr: &Expr) -> Result<Value, PromError> {
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(vec![n.val; self.steps.len()])),
            Expr::Paren(p) => self.eval(&p.expr),
            Expr::Unary(u) => match self.eval(&u.expr)? {
                Value::Scalar(v) => Ok(Value::Scalar(v.into_iter().map(|x| -x).collect())),
                Value::Vector(mut series) => {
                    for s in &mut series {
                        s.labels.remove("__name__");
                        for v in s.values.iter_mut().flatten() {
                            *v = -*v;
                        }
                    }
                    Ok(Value::Vector(series))
                }
            },
            Expr::VectorSelector(vs) => self.instant_selector(vs),
            Expr::MatrixSelector(_) => Err(PromError::Invalid(
                "a range vector (`x[5m]`) can only be a function's argument, e.g. rate(x[5m])"
                    .into(),
            )),
            Expr::Call(call) => self.call(call),
            Expr::Aggregate(agg) => self.aggregate(agg),
            Expr::Binary(bin) => self.binary(bin),
            Expr::StringLiteral(_) => Err(unsupported("string literals are not supported")),
            Expr::Subquery(_) => Err(unsupported("subqueries (`expr[5m:1m]`) are not supported")),
            Expr::Extension(_) => Err(unsupported("this expression is not supported")),
        }
    }

    /// The raw series of a selector over `[first step − back, last step]`, shifted by its
    /// offset.
    fn select(
        &mut self,
        vs: &VectorSelector,
        back_ms: i64,
    ) -> Result<(Vec<RawSeries>, i64), PromError> {
        if vs.at.is_some() {
            return Err(unsupported("the @ modifier is not supported"));
        }
        if !vs.matchers.or_matchers.is_empty() {
            return Err(unsupported("`or` between label matchers is not supported"));
        }
        let offset = match &vs.offset {
            None => 0,
            Some(Offset::Pos(d)) => d.as_millis() as i64,
            Some(Offset::Neg(d)) => -(d.as_millis() as i64),
        };
        let mut name_matchers = Vec::new();
        let mut matchers = Vec::new();
        for m in &vs.matchers.matchers {
            let converted = convert(m)?;
            if m.name == "__name__" {
                name_matchers.push(converted);
            } else {
                matchers.push(converted);
            }
        }
        let names: Vec<String> = match &vs.name {
            Some(n) => vec![n.clone()],
            None => {
                let mut names = self.source.metric_names();
                names.retain(|n| {
                    let mut l = Labels::new();
                    l.insert("__name__".into(), n.clone());
                    name_matchers.iter().all(|m| m.matches(&l))
                });
                names
            }
        };
        let first = self.steps.first().copied().unwrap_or(0);
        let last = self.steps.last().copied().unwrap_or(0);
        let (start, end) = (first - offset - back_ms, last - offset + 1);
        let mut out = Vec::new();
        for name in names {
            let mut series = self
                .source
                .select(&name, &matchers, start, end, self.points_left)?;
            for s in &mut series {
                self.points_left = self.points_left.checked_sub(s.points.len()).ok_or_else(|| {
                    PromError::TooLarge("the query reads more points than the limit: narrow the range or the selector".into())
                })?;
                s.labels.insert("__name__".into(), name.clone());
            }
            out.extend(series);
            if out.len() > MAX_SERIES {
                return Err(PromError::TooLarge(format!(
                    "the selector `{vs}` matches more than {MAX_SERIES} series: add label matchers"
                )));
            }
        }
        Ok((out, offset))
    }

    /// Each series' newest sample within the lookback window at every instant.
    fn instant_selector(&mut self, vs: &VectorSelector) -> Result<Value, PromError> {
        let (series, offset) = self.select(vs, LOOKBACK_MS)?;
        let steps = self.steps;
        let out = series
            .into_iter()
            .map(|s| {
                let mut i = 0;
                let values = steps
                    .iter()
                    .map(|&t| {
                        let t = t - offset;
                        while i < s.points.len() && s.points[i].0 <= t {
                            i += 1;
                        }
                        (i > 0 && s.points[i - 1].0 > t - LOOKBACK_MS).then(|| s.points[i - 1].1)
                    })
                    .collect();
                Sample {
                    labels: s.labels,
                    values,
                }
            })
            .collect();
        Ok(Value::Vector(out))
    }

    /// A range function's argument: its series over the window before the first instant,
    /// the range and the offset.
    fn range_argument(&mut self, expr: &Expr) -> Result<(Vec<RawSeries>, i64, i64), PromError> {
        let ms: &MatrixSelector = match expr {
            Expr::MatrixSelector(ms) => ms,
            Expr::Subquery(_) => {
                return Err(unsupported("subqueries (`expr[5m:1m]`) are not supported"));
            }
            _ => {
                return Err(PromError::Invalid(
                    "expected a range vector such as x[5m]".into(),
                ));
            }
        };
        let range = ms.range.as_millis() as i64;
        let (series, offset) = self.select(&ms.vs, range)?;
        Ok((series, range, offset))
    }

    fn call(&mut self, call: &Call) -> Result<Value, PromError> {
        let name = call.func.name;
        let args = &call.args.args;
        match name {
            "rate" | "irate" | "increase" | "avg_over_time" | "min_over_time" | "max_over_time"
            | "sum_over_time" | "count_over_time" | "last_over_time" => {
                let (series, range, offset) = self.range_argument(&args[0])?;
                let steps = self.steps;
                let out = series
                    .into_iter()
                    .map(|mut s| {
                        let values = steps
                            .iter()
                            .map(|&t| {
                                let end = t - offset;
                                let window = window(&s.points, end - range, end);
                                functions::over_window(name, window, end - range, end)
                            })
                            .collect();
                        if name != "last_over_time" {
                            s.labels.remove("__name__");
                        }
                        Sample {
                            labels: s.labels,
                            values,
                        }
                    })
                    .collect();
                Ok(Value::Vector(out))
            }
            "histogram_quantile" => {
                let phi = self.scalar_argument(&args[0], name)?;
                let Value::Vector(series) = self.eval(&args[1])? else {
                    return Err(PromError::Invalid(
                        "histogram_quantile needs a vector of buckets".into(),
                    ));
                };
                Ok(Value::Vector(functions::histogram_quantile(&phi, series)))
            }
            "abs" | "clamp_min" | "clamp_max" => {
                let bound = match name {
                    "abs" => None,
                    _ => Some(self.scalar_argument(&args[1], name)?),
                };
                let Value::Vector(mut series) = self.eval(&args[0])? else {
                    return Err(PromError::Invalid(format!("{name} needs a vector")));
                };
                for s in &mut series {
                    s.labels.remove("__name__");
                    for (i, v) in s.values.iter_mut().enumerate() {
                        if let Some(x) = v {
                            *x = match (name, &bound) {
                                ("clamp_min", Some(b)) => x.max(b[i]),
                                ("clamp_max", Some(b)) => x.min(b[i]),
                                _ => x.abs(),
                            };
                        }
                    }
                }
                Ok(Value::Vector(series))
            }
            other => Err(unsupported(format!(
                "the function `{other}` is not supported (supported: rate, irate, increase, avg/min/max/sum/count/last_over_time, histogram_quantile, abs, clamp_min, clamp_max)"
            ))),
        }
    }

    fn scalar_argument(&mut self, expr: &Expr, function: &str) -> Result<Vec<f64>, PromError> {
        match self.eval(expr)? {
            Value::Scalar(v) => Ok(v),
            Value::Vector(_) => Err(PromError::Invalid(format!(
                "{function} needs a number here"
            ))),
        }
    }

    fn aggregate(&mut self, agg: &AggregateExpr) -> Result<Value, PromError> {
        let op = agg.op.to_string();
        let Value::Vector(series) = self.eval(&agg.expr)? else {
            return Err(PromError::Invalid(format!(
                "{op} needs a vector, not a number"
            )));
        };
        let n = self.steps.len();
        match op.as_str() {
            "topk" | "bottomk" => {
                let k = match &agg.param {
                    Some(p) => self.scalar_argument(p, &op)?,
                    None => return Err(PromError::Invalid(format!("{op} needs k"))),
                };
                Ok(Value::Vector(functions::top_k(
                    series,
                    &k,
                    op == "topk",
                    |l| group_key(l, agg.modifier.as_ref()),
                )))
            }
            "sum" | "avg" | "min" | "max" | "count" => {
                let mut groups: BTreeMap<Labels, Vec<Vec<f64>>> = BTreeMap::new();
                for s in series {
                    let key = group_key(&s.labels, agg.modifier.as_ref());
                    let slot = groups.entry(key).or_insert_with(|| vec![Vec::new(); n]);
                    for (i, v) in s.values.iter().enumerate() {
                        if let Some(v) = v {
                            slot[i].push(*v);
                        }
                    }
                }
                let out = groups
                    .into_iter()
                    .map(|(labels, per_step)| Sample {
                        labels,
                        values: per_step
                            .into_iter()
                            .map(|vals| functions::aggregate(&op, &vals))
                            .collect(),
                    })
                    .collect();
                Ok(Value::Vector(out))
            }
            other => Err(unsupported(format!(
                "the aggregation `{other}` is not supported (supported: sum, avg, min, max, count, topk, bottomk)"
            ))),
        }
    }

    fn binary(&mut self, bin: &BinaryExpr) -> Result<Value, PromError> {
        let op = bin.op;
        let lhs = self.eval(&bin.lhs)?;
        let rhs = self.eval(&bin.rhs)?;
        let return_bool = bin.modifier.as_ref().is_some_and(|m| m.return_bool);
        if op.is_set_operator() {
            let (Value::Vector(l), Value::Vector(r)) = (lhs, rhs) else {
                return Err(PromError::Invalid(format!(
                    "`{op}` needs vectors on both sides"
                )));
            };
            return Ok(Value::Vector(set_operation(op, l, r, bin)));
        }
        match (lhs, rhs) {
            (Value::Scalar(a), Value::Scalar(b)) => Ok(Value::Scalar(
                a.iter()
                    .zip(&b)
                    .map(|(x, y)| {
                        let v = arithmetic(op, *x, *y)?;
                        Ok(if op.is_comparison_operator() {
                            f64::from(u8::from(v.is_some()))
                        } else {
                            v.unwrap_or(f64::NAN)
                        })
                    })
                    .collect::<Result<_, PromError>>()?,
            )),
            (Value::Vector(v), Value::Scalar(s)) => vector_scalar(op, v, &s, false, return_bool),
            (Value::Scalar(s), Value::Vector(v)) => vector_scalar(op, v, &s, true, return_bool),
            (Value::Vector(l), Value::Vector(r)) => vector_vector(op, l, r, bin, return_bool),
        }
    }
}

/// The points of `points` (sorted) in `[start, end]`: a range selector takes both ends, as
/// Prometheus 2.x does (the version the tests and the benchmark compare with; Prometheus 3
/// leaves the start out).
fn window(points: &[(i64, f64)], start: i64, end: i64) -> &[(i64, f64)] {
    let from = points.partition_point(|(t, _)| *t < start);
    let to = points.partition_point(|(t, _)| *t <= end);
    &points[from..to.max(from)]
}

pub(super) fn convert(m: &promql_parser::label::Matcher) -> Result<Matcher, PromError> {
    let anchored = |v: &str| {
        regex::Regex::new(&format!("^(?:{v})$"))
            .map_err(|e| PromError::Invalid(format!("bad regex `{v}`: {e}")))
    };
    let op = match &m.op {
        PMatchOp::Equal => MatchOp::Eq,
        PMatchOp::NotEqual => MatchOp::Ne,
        PMatchOp::Re(_) => MatchOp::Re(anchored(&m.value)?),
        PMatchOp::NotRe(_) => MatchOp::NotRe(anchored(&m.value)?),
    };
    Ok(Matcher {
        name: m.name.clone(),
        op,
        value: m.value.clone(),
    })
}

/// The labels a series keeps in an aggregation's group (never the metric name).
fn group_key(labels: &Labels, modifier: Option<&LabelModifier>) -> Labels {
    match modifier {
        None => Labels::new(),
        Some(m) => kept_labels(labels, m),
    }
}

/// `by`/`on (...)`: those labels; `without`/`ignoring (...)`: all others but the name.
fn kept_labels(labels: &Labels, modifier: &LabelModifier) -> Labels {
    labels
        .iter()
        .filter(|(k, _)| match modifier {
            LabelModifier::Include(keep) => keep.labels.iter().any(|l| l == *k),
            LabelModifier::Exclude(drop) => {
                *k != "__name__" && !drop.labels.iter().any(|l| l == *k)
            }
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// `x op y`; for comparisons `Some(x)` if true, `None` if not.
fn arithmetic(op: TokenType, x: f64, y: f64) -> Result<Option<f64>, PromError> {
    use token::*;
    Ok(match op.id() {
        T_ADD => Some(x + y),
        T_SUB => Some(x - y),
        T_MUL => Some(x * y),
        T_DIV => Some(x / y),
        T_MOD => Some(x % y),
        T_POW => Some(x.powf(y)),
        T_EQLC => (x == y).then_some(x),
        T_NEQ => (x != y).then_some(x),
        T_GTR => (x > y).then_some(x),
        T_LSS => (x < y).then_some(x),
        T_GTE => (x >= y).then_some(x),
        T_LTE => (x <= y).then_some(x),
        _ => return Err(unsupported(format!("the operator `{op}` is not supported"))),
    })
}

/// What `a op b` leaves of a vector element whose own value is `own`: the arithmetic result;
/// for a comparison, `own` if true and nothing if false (a filter), or 1/0 with `bool`.
fn outcome(
    op: TokenType,
    a: f64,
    b: f64,
    own: f64,
    return_bool: bool,
) -> Result<Option<f64>, PromError> {
    let result = arithmetic(op, a, b)?;
    Ok(match (op.is_comparison_operator(), return_bool) {
        (true, true) => Some(f64::from(u8::from(result.is_some()))),
        (true, false) => result.map(|_| own),
        _ => result,
    })
}

fn vector_scalar(
    op: TokenType,
    mut series: Vec<Sample>,
    scalar: &[f64],
    scalar_first: bool,
    return_bool: bool,
) -> Result<Value, PromError> {
    let comparison = op.is_comparison_operator();
    for s in &mut series {
        if !comparison || return_bool {
            s.labels.remove("__name__");
        }
        for (i, v) in s.values.iter_mut().enumerate() {
            let Some(x) = *v else { continue };
            let (a, b) = if scalar_first {
                (scalar[i], x)
            } else {
                (x, scalar[i])
            };
            *v = outcome(op, a, b, x, return_bool)?;
        }
    }
    Ok(Value::Vector(series))
}

/// The labels two series are matched on: `on`/`ignoring`, else all but the name.
fn match_key(labels: &Labels, bin: &BinaryExpr) -> Labels {
    match bin.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
        Some(m) => kept_labels(labels, m),
        None => labels
            .iter()
            .filter(|(k, _)| *k != "__name__")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    }
}

fn vector_vector(
    op: TokenType,
    left: Vec<Sample>,
    right: Vec<Sample>,
    bin: &BinaryExpr,
    return_bool: bool,
) -> Result<Value, PromError> {
    if let Some(m) = &bin.modifier
        && !matches!(m.card, VectorMatchCardinality::OneToOne)
    {
        return Err(unsupported(
            "group_left / group_right (many-to-one matching) is not supported",
        ));
    }
    let mut by_key: HashMap<Labels, &Sample> = HashMap::new();
    for r in &right {
        if by_key.insert(match_key(&r.labels, bin), r).is_some() {
            return Err(PromError::Invalid(
                "many-to-many matching not allowed: matching labels must be unique on one side"
                    .into(),
            ));
        }
    }
    let comparison = op.is_comparison_operator();
    let mut out = Vec::new();
    let mut seen: HashMap<Labels, ()> = HashMap::new();
    for l in left {
        let key = match_key(&l.labels, bin);
        let Some(r) = by_key.get(&key) else { continue };
        if seen.insert(key.clone(), ()).is_some() {
            return Err(PromError::Invalid(
                "many-to-many matching not allowed: matching labels must be unique on one side"
                    .into(),
            ));
        }
        let mut values = Vec::with_capacity(l.values.len());
        for (a, b) in l.values.iter().zip(&r.values) {
            values.push(match (a, b) {
                (Some(x), Some(y)) => outcome(op, *x, *y, *x, return_bool)?,
                _ => None,
            });
        }
        let mut labels = if comparison && !return_bool {
            l.labels
        } else {
            key_labels(l.labels, bin)
        };
        if !comparison || return_bool {
            labels.remove("__name__");
        }
        out.push(Sample { labels, values });
    }
    Ok(Value::Vector(out))
}

/// A one-to-one result's labels: with `on(...)`, only those; otherwise the left side's.
fn key_labels(labels: Labels, bin: &BinaryExpr) -> Labels {
    match bin.modifier.as_ref().and_then(|m| m.matching.as_ref()) {
        Some(LabelModifier::Include(_)) => match_key(&labels, bin),
        _ => labels,
    }
}

fn set_operation(
    op: TokenType,
    left: Vec<Sample>,
    right: Vec<Sample>,
    bin: &BinaryExpr,
) -> Vec<Sample> {
    let n = left.first().or(right.first()).map_or(0, |s| s.values.len());
    // For each instant, which match keys the right side has a value for.
    let mut right_has: HashMap<Labels, Vec<bool>> = HashMap::new();
    for r in &right {
        let slot = right_has
            .entry(match_key(&r.labels, bin))
            .or_insert_with(|| vec![false; n]);
        for (i, v) in r.values.iter().enumerate() {
            slot[i] |= v.is_some();
        }
    }
    match op.id() {
        token::T_LAND | token::T_LUNLESS => {
            let keep_if = op.id() == token::T_LAND;
            left.into_iter()
                .map(|mut l| {
                    let has = right_has.get(&match_key(&l.labels, bin));
                    for (i, v) in l.values.iter_mut().enumerate() {
                        let present = has.is_some_and(|h| h[i]);
                        if present != keep_if {
                            *v = None;
                        }
                    }
                    l
                })
                .collect()
        }
        _ => {
            // or: the left side, plus right series at instants the left has no match for.
            let mut left_has: HashMap<Labels, Vec<bool>> = HashMap::new();
            for l in &left {
                let slot = left_has
                    .entry(match_key(&l.labels, bin))
                    .or_insert_with(|| vec![false; n]);
                for (i, v) in l.values.iter().enumerate() {
                    slot[i] |= v.is_some();
                }
            }
            let mut out = left;
            for mut r in right {
                let has = left_has.get(&match_key(&r.labels, bin));
                for (i, v) in r.values.iter_mut().enumerate() {
                    if has.is_some_and(|h| h[i]) {
                        *v = None;
                    }
                }
                out.push(r);
            }
            out
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One series held in memory: (metric, labels, points).
    type Held = (
        &'static str,
        Vec<(&'static str, &'static str)>,
        Vec<(i64, f64)>,
    );

    struct Fake(Vec<Held>);

    impl Source for Fake {
        fn metric_names(&self) -> Vec<String> {
            let mut names: Vec<String> = self.0.iter().map(|s| s.0.to_string()).collect();
            names.sort();
            names.dedup();
            names
        }

        fn select(
            &self,
            metric: &str,
            matchers: &[Matcher],
            start_ms: i64,
            end_ms: i64,
            _max_points: usize,
        ) -> Result<Vec<RawSeries>, PromError> {
            Ok(self
                .0
                .iter()
                .filter(|s| s.0 == metric)
                .map(|s| RawSeries {
                    labels: s
                        .1
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect(),
                    points: s
                        .2
                        .iter()
                        .copied()
                        .filter(|(t, _)| *t >= start_ms && *t < end_ms)
                        .collect(),
                })
                .filter(|s| matchers.iter().all(|m| m.matches(&s.labels)))
                .collect())
        }
    }

    fn fake() -> Fake {
        let counter = |rate: f64| {
            (0..=20)
                .map(move |i| (i * 15_000, rate * 15.0 * i as f64))
                .collect()
        };
        Fake(vec![
            (
                "req_total",
                vec![("job", "a"), ("instance", "1")],
                counter(1.0),
            ),
            (
                "req_total",
                vec![("job", "a"), ("instance", "2")],
                counter(2.0),
            ),
            (
                "req_total",
                vec![("job", "b"), ("instance", "3")],
                counter(4.0),
            ),
            ("up", vec![("job", "a"), ("instance", "1")], vec![(0, 1.0)]),
            ("up", vec![("job", "a"), ("instance", "2")], vec![(0, 0.0)]),
        ])
    }

    fn at(query: &str, t: i64) -> Value {
        let expr = crate::promql::parse(query).unwrap();
        evaluate(
            &expr,
            &[t],
            &fake(),
            Limits {
                max_points: 1_000_000,
            },
        )
        .unwrap()
    }

    /// An instant vector as (label value of `key`, value), sorted.
    fn vector(query: &str, t: i64, key: &str) -> Vec<(String, f64)> {
        let Value::Vector(series) = at(query, t) else {
            panic!("{query}: not a vector")
        };
        let mut out: Vec<(String, f64)> = series
            .into_iter()
            .filter_map(|s| Some((s.labels.get(key).cloned().unwrap_or_default(), s.values[0]?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    #[test]
    fn selectors_look_back_five_minutes() {
        assert_eq!(vector("up", 200_000, "instance").len(), 2);
        assert!(
            vector("up", 301_000, "instance").is_empty(),
            "stale after 5 minutes"
        );
        assert_eq!(vector("up offset 1m", 350_000, "instance").len(), 2);
        assert_eq!(
            vector("{__name__=~\"u.\", job=\"a\"}", 1000, "instance").len(),
            2
        );
        // A selector without a metric name matching nothing is empty, not an error.
        assert!(vector("{job=\"nobody\"}", 1000, "instance").is_empty());
    }

    #[test]
    fn rates_aggregations_and_operators() {
        let rates = vector("rate(req_total[1m])", 300_000, "instance");
        assert_eq!(
            rates,
            vec![("1".into(), 1.0), ("2".into(), 2.0), ("3".into(), 4.0)]
        );
        assert_eq!(
            vector("sum by (job) (rate(req_total[1m]))", 300_000, "job"),
            vec![("a".into(), 3.0), ("b".into(), 4.0)]
        );
        assert_eq!(
            vector("count without (instance) (up)", 0, "job"),
            vec![("a".into(), 2.0)]
        );
        assert_eq!(
            vector("topk(1, rate(req_total[1m]))", 300_000, "instance"),
            vec![("3".into(), 4.0)]
        );
        assert_eq!(vector("up == 1", 0, "instance"), vec![("1".into(), 1.0)]);
        assert_eq!(
            vector("up == bool 1", 0, "instance"),
            vec![("1".into(), 1.0), ("2".into(), 0.0)]
        );
        assert_eq!(
            vector("rate(req_total[1m]) * on(instance) up", 300_000, "instance").len(),
            0,
            "up is stale at 300 s"
        );
        assert_eq!(
            vector(
                "req_total / on(instance, job) req_total",
                60_000,
                "instance"
            ),
            vec![("1".into(), 1.0), ("2".into(), 1.0), ("3".into(), 1.0)]
        );
        assert_eq!(
            vector("req_total and up == 1", 30_000, "instance"),
            vec![("1".into(), 30.0)]
        );
        assert_eq!(
            vector("req_total unless up", 30_000, "instance"),
            vec![("3".into(), 120.0)]
        );
        let Value::Scalar(v) = at("2 ^ 3 - 1", 0) else {
            panic!()
        };
        assert_eq!(v, vec![7.0]);
    }

    #[test]
    fn what_is_not_supported_is_named() {
        let err = |q: &str| {
            let expr = crate::promql::parse(q).unwrap();
            evaluate(
                &expr,
                &[0],
                &fake(),
                Limits {
                    max_points: 1_000_000,
                },
            )
            .unwrap_err()
            .to_string()
        };
        assert!(err("predict_linear(req_total[5m], 60)").contains("predict_linear"));
        assert!(err("rate(req_total[5m:1m])").contains("subqueries"));
        assert!(err("stddev(up)").contains("stddev"));
        assert!(err("up * on(job) group_left req_total").contains("group_left"));
        let too_many = {
            let expr = crate::promql::parse("req_total").unwrap();
            evaluate(&expr, &[300_000], &fake(), Limits { max_points: 10 })
                .unwrap_err()
                .to_string()
        };
        assert!(too_many.contains("limit"), "{too_many}");
    }
}
