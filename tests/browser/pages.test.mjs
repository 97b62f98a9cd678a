// kurz's pages in a real browser: Debian's Chromium driven by playwright-core, against the real
// kurz binary (started here on a free port with a data directory of its own). It shortens a
// link by keyboard, scans the QR code shown, follows the short link to a destination server
// started here, opens the preview and the statistics page and sees the click in the chart. On
// the manage page a key holder finds, edits, disables and enables their links, and sees an
// edit made meanwhile elsewhere refused (412) rather than overwritten.
// Along the way it checks labels, keyboard use, text contrast (WCAG AA) and that no page logs
// a console error; it keeps a screenshot of every page in target/browser-artifacts/.
//
// Run by scripts/test.sh after `cargo build`; alone: `npm ci && npm test` in this directory,
// with KURZ_BIN naming the kurz binary (default: target/debug/kurz).

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';

import jsQR from 'jsqr';
import { chromium } from 'playwright-core';
import { PNG } from 'pngjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, '..', '..');
const KURZ_BIN = process.env.KURZ_BIN
  || path.join(process.env.CARGO_TARGET_DIR || path.join(repo, 'target'), 'debug', 'kurz');
const CHROMIUM = process.env.KURZ_CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = process.env.KURZ_BROWSER_ARTIFACTS || path.join(repo, 'target', 'browser-artifacts');
const ADMIN_TOKEN = 'browser-test-admin-token-0123456789';
const API_KEY = 'browser-test-api-key-0123456789abcdef';
const STEP_TIMEOUT_MS = 10_000;

const children = [];
const servers = [];
let browser;
let destination; // the destination server's base URL
let kurz; // { base }

/** Starts the kurz binary on a free port; resolves with its base URL once it listens. */
async function startKurz(env = {}) {
  if (!fs.existsSync(KURZ_BIN)) {
    throw new Error(`no kurz binary at ${KURZ_BIN}: run 'cargo build' first, or set KURZ_BIN`);
  }
  const dataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'kurz-browser-'));
  // Only what kurz needs: no KURZ__ setting from the caller's environment leaks in.
  const child = spawn(KURZ_BIN, [], {
    env: {
      PATH: process.env.PATH,
      HOME: process.env.HOME,
      KURZ__SERVER__BIND: '127.0.0.1:0',
      KURZ__STORE__BACKEND: 'embedded',
      KURZ__STORE__PATH: path.join(dataDir, 'kurz.redb'),
      KURZ__AUTH__ADMIN_TOKEN: ADMIN_TOKEN,
      KURZ__CLICKS__FLUSH_INTERVAL_MS: '200',
      KURZ__LOG__LEVEL: 'warn',
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.push({ child, dataDir });
  let output = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`kurz did not start within 15 s:\n${output}`)),
      15_000,
    );
    const onData = (chunk) => {
      output += chunk;
      const match = output.match(/kurz listening on (http:\/\/\S+)/);
      if (match) {
        clearTimeout(timer);
        resolve({ base: match[1] });
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', (chunk) => { output += chunk; });
    child.on('exit', (code) => {
      clearTimeout(timer);
      reject(new Error(`kurz exited (${code}) before it listened:\n${output}`));
    });
  });
}

