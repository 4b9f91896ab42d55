/**
 * pipekit.js: a browser client for the pipekit/1 wire protocol over WebSocket.
 *
 * An ES module with no dependencies and no build step. docs/protocol.md is the normative
 * description of the protocol; this file follows it and calls out where a browser differs.
 * Each pipekit/1 frame travels in exactly one *binary* WebSocket message, both ways. The
 * browser is always the initiator: it sends the first HELLO.
 *
 *   import { connect } from "/pipekit.js";
 *   const pipe = await connect("/ws", { token: "s3cret" });
 *   for await (const message of pipe) {        // stops at the peer's END
 *     await pipe.send({ echo: message });      // waits while the peer has paused us
 *   }
 *   await pipe.close();                         // END (if not sent yet), then close
 *
 * API
 *
 *   connect(url, options?) -> Promise<Pipe>
 *       Opens a WebSocket to `url` (relative URLs resolve against the page; http(s) maps
 *       to ws(s)) and resolves once the handshake completed. Rejects with a PipekitError:
 *       the server's ERROR frame (kind "auth_failed", "codec_mismatch", ...), a violation
 *       in its answer (kind "malformed", "version_mismatch", "codec_mismatch", ...), or
 *       kind "handshake" if the socket closed first.
 *       options:
 *         token       string sent in HELLO (the token travels in clear: use wss: off-host)
 *         name        name sent in HELLO, default "browser"
 *         highWater   receive high-water mark in messages, default 1024 (PAUSE there)
 *         lowWater    receive low-water mark, default floor(highWater / 2) (RESUME there)
 *         highWaterBytes  receive high-water mark in DATA payload bytes, default 16 MiB
 *         lowWaterBytes   its low-water mark, default floor(highWaterBytes / 2)
 *         maxFrame    largest frame payload accepted, default 8 MiB (1024 .. 2^32-1)
 *         pauseSlack  DATA bytes tolerated after our PAUSE, default 16 MiB
 *         sendBufferLimit  send() waits while ws.bufferedAmount exceeds this, default 1 MiB
 *         codec       optional binary codec supplied by the page, offered before "json":
 *                       { name: "msgpack" | "cbor",
 *                         encode(value) -> Uint8Array,
 *                         decodeAll(Uint8Array) -> array (or iterable) of every value in
 *                           the payload; must throw on invalid or truncated input }
 *                     msgpack and CBOR are self-delimiting, so a DATA payload is the
 *                     messages concatenated, e.g. with @msgpack/msgpack:
 *                       { name: "msgpack", encode, decodeAll: (b) => decodeMulti(b) }
 *                     JSON is built in and always offered (last).
 *         WebSocket   WebSocket constructor to use (default globalThis.WebSocket; for tests)
 *
 *   class Pipe extends EventTarget            (made by connect(), not constructed directly)
 *       send(value) -> Promise<void>     queue one message. Messages sent in the same task
 *                                        are coalesced into DATA frames of up to ~64 KiB.
 *                                        Resolves once the message is queued for the wire;
 *                                        waits while the peer has PAUSEd us, while
 *                                        ws.bufferedAmount > sendBufferLimit, or while the
 *                                        frame being filled is full. Rejects (kind
 *                                        "oversize") if the encoding exceeds the peer's
 *                                        max_frame, (kind "codec") if the codec cannot encode
 *                                        the value (JSON: NaN, Infinity, BigInt, byte
 *                                        arrays), (kind "state") after end()/fail(), or with
 *                                        the connection's failure.
 *       end() -> Promise<void>           END after everything queued (half-close; receiving
 *                                        continues). Resolves when END is written.
 *       fail(kind, message, details?) -> Promise<void>
 *                                        ERROR {kind, message, ...details} after everything
 *                                        queued. A no-op if this direction is already closed.
 *       receive() -> Promise<value>      the next message. Rejects with EndOfStream (kind
 *                                        "end") after the peer's END, with the peer's ERROR
 *                                        as a PipekitError, or with the connection's failure
 *                                        (kind "closed" or a protocol violation's kind).
 *       [Symbol.asyncIterator]()         iterates over messages; stops at END, throws on
 *                                        ERROR or failure.
 *       ping(payload?) -> void           sends PING (Uint8Array or string payload)
 *       close() -> Promise<void>         end() if still open, flush, close the WebSocket;
 *                                        resolves once it is closed. (Waits for END to be
 *                                        written: if the peer never RESUMEs, close() waits.)
 *       stats                            { messagesSent, messagesReceived, paused (the peer
 *                                        paused us), bufferedIncoming (received, not yet
 *                                        consumed), pausedPeer (we paused the peer),
 *                                        sendState, receiveState }
 *       codec, peer, sendState, receiveState   the codec name, the peer's HELLO (no token),
 *                                        and "open" | "ended" | "failed" per direction
 *       events: "error" (ErrorEvent, `.error` is the PipekitError: the peer's ERROR, a
 *               protocol violation, or a broken connection), "end" (the peer's END),
 *               "pong" (CustomEvent, `.detail` is the payload Uint8Array), "close"
 *               (CloseEvent of the WebSocket).
 *
 *   class PipekitError extends Error     .kind (string), .message, .details (object)
 *   class EndOfStream extends PipekitError    kind "end"
 *
 * Flow control (protocol section 6): messages received and not yet taken by receive()
 * are counted, and the DATA payload bytes they came in; when a DATA frame brings the
 * count to highWater or the bytes to highWaterBytes, PAUSE is sent; when the application
 * has consumed down to lowWater and lowWaterBytes, RESUME is sent. A page that stops
 * calling receive() therefore stops the server. The socket itself is always read.
 *
 * Sending: the flush is the next task after a send() (a MessageChannel message: no
 * timer, so a lone message is written at once), which lets a loop of awaited sends fill
 * frames of up to min(64 KiB, peer's max_frame); a larger message goes alone in a frame.
 * The connection is not closed automatically when both directions are done: call close().
 *
 * Where a browser differs from the reference implementation:
 *   - A WebSocket message arrives whole, so an oversize frame is refused from its header
 *     (ERROR "oversize") but only after the browser itself has buffered the message.
 *   - A text WebSocket message, or a binary one that does not hold exactly one frame, is
 *     malformed.
 *   - JSON numbers are JavaScript doubles: integers beyond 2^53 lose precision, and a
 *     HELLO max_frame written as 1e6 or 8388608.0 is accepted as an integer. Byte strings
 *     cannot be sent over JSON (use a msgpack or CBOR codec).
 */

