import { readNumber, shown } from "./parse-sharing.js";
import type { Algorithm, ResourceSpec } from "./types.js";
import { readString } from "./values.js";
import type { DocReader, Field } from "./yaml-read.js";

/**
 * Reads `resource` in a `rate_limit` block: the limit is a quota of a resource whose use is known
 * only after serving (CPU-seconds, GPU-seconds, tokens).
 *
 *   resource: { name: cpu_seconds, prior: 0.02, smoothing: 0.05 }
 *
 * `name` is what the quota measures (it stands for `cost_unit`, which may then not be given);
 * `prior` the predicted cost of a request before any request of the key was settled; `smoothing`
 * the weight of each settled cost in the moving average that predicts the next (default 0.05).
 */

const RESOURCE_FIELDS = ["name", "prior", "smoothing"];
const DEFAULT_SMOOTHING = 0.05;
const MAX_NAME_LENGTH = 64;

/** `kind`: the rule's algorithm, or `unlimited`; both of the latter refuse a resource. */
export function readResource(
  r: DocReader,
  fields: ReadonlyMap<string, Field>,
  kind: Algorithm | "unlimited",
): ResourceSpec | undefined {
  const f = fields.get("resource");
  if (!f) return undefined;
  const costUnit = fields.get("cost_unit");
  if (costUnit) {
    r.report(
      costUnit.path,
      "cannot be given with resource: resource.name is the unit of a resource quota; remove cost_unit",
      costUnit.keyNode,
    );
  }
  if (kind === "unlimited") {
    r.report(f.path, "does not apply to an unlimited rule: it has no quota to measure; remove it", f.keyNode);
    return undefined;
  }
  if (kind === "concurrency") {
    r.report(
      f.path,
      "does not apply to algorithm concurrency: a resource quota is a rate of use over a window, and a concurrency limit counts slots held",
      f.keyNode,
    );
    return undefined;
  }
  const m = r.map(f.value, f.path, "resource", RESOURCE_FIELDS, {}, f.keyNode);
  if (!m) return undefined;
  const before = r.problems.length;
  const nameField = m.get("name");
  const priorField = m.get("prior");
  const smoothingField = m.get("smoothing");
  if (!nameField)
    r.report(`${f.path}.name`, "is required: what the quota measures (cpu_seconds, tokens)", f.value);
  if (!priorField) {
    r.report(
      `${f.path}.prior`,
      "is required: the predicted cost of a request before any was measured (e.g. 0.02)",
      f.value,
    );
  }
  const name = nameField ? readString(r, nameField) : undefined;
  if (nameField && name !== undefined && (name.trim() === "" || name.length > MAX_NAME_LENGTH)) {
    r.report(
      nameField.path,
      `must be a short name such as cpu_seconds or tokens, got ${JSON.stringify(name)}`,
      nameField.value,
    );
  }
  const prior = priorField
    ? positive(r, priorField, "a number above 0 (the predicted cost of a request)")
    : undefined;
  let smoothing = DEFAULT_SMOOTHING;
  if (smoothingField) {
    const v = positive(r, smoothingField, "a fraction above 0 and at most 1");
    if (v !== undefined && v > 1) {
      r.report(
        smoothingField.path,
        `must be a fraction above 0 and at most 1, got ${shown(smoothingField.value)}`,
        smoothingField.value,
      );
    } else if (v !== undefined) smoothing = v;
  }
  if (r.problems.length !== before || name === undefined || prior === undefined) return undefined;
  return Object.freeze({ name, prior, smoothing });
}

function positive(r: DocReader, f: Field, what: string): number | undefined {
  const v = readNumber(f.value);
  if (v !== undefined && v > 0) return v;
  r.report(f.path, `must be ${what}, got ${shown(f.value)}`, f.value, f.keyNode);
  return undefined;
}