/** A tiny HTTP server the short links lead to, on a free loopback port. */
async function startDestination() {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
    res.end('<!doctype html><title>Destination</title><h1>You arrived</h1>');
  });
  servers.push(server);
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${server.address().port}`;
}

/** A page that records console errors, uncaught exceptions and failed requests. */
async function newPage(viewport = { width: 1000, height: 800 }, options = {}) {
  const context = await browser.newContext({ viewport, deviceScaleFactor: 1, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_TIMEOUT_MS);
  page.setDefaultNavigationTimeout(STEP_TIMEOUT_MS);
  page.problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error') page.problems.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => page.problems.push(`exception: ${error.message}`));
  return page;
}

function assertNoProblems(page, expected = []) {
  const unexpected = page.problems.filter((p) => !expected.some((e) => p.includes(e)));
  assert.deepEqual(unexpected, [], `console errors on ${page.url()}`);
}

async function screenshot(page, name) {
  fs.mkdirSync(ARTIFACTS, { recursive: true });
  await page.screenshot({ path: path.join(ARTIFACTS, `${name}.png`), fullPage: true });
}

/** Every form control has a label, an aria-label or aria-labelledby; buttons have text. */
async function assertLabelled(page) {
  const unlabelled = await page.evaluate(() => [...document.querySelectorAll('input, select, textarea, button')]
    .filter((el) => {
      if (el.tagName === 'BUTTON') return el.textContent.trim() === '' && !el.getAttribute('aria-label');
      return el.labels.length === 0 && !el.getAttribute('aria-label') && !el.getAttribute('aria-labelledby');
    })
    .map((el) => el.outerHTML));
  assert.deepEqual(unlabelled, [], 'form controls without a label');
}

/**
 * The contrast ratio of the text of every element matching `selector` that is shown, against
 * the first opaque background behind it; asserts WCAG AA (4.5:1, or 3:1 for large text).
 */
async function assertContrast(page, selector) {
  const results = await page.evaluate((sel) => {
    const rgba = (text) => {
      const m = text.match(/rgba?\(([^)]+)\)/);
      if (!m) return [0, 0, 0, 0];
      const parts = m[1].split(/[\s,/]+/).filter(Boolean).map(Number);
      return [parts[0], parts[1], parts[2], parts.length > 3 ? parts[3] : 1];
    };
    const luminance = ([r, g, b]) => {
      const channel = (c) => {
        const s = c / 255;
        return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
      };
      return 0.2126 * channel(r) + 0.7152 * channel(g) + 0.0722 * channel(b);
    };
    const background = (el) => {
      for (let node = el; node; node = node.parentElement) {
        const bg = rgba(getComputedStyle(node).backgroundColor);
        if (bg[3] === 1) return bg;
      }
      return [255, 255, 255, 1];
    };
    return [...document.querySelectorAll(sel)]
      .filter((el) => el.getClientRects().length > 0 && el.textContent.trim() !== '')
      .map((el) => {
        const style = getComputedStyle(el);
        const fg = rgba(style.color);
        const bg = background(el);
        // A translucent text colour blends with its background.
        const blended = fg.slice(0, 3).map((c, i) => c * fg[3] + bg[i] * (1 - fg[3]));
        const [hi, lo] = [luminance(blended), luminance(bg)].sort((a, b) => b - a);
        const size = parseFloat(style.fontSize);
        const bold = Number(style.fontWeight) >= 700;
        const large = size >= 24 || (bold && size >= 18.66);
        return {
          element: `${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}${el.className ? `.${String(el.className).replace(/ /g, '.')}` : ''}`,
          text: el.textContent.trim().slice(0, 30),
          ratio: Math.round(((hi + 0.05) / (lo + 0.05)) * 100) / 100,
          needed: large ? 3 : 4.5,
        };
      });
  }, selector);
  assert.ok(results.length > 0, `nothing matched ${selector}`);
  // `!(>=)`: a ratio that could not be computed (NaN) fails too.
  const failing = results.filter((r) => !(r.ratio >= r.needed));
  assert.deepEqual(failing, [], 'text below WCAG AA contrast');
  const lowest = results.reduce((low, r) => (r.ratio < low.ratio ? r : low));
  console.log(`contrast on ${new URL(page.url()).pathname}: ${results.length} elements, lowest ${lowest.ratio}:1 (${lowest.element})`);
  return results;
}

/** Decodes the QR code in a PNG image. */
function decodeQr(pngBytes) {
  const image = PNG.sync.read(pngBytes);
  const code = jsQR(new Uint8ClampedArray(image.data), image.width, image.height);
  return code && code.data;
}

/** The UTC day (YYYY-MM-DD) of a time in milliseconds. */
const utcDay = (ms) => new Date(ms).toISOString().slice(0, 10);

/** Polls `check` (async, truthy when done) every 250 ms for at most `ms`. */
async function eventually(check, ms, what) {
  const deadline = Date.now() + ms;
  for (;;) {
    const result = await check();
    if (result) return result;
    if (Date.now() > deadline) throw new Error(`gave up after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 250));
  }
}

