// WHIP and WHEP from a browser, the way any standard web player does it (fetch +
// RTCPeerConnection, no SDK): one page publishes the fake camera with a WHIP request,
// another plays the stream with WHEP, and the video must decode. The pages come from
// their own origin, so CORS is part of the test. Then the publisher's resource is
// DELETEd. Prints one JSON line; exits 1 on failure.
//
//   node whip_page.mjs --http http://127.0.0.1:P --name NAME [--browser chromium|firefox] --out DIR
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { args, launchAny, peerConnectionHook, measureVideoAny } from './lib.mjs';

const opts = args();
const out = opts.out || '.';
const kind = opts.browser || 'chromium';
fs.mkdirSync(out, { recursive: true });
const result = { ok: false, browser: kind };

const PAGE = `<!doctype html><html><body><video id="v" autoplay muted playsinline width="320"></video>
<script>
async function exchange(url, pc) {
  await pc.setLocalDescription(await pc.createOffer());
  const res = await fetch(url, { method: 'POST', headers: { 'Content-Type': 'application/sdp' }, body: pc.localDescription.sdp });
  if (res.status !== 201) throw new Error('HTTP ' + res.status + ': ' + await res.text());
  const answer = await res.text();
  await pc.setRemoteDescription({ type: 'answer', sdp: answer });
  return { status: res.status, location: new URL(res.headers.get('Location'), url).href, etag: res.headers.get('ETag') };
}
window.whipPublish = async (url) => {
  const media = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
  const pc = new RTCPeerConnection();
  for (const track of media.getTracks()) pc.addTransceiver(track, { direction: 'sendonly' });
  return exchange(url, pc);
};
window.whepPlay = async (url) => {
  const pc = new RTCPeerConnection();
  pc.addTransceiver('video', { direction: 'recvonly' });
  pc.addTransceiver('audio', { direction: 'recvonly' });
  const shown = new MediaStream();
  pc.ontrack = (e) => { shown.addTrack(e.track); document.getElementById('v').srcObject = shown; };
  return exchange(url, pc);
};
window.remove = async (resource) => (await fetch(resource, { method: 'DELETE' })).status;
</script></body></html>`;
const web = http.createServer((req, res) => res.writeHead(200, { 'Content-Type': 'text/html' }).end(PAGE));
await new Promise((r) => web.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${web.address().port}/`;

const browser = await launchAny(kind);
try {
  const open = async (label) => {
    const page = await browser.newPage();
    page.on('console', (m) => console.error(`[${label}] ${m.text()}`));
    await page.evaluateOnNewDocument(peerConnectionHook, null);
    await page.goto(pageUrl);
    return page;
  };
  const publisher = await open('whip');
  result.whip = await publisher.evaluate((u) => window.whipPublish(u), `${opts.http}/whip/${opts.name}`);
  const player = await open('whep');
  result.whep = await player.evaluate((u) => window.whepPlay(u), `${opts.http}/whep/${opts.name}`);
  result.video = await measureVideoAny(player, '#v');
  await player.screenshot({ path: path.join(out, 'whep-player.png') });
  result.deleted = await publisher.evaluate((r) => window.remove(r), result.whip.location);
  result.deletedAgain = await publisher.evaluate((r) => window.remove(r), result.whip.location);
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  await browser.close();
  web.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
