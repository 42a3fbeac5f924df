// Counters and histograms for `GET /metrics`, in the Prometheus text exposition format
// (version 0.0.4): requests by route and status, tokens, decode batch sizes, queue time and
// latency. Tests: test/serve.test.ts.

type Labels = Record<string, string>;

function labelText(labels: Labels): string {
  const keys = Object.keys(labels);
  if (keys.length === 0) return '';
  return `{${keys.map((k) => `${k}="${labels[k]!.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')}}`;
}

class Counter {
  private readonly values = new Map<string, { labels: Labels; value: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
  ) {}
  inc(labels: Labels = {}, by = 1): void {
    const key = labelText(labels);
    const v = this.values.get(key) ?? { labels, value: 0 };
    v.value += by;
    this.values.set(key, v);
  }
  get(labels: Labels = {}): number {
    return this.values.get(labelText(labels))?.value ?? 0;
  }
  text(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} counter`];
    for (const { labels, value } of this.values.values()) lines.push(`${this.name}${labelText(labels)} ${value}`);
    return lines.join('\n');
  }
}

class Histogram {
  private readonly series = new Map<string, { labels: Labels; counts: number[]; sum: number; count: number }>();
  constructor(
    readonly name: string,
    readonly help: string,
    readonly buckets: readonly number[],
  ) {}
  observe(value: number, labels: Labels = {}): void {
    const key = labelText(labels);
    let s = this.series.get(key);
    if (!s) this.series.set(key, (s = { labels, counts: this.buckets.map(() => 0), sum: 0, count: 0 }));
    this.buckets.forEach((b, i) => {
      if (value <= b) s.counts[i]!++;
    });
    s.sum += value;
    s.count++;
  }
  text(): string {
    const lines = [`# HELP ${this.name} ${this.help}`, `# TYPE ${this.name} histogram`];
    for (const s of this.series.values()) {
      this.buckets.forEach((b, i) => lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: String(b) })} ${s.counts[i]}`));
      lines.push(`${this.name}_bucket${labelText({ ...s.labels, le: '+Inf' })} ${s.count}`);
      lines.push(`${this.name}_sum${labelText(s.labels)} ${s.sum}`, `${this.name}_count${labelText(s.labels)} ${s.count}`);
    }
    return lines.join('\n');
  }
}

const SECONDS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

/** The server's metrics. */
export class ServerMetrics {
  readonly requests = new Counter('neurotap_requests_total', 'HTTP requests by route and status code.');
  readonly promptTokens = new Counter('neurotap_prompt_tokens_total', 'Prompt tokens run.');
  readonly generatedTokens = new Counter('neurotap_generated_tokens_total', 'Tokens generated (counted as each is chosen).');
  readonly batchSize = new Histogram('neurotap_decode_batch_size', 'Requests sharing each decode step.', [1, 2, 4, 8, 16, 32, 64]);
  readonly queueSeconds = new Histogram('neurotap_queue_seconds', 'Time a generation request waited for a batch row.', SECONDS);
  readonly latency = new Histogram('neurotap_request_duration_seconds', 'Time from a request arriving to its response ending, by route.', SECONDS);

  text(gauges: Record<string, { help: string; value: number }>): string {
    const g = Object.entries(gauges).map(([name, { help, value }]) => `# HELP ${name} ${help}\n# TYPE ${name} gauge\n${name} ${value}`);
    return [this.requests, this.promptTokens, this.generatedTokens, this.batchSize, this.queueSeconds, this.latency].map((m) => m.text()).concat(g).join('\n') + '\n';
  }
}
