export * from "./algorithms/index.js";
export { ClientShare, ClientTable, DEFAULT_MAX_CLIENTS_PER_KEY } from "./clients.js";
export { type Clock, every, ManualClock, sleep, systemClock, type Timer } from "./clock.js";
export { Counter } from "./counter.js";
export {
  CapacityError,
  type CheckItem,
  type CheckMode,
  type Decision,
  type ReportEntry,
} from "./decision.js";
export { ReportDedup, type SeqVerdict } from "./dedup.js";
export { Engine, type EngineOptions } from "./engine.js";
export { waterLevel } from "./fair-share.js";
export { type Limit, limitDefaults } from "./limit.js";
export { LocalKey } from "./local-decision.js";
export { allowPolicy, POLICY_LIFETIME_INTERVALS, type Policy, PolicyKind } from "./policy.js";
export { seededRandom } from "./random.js";
export { type CounterSnapshot, restoreCounter, snapshotCounter, snapshotProblem } from "./transfer.js";
