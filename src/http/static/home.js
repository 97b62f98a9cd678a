// The home page: shortens a link through the JSON API programs use (POST /api/v1/links), so
// it has the same limits and rules. When the API asks for an API key (401), a key field
// appears; the key is kept in this tab's sessionStorage only.
'use strict';

(() => {
  const KEY_STORAGE = 'kurz.apiKey';
  const $ = (id) => document.getElementById(id);
  const form = $('shorten');
  const url = $('url');
  const alias = $('alias');
  const expires = $('expires');
  const keyField = $('key-field');
  const keyInput = $('api-key');
  const submit = form.querySelector('button[type="submit"]');
  const status = $('status');
  const result = $('result');
  const shortUrl = $('short-url');
  const copied = $('copied');

  const savedKey = sessionStorage.getItem(KEY_STORAGE);
  if (savedKey) {
    keyInput.value = savedKey;
    keyField.hidden = false;
  }

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function askForKey(message) {
    keyField.hidden = false;
    keyInput.required = true;
    say(message, true);
    keyInput.focus();
  }

  function show(link) {
    const code = encodeURIComponent(link.code);
    shortUrl.value = link.short_url;
    $('short-link').href = link.short_url;
    $('preview-link').href = `/${code}+`;
    $('stats-link').href = `/admin/links/${code}`;
    const qr = $('qr');
    qr.src = `/api/v1/links/${code}/qr?size=400`;
    qr.alt = `QR code of ${link.short_url}`;
    $('qr-png').href = `/api/v1/links/${code}/qr?format=png&size=512`;
    copied.textContent = '';
    result.hidden = false;
    say('Done: your short link is ready below.');
    shortUrl.focus();
    shortUrl.select();
  }

  form.addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = { url: url.value.trim() };
    if (alias.value.trim()) body.alias = alias.value.trim();
    if (expires.value) {
      // datetime-local is the person's local time; the API takes RFC 3339.
      const at = new Date(expires.value);
      if (Number.isNaN(at.getTime())) {
        say('The expiry is not a date and time.', true);
        expires.focus();
        return;
      }
      body.expires_at = at.toISOString();
    }
    const headers = { 'Content-Type': 'application/json', Accept: 'application/json' };
    const key = keyInput.value.trim();
    if (key) headers.Authorization = `Bearer ${key}`;

    submit.disabled = true;
    say('Shortening…');
    let response;
    let answer = null;
    try {
      response = await fetch('/api/v1/links', {
        method: 'POST',
        headers,
        body: JSON.stringify(body),
      });
      answer = await response.json().catch(() => null);
    } catch (error) {
      say(`Could not reach kurz: ${error.message}`, true);
      return;
    } finally {
      submit.disabled = false;
    }

    if (response.status === 401) {
      askForKey('This kurz needs an API key to create links. Enter yours and press Enter.');
      return;
    }
    if (response.status === 403 && key) {
      sessionStorage.removeItem(KEY_STORAGE);
      askForKey('That API key was not accepted. Check it and try again.');
      return;
    }
    if (!response.ok || !answer) {
      say((answer && answer.detail) || `kurz answered ${response.status}.`, true);
      return;
    }
    if (key) sessionStorage.setItem(KEY_STORAGE, key);
    show(answer);
  });

  $('copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText(shortUrl.value);
      copied.textContent = 'Copied to the clipboard.';
    } catch {
      // No clipboard API (not a secure context, or no permission): copy the selection.
      shortUrl.focus();
      shortUrl.select();
      copied.textContent = document.execCommand('copy')
        ? 'Copied to the clipboard.'
        : 'Selected: press Ctrl+C (or ⌘C) to copy.';
    }
  });
})();
