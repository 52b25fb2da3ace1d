import * as api from "../api";
import type { AuditInfo, ComponentSummary, Incident, TopRow } from "../types";
import { ComponentTable, TopTable } from "../tables";
import { Loaded, ago, useLoad } from "../util";

/** Health, components, the latest compliance, open incidents and top talkers at a glance. */
export function Overview() {
  const healthy = useLoad(() => api.health());
  const components = useLoad(() => api.get<{ components: ComponentSummary[] }>("/components"));
  const audits = useLoad(() => api.get<{ audits: AuditInfo[] }>("/compliance/audits"));
  const incidents = useLoad(() => api.get<{ incidents: Incident[] }>("/incidents?status=open&limit=20"));
  const talkers = useLoad(async () => {
    const status = await api.get<{ enabled?: boolean; reason?: string }>("/flows/status");
    if (status.enabled === false) return { rows: [] as TopRow[], off: status.reason };
    return { ...(await api.get<{ rows: TopRow[] }>("/flows/top?since=15m&by=src_addr&limit=10")), off: undefined };
  });
  return (
    <>
      <h1>Overview</h1>
      <div class="cards">
        <section class="card" aria-labelledby="h-health">
          <h2 id="h-health">Health</h2>
          <Loaded state={healthy}>{(ok) => <p class={ok ? "ok big" : "error big"}>{ok ? "Serving" : "Not answering"}</p>}</Loaded>
        </section>
        <section class="card" aria-labelledby="h-compliance">
          <h2 id="h-compliance">Compliance</h2>
          <Loaded state={audits}>
            {(d) => {
              const last = d.audits[d.audits.length - 1];
              return last ? (
                <p>
                  <span class="big">{last.summary.percent_devices.toFixed(0)} %</span> of {last.summary.devices} devices compliant
                  <br />
                  <small>audit {last.id}, {ago(last.finished_ms)}</small>
                </p>
              ) : (
                <p class="muted">No audit yet.</p>
              );
            }}
          </Loaded>
        </section>
        <section class="card" aria-labelledby="h-incidents">
          <h2 id="h-incidents">Open incidents</h2>
          <Loaded state={incidents}>
            {(d) =>
              d.incidents.length === 0 ? (
                <p class="muted">None.</p>
              ) : (
                <ul class="plain">
                  {d.incidents.map((i) => (
                    <li>
                      <a href={`#/incidents/${i.id}`}>{i.title}</a> <small>{ago(i.opened_ms)}</small>
                    </li>
                  ))}
                </ul>
              )
            }
          </Loaded>
        </section>
      </div>
      <section aria-labelledby="h-components">
        <h2 id="h-components">Components</h2>
        <Loaded state={components}>
          {(d) =>
            d.components.length === 0 ? (
              <p class="muted">No components yet: upload one on the Components page.</p>
            ) : (
              <ComponentTable components={d.components} />
            )
          }
        </Loaded>
      </section>
      <section aria-labelledby="h-talkers">
        <h2 id="h-talkers">Top talkers, last 15 minutes</h2>
        <Loaded state={talkers}>
          {(d) =>
            d.off ? (
              <p class="muted">{d.off.charAt(0).toUpperCase() + d.off.slice(1)}.</p>
            ) : d.rows.length === 0 ? (
              <p class="muted">No flows in the last 15 minutes.</p>
            ) : (
              <TopTable rows={d.rows} heading="Source" label={(r) => String(r.group.src_addr ?? "—")} />
            )
          }
        </Loaded>
      </section>
    </>
  );
}
