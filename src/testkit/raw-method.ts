import type * as grpc from "@grpc/grpc-js";

/**
 * A unary gRPC method whose messages are passed as bytes, unparsed: what do-nothing servers and
 * bench servers answer with canned replies, and what tests call with hand-made bytes.
 */
export function rawMethod(path: string): grpc.MethodDefinition<Buffer, Buffer> {
  const same = (b: Buffer) => b;
  return {
    path,
    requestStream: false,
    responseStream: false,
    requestSerialize: same,
    requestDeserialize: same,
    responseSerialize: same,
    responseDeserialize: same,
  };
}
