// The parley console: one page, routed by the location's hash, speaking only the public API.
// Everything shown is built with DOM nodes and text, never parsed as HTML.

import { session, get, post, put, patch, del, request, query, download, save, Problem } from './api.js';
import { t, lang, setLang, when } from './i18n.js';

const main = document.getElementById('main');
const top = document.getElementById('top');
const announcer = document.getElementById('status');
let stopPolling = () => {};
// Each navigation gets a number: a view still loading when the next one starts stops at
// its next `alive(seq)` instead of drawing over it.
let routeSeq = 0;
class Stale extends Error {}
function alive(seq) {
  if (seq !== routeSeq) throw new Stale();
}

// ---- small DOM helpers ----------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'value') el.value = v;
    else if (k === 'checked') el.checked = !!v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

let ids = 0;
const uid = (p) => `${p}-${++ids}`;

function announce(text) {
  announcer.textContent = '';
  setTimeout(() => { announcer.textContent = text; }, 50);
}

/// A labelled control with a place for its error; `name` is the API's name of the field.
function field(label, control, { help, name } = {}) {
  control.id ||= uid('f');
  const error = h('p', { class: 'error', id: `${control.id}-error`, hidden: true });
  const described = [error.id];
  let helpEl = null;
  if (help) {
    helpEl = h('p', { class: 'help', id: `${control.id}-help` }, help);
    described.push(helpEl.id);
  }
  control.setAttribute('aria-describedby', described.join(' '));
  return h('div', { class: 'field', 'data-field': name || control.name || '' },
    h('label', { for: control.id }, label), control, helpEl, error);
}

/// A group of controls (radios, checkboxes) under a legend, with a place for its error.
function group(legend, controls, { name } = {}) {
  const error = h('p', { class: 'error', hidden: true, id: uid('g-error') });
  return h('fieldset', { class: 'field', 'data-field': name || '', 'aria-describedby': error.id },
    h('legend', {}, legend), controls, error);
}

function clearErrors(form) {
  for (const e of form.querySelectorAll('.error')) { e.hidden = true; e.textContent = ''; }
  for (const c of form.querySelectorAll('[aria-invalid]')) c.removeAttribute('aria-invalid');
}

/// Shows a refusal beside the field it concerns (by `fieldFor`, else by the field the detail
/// names), or beside the form's buttons.
function showProblem(form, err, fieldFor = () => null) {
  clearErrors(form);
  const detail = err instanceof Problem ? err.detail : String(err.message || err);
  let name = err instanceof Problem ? fieldFor(err.code, detail) : null;
  if (!name) {
    for (const f of form.querySelectorAll('[data-field]')) {
      const n = f.dataset.field;
      if (n && new RegExp(`\\b${n}\\b`).test(detail)) { name = n; break; }
    }
  }
  const target = (name && form.querySelector(`[data-field="${name}"]`)) || form.querySelector('.form-error');
  const slot = target.classList.contains('form-error') ? target : target.querySelector(':scope > .error');
  slot.textContent = detail;
  slot.hidden = false;
  const control = target.querySelector('input, select, textarea');
  if (control && !target.classList.contains('form-error')) {
    control.setAttribute('aria-invalid', 'true');
    control.focus();
  }
  announce(detail);
}

function formError() {
  return h('p', { class: 'error form-error', role: 'alert', hidden: true });
}

function button(text, onclick, attrs = {}) {
  return h('button', { type: 'button', onclick, ...attrs }, text);
}

function table(headers, rows) {
  if (!rows.length) return h('p', { class: 'empty' }, t('noItems'));
  return h('div', { class: 'table-wrap' },
    h('table', {},
      h('thead', {}, h('tr', {}, headers.map((x) => h('th', { scope: 'col' }, x)))),
      h('tbody', {}, rows)));
}

function badge(text, kind) {
  return h('span', { class: `badge ${kind || ''}` }, text);
}

function statusBadge(status) {
  return badge(status, `status-${status}`);
}

function money(m) {
  return m ? `${m.value} ${m.currency}` : '';
}

function page(title, ...content) {
  document.title = `${title} · parley`;
  main.replaceChildren(h('h1', {}, title), ...content);
}

