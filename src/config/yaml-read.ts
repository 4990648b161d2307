import {
  type Document,
  isAlias,
  isMap,
  isScalar,
  isSeq,
  LineCounter,
  type Node,
  parseAllDocuments,
  type Scalar,
  visit,
} from "yaml";
import type { ConfigProblem } from "./errors.js";

/**
 * Reading one YAML document node by node (rather than `toJS()` and a schema) keeps every value
 * next to its source range, so each problem can name the line an operator has to fix.
 */

/** One `key: value` of a map, with the nodes kept for line numbers. */
export interface Field {
  readonly key: string;
  readonly keyNode: Node;
  /** `null` when the key has no value (`unit:`). */
  readonly value: Node | null;
  /** Document path of the value, e.g. `descriptors[0].rate_limit.unit`. */
  readonly path: string;
}

/** Where a field was written, for problems found later (across the tree or across files). */
export interface FieldRef {
  readonly path: string;
  readonly line: number | undefined;
}

/** A name (a rule's, a key) and where it was written. */
export interface NameRef extends FieldRef {
  readonly name: string;
}

/** Where a misplaced field belongs, so the error says where to move it instead of just "unknown". */
export type PlacementHints = Readonly<Record<string, string>>;

export class DocReader {
  constructor(
    readonly file: string,
    private readonly doc: Document.Parsed,
    private readonly lines: LineCounter,
    /** Shared by all documents of a file. */
    readonly problems: ConfigProblem[],
  ) {}

  get root(): Node | null {
    return this.resolve(this.doc.contents);
  }

  lineOf(node: Node | null | undefined): number | undefined {
    const start = node?.range?.[0];
    return start === undefined ? undefined : this.lines.linePos(start).line;
  }

  /** `node` may be missing (a required field); `fallback` is the nearest parent that exists. */
  report(path: string, message: string, node: Node | null | undefined, fallback?: Node | null): void {
    const line = this.lineOf(node) ?? this.lineOf(fallback);
    this.problems.push({ file: this.file, path, message, ...(line !== undefined ? { line } : {}) });
  }

  /** A problem at a position recorded earlier, found once more of the document was read. */
  reportAt(ref: FieldRef, message: string): void {
    const { path, line } = ref;
    this.problems.push({ file: this.file, path, message, ...(line !== undefined ? { line } : {}) });
  }

  /** Aliases (`*anchor`) read as the node they point to, as Envoy's YAML library does. */
  resolve(node: unknown): Node | null {
    if (isAlias(node)) return (node.resolve(this.doc) as Node | undefined) ?? null;
    return (node as Node | null | undefined) ?? null;
  }

  /** A node's plain value (maps, lists, scalars; aliases followed), for free-form fields. */
  plain(node: Node | null): unknown {
    return node === null ? null : node.toJS(this.doc);
  }

  /**
   * The fields of a map, reporting a non-map, non-string keys and fields not in `allowed`.
   * Merge keys (`<<: *defaults`) are expanded; explicit fields win over merged ones.
   */
  map(
    node: Node | null,
    path: string,
    what: string,
    allowed: readonly string[],
    hints: PlacementHints = {},
    fallback?: Node | null,
  ): Map<string, Field> | undefined {
    if (!isMap(node)) {
      this.report(path, `${what} must be a map (key: value lines), got ${describe(node)}`, node, fallback);
      return undefined;
    }
    const out = new Map<string, Field>();
    const merged: Node[] = [];
    for (const pair of node.items) {
      const keyNode = pair.key as Node | null;
      if (!isScalar(keyNode) || typeof keyNode.value !== "string") {
        this.report(path, `${what} has a key that is not a plain name: ${describe(keyNode)}`, keyNode, node);
        continue;
      }
      const key = keyNode.value;
      if (key === "<<") {
        const src = this.resolve(pair.value);
        if (isSeq(src)) for (const item of src.items) merged.push(this.resolve(item) as Node);
        else merged.push(src as Node);
        continue;
      }
      const fieldPath = path ? `${path}.${key}` : key;
      if (!allowed.includes(key)) {
        this.report(fieldPath, unknownFieldMessage(key, what, allowed, hints), keyNode);
        continue;
      }
      // Duplicate keys are already reported by the YAML parser; the first one wins here.
      if (!out.has(key)) out.set(key, { key, keyNode, value: this.resolve(pair.value), path: fieldPath });
    }
    for (const src of merged) {
      const fields = this.map(src, path, `${what} (merged with <<)`, allowed, hints, node);
      for (const [k, f] of fields ?? []) if (!out.has(k)) out.set(k, f);
    }
    return out;
  }

