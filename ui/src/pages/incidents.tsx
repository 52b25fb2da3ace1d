import { useState } from "preact/hooks";
import * as api from "../api";
import type { Device, Incident, IncidentDetail } from "../types";
import { Badge, Loaded, ago, message, time, useLoad } from "../util";

export function Incidents() {
  const [status, setStatus] = useState("open");
  const list = useLoad(() => api.get<{ incidents: Incident[] }>(`/incidents?limit=500${status ? `&status=${status}` : ""}`), [status]);
  return (
    <>
      <h1>Incidents</h1>
      <label>
        Show{" "}
        <select value={status} onChange={(e) => setStatus((e.currentTarget as HTMLSelectElement).value)}>
          <option value="open">open</option>
          <option value="resolved">resolved</option>
          <option value="">all</option>
        </select>
      </label>
      <Loaded state={list}>
        {(d) =>
          d.incidents.length === 0 ? (
            <p class="muted">No incidents.</p>
          ) : (
            <table>
              <thead>
                <tr><th>#</th><th>Title</th><th>Root</th><th>Status</th><th>Opened</th><th class="num">Children</th></tr>
              </thead>
              <tbody>
                {d.incidents.map((i) => (
                  <tr>
                    <td>{i.id}</td>
                    <td><a href={`#/incidents/${i.id}`}>{i.title}</a></td>
                    <td>{i.root}</td>
                    <td>
                      <Badge kind={i.status}>{i.status}</Badge> {i.acknowledged && <Badge kind="ack">acknowledged</Badge>}
                    </td>
                    <td>{ago(i.opened_ms)}</td>
                    <td class="num">{i.children.length}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          )
        }
      </Loaded>
    </>
  );
}

export function IncidentPage(props: { id: string }) {
  const detail = useLoad(() => api.get<IncidentDetail>(`/incidents/${encodeURIComponent(props.id)}`), [props.id]);
  const devices = useLoad(() => api.get<{ devices: Device[] }>("/devices"));
  const [error, setError] = useState<string | null>(null);
  const act = async (what: "acknowledge" | "resolve") => {
    setError(null);
    try {
      await api.post(`/incidents/${encodeURIComponent(props.id)}/${what}`);
      detail.reload();
    } catch (e) {
      setError(message(e));
    }
  };
  return (
    <Loaded state={detail}>
      {(i) => (
        <>
          <p><a href="#/incidents">← Incidents</a></p>
          <h1>{i.title}</h1>
          <p>
            <Badge kind={i.status}>{i.status}</Badge> {i.acknowledged && <Badge kind="ack">acknowledged</Badge>} root cause{" "}
            <strong>{i.root}</strong>, opened {time(i.opened_ms)}
            {i.closed_ms && `, closed ${time(i.closed_ms)}`} by <code>{i.policy}</code>
          </p>
          {i.status === "open" && (
            <p class="actions">
              {!i.acknowledged && <button onClick={() => act("acknowledge")}>Acknowledge</button>}
              <button onClick={() => act("resolve")}>Resolve</button>
            </p>
          )}
          {error && <p class="error" role="alert">{error}</p>}
          <section aria-labelledby="h-graph">
            <h2 id="h-graph">Affected topology</h2>
            <Loaded state={devices}>{(d) => <TopologyGraph root={i.root} children={i.children} devices={d.devices} />}</Loaded>
          </section>
          <section aria-labelledby="h-alerts">
            <h2 id="h-alerts">Alerts ({i.alerts.length})</h2>
            <table>
              <thead>
                <tr><th>Device</th><th>Role</th><th>Reason</th><th>Added</th><th>Resolved</th></tr>
              </thead>
              <tbody>
                {i.alerts.map((a) => (
                  <tr>
                    <td>{a.device ?? "—"}</td>
                    <td><Badge kind={a.role}>{a.role === "child" ? "suppressed" : a.role}</Badge></td>
                    <td class="wrap">{a.reason}</td>
                    <td>{time(a.added_ms)}</td>
                    <td>{time(a.resolved_ms)}</td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
          <section aria-labelledby="h-timeline">
            <h2 id="h-timeline">Timeline</h2>
            <ol class="timeline">
              {i.timeline.map((e) => (
                <li>
                  <time>{time(e.at_ms)}</time> <strong>{e.kind}</strong> {e.detail}
                </li>
              ))}
            </ol>
          </section>
        </>
      )}
    </Loaded>
  );
}

/** The root and its suppressed children, in layers by dependency (a device below the ones
 * it needs), edges from the inventory's parents and redundancy groups. */
export function TopologyGraph(props: { root: string; children: string[]; devices: Device[] }) {
  const inSet = new Set([props.root, ...props.children]);
  const byName = new Map(props.devices.map((d) => [d.name, d]));
  const needs = (name: string) => {
    const d = byName.get(name);
    return [...(d?.parents ?? []), ...(d?.redundancy_groups ?? []).flat()].filter((p) => inSet.has(p));
  };
  const depth = new Map<string, number>();
  const depthOf = (name: string, seen: Set<string>): number => {
    if (depth.has(name)) return depth.get(name)!;
    if (name === props.root || seen.has(name)) return 0;
    seen.add(name);
    const ps = needs(name);
    const d = ps.length ? 1 + Math.max(...ps.map((p) => depthOf(p, seen))) : 1;
    depth.set(name, d);
    return d;
  };
  depth.set(props.root, 0);
  for (const c of props.children) depthOf(c, new Set());
  const layers: string[][] = [];
  for (const [name, d] of depth) (layers[d] ??= []).push(name);
  // Each layer in the order of the devices it hangs from (fewer crossing edges), then by name.
  const order = new Map<string, number>();
  layers.forEach((l, d) => {
    const at = (n: string) => {
      const ps = needs(n).filter((p) => order.has(p));
      return ps.length ? ps.reduce((s, p) => s + order.get(p)!, 0) / ps.length : 0;
    };
    l.sort((a, b) => (d === 0 ? 0 : at(a) - at(b)) || a.localeCompare(b));
    l.forEach((n, i) => order.set(n, i));
  });
  const shown = layers.map((l) => l.slice(0, 40));
  const w = 130, h = 70;
  const width = Math.max(...shown.map((l) => l.length), 1) * w + 20;
  const height = shown.length * h + 20;
  const pos = new Map<string, [number, number]>();
  shown.forEach((l, y) => l.forEach((n, x) => pos.set(n, [10 + x * w + (width - 20 - l.length * w) / 2 + w / 2, 10 + y * h + 20])));
  const edges: [string, string][] = [];
  for (const n of pos.keys()) for (const p of needs(n)) if (pos.has(p)) edges.push([p, n]);
  const hidden = layers.reduce((s, l) => s + Math.max(0, l.length - 40), 0);
  return (
    <figure class="graph">
      <svg viewBox={`0 0 ${width} ${height}`} width={Math.min(width, 1200)} role="img" aria-label={`${props.root} and the ${props.children.length} devices behind it`}>
        {edges.map(([a, b]) => {
          const [x1, y1] = pos.get(a)!;
          const [x2, y2] = pos.get(b)!;
          return <line x1={x1} y1={y1 + 12} x2={x2} y2={y2 - 12} class="edge" />;
        })}
        {[...pos].map(([n, [x, y]]) => (
          <g class={n === props.root ? "node root" : "node"}>
            <rect x={x - 55} y={y - 12} width={110} height={24} rx={5} />
            <text x={x} y={y + 4} text-anchor="middle">{n.length > 16 ? n.slice(0, 15) + "…" : n}</text>
          </g>
        ))}
      </svg>
      <figcaption>
        <strong>{props.root}</strong> (root cause) and {props.children.length} suppressed {props.children.length === 1 ? "device" : "devices"}
        {hidden > 0 && ` (${hidden} more not drawn)`}
      </figcaption>
    </figure>
  );
}
