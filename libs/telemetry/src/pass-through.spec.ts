import { createContextKey, ROOT_CONTEXT } from '@opentelemetry/api';
import { SynchronousContextManager } from './pass-through';

describe('SynchronousContextManager', () => {
  const key = createContextKey('test');
  const ctx = ROOT_CONTEXT.setValue(key, 'request-1');

  it('makes a context active while a function runs synchronously, and restores the previous one after, also after a throw', () => {
    const manager = new SynchronousContextManager();
    expect(manager.with(ctx, () => manager.active().getValue(key))).toBe('request-1');
    expect(manager.active()).toBe(ROOT_CONTEXT);
    expect(() =>
      manager.with(ctx, () => {
        throw new Error('boom');
      }),
    ).toThrow('boom');
    expect(manager.active()).toBe(ROOT_CONTEXT);
    const inner = ctx.setValue(key, 'request-2');
    expect(manager.with(ctx, () => [manager.with(inner, () => manager.active().getValue(key)), manager.active().getValue(key)])).toEqual(['request-2', 'request-1']);
  });

  it('does not follow an await (code that needs the context later keeps it), and binds functions with their this and arguments', async () => {
    const manager = new SynchronousContextManager();
    const later = await manager.with(ctx, async () => {
      await Promise.resolve();
      return manager.active().getValue(key);
    });
    expect(later).toBeUndefined();
    const bound = manager.bind(ctx, function (this: { n: number }, add: number) {
      return [this.n + add, manager.active().getValue(key)];
    });
    expect(bound.call({ n: 1 }, 2)).toEqual([3, 'request-1']);
    const notAFunction = { n: 1 };
    expect(manager.bind(ctx, notAFunction)).toBe(notAFunction);
  });
});
