//! The runtime's own metrics in the Prometheus text format, computed at scrape time from the
//! live counters (no registry to keep in sync with components coming and going).
//!
//! Written by hand: the exposition format is small and stable, and every value here already
//! lives in an atomic elsewhere; a metrics library would add a second copy of each.
//!
//! Two views: the operator's (`/metrics`, admin token or the operator listener) has every
//! series, labelled by tenant; a tenant's (`/v1/metrics`) has only the series of that tenant —
//! its components and its flows — and none of the process-wide ones, which would tell it how
//! busy the other tenants are.

use crate::runtime::Runtime;
use crate::stats::{CallKind, TrapClass};
use std::fmt::Write;
use std::sync::atomic::Ordering::Relaxed;

/// Whose metrics to render.
#[derive(Clone, Copy, Debug)]
pub enum View<'a> {
    /// Everything, for the platform operator.
    Operator,
    /// Only series that belong to this tenant.
    Tenant(&'a str),
}

impl View<'_> {
    fn shows(&self, tenant: &str) -> bool {
        match self {
            View::Operator => true,
            View::Tenant(t) => *t == tenant,
        }
    }
}

pub fn render(rt: &Runtime, view: View) -> String {
    let mut out = String::with_capacity(8192);
    let handles: Vec<_> = rt
        .component_handles()
        .into_iter()
        .filter(|h| view.shows(&h.tenant))
        .collect();
    if matches!(view, View::Operator) {
        render_process(&mut out, rt);
    }
    render_components(&mut out, &handles);
    render_aws(&mut out, view);
    if let Some(flows) = &rt.flows {
        if matches!(view, View::Operator) {
            render_flows(&mut out, flows);
        }
        render_flow_aggregates(&mut out, flows, view);
    }
    out
}

