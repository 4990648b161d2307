import { DEFAULT_PRIORITY, PRIORITIES, type Priority } from "../core/priority.js";
import type { DescriptorEntry } from "./types.js";

/**
 * The `priority` descriptor entry: a request names its priority class with an entry whose key is
 * `priority`, anywhere among its entries. It selects no rule and is part of no counter key, so it
 * is taken out before the descriptor is resolved. Configs may not use `priority` as a descriptor
 * key (parse-file.ts refuses it), so the entry can never be mistaken for a limit's key.
 */

export const PRIORITY_KEY = "priority";

export interface SplitPriority {
  /** The entries without the priority entry: the very array given when there was none. */
  readonly entries: readonly DescriptorEntry[];
  readonly priority: Priority;
}

/** Named highest first in messages, the order an operator reads them in. */
const CLASSES = [...PRIORITIES].reverse().join(", ");

/**
 * The request's priority class (absent: `normal`) and its entries without it, or a message naming
 * a value that is not a class or a repeated entry (returned, not thrown: descriptors arrive one by
 * one inside batches, each answered on its own).
 */
export function splitPriority(entries: readonly DescriptorEntry[]): SplitPriority | string {
  // Most requests carry no priority: find out without allocating, and hand the array back as is.
  let at = -1;
  for (let i = 0; i < entries.length; i++) {
    if (entries[i]!.key !== PRIORITY_KEY) continue;
    if (at >= 0) {
      return `priority is given twice (entries ${at + 1} and ${i + 1}); a request has one priority class`;
    }
    at = i;
  }
  if (at < 0) return { entries, priority: DEFAULT_PRIORITY };
  const value = entries[at]!.value;
  if (!(PRIORITIES as readonly string[]).includes(value)) {
    return `priority ${JSON.stringify(value)} is not a priority class (${CLASSES})`;
  }
  return { entries: entries.filter((_, i) => i !== at), priority: value as Priority };
}
