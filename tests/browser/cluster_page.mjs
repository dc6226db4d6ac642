// The Relay console's Cluster card on an edge: every node of the cluster listed with its
// role and streams. Prints one JSON line; exits 1 on failure.
//
//   node cluster_page.mjs --http http://127.0.0.1:P --nodes N --stream NAME --out DIR
import path from 'node:path';
import fs from 'node:fs';
import { launchBrowser, args } from './lib.mjs';

const opts = args();
const out = opts.out || '.';
fs.mkdirSync(out, { recursive: true });
const result = { ok: false };
const browser = await launchBrowser();
try {
  const page = await browser.newPage();
  await page.goto(`${opts.http}/relay.html`);
  await page.waitForFunction(([n, stream]) => {
    const rows = [...document.querySelectorAll('#clusterTable tbody tr[data-key]')];
    return rows.length === Number(n) && rows.some((r) => r.textContent.includes(stream));
  }, [opts.nodes, opts.stream], { timeout: 20000 });
  result.rows = await page.$$eval('#clusterTable tbody tr[data-key]', (rows) => rows.map((r) => r.textContent));
  await page.screenshot({ path: path.join(out, 'relay-cluster.png'), fullPage: true });
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
