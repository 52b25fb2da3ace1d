import { useState } from "preact/hooks";
import * as api from "../api";
import { Loaded, ago, time, useLoad } from "../util";

interface Revision { commit: string; at_ms: number; author: string; message: string }

/** Devices with configuration backups; a device's history and the diff between revisions. */
export function Backups() {
  const list = useLoad(() => api.get<{ devices: { device: string; latest: Revision; revisions: number }[] }>("/backups"));
  return (
    <>
      <h1>Backups</h1>
      <Loaded state={list}>
        {(d) =>
          d.devices.length === 0 ? (
            <p class="muted">No backups yet.</p>
          ) : (
            <table>
              <thead>
                <tr><th>Device</th><th>Latest change</th><th class="num">Revisions</th></tr>
              </thead>
              <tbody>
                {d.devices.map((b) => (
                  <tr>
                    <td><a href={`#/backups/${encodeURIComponent(b.device)}`}>{b.device}</a></td>
                    <td>{ago(b.latest.at_ms)} <small>{b.latest.message}</small></td>
                    <td class="num">{b.revisions}</td>
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

export function BackupPage(props: { device: string }) {
  const name = encodeURIComponent(props.device);
  const history = useLoad(() => api.get<{ revisions: Revision[] }>(`/backups/${name}`), [props.device]);
  const [pick, setPick] = useState<{ from?: string; to?: string }>({});
  const diff = useLoad(
    () => api.getText(`/backups/${name}/diff${pick.from && pick.to ? `?from=${pick.from}&to=${pick.to}` : ""}`),
    [props.device, pick.from, pick.to],
  );
  const text = useLoad(() => api.getText(`/backups/${name}/text${pick.to ? `?at=${pick.to}` : ""}`), [props.device, pick.to]);
  return (
    <>
      <p><a href="#/backups">← Backups</a></p>
      <h1>{props.device}</h1>
      <Loaded state={history}>
        {(h) => (
          <table>
            <thead>
              <tr><th>When</th><th>Commit</th><th>Message</th><th>Compare</th></tr>
            </thead>
            <tbody>
              {h.revisions.map((r, i) => (
                <tr>
                  <td>{time(r.at_ms)}</td>
                  <td><code>{r.commit.slice(0, 10)}</code></td>
                  <td class="wrap">{r.message}</td>
                  <td>
                    {i + 1 < h.revisions.length && (
                      <button onClick={() => setPick({ from: h.revisions[i + 1].commit, to: r.commit })}>Diff with the one before</button>
                    )}
                  </td>
                </tr>
              ))}
            </tbody>
          </table>
        )}
      </Loaded>
      <div class="side-by-side">
        <section aria-labelledby="h-diff">
          <h2 id="h-diff">Changes</h2>
          <Loaded state={diff}>
            {(t) =>
              t.trim() ? (
                <pre class="config diff-text" aria-label="diff">
                  {t.split("\n").map((l) => (
                    <span class={l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : ""}>{l + "\n"}</span>
                  ))}
                </pre>
              ) : (
                <p class="muted">Only one revision: nothing to compare.</p>
              )
            }
          </Loaded>
        </section>
        <section aria-labelledby="h-text">
          <h2 id="h-text">Configuration</h2>
          <Loaded state={text}>{(t) => <pre class="config" aria-label="configuration">{t}</pre>}</Loaded>
        </section>
      </div>
    </>
  );
}
