import type { RuleParams, RunCost } from './rules';

/** Parameters of the exact expectations: the rules' parameters plus the acceptance rate. */
export interface ExactParams extends RuleParams {
  a: number;
}

/**
 * Expected cost and iterations of the SI rule, without sampling: dynamic programming over the tokens
 * left, `E(left) = L c + t + sum_j P(X = j) E(left - 1 - j)` with `X` the accepted count (at most `k`,
 * not clipped to this iteration's `L` drafts).
 */
export function expectedSi({ a, c, k, t, tokens }: ExactParams): RunCost {
  const cost = new Float64Array(tokens + 1);
  const iterations = new Float64Array(tokens + 1);
  const probability = acceptedCountDistribution(a, k);
  for (let left = 1; left <= tokens; left++) {
    let futureCost = 0;
    let futureIterations = 0;
    for (let j = 0; j <= k && left - 1 - j > 0; j++) {
      futureCost += probability[j] * cost[left - 1 - j];
      futureIterations += probability[j] * iterations[left - 1 - j];
    }
    cost[left] = Math.min(k, left - 1) * c + t + futureCost;
    iterations[left] = 1 + futureIterations;
  }
  return { cost: cost[tokens], iterations: iterations[tokens] };
}

/** `P(X = j)` for `j = 0..k`: `a^j (1 - a)` below `k`, `a^k` at `k`. */
export function acceptedCountDistribution(a: number, k: number): Float64Array {
  const probability = new Float64Array(k + 1);
  for (let j = 0; j < k; j++) probability[j] = Math.pow(a, j) * (1 - a);
  probability[k] = Math.pow(a, k);
  return probability;
}

/**
 * Expected cost and iterations of the DSI rule, without sampling.
 *
 * A round's cost is `min(lat, new * t)`, which is not linear, so it is split as
 * `lat - max(0, lat - new * t)`. The linear part follows the rule iteration by iteration (dynamic
 * programming over positions, O(tokens * k)); the correction is non-zero only for rounds with few
 * fully accepted iterations (each one lowers `lat - new * t` by `L (t - c)`), which are enumerated.
 * With `c >= t` every round costs `new * t`, so the total is exactly `tokens * t`.
 */
export function expectedDsi({ a, c, k, t, tokens }: ExactParams): RunCost {
  const S = tokens;
  // Expected future cost/iterations from the start of a round at p, right after a rejection.
  const roundCost = new Float64Array(S + 1);
  const roundIterations = new Float64Array(S + 1);
  // Same, from inside a round at q after at least one fully accepted iteration (linear part only).
  const inRoundCost = new Float64Array(S + 1);
  const inRoundIterations = new Float64Array(S + 1);
  const powers = new Float64Array(k + 1);
  for (let j = 0; j <= k; j++) powers[j] = Math.pow(a, j);
  const reject = 1 - a;
  const slowDrafter = c >= t;

  // Linear part of one iteration at q; `justVerified` only waives the drafting time of a first draft
  // rejected right after a rejection.
  const linear = (q: number, justVerified: boolean): { cost: number; iterations: number } => {
    const drafts = Math.min(k, S - 1 - q);
    if (drafts === 0) return { cost: t + roundCost[q + 1], iterations: 1 + roundIterations[q + 1] };
    let cost = drafts * c * (justVerified ? 1 - reject : 1);
    let iterations = 1;
    for (let j = 0; j < drafts; j++) {
      const p = powers[j] * reject;
      cost += p * (t + roundCost[q + j + 1]);
      iterations += p * roundIterations[q + j + 1];
    }
    cost += powers[drafts] * inRoundCost[q + drafts];
    iterations += powers[drafts] * inRoundIterations[q + drafts];
    return { cost, iterations };
  };

  // E[max(0, lat - new * t)] of the round starting at p.
  const correction = (p: number, justVerified: boolean): number => {
    if (slowDrafter) return 0;
    let expected = 0;
    let reach = 1; // probability that the round reaches this iteration
    let excess = 0; // lat - new * t accumulated by fully accepted iterations (<= 0)
    let q = p;
    let first = true;
    while (reach > 0) {
      const drafts = Math.min(k, S - 1 - q);
      if (drafts === 0 || excess + drafts * c <= 0) break;
      for (let j = 0; j < drafts; j++) {
        const charged = j > 0 || !(first && justVerified) ? drafts * c : 0;
        const over = excess + charged - j * t;
        if (over <= 0) {
          if (j > 0) break; // larger j only lowers it
          continue;
        }
        expected += reach * powers[j] * reject * over;
      }
      reach *= powers[drafts];
      excess += drafts * (c - t);
      q += drafts;
      first = false;
    }
    return expected;
  };

  for (let p = S - 1; p >= 0; p--) {
    const inRound = linear(p, false);
    inRoundCost[p] = inRound.cost;
    inRoundIterations[p] = inRound.iterations;
    const afterRejection = linear(p, true);
    roundCost[p] = afterRejection.cost - correction(p, true);
    roundIterations[p] = afterRejection.iterations;
  }
  const first = linear(0, false);
  const cost = slowDrafter ? S * t : first.cost - correction(0, false);
  return { cost, iterations: first.iterations };
}