/// Process-wide series: the engine, uploads, the telemetry store.
fn render_process(out: &mut String, rt: &Runtime) {
    family(out, "sotp_up", "gauge", "1 while the process serves.");
    line(out, "sotp_up", &[], 1.0);
    family(out, "sotp_uptime_seconds", "gauge", "Seconds since start.");
    line(out, "sotp_uptime_seconds", &[], rt.uptime_seconds());
    family(
        out,
        "sotp_ready",
        "gauge",
        "1 once components are restored.",
    );
    line(out, "sotp_ready", &[], rt.is_ready() as u8 as f64);
    family(
        out,
        "sotp_engine_pooling",
        "gauge",
        "1 if the pooling allocator is in use, 0 if on-demand.",
    );
    let pooling = rt.allocation() == crate::engine::Allocation::Pooling;
    line(out, "sotp_engine_pooling", &[], pooling as u8 as f64);

    let c = &rt.counters;
    family(
        out,
        "sotp_query_refused_total",
        "counter",
        "Queries the Prometheus- (promql) and Loki-compatible (logql) APIs refused: invalid (400: syntax, an unsupported construct) or too_large (422: steps, series, points, groups over the bounds).",
    );
    for (api, reason, n) in c.query_refused.snapshot() {
        line(
            out,
            "sotp_query_refused_total",
            &[("api", api), ("reason", reason)],
            n as f64,
        );
    }
    for (name, help, value) in [
        (
            "sotp_uploads_total",
            "Component uploads accepted.",
            c.uploads.load(Relaxed),
        ),
        (
            "sotp_uploads_rejected_total",
            "Component uploads refused (4xx).",
            c.uploads_rejected.load(Relaxed),
        ),
        (
            "sotp_activations_total",
            "Successful activations (hot swaps included).",
            c.activations.load(Relaxed),
        ),
        (
            "sotp_activations_failed_total",
            "Activations refused because init failed.",
            c.activations_failed.load(Relaxed),
        ),
        (
            "sotp_auth_failures_total",
            "Requests with a missing or unknown token.",
            c.auth_failures.load(Relaxed),
        ),
        (
            "sotp_compliance_audits_total",
            "Compliance audits run.",
            rt.compliance_counters().audits.load(Relaxed),
        ),
        (
            "sotp_compliance_error_results_total",
            "Compliance rule results that were errors (unparsable config, template error, no backup).",
            rt.compliance_counters().error_results.load(Relaxed),
        ),
        (
            "sotp_compliance_rule_files_rejected_total",
            "Rule files refused at upload (YAML, regex, template, size).",
            rt.compliance_counters().rule_files_rejected.load(Relaxed),
        ),
        (
            "sotp_alert_intakes_total",
            "Alert intake requests recorded (webhook and plain JSON).",
            rt.correlation_counters().intakes.load(Relaxed),
        ),
        (
            "sotp_alert_intake_duplicates_total",
            "Intakes identical to one received within the dedupe window (redeliveries).",
            rt.correlation_counters().duplicates.load(Relaxed),
        ),
        (
            "sotp_alert_intakes_rejected_total",
            "Intake requests refused as malformed (400).",
            rt.correlation_counters().rejected.load(Relaxed),
        ),
        (
            "sotp_alerts_received_total",
            "Alerts received in intakes that were not duplicates.",
            rt.correlation_counters().alerts.load(Relaxed),
        ),
        (
            "sotp_alerts_unmapped_total",
            "Alerts whose labels name no inventory device (kept and passed through).",
            rt.correlation_counters().unmapped.load(Relaxed),
        ),
        (
            "sotp_alerts_refused_total",
            "New alerts not kept: the tenant holds max_alerts.",
            rt.correlation_counters().refused.load(Relaxed),
        ),
        (
            "sotp_correlation_incidents_opened_total",
            "Incidents correlation policies opened.",
            rt.correlation_counters().incidents_opened.load(Relaxed),
        ),
        (
            "sotp_correlation_suppressed_total",
            "Alerts folded into an incident as a child of its root.",
            rt.correlation_counters().suppressed.load(Relaxed),
        ),
        (
            "sotp_correlation_policy_failures_total",
            "Batches a correlation policy failed on (err, trap, CPU deadline); their alerts passed unfolded.",
            rt.correlation_counters().policy_failures.load(Relaxed),
        ),
        (
            "sotp_correlation_policy_alerts_total",
            "Alerts offered to correlation policies (a held alert counts each time it is offered).",
            rt.correlation_counters().policy_alerts.load(Relaxed),
        ),
        (
            "sotp_compliance_refused_total",
            "Rule files and waivers refused at a compliance budget, audits refused while one runs.",
            rt.compliance_counters().refused.load(Relaxed),
        ),
    ] {
        family(out, name, "counter", help);
        line(out, name, &[], value as f64);
    }
    trace_metrics(out, rt);
    family(
        out,
        "sotp_correlation_policy_seconds_total",
        "counter",
        "Time correlation policies spent deciding (topology reads included).",
    );
    line(
        out,
        "sotp_correlation_policy_seconds_total",
        &[],
        rt.correlation_counters().policy_nanos.load(Relaxed) as f64 / 1e9,
    );

    let s = &rt.telemetry.counters;
    family(
        out,
        "sotp_store_commits_total",
        "counter",
        "Telemetry group commits.",
    );
    line(
        out,
        "sotp_store_commits_total",
        &[],
        s.commits.load(Relaxed) as f64,
    );
    family(
        out,
        "sotp_store_rows_total",
        "counter",
        "Telemetry rows committed.",
    );
    line(
        out,
        "sotp_store_rows_total",
        &[],
        s.rows.load(Relaxed) as f64,
    );
    family(
        out,
        "sotp_store_commit_failures_total",
        "counter",
        "Failed telemetry commits.",
    );
    line(
        out,
        "sotp_store_commit_failures_total",
        &[],
        s.commit_failures.load(Relaxed) as f64,
    );
    family(
        out,
        "sotp_store_commit_seconds_total",
        "counter",
        "Time spent committing telemetry.",
    );
    line(
        out,
        "sotp_store_commit_seconds_total",
        &[],
        s.commit_micros_total.load(Relaxed) as f64 / 1e6,
    );
    family(
        out,
        "sotp_store_series",
        "gauge",
        "Distinct sample series stored.",
    );
    line(
        out,
        "sotp_store_series",
        &[],
        rt.telemetry.series_count() as f64,
    );
}

