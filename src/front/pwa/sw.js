// Bosun service worker: keeps the app shell so the app opens without the
// network. It never touches the API, the WebSocket or auth: their answers are
// live data and must not be served stale.
'use strict';

// v2: the app became ES modules; the old cache (with /app.js) is dropped on activation.
// v3: the terminal (terminal.js and the vendored xterm.js).
// v4: the Terminals screen (bridge.js).
const CACHE = 'bosun-shell-v4';
// Every module main.js imports must be here, or an offline reload fails to load the app.
const MODULES = [
  '/main.js',
  '/api.js',
  '/approvals.js',
  '/connection.js',
  '/dom.js',
  '/pairing.js',
  '/sessions.js',
  '/store.js',
  '/transcript.js',
  '/terminal.js',
  '/bridge.js',
  '/workflows.js',
  // xterm.js, vendored at a pinned version (src/front/pwa/vendor/)
  '/vendor/xterm.mjs',
  '/vendor/addon-fit.mjs',
];
const SHELL = ['/', ...MODULES, '/vendor/xterm.css', '/app.css', '/manifest.webmanifest', '/icon.svg', '/icon-192.png', '/icon-512.png'];
const LIVE = ['/api/', '/ws', '/auth/', '/health'];

self.addEventListener('install', (event) => {
  event.waitUntil(caches.open(CACHE).then((cache) => cache.addAll(SHELL)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim())
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (LIVE.some((p) => url.pathname.startsWith(p))) return;
  const path = url.pathname === '/index.html' ? '/' : url.pathname;
  if (!SHELL.includes(path)) return;
  // Network first, so a new daemon's app is used at once; the cache only when offline.
  event.respondWith(
    fetch(req)
      .then((res) => {
        if (res.ok) {
          const copy = res.clone();
          caches.open(CACHE).then((cache) => cache.put(path, copy));
        }
        return res;
      })
      .catch(() => caches.match(path).then((hit) => hit || Response.error()))
  );
});
