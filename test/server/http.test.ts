import type { Server } from "node:http";
import { connect } from "node:net";
import { Registry } from "prom-client";
import { afterEach, describe, expect, it } from "vitest";
import { startHttp } from "../../src/server/http.js";
import { httpGet } from "../../src/testkit/http.js";

/** The HTTP endpoints' server outlives errors that come after it listens. */

describe("startHttp", () => {
  let server: Server | undefined;
  const logged: { obj: object; msg: string }[] = [];
  const log = {
    warn: (obj: object, msg: string) => logged.push({ obj, msg }),
    debug: (obj: object, msg: string) => logged.push({ obj, msg }),
  };
  afterEach(async () => {
    await new Promise<void>((resolve) => (server ? server.close(() => resolve()) : resolve()));
    server = undefined;
    logged.length = 0;
  });

  it("/readyz adds its detail lines after the verdict, ready or not", async () => {
    let ready = true;
    let detail: string | undefined =
      "limits version 3 (abc)\nlimits version 4 refused, still serving version 3: x";
    const started = await startHttp(
      { registry: new Registry(), ready: () => ready, log, detail: () => detail },
      "127.0.0.1",
      0,
    );
    server = started.server;
    const url = `http://127.0.0.1:${started.port}/readyz`;
    expect(await httpGet(url)).toEqual({ status: 200, body: `ready\n${detail}\n` });
    ready = false;
    expect(await httpGet(url)).toEqual({ status: 503, body: `not ready\n${detail}\n` });
    detail = undefined;
    expect(await httpGet(url)).toEqual({ status: 503, body: "not ready\n" });
  });

  it("an 'error' event after listen (EMFILE on accept) is logged and the server keeps answering", async () => {
    const started = await startHttp({ registry: new Registry(), ready: () => true, log }, "127.0.0.1", 0);
    server = started.server;
    const emfile = Object.assign(new Error("accept EMFILE"), { code: "EMFILE", syscall: "accept" });
    // Twice: a listener left over from listen() would swallow only the first.
    expect(() => server!.emit("error", emfile)).not.toThrow();
    expect(() => server!.emit("error", emfile)).not.toThrow();
    expect(server.listening).toBe(true);
    expect(await httpGet(`http://127.0.0.1:${started.port}/healthz`)).toEqual({ status: 200, body: "ok\n" });
    expect(logged.filter((l) => l.msg === "HTTP server error; still serving")).toHaveLength(2);
  });

  it("a malformed request gets 400 and is logged at debug; the server keeps answering", async () => {
    const started = await startHttp({ registry: new Registry(), ready: () => true, log }, "127.0.0.1", 0);
    server = started.server;
    const answer = await new Promise<string>((resolve, reject) => {
      const s = connect(started.port, "127.0.0.1", () => s.write("NOT HTTP AT ALL\r\n\r\n"));
      let text = "";
      s.on("data", (d) => {
        text += d.toString();
      });
      s.on("close", () => resolve(text));
      s.on("error", reject);
    });
    expect(answer).toMatch(/^HTTP\/1\.1 400/);
    expect(logged.some((l) => l.msg === "bad HTTP request")).toBe(true);
    expect(await httpGet(`http://127.0.0.1:${started.port}/healthz`)).toEqual({ status: 200, body: "ok\n" });
  });
});
