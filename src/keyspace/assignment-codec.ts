import { z } from "zod";
import { Assignment } from "./assignment.js";

/** The assignment as stored in etcd (`<prefix>assignment`), JSON. */
const TableSchema = z.object({
  generation: z.number().int().positive(),
  members: z
    .array(z.object({ id: z.string().min(1), address: z.string().min(1), draining: z.boolean().optional() }))
    .min(1)
    .max(65_535),
  starts: z.array(z.number().int().min(0).max(0xffff_ffff)).min(1),
  owners: z.array(z.number().int().min(0).max(65_535)).min(1),
});
const StoredSchema = TableSchema.extend({
  previous: TableSchema.optional(),
  writtenAt: z.number().nonnegative().optional(),
});
type Table = z.infer<typeof TableSchema>;

function table(a: Assignment): Table {
  return {
    generation: a.generation,
    members: a.members.map((m) => (m.draining ? { id: m.id, address: m.address, draining: true } : m)),
    starts: Array.from(a.starts),
    owners: Array.from(a.owners),
  };
}

export function encodeAssignment(a: Assignment): string {
  return JSON.stringify({
    ...table(a),
    ...(a.previous ? { previous: table(a.previous) } : {}),
    ...(a.writtenAt !== undefined ? { writtenAt: a.writtenAt } : {}),
  });
}

function build(t: Table, previous?: Assignment, writtenAt?: number): Assignment | string {
  const starts = Uint32Array.from(t.starts);
  const owners = Uint16Array.from(t.owners);
  const problem = Assignment.problem(t.members, starts, owners);
  if (problem !== undefined) return problem;
  const members = t.members.map((m) => (m.draining ? m : { id: m.id, address: m.address }));
  return new Assignment(t.generation, members, starts, owners, previous, writtenAt);
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
  const previous = r.data.previous ? build(r.data.previous) : undefined;
  if (typeof previous === "string") return `previous assignment is inconsistent: ${previous}`;
  const a = build(r.data, previous, r.data.writtenAt);
  return typeof a === "string" ? `assignment is inconsistent: ${a}` : a;
}
