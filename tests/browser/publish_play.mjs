// The official WebSDK example apps, unmodified, against hopcast, in Chromium or Firefox:
// "Two Way Streaming" publishes the fake camera to --publish-ws, then (optionally) a REST
// call relays it, then "Player" plays --play-name from --play-ws and we check that the
// video decodes. Prints one JSON line with what happened; exits 1 on failure.
//
//   node publish_play.mjs --publish-ws ws://127.0.0.1:8080 --name cam --out DIR
//        [--play-ws URL] [--play-name NAME] [--relay-rest http://.. --relay-uri ws://..]
//        [--publish-browser chromium|firefox] [--play-browser chromium|firefox]
//        [--publish-prefer H264] [--play-only H264]
//
// --publish-prefer puts a codec first in the publisher's offer (the browser's own choice
// otherwise); --play-only makes the player offer nothing else. Both rewrite the offer
// the page's RTCPeerConnection makes, so the SDK and its apps stay as they are.
import fs from 'node:fs';
import path from 'node:path';
import {
  SDK_ROOT, serveStatic, args, launchAny, peerConnectionHook, fillAny, waitForTextAny,
  measureVideoAny, outboundVideoCodec,
} from './lib.mjs';

const opts = args();
const name = opts.name || 'cam';
const playWs = opts['play-ws'] || opts['publish-ws'];
const playName = opts['play-name'] || name;
const out = opts.out || '.';
const publishBrowser = opts['publish-browser'] || 'chromium';
const playBrowser = opts['play-browser'] || 'chromium';
fs.mkdirSync(out, { recursive: true });

const result = { ok: false, steps: [], publishBrowser, playBrowser };
const step = (s) => { result.steps.push(s); console.error(`[browser] ${s}`); };
const web = await serveStatic(SDK_ROOT);
const base = `http://127.0.0.1:${web.address().port}/examples/demo/streaming`;
const browsers = {};
const browserFor = async (kind) => (browsers[kind] ||= await launchAny(kind));

async function open(kind, label, url, codecs) {
  const page = await (await browserFor(kind)).newPage();
  page.on('console', (m) => console.error(`[${label}] ${m.text()}`));
  await page.evaluateOnNewDocument(peerConnectionHook, codecs);
  await page.goto(url);
  return page;
}

let twoWay, player;
try {
  const prefer = opts['publish-prefer'] ? { prefer: opts['publish-prefer'] } : null;
  twoWay = await open(publishBrowser, 'two-way', `${base}/two_way_streaming/two_way_streaming.html`, prefer);
  await fillAny(twoWay, '#urlServer', opts['publish-ws']);
  await twoWay.click('#connectBtn');
  await waitForTextAny(twoWay, '#connectStatus', 'ESTABLISHED');
  step(`two-way (${publishBrowser}): ESTABLISHED`);
  await fillAny(twoWay, '#publishStream', name);
  await twoWay.click('#publishBtn');
  await waitForTextAny(twoWay, '#publishStatus', 'PUBLISHING');
  result.publishedCodec = await outboundVideoCodec(twoWay);
  step(`two-way: PUBLISHING (${result.publishedCodec})`);

  if (opts['relay-rest']) {
    const body = { uri: opts['relay-uri'], localStreamName: name, remoteStreamName: playName };
    const res = await fetch(`${opts['relay-rest']}/rest-api/pull/push`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    result.relay = { status: res.status, body: await res.text() };
    step(`relay: /pull/push answered ${res.status}`);
    if (res.status !== 200) throw new Error(`relay failed: ${result.relay.body}`);
  }

  const only = opts['play-only'] ? { only: opts['play-only'] } : null;
  player = await open(playBrowser, 'player', `${base}/player/player.html`, only);
  await fillAny(player, '#url', playWs);
  await fillAny(player, '#streamName', playName);
  await player.click('#playBtn');
  await waitForTextAny(player, '#status', 'PLAYING');
  step(`player (${playBrowser}): PLAYING`);
  result.video = await measureVideoAny(player, '#remoteVideo video');
  const v = result.video;
  step(`player: video ${v.width}x${v.height} ${v.codec}, frames ${v.framesBefore} -> ${v.framesAfter}, decoded ${v.framesDecoded}`);
  await player.screenshot({ path: path.join(out, 'player.png') });
  await twoWay.screenshot({ path: path.join(out, 'two_way_streaming.png') });
  result.ok = v.framesAfter > v.framesBefore;
} catch (e) {
  result.error = String(e && e.message || e);
  for (const [page, file] of [[twoWay, 'two_way_streaming-failed.png'], [player, 'player-failed.png']]) {
    if (page) await page.screenshot({ path: path.join(out, file) }).catch(() => {});
  }
  const text = (page, sel) => page.$eval(sel, (el) => el.textContent).catch(() => null);
  if (twoWay) result.publishStatus = await text(twoWay, '#publishStatus');
  if (player) result.playStatus = await text(player, '#status');
  if (player) result.playInfo = await text(player, '#info');
} finally {
  for (const b of Object.values(browsers)) await b.close().catch(() => {});
  web.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