async function guarded(form, work, fieldFor) {
  clearErrors(form);
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  try {
    return await work();
  } catch (err) {
    if (err instanceof Problem && err.status === 401) return signOut();
    showProblem(form, err, fieldFor);
    return undefined;
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
}

// ---- frame and routing ----------------------------------------------------------------------

function renderTop() {
  document.getElementById('skip').textContent = t('skip');
  const here = location.hash.split('/')[1] || 'inbox';
  const link = (name, label) => h('a', { href: `#/${name}`, 'aria-current': here === name ? 'page' : null }, label);
  const links = session.token ? [
    link('inbox', t('inbox')),
    link('cases', t('cases')),
    session.admin && link('unmatched', t('unmatched')),
    session.admin && link('deliveries', t('deliveries')),
    link('webhooks', t('webhooks')),
    session.admin && link('suppressions', t('suppressions')),
    session.admin && link('connectors', t('connectors')),
  ] : [];
  top.replaceChildren(
    h('div', { class: 'bar' },
      h('a', { class: 'brand', href: '#/cases' }, 'parley'),
      h('nav', { 'aria-label': t('cases') }, links),
      h('div', { class: 'tools' },
        button(t('switchLanguage'), async () => {
          setLang(lang() === 'da' ? 'en' : 'da');
          await route();
          document.getElementById('language')?.focus();
        },
          { lang: lang() === 'da' ? 'en' : 'da', id: 'language' }),
        session.token && button(t('signOut'), signOut, { id: 'sign-out' }))));
}

function signOut() {
  session.clear();
  location.hash = '#/';
  route();
}

const routes = [
  [/^#\/cases\/([0-9a-f-]{36})$/, (m, seq) => casePage(seq, m[1])],
  [/^#\/cases$/, (m, seq) => casesPage(seq)],
  [/^#\/inbox$/, (m, seq) => inboxPage(seq)],
  [/^#\/unmatched$/, (m, seq) => unmatchedPage(seq)],
  [/^#\/deliveries(?:\/(\w+))?$/, (m, seq) => deliveriesPage(seq, m[1] || 'failed')],
  [/^#\/webhooks(?:\/(wh_\w+))?$/, (m, seq) => webhooksPage(seq, m[1])],
  [/^#\/suppressions$/, (m, seq) => suppressionsPage(seq)],
  [/^#\/connectors(?:\/(con_\w+))?$/, (m, seq) => connectorsPage(seq, m[1])],
];

async function route() {
  const seq = ++routeSeq;
  stopPolling();
  stopPolling = () => {};
  document.documentElement.lang = lang();
  renderTop();
  if (!session.token) return signInPage();
  const hash = location.hash || '#/inbox';
  for (const [re, view] of routes) {
    const m = hash.match(re);
    if (m) {
      try {
        await view(m, seq);
      } catch (err) {
        if (err instanceof Stale) return;
        if (err instanceof Problem && err.status === 401) return signOut();
        page(t('notFound'), h('p', { class: 'error' }, err.detail || String(err)));
      }
      return;
    }
  }
  location.hash = '#/cases';
}

window.addEventListener('hashchange', () => { route().then(() => main.focus()); });

// ---- sign-in --------------------------------------------------------------------------------

function signInPage() {
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true });
  const form = h('form', { class: 'card narrow' },
    field(t('token'), input, { help: t('tokenHelp'), name: 'token' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('signIn'))));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    session.token = input.value.trim();
    await guarded(form, async () => {
      try {
        await get('/api/cases?limit=1');
      } catch (err) {
        session.clear();
        // Refused here: shown beside the token, not a reason to sign out.
        throw new Problem(400, { ...(err.body || {}), code: 'token', detail: err.detail || String(err) });
      }
      try {
        await get('/api/jobs?state=failed&limit=1');
        session.admin = true;
      } catch {
        session.admin = false;
      }
      // A case worker starts with what awaits them.
      location.hash = '#/inbox';
      await route();
    }, (code) => (code === 'token' || code === 'unauthorized' ? 'token' : null));
  });
  page(t('signIn'), form);
  input.focus();
}

// ---- cases ----------------------------------------------------------------------------------

const STATUSES = ['open', 'payment_plan', 'disputed', 'paid', 'closed'];

async function casesPage(seq) {
  const search = h('input', { type: 'search', name: 'q', value: sessionStorage.getItem('parley.q') || '' });
  const status = h('select', { name: 'status' },
    h('option', { value: '' }, t('any')),
    STATUSES.map((s) => h('option', { value: s }, t(`status.${s}`))));
  status.value = sessionStorage.getItem('parley.status') || '';
  const results = h('div', {});
  const form = h('form', { class: 'filters', role: 'search' },
    field(t('search'), search, { help: t('searchHelp'), name: 'q' }),
    field(t('status'), status, { name: 'status' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('search'))));
  const load = async (cursor) => {
    sessionStorage.setItem('parley.q', search.value);
    sessionStorage.setItem('parley.status', status.value);
    const list = await get(`/api/cases${query({ q: search.value.trim(), status: status.value, limit: 50, cursor })}`);
    alive(seq);
    if (!cursor) announce(t('casesFound', { n: list.totalCount }));
    const rows = list.cases.map((c) => h('tr', {},
      h('td', {}, h('a', { href: `#/cases/${c.caseId}` }, c.caseNumber)),
      h('td', {}, c.debtor.name),
      h('td', {}, t(`status.${c.status}`)),
      h('td', { class: 'num' }, money(c.amountOutstanding))));
    if (!cursor) results.replaceChildren();
    results.querySelector('.more')?.remove();
    const existing = results.querySelector('tbody');
    if (existing) existing.append(...rows);
    else results.append(list.cases.length
      ? table([t('caseNumber'), t('debtor'), t('status'), t('outstanding')], rows)
      : h('p', { class: 'empty' }, t('noneFound')));
    if (list.nextCursor) results.append(button(t('more'), () => load(list.nextCursor), { class: 'more' }));
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); guarded(form, () => load()); });
  page(t('cases'), form, results);
  await load();
}

// ---- one case -------------------------------------------------------------------------------

async function casePage(seq, caseId) {
  const base = `/api/cases/${caseId}`;
  const state = { caseId, base, selected: null, bodies: {}, open: new Set(), signature: '' };
  const [kase, templates] = await Promise.all([get(base), get('/api/message-templates')]);
  alive(seq);
  state.case = kase;
  state.templates = templates.templates.filter((x) => !x.templateId.startsWith('system-'));

  const conversation = h('section', { 'aria-labelledby': 'h-conversation', class: 'card wide' });
  const compose = h('section', { 'aria-labelledby': 'h-compose', class: 'card' });
  const documents = h('section', { 'aria-labelledby': 'h-documents', class: 'card' });
  const notes = h('section', { 'aria-labelledby': 'h-notes', class: 'card' });
  const money_ = h('section', { 'aria-labelledby': 'h-payments', class: 'card' });
  const prefs = h('section', { 'aria-labelledby': 'h-preferences', class: 'card' });
  const summary = h('div', { class: 'summary' });

  page(`${kase.caseNumber} · ${kase.debtor.name}`, summary,
    h('div', { class: 'grid' }, conversation, compose, documents, notes, money_, prefs));

  const refreshCase = async () => {
    state.case = await get(base);
    renderSummary(summary, state, refreshCase);
  };
  state.refreshCase = refreshCase;
  renderSummary(summary, state, refreshCase);
  await Promise.all([
    refreshConversation(conversation, state),
    renderDocuments(documents, state, () => renderCompose(compose, state, conversation)),
    renderNotes(notes, state),
    renderMoney(money_, state, refreshCase),
    renderPreferences(prefs, state),
  ]);
  alive(seq);
  renderCompose(compose, state, conversation);

  // New messages and status changes appear without reloading.
  const timer = setInterval(async () => {
    try {
      const before = state.signature;
      const inbound = state.messages.filter((m) => m.direction === 'inbound').length;
      await refreshConversation(conversation, state, true);
      if (state.signature !== before
        && state.messages.filter((m) => m.direction === 'inbound').length > inbound) {
        announce(t('newMail'));
      }
    } catch (err) {
      if (err instanceof Problem && err.status === 401) signOut();
      // Otherwise the next round tries again.
    }
  }, 3000);
  stopPolling = () => clearInterval(timer);
}

function renderSummary(el, state, refresh) {
  const c = state.case;
  const select = h('select', { name: 'status' }, STATUSES.map((s) => h('option', { value: s }, t(`status.${s}`))));
  select.value = c.status;
  const form = h('form', { class: 'inline' },
    field(t('status'), select, { name: 'status' }),
    formError(),
    h('button', { type: 'submit' }, t('changeStatus')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      await patch(state.base, { status: select.value });
      await refresh();
      announce(t('saved'));
    });
  });
  // Collection held by a reply awaiting review: said first, with the way to it.
  const hold = c.hold ? h('p', { class: 'hold', role: 'status' },
    t('heldBecause', { intent: t(`intent.${c.hold.intent}`), since: when(c.hold.since) }), ' ',
    h('a', { href: '#/inbox' }, t('reviewInInbox'))) : null;
  el.replaceChildren(
    hold,
    h('dl', { class: 'facts' },
      h('dt', {}, t('debtor')), h('dd', {}, [c.debtor.name, c.debtor.email, c.debtor.phone].filter(Boolean).join(' · ')),
      h('dt', {}, t('amount')), h('dd', {}, money(c.amount)),
      h('dt', {}, t('paid')), h('dd', {}, money(c.amountPaid)),
      h('dt', {}, t('outstanding')), h('dd', {}, money(c.amountOutstanding))),
    form);
}

async function refreshConversation(el, state, quiet = false) {
  const [threads, list] = await Promise.all([
    get(`${state.base}/threads`),
    get(`${state.base}/messages?limit=200`),
  ]);
  const signature = list.messages.map((m) => `${m.messageId}:${m.status}`).join(',');
  if (quiet && signature === state.signature) return;
  state.signature = signature;
  state.threads = threads.threads.slice().sort((a, b) => (b.lastMessageAt || '').localeCompare(a.lastMessageAt || ''));
  state.messages = list.messages;
  if (!state.selected || !state.threads.some((x) => x.threadId === state.selected)) {
    state.selected = state.threads.find((x) => !isSystemThread(state, x.threadId))?.threadId || state.threads[0]?.threadId || null;
  }
  if (state.selected) await loadBodies(state, state.selected);
  renderConversation(el, state);
}

function isSystemThread(state, threadId) {
  const ms = state.messages.filter((m) => m.threadId === threadId);
  return ms.length > 0 && ms.every((m) => m.messageType === 'system');
}

async function loadBodies(state, threadId) {
  const thread = await get(`/api/threads/${threadId}/messages`);
  for (const m of thread.messages) state.bodies[m.messageId] = m.body;
}

function renderConversation(el, state) {
  // A refresh keeps the keyboard where it was.
  const focused = el.contains(document.activeElement) ? document.activeElement.dataset.key : null;
  const heading = h('h2', { id: 'h-conversation' }, t('conversation'));
  if (!state.threads.length) {
    el.replaceChildren(heading, h('p', { class: 'empty' }, t('noThreads')));
    return;
  }
  // The case's messages as files: MBOX, or a ZIP of .eml files with a SHA-256 manifest.
  const exports = h('div', { class: 'actions export' },
    ['mbox', 'eml'].map((format) => button(t(`export.${format}`), () => save(
      `${state.base}/messages/export?format=${format}`,
      `messages-${state.base.split('/').pop()}.${format === 'eml' ? 'zip' : 'mbox'}`), { 'data-export': format })));
  const list = h('ul', { class: 'threads', 'aria-label': t('threads') },
    state.threads.map((th) => h('li', {},
      h('button', {
        type: 'button',
        class: 'thread',
        'data-key': th.threadId,
        'aria-pressed': th.threadId === state.selected ? 'true' : 'false',
        onclick: async () => {
          state.selected = th.threadId;
          await loadBodies(state, th.threadId);
          renderConversation(el, state);
          el.querySelector('.thread[aria-pressed="true"]')?.focus();
        },
      },
      isSystemThread(state, th.threadId) ? badge(t('system'), 'system') : null,
      h('span', { class: 'subject' }, th.subject || '—'),
      h('span', { class: 'count' }, t(th.messageCount === 1 ? 'oneMessage' : 'manyMessages', { n: th.messageCount }))))));
  const messages = state.messages
    .filter((m) => m.threadId === state.selected)
    .sort((a, b) => a.createdAt.localeCompare(b.createdAt));
  const panel = h('div', { class: 'messages' }, messages.map((m) => renderMessage(m, state)));
  el.replaceChildren(heading, exports, h('div', { class: 'conversation' }, list, panel));
  if (focused) [...el.querySelectorAll('[data-key]')].find((x) => x.dataset.key === focused)?.focus();
}

function renderMessage(m, state) {
  const kind = m.messageType === 'system' ? 'system' : m.direction;
  const timeline = h('div', { class: 'timeline', hidden: !state.open.has(m.messageId) });
  const toggle = button(state.open.has(m.messageId) ? t('hideTimeline') : t('timeline'), async () => {
    if (state.open.has(m.messageId)) {
      state.open.delete(m.messageId);
      timeline.hidden = true;
      toggle.textContent = t('timeline');
      toggle.setAttribute('aria-expanded', 'false');
      return;
    }
    state.open.add(m.messageId);
    await fillTimeline(timeline, m.messageId);
    timeline.hidden = false;
    toggle.textContent = t('hideTimeline');
    toggle.setAttribute('aria-expanded', 'true');
  }, { class: 'link', 'data-key': m.messageId, 'aria-expanded': state.open.has(m.messageId) ? 'true' : 'false' });
  if (state.open.has(m.messageId)) fillTimeline(timeline, m.messageId);
  const body = state.bodies[m.messageId];
  return h('article', { class: `message ${kind}`, 'data-message-id': m.messageId },
    h('header', {},
      badge(t(kind === 'system' ? 'system' : m.direction), kind),
      m.senderVerified === false ? badge(t('awaitingReview'), 'review') : null,
      m.carriedBy ? badge(t('carriedBy', { mailbox: t(`connector.${m.carriedBy.type}`) }), 'carried') : null,
      // Where the CRMs logged it: a link to the activity where the CRM gives one.
      ...(m.crmActivities || []).map((a) => {
        const label = t(`crm.${a.status}`, { crm: t(`connector.${a.type}`) });
        return a.url
          ? h('a', { class: `badge crm ${a.status}`, href: a.url, target: '_blank', rel: 'noopener' }, label)
          : badge(label, `crm ${a.status}`);
      }),
      // What the reply means, and the debtor's words that decided it.
      m.understanding ? h('span', {
        class: `badge intent ${m.understanding.intent}`,
        title: (m.understanding.evidence || []).join(' · '),
      }, t(`intent.${m.understanding.intent}`)) : null,
      m.understanding?.review === 'pending' ? badge(t('holdsCollection'), 'hold') : null,
      h('span', { class: 'who' }, `${m.from} → ${(m.to || []).join(', ') || '—'}`),
      h('time', { datetime: m.createdAt }, when(m.createdAt)),
      m.direction === 'outbound' ? statusBadge(m.status) : null),
    m.subject ? h('p', { class: 'msg-subject' }, m.subject) : null,
    senderChecks(m),
    body ? h('p', { class: 'body' }, highlighted(body, m.understanding?.evidence)) : null,
    m.understanding?.correction ? h('p', { class: 'help correction' },
      t('corrected', { from: t(`intent.${m.understanding.correction.from}`), by: m.understanding.correction.by })) : null,
    m.understanding?.review === 'pending' ? understandingActions(m, async () => {
      const el = document.querySelector('[aria-labelledby="h-conversation"]');
      await state.refreshCase?.();
      if (el) await refreshConversation(el, state);
    }) : null,
    m.scheduledFor && m.status === 'queued' ? h('p', { class: 'help' }, `${t('scheduledFor')}: ${when(m.scheduledFor)}`) : null,
    m.failureReason ? h('p', { class: 'error' }, m.failureReason) : null,
    m.senderVerified === false ? reviewControls(m, state) : null,
    m.direction === 'outbound' ? toggle : null,
    timeline);
}

/// What checking a received mail's sender and content found: SPF, DKIM, DMARC, and the spam
/// filter's score.
function senderChecks(m) {
  const a = m.authentication;
  const s = m.spam;
  if (!a && !s) return null;
  const parts = [];
  if (a) {
    parts.push(`SPF ${a.spf} · DKIM ${a.dkim} · DMARC ${a.dmarc}` + (a.arc !== 'none' ? ` · ARC ${a.arc}` : ''));
    parts.push(t(a.fromVerified ? 'fromVerified' : 'fromUnverified'));
  }
  if (s) parts.push(s.checked ? `${t('spam')} ${s.score}${s.marked ? ' ⚠' : ''}` : t('spamUnchecked'));
  return h('p', { class: 'help sender-checks', 'data-from-verified': a ? String(a.fromVerified) : '' },
    `${t('senderCheck')}: ${parts.join(' — ')}`);
}

/// Mail held for review (only a case number linked it, from a stranger, a forged domain or
/// spam): accept or reject.
function reviewControls(m, state) {
  const error = h('p', { class: 'error form-error', role: 'alert', hidden: true });
  const act = (what) => async () => {
    try {
      await post(`/api/messages/${m.messageId}/${what}`, {});
      announce(t(what === 'accept' ? 'accepted' : 'rejected'));
      const el = document.querySelector('[aria-labelledby="h-conversation"]');
      if (el) await refreshConversation(el, state);
    } catch (err) {
      error.textContent = err instanceof Problem ? err.detail : String(err.message || err);
      error.hidden = false;
      announce(error.textContent);
    }
  };
  return h('div', { class: 'review', role: 'group', 'aria-label': t('awaitingReview') },
    h('p', { class: 'help' }, t('awaitingReviewHelp')),
    button(t('accept'), act('accept'), { 'data-review': 'accept' }),
    button(t('reject'), act('reject'), { 'data-review': 'reject' }),
    error);
}

/// `text` with the debtor's deciding words (`evidence`, quoted as written) marked.
function highlighted(text, evidence) {
  const lower = text.toLowerCase();
  const spans = (evidence || [])
    .filter(Boolean)
    .map((w) => [lower.indexOf(w.toLowerCase()), w.length])
    .filter(([at]) => at >= 0)
    .map(([at, n]) => [at, at + n])
    .sort((a, b) => a[0] - b[0]);
  const out = [];
  let at = 0;
  for (const [start, end] of spans) {
    if (start < at) continue;
    out.push(text.slice(at, start), h('mark', {}, text.slice(start, end)));
    at = end;
  }
  out.push(text.slice(at));
  return out;
}

const INTENTS = ['dispute', 'payment_promise', 'payment_plan_request', 'paid_already', 'wrong_person',
  'cease_contact', 'question', 'other'];

/// What a case worker does with a reply that holds its case: confirm it (the case disputed,
/// or the debtor's request not to be contacted recorded) or read it otherwise.
function understandingActions(m, after) {
  const intent = h('select', { name: 'intent' }, INTENTS.map((i) => h('option', { value: i }, t(`intent.${i}`))));
  intent.value = m.understanding.intent;
  const form = h('form', { class: 'inline understanding', 'data-message-id': m.messageId },
    h('p', { class: 'help' }, t('holdHelp')),
    button(t('confirmDispute'), () => guarded(form, async () => {
      await patch(`/api/cases/${m.caseId}`, { status: 'disputed' });
      announce(t('confirmed'));
      await after();
    }), { 'data-action': 'dispute' }),
    button(t('confirmStop'), () => guarded(form, async () => {
      await put(`/api/cases/${m.caseId}/communication-preferences`, { doNotContact: true, reason: t('stopReason') });
      announce(t('confirmed'));
      await after();
    }), { 'data-action': 'stop' }),
    field(t('readAs'), intent, { name: 'intent' }),
    formError(),
    h('button', { type: 'submit', 'data-action': 'correct' }, t('correct')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      await post(`/api/messages/${m.messageId}/understanding`, { intent: intent.value });
      announce(t('correctedNow'));
      await after();
    }, () => 'intent');
  });
  return form;
}

