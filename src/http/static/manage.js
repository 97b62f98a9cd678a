// The page where a key holder or the admin manages links: asks for an API key or the admin
// token once (kept in this tab's sessionStorage only), lists the links that token may see
// (GET /api/v1/links: search, tag and state filters, more pages by cursor), and changes them
// with PATCH /api/v1/links/{code}. An edit sends If-Match with the ETag read when its form
// opened, so a change made meanwhile elsewhere answers 412 and is shown instead of overwritten.
'use strict';

(() => {
  const TOKEN_STORAGE = 'kurz.manageToken';
  const PAGE_SIZE = 20;
  const STATES = { active: 'Active', expired: 'Expired', disabled: 'Disabled' };
  const $ = (id) => document.getElementById(id);
  const tokenForm = $('token-form');
  const tokenInput = $('token');
  const status = $('status');
  const section = $('manage');
  const filters = $('filters');
  const tagSelect = $('tag');
  const list = $('links');
  const count = $('count');
  const more = $('more');

  // What the list shows: the filters it was asked with, where the next page starts, and a
  // number that makes answers to an older request (a search typed meanwhile) be ignored.
  let query = {};
  let nextCursor = null;
  let generation = 0;

  function say(text, isError) {
    status.textContent = text;
    status.classList.toggle('error', Boolean(isError));
  }

  function rowSay(item, text, isError) {
    const line = item.querySelector('.row-status');
    line.textContent = text;
    line.classList.toggle('error', Boolean(isError));
  }

  /** An element with properties (`class`, `text`, attributes with a dash, else DOM properties). */
  function el(tag, props, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(props || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (name === 'class') node.className = value;
      else if (name === 'text') node.textContent = value;
      else if (name.includes('-') || ['for', 'role', 'spellcheck'].includes(name)) node.setAttribute(name, value);
      else node[name] = value;
    }
    node.append(...children.filter((c) => c !== null && c !== undefined));
    return node;
  }

  const token = () => sessionStorage.getItem(TOKEN_STORAGE);
  const detail = (r) => (r.answer && r.answer.detail) || `kurz answered ${r.status}.`;
  const utcMinutes = (text) => `${new Date(text).toISOString().slice(0, 16).replace('T', ' ')} UTC`;
  const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;
  const linkPath = (code) => `/api/v1/links/${encodeURIComponent(code)}`;

  /** The value of a datetime-local input for an RFC 3339 time: the person's local time. */
  function localInput(text) {
    const at = new Date(text);
    const two = (n) => String(n).padStart(2, '0');
    return `${at.getFullYear()}-${two(at.getMonth() + 1)}-${two(at.getDate())}`
      + `T${two(at.getHours())}:${two(at.getMinutes())}`;
  }

  /** Calls the JSON API with the kept token; throws only when kurz cannot be reached. */
  async function api(path, { method = 'GET', body, etag } = {}) {
    const headers = { Accept: 'application/json', Authorization: `Bearer ${token()}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (etag) headers['If-Match'] = etag;
    const response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      cache: 'no-store',
    });
    const answer = await response.json().catch(() => null);
    return { status: response.status, ok: response.ok, etag: response.headers.get('ETag'), answer };
  }

  function askForToken(message) {
    section.hidden = true;
    tokenForm.hidden = false;
    if (message) say(message, true);
    tokenInput.focus();
  }

  function tokenRefused() {
    sessionStorage.removeItem(TOKEN_STORAGE);
    list.replaceChildren();
    askForToken('That is neither an API key nor the admin token of this kurz. Try again.');
  }

  function stateOf(link) {
    if (link.disabled) return 'disabled';
    if (link.expires_at && Date.parse(link.expires_at) <= Date.now()) return 'expired';
    return 'active';
  }

  function fact(name, value) {
    return el('div', null, el('dt', { text: name }), el('dd', null, value));
  }

  /** What a row shows of a link, and its buttons. */
  function summary(link) {
    const state = stateOf(link);
    const code = link.code;
    const tags = link.tags.length === 0
      ? 'none'
      : el('ul', { class: 'tags' }, ...link.tags.map((t) => el('li', { text: t })));
    return [
      el(
        'div',
        { class: 'link-head' },
        el('a', { class: 'short', href: link.short_url, text: link.short_url }),
        el('span', { class: `state ${state}`, text: STATES[state] }),
      ),
      link.title ? el('p', { class: 'link-title', text: link.title }) : null,
      el('p', { class: 'link-url', text: link.url }),
      el(
        'dl',
        { class: 'facts' },
        fact('Tags', tags),
        fact('Created', utcMinutes(link.created_at)),
        fact('Expires', link.expires_at ? utcMinutes(link.expires_at) : 'never'),
        link.disabled && link.disabled_reason ? fact('Disabled because', link.disabled_reason) : null,
      ),
      el(
        'p',
        { class: 'actions' },
        el('button', { type: 'button', class: 'edit-open', 'aria-label': `Edit ${code}`, text: 'Edit' }),
        el('button', {
          type: 'button',
          class: 'secondary toggle',
          'aria-label': `${link.disabled ? 'Enable' : 'Disable'} ${code}`,
          text: link.disabled ? 'Enable' : 'Disable',
        }),
        el('a', { href: `/${encodeURIComponent(code)}+`, 'aria-label': `Preview ${code}`, text: 'Preview' }),
        el('a', { href: `/admin/links/${encodeURIComponent(code)}`, 'aria-label': `Clicks of ${code} (admin)`, text: 'Clicks (admin)' }),
      ),
    ].filter(Boolean);
  }

  function row(link) {
    const item = el(
      'li',
      { class: 'card link', 'data-code': link.code },
      el('div', { class: 'summary' }),
      el('p', { class: 'row-status status', role: 'status', 'aria-live': 'polite' }),
    );
    show(item, link, null);
    return item;
  }

  /** Shows `link` in its row; `focus` names the button to put the focus back on, if any. */
  function show(item, link, etag, focus) {
    item.link = link;
    if (etag) item.etag = etag;
    item.querySelector('.summary').replaceChildren(...summary(link));
    if (focus) item.querySelector(`.summary .${focus}`).focus();
  }

  // The edit form's fields as text, so that a link and what the form holds compare field by
  // field: what the person changed is sent, and nothing else.
  function formValues(link) {
    return {
      url: link.url,
      title: link.title || '',
      tags: link.tags.join(', '),
      never: !link.expires_at,
      expires: link.expires_at ? localInput(link.expires_at) : '',
    };
  }

  function readForm(editor) {
    return {
      url: editor.elements.url.value.trim(),
      title: editor.elements.title.value.trim(),
      tags: editor.elements.tags.value.split(/[\s,]+/).filter(Boolean).join(', '),
      never: editor.elements.never.checked,
      expires: editor.elements.expires.value,
    };
  }

  function fillForm(editor, values) {
    for (const [name, value] of Object.entries(values)) {
      const field = editor.elements[name];
      if (field.type === 'checkbox') field.checked = value;
      else field.value = value;
    }
    editor.elements.expires.disabled = editor.elements.never.checked;
  }

  function field(id, name, text, input, hint) {
    return el(
      'div',
      { class: 'field' },
      el('label', { for: id, text }),
      input,
      hint ? el('p', { id: `${id}-hint`, class: 'hint', text: hint }) : null,
    );
  }

  function editForm(code) {
    const id = (name) => `edit-${code}-${name}`;
    const input = (name, props) => el('input', { id: id(name), name, ...props });
    return el(
      'form',
      { class: 'edit', 'aria-label': `Edit ${code}` },
      field(id('url'), 'url', 'Destination', input('url', { type: 'url', required: true, inputMode: 'url' })),
      el(
        'div',
        { class: 'row' },
        field(id('title'), 'title', 'Title', input('title', { type: 'text', maxLength: 200 })),
        field(
          id('tags'),
          'tags',
          'Tags',
          input('tags', { type: 'text', spellcheck: 'false', 'aria-describedby': `${id('tags')}-hint` }),
          'Separated by commas or spaces',
        ),
      ),
      el(
        'div',
        { class: 'row' },
        field(
          id('expires'),
          'expires',
          'Expires',
          input('expires', { type: 'datetime-local', 'aria-describedby': `${id('expires')}-hint` }),
          'In your time zone',
        ),
        el(
          'div',
          { class: 'field check' },
          input('never', { type: 'checkbox' }),
          el('label', { for: id('never'), text: 'Never expires' }),
        ),
      ),
      el(
        'p',
        { class: 'actions' },
        el('button', { type: 'submit', text: 'Save' }),
        el('button', { type: 'button', class: 'secondary cancel', text: 'Cancel' }),
      ),
    );
  }

  /** The link as it is now, with its ETag; `null` (and the reason said) when it cannot be read. */
  async function current(item) {
    let r;
    try {
      r = await api(linkPath(item.dataset.code));
    } catch (error) {
      rowSay(item, `Could not reach kurz: ${error.message}`, true);
      return null;
    }
    if (r.status === 401) {
      tokenRefused();
      return null;
    }
    if (!r.ok || !r.answer) {
      rowSay(item, detail(r), true);
      return null;
    }
    return r;
  }

  async function openEdit(item) {
    const open = item.querySelector('form.edit');
    if (open) {
      open.elements.url.focus();
      return;
    }
    if (item.opening) return;
    item.opening = true;
    rowSay(item, 'Reading its current version…');
    const r = await current(item).finally(() => { item.opening = false; });
    if (!r) return;
    show(item, r.answer, r.etag);
    const editor = editForm(item.dataset.code);
    editor.base = r.answer;
    fillForm(editor, formValues(r.answer));
    item.querySelector('.summary').after(editor);
    item.querySelector('.summary .edit-open').setAttribute('aria-expanded', 'true');
    rowSay(item, '');
    editor.elements.url.focus();
  }

  function closeEdit(item) {
    const editor = item.querySelector('form.edit');
    if (editor) editor.remove();
    const button = item.querySelector('.summary .edit-open');
    button.removeAttribute('aria-expanded');
    button.focus();
  }

  /** The PATCH body of what the form changed from `link`, or a reason it cannot be sent. */
  function changes(editor, link) {
    const was = formValues(link);
    const now = readForm(editor);
    const body = {};
    if (now.url !== was.url) body.url = now.url;
    if (now.title !== was.title) body.title = now.title || null;
    if (now.tags !== was.tags) body.tags = now.tags ? now.tags.split(', ') : [];
    if (now.never) {
      if (!was.never) body.expires_at = null;
    } else {
      const at = new Date(now.expires);
      if (!now.expires || Number.isNaN(at.getTime())) {
        return { problem: 'Choose when the link expires, or tick “Never expires”.', field: 'expires' };
      }
      if (was.never || now.expires !== was.expires) body.expires_at = at.toISOString();
    }
    return { body };
  }

  async function save(item, editor) {
    const { body, problem, field: bad } = changes(editor, item.link);
    if (problem) {
      rowSay(item, problem, true);
      editor.elements[bad].focus();
      return;
    }
    if (Object.keys(body).length === 0) {
      rowSay(item, 'Nothing changed.');
      return;
    }
    const submit = editor.querySelector('button[type="submit"]');
    submit.disabled = true;
    rowSay(item, 'Saving…');
    let r;
    try {
      r = await api(linkPath(item.dataset.code), { method: 'PATCH', body, etag: item.etag });
    } catch (error) {
      rowSay(item, `Could not reach kurz: ${error.message}`, true);
      return;
    } finally {
      submit.disabled = false;
    }
    if (r.status === 401) {
      tokenRefused();
      return;
    }
    if (r.status === 412) {
      await conflict(item, editor);
      return;
    }
    if (!r.ok || !r.answer) {
      rowSay(item, detail(r), true);
      return;
    }
    show(item, r.answer, r.etag);
    closeEdit(item);
    rowSay(item, 'Saved.');
    loadTags();
  }

  // Someone changed the link after the form opened. The row shows it as it is now; fields the
  // person did not touch take the new values, the ones they changed keep theirs, and saving
  // again sends those against the new version.
  async function conflict(item, editor) {
    const r = await current(item);
    if (!r) return;
    const opened = formValues(editor.base);
    const now = formValues(r.answer);
    const typed = readForm(editor);
    const merged = {};
    for (const name of Object.keys(now)) merged[name] = typed[name] === opened[name] ? now[name] : typed[name];
    show(item, r.answer, r.etag);
    editor.base = r.answer;
    fillForm(editor, merged);
    rowSay(
      item,
      'Not saved: this link was changed elsewhere after you opened it. It now shows its current '
        + 'version; your changes are still in the form. Save again to apply them to it, or Cancel.',
      true,
    );
    editor.querySelector('button[type="submit"]').focus();
  }

  async function toggle(item) {
    const enable = item.link.disabled;
    rowSay(item, enable ? 'Enabling…' : 'Disabling…');
    let r;
    try {
      r = await api(linkPath(item.dataset.code), { method: 'PATCH', body: { disabled: !enable } });
    } catch (error) {
      rowSay(item, `Could not reach kurz: ${error.message}`, true);
      return;
    }
    if (r.status === 401) {
      tokenRefused();
      return;
    }
    if (!r.ok || !r.answer) {
      rowSay(item, detail(r), true);
      return;
    }
    show(item, r.answer, r.etag, 'toggle');
    rowSay(item, enable ? 'Enabled: the short link redirects again.' : 'Disabled: the short link answers “gone”.');
  }

  async function loadTags() {
    let r;
    try {
      r = await api('/api/v1/tags');
    } catch {
      return; // the list says why kurz cannot be reached
    }
    if (!r.ok || !r.answer) return;
    const chosen = tagSelect.value;
    const options = r.answer.tags.map((t) => el('option', { value: t.tag, text: `${t.tag} (${t.links})` }));
    if (chosen && !r.answer.tags.some((t) => t.tag === chosen)) {
      options.unshift(el('option', { value: chosen, text: `${chosen} (0)` }));
    }
    tagSelect.replaceChildren(el('option', { value: '', text: 'Any tag' }), ...options);
    tagSelect.value = chosen;
    $('tag-hint').textContent = r.answer.complete ? '' : 'Counted over the newest links only.';
  }

  async function loadLinks(next) {
    if (!token()) {
      askForToken();
      return;
    }
    if (!next) generation += 1;
    const asked = generation;
    const params = new URLSearchParams({ limit: String(PAGE_SIZE) });
    for (const [name, value] of Object.entries(query)) if (value) params.set(name, value);
    if (next) params.set('cursor', nextCursor);
    say(next ? 'Loading more…' : 'Loading…');
    more.disabled = true;
    let r;
    try {
      r = await api(`/api/v1/links?${params}`);
    } catch (error) {
      say(`Could not reach kurz: ${error.message}`, true);
      return;
    } finally {
      more.disabled = false;
    }
    if (asked !== generation) return;
    if (r.status === 401 || r.status === 403) {
      tokenRefused();
      return;
    }
    if (!r.ok || !r.answer) {
      say(detail(r), true);
      return;
    }
    tokenForm.hidden = true;
    section.hidden = false;
    say('');
    const rows = r.answer.links.map(row);
    if (!next) list.replaceChildren();
    list.append(...rows);
    nextCursor = r.answer.next_cursor;
    more.hidden = !nextCursor;
    const shown = list.children.length;
    const filtered = Object.values(query).some(Boolean);
    count.textContent = shown === 0
      ? (filtered ? 'No links match.' : 'No links yet.')
      : `${plural(shown, 'link', 'links')}${filtered ? ' that match' : ''}${nextCursor ? ', more to load' : ''}.`;
    if (next && rows.length > 0) rows[0].querySelector('.short').focus();
  }

  function search() {
    query = {
      q: $('q').value.trim(),
      tag: tagSelect.value,
      state: $('state').value,
    };
    loadLinks(false);
  }

  tokenForm.addEventListener('submit', (event) => {
    event.preventDefault();
    const typed = tokenInput.value.trim();
    if (!typed) return;
    sessionStorage.setItem(TOKEN_STORAGE, typed);
    tokenInput.value = '';
    loadTags();
    search();
  });
  filters.addEventListener('submit', (event) => {
    event.preventDefault();
    search();
  });
  tagSelect.addEventListener('change', search);
  $('state').addEventListener('change', search);
  more.addEventListener('click', () => loadLinks(true));
  $('forget').addEventListener('click', () => {
    sessionStorage.removeItem(TOKEN_STORAGE);
    list.replaceChildren();
    say('The token is forgotten in this tab.');
    askForToken();
  });

  list.addEventListener('click', (event) => {
    const item = event.target.closest('li.link');
    if (!item) return;
    if (event.target.closest('.edit-open')) openEdit(item);
    else if (event.target.closest('.toggle')) toggle(item);
    else if (event.target.closest('.cancel')) {
      closeEdit(item);
      rowSay(item, '');
    }
  });
  list.addEventListener('submit', (event) => {
    event.preventDefault();
    save(event.target.closest('li.link'), event.target);
  });
  list.addEventListener('change', (event) => {
    if (event.target.name === 'never') {
      const expires = event.target.form.elements.expires;
      expires.disabled = event.target.checked;
      if (!event.target.checked) expires.focus();
    }
  });
  list.addEventListener('keydown', (event) => {
    const editor = event.target.closest && event.target.closest('form.edit');
    if (event.key === 'Escape' && editor) {
      const item = editor.closest('li.link');
      closeEdit(item);
      rowSay(item, '');
    }
  });

  if (token()) {
    loadTags();
    search();
  } else {
    askForToken();
  }
})();