  /** The items of a list, each resolved, or `undefined` (reported) if it is not a list. */
  list(field: Field, what: string): (Node | null)[] | undefined {
    if (field.value === null || (isScalar(field.value) && field.value.value === null)) return [];
    if (!isSeq(field.value)) {
      this.report(
        field.path,
        `${what} must be a list, got ${describe(field.value)}`,
        field.value,
        field.keyNode,
      );
      return undefined;
    }
    return field.value.items.map((item) => this.resolve(item));
  }
}

export interface ParsedYaml {
  readonly problems: ConfigProblem[];
  /** Empty when the YAML itself is broken: only its syntax errors are reported then. */
  readonly docs: readonly DocReader[];
}

/** A file may hold several `---`-separated documents; Envoy reads only one, we read them all. */
export function parseYaml(file: string, text: string): ParsedYaml {
  const lines = new LineCounter();
  // The library's own duplicate-key check compares every key of a map with every other (a
  // 10,000-tenant weights map took a second): off, and done in one pass below.
  const docs = parseAllDocuments(text, { lineCounter: lines, prettyErrors: false, uniqueKeys: false });
  const problems: ConfigProblem[] = [];
  for (const doc of docs) {
    for (const err of doc.errors) {
      const line = lines.linePos(err.pos[0]).line;
      problems.push({ file, path: "", line, message: `invalid YAML: ${err.message}` });
    }
    if (doc.errors.length === 0) {
      for (const at of duplicateKeys(doc)) {
        const line = lines.linePos(at).line;
        problems.push({ file, path: "", line, message: "invalid YAML: Map keys must be unique" });
      }
    }
  }
  if (problems.length > 0) return { problems, docs: [] };
  return { problems, docs: docs.map((doc) => new DocReader(file, doc, lines, problems)) };
}

/** Source offsets of keys written twice in one map (plain scalar keys; `<<` may repeat). */
function duplicateKeys(doc: Document.Parsed): number[] {
  const at: number[] = [];
  visit(doc, {
    Map(_, map) {
      const seen = new Set<unknown>();
      for (const pair of map.items) {
        const key = pair.key;
        if (!isScalar(key) || key.value === "<<") continue;
        if (seen.has(key.value)) at.push(key.range?.[0] ?? 0);
        else seen.add(key.value);
      }
    },
  });
  return at;
}

/** How a node reads in a message: the value itself for scalars, the kind otherwise. */
export function describe(node: Node | null | undefined): string {
  if (node === null || node === undefined) return "nothing";
  if (isScalar(node)) {
    if (node.value === null) return "nothing";
    if (typeof node.value === "string") return JSON.stringify(node.value);
    return `${typeof node.value} ${sourceText(node)}`;
  }
  if (isMap(node)) return "a map";
  if (isSeq(node)) return "a list";
  return "an unsupported value";
}

/** A scalar exactly as written (`007` stays `007`), for keys and values Envoy reads as strings. */
export function sourceText(node: Scalar): string {
  if (typeof node.value === "string") return node.value;
  return node.source ?? String(node.value);
}

function unknownFieldMessage(
  key: string,
  what: string,
  allowed: readonly string[],
  hints: PlacementHints,
): string {
  const hint = hints[key];
  if (hint) return `unknown field ${JSON.stringify(key)} in ${what}: ${hint}`;
  const near = closest(key, allowed);
  const suggestion = near ? `; did you mean ${JSON.stringify(near)}?` : "";
  return `unknown field ${JSON.stringify(key)} in ${what}${suggestion} (allowed: ${allowed.join(", ")})`;
}

function closest(word: string, candidates: readonly string[]): string | undefined {
  let best: string | undefined;
  let bestDist = Math.max(2, Math.floor(word.length / 4)) + 1;
  for (const c of candidates) {
    const d = editDistance(word.toLowerCase(), c);
    if (d < bestDist) {
      best = c;
      bestDist = d;
    }
  }
  return best;
}

function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min(prev[j]! + 1, cur[j - 1]! + 1, prev[j - 1]! + cost));
    }
    prev = cur;
  }
  return prev[b.length]!;
}