async function fillTimeline(el, messageId) {
  const report = await get(`/api/messages/${messageId}/delivery-report`);
  el.replaceChildren(
    h('ol', {}, report.events.map((e) => h('li', {}, h('span', { class: 'event' }, e.event), ' ',
      h('time', { datetime: e.timestamp }, when(e.timestamp))))),
    report.policy ? h('p', { class: 'help' }, `${t('policy')}: ${report.policy.decision} (${report.policy.rule})`) : null);
}

// Compose: a template's variables are filled from the case; the server renders the preview.
function renderCompose(el, state, focusName) {
  const c = state.case;
  // What was typed survives a change of channel or template, or a new document.
  const old = el.querySelector('form');
  if (old) {
    state.draft = {
      channel: el.dataset.drafted,
      to: old.querySelector('[name=to]')?.value,
      subject: old.querySelector('[name=subject]')?.value,
      body: old.querySelector('[name=body]')?.value,
      vars: Object.fromEntries([...old.querySelectorAll('[data-variable]')].map((i) => [i.dataset.variable, i.value])),
    };
  }
  const draft = state.draft || { vars: {} };
  const channelName = 'channel';
  let channel = el.dataset.channel || (c.debtor.email ? 'email' : 'sms');
  const radios = ['email', 'sms'].map((ch) => {
    const input = h('input', { type: 'radio', name: channelName, value: ch, id: uid('ch'), checked: ch === channel, 'data-focus': `channel-${ch}` });
    input.addEventListener('change', () => { el.dataset.channel = ch; renderCompose(el, state, `channel-${ch}`); });
    return h('span', { class: 'choice' }, input, h('label', { for: input.id }, t(ch)));
  });
  const templates = state.templates.filter((x) => x.type === channel);
  const template = h('select', { name: 'templateId', 'data-focus': 'template' },
    h('option', { value: '' }, t('noTemplate')),
    templates.map((x) => h('option', { value: x.templateId }, x.name)));
  template.value = el.dataset.template && templates.some((x) => x.templateId === el.dataset.template) ? el.dataset.template : '';
  template.addEventListener('change', () => { el.dataset.template = template.value; renderCompose(el, state, 'template'); });
  const chosen = templates.find((x) => x.templateId === template.value);
  const known = {
    debtorName: c.debtor.name,
    caseNumber: c.caseNumber,
    amount: money(c.amountOutstanding),
    invoiceNumber: c.invoiceNumber || '',
    dueDate: c.dueDate || '',
    deadline: state.nextDeadline || '',
  };
  const variables = chosen ? chosen.variables.map((v) =>
    field(v, h('input', { name: `var-${v}`, 'data-variable': v, value: draft.vars[v] || known[v] || '' }))) : [];
  const sameChannel = draft.channel === channel;
  const to = h('input', {
    name: 'to',
    value: sameChannel && draft.to !== undefined ? draft.to : (channel === 'email' ? (c.debtor.email || '') : (c.debtor.phone || '')),
  });
  const subject = h('input', { name: 'subject', value: draft.subject || '' });
  const body = h('textarea', { name: 'body', rows: 6 });
  body.value = draft.body || '';
  el.dataset.drafted = channel;
  const docs = state.documents || [];
  const attachments = channel === 'email'
    ? group(t('attachments'), docs.length
      ? docs.map((d) => {
        const box = h('input', { type: 'checkbox', value: d.documentId, id: uid('att') });
        return h('span', { class: 'choice' }, box, h('label', { for: box.id }, d.fileName));
      })
      : h('p', { class: 'help' }, t('noDocuments')), { name: 'attachments' })
    : null;
  const preview = h('div', { class: 'preview', 'aria-live': 'polite' });
  const form = h('form', { novalidate: true },
    group(t('channel'), radios, { name: 'messageType' }),
    field(t('template'), template, { name: 'templateId' }),
    chosen ? group(t('variables'), variables, { name: 'variables' }) : null,
    field(t('to'), to, { name: 'to' }),
    channel === 'email' ? field(t('subject'), subject, { name: 'subject' }) : null,
    field(t('body'), body, { name: 'body' }),
    attachments,
    formError(),
    h('div', { class: 'actions' },
      button(t('preview'), () => guarded(form, async () => showPreview(preview, await post(`${state.base}/messages/preview`, request_())), composeField), { id: 'preview' }),
      h('button', { type: 'submit', id: 'send' }, t('send'))),
    preview);
  const request_ = () => {
    const r = { messageType: channel };
    if (to.value.trim()) r.to = to.value.trim();
    if (chosen) {
      r.templateId = chosen.templateId;
      r.variables = Object.fromEntries([...form.querySelectorAll('[data-variable]')]
        .filter((i) => i.value.trim()).map((i) => [i.dataset.variable, i.value.trim()]));
    }
    if (channel === 'email' && subject.value.trim()) r.subject = subject.value.trim();
    if (body.value.trim()) r.body = body.value;
    const picked = [...form.querySelectorAll('input[type=checkbox]:checked')].map((b) => b.value);
    if (picked.length) r.attachments = picked;
    return r;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      const sent = await post(`${state.base}/messages`, request_());
      body.value = '';
      subject.value = '';
      state.draft = null;
      preview.replaceChildren(h('p', { class: 'ok' }, t('queued', { id: sent.messageId })));
      announce(t('queued', { id: sent.messageId }));
      state.selected = sent.threadId;
      await refreshConversation(document.querySelector('[aria-labelledby="h-conversation"]'), state);
    }, composeField);
  });
  el.replaceChildren(h('h2', { id: 'h-compose' }, t('compose')), form);
  if (focusName) form.querySelector(`[data-focus="${focusName}"]`)?.focus();
}

