// @ts-check
// Small DOM helpers shared by the modules that draw the page.

/**
 * The element with `id`, checked to be a `type` so callers get its real
 * interface (a dialog's `open`, an input's `value`) without a cast.
 * @template {HTMLElement} T
 * @param {string} id
 * @param {{ new (): T }} [type]
 * @returns {T}
 */
export function $(id, type) {
  const node = document.getElementById(id);
  const want = type ?? HTMLElement;
  if (!(node instanceof want)) throw new TypeError('#' + id + ' is missing from the page or is not a ' + want.name);
  return /** @type {T} */ (node);
}

/** @typedef {string | number | boolean | null | undefined} AttrValue */

/**
 * A new element. `class` and `text` set className and textContent; any other
 * attribute is set as a string, `true` as a bare attribute, and `false`,
 * `null` and `undefined` leave it out.
 * @template {keyof HTMLElementTagNameMap} K
 * @param {K} tag
 * @param {Record<string, AttrValue>} [attrs]
 * @param {...(Node | string | null | undefined)} children
 * @returns {HTMLElementTagNameMap[K]}
 */
export function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') node.className = String(v);
    else if (k === 'text') node.textContent = String(v);
    else node.setAttribute(k, v === true ? '' : String(v));
  }
  for (const child of children) if (child !== null && child !== undefined) node.append(child);
  return node;
}

/**
 * Shows one of the page's views: pairing, the session list, one session,
 * the workflow runs, one run or the terminals. The tabs (Sessions,
 * Workflows, Terminals) go with the three lists; the back button with the
 * two single views.
 * @param {'pair' | 'list' | 'session' | 'workflows' | 'run' | 'terminals'} which
 */
export function show(which) {
  $('pair-view').hidden = which !== 'pair';
  $('list-view').hidden = which !== 'list';
  $('session-view').hidden = which !== 'session';
  $('workflows-view').hidden = which !== 'workflows';
  $('run-view').hidden = which !== 'run';
  $('terminals-view').hidden = which !== 'terminals';
  $('tabs').hidden = which !== 'list' && which !== 'workflows' && which !== 'terminals';
  for (const [id, view] of [['tab-sessions', 'list'], ['tab-workflows', 'workflows'], ['tab-terminals', 'terminals']]) {
    const tab = $(id);
    if (view === which) tab.setAttribute('aria-current', 'page');
    else tab.removeAttribute('aria-current');
  }
  $('back').hidden = which !== 'session' && which !== 'run';
  if (which !== 'session' && which !== 'run') $('title').textContent = 'Bosun';
}