before(async () => {
  if (!fs.existsSync(CHROMIUM)) {
    throw new Error(`no Chromium at ${CHROMIUM}: install it with 'apt-get install chromium'`);
  }
  fs.rmSync(ARTIFACTS, { recursive: true, force: true });
  [destination, kurz] = await Promise.all([startDestination(), startKurz()]);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
    timeout: 30_000,
  });
});

after(async () => {
  if (browser) await browser.close();
  for (const server of servers) server.close();
  for (const { child, dataDir } of children) {
    child.kill('SIGTERM');
    fs.rmSync(dataDir, { recursive: true, force: true });
  }
});

// One journey, in order: each step uses what the one before made.
const journey = {};

test('the home page shortens a link typed by keyboard and shows its QR code', async () => {
  const page = await newPage();
  await page.goto(`${kurz.base}/`);
  assert.equal(await page.title(), 'Shorten a link · kurz');
  await assertLabelled(page);

  // Keyboard only: Tab to the URL field, type, Enter.
  for (let i = 0; i < 10 && !(await page.evaluate(() => document.activeElement.id === 'url')); i += 1) {
    await page.keyboard.press('Tab');
  }
  assert.equal(await page.evaluate(() => document.activeElement.id), 'url', 'Tab reaches the URL field');
  const target = `${destination}/landing?from=kurz`;
  await page.keyboard.type(target);
  await page.keyboard.press('Enter');

  await page.locator('#result').waitFor({ state: 'visible' });
  const shortUrl = await page.locator('#short-url').inputValue();
  assert.match(shortUrl, new RegExp(`^${kurz.base}/[A-Za-z0-9]{7}$`));
  const code = shortUrl.split('/').pop();

  // The QR code: an image whose accessible name says so, loaded from the QR endpoint.
  const qr = page.getByRole('img', { name: /QR/ });
  await qr.waitFor({ state: 'visible' });
  await page.waitForFunction(() => {
    const img = document.getElementById('qr');
    return img.complete && img.naturalWidth > 0;
  });
  assert.equal(await qr.getAttribute('src'), `/api/v1/links/${code}/qr?size=400`);
  // Scan what a person sees, and the PNG the endpoint serves.
  assert.equal(decodeQr(await qr.screenshot()), shortUrl, 'the QR code on the page');
  const png = await fetch(`${kurz.base}/api/v1/links/${code}/qr?format=png&size=400`);
  assert.equal(png.headers.get('content-type'), 'image/png');
  assert.equal(decodeQr(Buffer.from(await png.arrayBuffer())), shortUrl, 'the PNG QR code');

  await page.getByRole('button', { name: 'Copy' }).click();
  await eventually(async () => (await page.locator('#copied').textContent()).trim(), 5_000, 'the copy message');

  await assertContrast(page, 'h1, h2, label, p, a, button, input, .hint');
  await screenshot(page, 'home');
  assertNoProblems(page);
  await page.context().close();
  Object.assign(journey, { shortUrl, code, target });
});

test('the short link redirects to its destination', async () => {
  const { shortUrl, target } = journey;
  // HEAD: the redirect without counting a click.
  const head = await fetch(shortUrl, { method: 'HEAD', redirect: 'manual' });
  assert.equal(head.status, 302);
  assert.equal(head.headers.get('location'), target);

  const page = await newPage();
  // The one click the statistics should show, counted on the UTC day it was made.
  const clickedFrom = Date.now();
  await page.goto(shortUrl);
  journey.clickDays = [utcDay(clickedFrom), utcDay(Date.now())];
  assert.equal(page.url(), target);
  assert.equal(await page.locator('h1').textContent(), 'You arrived');
  assertNoProblems(page);
  await page.context().close();
});