/// Per-component series of `handles`.
fn render_components(
    out: &mut String,
    handles: &[std::sync::Arc<crate::component::ComponentHandle>],
) {
    family(
        out,
        "sotp_component_active_version",
        "gauge",
        "Active version number per component (0: none).",
    );
    for h in handles {
        let v = h.active().map(|v| v.version()).unwrap_or(0);
        line(
            out,
            "sotp_component_active_version",
            &[("tenant", &h.tenant), ("component", &h.name)],
            v as f64,
        );
    }
    family(
        out,
        "sotp_component_calls_total",
        "counter",
        "Calls into components by export.",
    );
    for h in handles {
        for kind in CallKind::ALL {
            line(
                out,
                "sotp_component_calls_total",
                &[
                    ("tenant", &h.tenant),
                    ("component", &h.name),
                    ("kind", kind.as_str()),
                ],
                h.stats.calls(kind) as f64,
            );
        }
    }
    family(
        out,
        "sotp_component_traps_total",
        "counter",
        "Calls that trapped, by kind.",
    );
    for h in handles {
        for class in TrapClass::ALL {
            line(
                out,
                "sotp_component_traps_total",
                &[
                    ("tenant", &h.tenant),
                    ("component", &h.name),
                    ("kind", class.as_str()),
                ],
                h.stats.traps(class) as f64,
            );
        }
    }
    type Pick = fn(&crate::component::ComponentHandle) -> u64;
    let counters: [(&str, &str, Pick); 12] = [
        (
            "sotp_component_aws_requests_total",
            "AWS requests sent through the aws capability (each retry counted).",
            |h| h.stats.aws_requests.load(Relaxed),
        ),
        (
            "sotp_component_aws_throttled_total",
            "AWS replies that said to slow down (the account's rate was halved).",
            |h| h.stats.aws_throttled.load(Relaxed),
        ),
        (
            "sotp_component_http_requests_total",
            "HTTP requests sent through the http capability (each redirect hop).",
            |h| h.stats.http_requests.load(Relaxed),
        ),
        (
            "sotp_component_http_failed_total",
            "HTTP requests that got no response (grants, DNS, connect, TLS, timeout).",
            |h| h.stats.http_failed.load(Relaxed),
        ),
        (
            "sotp_component_errors_total",
            "Calls whose export returned an error.",
            |h| h.stats.errors.load(Relaxed),
        ),
        (
            "sotp_component_denied_total",
            "Host calls refused by grants.",
            |h| h.stats.denied.load(Relaxed),
        ),
        ("sotp_component_samples_total", "Samples committed.", |h| {
            h.stats.samples_stored.load(Relaxed)
        }),
        (
            "sotp_component_logs_total",
            "Telemetry log records committed.",
            |h| h.stats.logs_stored.load(Relaxed),
        ),
        (
            "sotp_component_dropped_total",
            "Emitted records discarded (trap or limit).",
            |h| h.stats.emitted_dropped.load(Relaxed),
        ),
        (
            "sotp_component_ticks_skipped_total",
            "Ticks skipped because the previous one was running.",
            |h| h.stats.ticks_skipped.load(Relaxed),
        ),
        (
            "sotp_component_series_refused_total",
            "Emit calls refused because their new series would exceed the tenant's quota.",
            |h| h.stats.series_refused.load(Relaxed),
        ),
        (
            "sotp_component_log_dropped_total",
            "Guest log lines dropped because the component logged faster than its rate.",
            |h| h.stats.log_dropped.load(Relaxed),
        ),
    ];
    for (name, help, get) in counters {
        family(out, name, "counter", help);
        for h in handles {
            line(
                out,
                name,
                &[("tenant", &h.tenant), ("component", &h.name)],
                get(h) as f64,
            );
        }
    }
}

