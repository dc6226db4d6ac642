// Shared helpers for the browser tests: a static server for the official WebSDK package
// (its example apps run unmodified from it), and Debian's Chromium driven by playwright-core.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const here = path.dirname(fileURLToPath(import.meta.url));
export const SDK_ROOT = path.join(here, 'node_modules', '@flashphoner', 'websdk');

const TYPES = {
  '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.png': 'image/png',
  '.jpg': 'image/jpeg', '.svg': 'image/svg+xml', '.mp4': 'video/mp4', '.woff': 'font/woff',
  '.woff2': 'font/woff2', '.ttf': 'font/ttf', '.json': 'application/json',
};

/** Serve `root` on 127.0.0.1 (a secure context, so getUserMedia works without TLS). */
export function serveStatic(root) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const file = path.join(root, decodeURIComponent(url.pathname));
    if (!file.startsWith(root)) { res.writeHead(403).end(); return; }
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404).end(); return; }
      res.writeHead(200, { 'Content-Type': TYPES[path.extname(file)] || 'application/octet-stream' }).end(data);
    });
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)));
}

/** Headless Chromium with a fake camera; flags from shared/BROWSER-TESTING.md. */
export async function launchBrowser() {
  return chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    args: [
      '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required',
      '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
      '--allow-loopback-in-peer-connection',
    ],
  });
}

export async function waitForText(page, selector, expected, timeoutMs = 20000) {
  await page.waitForFunction(
    ([sel, want]) => (document.querySelector(sel)?.textContent || '').includes(want),
    [selector, expected], { timeout: timeoutMs });
}

/**
 * Proof that a <video> really plays: it has a size and its decoded frame count grows.
 * Returns {width, height, framesBefore, framesAfter}.
 */
export async function measureVideo(page, selector, timeoutMs = 20000) {
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    return v && v.videoWidth > 0 && v.getVideoPlaybackQuality().totalVideoFrames > 0;
  }, selector, { timeout: timeoutMs });
  const frames = () => page.evaluate((sel) => document.querySelector(sel).getVideoPlaybackQuality().totalVideoFrames, selector);
  const framesBefore = await frames();
  await page.waitForTimeout(2000);
  const framesAfter = await frames();
  const { width, height } = await page.evaluate((sel) => {
    const v = document.querySelector(sel);
    return { width: v.videoWidth, height: v.videoHeight };
  }, selector);
  return { width, height, framesBefore, framesAfter };
}

/** Parse `--key value` arguments. */
export function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i < argv.length; i += 2) out[argv[i].replace(/^--/, '')] = argv[i + 1];
  return out;
}

// ---- Chromium and Firefox alike, through puppeteer-core (CDP for Chromium, WebDriver
// BiDi for Firefox), for the scenarios that mix browsers. Flags and prefs from
// shared/BROWSER-TESTING.md.

const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage', '--autoplay-policy=no-user-gesture-required',
  '--use-fake-device-for-media-stream', '--use-fake-ui-for-media-stream',
  '--allow-loopback-in-peer-connection', '--mute-audio',
];

const FIREFOX_PREFS = {
  'media.navigator.streams.fake': true,
  'media.navigator.permission.disabled': true,
  'media.autoplay.default': 0,
  'media.autoplay.blocking_policy': 0,
  'media.peerconnection.ice.loopback': true,
  'media.peerconnection.ice.obfuscate_host_addresses': false,
  'permissions.default.camera': 1,
  'permissions.default.microphone': 1,
  'media.volume_scale': '0.0',
};

/** `kind` is 'chromium' or 'firefox'; the system binaries, never a downloaded browser. */
export async function launchAny(kind) {
  const puppeteer = (await import('puppeteer-core')).default;
  if (kind === 'firefox') {
    return puppeteer.launch({
      browser: 'firefox',
      executablePath: process.env.FIREFOX || '/usr/bin/firefox-esr',
      headless: true,
      extraPrefsFirefox: FIREFOX_PREFS,
    });
  }
  return puppeteer.launch({ executablePath: process.env.CHROMIUM || '/usr/bin/chromium', headless: true, args: CHROMIUM_ARGS });
}

/**
 * Run before any page script (the SDK included): remember every RTCPeerConnection, and
 * optionally rewrite the video codecs of the offers the page makes. `codecs`: null,
 * {prefer: 'H264'} (that codec first) or {only: 'H264'} (nothing else offered).
 */
