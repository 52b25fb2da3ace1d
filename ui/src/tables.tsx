import type { ComponentSummary, TopRow } from "./types";
import { Badge, ago, bytes } from "./util";

/** The tenant's components with their state, version and last error (overview, components). */
export function ComponentTable(props: { components: ComponentSummary[] }) {
  return (
    <table>
      <thead>
        <tr><th>Name</th><th>State</th><th>Version</th><th>Last error</th></tr>
      </thead>
      <tbody>
        {props.components.map((c) => (
          <tr>
            <td><a href={`#/components/${encodeURIComponent(c.name)}`}>{c.name}</a></td>
            <td><Badge kind={c.state}>{c.state}</Badge></td>
            <td>{c.active_version ?? "—"} {c.active_label && <small>({c.active_label})</small>}</td>
            <td class="wrap">{c.last_error ? `${c.last_error.message} (${ago(c.last_error.at_ms)})` : "—"}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}

/** Flow groups with their totals (overview, flows); `label` names a row's group. */
export function TopTable(props: { rows: TopRow[]; heading: string; label: (r: TopRow) => string }) {
  return (
    <table>
      <thead>
        <tr><th>{props.heading}</th><th class="num">Bytes</th><th class="num">Packets</th><th class="num">Flows</th></tr>
      </thead>
      <tbody>
        {props.rows.map((r) => (
          <tr>
            <td>{props.label(r)}</td>
            <td class="num">{bytes(r.bytes)}</td>
            <td class="num">{r.packets}</td>
            <td class="num">{r.flows}</td>
          </tr>
        ))}
      </tbody>
    </table>
  );
}
