// An AbortSignal (and a progress callback) bridged to a native task in flight: aborting
// cancels the native work at its next check, and the call rejects with the signal's reason.
// Tests: test/abort-progress.test.ts.
import { native, type NativeTaskControl } from '../bindings/native.js';
import { InvalidInputError, wrapError } from '../errors.js';

/** What `onProgress` of {@link loadModel} receives: bytes of weights read so far and in all. */
export interface LoadProgress {
  loadedBytes: number;
  totalBytes: number;
}

export interface Abortable {
  /** The native control to pass along, when there is a signal or a progress callback. */
  control: NativeTaskControl | undefined;
  /** What the call rejects with: the signal's reason once aborted, the callback's error, else the coded error. */
  error(err: unknown): unknown;
  /** Stops listening (and polling); after a success, reports the final progress (what the callback throws, throws). */
  done(ok?: boolean): void;
}

/**
 * Ties `signal` (checked now, then listened to) and `onProgress` (polled every `everyMs`) to a
 * new native task control. Throws the signal's reason when it is already aborted.
 */
export function abortable(signal: AbortSignal | undefined, onProgress?: (p: LoadProgress) => void, everyMs = 50): Abortable {
  if (!signal && !onProgress) return { control: undefined, error: wrapError, done: () => {} };
  signal?.throwIfAborted();
  const control = new (native().NativeTaskControl)();
  const cancel = () => control.cancel();
  signal?.addEventListener('abort', cancel, { once: true });
  let last = -1;
  let thrown: { err: unknown } | undefined;
  const report = (final: boolean) => {
    const [done, total] = control.progress();
    if (total === 0 || thrown) return;
    const loaded = final ? total : Math.min(done, total);  // tied weights are read twice
    if (loaded === last) return;
    last = loaded;
    if (final) return onProgress!({ loadedBytes: loaded, totalBytes: total });  // throws to the caller
    try {
      onProgress!({ loadedBytes: loaded, totalBytes: total });
    } catch (err) {
      thrown = { err };
      control.cancel();
    }
  };
  const timer = onProgress ? setInterval(() => report(false), everyMs) : undefined;
  return {
    control,
    error(err) {
      if (thrown) return thrown.err;
      if (signal?.aborted) return signal.reason;
      return wrapError(err);
    },
    done(ok = false) {
      signal?.removeEventListener('abort', cancel);
      if (timer) clearInterval(timer);
      if (ok && onProgress) report(true);
    },
  };
}

/** `v` is undefined or a function. */
export function checkCallback(v: unknown, what: string): void {
  if (v !== undefined && typeof v !== 'function') throw new InvalidInputError('ERR_INVALID_INPUT', `${what} must be a function`);
}
