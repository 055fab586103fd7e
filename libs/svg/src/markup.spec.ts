import { coord, escapeXml, svgOpenTag } from './markup';

describe('escapeXml', () => {
  it('escapes the characters that end text or a double-quoted attribute', () => {
    expect(escapeXml('a<b>&"c"')).toBe('a&lt;b&gt;&amp;&quot;c&quot;');
  });

  it('escapes an ampersand once, so an existing entity is shown as written', () => {
    expect(escapeXml('&lt;')).toBe('&amp;lt;');
  });

  it('leaves plain text, apostrophes and non-ASCII alone', () => {
    expect(escapeXml("DSI, k=4 \u00b7 it's 13 tokens")).toBe("DSI, k=4 \u00b7 it's 13 tokens");
  });
});

describe('coord', () => {
  it('rounds to a tenth of a pixel and drops floating-point noise', () => {
    expect(coord(0.1 + 0.2)).toBe('0.3');
    expect(coord(12.34)).toBe('12.3');
    expect(coord(12.36)).toBe('12.4');
    expect(coord(100)).toBe('100');
  });
});

describe('svgOpenTag', () => {
  it('opens a standalone document whose view box matches its size', () => {
    expect(svgOpenTag(640, 480)).toBe(
      '<svg xmlns="http://www.w3.org/2000/svg" width="640" height="480" viewBox="0 0 640 480" font-family="Helvetica, Arial, sans-serif">',
    );
  });
});