function composeField(code, detail) {
  switch (code) {
    case 'template_variables_missing': return 'variables';
    case 'invalid_recipient':
    case 'recipient_suppressed':
    case 'do_not_contact':
    case 'channel_not_allowed': return 'to';
    case 'invalid_attachment': return 'attachments';
    default:
      if (/\bsubject\b/.test(detail)) return 'subject';
      if (/\bbody\b/.test(detail)) return 'body';
      if (/\btemplate/.test(detail)) return 'templateId';
      return null;
  }
}

function showPreview(el, p) {
  el.replaceChildren(
    h('h3', {}, t('previewTitle')),
    h('dl', { class: 'facts' },
      h('dt', {}, t('to')), h('dd', {}, p.to.join(', ')),
      p.subject ? [h('dt', {}, t('subject')), h('dd', { class: 'preview-subject' }, p.subject)] : null,
      p.scheduledFor ? [h('dt', {}, t('scheduledFor')), h('dd', {}, when(p.scheduledFor))] : null,
      p.policy ? [h('dt', {}, t('policy')), h('dd', {}, `${p.policy.decision} (${p.policy.rule})`)] : null),
    h('p', { class: 'body preview-body' }, p.body));
}

async function renderDocuments(el, state, onChange) {
  const list = await get(`${state.base}/documents`);
  state.documents = list.documents.filter((d) => d.latest !== false);
  const file = h('input', { type: 'file', name: 'file', required: true });
  const type = h('select', { name: 'documentType' },
    ['invoice', 'contract', 'correspondence', 'payment_proof', 'settlement', 'legal', 'other']
      .map((x) => h('option', { value: x }, x)));
  const form = h('form', {},
    field(t('file'), file, { name: 'file' }),
    field(t('documentType'), type, { name: 'documentType' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('upload'))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      if (!file.files.length) throw new Problem(422, { detail: 'file', code: 'invalid_body' });
      const data = new FormData();
      data.append('documentType', type.value);
      data.append('file', file.files[0]);
      const doc = await request('POST', `${state.base}/documents`, undefined, { form: data });
      announce(t('uploaded', { name: doc.fileName }));
      await renderDocuments(el, state, onChange);
      onChange();
    });
  });
  el.replaceChildren(h('h2', { id: 'h-documents' }, t('documents')),
    table([t('file'), t('documentType'), t('created'), t('mirrored'), ''], state.documents.map((d) => h('tr', {},
      h('td', {}, d.fileName),
      h('td', {}, d.documentType),
      h('td', {}, when(d.uploadedAt)),
      h('td', { class: 'mirrors' }, (d.mirrors || []).map((m) => m.url
        ? h('a', { href: m.url, target: '_blank', rel: 'noopener noreferrer' }, t(`connector.${m.type}`))
        : h('span', {}, t(`connector.${m.type}`)))),
      h('td', {}, button(t('download'), () => download(d.documentId, d.fileName), { 'aria-label': `${t('download')} ${d.fileName}` }))))),
    form);
}

