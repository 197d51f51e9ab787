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
 * Shows one of the page's views: pairing, the session list or one session.
 * @param {'pair' | 'list' | 'session'} which
 */
export function show(which) {
  $('pair-view').hidden = which !== 'pair';
  $('list-view').hidden = which !== 'list';
  $('session-view').hidden = which !== 'session';
  $('back').hidden = which !== 'session';
  if (which !== 'session') $('title').textContent = 'Bosun';
}
