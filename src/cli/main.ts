#!/usr/bin/env -S node --max-semi-space-size=64
import { Command } from "commander";
import { OptionsError } from "../core/errors.js";
import { assignerCommand } from "./assigner.js";
import { benchCommand } from "./bench.js";
import { checkConfigCommand } from "./check-config.js";
import { inspectCommand } from "./inspect.js";
import { limitsCommand } from "./limits.js";
import { serveCommand } from "./serve.js";
import { sidecarCommand } from "./sidecar.js";
import { statusCommand } from "./status.js";

const program = new Command("shardlimit")
  .description(
    "distributed rate limiting: in-memory counters sharded by key, batched reports, Envoy-compatible",
  )
  .version("0.1.0")
  .showHelpAfterError()
  .enablePositionalOptions()
  .addCommand(serveCommand())
  .addCommand(checkConfigCommand())
  .addCommand(assignerCommand())
  .addCommand(statusCommand())
  .addCommand(sidecarCommand())
  .addCommand(inspectCommand())
  .addCommand(benchCommand())
  .addCommand(limitsCommand());

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof OptionsError) {
    process.stderr.write(`shardlimit: ${err.message}\n`);
    process.exit(2);
  }
  throw err;
});
