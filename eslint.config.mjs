import js from '@eslint/js';
import nx from '@nx/eslint-plugin';
import tseslint from 'typescript-eslint';
import dsi from './tools/eslint/declared-dependencies.mjs';

/**
 * Which packages may import which (tags live in each package's project.json): `core` is pure and
 * depends on nothing of ours; `lib` builds on `core` and other libs; a `service` on libs; a `tool` (the
 * CLI, deploy tests) on anything below it. An arrow that runs the wrong way fails `npm test` (lint).
 */
const depConstraints = [
  { sourceTag: 'type:core', onlyDependOnLibsWithTags: ['type:core'] },
  { sourceTag: 'type:lib', onlyDependOnLibsWithTags: ['type:core', 'type:lib'] },
  { sourceTag: 'type:service', onlyDependOnLibsWithTags: ['type:core', 'type:lib'] },
  { sourceTag: 'type:tool', onlyDependOnLibsWithTags: ['type:core', 'type:lib', 'type:service'] },
];

/** Tests may also run a service's peers for real (the orchestrator's tests serve real drafters and targets). */
const testDepConstraints = depConstraints.map((constraint) =>
  constraint.sourceTag === 'type:service' ? { ...constraint, onlyDependOnLibsWithTags: [...constraint.onlyDependOnLibsWithTags, 'type:service'] } : constraint,
);

export default tseslint.config(
  { ignores: ['**/dist/**', '**/node_modules/**', 'libs/proto/src/gen/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  {
    files: ['**/*.ts'],
    plugins: { '@nx': nx, dsi },
    rules: {
      '@nx/enforce-module-boundaries': ['error', { allow: [], depConstraints, enforceBuildableLibDependency: false }],
      'dsi/declared-dependencies': 'error',
    },
  },
  {
    files: ['**/*.spec.ts'],
    rules: {
      '@nx/enforce-module-boundaries': ['error', { allow: [], depConstraints: testDepConstraints, enforceBuildableLibDependency: false }],
    },
  },
  {
    files: ['**/*.js', '**/*.cjs'],
    languageOptions: { sourceType: 'commonjs', globals: { require: 'readonly', module: 'writable', __dirname: 'readonly', process: 'readonly', console: 'readonly' } },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
);
