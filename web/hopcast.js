/**
 * hopcast.js: a small browser client for hopcast (and Flashphoner WCS), shaped like the
 * core of the official WebSDK so WCS users find their way around. Plain ES module, no
 * dependencies.
 *
 *   import { createSession, SESSION_STATUS, STREAM_STATUS, rest } from './hopcast.js';
 *
 *   const session = createSession({ urlServer: 'ws://host:8080' })
 *     .on(SESSION_STATUS.ESTABLISHED, () => { ... })
 *     .on(SESSION_STATUS.DISCONNECTED, () => { ... })
 *     .on(SESSION_STATUS.FAILED, () => { ... });
 *
 *   const stream = session.createStream({ name: 'cam', display: someDiv })
 *     .on(STREAM_STATUS.PUBLISHING, (s) => { ... })
 *     .on(STREAM_STATUS.FAILED, (s) => console.log(s.info()));
 *   stream.publish();            // or stream.play()
 *   stream.stop();               // unPublishStream / stopStream
 *   session.disconnect();
 *
 * Session: .on(status, cb) (chainable), .disconnect(), .id(), .status(), .createStream().
 * Stream: .publish(), .play(), .stop(), .on(status, cb) (chainable), .status(), .info(),
 * .name(), .id() (the mediaSessionId), .published(), .getPeerConnection().
 * publish() and play() throw when the stream is not NEW or the session not ESTABLISHED;
 * later trouble (no camera, bad answer, server refusal) arrives as FAILED with .info().
 * Callbacks get the session or stream object; session ESTABLISHED also gets the server's
 * getUserData object, WARN gets the `fail` object.
 *
 * defaultServerUrl() resolves to the signaling URL of the server that served the page
 * (ws://host:wsPort on http pages, wss://host:wssPort on https), read from /config.json.
 *
 * rest(method, body) POSTs JSON to /rest-api/<method> on the page's own origin and
 * resolves to {status, body} (body: parsed JSON or null). It never throws on HTTP errors,
 * so callers can show the server's {"error": ...} text; a 401 asking for a bearer token
 * makes it ask the user once. pageCustom() is the `custom` for createSession: the page
 * URL's ?token= for the server's REST hooks.
 *
 * Media: the browser always offers and the server answers. Like the SDK we never send ICE
 * candidates: hopcast is ICE-lite, lists its own candidates in the answer and learns ours
 * from our STUN checks, so the offer goes out right after setLocalDescription.
 */

export const SESSION_STATUS = Object.freeze({
  NEW: 'NEW',
  PENDING: 'PENDING',
  CONNECTED: 'CONNECTED',
  ESTABLISHED: 'ESTABLISHED',
  DISCONNECTED: 'DISCONNECTED',
  FAILED: 'FAILED',
  WARN: 'WARN',
});

export const STREAM_STATUS = Object.freeze({
  NEW: 'NEW',
  PENDING: 'PENDING',
  PUBLISHING: 'PUBLISHING',
  PLAYING: 'PLAYING',
  PAUSED: 'PAUSED',
  UNPUBLISHED: 'UNPUBLISHED',
  STOPPED: 'STOPPED',
  FAILED: 'FAILED',
  PLAYBACK_PROBLEM: 'PLAYBACK_PROBLEM',
  RESIZE: 'RESIZE',
  SNAPSHOT_COMPLETE: 'SNAPSHOT_COMPLETE',
  NOT_ENOUGH_BANDWIDTH: 'NOT_ENOUGH_BANDWIDTH',
});

// After these the server has forgotten the stream, so we let go of its media too.
const FINAL = new Set([STREAM_STATUS.FAILED, STREAM_STATUS.STOPPED, STREAM_STATUS.UNPUBLISHED]);
// Reported through the status channel but not states: they leave status() alone (as in the SDK).
const EVENTS = new Set([STREAM_STATUS.RESIZE, STREAM_STATUS.SNAPSHOT_COMPLETE, STREAM_STATUS.NOT_ENOUGH_BANDWIDTH]);

/**
 * POST /rest-api/<method> with a JSON body; resolves to {status, body}. When the server
 * wants a bearer token (rest.token) the page asks for it once and keeps it for the tab;
 * with Basic credentials (rest.basic) the browser asks by itself.
 */
export async function rest(method, body, asked = false) {
  const headers = { 'Content-Type': 'application/json' };
  const token = sessionStorage.getItem('hopcast.restToken');
  if (token) headers.Authorization = `Bearer ${token}`;
  const res = await fetch(`/rest-api/${method.replace(/^\/+/, '')}`, {
    method: 'POST',
    headers,
    body: JSON.stringify(body ?? {}),
  });
  if (res.status === 401 && !asked && (res.headers.get('WWW-Authenticate') || '').startsWith('Bearer')) {
    const given = window.prompt('This server\'s REST API needs its token (rest.token):');
    if (given) {
      sessionStorage.setItem('hopcast.restToken', given.trim());
      return rest(method, body, true);
    }
  }
  const text = await res.text();
  let parsed = null;
  try { parsed = text ? JSON.parse(text) : null; } catch { parsed = null; }
  return { status: res.status, body: parsed };
}

