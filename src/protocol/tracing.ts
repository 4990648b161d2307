import { Metadata } from "@grpc/grpc-js";
import {
  type Context,
  context,
  type Link,
  propagation,
  ROOT_CONTEXT,
  type Span,
  SpanKind,
  SpanStatusCode,
  type TextMapGetter,
  type TextMapSetter,
  type Tracer,
  trace,
} from "@opentelemetry/api";

/**
 * Optional OpenTelemetry spans (`@opentelemetry/api` only: the process that wants them registers
 * an SDK, its tracer provider and propagator, before it starts; see the README "Tracing"). Off
 * unless `enableTracing` is called (`serve --otel`): every traced place then tests one variable
 * and does nothing else, so the off path costs nothing measurable. Context travels between
 * servers in gRPC metadata, as W3C `traceparent` with the propagator the SDK registers.
 */
let tracer: Tracer | undefined;

/** Turns spans on, from the global tracer provider (or `t`). */
export function enableTracing(t: Tracer = trace.getTracer("shardlimit")): void {
  tracer = t;
}

export function disableTracing(): void {
  tracer = undefined;
}

/** The tracer when tracing is on; undefined when off (the one test on every traced path). */
export function activeTracer(): Tracer | undefined {
  return tracer;
}

const getter: TextMapGetter<Metadata> = {
  keys: (m) => Object.keys(m.getMap()),
  get: (m, key) => {
    const v = m.get(key);
    return v.length === 0 ? undefined : v.map(String);
  },
};

const setter: TextMapSetter<Metadata> = {
  set: (m, key, value) => m.set(key, value),
};

/** The caller's trace context carried in a call's metadata (`traceparent`), or none. */
export function contextFrom(md: Metadata): Context {
  return propagation.extract(ROOT_CONTEXT, md, getter);
}

/** Writes `ctx`'s trace context into outgoing metadata. */
export function injectInto(md: Metadata, ctx: Context): void {
  propagation.inject(ctx, md, setter);
}

/** New outgoing metadata carrying `ctx`'s trace context. */
export function metadataFor(ctx: Context): Metadata {
  const md = new Metadata();
  propagation.inject(ctx, md, setter);
  return md;
}

/** The active context: captured where a call is queued, so the span sent later has its parent. */
export function currentContext(): Context {
  return context.active();
}

/** Sets attributes on the active span (tracing on only). */
export function annotateActive(attrs: Record<string, string | number | boolean>): void {
  if (tracer === undefined) return;
  trace.getActiveSpan()?.setAttributes(attrs);
}

/**
 * A client span for one outgoing call, child of `parent`, linked to `others` (a batch serving
 * several callers); `run` gets the span and the context to inject.
 */
export function clientSpan<T>(
  t: Tracer,
  name: string,
  parent: Context,
  others: readonly Context[],
  attrs: Record<string, string | number | boolean>,
  run: (span: Span, ctx: Context) => Promise<T>,
): Promise<T> {
  const links: Link[] = [];
  for (const o of others) {
    const sc = trace.getSpanContext(o);
    if (sc !== undefined) links.push({ context: sc });
  }
  const span = t.startSpan(name, { kind: SpanKind.CLIENT, attributes: attrs, links }, parent);
  const ctx = trace.setSpan(parent, span);
  return run(span, ctx).then(
    (v) => {
      span.end();
      return v;
    },
    (err: unknown) => {
      failed(span, err);
      throw err;
    },
  );
}

/**
 * One outgoing call: with tracing off, `call()` itself; on, in a client span `name`, child of the
 * active context, whose context the call carries in its metadata.
 */
export function tracedCall<T>(
  name: string,
  attrs: () => Record<string, string | number | boolean>,
  call: (metadata?: Metadata) => Promise<T>,
): Promise<T> {
  const t = tracer;
  if (t === undefined) return call();
  return clientSpan(t, name, context.active(), [], attrs(), (_, ctx) => call(metadataFor(ctx)));
}

/** Marks `span` failed with `err` and ends it. */
export function failed(span: Span, err: unknown): void {
  span.recordException(err instanceof Error ? err : String(err));
  span.setStatus({ code: SpanStatusCode.ERROR, message: err instanceof Error ? err.message : String(err) });
  span.end();
}

/**
 * A server span around `fn`, child of the caller's context in `md`; `fn` runs in it (so forwarded
 * calls it makes are its children). `describe` adds the answer's attributes (the decision).
 */
export function serverSpan<Res>(
  t: Tracer,
  name: string,
  md: Metadata,
  fn: () => Res | Promise<Res>,
  describe?: (res: Res) => Record<string, string | number | boolean>,
): Res | Promise<Res> {
  const parent = contextFrom(md);
  const span = t.startSpan(name, { kind: SpanKind.SERVER, attributes: { "rpc.system": "grpc" } }, parent);
  const done = (res: Res): Res => {
    if (describe !== undefined) span.setAttributes(describe(res));
    span.end();
    return res;
  };
  let out: Res | Promise<Res>;
  try {
    out = context.with(trace.setSpan(parent, span), fn);
  } catch (err) {
    failed(span, err);
    throw err;
  }
  if (out instanceof Promise) {
    return out.then(done, (err: unknown) => {
      failed(span, err);
      throw err;
    });
  }
  return done(out);
}
