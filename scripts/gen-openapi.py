#!/usr/bin/env python3
"""Generate api/openapi.json (the document served at /v1/openapi.json).

Kept as a small script so the document stays valid JSON and consistent; a test checks that
every path in it is routed by the server and every routed path is documented.
"""
import json, pathlib

ERR = {"$ref": "#/components/responses/Error"}
def op(summary, ok="200", ok_desc="OK", body=None, params=None, errors=("400", "401", "403", "404"), tag=None, auth=True, scope=None):
    """scope: what a tenant token needs (read, deploy, inventory, secrets, admin, ingest, rum), or
    "platform-admin" for the platform admin token only; GETs default to read. It is recorded
    as x-sotp-scope, and a test checks the server refuses every other scope."""
    o = {"summary": summary, "responses": {ok: {"description": ok_desc}}}
    if auth: o["x-sotp-scope"] = scope or "read"
    for e in errors:
        o["responses"][e] = ERR
    if body: o["requestBody"] = body
    if params: o["parameters"] = params
    if tag: o["tags"] = [tag]
    if not auth: o["security"] = []
    return o

def json_body(props, required=()):
    return {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": props, "required": list(required), "additionalProperties": False}}}}

name = {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}
pid = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
rfile = {"name": "file", "in": "path", "required": True, "schema": {"type": "string"}, "description": "rule file name, e.g. base.yaml"}
q = lambda n, d, t="string": {"name": n, "in": "query", "schema": {"type": t}, "description": d}
FLOW_PARAMS = [
    q("start", "ms since the epoch, RFC 3339, now, now-5m"), q("end", "exclusive end; default now"),
    q("since", "duration back from end (default 1h)"),
    q("by", "comma-separated: src_addr, dst_addr, app, exporter, ip_protocol, src_port, dst_port, in_if, out_if"),
    q("exporter", "only this exporter"), q("addr", "source or destination address"),
    q("src_addr", "source address"), q("dst_addr", "destination address"),
    q("port", "source or destination port (raw flows)", "integer"),
    q("protocol", "tcp, udp, icmp, icmpv6 or a number"), q("app", "application name"),
    q("limit", "rows (top) or groups per bucket (rate)", "integer")]

paths = {
  "/healthz": {"get": op("Liveness", errors=(), tag="ops", auth=False)},
  "/readyz": {"get": op("Readiness: 503 until components are restored", errors=("503",), tag="ops", auth=False)},
  "/metrics": {"get": op("Every tenant's and the process's metrics, Prometheus text format: the platform admin token only (or server.metrics_listen, without a token)", errors=("401", "403"), tag="ops", scope="platform-admin")},
  "/": {"get": op("Redirects to the web UI", ok="303", ok_desc="See /ui/", errors=(), tag="ui", auth=False)},
  "/ui": {"get": op("Redirects to the web UI", ok="303", ok_desc="See /ui/", errors=(), tag="ui", auth=False)},
  "/ui/": {"get": op("The web UI's page (docs/UI.md); 503 if this binary was built without it", errors=("503",), tag="ui", auth=False)},
  "/ui/{file}": {"get": op("One of the web UI's assets (gzipped when accepted)", params=[{"name": "file", "in": "path", "required": True, "schema": {"type": "string"}}], errors=("404",), tag="ui", auth=False)},
  "/ui/session": {
    "post": op("Sign in to the web UI with a token: sets the HttpOnly, SameSite=Strict session cookie; answers who the token is", tag="ui", auth=False,
               body=json_body({"token": {"type": "string"}}, ["token"]), errors=("400", "401", "503")),
    "get": op("Who the web UI's session is, or {signed_in: false}", errors=(), tag="ui", auth=False),
    "delete": op("Sign out of the web UI: the session ends and the cookie is cleared", ok="204", errors=(), tag="ui", auth=False)},
  "/v1/metrics": {"get": op("The caller's tenant's metrics (its components and flows), Prometheus text format", errors=("401", "403"), tag="ops")},
  "/v1/openapi.json": {"get": op("This document", errors=(), tag="ops", auth=False)},
  "/v1/tenants": {
    "post": op("Create a tenant (admin); returns its first token", ok="201", tag="tenants", scope="platform-admin",
               body=json_body({"id": {"type": "string"}, "name": {"type": "string"},
                               "max_components": {"type": "integer"}, "max_memory": {"type": "string", "example": "512MiB"},
                               "max_series": {"type": "integer"}, "max_instances": {"type": "integer"},
                               "max_concurrent_calls": {"type": "integer"}}, ["id"]),
               errors=("400", "401", "403", "409")),
    "get": op("List tenants (admin)", tag="tenants", scope="platform-admin")},
  "/v1/tenant": {"get": op("The caller's tenant: its quotas and what it uses of them (series, instances, running and waiting calls, refusals)", tag="tenants")},
  "/v1/tenants/{id}": {"get": op("Show a tenant with its usage (admin)", params=[pid], tag="tenants", scope="platform-admin"),
                        "delete": op("Delete a tenant and everything it owns (admin)", ok="204", params=[pid], tag="tenants", scope="platform-admin")},
  "/v1/tokens": {
    "post": op("Create a token: admin for any tenant (or another admin token), a tenant for itself, with scopes (default: the creator's) and an optional lifetime", ok="201", tag="tenants", scope="admin",
               body=json_body({"tenant": {"type": "string"}, "name": {"type": "string"},
                               "scopes": {"type": "array", "items": {"type": "string", "enum": ["read", "deploy", "inventory", "secrets", "admin", "ingest", "rum"]}},
                               "expires_in": {"type": "string", "example": "90d"}})),
    "get": op("List tokens (never their values)", params=[q("tenant", "admin: whose tokens")], tag="tenants")},
  "/v1/tokens/{id}": {"delete": op("Revoke a token (409 for the last unexpired admin token)", ok="204", params=[pid, q("tenant", "admin: the token's tenant")], tag="tenants", scope="admin", errors=("401", "403", "404", "409"))},
  "/v1/components": {
    "post": op("Upload a component version (multipart: manifest = TOML, wasm = component); activates it unless activate=false",
               ok="201", tag="components", scope="deploy", params=[q("activate", "switch to the new version (default true)", "boolean")],
               body={"required": True, "content": {"multipart/form-data": {"schema": {"type": "object",
                     "properties": {"manifest": {"type": "string"}, "wasm": {"type": "string", "format": "binary"}},
                     "required": ["manifest", "wasm"]}}}},
               errors=("400", "401", "403", "413", "422")),
    "get": op("List the tenant's components", tag="components")},
  "/v1/components/{name}": {
    "get": op("State, active version, manifest, versions, counters, last error, recent log", params=[name, q("log_lines", "log lines to include", "integer")], tag="components"),
    "delete": op("Stop and delete a component with all versions", ok="204", params=[name], tag="components", scope="deploy")},
  "/v1/components/{name}/versions": {"get": op("Versions of a component", params=[name], tag="components")},
  "/v1/components/{name}/activate": {"post": op("Hot-swap to a version; a failing init leaves the active version running (422)", params=[name], tag="components", scope="deploy",
        body=json_body({"version": {"type": "integer"}}, ["version"]), errors=("400", "401", "403", "404", "422"))},
  "/v1/components/{name}/rollback": {"post": op("Activate the previously active version, or the one given", params=[name], tag="components", scope="deploy",
        body={"required": False, "content": {"application/json": {"schema": {"type": "object", "properties": {"version": {"type": "integer"}}}}}},
        errors=("400", "401", "403", "404", "409", "422"))},
  "/v1/components/{name}/logs": {"get": op("The component's log ring (guest log, stdout/stderr, host events)", params=[name, q("lines", "how many", "integer")], tag="components")},
  "/v1/components/{name}/messages": {"post": op("Call on-message with a message; returns when its output is durable", params=[name], tag="components", scope="deploy",
        body=json_body({"topic": {"type": "string"}, "payload": {"type": "string"}, "payload_base64": {"type": "string"}}, ["topic"]),
        errors=("400", "401", "403", "404", "409"))},
  "/v1/mqtt": {
    "get": op("The tenant's broker and SOTP's session with it: connected, subscriptions, counters", tag="mqtt"),
    "put": op("Set the tenant's MQTT broker (QoS 1, persistent session) and (re)connect", tag="mqtt", scope="admin",
              body=json_body({"host": {"type": "string"}, "port": {"type": "integer"},
                              "username": {"type": "string"}, "password_secret": {"type": "string"},
                              "tls": {"type": "boolean"}, "tls_ca_pem": {"type": "string"}, "keep_alive_s": {"type": "integer"}}, ["host"])),
    "delete": op("Disconnect and forget the broker", ok="204", tag="mqtt", scope="admin")},
  "/v1/alerts": {
    "get": op("The tenant's alerts, newest change first, each with the inventory device its labels name", params=[q("status", "firing or resolved"), q("device", "only this device's"), q("limit", "at most this many (default 1000)", "integer")], tag="alerts"),
    "post": op("Alert intake for any source: a JSON list of alerts as Alertmanager's POST /api/v2/alerts takes them ({labels, annotations, startsAt, endsAt, generatorURL}; endsAt in the past: resolved). Answered once durable; an identical body within the dedupe window is a recorded duplicate", tag="alerts", scope="ingest",
               body={"required": True, "content": {"application/json": {"schema": {"type": "array", "items": {"type": "object"}}}}})},
  "/v1/alerts/webhook": {"post": op("Alertmanager webhook receiver (payload version 4; unknown fields ignored, zero endsAt, truncatedAlerts): point a webhook_config here with http_config.authorization.credentials set to an ingest token. Answered 2xx once durable; redelivery changes nothing", tag="alerts", scope="ingest",
               body={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}})},
  "/v1/alerts/intakes": {"get": op("Recorded intakes, newest first (what replay runs over)", params=[q("limit", "at most this many (default 100)", "integer")], tag="alerts")},
  "/v1/alerts/outputs": {"get": op("How the last push of the tenant's incidents to each output (alertmanager, silences, webhook) went: when, last success, last error, how many incidents", tag="alerts")},
  "/v1/alerts/settings": {
    "get": op("How alerts map to devices: the labels tried in order, the hold-down window", tag="alerts"),
    "put": op("Set the alert settings: the labels naming devices, the hold-down, and the Alertmanager incidents are pushed to ({url: http://host:port, bearer_secret, silence_children})", tag="alerts", scope="deploy", body=json_body({"device_labels": {"type": "array", "items": {"type": "string"}}, "hold_down": {"type": "string"}, "alertmanager": {"type": "object", "properties": {"url": {"type": "string"}, "bearer_secret": {"type": "string"}, "silence_children": {"type": "boolean"}}, "required": ["url"]}, "webhook": {"type": "object", "properties": {"url": {"type": "string"}, "bearer_secret": {"type": "string"}}, "required": ["url"]}}))},
  "/v1/traces": {
    "post": op("OTLP/HTTP traces intake (what OTLP exporters send to <base>/v1/traces): application/x-protobuf or application/json, gzip or not; a rum key (from the tenant's origins, CORS) or an ingest token, as Authorization: Bearer or ?key=. Each span is checked (bad ones rejected alone: partial success); a retried span is not stored twice. Answered with an ExportTraceServiceResponse", tag="traces", scope="rum",
               params=[q("key", "the token, for senders that cannot set headers")],
               body={"required": True, "content": {"application/x-protobuf": {"schema": {"type": "string", "format": "binary"}}, "application/json": {"schema": {"type": "object"}}}},
               errors=("400", "401", "403", "413", "429")),
    "get": op("Traces, newest first: root span's service, name and route, duration, spans, errors, services", params=[q("service", "with a span of this service"), q("route", "with a span whose route starts with this"), q("min_duration", "at least this long, e.g. 500ms"), q("status", "error or ok"), q("since", "duration back from end (default 1h)"), q("start", "ms since the epoch, RFC 3339, now-5m"), q("end", "default now"), q("limit", "at most this many (default 20, max 1000)", "integer")], tag="traces"),
    "options": op("CORS preflight of the intake: answers any origin and grants nothing (the POST checks the origin)", ok="204", errors=(), tag="traces", auth=False)},
  "/v1/traces/settings": {
    "get": op("The tenant's trace settings (origins, sample_rate, propagate_to, forward) and how forwarding goes (forwarded, behind, last error)", tag="traces"),
    "put": op("Set the trace settings: origins allowed to send spans with a rum key, the share of browser sessions recorded, origins the RUM script sends traceparent to, the OTLP/HTTP backend spans are forwarded to", tag="traces", scope="deploy",
              body=json_body({"origins": {"type": "array", "items": {"type": "string"}}, "sample_rate": {"type": "number"}, "propagate_to": {"type": "array", "items": {"type": "string"}}, "forward": {"type": "object", "properties": {"url": {"type": "string"}, "bearer_secret": {"type": "string"}}, "required": ["url"]}}))},
  "/v1/traces/rum-config": {
    "get": op("What the RUM script needs of the settings (sample_rate, propagate_to), for a rum key from an allowed origin", tag="traces", scope="rum", params=[q("key", "the rum key, if not in Authorization")]),
    "options": op("CORS preflight", ok="204", errors=(), tag="traces", auth=False)},
  "/v1/traces/{id}": {"get": op("One trace: every span with its attributes, events, status and resource, in start order", params=[pid], tag="traces")},
  "/v1/secret-providers": {
    "get": op("Where the tenant's provider-held secrets (vault:<path>#<key>, aws-sm:<secret id>[#<key>]) come from: the Vault address, mount, TTL and auth; the Secrets Manager region, endpoints, role and TTL (names of the built-in secrets holding their credentials, never values)", tag="secrets"),
    "put": op("Set the secret providers: vault {address, mount (secret), ttl (5m), auth: {method: token, token_secret} or {method: approle, role_id, secret_id_secret}}; aws_secrets_manager {region, credentials_secret, role_arn, endpoint, sts_endpoint, ttl (5m)}", tag="secrets", scope="secrets",
              body=json_body({"vault": {"type": "object", "properties": {"address": {"type": "string"}, "mount": {"type": "string"}, "ttl": {"type": "string"}, "auth": {"type": "object"}}, "required": ["address", "auth"]},
                              "aws_secrets_manager": {"type": "object", "properties": {"region": {"type": "string"}, "credentials_secret": {"type": "string"}, "role_arn": {"type": "string"}, "endpoint": {"type": "string"}, "sts_endpoint": {"type": "string"}, "ttl": {"type": "string"}}, "required": ["region", "credentials_secret"]}}))},
  "/api/v1/query": {
    "get": op("Prometheus's instant query (PromQL at one time) over the tenant's samples, in Prometheus's envelope; the token as Bearer or as the basic-auth password (docs/PROMQL.md)", params=[q("query", "PromQL"), q("time", "Unix seconds or RFC 3339; default now")], errors=("400", "401", "403", "422"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403", "422"), tag="prometheus", scope="read")},
  "/api/v1/query_range": {
    "get": op("Prometheus's range query: PromQL at every step from start to end (at most 11,000 steps)", params=[q("query", "PromQL"), q("start", "Unix seconds or RFC 3339"), q("end", "Unix seconds or RFC 3339"), q("step", "seconds or a duration such as 15s")], errors=("400", "401", "403", "422"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403", "422"), tag="prometheus", scope="read")},
  "/api/v1/series": {
    "get": op("Label sets of the tenant's series matching match[] selectors", params=[q("match[]", "a series selector, repeatable")], errors=("400", "401", "403", "422"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403", "422"), tag="prometheus", scope="read")},
  "/api/v1/labels": {
    "get": op("Label names of the tenant's series (of the match[] series, if given)", params=[q("match[]", "a series selector, repeatable")], errors=("400", "401", "403"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403"), tag="prometheus", scope="read")},
  "/api/v1/label/{name}/values": {"get": op("The values a label takes in the tenant's series (__name__: metric names)", params=[{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}, q("match[]", "a series selector, repeatable")], errors=("400", "401", "403"), tag="prometheus")},
  "/loki/api/v1/query_range": {
    "get": op("Loki's range query over the tenant's flows: LogQL metric queries such as sum by (src_ip, app_protocol) (rate(flow_bytes[5m])) at every step (docs/PROMQL.md)", params=[q("query", "LogQL"), q("start", "Unix ns, s or RFC 3339; default end - 1h"), q("end", "default now"), q("step", "seconds or a duration; default about 250 points")], errors=("400", "401", "403", "422", "503"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403", "422", "503"), tag="prometheus", scope="read")},
  "/loki/api/v1/query": {
    "get": op("Loki's instant query over the tenant's flows", params=[q("query", "LogQL"), q("time", "Unix ns, s or RFC 3339; default now")], errors=("400", "401", "403", "422", "503"), tag="prometheus"),
    "post": op("As GET, the parameters in a form body", errors=("400", "401", "403", "422", "503"), tag="prometheus", scope="read")},
  "/loki/api/v1/labels": {"get": op("The labels flow queries group and filter by", errors=("401", "403"), tag="prometheus")},
  "/v1/platform/health": {"get": op("SOTP watching itself: the platform tenant's built-in probes of SOTP's sign-in page and API (last run, success over the last hour, last failure) and the web UI's page-load and API-call latency from its browsers' spans; the platform admin token, or a platform tenant token with read", tag="platform", scope="platform-admin")},
  "/v1/scrape/targets": {"get": op("Prometheus scrape targets the tenant's prometheus-scrape components saw in the last ten minutes: up, last scrape, duration, samples, and why the last one failed", tag="scrape")},
  "/rum.js": {"get": op("The real-user monitoring script pages embed (docs/TRACES.md)", errors=("503",), tag="traces", auth=False)},
  "/v1/incidents": {"get": op("Incidents correlation opened, newest first, with their root device and the devices whose alerts they suppressed", params=[q("status", "open or resolved"), q("limit", "at most this many (default 100)", "integer")], tag="alerts")},
  "/v1/incidents/replay": {"post": op("Replay the recorded intakes of a window through a stored, not activated correlation policy version and through the active one (each in a scratch state), and show how their decisions differ: incidents on each side, alerts whose decision or incident changed. Nothing of the tenant's alerts or incidents changes", params=[q("component", "the correlation policy"), q("version", "its stored version to try", "integer"), q("since", "the window: the last so long (default 1h)"), q("from", "window start, ms since the epoch", "integer"), q("to", "window end (exclusive), ms since the epoch; default now", "integer")], tag="alerts", scope="deploy")},
  "/v1/incidents/{id}": {"get": op("One incident: root cause, title, its alerts (root and suppressed children, each with the reason), the timeline", params=[pid], tag="alerts")},
  "/v1/incidents/{id}/acknowledge": {"post": op("Acknowledge an incident (recorded in its timeline)", params=[pid], tag="alerts", scope="deploy")},
  "/v1/incidents/{id}/resolve": {"post": op("Resolve an incident by hand (recorded in its timeline)", params=[pid], tag="alerts", scope="deploy")},
  "/v1/backups": {"get": op("Devices with configuration backups and their latest revision", tag="backups")},
  "/v1/backups/settings": {
    "get": op("Volatile-line patterns dropped before comparing and storing", tag="backups"),
    "put": op("Set the volatile-line patterns (regular expressions)", tag="backups", scope="inventory", body=json_body({"ignore": {"type": "array", "items": {"type": "string"}}}, ["ignore"]))},
  "/v1/backups/{name}": {"get": op("A device's backup history (commits that changed it), newest first", params=[name], tag="backups")},
  "/v1/backups/{name}/text": {"get": op("A device's configuration at a revision (default latest), text/plain", params=[name, q("at", "commit id")], tag="backups"),
    "put": op("Import a configuration collected elsewhere as the device's newest backup (committed if it changed; volatile lines dropped); at most 16 MiB", params=[name], tag="backups", scope="inventory",
              body={"required": True, "content": {"text/plain": {"schema": {"type": "string"}}}})},
  "/v1/backups/{name}/diff": {"get": op("Unified diff between two revisions (default: the two latest changes)", params=[name, q("from", "commit id"), q("to", "commit id")], tag="backups")},
  "/v1/compliance/rules": {"get": op("Golden-config rule files with their active and newest versions", tag="compliance")},
  "/v1/compliance/rules/{file}": {
    "get": op("A rule file's text (YAML): the active version, or ?version=N; the version is in X-Sotp-Version", params=[rfile, q("version", "a stored version", "integer")], tag="compliance"),
    "put": op("Upload a rule file as its next version (checked first: errors name file, line, column and key); ?activate=true activates it", ok="201", params=[rfile, q("activate", "activate the new version", "boolean")], tag="compliance", scope="deploy",
              body={"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}}}, errors=("400", "401", "403", "404")),
    "delete": op("Delete a rule file and its versions", ok="204", params=[rfile], tag="compliance", scope="deploy")},
  "/v1/compliance/rules/{file}/versions": {"get": op("A rule file's stored versions", params=[rfile], tag="compliance")},
  "/v1/compliance/rules/{file}/activate": {"post": op("Activate a stored version (the one it replaces becomes the rollback target)", params=[rfile], tag="compliance", scope="deploy",
              body=json_body({"version": {"type": "integer"}}, ["version"]))},
  "/v1/compliance/rules/{file}/rollback": {"post": op("Activate the version active before the current one", params=[rfile], tag="compliance", scope="deploy")},
  "/v1/compliance/rules/{file}/preview": {"post": op("What a rule file expects of one device, rendered for it (rule by rule: the intended text, or why not): a draft as the body, ?version=N, or the active version with an empty body; changes nothing", params=[rfile, {"name": "device", "in": "query", "required": True, "schema": {"type": "string"}}, q("version", "a stored version", "integer")], tag="compliance", scope="read")},
  "/v1/compliance/rules/{file}/dry-run": {"post": op("Audit today's backups with a draft (the body, YAML) or a stored ?version=N in place of the active version, and report which devices would change status and which findings appear or go away; nothing is stored", params=[rfile, q("version", "a stored version, with an empty body", "integer")], tag="compliance", scope="deploy",
              body={"content": {"application/yaml": {"schema": {"type": "string"}}}})},
  "/v1/compliance/components/{name}/dry-run": {"post": op("Audit today's backups with stored version ?version=N of a compliance-rule component (uploaded with activate=false) in place of its active version, and report which devices would change status and which findings appear or go away; nothing is stored or activated", params=[name, q("version", "the stored version to try", "integer")], tag="compliance", scope="deploy")},
  "/v1/compliance/waivers": {
    "get": op("Waivers in force", tag="compliance"),
    "post": op("Waive a rule on a device until an expiry (reported as waived, never hidden)", ok="201", tag="compliance", scope="deploy",
               body=json_body({"device": {"type": "string"}, "rule": {"type": "string"}, "reason": {"type": "string"},
                               "expires_ms": {"type": "integer"}, "expires_in": {"type": "string", "example": "30d"}}, ["device", "rule", "reason"]))},
  "/v1/compliance/waivers/{id}": {"delete": op("Delete a waiver", ok="204", params=[pid], tag="compliance", scope="deploy")},
  "/v1/compliance/audits": {
    "get": op("Audits kept, oldest first, with their summaries (the trend)", tag="compliance"),
    "post": op("Run an audit of every active rule file over the newest backups: 202 at once (progress at /v1/compliance/audits/running), or with ?wait=true the stored audit's id and summary", ok="202", params=[q("wait", "answer when the audit is done", "boolean")], tag="compliance", scope="deploy", errors=("401", "403", "404", "409"))},
  "/v1/compliance/schedule": {
    "get": op("When audits run by themselves (default nightly at 02:00 UTC) and the next time (next_ms)", tag="compliance"),
    "put": op("Set the audit schedule: a cron expression (5 fields, or 6 with seconds) in an IANA time zone", tag="compliance", scope="deploy",
              body=json_body({"cron": {"type": "string", "example": "0 2 * * *"}, "timezone": {"type": "string", "example": "Europe/Amsterdam"}, "enabled": {"type": "boolean"}}, ["cron"]))},
  "/v1/compliance/audits/running": {"get": op("The audit running now: devices and devices done; 404 if none", tag="compliance")},
  "/v1/compliance/audits/{id}": {"get": op("An audit's report (`latest` for the newest): per device percent compliant, per rule pass/fail/waived/error, missing and extra lines, remediation; JSON or ?format=csv", params=[pid, q("format", "json (default) or csv"), q("device", "only this device")], tag="compliance")},
  "/v1/devices": {"get": op("The inventory", tag="devices", params=[q("tag", "only with this tag"), q("site", "only at this site"), q("role", "only with this role")])},
  "/v1/devices/import": {"post": op("Create or replace devices in bulk: YAML/JSON list, or CSV (Content-Type: text/csv). Devices naming secrets need the secrets scope too, unless only their tags, site, role or parents change", tag="devices", scope="inventory",
        body={"required": True, "content": {"application/yaml": {"schema": {"type": "string"}}, "text/csv": {"schema": {"type": "string"}}}})},
  "/v1/devices/{name}": {
    "get": op("A device", params=[name], tag="devices"),
    "put": op("Create (201) or replace (200) a device", params=[name], tag="devices", scope="inventory", body={"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}),
    "delete": op("Delete a device nothing depends on", ok="204", params=[name], tag="devices", scope="inventory", errors=("401", "403", "404", "409"))},
  "/v1/devices/{name}/interfaces": {"get": op("Interface names by ifIndex, as collectors reported them", params=[name], tag="devices"),
    "put": op("Replace the interface names by hand (devices no SNMP collector polls); flow queries name in_if/out_if from them", ok="204", params=[name], tag="devices", scope="inventory",
              body=json_body({"interfaces": {"type": "array", "items": {"type": "object", "required": ["index", "name"], "properties": {"index": {"type": "integer"}, "name": {"type": "string"}}}}}, ["interfaces"]))},
  "/v1/devices/{name}/ssh-host-key": {"delete": op("Forget the pinned SSH host key (after a legitimate change); the next key offered is trusted, hence the secrets scope", ok="204", params=[name], tag="devices", scope="secrets")},
  "/v1/secrets": {"get": op("List secret names", tag="secrets")},
  "/v1/secrets/{name}": {"put": op("Set a secret (encrypted at rest; never returned)", ok="204", params=[name], tag="secrets", scope="secrets",
                                   body=json_body({"value": {"type": "string"}}, ["value"])),
                          "delete": op("Delete a secret", ok="204", params=[name], tag="secrets", scope="secrets")},
  "/v1/query": {"get": op("Query samples", tag="query", params=[
        q("metric", "metric name (required)"), q("match", "label matcher, repeatable: a=b, a!=b, a=~re, a!~re"),
        q("start", "ms since the epoch, RFC 3339, now, now-5m"), q("end", "exclusive end; default now"),
        q("since", "duration back from end (default 1h)"), q("step", "bucket width, e.g. 1m; absent = raw points"),
        q("agg", "avg|sum|min|max|count|rate"), q("by", "comma-separated labels to group by; empty = all")])},
  "/v1/logs": {"get": op("Recent telemetry log records", tag="query", params=[q("component", "only this component"), q("limit", "max records", "integer")])},
  "/v1/flows/top": {"get": op("Top groups of the tenant's flows by bytes, packets or flows over a window", tag="flows", params=FLOW_PARAMS + [
        q("measure", "bytes (default), packets or flows")])},
  "/v1/flows/rate": {"get": op("Bytes/s and packets/s per group per time bucket", tag="flows", params=FLOW_PARAMS + [
        q("step", "bucket width (default 5m)")])},
  "/v1/flows/status": {"get": op("With flow collection off, {enabled: false, reason}. A tenant: the listeners and its exporters (flows, bytes, packets since start). The platform admin: the whole pipeline (templates, decoder and store counters, sinks)", tag="flows")},
}
doc = {
  "openapi": "3.0.3",
  "info": {"title": "SOTP management API", "version": "0.1.0",
           "description": "Tenant tokens carry scopes (read, deploy, inventory, secrets, admin, ingest, rum); x-sotp-scope on each operation names the one it needs (an ingest token also sends what rum sends), and any scope but ingest (alert and span intake) and rum (spans from the tenant's origins) implies read. Errors are JSON {error, detail}: error is a stable code (invalid_manifest, not_wasm, not_a_component, wrong_world, upload_too_large, init_failed, quota_exceeded, not_found, forbidden, unauthorized, invalid_query, ...)."},
  "servers": [{"url": "http://127.0.0.1:8787"}],
  "security": [{"bearer": []}],
  "paths": paths,
  "components": {
    "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
    "responses": {"Error": {"description": "An error", "content": {"application/json": {"schema": {
        "type": "object", "required": ["error", "detail"],
        "properties": {"error": {"type": "string"}, "detail": {"type": "string"}}}}}}}},
}
out = pathlib.Path(__file__).resolve().parent.parent / "api" / "openapi.json"
out.write_text(json.dumps(doc, indent=2) + "\n")
print(f"wrote {out}")
