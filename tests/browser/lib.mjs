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