const PROTOCOL = "pipekit/1";
const HEADER_SIZE = 8;
const FLAG_JSON = 0x0001;
const MAX_U32 = 0xffffffff;
const HELLO_MAX_FRAME = 64 * 1024; // limit on frames received before the handshake
const COALESCE_BYTES = 64 * 1024; // target size of the DATA frames we write
const SEND_POLL_MS = 10; // how often a blocked send() re-checks ws.bufferedAmount

const DATA = 1;
const END = 2;
const ERROR = 3;
const PING = 4;
const PONG = 5;
const PAUSE = 6;
const RESUME = 7;
const HELLO = 8;
const TYPE_NAMES = ["", "DATA", "END", "ERROR", "PING", "PONG", "PAUSE", "RESUME", "HELLO"];

// The state of one direction (protocol section 5).
const OPEN = "open";
const ENDED = "ended";
const FAILED = "failed";

const EMPTY = new Uint8Array(0);
const NEWLINE = new Uint8Array([0x0a]);
const utf8Encoder = new TextEncoder();
// fatal: invalid UTF-8 is an error; ignoreBOM: a BOM stays in the text (and is invalid JSON).
const utf8Decoder = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true });

// --- errors ------------------------------------------------------------------------

/** Every failure this module reports: `.kind` is machine-readable, `.details` holds the
 * extra keys of an ERROR payload. */
export class PipekitError extends Error {
  constructor(kind, message, details = {}) {
    super(message);
    this.name = "PipekitError";
    this.kind = kind;
    this.details = details;
  }
}

/** receive() rejects with this once the peer has ended its direction with END. */
export class EndOfStream extends PipekitError {
  constructor() {
    super("end", "the peer ended the stream");
    this.name = "EndOfStream";
  }
}

/** A rule of the protocol broken by the peer (internal: becomes an ERROR frame). */
class Violation extends PipekitError {}

// --- frames and codecs -------------------------------------------------------------

function encodeFrame(type, payload = EMPTY, flags = 0) {
  const bytes = new Uint8Array(HEADER_SIZE + payload.byteLength);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, payload.byteLength);
  view.setUint16(4, type);
  view.setUint16(6, flags);
  bytes.set(payload, HEADER_SIZE);
  return bytes;
}

function jsonFrame(type, body) {
  return encodeFrame(type, utf8Encoder.encode(JSON.stringify(body)), FLAG_JSON);
}

/** One DATA frame holding `parts[start..end)` joined by `sep` (`size` payload bytes). */
function dataFrame(parts, start, end, size, sep) {
  const bytes = new Uint8Array(HEADER_SIZE + size);
  new DataView(bytes.buffer).setUint32(0, size);
  bytes[5] = DATA; // type is big-endian u16 0x0001; flags stay 0
  let at = HEADER_SIZE;
  for (let i = start; i < end; i++) {
    if (i > start && sep.length) {
      bytes.set(sep, at);
      at += sep.length;
    }
    bytes.set(parts[i], at);
    at += parts[i].byteLength;
  }
  return bytes;
}

