// hopcast's own web apps (web/*.html, served by the server itself), clicked through as a
// user would: Two Way Streaming publishes the fake camera and plays it back, Player plays
// it with live figures, Relay console pushes it to server 2 where Player plays it, then
// terminates the relay. Prints one JSON line with what happened; exits 1 on failure.
//
//   node pages.mjs --http http://127.0.0.1:P1 --http2 http://127.0.0.1:P2 \
//        --ws2 ws://127.0.0.1:WS2 --out DIR
import fs from 'node:fs';
import path from 'node:path';
import { launchBrowser, waitForText, measureVideo, args } from './lib.mjs';

const opts = args();
for (const k of ['http', 'http2', 'ws2']) {
  if (!opts[k]) { console.error(`usage: node pages.mjs --http URL --http2 URL --ws2 URL [--out DIR] (missing --${k})`); process.exit(2); }
}
const out = opts.out || '.';
fs.mkdirSync(out, { recursive: true });

const rand = () => Math.random().toString(36).slice(2, 8);
const name = `tw-${rand()}`;
const relayed = `relayed-${rand()}`;

const result = { ok: false, steps: [], name, relayed };
const step = (s) => { result.steps.push(s); console.error(`[browser] ${s}`); };
const check = (cond, what) => { if (!cond) throw new Error(what); };
const pageErrors = [];
const pages = {}; // label -> page, for screenshots when something fails

const browser = await launchBrowser();

async function open(label, url, viewport = { width: 1280, height: 900 }) {
  const page = await browser.newPage({ viewport });
  pages[label] = page;
  page.on('console', (m) => console.error(`[${label}] ${m.text()}`));
  page.on('pageerror', (e) => { pageErrors.push(`${label}: ${e.message}`); console.error(`[${label}] page error: ${e.message}`); });
  await page.goto(url);
  return page;
}

// The pages fill the server URL in from /config.json; wait for that and check it.
async function defaultUrl(page, selector, expected) {
  await page.waitForFunction((sel) => document.querySelector(sel)?.value.startsWith('ws'), selector, { timeout: 10000 });
  const value = await page.inputValue(selector);
  const bare = (u) => String(u).replace(/\/$/, "");
  check(bare(value) === bare(expected), `default server URL ${value}, expected ${expected}`);
  return value;
}

async function wsUrlOf(httpBase) {
  const cfg = await (await fetch(`${httpBase}/config.json`)).json();
  return `ws://${new URL(httpBase).hostname}:${cfg.wsPort}`;
}

/** The relay table's row for `remote` as {status, text}, or null when absent. */
const relayRow = (page, remote) => page.evaluate((want) => {
  const tr = [...document.querySelectorAll('#relaysTable tbody tr[data-key]')]
    .find((row) => row.cells[2]?.textContent === want);
  return tr ? { status: tr.cells[4].textContent, text: tr.textContent } : null;
}, remote);

/** At phone width nothing may stick out sideways. */
async function fitsPhone(label, url) {
  const page = await open(`${label}@375`, url, { width: 375, height: 800 });
  await page.waitForTimeout(500);
  const width = await page.evaluate(() => document.documentElement.scrollWidth);
  await page.screenshot({ path: path.join(out, `${label}-phone.png`), fullPage: true });
  await page.close();
  delete pages[`${label}@375`];
  check(width <= 375, `${label} is ${width}px wide at phone width`);
}

