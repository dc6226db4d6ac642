// Relay console: start relays with /pull/push and /pull/pull, list and terminate them
// (/pull/find_all, /pull/terminate), list this server's streams (/stream/find_all) and
// the cluster's nodes as this node hears them (/cdn/show_nodes).
// Tables refresh every 2 s; rows are updated in place so a button is never replaced
// under the pointer.
import { rest } from './hopcast.js';

const $ = (id) => document.getElementById(id);
const REFRESH_MS = 2000;

function showResult(text, ok) {
  $('relayResult').textContent = text;
  $('relayResult').dataset.ok = String(ok);
}

// The server's {"error": ...} text when there is one, else the whole answer.
function describe(method, { status, body }) {
  if (body && typeof body.error === 'string') return `${method}: ${status} ${body.error}`;
  return `${method}: ${status}${body == null ? '' : `\n${JSON.stringify(body, null, 2)}`}`;
}

async function call(method, body) {
  try {
    const answer = await rest(method, body);
    showResult(describe(method, answer), answer.status >= 200 && answer.status < 300);
    return answer;
  } catch (e) {
    showResult(`${method}: ${e.message}`, false);
    return null;
  }
}

async function startRelay(method) {
  const body = {
    uri: $('relayUri').value.trim(),
    localStreamName: $('relayLocal').value.trim(),
    remoteStreamName: $('relayRemote').value.trim(),
  };
  $('pushBtn').disabled = $('pullBtn').disabled = true;
  showResult(`${method}: waiting for the server…`, true);
  try {
    await call(method, body);
  } finally {
    $('pushBtn').disabled = $('pullBtn').disabled = false;
  }
  refresh();
}

$('relayForm').addEventListener('submit', (e) => { e.preventDefault(); startRelay('pull/push'); });
$('pullBtn').addEventListener('click', () => startRelay('pull/pull'));

function statusPill(td, status) {
  let pill = td.firstElementChild;
  if (!pill) { pill = document.createElement('span'); pill.className = 'status'; td.append(pill); }
  if (pill.textContent !== status) { pill.textContent = status; pill.dataset.state = status; }
}

function setText(td, text) {
  if (td.textContent !== text) td.textContent = text;
}

/**
 * Make `tbody` show `items`: rows are keyed, kept when the key stays, added and removed
 * as items come and go. `columns` are [{label, className, create?(td, tr), update(td, item)}].
 */
function sync(tbody, items, key, columns, emptyText) {
  const rows = new Map();
  for (const tr of tbody.querySelectorAll('tr[data-key]')) rows.set(tr.dataset.key, tr);
  const placeholder = tbody.querySelector('td.empty')?.parentElement;
  if (items.length === 0) {
    for (const tr of rows.values()) tr.remove();
    if (placeholder) placeholder.firstElementChild.textContent = emptyText;
    else {
      const tr = tbody.insertRow();
      const td = tr.insertCell();
      td.className = 'empty';
      td.colSpan = columns.length;
      td.textContent = emptyText;
    }
    return;
  }
  placeholder?.remove();
  const seen = new Set();
  for (const item of items) {
    const k = key(item);
    seen.add(k);
    let tr = rows.get(k);
    if (!tr) {
      tr = tbody.insertRow();
      tr.dataset.key = k;
      for (const col of columns) {
        const td = tr.insertCell();
        td.dataset.label = col.label;
        if (col.className) td.className = col.className;
        col.create?.(td, tr);
      }
      rows.set(k, tr);
    }
    tr.item = item; // what the row's buttons act on
    columns.forEach((col, i) => col.update(tr.cells[i], item, tr));
  }
  for (const [k, tr] of rows) if (!seen.has(k)) tr.remove();
}