// JSON writers must not emit NaN or Infinity (section 4.1); JSON.stringify would silently
// turn them into null, and byte arrays into objects, so refuse them instead.
function strictJson(key, value) {
  if (typeof value === "number" && !Number.isFinite(value)) {
    throw new PipekitError("codec", `cannot encode ${value} as JSON`);
  }
  if (typeof value === "object" && value !== null &&
      (value instanceof ArrayBuffer || ArrayBuffer.isView(value))) {
    throw new PipekitError("codec", "cannot encode a byte array as JSON (use a binary codec)");
  }
  return value;
}

// Lines to skip: empty or whitespace only (the reference strips ASCII whitespace).
const BLANK_LINE = /^[ \t\r\v\f]*$/;

const JSON_CODEC = {
  name: "json",
  separator: NEWLINE, // JSON messages in one payload are separated by "\n"
  encode(value) {
    const text = JSON.stringify(value, strictJson); // never contains a raw line feed
    if (text === undefined) throw new PipekitError("codec", `cannot encode ${typeof value} as JSON`);
    return utf8Encoder.encode(text);
  },
  decodeAll(bytes) {
    const out = [];
    for (const line of utf8Decoder.decode(bytes).split("\n")) {
      if (!BLANK_LINE.test(line)) out.push(JSON.parse(line));
    }
    return out;
  },
};

/** Wrap a page-supplied codec object into the internal shape. */
function pageCodec(codec) {
  if (codec.name !== "msgpack" && codec.name !== "cbor") {
    throw new TypeError(`codec.name must be "msgpack" or "cbor", got ${JSON.stringify(codec.name)}`);
  }
  if (typeof codec.encode !== "function" || typeof codec.decodeAll !== "function") {
    throw new TypeError("codec needs encode(value) and decodeAll(bytes) functions");
  }
  return {
    name: codec.name,
    separator: EMPTY, // self-delimiting: messages are simply concatenated
    encode(value) {
      const out = codec.encode(value);
      if (out instanceof Uint8Array) return out;
      if (out instanceof ArrayBuffer) return new Uint8Array(out);
      if (ArrayBuffer.isView(out)) return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
      throw new TypeError("codec.encode must return a Uint8Array");
    },
    decodeAll(bytes) {
      const values = codec.decodeAll(bytes);
      if (Array.isArray(values)) return values;
      if (values !== null && typeof values === "object" && Symbol.iterator in values) return Array.from(values);
      throw new TypeError("codec.decodeAll must return an array or an iterable of values");
    },
  };
}

/** A FIFO with O(1) push and shift (an array and a head index). */
class Queue {
  constructor() {
    this.items = [];
    this.head = 0;
  }
  get length() {
    return this.items.length - this.head;
  }
  push(item) {
    this.items.push(item);
  }
  peek() {
    return this.items[this.head];
  }
  shift() {
    const item = this.items[this.head];
    this.items[this.head++] = undefined;
    if (this.head === this.items.length) {
      this.items = [];
      this.head = 0;
    } else if (this.head >= 1024 && this.head * 2 >= this.items.length) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    return item;
  }
  drain() {
    const items = this.items.slice(this.head);
    this.items = [];
    this.head = 0;
    return items;
  }
}

function resolveUrl(url) {
  const base = typeof location !== "undefined" ? location.href : undefined;
  const u = new URL(url, base);
  if (u.protocol === "http:") u.protocol = "ws:";
  else if (u.protocol === "https:") u.protocol = "wss:";
  return u.href;
}

function checkInteger(name, value, min, max) {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(`${name} must be an integer in ${min}..${max}, got ${value}`);
  }
  return value;
}

function errorEvent(error) {
  if (typeof ErrorEvent === "function") {
    return new ErrorEvent("error", { error, message: error.message });
  }
  const event = new Event("error");
  event.error = error;
  return event;
}

// --- the pipe ----------------------------------------------------------------------

/**
 * One pipekit/1 connection over a WebSocket. Made by {@link connect}.
 */
