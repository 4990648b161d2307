import { writeFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { etcdAccessOf } from "../../src/cli/common-options.js";
import { dialTlsOf, listenerTlsNames, listenerTlsOf } from "../../src/cli/tls-options.js";
import { OptionsError } from "../../src/core/errors.js";
import { readEtcdAuthFile } from "../../src/security/etcd-access.js";
import { tempDir } from "../../src/testkit/temp-dir.js";

/** The message of the OptionsError `fn` throws. */
function refusal(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    expect(err).toBeInstanceOf(OptionsError);
    return (err as Error).message;
  }
  throw new Error("not refused");
}

describe("listener TLS flags", () => {
  const serve = listenerTlsNames("tls");
  const sidecar = listenerTlsNames("listen-tls");

  it("nothing given: plaintext; certificate and key: TLS, client auth none by default", () => {
    expect(listenerTlsOf({}, serve)).toBeUndefined();
    expect(listenerTlsOf({ cert: "c", key: "k" }, serve)).toEqual({
      cert: "c",
      key: "k",
      ca: undefined,
      clientAuth: "none",
      peerServerName: undefined,
    });
  });

  it("refuses what cannot work, naming the flags of the command at hand", () => {
    expect(
      listenerTlsOf({ cert: "c", key: "k", ca: "a" }, serve, { dialsPeers: "--etcd", peerServerName: "rl" }),
    ).toMatchObject({ ca: "a", peerServerName: "rl" });
    expect(refusal(() => listenerTlsOf({ cert: "c" }, serve))).toBe("--tls-cert needs --tls-key");
    expect(refusal(() => listenerTlsOf({ key: "k" }, sidecar))).toBe(
      "--listen-tls-key needs --listen-tls-cert",
    );
    expect(refusal(() => listenerTlsOf({ ca: "a", clientAuth: "require" }, sidecar))).toBe(
      "--listen-tls-ca, --listen-tls-client-auth need --listen-tls-cert and --listen-tls-key (TLS is off without them)",
    );
    expect(refusal(() => listenerTlsOf({ cert: "c", key: "k", clientAuth: "request" }, serve))).toMatch(
      /^--tls-client-auth request needs --tls-ca/,
    );
    expect(refusal(() => listenerTlsOf({ cert: "c", key: "k" }, serve, { dialsPeers: "--etcd" }))).toMatch(
      /^--tls-cert with --etcd needs --tls-ca/,
    );
    expect(refusal(() => listenerTlsOf({}, serve, { peerServerName: "rl" }))).toMatch(
      /^--peer-server-name needs/,
    );
  });
});

describe("dialling TLS flags (sidecar towards the servers)", () => {
  it("a CA turns TLS on; certificate and key go together; the rest needs the CA", () => {
    expect(dialTlsOf({})).toBeUndefined();
    expect(dialTlsOf({ tlsCa: "a", tlsServerName: "rl" })).toEqual({
      ca: "a",
      cert: undefined,
      key: undefined,
      serverName: "rl",
    });
    expect(refusal(() => dialTlsOf({ tlsCert: "c", tlsKey: "k" }))).toBe(
      "--tls-cert, --tls-key need --tls-ca (TLS is off without it)",
    );
    expect(refusal(() => dialTlsOf({ tlsCa: "a", tlsKey: "k" }))).toBe("--tls-key needs --tls-cert");
  });
});

describe("etcd access flags", () => {
  const dir = tempDir("shardlimit-etcd-auth-");
  const file = (name: string, text: string) => {
    const f = path.join(dir, name);
    writeFileSync(f, text);
    return f;
  };

  it("refuses them without --etcd, a certificate without its key, TLS files with http:// URLs", () => {
    expect(etcdAccessOf({}, undefined)).toBeUndefined();
    expect(refusal(() => etcdAccessOf({ etcdCa: "a", etcdAuthFile: "f" }, undefined))).toBe(
      "--etcd-ca, --etcd-auth-file need --etcd",
    );
    expect(refusal(() => etcdAccessOf({ etcdCert: "c" }, ["https://e:2379"]))).toBe(
      "--etcd-cert needs --etcd-key",
    );
    expect(refusal(() => etcdAccessOf({ etcdCert: "c", etcdKey: "k" }, ["https://e:2379"]))).toBe(
      "--etcd-cert and --etcd-key need --etcd-ca",
    );
    expect(refusal(() => etcdAccessOf({ etcdCa: "a" }, ["https://e:2379", "http://f:2379"]))).toMatch(
      /plaintext URLs \(http:\/\/f:2379\)/,
    );
  });

  it("reads username:password from the auth file (a colon in the password is kept)", () => {
    expect(readEtcdAuthFile(file("ok", "shardlimit:pa:ss\n"))).toEqual({
      username: "shardlimit",
      password: "pa:ss",
    });
    expect(etcdAccessOf({ etcdAuthFile: file("ok2", "u:p") }, ["http://e:2379"])).toEqual({
      auth: { username: "u", password: "p" },
    });
  });

  it("refuses an auth file that is not one line username:password, naming it", () => {
    for (const [name, text] of [
      ["empty", ""],
      ["no-colon", "justauser\n"],
      ["no-user", ":pw\n"],
      ["no-password", "user:\n"],
      ["two-lines", "user:pw\nmore\n"],
    ] as const) {
      const f = file(name, text);
      expect(
        refusal(() => readEtcdAuthFile(f)),
        name,
      ).toContain(f);
    }
    const missing = path.join(dir, "missing");
    expect(refusal(() => readEtcdAuthFile(missing))).toContain(`cannot read the etcd auth file ${missing}`);
  });
});
