// The official WebSDK example apps, unmodified, against hopcast:
// "Two Way Streaming" publishes the fake camera to --publish-ws, then (optionally) a REST
// call relays it, then "Player" plays --play-name from --play-ws and we check that the
// video decodes. Prints one JSON line with what happened; exits 1 on failure.
//
//   node publish_play.mjs --publish-ws ws://127.0.0.1:8080 --name cam --out DIR
//        [--play-ws URL] [--play-name NAME] [--relay-rest http://.. --relay-uri ws://..]
import fs from 'node:fs';
import path from 'node:path';
import { SDK_ROOT, serveStatic, launchBrowser, waitForText, measureVideo, args } from './lib.mjs';

const opts = args();
const name = opts.name || 'cam';
const playWs = opts['play-ws'] || opts['publish-ws'];
const playName = opts['play-name'] || name;
const out = opts.out || '.';
fs.mkdirSync(out, { recursive: true });

const result = { ok: false, steps: [] };
const step = (s) => { result.steps.push(s); console.error(`[browser] ${s}`); };
const web = await serveStatic(SDK_ROOT);
const base = `http://127.0.0.1:${web.address().port}/examples/demo/streaming`;
const browser = await launchBrowser();
let twoWay, player;
try {
  twoWay = await browser.newPage();
  twoWay.on('console', (m) => console.error(`[two-way] ${m.text()}`));
  await twoWay.goto(`${base}/two_way_streaming/two_way_streaming.html`);
  await twoWay.fill('#urlServer', opts['publish-ws']);
  await twoWay.click('#connectBtn');
  await waitForText(twoWay, '#connectStatus', 'ESTABLISHED');
  step('two-way: ESTABLISHED');
  await twoWay.fill('#publishStream', name);
  await twoWay.click('#publishBtn');
  await waitForText(twoWay, '#publishStatus', 'PUBLISHING');
  step('two-way: PUBLISHING');

  if (opts['relay-rest']) {
    const body = { uri: opts['relay-uri'], localStreamName: name, remoteStreamName: playName };
    const res = await fetch(`${opts['relay-rest']}/rest-api/pull/push`, { method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' } });
    result.relay = { status: res.status, body: await res.text() };
    step(`relay: /pull/push answered ${res.status}`);
    if (res.status !== 200) throw new Error(`relay failed: ${result.relay.body}`);
  }

  player = await browser.newPage();
  player.on('console', (m) => console.error(`[player] ${m.text()}`));
  await player.goto(`${base}/player/player.html`);
  await player.fill('#url', playWs);
  await player.fill('#streamName', playName);
  await player.click('#playBtn');
  await waitForText(player, '#status', 'PLAYING');
  step('player: PLAYING');
  result.video = await measureVideo(player, '#remoteVideo video');
  step(`player: video ${result.video.width}x${result.video.height}, frames ${result.video.framesBefore} -> ${result.video.framesAfter}`);
  await player.screenshot({ path: path.join(out, 'player.png') });
  await twoWay.screenshot({ path: path.join(out, 'two_way_streaming.png') });
  result.ok = result.video.framesAfter > result.video.framesBefore;
} catch (e) {
  result.error = String(e && e.message || e);
  for (const [page, file] of [[twoWay, 'two_way_streaming-failed.png'], [player, 'player-failed.png']]) {
    if (page) await page.screenshot({ path: path.join(out, file) }).catch(() => {});
  }
  if (twoWay) result.publishStatus = await twoWay.textContent('#publishStatus').catch(() => null);
  if (player) result.playStatus = await player.textContent('#status').catch(() => null);
  if (player) result.playInfo = await player.textContent('#info').catch(() => null);
} finally {
  await browser.close();
  web.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
