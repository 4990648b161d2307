import { OptionsError } from "../errors.js";

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
