// The GET /terminal page (EXTENSIONS X70): xterm.js on a PTY session of this execd.
//
// Every URL is relative to the page's directory, so the page works at /terminal and through the
// port proxy at /proxy/<execd port>/terminal alike. The token comes from the `access_token` query
// parameter of the page's own URL and goes out only as the X-EXECD-ACCESS-TOKEN header (REST,
// assets) or as `access_token` on the WebSocket (a browser cannot set headers there). It is never
// written to any storage; the session id is kept in the URL (`?session=`), so a reload attaches
// to the same shell and replays its output.
//
// Attaching: a plain GET on /pty/{id}/ws tells, without side effects, whether the session is free
// (400: not a WebSocket), held by another client (409) or gone (404); a browser WebSocket cannot
// see the HTTP status of a refused handshake, so the page asks first. Then the WebSocket, with
// `since=<bytes already shown>`: 0 on a fresh page (the whole replay ring), the running offset on
// a reconnect (no byte shown twice).
'use strict';

(() => {
  const params = new URLSearchParams(location.search);
  const token = params.get('access_token') || '';
  const base = new URL('.', location.href);
  const authHeaders = token ? { 'X-EXECD-ACCESS-TOKEN': token } : {};
  const $ = (id) => document.getElementById(id);
  const statusEl = $('status');
  const buttons = { takeover: $('takeover'), restart: $('restart'), new: $('new') };

  let term = null;
  let fit = null;
  let sessionId = params.get('session') || '';
  let ws = null;
  let offset = 0; // bytes of the session's output this page has written to the terminal
  let exitCode = null; // set by the exit frame of the current connection
  let retryTimer = null;
  let attempt = 0;
  let attachGen = 0; // bumped by every attach: an older one still probing gives up
  let connects = 0; // "connected" frames so far (tests watch it to see a reconnect)
  const encoder = new TextEncoder();

  function setState(state, text, ...show) {
    document.body.dataset.state = state;
    statusEl.textContent = text;
    for (const [name, button] of Object.entries(buttons)) button.hidden = !show.includes(name);
  }

  function api(method, path, body) {
    const headers = { ...authHeaders };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    return fetch(new URL(path, base), { method, headers, body, cache: 'no-store', credentials: 'omit' });
  }

  async function explain(resp) {
    if (resp.status === 401) return 'unauthorized: open this page with ?access_token=<token>';
    try {
      const body = await resp.json();
      return `${resp.status} ${body.code}: ${body.message}`;
    } catch {
      return `HTTP ${resp.status}`;
    }
  }

  // Scripts and styles come through fetch (so the token travels as a header, not in their URLs)
  // and run from blob: URLs (the page's Content-Security-Policy allows those, no inline code).
  async function asset(name) {
    const resp = await fetch(new URL(`terminal/${name}`, base), { headers: authHeaders, cache: 'no-cache', credentials: 'omit' });
    if (!resp.ok) throw new Error(`terminal/${name}: ${await explain(resp)}`);
    return URL.createObjectURL(await resp.blob());
  }

  function insert(tag, attrs) {
    return new Promise((resolve, reject) => {
      const el = Object.assign(document.createElement(tag), attrs);
      el.onload = resolve;
      el.onerror = () => reject(new Error(`cannot load ${tag}`));
      document.head.appendChild(el);
    });
  }

  async function loadXterm() {
    const [css, xterm, addon] = await Promise.all(['xterm.css', 'xterm.js', 'addon-fit.js'].map(asset));
    await insert('link', { rel: 'stylesheet', href: css });
    await insert('script', { src: xterm });
    await insert('script', { src: addon });
  }

  function send(data) {
    if (ws && ws.readyState === WebSocket.OPEN && document.body.dataset.state === 'connected') ws.send(data);
  }

  function sendInput(bytes) {
    const frame = new Uint8Array(bytes.length + 1);
    frame[0] = 0x00;
    frame.set(bytes, 1);
    send(frame);
  }

  function sendSize() {
    send(JSON.stringify({ type: 'resize', cols: term.cols, rows: term.rows }));
  }

  function note(text) {
    term.write(`\r\n\x1b[2m[${text}]\x1b[0m\r\n`);
  }

  function schedule(fn, ms) {
    clearTimeout(retryTimer);
    retryTimer = setTimeout(fn, ms);
  }

  function closeSocket() {
    clearTimeout(retryTimer);
    if (ws) {
      const old = ws;
      ws = null;
      old.onclose = old.onmessage = old.onerror = null;
      try { old.close(); } catch { /* already closed */ }
    }
  }

  async function createSession() {
    closeSocket();
    setState('connecting', 'creating a session…');
    let resp;
    try {
      resp = await api('POST', 'pty', '{}');
    } catch (e) {
      setState('error', `cannot reach execd: ${e.message}`, 'new');
      return;
    }
    if (resp.status !== 201) {
      setState('error', `cannot create a session: ${await explain(resp)}`, 'new');
      return;
    }
    sessionId = (await resp.json()).session_id;
    params.set('session', sessionId);
    history.replaceState(null, '', `${location.pathname}?${params}`);
    offset = 0;
    term.reset();
    showSession();
    attach(false);
  }

  function showSession() {
    $('session').textContent = sessionId;
    document.title = `execd terminal ${sessionId.slice(0, 8)}`;
  }

  // Another client holds the session: offer to take over, and keep asking for a few seconds in
  // case the holder is this page's own previous connection (a reload, a dropped socket) on its way out.
  function held(tries) {
    setState('held', 'another client is connected to this session', 'takeover', 'new');
    if (tries < 6) schedule(() => attach(false, tries + 1), 200 * 2 ** tries);
  }

  function dropped(why) {
    attempt += 1;
    const delay = Math.min(250 * 2 ** (attempt - 1), 5000);
    setState('reconnecting', `${why}; reconnecting (attempt ${attempt})…`, 'new');
    schedule(() => attach(false), delay);
  }

  async function attach(takeover, heldTries = 0) {
    closeSocket();
    const gen = ++attachGen;
    if (!takeover) {
      let probe;
      try {
        probe = await api('GET', `pty/${encodeURIComponent(sessionId)}/ws`);
      } catch (e) {
        if (gen === attachGen) dropped(`cannot reach execd (${e.message})`);
        return;
      }
      if (gen !== attachGen) return;
      if (probe.status === 404) {
        setState('gone', 'this session no longer exists', 'new');
        return;
      }
      if (probe.status === 409) {
        held(heldTries);
        return;
      }
      if (probe.status === 401) {
        setState('error', await explain(probe));
        return;
      }
      if (probe.status !== 400) {
        dropped(`execd answered ${await explain(probe)}`);
        return;
      }
    }
    setState('connecting', takeover ? 'taking over…' : 'connecting…');
    const url = new URL(`pty/${encodeURIComponent(sessionId)}/ws`, base);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    const q = new URLSearchParams({ since: String(offset) });
    if (takeover) q.set('takeover', '1');
    if (token) q.set('access_token', token);
    url.search = `?${q}`;
    const socket = new WebSocket(url);
    socket.binaryType = 'arraybuffer';
    ws = socket;
    exitCode = null;
    socket.onmessage = (ev) => onFrame(ev.data);
    socket.onclose = (ev) => onClose(ev);
  }

  function onFrame(data) {
    if (typeof data === 'string') {
      let msg;
      try { msg = JSON.parse(data); } catch { return; }
      if (msg.type === 'connected') {
        attempt = 0;
        connects += 1;
        setState('connected', `connected (${msg.mode})`);
        fit.fit();
        sendSize();
        term.focus();
      } else if (msg.type === 'exit') {
        exitCode = msg.exit_code;
      } else if (msg.type === 'error') {
        if (msg.code === 'ALREADY_CONNECTED') held(6);
        else note(`${msg.code}: ${msg.error}`);
      }
      return;
    }
    const bytes = new Uint8Array(data);
    if (bytes.length === 0) return;
    if (bytes[0] === 0x01 || bytes[0] === 0x02) {
      term.write(bytes.subarray(1));
      offset += bytes.length - 1;
    } else if (bytes[0] === 0x03 && bytes.length >= 9) {
      const start = Number(new DataView(data).getBigUint64(1));
      const payload = bytes.subarray(9);
      if (start > offset && offset > 0) note(`${start - offset} bytes of output were dropped from the replay buffer`);
      const skip = Math.max(0, offset - start);
      if (skip < payload.length) term.write(payload.subarray(skip));
      offset = Math.max(offset, start + payload.length);
    }
  }

  function onClose(ev) {
    ws = null;
    if (ev.code === 4001) {
      setState('taken-over', 'another client took over this session', 'takeover', 'new');
    } else if (exitCode !== null) {
      const how = exitCode === -1 ? 'killed by a signal' : `exit code ${exitCode}`;
      note(`shell exited: ${how}`);
      setState('exited', `shell exited (${how})`, 'restart', 'new');
    } else if (document.body.dataset.state === 'held') {
      // The takeover timed out (error frame ALREADY_CONNECTED): stay in "held".
    } else {
      dropped(ev.code === 1006 ? 'connection lost' : `connection closed (${ev.code})`);
    }
  }

  async function showLicense(ev) {
    ev.preventDefault();
    try {
      window.open(await asset('LICENSE.txt'), '_blank', 'noopener');
    } catch (e) {
      note(e.message);
    }
  }

  async function main() {
    setState('loading', 'loading xterm.js…');
    try {
      await loadXterm();
    } catch (e) {
      setState('error', `cannot load xterm.js: ${e.message}`);
      return;
    }
    term = new Terminal({ cursorBlink: true, scrollback: 10000, fontSize: 14, allowProposedApi: false });
    fit = new FitAddon.FitAddon();
    term.loadAddon(fit);
    term.open($('term'));
    fit.fit();
    term.onData((d) => sendInput(encoder.encode(d)));
    term.onBinary((d) => sendInput(Uint8Array.from(d, (c) => c.charCodeAt(0) & 0xff)));
    term.onResize(sendSize);
    // Window resizes (and anything else that changes the terminal's box) refit the grid; the
    // resize frame then changes the PTY's size (the shell sees SIGWINCH).
    new ResizeObserver(() => fit.fit()).observe($('term'));
    buttons.takeover.onclick = () => attach(true);
    buttons.restart.onclick = () => attach(false);
    buttons.new.onclick = () => createSession();
    $('license').onclick = showLicense;
    // For tests and for poking around from the console.
    window.execdTerminal = {
      term,
      get sessionId() { return sessionId; },
      get offset() { return offset; },
      get connects() { return connects; },
    };
    if (sessionId) {
      showSession();
      attach(false);
    } else {
      createSession();
    }
  }

  main();
})();
