/** @dsi/core: pure DSI logic (no I/O, no timers, no globals). */
export * from './sampling';
export * from './rules';
export * from './ports';
export * from './scheduler';
export * from './lookahead';
export * from './replica-scheduler';
export * from './virtual-clock';
export * from './oracle';
export * from './stats';
export * from './plain-signal';
