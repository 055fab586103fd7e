/**
 * Deterministic pseudo-random numbers for weight generation. Only integer arithmetic and exact
 * IEEE-754 operations (no Math.random, no transcendental functions whose last bit could differ
 * between JavaScript engines), so the generated weights are bit-identical on every platform.
 */

// Module-scope alias: inside a vm sandbox (jest) every global lookup such as `Math` goes through
// an interceptor, which made the hot loop below ~30x slower.
const imul = Math.imul;

/**
 * mulberry32: a small, fast 32-bit generator with good statistical quality for this purpose.
 * Returns a function yielding uniform floats in [0, 1) with 32 random bits each.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = imul(t ^ (t >>> 15), t | 1);
    t ^= t + imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** FNV-1a hash of a string (UTF-16 code units), used to derive an independent stream per tensor. */
export function fnv1a(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) {
    h ^= text.charCodeAt(i);
    h = imul(h, 0x01000193);
  }
  return h >>> 0;
}

/**
 * A seeded source of weights. Each named tensor draws from its own stream (seed mixed with the
 * tensor's name), so tensors do not depend on the order they are generated in and adding a tensor
 * never changes the others.
 */
export class WeightRng {
  constructor(readonly seed: number) {}

  /** The uniform stream for one tensor. */
  stream(name: string): () => number {
    // Mix seed and name hash through one mulberry32 step so nearby seeds give unrelated streams.
    const mix = mulberry32((this.seed ^ fnv1a(name)) >>> 0);
    return mulberry32(Math.floor(mix() * 4294967296) >>> 0);
  }

  /**
   * `n` values with mean 0 and standard deviation `std`, approximately normal: the sum of four
   * uniforms (Irwin–Hall), scaled. Bounded tails (|x| <= 3.46 std) keep random logits tame.
   */
  normal(name: string, n: number, std: number): Float32Array {
    const u = this.stream(name);
    const out = new Float32Array(n);
    // Sum of 4 U(0,1) has mean 2 and variance 4/12 = 1/3.
    const scale = std * Math.sqrt(3);
    for (let i = 0; i < n; i++) out[i] = (u() + u() + u() + u() - 2) * scale;
    return out;
  }
}