/**
 * What a page sends as `custom` in `connection` for the server's REST hooks: a `token`
 * from the page's own URL (`two-way.html?token=...`), or nothing.
 */
export function pageCustom() {
  const token = new URLSearchParams(location.search).get('token');
  return token ? { token } : undefined;
}

/**
 * The signaling URL of the server that served this page. Pages are served on the HTTP
 * port while signaling has its own, so ask /config.json; without it assume WCS defaults.
 */
export async function defaultServerUrl() {
  const secure = location.protocol === 'https:';
  let ports = { wsPort: 8080, wssPort: 8443 };
  try {
    const res = await fetch('/config.json', { cache: 'no-store' });
    if (res.ok) ports = { ...ports, ...(await res.json()) };
  } catch { /* not served by hopcast: keep the defaults */ }
  const host = location.hostname || '127.0.0.1';
  return secure ? `wss://${host}:${ports.wssPort}` : `ws://${host}:${ports.wsPort}`;
}

/** Open a signaling session to `urlServer` (ws:// or wss://). */
export function createSession({ urlServer, appKey = 'defaultApp', custom } = {}) {
  if (!urlServer) throw new Error('createSession: urlServer is required');
  const callbacks = {};
  const streams = new Map(); // mediaSessionId -> stream internals
  let status = SESSION_STATUS.PENDING;
  let sessionId = null;
  let closedByUs = false;
  let ws;

  const session = {
    on(event, cb) { callbacks[event] = cb; return session; },
    id: () => sessionId,
    status: () => status,
    disconnect() {
      closedByUs = true;
      if (ws && ws.readyState <= WebSocket.OPEN) ws.close();
    },
    createStream: (options) => createStream(options),
  };

  function setStatus(next, obj) {
    status = next;
    if (next === SESSION_STATUS.DISCONNECTED || next === SESSION_STATUS.FAILED) {
      // The server ends our streams with the session; mirror that locally.
      for (const s of [...streams.values()]) s.update({ status: STREAM_STATUS.FAILED, info: 'Session disconnected' });
    }
    callbacks[next]?.(session, obj);
  }

  function send(message, data) {
    if (ws.readyState !== WebSocket.OPEN) return false;
    ws.send(JSON.stringify({ message, data: [data] }));
    return true;
  }

  try {
    ws = new WebSocket(urlServer);
  } catch (e) {
    // A malformed URL throws synchronously; report it like a socket error, but only
    // after the caller had a chance to attach handlers.
    queueMicrotask(() => setStatus(SESSION_STATUS.FAILED, { info: e.message }));
    return session;
  }

  ws.onopen = () => {
    setStatus(SESSION_STATUS.CONNECTED);
    send('connection', {
      appKey,
      mediaProviders: ['WebRTC'],
      clientVersion: 'hopcast.js',
      clientOSVersion: navigator.platform,
      clientBrowserVersion: navigator.userAgent,
      keepAlive: true,
      custom,
    });
  };
  // As in the SDK: an error is FAILED, and the close that follows does not override it.
  // Closing a socket that is still connecting also raises an error; that one was our wish.
  ws.onerror = () => { if (!closedByUs) setStatus(SESSION_STATUS.FAILED); };
  ws.onclose = () => { if (status !== SESSION_STATUS.FAILED) setStatus(SESSION_STATUS.DISCONNECTED); };
  ws.onmessage = (event) => {
    let frame;
    try { frame = JSON.parse(event.data); } catch { return; }
    const data = Array.isArray(frame.data) ? frame.data : [];
    const obj = data[0];
    switch (frame.message) {
      case 'ping':
        send('pong', null);
        break;
      case 'getUserData':
        sessionId = obj?.sessionId ?? null;
        setStatus(SESSION_STATUS.ESTABLISHED, obj);
        break;
      case 'setRemoteSDP':
        streams.get(data[0])?.answer(data[1]);
        break;
      case 'notifyStreamStatusEvent':
        if (obj) streams.get(obj.mediaSessionId)?.update(obj);
        break;
      case 'fail':
        if (obj?.apiMethod === 'StreamStatusEvent' && obj.id) streams.get(obj.id)?.update(obj);
        callbacks[SESSION_STATUS.WARN]?.(session, obj);
        break;
      default:
        break;
    }
  };

  function createStream({ name, display } = {}) {
    if (!name) throw new Error('createStream: name is required');
    const id = crypto.randomUUID();
    const scb = {};
    let sStatus = STREAM_STATUS.NEW;
    let info = '';
    let published = false;
    let pc = null;
    let localMedia = null;
    let video = null;
    let sent = false;      // publishStream/playStream went out: the server will answer
    let stopping = false;  // stop() was called: do not start media that is still on its way

    const stream = {
      on(event, cb) { scb[event] = cb; return stream; },
      status: () => sStatus,
      info: () => info,
      name: () => name,
      id: () => id,
      published: () => published,
      getPeerConnection: () => pc,
      publish,
      play,
      stop,
    };

    function fire(next, why) {
      sStatus = next;
      if (why !== undefined) info = why || '';
      if (FINAL.has(next)) { release(); streams.delete(id); }
      scb[next]?.(stream);
    }

    function makeVideo(muted) {
      if (!display) return null;
      display.querySelector('video')?.remove();
      const v = document.createElement('video');
      v.autoplay = true;
      v.playsInline = true;
      v.setAttribute('playsinline', '');
      v.muted = muted;
      display.appendChild(v);
      return v;
    }

    function show(media) {
      const v = video; // release() may drop it before play() settles
      if (!v) return;
      v.srcObject = media;
      // A page without a recent click may not autoplay sound; fall back to muted. A
      // rejection because release() cleared the element is nothing to retry.
      v.play().catch(() => {
        if (v !== video) return;
        v.muted = true;
        v.play().catch(() => {});
      });
    }

    function release() {
      if (pc) { pc.ontrack = null; pc.close(); pc = null; }
      if (localMedia) { localMedia.getTracks().forEach((t) => t.stop()); localMedia = null; }
      if (video) { video.srcObject = null; video.remove(); video = null; }
    }

    function begin(isPublish) {
      if (sStatus !== STREAM_STATUS.NEW) throw new Error(`Invalid stream state ${sStatus}`);
      if (status !== SESSION_STATUS.ESTABLISHED) throw new Error('Session is not established');
      published = isPublish;
      streams.set(id, internals);
      fire(STREAM_STATUS.PENDING);
    }

    function failLocally(e) {
      console.warn('hopcast:', e);
      if (!FINAL.has(sStatus)) fire(STREAM_STATUS.FAILED, e?.message || String(e));
    }

    // publish()/play() throw at once on misuse (like the SDK); what fails later
    // (camera denied, session gone) ends as a FAILED status instead.
    function publish() {
      begin(true);
      return publishMedia();
    }

    async function publishMedia() {
      try {
        localMedia = await navigator.mediaDevices.getUserMedia({ audio: true, video: true });
        if (stopping || FINAL.has(sStatus)) { release(); return; }
        video = makeVideo(true); // our own microphone must not echo
        show(localMedia);
        pc = new RTCPeerConnection({ bundlePolicy: 'max-compat' });
        for (const track of localMedia.getTracks()) pc.addTransceiver(track, { direction: 'sendonly', streams: [localMedia] });
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        if (stopping || FINAL.has(sStatus)) { release(); return; }
        sent = send('publishStream', {
          mediaSessionId: id, name, published: true,
          hasAudio: localMedia.getAudioTracks().length > 0,
          hasVideo: localMedia.getVideoTracks().length > 0,
          status: STREAM_STATUS.PENDING, record: false, mediaProvider: 'WebRTC',
          sdp: offer.sdp,
        });
        if (!sent) throw new Error('Session is not open');
      } catch (e) {
        failLocally(e);
      }
    }

    function play() {
      begin(false);
      return playMedia();
    }

    async function playMedia() {
      try {
        video = makeVideo(false);
        pc = new RTCPeerConnection({ bundlePolicy: 'max-compat' });
        pc.addTransceiver('audio', { direction: 'recvonly' });
        pc.addTransceiver('video', { direction: 'recvonly' });
        const remote = new MediaStream();
        pc.ontrack = (ev) => { remote.addTrack(ev.track); show(remote); };
        const offer = await pc.createOffer();
        await pc.setLocalDescription(offer);
        if (stopping || FINAL.has(sStatus)) { release(); return; }
        sent = send('playStream', {
          mediaSessionId: id, name, published: false,
          hasAudio: true, hasVideo: true,
          status: STREAM_STATUS.PENDING, record: false, mediaProvider: 'WebRTC',
          sdp: offer.sdp,
        });
        if (!sent) throw new Error('Session is not open');
      } catch (e) {
        failLocally(e);
      }
    }

    function stop() {
      if (FINAL.has(sStatus) || stopping) return;
      stopping = true;
      const final = published ? STREAM_STATUS.UNPUBLISHED : STREAM_STATUS.STOPPED;
      if (sStatus === STREAM_STATUS.NEW) { fire(final, 'Stopped by user'); return; }
      if (sent && send(published ? 'unPublishStream' : 'stopStream', { mediaSessionId: id, name, published })) {
        // The server's UNPUBLISHED/STOPPED fires the event; stop sending media right away.
        release();
        return;
      }
      // Nothing reached the server yet (still in getUserMedia/createOffer): end locally.
      fire(final, 'Stopped by user');
    }

    const internals = {
      answer(sdp) {
        if (!pc) return;
        pc.setRemoteDescription({ type: 'answer', sdp }).catch(failLocally);
      },
      update(obj) {
        if (!obj.status || FINAL.has(sStatus)) return;
        if (EVENTS.has(obj.status)) { scb[obj.status]?.(stream); return; }
        fire(obj.status, obj.info);
      },
    };

    return stream;
  }

  return session;
}
