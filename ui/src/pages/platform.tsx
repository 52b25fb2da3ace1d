import { useEffect } from "preact/hooks";
import * as api from "../api";
import { Badge, Loaded, ago, useLoad } from "../util";

interface ProbeHealth {
  component: string;
  probe: string;
  target: string;
  up: boolean;
  last_run_ms: number;
  duration_seconds: number | null;
  status_code: number | null;
  successes: number;
  runs: number;
  last_error?: string;
}
interface Latency {
  count: number;
  p50_ms: number | null;
  p95_ms: number | null;
}
interface Health {
  tenant: string;
  base_url: string;
  window_ms: number;
  probes: ProbeHealth[];
  ui_page_loads: Latency;
  ui_api_calls: Latency;
  rum: boolean;
  rum_sample_rate: number;
}

const ms = (v: number | null) => (v === null ? "—" : `${v < 10 ? v.toFixed(1) : Math.round(v)} ms`);

/** SOTP watching itself: its built-in probes of the sign-in page and API, and the UI's
 *  latency as browsers measured it (docs/PLATFORM.md). Refreshed every 15 s. */
export function Platform() {
  const health = useLoad(() => api.get<Health>("/platform/health"));
  useEffect(() => {
    const t = setInterval(health.reload, 15000);
    return () => clearInterval(t);
  }, []);
  return (
    <>
      <h1>Platform health</h1>
      <Loaded state={health}>
        {(h) => {
          const down = h.probes.filter((p) => !p.up).length;
          return (
            <>
              <p class="muted">
                Probes of <code>{h.base_url}</code> in tenant <code>{h.tenant}</code>, last {Math.round(h.window_ms / 60000)} min.{" "}
                {h.probes.length === 0 ? "No probe has run yet." : down ? <Badge kind="fail">{down} failing</Badge> : <Badge kind="pass">all up</Badge>}
              </p>
              <table aria-label="Probes">
                <thead>
                  <tr><th>Probe</th><th>State</th><th>Status</th><th>Duration</th><th>Success</th><th>Last run</th><th>Target</th></tr>
                </thead>
                <tbody>
                  {h.probes.map((p) => (
                    <tr data-probe={p.probe}>
                      <td>{p.probe}</td>
                      <td>{p.up ? <Badge kind="pass">up</Badge> : <Badge kind="fail">down</Badge>}{p.last_error ? <div class="muted">{p.last_error}</div> : null}</td>
                      <td>{p.status_code ?? "—"}</td>
                      <td>{p.duration_seconds === null ? "—" : ms(p.duration_seconds * 1000)}</td>
                      <td>{p.runs ? `${((100 * p.successes) / p.runs).toFixed(1)}% of ${p.runs}` : "—"}</td>
                      <td>{ago(p.last_run_ms)}</td>
                      <td><code>{p.target}</code></td>
                    </tr>
                  ))}
                </tbody>
              </table>
              <h2>The UI as its users see it</h2>
              {h.rum ? (
                <p class="muted">From the browsers' own spans ({Math.round(h.rum_sample_rate * 100)}% of UI sessions traced).</p>
              ) : (
                <p class="muted">The UI's RUM is off (<code>[platform] rum = false</code>).</p>
              )}
              <table aria-label="UI latency">
                <thead>
                  <tr><th></th><th>Count</th><th>p50</th><th>p95</th></tr>
                </thead>
                <tbody>
                  <tr><td>Page loads</td><td>{h.ui_page_loads.count}</td><td>{ms(h.ui_page_loads.p50_ms)}</td><td>{ms(h.ui_page_loads.p95_ms)}</td></tr>
                  <tr><td>API calls</td><td>{h.ui_api_calls.count}</td><td>{ms(h.ui_api_calls.p50_ms)}</td><td>{ms(h.ui_api_calls.p95_ms)}</td></tr>
                </tbody>
              </table>
            </>
          );
        }}
      </Loaded>
    </>
  );
}