export class Pipe extends EventTarget {
  /** @private Use connect(). */
  constructor(url, options = {}) {
    super();
    const highWater = checkInteger("highWater", options.highWater ?? 1024, 1, Number.MAX_SAFE_INTEGER);
    this._highWater = highWater;
    this._lowWater = checkInteger("lowWater", options.lowWater ?? Math.floor(highWater / 2), 0, highWater - 1);
    const highWaterBytes = checkInteger("highWaterBytes", options.highWaterBytes ?? 16 * 1024 * 1024, 1, Number.MAX_SAFE_INTEGER);
    this._highWaterBytes = highWaterBytes;
    this._lowWaterBytes = checkInteger("lowWaterBytes", options.lowWaterBytes ?? Math.floor(highWaterBytes / 2), 0, highWaterBytes - 1);
    this._maxFrame = checkInteger("maxFrame", options.maxFrame ?? 8 * 1024 * 1024, 1024, MAX_U32);
    this._pauseSlack = checkInteger("pauseSlack", options.pauseSlack ?? 16 * 1024 * 1024, 0, Number.MAX_SAFE_INTEGER);
    this._sendBufferLimit = checkInteger("sendBufferLimit", options.sendBufferLimit ?? 1024 * 1024, 0, Number.MAX_SAFE_INTEGER);
    this._name = options.name ?? "browser";
    this._token = options.token;
    this._offered = options.codec ? [pageCodec(options.codec), JSON_CODEC] : [JSON_CODEC];

    // Handshake.
    this._codec = null; // the negotiated codec, set by the peer's HELLO
    this._peer = null;
    this._peerMaxFrame = HELLO_MAX_FRAME;
    this._frameTarget = COALESCE_BYTES; // DATA frame size: min(64 KiB, peer's max_frame)
    this._ready = new Promise((resolve, reject) => {
      this._handshakeDone = resolve;
      this._handshakeFailed = reject;
    });

    // The state of each direction, and the failure that killed the connection, if any
    // (a protocol violation, or the socket closing before both directions were closed).
    this._sendState = OPEN;
    this._receiveState = OPEN;
    this._failure = null;
    this._closing = false; // close() was called
    this._closed = false; // the WebSocket is closed

    // Receiving: messages not yet taken by the application, pending receive() calls (only
    // ever waiting while the inbox is empty), and what receive() reports once the inbox
    // is drained after END, ERROR or a failure.
    this._inbox = new Queue();
    this._receivers = new Queue();
    this._receiveOutcome = null;
    this._pausedPeer = false; // we sent PAUSE
    this._bytesSincePause = 0;
    // The DATA payload bytes of the inbox: [messages, bytes] per frame, oldest first; a
    // frame's bytes are released in proportion as its messages are taken.
    this._inboxBytes = 0;
    this._inboxFrames = new Queue();

    // Sending: send()/end()/fail() calls waiting for their turn (FIFO, keeps order);
    // encoded messages accepted and not yet framed; frames ready for the wire (held back
    // while the peer has paused us).
    this._peerPaused = false;
    this._waiting = new Queue();
    this._pending = [];
    this._pendingBytes = 0;
    this._stream = [];
    this._flushScheduled = false;
    this._pollTimer = 0;

    this._messagesSent = 0;
    this._messagesReceived = 0;
    this._closedPromise = new Promise((resolve) => (this._closedResolve = resolve));

    const WebSocketClass = options.WebSocket ?? globalThis.WebSocket;
    const ws = new WebSocketClass(resolveUrl(url));
    ws.binaryType = "arraybuffer";
    ws.onopen = () => this._onOpen();
    ws.onmessage = (event) => this._onMessage(event.data);
    ws.onclose = (event) => this._onClose(event);
    ws.onerror = () => {}; // always followed by a close event, handled there
    this._ws = ws;

    // Flushes run as a task of their own (not a timer, not a microtask), so that every
    // message sent by code running in the same task, including across awaits of send(),
    // is coalesced into the same frames.
    this._flushChannel = new MessageChannel();
    this._flushChannel.port1.onmessage = () => this._flush();
  }

  // -- public API -------------------------------------------------------------------

  /** The negotiated codec name ("json", "msgpack", "cbor"). */
  get codec() {
    return this._codec ? this._codec.name : null;
  }

  /** The peer's HELLO (the server's name, max_frame, high_water, codec). */
  get peer() {
    return this._peer ? { ...this._peer } : null;
  }

  /** "open", "ended" or "failed". */
  get sendState() {
    return this._sendState;
  }

  get receiveState() {
    return this._receiveState;
  }

  get stats() {
    return {
      messagesSent: this._messagesSent,
      messagesReceived: this._messagesReceived,
      paused: this._peerPaused,
      bufferedIncoming: this._inbox.length,
      pausedPeer: this._pausedPeer,
      sendState: this._sendState,
      receiveState: this._receiveState,
    };
  }

