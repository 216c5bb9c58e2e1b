// Builds the console's front end into ../static: one script, one stylesheet, the fonts and
// index.html. The output is committed, so running the console needs no Node.js. Rebuild with
// `make console` (npm ci from package-lock.json, then this script). The build is deterministic:
// the same sources and lock file give the same bytes, and index.html records the sources' hash,
// which the tests compare with the sources in the repository.
import { build } from "esbuild";
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const out = join(here, "..", "static");

function sourceHash() {
  const hash = createHash("sha256");
  const files = ["package.json", "package-lock.json", "build.mjs",
    ...readdirSync(join(here, "src")).sort().map((f) => join("src", f))];
  for (const file of files) {
    hash.update(file + "\0");
    hash.update(readFileSync(join(here, file)).toString("utf8").replace(/\r\n/g, "\n"));
    hash.update("\0");
  }
  return hash.digest("hex").slice(0, 16);
}

rmSync(out, { recursive: true, force: true });
mkdirSync(join(out, "fonts"), { recursive: true });
await build({
  entryPoints: { console: join(here, "src", "main.jsx") },
  bundle: true, minify: true, format: "iife", target: ["chrome110", "firefox110", "safari16"],
  jsx: "automatic", jsxImportSource: "preact", outdir: out, legalComments: "none",
  external: ["/static/*"], logLevel: "warning",
});
const fonts = [
  ["@fontsource/inter/files/inter-latin-400-normal.woff2", "inter-400.woff2"],
  ["@fontsource/inter/files/inter-latin-500-normal.woff2", "inter-500.woff2"],
  ["@fontsource/inter/files/inter-latin-600-normal.woff2", "inter-600.woff2"],
  ["@fontsource/jetbrains-mono/files/jetbrains-mono-latin-400-normal.woff2", "jetbrains-mono-400.woff2"],
];
for (const [from, to] of fonts) copyFileSync(join(here, "node_modules", from), join(out, "fonts", to));
const notices = [["preact", "preact/LICENSE"], ["uPlot", "uplot/LICENSE"], ["Inter (@fontsource/inter)", "@fontsource/inter/LICENSE"],
  ["JetBrains Mono (@fontsource/jetbrains-mono)", "@fontsource/jetbrains-mono/LICENSE"]];
writeFileSync(join(out, "THIRD_PARTY_LICENSES.txt"), notices.map(([name, file]) =>
  `${name}\n${"=".repeat(name.length)}\n\n${readFileSync(join(here, "node_modules", file), "utf8").trim()}\n`).join("\n\n"));
const version = sourceHash();
const js = readFileSync(join(out, "console.js"));
const css = readFileSync(join(out, "console.css"));
const digest = (b) => createHash("sha256").update(b).digest("hex").slice(0, 10);
writeFileSync(join(out, "index.html"), `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="duckserve-console-sources" content="${version}">
<title>duckserve console</title>
<link rel="icon" href="data:image/svg+xml,%3Csvg xmlns='http://www.w3.org/2000/svg' viewBox='0 0 32 32'%3E%3Crect width='32' height='32' rx='8' fill='%23f5b82e'/%3E%3Ccircle cx='14' cy='15' r='7.5' fill='%23172033'/%3E%3Cpath d='M20.5 13.2 L27.5 15.6 L20.5 18 Z' fill='%23e8742f'/%3E%3C/svg%3E">
<link rel="stylesheet" href="/static/console.css?v=${digest(css)}">
</head>
<body>
<div id="app"></div>
<script src="/static/console.js?v=${digest(js)}"></script>
</body>
</html>
`);
console.log(`console built into ${out} (sources ${version})`);
