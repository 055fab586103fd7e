/** Runs `fn` `runs` times in a row and returns each run's wall time in milliseconds (benchmarks only). */
export async function timeEach(runs: number, fn: (i: number) => Promise<unknown> | unknown): Promise<number[]> {
  const times: number[] = [];
  for (let i = 0; i < runs; i++) {
    const started = performance.now();
    await fn(i);
    times.push(performance.now() - started);
  }
  return times;
}