  /** Queue one message; resolves once it is queued for the wire (waits while the peer
   * has paused us or the socket's buffer is full). */
  send(value) {
    const refusal = this._sendRefusal();
    if (refusal) return Promise.reject(refusal);
    let bytes;
    try {
      bytes = this._codec.encode(value);
    } catch (exc) {
      const error = exc instanceof PipekitError ? exc
        : new PipekitError("codec", `cannot encode message with ${this._codec.name}: ${exc.message}`);
      return Promise.reject(error);
    }
    if (bytes.byteLength > this._peerMaxFrame) {
      return Promise.reject(new PipekitError("oversize",
        `message of ${bytes.byteLength} bytes exceeds the peer's max frame of ${this._peerMaxFrame} bytes`));
    }
    if (this._waiting.length === 0 && this._canAccept(bytes.byteLength)) {
      this._accept(bytes);
      return Promise.resolve();
    }
    return new Promise((resolve, reject) => {
      this._waiting.push({ type: DATA, bytes, resolve, reject });
      this._armPoll();
    });
  }

  /** END after everything queued (half-close); resolves once END is written. */
  end() {
    const refusal = this._sendRefusal();
    if (refusal) return Promise.reject(refusal);
    this._sendState = ENDED;
    return this._queueClosingFrame(END, encodeFrame(END));
  }

  /** ERROR {kind, message, ...details} after everything queued; a no-op if this direction
   * is already closed. Resolves once the ERROR is written. */
  fail(kind, message, details = {}) {
    if (this._sendState !== OPEN || this._failure) return Promise.resolve();
    // kind and message first, then the details (which cannot override them).
    const body = Object.assign({ kind: String(kind), message: String(message) }, details);
    body.kind = String(kind);
    body.message = String(message);
    let frame;
    try {
      frame = jsonFrame(ERROR, body);
    } catch (exc) {
      return Promise.reject(new PipekitError("codec", `cannot encode the ERROR details as JSON: ${exc.message}`));
    }
    this._sendState = FAILED;
    return this._queueClosingFrame(ERROR, frame);
  }

  /** The next message; rejects with EndOfStream after END, or with the failure. */
  receive() {
    if (this._inbox.length) return Promise.resolve(this._take());
    if (this._receiveOutcome) return Promise.reject(this._receiveOutcome);
    return new Promise((resolve, reject) => this._receivers.push({ resolve, reject }));
  }

  async *[Symbol.asyncIterator]() {
    for (;;) {
      let message;
      try {
        message = await this.receive();
      } catch (exc) {
        if (exc instanceof EndOfStream) return;
        throw exc;
      }
      yield message;
    }
  }

  /** Send PING (a control frame: never held back); the answer is a "pong" event. */
  ping(payload = EMPTY) {
    if (!this._codec || this._failure || this._closed) {
      throw new PipekitError("state", "cannot ping: the connection is not open");
    }
    const bytes = typeof payload === "string" ? utf8Encoder.encode(payload) : payload;
    this._sendNow(encodeFrame(PING, bytes));
  }

  /** END if still open, flush, close the WebSocket; resolves once it is closed. */
  async close() {
    if (this._sendState === OPEN && !this._failure && !this._closed) {
      await this.end().catch(() => {});
    } else if (this._lastClosingFrame) {
      await this._lastClosingFrame.catch(() => {}); // END or ERROR queued and not yet written
    }
    this._closing = true;
    if (!this._closed) this._ws.close(1000);
    await this._closedPromise;
  }

  // -- sending ----------------------------------------------------------------------

  _sendRefusal() {
    if (this._failure) return this._failure;
    if (!this._codec) return new PipekitError("state", "cannot send before the handshake completed");
    if (this._sendState !== OPEN) {
      return new PipekitError("state", `cannot send: this direction is ${this._sendState}`);
    }
    return null;
  }

  /** Whether a message of `size` bytes may join the queue for the wire right now: the
   * peer has not paused us, the socket's buffer is not full, and the message still fits
   * in the frame being filled (so each flush writes about one full frame). */
  _canAccept(size) {
    return !this._peerPaused &&
      (this._pending.length === 0 || this._pendingBytes + size <= this._frameTarget) &&
      this._ws.bufferedAmount <= this._sendBufferLimit;
  }

  _accept(bytes) {
    this._pending.push(bytes);
    this._pendingBytes += bytes.byteLength + this._codec.separator.length;
    this._messagesSent++;
    this._scheduleFlush();
  }

  /** END or ERROR: ordered behind every message already queued or waiting. */
  _queueClosingFrame(type, frame) {
    const promise = new Promise((resolve, reject) => {
      this._waiting.push({ type, bytes: frame, resolve, reject });
    });
    this._lastClosingFrame = promise;
    this._admit();
    return promise;
  }

  /** Move waiting send()/end()/fail() calls, in order, into the queue for the wire. */
  _admit() {
    const waiting = this._waiting;
    while (waiting.length) {
      const entry = waiting.peek();
      if (entry.type === DATA) {
        if (!this._canAccept(entry.bytes.byteLength)) break;
        waiting.shift();
        this._accept(entry.bytes);
        entry.resolve();
      } else {
        // END or ERROR: resolved once written, so it goes into the frame queue itself.
        waiting.shift();
        this._framePending();
        this._stream.push(entry);
        this._scheduleFlush();
      }
    }
    this._armPoll();
  }

