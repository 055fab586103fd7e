import { Tokenizer } from '@huggingface/tokenizers';
import { BYTE_VOCAB_SIZE, byteLevelTokenizerConfig, byteLevelTokenizerJson, bytesToUnicode, SPECIAL_TOKENS } from './tokenizer';

const utf8 = (s: string) => [...Buffer.from(s, 'utf8')];

describe('byte-level tokenizer.json', () => {
  const tokenizer = new Tokenizer(byteLevelTokenizerJson(), byteLevelTokenizerConfig(1024));

  it('spells bytes with the GPT-2 bytes_to_unicode mapping', () => {
    const map = bytesToUnicode();
    expect(new Set(map).size).toBe(256);
    expect(map[0x41]).toBe('A');
    expect(map[0x20]).toBe('\u0120'); // 'Ġ'
    expect(map[0x0a]).toBe('\u010a'); // 'Ċ'
    expect(map[0x00]).toBe('\u0100');
    expect(map[0xad]).toBe('\u0143'); // soft hyphen is the 68th non-printable byte
    for (let b = 0; b < 256; b++) expect(tokenizer.token_to_id(map[b])).toBe(b);
  });

  it('has 259 tokens with <bos>=256, <eos>=257, <pad>=258', () => {
    expect(tokenizer.get_vocab(true).size).toBe(BYTE_VOCAB_SIZE);
    expect(tokenizer.token_to_id('<bos>')).toBe(SPECIAL_TOKENS.bos);
    expect(tokenizer.token_to_id('<eos>')).toBe(SPECIAL_TOKENS.eos);
    expect(tokenizer.token_to_id('<pad>')).toBe(SPECIAL_TOKENS.pad);
  });

  it.each([
    'The quick brown fox',
    'def fibonacci(n):\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n',
    'Crème brûlée, naïve café, Ελληνικά, русский',
    'emoji 😀👍🏽 and 日本語の文章 and 🇫🇷',
    '  leading spaces, tabs\t\tand\r\nnewlines  ',
    "Hello , world . it 's ok n't ? !",
    '\u0000\u0001\u007f control bytes',
    'x',
  ])('encodes %j to exactly its UTF-8 bytes and decodes back', (text) => {
    const { ids } = tokenizer.encode(text);
    expect(ids).toEqual(utf8(text));
    expect(tokenizer.decode(ids)).toBe(text);
  });

  it('round-trips every single byte value that is valid UTF-8 on its own', () => {
    for (let b = 0; b < 128; b++) {
      const text = String.fromCharCode(b);
      expect(tokenizer.encode(text).ids).toEqual([b]);
      expect(tokenizer.decode([b])).toBe(text);
    }
  });

  it('adds no special tokens when encoding, and can skip them when decoding', () => {
    expect(tokenizer.encode('hi').ids).toEqual([104, 105]);
    const ids = [SPECIAL_TOKENS.bos, 104, 105, SPECIAL_TOKENS.eos];
    expect(tokenizer.decode(ids, { skip_special_tokens: true })).toBe('hi');
    expect(tokenizer.decode(ids)).toBe('<bos>hi<eos>');
  });

  it('needs clean_up_tokenization_spaces=false (tokenizer_config.json) for exact round trips', () => {
    // tokenizers.js defaults to cleaning up " ." -> "."; the shipped tokenizer_config.json turns it off.
    const bare = new Tokenizer(byteLevelTokenizerJson(), {});
    const text = 'a , b .';
    expect(bare.decode(utf8(text))).not.toBe(text);
    expect(bare.decode(utf8(text), { clean_up_tokenization_spaces: false })).toBe(text);
    expect(tokenizer.decode(utf8(text))).toBe(text);
  });
});
