import { timelineHtml } from './html';
import { buildTimeline } from './model';
import { timelineSvg } from './svg';
import { fixture } from './testing';

describe('the HTML page', () => {
  const model = buildTimeline(fixture());
  const svg = timelineSvg(model);

  it('embeds the SVG in a standalone page with the summary', () => {
    const html = timelineHtml(model);
    expect(html.startsWith('<!doctype html>')).toBe(true);
    expect(html).toContain('<title>DSI trace req-main</title>');
    expect(html).toContain(svg.trimEnd());
    expect(html).toContain('<th>acceptance</th><td>11/16 = 0.688</td>');
    expect(html).toContain('<th>wasted on cancelled verifications</th><td>42.0 ms in 2</td>');
    expect(html.trimEnd().endsWith('</html>')).toBe(true);
  });

  it('escapes the request id in the title', () => {
    const page = timelineHtml({ ...model, requestId: '<b>&' });
    expect(page).toContain('<title>DSI trace &lt;b&gt;&amp;</title>');
    expect(page).not.toContain('<b>&');
  });
});
