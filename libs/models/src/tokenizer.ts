import fs from 'node:fs';
import path from 'node:path';
import { Tokenizer } from '@huggingface/tokenizers';

/**
 * Text <-> token ids through a model's own `tokenizer.json`, read by the maintained Hugging Face
 * tokenizers library (the same file an Optimum export ships).
 */
export class TextTokenizer {
  private constructor(private readonly tokenizer: Tokenizer) {}

  /** Loads `DIR/tokenizer.json` (and `DIR/tokenizer_config.json` when present). */
  static load(dir: string): TextTokenizer {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8'));
    const configFile = path.join(dir, 'tokenizer_config.json');
    const config = fs.existsSync(configFile) ? JSON.parse(fs.readFileSync(configFile, 'utf8')) : {};
    return new TextTokenizer(new Tokenizer(json, config));
  }

  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  decode(ids: readonly number[]): string {
    if (ids.length === 0) return ''; // the library throws on an empty list
    return this.tokenizer.decode([...ids], { skip_special_tokens: true });
  }
}
