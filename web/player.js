// Player: Start opens a session and plays one stream; Stop ends both. While playing, the
// figures come from RTCPeerConnection.getStats() once a second.
import { createSession, defaultServerUrl, pageCustom, SESSION_STATUS, STREAM_STATUS } from './hopcast.js';

const $ = (id) => document.getElementById(id);
const ENDED = new Set([STREAM_STATUS.FAILED, STREAM_STATUS.STOPPED, STREAM_STATUS.UNPUBLISHED]);
const SESSION_ENDED = new Set([SESSION_STATUS.DISCONNECTED, SESSION_STATUS.FAILED]);

let session = null;
let stream = null;
let statsTimer = null;
let last = null; // previous video inbound-rtp sample, for the bitrate delta

function showStatus(status, info) {
  $('status').textContent = status || '';
  $('status').dataset.state = status || '';
  if (info !== undefined) $('info').textContent = info || '';
}

// Running: from Start until both the stream and the session are over.
const running = () => session && !SESSION_ENDED.has(session.status());

function render() {
  const btn = $('playBtn');
  btn.disabled = false;
  btn.textContent = running() ? 'Stop' : 'Start';
  btn.className = running() ? 'secondary' : '';
  $('url').disabled = $('streamName').disabled = !!running();
}

function start() {
  const url = $('url').value.trim();
  const name = $('streamName').value.trim();
  if (!name) { showStatus('', 'Enter a stream name'); return; }
  try {
    session = createSession({ urlServer: url, custom: pageCustom() });
  } catch (e) {
    showStatus(SESSION_STATUS.FAILED, e.message);
    return;
  }
  const s = session;
  showStatus(SESSION_STATUS.PENDING, `Connecting to ${url}`);
  s.on(SESSION_STATUS.ESTABLISHED, () => {
    stream = s.createStream({ name, display: $('remoteVideo') });
    for (const status of Object.values(STREAM_STATUS)) {
      stream.on(status, (st) => {
        showStatus(st.status(), st.info());
        if (status === STREAM_STATUS.PLAYING) startStats(st);
        // The session only exists for this stream: close it once the stream is over.
        if (ENDED.has(status)) { stopStats(); s.disconnect(); }
        render();
      });
    }
    stream.play();
  });
  s.on(SESSION_STATUS.FAILED, () => {
    if (!stream) showStatus(SESSION_STATUS.FAILED, `Could not connect to ${url}`);
    stopStats();
    render();
  });
  // A refusal (the server's REST hooks, a limit) comes as a `fail` before the close.
  let refused = null;
  s.on(SESSION_STATUS.WARN, (_, obj) => {
    if (obj?.apiMethod === 'ConnectionStatusEvent') refused = obj.info;
  });
  s.on(SESSION_STATUS.DISCONNECTED, () => {
    if (!stream) showStatus(SESSION_STATUS.DISCONNECTED, refused ?? 'Connection closed');
    stopStats();
    render();
  });
  stream = null;
  render();
}

function stop() {
  if (stream && !ENDED.has(stream.status())) {
    $('playBtn').disabled = true;
    $('playBtn').textContent = 'Stopping…';
    stream.stop(); // its STOPPED closes the session
  } else {
    session.disconnect();
  }
}

$('playBtn').addEventListener('click', () => (running() ? stop() : start()));

function resetFigures() {
  for (const id of ['statResolution', 'statBitrate', 'statFrames', 'statLost']) $(id).textContent = '–';
  $('statCodec').textContent = '';
}

function startStats(st) {
  stopStats();
  resetFigures();
  last = null;
  statsTimer = setInterval(() => sample(st), 1000);
  sample(st);
}

function stopStats() {
  if (statsTimer) clearInterval(statsTimer);
  statsTimer = null;
}

async function sample(st) {
  const pc = st.getPeerConnection();
  if (!pc) return;
  const report = await pc.getStats();
  let video = null;
  let lost = 0;
  report.forEach((r) => {
    if (r.type !== 'inbound-rtp') return;
    lost += r.packetsLost || 0;
    if (r.kind === 'video') video = r;
  });
  if (statsTimer === null) return; // stopped while getStats ran
  $('statLost').textContent = String(lost);
  if (!video) return;
  if (video.frameWidth && video.frameHeight) $('statResolution').textContent = `${video.frameWidth}×${video.frameHeight}`;
  $('statFrames').textContent = String(video.framesDecoded ?? 0);
  if (last && video.timestamp > last.timestamp) {
    const kbps = ((video.bytesReceived - last.bytesReceived) * 8) / (video.timestamp - last.timestamp);
    $('statBitrate').textContent = `${Math.round(kbps)} kbit/s`;
  }
  last = { bytesReceived: video.bytesReceived, timestamp: video.timestamp };
  const codec = video.codecId && report.get(video.codecId);
  if (codec) $('statCodec').textContent = `Codec ${codec.mimeType.replace(/^video\//, '')}, ${video.framesPerSecond ?? 0} fps`;
}

// ?name=...&url=... prefill the form (the relay console links here).
const params = new URLSearchParams(location.search);
$('streamName').value = params.get('name') || '';
$('url').value = params.get('url') || (await defaultServerUrl());
render();