/// Each AWS account's current request rate (its limiter, shared by a tenant's components).
fn render_aws(out: &mut String, view: View) {
    let rates: Vec<_> = crate::aws::shared()
        .rates()
        .into_iter()
        .filter(|(tenant, _, _)| view.shows(tenant))
        .collect();
    if rates.is_empty() {
        return;
    }
    let name = "sotp_aws_account_requests_per_second";
    family(
        out,
        name,
        "gauge",
        "The rate the aws capability allows an AWS account now (10 at rest; halved by each throttling reply).",
    );
    for (tenant, account, rate) in rates {
        line(
            out,
            name,
            &[("tenant", &tenant), ("account", &account)],
            rate,
        );
    }
}

fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn line(out: &mut String, name: &str, labels: &[(&str, &str)], value: f64) {
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            let _ = write!(out, "{k}=\"{}\"", escape(v));
        }
        out.push('}');
    }
    let _ = writeln!(out, " {value}");
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// An inlet's publisher or a store's consumer (docs/SCALE.md).
fn render_flow_bus(out: &mut String, flows: &crate::flow::service::FlowService) {
    if let Some(consumer) = &flows.counters_consumer {
        let c = &consumer.counters;
        for (name, help, value) in [
            (
                "sotp_bus_counter_samples_total",
                "sFlow interface counter samples this store read from the bus and stored.",
                c.samples.load(Relaxed),
            ),
            (
                "sotp_bus_counter_samples_unmapped_total",
                "Interface counter samples of tenants this store does not have.",
                c.unmapped.load(Relaxed),
            ),
            (
                "sotp_bus_counter_records_refused_total",
                "Interface counter records or samples skipped (another schema version, undecodable).",
                c.refused.load(Relaxed),
            ),
        ] {
            family(out, name, "counter", help);
            line(out, name, &[], value as f64);
        }
    }
    if let Some(consumer) = &flows.consumer {
        let c = &consumer.counters;
        for (name, kind, help, value) in [
            (
                "sotp_bus_records_total",
                "counter",
                "Kafka records this store read and decoded.",
                c.records.load(Relaxed),
            ),
            (
                "sotp_bus_flows_total",
                "counter",
                "Flows this store read from the bus and stored.",
                c.flows.load(Relaxed),
            ),
            (
                "sotp_bus_unmapped_flows_total",
                "counter",
                "Flows on the bus for a tenant this store does not have (dropped).",
                c.unmapped.load(Relaxed),
            ),
            (
                "sotp_bus_refused_total",
                "counter",
                "Records refused (another schema version, undecodable): their partition paused.",
                c.refused.load(Relaxed),
            ),
            (
                "sotp_bus_commit_failures_total",
                "counter",
                "Offset commits Kafka refused (those records may be read again).",
                c.commit_failures.load(Relaxed),
            ),
            (
                "sotp_bus_duplicate_batches_total",
                "counter",
                "Batches skipped because this store had stored them already (sent twice by an inlet's spool).",
                c.duplicates.load(Relaxed),
            ),
            (
                "sotp_bus_consumer_lag",
                "gauge",
                "Records behind the newest on the partitions this store holds (every 5 s).",
                c.lag.load(Relaxed),
            ),
        ] {
            family(out, name, kind, help);
            line(out, name, &[], value as f64);
        }
    }
    let Some(p) = &flows.publisher else {
        return;
    };
    let c = &p.counters;
    for (name, kind, help, value) in [
        (
            "sotp_bus_batches_delivered_total",
            "counter",
            "Flow batches Kafka acknowledged (replayed ones included).",
            c.delivered.load(Relaxed),
        ),
        (
            "sotp_bus_batches_spooled_total",
            "counter",
            "Flow batches written to the disk spool (brokers away or the producer's queue full).",
            c.spooled.load(Relaxed),
        ),
        (
            "sotp_bus_batches_replayed_total",
            "counter",
            "Spooled batches sent again and acknowledged.",
            c.replayed.load(Relaxed),
        ),
        (
            "sotp_bus_spool_dropped_total",
            "counter",
            "Flow batches dropped because the spool was full (runtime.flows.bus.spool_max).",
            c.spool_dropped.load(Relaxed),
        ),
        (
            "sotp_bus_spool_bytes",
            "gauge",
            "Bytes waiting in the disk spool.",
            c.spool_bytes.load(Relaxed),
        ),
        (
            "sotp_bus_counter_batches_delivered_total",
            "counter",
            "sFlow interface counter batches Kafka acknowledged.",
            c.counters_delivered.load(Relaxed),
        ),
        (
            "sotp_bus_counter_batches_dropped_total",
            "counter",
            "Interface counter batches Kafka did not take (not spooled: the next sample carries the same cumulative counters).",
            c.counters_dropped.load(Relaxed),
        ),
        (
            "sotp_bus_templates_shared_total",
            "counter",
            "Template spaces (exporter, observation domain) this inlet published to the template topic.",
            c.templates_shared.load(Relaxed),
        ),
        (
            "sotp_bus_templates_failed_total",
            "counter",
            "Template spaces Kafka did not take (every space is published again).",
            c.templates_failed.load(Relaxed),
        ),
        (
            "sotp_bus_templates_applied_total",
            "counter",
            "Template spaces other inlets published that this inlet took in.",
            c.templates_applied.load(Relaxed),
        ),
    ] {
        family(out, name, kind, help);
        line(out, name, &[], value as f64);
    }
}