async function renderNotes(el, state) {
  const list = await get(`${state.base}/notes?limit=50`);
  const note = h('textarea', { name: 'note', rows: 3 });
  const category = h('input', { name: 'category' });
  const form = h('form', {},
    field(t('note'), note, { name: 'note' }),
    field(t('category'), category, { name: 'category' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('addNote'))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      const body = { note: note.value };
      if (category.value.trim()) body.category = category.value.trim();
      await post(`${state.base}/notes`, body);
      await renderNotes(el, state);
      announce(t('saved'));
    });
  });
  el.replaceChildren(h('h2', { id: 'h-notes' }, t('notes')),
    h('ul', { class: 'notes' }, list.notes.map((n) => h('li', {},
      h('p', { class: 'body' }, n.note),
      h('p', { class: 'help' }, [n.category, n.createdBy, when(n.createdAt)].filter(Boolean).join(' · '))))),
    form);
}

async function renderMoney(el, state, refreshCase) {
  const [payments, deadlines] = await Promise.all([
    get(`${state.base}/payments`), get(`${state.base}/deadlines`)]);
  const upcoming = deadlines.deadlines.map((d) => d.dueAt).filter((d) => d > new Date().toISOString()).sort();
  state.nextDeadline = upcoming[0] ? upcoming[0].slice(0, 10) : '';
  const amount = h('input', { name: 'amount', inputmode: 'decimal' });
  const pay = h('form', {},
    field(`${t('amount')} (${state.case.amount.currency})`, amount, { name: 'amount' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('recordPayment'))));
  pay.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(pay, async () => {
      await post(`${state.base}/payments`, { amount: { value: amount.value.trim(), currency: state.case.amount.currency } });
      await Promise.all([renderMoney(el, state, refreshCase), refreshCase()]);
      announce(t('saved'));
    });
  });
  const title = h('input', { name: 'title' });
  const due = h('input', { name: 'dueAt', type: 'datetime-local' });
  const deadline = h('form', {},
    field(t('title'), title, { name: 'title' }),
    field(t('dueAt'), due, { name: 'dueAt' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('addDeadline'))));
  deadline.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(deadline, async () => {
      const at = due.value ? new Date(due.value).toISOString() : '';
      await post(`${state.base}/deadlines`, { title: title.value, dueAt: at });
      await renderMoney(el, state, refreshCase);
      announce(t('saved'));
    });
  });
  el.replaceChildren(
    h('h2', { id: 'h-payments' }, t('payments')),
    table([t('amount'), t('paidAt')], payments.payments.map((p) => h('tr', {},
      h('td', { class: 'num' }, money(p.amount)), h('td', {}, when(p.paidAt))))),
    pay,
    h('h2', {}, t('deadlines')),
    table([t('title'), t('dueAt')], deadlines.deadlines.map((d) => h('tr', {},
      h('td', {}, d.title), h('td', {}, when(d.dueAt))))),
    deadline);
}