  /** Browsers have no event for ws.bufferedAmount going down: poll while it blocks. */
  _armPoll() {
    if (this._pollTimer || this._closed || this._peerPaused || !this._waiting.length) return;
    if (this._ws.bufferedAmount <= this._sendBufferLimit) return; // a flush will admit them
    this._pollTimer = setTimeout(() => {
      this._pollTimer = 0;
      this._admit();
    }, SEND_POLL_MS);
  }

  _scheduleFlush() {
    if (this._flushScheduled) return;
    this._flushScheduled = true;
    this._flushChannel.port2.postMessage(null);
  }

  /** Frame the accepted messages into DATA frames of at most ~64 KiB each (section 4.4). */
  _framePending() {
    const pending = this._pending;
    if (!pending.length) return;
    const sep = this._codec.separator;
    const target = this._frameTarget;
    let start = 0;
    let size = 0;
    for (let i = 0; i < pending.length; i++) {
      const len = pending[i].byteLength;
      if (i > start && size + sep.length + len > target) {
        this._stream.push({ type: DATA, bytes: dataFrame(pending, start, i, size, sep) });
        start = i;
        size = len;
      } else {
        size += (i > start ? sep.length : 0) + len;
      }
    }
    this._stream.push({ type: DATA, bytes: dataFrame(pending, start, pending.length, size, sep) });
    this._pending = [];
    this._pendingBytes = 0;
  }

  /** Write what is queued, unless the peer paused us; then let waiting calls in. */
  _flush() {
    this._flushScheduled = false;
    if (this._closed || this._failure) return;
    if (!this._peerPaused) {
      this._framePending();
      const stream = this._stream;
      this._stream = [];
      for (const entry of stream) {
        this._ws.send(entry.bytes);
        if (entry.resolve) entry.resolve(); // END or ERROR written
      }
    }
    this._admit();
  }

  /** Control frames are never held back by flow control. */
  _sendNow(frame) {
    if (this._ws.readyState === 1 /* OPEN */) this._ws.send(frame);
  }

  // -- receiving --------------------------------------------------------------------

  _onOpen() {
    const hello = {
      protocol: PROTOCOL,
      codecs: this._offered.map((codec) => codec.name),
      name: this._name,
      max_frame: this._maxFrame,
      high_water: this._highWater,
    };
    if (this._token !== undefined && this._token !== null) hello.token = String(this._token);
    this._sendNow(jsonFrame(HELLO, hello));
  }

  _onMessage(data) {
    if (this._failure) return; // stop interpreting input after a violation (section 8)
    try {
      if (!(data instanceof ArrayBuffer)) {
        throw new Violation("malformed", "text WebSocket message: pipekit/1 frames travel in binary messages");
      }
      if (data.byteLength < HEADER_SIZE) {
        throw new Violation("malformed", `WebSocket message of ${data.byteLength} bytes is shorter than a frame header`);
      }
      // Check the header before looking at the payload, in the order of section 2.
      const view = new DataView(data);
      const length = view.getUint32(0);
      const type = view.getUint16(4);
      const flags = view.getUint16(6);
      if (flags & ~FLAG_JSON) {
        throw new Violation("malformed", `reserved flag bits set (flags=0x${flags.toString(16).padStart(4, "0")})`);
      }
      if (type < DATA || type > HELLO) throw new Violation("malformed", `unknown frame type ${type}`);
      const limit = this._codec ? this._maxFrame : Math.min(this._maxFrame, HELLO_MAX_FRAME);
      if (length > limit) {
        throw new Violation("oversize", `frame of ${length} bytes exceeds the max frame of ${limit} bytes`);
      }
      if (data.byteLength !== HEADER_SIZE + length) {
        throw new Violation("malformed",
          `WebSocket message of ${data.byteLength} bytes does not hold exactly one frame of ${HEADER_SIZE + length} bytes`);
      }
      this._handle(type, flags, new Uint8Array(data, HEADER_SIZE, length));
    } catch (exc) {
      if (!(exc instanceof Violation)) throw exc;
      this._violate(exc);
    }
  }

