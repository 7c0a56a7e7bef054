/**
 * The number of valid indices 0..n-1, given a probe that says whether an index is valid:
 * doubling, then bisection (about 2 log2 n probes). Used to count neurons / heads / latents per
 * layer, which /model_info does not report.
 */
export async function countByProbing(isValid: (index: number) => Promise<boolean>, limit = 1 << 22): Promise<number> {
  if (!(await isValid(0))) return 0;
  let lo = 0; // known valid
  let hi = 1; // candidate
  while (hi < limit && (await isValid(hi))) {
    lo = hi;
    hi *= 2;
  }
  if (hi >= limit) return limit;
  // lo valid, hi invalid
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (await isValid(mid)) lo = mid;
    else hi = mid;
  }
  return hi;
}
