// Types of the vendored addon-fit.mjs for the type-check (not served): the
// npm package's declarations (typings/addon-fit.d.ts) as a module, since
// that file augments '@xterm/addon-fit' and cannot be referenced on its own.
/// <reference path="./xterm.d.ts" />
import type { Terminal, ITerminalAddon } from '@xterm/xterm';

export class FitAddon implements ITerminalAddon {
  constructor();
  activate(terminal: Terminal): void;
  dispose(): void;
  /** Resizes the terminal to the dimensions of its containing element. */
  fit(): void;
  /** The dimensions the terminal would take in its containing element. */
  proposeDimensions(): { cols: number; rows: number } | undefined;
}
