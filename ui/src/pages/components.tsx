import { useState } from "preact/hooks";
import * as api from "../api";
import type { ComponentSummary } from "../types";
import { ComponentTable } from "../tables";
import { Badge, Loaded, message, time, useLoad } from "../util";

export function Components() {
  const list = useLoad(() => api.get<{ components: ComponentSummary[] }>("/components"));
  return (
    <>
      <h1>Components</h1>
      <Upload onDone={list.reload} />
      <Loaded state={list}>
        {(d) =>
          d.components.length === 0 ? (
            <p class="muted">No components yet.</p>
          ) : (
            <ComponentTable components={d.components} />
          )
        }
      </Loaded>
    </>
  );
}

/** Upload a component: drop its manifest (.toml) and its .wasm together, or pick them. */
function Upload(props: { onDone: () => void }) {
  const [files, setFiles] = useState<{ manifest?: File; wasm?: File }>({});
  const [over, setOver] = useState(false);
  const [activate, setActivate] = useState(true);
  const [state, setState] = useState<{ busy?: boolean; error?: string; done?: string }>({});
  const take = (list: FileList | null) => {
    const next = { ...files };
    for (const f of Array.from(list ?? [])) {
      if (f.name.endsWith(".wasm")) next.wasm = f;
      else if (f.name.endsWith(".toml")) next.manifest = f;
    }
    setFiles(next);
    setState({});
  };
  const upload = async () => {
    if (!files.manifest || !files.wasm) return;
    setState({ busy: true });
    const form = new FormData();
    form.append("manifest", new Blob([await files.manifest.text()], { type: "application/toml" }), files.manifest.name);
    form.append("wasm", files.wasm, files.wasm.name);
    try {
      const r = await api.post<{ name: string; version: number }>(`/components?activate=${activate}`, form);
      setState({ done: `Uploaded ${r.name} version ${r.version}${activate ? ", active" : ""}.` });
      setFiles({});
      props.onDone();
    } catch (e) {
      setState({ error: message(e) });
    }
  };
  return (
    <section
      class={over ? "drop over" : "drop"}
      aria-labelledby="h-upload"
      onDragOver={(e) => {
        e.preventDefault();
        setOver(true);
      }}
      onDragLeave={() => setOver(false)}
      onDrop={(e) => {
        e.preventDefault();
        setOver(false);
        take(e.dataTransfer?.files ?? null);
      }}
      data-testid="dropzone"
    >
      <h2 id="h-upload">Upload a component</h2>
      <p>Drop its manifest (<code>sotp.toml</code>) and its <code>.wasm</code> here, or choose them:</p>
      <label>
        Files <input type="file" multiple accept=".toml,.wasm" onChange={(e) => take((e.currentTarget as HTMLInputElement).files)} />
      </label>
      <p>
        Manifest: <strong>{files.manifest?.name ?? "—"}</strong>, component: <strong>{files.wasm?.name ?? "—"}</strong>
      </p>
      <label>
        <input type="checkbox" checked={activate} onChange={(e) => setActivate((e.currentTarget as HTMLInputElement).checked)} /> Activate
        after upload
      </label>{" "}
      <button disabled={!files.manifest || !files.wasm || state.busy} onClick={upload}>
        {state.busy ? "Uploading…" : "Upload"}
      </button>
      {state.error && <p class="error" role="alert">{state.error}</p>}
      {state.done && <p class="ok" role="status">{state.done}</p>}
    </section>
  );
}

interface ComponentView {
  name: string;
  state: string;
  reason?: string;
  active_version: number | null;
  versions: { version: number; label?: string; uploaded_ms?: number; sha256?: string }[];
  counters: Record<string, unknown>;
  last_error: { at_ms: number; message: string } | null;
  recent_log: { at_ms?: number; level?: string; source?: string; message?: string }[];
}

export function ComponentPage(props: { name: string }) {
  const path = `/components/${encodeURIComponent(props.name)}`;
  const view = useLoad(() => api.get<ComponentView>(`${path}?log_lines=200`), [props.name]);
  const [error, setError] = useState<string | null>(null);
  const act = async (url: string, body?: object) => {
    setError(null);
    try {
      await api.post(url, body);
      view.reload();
    } catch (e) {
      setError(message(e));
    }
  };
  return (
    <Loaded state={view}>
      {(c) => (
        <>
          <p><a href="#/components">← Components</a></p>
          <h1>{c.name}</h1>
          <p>
            <Badge kind={c.state}>{c.state}</Badge> {c.reason} active version <strong>{c.active_version ?? "none"}</strong>
          </p>
          {c.last_error && <p class="error">Last error {time(c.last_error.at_ms)}: {c.last_error.message}</p>}
          {error && <p class="error" role="alert">{error}</p>}
          <p class="actions">
            <button onClick={() => act(`${path}/rollback`)}>Roll back</button>
          </p>
          <section aria-labelledby="h-versions">
            <h2 id="h-versions">Versions</h2>
            <table>
              <thead>
                <tr><th>Version</th><th>Label</th><th>Uploaded</th><th></th></tr>
              </thead>
              <tbody>
                {c.versions.map((v) => (
                  <tr>
                    <td>{v.version}</td>
                    <td>{v.label ?? ""}</td>
                    <td>{time(v.uploaded_ms)}</td>
                    <td>
                      {v.version === c.active_version ? (
                        <Badge kind="running">active</Badge>
                      ) : (
                        <button onClick={() => act(`${path}/activate`, { version: v.version })}>Activate</button>
                      )}
                    </td>
                  </tr>
                ))}
              </tbody>
            </table>
          </section>
          <section aria-labelledby="h-counters">
            <h2 id="h-counters">Counters</h2>
            <dl class="counters">
              {Object.entries(c.counters)
                .filter(([, v]) => typeof v === "number")
                .map(([k, v]) => (
                  <div>
                    <dt>{k.replaceAll("_", " ")}</dt>
                    <dd>{String(v)}</dd>
                  </div>
                ))}
            </dl>
          </section>
          <section aria-labelledby="h-log">
            <h2 id="h-log">Log</h2>
            {c.recent_log.length === 0 ? (
              <p class="muted">Nothing logged.</p>
            ) : (
              <pre class="log">{c.recent_log.map((l) => `${time(l.at_ms)} ${l.level ?? ""} ${l.source ?? ""} ${l.message ?? ""}`).join("\n")}</pre>
            )}
          </section>
        </>
      )}
    </Loaded>
  );
}
