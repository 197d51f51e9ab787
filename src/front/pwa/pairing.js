// @ts-check
// Pairing: the view shown when the daemon refuses this device (no token, or
// one revoked), and the exchange of a one-time code from `bosun pair` for a
// token, typed in or carried by a `#pair=` link.
import { state, saveToken, forgetToken } from './store.js';
import { call, errorText, HttpError } from './api.js';
import { stopPolling, closeSocket } from './connection.js';
import { closeApproval } from './approvals.js';
import { $, show } from './dom.js';

/** Stops the app and asks for a pairing code. */
export function showPairing() {
  if (state.pairing) return;
  state.pairing = true;
  // The daemon refused this token (revoked or unknown): keeping it would only be refused again.
  forgetToken();
  stopPolling();
  closeSocket();
  closeApproval();
  const dialog = $('new-dialog', HTMLDialogElement);
  if (dialog.open) dialog.close();
  show('pair');
  $('pair-code').focus();
}

/** @param {string} code @param {string} totp */
export async function pair(code, totp) {
  /** @type {import('./types/api').TokenRequest} */
  const body = { pairing_code: code.trim(), device_name: deviceName() };
  if (totp) body.totp = totp.trim();
  const res = await call('POST /auth/token', { body });
  saveToken(res.token);
}

function deviceName() {
  const ua = navigator.userAgent;
  const m = ua.match(/\(([^;)]+)/);
  return ('Bosun app' + (m ? ' on ' + m[1] : '')).slice(0, 64);
}

/**
 * The pairing form's submit.
 * @param {SubmitEvent} ev
 * @param {() => Promise<void>} paired starts the app once the device has its token
 */
export async function submitPair(ev, paired) {
  ev.preventDefault();
  $('pair-error').textContent = '';
  const code = $('pair-code', HTMLInputElement);
  const totp = $('pair-totp', HTMLInputElement);
  try {
    await pair(code.value, totp.value);
    code.value = '';
    totp.value = '';
    state.pairing = false;
    await paired();
  } catch (e) {
    $('pair-error').textContent = 'Pairing failed: ' + errorText(e);
  }
}

/**
 * A `#pair=CODE` link pairs at once and leaves the URL (the code works only
 * once); if it fails, the form shows the code and why.
 * @returns {Promise<boolean>} whether the app may start
 */
export async function pairFromLink() {
  const m = location.hash.match(/^#pair=([^&]+)/);
  if (!m) return true;
  const code = decodeURIComponent(m[1]);
  history.replaceState(null, '', location.pathname + location.search);
  try {
    await pair(code, '');
    return true;
  } catch (e) {
    showPairing();
    $('pair-code', HTMLInputElement).value = code;
    const needsTotp = e instanceof HttpError && e.status === 401;
    $('pair-error').textContent = 'Pairing failed: ' + errorText(e) + (needsTotp ? ' (an authenticator code may be needed)' : '');
    return false;
  }
}
