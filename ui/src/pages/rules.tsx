import { useEffect, useState } from "preact/hooks";
import type { FunctionComponent } from "preact";
import * as api from "../api";
import type { RuleFileInfo } from "../types";
import { Loaded, message, useLoad } from "../util";

/** The tenant's rule files; a new one by name. */
export function Rules() {
  const files = useLoad(() => api.get<{ files: RuleFileInfo[] }>("/compliance/rules"));
  const [name, setName] = useState("");
  return (
    <>
      <h1>Golden-config rules</h1>
      <form
        class="actions"
        onSubmit={(e) => {
          e.preventDefault();
          const n = name.trim();
          if (n) location.hash = `#/rules/${encodeURIComponent(n.endsWith(".yaml") ? n : `${n}.yaml`)}`;
        }}
      >
        <label>New rule file <input value={name} onInput={(e) => setName((e.currentTarget as HTMLInputElement).value)} placeholder="ntp.yaml" /></label>
        <button type="submit" disabled={!name.trim()}>Create</button>
      </form>
      <Loaded state={files}>
        {(d) =>
          d.files.length === 0 ? (
            <p class="muted">No rule files yet.</p>
          ) : (
            <table>
              <thead>
                <tr><th>File</th><th>Active version</th><th>Latest version</th></tr>
              </thead>
              <tbody>
                {d.files.map((f) => (
                  <tr>
                    <td><a href={`#/rules/${encodeURIComponent(f.file)}`}>{f.file}</a></td>
                    <td>{f.active_version ?? "none"}</td>
                    <td>{f.latest_version}</td>
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

/** The editor, loaded on first use (CodeMirror stays out of the first load). */
export function LazyEditor(props: { file: string }) {
  const [Editor, setEditor] = useState<FunctionComponent<{ file: string }> | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    import("./editor").then(
      (m) => setEditor(() => m.RuleEditor),
      (e) => setError(message(e)),
    );
  }, []);
  if (error) return <p class="error" role="alert">{error}</p>;
  return Editor ? <Editor file={props.file} /> : <p class="loading">Loading the editor…</p>;
}