const relayColumns = [
  { label: 'Direction', update: (td, r) => setText(td, r.direction) },
  { label: 'Local name', className: 'mono', update: (td, r) => setText(td, r.localStreamName) },
  { label: 'Remote name', className: 'mono', update: (td, r) => setText(td, r.remoteStreamName) },
  { label: 'URI', className: 'mono', update: (td, r) => setText(td, r.uri) },
  { label: 'Status', update: (td, r) => statusPill(td, r.status) },
  { label: 'Info', update: (td, r) => setText(td, r.info || '') },
  {
    label: '',
    create(td, tr) {
      const btn = document.createElement('button');
      btn.className = 'danger small';
      btn.textContent = 'Terminate';
      btn.addEventListener('click', async () => {
        const { localStreamName, remoteStreamName, uri } = tr.item;
        btn.disabled = true;
        await call('pull/terminate', { localStreamName, remoteStreamName, uri });
        btn.disabled = false;
        refresh();
      });
      td.append(btn);
    },
    update: () => {},
  },
];

const streamColumns = [
  {
    label: 'Name',
    className: 'mono',
    update(td, s) {
      // A published stream links to the Player, prefilled.
      const want = s.published ? `player.html?name=${encodeURIComponent(s.name)}` : null;
      const a = td.querySelector('a');
      if (want && a?.getAttribute('href') === want) return;
      td.textContent = '';
      if (!want) { td.textContent = s.name; return; }
      const link = document.createElement('a');
      link.href = want;
      link.textContent = s.name;
      td.append(link);
    },
  },
  { label: 'Kind', update: (td, s) => setText(td, s.published ? 'published' : 'played') },
  { label: 'Status', update: (td, s) => statusPill(td, s.status) },
  { label: 'mediaSessionId', className: 'mono', update: (td, s) => setText(td, s.mediaSessionId) },
];

const clusterColumns = [
  { label: 'Node', className: 'mono', update: (td, n) => setText(td, n.id.slice(0, 8)) },
  { label: 'Role', update: (td, n) => setText(td, [n.origin && 'origin', n.edge && 'edge'].filter(Boolean).join(', ')) },
  { label: 'URI', className: 'mono', update: (td, n) => setText(td, n.uri) },
  { label: 'Streams', className: 'mono', update: (td, n) => setText(td, n.streams.join(', ') || '–') },
  { label: 'Players', update: (td, n) => setText(td, String(n.players)) },
];

// 404 is how the server says "none" (or, for the cluster, that it is off: its text
// says which); other failures are shown in the table.
async function list(method) {
  const answer = await rest(method);
  if (answer.status === 404) return { items: [], none: answer.body?.error };
  if (answer.status !== 200 || !Array.isArray(answer.body)) {
    return { error: answer.body?.error || `HTTP ${answer.status}` };
  }
  return { items: answer.body };
}

async function refreshOne(method, table, key, columns, none, hint) {
  try {
    const { items, error, none: why } = await list(method);
    const empty = method.startsWith('cdn/') && why ? why : none;
    sync($(table).tBodies[0], items || [], key, columns, error ? `Error: ${error}` : empty);
    $(hint).textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $(hint).textContent = `server unreachable (${e.message})`;
  }
}

let busy = false; // one refresh at a time, even when the server is slow
let again = false; // asked for while busy: run once more right after
async function refresh() {
  if (busy) { again = true; return; }
  busy = true;
  again = false;
  try {
    await Promise.all([
      refreshOne('pull/find_all', 'relaysTable',
        (r) => `${r.direction}|${r.uri}|${r.localStreamName}|${r.remoteStreamName}`,
        relayColumns, 'No relays', 'relaysUpdated'),
      refreshOne('stream/find_all', 'streamsTable', (s) => s.mediaSessionId,
        streamColumns, 'No streams', 'streamsUpdated'),
      refreshOne('cdn/show_nodes', 'clusterTable', (n) => n.id, clusterColumns, 'No nodes', 'clusterUpdated'),
    ]);
  } finally {
    busy = false;
  }
  if (again) refresh();
}

refresh();
setInterval(refresh, REFRESH_MS);
