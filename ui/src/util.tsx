import { useEffect, useState, useRef } from "preact/hooks";
import type { ComponentChildren } from "preact";
import { ApiError } from "./api";

/** A value loaded from the API, with its loading and error states. */
export function useLoad<T>(load: () => Promise<T>, deps: unknown[] = []) {
  const [state, setState] = useState<{ data?: T; error?: string; loading: boolean }>({ loading: true });
  const [tick, setTick] = useState(0);
  useEffect(() => {
    let live = true;
    setState((s) => ({ ...s, loading: true }));
    load().then(
      (data) => live && setState({ data, loading: false }),
      (e) => live && setState({ error: message(e), loading: false }),
    );
    return () => {
      live = false;
    };
  }, [...deps, tick]);
  return { ...state, reload: () => setTick((t) => t + 1) };
}

export function message(e: unknown): string {
  if (e instanceof ApiError) return e.message;
  return e instanceof Error ? e.message : String(e);
}

/** Loading, error or the content. */
export function Loaded<T>(props: { state: { data?: T; error?: string; loading: boolean }; children: (data: T) => ComponentChildren }) {
  const { state } = props;
  if (state.error) return <p class="error" role="alert">{state.error}</p>;
  if (state.data === undefined) return <p class="loading" aria-busy="true">Loading…</p>;
  return <>{props.children(state.data)}</>;
}

export function time(ms: number | null | undefined): string {
  if (!ms) return "—";
  return new Date(ms).toISOString().replace("T", " ").slice(0, 19) + "Z";
}

export function ago(ms: number | null | undefined): string {
  if (!ms) return "—";
  const s = Math.round((Date.now() - ms) / 1000);
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} d ago`;
}

export function bytes(n: number): string {
  const units = ["B", "KB", "MB", "GB", "TB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) {
    n /= 1000;
    i++;
  }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${units[i]}`;
}

/**
 * A table that renders only the rows in view (fixed row height), so 10,000 rows scroll as
 * smoothly as 10. Its header stays; rows are real table rows for screen readers.
 */
export function VirtualTable<T>(props: {
  rows: T[];
  head: ComponentChildren;
  row: (r: T, i: number) => ComponentChildren;
  rowHeight?: number;
  height?: number;
  label: string;
}) {
  const rowHeight = props.rowHeight ?? 34;
  const height = props.height ?? 560;
  const box = useRef<HTMLDivElement>(null);
  const [top, setTop] = useState(0);
  const overscan = 10;
  const first = Math.max(0, Math.floor(top / rowHeight) - overscan);
  const last = Math.min(props.rows.length, Math.ceil((top + height) / rowHeight) + overscan);
  return (
    <div
      class="virtual"
      ref={box}
      style={{ maxHeight: `${height}px` }}
      onScroll={(e) => setTop((e.currentTarget as HTMLDivElement).scrollTop)}
      tabIndex={0}
      aria-label={props.label}
    >
      <table>
        <thead>{props.head}</thead>
        <tbody>
          {first > 0 && <tr style={{ height: `${first * rowHeight}px` }} aria-hidden="true" />}
          {props.rows.slice(first, last).map((r, i) => props.row(r, first + i))}
          {last < props.rows.length && (
            <tr style={{ height: `${(props.rows.length - last) * rowHeight}px` }} aria-hidden="true" />
          )}
        </tbody>
      </table>
    </div>
  );
}

export function Badge(props: { kind: string; children: ComponentChildren }) {
  return <span class={`badge ${props.kind}`}>{props.children}</span>;
}
