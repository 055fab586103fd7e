/** @dsi/core: pure DSI logic (no I/O, no timers, no globals). */
export * from './sampling';
export * from './rules';