test('the preview shows where the link goes without going there', async () => {
  const { shortUrl, target } = journey;
  const page = await newPage();
  const response = await page.goto(`${shortUrl}+`);
  assert.equal(response.status(), 200);
  assert.equal(page.url(), `${shortUrl}+`, 'no redirect');
  assert.equal((await page.locator('.destination').textContent()).trim(), target);
  assert.equal(await page.locator('.destination .host').textContent(), '127.0.0.1');
  assert.equal(await page.getByRole('link', { name: /Continue to/ }).getAttribute('href'), target);
  assert.match(response.headers()['content-security-policy'], /^default-src 'none'; script-src 'self'/);
  await assertContrast(page, 'h1, p, dt, dd, a');
  await screenshot(page, 'preview');
  assertNoProblems(page);
  await page.context().close();
});

test('the statistics page asks for the admin token once and charts the click', async () => {
  const { code } = journey;
  // A phone's viewport: the page must fit it.
  const page = await newPage({ width: 390, height: 844 });
  await page.goto(`${kurz.base}/admin/links/${code}`);
  const token = page.getByLabel('Admin token');
  await token.waitFor({ state: 'visible' });
  await assertLabelled(page);
  await token.focus();
  await page.keyboard.type(ADMIN_TOKEN);
  await page.keyboard.press('Enter');
  await page.locator('#stats').waitFor({ state: 'visible' });

  // Clicks reach the store once per flush interval: refresh until the click shows.
  await eventually(async () => {
    if ((await page.locator('#total').textContent()) === '1') return true;
    await page.getByRole('button', { name: 'Refresh' }).click();
    return false;
  }, 15_000, 'the click in the statistics');
  // The day the server counted the click under: the UTC day of the click (or the next one,
  // had the click crossed midnight), however late the statistics page is read.
  const stats = await fetch(`${kurz.base}/api/v1/links/${code}/stats`, {
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}` },
  }).then((r) => r.json());
  assert.equal(stats.daily.length, 1, JSON.stringify(stats));
  const [{ date: day, clicks }] = stats.daily;
  assert.equal(clicks, 1);
  assert.ok(journey.clickDays.includes(day), `${day} is not a day of the click (${journey.clickDays})`);
  const bar = page.locator(`#chart rect.bar-day[data-date="${day}"]`);
  assert.equal(await bar.getAttribute('data-clicks'), '1');
  assert.ok(Number(await bar.getAttribute('height')) > 0);
  assert.match(await page.locator('#chart-summary').textContent(), /^1 click from /);
  assert.deepEqual(
    await page.locator('#daily tbody tr').first().locator('td').allTextContents(),
    [day, '1'],
    'the table, the chart\'s text alternative',
  );
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);
  await assertContrast(page, 'h1, h2, dt, dd, td, th, caption, button, figcaption, a');
  await screenshot(page, 'stats');

  // Asked once: the token is kept for this tab (sessionStorage only), a reload does not ask.
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  await page.reload();
  await page.locator('#stats').waitFor({ state: 'visible' });
  assert.equal(await page.locator('#token-form').isHidden(), true);
  assertNoProblems(page);
  await page.context().close();
});

