/** Cost and iteration count of one simulated run, in target-forward time units. */
export interface RunCost {
  cost: number;
  iterations: number;
}

/** Parameters of one run of the study's rules (validated by {@link resolveConfig}). */
export interface RuleParams {
  /** Drafter forward latency. */
  c: number;
  /** Lookahead: drafts per verification. */
  k: number;
  /** Target forward latency. */
  t: number;
  /** Tokens to generate. */
  tokens: number;
}

/**
 * Classic speculative inference, one repeat: draft `min(k, left - 1)` tokens, then one blocking target
 * pass; the sample (at most `k`) is not clipped to this iteration's drafts, so an overshoot just ends
 * the loop. `samples[offset..]` holds the repeat's accepted-draft counts.
 */
export function siRun(samples: Int32Array, offset: number, { c, k, t, tokens }: RuleParams): RunCost {
  let left = tokens;
  let cost = 0;
  let iterations = 0;
  let next = offset;
  while (left > 0) {
    iterations += 1;
    const drafts = Math.min(k, left - 1);
    cost += drafts * c + t;
    left -= samples[next++] + 1;
  }
  return { cost, iterations };
}

/**
 * Distributed speculative inference with immediate pruning, one repeat. While drafts are accepted only
 * drafting is on the critical path (verifications run on other servers); a rejection exposes one target
 * latency and yields the target's token; right after a rejection a rejected first draft costs no
 * drafting time; every round is bounded by the non-SI lane (`min(lat, new * t)`).
 */
export function dsiRun(samples: Int32Array, offset: number, { c, k, t, tokens }: RuleParams): RunCost {
  let cost = 0;
  let done = 0;
  let iterations = 0;
  let justVerified = false;
  let next = offset;
  while (done < tokens) {
    let fresh = 0;
    let latency = 0;
    for (;;) {
      iterations += 1;
      const drafts = Math.min(k, tokens - 1 - done - fresh);
      const sample = samples[next++];
      const accepted = sample < drafts ? sample : drafts;
      fresh += accepted;
      if (accepted > 0 || !justVerified) latency += drafts * c;
      if (drafts === 0 || accepted < drafts) {
        latency += t;
        fresh += 1;
        justVerified = true;
        break;
      }
      justVerified = false;
    }
    const nonSiLane = fresh * t;
    cost += latency < nonSiLane ? latency : nonSiLane;
    done += fresh;
  }
  return { cost, iterations };
}
