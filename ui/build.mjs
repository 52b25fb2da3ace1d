// Builds the web UI into dist/: one ES module bundle per entry (code split, so the editor's
// CodeMirror loads only with the editor), minified, each also gzipped (sotp serves the .gz to
// browsers that accept it). Prints what the first load costs: the JavaScript the sign-in and
// overview pages fetch, gzipped (budget: 300 KB).
//
// Why these libraries (each also the smallest well-kept one for its job):
// - Preact: React's component model in ~4 KB; no runtime dependency tree to audit.
// - CodeMirror 6 (@codemirror/*): the editor with real YAML and Jinja2 grammars, lint
//   diagnostics at a line (the API's validation errors), a merge view for diffs; modular, so
//   only what is used is bundled.
// - uPlot: time-series charts in ~45 KB, fast with many points (flows' bytes/s).
// - esbuild: TypeScript + JSX to a bundle in well under a second; tsc only type-checks.
import * as esbuild from "esbuild";
import { gzipSync } from "node:zlib";
import { copyFileSync, mkdirSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from "node:fs";
import { join } from "node:path";

const dist = new URL("./dist/", import.meta.url).pathname;
rmSync(dist, { recursive: true, force: true });
mkdirSync(dist, { recursive: true });

const result = await esbuild.build({
  entryPoints: { app: "src/main.tsx" },
  bundle: true,
  splitting: true,
  format: "esm",
  minify: true,
  sourcemap: false,
  target: ["es2022"],
  outdir: dist,
  entryNames: "[name]",
  chunkNames: "chunk-[hash]",
  assetNames: "[name]",
  jsx: "automatic",
  jsxImportSource: "preact",
  loader: { ".css": "css" },
  metafile: true,
  legalComments: "none",
  logLevel: "warning",
});
copyFileSync("index.html", join(dist, "index.html"));

// The RUM script pages embed (served at /rum.js): one classic script, no imports, old
// enough JavaScript for the browsers real users have.
await esbuild.build({
  entryPoints: { rum: "rum/rum.ts" },
  bundle: true,
  format: "iife",
  minify: true,
  target: ["es2019"],
  outdir: dist,
  legalComments: "none",
  logLevel: "warning",
});

for (const name of readdirSync(dist)) {
  const path = join(dist, name);
  if (statSync(path).isFile() && !name.endsWith(".gz")) {
    writeFileSync(path + ".gz", gzipSync(readFileSync(path), { level: 9 }));
  }
}

// The first load: app.js, app.css and the chunks app.js imports statically.
const outputs = result.metafile.outputs;
const first = new Set();
const visit = (file) => {
  if (first.has(file)) return;
  first.add(file);
  for (const i of outputs[file]?.imports ?? []) if (i.kind === "import-statement") visit(i.path);
};
const appJs = Object.keys(outputs).find((f) => f.endsWith("/app.js"));
visit(appJs);
let js = 0;
for (const f of first) js += gzipSync(readFileSync(f), { level: 9 }).length;
const kb = (n) => (n / 1024).toFixed(1);
console.log(`ui: first load JavaScript ${kb(js)} KB gzipped (budget 300 KB), ${first.size} file(s)`);
const rum = gzipSync(readFileSync(join(dist, "rum.js")), { level: 9 }).length;
console.log(`rum.js: ${kb(rum)} KB gzipped (budget 40 KB)`);
writeFileSync(
  join(dist, "size.json"),
  JSON.stringify({ first_load_js_gzip_bytes: js, rum_js_gzip_bytes: rum }) + "\n",
);
if (js > 300 * 1024) {
  console.error("ui: the first load is over its 300 KB budget");
  process.exit(1);
}
if (rum > 40 * 1024) {
  console.error("rum.js is over its 40 KB budget");
  process.exit(1);
}
