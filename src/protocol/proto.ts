import { existsSync } from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";
import type { ServiceDefinition } from "@grpc/grpc-js";
import protobuf from "protobufjs";
import { checkRequestDecoder, decodeEnvoyRequest } from "./fast-decode.js";
import type { CheckItemMsg, CheckRequest } from "./messages.js";
import { decodeReportRequest, encodeReportResponse } from "./report-codec.js";

// 64-bit fields decode to plain numbers: every one of ours stays far below 2^53, and Long objects
// on the hot path cost an allocation per field. Must run before any type is loaded.
protobuf.util.Long = undefined as unknown as typeof protobuf.util.Long;
protobuf.configure();

/** `proto/` at the package root, from src/server (tests) or dist/server (installed). */
export const PROTO_DIR = (() => {
  const here = path.dirname(fileURLToPath(import.meta.url));
  for (const up of ["../../proto", "../../../proto"]) {
    const dir = path.resolve(here, up);
    if (existsSync(path.join(dir, "shardlimit/v1/ratelimiter.proto"))) return dir;
  }
  throw new Error(`shardlimit: cannot find the proto/ directory above ${here}`);
})();

export const PROTO_FILES = [
  "shardlimit/v1/ratelimiter.proto",
  "shardlimit/v1/peer.proto",
  "envoy/service/ratelimit/v3/rls.proto",
  "envoy/service/rate_limit_quota/v3/rlqs.proto",
];

/**
 * Envoy's own protos (RLQS) import their annotations, which import descriptor.proto: not one of
 * protobufjs's bundled common files, but shipped in its package.
 */
const DESCRIPTOR_PROTO = createRequire(import.meta.url).resolve(
  "protobufjs/google/protobuf/descriptor.proto",
);

function loadRoot(): protobuf.Root {
  const root = new protobuf.Root();
  // google/protobuf/* are not on disk: protobufjs serves them from its bundled copies.
  root.resolvePath = (_origin, target) =>
    target === "google/protobuf/descriptor.proto" ? DESCRIPTOR_PROTO : path.join(PROTO_DIR, target);
  root.loadSync(PROTO_FILES, { keepCase: false });
  root.resolveAll();
  return root;
}

export const root = loadRoot();

/**
 * A request whose bytes did not decode. grpc-js answers a throwing deserializer with a bare
 * INTERNAL ("Error deserializing request"), as if the server were at fault; so the server's
 * deserializer returns this instead, and the handler answers INVALID_ARGUMENT saying why.
 */
export class MalformedRequest {
  constructor(
    /** The message type that was expected, e.g. `shardlimit.v1.CheckRequest`. */
    readonly type: string,
    readonly reason: string,
  ) {}
}

/**
 * The server's side of batched ingest, hand-written (protocol/report-codec.ts): the one request
 * that carries hundreds of entries and its answer. Same objects and bytes as protobufjs's.
 */
const envoyRequestType = root.lookupType("envoy.service.ratelimit.v3.RateLimitRequest");
const checkRequestType = root.lookupType("shardlimit.v1.CheckRequest");
const decodeCheckRequest = checkRequestDecoder({
  request: checkRequestType.ctor as unknown as new () => CheckRequest,
  item: root.lookupType("shardlimit.v1.CheckItem").ctor as unknown as new () => CheckItemMsg,
});
const FAST_DECODE: Record<string, (b: Buffer) => unknown> = {
  ".shardlimit.v1.ReportRequest": decodeReportRequest,
  // ShouldRateLimit's request in its common shape (protocol/fast-decode.ts); protobufjs otherwise.
  ".envoy.service.ratelimit.v3.RateLimitRequest": (b) => decodeEnvoyRequest(b) ?? envoyRequestType.decode(b),
  // Check's request likewise, into protobufjs's own message classes.
  ".shardlimit.v1.CheckRequest": (b) => decodeCheckRequest(b) ?? checkRequestType.decode(b),
};
const FAST_ENCODE: Record<string, (m: never) => Buffer> = {
  ".shardlimit.v1.ReportResponse": encodeReportResponse,
};

/**
 * A grpc-js service definition whose codec is protobufjs's generated encoder and decoder (which
 * writes Node Buffers, so nothing is copied):
 * messages arrive as protobufjs objects (camelCase fields, defaults on the prototype), with none
 * of proto-loader's conversion copy in between.
 */
export function serviceDefinition(fullName: string): ServiceDefinition {
  const service = root.lookupService(fullName);
  const def: Record<string, ServiceDefinition[string]> = {};
  for (const method of Object.values(service.methods)) {
    const req = root.lookupType(method.resolvedRequestType!.fullName);
    const res = root.lookupType(method.resolvedResponseType!.fullName);
    const decode = FAST_DECODE[req.fullName] ?? ((b: Buffer) => req.decode(b));
    const encode =
      (FAST_ENCODE[res.fullName] as ((m: object) => Buffer) | undefined) ??
      ((m: object) => res.encode(m).finish() as Buffer);
    def[method.name] = {
      path: `/${fullName}/${method.name}`,
      requestStream: method.requestStream === true,
      responseStream: method.responseStream === true,
      requestSerialize: (m: object) => req.encode(m).finish() as Buffer,
      requestDeserialize: (b: Buffer) => {
        try {
          return decode(b);
        } catch (err) {
          return new MalformedRequest(req.fullName.replace(/^\./, ""), (err as Error).message);
        }
      },
      responseSerialize: encode,
      responseDeserialize: (b: Buffer) => res.decode(b),
    };
  }
  return def as ServiceDefinition;
}

export const RATE_LIMITER_SERVICE = "shardlimit.v1.RateLimiter";
export const ENVOY_RLS_SERVICE = "envoy.service.ratelimit.v3.RateLimitService";
export const PEER_SERVICE = "shardlimit.v1.Peer";
export const RLQS_SERVICE = "envoy.service.rate_limit_quota.v3.RateLimitQuotaService";