test('the statistics page breaks the clicks down, header values shown as text, for the link\'s key too', async () => {
  // A key with the stats scope, and a link of its own clicked from a page on news.example.
  const made = await fetch(`${kurz.base}/api/v1/keys`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${ADMIN_TOKEN}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'browser-stats', scopes: ['create', 'stats'] }),
  }).then((r) => r.json());
  const created = await fetch(`${kurz.base}/api/v1/links`, {
    method: 'POST',
    headers: { Authorization: `Bearer ${made.secret}`, 'content-type': 'application/json' },
    body: JSON.stringify({ url: `${destination}/from-news` }),
  }).then((r) => r.json());
  // Headless Chromium says so in its User-Agent, which kurz counts as a bot (no details):
  // the click comes from the desktop Chrome it stands for.
  const clicker = await newPage(undefined, {
    userAgent: 'Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36',
  });
  await clicker.goto(created.short_url, { referer: 'https://news.example/story?id=7' });
  await clicker.context().close();

  const page = await newPage({ width: 390, height: 844 });
  // Every value the API sends from a click's headers is attacker-controlled: the page gets
  // one that is markup among the real ones, and must show it as text.
  const markup = '<img src=x onerror="window.__kurzInjected=1">';
  await page.route('**/api/v1/links/*/stats', async (route) => {
    const response = await route.fetch();
    const stats = await response.json();
    if (response.ok()) {
      stats.breakdown.referrer = [...stats.breakdown.referrer, { value: markup, clicks: 1 }];
    }
    await route.fulfill({ response, json: stats });
  });
  await page.goto(`${kurz.base}/admin/links/${created.code}`);
  await page.getByLabel('API key').fill(made.secret);
  await page.getByRole('button', { name: 'Show clicks' }).click();
  await page.locator('#stats').waitFor({ state: 'visible' });
  // Refresh until the click's details are in (clicks reach the store once per flush).
  await eventually(async () => {
    const cells = await page.locator('#by-referrer tbody td').allTextContents();
    if (cells.includes('news.example')) return true;
    await page.getByRole('button', { name: 'Refresh' }).click();
    return false;
  }, 15_000, 'the referrer in the statistics');

  const rows = async (dimension) => page.locator(`#by-${dimension} tbody tr`).evaluateAll(
    (trs) => trs.map((tr) => [...tr.cells].map((td) => td.textContent)),
  );
  assert.deepEqual(await rows('referrer'), [['news.example', '1'], [markup, '1']]);
  assert.equal(await page.locator('#breakdowns img').count(), 0, 'no element made from a value');
  assert.equal(await page.evaluate(() => window.__kurzInjected), undefined);
  // Each table is named by its caption, so a screen reader says which dimension it reads.
  for (const [dimension, caption] of [['country', 'Country'], ['referrer', 'Referrer'], ['device', 'Device'],
    ['browser', 'Browser'], ['os', 'Operating system']]) {
    assert.equal(await page.getByRole('table', { name: caption, exact: true }).getAttribute('id'), `by-${dimension}`);
    const [[value, clicks]] = await rows(dimension);
    assert.ok(value.length > 0 && clicks === '1', `${dimension}: ${value} ${clicks}`);
  }
  assert.equal(await page.locator('#period-humans').textContent(), '1');
  assert.equal(await page.locator('#period-uniques').textContent(), '1');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than a phone`);
  await assertContrast(page, 'h2, dt, dd, td, th, caption, .hint');
  await screenshot(page, 'stats-breakdown');
  assertNoProblems(page);
  await page.context().close();
});

test('an unknown link shows a page to a browser', async () => {
  const page = await newPage();
  const response = await page.goto(`${kurz.base}/no-such-link`);
  assert.equal(response.status(), 404);
  assert.equal(await page.locator('h1').textContent(), 'Nothing here');
  await assertContrast(page, 'h1, p, a');
  await screenshot(page, 'not-found');
  // The 404 itself is what Chromium logs; nothing else may be.
  assertNoProblems(page, ['status of 404']);
  await page.context().close();
});

test('when creating needs an API key, the home page asks for one', async () => {
  const keyed = await startKurz({ KURZ__AUTH__API_KEYS: API_KEY });
  const page = await newPage();
  await page.goto(`${keyed.base}/`);
  await page.getByLabel('Long URL').fill(`${destination}/with-key`);
  await page.keyboard.press('Enter');
  const key = page.getByLabel('API key');
  await key.waitFor({ state: 'visible' });
  assert.match(await page.locator('#status').textContent(), /needs an API key/);
  assert.equal(await page.evaluate(() => document.activeElement.id), 'api-key');
  await page.keyboard.type(API_KEY);
  await page.keyboard.press('Enter');
  await page.locator('#result').waitFor({ state: 'visible' });
  assert.match(await page.locator('#short-url').inputValue(), new RegExp(`^${keyed.base}/`));
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kurz.apiKey')), API_KEY);
  assert.equal(await page.evaluate(() => localStorage.length), 0);
  await screenshot(page, 'home-api-key');
  // The API's 401 is what Chromium logs; nothing else may be.
  assertNoProblems(page, ['status of 401']);
  await page.context().close();
});

test('the manage page lists, filters, edits, disables and enables a key\'s links, page by page', async () => {
  const keyed = await startKurz({ KURZ__AUTH__API_KEYS: API_KEY });
  const call = async (path, { method = 'GET', body, as = API_KEY } = {}) => {
    const response = await fetch(`${keyed.base}${path}`, {
      method,
      headers: { Authorization: `Bearer ${as}`, 'Content-Type': 'application/json' },
      body: body === undefined ? undefined : JSON.stringify(body),
      redirect: 'manual',
    });
    return { status: response.status, headers: response.headers, body: await response.json().catch(() => null) };
  };
  const create = async (body, as) => {
    const created = await call('/api/v1/links', { method: 'POST', body, as });
    assert.equal(created.status, 201, JSON.stringify(created.body));
    return created.body;
  };
  const redirect = async (link) => {
    const response = await fetch(link.short_url, { method: 'HEAD', redirect: 'manual' });
    return [response.status, response.headers.get('location')];
  };
  const launch = await create({ url: `${destination}/launch`, title: 'Launch notes', tags: ['launch', 'news'] });
  const docs = await create({ url: `${destination}/docs`, title: 'Docs', tags: ['docs'] });
  const blog = await create({ url: `${destination}/blog/spring`, tags: ['launch'] });
  const admins = await create({ url: `${destination}/not-the-keys` }, ADMIN_TOKEN);

  const page = await newPage();
  await page.goto(`${keyed.base}/admin/links`);
  assert.equal(await page.title(), 'Manage links · kurz');
  const tokenField = page.getByLabel('API key or admin token');
  await tokenField.waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.activeElement.id), 'token', 'the token field has the focus');
  await page.keyboard.type(API_KEY);
  await page.keyboard.press('Enter');

  const row = (link) => page.locator(`#links > li[data-code="${link.code}"]`);
  /** Waits until the list shows exactly `links` (in any order). */
  const shows = async (links) => {
    const wanted = links.map((l) => l.code).sort().join(' ');
    await page.waitForFunction(
      (codes) => [...document.querySelectorAll('#links > li')].map((li) => li.dataset.code).sort().join(' ') === codes,
      wanted,
    );
  };
  // A key sees its own links, not the admin's.
  await shows([launch, docs, blog]);
  assert.match(await page.locator('#count').textContent(), /^3 links\.$/);
  assert.equal(await row(launch).locator('.state').textContent(), 'Active');
  assert.deepEqual(await row(launch).locator('.tags li').allTextContents(), ['launch', 'news']);
  assert.equal(await row(launch).locator('.link-title').textContent(), 'Launch notes');
  assert.equal(await row(blog).locator('.link-url').textContent(), blog.url);
  await assertLabelled(page);
  // Kept in this tab only: never in the URL, a cookie or localStorage.
  assert.equal(await page.evaluate(() => sessionStorage.getItem('kurz.manageToken')), API_KEY);
  assert.equal(await page.evaluate(() => localStorage.length + document.cookie.length), 0);
  assert.equal(page.url(), `${keyed.base}/admin/links`);

  // Filters: a tag from the tag list, then search text on top of it, then neither.
  const tag = page.getByLabel('Tag');
  // The tag list loads beside the links.
  await page.waitForFunction(() => document.querySelectorAll('#tag option').length > 1);
  assert.deepEqual(await tag.locator('option').allTextContents(), ['Any tag', 'launch (2)', 'docs (1)', 'news (1)']);
  await tag.selectOption('launch');
  await shows([launch, blog]);
  await page.getByLabel('Search').fill('spring');
  await page.getByLabel('Search').press('Enter');
  await shows([blog]);
  await page.getByLabel('Search').fill('');
  await tag.selectOption('');
  await shows([launch, docs, blog]);

  // Edit by keyboard: the form opens on the link's destination, Enter saves.
  await row(docs).getByRole('button', { name: 'Edit' }).press('Enter');
  const docsForm = row(docs).locator('form.edit');
  await docsForm.waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => document.activeElement.name), 'url');
  assert.equal(await docsForm.getByLabel('Destination').inputValue(), docs.url);
  await assertLabelled(page);
  await docsForm.getByLabel('Destination').fill(`${destination}/docs/v2`);
  await docsForm.getByLabel('Tags').fill('docs, Guide');
  await docsForm.getByLabel('Title').fill('Docs, second edition');
  await docsForm.getByLabel('Destination').press('Enter');
  await row(docs).locator('.row-status', { hasText: 'Saved.' }).waitFor();
  assert.equal(await docsForm.count(), 0, 'the form closes');
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Edit', 'the focus goes back to Edit');
  const docsNow = await call(`/api/v1/links/${docs.code}`);
  assert.equal(docsNow.body.url, `${destination}/docs/v2`);
  assert.deepEqual(docsNow.body.tags, ['docs', 'guide']);
  assert.equal(docsNow.body.title, 'Docs, second edition');
  assert.deepEqual(await redirect(docs), [302, `${destination}/docs/v2`]);
  assert.deepEqual(await row(docs).locator('.tags li').allTextContents(), ['docs', 'guide']);

  // An expiry set, then cleared.
  const expiry = new Date(Date.now() + 7 * 86_400_000);
  expiry.setSeconds(0, 0);
  const local = (at) => new Date(at.getTime() - at.getTimezoneOffset() * 60_000).toISOString().slice(0, 16);
  await row(blog).getByRole('button', { name: 'Edit' }).click();
  const blogForm = row(blog).locator('form.edit');
  assert.equal(await blogForm.getByLabel('Never expires').isChecked(), true);
  await blogForm.getByLabel('Never expires').uncheck();
  await blogForm.getByLabel('Expires', { exact: true }).fill(local(expiry));
  await blogForm.getByRole('button', { name: 'Save' }).click();
  await row(blog).locator('.row-status', { hasText: 'Saved.' }).waitFor();
  assert.equal(Date.parse((await call(`/api/v1/links/${blog.code}`)).body.expires_at), expiry.getTime());
  await row(blog).getByRole('button', { name: 'Edit' }).click();
  assert.equal(await blogForm.getByLabel('Expires', { exact: true }).inputValue(), local(expiry));
  await blogForm.getByLabel('Never expires').check();
  await blogForm.getByRole('button', { name: 'Save' }).click();
  await row(blog).locator('.row-status', { hasText: 'Saved.' }).waitFor();
  assert.equal((await call(`/api/v1/links/${blog.code}`)).body.expires_at, null);

  // Disabled, the short link is gone (410); enabled, it redirects again.
  await row(blog).getByRole('button', { name: 'Disable' }).click();
  await row(blog).locator('.state', { hasText: 'Disabled' }).waitFor();
  assert.deepEqual(await redirect(blog), [410, null]);
  assert.equal(await page.evaluate(() => document.activeElement.textContent), 'Enable', 'the focus stays on the button');

  // A change made elsewhere after the form opened: saving answers 412, the page says so and
  // shows the link as it is now, keeping what was typed; saving again applies it to that.
  await row(launch).getByRole('button', { name: 'Edit' }).click();
  const launchForm = row(launch).locator('form.edit');
  await launchForm.waitFor({ state: 'visible' });
  const elsewhere = await call(`/api/v1/links/${launch.code}`, { method: 'PATCH', body: { title: 'Renamed elsewhere' } });
  assert.equal(elsewhere.status, 200);
  await launchForm.getByLabel('Tags').fill('launch, news, q3');
  const conflict = page.waitForResponse((r) => r.request().method() === 'PATCH' && r.url().endsWith(`/${launch.code}`));
  await launchForm.getByRole('button', { name: 'Save' }).click();
  assert.equal((await conflict).status(), 412);
  await row(launch).locator('.row-status.error', { hasText: 'changed elsewhere' }).waitFor();
  await row(launch).locator('.link-title', { hasText: 'Renamed elsewhere' }).waitFor();
  assert.equal(await launchForm.getByLabel('Title').inputValue(), 'Renamed elsewhere', 'an untouched field takes the new value');
  assert.equal(await launchForm.getByLabel('Tags').inputValue(), 'launch, news, q3', 'a typed field keeps what was typed');
  assert.deepEqual((await call(`/api/v1/links/${launch.code}`)).body.tags, ['launch', 'news'], 'nothing was overwritten');
  await assertContrast(page, 'h1, h2, label, p, a, button, dt, dd, .state, .tags li, .hint');
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `the page is ${overflow} px wider than the window`);
  await screenshot(page, 'manage');
  await launchForm.getByRole('button', { name: 'Save' }).click();
  await row(launch).locator('.row-status', { hasText: 'Saved.' }).waitFor();
  const launchNow = (await call(`/api/v1/links/${launch.code}`)).body;
  assert.deepEqual([launchNow.title, launchNow.tags], ['Renamed elsewhere', ['launch', 'news', 'q3']]);

  await row(blog).getByRole('button', { name: 'Enable' }).click();
  await row(blog).locator('.state', { hasText: 'Active' }).waitFor();
  assert.deepEqual(await redirect(blog), [302, blog.url]);

  // The admin disabled it: its owner may not enable it, and the page says why.
  const byAdmin = await call(`/api/v1/links/${docs.code}`, { method: 'PATCH', body: { disabled: true, reason: 'reported' }, as: ADMIN_TOKEN });
  assert.equal(byAdmin.status, 200);
  await page.getByRole('button', { name: 'Search' }).click();
  await row(docs).locator('.state', { hasText: 'Disabled' }).waitFor();
  assert.match(await row(docs).locator('.facts').textContent(), /Disabled because\s*reported/);
  await row(docs).getByRole('button', { name: 'Enable' }).click();
  await row(docs).locator('.row-status.error', { hasText: 'only the admin can enable it' }).waitFor();
  assert.deepEqual(await redirect(docs), [410, null]);

  // The admin token shows every link.
  await page.getByRole('button', { name: 'Forget the token' }).click();
  await tokenField.waitFor({ state: 'visible' });
  assert.equal(await page.evaluate(() => sessionStorage.length), 0);
  await tokenField.fill(ADMIN_TOKEN);
  await tokenField.press('Enter');
  await shows([launch, docs, blog, admins]);

  // A page holds 20 links; the rest come with "Load more", the focus on the first of them.
  const bulk = await Promise.all(Array.from({ length: 18 }, (_, i) => create({ url: `${destination}/bulk/${i}` })));
  await page.getByRole('button', { name: 'Search' }).click();
  await page.locator('#links > li:nth-child(20)').waitFor();
  const more = page.getByRole('button', { name: 'Load more' });
  assert.equal(await page.locator('#links > li').count(), 20);
  assert.match(await page.locator('#count').textContent(), /^20 links, more to load\.$/);
  await more.press('Enter');
  await shows([launch, docs, blog, admins, ...bulk]);
  assert.equal(await more.isHidden(), true, 'no more to load');
  assert.equal(
    await page.evaluate(() => document.activeElement.closest('li').dataset.code),
    await page.locator('#links > li:nth-child(21)').getAttribute('data-code'),
  );
  assertNoProblems(page, ['status of 412', 'status of 403']);
  await page.context().close();
});