export function peerConnectionHook(codecs) {
  window.__pcs = [];
  const proto = RTCPeerConnection.prototype;
  const createOffer = proto.createOffer;
  proto.createOffer = async function (...a) {
    if (!window.__pcs.includes(this)) window.__pcs.push(this);
    const offer = await createOffer.apply(this, a);
    if (!codecs) return offer;
    const want = (codecs.prefer || codecs.only).toUpperCase();
    const lines = offer.sdp.split('\r\n');
    const m = lines.findIndex((l) => l.startsWith('m=video'));
    if (m < 0) return offer;
    const names = {}; const apt = {};
    for (const l of lines) {
      let r = /^a=rtpmap:(\d+) ([^/]+)/.exec(l); if (r) names[r[1]] = r[2].toUpperCase();
      r = /^a=fmtp:(\d+) apt=(\d+)/.exec(l); if (r) apt[r[1]] = r[2];
    }
    const head = lines[m].split(' ').slice(0, 3); const pts = lines[m].split(' ').slice(3);
    const wanted = (pt) => names[pt] === want || (apt[pt] && names[apt[pt]] === want);
    const kept = codecs.only ? pts.filter(wanted) : [...pts.filter(wanted), ...pts.filter((p) => !wanted(p))];
    lines[m] = [...head, ...kept].join(' ');
    // Drop the attribute lines of payload types no longer offered (in the video section only).
    const end = lines.findIndex((l, i) => i > m && l.startsWith('m='));
    const out = lines.filter((l, i) => {
      if (i <= m || (end >= 0 && i >= end)) return true;
      const r = /^a=(rtpmap|fmtp|rtcp-fb):(\d+)/.exec(l);
      return !r || kept.includes(r[2]);
    });
    return { type: offer.type, sdp: out.join('\r\n') };
  };
}

/** Fill an input the way a user would (jQuery pages read `.value`). */
export async function fillAny(page, selector, value) {
  await page.$eval(selector, (el, v) => { el.value = v; el.dispatchEvent(new Event('input', { bubbles: true })); el.dispatchEvent(new Event('change', { bubbles: true })); }, value);
}

/** Wait until the element's text shows `expected`; a FAILED shown first throws at once. */
export async function waitForTextAny(page, selector, expected, timeout = 20000) {
  const handle = await page.waitForFunction(
    (sel, want) => {
      const text = document.querySelector(sel)?.textContent || '';
      return (text.includes(want) || text.includes('FAILED')) && text;
    },
    { timeout, polling: 100 }, selector, expected);
  const text = await handle.jsonValue();
  if (!text.includes(expected)) throw new Error(`${selector} shows ${text}, expected ${expected}`);
}

/**
 * Proof that a <video> plays in either browser: it has a size and frames are presented
 * (requestVideoFrameCallback; Firefox keeps totalVideoFrames at 0 for WebRTC). Also reads
 * the codec and decoded frame count of the page's inbound video from getStats.
 * Returns {width, height, framesBefore, framesAfter, codec, framesDecoded}.
 */
export async function measureVideoAny(page, selector, timeout = 20000) {
  await page.waitForFunction((sel) => {
    const v = document.querySelector(sel);
    if (!v || !v.videoWidth) return false;
    if (v.__frames === undefined) {
      v.__frames = 0;
      const count = () => { v.__frames += 1; v.requestVideoFrameCallback(count); };
      v.requestVideoFrameCallback(count);
    }
    return v.__frames > 0;
  }, { timeout, polling: 100 }, selector);
  const frames = () => page.$eval(selector, (v) => v.__frames);
  const framesBefore = await frames();
  await new Promise((r) => setTimeout(r, 2000));
  const framesAfter = await frames();
  const { width, height } = await page.$eval(selector, (v) => ({ width: v.videoWidth, height: v.videoHeight }));
  return { width, height, framesBefore, framesAfter, ...(await inboundVideo(page)) };
}

/** The page's video RTP stats of `type` ('inbound-rtp' or 'outbound-rtp') from the newest
 * open RTCPeerConnection: {codec (mime type), framesDecoded}. */
async function videoRtp(page, type) {
  return page.evaluate(async (type) => {
    for (const pc of (window.__pcs || []).slice().reverse()) {
      if (pc.connectionState === 'closed') continue;
      const stats = await pc.getStats();
      for (const s of stats.values()) {
        if (s.type === type && s.kind === 'video') {
          const codec = s.codecId && stats.get(s.codecId);
          return { codec: codec ? codec.mimeType : null, framesDecoded: s.framesDecoded || 0 };
        }
      }
    }
    return { codec: null, framesDecoded: 0 };
  }, type);
}

/** The codec and framesDecoded of the page's received video. */
export const inboundVideo = (page) => videoRtp(page, 'inbound-rtp');

/** The codec (mime type) of the page's sent video. */
export const outboundVideoCodec = async (page) => (await videoRtp(page, 'outbound-rtp')).codec;