fn render_flow_sinks(out: &mut String, flows: &crate::flow::service::FlowService) {
    if flows.sinks.is_empty() {
        return;
    }
    let last_seq = flows.store.last_seq();
    type Pick = fn(&crate::flow::sink::SinkHandle, u64) -> u64;
    let families: [(&str, &str, &str, Pick); 5] = [
        (
            "sotp_flow_sink_rows_total",
            "counter",
            "Flow rows a sink acknowledged.",
            |h, _| h.counters.rows.load(Relaxed),
        ),
        (
            "sotp_flow_sink_failures_total",
            "counter",
            "Failed sink requests (retried with backoff, or a rejection).",
            |h, _| h.counters.failures.load(Relaxed),
        ),
        (
            "sotp_flow_sink_rejected_rows_total",
            "counter",
            "Flow rows a sink refused for good (4xx) and that were skipped.",
            |h, _| h.counters.rejected_rows.load(Relaxed),
        ),
        (
            "sotp_flow_sink_lost_rows_total",
            "counter",
            "Flow rows deleted by retention (or damaged on disk) before the sink sent them.",
            |h, _| h.counters.lost_rows.load(Relaxed),
        ),
        (
            "sotp_flow_sink_backlog_rows",
            "gauge",
            "Flow rows stored but not yet acknowledged by the sink.",
            |h, last| last.saturating_sub(h.counters.cursor.load(Relaxed)),
        ),
    ];
    for (name, kind, help, pick) in families {
        family(out, name, kind, help);
        for h in &flows.sinks {
            line(
                out,
                name,
                &[("sink", &h.name), ("type", h.kind)],
                pick(h, last_seq) as f64,
            );
        }
    }
}

