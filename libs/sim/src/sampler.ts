import { Mt19937 } from './mt19937';

/**
 * One geometric draw `G ~ Geometric(p)` on {1, 2, ...} from a uniform `u`, exactly as numpy's legacy
 * `RandomState.geometric`: search for p >= 1/3, inversion below.
 */
export function geometricFromUniform(u: number, p: number): number {
  if (p >= 1 / 3) {
    let x = 1;
    let sum = p;
    let prod = p;
    const q = 1 - p;
    while (u > sum) {
      prod *= q;
      sum += prod;
      x += 1;
    }
    return x;
  }
  return Math.ceil(Math.log1p(-u) / Math.log(1 - p));
}

/**
 * The uniforms the study's sampler consumes: `repeats` blocks of `tokens` doubles from one MT19937
 * stream seeded with `seed`. Every acceptance rate below 1 transforms the same uniforms, so a heatmap
 * draws them once.
 */
export function studyUniforms(seed: number, repeats: number, tokens: number): Float64Array {
  const rng = new Mt19937(seed);
  const uniforms = new Float64Array(repeats * tokens);
  for (let i = 0; i < uniforms.length; i++) uniforms[i] = rng.nextDouble();
  return uniforms;
}

/**
 * Accepted-draft counts `min(G - 1, k)`, `G ~ Geometric(1 - a)`, one per uniform: how many of `k`
 * drafts an iteration accepts before the first rejection, so `P(X = j) = a^j (1 - a)` for `j < k` and
 * `a^k` for `j = k`. `a == 1` gives `k` everywhere (the study drew nothing then).
 */
export function acceptanceSamples(uniforms: Float64Array, a: number, k: number): Int32Array {
  const samples = new Int32Array(uniforms.length);
  if (a >= 1) {
    samples.fill(k);
    return samples;
  }
  const p = 1 - a;
  for (let i = 0; i < uniforms.length; i++) samples[i] = Math.min(geometricFromUniform(uniforms[i], p) - 1, k);
  return samples;
}
