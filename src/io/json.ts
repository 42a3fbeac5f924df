// Strict JSON for untrusted files (safetensors headers, SAE cfg.json): RFC 8259 with a depth
// limit and duplicate keys refused, as native/io/json.cc. Tests: test/safetensors.test.ts.

/** Options for {@link parseJsonStrict}. */
/** A JSON object (not null, not an array). */
export function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface StrictJsonOptions {
  /** Accept Python's `NaN`, `Infinity` and `-Infinity` (json.dump writes them). Defaults to false. */
  nonFinite?: boolean;
}

const MAX_DEPTH = 128;
const ESCAPES: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };

/**
 * Parses `text` as JSON. Unlike JSON.parse, a key that appears twice in one object and nesting
 * deeper than 128 levels are errors. `fail(why)` builds the error to throw.
 */
export function parseJsonStrict(text: string, fail: (why: string) => Error, options: StrictJsonOptions = {}): unknown {
  let p = 0;
  const n = text.length;
  const error = (why: string): never => {
    throw fail(`${why} at offset ${p}`);
  };
  const ws = () => {
    while (p < n) {
      const c = text.charCodeAt(p);
      if (c !== 0x20 && c !== 0x09 && c !== 0x0a && c !== 0x0d) break;
      p++;
    }
  };
  const literal = (word: string) => {
    if (!text.startsWith(word, p)) return false;
    p += word.length;
    return true;
  };

  const string = (): string => {
    p++;  // opening quote
    let out = '';
    let run = p;
    while (p < n) {
      const c = text.charCodeAt(p);
      if (c === 0x22) {
        out += text.slice(run, p++);
        return out;
      }
      if (c < 0x20) error('control character in a string');
      if (c !== 0x5c) {
        p++;
        continue;
      }
      out += text.slice(run, p);
      const e = text[p + 1];
      if (e !== undefined && Object.hasOwn(ESCAPES, e)) {
        out += ESCAPES[e];
        p += 2;
      } else if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(p + 2, p + 6))) {
        out += String.fromCharCode(parseInt(text.slice(p + 2, p + 6), 16));
        p += 6;
      } else {
        error('bad escape in a string');
      }
      run = p;
    }
    return error('unterminated string');
  };

  const number = (): number => {
    const m = /^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/.exec(text.slice(p, p + 400));
    if (!m) return error('malformed number');
    p += m[0].length;
    return Number(m[0]);
  };

  const value = (depth: number): unknown => {
    if (depth > MAX_DEPTH) error('nesting too deep');
    ws();
    if (p >= n) error('unexpected end of input');
    const c = text[p];
    if (c === '{') {
      p++;
      const obj: Record<string, unknown> = {};
      const seen = new Set<string>();
      ws();
      if (text[p] === '}') {
        p++;
        return obj;
      }
      for (;;) {
        ws();
        if (text[p] !== '"') error('expected a string key');
        const key = string();
        if (seen.has(key)) error(`key ${JSON.stringify(key)} appears twice`);
        seen.add(key);
        ws();
        if (text[p] !== ':') error("expected ':'");
        p++;
        // defineProperty: a key "__proto__" is data, as JSON.parse makes it.
        Object.defineProperty(obj, key, { value: value(depth + 1), enumerable: true, writable: true, configurable: true });
        ws();
        if (text[p] === ',') {
          p++;
          continue;
        }
        if (text[p] === '}') {
          p++;
          return obj;
        }
        error("expected ',' or '}'");
      }
    }
    if (c === '[') {
      p++;
      const arr: unknown[] = [];
      ws();
      if (text[p] === ']') {
        p++;
        return arr;
      }
      for (;;) {
        arr.push(value(depth + 1));
        ws();
        if (text[p] === ',') {
          p++;
          continue;
        }
        if (text[p] === ']') {
          p++;
          return arr;
        }
        error("expected ',' or ']'");
      }
    }
    if (c === '"') return string();
    if (literal('true')) return true;
    if (literal('false')) return false;
    if (literal('null')) return null;
    if (options.nonFinite) {
      if (literal('NaN')) return NaN;
      if (literal('Infinity')) return Infinity;
      if (literal('-Infinity')) return -Infinity;
    }
    if (c === '-' || (c! >= '0' && c! <= '9')) return number();
    return error(`unexpected character ${JSON.stringify(c)}`);
  };

  const root = value(0);
  ws();
  if (p !== n) error('trailing characters after the JSON value');
  return root;
}
