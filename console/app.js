// The console shell: sign-in, navigation by role, language switch and hash routing.
// Each screen is a module exporting `render(view, params)`.

import { api, session, saveSession, clearSession, ApiError } from './api.js';
import { h, clear } from './dom.js';
import { t, lang, setLang } from './i18n.js';
import * as workflows from './workflows.js';
import * as tryit from './tryit.js';
import * as inbox from './inbox.js';
import * as cases from './cases.js';
import * as status from './status.js';
import * as fleet from './fleet.js';

/** Screens, the roles that may open them (admins open all) and their modules. A fleet
 * hub (`me.hub`) serves the fleet screen only; a box serves every other. */
const SCREENS = [
  { id: 'workflows', label: 'nav.workflows', roles: ['author'], module: workflows },
  { id: 'try', label: 'nav.try', roles: ['author'], module: tryit },
  { id: 'inbox', label: 'nav.inbox', roles: ['reviewer'], module: inbox },
  { id: 'cases', label: 'nav.cases', roles: ['auditor'], module: cases },
  { id: 'status', label: 'nav.status', roles: [], module: status },
  { id: 'fleet', label: 'nav.fleet', roles: ['auditor'], module: fleet, hub: true },
];

function allowed(screen) {
  const role = session.me && session.me.role;
  const here = Boolean(session.me && session.me.hub) === Boolean(screen.hub);
  return here && (role === 'admin' || screen.roles.includes(role));
}

function parseHash() {
  const parts = location.hash.replace(/^#\/?/, '').split('/').filter(Boolean).map(decodeURIComponent);
  return { screen: parts[0] || '', params: parts.slice(1) };
}

export function go(path) {
  location.hash = `#/${path}`;
}

function renderChrome() {
  document.documentElement.lang = lang;
  document.title = t('app.title');
  document.getElementById('app-title').textContent = t('app.title');
  const langButton = document.getElementById('lang');
  langButton.textContent = t('lang.switch');
  langButton.setAttribute('data-testid', 'lang-switch');
  const nav = clear(document.getElementById('nav'));
  const who = document.getElementById('whoami');
  const out = document.getElementById('signout');
  if (!session.me) {
    who.textContent = '';
    out.hidden = true;
    return;
  }
  const { screen } = parseHash();
  for (const s of SCREENS.filter(allowed)) {
    nav.append(h('a', { href: `#/${s.id}`, class: s.id === screen ? 'active' : '', 'data-testid': `nav-${s.id}` }, t(s.label)));
  }
  who.textContent = t('nav.signedin', { name: session.me.name, role: session.me.role });
  out.hidden = false;
  out.textContent = t('nav.signout');
}

function signIn(view) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', spellcheck: 'false', 'data-testid': 'token' });
  const msg = h('div');
  const form = h('form', { class: 'panel signin', 'data-testid': 'signin' },
    h('h1', {}, t('signin.title')),
    h('p', { class: 'help' }, t('signin.help')),
    h('label', { for: 'token' }, t('signin.token')),
    input,
    h('p', {}, h('button', { type: 'submit', 'data-testid': 'signin-submit' }, t('signin.submit'))),
    msg,
    h('p', { class: 'muted' }, t('signin.roles')));
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    clear(msg);
    const token = input.value.trim();
    try {
      const me = await api('GET', '/v1/console/me', undefined, token);
      saveSession(token, me);
      const first = SCREENS.find(allowed);
      const target = `#/${first ? first.id : ''}`;
      if (location.hash === target) route();
      else location.hash = target;
    } catch (err) {
      msg.append(h('div', { class: 'msg bad', 'data-testid': 'signin-error' },
        err instanceof ApiError && err.status === 401 ? t('signin.bad') : `${t('common.error')}: ${err.message}`));
    }
  });
  clear(view).append(form);
  input.focus();
}

export function showError(el, err) {
  el.append(h('div', { class: 'msg bad', 'data-testid': 'error' }, `${t('common.error')}: ${err.message}${err.code ? ` (${err.code})` : ''}`));
}

async function route() {
  renderChrome();
  // Each navigation renders into a fresh element: a slower earlier render that finishes
  // late writes into a detached element, never beside the current screen.
  const view = h('div');
  clear(document.getElementById('view')).append(view);
  if (!session.me) {
    signIn(view);
    return;
  }
  const { screen, params } = parseHash();
  const target = SCREENS.find((s) => s.id === screen) || SCREENS.find(allowed);
  clear(view);
  if (!target) {
    view.append(h('p', { class: 'msg info' }, t('common.forbidden')));
    return;
  }
  if (!allowed(target)) {
    view.append(h('p', { class: 'msg bad', 'data-testid': 'forbidden' }, t('common.forbidden')));
    return;
  }
  if (target.id !== screen) {
    go(target.id);
    return;
  }
  try {
    await target.module.render(view, params);
  } catch (err) {
    if (err instanceof ApiError && err.status === 401) {
      clearSession();
      route();
      return;
    }
    showError(view, err);
  }
}

document.getElementById('lang').addEventListener('click', () => {
  setLang(lang === 'de' ? 'en' : 'de');
  route();
});
document.getElementById('signout').addEventListener('click', () => {
  clearSession();
  location.hash = '';
  route();
});
window.addEventListener('hashchange', route);
route();