fn render_flows(out: &mut String, flows: &crate::flow::service::FlowService) {
    use crate::flow::FlowProtocol;
    let d = &flows.decode_counters;
    let protocols = [
        FlowProtocol::NetflowV5,
        FlowProtocol::NetflowV9,
        FlowProtocol::Ipfix,
        FlowProtocol::Sflow,
    ];
    family(
        out,
        "sotp_flow_datagrams_total",
        "counter",
        "Flow export datagrams received, by protocol.",
    );
    for (i, p) in protocols.iter().enumerate() {
        line(
            out,
            "sotp_flow_datagrams_total",
            &[("protocol", p.as_str())],
            d.datagrams[i].load(Relaxed) as f64,
        );
    }
    family(
        out,
        "sotp_flow_records_total",
        "counter",
        "Flow records decoded, by protocol.",
    );
    for (i, p) in protocols.iter().enumerate() {
        line(
            out,
            "sotp_flow_records_total",
            &[("protocol", p.as_str())],
            d.records[i].load(Relaxed) as f64,
        );
    }
    let s = &flows.store.counters;
    for (name, help, value) in [
        (
            "sotp_flow_malformed_total",
            "Datagrams dropped as malformed (truncated, impossible lengths).",
            d.malformed.load(Relaxed),
        ),
        (
            "sotp_flow_unknown_version_total",
            "Datagrams of no known export protocol.",
            d.unknown_version.load(Relaxed),
        ),
        (
            "sotp_flow_templates_learned_total",
            "NetFlow v9/IPFIX templates learned or redefined.",
            d.templates_learned.load(Relaxed),
        ),
        (
            "sotp_flow_templates_withdrawn_total",
            "IPFIX template withdrawals.",
            d.templates_withdrawn.load(Relaxed),
        ),
        (
            "sotp_flow_options_records_total",
            "Options records read (sampling, system init time).",
            d.options_records.load(Relaxed),
        ),
        (
            "sotp_flow_pending_held_total",
            "Data sets held until their template arrived.",
            d.pending_held.load(Relaxed),
        ),
        (
            "sotp_flow_pending_decoded_total",
            "Held records decoded once their template arrived.",
            d.pending_decoded.load(Relaxed),
        ),
        (
            "sotp_flow_pending_dropped_total",
            "Held data sets dropped (too old, or the hold buffer full).",
            d.pending_dropped.load(Relaxed),
        ),
        (
            "sotp_flow_unmapped_total",
            "Records dropped: their exporter maps to no tenant.",
            flows.counters.unmapped.load(Relaxed),
        ),
        (
            "sotp_flow_unmapped_datagrams_total",
            "Datagrams dropped before decoding: their source maps to no tenant.",
            flows.counters.unmapped_datagrams.load(Relaxed),
        ),
        (
            "sotp_flow_truncated_datagrams_total",
            "Datagrams longer than the receive buffer (cut by the kernel), dropped.",
            flows.counters.truncated.load(Relaxed),
        ),
        (
            "sotp_flow_sflow_agent_mismatch_total",
            "sFlow records naming an agent their source may not speak for (attributed to the source).",
            flows.counters.sflow_agent_mismatch.load(Relaxed),
        ),
        (
            "sotp_flow_templates_refused_total",
            "Templates, options or template spaces refused by the template state's caps.",
            d.templates_refused.load(Relaxed),
        ),
        (
            "sotp_flow_template_state_damaged_total",
            "Times flow-templates.json was unreadable at start and set aside.",
            flows.counters.template_state_damaged.load(Relaxed),
        ),
        (
            "sotp_flow_metrics_series_dropped_total",
            "Records left out of the flow aggregates below because the series cap was reached.",
            flows.counters.metrics_series_dropped.load(Relaxed),
        ),
        (
            "sotp_flow_store_rows_total",
            "Raw flow records committed.",
            s.rows.load(Relaxed),
        ),
        (
            "sotp_flow_store_commits_total",
            "Flow store commits.",
            s.commits.load(Relaxed),
        ),
        (
            "sotp_flow_store_commit_failures_total",
            "Flow store commits that failed (retried).",
            s.commit_failures.load(Relaxed),
        ),
        (
            "sotp_flow_raw_corrupt_entries_total",
            "Raw flow log entries skipped by readers (exports, queries) because they were damaged on disk.",
            flows.store.raw_corrupt_entries(),
        ),
    ] {
        family(out, name, "counter", help);
        line(out, name, &[], value as f64);
    }
    family(
        out,
        "sotp_flow_templates",
        "gauge",
        "Templates known (all exporters).",
    );
    line(
        out,
        "sotp_flow_templates",
        &[],
        flows.template_count() as f64,
    );
    family(
        out,
        "sotp_flow_socket_drops_total",
        "counter",
        "Datagrams the kernel dropped on the flow sockets (receive buffer full).",
    );
    for addr in &flows.bound {
        let port = addr.port().to_string();
        line(
            out,
            "sotp_flow_socket_drops_total",
            &[("port", &port)],
            crate::flow::listener::kernel_drops(addr.port()) as f64,
        );
    }
    render_flow_bus(out, flows);
    render_flow_sinks(out, flows);
}