async function renderPreferences(el, state) {
  const p = await get(`${state.base}/communication-preferences`);
  const box = (name, value) => {
    const input = h('input', { type: 'checkbox', name, id: uid('pref'), checked: value });
    return h('span', { class: 'choice' }, input, h('label', { for: input.id }, t(name)));
  };
  const preferred = h('select', { name: 'preferredChannel' },
    h('option', { value: '' }, '—'), h('option', { value: 'email' }, t('email')), h('option', { value: 'sms' }, t('sms')));
  preferred.value = p.preferredChannel || '';
  const form = h('form', {},
    group(t('preferences'), [box('allowEmail', p.allowEmail), box('allowSms', p.allowSms), box('doNotContact', p.doNotContact)], { name: 'allowEmail' }),
    field(t('preferredChannel'), preferred, { name: 'preferredChannel' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('save'))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      const v = (n) => form.querySelector(`[name=${n}]`).checked;
      await put(`${state.base}/communication-preferences`, {
        allowEmail: v('allowEmail'), allowSms: v('allowSms'), doNotContact: v('doNotContact'),
        preferredChannel: preferred.value || null,
      });
      await renderPreferences(el, state);
      announce(t('saved'));
    });
  });
  const lift = h('form', {}, formError());
  el.replaceChildren(h('h2', { id: 'h-preferences' }, t('preferences')), form,
    h('h3', {}, t('suppressions')),
    table([t('address'), t('reason'), ''], (p.suppressions || []).map((s) => h('tr', {},
      h('td', {}, s.address || s.channel), h('td', {}, s.reason),
      h('td', {}, button(t('lift'), () => guarded(lift, async () => {
        await del(`/api/suppressions/${s.suppressionId}`);
        await renderPreferences(el, state);
        announce(t('lifted'));
      })))))),
    lift);
}

// ---- operators ------------------------------------------------------------------------------

/// The case with exactly this number (the search also finds numbers that start with it).
async function caseByNumber(number) {
  let cursor;
  for (let i = 0; i < 10; i++) {
    const found = await get(`/api/cases${query({ q: number, limit: 200, cursor })}`);
    const hit = found.cases.find((c) => c.caseNumber.toLowerCase() === number.toLowerCase());
    if (hit) return hit;
    if (!found.nextCursor) return null;
    cursor = found.nextCursor;
  }
  return null;
}

// ---- inbox ----------------------------------------------------------------------------------

/// What awaits a case worker, oldest first: replies that hold their case until reviewed, and
/// replies nobody has answered. Each with what it means and the words that decided it.
async function inboxPage(seq) {
  const intent = h('select', { name: 'intent' }, h('option', { value: '' }, t('any')),
    INTENTS.map((i) => h('option', { value: i }, t(`intent.${i}`))));
  const awaiting = h('select', { name: 'awaiting' }, h('option', { value: '' }, t('any')),
    ['review', 'answer'].map((a) => h('option', { value: a }, t(`awaiting.${a}`))));
  intent.value = sessionStorage.getItem('parley.intent') || '';
  awaiting.value = sessionStorage.getItem('parley.awaiting') || '';
  const count = h('p', { class: 'count', 'aria-live': 'polite' });
  const results = h('div', { class: 'inbox' });
  const filters = h('form', { class: 'filters', role: 'search' },
    field(t('intent'), intent, { name: 'intent' }),
    field(t('awaiting'), awaiting, { name: 'awaiting' }),
    formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('filter'))));
  const entry = (e) => {
    const m = e.message;
    const u = m.understanding;
    const done = h('form', { class: 'inline' }, formError(),
      h('a', { href: `#/cases/${m.caseId}`, class: 'button-link' }, t('openCase')),
      e.awaiting === 'answer' ? button(t('markDone'), () => guarded(done, async () => {
        await post(`/api/inbox/${m.messageId}/done`, {});
        announce(t('markedDone'));
        await load();
      }), { 'data-action': 'done' }) : null);
    return h('article', { class: `message inbound inbox-entry ${e.awaiting}`, 'data-message-id': m.messageId },
      h('header', {},
        h('a', { href: `#/cases/${m.caseId}`, class: 'case-link' }, e.caseNumber),
        u ? h('span', { class: `badge intent ${u.intent}`, title: (u.evidence || []).join(' · ') }, t(`intent.${u.intent}`)) : null,
        badge(t(`awaiting.${e.awaiting}`), e.awaiting === 'review' ? 'hold' : 'answer'),
        h('span', { class: 'who' }, m.from),
        h('time', { datetime: m.receivedAt || m.createdAt }, when(m.receivedAt || m.createdAt))),
      m.subject ? h('p', { class: 'msg-subject' }, m.subject) : null,
      m.body ? h('p', { class: 'body' }, highlighted(m.body, u?.evidence)) : null,
      u?.correction ? h('p', { class: 'help correction' },
        t('corrected', { from: t(`intent.${u.correction.from}`), by: u.correction.by })) : null,
      e.awaiting === 'review' ? understandingActions(m, () => load()) : null,
      done);
  };
  const load = async (cursor) => {
    sessionStorage.setItem('parley.intent', intent.value);
    sessionStorage.setItem('parley.awaiting', awaiting.value);
    const list = await get(`/api/inbox${query({ intent: intent.value, awaiting: awaiting.value, limit: 50, cursor })}`);
    alive(seq);
    count.textContent = t('inboxCount', { n: list.totalCount });
    if (!cursor) results.replaceChildren();
    results.querySelector('.more')?.remove();
    if (!list.messages.length && !cursor) results.append(h('p', { class: 'empty' }, t('inboxEmpty')));
    results.append(...list.messages.map(entry));
    if (list.nextCursor) results.append(button(t('more'), () => load(list.nextCursor), { class: 'more' }));
  };
  filters.addEventListener('submit', (e) => { e.preventDefault(); guarded(filters, () => load()); });
  page(t('inbox'), filters, count, results);
  await load();
}

async function unmatchedPage(seq) {
  const sender = h('input', { name: 'sender', type: 'search', size: 28 });
  sender.value = sessionStorage.getItem('parley.sender') || '';
  const count = h('p', { class: 'count', 'aria-live': 'polite' });
  const results = h('div', {});
  const filters = h('form', { class: 'filters', role: 'search' },
    field(t('sender'), sender, { help: t('senderHelp'), name: 'sender' }),
    formError(),
    h('div', { class: 'actions' },
      h('button', { type: 'submit' }, t('filter')),
      h('button', { type: 'button', class: 'dismiss-all' }, t('dismissAll'))));
  const row = (m) => {
    const number = h('input', { name: 'caseNumber', size: 16 });
    const form = h('form', { class: 'inline' },
      field(t('assignTo'), number, { name: 'caseNumber' }),
      formError(),
      h('button', { type: 'submit' }, t('assign')),
      h('button', { type: 'button', class: 'dismiss' }, t('dismiss')));
    form.addEventListener('submit', (e) => {
      e.preventDefault();
      guarded(form, async () => {
        const kase = await caseByNumber(number.value.trim());
        if (!kase) throw new Problem(404, { detail: t('caseNotFound'), code: 'case' });
        await post(`/api/inbound/unmatched/${m.inboundId}/assign`, { caseId: kase.caseId });
        announce(t('assigned', { n: kase.caseNumber }));
        await load();
      }, () => 'caseNumber');
    });
    form.querySelector('.dismiss').addEventListener('click', () => guarded(form, async () => {
      await post(`/api/inbound/unmatched/${m.inboundId}/dismiss`, {});
      announce(t('dismissed', { n: 1 }));
      await load();
    }));
    // A sender nothing proves, or mail the filter marked: said beside the address.
    const flags = [
      m.authentication && !m.authentication.fromVerified ? t('fromUnverified') : null,
      m.spam && m.spam.marked ? `${t('spam')} ${m.spam.score}` : null,
    ].filter(Boolean);
    return h('tr', {},
      h('td', {}, m.from || '', flags.length ? h('span', { class: 'help sender-flags' }, ` (${flags.join(', ')})`) : null),
      h('td', {}, m.subject || ''), h('td', {}, when(m.receivedAt)),
      h('td', {}, m.source), h('td', {}, form));
  };
  const load = async (cursor) => {
    sessionStorage.setItem('parley.sender', sender.value);
    const list = await get(`/api/inbound/unmatched${query({ from: sender.value.trim(), limit: 50, cursor })}`);
    alive(seq);
    count.textContent = t('unmatchedCount', { n: list.totalCount });
    const rows = list.messages.map(row);
    if (!cursor) results.replaceChildren();
    results.querySelector('.more')?.remove();
    const existing = results.querySelector('tbody');
    if (existing) existing.append(...rows);
    else results.append(list.messages.length
      ? table([t('from'), t('subject'), t('received'), t('source'), t('assign')], rows)
      : h('p', { class: 'empty' }, t('noItems')));
    if (list.nextCursor) results.append(button(t('more'), () => load(list.nextCursor), { class: 'more' }));
  };
  filters.addEventListener('submit', (e) => { e.preventDefault(); guarded(filters, () => load()); });
  // Many at once only by a sender: a spam wave goes, the rest stays.
  filters.querySelector('.dismiss-all').addEventListener('click', () => guarded(filters, async () => {
    const who = sender.value.trim();
    if (!who) throw new Problem(422, { detail: t('dismissAllNeedsSender'), code: 'sender' });
    const done = await post('/api/inbound/unmatched/dismiss', { from: who });
    announce(t('dismissed', { n: done.dismissed }));
    await load();
  }, () => 'sender'));
  page(t('unmatched'), filters, count, results);
  await load();
}

