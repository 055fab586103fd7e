/**
 * The byte-level tokenizer shipped with the generated models, as a Hugging Face `tokenizer.json`.
 *
 * Token ids 0..255 are the byte values themselves (spelled with GPT-2's bytes_to_unicode mapping,
 * as every byte-level BPE vocabulary is), the BPE model has no merges, so encoding a string yields
 * exactly its UTF-8 bytes, and decoding any id sequence restores the bytes. Three special tokens
 * follow: `<bos>` = 256, `<eos>` = 257, `<pad>` = 258.
 */

/** Special token ids of the byte-level vocabulary. */
export const SPECIAL_TOKENS = { bos: 256, eos: 257, pad: 258 } as const;

/** Vocabulary size: 256 bytes + 3 special tokens. */
export const BYTE_VOCAB_SIZE = 259;

/**
 * GPT-2's reversible byte -> printable unicode character mapping (bytes_to_unicode): printable
 * Latin-1 bytes map to themselves, the rest to code points 256 and up. Index = byte value.
 */
export function bytesToUnicode(): string[] {
  const bs: number[] = [];
  for (let i = 0x21; i <= 0x7e; i++) bs.push(i);
  for (let i = 0xa1; i <= 0xac; i++) bs.push(i);
  for (let i = 0xae; i <= 0xff; i++) bs.push(i);
  const cs = bs.slice();
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n);
      n++;
    }
  }
  const map: string[] = new Array(256);
  bs.forEach((b, i) => {
    map[b] = String.fromCodePoint(cs[i]);
  });
  return map;
}

function addedToken(id: number, content: string) {
  return { id, content, single_word: false, lstrip: false, rstrip: false, normalized: false, special: true };
}

/**
 * The tokenizer.json object (Hugging Face tokenizers format, version 1.0): BPE with the 256
 * byte tokens and no merges, ByteLevel pre-tokenizer (add_prefix_space false, use_regex false)
 * and ByteLevel decoder, plus the special tokens as added tokens. No post-processor: `encode`
 * does not insert `<bos>`; callers that want it prepend id 256 themselves.
 */
export function byteLevelTokenizerJson(): Record<string, unknown> {
  const map = bytesToUnicode();
  const vocab: Record<string, number> = {};
  for (let b = 0; b < 256; b++) vocab[map[b]] = b;
  vocab['<bos>'] = SPECIAL_TOKENS.bos;
  vocab['<eos>'] = SPECIAL_TOKENS.eos;
  vocab['<pad>'] = SPECIAL_TOKENS.pad;
  return {
    version: '1.0',
    truncation: null,
    padding: null,
    added_tokens: [
      addedToken(SPECIAL_TOKENS.bos, '<bos>'),
      addedToken(SPECIAL_TOKENS.eos, '<eos>'),
      addedToken(SPECIAL_TOKENS.pad, '<pad>'),
    ],
    normalizer: null,
    pre_tokenizer: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    post_processor: null,
    decoder: { type: 'ByteLevel', add_prefix_space: false, trim_offsets: true, use_regex: false },
    model: {
      type: 'BPE',
      dropout: null,
      unk_token: null,
      continuing_subword_prefix: null,
      end_of_word_suffix: null,
      fuse_unk: false,
      byte_fallback: false,
      ignore_merges: false,
      vocab,
      merges: [],
    },
  };
}

/**
 * Tokenizer companion config (`tokenizer_config.json`), which some loaders (transformers.js,
 * tokenizers.js) accept alongside tokenizer.json.
 */
export function byteLevelTokenizerConfig(maxLength: number): Record<string, unknown> {
  return {
    tokenizer_class: 'PreTrainedTokenizerFast',
    bos_token: '<bos>',
    eos_token: '<eos>',
    pad_token: '<pad>',
    add_bos_token: false,
    add_eos_token: false,
    clean_up_tokenization_spaces: false,
    model_max_length: maxLength,
  };
}
