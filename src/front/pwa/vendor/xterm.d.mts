// Types of the vendored xterm.mjs for the type-check (not served): the npm
// package's own declarations (xterm.d.ts, vendored with it).
/// <reference path="./xterm.d.ts" />
export { Terminal } from '@xterm/xterm';
