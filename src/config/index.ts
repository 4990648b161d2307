export { type CheckResult, checkConfig, describeRule, formatSummary } from "./check.js";
export { resolveKey } from "./config.js";
export { type ConfigDiff, diffConfigs, LimitRemovalError } from "./diff.js";
export { formatDuration, parseDuration } from "./duration.js";
export { type DecodedKey, decodeKey, encodeKey } from "./key.js";
export { type ConfigSource, compileSources, loadConfig, readSources } from "./load.js";
export { applyReplaces } from "./replaces.js";
export * from "./types.js";
export { ConfigWatcher, type ConfigWatcherOptions } from "./watch.js";
