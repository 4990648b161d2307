import { z } from "zod";
import { Assignment } from "./assignment.js";

/** The assignment as stored in etcd (`<prefix>assignment`), JSON. */
const StoredSchema = z.object({
  generation: z.number().int().positive(),
  members: z
    .array(z.object({ id: z.string().min(1), address: z.string().min(1) }))
    .min(1)
    .max(65_535),
  starts: z.array(z.number().int().min(0).max(0xffff_ffff)).min(1),
  owners: z.array(z.number().int().min(0).max(65_535)).min(1),
});

export function encodeAssignment(a: Assignment): string {
  return JSON.stringify({
    generation: a.generation,
    members: a.members.map((m) => ({ id: m.id, address: m.address })),
    starts: Array.from(a.starts),
    owners: Array.from(a.owners),
  });
}

/** Parses and validates a stored assignment; an error message instead if it is not one. */
export function decodeAssignment(text: string): Assignment | string {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (err) {
    return `assignment is not JSON: ${(err as Error).message}`;
  }
  const r = StoredSchema.safeParse(json);
  if (!r.success)
    return `assignment is malformed: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`;
  const starts = Uint32Array.from(r.data.starts);
  const owners = Uint16Array.from(r.data.owners);
  const problem = Assignment.problem(r.data.members, starts, owners);
  if (problem !== undefined) return `assignment is inconsistent: ${problem}`;
  return new Assignment(r.data.generation, r.data.members, starts, owners);
}