/// The flow aggregates (bytes, packets, flows per tenant, exporter and application) the
/// view may see.
fn render_flow_aggregates(out: &mut String, flows: &crate::flow::service::FlowService, view: View) {
    let agg = flows.aggregates.lock();
    for (i, (name, help)) in [
        (
            "sotp_flow_bytes_total",
            "Bytes seen in flows (scaled by sampling), by tenant, exporter and application.",
        ),
        (
            "sotp_flow_packets_total",
            "Packets seen in flows (scaled by sampling), by tenant, exporter and application.",
        ),
        (
            "sotp_flow_flows_total",
            "Flow records, by tenant, exporter and application.",
        ),
    ]
    .into_iter()
    .enumerate()
    {
        family(out, name, "counter", help);
        let names = flows.store.names();
        for ((tenant, exporter, app), v) in &agg.series {
            if !view.shows(names.tenant(*tenant)) {
                continue;
            }
            let exporter = exporter.to_string();
            line(
                out,
                name,
                &[
                    ("tenant", names.tenant(*tenant)),
                    ("exporter", &exporter),
                    ("app", names.app(*app)),
                ],
                v[i] as f64,
            );
        }
    }
}

/// `sotp_traces_*`: the OTLP intake, by outcome, and forwarding.
fn trace_metrics(out: &mut String, rt: &crate::runtime::Runtime) {
    let t = &rt.traces().counters;
    let name = "sotp_traces_requests_total";
    family(out, name, "counter", "OTLP trace requests received.");
    line(out, name, &[], t.requests.load(Relaxed) as f64);
    let name = "sotp_traces_spans_total";
    family(
        out,
        name,
        "counter",
        "Spans received, by outcome: stored, duplicate (a retry), rejected (invalid span).",
    );
    for (outcome, counter) in [
        ("stored", &t.spans_accepted),
        ("duplicate", &t.spans_duplicate),
        ("rejected", &t.spans_rejected),
    ] {
        line(
            out,
            name,
            &[("outcome", outcome)],
            counter.load(Relaxed) as f64,
        );
    }
    let name = "sotp_traces_requests_refused_total";
    family(
        out,
        name,
        "counter",
        "OTLP trace requests refused whole, by reason (nothing of them stored).",
    );
    for (reason, counter) in [
        ("malformed", &t.refused_malformed),
        ("too_large", &t.refused_too_large),
        ("rate", &t.refused_rate),
        ("origin", &t.refused_origin),
        ("key", &t.refused_key),
    ] {
        line(
            out,
            name,
            &[("reason", reason)],
            counter.load(Relaxed) as f64,
        );
    }
    let own = &crate::traces::own::EXPORTED;
    let name = "sotp_traces_own_spans_exported_total";
    family(
        out,
        name,
        "counter",
        "SOTP's own spans exported ([server.traces]).",
    );
    line(out, name, &[], own.load(Relaxed) as f64);
    let name = "sotp_traces_own_export_failures_total";
    family(
        out,
        name,
        "counter",
        "Batches of SOTP's own spans that failed to export (dropped).",
    );
    line(
        out,
        name,
        &[],
        crate::traces::own::FAILED.load(Relaxed) as f64,
    );
    for (name, help, counter) in [
        (
            "sotp_traces_spans_pruned_total",
            "Spans dropped for retention or the tenant's span budget.",
            &t.spans_pruned,
        ),
        (
            "sotp_traces_spans_forwarded_total",
            "Spans acknowledged by tenants' OTLP backends.",
            &t.spans_forwarded,
        ),
        (
            "sotp_traces_forward_failures_total",
            "Forwarding passes that failed (the backend down or refusing); retried with backoff.",
            &t.forward_failures,
        ),
    ] {
        family(out, name, "counter", help);
        line(out, name, &[], counter.load(Relaxed) as f64);
    }
}
