// The llmc server's JSON API (docs/api.md, "JSON view") with the signed-in token, and its job-change stream.
// The token travels only in the Authorization header; it is never put in a URL.

/** An error answer of the server, or no answer at all (status 0). */
export class ApiError extends Error {
  /**
   * @param {number} status HTTP status, 0 when the server could not be reached
   * @param {string} code canonical code name (NOT_FOUND, UNAUTHENTICATED, ..., UNAVAILABLE)
   * @param {string} message the server's message: what failed and what to do
   * @param {string} [field] the request field it concerns ("spec.output_uri"), when the server named one
   */
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field || '';
  }
}

/**
 * @typedef {{tenant: string, role: string, canSubmit: boolean}} Me
 * @typedef {{[k: string]: any}} Json
 */

export class Api {
  /** @param {string} token */
  constructor(token) {
    this.token = token;
    /** @type {(e: ApiError) => void} called for every 401 (the session's token is no longer valid) */
    this.onUnauthenticated = () => {};
  }

  /**
   * @param {string} method
   * @param {string} path
   * @param {any} [body]
   * @returns {Promise<Json>}
   */
  async request(method, path, body) {
    /** @type {Response} */
    let res;
    try {
      res = await fetch(path, {
        method,
        headers: {
          Authorization: `Bearer ${this.token}`,
          ...(body !== undefined ? { 'Content-Type': 'application/json' } : {}),
        },
        body: body !== undefined ? JSON.stringify(body) : undefined,
        cache: 'no-store',
        credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, 'UNAVAILABLE', 'Cannot reach the llmc server: is it running? The console retries; this goes away once it answers.');
    }
    const text = await res.text();
    /** @type {Json} */
    let data = {};
    try {
      data = text ? JSON.parse(text) : {};
    } catch {
      data = { message: text };
    }
    if (!res.ok) {
      const err = new ApiError(res.status, data.code || `HTTP ${res.status}`, data.message || res.statusText, data.field);
      if (res.status === 401) this.onUnauthenticated(err);
      throw err;
    }
    return data;
  }

  /** @returns {Promise<Me>} */
  whoami() {
    return /** @type {Promise<Me>} */ (this.request('GET', '/api/v1/whoami'));
  }
  methods() {
    return this.request('GET', '/api/v1/methods');
  }
  /**
   * @param {{state?: string, labels?: string[], pageSize?: number, pageToken?: string}} q
   */
  listJobs(q) {
    const p = new URLSearchParams();
    if (q.state) p.set('state', q.state);
    for (const l of q.labels || []) p.append('label', l);
    if (q.pageSize) p.set('page_size', String(q.pageSize));
    if (q.pageToken) p.set('page_token', q.pageToken);
    return this.request('GET', `/api/v1/jobs?${p}`);
  }
  /** @param {string} id */
  getJob(id) {
    return this.request('GET', `/api/v1/jobs/${encodeURIComponent(id)}`);
  }
  /** @param {string} id @param {number} fromSeq */
  events(id, fromSeq) {
    return this.request('GET', `/api/v1/jobs/${encodeURIComponent(id)}/events?from_seq=${fromSeq}`);
  }
  /** @param {string} id */
  cancel(id) {
    return this.request('POST', `/api/v1/jobs/${encodeURIComponent(id)}:cancel`);
  }
  /** @param {Json} spec */
  validate(spec) {
    return this.request('POST', '/api/v1/jobs:validate', { spec });
  }
  /** @param {string} requestId @param {Json} spec */
  create(requestId, spec) {
    return this.request('POST', '/api/v1/jobs', { requestId, spec });
  }
  workers() {
    return this.request('GET', '/api/v1/workers');
  }

  /**
   * Follows GET /api/v1/jobs:stream (server-sent events) with fetch, so the token goes in a header; reconnects
   * after a break. `onEvent(type, data)` gets "hello", "job" and "resync"; `onStatus(s)` gets "live",
   * "reconnecting" and "closed".
   * @param {(type: string, data: Json) => void} onEvent
   * @param {(status: string) => void} onStatus
   * @returns {{close: () => void}}
   */
  stream(onEvent, onStatus) {
    let closed = false;
    /** @type {AbortController | null} */
    let ctl = null;
    const run = async () => {
      while (!closed) {
        ctl = new AbortController();
        try {
          const res = await fetch('/api/v1/jobs:stream', {
            headers: { Authorization: `Bearer ${this.token}`, Accept: 'text/event-stream' },
            signal: ctl.signal,
            cache: 'no-store',
            credentials: 'omit',
          });
          if (res.status === 401) {
            const data = await res.json().catch(() => ({}));
            this.onUnauthenticated(new ApiError(401, 'UNAUTHENTICATED', data.message || 'token refused'));
            closed = true;
            break;
          }
          if (!res.ok || !res.body) throw new Error(`HTTP ${res.status}`);
          onStatus('live');
          const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
          let buf = '';
          for (;;) {
            const { value, done } = await reader.read();
            if (done) break;
            buf += value;
            let cut;
            while ((cut = buf.indexOf('\n\n')) >= 0) {
              const block = buf.slice(0, cut);
              buf = buf.slice(cut + 2);
              let type = 'message';
              let data = '';
              for (const line of block.split('\n')) {
                if (line.startsWith('event:')) type = line.slice(6).trim();
                else if (line.startsWith('data:')) data += line.slice(5).trimStart();
              }
              if (!data) continue;
              try {
                onEvent(type, JSON.parse(data));
              } catch (e) {
                console.error('job stream: bad event', e);
              }
            }
          }
        } catch (e) {
          if (closed) break;
        }
        if (closed) break;
        onStatus('reconnecting');
        await new Promise((r) => setTimeout(r, 2000));
      }
      onStatus('closed');
    };
    run();
    return {
      close: () => {
        closed = true;
        if (ctl) ctl.abort();
      },
    };
  }
}