async function deliveriesPage(seq, stateName) {
  const states = ['failed', 'scheduled', 'retrying', 'queued'];
  const tabs = h('nav', { class: 'tabs', 'aria-label': t('deliveries') }, states.map((s) =>
    h('a', { href: `#/deliveries/${s}`, 'aria-current': s === stateName ? 'page' : null }, t(`state.${s}`))));
  const list = await get(`/api/jobs${query({ state: stateName, limit: 100 })}`);
  alive(seq);
  const actions = h('form', {}, formError());
  const rows = list.jobs.map((j) => h('tr', {},
    h('td', {}, j.caseId ? h('a', { href: `#/cases/${j.caseId}` }, j.messageId) : j.messageId),
    h('td', {}, j.messageType), h('td', {}, statusBadge(j.status)), h('td', {}, when(j.runAt)),
    h('td', { class: 'num' }, String(j.attempts)), h('td', {}, j.lastError || ''),
    h('td', {},
      j.status === 'failed' ? button(t('retry'), () => guarded(actions, async () => {
        await post(`/api/messages/${j.messageId}/retry`);
        await deliveriesPage(routeSeq, stateName);
      })) : null,
      j.status === 'queued' ? button(t('cancel'), () => guarded(actions, async () => {
        await post(`/api/messages/${j.messageId}/cancel`);
        await deliveriesPage(routeSeq, stateName);
      })) : null)));
  page(t('deliveries'), tabs, actions,
    table([t('message'), t('type'), t('status'), t('runAt'), t('attempts'), t('lastError'), ''], rows));
}

async function webhooksPage(seq, webhookId) {
  const list = await get('/api/webhooks');
  alive(seq);
  const links = table([t('url'), t('events')], list.webhooks.map((w) => h('tr', {},
    h('td', {}, h('a', { href: `#/webhooks/${w.webhookId}` }, w.url)), h('td', {}, w.events.join(', ')))));
  if (!webhookId) return page(t('webhooks'), links);
  const deliveries = await get(`/api/webhooks/${webhookId}/deliveries`);
  alive(seq);
  const actions = h('form', {}, formError());
  const rows = deliveries.deliveries.map((d) => h('tr', {},
    h('td', {}, d.event), h('td', {}, statusBadge(d.status)), h('td', { class: 'num' }, String(d.attempts)),
    h('td', {}, d.lastError || ''), h('td', {}, when(d.createdAt)),
    h('td', {}, button(t('resend'), () => guarded(actions, async () => {
      await post(`/api/webhooks/${webhookId}/deliveries/${d.deliveryId}/resend`);
      announce(t('resent'));
      await webhooksPage(routeSeq, webhookId);
    })))));
  page(t('webhooks'), links, h('h2', {}, t('deliveries')), actions,
    table([t('events'), t('status'), t('attempts'), t('lastError'), t('created'), ''], rows));
}

async function suppressionsPage(seq) {
  const address = h('input', { type: 'search', name: 'address' });
  const results = h('div', {});
  const form = h('form', { class: 'filters', role: 'search' },
    field(t('address'), address, { name: 'address' }), formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('search'))));
  const load = async () => {
    const list = await get(`/api/suppressions${query({ address: address.value.trim(), limit: 100 })}`);
    alive(seq);
    results.replaceChildren(table([t('address'), t('channel'), t('reason'), t('appliesTo'), t('created'), ''],
      list.suppressions.map((s) => h('tr', {},
        h('td', {}, s.address || ''), h('td', {}, s.channel), h('td', {}, s.reason),
        h('td', { class: 'applies-to' }, s.creditorId ? `${t('creditorOnly')} ${s.creditorId}` : t('everyone')),
        h('td', {}, when(s.createdAt)),
        h('td', {}, button(t('lift'), () => guarded(form, async () => {
          await del(`/api/suppressions/${s.suppressionId}`);
          announce(t('lifted'));
          await load();
        }), { 'aria-label': `${t('lift')} ${s.address || s.channel}` }))))));
  };
  form.addEventListener('submit', (e) => { e.preventDefault(); guarded(form, load); });
  page(t('suppressions'), form, results);
  await load();
}

// ---- connectors ------------------------------------------------------------------------------