  _handle(type, flags, payload) {
    if (type === DATA) {
      this._handleData(flags, payload);
      return;
    }
    if (type === HELLO) {
      this._handleHello(flags, payload);
      return;
    }
    if (type === ERROR) {
      this._handleError(flags, payload);
      return;
    }
    const name = TYPE_NAMES[type];
    if (!this._codec) throw new Violation("malformed", `${name} before the handshake completed`);
    if (type === PING) {
      this._sendNow(encodeFrame(PONG, payload));
    } else if (type === PONG) {
      this.dispatchEvent(new CustomEvent("pong", { detail: payload.slice() }));
    } else {
      if (payload.byteLength) throw new Violation("malformed", `${name} frame must have an empty payload`);
      if (type === END) {
        if (this._receiveState !== OPEN) {
          throw new Violation("malformed", `END after ${this._receiveState.toUpperCase()}`);
        }
        this._receiveState = ENDED;
        this._finishReceiving(new EndOfStream());
        this.dispatchEvent(new Event("end"));
      } else if (type === PAUSE) {
        this._peerPaused = true;
      } else { // RESUME
        this._peerPaused = false;
        this._scheduleFlush();
      }
    }
  }

  _handleData(flags, payload) {
    if (!this._codec) throw new Violation("malformed", "DATA before the handshake completed");
    if (this._receiveState !== OPEN) {
      throw new Violation("malformed", `DATA after ${this._receiveState.toUpperCase()}`);
    }
    if (this._pausedPeer) {
      // Hard cap (section 6): what was in flight when PAUSE left is tolerated, no more.
      this._bytesSincePause += payload.byteLength;
      if (this._bytesSincePause > this._pauseSlack) {
        throw new Violation("flow_control",
          `flow control violated: peer sent ${this._bytesSincePause} bytes of DATA after PAUSE (allowed ${this._pauseSlack})`);
      }
    }
    const codec = flags & FLAG_JSON ? JSON_CODEC : this._codec;
    let messages;
    try {
      messages = codec.decodeAll(payload);
    } catch (exc) {
      throw new Violation("undecodable", `undecodable ${codec.name} payload: ${exc.message}`);
    }
    this._messagesReceived += messages.length;
    let kept = 0;
    for (const message of messages) {
      if (this._receivers.length) this._receivers.shift().resolve(message); // taken at once
      else {
        this._inbox.push(message);
        kept += 1;
      }
    }
    if (kept) {
      const bytes = Math.floor(payload.byteLength * kept / messages.length);
      this._inboxFrames.push([kept, bytes]);
      this._inboxBytes += bytes;
    }
    if (!this._pausedPeer &&
        (this._inbox.length >= this._highWater || this._inboxBytes >= this._highWaterBytes)) {
      this._pausedPeer = true;
      this._bytesSincePause = 0;
      this._sendNow(encodeFrame(PAUSE));
    }
  }

  _handleHello(flags, payload) {
    if (this._codec) throw new Violation("malformed", "HELLO received twice");
    const hello = jsonPayload("HELLO", flags, payload);
    if (hello.protocol !== PROTOCOL) {
      throw new Violation("version_mismatch",
        `unsupported protocol ${JSON.stringify(hello.protocol)}; this peer speaks ${PROTOCOL}`);
    }
    const maxFrame = hello.max_frame;
    if (!Number.isInteger(maxFrame) || maxFrame < 1024 || maxFrame > MAX_U32) {
      throw new Violation("malformed", `HELLO max_frame must be an integer >= 1024, got ${JSON.stringify(maxFrame)}`);
    }
    if (!Number.isInteger(hello.high_water) || hello.high_water < 1) {
      throw new Violation("malformed", `HELLO high_water must be a positive integer, got ${JSON.stringify(hello.high_water)}`);
    }
    if (typeof hello.name !== "string") throw new Violation("malformed", "HELLO name must be a string");
    const codec = this._offered.find((c) => c.name === hello.codec);
    if (!codec) {
      throw new Violation("codec_mismatch",
        `peer chose codec ${JSON.stringify(hello.codec)}, which was not offered (${this._offered.map((c) => c.name).join(", ")})`);
    }
    delete hello.token;
    this._peer = hello;
    this._peerMaxFrame = maxFrame;
    this._frameTarget = Math.min(COALESCE_BYTES, maxFrame);
    this._codec = codec;
    this._handshakeDone(this);
  }

  _handleError(flags, payload) {
    const body = jsonPayload("ERROR", flags, payload);
    if (this._receiveState !== OPEN) {
      throw new Violation("malformed", `ERROR after ${this._receiveState.toUpperCase()}`);
    }
    const { kind, message, ...details } = body;
    if (typeof kind !== "string" || typeof message !== "string") {
      throw new Violation("malformed", "ERROR payload needs string fields kind and message");
    }
    this._receiveState = FAILED;
    const error = new PipekitError(kind, message, details);
    if (!this._codec) {
      // The server refused the handshake: the connection is over.
      this._failure = error;
      this._sendState = FAILED;
      this._handshakeFailed(error);
      this._ws.close(1000);
      return;
    }
    this._finishReceiving(error);
    this.dispatchEvent(errorEvent(error));
  }

