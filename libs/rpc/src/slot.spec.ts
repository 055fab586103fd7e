import { status } from '@grpc/grpc-js';
import { DsiError } from './errors';
import { LoadingSlot } from './slot';

describe('LoadingSlot', () => {
  it('answers UNAVAILABLE naming what is loading until it is filled', () => {
    const slot = new LoadingSlot<number>('the model');
    const error = (() => {
      try {
        return slot.get();
      } catch (e) {
        return e;
      }
    })() as DsiError;
    expect(error).toBeInstanceOf(DsiError);
    expect(error.code).toBe(status.UNAVAILABLE);
    expect(error.rawMessage).toBe('the model is still loading; retry when health reports SERVING');
    expect(slot.peek()).toBeUndefined();
    slot.set(7);
    expect(slot.get()).toBe(7);
    expect(slot.peek()).toBe(7);
  });

  it('can be built already filled', () => {
    expect(LoadingSlot.of('tokenizer').get()).toBe('tokenizer');
  });
});
