// SOTP's real-user monitoring script: one <script> tag, and a page's loads, its fetch/XHR
// calls, its errors and its web vitals arrive in SOTP as OpenTelemetry spans.
//
//   <script src="https://sotp.example/rum.js" data-key="RUM_KEY" data-service="shop-web"
//           data-propagate-to="https://api.shop.example" async></script>
//
// data-key: a token with the `rum` scope (write-only, browser-safe); data-endpoint: SOTP's
// base URL (default: where the script came from); data-service: the service name
// (default: the page's host); data-sample-rate (default 1) and data-propagate-to (origins,
// space-separated) override the tenant's trace settings.
//
// Sampling is decided once per browser session (sessionStorage) and carried in the sampled
// flag of every `traceparent` the page sends, so a session's front-end and back-end spans
// are kept or dropped together. `traceparent` goes to the page's own origin and to the
// listed origins only: on other cross-origin requests it would trigger a CORS preflight the
// server may refuse.
import { trace, SpanStatusCode } from "@opentelemetry/api";
import { WebTracerProvider } from "@opentelemetry/sdk-trace-web";
import { AlwaysOffSampler, AlwaysOnSampler, BatchSpanProcessor } from "@opentelemetry/sdk-trace-base";
import { OTLPTraceExporter } from "@opentelemetry/exporter-trace-otlp-http";
import { resourceFromAttributes } from "@opentelemetry/resources";
import { registerInstrumentations } from "@opentelemetry/instrumentation";
import { DocumentLoadInstrumentation } from "@opentelemetry/instrumentation-document-load";
import { FetchInstrumentation } from "@opentelemetry/instrumentation-fetch";
import { XMLHttpRequestInstrumentation } from "@opentelemetry/instrumentation-xml-http-request";
import { onCLS, onFCP, onINP, onLCP, onTTFB, type MetricWithAttribution } from "web-vitals/attribution";

interface Session {
  id: string;
  sampled: boolean;
}

const script = document.currentScript as HTMLScriptElement | null;
const data = script?.dataset ?? {};
const endpoint = (data.endpoint ?? (script ? new URL(script.src).origin : location.origin)).replace(/\/$/, "");

function session(rate: number): Session {
  const key = "sotp.rum.session";
  try {
    const saved = sessionStorage.getItem(key);
    if (saved) return JSON.parse(saved) as Session;
  } catch {
    // storage blocked: a session per page
  }
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  const id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  const s = { id, sampled: Math.random() < rate };
  try {
    sessionStorage.setItem(key, JSON.stringify(s));
  } catch {
    // as above
  }
  return s;
}

/// Origins -> patterns for the instrumentations' propagation list.
function origins(list: string[]): RegExp[] {
  return list
    .filter((o) => o)
    .map((o) => new RegExp("^" + o.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "(/|$)"));
}

async function settings(): Promise<{ sample_rate: number; propagate_to: string[] }> {
  const fallback = { sample_rate: 1, propagate_to: [] as string[] };
  try {
    const r = await fetch(`${endpoint}/v1/traces/rum-config`, {
      headers: { Authorization: `Bearer ${data.key}` },
    });
    return r.ok ? { ...fallback, ...(await r.json()) } : fallback;
  } catch {
    return fallback;
  }
}

function vital(m: MetricWithAttribution) {
  const a = m.attribution as unknown as Record<string, unknown>;
  const target = a.target ?? a.interactionTarget ?? a.largestShiftTarget ?? a.element ?? "";
  const s = trace.getTracer("sotp-rum").startSpan("web-vital", {
    attributes: {
      "web_vital.name": m.name,
      "web_vital.value": m.value,
      "web_vital.rating": m.rating,
      "web_vital.id": m.id,
      "web_vital.target": String(target),
      "url.full": location.href,
    },
  });
  s.end();
}

function error(kind: string, message: string, stack?: string) {
  const s = trace.getTracer("sotp-rum").startSpan("exception", {
    attributes: {
      "exception.type": kind,
      "exception.message": message.slice(0, 1024),
      "exception.stacktrace": (stack ?? "").slice(0, 4096),
      "url.full": location.href,
    },
  });
  s.setStatus({ code: SpanStatusCode.ERROR, message: message.slice(0, 256) });
  s.end();
}

async function start() {
  if (!data.key) {
    console.warn("sotp rum: no data-key on the script tag; not recording");
    return;
  }
  const remote = await settings();
  const rate = data.sampleRate !== undefined ? Number(data.sampleRate) : remote.sample_rate;
  const propagate = data.propagateTo !== undefined ? data.propagateTo.split(/\s+/) : remote.propagate_to;
  const s = session(rate);
  const provider = new WebTracerProvider({
    resource: resourceFromAttributes({
      "service.name": data.service ?? location.hostname,
      "session.id": s.id,
      "browser.user_agent": navigator.userAgent,
    }),
    sampler: s.sampled ? new AlwaysOnSampler() : new AlwaysOffSampler(),
    spanProcessors: [
      new BatchSpanProcessor(
        new OTLPTraceExporter({
          url: `${endpoint}/v1/traces`,
          headers: { Authorization: `Bearer ${data.key}` },
        }),
        { scheduledDelayMillis: 1000 },
      ),
    ],
  });
  provider.register();
  const corsUrls = origins(propagate);
  registerInstrumentations({
    instrumentations: [
      new DocumentLoadInstrumentation(),
      new FetchInstrumentation({
        propagateTraceHeaderCorsUrls: corsUrls,
        ignoreUrls: [new RegExp("^" + endpoint.replace(/[.*+?^${}()|[\]\\]/g, "\\$&") + "/v1/traces")],
      }),
      new XMLHttpRequestInstrumentation({ propagateTraceHeaderCorsUrls: corsUrls }),
    ],
  });
  if (!s.sampled) return;
  for (const on of [onLCP, onINP, onCLS, onTTFB, onFCP]) on(vital);
  addEventListener("error", (e) => error("error", e.message, e.error?.stack));
  addEventListener("unhandledrejection", (e) => error("unhandledrejection", String(e.reason), e.reason?.stack));
}

void start();
