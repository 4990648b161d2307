import type { Algorithm } from "./types.js";
import { readBool } from "./values.js";
import type { DocReader, Field } from "./yaml-read.js";

/**
 * `global: true` in a `rate_limit`: the limit holds across regional clusters. Each region decides
 * locally on its share, which the owner of the key in the region learns from the global tier
 * (`serve --global-tier`); a server without a global tier (the global tier itself) decides it as
 * an ordinary limit. A share is a rate, so neither an unlimited rule nor a concurrency limit
 * (slots held, not a rate) may be global.
 */
export function readGlobal(r: DocReader, field: Field | undefined, kind: Algorithm | "unlimited"): boolean {
  if (field === undefined) return false;
  const global = readBool(r, field) ?? false;
  if (!global) return false;
  if (kind === "unlimited") {
    r.report(field.path, "has no effect on an unlimited rule (unlimited: true); remove it", field.keyNode);
    return false;
  }
  if (kind === "concurrency") {
    r.report(
      field.path,
      "does not apply to algorithm concurrency: a region's share of a global limit is a rate, and a concurrency limit counts slots held",
      field.keyNode,
    );
    return false;
  }
  return true;
}
