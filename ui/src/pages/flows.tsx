import { useState } from "preact/hooks";
import * as api from "../api";
import { LineChart } from "../chart";
import type { TopRow } from "../types";
import { TopTable } from "../tables";
import { Loaded, bytes, useLoad } from "../util";

interface RateRow { bucket_ms: number; group: Record<string, unknown>; bytes_per_second: number }

const WINDOWS: [string, string][] = [["15m", "15 minutes"], ["1h", "1 hour"], ["6h", "6 hours"], ["24h", "24 hours"], ["7d", "7 days"]];
function windowMs(since: string): number {
  const n = parseInt(since, 10);
  const unit = since.slice(String(n).length);
  return n * ({ m: 60_000, h: 3_600_000, d: 86_400_000 }[unit] ?? 3_600_000);
}
const GROUPS: [string, string][] = [["src_addr", "source"], ["app", "application"], ["dst_addr", "destination"], ["exporter", "exporter"]];

/** Top talkers and bytes/s over a chosen window, by source, application, destination or
 * exporter: a chart of the top groups' rates and the table of totals. */
export function Flows() {
  const [since, setSince] = useState("1h");
  const [by, setBy] = useState("src_addr");
  const data = useLoad(async () => {
    const status = await api.get<{ enabled?: boolean; reason?: string }>("/flows/status");
    if (status.enabled === false) return { off: status.reason ?? "flow collection is off", top: [] as TopRow[], rate: [] as RateRow[], step: 0, end: 0 };
    const top = await api.get<{ rows: TopRow[] }>(`/flows/top?since=${since}&by=${by}&limit=20`);
    const rate = await api.get<{ rows: RateRow[]; step_ms: number }>(`/flows/rate?since=${since}&by=${by}&limit=5`);
    return { off: undefined, top: top.rows, rate: rate.rows, step: rate.step_ms, end: Date.now() };
  }, [since, by]);
  const label = (g: Record<string, unknown>) => String(g[by] ?? "—");
  return (
    <>
      <h1>Flows</h1>
      <p class="actions">
        <label>
          Window{" "}
          <select aria-label="Window" value={since} onChange={(e) => setSince((e.currentTarget as HTMLSelectElement).value)}>
            {WINDOWS.map(([v, l]) => <option value={v}>{l}</option>)}
          </select>
        </label>
        <label>
          By{" "}
          <select aria-label="By" value={by} onChange={(e) => setBy((e.currentTarget as HTMLSelectElement).value)}>
            {GROUPS.map(([v, l]) => <option value={v}>{l}</option>)}
          </select>
        </label>
      </p>
      <Loaded state={data}>
        {(d) => {
          if (d.off) return <p class="muted">{d.off.charAt(0).toUpperCase() + d.off.slice(1)}.</p>;
          if (d.top.length === 0) return <p class="muted">No flows in this window.</p>;
          const buckets = [...new Set(d.rate.map((r) => r.bucket_ms))].sort((a, b) => a - b);
          const groups = [...new Set(d.rate.map((r) => label(r.group)))];
          const series = groups.map((g) => ({
            label: g,
            unit: " B/s",
            values: buckets.map((b) => d.rate.find((r) => r.bucket_ms === b && label(r.group) === g)?.bytes_per_second ?? 0),
          }));
          return (
            <>
              {buckets.length > 0 && (
                <section aria-labelledby="h-rate">
                  <h2 id="h-rate">Bytes/s of the top {groups.length}</h2>
                  <LineChart
                    label={`Bytes per second by ${by}`}
                    x={buckets}
                    series={series}
                    xRange={[d.end - windowMs(since), d.end]}
                    format={(v) => `${bytes(v)}/s`}
                  />
                </section>
              )}
              <section aria-labelledby="h-top">
                <h2 id="h-top">Top by bytes</h2>
                <TopTable rows={d.top} heading={GROUPS.find(([v]) => v === by)?.[1] ?? by} label={(r) => label(r.group)} />
              </section>
            </>
          );
        }}
      </Loaded>
    </>
  );
}
