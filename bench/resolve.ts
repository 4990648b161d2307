/**
 * Descriptor resolution speed (moved here from a timed unit test: speed is measured in bench/).
 *
 *   npm run bench:resolve [-- --json bench/out/resolve.json]
 *
 * `LimitConfig.resolve` of a 2-entry descriptor of examples/config.yaml, against a baseline in
 * the same run: a Map look-up of the joined key (the least any resolution costs).
 */
import { mkdirSync, writeFileSync } from "node:fs";
import path from "node:path";
import { loadConfig } from "../src/config/load.js";

const jsonAt = process.argv.indexOf("--json");
const JSON_OUT = jsonAt > 0 ? process.argv[jsonAt + 1]! : "bench/out/resolve.json";
const N = 2_000_000;

const config = loadConfig("examples/config.yaml");
const entries = [
  { key: "group", value: "acme" },
  { key: "tenant", value: "acme-eu" },
];
const map = new Map([["api/group=acme/tenant=acme-eu", 1]]);

function time(fn: () => unknown): number {
  for (let i = 0; i < N / 10; i++) fn();
  const t = process.hrtime.bigint();
  for (let i = 0; i < N; i++) fn();
  return Number(process.hrtime.bigint() - t) / N;
}

const rounds: { resolve: number; baseline: number }[] = [];
for (let r = 0; r < 5; r++) {
  const baseline = time(() =>
    map.get(`api/${entries[0]!.key}=${entries[0]!.value}/${entries[1]!.key}=${entries[1]!.value}`),
  );
  const resolve = time(() => config.resolve("api", entries));
  rounds.push({ resolve, baseline });
}
const median = (xs: number[]) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const resolve = median(rounds.map((r) => r.resolve));
const baseline = median(rounds.map((r) => r.baseline));
console.log(`config.resolve, 2 entries: ${resolve.toFixed(0)} ns/op`);
console.log(`baseline (joined key, Map.get): ${baseline.toFixed(0)} ns/op`);
console.log(`ratio: ${(resolve / baseline).toFixed(2)}x`);
mkdirSync(path.dirname(JSON_OUT), { recursive: true });
writeFileSync(JSON_OUT, JSON.stringify({ resolveNs: resolve, baselineNs: baseline, rounds }, null, 2));
