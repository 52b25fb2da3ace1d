import { useState } from "preact/hooks";
import * as api from "../api";
import { message } from "../util";

/** Sign-in with a tenant token (or the admin token). The token goes to the server once; the
 * browser keeps only the HttpOnly session cookie it answers with. */
export function SignIn(props: { notice: string | null; onSignedIn: (s: api.Session) => void }) {
  const [token, setToken] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      props.onSignedIn(await api.signIn(token.trim()));
    } catch (err) {
      setError(message(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="signin">
      <h1>SOTP</h1>
      {props.notice && <p class="notice" role="status">{props.notice}</p>}
      <form onSubmit={submit}>
        <label for="token">API token</label>
        <input
          id="token"
          type="password"
          autocomplete="off"
          value={token}
          onInput={(e) => setToken((e.currentTarget as HTMLInputElement).value)}
          required
        />
        <button type="submit" disabled={busy || !token.trim()}>
          {busy ? "Signing in…" : "Sign in"}
        </button>
        {error && <p class="error" role="alert">{error}</p>}
      </form>
      <p class="hint">A tenant token (<code>sotp token create</code>), or the admin token to act for any tenant.</p>
    </main>
  );
}
