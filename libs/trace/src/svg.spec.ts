import { DsiAttributes, DsiSpans } from '@dsi/telemetry';
import { buildTimeline } from './model';
import { timelineSvg } from './svg';
import { fixture, REPLICA_A as A, REPLICA_B as B, REPLICA_C as C } from './testing';

function count(text: string, pattern: RegExp): number {
  return (text.match(pattern) ?? []).length;
}

function laneLabels(svg: string): string[] {
  return [...svg.matchAll(/class="lane-label"[^>]*>([^<]*)</g)].map((m) => m[1]);
}

describe('the SVG', () => {
  const model = buildTimeline(fixture());
  const svg = timelineSvg(model);

  it('is one balanced SVG document', () => {
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg.trimEnd().endsWith('</svg>')).toBe(true);
    expect(count(svg, /<svg[\s>]/g)).toBe(1);
    for (const tag of ['g', 'text', 'title', 'pattern', 'defs', 'circle', 'line']) {
      const open = count(svg, new RegExp(`<${tag}[\\s>]`, 'g'));
      const selfClosed = count(svg, new RegExp(`<${tag}[^>]*/>`, 'g'));
      const close = count(svg, new RegExp(`</${tag}>`, 'g'));
      expect({ tag, balance: open - selfClosed - close }).toEqual({ tag, balance: 0 });
    }
    expect(svg).not.toMatch(/NaN|undefined|Infinity/);
  });

  it('draws one labelled lane per drafter and replica', () => {
    expect(laneLabels(svg)).toEqual(['drafter', `target ${A}`, `target ${B}`, `target ${C}`]);
    expect(count(svg, /<g class="lane"/g)).toBe(4);
  });

  it('draws one bar per span, coloured by outcome', () => {
    const bars = (kind: string, outcome: string) => count(svg, new RegExp(`class="bar" data-kind="${kind}" data-outcome="${outcome}"`, 'g'));
    expect(bars('verify', 'committed')).toBe(2);
    expect(bars('verify', 'rejected')).toBe(2);
    expect(bars('verify', 'cancelled')).toBe(2);
    expect(bars('draft', 'used')).toBe(4);
    expect(bars('draft', 'stale')).toBe(1);
    expect(bars('draft', 'cancelled')).toBe(1);
    expect(count(svg, /class="bar"/g)).toBe(12);
    expect(svg).toContain('fill="url(#hatch-cancelled)"');
  });

  it('writes the block and accepted/size in bars that have room', () => {
    expect(svg).toContain('>#0 4/4</text>');
    expect(svg).toContain('>#1 2/4</text>');
    expect(svg).toContain('>#2</text>');
  });

  it('marks each preemption across the lanes, and draws the frontier', () => {
    expect(count(svg, /<line class="preemption"/g)).toBe(2);
    expect(svg).toContain('\u2716 @16');
    expect(count(svg, /<path class="frontier"/g)).toBe(1);
    expect(count(svg, /<circle class="commit"/g)).toBe(4);
  });

  it('titles the picture with mode, k, tokens and wall time, and explains hovering', () => {
    expect(svg).toContain('DSI, k=4 \u00b7 13 tokens in 100 ms');
    expect(svg).toContain('time since the request started (ms)');
    expect(svg).toContain('<title>verify block #1 on 127.0.0.1:50062: rejected\n2 of 4 drafts accepted, positions 14..17');
  });

  it('escapes what it did not write itself', () => {
    const spans = fixture().map((s) =>
      s.name === DsiSpans.VERIFY && s.attributes[DsiAttributes.REPLICA] === A ? { ...s, attributes: { ...s.attributes, [DsiAttributes.REPLICA]: 'a<b>&"c"' } } : s,
    );
    const text = timelineSvg(buildTimeline(spans));
    expect(text).toContain('target a&lt;b&gt;&amp;&quot;c&quot;');
    expect(text).not.toContain('a<b>');
  });

  it('titles a non-SI request by its mode', () => {
    expect(timelineSvg(buildTimeline(fixture(), { requestId: 'req-early' }))).toContain('NONSI, k=0');
  });
});
