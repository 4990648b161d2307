import type client from "prom-client";

/**
 * A Prometheus histogram for the request path, where prom-client's `observe` validated and
 * hashed the label object of every call (2% of a ShouldRateLimit's CPU): `child(method, code)`
 * finds a label set once and its `observe` only finds the bucket and adds. The exposition is
 * prom-client's (the registry formats what `get()` returns, as it does for its own histograms).
 */

interface Series {
  labels: Record<string, string>;
  /** Per bucket (not cumulative); the last is +Inf. */
  counts: Float64Array;
  sum: number;
  count: number;
}

export interface HistogramChild {
  observe(seconds: number): void;
}

export class FastHistogram {
  readonly type = "histogram";
  readonly aggregator = "sum";
  private readonly series = new Map<string, Series>();
  private readonly children = new Map<string, HistogramChild>();

  constructor(
    readonly name: string,
    readonly help: string,
    private readonly labelNames: readonly [string, string],
    private readonly buckets: readonly number[],
    registry: client.Registry,
  ) {
    registry.registerMetric(this as unknown as client.Metric);
  }

  /** The series of these two label values (created on first use). */
  child(a: string, b: string): HistogramChild {
    const key = `${a}\u0000${b}`;
    let c = this.children.get(key);
    if (c === undefined) {
      const s: Series = {
        labels: { [this.labelNames[0]]: a, [this.labelNames[1]]: b },
        counts: new Float64Array(this.buckets.length + 1),
        sum: 0,
        count: 0,
      };
      this.series.set(key, s);
      const bounds = this.buckets;
      c = {
        observe(v: number) {
          let i = 0;
          while (i < bounds.length && v > bounds[i]!) i++;
          s.counts[i]! += 1;
          s.sum += v;
          s.count += 1;
        },
      };
      this.children.set(key, c);
    }
    return c;
  }

  /** As prom-client's histograms give it to the registry: cumulative buckets, then sum and count. */
  async get(): Promise<{
    name: string;
    help: string;
    type: string;
    aggregator: string;
    values: { labels: Record<string, string | number>; value: number; metricName: string }[];
  }> {
    const values: { labels: Record<string, string | number>; value: number; metricName: string }[] = [];
    for (const s of this.series.values()) {
      let acc = 0;
      for (let i = 0; i <= this.buckets.length; i++) {
        acc += s.counts[i]!;
        values.push({
          labels: { le: i < this.buckets.length ? this.buckets[i]! : "+Inf", ...s.labels },
          value: acc,
          metricName: `${this.name}_bucket`,
        });
      }
      values.push({ labels: s.labels, value: s.sum, metricName: `${this.name}_sum` });
      values.push({ labels: s.labels, value: s.count, metricName: `${this.name}_count` });
    }
    return { name: this.name, help: this.help, type: this.type, aggregator: this.aggregator, values };
  }

  reset(): void {
    for (const s of this.series.values()) {
      s.counts.fill(0);
      s.sum = 0;
      s.count = 0;
    }
  }
}
