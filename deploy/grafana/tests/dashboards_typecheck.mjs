// Type-checks llmc's Grafana dashboards (deploy/grafana/dashboards/*.json) against npm @grafana/schema with the
// TypeScript compiler, and checks llmc's own rules. A plain JSON import would widen every string and miss enum
// errors, so each file is written into a .ts module as a literal that `satisfies` the schema's types:
//
//   1. the whole dashboard satisfies JsonOf<Dashboard> (JsonOf turns the schema's enums into the literal values a
//      JSON file holds; object literals get excess-property checks, so an unknown key fails too);
//   2. each panel's `options` and `fieldConfig.defaults.custom` satisfy the panel plugin's own Options and
//      FieldConfig (timeseries, stat, table), and each target a Prometheus query type (refId, expr, ...);
//   3. llmc's rules: a `datasource` variable of type datasource (prometheus) that every panel and target uses as
//      ${datasource}; every panel has a title, a description and a unit; ids unique; panels within 24 columns;
//   4. broken copies (an enum value that does not exist, an unknown key, a wrong option) must FAIL tsc, so the
//      check is known to catch them.
//
//   node dashboards_typecheck.mjs ../dashboards        (deploy/grafana/tests/dashboards_typecheck.sh runs it)
import { execFileSync } from "node:child_process";
import { mkdirSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { basename, dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const HERE = dirname(fileURLToPath(import.meta.url));
const dir = resolve(process.argv[2] ?? join(HERE, "..", "dashboards"));
const OUT = join(HERE, ".tsc-dashboards");
const PANEL_TYPES = { timeseries: "TimeSeries", stat: "Stat", table: "Table" };

const PRELUDE = `import type { Dashboard } from "@grafana/schema";
import type { Options as TimeSeriesOptions, FieldConfig as TimeSeriesFieldConfig } from "@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen";
import type { Options as StatOptions } from "@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen";
import type { Options as TableOptions, FieldConfig as TableFieldConfig } from "@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen";

// What a JSON file can hold for a schema type: string enums become their string values, numeric enums their
// numbers; objects and arrays recursively (optional keys stay optional).
type JsonOf<T> =
  T extends string ? \`\${T}\` :
  T extends number ? (\`\${T}\` extends \`\${infer N extends number}\` ? N : never) :
  T extends boolean | null | undefined ? T :
  T extends ReadonlyArray<infer U> ? Array<JsonOf<U>> :
  T extends object ? { [K in keyof T]: JsonOf<T[K]> } :
  T;

// A Prometheus query of a panel (the Prometheus data source plugin's fields that llmc's dashboards use).
interface PrometheusTarget {
  refId: string;
  datasource: { type: "prometheus"; uid: "\${datasource}" };
  expr: string;
  editorMode?: "code" | "builder";
  legendFormat?: string;
  range?: boolean;
  instant?: boolean;
  format?: "time_series" | "table" | "heatmap";
  interval?: string;
}
type StatFieldConfig = Record<string, never>;
`;

// The .ts module of one dashboard: the dashboard, then each panel's parts against its plugin's types.
function moduleOf(name, d) {
  let ts = `export const dashboard = ${JSON.stringify(d, null, 2)} satisfies JsonOf<Dashboard>;\n`;
  for (const p of d.panels ?? []) {
    if (p.type === "row") continue;
    const t = PANEL_TYPES[p.type];
    if (!t) throw new Error(`${name}: panel ${p.id} "${p.title}": type ${p.type} is not one llmc's dashboards use`);
    ts += `export const panel${p.id}Options = ${JSON.stringify(p.options)} satisfies JsonOf<${t}Options>;\n`;
    if (p.fieldConfig?.defaults?.custom !== undefined)
      ts += `export const panel${p.id}Custom = ${JSON.stringify(p.fieldConfig.defaults.custom)} satisfies JsonOf<Partial<${t}FieldConfig>>;\n`;
    (p.targets ?? []).forEach((q, i) => {
      ts += `export const panel${p.id}Target${i} = ${JSON.stringify(q)} satisfies PrometheusTarget;\n`;
    });
  }
  return PRELUDE + ts;
}

// llmc's rules; returns the problems found.
function rules(name, d) {
  const bad = [];
  const vars = d.templating?.list ?? [];
  const ds = vars.find((v) => v.name === "datasource");
  if (!ds || ds.type !== "datasource" || ds.query !== "prometheus")
    bad.push(`${name}: no 'datasource' variable of type datasource with query prometheus`);
  for (const v of vars)
    if (v.type === "query" && v.datasource?.uid !== "${datasource}")
      bad.push(`${name}: variable ${v.name} does not query \${datasource}`);
  const ids = new Set();
  for (const p of d.panels ?? []) {
    const where = `${name}: panel ${p.id} "${p.title}"`;
    if (ids.has(p.id)) bad.push(`${where}: duplicate id`);
    ids.add(p.id);
    const g = p.gridPos;
    if (!g || g.x < 0 || g.w < 1 || g.x + g.w > 24 || g.h < 1) bad.push(`${where}: gridPos outside 24 columns`);
    if (p.type === "row") continue;
    if (!p.title) bad.push(`${where}: no title`);
    if (!p.description) bad.push(`${where}: no description`);
    if (!p.fieldConfig?.defaults?.unit) bad.push(`${where}: no unit`);
    if (p.datasource?.uid !== "${datasource}") bad.push(`${where}: datasource is not \${datasource}`);
    if (!p.targets?.length) bad.push(`${where}: no query`);
    for (const q of p.targets ?? [])
      if (q.datasource?.uid !== "${datasource}") bad.push(`${where}: target ${q.refId} does not use \${datasource}`);
  }
  return bad;
}

// Runs tsc on `files`; returns [ok, output].
function tsc(files) {
  const bin = join(HERE, "node_modules", "typescript", "bin", "tsc");
  try {
    execFileSync(process.execPath, [bin, "--noEmit", "--strict", "--target", "es2022", "--module", "nodenext",
      "--moduleResolution", "nodenext", "--skipLibCheck", ...files], { cwd: HERE, encoding: "utf8" });
    return [true, ""];
  } catch (e) {
    return [false, `${e.stdout ?? ""}${e.stderr ?? ""}`];
  }
}

rmSync(OUT, { recursive: true, force: true });
mkdirSync(OUT, { recursive: true });
writeFileSync(join(OUT, "package.json"), '{"type": "module"}\n');
const names = readdirSync(dir).filter((f) => f.endsWith(".json")).sort();
if (names.length === 0) throw new Error(`no dashboards in ${dir}`);
const problems = [];
const files = [];
const dashboards = {};
for (const n of names) {
  const d = JSON.parse(readFileSync(join(dir, n), "utf8"));
  dashboards[n] = d;
  problems.push(...rules(n, d));
  const f = join(OUT, basename(n, ".json") + ".ts");
  writeFileSync(f, moduleOf(n, d));
  files.push(f);
}
const [ok, out] = tsc(files);
if (!ok) problems.push(`tsc found type errors:\n${out}`);
else console.log(`tsc: ${names.length} dashboards satisfy @grafana/schema (${names.join(", ")})`);

// Broken copies must fail.
const first = names[0];
const broken = [
  ["graphTooltip 7 (not a DashboardCursorSync)", (d) => { d.graphTooltip = 7; }],
  ["a variable of type 'querry'", (d) => { d.templating.list[1].type = "querry"; }],
  ["an unknown dashboard key", (d) => { d.refreshEvery = "30s"; }],
  ["tooltip mode 'several'", (d) => { d.panels.find((p) => p.type === "timeseries").options.tooltip.mode = "several"; }],
  ["stat colorMode 'rainbow'", (d) => { d.panels.find((p) => p.type === "stat").options.colorMode = "rainbow"; }],
  ["thresholds mode 'relative'", (d) => {
    d.panels.find((p) => p.fieldConfig?.defaults?.thresholds).fieldConfig.defaults.thresholds.mode = "relative"; }],
  ["a target with 'query' instead of 'expr'", (d) => {
    const q = d.panels.find((p) => p.targets).targets[0]; q.query = q.expr; delete q.expr; }],
];
// One tsc run over all broken copies; each must have an error of its own (not one of the setup).
const brokenFiles = broken.map(([what, change], i) => {
  const d = structuredClone(dashboards[first]);
  change(d);
  const f = join(OUT, `broken${i}.ts`);
  writeFileSync(f, moduleOf(`broken${i}`, d));
  return f;
});
const [brokenOk, brokenOut] = tsc(brokenFiles);
broken.forEach(([what], i) => {
  if (brokenOk || !new RegExp(`broken${i}\\.ts\\(\\d+,\\d+\\): error TS`).test(brokenOut))
    problems.push(`a copy of ${first} with ${what} passed tsc; the check does not catch it`);
  else console.log(`must fail: ${what}: rejected`);
});
if (problems.length) {
  console.error(problems.join("\n"));
  process.exit(1);
}
console.log("llmc's dashboard rules: ok");
