import { readFileSync, rmSync, writeFileSync } from "node:fs";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { connectEtcd } from "../../src/cluster/etcd-client.js";
import { readLimits } from "../../src/cluster/limits-store.js";
import { ensureBuilt, killAllCli, runCli } from "../../src/testkit/cli.js";
import { type EtcdGrant, type EtcdProcess, startEtcd } from "../../src/testkit/etcd.js";
import { type ServerProcess, serverProcess, waitAllReady } from "../../src/testkit/serve.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/**
 * Who may write the limits: the etcd roles README "Limits in etcd" gives, applied exactly as its
 * `etcdctl` lines say to a real etcd with authentication on. A server runs under its role (reads
 * the limits, switches a staged version on); a `limits` command with a server's user is refused
 * naming the permission and the prefix, and stores nothing; with an operator's it succeeds.
 */

const PREFIX = "/shardlimit/";

/** The README's `etcdctl role grant-permission` and `user grant-role` lines, as the kit's options. */
function readmeRoles() {
  const readme = readFileSync(path.join(import.meta.dirname, "../../README.md"), "utf8");
  const from = readme.indexOf("**Who may write the limits.**");
  const block = readme.slice(
    readme.indexOf("```sh\n", from),
    readme.indexOf("```\n", readme.indexOf("```sh\n", from) + 6),
  );
  const roles = new Map<string, EtcdGrant[]>();
  const users = new Map<string, string[]>();
  for (const line of block.split("\n")) {
    const w = line.trim().split(/\s+/);
    if (w[0] !== "etcdctl") continue;
    const cmd = `${w[1]} ${w[2]}`;
    if (cmd === "role add") roles.set(w[3]!, []);
    else if (cmd === "user add") users.set(w[3]!, []);
    else if (cmd === "user grant-role") users.get(w[3]!)!.push(w[4]!);
    else if (cmd === "role grant-permission") {
      const args = w.slice(3).filter((a) => a !== "--prefix");
      const [role, perm, key, end] = args as [string, string, string, string | undefined];
      const permission = ({ read: "Read", write: "Write", readwrite: "Readwrite" } as const)[
        perm as "read" | "write" | "readwrite"
      ];
      roles.get(role)!.push({ permission, key, ...(end ? { end } : {}), prefix: w.includes("--prefix") });
    }
  }
  return {
    roles: [...roles].map(([name, grants]) => ({ name, grants })),
    users: [...users].map(([name, r]) => ({ name, password: `${name}-secret`, roles: r })),
  };
}

const config = (n: number) =>
  `domain: api\ndescriptors:\n  - key: tenant\n    rate_limit: { unit: second, requests_per_unit: ${n} }\n`;

describe("etcd roles for the limits prefix (README)", () => {
  let etcd: EtcdProcess;
  let server: ServerProcess;
  const dir = tempDir("shardlimit-limits-auth-");
  const file = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const as = (user: string, ...args: string[]) =>
    runCli(["limits", ...args, "--etcd", etcd.url, "--prefix", PREFIX, ...etcd.userArgs(user)]);

  beforeAll(async () => {
    ensureBuilt();
    const { roles, users } = readmeRoles();
    expect(roles.map((r) => r.name)).toEqual(["shardlimit-server", "shardlimit-operator"]);
    etcd = await startEtcd({ auth: { password: "root-secret", roles, users } });
  }, 60_000);

  afterAll(async () => {
    await server?.stop();
    await killAllCli();
    await etcd?.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it("a server runs under its role; limits push with its user is refused naming the permission and prefix, with an operator's it succeeds", async () => {
    const first = as("shardlimit-operator", "push", file("v1.yaml", config(10)));
    expect(first.status, first.stderr).toBe(0);
    server = await serverProcess({
      id: "s1",
      configPath: undefined,
      etcdUrl: etcd.url,
      prefix: PREFIX,
      cli: "built",
      extraArgs: ["--limits-from", "etcd", ...etcd.userArgs("shardlimit-server")],
    });
    await server.start();
    await waitAllReady([server], 30_000);

    const root = connectEtcd([etcd.url], etcd.access);
    try {
      const before = await readLimits(root, PREFIX);
      const refused = as("shardlimit-server", "push", file("v2.yaml", config(20)));
      expect(refused.status).toBe(1);
      expect(refused.stderr).toContain(
        "etcd refused it (permission denied): the etcd user needs write permission on the prefix /shardlimit/limits/",
      );
      expect(refused.stderr).toContain("nothing was pushed");
      const set = as(
        "shardlimit-server",
        "set",
        "api/tenant=a",
        "--requests-per-unit",
        "1",
        "--unit",
        "second",
      );
      expect(set.status).toBe(1);
      expect(set.stderr).toContain("needs write permission on the prefix /shardlimit/limits/");
      const after = await readLimits(root, PREFIX);
      expect(after.head).toEqual(before.head);
      expect(after.staged).toBeUndefined();
      expect(after.versions.length).toBe(before.versions.length);
      expect(after.overrides).toEqual([]);

      // The operator's push is staged, and the server (its role: the switch's two keys) switches.
      const pushed = as("shardlimit-operator", "push", file("v2.yaml", config(20)));
      expect(pushed.status, pushed.stderr).toBe(0);
      expect(pushed.stdout).toContain("pushed version 2");
      expect(pushed.stdout).toContain("in force on 1 of 1 servers (s1)");
      expect((await readLimits(root, PREFIX)).head?.version).toBe(2);
    } finally {
      root.close();
    }
  }, 90_000);
});
