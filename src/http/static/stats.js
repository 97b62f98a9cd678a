// The statistics page: asks for the admin token or the link's API key once (kept in this tab's
// sessionStorage only), reads /api/v1/links/{code}/stats with it, and draws clicks per day for
// the last 30 days as an SVG bar chart, with a summary and a table as its text alternative,
// then a table per dimension (country, referrer, device, browser, OS). Values from a click's
// headers are whatever a client sent: they are set as textContent only, never as markup.
'use strict';

(() => {
  const TOKEN_STORAGE = 'kurz.adminToken';
  const DAYS = 30;
  const DAY_MS = 86400000;
  const SVG = 'http://www.w3.org/2000/svg';
  const $ = (id) => document.getElementById(id);
  const code = $('stats-page').dataset.code;
  const form = $('token-form');
  const tokenInput = $('admin-token');
  const status = $('status');
  const section = $('stats');

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function askForToken(message) {
    section.hidden = true;
    form.hidden = false;
    if (message) say(message, true);
    tokenInput.focus();
  }

  const utcDay = (ms) => new Date(ms).toISOString().slice(0, 10);
  const utcMinutes = (text) => `${new Date(text).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

  const DIMENSIONS = ['country', 'referrer', 'device', 'browser', 'os'];

  // The period's days as the API gives them (every day, zero where nothing was clicked);
  // from an older server without a series, the last DAYS UTC days of `daily`.
  function periodDays(stats) {
    if (Array.isArray(stats.series) && stats.series.length > 0) {
      return stats.series.map((p) => ({ date: p.at, clicks: p.clicks }));
    }
    return lastDays(stats.daily);
  }

  // The last DAYS UTC days, ending today (or at the last day with clicks, if the server's
  // clock is ahead of this one), zero where the API lists no clicks.
  function lastDays(daily) {
    const counts = new Map(daily.map((d) => [d.date, d.clicks]));
    const now = new Date();
    let end = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
    if (daily.length > 0) end = Math.max(end, Date.parse(`${daily[daily.length - 1].date}T00:00:00Z`));
    const days = [];
    for (let i = DAYS - 1; i >= 0; i -= 1) {
      const date = utcDay(end - i * DAY_MS);
      days.push({ date, clicks: counts.get(date) || 0 });
    }
    return days;
  }

  function drawChart(days) {
    const svg = $('chart');
    svg.replaceChildren();
    const [width, height] = [600, 200];
    const max = Math.max(1, ...days.map((d) => d.clicks));
    for (const fraction of [0.5, 1]) {
      const line = document.createElementNS(SVG, 'line');
      const y = height - fraction * (height - 4);
      line.setAttribute('class', 'grid');
      line.setAttribute('x1', '0');
      line.setAttribute('x2', String(width));
      line.setAttribute('y1', String(y));
      line.setAttribute('y2', String(y));
      svg.append(line);
    }
    const slot = width / days.length;
    days.forEach((day, i) => {
      if (day.clicks === 0) return;
      const barHeight = Math.max(2, (day.clicks / max) * (height - 4));
      const bar = document.createElementNS(SVG, 'rect');
      bar.setAttribute('class', i === days.length - 1 ? 'bar-day today' : 'bar-day');
      bar.setAttribute('x', String(i * slot + slot * 0.15));
      bar.setAttribute('width', String(slot * 0.7));
      bar.setAttribute('y', String(height - barHeight));
      bar.setAttribute('height', String(barHeight));
      bar.dataset.date = day.date;
      bar.dataset.clicks = String(day.clicks);
      const title = document.createElementNS(SVG, 'title');
      title.textContent = `${day.date}: ${plural(day.clicks, 'click', 'clicks')}`;
      bar.append(title);
      svg.append(bar);
    });
    $('axis-first').textContent = days[0].date;
    $('axis-last').textContent = days[days.length - 1].date;

    const total = days.reduce((sum, d) => sum + d.clicks, 0);
    const busiest = days.reduce((best, d) => (d.clicks > best.clicks ? d : best), days[0]);
    $('chart-summary').textContent = total === 0
      ? `No clicks from ${days[0].date} to ${days[days.length - 1].date}.`
      : `${plural(total, 'click', 'clicks')} from ${days[0].date} to ${days[days.length - 1].date}; `
        + `the busiest day was ${busiest.date} with ${plural(busiest.clicks, 'click', 'clicks')}. `
        + `The top line is ${plural(max, 'click', 'clicks')}.`;
  }

  function fillTable(daily) {
    const rows = [...daily].reverse().map((d) => {
      const row = document.createElement('tr');
      const date = document.createElement('td');
      const clicks = document.createElement('td');
      date.textContent = d.date;
      clicks.textContent = String(d.clicks);
      row.append(date, clicks);
      return row;
    });
    if (rows.length === 0) {
      const row = document.createElement('tr');
      const cell = document.createElement('td');
      cell.colSpan = 2;
      cell.textContent = 'No clicks yet.';
      row.append(cell);
      rows.push(row);
    }
    $('daily').tBodies[0].replaceChildren(...rows);
  }

  // One dimension's table: a row per value (as text), or a row saying there is none.
  function fillBreakdown(dimension, values) {
    const rows = (values || []).map((v) => {
      const row = document.createElement('tr');
      const value = document.createElement('td');
      const clicks = document.createElement('td');
      value.textContent = String(v.value);
      clicks.textContent = String(v.clicks);
      row.append(value, clicks);
      return row;
    });
    if (rows.length === 0) {
      const row = document.createElement('tr');
      const cell = document.createElement('td');
      cell.colSpan = 2;
      cell.textContent = 'No clicks by people with details yet.';
      row.append(cell);
      rows.push(row);
    }
    $(`by-${dimension}`).tBodies[0].replaceChildren(...rows);
  }

  function render(stats) {
    $('total').textContent = String(stats.total_clicks);
    $('last').textContent = stats.last_click_at ? utcMinutes(stats.last_click_at) : 'never';
    const days = periodDays(stats);
    $('period-clicks').textContent = String(stats.clicks ?? days.reduce((sum, d) => sum + d.clicks, 0));
    $('period-humans').textContent = String(stats.humans ?? 0);
    $('period-bots').textContent = String(stats.bots ?? 0);
    $('period-uniques').textContent = String(stats.uniques ?? 0);
    drawChart(days);
    fillTable(stats.daily);
    for (const dimension of DIMENSIONS) fillBreakdown(dimension, (stats.breakdown || {})[dimension]);
  }

  async function load() {
    const token = sessionStorage.getItem(TOKEN_STORAGE);
    if (!token) {
      askForToken();
      return;
    }
    say('Loading…');
    let response;
    let answer = null;
    try {
      response = await fetch(`/api/v1/links/${encodeURIComponent(code)}/stats`, {
        headers: { Accept: 'application/json', Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
      answer = await response.json().catch(() => null);
    } catch (error) {
      say(`Could not reach kurz: ${error.message}`, true);
      return;
    }
    if (response.status === 401 || response.status === 403) {
      sessionStorage.removeItem(TOKEN_STORAGE);
      askForToken(response.status === 403
        ? ((answer && answer.detail) || 'This token may not read statistics.')
        : 'That is neither the admin token nor an API key. Try again.');
      return;
    }
    if (response.status === 404) {
      say('No such link for this token: a key sees the statistics of its own links only.', true);
      return;
    }
    if (!response.ok || !answer) {
      say((answer && answer.detail) || `kurz answered ${response.status}.`, true);
      return;
    }
    form.hidden = true;
    section.hidden = false;
    render(answer);
    say(`Updated at ${new Date().toLocaleTimeString()}.`);
  }

  form.addEventListener('submit', (event) => {
    event.preventDefault();
    const token = tokenInput.value.trim();
    if (!token) return;
    sessionStorage.setItem(TOKEN_STORAGE, token);
    tokenInput.value = '';
    load();
  });
  $('refresh').addEventListener('click', load);
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_STORAGE);
    say('The token is forgotten in this tab.');
    askForToken();
  });

  load();
})();
