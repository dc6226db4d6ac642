// REST hooks seen from a browser: the official WebSDK (flashphoner.js, unmodified) in a
// small page connects with createSession({custom: {token}}) to a hopcast whose hooks go
// to the backend this script runs. The right token is admitted (a publish the backend
// refuses shows its reason, another one goes PUBLISHING); a wrong token is refused and
// the page shows the backend's reason. Prints one JSON line; exits 1 on failure.
//
//   node hooks_page.mjs --ws ws://127.0.0.1:P --backend-port B --out DIR
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { SDK_ROOT, args, launchAny } from './lib.mjs';

const opts = args();
const out = opts.out || '.';
fs.mkdirSync(out, { recursive: true });
const result = { ok: false, calls: [] };

// The operator's backend: the token "letmein" connects; names starting with "forbidden"
// may not be published.
const backend = http.createServer((req, res) => {
  let text = '';
  req.on('data', (c) => { text += c; });
  req.on('end', () => {
    const body = JSON.parse(text || '{}');
    const method = req.url.split('/').pop();
    result.calls.push(method);
    let refusal = null;
    if (method === 'connect' && body.custom?.token !== 'letmein') refusal = 'Bad token: ask your admin';
    if (method === 'publishStream' && String(body.name).startsWith('forbidden')) refusal = `No publishing of ${body.name}`;
    res.writeHead(refusal ? 403 : 200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify(refusal ? { reason: refusal } : {}));
  });
});
await new Promise((r) => backend.listen(Number(opts['backend-port']), '127.0.0.1', r));

// The page: the SDK from its package, and a few lines that show what happens.
const PAGE = `<!doctype html><html><body>
<p>session: <span id="session">-</span> reason: <span id="reason">-</span></p>
<p>stream: <span id="stream">-</span> info: <span id="info">-</span></p>
<div id="display" style="width:320px;height:240px"></div>
<script src="/flashphoner.js"></script>
<script>
const S = Flashphoner.constants.SESSION_STATUS, T = Flashphoner.constants.STREAM_STATUS;
const show = (id, text) => { document.getElementById(id).textContent = text; };
Flashphoner.init({});
window.connect = (url, token) => new Promise((resolve) => {
  Flashphoner.createSession({ urlServer: url, custom: { token } })
    .on(S.ESTABLISHED, (session) => { show('session', 'ESTABLISHED'); window.session = session; resolve('ESTABLISHED'); })
    .on(S.WARN, (obj) => show('reason', obj.info))
    .on(S.FAILED, () => { show('session', 'FAILED'); resolve('FAILED'); })
    .on(S.DISCONNECTED, () => { show('session', 'DISCONNECTED'); resolve('DISCONNECTED'); });
});
window.publish = (name) => new Promise((resolve) => {
  const display = document.getElementById('display');
  window.session.createStream({ name, display })
    .on(T.PUBLISHING, () => { show('stream', 'PUBLISHING'); resolve('PUBLISHING'); })
    .on(T.FAILED, (stream) => { show('stream', 'FAILED'); show('info', stream.getInfo()); resolve('FAILED'); })
    .publish();
});
</script></body></html>`;
const web = http.createServer((req, res) => {
  if (req.url === '/flashphoner.js') {
    res.writeHead(200, { 'Content-Type': 'text/javascript' }).end(fs.readFileSync(path.join(SDK_ROOT, 'flashphoner.js')));
  } else {
    res.writeHead(200, { 'Content-Type': 'text/html' }).end(PAGE);
  }
});
await new Promise((r) => web.listen(0, '127.0.0.1', r));
const pageUrl = `http://127.0.0.1:${web.address().port}/`;

const browser = await launchAny('chromium');
const text = (page, id) => page.$eval(`#${id}`, (e) => e.textContent);
try {
  // A wrong token: refused, and the page says why.
  const refused = await browser.newPage();
  refused.on('console', (m) => console.error(`[refused] ${m.text()}`));
  await refused.goto(pageUrl);
  result.wrongToken = { session: await refused.evaluate((u) => window.connect(u, 'guess'), opts.ws) };
  await refused.waitForFunction(() => document.getElementById('reason').textContent !== '-', { timeout: 10000 });
  result.wrongToken.reason = await text(refused, 'reason');
  await refused.screenshot({ path: path.join(out, 'hooks-refused.png') });

  // The right token: admitted; the backend decides about each publish.
  const admitted = await browser.newPage();
  admitted.on('console', (m) => console.error(`[admitted] ${m.text()}`));
  await admitted.goto(pageUrl);
  result.rightToken = { session: await admitted.evaluate((u) => window.connect(u, 'letmein'), opts.ws) };
  result.rightToken.forbidden = await admitted.evaluate(() => window.publish('forbidden-cam'));
  result.rightToken.forbiddenInfo = await text(admitted, 'info');
  result.rightToken.allowed = await admitted.evaluate(() => window.publish('open-cam'));
  await admitted.screenshot({ path: path.join(out, 'hooks-admitted.png') });
  result.ok = true;
} catch (e) {
  result.error = String(e && e.message || e);
} finally {
  await browser.close();
  web.close();
  backend.close();
}
console.log(JSON.stringify(result));
process.exit(result.ok ? 0 : 1);