try {
  const ws1 = await wsUrlOf(opts.http);

  // a. Two Way Streaming: connect, publish, play the same name back.
  const tw = await open('two-way', `${opts.http}/two-way.html`);
  await defaultUrl(tw, '#url', ws1);
  await tw.click('#connectBtn');
  await waitForText(tw, '#connectStatus', 'ESTABLISHED');
  step('two-way: ESTABLISHED');
  await tw.fill('#publishName', name);
  await tw.click('#publishBtn');
  await waitForText(tw, '#publishStatus', 'PUBLISHING');
  step(`two-way: ${name} PUBLISHING`);
  await tw.fill('#playName', name);
  await tw.click('#playBtn');
  await waitForText(tw, '#playStatus', 'PLAYING');
  step('two-way: PLAYING');
  result.twoWay = await measureVideo(tw, '#remoteVideo video');
  check(result.twoWay.framesAfter > result.twoWay.framesBefore, 'two-way: remote video frames do not grow');
  step(`two-way: remote video ${result.twoWay.width}x${result.twoWay.height}, frames ${result.twoWay.framesBefore} -> ${result.twoWay.framesAfter}`);
  await tw.screenshot({ path: path.join(out, 'two-way.png'), fullPage: true });

  // b. Player on server 1: the same stream, with figures from getStats.
  const player = await open('player', `${opts.http}/player.html`);
  await defaultUrl(player, '#url', ws1);
  await player.fill('#streamName', name);
  await player.click('#playBtn');
  await waitForText(player, '#status', 'PLAYING');
  step('player: PLAYING');
  result.player = await measureVideo(player, '#remoteVideo video');
  check(result.player.framesAfter > result.player.framesBefore, 'player: video frames do not grow');
  await player.waitForFunction(() => /\d+×\d+/.test(document.querySelector('#statResolution').textContent)
    && Number(document.querySelector('#statFrames').textContent) > 0
    && /kbit\/s/.test(document.querySelector('#statBitrate').textContent), null, { timeout: 10000 });
  result.playerFigures = await player.evaluate(() => Object.fromEntries(
    ['statResolution', 'statBitrate', 'statFrames', 'statLost'].map((id) => [id, document.getElementById(id).textContent])));
  step(`player: video ${result.player.width}x${result.player.height}, frames ${result.player.framesBefore} -> ${result.player.framesAfter}, figures ${JSON.stringify(result.playerFigures)}`);
  await player.screenshot({ path: path.join(out, 'player.png'), fullPage: true });
  await player.click('#playBtn');
  await waitForText(player, '#status', 'STOPPED');
  step('player: Stop gives STOPPED');

  // c. Relay console: push to server 2, play it there, terminate.
  const relay = await open('relay', `${opts.http}/relay.html`);
  await relay.fill('#relayUri', opts.ws2);
  await relay.fill('#relayLocal', name);
  await relay.fill('#relayRemote', relayed);
  await relay.click('#pushBtn');
  await waitForText(relay, '#relayResult', 'pull/push: 200');
  step('relay: /pull/push answered 200');
  await relay.waitForFunction((want) => [...document.querySelectorAll('#relaysTable tbody tr[data-key]')]
    .some((tr) => tr.cells[2]?.textContent === want && tr.cells[4].textContent === 'PUBLISHING'), relayed, { timeout: 20000 });
  step(`relay: row ${JSON.stringify((await relayRow(relay, relayed)).text)}`);
  await relay.waitForFunction((want) => [...document.querySelectorAll('#streamsTable tbody tr[data-key]')]
    .some((tr) => tr.cells[0].textContent === want && tr.cells[1].textContent === 'published'), name, { timeout: 10000 });
  step('relay: streams table lists the published stream');
  await waitForText(relay, '#clusterTable', 'The cluster is off');
  step('relay: the cluster card says the cluster is off');

  const player2 = await open('player2', `${opts.http2}/player.html`);
  await defaultUrl(player2, '#url', opts.ws2);
  await player2.fill('#streamName', relayed);
  await player2.click('#playBtn');
  await waitForText(player2, '#status', 'PLAYING');
  step(`player on server 2: ${relayed} PLAYING`);
  result.relayVideo = await measureVideo(player2, '#remoteVideo video');
  check(result.relayVideo.framesAfter > result.relayVideo.framesBefore, 'player on server 2: video frames do not grow');
  step(`player on server 2: video ${result.relayVideo.width}x${result.relayVideo.height}, frames ${result.relayVideo.framesBefore} -> ${result.relayVideo.framesAfter}`);

  await relay.screenshot({ path: path.join(out, 'relay.png'), fullPage: true });
  await relay.evaluate((want) => [...document.querySelectorAll('#relaysTable tbody tr[data-key]')]
    .find((tr) => tr.cells[2]?.textContent === want).querySelector('button').click(), relayed);
  await waitForText(relay, '#relayResult', 'pull/terminate: 200');
  await relay.waitForFunction(
    (want) => ![...document.querySelectorAll('#relaysTable tbody tr')].some((tr) => tr.cells[2]?.textContent === want),
    relayed, { timeout: 10000 });
  step('relay: Terminate removed the row');
  await waitForText(player2, '#status', 'STOPPED').catch(() => {});
  result.player2AfterTerminate = await player2.textContent('#status');
  step(`player on server 2 after terminate: ${result.player2AfterTerminate} ${await player2.textContent('#info')}`);

  const index = await open('index', `${opts.http}/`);
  const links = await index.$$eval('header nav a', (as) => as.map((a) => a.getAttribute('href')));
  check(['two-way.html', 'player.html', 'relay.html'].every((l) => links.includes(l)), `index links ${links}`);
  await waitForText(index, '#serverInfo', ws1);
  await index.screenshot({ path: path.join(out, 'index.png'), fullPage: true });
  step('index: links to the three apps and shows the ports');

  for (const page of ['index.html', 'two-way.html', 'player.html', 'relay.html']) {
    await fitsPhone(page.replace('.html', ''), `${opts.http}/${page}`);
  }
  step('every page fits 375px');

  check(pageErrors.length === 0, `page errors: ${pageErrors.join('; ')}`);
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
  for (const [label, page] of Object.entries(pages)) {
    if (!page.isClosed()) await page.screenshot({ path: path.join(out, `${label}-failed.png`), fullPage: true }).catch(() => {});
  }
  const read = async (label, sel) => pages[label]?.textContent(sel, { timeout: 1000 }).catch(() => null);
  result.state = {
    publishStatus: await read('two-way', '#publishStatus'),
    publishInfo: await read('two-way', '#publishInfo'),
    playStatus: await read('two-way', '#playStatus'),
    playInfo: await read('two-way', '#playInfo'),
    playerStatus: await read('player', '#status'),
    playerInfo: await read('player', '#info'),
    relayResult: await read('relay', '#relayResult'),
    player2Status: await read('player2', '#status'),
    player2Info: await read('player2', '#info'),
  };
  if (pageErrors.length) result.pageErrors = pageErrors;
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
