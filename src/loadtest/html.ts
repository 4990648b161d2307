import type { BenchReport } from "./report.js";

/**
 * The bench report as one self-contained HTML page: tables and inline SVG charts (admitted rate
 * against the limit, latency against rate, the failover timeline), no scripts, no external files.
 */

interface Series {
  name: string;
  color: string;
  points: [number, number][];
  dashed?: boolean;
}

const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"];

function esc(s: string): string {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

function nice(n: number): string {
  if (n >= 1e6) return `${(n / 1e6).toFixed(1)}M`;
  if (n >= 1e4) return `${Math.round(n / 1e3)}k`;
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}

/** A line chart in SVG. `markers` draw vertical lines (failure events) with labels. */
export function lineChart(o: {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  markers?: { x: number; label: string }[];
  logX?: boolean;
}): string {
  const W = 720;
  const H = 300;
  const L = 60;
  const R = 20;
  const T = 30;
  const B = 45;
  const all = o.series.flatMap((s) => s.points);
  if (all.length === 0) return "";
  const fx = (x: number) => (o.logX ? Math.log10(Math.max(x, 1e-9)) : x);
  const xs = all.map((p) => fx(p[0]));
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs, x0 + 1e-9);
  const y1 = Math.max(...all.map((p) => p[1]), 1e-9) * 1.1;
  const px = (x: number) => L + ((fx(x) - x0) / (x1 - x0)) * (W - L - R);
  const py = (y: number) => H - B - (y / y1) * (H - T - B);
  const parts: string[] = [];
  parts.push(`<text x="${W / 2}" y="18" text-anchor="middle" font-weight="bold">${esc(o.title)}</text>`);
  parts.push(`<line x1="${L}" y1="${H - B}" x2="${W - R}" y2="${H - B}" stroke="#333"/>`);
  parts.push(`<line x1="${L}" y1="${T}" x2="${L}" y2="${H - B}" stroke="#333"/>`);
  for (let i = 0; i <= 4; i++) {
    const y = (y1 / 1.1) * (i / 4);
    parts.push(
      `<text x="${L - 6}" y="${py(y) + 4}" text-anchor="end" font-size="11">${nice(y)}</text>`,
      `<line x1="${L}" y1="${py(y)}" x2="${W - R}" y2="${py(y)}" stroke="#eee"/>`,
    );
  }
  const xticks = o.logX
    ? [...new Set(all.map((p) => p[0]))]
    : [0, 0.25, 0.5, 0.75, 1].map((f) => x0 + f * (x1 - x0));
  for (const x of xticks) {
    parts.push(`<text x="${px(x)}" y="${H - B + 15}" text-anchor="middle" font-size="11">${nice(x)}</text>`);
  }
  parts.push(`<text x="${W / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.xLabel)}</text>`);
  parts.push(
    `<text x="14" y="${H / 2}" text-anchor="middle" font-size="12" transform="rotate(-90 14 ${H / 2})">${esc(o.yLabel)}</text>`,
  );
  for (const m of o.markers ?? []) {
    parts.push(
      `<line x1="${px(m.x)}" y1="${T}" x2="${px(m.x)}" y2="${H - B}" stroke="#999" stroke-dasharray="4 3"/>`,
      `<text x="${px(m.x) + 3}" y="${T + 10}" font-size="10" fill="#555">${esc(m.label)}</text>`,
    );
  }
  o.series.forEach((s, i) => {
    const d = s.points
      .map((p, j) => `${j === 0 ? "M" : "L"}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`)
      .join(" ");
    parts.push(
      `<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="6 4"' : ""}/>`,
      `<rect x="${L + 10 + i * 150}" y="${T + 2}" width="10" height="10" fill="${s.color}"/>`,
      `<text x="${L + 24 + i * 150}" y="${T + 11}" font-size="11">${esc(s.name)}</text>`,
    );
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif">${parts.join("")}</svg>`;
}

/** Each point the mean of it and the `n - 1` before it (fewer at the start). */
function movingAverage(xs: readonly number[], n: number): number[] {
  let sum = 0;
  return xs.map((x, i) => {
    sum += x - (i >= n ? xs[i - n]! : 0);
    return sum / Math.min(i + 1, n);
  });
}

function table(rows: Record<string, unknown>[]): string {
  if (rows.length === 0) return "";
  const cols = Object.keys(rows[0]!).filter((c) =>
    rows.some((r) => typeof r[c] !== "object" || r[c] === null),
  );
  const cell = (v: unknown) =>
    typeof v === "number" ? v.toLocaleString("en-US", { maximumFractionDigits: 4 }) : esc(String(v ?? ""));
  return `<table><tr>${cols.map((c) => `<th>${esc(c)}</th>`).join("")}</tr>${rows
    .map((r) => `<tr>${cols.map((c) => `<td>${cell(r[c])}</td>`).join("")}</tr>`)
    .join("")}</table>`;
}

export function renderHtml(r: BenchReport): string {
  const s: string[] = [];
  s.push(`<h1>shardlimit bench</h1><p>${esc(r.generated)} · ${r.machine.cpus} CPUs (${esc(r.machine.model)}) ·
    node ${esc(r.machine.node)}${r.quick ? " · quick" : ""}</p>`);
  if (r.accuracy) {
    s.push(`<h2>Accuracy</h2>`);
    for (const a of r.accuracy.loopback) {
      s.push(`<p>${esc(a.name)}: ratio <b>${a.ratio}</b> (${a.pass ? "pass" : "FAIL"})</p>`);
      s.push(
        lineChart({
          title: `Admitted per second against the limit: ${a.name.slice(0, 1)} (real processes, loopback)`,
          xLabel: "seconds",
          yLabel: "admitted / s",
          series: [
            { name: "admitted", color: COLORS[0]!, points: a.admitted_per_s.map((v, i) => [i + 1, v]) },
            {
              name: "limit",
              color: COLORS[1]!,
              dashed: true,
              points: a.admitted_per_s.map((_, i) => [i + 1, a.limit]),
            },
          ],
        }),
      );
    }
    s.push(
      `<h3>Simulation (scenarios A-G)</h3>`,
      table(r.accuracy.simulation as unknown as Record<string, unknown>[]),
    );
  }
  if (r.results) {
    s.push(
      `<h2>Against Redis-backed limiters</h2>`,
      table(r.results as unknown as Record<string, unknown>[]),
    );
  }
  if (r.throughput)
    s.push(`<h2>Throughput (batched)</h2>`, table([r.throughput as unknown as Record<string, unknown>]));
  if (r.sync) {
    s.push(`<h2>Synchronous APIs at rising rates</h2><p>Knee: ${esc(JSON.stringify(r.sync.knee))}</p>`);
    const series: Series[] = [];
    let c = 0;
    for (const api of ["Check", "ShouldRateLimit"]) {
      const rows = r.sync.rows.filter((x) => x.api === api);
      series.push(
        {
          name: `${api} p50`,
          color: COLORS[c]!,
          dashed: true,
          points: rows.map((x) => [x.target_per_s, x.p50_ms]),
        },
        { name: `${api} p99`, color: COLORS[c]!, points: rows.map((x) => [x.target_per_s, x.p99_ms]) },
      );
      c++;
    }
    s.push(
      lineChart({
        title: "Latency percentiles against offered rate",
        xLabel: "calls / s",
        yLabel: "ms",
        series,
        logX: true,
      }),
    );
    s.push(table(r.sync.rows as unknown as Record<string, unknown>[]));
  }
  for (const f of r.failover ?? []) {
    s.push(`<h2>Failover: ${esc(f.name)}</h2><p>batched decisions ${f.batched_decisions.toLocaleString("en-US")}, errors ${f.batched_errors};
      sync calls ${f.sync_calls.toLocaleString("en-US")}, errors ${f.sync_errors}; every key served again after ${f.recovered_after_ms} ms</p>`);
    const t = (xs: number[]) => xs.map((v, i) => [i / 10, v] as [number, number]);
    const bMax = Math.max(...f.timeline.batched, 1);
    const sMax = Math.max(...f.timeline.sync_ok, 1);
    s.push(
      lineChart({
        title: "Timeline per 100 ms (batched decisions scaled to the sync axis)",
        xLabel: "seconds",
        yLabel: "calls per 100 ms",
        series: [
          { name: "sync OK", color: COLORS[2]!, points: t(f.timeline.sync_ok) },
          { name: "sync failed", color: COLORS[1]!, points: t(f.timeline.sync_err) },
          {
            name: "batched (scaled)",
            color: COLORS[0]!,
            dashed: true,
            points: t(f.timeline.batched.map((v) => (v / bMax) * sMax)),
          },
        ],
        markers: f.events.map((e) => ({ x: e.at_ms / 1000, label: e.what })),
      }),
      lineChart({
        title: `Servers' CPU, 500 ms average (every process of the run: ${f.cpu_s_per_s} CPU-s/s)`,
        xLabel: "seconds",
        yLabel: "CPU-s / s",
        // /proc counts CPU in 10 ms ticks: single 100 ms readings jump in steps of 0.1.
        series: [
          { name: "servers", color: COLORS[4]!, points: t(movingAverage(f.timeline.server_cpu_s_per_s, 5)) },
        ],
        markers: f.events.map((e) => ({ x: e.at_ms / 1000, label: e.what })),
      }),
    );
  }
  if (r.scale) s.push(`<h2>Scale</h2>`, table(r.scale as unknown as Record<string, unknown>[]));
  s.push(`<h2>Timings</h2>`, table([r.timings]));
  return `<!doctype html><html><head><meta charset="utf-8"><title>shardlimit bench</title><style>
body{font-family:sans-serif;max-width:1000px;margin:20px auto;color:#222}
table{border-collapse:collapse;margin:8px 0;font-size:12px}td,th{border:1px solid #ccc;padding:3px 6px;text-align:right}
th{background:#f3f3f3}h2{margin-top:28px}</style></head><body>${s.join("\n")}</body></html>\n`;
}