  /** Take the next buffered message; RESUME the peer once down to both low-water marks. */
  _take() {
    const message = this._inbox.shift();
    const frame = this._inboxFrames.peek();
    const share = frame[0] === 1 ? frame[1] : Math.floor(frame[1] / frame[0]);
    frame[0] -= 1;
    frame[1] -= share;
    this._inboxBytes -= share;
    if (frame[0] === 0) this._inboxFrames.shift();
    if (this._pausedPeer && this._inbox.length <= this._lowWater &&
        this._inboxBytes <= this._lowWaterBytes) {
      this._pausedPeer = false;
      if (this._receiveState === OPEN) this._sendNow(encodeFrame(RESUME));
    }
    return message;
  }

  /** The incoming direction is over: receive() reports `outcome` once the inbox is drained. */
  _finishReceiving(outcome) {
    if (!this._receiveOutcome) this._receiveOutcome = outcome;
    for (const receiver of this._receivers.drain()) receiver.reject(this._receiveOutcome);
  }

  /** The peer broke the protocol (section 8): ERROR with the reason, fail, close. */
  _violate(error) {
    const sendWasOpen = this._sendState === OPEN;
    this._failure = error;
    if (this._ws.readyState === 1 /* OPEN */) {
      if (sendWasOpen) {
        // Queued DATA is dropped; the ERROR carries the reason to the peer.
        this._ws.send(jsonFrame(ERROR, { kind: error.kind, message: error.message }));
      } else {
        // An END or ERROR already queued goes out behind the DATA queued before it, as in
        // the reference implementation: never alone, which would be a clean end that
        // silently lost those messages.
        for (const entry of this._stream) {
          this._ws.send(entry.bytes);
          if (entry.resolve) entry.resolve();
        }
        this._stream = [];
      }
      this._ws.close(1000);
    }
    this._sendState = FAILED;
    this._receiveState = FAILED;
    this._dropOutgoing(error);
    this._finishReceiving(error);
    if (!this._codec) this._handshakeFailed(error);
    else this.dispatchEvent(errorEvent(error));
  }

  /** Reject every send()/end()/fail() not yet written. Returns whether any was pending. */
  _dropOutgoing(error) {
    const lost = this._waiting.length + this._pending.length + this._stream.length > 0;
    for (const entry of this._stream) if (entry.reject) entry.reject(error);
    for (const entry of this._waiting.drain()) entry.reject(error);
    this._stream = [];
    this._pending = [];
    this._pendingBytes = 0;
    clearTimeout(this._pollTimer);
    this._pollTimer = 0;
    return lost;
  }

  _onClose(event) {
    this._closed = true;
    this._flushChannel.port1.close();
    const reason = event.reason ? `: ${event.reason}` : "";
    if (!this._codec && !this._failure) {
      this._failure = new PipekitError("handshake",
        `connection closed before the handshake completed (code ${event.code}${reason})`);
      this._handshakeFailed(this._failure);
    } else if (!this._failure) {
      // A transport closing before a direction was closed means the connection broke
      // (section 5): receive() and send() report it, never a clean end.
      const broken = new PipekitError("closed", `connection closed (code ${event.code}${reason})`);
      const receiving = this._receiveState === OPEN;
      if (receiving) this._receiveState = FAILED;
      if (this._sendState === OPEN) this._sendState = FAILED;
      this._failure = broken;
      const lost = this._dropOutgoing(broken);
      this._finishReceiving(broken);
      if ((receiving || lost) && !this._closing) this.dispatchEvent(errorEvent(broken));
    } else {
      this._dropOutgoing(this._failure);
    }
    const CloseEventClass = typeof CloseEvent === "function" ? CloseEvent : null;
    this.dispatchEvent(CloseEventClass
      ? new CloseEventClass("close", { code: event.code, reason: event.reason, wasClean: event.wasClean })
      : new Event("close"));
    this._closedResolve();
  }
}

function jsonPayload(name, flags, payload) {
  if (!(flags & FLAG_JSON)) throw new Violation("malformed", `${name} payload must carry the JSON flag`);
  let body;
  try {
    body = JSON.parse(utf8Decoder.decode(payload));
  } catch (exc) {
    throw new Violation("malformed", `${name} payload is not valid JSON: ${exc.message}`);
  }
  if (body === null || typeof body !== "object" || Array.isArray(body)) {
    throw new Violation("malformed", `${name} payload must be a JSON object`);
  }
  return body;
}

/**
 * Connect to a pipekit/1 WebSocket endpoint; resolves to a {@link Pipe} once the
 * handshake completed. See the module header for the options.
 */
export async function connect(url, options = {}) {
  const pipe = new Pipe(url, options);
  return pipe._ready;
}
