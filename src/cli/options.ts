import { OptionsError } from "../core/errors.js";

/** Parsers for commander that name the flag in their error. */
export function intOption(flag: string, min: number, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!/^\d+$/.test(v.trim()) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new OptionsError(
        `${flag} must be a whole number from ${min} to ${max}, got ${JSON.stringify(v)}`,
      );
    }
    return n;
  };
}

export const portOption = (flag: string) => intOption(flag, 0, 65_535);

/** A number (fractions allowed) above `min` and at most `max`. */
export function numberOption(flag: string, min: number, max: number): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (v.trim() === "" || !Number.isFinite(n) || n <= min || n > max) {
      throw new OptionsError(
        `${flag} must be a number above ${min} and at most ${max}, got ${JSON.stringify(v)}`,
      );
    }
    return n;
  };
}

/** Comma-separated etcd client URLs, each http(s)://host:port. */
export function etcdUrlsOption(flag: string): (v: string) => string[] {
  return (v: string) => {
    const urls = v
      .split(",")
      .map((u) => u.trim())
      .filter((u) => u !== "");
    if (urls.length === 0) throw new OptionsError(`${flag} names no etcd URL`);
    for (const u of urls) {
      let ok = false;
      try {
        const p = new URL(u);
        ok = (p.protocol === "http:" || p.protocol === "https:") && p.port !== "";
      } catch {
        ok = false;
      }
      if (!ok)
        throw new OptionsError(`${flag}: ${JSON.stringify(u)} is not an etcd URL like http://127.0.0.1:2379`);
    }
    return urls;
  };
}

/** An etcd key prefix: starts and ends with `/`, no spaces. */
export function prefixOption(flag: string): (v: string) => string {
  return (v: string) => {
    if (!/^\/(?:[A-Za-z0-9._-]+\/)*$/.test(v)) {
      throw new OptionsError(
        `${flag} must look like /shardlimit/ (start and end with /), got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
}

/** A member id: letters, digits, `.`, `_`, `-`, at most 128. */
export function memberIdOption(flag: string): (v: string) => string {
  return (v: string) => {
    if (!/^[A-Za-z0-9._-]{1,128}$/.test(v)) {
      throw new OptionsError(
        `${flag} must be 1-128 letters, digits, '.', '_' or '-', got ${JSON.stringify(v)}`,
      );
    }
    return v;
  };
}

/**
 * Refuses flags given (a defined value) without what they depend on, naming them:
 * `--tls-ca, --tls-client-auth need --tls-cert and --tls-key`.
 */
export function refuseWithout(given: Record<string, unknown>, needed: string): void {
  const stray = Object.keys(given).filter((flag) => given[flag] !== undefined);
  if (stray.length > 0) {
    throw new OptionsError(`${stray.join(", ")} ${stray.length === 1 ? "needs" : "need"} ${needed}`);
  }
}

/** host:port, as gRPC targets are written. */
export function hostPortOption(flag: string): (v: string) => string {
  return (v: string) => {
    const m = /^(\[[0-9a-fA-F:]+\]|[A-Za-z0-9.-]+):(\d{1,5})$/.exec(v.trim());
    if (!m || Number(m[2]) > 65_535) {
      throw new OptionsError(`${flag} must be host:port such as 127.0.0.1:8081, got ${JSON.stringify(v)}`);
    }
    return v.trim();
  };
}

/** Comma-separated host:port addresses. */
export function hostPortListOption(flag: string): (v: string) => string[] {
  const one = hostPortOption(flag);
  return (v: string) => {
    const list = v
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "")
      .map(one);
    if (list.length === 0) throw new OptionsError(`${flag} names no server`);
    return list;
  };
}
