// Two Way Streaming: one session, one published stream, one played stream.
import { createSession, defaultServerUrl, pageCustom, SESSION_STATUS, STREAM_STATUS } from './hopcast.js';

const $ = (id) => document.getElementById(id);
const ENDED = new Set([STREAM_STATUS.FAILED, STREAM_STATUS.STOPPED, STREAM_STATUS.UNPUBLISHED]);
const SESSION_ENDED = new Set([SESSION_STATUS.DISCONNECTED, SESSION_STATUS.FAILED]);

let session = null;
let publishing = null;
let playing = null;
const stopping = new WeakSet(); // streams whose stop is on its way to the server

const live = (s) => s && !ENDED.has(s.status());
const connected = () => session && session.status() === SESSION_STATUS.ESTABLISHED;

function showStatus(el, status) {
  el.textContent = status || '';
  el.dataset.state = status || '';
}

// One place decides what every button says and whether it can be clicked.
function render() {
  const sStatus = session ? session.status() : SESSION_STATUS.DISCONNECTED;
  const open = session && !SESSION_ENDED.has(sStatus);
  $('connectBtn').textContent = open ? 'Disconnect' : 'Connect';
  $('connectBtn').className = open ? 'secondary' : '';
  $('connectBtn').disabled = false;
  $('url').disabled = !!open;
  showStatus($('connectStatus'), sStatus);

  for (const [stream, btn, input, start] of [
    [publishing, $('publishBtn'), $('publishName'), 'Publish'],
    [playing, $('playBtn'), $('playName'), 'Play'],
  ]) {
    const active = live(stream);
    btn.textContent = active ? (stopping.has(stream) ? 'Stopping…' : 'Stop') : start;
    btn.className = active ? 'secondary' : '';
    btn.disabled = active ? stopping.has(stream) : !connected();
    input.disabled = active;
  }
}

// The library takes one callback per status; the page wants all of them.
function onEveryStatus(stream, cb) {
  for (const status of Object.values(STREAM_STATUS)) stream.on(status, cb);
  return stream;
}

function connect() {
  const url = $('url').value.trim();
  $('connectInfo').textContent = '';
  try {
    session = createSession({ urlServer: url, custom: pageCustom() });
  } catch (e) {
    $('connectInfo').textContent = e.message;
    return;
  }
  const s = session;
  for (const status of Object.values(SESSION_STATUS)) {
    s.on(status, (_, obj) => {
      if (s !== session) return; // an older session closing late
      if (status === SESSION_STATUS.FAILED) $('connectInfo').textContent = `Could not connect to ${url}`;
      // A refusal (the server's REST hooks, a limit) comes as a `fail` before the close.
      if (status === SESSION_STATUS.WARN) {
        if (obj?.apiMethod === 'ConnectionStatusEvent') $('connectInfo').textContent = obj.info;
        return;
      }
      render();
    });
  }
  render();
}

$('connectBtn').addEventListener('click', () => {
  if (session && !SESSION_ENDED.has(session.status())) session.disconnect();
  else connect();
});

function startStream(kind) {
  const publish = kind === 'publish';
  const name = $(publish ? 'publishName' : 'playName').value.trim();
  const statusEl = $(publish ? 'publishStatus' : 'playStatus');
  const infoEl = $(publish ? 'publishInfo' : 'playInfo');
  if (!name) { infoEl.textContent = 'Enter a stream name'; return; }
  const stream = session.createStream({ name, display: $(publish ? 'localVideo' : 'remoteVideo') });
  onEveryStatus(stream, (st) => {
    showStatus(statusEl, st.status());
    infoEl.textContent = st.info();
    render();
  });
  if (publish) publishing = stream; else playing = stream;
  infoEl.textContent = '';
  try {
    if (publish) stream.publish(); else stream.play();
  } catch (e) {
    infoEl.textContent = e.message; // e.g. the session closed a moment ago
  }
  render();
}

function toggle(kind) {
  const stream = kind === 'publish' ? publishing : playing;
  if (live(stream)) {
    stopping.add(stream);
    stream.stop();
    render();
  } else {
    startStream(kind);
  }
}

$('publishBtn').addEventListener('click', () => toggle('publish'));
$('playBtn').addEventListener('click', () => toggle('play'));

// Play defaults to what we publish until the user types a different name.
let playNameEdited = false;
$('playName').addEventListener('input', () => { playNameEdited = true; });
$('publishName').addEventListener('input', () => {
  if (!playNameEdited) $('playName').value = $('publishName').value;
});

const initialName = `stream-${Math.random().toString(36).slice(2, 7)}`;
$('publishName').value = initialName;
$('playName').value = initialName;
$('url').value = await defaultServerUrl();
render();