// Each type's settings as the form asks for them: [name, kind, required]. Secrets are never
// shown: the server answers "***", and a secret left as it is stays.
const CONNECTOR_FIELDS = {
  microsoft365_mail: [
    ['tenantId', 'text', true], ['clientId', 'text', true], ['clientSecret', 'secret', true],
    ['mailbox', 'email', true], ['graphUrl', 'url', false], ['loginUrl', 'url', false],
    ['outbound', 'bool', false],
  ],
  gmail: [
    ['serviceAccount', 'key', true], ['user', 'email', true], ['apiUrl', 'url', false],
    ['outbound', 'bool', false],
  ],
  archive: [
    ['target', 'choice', true], ['url', 'secret', false], ['journalAddress', 'email', false],
  ],
  sharepoint: [
    ['tenantId', 'text', true], ['clientId', 'text', true], ['clientSecret', 'secret', true],
    ['driveId', 'text', true], ['folder', 'text', false], ['graphUrl', 'url', false],
    ['loginUrl', 'url', false],
  ],
  google_drive: [
    ['serviceAccount', 'key', true], ['folderId', 'text', true], ['apiUrl', 'url', false],
  ],
  box: [
    ['clientId', 'text', true], ['clientSecret', 'secret', true], ['enterpriseId', 'text', false],
    ['userId', 'text', false], ['folderId', 'text', false], ['apiUrl', 'url', false],
    ['uploadUrl', 'url', false],
  ],
  dropbox: [
    ['appKey', 'text', true], ['appSecret', 'secret', true], ['refreshToken', 'secret', true],
    ['teamMemberId', 'text', false], ['folder', 'text', false], ['apiUrl', 'url', false],
    ['contentUrl', 'url', false],
  ],
  salesforce: [
    ['clientId', 'text', true], ['username', 'text', true], ['privateKey', 'key', true],
    ['object', 'text', false], ['caseNumberField', 'text', false], ['externalIdField', 'text', false],
    ['statusField', 'text', false], ['paidField', 'text', false], ['updateRecord', 'bool', false],
    ['loginUrl', 'url', false],
  ],
  dynamics365: [
    ['tenantId', 'text', true], ['clientId', 'text', true], ['clientSecret', 'secret', true],
    ['environmentUrl', 'url', true], ['table', 'text', false], ['caseNumberColumn', 'text', false],
    ['statusColumn', 'text', false], ['paidColumn', 'text', false], ['updateRecord', 'bool', false],
    ['loginUrl', 'url', false],
  ],
  hubspot: [
    ['accessToken', 'secret', true], ['objectType', 'text', false], ['caseNumberProperty', 'text', false],
    ['messageIdProperty', 'text', false], ['statusProperty', 'text', false], ['paidProperty', 'text', false],
    ['updateRecord', 'bool', false], ['apiUrl', 'url', false],
  ],
};

/// The choices of a 'choice' setting.
const CONNECTOR_CHOICES = { target: ['imap', 'smtp', 'documents'] };

/// The settings' controls of a type, filled from `shown` (an existing connector's settings).
function connectorFields(type, shown = null) {
  return CONNECTOR_FIELDS[type].map(([name, kind, required]) => {
    const value = shown ? shown[name] : undefined;
    let control;
    if (kind === 'bool') {
      control = h('input', { type: 'checkbox', name, checked: value === undefined ? true : value });
    } else if (kind === 'choice') {
      control = h('select', { name }, CONNECTOR_CHOICES[name].map((v) =>
        h('option', { value: v, selected: v === value }, t(`${name}.${v}`))));
    } else if (kind === 'key') {
      control = h('textarea', { name, rows: 4, required: !shown && required, spellcheck: 'false' });
    } else {
      control = h('input', {
        type: kind === 'secret' ? 'password' : kind === 'url' ? 'url' : 'text', name,
        autocomplete: 'off', required: !shown && required,
        value: kind === 'secret' || kind === 'key' ? null : value,
      });
    }
    const help = kind === 'secret' || kind === 'key'
      ? (shown ? t('secretKept') : null)
      : (kind === 'url' && !shown ? t('urlDefault') : null);
    return field(t(`setting.${name}`), control, { name, help });
  });
}

/// What the form's controls say, as settings: empty secrets and URLs left out.
function connectorSettings(form, type) {
  const settings = {};
  for (const [name, kind] of CONNECTOR_FIELDS[type]) {
    const control = form.querySelector(`[name="${name}"]`);
    if (kind === 'bool') { settings[name] = control.checked; continue; }
    const value = control.value.trim();
    if (!value) continue;
    if (kind === 'key') {
      try { settings[name] = JSON.parse(value); } catch { settings[name] = value; }
    } else settings[name] = value;
  }
  return settings;
}

async function connectorsPage(seq, connectorId) {
  if (connectorId) return connectorPage(seq, connectorId);
  const list = await get('/api/connectors');
  alive(seq);
  const rows = list.connectors.map((c) => h('tr', {},
    h('td', {}, h('a', { href: `#/connectors/${c.connectorId}` }, c.name)),
    h('td', {}, t(`connector.${c.type}`)), h('td', {}, statusBadge(c.status)),
    h('td', {}, when(c.lastSyncAt)), h('td', { class: 'num' }, String(c.counts.items)),
    h('td', {}, c.lastError || '')));
  const type = h('select', { name: 'type' }, Object.keys(CONNECTOR_FIELDS).map((k) =>
    h('option', { value: k }, t(`connector.${k}`))));
  const name = h('input', { type: 'text', name: 'name', required: true });
  const creditor = h('input', { type: 'text', name: 'creditorId', placeholder: 'party_…' });
  const settings = h('div', {}, connectorFields(type.value));
  type.addEventListener('change', () => settings.replaceChildren(...connectorFields(type.value)));
  const form = h('form', { class: 'compose' },
    field(t('type'), type, { name: 'type' }), field(t('name'), name, { name: 'name' }),
    field(t('creditorId'), creditor, { name: 'creditorId', help: t('creditorIdHelp') }),
    settings, formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('addConnector'))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      const made = await post('/api/connectors', {
        type: type.value, name: name.value.trim(), creditorId: creditor.value.trim() || null,
        settings: connectorSettings(form, type.value),
      });
      announce(t('connectorAdded', { name: made.name }));
      location.hash = `#/connectors/${made.connectorId}`;
    }, (code, detail) => (detail.match(/settings\.(\w+)/) || [])[1] || null);
  });
  page(t('connectors'),
    table([t('name'), t('type'), t('status'), t('lastSync'), t('items'), t('lastError')], rows),
    h('h2', {}, t('addConnector')), form);
}

async function connectorPage(seq, connectorId) {
  const c = await get(`/api/connectors/${connectorId}`);
  alive(seq);
  const actions = h('form', {}, formError(), h('div', { class: 'actions' },
    button(t('syncNow'), () => guarded(actions, async () => {
      await post(`/api/connectors/${connectorId}/sync`);
      announce(t('syncAsked'));
      setTimeout(() => { if (location.hash === `#/connectors/${connectorId}`) route(); }, 1500);
    })),
    button(t('delete'), () => guarded(actions, async () => {
      await del(`/api/connectors/${connectorId}`);
      location.hash = '#/connectors';
    }))));
  const facts = h('dl', { class: 'facts' },
    h('dt', {}, t('type')), h('dd', {}, t(`connector.${c.type}`)),
    h('dt', {}, t('status')), h('dd', {}, statusBadge(c.status)),
    c.lastError ? [h('dt', {}, t('lastError')), h('dd', { class: 'last-error' }, c.lastError)] : null,
    h('dt', {}, t('lastSync')), h('dd', {}, when(c.lastSyncAt) || '–'),
    h('dt', {}, t('creditorId')), h('dd', {}, c.creditorId || t('everyone')),
    h('dt', {}, t('items')), h('dd', {}, String(c.counts.items)),
    h('dt', {}, t('syncs')), h('dd', {}, `${c.counts.syncs} / ${c.counts.failures}`));
  // Reauthorize: new credentials (or any other setting) for the same connector.
  const form = h('form', { class: 'compose' }, connectorFields(c.type, c.settings), formError(),
    h('div', { class: 'actions' }, h('button', { type: 'submit' }, t('saveAndRetry'))));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    guarded(form, async () => {
      await patch(`/api/connectors/${connectorId}`, { settings: connectorSettings(form, c.type) });
      announce(t('saved'));
      await connectorPage(routeSeq, connectorId);
    }, (code, detail) => (detail.match(/settings\.(\w+)/) || [])[1] || null);
  });
  page(c.name, facts, actions, h('h2', {}, t('reauthorize')), form);
}

route();
