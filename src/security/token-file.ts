import { readFileSync, statSync } from "node:fs";
import { Metadata } from "@grpc/grpc-js";
import { type Clock, systemClock } from "../core/clock.js";

/** How often a token file is looked at again for a rotated token. */
export const TOKEN_RECHECK_MS = 1000;

/**
 * A bearer token read from a file (`--token-file`, the client's `tokenFile`): re-read when the
 * file changes, so a rotated token (a new Kubernetes secret) is sent from the next call on without
 * a restart. Checked at most once per `recheckMs` on the injected clock, when a call asks for it:
 * no timer, no watcher.
 */
export class TokenFile {
  private value: string;
  private stamp: string;
  private checkedAt: number;

  constructor(
    readonly path: string,
    private readonly clock: Clock = systemClock,
    private readonly recheckMs = TOKEN_RECHECK_MS,
  ) {
    this.value = readToken(path);
    this.stamp = stampOf(path);
    this.checkedAt = clock.elapsed();
  }

  /** The token now. A file that became unreadable or empty keeps the last good token. */
  token(): string {
    const now = this.clock.elapsed();
    if (now - this.checkedAt < this.recheckMs) return this.value;
    this.checkedAt = now;
    try {
      const stamp = stampOf(this.path);
      if (stamp !== this.stamp) {
        this.value = readToken(this.path);
        this.stamp = stamp;
      }
    } catch {
      // Mid-rotation (the file swapped out) or gone: the last token until it is back.
    }
    return this.value;
  }

  /** The `authorization` header value. */
  header(): string {
    return `Bearer ${this.token()}`;
  }
}

function stampOf(path: string): string {
  const s = statSync(path);
  return `${s.mtimeMs}:${s.size}:${s.ino}`;
}

function readToken(path: string): string {
  let text: string;
  try {
    text = readFileSync(path, "utf8");
  } catch (err) {
    throw new Error(`cannot read the token file ${path}: ${(err as Error).message}`);
  }
  const token = text.trim();
  if (token === "") throw new Error(`the token file ${path} is empty`);
  if (/\s/.test(token))
    throw new Error(`the token file ${path} holds more than one word: a token has no spaces`);
  return token;
}

/** The metadata of each outbound call: `authorization: Bearer <token>`, the token as of now. */
export function bearerMetadata(file: TokenFile): () => Metadata {
  return () => {
    const m = new Metadata();
    m.set("authorization", file.header());
    return m;
  };
}
