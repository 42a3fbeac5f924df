// A bounded async queue between pipeline stages: push waits while the queue is full, so a
// fast producer never runs more than `capacity` items ahead (bounded memory).
export class BoundedQueue<T> {
  private items: T[] = [];
  private closed = false;
  private failure: unknown = undefined;
  private waitingPull: (() => void)[] = [];
  private waitingPush: (() => void)[] = [];

  constructor(readonly capacity: number) {}

  /** Adds an item, waiting while the queue holds `capacity` items. */
  async push(item: T): Promise<void> {
    while (this.items.length >= this.capacity && !this.closed) await new Promise<void>((r) => this.waitingPush.push(r));
    if (this.closed) return;
    this.items.push(item);
    this.waitingPull.shift()?.();
  }

  /** The next item, or undefined once the queue is closed and drained; rethrows a producer's failure. */
  async pull(): Promise<T | undefined> {
    for (;;) {
      if (this.items.length) {
        const item = this.items.shift()!;
        this.waitingPush.shift()?.();
        return item;
      }
      if (this.failure !== undefined) throw this.failure;
      if (this.closed) return undefined;
      await new Promise<void>((r) => this.waitingPull.push(r));
    }
  }

  /** No more items; pending pulls drain what is left. */
  close(): void {
    this.closed = true;
    this.wake();
  }

  /** Fails the consumer with `err` once the queued items are drained. */
  fail(err: unknown): void {
    this.failure = err ?? new Error('pipeline stage failed');
    this.closed = true;
    this.wake();
  }

  /** True once closed (by the consumer or a failure): producers should stop. */
  get isClosed(): boolean {
    return this.closed;
  }

  get size(): number {
    return this.items.length;
  }

  private wake(): void {
    for (const r of this.waitingPull.splice(0)) r();
    for (const r of this.waitingPush.splice(0)) r();
  }
}
